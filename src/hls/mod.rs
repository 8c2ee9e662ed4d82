//! HLS served by roomcast: segments muxed by libavformat, a playlist we write.
//!
//! `playlist` is the pure sliding-window media playlist; `writer` is the
//! thread that muxes MPEG-TS segments and keeps the playlist on disk. Files
//! live under `<data_dir>/hls/<stream>/` and are served by `api::hls`.

pub(crate) mod playlist;
pub(crate) mod writer;

pub(crate) use writer::HlsWriter;
