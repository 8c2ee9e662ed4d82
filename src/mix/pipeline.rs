//! The mix thread: inputs in, one steady stream out.
//!
//! Each anchor's messages arrive tagged with its UserID and wait in a
//! per-input jitter buffer until their own timestamps (anchored on arrival,
//! one clock for an input's audio and video) say they are due. Video is
//! decoded at the output tick nearest its time, so a picture is shown at
//! most half a frame early or late; audio is decoded a little ahead and
//! laid on the output timeline at the sample its timestamp names. The
//! output clock runs on the thread: a picture every 1/fps (composed by the
//! layout: a stalled anchor keeps its last picture for `freeze`, then shows
//! its placeholder) and an audio frame every 1024 samples (inputs summed
//! with their volume, clamped; silence when nobody speaks). Output
//! timestamps count frames and samples, so they are exactly regular and
//! monotonic whatever the inputs do; lips and voices line up within half a
//! video frame whatever the phase between inputs and the output clock.
//! Layout and volumes change live without touching the encoders.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use super::layout::{InputInfo, Placement, place};
use super::video::{Canvas, VideoDecoder, VideoEncoder};
use crate::media::aac::{AacDecoder, AacEncoder};
use crate::media::{DropToKeyframe, MediaMessage, TrackKind};
use crate::profile::{AudioEncoding, Layout, VideoEncoding};

/// Messages queued for the mix thread from all inputs together.
const INPUT_CAPACITY: usize = 2048;
/// Encoded output queued for the relay task.
const OUTPUT_CAPACITY: usize = 512;
/// Every input's frames are played this long after their own timestamps say
/// (anchored on the first arrival): the jitter buffer. Audio and video of an
/// input stay aligned by their timestamps, whatever the arrival order.
const JITTER_DELAY: Duration = Duration::from_millis(150);
/// Frames due further ahead than this re-anchor the input's clock (a
/// timestamp jump).
const MAX_EARLY: Duration = Duration::from_secs(2);
/// Messages held per input and kind at most (about 3 s).
const MAX_PENDING: usize = 400;
/// Audio is decoded one output frame plus this ahead of its time; a frame
/// arriving later than that (plus this again) re-anchors its input.
const AUDIO_MARGIN: Duration = Duration::from_millis(20);
/// Decoded audio continues the previous chunk unless its timestamp says it
/// belongs further away than this (then it is laid where it says).
const AUDIO_RESYNC: Duration = Duration::from_millis(30);

#[derive(Debug, Clone)]
pub struct MixSettings {
    pub layout: Layout,
    /// `None`: an audio-only mix.
    pub video: Option<VideoEncoding>,
    pub audio: AudioEncoding,
    /// How long a stalled input keeps its last picture before its placeholder.
    pub freeze: Duration,
    /// Whose audio is mixed: `allow` (None = everyone) minus `block`.
    pub audio_filter: AudioFilter,
    /// Initial volumes, 0..=100 (TRTC SoundLevel).
    pub volumes: Vec<(String, u32)>,
}

/// TRTC's audio allowlist / blocklist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioFilter {
    pub allow: Option<Vec<String>>,
    pub block: Vec<String>,
}

impl AudioFilter {
    pub fn admits(&self, user: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|a| a.iter().any(|u| u == user))
            && !self.block.iter().any(|u| u == user)
    }
}

enum Input {
    Media {
        user: String,
        msg: Arc<MediaMessage>,
    },
    Gone {
        user: String,
    },
    Layout(Layout),
    Volume {
        user: String,
        level: f32,
    },
    AudioFilter(AudioFilter),
}

/// The relay's side of a mix.
pub struct MixHandle {
    tx: SyncSender<Input>,
    /// Encoded output: the configs, then frames.
    pub out: tokio::sync::mpsc::Receiver<Arc<MediaMessage>>,
}

/// One input's way into the mix; dropping it removes the input.
pub struct MixInput {
    tx: SyncSender<Input>,
    user: String,
    gate: DropToKeyframe,
}

impl MixInput {
    /// Queues a message without waiting; on overflow this input skips to its
    /// next keyframe.
    pub fn offer(&mut self, msg: &Arc<MediaMessage>) {
        if !self.gate.admit(msg) {
            return;
        }
        let input = Input::Media {
            user: self.user.clone(),
            msg: msg.clone(),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(input) {
            self.gate.overflowed();
        }
    }

    /// Messages were lost upstream: resume at the next keyframe.
    pub fn lost(&mut self) {
        self.gate.overflowed();
    }
}

impl Drop for MixInput {
    fn drop(&mut self) {
        let _ = self.tx.try_send(Input::Gone {
            user: std::mem::take(&mut self.user),
        });
    }
}

impl MixHandle {
    pub fn spawn(settings: MixSettings) -> MixHandle {
        let (tx, rx) = sync_channel(INPUT_CAPACITY);
        let (out_tx, out) = tokio::sync::mpsc::channel(OUTPUT_CAPACITY);
        std::thread::Builder::new()
            .name("mix".into())
            .spawn(move || {
                if let Err(e) = Mixer::new(settings).and_then(|m| m.run(rx, out_tx)) {
                    tracing::error!("mix stopped: {e}");
                }
            })
            .expect("spawn thread");
        MixHandle { tx, out }
    }

    /// A way in for one anchor's messages.
    pub fn input(&self, user: &str) -> MixInput {
        MixInput {
            tx: self.tx.clone(),
            user: user.to_owned(),
            gate: DropToKeyframe::default(),
        }
    }

    pub fn set_layout(&self, layout: Layout) {
        let _ = self.tx.try_send(Input::Layout(layout));
    }

    pub fn set_audio_filter(&self, filter: AudioFilter) {
        let _ = self.tx.try_send(Input::AudioFilter(filter));
    }

    /// TRTC SoundLevel: 0..=100, 100 = as sent.
    pub fn set_volume(&self, user: &str, level: u32) {
        let _ = self.tx.try_send(Input::Volume {
            user: user.to_owned(),
            level: level.min(100) as f32 / 100.0,
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MixError {
    #[error(transparent)]
    Video(#[from] super::video::VideoError),
    #[error(transparent)]
    Audio(#[from] crate::media::aac::AacError),
}

struct InputState {
    user: String,
    /// The input's timeline anchored on arrival: (its first timestamp in ms, when it arrived).
    clock: Option<(i64, Instant)>,
    /// Messages waiting for their time (the jitter buffer), per kind, in arrival order.
    pending_video: VecDeque<(Instant, Arc<MediaMessage>)>,
    pending_audio: VecDeque<(Instant, Arc<MediaMessage>)>,
    video: Option<VideoDecoder>,
    need_keyframe: bool,
    last_picture: Option<Instant>,
    audio: Option<AacDecoder>,
    /// Decoded audio laid on the output timeline: `samples[ch][0]` is output
    /// sample number `audio_start`.
    samples: Vec<Vec<f32>>,
    audio_start: i64,
    /// Where the next decoded chunk continues (output samples), so chunks
    /// join without clicks while their timestamps agree.
    audio_next: Option<i64>,
    decoded: Vec<Vec<f32>>,
    volume: f32,
}

impl InputState {
    fn apply_video(&mut self, msg: &MediaMessage, now: Instant) {
        match msg {
            MediaMessage::Config(c) => {
                if self
                    .video
                    .as_ref()
                    .is_none_or(|d| d.config() != &c.extradata)
                {
                    match VideoDecoder::new(c) {
                        Ok(d) => self.video = Some(d),
                        Err(e) => tracing::warn!(user = %self.user, "mix: video decoder: {e}"),
                    }
                    self.need_keyframe = true;
                }
            }
            MediaMessage::Frame(f) => {
                let Some(dec) = self.video.as_mut() else {
                    return;
                };
                if self.need_keyframe && !f.keyframe {
                    return;
                }
                self.need_keyframe = false;
                match dec.push(f) {
                    Ok(true) => self.last_picture = Some(now),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(user = %self.user, "mix: undecodable frame: {e}");
                        self.need_keyframe = true;
                    }
                }
            }
        }
    }

    /// Decodes audio and lays it at output sample `pos` (where its timestamp
    /// says it belongs).
    fn apply_audio(&mut self, msg: &MediaMessage, pos: i64, rate: u32, channels: usize) {
        match msg {
            MediaMessage::Config(c) => match AacDecoder::new(c, rate, channels) {
                Ok(d) => {
                    self.audio = Some(d);
                    self.audio_next = None;
                }
                Err(e) => tracing::warn!(user = %self.user, "mix: audio decoder: {e}"),
            },
            MediaMessage::Frame(f) => {
                let Some(dec) = self.audio.as_mut() else {
                    return;
                };
                for ch in &mut self.decoded {
                    ch.clear();
                }
                if let Err(e) = dec.push(f, &mut self.decoded) {
                    tracing::debug!(user = %self.user, "mix: undecodable audio: {e}");
                }
                self.lay_audio(pos, rate);
            }
        }
    }

    fn lay_audio(&mut self, pos: i64, rate: u32) {
        let len = self.decoded.first().map_or(0, Vec::len) as i64;
        if len == 0 {
            return;
        }
        let tolerance = i64::from(rate) * AUDIO_RESYNC.as_millis() as i64 / 1000;
        let at = match self.audio_next {
            Some(next) if (pos - next).abs() <= tolerance => next,
            _ => pos,
        };
        self.audio_next = Some(at + len);
        if self.samples.first().is_none_or(Vec::is_empty) {
            self.audio_start = at;
        }
        let offset = at - self.audio_start;
        // Samples for a time already played are dropped.
        let skip = (-offset).clamp(0, len) as usize;
        let offset = offset.max(0) as usize;
        for (buf, new) in self.samples.iter_mut().zip(&self.decoded) {
            buf.resize(offset, 0.0);
            buf.extend_from_slice(&new[skip..]);
        }
    }
}

struct Mixer {
    settings: MixSettings,
    /// In arrival order (the layout's entry order).
    inputs: Vec<InputState>,
    canvas: Option<Canvas>,
    video: Option<VideoEncoder>,
    audio: AacEncoder,
    volumes: HashMap<String, f32>,
    mixbuf: Vec<Vec<f32>>,
    /// The output clock's origin: output time t is `start + t`.
    start: Instant,
    /// Where the layout put each input, and the inputs it was placed for.
    placements: Vec<Placement>,
    placed_for: Option<Vec<InputInfo>>,
    /// Audio is decoded this long before it is due (at least one output
    /// frame ahead, so a tick always finds its samples laid).
    audio_lead: Duration,
}

impl Mixer {
    fn new(settings: MixSettings) -> Result<Mixer, MixError> {
        let (canvas, video) = match &settings.video {
            Some(v) => (
                Some(Canvas::new(v.width, v.height, &settings.layout.background)),
                Some(VideoEncoder::new(v)?),
            ),
            None => (None, None),
        };
        let audio = AacEncoder::new(&settings.audio)?;
        let channels = settings.audio.channels as usize;
        let n = audio.frame_size();
        // The audio encoder's priming samples delay the voices by that much
        // in the output; pictures are presented that much later too.
        let mut video = video;
        if let Some(v) = &mut video {
            v.set_offset_ms(audio.delay_ms());
        }
        let volumes = settings
            .volumes
            .iter()
            .map(|(u, l)| (u.clone(), (*l).min(100) as f32 / 100.0))
            .collect();
        let audio_lead =
            Duration::from_nanos(n as u64 * 1_000_000_000 / u64::from(settings.audio.sample_rate))
                + AUDIO_MARGIN;
        Ok(Mixer {
            settings,
            inputs: Vec::new(),
            canvas,
            video,
            audio,
            volumes,
            mixbuf: vec![vec![0.0; n]; channels],
            start: Instant::now(),
            audio_lead,
            placements: Vec::new(),
            placed_for: None,
        })
    }

    fn run(
        mut self,
        rx: Receiver<Input>,
        out: tokio::sync::mpsc::Sender<Arc<MediaMessage>>,
    ) -> Result<(), MixError> {
        let send = |m: MediaMessage| out.blocking_send(Arc::new(m)).is_ok();
        if let Some(v) = &self.video
            && !send(MediaMessage::Config(v.config().clone()))
        {
            return Ok(());
        }
        if !send(MediaMessage::Config(self.audio.config().clone())) {
            return Ok(());
        }
        self.start = Instant::now();
        let start = self.start;
        let fps = self.settings.video.as_ref().map(|v| v.fps);
        let rate = self.settings.audio.sample_rate;
        let frame_size = self.audio.frame_size() as u64;
        let (mut n_video, mut n_audio) = (0u64, 0u64);
        loop {
            let next_video =
                fps.map(|f| start + Duration::from_nanos(n_video * 1_000_000_000 / u64::from(f)));
            let next_audio = start
                + Duration::from_nanos(n_audio * frame_size * 1_000_000_000 / u64::from(rate));
            let next = next_video.map_or(next_audio, |v| v.min(next_audio));
            // Take input until the next output tick.
            loop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                match rx.recv_timeout(next - now) {
                    Ok(input) => self.on_input(input),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
            }
            let now = Instant::now();
            self.release(now);
            if let Some(at) = next_video
                && now >= at
            {
                for frame in self.video_tick(n_video as i64)? {
                    if !send(MediaMessage::Frame(frame)) {
                        return Ok(());
                    }
                }
                n_video += 1;
            }
            if now >= next_audio {
                for frame in self.audio_tick(n_audio as i64)? {
                    if !send(MediaMessage::Frame(frame)) {
                        return Ok(());
                    }
                }
                n_audio += 1;
            }
        }
    }

    fn input(&mut self, user: &str) -> &mut InputState {
        if let Some(i) = self.inputs.iter().position(|s| s.user == user) {
            return &mut self.inputs[i];
        }
        let channels = self.settings.audio.channels as usize;
        self.inputs.push(InputState {
            user: user.to_owned(),
            clock: None,
            pending_video: VecDeque::new(),
            pending_audio: VecDeque::new(),
            video: None,
            need_keyframe: true,
            last_picture: None,
            audio: None,
            samples: vec![Vec::new(); channels],
            audio_start: 0,
            audio_next: None,
            decoded: vec![Vec::new(); channels],
            volume: self.volumes.get(user).copied().unwrap_or(1.0),
        });
        self.inputs.last_mut().expect("pushed")
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Gone { user } => self.inputs.retain(|s| s.user != user),
            Input::Layout(l) => {
                if let Some(c) = &mut self.canvas {
                    c.set_background(&l.background);
                }
                self.settings.layout = l;
                self.placed_for = None;
            }
            Input::AudioFilter(f) => self.settings.audio_filter = f,
            Input::Volume { user, level } => {
                self.volumes.insert(user.clone(), level);
                if let Some(s) = self.inputs.iter_mut().find(|s| s.user == user) {
                    s.volume = level;
                }
            }
            Input::Media { user, msg } => {
                let now = Instant::now();
                let min_ahead = self.audio_lead + AUDIO_MARGIN;
                let s = self.input(&user);
                let kind = match &*msg {
                    MediaMessage::Config(c) => c.kind,
                    MediaMessage::Frame(f) => f.kind,
                };
                let queue = match kind {
                    TrackKind::Video => &mut s.pending_video,
                    TrackKind::Audio => &mut s.pending_audio,
                };
                let due = match &*msg {
                    // Configs keep their place in the queue.
                    MediaMessage::Config(_) => queue.back().map_or(now, |(d, _)| *d),
                    MediaMessage::Frame(f) => {
                        let ts = f.time_base.rescale(f.dts, crate::media::TimeBase::MILLIS);
                        let (ts0, t0) = *s.clock.get_or_insert((ts, now));
                        let delta = ts - ts0;
                        let at = if delta >= 0 {
                            t0 + Duration::from_millis(delta as u64)
                        } else {
                            t0.checked_sub(Duration::from_millis(delta.unsigned_abs()))
                                .unwrap_or(t0)
                        };
                        let due = at + JITTER_DELAY;
                        // Far ahead (timestamps jumped) or too late to be laid
                        // in time (a reconnect, a stall upstream): anchor
                        // again, so this frame is due a jitter delay from now.
                        // Audio and video share the clock, so they stay aligned.
                        if due > now + JITTER_DELAY + MAX_EARLY || due < now + min_ahead {
                            s.clock = Some((ts, now));
                            now + JITTER_DELAY
                        } else {
                            due
                        }
                    }
                };
                let queue = match kind {
                    TrackKind::Video => &mut s.pending_video,
                    TrackKind::Audio => &mut s.pending_audio,
                };
                if queue.len() >= MAX_PENDING {
                    queue.pop_front();
                    if kind == TrackKind::Video {
                        s.need_keyframe = true;
                    }
                }
                queue.push_back((due, msg));
            }
        }
    }

    /// Hands every input the messages whose time has come: a picture at the
    /// output tick nearest its time, audio early enough to be laid on the
    /// output timeline before its tick.
    fn release(&mut self, now: Instant) {
        let rate = self.settings.audio.sample_rate;
        let channels = self.settings.audio.channels as usize;
        let want_video = self.video.is_some();
        let video_lead = self.settings.video.as_ref().map_or(Duration::ZERO, |v| {
            Duration::from_nanos(500_000_000 / u64::from(v.fps.max(1)))
        });
        let start = self.start;
        for s in &mut self.inputs {
            while s
                .pending_video
                .front()
                .is_some_and(|(due, _)| *due <= now + video_lead)
            {
                let (_, msg) = s.pending_video.pop_front().expect("checked");
                if want_video {
                    s.apply_video(&msg, now);
                }
            }
            while s
                .pending_audio
                .front()
                .is_some_and(|(due, _)| *due <= now + self.audio_lead)
            {
                let (due, msg) = s.pending_audio.pop_front().expect("checked");
                let pos = (due.saturating_duration_since(start).as_nanos() * u128::from(rate)
                    / 1_000_000_000) as i64;
                s.apply_audio(&msg, pos, rate, channels);
            }
        }
    }

    fn video_tick(&mut self, n: i64) -> Result<Vec<crate::media::EncodedFrame>, MixError> {
        let (Some(canvas), Some(enc), Some(v)) =
            (&mut self.canvas, &mut self.video, &self.settings.video)
        else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        // The layout is placed again only when it or the inputs change.
        let stale = self.placed_for.as_ref().is_none_or(|placed| {
            placed.len() != self.inputs.len()
                || placed
                    .iter()
                    .zip(&self.inputs)
                    .any(|(i, s)| i.user != s.user || i.has_video != s.video.is_some())
        });
        if stale {
            let infos: Vec<InputInfo> = self
                .inputs
                .iter()
                .map(|s| InputInfo {
                    user: s.user.clone(),
                    has_video: s.video.is_some(),
                })
                .collect();
            self.placements = place(&self.settings.layout, (v.width, v.height), &infos);
            let shown: Vec<&str> = self
                .placements
                .iter()
                .filter_map(|p| p.user.as_deref())
                .collect();
            canvas.retain_users(&shown);
            self.placed_for = Some(infos);
        }
        let freeze = self.settings.freeze;
        let inputs = &self.inputs;
        canvas.compose(&self.placements, |user| {
            inputs
                .iter()
                .find(|s| s.user == user)
                .filter(|s| {
                    s.last_picture
                        .is_some_and(|t| now.duration_since(t) <= freeze)
                })
                .and_then(|s| s.video.as_ref())
                .map(VideoDecoder::picture)
        })?;
        Ok(enc.encode(canvas.frame_mut(), n)?)
    }

    /// Output audio frame number `k`: every admitted input's samples laid
    /// for that stretch of time, with its volume, summed and clamped.
    fn audio_tick(&mut self, k: i64) -> Result<Vec<crate::media::EncodedFrame>, MixError> {
        let n = self.audio.frame_size();
        for ch in &mut self.mixbuf {
            ch.fill(0.0);
        }
        let from = k * n as i64;
        let filter = &self.settings.audio_filter;
        for s in &mut self.inputs {
            let have = s.samples.first().map_or(0, Vec::len);
            // What lies before this frame was due earlier and missed it.
            let stale = (from - s.audio_start).clamp(0, have as i64) as usize;
            let lead = (s.audio_start - from).clamp(0, n as i64) as usize;
            let take = (have - stale).min(n - lead);
            let admitted = filter.admits(&s.user);
            for (out, inp) in self.mixbuf.iter_mut().zip(&mut s.samples) {
                if admitted {
                    for (o, i) in out[lead..lead + take]
                        .iter_mut()
                        .zip(&inp[stale..stale + take])
                    {
                        *o += i * s.volume;
                    }
                }
                inp.drain(..stale + take);
            }
            s.audio_start += (stale + take) as i64;
        }
        for ch in &mut self.mixbuf {
            for v in ch.iter_mut() {
                *v = v.clamp(-1.0, 1.0);
            }
        }
        let planes: Vec<&[f32]> = self.mixbuf.iter().map(Vec::as_slice).collect();
        Ok(self.audio.encode(&planes, 0)?)
    }
}
