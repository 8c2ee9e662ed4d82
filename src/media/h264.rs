//! H.264 framing between Annex B (libx264, RTP depacketizers) and FLV/our frames (AVCC). Pure.

use bytes::{BufMut, Bytes, BytesMut};

/// NAL units of an Annex-B buffer (start codes removed).
pub(crate) fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else if i + 4 <= data.len()
            && data[i] == 0
            && data[i + 1] == 0
            && data[i + 2] == 0
            && data[i + 3] == 1
        {
            starts.push((i, i + 4));
            i += 4;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &(_, begin)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&(s, _)| s);
        let mut nal = &data[begin..end];
        while let [rest @ .., 0] = nal {
            nal = rest; // trailing zero bytes belong to the next start code
        }
        if !nal.is_empty() {
            nals.push(nal);
        }
    }
    nals
}

/// Annex-B access unit → AVCC (4-byte lengths); SPS/PPS/AUD are left out
/// (they travel in the decoder configuration record).
pub(crate) fn annexb_to_avcc(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    for nal in annexb_nals(data) {
        if matches!(nal[0] & 0x1f, 7..=9) {
            continue;
        }
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

/// AVCDecoderConfigurationRecord from Annex-B SPS/PPS (libx264's global header).
pub(crate) fn avcc_record(annexb_headers: &[u8]) -> Option<Bytes> {
    let nals = annexb_nals(annexb_headers);
    let sps: Vec<&[u8]> = nals.iter().copied().filter(|n| n[0] & 0x1f == 7).collect();
    let pps: Vec<&[u8]> = nals.iter().copied().filter(|n| n[0] & 0x1f == 8).collect();
    let first = sps.first()?;
    // The record counts 31 SPS and 255 PPS at most, each under 64 KiB.
    let fits = |n: &&[u8]| n.len() <= usize::from(u16::MAX);
    if first.len() < 4
        || pps.is_empty()
        || sps.len() > 31
        || pps.len() > 255
        || !sps.iter().chain(&pps).all(fits)
    {
        return None;
    }
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_slice(&first[1..4]); // profile, compatibility, level
    out.put_u8(0xff); // 4-byte lengths
    out.put_u8(0xe0 | sps.len() as u8);
    for s in &sps {
        out.put_u16(s.len() as u16);
        out.put_slice(s);
    }
    out.put_u8(pps.len() as u8);
    for p in &pps {
        out.put_u16(p.len() as u16);
        out.put_slice(p);
    }
    Some(out.freeze())
}

/// The SPS and PPS NAL units of an AVCDecoderConfigurationRecord.
pub(crate) fn parameter_sets(record: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = match record.get(5) {
        Some(_) => &record[5..],
        None => return out,
    };
    for mask in [0x1f, 0xff] {
        let Some((&count, tail)) = rest.split_first() else {
            return out;
        };
        rest = tail;
        for _ in 0..(count & mask) {
            let Some(len) = rest
                .get(..2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            else {
                return out;
            };
            let Some(nal) = rest.get(2..2 + len) else {
                return out;
            };
            out.push(nal);
            rest = &rest[2 + len..];
        }
    }
    out
}

/// AVCC access unit (4-byte lengths) → Annex B, with `prefix` NAL units
/// (SPS/PPS, for a keyframe) first. Truncated units end the conversion.
pub(crate) fn avcc_to_annexb(data: &[u8], prefix: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 64);
    for nal in prefix {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal);
    }
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(nal) = rest.get(4..4 + len) else {
            break;
        };
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal);
        rest = &rest[4 + len..];
    }
    out.freeze()
}

/// Picture width and height from an SPS NAL unit (header byte included),
/// cropping applied; `None` for a malformed SPS.
pub(crate) fn sps_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    // Emulation prevention bytes removed.
    let mut rbsp = Vec::with_capacity(sps.len());
    let mut zeros = 0;
    for &b in sps.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = BitReader::new(&rbsp);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bits(1)?;
        }
        r.ue()?;
        r.ue()?;
        r.bits(1)?;
        if r.bits(1)? == 1 {
            for i in 0..if chroma_format == 3 { 12 } else { 8 } {
                if r.bits(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(256) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?;
    // u64 from here: every value is a peer's, up to 2^32 - 2.
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?;
    }
    r.bits(1)?;
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bits(1)? == 1 {
        cl = r.ue()?.into();
        cr = r.ue()?.into();
        ct = r.ue()?.into();
        cb = r.ue()?.into();
    }
    let frame_mbs_only = u64::from(frame_mbs_only);
    let (sub_w, sub_h) = match chroma_format {
        0 | 3 => (1, 1),
        2 => (2, 1),
        _ => (2, 2),
    };
    let crop_x = if chroma_format == 0 { 1 } else { sub_w };
    let crop_y = (if chroma_format == 0 { 1 } else { sub_h }) * (2 - frame_mbs_only);
    let width = (width_mbs * 16).checked_sub((cl + cr) * crop_x)?;
    let height = (height_units * 16 * (2 - frame_mbs_only)).checked_sub((ct + cb) * crop_y)?;
    let ok = |v: u64| (1..=u64::from(MAX_DIMENSION)).contains(&v);
    (ok(width) && ok(height)).then_some((width as u32, height as u32))
}

/// Largest picture side an SPS may declare (H.264's level 6.2 is 8192).
const MAX_DIMENSION: u32 = 16_384;

/// Reads big-endian bit fields (SPS, AudioSpecificConfig); `None` past the end.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> BitReader<'a> {
        BitReader { data, pos: 0 }
    }

    /// The next `n` bits (at most 32).
    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A baseline SPS whose width field is the Exp-Golomb code `width_code`.
    fn sps_with_width(width_code: &str) -> Vec<u8> {
        let mut bits = String::from("01000010");
        bits += "0000000000000000"; // constraints, level
        bits += "11111"; // sps id, log2_max_frame_num, poc type 0, poc lsb, max refs
        bits += "0"; // gaps
        bits += width_code; // pic_width_in_mbs_minus1
        bits += "1"; // pic_height_in_map_units_minus1 = 0
        bits += "100"; // frame_mbs_only, no direct_8x8, no cropping
        while bits.len() % 8 != 0 {
            bits.push('1');
        }
        let mut sps = vec![0x67];
        for chunk in bits.as_bytes().chunks(8) {
            sps.push(u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 2).unwrap());
        }
        sps
    }

    #[test]
    fn an_sps_declaring_absurd_sizes_is_refused_not_overflowed() {
        // 79 = 0000001010000: 1280 pixels.
        assert_eq!(
            sps_dimensions(&sps_with_width("0000001010000")),
            Some((1280, 16))
        );
        // 2^32 - 2: 31 zeros, then 32 ones.
        let huge = format!("{}{}", "0".repeat(31), "1".repeat(32));
        assert_eq!(sps_dimensions(&sps_with_width(&huge)), None);
        // 2048 macroblocks: 32768 pixels, over the limit.
        assert_eq!(
            sps_dimensions(&sps_with_width("000000000001000000000000")),
            None
        );
    }

    #[test]
    fn splits_on_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 0x64, 0, 0x1f, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0,
        ];
        let nals = annexb_nals(&data);
        assert_eq!(
            nals,
            vec![&[0x67, 0x64, 0, 0x1f][..], &[0x68, 3], &[0x65, 4, 5]]
        );
        assert_eq!(&annexb_to_avcc(&data)[..], &[0, 0, 0, 3, 0x65, 4, 5]);
        let rec = avcc_record(&data).unwrap();
        assert_eq!(
            &rec[..],
            &[
                1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 3
            ]
        );
        assert!(avcc_record(&[0, 0, 1, 0x65, 1]).is_none());
    }

    #[test]
    fn avcc_and_annexb_round_trip_with_parameter_sets() {
        let headers = [
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
        ];
        let record = avcc_record(&headers).unwrap();
        let sets = parameter_sets(&record);
        assert_eq!(sets, vec![&headers[4..9], &headers[13..]]);
        let avcc = [0, 0, 0, 3, 0x65, 0x88, 0x84];
        let annexb = avcc_to_annexb(&avcc, &sets);
        assert_eq!(
            annexb_nals(&annexb),
            vec![&headers[4..9], &headers[13..], &avcc[4..]]
        );
        assert_eq!(&annexb_to_avcc(&annexb)[..], &avcc[..]);
        // Truncated input stops, no panic.
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 1], &[]).is_empty());
        assert!(parameter_sets(&[1, 2]).is_empty());
    }

    #[test]
    fn sps_dimensions_of_real_encoder_output() {
        // libx264 640x360 High profile SPS (360 is not a multiple of 16: cropped).
        let sps = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        ];
        assert_eq!(sps_dimensions(&sps), Some((640, 360)));
        assert_eq!(sps_dimensions(&[0x67, 0x42]), None);
    }
}
