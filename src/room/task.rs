//! The async shell around the room engine: one task owns `Rooms`.
//!
//! Callers send commands through a bounded channel and await the verdict;
//! the task sleeps until the engine's next timer; events go out on a
//! broadcast channel. No lock around the engine: only this task touches it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::engine::{RoomError, Rooms};
use super::event::{Command, RoomEvent};
use super::ids::SessionId;
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
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoomCallError {
    #[error(transparent)]
    Refused(#[from] RoomError),
    #[error("the room engine has stopped")]
    Stopped,
}

/// A cheap, cloneable way to talk to the room engine task.
#[derive(Clone)]
pub(crate) struct RoomHandle {
    tx: mpsc::Sender<Request>,
    events: broadcast::Sender<Arc<RoomEvent>>,
    next_session: Arc<AtomicU64>,
}

impl RoomHandle {
    /// A fresh session id for a new connection.
    pub(crate) fn new_session(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// Applies a command; `Err(Refused)` means nothing changed.
    pub(crate) async fn command(&self, cmd: Command) -> Result<(), RoomCallError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Command { cmd, reply })
            .await
            .map_err(|_| RoomCallError::Stopped)?;
        rx.await
            .map_err(|_| RoomCallError::Stopped)?
            .map_err(Into::into)
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
    };
    let task = tokio::spawn(run(engine, rx, events));
    (handle, task)
}

async fn run(
    mut engine: Rooms,
    mut rx: mpsc::Receiver<Request>,
    events: broadcast::Sender<Arc<RoomEvent>>,
) {
    loop {
        let deadline = engine.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
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
                Some(Request::Shutdown) | None => break,
            },
            () = sleep => engine.handle_timeout(Instant::now()),
        }
        while let Some(ev) = engine.poll_event() {
            tracing::debug!(room = %ev.room, event = ?ev.kind, "room event");
            if let super::event::EventKind::RoomClosed { reason } = &ev.kind {
                tracing::info!(room = %ev.room, reason = reason.as_str(), "room closed");
            }
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
    use crate::room::{Enter, Role, RoomId, RoomKey, Scene, UserId};

    #[tokio::test]
    async fn a_lagging_subscriber_can_ask_whether_its_session_lives() {
        let config = Config {
            apps: vec![AppConfig {
                sdkappid: 1_400_000_000,
                secret_key: "k".into(),
                callback_url: None,
                callback_key: None,
            }],
            ..Config::default()
        };
        let (rooms, task) = spawn(&config);
        let session = rooms.new_session();
        rooms
            .command(Command::Enter(Enter {
                room: RoomKey {
                    app: 1_400_000_000,
                    room: RoomId::parse("7", None).unwrap(),
                },
                user: UserId::new("a").unwrap(),
                session,
                role: Role::Anchor,
                scene: Scene::Live,
                hidden: false,
                grant: None,
                unix_now: 1_700_000_000,
            }))
            .await
            .unwrap();
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
