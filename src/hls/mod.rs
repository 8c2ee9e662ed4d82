//! HLS served by roomcast, in two forms.
//!
//! - MPEG-TS (the default, for every player): `writer` cuts segments,
//!   `ts` packetises them (pure) and `playlist` is the pure sliding-window
//!   playlist, in memory for live HLS (`store`, muxed where the relay
//!   delivers), on disk for recordings (on a thread of its own).
//! - fMP4, plain or low-latency: `cmaf` cuts a relay's messages into parts
//!   and segments, `fmp4` writes them, `live` is the playlist (parts,
//!   blocking reloads, delta updates) and `store` keeps it all in memory.
//!
//! `api::hls` serves both.

pub(crate) mod cmaf;
pub(crate) mod fmp4;
pub(crate) mod ladder;
#[cfg(test)]
pub(crate) mod late_queue;
pub(crate) mod live;
pub(crate) mod playlist;
pub(crate) mod store;
pub(crate) mod ts;
pub(crate) mod writer;

use std::sync::Arc;

use crate::media::MediaMessage;
use crate::profile::{HlsContainer, HlsOutput};

/// A relay's HLS output: MPEG-TS on disk, or fMP4 (LL or not) in memory.
pub(crate) enum HlsOut {
    Ts(
        Box<writer::LiveTsWriter>,
        Arc<store::TsShared>,
        store::HlsStore,
    ),
    Live(Box<store::LiveOutput>),
}

impl HlsOut {
    /// Starts the live stream `name` in `store`: MPEG-TS or fMP4.
    pub(crate) fn start(name: &str, settings: &HlsOutput, store: &store::HlsStore) -> HlsOut {
        match settings.container {
            HlsContainer::Ts => {
                let shared = store.open_ts(name);
                HlsOut::Ts(
                    Box::new(writer::LiveTsWriter::start(
                        shared.clone(),
                        settings.clone(),
                    )),
                    shared,
                    store.clone(),
                )
            }
            HlsContainer::Fmp4 => HlsOut::Live(Box::new(store.open(
                name,
                settings,
                settings.renditions.len(),
            ))),
        }
    }

    /// Offers a message that arrived at `wall_ms` (unix ms): the playlist
    /// dates its segments by when their media came.
    pub(crate) fn offer_at(&mut self, msg: &Arc<MediaMessage>, wall_ms: u64) {
        match self {
            HlsOut::Ts(w, ..) => w.offer_at(msg, wall_ms),
            HlsOut::Live(l) => l.offer_at(msg, wall_ms),
        }
    }

    pub(crate) fn discontinuity(&mut self) {
        match self {
            HlsOut::Ts(w, ..) => w.discontinuity(),
            HlsOut::Live(l) => l.discontinuity(),
        }
    }

    /// Ends the playlist; the stream stays readable for a while.
    pub(crate) fn finish(self) {
        match self {
            HlsOut::Ts(w, shared, store) => {
                w.finish();
                store.linger_ts(shared);
            }
            HlsOut::Live(l) => (*l).finish(),
        }
    }
}
