//! RTMP: the ingest edge (OBS, ffmpeg publish into rooms) and FLV framing.
//!
//! `chunk` reads a peer's chunk stream under limits and `amf` checks its AMF0
//! commands, so that rml_rtmp's server session only ever decodes bounded,
//! well-formed input; `flv` is pure framing (tag bodies ⇄ media messages);
//! `ingest` owns the publisher sockets around the session.

pub(crate) mod amf;
pub(crate) mod chunk;
pub mod flv;
pub(crate) mod ingest;
pub(crate) mod push;
