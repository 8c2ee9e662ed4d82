//! One relay task: an anchor's stream passed through to RTMP targets and HLS.
//!
//! The task follows its anchor: it attaches to the anchor's stream in the
//! media hub when the anchor publishes, starts every output at a keyframe,
//! rebases timestamps so the output never goes back when the anchor drops
//! and returns (HLS marks a discontinuity; RTMP stays connected), and stops
//! when asked, when the room closes, or after `max_idle` without input.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};

use super::rebase::Rebaser;
use crate::hls::HlsWriter;
use crate::media::aac::audio_stage;
use crate::media::hub::{MediaHub, Subscription};
use crate::media::stage::Stage;
use crate::media::{EncodedFrame, MediaMessage, TimeBase, TrackKind};
use crate::room::{EventKind, RoomHandle, RoomKey, UserId};
use crate::rtmp::push::{PushState, PushTarget};

/// What a task is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct RelaySpec {
    pub id: String,
    pub room: RoomKey,
    /// The anchor a passthrough relay follows; `None` for a mix.
    pub user: Option<UserId>,
    /// A mix of every anchor of the room (layout, encoders).
    pub mix: Option<crate::mix::pipeline::MixSettings>,
    pub stream: String,
    pub rtmp: Vec<String>,
    pub hls: Option<crate::profile::HlsOutput>,
    pub max_idle: Duration,
    /// Re-encode the anchor's AAC with these settings (profile `audio.reencode`).
    pub audio_reencode: Option<crate::profile::AudioEncoding>,
    /// Audio that FLV and MPEG-TS cannot carry (Opus from WebRTC) is
    /// transcoded to AAC with these settings.
    pub audio_fallback: Option<crate::profile::AudioEncoding>,
    /// Record what the task emits (a relative `dir` is under the data dir's `recordings/`).
    pub record: Option<crate::record::RecordTarget>,
    /// Rooms the output is published back into, as a user there (TRTC
    /// FeedBackRoomParams; mix tasks only).
    pub feedback: Vec<Feedback>,
}

/// One room a mix is pushed back into.
#[derive(Debug, Clone)]
pub(crate) struct Feedback {
    pub room: RoomKey,
    pub user: crate::room::UserId,
    pub grant: Option<crate::room::Grant>,
}

/// Keyframes asked of a WebRTC anchor this often when no HLS output sets the pace.
const KEYFRAME_REQUEST_SECS: u32 = 2;

/// What a task reports.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RelayStatus {
    pub state: TaskState,
    pub attached: bool,
    pub frames: u64,
    pub targets: Vec<(String, PushState, u64)>,
    /// What the task re-encodes because its outputs cannot carry it, e.g. `opus→aac`.
    pub transcoding: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskState {
    Waiting,
    Running,
    Stopped(String),
}

pub(super) struct Deps {
    pub rooms: RoomHandle,
    pub hub: MediaHub,
    pub hls_root: std::path::PathBuf,
    pub record_root: std::path::PathBuf,
}

#[derive(Default)]
struct SentConfigs {
    video: Option<Arc<MediaMessage>>,
    audio: Option<Arc<MediaMessage>>,
}

/// The outputs and the state of following one anchor (or of a mix).
pub(super) struct Relay {
    id: String,
    targets: Vec<PushTarget>,
    pub(super) hls: Option<HlsWriter>,
    pub(super) recorder: Option<crate::record::Recorder>,
    /// Publishers of the output in other rooms (FeedBackRoomParams).
    pub(super) feedback: Vec<crate::media::hub::Publisher>,
    source: Option<Subscription>,
    /// The configs outputs were last given (after any re-encoding), for targets added later.
    sent_configs: SentConfigs,
    audio: Option<Stage>,
    /// VP8/VP9 video transcoded to H.264 (started when such a config arrives).
    video: Option<Stage>,
    transcoding: Vec<String>,
    audio_fallback: Option<crate::profile::AudioEncoding>,
    pub(super) rebaser: Rebaser,
    need_keyframe: bool,
    frames: u64,
}

impl Relay {
    pub(super) fn new(spec: &RelaySpec, deps: &Deps) -> Relay {
        let mut relay = Relay {
            id: spec.id.clone(),
            targets: Vec::new(),
            hls: spec
                .hls
                .as_ref()
                .map(|h| HlsWriter::spawn(deps.hls_root.join(&spec.stream), h.clone())),
            recorder: spec.record.clone().map(|mut r| {
                if r.dir.is_relative() {
                    r.dir = deps.record_root.join(&r.dir);
                }
                crate::record::Recorder::spawn(r)
            }),
            feedback: Vec::new(),
            source: None,
            sent_configs: SentConfigs::default(),
            audio: spec.audio_reencode.clone().map(audio_stage),
            audio_fallback: spec.audio_fallback.clone(),
            video: None,
            transcoding: Vec::new(),
            rebaser: Rebaser::default(),
            need_keyframe: true,
            frames: 0,
        };
        relay.set_targets(&spec.rtmp);
        relay
    }

    pub(super) fn report(&self) -> RelayStatus {
        let attached = self.source.is_some();
        RelayStatus {
            state: if attached {
                TaskState::Running
            } else {
                TaskState::Waiting
            },
            attached,
            frames: self.frames,
            targets: self.targets_status(),
            transcoding: self.transcoding.clone(),
        }
    }

    pub(super) fn targets_status(&self) -> Vec<(String, PushState, u64)> {
        self.targets
            .iter()
            .map(|t| (t.url.clone(), t.state.borrow().clone(), t.dropped()))
            .collect()
    }

    /// A (re)attachment: configs to every output, a keyframe before frames,
    /// a new time base segment, and a discontinuity in HLS.
    fn attach(&mut self, s: Subscription) {
        self.rebaser.reattach();
        self.need_keyframe = true;
        if let Some(h) = self.hls.as_mut() {
            h.discontinuity();
        }
        if let Some(r) = self.recorder.as_mut() {
            r.discontinuity();
        }
        for c in [&s.configs.video, &s.configs.audio].into_iter().flatten() {
            self.fan_out(&Arc::new(MediaMessage::Config(c.clone())));
        }
        self.source = Some(s);
    }

    fn fan_out(&mut self, m: &Arc<MediaMessage>) {
        let is_audio = match &**m {
            MediaMessage::Config(c) => c.kind == TrackKind::Audio,
            MediaMessage::Frame(f) => f.kind == TrackKind::Audio,
        };
        if let MediaMessage::Config(c) = &**m
            && is_audio
            && !c.codec.fits_flv_and_ts()
            && self.audio.is_none()
            && let Some(settings) = self.audio_fallback.clone()
        {
            tracing::info!(task = %self.id, codec = ?c.codec, "transcoding the anchor's audio to AAC");
            self.audio = Some(audio_stage(settings));
            self.transcoding
                .push(format!("audio {:?}→aac", c.codec).to_lowercase());
        }
        if let MediaMessage::Config(c) = &**m
            && !is_audio
            && !c.codec.fits_flv_and_ts()
            && self.video.is_none()
        {
            tracing::info!(task = %self.id, codec = ?c.codec, "the anchor's video needs transcoding to H.264");
            self.video = Some(super::transcode::spawn(self.id.clone()));
            self.transcoding
                .push(format!("video {:?}→h264", c.codec).to_lowercase());
        }
        if !is_audio && let Some(stage) = self.video.as_mut() {
            // Transcoded video comes back through `emit`.
            stage.offer(m);
            return;
        }
        if is_audio && let Some(stage) = self.audio.as_mut() {
            // Re-encoded audio comes back through `emit`.
            stage.offer(m);
            return;
        }
        self.emit(m);
    }

    /// To every output.
    pub(super) fn emit(&mut self, m: &Arc<MediaMessage>) {
        // A new track configuration restarts outputs at the next keyframe: ask for one.
        if let MediaMessage::Config(c) = &**m {
            let sent = match c.kind {
                TrackKind::Video => &self.sent_configs.video,
                TrackKind::Audio => &self.sent_configs.audio,
            };
            if sent.as_deref() != Some(&**m)
                && let Some(s) = &self.source
            {
                s.request_keyframe();
            }
        }
        if let MediaMessage::Frame(_) = &**m {
            self.frames += 1;
        }
        if let MediaMessage::Config(c) = &**m {
            match c.kind {
                TrackKind::Video => self.sent_configs.video = Some(m.clone()),
                TrackKind::Audio => self.sent_configs.audio = Some(m.clone()),
            }
        }
        for t in &mut self.targets {
            t.offer(m);
        }
        if let Some(h) = self.hls.as_mut() {
            h.offer(m);
        }
        if let Some(r) = self.recorder.as_mut() {
            r.offer(m);
        }
        for p in &self.feedback {
            p.send((**m).clone());
        }
    }

    /// One message from the anchor: configs pass, frames wait for a keyframe and are rebased.
    fn forward(&mut self, m: Arc<MediaMessage>) {
        let Some(src) = self.source.as_mut() else {
            return;
        };
        let out = match &*m {
            MediaMessage::Config(c) => {
                match c.kind {
                    TrackKind::Video => src.configs.video = Some(c.clone()),
                    TrackKind::Audio => src.configs.audio = Some(c.clone()),
                }
                m
            }
            MediaMessage::Frame(f) => {
                let has_video = src.configs.video.is_some();
                if self.need_keyframe && has_video && !(f.kind == TrackKind::Video && f.keyframe) {
                    return;
                }
                self.need_keyframe = false;
                Arc::new(MediaMessage::Frame(rebase(&mut self.rebaser, f)))
            }
        };
        self.fan_out(&out);
    }

    /// New targets start at the next keyframe with the current configs;
    /// targets whose URL stays keep their connection.
    pub(super) fn set_targets(&mut self, urls: &[String]) {
        self.targets.retain(|t| urls.contains(&t.url));
        for url in urls {
            if self.targets.iter().any(|t| &t.url == url) {
                continue;
            }
            match PushTarget::spawn(url) {
                Ok(mut t) => {
                    let sent = &self.sent_configs;
                    for c in [&sent.video, &sent.audio].into_iter().flatten() {
                        t.offer(c);
                    }
                    self.targets.push(t);
                }
                Err(e) => tracing::warn!(task = %self.id, "rtmp target refused: {e}"),
            }
        }
        tracing::info!(task = %self.id, targets = self.targets.len(), "rtmp targets updated");
    }

    /// Forwards what the anchor already sent before the task stops.
    fn drain(&mut self) {
        while let Some(m) = self
            .source
            .as_mut()
            .and_then(|s| s.messages.try_recv().ok())
        {
            self.forward(m);
        }
    }
}

pub(super) async fn run(
    spec: RelaySpec,
    deps: Deps,
    mut control: mpsc::Receiver<super::Control>,
    status: watch::Sender<RelayStatus>,
) {
    let Some(user) = spec.user.clone() else {
        return super::mix_task::run(spec, deps, control, status).await;
    };
    let mut events = deps.rooms.subscribe();
    let mut relay = Relay::new(&spec, &deps);
    let mut idle_since = tokio::time::Instant::now();
    // Whether the anchor publishes is read again whenever the hub's
    // publisher set changes (and once at the start).
    let mut publishers = deps.hub.watch_publishers();
    publishers.mark_changed();
    // Keyframe requests and status reports.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Outputs cut (HLS segments) and start (RTMP targets) at keyframes; a
    // WebRTC publisher sends one only when asked, so it is asked this often.
    let keyframe_every = Duration::from_secs(u64::from(
        spec.hls
            .as_ref()
            .map_or(KEYFRAME_REQUEST_SECS, |h| h.segment_seconds.max(1)),
    ));
    let mut last_keyframe_request = tokio::time::Instant::now();
    tracing::info!(task = %spec.id, room = %spec.room, user = %user, stream = %spec.stream, "relay task started");

    let reason = loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(super::Control::SetTargets(urls)) => relay.set_targets(&urls),
                Some(
                    super::Control::SetLayout(_)
                    | super::Control::SetVolume(..)
                    | super::Control::SetAudioFilter(_)
                    | super::Control::RestartMix(_),
                ) => {}
                Some(super::Control::Stop) | None => break "stopped by request".to_owned(),
            },
            m = recv_stage(&mut relay.audio) => match m {
                Some(m) => relay.emit(&m),
                None => {
                    tracing::error!(task = %relay.id, "audio re-encoder stopped; relaying the anchor's audio as is");
                    relay.audio = None;
                }
            },
            m = recv_stage(&mut relay.video) => match m {
                Some(m) => relay.emit(&m),
                None => {
                    tracing::error!(task = %relay.id, "video transcoder stopped; video dropped");
                    relay.video = None;
                }
            },
            msg = recv(&mut relay.source) => match msg {
                Ok(m) => relay.forward(m),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(task = %relay.id, missed = n, "relay fell behind its source; resuming at the next keyframe");
                    relay.need_keyframe = true;
                    if let Some(s) = &relay.source {
                        s.request_keyframe();
                    }
                }
                Err(RecvError::Closed) => {
                    tracing::info!(task = %relay.id, "anchor stopped publishing; waiting for it to come back");
                    relay.source = None;
                    idle_since = tokio::time::Instant::now();
                    let _ = status.send(relay.report());
                }
            },
            // The anchor publishing: looked up when publishers change while detached.
            r = publishers.changed(), if relay.source.is_none() => {
                if r.is_err() {
                    break "shutting down".to_owned();
                }
                if let Some(s) = deps.hub.subscribe(&spec.room, &user) {
                    tracing::info!(task = %relay.id, "anchor is publishing; relaying");
                    relay.attach(s);
                    let _ = status.send(relay.report());
                }
            }
            () = tokio::time::sleep_until(idle_since + spec.max_idle), if relay.source.is_none() => {
                break format!("no input for {:?}", spec.max_idle);
            }
            ev = events.recv() => match ev {
                Ok(ev) if ev.room == spec.room => {
                    if let EventKind::RoomClosed { reason } = &ev.kind {
                        relay.drain();
                        break format!("room closed ({})", reason.as_str());
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break "shutting down".to_owned(),
            },
            _ = tick.tick() => {
                if let Some(s) = &relay.source
                    && last_keyframe_request.elapsed() >= keyframe_every
                {
                    s.request_keyframe();
                    last_keyframe_request = tokio::time::Instant::now();
                }
                let _ = status.send(relay.report());
            }
        }
    };
    relay.finish(reason, &status).await;
}

impl Relay {
    /// Closes every output in order and reports the task stopped.
    pub(super) async fn finish(mut self, reason: String, status: &watch::Sender<RelayStatus>) {
        tracing::info!(task = %self.id, "relay task stopping: {reason}");
        let targets = self.targets_status();
        // Closing the queues lets targets and HLS finish in order.
        self.targets.clear();
        if let Some(h) = self.hls.take() {
            h.finish().await;
        }
        if let Some(r) = self.recorder.take() {
            r.finish().await;
        }
        let _ = status.send(RelayStatus {
            state: TaskState::Stopped(reason),
            attached: false,
            frames: self.frames,
            targets,
            transcoding: self.transcoding.clone(),
        });
    }
}

async fn recv(source: &mut Option<Subscription>) -> Result<Arc<MediaMessage>, RecvError> {
    match source {
        Some(s) => s.messages.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_stage(stage: &mut Option<Stage>) -> Option<Arc<MediaMessage>> {
    match stage {
        Some(s) => s.out.recv().await,
        None => std::future::pending().await,
    }
}

pub(super) fn rebase(r: &mut Rebaser, f: &EncodedFrame) -> EncodedFrame {
    let dts = f.time_base.rescale(f.dts, TimeBase::MILLIS);
    let pts = f.time_base.rescale(f.pts, TimeBase::MILLIS);
    let (dts, pts) = r.map(f.kind, dts, pts);
    EncodedFrame {
        dts,
        pts,
        time_base: TimeBase::MILLIS,
        ..f.clone()
    }
}
