//! HLS served by roomcast, in two forms.
//!
//! - MPEG-TS (the default, for every player): `writer` is the thread that
//!   muxes segments with libavformat and keeps `playlist` (the pure
//!   sliding-window playlist) on disk under `<data_dir>/hls/<stream>/`.
//! - fMP4, plain or low-latency: `cmaf` cuts a relay's messages into parts
//!   and segments, `fmp4` writes them, `live` is the playlist (parts,
//!   blocking reloads, delta updates) and `store` keeps it all in memory.
//!
//! `api::hls` serves both.

pub(crate) mod cmaf;
pub(crate) mod fmp4;
pub(crate) mod ladder;
pub(crate) mod live;
pub(crate) mod playlist;
pub(crate) mod store;
pub(crate) mod writer;

pub(crate) use writer::HlsWriter;

use std::path::Path;
use std::sync::Arc;

use crate::media::MediaMessage;
use crate::profile::{HlsContainer, HlsOutput};

/// A relay's HLS output: MPEG-TS on disk, or fMP4 (LL or not) in memory.
pub(crate) enum HlsOut {
    Ts(HlsWriter),
    Live(Box<store::LiveOutput>),
}

impl HlsOut {
    /// Starts the stream `name`: TS under `ts_root/<name>/`, fMP4 in `store`.
    pub(crate) fn start(
        name: &str,
        settings: &HlsOutput,
        ts_root: &Path,
        store: &store::HlsStore,
    ) -> HlsOut {
        match settings.container {
            HlsContainer::Ts => HlsOut::Ts(HlsWriter::spawn(ts_root.join(name), settings.clone())),
            HlsContainer::Fmp4 => {
                // A TS stream of the same name from an earlier task would shadow nothing,
                // but its files would linger: the memory stream wins from now on.
                let _ = std::fs::remove_dir_all(ts_root.join(name));
                HlsOut::Live(Box::new(store.open(
                    name,
                    settings,
                    settings.renditions.len(),
                )))
            }
        }
    }

    pub(crate) fn offer(&mut self, msg: &Arc<MediaMessage>) {
        match self {
            HlsOut::Ts(w) => w.offer(msg),
            HlsOut::Live(l) => l.offer(msg),
        }
    }

    pub(crate) fn discontinuity(&mut self) {
        match self {
            HlsOut::Ts(w) => w.discontinuity(),
            HlsOut::Live(l) => l.discontinuity(),
        }
    }

    pub(crate) async fn finish(self) {
        match self {
            HlsOut::Ts(w) => w.finish().await,
            HlsOut::Live(l) => (*l).finish(),
        }
    }
}
