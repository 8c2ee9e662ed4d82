//! The async shell around the room engine: one task owns `Rooms`.
//!
//! Callers send commands through a bounded channel and await the verdict;
//! the task sleeps until the engine's next timer; events go out on a
//! broadcast channel. No lock around the engine: only this task touches it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::engine::{RoomError, Rooms};
use super::event::{CloseReason, Command, EventKind, RoomEvent};
use super::ids::{RoomKey, SessionId, UserId};
use crate::config::Config;

/// Commands queued for the engine. Callers wait (backpressure) when full;
/// the engine handles a command in microseconds, so this only fills under
/// a flood, which then slows the callers, not the rooms.
const COMMAND_CAPACITY: usize = 1024;
/// Events buffered per subscriber. A subscriber that falls this far behind
/// (a stuck socket) is told it lagged and must resynchronise (signalling
/// sockets close; the client reconnects and gets a fresh room state).
const EVENT_CAPACITY: usize = 4096;

enum Request {
    Command {
        cmd: Command,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    HasSession {
        session: SessionId,
        reply: oneshot::Sender<bool>,
    },
    VisiblePublishers {
        reply: oneshot::Sender<Vec<(RoomKey, UserId)>>,
    },
    Stats {
        reply: oneshot::Sender<Vec<(u64, u64, u64, u64)>>,
    },
    Snapshot {
        reply: oneshot::Sender<Vec<super::engine::RoomView>>,
    },
    RoomKeys {
        reply: oneshot::Sender<Vec<RoomKey>>,
    },
    WatchRoom {
        room: RoomKey,
        reply: oneshot::Sender<watch::Receiver<RoomLife>>,
    },
    Shutdown,
}

/// A room's life as a watcher sees it ([`RoomHandle::watch_room`]). A watch
/// keeps only the latest value, so every opening has its number: a watcher
/// that was busy while the room closed and opened again still sees that the
/// opening it knew has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomLife {
    /// Not open, and not closed since the watch began.
    NotOpen,
    /// Open; the number tells this opening from the next.
    Open(u64),
    /// That opening closed, for this reason.
    Closed(u64, CloseReason),
}

impl RoomLife {
    /// Whether, for a watcher that saw `before`, the room has since
    /// closed; the reason as the logs and callbacks name it.
    pub(crate) fn closed_since(&self, before: &RoomLife) -> Option<&'static str> {
        match (before, self) {
            (RoomLife::Closed(a, _), RoomLife::Closed(b, _)) if a == b => None,
            (_, RoomLife::Closed(_, reason)) => Some(reason.as_str()),
            // Closed and opened again while the watcher was busy.
            (RoomLife::Open(a), RoomLife::Open(b)) if a != b => Some("closed, then opened again"),
            _ => None,
        }
    }
}

/// The shell's side of the room-life watches: one sender per open room and
/// per watched room; senders nobody watches are dropped once their room is
/// not open.
#[derive(Default)]
struct Lives {
    rooms: HashMap<RoomKey, watch::Sender<RoomLife>>,
    openings: u64,
}

impl Lives {
    fn on_event(&mut self, ev: &RoomEvent) {
        match &ev.kind {
            EventKind::RoomCreated { .. } => {
                self.openings += 1;
                let life = RoomLife::Open(self.openings);
                match self.rooms.get(&ev.room) {
                    Some(tx) => {
                        tx.send_replace(life);
                    }
                    None => {
                        self.rooms.insert(ev.room.clone(), watch::channel(life).0);
                    }
                }
            }
            EventKind::RoomClosed { reason } => {
                if let Some(tx) = self.rooms.get(&ev.room) {
                    let n = match *tx.borrow() {
                        RoomLife::Open(n) | RoomLife::Closed(n, _) => n,
                        RoomLife::NotOpen => 0,
                    };
                    tx.send_replace(RoomLife::Closed(n, *reason));
                    if tx.receiver_count() == 0 {
                        self.rooms.remove(&ev.room);
                    }
                }
            }
            _ => {}
        }
    }

    fn watch(&mut self, room: RoomKey) -> watch::Receiver<RoomLife> {
        // Forget rooms that are not open and that nobody watches any more.
        self.rooms
            .retain(|_, tx| matches!(*tx.borrow(), RoomLife::Open(_)) || tx.receiver_count() > 0);
        self.rooms
            .entry(room)
            .or_insert_with(|| watch::channel(RoomLife::NotOpen).0)
            .subscribe()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoomCallError {
    #[error(transparent)]
    Refused(#[from] RoomError),
    #[error("the room engine has stopped")]
    Stopped,
    /// The cluster placed the room on another node, or cannot place it.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A cheap, cloneable way to talk to the room engine task.
#[derive(Clone)]
pub(crate) struct RoomHandle {
    tx: mpsc::Sender<Request>,
    events: broadcast::Sender<Arc<RoomEvent>>,
    next_session: Arc<AtomicU64>,
    /// Set once at start on a cluster node: every entry checks that this
    /// node owns the room first.
    cluster: Arc<std::sync::OnceLock<Arc<crate::cluster::Cluster>>>,
}

impl RoomHandle {
    /// Makes this a cluster node's handle (once, at start).
    pub(crate) fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this node is part of, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// A fresh session id for a new connection.
    pub(crate) fn new_session(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// Applies a command; `Err(Refused)` means nothing changed.
    pub(crate) async fn command(&self, cmd: Command) -> Result<(), RoomCallError> {
        if let Command::Enter(e) = &cmd
            && let Some(cluster) = self.cluster.get()
        {
            cluster.ensure_owned(&e.room).await?;
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Command { cmd, reply })
            .await
            .map_err(|_| RoomCallError::Stopped)?;
        rx.await
            .map_err(|_| RoomCallError::Stopped)?
            .map_err(Into::into)
    }

    /// Ends `session` from a destructor: the task that held it died
    /// without saying how it ended (a panic). `leave`: the session left (a
    /// robot); else it is disconnected and the room's grace applies, as for
    /// a dropped socket. Sent from a task of its own, on the runtime if
    /// there still is one (at shutdown there is nothing left to tell).
    pub(crate) fn end_detached(&self, session: SessionId, leave: bool) {
        let rooms = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let cmd = if leave {
                    Command::Leave { session }
                } else {
                    Command::Disconnect { session }
                };
                let _ = rooms.command(cmd).await;
            });
        }
    }

    /// Whether `session` is still in its room. A subscriber that lagged (and
    /// so may have missed its own end) asks this instead of guessing; `false`
    /// also when the engine has stopped.
    pub(crate) async fn has_session(&self, session: SessionId) -> bool {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Request::HasSession { session, reply })
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Every room with its members (empty when the engine has stopped).
    pub(crate) async fn snapshot(&self) -> Vec<super::engine::RoomView> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Snapshot { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Every open room's key, without its members (empty when the engine
    /// has stopped).
    pub(crate) async fn room_keys(&self) -> Vec<RoomKey> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::RoomKeys { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Per application: rooms open, anchors and audience in them (empty
    /// when the engine has stopped).
    pub(crate) async fn stats(&self) -> Vec<(u64, u64, u64, u64)> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Stats { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Every visible user with a published track, by room (empty when the
    /// engine has stopped).
    pub(crate) async fn visible_publishers(&self) -> Vec<(RoomKey, UserId)> {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Request::VisiblePublishers { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Watches one room open and close. Unlike the event broadcast, a watch
    /// cannot lag: a busy watcher reads the latest state when it looks.
    /// Ends (`changed()` errs) when the engine stops.
    pub(crate) async fn watch_room(&self, room: &RoomKey) -> watch::Receiver<RoomLife> {
        let (reply, rx) = oneshot::channel();
        let request = Request::WatchRoom {
            room: room.clone(),
            reply,
        };
        if self.tx.send(request).await.is_ok()
            && let Ok(w) = rx.await
        {
            return w;
        }
        // The engine has stopped: a watch whose sender is gone.
        watch::channel(RoomLife::NotOpen).1
    }

    /// Events from now on. Subscribe before entering to see your welcome.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<RoomEvent>> {
        self.events.subscribe()
    }

    /// Asks the task to stop; returns once the request is queued.
    pub(crate) async fn shutdown(&self) {
        let _ = self.tx.send(Request::Shutdown).await;
    }
}

/// Starts the engine task for the configured applications.
pub(crate) fn spawn(config: &Config) -> (RoomHandle, JoinHandle<()>) {
    let engine = Rooms::new(
        config.apps.iter().map(|a| a.sdkappid),
        config.limits.clone(),
    );
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (events, _) = broadcast::channel(EVENT_CAPACITY);
    let handle = RoomHandle {
        tx,
        events: events.clone(),
        next_session: Arc::new(AtomicU64::new(1)),
        cluster: Arc::default(),
    };
    let task = tokio::spawn(run(engine, rx, events));
    (handle, task)
}

async fn run(
    mut engine: Rooms,
    mut rx: mpsc::Receiver<Request>,
    events: broadcast::Sender<Arc<RoomEvent>>,
) {
    let mut lives = Lives::default();
    loop {
        let deadline = engine.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => crate::ticks::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            req = rx.recv() => match req {
                Some(Request::Command { cmd, reply }) => {
                    let verdict = engine.handle(Instant::now(), cmd);
                    let _ = reply.send(verdict);
                }
                Some(Request::HasSession { session, reply }) => {
                    let _ = reply.send(engine.has_session(session));
                }
                Some(Request::Snapshot { reply }) => {
                    let _ = reply.send(engine.snapshot());
                }
                Some(Request::RoomKeys { reply }) => {
                    let _ = reply.send(engine.room_keys());
                }
                Some(Request::Stats { reply }) => {
                    let _ = reply.send(engine.stats());
                }
                Some(Request::VisiblePublishers { reply }) => {
                    let _ = reply.send(engine.visible_publishers());
                }
                Some(Request::WatchRoom { room, reply }) => {
                    let _ = reply.send(lives.watch(room));
                }
                Some(Request::Shutdown) | None => break,
            },
            () = sleep => engine.handle_timeout(Instant::now()),
        }
        while let Some(ev) = engine.poll_event() {
            tracing::debug!(room = %ev.room, event = ?ev.kind, "room event");
            if let EventKind::RoomClosed { reason } = &ev.kind {
                tracing::info!(room = %ev.room, reason = reason.as_str(), "room closed");
            }
            lives.on_event(&ev);
            // No subscriber is fine: nobody is listening yet.
            let _ = events.send(Arc::new(ev));
        }
    }
    tracing::debug!(rooms = engine.room_count(), "room engine stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;
    use crate::room::{Enter, Role, RoomId, Scene};

    #[test]
    fn a_watcher_sees_the_opening_it_knew_end() {
        use RoomLife::*;
        let gone = CloseReason::Dismissed;
        assert_eq!(
            Open(2).closed_since(&Open(1)),
            Some("closed, then opened again")
        );
        assert_eq!(Closed(1, gone).closed_since(&Open(1)), Some(gone.as_str()));
        assert_eq!(
            Closed(3, gone).closed_since(&Closed(1, gone)),
            Some(gone.as_str())
        );
        assert_eq!(Closed(1, gone).closed_since(&Closed(1, gone)), None);
        assert_eq!(Open(1).closed_since(&NotOpen), None);
        assert_eq!(Open(1).closed_since(&Closed(0, gone)), None);
    }

    #[tokio::test]
    async fn room_watches_follow_openings_and_end_with_the_engine() {
        let (rooms, task) = spawn(&one_app());
        let key = RoomKey {
            app: 1_400_000_000,
            room: RoomId::parse("8", None).unwrap(),
        };
        let mut life = rooms.watch_room(&key).await;
        assert_eq!(*life.borrow_and_update(), RoomLife::NotOpen);
        let session = rooms.new_session();
        rooms.command(enter(&key, session)).await.unwrap();
        life.changed().await.unwrap();
        let open = life.borrow_and_update().clone();
        assert!(matches!(open, RoomLife::Open(_)));
        // A second watcher of an open room starts from its opening.
        assert_eq!(*rooms.watch_room(&key).await.borrow(), open);
        rooms.command(Command::Leave { session }).await.unwrap();
        life.changed().await.unwrap();
        assert!(life.borrow_and_update().closed_since(&open).is_some());
        rooms.shutdown().await;
        task.await.unwrap();
        assert!(
            life.changed().await.is_err(),
            "the watch ends with the engine"
        );
    }

    fn one_app() -> Config {
        Config {
            apps: vec![AppConfig {
                sdkappid: 1_400_000_000,
                secret_key: "k".into(),
                callback_url: None,
                callback_key: None,
            }],
            ..Config::default()
        }
    }

    fn enter(room: &RoomKey, session: SessionId) -> Command {
        Command::Enter(Enter {
            room: room.clone(),
            user: UserId::new("a").unwrap(),
            session,
            role: Role::Anchor,
            scene: Scene::Live,
            hidden: false,
            grant: None,
            unix_now: 1_700_000_000,
        })
    }

    #[tokio::test]
    async fn a_lagging_subscriber_can_ask_whether_its_session_lives() {
        let (rooms, task) = spawn(&one_app());
        let session = rooms.new_session();
        let room = RoomKey {
            app: 1_400_000_000,
            room: RoomId::parse("7", None).unwrap(),
        };
        rooms.command(enter(&room, session)).await.unwrap();
        assert!(rooms.has_session(session).await);
        rooms.command(Command::Leave { session }).await.unwrap();
        assert!(!rooms.has_session(session).await);
        rooms.shutdown().await;
        task.await.unwrap();
        assert!(
            !rooms.has_session(session).await,
            "a stopped engine knows no session"
        );
    }
}
