//! MixTranscoding: several anchors decoded, composed by layout, mixed and
//! re-encoded into one stream.
//!
//! `layout` is the pure geometry of TRTC's layout modes; `timeline` the
//! pure timing (input clocks, jitter buffer, audio placement, output ticks);
//! `video` the decoders, canvas and x264 encoder; `pipeline` the mix thread
//! that drives them on the wall clock; `latency` the pure per-picture
//! latency window the mix reports.

pub mod latency;
pub(crate) mod layout;
pub mod pipeline;
pub(crate) mod probe;
pub use probe::THREAD as PROBE_THREAD;
pub(crate) mod timeline;
pub mod up2;
pub(crate) mod video;
