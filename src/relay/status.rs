//! What a relay task reports, and how its reports reach watchers.
//!
//! Each task has a `watch` of its status. Counters (frames, drops) update it
//! silently; a change that means something to a watcher (state, attachment,
//! a target's connection state, a transcoding started) also wakes the
//! task's watchers and bumps the manager's generation, so callbacks and
//! recordings wait for changes instead of polling the table.

use std::sync::Arc;

use tokio::sync::watch;

use crate::rtmp::push::PushState;

/// What a task reports.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RelayStatus {
    pub state: TaskState,
    /// Whether input is flowing: the anchor is publishing, or (a mix) at
    /// least one anchor is being mixed.
    pub attached: bool,
    pub frames: u64,
    /// Video frames and kilobits per second sent, over the last 5 s.
    pub fps: f32,
    pub kbps: u32,
    /// The anchors being relayed or mixed, in entry order.
    pub inputs: Vec<String>,
    /// A mix's distinct pictures per second over the last 5 s (repeats of
    /// an unchanged canvas not counted); `None` for a passthrough.
    pub effective_fps: Option<f32>,
    /// A mix's ticks that ran more than a frame late, and pictures it
    /// skipped because it was overloaded, since it (re)started.
    pub late_ticks: u64,
    pub skipped_pictures: u64,
    /// Each RTMP target: URL, connection state, frames dropped.
    pub targets: Vec<(String, PushState, u64)>,
    /// What the task re-encodes because its outputs cannot carry it, e.g. `opus→aac`.
    pub transcoding: Vec<String>,
}

impl RelayStatus {
    pub(crate) fn waiting() -> RelayStatus {
        RelayStatus {
            state: TaskState::Waiting,
            attached: false,
            frames: 0,
            fps: 0.0,
            kbps: 0,
            inputs: Vec::new(),
            effective_fps: None,
            late_ticks: 0,
            skipped_pictures: 0,
            targets: Vec::new(),
            transcoding: Vec::new(),
        }
    }

    /// Whether a watcher would act on the difference (counters aside).
    fn differs_for_watchers(&self, other: &RelayStatus) -> bool {
        self.state != other.state
            || self.attached != other.attached
            || self.inputs != other.inputs
            || self.transcoding != other.transcoding
            || self.targets.len() != other.targets.len()
            || self
                .targets
                .iter()
                .zip(&other.targets)
                .any(|(a, b)| a.0 != b.0 || a.1 != b.1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskState {
    Waiting,
    Running,
    Stopped(String),
}

/// A task's side of its status.
pub(crate) struct StatusTx {
    /// The task's id, for the state-change log line.
    task: String,
    status: watch::Sender<RelayStatus>,
    /// The manager's generation: bumped on every change that matters.
    changes: Arc<watch::Sender<u64>>,
}

impl StatusTx {
    pub(super) fn new(
        task: &str,
        changes: Arc<watch::Sender<u64>>,
    ) -> (StatusTx, watch::Receiver<RelayStatus>) {
        let (status, rx) = watch::channel(RelayStatus::waiting());
        let task = task.to_owned();
        (
            StatusTx {
                task,
                status,
                changes,
            },
            rx,
        )
    }

    /// Replaces the status; watchers wake only when it matters to them.
    pub(crate) fn publish(&self, next: RelayStatus) {
        let woke = self.status.send_if_modified(|current| {
            let matters = next.differs_for_watchers(current);
            if next.state != current.state {
                // One line per state change, whatever the task's kind.
                let (state, reason) = match &next.state {
                    TaskState::Waiting => ("waiting", ""),
                    TaskState::Running => ("running", ""),
                    TaskState::Stopped(why) => ("stopped", why.as_str()),
                };
                tracing::info!(task = %self.task, state, reason, inputs = ?next.inputs, "relay task state changed");
            }
            *current = next;
            matters
        });
        if woke {
            self.changes.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_update_silently_and_state_changes_wake_watchers() {
        let changes = Arc::new(watch::channel(0).0);
        let mut all = changes.subscribe();
        let (tx, mut rx) = StatusTx::new("relay-test", changes);
        let mut st = RelayStatus::waiting();
        st.frames = 10;
        tx.publish(st.clone());
        assert!(!rx.has_changed().unwrap() && !all.has_changed().unwrap());
        assert_eq!(rx.borrow().frames, 10, "counters are current all the same");
        st.targets.push((
            "rtmp://o/a/b".into(),
            PushState::Connecting { attempt: 1 },
            0,
        ));
        tx.publish(st.clone());
        assert!(rx.has_changed().unwrap() && all.has_changed().unwrap());
        rx.borrow_and_update();
        all.borrow_and_update();
        st.targets[0].2 = 5;
        tx.publish(st.clone());
        assert!(!rx.has_changed().unwrap(), "drops are a counter");
        st.targets[0].1 = PushState::Publishing;
        tx.publish(st.clone());
        assert!(rx.has_changed().unwrap() && all.has_changed().unwrap());
        st.state = TaskState::Stopped("done".into());
        tx.publish(st);
        assert!(matches!(
            rx.borrow_and_update().state,
            TaskState::Stopped(_)
        ));
    }
}
