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
