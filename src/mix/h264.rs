//! H.264 framing between libx264 (Annex B) and FLV/our frames (AVCC). Pure.

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
}
