//! FLV tag payloads (the body of RTMP audio/video messages) ⇄ media messages.
//!
//! Video: H.264 (codec id 7) sequence headers and NAL units with their
//! composition-time offset. Audio: AAC (sound format 10) sequence headers and
//! raw frames. Anything else is refused with the codec it named. Pure.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::media::{Codec, EncodedFrame, MediaMessage, TimeBase, TrackConfig, TrackKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("empty {0} tag")]
    Empty(&'static str),
    #[error("truncated {0} tag")]
    Truncated(&'static str),
    #[error("video codec id {0} is not supported (only H.264, id 7)")]
    VideoCodec(u8),
    #[error("enhanced RTMP video (FourCC) is not supported")]
    EnhancedRtmp,
    #[error("audio format {0} is not supported (only AAC, format 10)")]
    AudioCodec(u8),
}

/// Parses a video message at RTMP timestamp `ts` (ms). `Ok(None)`: nothing to
/// forward (end of sequence, command frames). The frame's bytes are the
/// message's, past the FLV header (no copy, and nothing allocated to share
/// them).
pub fn parse_video(data: Bytes, ts: u32) -> Result<Option<MediaMessage>, FlvError> {
    let b0 = *data.first().ok_or(FlvError::Empty("video"))?;
    if b0 & 0x80 != 0 {
        return Err(FlvError::EnhancedRtmp);
    }
    let frame_type = b0 >> 4;
    let codec = b0 & 0x0f;
    if codec != 7 {
        return Err(FlvError::VideoCodec(codec));
    }
    if frame_type == 5 {
        return Ok(None); // video info/command frame
    }
    if data.len() < 5 {
        return Err(FlvError::Truncated("video"));
    }
    let packet_type = data[1];
    // SI24 composition time offset.
    let raw = (u32::from(data[2]) << 16) | (u32::from(data[3]) << 8) | u32::from(data[4]);
    let cts = ((raw << 8) as i32 >> 8) as i64;
    let mut payload = data;
    payload.advance(5);
    match packet_type {
        // A copy: remembered as long as the stream runs, it would keep
        // the whole block it was read into (`chunk`) alive.
        0 => Ok(Some(MediaMessage::Config(TrackConfig {
            kind: TrackKind::Video,
            codec: Codec::H264,
            extradata: Bytes::copy_from_slice(&payload),
        }))),
        1 if payload.is_empty() => Ok(None),
        1 => Ok(Some(MediaMessage::Frame(EncodedFrame {
            kind: TrackKind::Video,
            codec: Codec::H264,
            dts: i64::from(ts),
            pts: i64::from(ts) + cts,
            time_base: TimeBase::MILLIS,
            keyframe: frame_type == 1,
            data: payload,
        }))),
        _ => Ok(None), // 2: end of sequence
    }
}

/// Parses an audio message at RTMP timestamp `ts` (ms), as [`parse_video`].
pub fn parse_audio(data: Bytes, ts: u32) -> Result<Option<MediaMessage>, FlvError> {
    let b0 = *data.first().ok_or(FlvError::Empty("audio"))?;
    let format = b0 >> 4;
    if format != 10 {
        return Err(FlvError::AudioCodec(format));
    }
    if data.len() < 2 {
        return Err(FlvError::Truncated("audio"));
    }
    let packet_type = data[1];
    let mut payload = data;
    payload.advance(2);
    match packet_type {
        0 => Ok(Some(MediaMessage::Config(TrackConfig {
            kind: TrackKind::Audio,
            codec: Codec::Aac,
            extradata: Bytes::copy_from_slice(&payload),
        }))),
        _ if payload.is_empty() => Ok(None),
        _ => Ok(Some(MediaMessage::Frame(EncodedFrame {
            kind: TrackKind::Audio,
            codec: Codec::Aac,
            dts: i64::from(ts),
            pts: i64::from(ts),
            time_base: TimeBase::MILLIS,
            keyframe: true,
            data: payload,
        }))),
    }
}

/// The FLV body of a track configuration (sequence header); `None` for
/// codecs FLV does not carry (VP8, VP9, Opus).
pub fn config_tag(c: &TrackConfig) -> Option<Bytes> {
    let (head, n) = config_head(c)?;
    Some(tag(&head[..n], &c.extradata))
}

/// The FLV body of a frame (timestamps in milliseconds); `None` for codecs
/// FLV does not carry.
pub fn frame_tag(f: &EncodedFrame) -> Option<Bytes> {
    let (head, n) = frame_head(f)?;
    Some(tag(&head[..n], &f.data))
}

fn tag(head: &[u8], data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(head.len() + data.len());
    b.put_slice(head);
    b.put_slice(data);
    b.freeze()
}

/// What goes before a sequence header's bytes in its FLV body, and its
/// length (5 for video, 2 for audio); `None` for codecs FLV does not carry.
pub fn config_head(c: &TrackConfig) -> Option<([u8; 5], usize)> {
    if !c.codec.fits_flv_and_ts() {
        return None;
    }
    Some(match c.kind {
        TrackKind::Video => ([0x17, 0, 0, 0, 0], 5),
        TrackKind::Audio => ([0xaf, 0, 0, 0, 0], 2),
    })
}

/// What goes before a frame's bytes in its FLV body, and its length.
pub fn frame_head(f: &EncodedFrame) -> Option<([u8; 5], usize)> {
    if !f.codec.fits_flv_and_ts() {
        return None;
    }
    Some(match f.kind {
        TrackKind::Video => {
            let cts = (f.pts - f.dts).clamp(-(1 << 23), (1 << 23) - 1) as i32;
            let c = cts.to_be_bytes();
            (
                [if f.keyframe { 0x17 } else { 0x27 }, 1, c[1], c[2], c[3]],
                5,
            )
        }
        TrackKind::Audio => ([0xaf, 1, 0, 0, 0], 2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_round_trip_with_negative_composition_time() {
        let f = EncodedFrame {
            kind: TrackKind::Video,
            codec: Codec::H264,
            pts: 960,
            dts: 1000,
            time_base: TimeBase::MILLIS,
            keyframe: true,
            data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
        };
        let tag = frame_tag(&f).unwrap();
        let body = tag.as_ptr().wrapping_add(5);
        let parsed = parse_video(tag, 1000);
        assert_eq!(parsed, Ok(Some(MediaMessage::Frame(f))));
        // The frame's bytes are the tag's, not a copy.
        let Ok(Some(MediaMessage::Frame(f))) = parsed else {
            unreachable!()
        };
        assert_eq!(f.data.as_ptr(), body);
    }

    #[test]
    fn configs_round_trip() {
        for c in [
            TrackConfig {
                kind: TrackKind::Video,
                codec: Codec::H264,
                extradata: Bytes::from_static(&[1, 0x64, 0, 0x1f]),
            },
            TrackConfig {
                kind: TrackKind::Audio,
                codec: Codec::Aac,
                extradata: Bytes::from_static(&[0x11, 0x90]),
            },
        ] {
            let tag = config_tag(&c).unwrap();
            let parsed = match c.kind {
                TrackKind::Video => parse_video(tag, 0),
                TrackKind::Audio => parse_audio(tag, 0),
            };
            assert_eq!(parsed, Ok(Some(MediaMessage::Config(c))));
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(parse_video(Bytes::new(), 0), Err(FlvError::Empty("video")));
        assert_eq!(
            parse_video(Bytes::from_static(&[0x12, 0]), 0),
            Err(FlvError::VideoCodec(2))
        );
        assert_eq!(
            parse_video(Bytes::from_static(&[0x90, 0, 0, 0, 0]), 0),
            Err(FlvError::EnhancedRtmp)
        );
        assert_eq!(
            parse_video(Bytes::from_static(&[0x17, 1]), 0),
            Err(FlvError::Truncated("video"))
        );
        assert_eq!(
            parse_audio(Bytes::from_static(&[0x2f, 1, 0]), 0),
            Err(FlvError::AudioCodec(2))
        );
        assert_eq!(
            parse_audio(Bytes::from_static(&[0xaf]), 0),
            Err(FlvError::Truncated("audio"))
        );
        assert_eq!(parse_video(Bytes::from_static(&[0x57, 0]), 0), Ok(None));
    }

    #[test]
    fn rescale_rounds() {
        assert_eq!(TimeBase::MILLIS.rescale(1000, TimeBase::MPEG), 90_000);
        assert_eq!(TimeBase::MPEG.rescale(3003, TimeBase::MILLIS), 33);
        assert_eq!(TimeBase::MPEG.rescale(-3003, TimeBase::MILLIS), -33);
    }
}
