//! What a relay task reports, and how its reports reach watchers.
//!
//! Each task has a `watch` of its status. Counters (frames, drops) update it
//! silently; a change that means something to a watcher (state, attachment,
//! a target's connection state, a transcoding started) also wakes the
//! task's watchers and bumps the manager's generation, so callbacks and
//! recordings wait for changes instead of polling the table.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// A mix's latency per picture (arrival to the encoder's output) over
    /// its last pictures.
    pub latency: Option<crate::mix::latency::LatencySummary>,
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
            latency: None,
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

impl TaskState {
    /// Its name in status, metrics and logs.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Stopped(_) => "stopped",
        }
    }

    /// Why the task stopped, once it has.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            TaskState::Stopped(why) => Some(why),
            _ => None,
        }
    }
}

/// Rates are measured over this much recent time.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Per-second rates of `N` growing counters over the last [`RATE_WINDOW`],
/// from the samples taken at each report. Time is an argument.
#[derive(Debug)]
pub(super) struct Rates<const N: usize> {
    samples: VecDeque<(Instant, [u64; N])>,
}

impl<const N: usize> Default for Rates<N> {
    fn default() -> Self {
        Rates {
            samples: VecDeque::new(),
        }
    }
}

impl<const N: usize> Rates<N> {
    /// Records `values` at `now`; their rates since the oldest sample in
    /// the window (0 until it covers half a second).
    pub(super) fn sample(&mut self, now: Instant, values: [u64; N]) -> [f64; N] {
        self.samples.push_back((now, values));
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let mut rates = [0.0; N];
        if let Some((t, old)) = self.samples.front() {
            let secs = now.saturating_duration_since(*t).as_secs_f64();
            if secs > 0.5 {
                for (r, (v, o)) in rates.iter_mut().zip(values.iter().zip(old)) {
                    *r = v.saturating_sub(*o) as f64 / secs;
                }
            }
        }
        rates
    }
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
                tracing::info!(
                    task = %self.task,
                    state = next.state.as_str(),
                    reason = next.state.reason().unwrap_or(""),
                    inputs = ?next.inputs,
                    "relay task state changed"
                );
            }
            *current = next;
            matters
        });
        if woke {
            self.changes.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// A task that ends without saying it stopped (a panic inside it, or a
/// path that forgot) must not read "running" for ever, holding its share of
/// the CPU budget and its stream name: its status says it stopped, and why.
impl Drop for StatusTx {
    fn drop(&mut self) {
        if matches!(self.status.borrow().state, TaskState::Stopped(_)) {
            return;
        }
        let why = if std::thread::panicking() {
            tracing::error!(task = %self.task, "relay task failed: an internal error (panic) ended it; its outputs were closed");
            "internal error: the task failed; see the gateway's log"
        } else {
            // Dropped unfinished: the runtime is shutting down.
            tracing::warn!(task = %self.task, "relay task dropped before it finished");
            "shutting down"
        };
        let mut last = self.status.borrow().clone();
        last.state = TaskState::Stopped(why.into());
        last.attached = false;
        self.publish(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_last_five_seconds() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Rates::<2>::default();
        assert_eq!(r.sample(t0, [0, 0]), [0.0, 0.0]);
        assert_eq!(r.sample(t0 + s(1), [30, 1000]), [30.0, 1000.0]);
        assert_eq!(r.sample(t0 + s(5), [150, 5000]), [30.0, 1000.0]);
        // The first second drops out of the window: the rate is the recent one.
        assert_eq!(r.sample(t0 + s(6), [150, 5000]), [24.0, 800.0]);
        assert_eq!(r.sample(t0 + s(11), [150, 5000]), [0.0, 0.0]);
    }

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

    #[tokio::test]
    async fn a_task_that_panics_reads_stopped_with_a_reason() {
        let changes = Arc::new(watch::channel(0).0);
        let (tx, mut rx) = StatusTx::new("relay-panics", changes.clone());
        let mut st = RelayStatus::waiting();
        st.state = TaskState::Running;
        st.attached = true;
        tx.publish(st);
        crate::room::testing::panic_holding(tx).await;
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.state.as_str(), "stopped");
        assert!(
            s.state.reason().unwrap().contains("internal error"),
            "{s:?}"
        );
        assert!(!s.attached);

        // One that stopped properly keeps its own reason.
        let (tx, rx) = StatusTx::new("relay-done", changes);
        let mut st = RelayStatus::waiting();
        st.state = TaskState::Stopped("stopped by request".into());
        tx.publish(st);
        drop(tx);
        assert_eq!(rx.borrow().state.reason(), Some("stopped by request"));
    }
}
