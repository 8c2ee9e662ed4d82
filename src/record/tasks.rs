//! Cloud recording tasks (TRTC CreateCloudRecording): a mixed recording is
//! one mix relay whose only output is the recorder; a single-stream
//! recording follows the room and records each publishing anchor (or the
//! subscribed ones) through its own passthrough relay. All files of a task
//! go to `<data_dir>/recordings/<TaskId>/` and are listed together.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::upload::{Destination, UploadState};
use super::uploader::Uploads;
use super::{
    FileList, RecordTarget, RecordedFile, RecordingEvent, RecordingEventKind, RecordingEvents,
};
use crate::media::hub::MediaHub;
use crate::profile::{RecordOutput, RelayProfile};
use crate::relay::{OutputSpec, RelayError, RelayManager, RelaySpec, RelayStatus, TaskState};

/// How long a stopping recording waits for its relays to close their files.
const FINISH_WITHIN: Duration = Duration::from_secs(10);

fn is_stopped(st: &RelayStatus) -> bool {
    matches!(st.state, TaskState::Stopped(_))
}
use crate::room::{RoomKey, UserId};

/// Recording tasks at once.
const MAX_RECORDINGS: usize = 64;

/// Whose streams a single-stream recording takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// `None`: everyone.
    pub allow: Option<Vec<UserId>>,
    pub block: Vec<UserId>,
}

impl Subscription {
    fn admits(&self, u: &UserId) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(u)) && !self.block.contains(u)
    }
}

/// A recording started again on another cluster node, after its node died:
/// the same TaskId, and file names of its own (`<prefix>_r<part>`), so the
/// files the first node wrote and uploaded are never overwritten.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub id: String,
    /// How many times the task was started again (1 the first time).
    pub part: u32,
}

impl Resume {
    fn suffix(resume: Option<&Resume>) -> String {
        resume.map_or_else(String::new, |r| format!("_r{}", r.part))
    }
}

pub(crate) enum Mode {
    /// One file set per anchor, from the passthrough profile.
    Single {
        profile: Box<RelayProfile>,
        subscription: Subscription,
    },
    /// The mix of the room, from a mix task spec.
    Mixed(Box<RelaySpec>),
}

struct Task {
    room: RoomKey,
    files: FileList,
    relays: Arc<Mutex<Vec<String>>>,
    subscription: Arc<Mutex<Subscription>>,
    /// Woken when the subscription lists change.
    resubscribed: Arc<Notify>,
    mixed: bool,
    stop: Arc<Notify>,
    /// Turns true once the task ended and its files are closed (also the
    /// uploads' cue).
    ended: watch::Receiver<bool>,
}

/// How a recording task says it ended: the flag the task list and the
/// uploads watch, then its 302 callback.
#[derive(Clone)]
struct Ended {
    tx: watch::Sender<bool>,
    room: RoomKey,
    task: String,
    user: String,
}

impl Ended {
    fn announce(&self, recordings: &Recordings, leave_code: u32) {
        let _ = self.tx.send(true);
        recordings.emit(
            &self.room,
            &self.task,
            &self.user,
            RecordingEventKind::RecorderStop { leave_code },
        );
    }
}

/// What DescribeCloudRecording reports.
pub(crate) struct Described {
    /// `Idle` (nothing recorded yet), `InProgress`, `Exited`.
    pub status: &'static str,
    /// Each file, and its upload state when the task uploads.
    pub files: Vec<(RecordedFile, Option<UploadState>)>,
}

/// A recording's id while it is being started.
struct Starting(Arc<Mutex<HashSet<String>>>, String);

impl Drop for Starting {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

#[derive(Clone)]
pub(crate) struct Recordings {
    relays: RelayManager,
    hub: MediaHub,
    tasks: Arc<Mutex<HashMap<String, Task>>>,
    /// Tasks being started: a second resume of one (a cluster node adopting
    /// a room twice at once) finds it here and starts nothing.
    starting: Arc<Mutex<HashSet<String>>>,
    uploads: Uploads,
    events: RecordingEvents,
}

impl Recordings {
    pub(crate) fn new(
        relays: RelayManager,
        hub: MediaHub,
        uploads: Uploads,
        events: RecordingEvents,
    ) -> Recordings {
        Recordings {
            relays,
            hub,
            tasks: Arc::default(),
            starting: Arc::default(),
            uploads,
            events,
        }
    }

    fn emit(&self, room: &RoomKey, task: &str, user: &str, kind: RecordingEventKind) {
        let _ = self.events.send(RecordingEvent {
            room: room.clone(),
            task: task.to_owned(),
            user: user.to_owned(),
            at_ms: crate::unix_now_ms(),
            kind,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a recording; with `storage`, its files are uploaded there as
    /// they close.
    pub(crate) fn start(
        &self,
        (room, recorder): (RoomKey, &str),
        mode: Mode,
        output: RecordOutput,
        max_idle: Duration,
        storage: Option<Destination>,
        resume: Option<Resume>,
    ) -> Result<String, RelayError> {
        let recorder = recorder.to_owned();
        let suffix = Resume::suffix(resume.as_ref());
        let id = resume.map_or_else(|| format!("rec-{}", new_id()), |r| r.id);
        // A task that runs here already, or is being started here (a second
        // resume of it at once), is not started twice.
        let _starting = {
            let tasks = self.lock();
            let running = tasks.values().filter(|t| !*t.ended.borrow()).count();
            if running >= MAX_RECORDINGS {
                return Err(RelayError::TooMany(MAX_RECORDINGS));
            }
            let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
            if tasks.get(&id).is_some_and(|t| !*t.ended.borrow()) || !starting.insert(id.clone()) {
                tracing::info!(task = %id, "cloud recording runs here already; not started again");
                return Ok(id);
            }
            Starting(self.starting.clone(), id.clone())
        };
        let files = FileList::default();
        let relays = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(Notify::new());
        let (ended_tx, ended_rx) = watch::channel(false);
        let ended = Ended {
            tx: ended_tx,
            room: room.clone(),
            task: id.clone(),
            user: recorder.clone(),
        };
        // Relative: the relay puts it under the recordings root.
        let dir = PathBuf::from(&id);
        let subscription = Arc::new(Mutex::new(Subscription::default()));
        let resubscribed = Arc::new(Notify::new());
        let mixed = match mode {
            Mode::Mixed(mut spec) => {
                spec.max_idle = max_idle;
                spec.stream = format!("{id}-mix");
                // The recorder is the only output.
                spec.outputs = OutputSpec {
                    record: Some(RecordTarget {
                        dir: dir.clone(),
                        prefix: format!("mix{suffix}"),
                        user: None,
                        output,
                        files: files.clone(),
                    }),
                    ..OutputSpec::default()
                };
                let relay = self.relays.start(*spec)?;
                let this = self.clone();
                let stop2 = stop.clone();
                let status = self.relays.watch(&relay);
                relays
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(relay.clone());
                let ended = ended.clone();
                tokio::spawn(async move {
                    let leave_code = this.watch_mixed(relay, status, stop2).await;
                    ended.announce(&this, leave_code);
                });
                true
            }
            Mode::Single {
                profile,
                subscription: wanted,
            } => {
                *subscription.lock().unwrap_or_else(|p| p.into_inner()) = wanted;
                let this = self.clone();
                let ctx = SingleCtx {
                    id: id.clone(),
                    room: room.clone(),
                    profile: *profile,
                    output,
                    max_idle,
                    dir,
                    suffix,
                    files: files.clone(),
                    relays: relays.clone(),
                    subscription: subscription.clone(),
                };
                let stop2 = stop.clone();
                let resubscribed2 = resubscribed.clone();
                let ended = ended.clone();
                tokio::spawn(async move {
                    let leave_code = this.watch_single(ctx, stop2, resubscribed2).await;
                    ended.announce(&this, leave_code);
                });
                false
            }
        };
        let uploading = storage.is_some();
        self.emit(&room, &id, &recorder, RecordingEventKind::RecorderStart);
        if let Some(dest) = storage {
            self.uploads.start(
                &id,
                (&room, &recorder),
                dest,
                files.clone(),
                ended_rx.clone(),
            );
        }
        tracing::info!(task = %id, %room, mixed, uploading, "cloud recording started");
        self.lock().insert(
            id.clone(),
            Task {
                room: room.clone(),
                files,
                relays,
                subscription,
                resubscribed,
                mixed,
                stop,
                ended: ended_rx,
            },
        );
        Ok(id)
    }

    /// Waits for the mix relay to stop (or for DeleteCloudRecording, then
    /// stops it and waits).
    /// Follows a mixed recording to its end; the 302 LeaveCode (0 stopped,
    /// 99 ended by itself: nobody to record for its idle time).
    async fn watch_mixed(
        &self,
        relay: String,
        status: Option<watch::Receiver<RelayStatus>>,
        stop: Arc<Notify>,
    ) -> u32 {
        let Some(mut status) = status else { return 0 };
        tokio::select! {
            () = stop.notified() => {
                let _ = self.relays.stop(&relay);
            }
            _ = status.wait_for(is_stopped) => return 99,
        }
        let _ = crate::ticks::timeout(FINISH_WITHIN, status.wait_for(is_stopped)).await;
        0
    }

    fn is_stopped(&self, relay: &str) -> bool {
        self.relays
            .status(relay)
            .is_none_or(|(_, st)| is_stopped(&st))
    }

    /// Keeps one passthrough relay per admitted publishing anchor: reacts to
    /// the room's publishers, the subscription lists and relays stopping;
    /// ends after `max_idle` with nothing recorded, or when asked.
    /// Follows a single-stream recording to its end; the 302 LeaveCode.
    async fn watch_single(
        &self,
        ctx: SingleCtx,
        stop: Arc<Notify>,
        resubscribed: Arc<Notify>,
    ) -> u32 {
        let mut by_user: HashMap<UserId, String> = HashMap::new();
        let mut publishers = self.hub.watch_room(&ctx.room);
        let mut relays = self.relays.watch_changes();
        let mut idle_since = tokio::time::Instant::now();
        let stopping = loop {
            let sub = ctx
                .subscription
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let now = publishers.borrow_and_update().clone();
            relays.borrow_and_update();
            for (user, _) in now.iter() {
                if !sub.admits(user) {
                    continue;
                }
                if by_user.get(user).is_some_and(|r| !self.is_stopped(r)) {
                    continue;
                }
                match self.start_single(&ctx, user, by_user.len()) {
                    Ok(relay) => {
                        ctx.relays
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(relay.clone());
                        by_user.insert(user.clone(), relay);
                    }
                    Err(e) => tracing::warn!(task = %ctx.id, %user, "recording: {e}"),
                }
            }
            // Unsubscribed users stop being recorded.
            for (user, relay) in &by_user {
                if !sub.admits(user) {
                    let _ = self.relays.stop(relay);
                }
            }
            let running = by_user.values().any(|r| !self.is_stopped(r));
            if running {
                idle_since = tokio::time::Instant::now();
            }
            tokio::select! {
                () = stop.notified() => break true,
                () = resubscribed.notified() => {}
                r = publishers.changed() => if r.is_err() { break false },
                r = relays.changed() => if r.is_err() { break false },
                () = crate::ticks::sleep_until(idle_since + ctx.max_idle), if !running => break false,
            }
        };
        if stopping {
            for relay in by_user.values() {
                let _ = self.relays.stop(relay);
            }
        }
        // Files are complete once every relay has finished.
        let deadline = tokio::time::Instant::now() + FINISH_WITHIN;
        for relay in by_user.values() {
            if let Some(mut st) = self.relays.watch(relay) {
                let _ = crate::ticks::timeout_at(deadline, st.wait_for(is_stopped)).await;
            }
        }
        tracing::info!(task = %ctx.id, "cloud recording ended");
        if stopping { 0 } else { 99 }
    }

    fn start_single(&self, ctx: &SingleCtx, user: &UserId, n: usize) -> Result<String, RelayError> {
        let mut spec = RelaySpec::for_anchor(ctx.room.clone(), user.clone(), &ctx.profile)?;
        spec.max_idle = ctx.max_idle;
        spec.stream = format!("{}-{n}", ctx.id);
        // The recorder is the only output.
        spec.outputs = OutputSpec {
            record: Some(RecordTarget {
                dir: ctx.dir.clone(),
                prefix: format!("{}{}", user.as_str(), ctx.suffix),
                user: Some(user.as_str().to_owned()),
                output: ctx.output.clone(),
                files: ctx.files.clone(),
            }),
            ..OutputSpec::default()
        };
        self.relays.start(spec)
    }

    /// Ends a task (DeleteCloudRecording); `false` if unknown or ended.
    pub(crate) fn stop(&self, app: u64, id: &str) -> bool {
        let tasks = self.lock();
        match tasks.get(id) {
            Some(t) if t.room.app == app && !*t.ended.borrow() => {
                t.stop.notify_one();
                true
            }
            _ => false,
        }
    }

    pub(crate) fn describe(&self, app: u64, id: &str) -> Option<Described> {
        let tasks = self.lock();
        let t = tasks.get(id).filter(|t| t.room.app == app)?;
        let files = t
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|f| (f.clone(), self.uploads.state(id, &f.name)))
            .collect();
        let recording = t
            .relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|r| self.relays.status(r).is_some_and(|(_, st)| st.attached));
        let status = if *t.ended.borrow() {
            "Exited"
        } else if recording {
            "InProgress"
        } else {
            // Waiting for an anchor to record.
            "Idle"
        };
        Some(Described { status, files })
    }

    /// The application of every running recording (metrics).
    pub(crate) fn running_apps(&self) -> Vec<u64> {
        self.lock()
            .values()
            .filter(|t| !*t.ended.borrow())
            .map(|t| t.room.app)
            .collect()
    }

    /// Every task this node knows: its id, room and whether it still runs.
    pub(crate) fn list(&self) -> Vec<(String, RoomKey, bool)> {
        self.lock()
            .iter()
            .map(|(id, t)| (id.clone(), t.room.clone(), !*t.ended.borrow()))
            .collect()
    }

    /// The mix relay of a running mixed recording.
    pub(crate) fn mix_relay(&self, app: u64, id: &str) -> Option<String> {
        let tasks = self.lock();
        let t = tasks
            .get(id)
            .filter(|t| t.room.app == app && t.mixed && !*t.ended.borrow())?;
        t.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .cloned()
    }

    /// New subscription lists of a running single-stream recording.
    pub(crate) fn set_subscription(&self, app: u64, id: &str, sub: Subscription) -> bool {
        let tasks = self.lock();
        match tasks.get(id) {
            Some(t) if t.room.app == app && !t.mixed && !*t.ended.borrow() => {
                *t.subscription.lock().unwrap_or_else(|p| p.into_inner()) = sub;
                t.resubscribed.notify_one();
                true
            }
            _ => false,
        }
    }
}

struct SingleCtx {
    id: String,
    room: RoomKey,
    profile: RelayProfile,
    output: RecordOutput,
    max_idle: Duration,
    dir: PathBuf,
    /// `_r<part>` on a resumed task, else empty.
    suffix: String,
    files: FileList,
    relays: Arc<Mutex<Vec<String>>>,
    subscription: Arc<Mutex<Subscription>>,
}

fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RecordFormat;
    use crate::room::testing;

    fn recordings() -> (Recordings, RecordingEvents, PathBuf) {
        let (rooms, _task) = crate::room::spawn(&testing::config());
        let dir = std::env::temp_dir().join(format!(
            "roomcast-record-tasks-{}-{}",
            std::process::id(),
            new_id()
        ));
        let hub = MediaHub::default();
        let relays = RelayManager::new(
            rooms,
            hub.clone(),
            dir.join("hls"),
            crate::hls::store::HlsStore::default(),
            1.0,
        );
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let uploads = Uploads::new(&dir, Default::default(), events.clone());
        (
            Recordings::new(relays, hub, uploads, events.clone()),
            events,
            dir,
        )
    }

    fn resume_once(r: &Recordings, id: &str) -> Result<String, RelayError> {
        let profile = crate::profile::load_all(None)
            .unwrap()
            .into_iter()
            .find(|p| p.name == "passthrough")
            .unwrap();
        r.start(
            (testing::lesson(), "recorder"),
            Mode::Single {
                profile: Box::new(profile),
                subscription: Subscription::default(),
            },
            RecordOutput {
                format: RecordFormat::Mp4,
                max_file_minutes: 60,
            },
            Duration::from_secs(60),
            None,
            Some(Resume {
                id: id.into(),
                part: 2,
            }),
        )
    }

    /// A cluster node may adopt a room twice at once (its lease, and its
    /// scan for orphaned tasks): the task it resumes must run once, the one
    /// the registry describes and stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_resumed_twice_at_once_runs_once() {
        let (r, events, dir) = recordings();
        let mut seen = events.subscribe();
        let handle = tokio::runtime::Handle::current();
        const ROUNDS: usize = 50;
        // Each round, four starts of one task released together.
        for round in 0..ROUNDS {
            let id = format!("rec-resumed-{round}");
            let go = std::sync::Barrier::new(4);
            let ids: Vec<String> = std::thread::scope(|s| {
                let starts: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            let _in = handle.enter();
                            go.wait();
                            resume_once(&r, &id).unwrap()
                        })
                    })
                    .collect();
                starts.into_iter().map(|t| t.join().unwrap()).collect()
            });
            assert!(ids.iter().all(|i| *i == id), "{ids:?}");
            // And once more, after: it runs here already.
            assert_eq!(resume_once(&r, &id).unwrap(), id);
        }
        let mut started = 0;
        while let Ok(e) = seen.try_recv() {
            if matches!(e.kind, RecordingEventKind::RecorderStart) {
                started += 1;
            }
        }
        assert_eq!(started, ROUNDS, "recorder start events");
        assert_eq!(r.list().len(), ROUNDS);
        assert!(r.starting.lock().unwrap().is_empty());
        // The one that runs is the one stopped; ended, it may start again.
        assert!(r.stop(testing::APP, "rec-resumed-0"));
        let mut ended = r.lock()["rec-resumed-0"].ended.clone();
        crate::ticks::timeout(Duration::from_secs(10), ended.wait_for(|e| *e))
            .await
            .expect("the recording ends when stopped")
            .unwrap();
        assert_eq!(resume_once(&r, "rec-resumed-0").unwrap(), "rec-resumed-0");
        let mut again = 0;
        while let Ok(e) = seen.try_recv() {
            again += usize::from(matches!(e.kind, RecordingEventKind::RecorderStart));
        }
        assert_eq!(again, 1, "started again once ended");
        let _ = std::fs::remove_dir_all(dir);
    }
}
