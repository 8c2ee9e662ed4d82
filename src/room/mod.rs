//! Rooms: TRTC's applications, rooms, roles and lifecycle.
//!
//! `engine` is the pure state machine (every room rule of CONCEPTS.md);
//! `task` is the one tokio task that owns it, takes commands through a
//! bounded channel, sleeps until the engine's next deadline and fans events
//! out to subscribers (signalling sockets now; relay tasks, metrics and
//! callbacks later).

pub mod engine;
pub mod event;
pub mod ids;
mod task;
pub mod timer;

pub use engine::{RoomError, Rooms};
pub use event::*;
pub use ids::{RoomId, RoomIdType, RoomKey, SdkAppId, SessionId, UserId};
pub use task::{RoomCallError, RoomHandle, spawn};
