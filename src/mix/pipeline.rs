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
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use super::latency::{LatencySummary, LatencyWindow, Split};
use super::layout::{InputInfo, Placement, covers, place};
use super::timeline::{ARRIVAL_MARGIN, AudioLane, InputTimeline, OutputClock, Released};
use super::video::{Canvas, VideoDecoder, VideoEncoder};
use crate::media::aac::{AacDecoder, AacEncoder};
use crate::media::{DropToKeyframe, MediaMessage, TrackConfig, TrackKind};
use crate::profile::{AudioEncoding, Layout, VideoEncoding};

/// Messages queued for the mix thread from all inputs together.
const INPUT_CAPACITY: usize = 2048;
/// Encoded output queued for the relay task.
const OUTPUT_CAPACITY: usize = 512;
#[derive(Debug, Clone)]
pub struct MixSettings {
    pub layout: Layout,
    /// `None`: an audio-only mix.
    pub video: Option<VideoEncoding>,
    pub audio: AudioEncoding,
    /// How long a stalled input keeps its last picture before its placeholder.
    pub freeze: Duration,
    /// Each input's jitter buffer: fixed, or the most an adaptive one grows to.
    pub jitter: Duration,
    pub jitter_adaptive: bool,
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
        /// When it was offered: its arrival, whenever the mix thread gets
        /// to it (a thread busy encoding must not make frames look late).
        arrived: Instant,
    },
    /// An anchor already publishing when it joined: its video since its
    /// last keyframe, decoded at once and not shown in time (only the last
    /// picture shows, at the next tick), so its next picture decodes.
    CatchUp {
        user: String,
        config: TrackConfig,
        frames: Vec<Arc<MediaMessage>>,
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
    /// What the mix thread counts, for the task's status.
    pub counters: Arc<MixCounters>,
}

/// A mix's own counts since it started.
#[derive(Debug, Default)]
pub struct MixCounters {
    /// Video frames encoded that showed something new (effective frames).
    pub pictures: std::sync::atomic::AtomicU64,
    /// Pictures skipped because the mix was too late to encode them (overload).
    pub skipped: std::sync::atomic::AtomicU64,
    /// Ticks produced more than one video frame late.
    pub late_ticks: std::sync::atomic::AtomicU64,
    /// Each new picture's latency through the mix, over the last pictures.
    pub(crate) latency: std::sync::Mutex<LatencyWindow>,
}

impl MixCounters {
    /// Latency quantiles over the last pictures; `None` before the first.
    pub fn latency(&self) -> Option<LatencySummary> {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary()
    }
}

/// One input's way into the mix; dropping it removes the input.
pub struct MixInput {
    tx: SyncSender<Input>,
    user: String,
    gate: DropToKeyframe,
    counted: crate::metrics::DropCounter,
}

impl MixInput {
    /// Queues a message without waiting; on overflow this input skips to its
    /// next keyframe.
    pub fn offer(&mut self, msg: &Arc<MediaMessage>) {
        if !self.gate.admit(msg) {
            self.counted.sync(self.gate.dropped);
            return;
        }
        let input = Input::Media {
            user: self.user.clone(),
            msg: msg.clone(),
            arrived: Instant::now(),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(input) {
            self.gate.overflowed();
            self.counted.sync(self.gate.dropped);
        }
    }
}

/// Makes ways into one mix ([`MixHandle::inputs`]).
#[derive(Clone)]
pub struct MixInputs {
    tx: SyncSender<Input>,
}

impl MixInputs {
    /// A way in for one anchor's messages.
    pub fn input(&self, user: &str) -> MixInput {
        MixInput {
            tx: self.tx.clone(),
            user: user.to_owned(),
            gate: DropToKeyframe::default(),
            counted: crate::metrics::DropCounter::new(crate::metrics::DropReason::LateInput),
        }
    }
}

/// What an anchor joining already publishing is caught up on at most
/// ([`MixInput::catch_up`]), in pictures and bytes: decoding it takes one
/// turn of the mix thread, so it is bounded to about 80 ms of one core
/// (one thread of the ffmpeg CLI decodes 90 pictures of 640x360 at 1 Mbps,
/// 375 KB, in 53 ms; 90 of 1080p at 6 Mbps, 2.2 MB, in 380 ms). That takes
/// a 2 s group of pictures up to 2 Mbps; a longer one waits for its next
/// keyframe instead.
const CATCH_UP_PICTURES: usize = 90;
const CATCH_UP_BYTES: usize = 512 << 10;

impl MixInput {
    /// An anchor's video since its last keyframe (`messages`, audio left
    /// out: it would be heard late), taken when it joined already
    /// publishing with `config`: the mix decodes it at once, so it shows
    /// the anchor's latest picture and decodes the next, not a placeholder
    /// until its next keyframe. Up to [`CATCH_UP_PICTURES`] and
    /// [`CATCH_UP_BYTES`].
    pub fn catch_up(&mut self, config: &TrackConfig, messages: &[Arc<MediaMessage>]) {
        let mut frames = Vec::new();
        let mut bytes = 0;
        for m in messages {
            if let MediaMessage::Frame(f) = &**m
                && f.kind == TrackKind::Video
            {
                frames.push(m.clone());
                bytes += f.data.len();
            }
        }
        if frames.is_empty() || frames.len() > CATCH_UP_PICTURES || bytes > CATCH_UP_BYTES {
            return;
        }
        let input = Input::CatchUp {
            user: self.user.clone(),
            config: config.clone(),
            frames,
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(input) {
            self.gate.overflowed();
            self.counted.sync(self.gate.dropped);
        }
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
        let counters = Arc::new(MixCounters::default());
        let counts = counters.clone();
        std::thread::Builder::new()
            .name("mix".into())
            .spawn(move || {
                if let Err(e) = Mixer::new(settings).and_then(|m| m.run(rx, out_tx, &counts)) {
                    tracing::error!("mix stopped: {e}");
                }
            })
            .expect("spawn thread");
        MixHandle { tx, out, counters }
    }

    /// A way in for one anchor's messages.
    pub fn input(&self, user: &str) -> MixInput {
        self.inputs().input(user)
    }

    /// What makes ways in, for whoever finds the anchors.
    pub fn inputs(&self) -> MixInputs {
        MixInputs {
            tx: self.tx.clone(),
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
    /// Its clock and jitter buffer; each message with its arrival.
    timeline: InputTimeline<(Arc<MediaMessage>, Instant)>,
    /// When the picture decoded last (and not yet composed) arrived, and
    /// when its jitter buffer released it.
    fresh: Option<(Instant, Instant)>,
    video: Option<VideoDecoder>,
    need_keyframe: bool,
    audio: Option<AacDecoder>,
    /// Its decoded audio on the output timeline.
    lane: AudioLane,
    decoded: Vec<Vec<f32>>,
    volume: f32,
}

impl InputState {
    fn apply_video(&mut self, msg: &MediaMessage, arrived: Instant, now: Instant) {
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
                    Ok(true) => {
                        self.timeline.showed_picture(now);
                        self.fresh = Some((arrived, now));
                    }
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
    /// says it belongs) on `clock`.
    fn apply_audio(&mut self, msg: &MediaMessage, pos: i64, clock: &OutputClock, channels: usize) {
        let rate = clock.rate();
        match msg {
            MediaMessage::Config(c) => match AacDecoder::new(c, rate, channels) {
                Ok(d) => {
                    self.audio = Some(d);
                    self.lane.restart();
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
                self.lane.lay(&self.decoded, pos, clock.resync_samples());
            }
        }
    }
}

/// A composed frame on its way through the encoder: its time (ms), its
/// tick's start, and the arrival and release of each new picture in it.
type InEncoder = (i64, Instant, Vec<(Instant, Instant)>);

/// Frames the latency bookkeeping waits for before giving up on the oldest.
const MAX_IN_ENCODER: usize = 128;

struct Mixer {
    settings: MixSettings,
    /// In arrival order (the layout's entry order).
    inputs: Vec<InputState>,
    canvas: Option<Canvas>,
    video: Option<VideoEncoder>,
    audio: AacEncoder,
    volumes: HashMap<String, f32>,
    mixbuf: Vec<Vec<f32>>,
    /// The output's ticks, from the mix's start.
    clock: OutputClock,
    /// What an input's timeline released this turn (reused every tick).
    released: Vec<Released<(Arc<MediaMessage>, Instant)>>,
    /// Where the layout put each input, and the inputs it was placed for.
    placements: Vec<Placement>,
    placed_for: Option<Vec<InputInfo>>,
    /// The placements cover the canvas: no background to paint.
    covered: bool,
    /// Which placements showed a picture in the canvas as last composed
    /// (`None`: compose anew).
    composed: Option<Vec<bool>>,
    /// Pictures composed into frames the encoder has not given out yet.
    in_encoder: VecDeque<InEncoder>,
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
        let clock = OutputClock::new(
            Instant::now(),
            settings.video.as_ref().map(|v| v.fps),
            settings.audio.sample_rate,
            n,
        );
        Ok(Mixer {
            settings,
            inputs: Vec::new(),
            canvas,
            video,
            audio,
            volumes,
            mixbuf: vec![vec![0.0; n]; channels],
            clock,
            released: Vec::new(),
            placements: Vec::new(),
            placed_for: None,
            covered: false,
            composed: None,
            in_encoder: VecDeque::new(),
        })
    }

    fn run(
        mut self,
        rx: Receiver<Input>,
        out: tokio::sync::mpsc::Sender<Arc<MediaMessage>>,
        counters: &MixCounters,
    ) -> Result<(), MixError> {
        use std::sync::atomic::Ordering::Relaxed;
        let frame = self
            .settings
            .video
            .as_ref()
            .map_or(Duration::MAX, |v| Duration::from_secs(1) / v.fps.max(1));
        let send = |m: MediaMessage| out.blocking_send(Arc::new(m)).is_ok();
        if let Some(v) = &self.video
            && !send(MediaMessage::Config(v.config().clone()))
        {
            return Ok(());
        }
        if !send(MediaMessage::Config(self.audio.config().clone())) {
            return Ok(());
        }
        // Output time starts once the configs are out.
        self.clock.restart(Instant::now());
        loop {
            let next = self.clock.next();
            // Input waits in the queue until the next output tick: it is
            // only taken (into the jitter buffers; each message keeps its
            // arrival time) when the tick releases it, so the thread wakes
            // once a tick, not once a message. A thread behind takes what
            // arrived meanwhile first, so the ticks it catches up on find it.
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            loop {
                match rx.try_recv() {
                    Ok(input) => self.on_input(input),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            let now = Instant::now();
            if now.saturating_duration_since(next) > frame {
                counters.late_ticks.fetch_add(1, Relaxed);
            }
            if crate::metrics::enabled() {
                let m = crate::metrics::metrics();
                m.mix_tick_lateness
                    .observe(now.saturating_duration_since(next).as_secs_f64());
                m.mix_queue_depth
                    .observe((out.max_capacity() - out.capacity()) as f64);
            }
            let (at, due) = self.clock.turn(now);
            self.release(at);
            if due.skipped > 0 {
                counters.skipped.fetch_add(due.skipped, Relaxed);
                crate::metrics::metrics()
                    .dropped(crate::metrics::DropReason::Overload, due.skipped);
            }
            if let Some(n) = due.video {
                let (frames, new) = self.video_tick(n as i64, counters)?;
                if new {
                    counters.pictures.fetch_add(1, Relaxed);
                }
                for frame in frames {
                    if !send(MediaMessage::Frame(frame)) {
                        return Ok(());
                    }
                }
            }
            if let Some(k) = due.audio {
                for frame in self.audio_tick(k as i64)? {
                    if !send(MediaMessage::Frame(frame)) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// How far ahead of its tick an input's frame must arrive to be laid in
    /// time: audio's release lead and a margin.
    fn min_ahead(&self) -> Duration {
        self.clock.audio_lead() + ARRIVAL_MARGIN
    }

    fn input(&mut self, user: &str) -> &mut InputState {
        if let Some(i) = self.inputs.iter().position(|s| s.user == user) {
            return &mut self.inputs[i];
        }
        let channels = self.settings.audio.channels as usize;
        let timeline = if self.settings.jitter_adaptive {
            InputTimeline::adaptive(self.min_ahead(), self.settings.jitter)
        } else {
            InputTimeline::new(self.settings.jitter)
        };
        self.inputs.push(InputState {
            user: user.to_owned(),
            timeline,
            video: None,
            need_keyframe: true,
            fresh: None,
            audio: None,
            lane: AudioLane::new(channels),
            decoded: vec![Vec::new(); channels],
            volume: self.volumes.get(user).copied().unwrap_or(1.0),
        });
        self.inputs.last_mut().expect("pushed")
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Gone { user } => self.inputs.retain(|s| s.user != user),
            Input::CatchUp {
                user,
                config,
                frames,
            } => {
                if self.video.is_none() {
                    return;
                }
                let now = Instant::now();
                let s = self.input(&user);
                s.apply_video(&MediaMessage::Config(config), now, now);
                for f in &frames {
                    s.apply_video(f, now, now);
                }
            }
            Input::Layout(l) => {
                if let Some(c) = &mut self.canvas {
                    c.set_background(&l.background);
                }
                self.settings.layout = l;
                self.placed_for = None;
                self.composed = None;
            }
            Input::AudioFilter(f) => self.settings.audio_filter = f,
            Input::Volume { user, level } => {
                self.volumes.insert(user.clone(), level);
                if let Some(s) = self.inputs.iter_mut().find(|s| s.user == user) {
                    s.volume = level;
                }
            }
            Input::Media { user, msg, arrived } => {
                let now = arrived;
                let min_ahead = self.min_ahead();
                let s = self.input(&user);
                let (kind, ts) = match &*msg {
                    MediaMessage::Config(c) => (c.kind, None),
                    MediaMessage::Frame(f) => (
                        f.kind,
                        Some(f.time_base.rescale(f.dts, crate::media::TimeBase::MILLIS)),
                    ),
                };
                let delay = s.timeline.delay();
                if s.timeline.push(kind, ts, (msg, now), now, min_ahead)
                    && kind == crate::media::TrackKind::Video
                {
                    s.need_keyframe = true;
                }
                if s.timeline.delay() != delay {
                    tracing::debug!(user = %s.user, from_ms = delay.as_millis() as u64, to_ms = s.timeline.delay().as_millis() as u64, "mix: an anchor's jitter buffer changed");
                }
            }
        }
    }

    /// Hands every input the messages whose time has come: a picture at the
    /// output tick nearest its time, audio early enough to be laid on the
    /// output timeline before its tick.
    fn release(&mut self, now: Instant) {
        let channels = self.settings.audio.channels as usize;
        let want_video = self.video.is_some();
        let due = &mut self.released;
        for s in &mut self.inputs {
            s.timeline.release(now, &self.clock, due);
            for r in due.drain(..) {
                match r {
                    Released::Video((msg, arrived)) if want_video => {
                        s.apply_video(&msg, arrived, now)
                    }
                    Released::Video(_) => {}
                    Released::Audio { msg: (msg, _), at } => {
                        s.apply_audio(&msg, at, &self.clock, channels)
                    }
                }
            }
        }
    }

    /// Output picture number `n`, and whether it showed something new.
    fn video_tick(
        &mut self,
        n: i64,
        counters: &MixCounters,
    ) -> Result<(Vec<crate::media::EncodedFrame>, bool), MixError> {
        let (Some(canvas), Some(enc), Some(v)) =
            (&mut self.canvas, &mut self.video, &self.settings.video)
        else {
            return Ok((Vec::new(), false));
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
            self.covered = covers(self.placements.iter().map(|p| p.rect), v.width, v.height);
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
        let showing = |user: &str| {
            inputs
                .iter()
                .find(|s| s.user == user)
                .filter(|s| s.timeline.shows_picture(now, freeze))
                .and_then(|s| s.video.as_ref())
                .map(VideoDecoder::picture)
        };
        // Nothing new and nobody frozen or back since the last tick: the
        // canvas already holds this picture.
        let shown = self
            .placements
            .iter()
            .map(|p| p.user.as_deref().and_then(showing).is_some());
        let changed = stale
            || inputs.iter().any(|s| s.fresh.is_some())
            || !self
                .composed
                .as_ref()
                .is_some_and(|c| c.iter().copied().eq(shown.clone()));
        if changed {
            self.composed = None;
            canvas.compose(&self.placements, self.covered, showing)?;
            self.composed = Some(shown.collect());
        }
        // Pictures that arrived since the last tick are in this frame: it
        // shows something new, and their latency ends when it leaves the
        // encoder (later than this tick if the encoder looks ahead).
        let fresh: Vec<(Instant, Instant)> = self
            .inputs
            .iter_mut()
            .filter_map(|s| s.fresh.take())
            .collect();
        let new = stale || !fresh.is_empty();
        if !fresh.is_empty() {
            if self.in_encoder.len() >= MAX_IN_ENCODER {
                self.in_encoder.pop_front();
            }
            self.in_encoder.push_back((enc.pts_ms(n), now, fresh));
        }
        let frames = enc.encode(canvas.frame_mut(), n)?;
        let counting = crate::metrics::enabled();
        let m = crate::metrics::metrics();
        let out = Instant::now();
        if let Some(last) = frames.iter().map(|f| f.pts).max() {
            let mut window = counters.latency.lock().unwrap_or_else(|p| p.into_inner());
            while self
                .in_encoder
                .front()
                .is_some_and(|(pts, _, _)| *pts <= last)
            {
                let Some((_, tick, pictures)) = self.in_encoder.pop_front() else {
                    break;
                };
                for (arrived, released) in pictures {
                    let split = Split::new(arrived, released, tick, out);
                    if counting {
                        m.mix_latency.observe(split.total.as_secs_f64());
                    }
                    window.push(split);
                }
            }
        }
        if counting {
            m.mix_ticks.inc();
            if new {
                m.mix_pictures.inc();
            }
        }
        Ok((frames, new))
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
            let gain = filter.admits(&s.user).then_some(s.volume);
            s.lane.mix_into(&mut self.mixbuf, from, gain);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Codec, test_frame};

    #[test]
    fn a_catch_up_takes_video_only_and_is_bounded() {
        let (tx, rx) = sync_channel(8);
        let mut input = MixInputs { tx }.input("u");
        let config = TrackConfig {
            kind: TrackKind::Video,
            codec: Codec::H264,
            extradata: bytes::Bytes::from_static(b"config"),
        };
        let frame = |kind, keyframe, len: usize| {
            Arc::new(test_frame(
                kind,
                keyframe,
                bytes::Bytes::from(vec![0u8; len]),
            ))
        };
        let caught_up = |rx: &Receiver<Input>| match rx.try_recv() {
            Ok(Input::CatchUp { user, frames, .. }) => Some((user, frames.len())),
            _ => None,
        };
        // Audio is left out: it would be heard late.
        input.catch_up(
            &config,
            &[
                frame(TrackKind::Video, true, 100),
                frame(TrackKind::Audio, false, 10),
                frame(TrackKind::Video, false, 10),
            ],
        );
        assert_eq!(caught_up(&rx), Some(("u".to_owned(), 2)));
        // Nothing to decode, or too much: nothing sent (the anchor waits
        // for its next keyframe).
        input.catch_up(&config, &[frame(TrackKind::Audio, false, 10)]);
        let many: Vec<_> = (0..=CATCH_UP_PICTURES)
            .map(|n| frame(TrackKind::Video, n == 0, 10))
            .collect();
        input.catch_up(&config, &many);
        input.catch_up(&config, &many[1..]);
        assert_eq!(caught_up(&rx), Some(("u".to_owned(), CATCH_UP_PICTURES)));
        let big = [
            frame(TrackKind::Video, true, CATCH_UP_BYTES / 2),
            frame(TrackKind::Video, false, CATCH_UP_BYTES / 2 + 1),
        ];
        input.catch_up(&config, &big);
        assert!(caught_up(&rx).is_none());
    }
}
