//! roomcast: a self-hosted CDN relay and transcoding gateway for real-time rooms.
//!
//! Module map (see ARCHITECTURE.md for the bird's-eye view):
//!
//! - [`config`]: `roomcast.toml` + `ROOMCAST_*` env → validated [`config::Config`].
//! - [`profile`]: `profiles/*.toml` → validated [`profile::RelayProfile`].
//! - [`auth`]: UserSig / PrivateMapKey ([`auth::usersig`]) and TC3 request
//!   signatures ([`auth::tc3`]). Pure.
//! - [`room`]: the room engine, TRTC's rooms, roles and lifecycle as a
//!   sans-IO state machine, and the task that drives it.
//! - [`api`]: the HTTP edge (health, room signalling WebSocket).
//! - [`server`]: binds listeners, wires the pieces, owns shutdown.
//!
//! Pure cores (`auth`, `room::engine`, `profile`) do no I/O and read no clock:
//! time is an argument.

pub mod api;
pub mod auth;
pub mod callback;
pub mod config;
pub mod hls;
pub mod media;
pub mod mix;
pub mod profile;
pub mod pull;
pub mod record;
pub mod relay;
pub mod room;
pub mod rtmp;
pub mod server;
pub mod webrtc;
