//! Reading an FLV file's audio and video tags, for the benchmark harnesses.

use std::path::Path;

use bytes::Bytes;

/// FLV tags of a file: (is_video, timestamp ms, tag body).
pub fn read_flv(path: &Path) -> Vec<(bool, u32, Bytes)> {
    let data = std::fs::read(path).unwrap();
    let mut tags = Vec::new();
    let mut pos = 9 + 4; // header, then the first PreviousTagSize
    while pos + 11 <= data.len() {
        let kind = data[pos];
        let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let start = pos + 11;
        if start + size > data.len() {
            break;
        }
        if kind == 8 || kind == 9 {
            tags.push((
                kind == 9,
                ts,
                Bytes::copy_from_slice(&data[start..start + size]),
            ));
        }
        pos = start + size + 4;
    }
    tags
}
