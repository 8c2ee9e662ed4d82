//! Pulling an online stream into a room (TRTC's StartStreamIngest): a
//! robot user enters the room as an anchor and publishes what libavformat
//! reads from an RTMP, HLS, HTTP-FLV or MP4 URL, so relay tasks and mixes
//! see it like any anchor.
//!
//! `source` is the blocking reader (its own thread); this module owns the
//! tasks: room entry and exit, the hand-off to the media hub, stop requests,
//! and the end of the task when the room ends the robot's session.

pub(crate) mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;

use crate::media::MediaMessage;
use crate::media::hub::MediaHub;
use crate::room::{
    Command, Enter, EventKind, Grant, Role, RoomHandle, RoomKey, Scene, SessionId, TrackKind,
    UserId,
};
pub(crate) use source::PullSettings;

/// Pull tasks running at once.
const MAX_PULLS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PullStartError {
    #[error("{0} pull tasks are running already")]
    TooMany(usize),
    #[error("{0} is already in a pull task of this room")]
    Exists(UserId),
    #[error("{0}")]
    Refused(String),
}

/// A running pull, as the API sees it.
#[derive(Debug, Clone)]
pub(crate) struct PullInfo {
    pub room: RoomKey,
    pub user: UserId,
    /// The source URL without its query (stream keys, tokens).
    pub source: String,
}

struct Entry {
    info: PullInfo,
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

/// An ingest's hold on its table entry (from the moment its start takes
/// it), its reader and its robot. The entry goes when the start goes no
/// further or the task ends, however it ends. A task that dies
/// before its end (a panic, or dropped with the runtime as the gateway
/// stops: still `armed`) also stops its reader and takes its robot out of
/// the room, so the same anchor can be pulled again.
struct Held {
    pulls: PullManager,
    task: String,
    session: SessionId,
    stop: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.pulls.lock().remove(&self.task);
        if !self.armed {
            return;
        }
        crate::panics::unfinished!(
            "stream ingest",
            "its robot leaves the room",
            task = %self.task
        );
        self.stop.store(true, Ordering::Relaxed);
        self.pulls.rooms.end_detached(self.session, true);
    }
}

#[derive(Clone)]
pub(crate) struct PullManager {
    rooms: RoomHandle,
    hub: MediaHub,
    tasks: Arc<Mutex<HashMap<String, Entry>>>,
}

impl PullManager {
    pub(crate) fn new(rooms: RoomHandle, hub: MediaHub) -> PullManager {
        PullManager {
            rooms,
            hub,
            tasks: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters the room as `user` (an anchor) and starts reading. The UserSig
    /// was checked by the caller; `grant` is its PrivateMapKey.
    pub(crate) async fn start(
        &self,
        room: RoomKey,
        user: UserId,
        grant: Option<Grant>,
        unix_now: u64,
        settings: PullSettings,
        id: Option<String>,
    ) -> Result<String, PullStartError> {
        let id = id.unwrap_or_else(task_id);
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        {
            let mut tasks = self.lock();
            if tasks.len() >= MAX_PULLS {
                return Err(PullStartError::TooMany(tasks.len()));
            }
            if tasks
                .values()
                .any(|e| e.info.room == room && e.info.user == user)
            {
                return Err(PullStartError::Exists(user));
            }
            // Taken now, before the room is asked: a second start for this
            // anchor meanwhile (a request, or a cluster node resuming the
            // task twice at once) is refused, not run beside this one.
            tasks.insert(
                id.clone(),
                Entry {
                    info: PullInfo {
                        room: room.clone(),
                        user: user.clone(),
                        source: redact(&settings.url).to_owned(),
                    },
                    stop: stop.clone(),
                    wake: wake.clone(),
                },
            );
        }
        let session = self.rooms.new_session();
        // Unarmed until the robot is in the room: a start that goes no
        // further (refused, or its caller gave up while the room was asked)
        // gives its entry back and nothing else.
        let mut held = Held {
            pulls: self.clone(),
            task: id.clone(),
            session,
            stop: stop.clone(),
            armed: false,
        };
        if self.hub.is_publishing(&room, &user) {
            return Err(PullStartError::Refused(format!(
                "{user} is already publishing in this room"
            )));
        }
        self.rooms
            .command(Command::Enter(Enter {
                room: room.clone(),
                user: user.clone(),
                session,
                role: Role::Anchor,
                scene: Scene::Live,
                hidden: false,
                grant,
                unix_now,
            }))
            .await
            .map_err(|e| PullStartError::Refused(e.to_string()))?;
        held.armed = true;
        let publisher =
            self.hub
                .publish(room.clone(), user.clone(), Some(crate::metrics::Edge::Pull));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<MediaMessage>(256);
        let url = redact(&settings.url);
        tracing::info!(task = %id, %room, %user, %url, "stream ingest started");
        let reader_stop = stop.clone();
        let reader = tokio::task::spawn_blocking(move || source::run(&settings, &reader_stop, &tx));
        let this = self.clone();
        let task = id.clone();
        tokio::spawn(async move {
            let mut held = held;
            let mut events = this.rooms.subscribe();
            let mut announced = [false; 2];
            // Why the task ended, and whether the robot must leave the room.
            let (why, leave) = loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => {
                            let kind = match &m {
                                MediaMessage::Config(c) => c.kind,
                                MediaMessage::Frame(f) => f.kind,
                            };
                            let slot = usize::from(kind == TrackKind::Video);
                            if !announced[slot] {
                                announced[slot] = true;
                                if let Err(e) = this.rooms.command(Command::Publish { session, kind }).await {
                                    break (format!("the room refused the {kind:?} track: {e}"), true);
                                }
                            }
                            publisher.send(m);
                        }
                        None => break (String::new(), true),
                    },
                    () = wake.notified() => break ("stopped by request".to_owned(), true),
                    ev = events.recv() => match ev {
                        Ok(ev) if ev.is_for(&room, session) => match &ev.kind {
                            EventKind::SessionReplaced { .. } => break ("replaced by a new session".to_owned(), false),
                            EventKind::SessionEnded { reason, .. } => break (reason.as_str().to_owned(), false),
                            EventKind::RoomClosed { .. } => break ("room closed".to_owned(), false),
                            _ => {}
                        },
                        // Events were missed: ask whether ours was among them.
                        Err(RecvError::Lagged(_)) => {
                            if !this.rooms.has_session(session).await {
                                break ("its session ended while its room events were missed".to_owned(), false);
                            }
                        }
                        Ok(_) => {}
                        Err(RecvError::Closed) => break ("shutting down".to_owned(), false),
                    },
                }
            };
            held.armed = false;
            // A stop asked for may reach the reader first: it ends, its
            // queue closes, and that is what this loop saw.
            let requested = stop.swap(true, Ordering::Relaxed);
            drop(rx);
            let why = match reader.await {
                _ if !why.is_empty() => why,
                _ if requested => "stopped by request".to_owned(),
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    tracing::warn!(%task, "stream ingest failed: {e}");
                    e.to_string()
                }
                Err(e) => format!("reader: {e}"),
            };
            tracing::info!(%task, %room, %user, "stream ingest ended: {why}");
            drop(publisher);
            if leave {
                let _ = this.rooms.command(Command::Leave { session }).await;
            }
            // Dropping `held` takes the entry out of the table.
        });
        Ok(id)
    }

    /// Asks a task to stop; `None` if it does not exist (or already ended).
    pub(crate) fn stop(&self, id: &str) -> Option<PullInfo> {
        let tasks = self.lock();
        let e = tasks.get(id)?;
        e.stop.store(true, Ordering::Relaxed);
        e.wake.notify_one();
        Some(e.info.clone())
    }

    pub(crate) fn get(&self, id: &str) -> Option<PullInfo> {
        self.lock().get(id).map(|e| e.info.clone())
    }

    /// Every running pull, by task id (status).
    pub(crate) fn list(&self) -> Vec<(String, PullInfo)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, e)| (id.clone(), e.info.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The application of every running pull (metrics).
    pub(crate) fn running_apps(&self) -> Vec<u64> {
        self.lock().values().map(|e| e.info.room.app).collect()
    }
}

/// The URL without its query (stream keys, tokens) for logs.
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn task_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut b);
    format!("ingest-{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::testing::{Anchor, config, panic_holding};

    /// An ingest task that dies inside (its hold dropped armed, as a panic
    /// drops it) stops its reader, takes its robot out of the room and its
    /// entry out of the table.
    #[tokio::test]
    async fn an_ingest_task_that_dies_leaves_nothing_behind() {
        let a = Anchor::enter(&config(), "robot").await;
        let pulls = PullManager::new(a.rooms.clone(), MediaHub::default());
        let stop = Arc::new(AtomicBool::new(false));
        pulls.lock().insert(
            "pull-1".into(),
            Entry {
                info: PullInfo {
                    room: a.room.clone(),
                    user: a.user.clone(),
                    source: "rtmp://origin/live/s".into(),
                },
                stop: stop.clone(),
                wake: Arc::default(),
            },
        );
        let held = Held {
            pulls: pulls.clone(),
            task: "pull-1".into(),
            session: a.session,
            stop: stop.clone(),
            armed: true,
        };
        panic_holding(held).await;
        assert!(stop.load(Ordering::Relaxed), "the reader was told to stop");
        assert!(pulls.get("pull-1").is_none(), "its entry left the table");
        a.wait_connected(None, "the robot did not leave the room")
            .await;
    }

    fn unreadable() -> PullSettings {
        PullSettings {
            url: "/nonexistent/roomcast-pull-test.flv".into(),
            seek_secs: 0,
            plays: Some(1),
            max_duration: None,
        }
    }

    /// Two starts for one anchor at once (two requests, or a cluster node
    /// resuming one task twice): one runs, the other is refused, and its
    /// reservation does not outlive it.
    #[tokio::test]
    async fn two_starts_for_one_anchor_at_once_run_one() {
        let a = Anchor::enter(&config(), "teacher").await;
        let pulls = PullManager::new(a.rooms.clone(), MediaHub::default());
        let robot = UserId::new("robot").unwrap();
        let start = |id: &str| {
            pulls.start(
                a.room.clone(),
                robot.clone(),
                None,
                crate::unix_now(),
                unreadable(),
                Some(id.to_owned()),
            )
        };
        let (first, second) = tokio::join!(start("ingest-a"), start("ingest-a"));
        let started = [&first, &second].iter().filter(|r| r.is_ok()).count();
        assert_eq!(started, 1, "{first:?} {second:?}");
        assert!(
            [&first, &second]
                .iter()
                .any(|r| matches!(r, Err(PullStartError::Exists(u)) if *u == robot)),
            "{first:?} {second:?}"
        );
        // The one that ran cannot read its source; it ends and its entry goes.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while pulls.get("ingest-a").is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ingest never ended"
            );
            crate::ticks::sleep(std::time::Duration::from_millis(10)).await;
        }
        // A start refused after its reservation (the anchor publishes
        // already) leaves nothing behind either.
        let hub = MediaHub::default();
        let pulls = PullManager::new(a.rooms.clone(), hub.clone());
        let _publishing = hub.publish(a.room.clone(), robot.clone(), None);
        let refused = pulls
            .start(
                a.room.clone(),
                robot.clone(),
                None,
                crate::unix_now(),
                unreadable(),
                Some("ingest-b".into()),
            )
            .await;
        assert!(
            matches!(refused, Err(PullStartError::Refused(_))),
            "{refused:?}"
        );
        assert!(pulls.list().is_empty());
    }
}
