//! roomcast: a self-hosted CDN relay and transcoding gateway for real-time rooms.
//!
//! Module map, in the order media flows (ARCHITECTURE.md has the picture).
//! Public: what the binary, the benches and the tests use; the rest is
//! `pub(crate)`.
//!
//! - [`config`]: `roomcast.toml` + `ROOMCAST_*` env → validated [`config::Config`].
//! - [`profile`]: `profiles/*.toml` → validated [`profile::RelayProfile`]. Pure validation.
//! - [`auth`]: UserSig / PrivateMapKey ([`auth::usersig`]) and TC3 request signatures ([`auth::tc3`]). Pure.
//! - `net`: connection caps per address and in total for the listeners.
//! - [`rtmp`]: RTMP ingest (a bounded chunk reader in front of rml_rtmp), FLV framing, RTMP push.
//! - `webrtc`: WHIP publish and WHEP playback; RTP depacketizing.
//! - `pull`: an online stream pulled into a room (StartStreamIngest).
//! - `room`: the room engine (TRTC's rooms, roles, lifecycle; sans-IO) and the task that drives it (events, per-room life watches).
//! - [`media`]: frames and configs, the hub where relays find anchors (per-room publisher watches), AAC/Opus stages, the libav door.
//! - [`mix`]: layout geometry, the mix timeline (pure), decoders/canvas/encoder, the mix thread.
//! - `capacity`: admission control: a task's CPU cost estimated before it starts, against `limits.cpu_budget`. Pure.
//! - `relay`: relay tasks, each one input (an anchor passed through, or a mix) times one fan-out of outputs; typed control, published status.
//! - `hls`: playlists (pure) and the MPEG-TS segment writer.
//! - `record`: recordings to disk and the TRTC cloud-recording tasks.
//! - `callback`: TRTC event callbacks to each application's receiver.
//! - [`metrics`]: Prometheus metrics, counted where things happen and read from their owners at scrape time.
//! - `api`: the HTTP edge: accept loop, signalling, relays admin, HLS, WHIP/WHEP, the TRTC API.
//! - [`server`]: binds the listeners, wires the pieces, owns shutdown.
//!
//! Pure cores (`auth`, `room::engine`, `profile` validation, `rtmp::chunk`,
//! `rtmp::amf`, `rtmp::flv`, `mix::layout`, `mix::timeline`,
//! `relay::rebase`, `hls::playlist`) do no I/O and read no clock: time is an argument.

#![deny(unsafe_code)]
#![warn(unreachable_pub)]

pub(crate) mod api;
pub mod auth;
pub(crate) mod callback;
pub(crate) mod capacity;
pub(crate) mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod hls;
pub mod media;
pub mod metrics;
pub mod mix;
pub(crate) mod net;
pub mod panics;
pub mod profile;
pub(crate) mod pull;
pub(crate) mod record;
pub(crate) mod relay;
pub(crate) mod room;
pub mod rtmp;
pub mod server;
pub(crate) mod ticks;
pub mod tls;
pub(crate) mod webrtc;

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
