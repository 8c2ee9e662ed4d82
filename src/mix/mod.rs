//! MixTranscoding: several anchors decoded, composed by layout, mixed and
//! re-encoded into one stream.
//!
//! `layout` is the pure geometry of TRTC's layout modes; `video` the
//! decoders, canvas and x264 encoder;
//! `pipeline` the mix thread with its steady output clock.

pub mod layout;
pub mod pipeline;
pub mod video;
