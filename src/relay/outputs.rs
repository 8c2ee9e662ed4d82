//! One relay task's outputs, the same whatever the input: RTMP targets,
//! HLS, the recorder and the rooms the output is published back into,
//! behind one timestamp rebaser.
//!
//! A driver (passthrough or mix) hands it configs and frames; it keeps the
//! configs each output was last given (for targets added later), counts
//! frames, marks discontinuities and closes everything in order.

use std::path::PathBuf;
use std::sync::Arc;

use super::rebase::Rebaser;
use super::spec::{OutputSpec, RelaySpec};
use super::status::{Rates, RelayStatus, StatusTx, TaskState};
use crate::hls::HlsOut;
use crate::hls::ladder::Ladder;
use crate::hls::store::HlsStore;
use crate::media::hub::{MediaHub, Publisher};
use crate::media::{EncodedFrame, MediaMessage, TimeBase, TrackKind};
use crate::record::Recorder;
use crate::room::{Command, Enter, Role, RoomHandle, RoomKey, Scene, SessionId};
use crate::rtmp::loops::Loops;
use crate::rtmp::push::{PushState, PushTarget};
use tokio::sync::mpsc;

/// What a task needs from the rest of the gateway.
pub(super) struct Deps {
    pub rooms: RoomHandle,
    pub hub: MediaHub,
    pub hls_store: HlsStore,
    pub record_root: PathBuf,
    /// Where push targets run.
    pub loops: Loops,
}

/// The output published back into a room. Its publisher sends from a task
/// of its own: outputs may be driven from a publisher's turn (a
/// passthrough's [`crate::media::hub::Tap`]), which must not publish.
struct Feedback {
    session: SessionId,
    room: RoomKey,
    tx: mpsc::UnboundedSender<MediaMessage>,
    sender: tokio::task::JoinHandle<()>,
}

impl Feedback {
    fn start(session: SessionId, room: RoomKey, publisher: Publisher) -> Feedback {
        // Unbounded: its only consumer is the publisher's send, which
        // never waits.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sender = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                publisher.send(m);
            }
        });
        Feedback {
            session,
            room,
            tx,
            sender,
        }
    }
}

/// The configs outputs were last given (after any re-encoding).
#[derive(Default)]
struct SentConfigs {
    video: Option<Arc<MediaMessage>>,
    audio: Option<Arc<MediaMessage>>,
}

pub(super) struct Outputs {
    task: String,
    /// Where the robots of `feedback` are.
    rooms: RoomHandle,
    targets: Vec<PushTarget>,
    loops: Loops,
    hls: Option<HlsOut>,
    /// The HLS output's lower renditions, if its profile lists any.
    ladder: Option<Ladder>,
    recorder: Option<Recorder>,
    /// The output published in other rooms (FeedBackRoomParams), with the
    /// robot sessions that entered them.
    feedback: Vec<Feedback>,
    rebaser: Rebaser,
    /// The last frame [`Outputs::rebase`] had to move. Once every output
    /// has let go of it, the next moved frame takes its place: a relay
    /// started while its anchor publishes moves every frame, and makes no
    /// message a frame for it.
    moved: Option<Arc<MediaMessage>>,
    sent: SentConfigs,
    frames: u64,
    video_frames: u64,
    bytes: u64,
    /// Video frames and bytes per second, over recent reports.
    rates: Rates<2>,
}

/// A task that dies (a panic) or is dropped as the gateway stops before
/// [`Outputs::finish`] must not leave its robots in the rooms its output
/// was fed back into: they leave.
impl Drop for Outputs {
    fn drop(&mut self) {
        for f in self.feedback.drain(..) {
            crate::panics::unfinished!(
                "relay task",
                "its output's robot leaves the room",
                task = %self.task, room = %f.room
            );
            self.rooms.end_detached(f.session, true);
        }
    }
}

impl Outputs {
    pub(super) fn new(spec: &RelaySpec, deps: &Deps) -> Outputs {
        let out: &OutputSpec = &spec.outputs;
        let mut outputs = Outputs {
            task: spec.id.clone(),
            rooms: deps.rooms.clone(),
            targets: Vec::new(),
            loops: deps.loops.clone(),
            hls: out
                .hls
                .as_ref()
                .map(|h| HlsOut::start(&spec.stream, h, &deps.hls_store)),
            ladder: out
                .hls
                .as_ref()
                .and_then(|h| crate::hls::ladder::spawn(&spec.stream, h, &deps.hls_store)),
            recorder: out.record.clone().map(|mut r| {
                if r.dir.is_relative() {
                    r.dir = deps.record_root.join(&r.dir);
                }
                Recorder::spawn(r)
            }),
            feedback: Vec::new(),
            rebaser: Rebaser::default(),
            moved: None,
            sent: SentConfigs::default(),
            frames: 0,
            video_frames: 0,
            bytes: 0,
            rates: Rates::default(),
        };
        outputs.set_targets(&out.rtmp);
        outputs
    }

    /// Enters every FeedBackRoomParams room as its robot (an anchor) and
    /// publishes the output there; a room that refuses is logged and skipped.
    pub(super) async fn enter_feedback_rooms(
        &mut self,
        spec: &RelaySpec,
        deps: &Deps,
        has_video: bool,
    ) {
        for f in &spec.outputs.feedback {
            let session = deps.rooms.new_session();
            let enter = Command::Enter(Enter {
                room: f.room.clone(),
                user: f.user.clone(),
                session,
                role: Role::Anchor,
                scene: Scene::Live,
                hidden: false,
                grant: f.grant.clone(),
                unix_now: crate::unix_now(),
            });
            if let Err(e) = deps.rooms.command(enter).await {
                tracing::warn!(task = %self.task, room = %f.room, user = %f.user, "output cannot be pushed back into the room: {e}");
                continue;
            }
            let publisher = deps.hub.publish(f.room.clone(), f.user.clone(), None);
            let kinds: &[TrackKind] = if has_video {
                &[TrackKind::Audio, TrackKind::Video]
            } else {
                &[TrackKind::Audio]
            };
            for kind in kinds {
                let _ = deps
                    .rooms
                    .command(Command::Publish {
                        session,
                        kind: *kind,
                    })
                    .await;
            }
            tracing::info!(task = %self.task, room = %f.room, user = %f.user, "output pushed back into the room");
            self.feedback
                .push(Feedback::start(session, f.room.clone(), publisher));
        }
    }

    /// Output time continues after the last frame, and players and files
    /// are told the stream starts again (HLS discontinuity, a new recording
    /// segment); RTMP targets stay connected.
    pub(super) fn discontinuity(&mut self) {
        self.rebaser.reattach();
        if let Some(h) = self.hls.as_mut() {
            h.discontinuity();
        }
        if let Some(l) = self.ladder.as_mut() {
            l.discontinuity();
        }
        if let Some(r) = self.recorder.as_mut() {
            r.discontinuity();
        }
    }

    /// A frame on the output timeline: milliseconds that never go back.
    /// `m` itself, not a copy, when its times already are the output's (a
    /// relay that starts with its anchor's stream, which starts at 0: the
    /// usual RTMP case), else a moved copy, in the last one's allocation
    /// when no output holds it any more; `None` for audio from before the
    /// current input's first frame. A config passes as it is.
    pub(super) fn rebase(&mut self, m: &Arc<MediaMessage>) -> Option<Arc<MediaMessage>> {
        let MediaMessage::Frame(f) = &**m else {
            return Some(m.clone());
        };
        let input = (
            f.time_base.rescale(f.dts, TimeBase::MILLIS),
            f.time_base.rescale(f.pts, TimeBase::MILLIS),
        );
        let jumps = self.rebaser.jumps;
        let Some((dts, pts)) = self.rebaser.map(f.kind, input.0, input.1) else {
            tracing::debug!(task = %self.task, input_ms = input.0, "audio from before the input's first frame dropped");
            return None;
        };
        if self.rebaser.jumps != jumps {
            tracing::warn!(task = %self.task, kind = ?f.kind, input_ms = input.0, output_ms = dts, "the input's timestamps jumped; the output continues without a gap");
        }
        if f.time_base == TimeBase::MILLIS && input == (dts, pts) {
            return Some(m.clone());
        }
        let frame = MediaMessage::Frame(EncodedFrame {
            dts,
            pts,
            time_base: TimeBase::MILLIS,
            ..f.clone()
        });
        // An output still holding the last one (a backlog, HLS's part
        // being cut) keeps it as it was, and this one is new.
        if let Some(last) = self.moved.as_mut()
            && let Some(slot) = Arc::get_mut(last)
        {
            *slot = frame;
            return Some(last.clone());
        }
        let m = Arc::new(frame);
        self.moved = Some(m.clone());
        Some(m)
    }

    /// To every output. `true` when `m` is a track configuration the
    /// outputs had not been given: they restart at the next keyframe, so
    /// the driver should ask its source for one.
    pub(super) fn emit(&mut self, m: &Arc<MediaMessage>) -> bool {
        self.emit_dated(m, None)
    }

    /// [`Outputs::emit`] for a message that arrived at `wall_ms` (unix ms),
    /// earlier than now (it was held): the outputs that date media (HLS)
    /// date it by then. `None`: it arrived now.
    pub(super) fn emit_dated(&mut self, m: &Arc<MediaMessage>, wall_ms: Option<u64>) -> bool {
        let mut new_config = false;
        match &**m {
            MediaMessage::Config(c) => {
                let sent = match c.kind {
                    TrackKind::Video => &mut self.sent.video,
                    TrackKind::Audio => &mut self.sent.audio,
                };
                new_config = sent.as_deref() != Some(&**m);
                *sent = Some(m.clone());
            }
            MediaMessage::Frame(f) => {
                self.frames += 1;
                self.bytes += f.data.len() as u64;
                if f.kind == TrackKind::Video {
                    self.video_frames += 1;
                }
            }
        }
        for t in &mut self.targets {
            t.offer(m);
        }
        if self.hls.is_some() || self.ladder.is_some() {
            // One clock read a message, and none without an output that dates.
            let wall_ms = wall_ms.unwrap_or_else(crate::unix_now_ms);
            if let Some(h) = self.hls.as_mut() {
                h.offer_at(m, wall_ms);
            }
            if let Some(l) = self.ladder.as_mut() {
                l.offer_at(m, wall_ms);
            }
        }
        if let Some(r) = self.recorder.as_mut() {
            r.offer(m);
        }
        for f in &self.feedback {
            let _ = f.tx.send((**m).clone());
        }
        new_config
    }

    /// New targets start at the next keyframe with the current configs;
    /// targets whose URL stays keep their connection.
    pub(super) fn set_targets(&mut self, urls: &[String]) {
        self.targets.retain(|t| urls.contains(&t.url));
        for url in urls {
            if self.targets.iter().any(|t| &t.url == url) {
                continue;
            }
            match PushTarget::spawn(url, &self.task, &self.loops) {
                Ok(mut t) => {
                    for c in [&self.sent.video, &self.sent.audio].into_iter().flatten() {
                        t.offer(c);
                    }
                    self.targets.push(t);
                }
                Err(e) => tracing::warn!(task = %self.task, "rtmp target refused: {e}"),
            }
        }
        tracing::info!(task = %self.task, targets = self.targets.len(), "rtmp targets updated");
    }

    fn targets_status(&self) -> Vec<(String, PushState, u64)> {
        self.targets
            .iter()
            .map(|t| (t.url.clone(), t.state.borrow().clone(), t.dropped()))
            .collect()
    }

    /// The task's status with its input's part (attached, transcodings,
    /// the anchors it takes).
    pub(super) fn report(
        &mut self,
        attached: bool,
        transcoding: &[String],
        inputs: Vec<String>,
    ) -> RelayStatus {
        let [fps, bytes_per_sec] = self
            .rates
            .sample(std::time::Instant::now(), [self.video_frames, self.bytes]);
        RelayStatus {
            state: if attached {
                TaskState::Running
            } else {
                TaskState::Waiting
            },
            attached,
            frames: self.frames,
            fps: fps as f32,
            kbps: (bytes_per_sec * 8.0 / 1000.0).round() as u32,
            inputs,
            effective_fps: None,
            late_ticks: 0,
            skipped_pictures: 0,
            latency: None,
            targets: self.targets_status(),
            transcoding: transcoding.to_vec(),
        }
    }

    /// Closes every output in order (targets and HLS finish what they
    /// queued, the robots leave the rooms fed back) and reports the task
    /// stopped.
    pub(super) async fn finish(
        mut self,
        reason: String,
        deps: &Deps,
        transcoding: &[String],
        status: &StatusTx,
    ) {
        tracing::info!(task = %self.task, "relay task stopping: {reason}");
        let targets = self.targets_status();
        for Feedback {
            session,
            room,
            tx,
            sender,
        } in std::mem::take(&mut self.feedback)
        {
            // What was sent goes out, then the publisher stops.
            drop(tx);
            let _ = sender.await;
            let _ = deps.rooms.command(Command::Leave { session }).await;
            tracing::info!(task = %self.task, %room, "output no longer pushed back into the room");
        }
        // Closing the queues lets targets and HLS finish in order.
        self.targets.clear();
        if let Some(h) = self.hls.take() {
            h.finish();
        }
        if let Some(l) = self.ladder.take() {
            l.finish().await;
        }
        if let Some(r) = self.recorder.take() {
            r.finish().await;
        }
        status.publish(RelayStatus {
            state: TaskState::Stopped(reason),
            frames: self.frames,
            targets,
            transcoding: transcoding.to_vec(),
            ..RelayStatus::waiting()
        });
    }
}
