//! RTMP: the ingest edge (OBS, ffmpeg publish into rooms) and FLV framing.
//!
//! `flv` is pure framing (tag bodies ⇄ media messages); `ingest` owns the
//! publisher sockets around rml_rtmp's server session.

pub mod flv;
pub mod ingest;
pub mod push;
