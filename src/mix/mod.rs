//! MixTranscoding: several anchors decoded, composed by layout, mixed and
//! re-encoded into one stream.
//!
//! `layout` is the pure geometry of TRTC's layout modes.

pub mod h264;
pub mod layout;
pub mod video;
