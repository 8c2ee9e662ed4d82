//! The blocking side of a pull: libavformat reads the URL, packets become
//! `MediaMessage`s, paced at the media's own rate.
//!
//! H.264 and AAC are turned into our framing whatever the container: avcC
//! and AVCC from MP4/FLV as is, Annex B (MPEG-TS, HLS) to AVCC with the avcC
//! built from the in-band SPS/PPS, ADTS (MPEG-TS) stripped with the
//! AudioSpecificConfig built from its header. VP8, VP9 and Opus pass as
//! they are. A play starts at `seek` and each further play (RepeatNum)
//! continues the timeline where the last one ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffmpeg_next as ff;

use crate::media::{Codec, EncodedFrame, MediaMessage, TimeBase, TrackConfig, TrackKind, h264};

/// Network reads give up after this long without data.
const READ_TIMEOUT_US: &str = "10000000";
/// Timestamps of pulled frames: microseconds, so a play that follows another
/// continues its frame grid without rounding drift.
const MICROS: TimeBase = TimeBase {
    num: 1,
    den: 1_000_000,
};
/// The next play starts one frame after the last; without any frame timing, this much later (µs).
const LOOP_GAP_US: i64 = 40_000;
/// Protocols a pulled URL (and an HLS playlist's segments) may use.
const PROTOCOLS: &str = "http,https,tcp,tls,rtmp,rtmps,crypto";

#[derive(Debug, Clone)]
pub(crate) struct PullSettings {
    pub url: String,
    /// Start this many seconds into the media (each play).
    pub seek_secs: u64,
    /// Plays: `None` loops until stopped or `max_duration`.
    pub plays: Option<u32>,
    pub max_duration: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("cannot open {url}: {source}")]
    Open { url: String, source: ff::Error },
    #[error("{0} has no H.264, VP8, VP9, AAC or Opus track")]
    NoUsableTrack(String),
    #[error("reading {url}: {source}")]
    Read { url: String, source: ff::Error },
}

/// One track being read: how its packets become our frames.
struct Track {
    index: usize,
    kind: TrackKind,
    codec: Codec,
    tb: TimeBase,
    /// H.264 in Annex B (MPEG-TS) rather than AVCC.
    annexb: bool,
    /// AAC in ADTS (MPEG-TS) rather than raw.
    adts: bool,
    config: Option<Bytes>,
}

fn codec_of(id: ff::codec::Id) -> Option<(TrackKind, Codec)> {
    Some(match id {
        ff::codec::Id::H264 => (TrackKind::Video, Codec::H264),
        ff::codec::Id::VP8 => (TrackKind::Video, Codec::Vp8),
        ff::codec::Id::VP9 => (TrackKind::Video, Codec::Vp9),
        ff::codec::Id::AAC => (TrackKind::Audio, Codec::Aac),
        ff::codec::Id::OPUS => (TrackKind::Audio, Codec::Opus),
        _ => return None,
    })
}

fn extradata(par: &ff::codec::Parameters) -> Bytes {
    crate::media::ffi::parameters_extradata(par)
}

/// The AudioSpecificConfig an ADTS header describes, and the header length.
fn adts_config(data: &[u8]) -> Option<(Bytes, usize, usize)> {
    if data.len() < 7 || data[0] != 0xff || data[1] & 0xf0 != 0xf0 {
        return None;
    }
    let header = if data[1] & 1 == 1 { 7 } else { 9 };
    let object = (data[2] >> 6) + 1;
    let rate_index = (data[2] >> 2) & 0x0f;
    let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
    let frame_len =
        (usize::from(data[3] & 3) << 11) | (usize::from(data[4]) << 3) | usize::from(data[5] >> 5);
    if frame_len < header || rate_index > 12 {
        return None;
    }
    let asc = [
        (object << 3) | (rate_index >> 1),
        ((rate_index & 1) << 7) | (channels << 3),
    ];
    Some((Bytes::copy_from_slice(&asc), header, frame_len))
}

/// Reads `settings.url` (again and again if asked) until done, stopped or
/// failed; every message goes to `out`. Returns why it ended.
pub(crate) fn run(
    settings: &PullSettings,
    stop: &Arc<AtomicBool>,
    out: &tokio::sync::mpsc::Sender<MediaMessage>,
) -> Result<String, PullError> {
    ff::init().ok();
    let started = Instant::now();
    let mut offset_us = 0i64;
    let mut plays = 0u32;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok("stopped".into());
        }
        if settings.plays.is_some_and(|n| plays >= n) {
            return Ok(format!("played {plays} time(s)"));
        }
        if settings
            .max_duration
            .is_some_and(|d| started.elapsed() >= d)
        {
            return Ok("MaxDuration reached".into());
        }
        match play(settings, stop, out, offset_us, started)? {
            Some(next) => offset_us = next,
            None => return Ok("the session ended".into()),
        }
        plays += 1;
    }
}

/// One play from `seek`; returns where the next play starts (µs).
/// `Ok(None)`: the receiver is gone.
fn play(
    settings: &PullSettings,
    stop: &Arc<AtomicBool>,
    out: &tokio::sync::mpsc::Sender<MediaMessage>,
    offset_us: i64,
    started: Instant,
) -> Result<Option<i64>, PullError> {
    let url = &settings.url;
    let mut opts = ff::Dictionary::new();
    opts.set("rw_timeout", READ_TIMEOUT_US);
    opts.set("protocol_whitelist", PROTOCOLS);
    let mut input =
        ff::format::input_with_dictionary(url, opts).map_err(|source| PullError::Open {
            url: url.clone(),
            source,
        })?;
    let mut tracks: Vec<Track> = Vec::new();
    for kind in [ff::media::Type::Video, ff::media::Type::Audio] {
        let Some(stream) = input.streams().best(kind) else {
            continue;
        };
        let par = stream.parameters();
        let Some((kind, codec)) = codec_of(par.id()) else {
            tracing::warn!(%url, codec = ?par.id(), "pull: track with an unusable codec skipped");
            continue;
        };
        let tb = stream.time_base();
        let extra = extradata(&par);
        let annexb = codec == Codec::H264 && extra.first() != Some(&1);
        let adts = codec == Codec::Aac && extra.is_empty();
        let config = match codec {
            Codec::H264 if annexb => h264::avcc_record(&extra),
            Codec::H264 | Codec::Aac | Codec::Opus => (!extra.is_empty()).then_some(extra),
            Codec::Vp8 | Codec::Vp9 => Some(Bytes::new()),
        };
        tracks.push(Track {
            index: stream.index(),
            kind,
            codec,
            tb: TimeBase {
                num: tb.numerator().max(1) as u32,
                den: tb.denominator().max(1) as u32,
            },
            annexb,
            adts,
            config: None,
        });
        let t = tracks.last_mut().expect("pushed");
        if let Some(c) = config
            && !send_config(out, t, c)
        {
            return Ok(None);
        }
    }
    if tracks.is_empty() {
        return Err(PullError::NoUsableTrack(url.clone()));
    }
    if settings.seek_secs > 0 {
        let ts = settings.seek_secs as i64 * i64::from(ff::ffi::AV_TIME_BASE);
        if let Err(e) = input.seek(ts, ..ts) {
            tracing::warn!(%url, "pull: cannot seek to {} s: {e}", settings.seek_secs);
        }
    }
    let play_start = Instant::now();
    let mut first_us: Option<i64> = None;
    // The end of this play: the last picture plus one frame (or the last
    // audio frame plus its length for a stream without video).
    let mut end = Ending::default();
    let mut pkt = ff::Packet::empty();
    loop {
        if stop.load(Ordering::Relaxed)
            || settings
                .max_duration
                .is_some_and(|d| started.elapsed() >= d)
        {
            return Ok(Some(end.next(offset_us)));
        }
        match pkt.read(&mut input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => return Ok(Some(end.next(offset_us))),
            Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => continue,
            Err(source) => {
                return Err(PullError::Read {
                    url: url.clone(),
                    source,
                });
            }
        }
        let Some(t) = tracks.iter_mut().find(|t| t.index == pkt.stream()) else {
            continue;
        };
        let Some(data) = pkt.data() else {
            continue;
        };
        let Some(dts) = pkt.dts().or(pkt.pts()) else {
            continue;
        };
        let pts = pkt.pts().unwrap_or(dts);
        let dts_us = t.tb.rescale(dts, MICROS);
        let pts_us = t.tb.rescale(pts, MICROS);
        let first = *first_us.get_or_insert(dts_us);
        // Real time: a file is read as fast as it plays, not faster.
        let due = play_start + Duration::from_micros((dts_us - first).max(0) as u64);
        while Instant::now() < due {
            if stop.load(Ordering::Relaxed) {
                return Ok(Some(end.next(offset_us)));
            }
            std::thread::sleep((due - Instant::now()).min(Duration::from_millis(100)));
        }
        let dts_out = offset_us + dts_us - first;
        let pts_out = offset_us + pts_us - first;
        end.saw(t.kind, pts_out - offset_us);
        let keyframe = pkt.is_key();
        let frames = match frames_of(t, data, dts_out, pts_out, keyframe, out) {
            Some(f) => f,
            None => return Ok(None),
        };
        for f in frames {
            if out.blocking_send(MediaMessage::Frame(f)).is_err() {
                return Ok(None);
            }
        }
    }
}

fn send_config(out: &tokio::sync::mpsc::Sender<MediaMessage>, t: &mut Track, c: Bytes) -> bool {
    if t.config.as_ref() == Some(&c) {
        return true;
    }
    t.config = Some(c.clone());
    out.blocking_send(MediaMessage::Config(TrackConfig {
        kind: t.kind,
        codec: t.codec,
        extradata: c,
    }))
    .is_ok()
}

/// Our frames from one packet (an ADTS packet may hold several AAC frames;
/// in-band parameter sets may change the config first). `None`: receiver gone.
fn frames_of(
    t: &mut Track,
    data: &[u8],
    dts: i64,
    pts: i64,
    keyframe: bool,
    out: &tokio::sync::mpsc::Sender<MediaMessage>,
) -> Option<Vec<EncodedFrame>> {
    let (kind, codec) = (t.kind, t.codec);
    let frame = move |data: Bytes, dts: i64, pts: i64, keyframe: bool| EncodedFrame {
        kind,
        codec,
        pts,
        dts,
        time_base: MICROS,
        keyframe,
        data,
    };
    if t.annexb {
        if h264::annexb_nals(data).iter().any(|n| n[0] & 0x1f == 7)
            && let Some(record) = h264::avcc_record(data)
            && !send_config(out, t, record)
        {
            return None;
        }
        if t.config.is_none() {
            return Some(Vec::new());
        }
        let avcc = h264::annexb_to_avcc(data);
        return Some(if avcc.is_empty() {
            Vec::new()
        } else {
            vec![frame(avcc, dts, pts, keyframe)]
        });
    }
    if t.adts {
        let mut frames = Vec::new();
        let mut rest = data;
        let mut n = 0i64;
        while let Some((asc, header, len)) = adts_config(rest) {
            if len > rest.len() {
                break;
            }
            if !send_config(out, t, asc.clone()) {
                return None;
            }
            let rate = adts_rate(&asc);
            let step = 1024 * 1_000_000 / i64::from(rate.max(1));
            frames.push(frame(
                Bytes::copy_from_slice(&rest[header..len]),
                dts + n * step,
                pts + n * step,
                true,
            ));
            n += 1;
            rest = &rest[len..];
        }
        return Some(frames);
    }
    if t.config.is_none() && t.codec != Codec::H264 {
        // Opus without a header: our decoders assume WebRTC's 48 kHz stereo.
        if !send_config(out, t, Bytes::new()) {
            return None;
        }
    }
    let keyframe = keyframe || t.kind == TrackKind::Audio;
    Some(vec![frame(
        Bytes::copy_from_slice(data),
        dts,
        pts,
        keyframe,
    )])
}

/// The last frames seen in a play, to place the next play right after.
#[derive(Default)]
struct Ending {
    /// (last, the one before) picture times within the play, µs.
    video: (Option<i64>, Option<i64>),
    audio: (Option<i64>, Option<i64>),
}

impl Ending {
    fn saw(&mut self, kind: TrackKind, t: i64) {
        let slot = match kind {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio => &mut self.audio,
        };
        if slot.0.is_none_or(|l| t > l) {
            *slot = (Some(t), slot.0);
        }
    }

    fn next(&self, offset_us: i64) -> i64 {
        let after = |(last, before): (Option<i64>, Option<i64>)| {
            let last = last?;
            Some(last + before.map_or(LOOP_GAP_US, |b| (last - b).clamp(1, 1_000_000)))
        };
        offset_us
            + after(self.video)
                .or_else(|| after(self.audio))
                .unwrap_or(LOOP_GAP_US)
    }
}

fn adts_rate(asc: &[u8]) -> u32 {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    let index = ((asc[0] & 7) << 1) | (asc[1] >> 7);
    RATES.get(usize::from(index)).copied().unwrap_or(48_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_headers_give_the_audio_specific_config() {
        // AAC-LC, 48 kHz (index 3), stereo, 7-byte header, frame of 20 bytes.
        let len = 20usize;
        let h = [
            0xff,
            0xf1,
            (1 << 6) | (3 << 2),
            (2 << 6) | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            ((len & 7) as u8) << 5 | 0x1f,
            0xfc,
        ];
        let (asc, header, frame) = adts_config(&h).unwrap();
        assert_eq!(&asc[..], &[0x11, 0x90]);
        assert_eq!((header, frame), (7, 20));
        assert_eq!(adts_rate(&asc), 48_000);
        assert!(adts_config(&[0xff, 0x00, 0, 0, 0, 0, 0]).is_none());
        assert!(adts_config(&h[..5]).is_none());
    }

    #[test]
    fn the_next_play_continues_the_frame_grid() {
        let mut e = Ending::default();
        // 30 fps pictures (33333 µs) and 1024-sample audio frames.
        for k in 0..120 {
            e.saw(TrackKind::Video, k * 1_000_000 / 30);
        }
        for k in 0..187 {
            e.saw(TrackKind::Audio, k * 21_333);
        }
        assert_eq!(e.next(5_000_000), 5_000_000 + 4_000_000 - 1);
        let mut audio_only = Ending::default();
        audio_only.saw(TrackKind::Audio, 0);
        audio_only.saw(TrackKind::Audio, 21_333);
        assert_eq!(audio_only.next(0), 42_666);
        assert_eq!(Ending::default().next(7), 7 + LOOP_GAP_US);
    }
}
