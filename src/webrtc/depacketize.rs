//! RTP in, `MediaMessage`s out: one depacketizer per received track, and the
//! clock that puts a publisher's tracks on one timeline. Pure: time is an
//! argument.
//!
//! Timing: a track's RTP timestamps are first mapped by the arrival of its
//! first packet; once the sender has reported (RTCP SR) how its RTP clock
//! relates to its NTP wallclock, the track is mapped through that instead,
//! with one NTP↔local offset per publisher, so audio and video captured at
//! the same moment get the same media time whatever their RTP offsets.
//! Output times are milliseconds since the publisher's session began,
//! strictly increasing per track.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::rtp;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::codec::opus::OpusPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::codec::vp9::Vp9Packet;
use rtc::rtp::packetizer::Depacketizer;

use crate::media::{Codec, EncodedFrame, MediaMessage, TimeBase, TrackConfig, TrackKind, h264};

/// Packets a video frame may wait for its missing ones (reordering, NACK).
const VIDEO_MAX_LATE: u16 = 256;
/// Same for audio (one packet per frame).
const AUDIO_MAX_LATE: u16 = 32;
/// A track's first frames wait this long for the sender's first report
/// (RTCP SR), so they get the synchronised time from the start instead of
/// jumping to it later; a sender that never reports is timed by arrival.
const SR_WAIT: Duration = Duration::from_secs(2);
/// Frames held while waiting (about 3 s of video or audio).
const MAX_HELD: usize = 160;

/// The publisher's shared time reference.
#[derive(Clone)]
pub(crate) struct SessionClock {
    origin: Instant,
    /// Sender's NTP seconds minus local seconds since `origin`, set by the
    /// first sender report of any track.
    ntp_offset: Arc<Mutex<Option<f64>>>,
    /// Tracks of this publisher, and how many of them have reported: the
    /// first frames of every track wait until all have (or `SR_WAIT`), so
    /// the tracks start together.
    tracks: Arc<std::sync::atomic::AtomicUsize>,
    reported: Arc<std::sync::atomic::AtomicUsize>,
}

impl SessionClock {
    pub(crate) fn new(origin: Instant) -> SessionClock {
        SessionClock {
            origin,
            ntp_offset: Arc::new(Mutex::new(None)),
            tracks: Arc::default(),
            reported: Arc::default(),
        }
    }

    fn local(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.origin).as_secs_f64()
    }

    fn offset(&self, ntp: f64, now: Instant) -> f64 {
        let mut o = self.ntp_offset.lock().unwrap_or_else(|p| p.into_inner());
        *o.get_or_insert(ntp - self.local(now))
    }

    fn all_reported(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.reported.load(Relaxed) >= self.tracks.load(Relaxed)
    }

    fn known_offset(&self) -> Option<f64> {
        *self.ntp_offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// RTP time → media time for one track.
struct TrackTiming {
    rate: f64,
    last_rtp: Option<u32>,
    /// The last RTP timestamp, unwrapped to 64 bits.
    unwrapped: i64,
    /// (unwrapped RTP, local seconds) of the first packet.
    first: Option<(i64, f64)>,
    /// (unwrapped RTP, NTP seconds) of the latest sender report.
    report: Option<(i64, f64)>,
    last_ms: Option<i64>,
    /// The unwrapped RTP time of `last_ms`.
    last_unwrapped: i64,
    /// Added to the mapping while it catches up after a backward move.
    correction: i64,
}

impl TrackTiming {
    fn new(rate: u32) -> TrackTiming {
        TrackTiming {
            rate: f64::from(rate.max(1)),
            last_rtp: None,
            unwrapped: 0,
            first: None,
            report: None,
            last_ms: None,
            last_unwrapped: 0,
            correction: 0,
        }
    }

    fn unwrap(&mut self, ts: u32) -> i64 {
        match self.last_rtp {
            None => self.unwrapped = i64::from(ts),
            Some(prev) => self.unwrapped += i64::from(ts.wrapping_sub(prev) as i32),
        }
        self.last_rtp = Some(ts);
        self.unwrapped
    }

    /// Where `ts` would unwrap to, without moving the reference.
    fn peek_unwrap(&self, ts: u32) -> i64 {
        match self.last_rtp {
            None => i64::from(ts),
            Some(prev) => self.unwrapped + i64::from(ts.wrapping_sub(prev) as i32),
        }
    }

    fn sender_report(&mut self, clock: &SessionClock, now: Instant, ntp_time: u64, rtp_time: u32) {
        let ntp = (ntp_time >> 32) as f64 + (ntp_time & 0xffff_ffff) as f64 / 4_294_967_296.0;
        clock.offset(ntp, now);
        self.report = Some((self.peek_unwrap(rtp_time), ntp));
    }

    fn media_ms(&mut self, clock: &SessionClock, now: Instant, ts: u32) -> i64 {
        let u = self.unwrap(ts);
        let secs = match (self.report, clock.known_offset()) {
            (Some((r_rtp, r_ntp)), Some(offset)) => r_ntp + (u - r_rtp) as f64 / self.rate - offset,
            _ => {
                let (f_rtp, f_local) = *self.first.get_or_insert((u, clock.local(now)));
                f_local + (u - f_rtp) as f64 / self.rate
            }
        };
        let raw = (secs * 1000.0).round() as i64;
        let mut ms = raw + self.correction;
        if let Some(last) = self.last_ms {
            let step = ((u - self.last_unwrapped) as f64 * 1000.0 / self.rate).round() as i64;
            if ms <= last || ms < last + step / 2 {
                // The mapping moved back (the first sender report, a
                // reordered packet): keep the RTP spacing, then slew back
                // to the mapping by 1 ms per packet, never repeating a time.
                self.correction = last + step.max(1) - raw;
                ms = raw + self.correction;
            } else if self.correction > 0 && ms > last + 1 {
                self.correction -= 1;
                ms -= 1;
            }
        }
        self.last_ms = Some(ms);
        self.last_unwrapped = u;
        ms
    }
}

enum Builder {
    H264(SampleBuilder<SafeH264>),
    Vp8(SampleBuilder<Vp8Packet>),
    Vp9(SampleBuilder<FreshVp9>),
    Opus(SampleBuilder<OpusPacket>),
}

/// Largest H.264 NAL unit reassembled from FU-A fragments.
const MAX_NAL_BYTES: usize = 4 << 20;

/// rtc's H.264 depacketizer, safe for a stranger's packets: STAP-A sizes are
/// checked before it reads them (it indexes past the end of an aggregate
/// with a trailing byte), and a FU-A reassembly is capped at
/// [`MAX_NAL_BYTES`] and restarts at a start fragment (it keeps fragments
/// until an end bit comes, however many arrive).
#[derive(Default)]
struct SafeH264 {
    inner: H264Packet,
    fua_bytes: usize,
}

impl Depacketizer for SafeH264 {
    fn depacketize(&mut self, b: &Bytes) -> rtc::shared::error::Result<Bytes> {
        use rtc::shared::error::Error;
        const STAP_A: u8 = 24;
        const FU_A: u8 = 28;
        match b.first().map(|b0| b0 & 0x1f) {
            Some(STAP_A) => {
                let mut at = 1;
                while at < b.len() {
                    let (Some(&hi), Some(&lo)) = (b.get(at), b.get(at + 1)) else {
                        return Err(Error::ErrShortPacket);
                    };
                    at += 2 + usize::from(u16::from_be_bytes([hi, lo]));
                    if at > b.len() {
                        return Err(Error::ErrShortPacket);
                    }
                }
            }
            Some(FU_A) if b.len() >= 2 => {
                if b[1] & 0x80 != 0 || self.fua_bytes + b.len() > MAX_NAL_BYTES {
                    // A new NAL unit (or one too large): forget what was gathered.
                    self.inner = H264Packet::default();
                    self.fua_bytes = 0;
                    if b[1] & 0x80 == 0 {
                        return Err(Error::ErrShortPacket);
                    }
                }
                self.fua_bytes += b.len();
                if b[1] & 0x40 != 0 {
                    self.fua_bytes = 0;
                }
            }
            _ => {}
        }
        let r = self.inner.depacketize(b);
        if r.is_err() {
            self.inner = H264Packet::default();
            self.fua_bytes = 0;
        }
        r
    }

    fn is_partition_head(&self, payload: &Bytes) -> bool {
        self.inner.is_partition_head(payload)
    }

    fn is_partition_tail(&self, marker: bool, payload: &Bytes) -> bool {
        self.inner.is_partition_tail(marker, payload)
    }
}

/// rtc's VP9 depacketizer with fresh state for every packet: its own keeps
/// appending every scalability structure it reads (and every P_DIFF, so a
/// flexible-mode stream fails after three packets). Each VP9 payload
/// descriptor stands alone, so nothing is lost.
#[derive(Default)]
struct FreshVp9(Vp9Packet);

impl Depacketizer for FreshVp9 {
    fn depacketize(&mut self, b: &Bytes) -> rtc::shared::error::Result<Bytes> {
        self.0 = Vp9Packet::default();
        self.0.depacketize(b)
    }

    fn is_partition_head(&self, payload: &Bytes) -> bool {
        self.0.is_partition_head(payload)
    }

    fn is_partition_tail(&self, marker: bool, payload: &Bytes) -> bool {
        self.0.is_partition_tail(marker, payload)
    }
}

enum Held {
    Config(TrackConfig),
    Frame {
        data: Bytes,
        keyframe: bool,
        ts: u32,
        at: Instant,
    },
}

/// One received track's depacketizer.
pub(crate) struct TrackDepacketizer {
    held: VecDeque<Held>,
    first_at: Option<Instant>,
    /// Timing settled (a report came or `SR_WAIT` passed): nothing is held any more.
    settled: bool,
    codec: Codec,
    builder: Builder,
    timing: TrackTiming,
    clock: SessionClock,
    /// The configuration announced last (H.264: the avcC record).
    config: Option<Bytes>,
    waiting_keyframe: bool,
    /// Frames dropped while waiting for a keyframe or a configuration.
    pub skipped: u64,
}

impl TrackDepacketizer {
    /// `codec` from the negotiated MIME type; `None` for a codec we cannot
    /// use, or a clock rate its RTP format does not have (the rate comes from
    /// the peer's offer; 0 would divide by zero).
    pub(crate) fn new(
        mime: &str,
        clock_rate: u32,
        clock: SessionClock,
    ) -> Option<TrackDepacketizer> {
        let mime = mime.to_ascii_lowercase();
        let expected = if mime.starts_with("audio/") {
            48_000
        } else {
            90_000
        };
        if clock_rate != expected {
            return None;
        }
        let (codec, builder) = match mime.as_str() {
            "video/h264" => (
                Codec::H264,
                Builder::H264(SampleBuilder::new(
                    VIDEO_MAX_LATE,
                    SafeH264::default(),
                    clock_rate,
                )),
            ),
            "video/vp8" => (
                Codec::Vp8,
                Builder::Vp8(SampleBuilder::new(
                    VIDEO_MAX_LATE,
                    Vp8Packet::default(),
                    clock_rate,
                )),
            ),
            "video/vp9" => (
                Codec::Vp9,
                Builder::Vp9(SampleBuilder::new(
                    VIDEO_MAX_LATE,
                    FreshVp9::default(),
                    clock_rate,
                )),
            ),
            "audio/opus" => (
                Codec::Opus,
                Builder::Opus(SampleBuilder::new(AUDIO_MAX_LATE, OpusPacket, clock_rate)),
            ),
            _ => return None,
        };
        clock
            .tracks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(TrackDepacketizer {
            held: VecDeque::new(),
            first_at: None,
            settled: false,
            codec,
            builder,
            timing: TrackTiming::new(clock_rate),
            clock,
            config: None,
            waiting_keyframe: true,
            skipped: 0,
        })
    }

    pub(crate) fn kind(&self) -> TrackKind {
        match self.codec {
            Codec::Opus | Codec::Aac => TrackKind::Audio,
            _ => TrackKind::Video,
        }
    }

    /// An RTCP sender report about this track.
    pub(crate) fn sender_report(&mut self, now: Instant, ntp_time: u64, rtp_time: u32) {
        if self.timing.report.is_none() {
            self.clock
                .reported
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.timing
            .sender_report(&self.clock, now, ntp_time, rtp_time);
    }

    /// Feeds one RTP packet; complete frames (and configurations) go to `out`.
    pub(crate) fn push(&mut self, now: Instant, packet: rtp::Packet, out: &mut Vec<MediaMessage>) {
        let mut samples = Vec::new();
        macro_rules! drain {
            ($b:expr) => {{
                $b.push(now, packet);
                while let Some(s) = $b.pop(now) {
                    samples.push((s.data, s.packet_timestamp));
                }
            }};
        }
        match &mut self.builder {
            Builder::H264(b) => drain!(b),
            Builder::Vp8(b) => drain!(b),
            Builder::Vp9(b) => drain!(b),
            Builder::Opus(b) => drain!(b),
        }
        self.first_at.get_or_insert(now);
        for (data, ts) in samples {
            self.frame(now, data, ts);
        }
        self.release(now, out);
    }

    /// Emits what is held once the track's timing is settled.
    fn release(&mut self, now: Instant, out: &mut Vec<MediaMessage>) {
        if !self.settled {
            let reported = self.timing.report.is_some() && self.clock.all_reported();
            let waited = self
                .first_at
                .is_some_and(|t| now.saturating_duration_since(t) >= SR_WAIT);
            if !(reported || waited || self.held.len() >= MAX_HELD) {
                return;
            }
            self.settled = true;
        }
        let kind = self.kind();
        while let Some(h) = self.held.pop_front() {
            match h {
                Held::Config(c) => out.push(MediaMessage::Config(c)),
                Held::Frame {
                    data,
                    keyframe,
                    ts,
                    at,
                } => {
                    let ms = self.timing.media_ms(&self.clock, at, ts);
                    out.push(MediaMessage::Frame(EncodedFrame {
                        kind,
                        codec: self.codec,
                        pts: ms,
                        dts: ms,
                        time_base: TimeBase::MILLIS,
                        keyframe,
                        data,
                    }));
                }
            }
        }
    }

    fn frame(&mut self, now: Instant, data: Bytes, ts: u32) {
        if data.is_empty() {
            return;
        }
        let (data, keyframe) = match self.codec {
            Codec::H264 => {
                let nals = h264::annexb_nals(&data);
                let keyframe = nals.iter().any(|n| n[0] & 0x1f == 5);
                if nals.iter().any(|n| n[0] & 0x1f == 7)
                    && let Some(record) = h264::avcc_record(&data)
                    && self.config.as_ref() != Some(&record)
                {
                    self.config = Some(record.clone());
                    self.held.push_back(Held::Config(TrackConfig {
                        kind: TrackKind::Video,
                        codec: Codec::H264,
                        extradata: record,
                    }));
                }
                if self.config.is_none() {
                    self.skipped += 1;
                    return;
                }
                (h264::annexb_to_avcc(&data), keyframe)
            }
            Codec::Vp8 => {
                // The inverse key frame flag is bit 0 of the first byte (RFC 6386 9.1).
                let keyframe = data[0] & 1 == 0;
                (data, keyframe)
            }
            Codec::Vp9 => {
                // Uncompressed header: frame_marker(2) profile(2..3) show_existing(1) frame_type(1).
                let b = data[0];
                let profile = ((b >> 5) & 1) | (((b >> 4) & 1) << 1);
                let shift = if profile == 3 { 1 } else { 0 };
                let show_existing = (b >> (3 - shift)) & 1 == 1;
                let keyframe = !show_existing && (b >> (2 - shift)) & 1 == 0;
                (data, keyframe)
            }
            Codec::Opus | Codec::Aac => (data, true),
        };
        if self.codec != Codec::H264 && self.config.is_none() {
            self.config = Some(Bytes::new());
            self.held.push_back(Held::Config(TrackConfig {
                kind: self.kind(),
                codec: self.codec,
                extradata: Bytes::new(),
            }));
        }
        if self.waiting_keyframe {
            if !keyframe {
                self.skipped += 1;
                return;
            }
            self.waiting_keyframe = false;
        }
        self.held.push_back(Held::Frame {
            data,
            keyframe,
            ts,
            at: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ntp(secs: f64) -> u64 {
        let whole = secs.floor();
        ((whole as u64) << 32) | (((secs - whole) * 4_294_967_296.0) as u64)
    }

    #[test]
    fn rtp_time_unwraps_and_stays_increasing() {
        let t0 = Instant::now();
        let clock = SessionClock::new(t0);
        let mut t = TrackTiming::new(90_000);
        assert_eq!(t.media_ms(&clock, t0, u32::MAX - 8999), 0);
        // Wraps: 9000 ticks later = 100 ms.
        assert_eq!(t.media_ms(&clock, t0, 0), 100);
        // A repeated timestamp still moves forward.
        assert_eq!(t.media_ms(&clock, t0, 0), 101);
    }

    #[test]
    fn a_mapping_that_moves_back_keeps_the_spacing_then_catches_up() {
        let t0 = Instant::now();
        let clock = SessionClock::new(t0);
        let mut t = TrackTiming::new(90_000);
        for i in 0..3u32 {
            t.media_ms(&clock, t0 + Duration::from_millis(100), i * 3000);
        }
        // A sender report (received 50 ms after the session began) maps
        // the track 50 ms earlier than its first arrival did.
        t.sender_report(&clock, t0 + Duration::from_millis(50), 1 << 32, 0);
        let mut times = Vec::new();
        for i in 3..80u32 {
            times.push(t.media_ms(&clock, t0 + Duration::from_millis(200), i * 3000));
        }
        // Before: 100, 133, 167. The report maps frame 3 to 150 ms: too
        // early, so the spacing is kept...
        assert_eq!(times[0], 167 + 33);
        assert!(times.windows(2).all(|w| w[1] - w[0] >= 32), "{times:?}");
        // ...and the track converges to the report's mapping (50 ms + i * 33.3).
        assert_eq!(*times.last().unwrap(), 50 + 2633);
    }

    #[test]
    fn sender_reports_align_tracks_with_different_rtp_offsets() {
        let t0 = Instant::now();
        let clock = SessionClock::new(t0);
        let mut audio = TrackTiming::new(48_000);
        let mut video = TrackTiming::new(90_000);
        // Both captured at sender NTP 1000.0 s, random RTP offsets; video
        // arrives 80 ms after audio (its packets took longer).
        let now = t0 + Duration::from_millis(500);
        audio.sender_report(&clock, now, ntp(1000.0), 123_456);
        video.sender_report(&clock, now, ntp(1000.0), 7_000_000);
        let a = audio.media_ms(&clock, now, 123_456 + 4800);
        let v = video.media_ms(&clock, now + Duration::from_millis(80), 7_000_000 + 9000);
        // 100 ms after the reported instant, both.
        assert_eq!(a, v);
        assert_eq!(a, 600);
    }

    #[test]
    fn without_reports_the_first_arrival_anchors_a_track() {
        let t0 = Instant::now();
        let clock = SessionClock::new(t0);
        let mut t = TrackTiming::new(48_000);
        assert_eq!(t.media_ms(&clock, t0 + Duration::from_millis(40), 5), 40);
        assert_eq!(t.media_ms(&clock, t0, 5 + 960), 60);
    }

    fn packet(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker,
                payload_type: 96,
                sequence_number: seq,
                timestamp: ts,
                ssrc: 1,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn h264_waits_for_parameter_sets_and_a_keyframe_then_emits_avcc() {
        let t0 = Instant::now();
        let mut d = TrackDepacketizer::new("video/H264", 90_000, SessionClock::new(t0)).unwrap();
        let mut out = Vec::new();
        d.sender_report(t0, 1 << 32, 0);
        // A P slice first: dropped.
        d.push(t0, packet(1, 0, true, &[0x41, 0x9a, 0x01]), &mut out);
        // STAP-A with SPS and PPS, then an IDR, same timestamp.
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut stap = vec![0x78];
        for n in [&sps[..], &pps[..]] {
            stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
            stap.extend_from_slice(n);
        }
        d.push(t0, packet(2, 3000, false, &stap), &mut out);
        d.push(t0, packet(3, 3000, true, &[0x65, 0x88, 0x84]), &mut out);
        // The next frame completes the previous one.
        d.push(t0, packet(4, 6000, true, &[0x41, 0x9a, 0x02]), &mut out);
        d.push(t0, packet(5, 9000, true, &[0x41, 0x9a, 0x03]), &mut out);
        let configs: Vec<_> = out
            .iter()
            .filter(|m| matches!(m, MediaMessage::Config(_)))
            .collect();
        assert_eq!(configs.len(), 1);
        let frames: Vec<&EncodedFrame> = out
            .iter()
            .filter_map(|m| match m {
                MediaMessage::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 2, "{out:?}");
        assert!(frames[0].keyframe);
        // AVCC: the IDR alone, length-prefixed (SPS/PPS travel in the config).
        assert_eq!(&frames[0].data[..], &[0, 0, 0, 3, 0x65, 0x88, 0x84]);
        assert!(!frames[1].keyframe);
        assert!((33..=34).contains(&(frames[1].pts - frames[0].pts)));
    }

    #[test]
    fn stranger_rtp_payloads_neither_panic_nor_pile_up() {
        // A STAP-A with a trailing byte: rtc would index past the end.
        let mut h = SafeH264::default();
        for stap in [
            &[0x18u8, 0, 1, 0x65, 0xbb][..],
            &[0x18, 0, 9, 0x65],
            &[0x18, 0],
        ] {
            assert!(h.depacketize(&Bytes::copy_from_slice(stap)).is_err());
        }
        assert!(
            h.depacketize(&Bytes::from_static(&[0x18, 0, 1, 0x65, 0, 1, 0x41]))
                .is_ok()
        );
        // FU-A starts that never end: what is gathered restarts at each start.
        let start = Bytes::from_static(&[0x7c, 0x85, 1, 2, 3, 4, 5, 6, 7, 8]);
        for _ in 0..10_000 {
            let _ = h.depacketize(&start);
        }
        assert_eq!(h.fua_bytes, start.len());
        // Middles with no end are capped.
        let middle = Bytes::from(
            vec![0x7c, 0x05]
                .into_iter()
                .chain([0u8; 1398])
                .collect::<Vec<_>>(),
        );
        let mut refused = 0;
        for _ in 0..4_000 {
            refused += usize::from(h.depacketize(&middle).is_err());
            assert!(h.fua_bytes <= MAX_NAL_BYTES);
        }
        assert!(refused > 0);
        // VP9 with a scalability structure in every packet keeps no history.
        let mut v = FreshVp9::default();
        let ss = Bytes::from_static(&[0x8a, 0x80, 0x01, 0x18, 0x02, 0x80, 0x01, 0xe0, 0x01, 0xaa]);
        for _ in 0..1_000 {
            let _ = v.depacketize(&ss);
        }
        assert!(v.0.pgtid.len() <= 2, "{}", v.0.pgtid.len());
    }

    #[test]
    fn clock_rates_a_format_does_not_have_are_refused() {
        let c = || SessionClock::new(Instant::now());
        assert!(TrackDepacketizer::new("video/VP8", 0, c()).is_none());
        assert!(TrackDepacketizer::new("audio/opus", 8_000, c()).is_none());
        assert!(TrackDepacketizer::new("video/H264", 90_000, c()).is_some());
    }

    #[test]
    fn unknown_codecs_are_refused() {
        assert!(
            TrackDepacketizer::new("video/AV1X", 90_000, SessionClock::new(Instant::now()))
                .is_none()
        );
    }
}

#[cfg(test)]
mod held_tests {
    use super::*;

    fn opus(seq: u16, ts: u32) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: ts,
                ssrc: 7,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
        }
    }

    #[test]
    fn first_frames_wait_for_the_sender_report_then_carry_its_time() {
        let t0 = Instant::now();
        let mut d = TrackDepacketizer::new("audio/opus", 48_000, SessionClock::new(t0)).unwrap();
        let mut out = Vec::new();
        for i in 0..10u16 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            d.push(at, opus(i, 1000 + 960 * u32::from(i)), &mut out);
        }
        assert!(out.is_empty(), "held until a report: {out:?}");
        // The report: RTP 1000 was captured at NTP 10.0 s, received at 0.3 s.
        d.sender_report(t0 + Duration::from_millis(300), 10 << 32, 1000);
        d.push(
            t0 + Duration::from_millis(300),
            opus(10, 1000 + 9600),
            &mut out,
        );
        let times: Vec<i64> = out
            .iter()
            .filter_map(|m| match m {
                MediaMessage::Frame(f) => Some(f.pts),
                _ => None,
            })
            .collect();
        assert!(matches!(out[0], MediaMessage::Config(_)));
        // Every frame timed by the report (the first at 300 ms), 20 ms apart.
        assert_eq!(times, (0..10).map(|i| 300 + 20 * i).collect::<Vec<i64>>());
    }

    #[test]
    fn a_sender_that_never_reports_is_timed_by_arrival_after_the_wait() {
        let t0 = Instant::now();
        let mut d = TrackDepacketizer::new("audio/opus", 48_000, SessionClock::new(t0)).unwrap();
        let mut out = Vec::new();
        let n = (SR_WAIT.as_millis() / 20) as u16 + 2;
        for i in 0..n {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            d.push(at, opus(i, 960 * u32::from(i)), &mut out);
        }
        let frames = out
            .iter()
            .filter(|m| matches!(m, MediaMessage::Frame(_)))
            .count();
        assert!(frames + 2 >= usize::from(n), "{frames} of {n}");
    }
}
