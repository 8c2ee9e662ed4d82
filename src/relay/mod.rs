//! Relay tasks: an anchor's stream relayed to CDN origins and HLS.
//!
//! A task is one input times one set of outputs (`spec`): an anchor passed
//! through (`passthrough`) or every anchor of the room mixed (`mix_task`),
//! both feeding the same fan-out (`outputs`: RTMP targets, HLS, recorder,
//! rooms fed back, behind the timestamp `rebase`r). Drivers find their
//! anchors through the hub's per-room watch of publishers and stop when the
//! room's life watch says it closed. The manager starts and stops tasks,
//! routes typed control messages and publishes status changes (`status`)
//! for callbacks and recordings to wait on.

mod hold;
mod mix_task;
mod outputs;
mod passthrough;
pub(crate) mod rebase;
mod spec;
mod status;
#[cfg(test)]
mod tests;
mod transcode;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::media::hub::MediaHub;
use crate::mix::pipeline::{AudioFilter, MixSettings};
use crate::profile::{Layout, RelayProfile};
use crate::room::{Audience, EventKind, RoomHandle, RoomKey, UserId};
use crate::rtmp::loops::Loops;
pub(crate) use spec::{Feedback, OutputSpec, RelayInput, RelaySpec, max_idle, valid_stream_name};
pub(crate) use status::{RelayStatus, TaskState};

/// Relay tasks running at once, across rooms.
const MAX_TASKS: usize = 256;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("{0} relay tasks are running, the limit")]
    TooMany(usize),
    #[error("the application runs {0} tasks, its limit (limits.tasks_per_app)")]
    TooManyForApp(usize),
    #[error("a relay task for stream `{0}` already runs")]
    StreamInUse(String),
    #[error("no such relay task")]
    NoSuchTask,
    #[error("the relay task has finished")]
    Finished,
    #[error("the relay task is busy; try again")]
    Busy,
    #[error("sequence number not above the last one ({last})")]
    Outdated { last: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    OverBudget(#[from] crate::capacity::AdmissionError),
}

struct Entry {
    spec: Arc<RelaySpec>,
    /// Cores it was admitted for.
    cost: f64,
    /// The last update's SequenceNumber (TRTC: must increase).
    sequence: Option<u64>,
    control: Controller,
    status: watch::Receiver<RelayStatus>,
}

/// What a running task can be told: changes of its outputs, and changes
/// that only its kind of input understands (`I`). Few and rare: a small
/// queue; a full one is refused as busy.
#[derive(Debug)]
pub(crate) enum Control<I> {
    Stop,
    /// Replace the RTMP targets; unchanged URLs keep their connection.
    SetTargets(Vec<String>),
    Input(I),
}

/// A passthrough's input takes no live changes: the type has no values, so
/// a mix change cannot even be addressed to one.
#[derive(Debug)]
pub(crate) enum AnchorControl {}

/// Live changes of a mix.
#[derive(Debug)]
pub(crate) enum MixControl {
    /// A new layout (same canvas size), applied without restarting the encoder.
    SetLayout(Layout),
    /// An input's volume, TRTC SoundLevel 0..=100.
    SetVolume(UserId, u32),
    /// Whose audio the mix takes.
    SetAudioFilter(AudioFilter),
    /// New encodings (size, rate, codec settings): the mix restarts its
    /// encoders; outputs stay connected and time keeps moving forward.
    Restart(Box<MixSettings>),
}

/// A task's control queue, typed by its input.
enum Controller {
    Anchor(mpsc::Sender<Control<AnchorControl>>),
    Mix(mpsc::Sender<Control<MixControl>>),
}

/// Changes of a task's outputs, which every task takes.
enum OutputControl {
    Stop,
    SetTargets(Vec<String>),
}

impl Controller {
    fn send(&self, c: OutputControl) -> Result<(), RelayError> {
        let sent = match (self, c) {
            (Controller::Anchor(tx), OutputControl::Stop) => tx.try_send(Control::Stop).is_ok(),
            (Controller::Anchor(tx), OutputControl::SetTargets(u)) => {
                tx.try_send(Control::SetTargets(u)).is_ok()
            }
            (Controller::Mix(tx), OutputControl::Stop) => tx.try_send(Control::Stop).is_ok(),
            (Controller::Mix(tx), OutputControl::SetTargets(u)) => {
                tx.try_send(Control::SetTargets(u)).is_ok()
            }
        };
        if sent { Ok(()) } else { Err(RelayError::Busy) }
    }

    fn send_mix(&self, c: MixControl) -> Result<(), RelayError> {
        match self {
            Controller::Mix(tx) => tx.try_send(Control::Input(c)).map_err(|_| RelayError::Busy),
            Controller::Anchor(_) => Err(not_a_mix()),
        }
    }
}

fn not_a_mix() -> RelayError {
    RelayError::Invalid(
        "not a mix task: it passes one anchor through; layout, volumes, audio filter and encodings apply to mixes"
            .into(),
    )
}

/// Control messages queued per task (an API update may carry a volume per anchor).
const CONTROL_CAPACITY: usize = 32;

/// Starts, stops and lists relay tasks. The registry lock guards only the
/// table of handles; each task runs on its own.
#[derive(Clone)]
pub(crate) struct RelayManager {
    rooms: RoomHandle,
    hub: MediaHub,
    hls_root: PathBuf,
    hls_store: crate::hls::store::HlsStore,
    tasks: Arc<Mutex<HashMap<String, Entry>>>,
    /// Cores the running tasks' estimates may add up to (limits.cpu_budget).
    budget: f64,
    /// What codecs cost here against the reference machine
    /// ([`crate::capacity::charge`]), set by the start-up probe.
    scale: Arc<crate::capacity::Scale>,
    /// Tasks one application may run at once (limits.tasks_per_app).
    per_app: usize,
    /// Bumped when a task starts and whenever a task's status changes in a
    /// way watchers act on ([`RelayManager::watch_changes`]).
    changes: Arc<watch::Sender<u64>>,
    /// Where push targets run.
    loops: Loops,
}

impl RelayManager {
    /// `<data_dir>/recordings`, beside `<data_dir>/hls`.
    pub(crate) fn record_root(&self) -> PathBuf {
        self.hls_root
            .parent()
            .map_or_else(|| PathBuf::from("recordings"), |d| d.join("recordings"))
    }

    pub(crate) fn new(
        rooms: RoomHandle,
        hub: MediaHub,
        hls_root: PathBuf,
        hls_store: crate::hls::store::HlsStore,
        budget: f64,
    ) -> RelayManager {
        RelayManager {
            rooms,
            hub,
            hls_root,
            hls_store,
            tasks: Arc::default(),
            budget,
            scale: Arc::default(),
            per_app: MAX_TASKS,
            changes: Arc::new(watch::channel(0).0),
            loops: Loops::none(),
        }
    }

    /// Push targets run on `loops` (else on the runtime that starts them).
    pub(crate) fn with_loops(mut self, loops: Loops) -> RelayManager {
        self.loops = loops;
        self
    }

    /// At most `n` tasks of one application at once.
    pub(crate) fn with_tasks_per_app(mut self, n: u32) -> RelayManager {
        self.per_app = n as usize;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn start(&self, mut spec: RelaySpec) -> Result<String, RelayError> {
        if !valid_stream_name(&spec.stream) {
            return Err(RelayError::Invalid(format!(
                "stream name `{}`: 1-128 of letters, digits, '_', '-', '.', '@'",
                spec.stream
            )));
        }
        let mut tasks = self.lock();
        tasks.retain(|_, e| !matches!(e.status.borrow().state, TaskState::Stopped(_)));
        if tasks.len() >= MAX_TASKS {
            return Err(RelayError::TooMany(MAX_TASKS));
        }
        let app = spec.room.app;
        if tasks.values().filter(|e| e.spec.room.app == app).count() >= self.per_app {
            crate::metrics::metrics().limit_hit("tasks", "tasks_per_app");
            tracing::warn!(sdkappid = app, limit = self.per_app, stream = %spec.stream, "relay task refused: limits.tasks_per_app");
            return Err(RelayError::TooManyForApp(self.per_app));
        }
        if tasks.values().any(|e| e.spec.stream == spec.stream) {
            return Err(RelayError::StreamInUse(spec.stream));
        }
        // Admission: refused before anything starts.
        let cost =
            crate::capacity::charge(&spec, self.hub.count_in(&spec.room), self.scale.get().0);
        let in_use: f64 = tasks.values().map(|e| e.cost).sum();
        if let Err(e) = crate::capacity::admit(self.budget, in_use, cost) {
            tracing::warn!(room = %spec.room, stream = %spec.stream, "relay task refused: {e}");
            return Err(e.into());
        }
        if spec.id.is_empty() {
            spec.id = new_task_id();
        }
        if let Some(r) = spec.outputs.record.as_mut()
            && r.dir.as_os_str().is_empty()
        {
            r.dir = PathBuf::from(&spec.stream);
            r.prefix = spec.stream.clone();
        }
        let (status_tx, status_rx) = status::StatusTx::new(&spec.id, self.changes.clone());
        let deps = outputs::Deps {
            rooms: self.rooms.clone(),
            hub: self.hub.clone(),
            hls_store: self.hls_store.clone(),
            record_root: self.record_root(),
            loops: self.loops.clone(),
        };
        let spec = Arc::new(spec);
        let task = (*spec).clone();
        let control = match task.input.clone() {
            RelayInput::Anchor(anchor) => {
                let (tx, rx) = mpsc::channel(CONTROL_CAPACITY);
                tokio::spawn(passthrough::run(task, anchor, deps, rx, status_tx));
                Controller::Anchor(tx)
            }
            RelayInput::Mix(settings) => {
                let (tx, rx) = mpsc::channel(CONTROL_CAPACITY);
                tokio::spawn(mix_task::run(task, *settings, deps, rx, status_tx));
                Controller::Mix(tx)
            }
        };
        let id = spec.id.clone();
        tasks.insert(
            id.clone(),
            Entry {
                spec,
                cost,
                sequence: None,
                control,
                status: status_rx,
            },
        );
        drop(tasks);
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
        Ok(id)
    }

    pub(crate) fn stop(&self, id: &str) -> Result<(), RelayError> {
        self.with_control(id, |c| c.send(OutputControl::Stop))
    }

    /// Replaces a running task's RTMP targets.
    pub(crate) fn set_targets(&self, id: &str, urls: Vec<String>) -> Result<(), RelayError> {
        if urls.len() > crate::profile::MAX_RTMP_TARGETS {
            return Err(RelayError::Invalid("at most 10 rtmp targets".into()));
        }
        for u in &urls {
            crate::rtmp::push::PushUrl::parse(u).map_err(RelayError::Invalid)?;
        }
        self.with_control(id, |c| c.send(OutputControl::SetTargets(urls)))
    }

    /// Accepts an update's sequence number only if it is above the last one.
    pub(crate) fn advance_sequence(&self, id: &str, seq: u64) -> Result<(), RelayError> {
        let mut tasks = self.lock();
        let e = tasks.get_mut(id).ok_or(RelayError::NoSuchTask)?;
        match e.sequence {
            Some(last) if seq <= last => Err(RelayError::Outdated { last }),
            _ => {
                e.sequence = Some(seq);
                Ok(())
            }
        }
    }

    /// Changes a running mix's layout and volumes live.
    pub(crate) fn update_mix(
        &self,
        id: &str,
        layout: Option<Layout>,
        volumes: Vec<(UserId, u32)>,
        audio_filter: Option<AudioFilter>,
    ) -> Result<(), RelayError> {
        {
            // The stored settings follow live changes, so a restart keeps them.
            let mut tasks = self.lock();
            let e = tasks.get_mut(id).ok_or(RelayError::NoSuchTask)?;
            let mix = Arc::make_mut(&mut e.spec).mix_mut().ok_or_else(not_a_mix)?;
            if let Some(l) = &layout {
                mix.layout = l.clone();
            }
            for (u, v) in &volumes {
                mix.volumes.retain(|(x, _)| x != u.as_str());
                mix.volumes.push((u.as_str().to_owned(), *v));
            }
            if let Some(f) = &audio_filter {
                mix.audio_filter = f.clone();
            }
        }
        if let Some(l) = layout {
            self.with_control(id, |c| c.send_mix(MixControl::SetLayout(l)))?;
        }
        for (u, v) in volumes {
            self.with_control(id, |c| c.send_mix(MixControl::SetVolume(u, v)))?;
        }
        if let Some(f) = audio_filter {
            self.with_control(id, |c| c.send_mix(MixControl::SetAudioFilter(f)))?;
        }
        Ok(())
    }

    /// Restarts a running mix with new settings (another canvas size, rate
    /// or encoding); its outputs stay connected.
    pub(crate) fn restart_mix(&self, id: &str, settings: MixSettings) -> Result<(), RelayError> {
        {
            let mut tasks = self.lock();
            let e = tasks.get_mut(id).ok_or(RelayError::NoSuchTask)?;
            let mix = Arc::make_mut(&mut e.spec).mix_mut().ok_or_else(not_a_mix)?;
            *mix = settings.clone();
        }
        self.with_control(id, |c| c.send_mix(MixControl::Restart(Box::new(settings))))
    }

    fn with_control(
        &self,
        id: &str,
        send: impl FnOnce(&Controller) -> Result<(), RelayError>,
    ) -> Result<(), RelayError> {
        let tasks = self.lock();
        let e = tasks.get(id).ok_or(RelayError::NoSuchTask)?;
        if matches!(e.status.borrow().state, TaskState::Stopped(_)) {
            return Err(RelayError::Finished);
        }
        send(&e.control)
    }

    /// Connections and push targets on each RTMP loop, in order.
    pub(crate) fn loop_loads(&self) -> Vec<usize> {
        self.loops.loads()
    }

    /// The scale tasks' codecs are charged by, which the start-up probe
    /// sets ([`crate::capacity::Scale`]).
    pub(crate) fn cost_scale(&self) -> &Arc<crate::capacity::Scale> {
        &self.scale
    }

    /// The CPU budget (cores) and what running tasks were admitted for.
    pub(crate) fn budget(&self) -> (f64, f64) {
        let in_use = self
            .lock()
            .values()
            .filter(|e| !matches!(e.status.borrow().state, TaskState::Stopped(_)))
            .map(|e| e.cost)
            .sum();
        (self.budget, in_use)
    }

    /// Tasks not stopped.
    pub(crate) fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| !matches!(e.status.borrow().state, TaskState::Stopped(_)))
            .count()
    }

    /// A task's status, now and as it changes; `None` if unknown.
    pub(crate) fn watch(&self, id: &str) -> Option<watch::Receiver<RelayStatus>> {
        self.lock().get(id).map(|e| e.status.clone())
    }

    /// Changes when a task starts and whenever any task's status changes in
    /// a way that matters to watchers (state, attachment, a target's
    /// connection); read [`RelayManager::list`] again then. A watch never
    /// lags: a busy watcher reads the latest table.
    pub(crate) fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn status(&self, id: &str) -> Option<(Arc<RelaySpec>, RelayStatus)> {
        self.lock()
            .get(id)
            .map(|e| (e.spec.clone(), e.status.borrow().clone()))
    }

    /// Every task (stopped ones until the next start), by id; specs are shared, not copied.
    pub(crate) fn list(&self) -> Vec<(Arc<RelaySpec>, RelayStatus)> {
        let mut v: Vec<_> = self
            .lock()
            .values()
            .map(|e| (e.spec.clone(), e.status.borrow().clone()))
            .collect();
        v.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        v
    }

    /// Relays every visible anchor of the rooms the `auto` profiles match, as
    /// it starts publishing (one task per anchor and profile). Runs until the
    /// room engine stops.
    pub(crate) fn spawn_auto(
        &self,
        profiles: Vec<RelayProfile>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let autos: Vec<RelayProfile> = profiles.into_iter().filter(|p| p.auto.is_some()).collect();
        if autos.is_empty() {
            return None;
        }
        let this = self.clone();
        let mut events = self.rooms.subscribe();
        Some(tokio::spawn(async move {
            loop {
                match events.recv().await {
                    // Dumb terminals (robots, relay agents) are not relayed.
                    Ok(ev) => {
                        if let (EventKind::TrackPublished { user, .. }, Audience::Room) =
                            (&ev.kind, &ev.audience)
                        {
                            this.start_auto(&autos, &ev.room, user);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Missed publications are found in the engine's snapshot.
                        tracing::warn!(
                            missed = n,
                            "auto relay fell behind room events; resynchronising"
                        );
                        for (room, user) in this.rooms.visible_publishers().await {
                            this.start_auto(&autos, &room, &user);
                        }
                    }
                    Err(_) => return,
                }
            }
        }))
    }

    /// Starts the auto relays of `user` in `room` that are not running yet.
    fn start_auto(&self, autos: &[RelayProfile], room: &RoomKey, user: &UserId) {
        let room_name = room.room.to_string();
        for p in autos {
            if !p.auto.as_ref().is_some_and(|a| a.matches(&room_name)) {
                continue;
            }
            let mut spec = match RelaySpec::for_anchor(room.clone(), user.clone(), p) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("auto relay not started: {e}");
                    continue;
                }
            };
            if autos.len() > 1 {
                spec.stream = format!("{}_{}", spec.stream, p.name);
            }
            match self.start(spec) {
                Ok(id) => {
                    tracing::info!(task = %id, profile = %p.name, %room, %user, "auto relay started")
                }
                Err(RelayError::StreamInUse(_)) => {}
                Err(e) => tracing::warn!(profile = %p.name, "auto relay not started: {e}"),
            }
        }
    }

    /// Asks every task to stop and waits (bounded) for them to finish.
    pub(crate) async fn shutdown(&self) {
        let mut waits = Vec::new();
        for e in self.lock().values() {
            let _ = e.control.send(OutputControl::Stop);
            waits.push(e.status.clone());
        }
        for mut w in waits {
            let _ = crate::ticks::timeout(
                Duration::from_secs(5),
                w.wait_for(|s| matches!(s.state, TaskState::Stopped(_))),
            )
            .await;
        }
    }
}

fn new_task_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("relay-{}", hex::encode(b))
}
