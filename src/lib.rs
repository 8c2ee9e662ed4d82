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
//! - [`net`]: connection caps per address and in total for the listeners.
//! - [`server`]: binds listeners, wires the pieces, owns shutdown.
//!
//! Pure cores (`auth`, `room::engine`, `profile`) do no I/O and read no clock:
//! time is an argument.

#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod callback;
pub mod config;
pub mod hls;
pub mod media;
pub mod mix;
pub mod net;
pub mod profile;
pub mod pull;
pub mod record;
pub mod relay;
pub mod room;
pub mod rtmp;
pub mod server;
pub mod webrtc;

/// Wall-clock seconds since the Unix epoch, for the shells (UserSig and
/// PrivateMapKey expiry, TC3 timestamps); the pure cores take it as an argument.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Wall-clock milliseconds since the Unix epoch (callbacks, program date-time).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
