//! Fragmented MP4 (CMAF) for HLS: init sections and fragments, written by hand. Pure.
//!
//! What LL-HLS serves as `#EXT-X-MAP` and parts: an init section (`ftyp` +
//! `moov` with empty sample tables and an `mvex`) and media fragments
//! (`moof` + `mdat`), H.264 and AAC only. The boxes are laid out as
//! ffmpeg's fragmented `mp4` muxer lays them out, which players already
//! take: `tfhd` default-base-is-moof, `tfdt` version 1, `trun` version 1
//! with every per-sample field present. Video and audio may share a
//! fragment (muxed HLS), so the `cmfc` brand is not claimed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::hls::writer::aac_rate_channels;
use crate::media::{Codec, TrackConfig, h264};

/// Track ids are fixed: video = 1, audio = 2 (only the tracks present are written).
pub(crate) const VIDEO_TRACK: u32 = 1;
pub(crate) const AUDIO_TRACK: u32 = 2;

/// Video timescale: 90 kHz, like RTP and MPEG-TS.
const VIDEO_TIMESCALE: u32 = 90_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Fmp4Error {
    #[error("fMP4 carries H.264 video and AAC audio, not {codec} as {slot}")]
    Unsupported {
        slot: &'static str,
        codec: &'static str,
    },
    #[error("an init section needs a video or an audio track")]
    NoTracks,
    #[error("bad H.264 configuration record: {0}")]
    BadAvcc(&'static str),
    #[error("bad AAC AudioSpecificConfig: {0}")]
    BadAsc(&'static str),
}

/// What the playlists need to know about an init section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitInfo {
    /// Always 90 000.
    pub video_timescale: u32,
    /// The sample rate, when there is audio.
    pub audio_timescale: Option<u32>,
    /// RFC 6381 `CODECS`, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// One sample, times in the track's timescale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub dts: i64,
    pub pts: i64,
    pub duration: u32,
    pub keyframe: bool,
    /// H.264: AVCC (length-prefixed NAL units); AAC: one raw frame.
    pub data: Bytes,
}

/// What the video sample entry is made of.
struct Video<'a> {
    avcc: &'a [u8],
    width: u32,
    height: u32,
    codecs: String,
}

impl<'a> Video<'a> {
    fn parse(cfg: &'a TrackConfig) -> Result<Video<'a>, Fmp4Error> {
        if cfg.codec != Codec::H264 {
            return Err(Fmp4Error::Unsupported {
                slot: "video",
                codec: cfg.codec.as_str(),
            });
        }
        let avcc = &cfg.extradata[..];
        // Version 1, then profile, compatibility and level, which CODECS repeats.
        if avcc.len() < 7 || avcc[0] != 1 {
            return Err(Fmp4Error::BadAvcc("not an AVCDecoderConfigurationRecord"));
        }
        let sps = h264::parameter_sets(avcc)
            .into_iter()
            .find(|n| n.first().is_some_and(|h| h & 0x1f == 7))
            .ok_or(Fmp4Error::BadAvcc("no SPS"))?;
        let (width, height) =
            h264::sps_dimensions(sps).ok_or(Fmp4Error::BadAvcc("no picture size in the SPS"))?;
        Ok(Video {
            avcc,
            width,
            height,
            codecs: format!("avc1.{:02x}{:02x}{:02x}", avcc[1], avcc[2], avcc[3]),
        })
    }
}

/// What the audio sample entry is made of.
struct Audio<'a> {
    asc: &'a [u8],
    rate: u32,
    channels: u32,
    codecs: String,
}

impl<'a> Audio<'a> {
    fn parse(cfg: &'a TrackConfig) -> Result<Audio<'a>, Fmp4Error> {
        if cfg.codec != Codec::Aac {
            return Err(Fmp4Error::Unsupported {
                slot: "audio",
                codec: cfg.codec.as_str(),
            });
        }
        let asc = &cfg.extradata[..];
        let object_type = asc.first().ok_or(Fmp4Error::BadAsc("empty"))? >> 3;
        // 31 escapes to a 6-bit type, which also moves the rate index that
        // `aac_rate_channels` reads; no AAC a relay carries uses it.
        if object_type == 0 || object_type == 31 {
            return Err(Fmp4Error::BadAsc("unsupported audio object type"));
        }
        let (rate, channels) =
            aac_rate_channels(asc).ok_or(Fmp4Error::BadAsc("no sample rate index"))?;
        Ok(Audio {
            asc,
            rate,
            channels,
            codecs: format!("mp4a.40.{object_type}"),
        })
    }
}

/// The init section (`ftyp` + `moov`) for the tracks given, and what the
/// playlists say about it.
pub(crate) fn init_segment(
    video: Option<&TrackConfig>,
    audio: Option<&TrackConfig>,
) -> Result<(Bytes, InitInfo), Fmp4Error> {
    let video = video.map(Video::parse).transpose()?;
    let audio = audio.map(Audio::parse).transpose()?;
    if video.is_none() && audio.is_none() {
        return Err(Fmp4Error::NoTracks);
    }
    let mut out = BytesMut::with_capacity(1024);
    put_box(&mut out, b"ftyp", |b| {
        b.put_slice(b"iso5");
        b.put_u32(0);
        // No `cmfc`: a CMAF track file holds one track, ours may hold two.
        for brand in [b"iso5", b"iso6", b"mp41"] {
            b.put_slice(brand);
        }
    });
    put_box(&mut out, b"moov", |b| {
        put_full_box(b, b"mvhd", 0, 0, |b| {
            b.put_u64(0); // creation, modification
            b.put_u32(1000);
            b.put_u32(0); // duration: fragments carry it
            b.put_u32(0x0001_0000); // rate 1.0
            b.put_u16(0x0100); // volume 1.0
            b.put_bytes(0, 10);
            put_matrix(b);
            b.put_bytes(0, 24); // pre_defined
            b.put_u32(AUDIO_TRACK + 1);
        });
        if let Some(v) = &video {
            put_trak(
                b,
                VIDEO_TRACK,
                VIDEO_TIMESCALE,
                Some((v.width, v.height)),
                |b| put_avc1(b, v),
            );
        }
        if let Some(a) = &audio {
            put_trak(b, AUDIO_TRACK, a.rate, None, |b| put_mp4a(b, a));
        }
        put_box(b, b"mvex", |b| {
            let tracks = [
                (VIDEO_TRACK, video.is_some()),
                (AUDIO_TRACK, audio.is_some()),
            ];
            for (track, _) in tracks.into_iter().filter(|&(_, present)| present) {
                put_full_box(b, b"trex", 0, 0, |b| {
                    b.put_u32(track);
                    b.put_u32(1); // default_sample_description_index
                    b.put_bytes(0, 12); // duration, size, flags: each trun says
                });
            }
        });
    });
    let codecs: Vec<&str> = video
        .iter()
        .map(|v| v.codecs.as_str())
        .chain(audio.iter().map(|a| a.codecs.as_str()))
        .collect();
    let info = InitInfo {
        video_timescale: VIDEO_TIMESCALE,
        audio_timescale: audio.as_ref().map(|a| a.rate),
        codecs: codecs.join(","),
        width: video.as_ref().map(|v| v.width),
        height: video.as_ref().map(|v| v.height),
    };
    Ok((out.freeze(), info))
}

/// `tkhd` flags: enabled and in the presentation.
const TKHD_FLAGS: u32 = 0x3;
/// `tfhd`: data offsets count from the start of the `moof`, as CMAF requires.
const DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun`: data offset, then per sample duration, size, flags and composition offset.
const TRUN_FLAGS: u32 = 0x1 | 0x100 | 0x200 | 0x400 | 0x800;
/// depends_on = 2 (an I picture, or audio), sync.
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// depends_on = 1, is_non_sync_sample.
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;
/// Size and type of the `mdat` header.
const MDAT_HEADER: usize = 8;

/// One `moof` + `mdat`: a `traf` per non-empty track, video first, and the
/// samples' bytes in the same order. `sequence` is the `mfhd` sequence
/// number (from 1, one more per fragment).
///
/// # Panics
///
/// If the fragment reaches 2 GiB (`trun` offsets are signed 32-bit); parts
/// and segments are seconds of media at most.
pub(crate) fn fragment(sequence: u32, video: &[Sample], audio: &[Sample]) -> Bytes {
    let tracks: Vec<(u32, &[Sample])> = [(VIDEO_TRACK, video), (AUDIO_TRACK, audio)]
        .into_iter()
        .filter(|(_, samples)| !samples.is_empty())
        .collect();
    let payload: usize = tracks
        .iter()
        .flat_map(|(_, samples)| samples.iter())
        .map(|s| s.data.len())
        .sum();
    let samples: usize = tracks.iter().map(|(_, s)| s.len()).sum();
    let mut out = BytesMut::with_capacity(128 + 16 * samples + payload);
    // Where each trun's data_offset sits, and where its track's bytes start in the payload.
    let mut offsets = Vec::with_capacity(tracks.len());
    put_box(&mut out, b"moof", |b| {
        put_full_box(b, b"mfhd", 0, 0, |b| b.put_u32(sequence));
        let mut in_payload = 0;
        for &(track, samples) in &tracks {
            put_box(b, b"traf", |b| {
                put_full_box(b, b"tfhd", 0, DEFAULT_BASE_IS_MOOF, |b| b.put_u32(track));
                // Decode times before zero cannot be said; the relay rebases to zero anyway.
                let base = samples[0].dts.max(0) as u64;
                put_full_box(b, b"tfdt", 1, 0, |b| b.put_u64(base));
                put_full_box(b, b"trun", 1, TRUN_FLAGS, |b| {
                    b.put_u32(u32::try_from(samples.len()).expect("fragment under 2 GiB"));
                    offsets.push((b.len(), in_payload));
                    b.put_i32(0); // known once the moof is sized
                    for s in samples {
                        b.put_u32(s.duration);
                        b.put_u32(u32::try_from(s.data.len()).expect("fragment under 2 GiB"));
                        b.put_u32(if track == VIDEO_TRACK && !s.keyframe {
                            NON_SYNC_SAMPLE
                        } else {
                            SYNC_SAMPLE
                        });
                        let cto = (s.pts - s.dts).clamp(i32::MIN.into(), i32::MAX.into());
                        b.put_i32(cto as i32);
                    }
                });
            });
            in_payload += samples.iter().map(|s| s.data.len()).sum::<usize>();
        }
    });
    let moof = out.len();
    for (at, in_payload) in offsets {
        let offset = i32::try_from(moof + MDAT_HEADER + in_payload).expect("fragment under 2 GiB");
        out[at..at + 4].copy_from_slice(&offset.to_be_bytes());
    }
    put_box(&mut out, b"mdat", |b| {
        for (_, samples) in &tracks {
            for s in *samples {
                b.put_slice(&s.data);
            }
        }
    });
    out.freeze()
}

/// A box of type `kind` around what `body` writes; its size is filled in after.
fn put_box(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).expect("box under 4 GiB");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A box with a version and 24 bits of flags.
fn put_full_box(
    out: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    put_box(out, kind, |b| {
        b.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        body(b);
    });
}

/// The identity transformation matrix (16.16, 16.16, 2.30).
fn put_matrix(b: &mut BytesMut) {
    for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000u32] {
        b.put_u32(v);
    }
}

/// A `trak` with empty sample tables; `picture` for video, `entry` writes its sample entry.
fn put_trak(
    b: &mut BytesMut,
    track: u32,
    timescale: u32,
    picture: Option<(u32, u32)>,
    entry: impl FnOnce(&mut BytesMut),
) {
    put_box(b, b"trak", |b| {
        put_full_box(b, b"tkhd", 0, TKHD_FLAGS, |b| {
            b.put_u64(0); // creation, modification
            b.put_u32(track);
            b.put_u32(0);
            b.put_u32(0); // duration
            b.put_u64(0);
            b.put_u16(0); // layer
            b.put_u16(0); // alternate_group
            b.put_u16(if picture.is_some() { 0 } else { 0x0100 }); // volume
            b.put_u16(0);
            put_matrix(b);
            let (w, h) = picture.unwrap_or((0, 0));
            b.put_u32(w << 16);
            b.put_u32(h << 16);
        });
        put_box(b, b"mdia", |b| {
            put_full_box(b, b"mdhd", 0, 0, |b| {
                b.put_u64(0); // creation, modification
                b.put_u32(timescale);
                b.put_u32(0); // duration
                // "und", three 5-bit letters offset by 0x60.
                b.put_u16((21 << 10) | (14 << 5) | 4);
                b.put_u16(0);
            });
            let (handler, name): (&[u8; 4], &[u8]) = match picture {
                Some(_) => (b"vide", b"VideoHandler\0"),
                None => (b"soun", b"SoundHandler\0"),
            };
            put_full_box(b, b"hdlr", 0, 0, |b| {
                b.put_u32(0);
                b.put_slice(handler);
                b.put_bytes(0, 12);
                b.put_slice(name);
            });
            put_box(b, b"minf", |b| {
                match picture {
                    // Flags 1 is required of vmhd; graphics mode copy.
                    Some(_) => put_full_box(b, b"vmhd", 0, 1, |b| b.put_bytes(0, 8)),
                    None => put_full_box(b, b"smhd", 0, 0, |b| b.put_u32(0)),
                }
                put_box(b, b"dinf", |b| {
                    put_full_box(b, b"dref", 0, 0, |b| {
                        b.put_u32(1);
                        // Flags 1: the media is in this file.
                        put_full_box(b, b"url ", 0, 1, |_| {});
                    });
                });
                put_box(b, b"stbl", |b| {
                    put_full_box(b, b"stsd", 0, 0, |b| {
                        b.put_u32(1);
                        entry(b);
                    });
                    put_full_box(b, b"stts", 0, 0, |b| b.put_u32(0));
                    put_full_box(b, b"stsc", 0, 0, |b| b.put_u32(0));
                    put_full_box(b, b"stsz", 0, 0, |b| b.put_u64(0)); // size, count
                    put_full_box(b, b"stco", 0, 0, |b| b.put_u32(0));
                });
            });
        });
    });
}

/// The SampleEntry header: six reserved bytes, data_reference_index 1.
fn put_sample_entry_header(b: &mut BytesMut) {
    b.put_bytes(0, 6);
    b.put_u16(1);
}

fn put_avc1(b: &mut BytesMut, v: &Video<'_>) {
    put_box(b, b"avc1", |b| {
        put_sample_entry_header(b);
        b.put_bytes(0, 16); // pre_defined, reserved
        // The SPS limits sides to 16384, within 16 bits.
        b.put_u16(v.width as u16);
        b.put_u16(v.height as u16);
        b.put_u32(0x0048_0000); // 72 dpi
        b.put_u32(0x0048_0000);
        b.put_u32(0);
        b.put_u16(1); // frame_count
        b.put_bytes(0, 32); // compressorname
        b.put_u16(0x0018); // depth
        b.put_i16(-1);
        put_box(b, b"avcC", |b| b.put_slice(v.avcc));
    });
}

fn put_mp4a(b: &mut BytesMut, a: &Audio<'_>) {
    put_box(b, b"mp4a", |b| {
        put_sample_entry_header(b);
        b.put_u64(0);
        b.put_u16(a.channels as u16);
        b.put_u16(16); // sample size
        b.put_u32(0); // pre_defined, reserved
        // 16.16: rates over 65535 do not fit; like ffmpeg, say 0 (the ASC has it).
        let rate = if a.rate <= 0xffff { a.rate << 16 } else { 0 };
        b.put_u32(rate);
        put_full_box(b, b"esds", 0, 0, |b| {
            let mut specific = BytesMut::new();
            put_descriptor(&mut specific, 5, a.asc);
            let mut config = BytesMut::new();
            config.put_u8(0x40); // MPEG-4 audio
            config.put_u8((5 << 2) | 1); // audio stream, reserved bit set
            config.put_bytes(0, 3 + 4 + 4); // buffer size, max and average bitrate: unknown
            config.put_slice(&specific);
            let mut es = BytesMut::new();
            es.put_u16(0); // ES_ID: 0 in files
            es.put_u8(0); // no dependency, URL or OCR
            put_descriptor(&mut es, 4, &config);
            put_descriptor(&mut es, 6, &[2]); // SLConfig: predefined for MP4
            put_descriptor(b, 3, &es);
        });
    });
}

/// An MPEG-4 descriptor: tag, then the length in the four-byte expandable
/// form ffmpeg writes (every parser has met it), then the body.
fn put_descriptor(b: &mut BytesMut, tag: u8, body: &[u8]) {
    let len = body.len() as u32;
    b.put_u8(tag);
    b.put_u8(0x80 | ((len >> 21) & 0x7f) as u8);
    b.put_u8(0x80 | ((len >> 14) & 0x7f) as u8);
    b.put_u8(0x80 | ((len >> 7) & 0x7f) as u8);
    b.put_u8((len & 0x7f) as u8);
    b.put_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::TrackKind;

    /// A box read back: type, where it starts, its body, and its children
    /// (for the containers this module writes).
    #[derive(Debug)]
    struct Node {
        kind: String,
        start: usize,
        end: usize,
        body: std::ops::Range<usize>,
        children: Vec<Node>,
    }

    impl Node {
        fn child(&self, kind: &str) -> &Node {
            self.children
                .iter()
                .find(|c| c.kind == kind)
                .unwrap_or_else(|| panic!("no {kind} in {}", self.kind))
        }

        fn all<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Node> {
            self.children.iter().filter(move |c| c.kind == kind)
        }

        fn path(&self, path: &[&str]) -> &Node {
            path.iter().fold(self, |n, k| n.child(k))
        }
    }

    /// Bytes before the child boxes of a container, or `None` for a leaf.
    fn children_at(kind: &str) -> Option<usize> {
        Some(match kind {
            "moov" | "trak" | "mdia" | "minf" | "dinf" | "stbl" | "mvex" | "moof" | "traf" => 0,
            "stsd" | "dref" => 8,
            "avc1" => 78,
            "mp4a" => 28,
            _ => return None,
        })
    }

    /// Boxes in `data[range]`, which they must fill exactly.
    fn walk(data: &[u8], range: std::ops::Range<usize>) -> Vec<Node> {
        let mut nodes = Vec::new();
        let mut at = range.start;
        while at < range.end {
            assert!(at + 8 <= range.end, "box header past its parent at {at}");
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let kind = String::from_utf8(data[at + 4..at + 8].to_vec()).unwrap();
            assert!(
                size >= 8 && at + size <= range.end,
                "{kind} at {at}: size {size}"
            );
            let body = at + 8..at + size;
            let children = match children_at(&kind) {
                Some(skip) => walk(data, body.start + skip..body.end),
                None => Vec::new(),
            };
            nodes.push(Node {
                kind,
                start: at,
                end: at + size,
                body,
                children,
            });
            at += size;
        }
        assert_eq!(at, range.end);
        nodes
    }

    fn u32_at(data: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(data[at..at + 4].try_into().unwrap())
    }

    /// libx264's 640x360 High profile SPS (as in `media::h264`), one PPS.
    fn avcc() -> Bytes {
        let sps = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut r = vec![1, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
        r.extend_from_slice(&sps);
        r.extend_from_slice(&[1, 0, pps.len() as u8]);
        r.extend_from_slice(&pps);
        Bytes::from(r)
    }

    fn video_cfg(extradata: Bytes) -> TrackConfig {
        TrackConfig {
            kind: TrackKind::Video,
            codec: Codec::H264,
            extradata,
        }
    }

    fn audio_cfg(extradata: &'static [u8]) -> TrackConfig {
        TrackConfig {
            kind: TrackKind::Audio,
            codec: Codec::Aac,
            extradata: Bytes::from_static(extradata),
        }
    }

    /// AAC-LC, 44.1 kHz, stereo.
    const ASC: &[u8] = &[0x12, 0x10];

    fn sample(dts: i64, pts: i64, duration: u32, keyframe: bool, fill: u8, len: usize) -> Sample {
        Sample {
            dts,
            pts,
            duration,
            keyframe,
            data: Bytes::from(vec![fill; len]),
        }
    }

    #[test]
    fn the_init_section_nests_exactly_and_describes_both_tracks() {
        let (init, info) = init_segment(Some(&video_cfg(avcc())), Some(&audio_cfg(ASC))).unwrap();
        let top = walk(&init, 0..init.len());
        let kinds: Vec<&str> = top.iter().map(|n| n.kind.as_str()).collect();
        assert_eq!(kinds, ["ftyp", "moov"]);
        assert_eq!(&init[top[0].body.clone()], b"iso5\0\0\0\0iso5iso6mp41");
        let moov = &top[1];
        assert_eq!(u32_at(&init, moov.child("mvhd").body.start + 12), 1000);
        let traks: Vec<&Node> = moov.all("trak").collect();
        assert_eq!(traks.len(), 2);

        let v = traks[0];
        let tkhd = v.child("tkhd").body.clone();
        assert_eq!(
            u32_at(&init, tkhd.start),
            3,
            "version 0, enabled | in movie"
        );
        assert_eq!(u32_at(&init, tkhd.start + 12), VIDEO_TRACK);
        assert_eq!(u32_at(&init, tkhd.end - 8), 640 << 16);
        assert_eq!(u32_at(&init, tkhd.end - 4), 360 << 16);
        let mdhd = v.path(&["mdia", "mdhd"]).body.clone();
        assert_eq!(u32_at(&init, mdhd.start + 12), 90_000);
        assert_eq!(
            &init[v.path(&["mdia", "hdlr"]).body.start + 8..][..4],
            b"vide"
        );
        let stbl = v.path(&["mdia", "minf", "stbl"]);
        let kinds: Vec<&str> = stbl.children.iter().map(|n| n.kind.as_str()).collect();
        assert_eq!(kinds, ["stsd", "stts", "stsc", "stsz", "stco"]);
        let avc1 = stbl.path(&["stsd", "avc1"]);
        assert_eq!(&init[avc1.body.start + 24..][..4], &[2, 0x80, 1, 0x68]);
        assert_eq!(&init[avc1.child("avcC").body.clone()], &avcc()[..]);
        v.path(&["mdia", "minf", "vmhd"]);
        v.path(&["mdia", "minf", "dinf", "dref", "url "]);

        let a = traks[1];
        assert_eq!(u32_at(&init, a.child("tkhd").body.start + 12), AUDIO_TRACK);
        let mdhd = a.path(&["mdia", "mdhd"]).body.clone();
        assert_eq!(u32_at(&init, mdhd.start + 12), 44_100);
        assert_eq!(
            &init[a.path(&["mdia", "hdlr"]).body.start + 8..][..4],
            b"soun"
        );
        let mp4a = a.path(&["mdia", "minf", "stbl", "stsd", "mp4a"]);
        assert_eq!(u32_at(&init, mp4a.body.start + 24), 44_100 << 16);
        let esds = &init[mp4a.child("esds").body.clone()];
        // Version/flags, ES (3), its id and flags, DecoderConfig (4) 0x40/0x15,
        // then DecoderSpecificInfo (5) holding the ASC, and SLConfig (6) = 2.
        assert_eq!(esds[4], 3);
        assert_eq!(esds[9..12], [0, 0, 0]);
        assert_eq!(esds[12], 4);
        assert_eq!(esds[17..19], [0x40, 0x15]);
        assert_eq!(esds[30], 5);
        assert_eq!(esds[31..37], [0x80, 0x80, 0x80, 2, 0x12, 0x10]);
        assert_eq!(esds[37..], [6, 0x80, 0x80, 0x80, 1, 2]);
        assert_eq!(esds[8] as usize, esds.len() - 9, "ES length");

        let trex: Vec<u32> = moov
            .child("mvex")
            .all("trex")
            .map(|t| u32_at(&init, t.body.start + 4))
            .collect();
        assert_eq!(trex, [VIDEO_TRACK, AUDIO_TRACK]);

        assert_eq!(
            info,
            InitInfo {
                video_timescale: 90_000,
                audio_timescale: Some(44_100),
                codecs: "avc1.64001e,mp4a.40.2".into(),
                width: Some(640),
                height: Some(360),
            }
        );

        // Audio only: one trak, the audio id, no picture.
        let (init, info) = init_segment(None, Some(&audio_cfg(ASC))).unwrap();
        let top = walk(&init, 0..init.len());
        let traks: Vec<&Node> = top[1].all("trak").collect();
        assert_eq!(traks.len(), 1);
        assert_eq!(u32_at(&init, traks[0].child("tkhd").body.start + 12), 2);
        assert_eq!((info.width, info.codecs.as_str()), (None, "mp4a.40.2"));
    }

    #[test]
    fn fragments_point_each_track_at_its_own_bytes() {
        let video = [
            sample(3000, 6000, 3000, true, 0xa0, 100),
            sample(6000, 12000, 3000, false, 0xa1, 40),
            sample(9000, 9000, 3000, false, 0xa2, 7),
        ];
        let audio = [
            sample(1024, 1024, 1024, false, 0xb0, 11),
            sample(2048, 2048, 1024, false, 0xb1, 12),
        ];
        let frag = fragment(7, &video, &audio);
        let top = walk(&frag, 0..frag.len());
        let kinds: Vec<&str> = top.iter().map(|n| n.kind.as_str()).collect();
        assert_eq!(kinds, ["moof", "mdat"]);
        let (moof, mdat) = (&top[0], &top[1]);
        assert_eq!(u32_at(&frag, moof.child("mfhd").body.start + 4), 7);
        assert_eq!(mdat.body.len(), 100 + 40 + 7 + 11 + 12);
        assert_eq!(mdat.end, frag.len());

        let trafs: Vec<&Node> = moof.all("traf").collect();
        assert_eq!(trafs.len(), 2);
        for (traf, (track, samples)) in trafs.iter().zip([(1, &video[..]), (2, &audio[..])]) {
            let tfhd = traf.child("tfhd").body.clone();
            assert_eq!(u32_at(&frag, tfhd.start), 0x02_0000);
            assert_eq!(u32_at(&frag, tfhd.start + 4), track);
            let tfdt = traf.child("tfdt").body.clone();
            assert_eq!(frag[tfdt.start], 1, "tfdt version 1");
            let base = u64::from_be_bytes(frag[tfdt.start + 4..tfdt.end].try_into().unwrap());
            assert_eq!(base, samples[0].dts as u64);

            let trun = traf.child("trun").body.clone();
            assert_eq!(u32_at(&frag, trun.start), 0x0100_0f01);
            let count = u32_at(&frag, trun.start + 4) as usize;
            assert_eq!(count, samples.len());
            assert_eq!(trun.len(), 12 + 16 * count);
            // Offsets count from the moof's first byte.
            let mut at = moof.start + u32_at(&frag, trun.start + 8) as usize;
            for (i, s) in samples.iter().enumerate() {
                let entry = trun.start + 12 + 16 * i;
                assert_eq!(u32_at(&frag, entry), s.duration);
                let size = u32_at(&frag, entry + 4) as usize;
                let flags = u32_at(&frag, entry + 8);
                let cto = u32_at(&frag, entry + 12) as i32;
                assert_eq!(&frag[at..at + size], &s.data[..]);
                assert!(mdat.body.contains(&at) && at + size <= mdat.end);
                let sync = track == AUDIO_TRACK || s.keyframe;
                assert_eq!(flags, if sync { 0x0200_0000 } else { 0x0101_0000 });
                assert_eq!(i64::from(cto), s.pts - s.dts);
                at += size;
            }
        }

        // One track, a negative decode time clamped, a negative composition offset kept.
        let audio = [sample(-512, -1024, 1024, true, 0xc0, 5)];
        let frag = fragment(1, &[], &audio);
        let top = walk(&frag, 0..frag.len());
        let trafs: Vec<&Node> = top[0].all("traf").collect();
        assert_eq!(trafs.len(), 1);
        let tfdt = trafs[0].child("tfdt").body.clone();
        assert_eq!(&frag[tfdt.start + 4..tfdt.end], &[0; 8]);
        let trun = trafs[0].child("trun").body.clone();
        assert_eq!(u32_at(&frag, trun.start + 12 + 12) as i32, -512);
        let at = u32_at(&frag, trun.start + 8) as usize;
        assert_eq!(&frag[at..], &[0xc0; 5]);
    }

    #[test]
    fn codecs_strings_follow_rfc_6381() {
        let codecs =
            |v: Option<&TrackConfig>, a: Option<&TrackConfig>| init_segment(v, a).unwrap().1.codecs;
        let video = video_cfg(avcc());
        assert_eq!(codecs(Some(&video), None), "avc1.64001e");
        let mut baseline = avcc().to_vec();
        baseline[1..4].copy_from_slice(&[0x42, 0xc0, 0x1f]);
        assert_eq!(
            codecs(Some(&video_cfg(baseline.into())), None),
            "avc1.42c01f"
        );
        assert_eq!(codecs(None, Some(&audio_cfg(ASC))), "mp4a.40.2");
        // HE-AAC signalled explicitly: object type 5, 24 kHz core, stereo.
        assert_eq!(
            codecs(Some(&video), Some(&audio_cfg(&[0x2b, 0x10, 0x88, 0x00]))),
            "avc1.64001e,mp4a.40.5"
        );
    }

    #[test]
    fn other_codecs_and_bad_configurations_are_refused() {
        let vp8 = TrackConfig {
            kind: TrackKind::Video,
            codec: Codec::Vp8,
            extradata: Bytes::new(),
        };
        let opus = TrackConfig {
            kind: TrackKind::Audio,
            codec: Codec::Opus,
            extradata: Bytes::new(),
        };
        let refused =
            |v: Option<&TrackConfig>, a: Option<&TrackConfig>| init_segment(v, a).unwrap_err();
        assert!(matches!(
            refused(Some(&vp8), None),
            Fmp4Error::Unsupported {
                slot: "video",
                codec: "vp8"
            }
        ));
        assert!(matches!(
            refused(None, Some(&opus)),
            Fmp4Error::Unsupported {
                slot: "audio",
                codec: "opus"
            }
        ));
        assert!(matches!(
            refused(Some(&audio_cfg(ASC)), None),
            Fmp4Error::Unsupported { codec: "aac", .. }
        ));
        assert!(matches!(refused(None, None), Fmp4Error::NoTracks));
        assert!(matches!(
            refused(Some(&video_cfg(Bytes::new())), None),
            Fmp4Error::BadAvcc(_)
        ));
        assert!(matches!(
            refused(None, Some(&audio_cfg(&[]))),
            Fmp4Error::BadAsc(_)
        ));
        // A record whose only parameter set is a PPS.
        let no_sps = Bytes::from_static(&[1, 0x64, 0, 0x1e, 0xff, 0xe0, 1, 0, 2, 0x68, 0xeb]);
        assert!(matches!(
            refused(Some(&video_cfg(no_sps)), None),
            Fmp4Error::BadAvcc("no SPS")
        ));
        // Annex B instead of a record.
        let annexb = Bytes::from_static(&[0, 0, 0, 1, 0x67, 0x64, 0, 0x1e]);
        assert!(matches!(
            refused(Some(&video_cfg(annexb)), None),
            Fmp4Error::BadAvcc(_)
        ));
        // Sample rate index 15 (explicit rate) is not one we read.
        assert!(matches!(
            refused(None, Some(&audio_cfg(&[0x17, 0x90]))),
            Fmp4Error::BadAsc(_)
        ));
        // Good video does not excuse bad audio.
        assert!(init_segment(Some(&video_cfg(avcc())), Some(&audio_cfg(&[0x12]))).is_err());
    }

    /// Files under the temp dir, removed when dropped (also on a failed assert).
    struct TempFiles(Vec<std::path::PathBuf>);

    impl TempFiles {
        fn path(&mut self, name: &str) -> std::path::PathBuf {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let p = std::env::temp_dir().join(format!(
                "roomcast-fmp4-{}-{nanos}-{name}",
                std::process::id()
            ));
            self.0.push(p.clone());
            p
        }
    }

    impl Drop for TempFiles {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Demuxed packets of one stream, in its own timescale.
    fn samples_of(packets: &[(i64, i64, bool, Bytes)], last_duration: u32) -> Vec<Sample> {
        packets
            .iter()
            .enumerate()
            .map(|(i, (dts, pts, keyframe, data))| Sample {
                dts: *dts,
                pts: *pts,
                duration: packets
                    .get(i + 1)
                    .map_or(last_duration, |next| (next.0 - dts) as u32),
                keyframe: *keyframe,
                data: data.clone(),
            })
            .collect()
    }

    #[test]
    fn ffmpeg_decodes_every_frame_we_write() {
        use crate::media::TimeBase;
        use ffmpeg_next as ff;
        use std::process::Command;

        if Command::new("ffmpeg").arg("-version").output().is_err() {
            println!("skipped: no ffmpeg on PATH");
            return;
        }
        let mut files = TempFiles(Vec::new());
        let flv = files.path("source.flv");
        let mp4 = files.path("out.mp4");
        // High profile as browsers get it; 180 is not a multiple of 16 (cropping);
        // B-frames (composition offsets).
        let made = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc=size=320x180:rate=25")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args([
                "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25", "-bf", "2",
            ])
            .args(["-c:a", "aac", "-ac", "2", "-b:a", "64k", "-f", "flv"])
            .arg(&flv)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );

        // FLV gives AVCC H.264 and raw AAC, with their records as extradata.
        ff::init().unwrap();
        let mut input = ff::format::input(&flv).unwrap();
        let stream = |kind| {
            let s = input.streams().best(kind).unwrap();
            let tb = s.time_base();
            let tb = TimeBase {
                num: tb.numerator() as u32,
                den: tb.denominator() as u32,
            };
            let extradata = crate::media::ffi::parameters_extradata(&s.parameters());
            (s.index(), tb, extradata)
        };
        let (vi, vtb, vextra) = stream(ff::media::Type::Video);
        let (ai, atb, aextra) = stream(ff::media::Type::Audio);
        let video_cfg = video_cfg(vextra);
        let audio_cfg = TrackConfig {
            kind: TrackKind::Audio,
            codec: Codec::Aac,
            extradata: aextra,
        };
        let (init, info) = init_segment(Some(&video_cfg), Some(&audio_cfg)).unwrap();
        assert_eq!((info.width, info.height), (Some(320), Some(180)));
        let rate = info.audio_timescale.unwrap();
        assert_eq!(rate, 44_100);
        let video_tb = TimeBase {
            num: 1,
            den: 90_000,
        };
        let audio_tb = TimeBase { num: 1, den: rate };

        let (mut vpk, mut apk) = (Vec::new(), Vec::new());
        for (s, p) in input.packets() {
            let Some(data) = p.data().filter(|d| !d.is_empty()) else {
                continue;
            };
            let (dts, pts) = (p.dts().unwrap(), p.pts().unwrap());
            let (to, list, tb) = if s.index() == vi {
                (video_tb, &mut vpk, vtb)
            } else if s.index() == ai {
                (audio_tb, &mut apk, atb)
            } else {
                continue;
            };
            let data = Bytes::copy_from_slice(data);
            list.push((tb.rescale(dts, to), tb.rescale(pts, to), p.is_key(), data));
        }
        let video = samples_of(&vpk, 3600);
        let audio = samples_of(&apk, 1024);
        assert!(
            video.len() >= 50 && audio.len() >= 80,
            "{} {}",
            video.len(),
            audio.len()
        );
        assert!(video.iter().any(|s| s.pts != s.dts), "B-frames expected");

        // A part per 200 ms of decode time, as LL-HLS would cut them.
        let part = |dts: i64, scale: i64| dts * 5 / scale;
        let parts = part(video.last().unwrap().dts, 90_000)
            .max(part(audio.last().unwrap().dts, i64::from(rate)));
        let mut file = init.to_vec();
        for (k, sequence) in (0..=parts).zip(1..) {
            let v: Vec<Sample> = video
                .iter()
                .filter(|s| part(s.dts, 90_000) == k)
                .cloned()
                .collect();
            let a: Vec<Sample> = audio
                .iter()
                .filter(|s| part(s.dts, i64::from(rate)) == k)
                .cloned()
                .collect();
            file.extend_from_slice(&fragment(sequence, &v, &a));
        }
        std::fs::write(&mp4, &file).unwrap();

        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-show_entries"])
            .args([
                "stream=codec_name,width,height,nb_read_frames",
                "-of",
                "json",
            ])
            .arg(&mp4)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&probe.stderr);
        assert!(
            probe.status.success() && stderr.is_empty(),
            "ffprobe: {stderr}"
        );
        let json: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
        let streams = json["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2, "{json}");
        assert_eq!(streams[0]["codec_name"], "h264");
        assert_eq!(streams[0]["width"], 320);
        assert_eq!(streams[0]["height"], 180);
        assert_eq!(streams[0]["nb_read_frames"], video.len().to_string());
        assert_eq!(streams[1]["codec_name"], "aac");
        assert_eq!(streams[1]["nb_read_frames"], audio.len().to_string());

        // The demuxer reads back the decode and presentation times and the keyframes we wrote.
        let packets = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "packet=stream_index,pts,dts,flags",
            ])
            .args(["-of", "json"])
            .arg(&mp4)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&packets.stdout).unwrap();
        for (index, fed) in [(0, &video), (1, &audio)] {
            let read: Vec<(i64, i64, bool)> = json["packets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["stream_index"] == index)
                .map(|p| {
                    let flags = p["flags"].as_str().unwrap();
                    (
                        p["dts"].as_i64().unwrap(),
                        p["pts"].as_i64().unwrap(),
                        flags.starts_with('K'),
                    )
                })
                .collect();
            let expected: Vec<(i64, i64, bool)> = fed
                .iter()
                .map(|s| (s.dts, s.pts, s.keyframe || index == 1))
                .collect();
            assert_eq!(read, expected, "stream {index}");
        }

        let decode = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&mp4)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&decode.stderr);
        assert!(
            decode.status.success() && stderr.is_empty(),
            "ffmpeg: {stderr}"
        );
    }
}
