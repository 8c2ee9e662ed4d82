//! The passthrough driver: one anchor's stream to the task's outputs.
//!
//! The task follows its anchor: the media hub attaches it to each of the
//! anchor's publishers as that registers (to one already publishing, from
//! its last keyframe). It starts every output at a keyframe, and marks a
//! discontinuity when the anchor drops and returns (RTMP stays connected).
//! Audio or video the outputs cannot carry goes through a transcoding
//! stage first. It stops when asked, when the room closes, or after
//! `max_idle` without input.
//!
//! The anchor's messages do not wake the task: it attaches as a
//! [`Tap`], so each message goes through the keyframe gate, the rebaser
//! and the outputs in the publisher's own turn (an RTMP target writes it to
//! its socket there and then). The task keeps everything else: control,
//! the room, status, keyframe requests and the transcoding stages' output.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::hold::{StageDates, StartHold, back_dates};
use super::outputs::{Deps, Outputs};
use super::spec::{AnchorInput, RelaySpec};
use super::status::StatusTx;
use super::{AnchorControl, Control};
use crate::media::aac::audio_stage;
use crate::media::hub::{Configs, Start, Tap};
use crate::media::stage::Stage;
use crate::media::{MediaMessage, TrackKind};
use crate::profile::AudioEncoding;

/// Keyframes asked of a WebRTC anchor this often when no HLS output sets the pace.
const KEYFRAME_REQUEST_SECS: u32 = 2;

/// The input side of a passthrough: the anchor's stream while it publishes
/// and the stages its media goes through before the outputs.
struct Follow {
    task: String,
    /// Attached to the anchor: its configs and where to ask it for a keyframe.
    source: Option<Source>,
    /// AAC re-encoded (profile `audio.reencode`), or audio the outputs
    /// cannot carry transcoded to AAC.
    audio: Option<Stage>,
    audio_fallback: Option<AudioEncoding>,
    /// VP8/VP9 video transcoded to H.264 (started when such a config arrives).
    video: Option<Stage>,
    /// Told when a stage starts, so the task polls its output.
    stage_started: Arc<Notify>,
    transcoding: Vec<String>,
    need_keyframe: bool,
    /// The outputs' first messages in an attachment, until both tracks
    /// have begun.
    hold: StartHold,
    /// While the anchor's kept group of pictures is replayed: when the
    /// message going through was sent (unix ms), to date it by.
    replay_wall: Option<u64>,
    /// When what each stage makes of a replayed group was sent: it comes
    /// out later, in a burst, and would otherwise be dated by then.
    audio_dates: StageDates,
    video_dates: StageDates,
}

struct Source {
    configs: Configs,
    keyframe: Arc<Notify>,
}

impl Follow {
    /// A (re)attachment: a new time base segment and a discontinuity, the
    /// anchor's configs to every output, a keyframe before frames.
    fn attach(&mut self, configs: &Configs, keyframe: &Arc<Notify>, out: &mut Outputs) {
        out.discontinuity();
        self.need_keyframe = true;
        self.hold = StartHold::holding();
        self.audio_dates.clear();
        self.video_dates.clear();
        self.source = Some(Source {
            configs: Configs::default(),
            keyframe: keyframe.clone(),
        });
        for c in [&configs.video, &configs.audio].into_iter().flatten() {
            self.forward(&Arc::new(MediaMessage::Config(c.clone())), out);
        }
    }

    /// One message from the anchor: configs pass, frames wait for a keyframe and are rebased.
    fn forward(&mut self, m: &Arc<MediaMessage>, out: &mut Outputs) {
        let Some(src) = self.source.as_mut() else {
            return;
        };
        let rebased;
        let m = match &**m {
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
                let Some(r) = out.rebase(m) else { return };
                rebased = r;
                &rebased
            }
        };
        self.pass_on(m, out);
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
                self.stage_started.notify_one();
                self.transcoding
                    .push(format!("audio {}→aac", c.codec.as_str()));
            }
            if !is_audio && self.video.is_none() {
                tracing::info!(task = %self.task, codec = ?c.codec, "the anchor's video needs transcoding to H.264");
                self.video = Some(super::transcode::spawn(self.task.clone()));
                self.stage_started.notify_one();
                self.transcoding
                    .push(format!("video {}→h264", c.codec.as_str()));
            }
        }
        // What a stage transcodes comes back through `emit_staged`.
        let (stage, dates) = if is_audio {
            (self.audio.as_mut(), &mut self.audio_dates)
        } else {
            (self.video.as_mut(), &mut self.video_dates)
        };
        match stage {
            Some(stage) => {
                if let Some(wall) = self.replay_wall {
                    dates.offered(m, wall);
                }
                stage.offer(m)
            }
            None => self.emit(m, self.replay_wall, out),
        }
    }

    /// What a stage made of the anchor's `kind` track, dated by when its
    /// input was sent if that was a replay.
    fn emit_staged(&mut self, kind: TrackKind, m: &Arc<MediaMessage>, out: &mut Outputs) {
        let wall = match kind {
            TrackKind::Audio => self.audio_dates.date(m),
            TrackKind::Video => self.video_dates.date(m),
        };
        self.emit(m, wall, out);
    }

    /// To the outputs, through the attachment's start hold: a track that
    /// comes out of a stage (audio transcoded from Opus, re-encoded AAC)
    /// begins after the other, and the outputs should start with both.
    /// `wall`: when `m` was sent (unix ms), if not now.
    fn emit(&mut self, m: &Arc<MediaMessage>, wall: Option<u64>, out: &mut Outputs) {
        if self.hold.is_open() {
            if out.emit_dated(m, wall) {
                self.request_keyframe();
            }
            return;
        }
        let mut released = Vec::new();
        let wall = wall.unwrap_or_else(crate::unix_now_ms);
        self.hold.offer(m, wall, &mut released);
        for (m, wall_ms) in &released {
            if out.emit_dated(m, Some(*wall_ms)) {
                self.request_keyframe();
            }
        }
    }

    /// Asks the anchor for a keyframe, if attached.
    fn request_keyframe(&self) {
        if let Some(s) = &self.source {
            s.keyframe.notify_one();
        }
    }

    /// What a stage transcoded, or `None` when it stopped.
    fn poll_stages(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(TrackKind, Option<Arc<MediaMessage>>)> {
        for (kind, stage) in [
            (TrackKind::Audio, self.audio.as_mut()),
            (TrackKind::Video, self.video.as_mut()),
        ] {
            if let Some(s) = stage
                && let Poll::Ready(m) = s.out.poll_recv(cx)
            {
                return Poll::Ready((kind, m));
            }
        }
        Poll::Pending
    }
}

/// The task's input and outputs, shared by the task (control, status,
/// stage outputs) and its tap (the anchor's messages, in the anchor's
/// turn). Taken out when the task finishes.
type Shared = Arc<Mutex<Option<(Follow, Outputs)>>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Option<(Follow, Outputs)>> {
    // A panic in an output leaves it as it was between messages.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The task's part in the anchor's publisher: every message is relayed in
/// the publisher's turn (no queue, no wake-up of this task per frame).
struct Follower {
    shared: Shared,
    /// The anchor started or stopped publishing: the task reads which.
    changed: Arc<Notify>,
}

impl Tap for Follower {
    fn attached(&self, configs: &Configs, keyframe: &Arc<Notify>) {
        if let Some((follow, out)) = lock(&self.shared).as_mut() {
            follow.attach(configs, keyframe, out);
        }
        self.changed.notify_one();
    }

    fn deliver(&self, m: &Arc<MediaMessage>) {
        if let Some((follow, out)) = lock(&self.shared).as_mut() {
            follow.forward(m, out);
        }
    }

    /// The anchor's messages since its last keyframe, at the start: each
    /// dated by when the anchor sent it, not now (HLS would date the
    /// segment they open up to a group of pictures late).
    fn replayed(&self, _: &Configs, messages: &[Arc<MediaMessage>]) {
        let dates = back_dates(crate::unix_now_ms(), messages);
        if let Some((follow, out)) = lock(&self.shared).as_mut() {
            for (m, wall) in messages.iter().zip(dates) {
                follow.replay_wall = Some(wall);
                follow.forward(m, out);
            }
            follow.replay_wall = None;
        }
    }

    fn closed(&self) {
        if let Some((follow, _)) = lock(&self.shared).as_mut() {
            follow.source = None;
        }
        self.changed.notify_one();
    }
}

pub(super) async fn run(
    spec: RelaySpec,
    anchor: AnchorInput,
    deps: Deps,
    mut control: mpsc::Receiver<Control<AnchorControl>>,
    status: StatusTx,
) {
    let mut out = Outputs::new(&spec, &deps);
    out.enter_feedback_rooms(&spec, &deps, true).await;
    let stage_started = Arc::new(Notify::new());
    let follow = Follow {
        task: spec.id.clone(),
        source: None,
        audio: anchor.audio_reencode.map(audio_stage),
        audio_fallback: anchor.audio_fallback,
        video: None,
        stage_started: stage_started.clone(),
        transcoding: Vec::new(),
        need_keyframe: true,
        hold: StartHold::default(),
        replay_wall: None,
        audio_dates: StageDates::default(),
        video_dates: StageDates::default(),
    };
    let shared: Shared = Arc::new(Mutex::new(Some((follow, out))));
    let report = |attached: bool| {
        let inputs = if attached {
            vec![anchor.user.to_string()]
        } else {
            Vec::new()
        };
        lock(&shared)
            .as_mut()
            .map(|(follow, out)| out.report(attached, &follow.transcoding, inputs))
    };
    let user = anchor.user.clone();
    let mut room = deps.rooms.watch_room(&spec.room).await;
    let mut room_seen = room.borrow_and_update().clone();
    // The tap follows the anchor's every publisher, attached as each
    // registers (before its first message), the one now included (from
    // its last keyframe: the outputs start at once); the task learns of
    // it from `changed`.
    let changed = Arc::new(Notify::new());
    let following = deps.hub.follow(
        &spec.room,
        &user,
        Start::LastKeyframe,
        Arc::new(Follower {
            shared: shared.clone(),
            changed: changed.clone(),
        }),
    );
    let mut attached = false;
    let mut idle_since = tokio::time::Instant::now();
    // Keyframe requests and counters in the status (once a second: see
    // `crate::ticks` for what a tick costs).
    let mut tick = crate::ticks::grid_interval(Duration::from_secs(1));
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
                Some(Control::SetTargets(urls)) => {
                    if let Some((_, out)) = lock(&shared).as_mut() {
                        out.set_targets(&urls);
                    }
                }
                Some(Control::Input(never)) => match never {},
                Some(Control::Stop) | None => break "stopped by request".to_owned(),
            },
            (kind, m) = std::future::poll_fn(|cx| match lock(&shared).as_mut() {
                Some((follow, _)) => follow.poll_stages(cx),
                None => Poll::Pending,
            }) => {
                let mut g = lock(&shared);
                let Some((follow, out)) = g.as_mut() else { continue };
                match (kind, m) {
                    (kind, Some(m)) => follow.emit_staged(kind, &m, out),
                    (TrackKind::Audio, None) => {
                        tracing::error!(task = %spec.id, "audio re-encoder stopped; relaying the anchor's audio as is");
                        follow.audio = None;
                    }
                    (TrackKind::Video, None) => {
                        tracing::error!(task = %spec.id, "video transcoder stopped; video dropped");
                        follow.video = None;
                    }
                }
            },
            // A stage started in the anchor's turn: its output is polled from now on.
            () = stage_started.notified() => {}
            // The anchor started or stopped publishing (or both, a new
            // session replacing its last): its tap says which it is now.
            () = changed.notified() => {
                let now = lock(&shared).as_ref().is_some_and(|(follow, _)| follow.source.is_some());
                if now == attached {
                    continue;
                }
                attached = now;
                if attached {
                    tracing::info!(task = %spec.id, "anchor is publishing; relaying");
                } else {
                    tracing::info!(task = %spec.id, "anchor stopped publishing; waiting for it to come back");
                    idle_since = tokio::time::Instant::now();
                }
                status.publish(report(attached).expect("running"));
            }
            () = crate::ticks::sleep_until(idle_since + spec.max_idle), if !attached => {
                break format!("no input for {:?}", spec.max_idle);
            }
            r = room.changed() => {
                if r.is_err() {
                    break "shutting down".to_owned();
                }
                let now = room.borrow_and_update().clone();
                if let Some(why) = now.closed_since(&room_seen) {
                    break format!("room closed ({why})");
                }
                room_seen = now;
            }
            _ = tick.tick() => {
                if attached && last_keyframe_request.elapsed() >= keyframe_every {
                    if let Some((follow, _)) = lock(&shared).as_ref() {
                        follow.request_keyframe();
                    }
                    last_keyframe_request = tokio::time::Instant::now();
                }
                status.publish(report(attached).expect("running"));
            }
        }
    };
    // Detached first: nothing is delivered once the outputs are taken.
    drop(following);
    let (follow, out) = lock(&shared).take().expect("taken once");
    out.finish(reason, &deps, &follow.transcoding, &status)
        .await;
}
