//! Rooms: TRTC's applications, rooms, roles and lifecycle.
//!
//! `engine` is the pure state machine (every room rule of CONCEPTS.md);
//! `task` is the one tokio task that owns it, takes commands through a
//! bounded channel, sleeps until the engine's next deadline and fans events
//! out to subscribers (signalling sockets now; relay tasks, metrics and
//! callbacks later).

pub(crate) mod engine;
pub(crate) mod event;
pub(crate) mod ids;
mod task;
pub(crate) mod timer;

pub(crate) use engine::RoomError;
pub use event::*;
pub(crate) use ids::{RoomId, RoomIdType, RoomKey, SessionId, UserId};
pub(crate) use task::{RoomCallError, RoomHandle, spawn};

/// For tests of the shells that hold a session: a room task with one
/// application, and `user` entered as an anchor of room "lesson".
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::{AppConfig, Config};

    pub(crate) const APP: u64 = 1_400_000_000;

    pub(crate) fn config() -> Config {
        Config {
            apps: vec![AppConfig {
                sdkappid: APP,
                secret_key: "k".into(),
                callback_url: None,
                callback_key: None,
            }],
            ..Config::default()
        }
    }

    /// Room "lesson" of [`APP`].
    pub(crate) fn lesson() -> RoomKey {
        RoomKey {
            app: APP,
            room: RoomId::parse("lesson", None).unwrap(),
        }
    }

    /// `user` enters `room` as an anchor of a live room, on `session`.
    pub(crate) fn enter(room: &RoomKey, session: SessionId, user: &str) -> Command {
        Command::Enter(Enter {
            room: room.clone(),
            user: UserId::new(user).unwrap(),
            session,
            role: Role::Anchor,
            scene: Scene::Live,
            hidden: false,
            grant: None,
            unix_now: crate::unix_now(),
        })
    }

    /// Whether `user` is connected in any room; `None` if in none.
    pub(crate) async fn connected(rooms: &RoomHandle, user: &UserId) -> Option<bool> {
        rooms
            .snapshot()
            .await
            .iter()
            .flat_map(|r| &r.members)
            .find(|m| m.user == *user)
            .map(|m| m.connected)
    }

    /// Drops `value` as a panic inside the task holding it drops it.
    pub(crate) async fn panic_holding<T: Send + 'static>(value: T) {
        let died = tokio::spawn(async move {
            let _held = value;
            panic!("a bug inside the task");
        });
        assert!(died.await.unwrap_err().is_panic());
    }

    pub(crate) struct Anchor {
        pub rooms: RoomHandle,
        pub room: RoomKey,
        pub user: UserId,
        pub session: SessionId,
        _task: tokio::task::JoinHandle<()>,
    }

    impl Anchor {
        pub(crate) async fn enter(config: &Config, user: &str) -> Anchor {
            let (rooms, task) = spawn(config);
            let room = lesson();
            let session = rooms.new_session();
            rooms.command(enter(&room, session, user)).await.unwrap();
            let user = UserId::new(user).unwrap();
            Anchor {
                rooms,
                room,
                user,
                session,
                _task: task,
            }
        }

        /// Whether the member is connected; `None` once it has left.
        pub(crate) async fn connected(&self) -> Option<bool> {
            connected(&self.rooms, &self.user).await
        }

        /// Polls until the member reads `want`, for up to 5 s.
        pub(crate) async fn wait_connected(&self, want: Option<bool>, what: &str) {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while self.connected().await != want {
                assert!(tokio::time::Instant::now() < deadline, "{what}");
                crate::ticks::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
