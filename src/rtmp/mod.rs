//! RTMP: the ingest edge (OBS, ffmpeg publish into rooms) and FLV framing.
//!
//! `chunk` reads a peer's chunk stream under limits and `amf` checks its AMF0
//! commands, so that rml_rtmp's server session only ever decodes bounded,
//! well-formed input; `flv` is pure framing (tag bodies ⇄ media messages);
//! `ingest` owns the publisher sockets around the session; `push` pushes a
//! relay's output to origins, written from the relay's own turn while a
//! plain-TCP target publishes (`direct`); `loops` runs the connections on
//! event loops of their own (`event_loop`: a thread, epoll, a run queue).

pub(crate) mod amf;
pub(crate) mod chunk;
pub(crate) mod direct;
pub(crate) mod event_loop;
pub mod flv;
pub(crate) mod ingest;
pub(crate) mod loops;
pub(crate) mod push;
