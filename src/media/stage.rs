//! A media stage on a thread of its own (re-encoding, transcoding): a
//! bounded queue in that drops to the next keyframe on overflow (the relay
//! never waits), and the stage's output back to the async side.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use super::{DropToKeyframe, MediaMessage};

/// The output side a stage's work function writes to.
pub(crate) type StageOut = tokio::sync::mpsc::Sender<Arc<MediaMessage>>;

/// Hands a stage's output frames to the relay; `false` when the relay is gone.
pub(crate) fn send_frames(out: &StageOut, frames: Vec<super::EncodedFrame>) -> bool {
    frames
        .into_iter()
        .all(|f| out.blocking_send(Arc::new(MediaMessage::Frame(f))).is_ok())
}

pub(crate) struct Stage {
    tx: SyncSender<Arc<MediaMessage>>,
    gate: DropToKeyframe,
    counted: crate::metrics::DropCounter,
    /// What the stage produced (a new config, then frames), for the relay to fan out.
    pub out: tokio::sync::mpsc::Receiver<Arc<MediaMessage>>,
}

impl Stage {
    /// Runs `work` on a thread named `name` with `capacity` messages queued each way.
    pub(crate) fn spawn(
        name: &str,
        capacity: usize,
        work: impl FnOnce(Receiver<Arc<MediaMessage>>, StageOut) + Send + 'static,
    ) -> Stage {
        let (tx, rx) = sync_channel::<Arc<MediaMessage>>(capacity);
        let (out_tx, out) = tokio::sync::mpsc::channel(capacity);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(rx, out_tx))
            .expect("spawn thread");
        Stage {
            tx,
            gate: DropToKeyframe::default(),
            counted: crate::metrics::DropCounter::new(crate::metrics::DropReason::SlowOutput),
            out,
        }
    }

    /// Queues a config or frame without waiting; on overflow the stage
    /// resumes at the next keyframe.
    pub(crate) fn offer(&mut self, msg: &Arc<MediaMessage>) {
        if !self.gate.admit(msg) {
            self.counted.sync(self.gate.dropped);
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg.clone()) {
            self.gate.overflowed();
            self.counted.sync(self.gate.dropped);
        }
    }
}
