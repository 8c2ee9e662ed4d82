//! Media as it flows between edges and relay tasks: encoded frames with
//! explicit time bases, the codec configuration that goes with them, and the
//! hub where a publisher's stream is found by room and user.
//!
//! No sockets here. Frames are opaque encoded payloads, except in `aac`,
//! the audio re-encoder that passthrough relays may ask for.

pub(crate) mod aac;
pub(crate) mod ffi;
pub(crate) mod free_memory;
pub mod huge_pages;
pub use ffi::{free_memory, release_free_memory, run_as_batch, tune_allocator};

/// A rectangle of a picture, in pixels: a layout's cell, the part of a
/// source that shows in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}
pub(crate) mod h264;
pub(crate) mod hub;
pub(crate) mod stage;
pub(crate) mod worker;

use bytes::Bytes;

pub use crate::room::TrackKind;

/// A rational time base: one tick is `num/den` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBase {
    pub num: u32,
    pub den: u32,
}

impl TimeBase {
    /// Milliseconds: RTMP/FLV timestamps.
    pub const MILLIS: TimeBase = TimeBase { num: 1, den: 1000 };
    /// 90 kHz: MPEG-TS and RTP video.
    pub const MPEG: TimeBase = TimeBase {
        num: 1,
        den: 90_000,
    };

    /// Converts `v` ticks of `self` to ticks of `to`, rounding to nearest.
    pub fn rescale(self, v: i64, to: TimeBase) -> i64 {
        // The same clock (every RTMP timestamp a relay passes on): no
        // 128-bit division, which is a call into the runtime's library.
        if self == to {
            return v;
        }
        let n = i128::from(v) * i128::from(self.num) * i128::from(to.den);
        let d = i128::from(self.den) * i128::from(to.num);
        let r = if n >= 0 {
            (n + d / 2) / d
        } else {
            (n - d / 2) / d
        };
        r as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264 in AVCC form: length-prefixed NAL units; config = AVCDecoderConfigurationRecord.
    H264,
    /// VP8 frames (WebRTC); no config needed.
    Vp8,
    /// VP9 frames (WebRTC); no config needed.
    Vp9,
    /// AAC raw frames; config = AudioSpecificConfig.
    Aac,
    /// Opus packets (WebRTC); config = OpusHead if any.
    Opus,
}

impl Codec {
    /// Its name in logs, status and metrics: `h264`, `vp8`, `vp9`, `aac`, `opus`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Vp8 => "vp8",
            Codec::Vp9 => "vp9",
            Codec::Aac => "aac",
            Codec::Opus => "opus",
        }
    }

    /// Whether FLV (RTMP) and MPEG-TS (HLS) carry it as is.
    pub fn fits_flv_and_ts(self) -> bool {
        matches!(self, Codec::H264 | Codec::Aac)
    }
}

/// One encoded access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub kind: TrackKind,
    pub codec: Codec,
    /// Presentation and decode times in `time_base` ticks.
    pub pts: i64,
    pub dts: i64,
    pub time_base: TimeBase,
    pub keyframe: bool,
    pub data: Bytes,
}

/// A track's decoder configuration (sequence header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    pub kind: TrackKind,
    pub codec: Codec,
    /// AVCDecoderConfigurationRecord (H.264) or AudioSpecificConfig (AAC).
    pub extradata: Bytes,
}

/// What a publisher emits, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaMessage {
    /// A new or changed decoder configuration; frames after it use it.
    Config(TrackConfig),
    Frame(EncodedFrame),
}

/// The drop policy of a bounded output queue: after an overflow, skip frames
/// until the next video keyframe (configs always pass), so a slow output
/// resumes with a decodable picture instead of stalling its producer.
#[derive(Debug, Default)]
pub struct DropToKeyframe {
    dropping: bool,
    /// Whether the stream has video; an audio-only stream resumes at any frame.
    seen_video: bool,
    /// Frames skipped so far.
    pub dropped: u64,
}

impl DropToKeyframe {
    /// Whether `msg` may be queued now.
    pub fn admit(&mut self, msg: &MediaMessage) -> bool {
        let video = match msg {
            MediaMessage::Config(c) => c.kind == TrackKind::Video,
            MediaMessage::Frame(f) => f.kind == TrackKind::Video,
        };
        self.seen_video |= video;
        if let MediaMessage::Frame(f) = msg
            && self.dropping
        {
            if (f.kind == TrackKind::Video && f.keyframe) || !self.seen_video {
                self.dropping = false;
            } else {
                self.dropped += 1;
                return false;
            }
        }
        true
    }

    /// The queue was full: this message is lost, and so is everything up to the next keyframe.
    pub fn overflowed(&mut self) {
        self.dropped += 1;
        self.dropping = true;
    }
}

/// A frame for unit tests: H.264 or AAC alike, stamped 0 ms.
#[cfg(test)]
pub(crate) fn test_frame(kind: TrackKind, keyframe: bool, data: Bytes) -> MediaMessage {
    MediaMessage::Frame(EncodedFrame {
        kind,
        codec: Codec::H264,
        pts: 0,
        dts: 0,
        time_base: TimeBase::MILLIS,
        keyframe,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// To its own clock a time is itself; to another it is that
        /// clock's nearest tick (within half a tick of the exact time).
        #[test]
        fn rescale_keeps_a_time_within_rounding(
            v in -(1i64 << 40)..(1i64 << 40),
            a in prop::sample::select(vec![TimeBase::MILLIS, TimeBase::MPEG, TimeBase { num: 1, den: 48_000 }, TimeBase { num: 1001, den: 30_000 }]),
            b in prop::sample::select(vec![TimeBase::MILLIS, TimeBase::MPEG, TimeBase { num: 1, den: 44_100 }]),
        ) {
            prop_assert_eq!(a.rescale(v, a), v);
            let there = a.rescale(v, b);
            // |there - v·a/b| ≤ 1/2 tick of b, in exact arithmetic.
            let exact = i128::from(v) * i128::from(a.num) * i128::from(b.den);
            let per = i128::from(a.den) * i128::from(b.num);
            prop_assert!((2 * (i128::from(there) * per - exact)).abs() <= per);
        }
    }

    fn frame(kind: TrackKind, keyframe: bool) -> MediaMessage {
        test_frame(kind, keyframe, Bytes::new())
    }

    #[test]
    fn after_overflow_only_a_keyframe_reopens() {
        let mut g = DropToKeyframe::default();
        assert!(g.admit(&frame(TrackKind::Video, false)));
        g.overflowed();
        assert!(!g.admit(&frame(TrackKind::Audio, true)));
        assert!(!g.admit(&frame(TrackKind::Video, false)));
        assert!(g.admit(&MediaMessage::Config(TrackConfig {
            kind: TrackKind::Video,
            codec: Codec::H264,
            extradata: Bytes::new(),
        })));
        assert!(g.admit(&frame(TrackKind::Video, true)));
        assert!(g.admit(&frame(TrackKind::Audio, true)));
        assert_eq!(g.dropped, 3);
    }

    #[test]
    fn audio_only_streams_resume_at_the_next_frame() {
        let mut g = DropToKeyframe::default();
        assert!(g.admit(&frame(TrackKind::Audio, true)));
        g.overflowed();
        assert!(g.admit(&frame(TrackKind::Audio, true)));
        assert_eq!(g.dropped, 1);
    }
}
