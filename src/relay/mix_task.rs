//! The mix driver: every anchor of the room composed into one stream.
//!
//! The task follows the room's publishers through the hub: each anchor's
//! publisher gets a feed into the mix as it registers, before its first
//! message, and hands its messages to the mix thread's queue in its own
//! turn (a hub tap: no task woken per message). The feed tells the task
//! when the anchor joined and when it stopped. The mix's output
//! goes to the task's outputs like a passthrough's. The task stops when
//! asked, when the room closes, or after `max_idle` without any anchor (a
//! deadline, not a poll); its counters are refreshed every 200 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::outputs::{Deps, Outputs};
use super::spec::RelaySpec;
use super::status::{Rates, StatusTx};
use super::{Control, MixControl};
use crate::media::MediaMessage;
use crate::media::hub::{Configs, FollowGuard, Start, Tap};
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
    let mut room = deps.rooms.watch_room(&spec.room).await;
    let mut room_seen = room.borrow_and_update().clone();
    let (news_tx, mut news) = mpsc::unbounded_channel();
    let mut anchors = Anchors::default();
    let mut following = Some(follow(&spec, &deps, &mixer, &news_tx));
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
                    // The feeds into the old mix go with it; the new mix
                    // gets new ones, for every anchor publishing now.
                    drop(following.take());
                    anchors.running.clear();
                    idle_since = tokio::time::Instant::now();
                    mixer = MixHandle::spawn(*settings);
                    pictures = Pictures::default();
                    // Output time continues after the last frame; players see a discontinuity.
                    out.discontinuity();
                    following = Some(follow(&spec, &deps, &mixer, &news_tx));
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
            Some(n) = news.recv() => match n {
                News::Joined(user, feed) => {
                    tracing::info!(task = %spec.id, user = %user, "anchor joined the mix");
                    anchors.running.push((user, feed));
                }
                News::Left(user, feed) => {
                    // A feed of the mix before a restart is not in the list.
                    if anchors.remove(&user, feed) {
                        tracing::info!(task = %spec.id, user = %user, "anchor left the mix");
                        if anchors.running.is_empty() {
                            idle_since = tokio::time::Instant::now();
                        }
                    }
                }
            },
            () = crate::ticks::sleep_until(idle_since + spec.max_idle), if anchors.running.is_empty() => {
                break format!("no input for {:?}", spec.max_idle);
            }
            _ = tick.tick() => {
                let mut report = out.report(!anchors.running.is_empty(), &[], anchors.users());
                pictures.add(&mixer.counters, &mut report);
                status.publish(report);
            }
        }
    };
    drop(following);
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

/// Follows the room's publishers for `mixer`: each anchor's publisher
/// gets a feed into the mix as it registers (or now, if it already
/// publishes), numbered apart from every other feed, those of the mix
/// before a restart included. The mix's own output fed back into its room
/// is not mixed again.
fn follow(
    spec: &RelaySpec,
    deps: &Deps,
    mixer: &MixHandle,
    news: &mpsc::UnboundedSender<News>,
) -> FollowGuard {
    let own: Vec<UserId> = spec
        .outputs
        .feedback
        .iter()
        .filter(|f| f.room == spec.room)
        .map(|f| f.user.clone())
        .collect();
    let inputs = mixer.inputs();
    let news = news.clone();
    static NUMBERS: AtomicU64 = AtomicU64::new(1);
    // An anchor already publishing is decoded from its last keyframe, so
    // it shows at once (`Feed::replayed`).
    deps.hub.follow_room(
        &spec.room,
        Start::LastKeyframe,
        Arc::new(move |user: &UserId| {
            if own.contains(user) {
                return None;
            }
            let feed: Arc<dyn Tap> = Arc::new(Feed {
                input: Mutex::new(inputs.input(user.as_str())),
                news: news.clone(),
                who: (user.clone(), NUMBERS.fetch_add(1, Ordering::Relaxed)),
            });
            Some(feed)
        }),
    )
}

/// What a feed tells its task: its anchor joined the mix, or its publisher
/// ended; with the feed's number, so a publisher that ends after its
/// anchor came back is not mistaken for the new one.
enum News {
    Joined(UserId, u64),
    Left(UserId, u64),
}

/// The anchors being mixed, with their feeds' numbers, in the order they
/// joined.
#[derive(Default)]
struct Anchors {
    running: Vec<(UserId, u64)>,
}

impl Anchors {
    fn users(&self) -> Vec<String> {
        self.running.iter().map(|(u, _)| u.to_string()).collect()
    }

    /// Forgets `user`'s feed number `feed`; `false` if that feed was not
    /// running (a feed of the mix before a restart).
    fn remove(&mut self, user: &UserId, feed: u64) -> bool {
        let before = self.running.len();
        self.running.retain(|(u, f)| !(u == user && *f == feed));
        self.running.len() != before
    }
}

/// One anchor's way into the mix, run in its publisher's turn.
struct Feed {
    /// Locked only by the publisher's turn (and dropped with the tap).
    input: Mutex<MixInput>,
    news: mpsc::UnboundedSender<News>,
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
        let _ = self.news.send(News::Joined(self.who.0.clone(), self.who.1));
    }

    fn deliver(&self, m: &Arc<MediaMessage>) {
        self.input().offer(m);
    }

    fn closed(&self) {
        let _ = self.news.send(News::Left(self.who.0.clone(), self.who.1));
    }

    fn replayed(&self, configs: &Configs, messages: &[Arc<MediaMessage>]) {
        // Its pictures since its last keyframe are decoded at once, not
        // played late; its sound from then is left out.
        if let Some(video) = &configs.video {
            self.input().catch_up(video, messages);
        }
    }
}
