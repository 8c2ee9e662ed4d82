//! A mix relay task: every anchor of the room composed into one stream.
//!
//! Anchors are found in the media hub as they publish: the task watches the
//! hub's publisher set and reads it again on every change (entry order is
//! the order they started). Each anchor gets a forwarding task that feeds
//! the mix thread and says when the anchor stopped. The mix's output goes
//! to the same outputs as a passthrough relay. The task stops when asked,
//! when the room closes, or after `max_idle` without any anchor (a deadline,
//! not a poll); its status is published every 200 ms.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::task::{Deps, Relay, RelaySpec, RelayStatus};
use crate::media::MediaMessage;
use crate::mix::pipeline::{MixHandle, MixInput};
use crate::room::{EventKind, UserId};
use std::sync::Arc;

pub(super) async fn run(
    spec: RelaySpec,
    deps: Deps,
    mut control: mpsc::Receiver<super::Control>,
    status: watch::Sender<RelayStatus>,
) {
    let Some(settings) = spec.mix.clone() else {
        Relay::new(&spec, &deps)
            .finish("neither an anchor nor a mix".into(), &status)
            .await;
        return;
    };
    let mut events = deps.rooms.subscribe();
    let mut relay = Relay::new(&spec, &deps);
    let has_video = settings.video.is_some();
    let mut mixer = MixHandle::spawn(settings);
    let feedback = enter_feedback_rooms(&spec, &deps, has_video, &mut relay).await;
    let mut inputs = Inputs::default();
    let mut publishers = deps.hub.watch_publishers();
    // Anchors already publishing are found on the first turn.
    publishers.mark_changed();
    let (left_tx, mut left) = mpsc::unbounded_channel();
    let mut idle_since = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tracing::info!(task = %spec.id, room = %spec.room, stream = %spec.stream, "mix task started");

    let reason = loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(super::Control::SetTargets(urls)) => relay.set_targets(&urls),
                Some(super::Control::SetLayout(l)) => {
                    tracing::info!(task = %spec.id, mode = ?l.mode, "mix layout updated");
                    mixer.set_layout(l);
                }
                Some(super::Control::SetVolume(user, level)) => mixer.set_volume(user.as_str(), level),
                Some(super::Control::SetAudioFilter(f)) => mixer.set_audio_filter(f),
                Some(super::Control::RestartMix(settings)) => {
                    tracing::info!(task = %spec.id, "mix restarting with new encodings");
                    inputs.clear();
                    mixer = MixHandle::spawn(*settings);
                    // Output time continues after the last frame; players see a discontinuity.
                    relay.rebaser.reattach();
                    if let Some(h) = relay.hls.as_mut() {
                        h.discontinuity();
                    }
                    if let Some(r) = relay.recorder.as_mut() {
                        r.discontinuity();
                    }
                    inputs.discover(&spec, &deps, &mixer, &left_tx);
                }
                Some(super::Control::Stop) | None => break "stopped by request".to_owned(),
            },
            m = mixer.out.recv() => match m {
                Some(m) => match &*m {
                    MediaMessage::Frame(f) => {
                        let f = super::task::rebase(&mut relay.rebaser, f);
                        relay.emit(&Arc::new(MediaMessage::Frame(f)));
                    }
                    MediaMessage::Config(_) => relay.emit(&m),
                },
                None => break "the mix stopped (see the error above)".to_owned(),
            },
            ev = events.recv() => match ev {
                Ok(ev) if ev.room == spec.room => {
                    if let EventKind::RoomClosed { reason } = &ev.kind {
                        break format!("room closed ({})", reason.as_str());
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break "shutting down".to_owned(),
            },
            r = publishers.changed() => {
                if r.is_err() {
                    break "shutting down".to_owned();
                }
                inputs.discover(&spec, &deps, &mixer, &left_tx);
                if !inputs.is_empty() {
                    idle_since = tokio::time::Instant::now();
                }
            }
            Some((user, id)) = left.recv() => {
                if inputs.remove(&user, id) {
                    tracing::info!(task = %spec.id, user = %user, "anchor left the mix");
                    // It may already be publishing again.
                    inputs.discover(&spec, &deps, &mixer, &left_tx);
                    if inputs.is_empty() {
                        idle_since = tokio::time::Instant::now();
                    }
                }
            }
            () = tokio::time::sleep_until(idle_since + spec.max_idle), if inputs.is_empty() => {
                break format!("no input for {:?}", spec.max_idle);
            }
            _ = tick.tick() => {
                let mut report = relay.report();
                report.attached = !inputs.is_empty();
                report.state = if inputs.is_empty() { super::TaskState::Waiting } else { super::TaskState::Running };
                let _ = status.send(report);
            }
        }
    };
    inputs.clear();
    drop(mixer);
    relay.feedback.clear();
    for (session, room) in feedback {
        let _ = deps
            .rooms
            .command(crate::room::Command::Leave { session })
            .await;
        tracing::info!(task = %spec.id, %room, "mix no longer pushed back into the room");
    }
    relay.finish(reason, &status).await;
}

/// Enters every FeedBackRoomParams room as its robot (an anchor) and
/// publishes the mix there; a room that refuses is logged and skipped.
async fn enter_feedback_rooms(
    spec: &RelaySpec,
    deps: &Deps,
    has_video: bool,
    relay: &mut Relay,
) -> Vec<(crate::room::SessionId, crate::room::RoomKey)> {
    use crate::room::{Command, Enter, Role, Scene, TrackKind};
    let mut entered = Vec::new();
    for f in &spec.feedback {
        let session = deps.rooms.new_session();
        let unix_now = crate::unix_now();
        let enter = Command::Enter(Enter {
            room: f.room.clone(),
            user: f.user.clone(),
            session,
            role: Role::Anchor,
            scene: Scene::Live,
            hidden: false,
            grant: f.grant.clone(),
            unix_now,
        });
        if let Err(e) = deps.rooms.command(enter).await {
            tracing::warn!(task = %spec.id, room = %f.room, user = %f.user, "mix cannot be pushed back into the room: {e}");
            continue;
        }
        relay
            .feedback
            .push(deps.hub.publish(f.room.clone(), f.user.clone()));
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
        tracing::info!(task = %spec.id, room = %f.room, user = %f.user, "mix pushed back into the room");
        entered.push((session, f.room.clone()));
    }
    entered
}

/// The anchors being mixed: each one's forwarding task and its number, so a
/// forwarder that ends after its anchor came back is not mistaken for the
/// new one.
#[derive(Default)]
struct Inputs {
    running: HashMap<UserId, (u64, JoinHandle<()>)>,
    next: u64,
}

impl Inputs {
    fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts forwarding every anchor of the room that is not mixed yet.
    fn discover(
        &mut self,
        spec: &RelaySpec,
        deps: &Deps,
        mixer: &MixHandle,
        left: &mpsc::UnboundedSender<(UserId, u64)>,
    ) {
        for user in deps.hub.publishers_in(&spec.room) {
            if self.running.contains_key(&user) {
                continue;
            }
            // The mix pushed back into its own room is not mixed again.
            if spec
                .feedback
                .iter()
                .any(|f| f.room == spec.room && f.user == user)
            {
                continue;
            }
            if let Some(sub) = deps.hub.subscribe(&spec.room, &user) {
                tracing::info!(task = %spec.id, user = %user, "anchor joined the mix");
                let input = mixer.input(user.as_str());
                self.next += 1;
                let id = self.next;
                let left = left.clone();
                let who = user.clone();
                let task = tokio::spawn(async move {
                    forward(sub, input).await;
                    let _ = left.send((who, id));
                });
                self.running.insert(user, (id, task));
            }
        }
    }

    /// Forgets `user`'s forwarder number `id` (it ended); `false` if that
    /// forwarder was already replaced or cleared.
    fn remove(&mut self, user: &UserId, id: u64) -> bool {
        if self.running.get(user).is_some_and(|(i, _)| *i == id) {
            self.running.remove(user);
            true
        } else {
            false
        }
    }

    /// Stops every forwarder.
    fn clear(&mut self) {
        for (_, (_, h)) in self.running.drain() {
            h.abort();
        }
    }
}

/// Feeds one anchor's messages into the mix until it stops publishing.
async fn forward(mut sub: crate::media::hub::Subscription, mut input: MixInput) {
    for c in [&sub.configs.video, &sub.configs.audio]
        .into_iter()
        .flatten()
    {
        input.offer(&std::sync::Arc::new(crate::media::MediaMessage::Config(
            c.clone(),
        )));
    }
    // The mixer's decoder starts at a keyframe.
    sub.request_keyframe();
    loop {
        match sub.messages.recv().await {
            Ok(m) => input.offer(&m),
            Err(RecvError::Lagged(_)) => {
                input.lost();
                sub.request_keyframe();
            }
            Err(RecvError::Closed) => return,
        }
    }
}
