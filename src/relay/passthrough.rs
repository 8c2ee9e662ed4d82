//! The passthrough driver: one anchor's stream to the task's outputs.
//!
//! The task follows its anchor: it attaches to the anchor's stream in the
//! media hub when the room's publishers change and the anchor is among
//! them, starts every output at a keyframe, and marks a discontinuity when
//! the anchor drops and returns (RTMP stays connected). Audio or video the
//! outputs cannot carry goes through a transcoding stage first. It stops
//! when asked, when the room closes, or after `max_idle` without input.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;

use super::outputs::{Deps, Outputs};
use super::spec::{AnchorInput, RelaySpec};
use super::status::StatusTx;
use super::{AnchorControl, Control};
use crate::media::aac::audio_stage;
use crate::media::hub::Subscription;
use crate::media::stage::Stage;
use crate::media::{MediaMessage, TrackKind};
use crate::profile::AudioEncoding;

/// Keyframes asked of a WebRTC anchor this often when no HLS output sets the pace.
const KEYFRAME_REQUEST_SECS: u32 = 2;

/// The input side of a passthrough: the anchor's stream while it publishes
/// and the stages its media goes through before the outputs.
struct Follow {
    task: String,
    source: Option<Subscription>,
    /// AAC re-encoded (profile `audio.reencode`), or audio the outputs
    /// cannot carry transcoded to AAC.
    audio: Option<Stage>,
    audio_fallback: Option<AudioEncoding>,
    /// VP8/VP9 video transcoded to H.264 (started when such a config arrives).
    video: Option<Stage>,
    transcoding: Vec<String>,
    need_keyframe: bool,
}

impl Follow {
    /// A (re)attachment: a new time base segment and a discontinuity, the
    /// anchor's configs to every output, a keyframe before frames.
    fn attach(&mut self, s: Subscription, out: &mut Outputs) {
        out.discontinuity();
        self.need_keyframe = true;
        for c in [&s.configs.video, &s.configs.audio].into_iter().flatten() {
            self.pass_on(&Arc::new(MediaMessage::Config(c.clone())), out);
        }
        self.source = Some(s);
    }

    /// Messages of the anchor were lost to a full fan-out: resume at a keyframe.
    fn lagged(&mut self, task: &str, n: u64) {
        tracing::warn!(%task, missed = n, "relay fell behind its source; resuming at the next keyframe");
        crate::metrics::metrics().dropped(crate::metrics::DropReason::Lagged, n);
        self.need_keyframe = true;
        if let Some(s) = &self.source {
            s.request_keyframe();
        }
    }

    /// One message from the anchor: configs pass, frames wait for a keyframe and are rebased.
    fn forward(&mut self, m: Arc<MediaMessage>, out: &mut Outputs) {
        let Some(src) = self.source.as_mut() else {
            return;
        };
        let m = match &*m {
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
                Arc::new(MediaMessage::Frame(out.rebase(f)))
            }
        };
        self.pass_on(&m, out);
    }

    /// Through the transcoding stage its track needs, if any, else straight out.
    fn pass_on(&mut self, m: &Arc<MediaMessage>, out: &mut Outputs) {
        let is_audio = match &**m {
            MediaMessage::Config(c) => c.kind == TrackKind::Audio,
            MediaMessage::Frame(f) => f.kind == TrackKind::Audio,
        };
        if let MediaMessage::Config(c) = &**m
            && !c.codec.fits_flv_and_ts()
        {
            if is_audio
                && self.audio.is_none()
                && let Some(settings) = self.audio_fallback.clone()
            {
                tracing::info!(task = %self.task, codec = ?c.codec, "transcoding the anchor's audio to AAC");
                self.audio = Some(audio_stage(settings));
                self.transcoding
                    .push(format!("audio {}→aac", c.codec.as_str()));
            }
            if !is_audio && self.video.is_none() {
                tracing::info!(task = %self.task, codec = ?c.codec, "the anchor's video needs transcoding to H.264");
                self.video = Some(super::transcode::spawn(self.task.clone()));
                self.transcoding
                    .push(format!("video {}→h264", c.codec.as_str()));
            }
        }
        // What a stage transcodes comes back through `emit`.
        let stage = if is_audio {
            self.audio.as_mut()
        } else {
            self.video.as_mut()
        };
        match stage {
            Some(stage) => stage.offer(m),
            None => self.emit(m, out),
        }
    }

    fn emit(&self, m: &Arc<MediaMessage>, out: &mut Outputs) {
        if out.emit(m)
            && let Some(s) = &self.source
        {
            s.request_keyframe();
        }
    }

    /// Forwards what the anchor already sent before the task stops.
    fn drain(&mut self, out: &mut Outputs) {
        while let Some(m) = self
            .source
            .as_mut()
            .and_then(|s| s.messages.try_recv().ok())
        {
            self.forward(m, out);
        }
    }
}

/// Messages forwarded per wake-up before the task looks at its other inputs.
const BURST: usize = 32;

pub(super) async fn run(
    spec: RelaySpec,
    anchor: AnchorInput,
    deps: Deps,
    mut control: mpsc::Receiver<Control<AnchorControl>>,
    status: StatusTx,
) {
    let mut out = Outputs::new(&spec, &deps);
    out.enter_feedback_rooms(&spec, &deps, true).await;
    let mut follow = Follow {
        task: spec.id.clone(),
        source: None,
        audio: anchor.audio_reencode.map(audio_stage),
        audio_fallback: anchor.audio_fallback,
        video: None,
        transcoding: Vec::new(),
        need_keyframe: true,
    };
    let user = anchor.user;
    let mut room = deps.rooms.watch_room(&spec.room).await;
    let mut room_seen = room.borrow_and_update().clone();
    let mut publishers = deps.hub.watch_room(&spec.room);
    // An anchor already publishing is found on the first turn.
    publishers.mark_changed();
    let mut idle_since = tokio::time::Instant::now();
    // Keyframe requests and counters in the status.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Outputs cut (HLS segments) and start (RTMP targets) at keyframes; a
    // WebRTC publisher sends one only when asked, so it is asked this often.
    let keyframe_every = Duration::from_secs(u64::from(
        spec.outputs
            .hls
            .as_ref()
            .map_or(KEYFRAME_REQUEST_SECS, |h| h.segment_seconds.max(1)),
    ));
    let mut last_keyframe_request = tokio::time::Instant::now();
    tracing::info!(task = %spec.id, room = %spec.room, user = %user, stream = %spec.stream, "relay task started");

    let reason = loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::SetTargets(urls)) => out.set_targets(&urls),
                Some(Control::Input(never)) => match never {},
                Some(Control::Stop) | None => break "stopped by request".to_owned(),
            },
            m = recv_stage(&mut follow.audio) => match m {
                Some(m) => follow.emit(&m, &mut out),
                None => {
                    tracing::error!(task = %spec.id, "audio re-encoder stopped; relaying the anchor's audio as is");
                    follow.audio = None;
                }
            },
            m = recv_stage(&mut follow.video) => match m {
                Some(m) => follow.emit(&m, &mut out),
                None => {
                    tracing::error!(task = %spec.id, "video transcoder stopped; video dropped");
                    follow.video = None;
                }
            },
            msg = recv(&mut follow.source) => match msg {
                Ok(m) => {
                    follow.forward(m, &mut out);
                    // What the anchor sent with it (one read of its socket
                    // often holds a picture and its audio) goes on now,
                    // without another round of this select.
                    for _ in 0..BURST {
                        match follow.source.as_mut().map(|s| s.messages.try_recv()) {
                            Some(Ok(m)) => follow.forward(m, &mut out),
                            Some(Err(TryRecvError::Lagged(n))) => follow.lagged(&spec.id, n),
                            Some(Err(_)) | None => break,
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => follow.lagged(&spec.id, n),
                Err(RecvError::Closed) => {
                    tracing::info!(task = %spec.id, "anchor stopped publishing; waiting for it to come back");
                    follow.source = None;
                    idle_since = tokio::time::Instant::now();
                    status.publish(out.report(false, &follow.transcoding, Vec::new()));
                }
            },
            // The anchor publishing: looked up when the room's publishers change while detached.
            r = publishers.changed(), if follow.source.is_none() => {
                if r.is_err() {
                    break "shutting down".to_owned();
                }
                let publishing = publishers.borrow_and_update().iter().any(|(u, _)| *u == user);
                if publishing && let Some(s) = deps.hub.subscribe(&spec.room, &user) {
                    tracing::info!(task = %spec.id, "anchor is publishing; relaying");
                    follow.attach(s, &mut out);
                    status.publish(out.report(true, &follow.transcoding, vec![user.to_string()]));
                }
            }
            () = tokio::time::sleep_until(idle_since + spec.max_idle), if follow.source.is_none() => {
                break format!("no input for {:?}", spec.max_idle);
            }
            r = room.changed() => {
                if r.is_err() {
                    break "shutting down".to_owned();
                }
                let now = room.borrow_and_update().clone();
                if let Some(why) = now.closed_since(&room_seen) {
                    follow.drain(&mut out);
                    break format!("room closed ({why})");
                }
                room_seen = now;
            }
            _ = tick.tick() => {
                if let Some(s) = &follow.source
                    && last_keyframe_request.elapsed() >= keyframe_every
                {
                    s.request_keyframe();
                    last_keyframe_request = tokio::time::Instant::now();
                }
                let inputs = if follow.source.is_some() { vec![user.to_string()] } else { Vec::new() };
                status.publish(out.report(follow.source.is_some(), &follow.transcoding, inputs));
            }
        }
    };
    out.finish(reason, &deps, &follow.transcoding, &status)
        .await;
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
