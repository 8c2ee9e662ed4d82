//! H.264 framing between Annex B (libx264, RTP depacketizers) and FLV/our frames (AVCC). Pure.

use bytes::{BufMut, Bytes, BytesMut};

/// NAL units of an Annex-B buffer (start codes removed).
pub fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
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
pub fn annexb_to_avcc(data: &[u8]) -> Bytes {
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
pub fn avcc_record(annexb_headers: &[u8]) -> Option<Bytes> {
    let nals = annexb_nals(annexb_headers);
    let sps: Vec<&[u8]> = nals.iter().copied().filter(|n| n[0] & 0x1f == 7).collect();
    let pps: Vec<&[u8]> = nals.iter().copied().filter(|n| n[0] & 0x1f == 8).collect();
    let first = sps.first()?;
    if first.len() < 4 || pps.is_empty() {
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
pub fn parameter_sets(record: &[u8]) -> Vec<&[u8]> {
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
pub fn avcc_to_annexb(data: &[u8], prefix: &[&[u8]]) -> Bytes {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
