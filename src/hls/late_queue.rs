//! Test support: a task's output queued for a worker thread long ago, so
//! the thread works through it late, in one burst, as a starved thread
//! catching up does; and the dates a playlist gives its segments.

use std::sync::Arc;

use ffmpeg_next as ff;

use crate::media::MediaMessage;
use crate::media::worker::Cmd;
use crate::mix::video::VideoEncoder;
use crate::profile::{HlsContainer, HlsOutput, VideoEncoding};

/// HLS in one-second segments, plain, in `container`, no renditions.
pub(crate) fn one_second_segments(container: HlsContainer) -> HlsOutput {
    HlsOutput {
        segment_seconds: 1,
        window: 12,
        low_latency: false,
        part_ms: 200,
        container,
        renditions: Vec::new(),
    }
}

/// `seconds` of H.264 (`VideoEncoding::small` at 30 fps: keyframes at each
/// whole second, from 0 ms), each message stamped as queued at `made_at`
/// plus its time (unix ms).
pub(crate) fn queued_video(made_at: u64, seconds: i64) -> std::sync::mpsc::Receiver<Cmd> {
    ff::util::log::set_level(ff::util::log::Level::Error);
    let source = VideoEncoding::small(30);
    let fps = i64::from(source.fps);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut enc = VideoEncoder::new_vfr(&source).expect("libx264");
    let config = Arc::new(MediaMessage::Config(enc.config().clone()));
    tx.send(Cmd::Media(config, made_at)).expect("queued");
    let mut picture =
        ff::frame::Video::new(ff::format::Pixel::YUV420P, source.width, source.height);
    for i in 0..seconds * fps {
        picture.data_mut(0).fill((i * 2) as u8);
        for f in enc
            .encode_at(&mut picture, i * 1000 / fps, i % fps == 0)
            .expect("encoded")
        {
            let at = made_at + u64::try_from(f.dts).expect("from 0");
            tx.send(Cmd::Media(Arc::new(MediaMessage::Frame(f)), at))
                .expect("queued");
        }
    }
    rx
}

/// Each segment's `EXT-X-PROGRAM-DATE-TIME` in `playlist`, as ms into its day.
pub(crate) fn dates(playlist: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .map(|pdt| {
            let time = pdt.split('T').nth(1).expect("a time").trim_end_matches('Z');
            let f: Vec<u64> = time
                .split([':', '.'])
                .map(|x| x.parse().expect("a number"))
                .collect();
            ((f[0] * 60 + f[1]) * 60 + f[2]) * 1000 + f[3]
        })
        .collect()
}

/// Asserts `playlist` dates its segments (one a second from `made_at`)
/// by when their source was made, within `slack_ms`.
pub(crate) fn assert_dated_from(playlist: &str, made_at: u64, segments: usize, slack_ms: u64) {
    let dated = dates(playlist);
    assert_eq!(dated.len(), segments, "a segment a second:\n{playlist}");
    for (i, at) in dated.iter().enumerate() {
        let expected = (made_at + 1000 * i as u64) % 86_400_000;
        assert!(
            at.abs_diff(expected) <= slack_ms,
            "segment {i} dated {at} ms into the day, its source made at {expected}:\n{playlist}"
        );
    }
}
