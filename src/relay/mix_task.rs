//! The mix driver: every anchor of the room composed into one stream.
//!
//! Anchors are found through the hub's watch of the room's publishers (entry
//! order is the order they started). Each anchor's publisher hands its
//! messages to the mix thread's queue in its own turn (a hub tap: no task
//! woken per message), and says when the anchor stopped. The mix's output
//! goes to the task's outputs like a passthrough's. The task stops when
//! asked, when the room closes, or after `max_idle` without any anchor (a
//! deadline, not a poll); its counters are refreshed every 200 ms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::outputs::{Deps, Outputs};
use super::spec::RelaySpec;
use super::status::{Rates, StatusTx};
use super::{Control, MixControl};
use crate::media::MediaMessage;
use crate::media::hub::{Configs, RoomPublishers, Tap, TapGuard};
use crate::mix::pipeline::{MixCounters, MixHandle, MixInput, MixSettings};
use crate::room::UserId;

pub(super) async fn run(
    spec: RelaySpec,
    settings: MixSettings,
    deps: Deps,
    mut control: mpsc::Receiver<Control<MixControl>>,
    status: StatusTx,
) {
    let mut out = Outputs::new(&spec, &deps);
    let has_video = settings.video.is_some();
    let mut mixer = MixHandle::spawn(settings);
    out.enter_feedback_rooms(&spec, &deps, has_video).await;
    let mut inputs = Inputs::default();
    let mut room = deps.rooms.watch_room(&spec.room).await;
    let mut room_seen = room.borrow_and_update().clone();
    let mut publishers = deps.hub.watch_room(&spec.room);
    // Anchors already publishing are found on the first turn.
    publishers.mark_changed();
    let (left_tx, mut left) = mpsc::unbounded_channel();
    let mut idle_since = tokio::time::Instant::now();
    let mut tick = crate::ticks::grid_interval(Duration::from_millis(200));
    let mut pictures = Pictures::default();
    tracing::info!(task = %spec.id, room = %spec.room, stream = %spec.stream, "mix task started");

    let reason = loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::SetTargets(urls)) => out.set_targets(&urls),
                Some(Control::Input(MixControl::SetLayout(l))) => {
                    tracing::info!(task = %spec.id, mode = ?l.mode, "mix layout updated");
                    mixer.set_layout(l);
                }
                Some(Control::Input(MixControl::SetVolume(user, level))) => mixer.set_volume(user.as_str(), level),
                Some(Control::Input(MixControl::SetAudioFilter(f))) => mixer.set_audio_filter(f),
                Some(Control::Input(MixControl::Restart(settings))) => {
                    tracing::info!(task = %spec.id, "mix restarting with new encodings");
                    inputs.clear();
                    mixer = MixHandle::spawn(*settings);
                    pictures = Pictures::default();
                    // Output time continues after the last frame; players see a discontinuity.
                    out.discontinuity();
                    let now = publishers.borrow().clone();
                    inputs.discover(&spec, &now, &deps, &mixer, &left_tx);
                }
                Some(Control::Stop) | None => break "stopped by request".to_owned(),
            },
            m = mixer.out.recv() => match m {
                Some(m) => match &*m {
                    MediaMessage::Frame(_) => {
                        if let Some(m) = out.rebase(&m) {
                            out.emit(&m);
                        }
                    }
                    MediaMessage::Config(_) => {
                        // The encoders start every stream with a keyframe: nothing to ask.
                        out.emit(&m);
                    }
                },
                None => break "the mix stopped (see the error above)".to_owned(),
            },
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
            r = publishers.changed() => {
                if r.is_err() {
                    break "shutting down".to_owned();
                }
                // A copy of the list: the watch is not held while the hub is asked.
                let now = publishers.borrow_and_update().clone();
                inputs.discover(&spec, &now, &deps, &mixer, &left_tx);
                if !inputs.is_empty() {
                    idle_since = tokio::time::Instant::now();
                }
            }
            Some((user, id)) = left.recv() => {
                if inputs.remove(&user, id) {
                    tracing::info!(task = %spec.id, user = %user, "anchor left the mix");
                    // It may already be publishing again.
                    let now = publishers.borrow().clone();
                    inputs.discover(&spec, &now, &deps, &mixer, &left_tx);
                    if inputs.is_empty() {
                        idle_since = tokio::time::Instant::now();
                    }
                }
            }
            () = tokio::time::sleep_until(idle_since + spec.max_idle), if inputs.is_empty() => {
                break format!("no input for {:?}", spec.max_idle);
            }
            _ = tick.tick() => {
                let mut report = out.report(!inputs.is_empty(), &[], inputs.users());
                pictures.add(&mixer.counters, &mut report);
                status.publish(report);
            }
        }
    };
    inputs.clear();
    drop(mixer);
    out.finish(reason, &deps, &[], &status).await;
}

/// The mix's own figures in its task's status: distinct pictures per
/// second over recent reports, late ticks and skipped pictures.
#[derive(Default)]
struct Pictures {
    rate: Rates<1>,
}

impl Pictures {
    fn add(&mut self, counters: &MixCounters, report: &mut crate::relay::RelayStatus) {
        use std::sync::atomic::Ordering::Relaxed;
        let [fps] = self
            .rate
            .sample(std::time::Instant::now(), [counters.pictures.load(Relaxed)]);
        report.effective_fps = Some(fps as f32);
        report.late_ticks = counters.late_ticks.load(Relaxed);
        report.skipped_pictures = counters.skipped.load(Relaxed);
        report.latency = counters.latency();
    }
}

/// The anchors being mixed: each one's tap on its publisher and its
/// number, so a publisher that ends after its anchor came back is not
/// mistaken for the new one.
#[derive(Default)]
struct Inputs {
    running: HashMap<UserId, (u64, TapGuard)>,
    next: u64,
}

impl Inputs {
    fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The anchors being mixed, in the order they joined.
    fn users(&self) -> Vec<String> {
        let mut v: Vec<(u64, String)> = self
            .running
            .iter()
            .map(|(u, (id, _))| (*id, u.to_string()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, u)| u).collect()
    }

    /// Starts forwarding every anchor of the room that is not mixed yet.
    fn discover(
        &mut self,
        spec: &RelaySpec,
        publishers: &RoomPublishers,
        deps: &Deps,
        mixer: &MixHandle,
        left: &mpsc::UnboundedSender<(UserId, u64)>,
    ) {
        for (user, _) in publishers.iter() {
            if self.running.contains_key(user) {
                continue;
            }
            // The mix pushed back into its own room is not mixed again.
            if spec
                .outputs
                .feedback
                .iter()
                .any(|f| f.room == spec.room && f.user == *user)
            {
                continue;
            }
            let id = self.next + 1;
            let tap = Arc::new(Feed {
                input: Mutex::new(mixer.input(user.as_str())),
                left: left.clone(),
                who: (user.clone(), id),
            });
            if let Some(guard) = deps.hub.tap(&spec.room, user, tap) {
                tracing::info!(task = %spec.id, user = %user, "anchor joined the mix");
                self.next = id;
                self.running.insert(user.clone(), (id, guard));
            }
        }
    }

    /// Forgets `user`'s input number `id` (its publisher ended); `false` if
    /// that input was already replaced or cleared.
    fn remove(&mut self, user: &UserId, id: u64) -> bool {
        if self.running.get(user).is_some_and(|(i, _)| *i == id) {
            self.running.remove(user);
            true
        } else {
            false
        }
    }

    /// Detaches every input (each tells the mix it is gone).
    fn clear(&mut self) {
        self.running.clear();
    }
}

/// One anchor's way into the mix, run in its publisher's turn.
struct Feed {
    /// Locked only by the publisher's turn (and dropped with the tap).
    input: Mutex<MixInput>,
    left: mpsc::UnboundedSender<(UserId, u64)>,
    who: (UserId, u64),
}

impl Feed {
    fn input(&self) -> std::sync::MutexGuard<'_, MixInput> {
        // An offer that panicked left the input between messages.
        self.input.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tap for Feed {
    fn attached(&self, configs: &Configs, keyframe: &Arc<Notify>) {
        let mut input = self.input();
        for c in [&configs.video, &configs.audio].into_iter().flatten() {
            input.offer(&Arc::new(MediaMessage::Config(c.clone())));
        }
        // The mixer's decoder starts at a keyframe.
        keyframe.notify_one();
    }

    fn deliver(&self, m: &Arc<MediaMessage>) {
        self.input().offer(m);
    }

    fn closed(&self) {
        let _ = self.left.send(self.who.clone());
    }
}
