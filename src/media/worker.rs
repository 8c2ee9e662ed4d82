//! An output on a thread of its own (an HLS writer, a ladder): media
//! messages, discontinuities and an orderly finish through one bounded
//! queue. The relay never waits: on overflow the queue drops to the next
//! video keyframe (counted as a slow output). `finish` waits for the thread
//! to drain what was queued.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use super::{DropToKeyframe, MediaMessage};

/// What a worker thread receives.
pub(crate) enum Cmd {
    /// A message and the wall clock (unix ms) when it was queued: the time
    /// it belongs to, however late the thread gets to it. A thread that
    /// dates what it writes (an HLS segment's `EXT-X-PROGRAM-DATE-TIME`)
    /// uses this, so a thread that fell behind and catches up does not
    /// date a burst of old media as now.
    Media(Arc<MediaMessage>, u64),
    /// The input changed (an anchor left and came back).
    Discontinuity,
    /// Close what is open and return.
    Finish,
}

pub(crate) struct Worker {
    tx: SyncSender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
    gate: DropToKeyframe,
    counted: crate::metrics::DropCounter,
}

impl Worker {
    /// Runs `work` on a thread named `name`, `capacity` messages queued.
    pub(crate) fn spawn(
        name: &str,
        capacity: usize,
        work: impl FnOnce(Receiver<Cmd>) + Send + 'static,
    ) -> Worker {
        let (tx, rx) = sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(rx))
            .expect("spawn thread");
        Worker {
            tx,
            thread: Some(thread),
            gate: DropToKeyframe::default(),
            counted: crate::metrics::DropCounter::new(crate::metrics::DropReason::SlowOutput),
        }
    }

    /// Queues without waiting; on overflow skips to the next video keyframe.
    pub(crate) fn offer(&mut self, msg: &Arc<MediaMessage>) {
        self.offer_at(msg, crate::unix_now_ms());
    }

    /// [`Worker::offer`] for a message that arrived at `wall_ms` (unix ms).
    pub(crate) fn offer_at(&mut self, msg: &Arc<MediaMessage>, wall_ms: u64) {
        if !self.gate.admit(msg) {
            self.counted.sync(self.gate.dropped);
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Cmd::Media(msg.clone(), wall_ms)) {
            self.gate.overflowed();
            self.counted.sync(self.gate.dropped);
        }
    }

    pub(crate) fn discontinuity(&mut self) {
        let _ = self.tx.try_send(Cmd::Discontinuity);
    }

    /// Asks the thread to finish and waits for it.
    pub(crate) async fn finish(mut self) {
        let _ = self.tx.send(Cmd::Finish);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
