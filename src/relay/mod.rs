//! Relay tasks: an anchor's stream relayed to CDN origins and HLS.
//!
//! The manager starts and stops tasks and keeps their status; each task is
//! its own tokio task (`task.rs`) that follows its anchor through the room
//! and the media hub. `rebase` keeps output timestamps monotonic.

mod mix_task;
pub(crate) mod rebase;
pub(crate) mod task;
pub(crate) mod transcode;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::media::hub::MediaHub;
use crate::profile::RelayProfile;
use crate::room::{Audience, EventKind, RoomHandle, RoomId, RoomKey, UserId};
pub(crate) use task::{Feedback, RelaySpec, RelayStatus, TaskState};

/// Default `max_idle_time`: a task stops after this long without its anchor (TRTC: 30 s).
pub(crate) const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(30);

/// A task's `max_idle_time` from a request, in seconds (TRTC's MaxIdleTime):
/// [`DEFAULT_MAX_IDLE`] when absent, else 5 to 86400; `Err` says the range.
pub(crate) fn max_idle(secs: Option<u64>) -> Result<Duration, &'static str> {
    match secs {
        None => Ok(DEFAULT_MAX_IDLE),
        Some(s) if (5..=86_400).contains(&s) => Ok(Duration::from_secs(s)),
        Some(_) => Err("5 to 86400 seconds"),
    }
}

/// Refuses output features this build cannot do yet, rather than silently
/// ignoring part of the profile.
fn check_outputs(profile: &RelayProfile) -> Result<(), RelayError> {
    let unsupported = |what: &str| {
        Err(RelayError::Invalid(format!(
            "profile `{}`: {what} is not available in this build",
            profile.name
        )))
    };
    if profile.outputs.hls.as_ref().is_some_and(|h| h.low_latency) {
        return unsupported("LL-HLS (outputs.hls.low_latency)");
    }
    Ok(())
}

/// A profile's `outputs.record`: files under `recordings/<stream>/` (the
/// stream name is settled when the task starts).
fn record_target(
    profile: &RelayProfile,
    user: Option<&str>,
) -> Option<crate::record::RecordTarget> {
    profile
        .outputs
        .record
        .clone()
        .map(|output| crate::record::RecordTarget {
            dir: PathBuf::new(),
            prefix: String::new(),
            user: user.map(str::to_owned),
            output,
            files: Default::default(),
        })
}

impl RelaySpec {
    /// A mix of every anchor of `room` with a mix profile; stream `<SDKAppID>_<RoomId>_mix`.
    pub(crate) fn for_mix(room: RoomKey, profile: &RelayProfile) -> Result<RelaySpec, RelayError> {
        let crate::profile::RelayMode::Mix { layout } = &profile.mode else {
            return Err(RelayError::Invalid(format!(
                "profile `{}` relays one anchor; name the anchor (userid)",
                profile.name
            )));
        };
        check_outputs(profile)?;
        let room_part = room.room.to_string();
        Ok(RelaySpec {
            id: String::new(),
            stream: format!("{}_{}_mix", room.app, room_part),
            room,
            user: None,
            mix: Some(crate::mix::pipeline::MixSettings {
                layout: layout.clone(),
                video: profile.video.clone(),
                audio: profile.audio.clone(),
                freeze: Duration::from_millis(u64::from(layout.freeze_ms)),
                audio_filter: Default::default(),
                volumes: Vec::new(),
            }),
            rtmp: profile.outputs.rtmp.clone(),
            hls: profile.outputs.hls.clone(),
            max_idle: DEFAULT_MAX_IDLE,
            audio_reencode: None,
            audio_fallback: None,
            record: record_target(profile, None),
            feedback: Vec::new(),
        })
    }

    /// A passthrough task for one anchor with a profile's outputs and TRTC's
    /// stream name; refused for what this build cannot do yet, rather than
    /// silently ignoring part of the profile.
    pub(crate) fn for_anchor(
        room: RoomKey,
        user: UserId,
        profile: &RelayProfile,
    ) -> Result<RelaySpec, RelayError> {
        if matches!(profile.mode, crate::profile::RelayMode::Mix { .. }) {
            return Err(RelayError::Invalid(format!(
                "profile `{}` mixes every anchor of the room; leave out the anchor (userid)",
                profile.name
            )));
        }
        check_outputs(profile)?;
        let record = record_target(profile, Some(user.as_str()));
        Ok(RelaySpec {
            id: String::new(),
            stream: RelayManager::default_stream_name(&room, &user),
            room,
            user: Some(user),
            mix: None,
            rtmp: profile.outputs.rtmp.clone(),
            hls: profile.outputs.hls.clone(),
            max_idle: DEFAULT_MAX_IDLE,
            audio_reencode: match profile.mode {
                crate::profile::RelayMode::Passthrough {
                    audio_reencode: true,
                } => Some(profile.audio.clone()),
                _ => None,
            },
            audio_fallback: Some(profile.audio.clone()),
            record,
            feedback: Vec::new(),
        })
    }
}

/// Relay tasks running at once, across rooms.
pub(crate) const MAX_TASKS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("{0} relay tasks are running, the limit")]
    TooMany(usize),
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
}

struct Entry {
    spec: RelaySpec,
    /// The last update's SequenceNumber (TRTC: must increase).
    sequence: Option<u64>,
    control: mpsc::Sender<Control>,
    status: watch::Receiver<RelayStatus>,
}

/// What a running task can be told. Few and rare: a small queue, callers wait.
#[derive(Debug)]
pub(crate) enum Control {
    Stop,
    /// Replace the RTMP targets; unchanged URLs keep their connection.
    SetTargets(Vec<String>),
    /// A mix's new layout (same canvas size), applied without restarting the encoder.
    SetLayout(crate::profile::Layout),
    /// A mix input's volume, TRTC SoundLevel 0..=100.
    SetVolume(UserId, u32),
    /// Whose audio a mix takes.
    SetAudioFilter(crate::mix::pipeline::AudioFilter),
    /// New encodings (size, rate, codec settings): the mix restarts its
    /// encoders; outputs stay connected and time keeps moving forward.
    RestartMix(Box<crate::mix::pipeline::MixSettings>),
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
    tasks: Arc<Mutex<HashMap<String, Entry>>>,
}

impl RelayManager {
    /// `<data_dir>/recordings`, beside `<data_dir>/hls`.
    pub(crate) fn record_root(&self) -> PathBuf {
        self.hls_root
            .parent()
            .map_or_else(|| PathBuf::from("recordings"), |d| d.join("recordings"))
    }

    pub(crate) fn new(rooms: RoomHandle, hub: MediaHub, hls_root: PathBuf) -> RelayManager {
        RelayManager {
            rooms,
            hub,
            hls_root,
            tasks: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// TRTC's default stream name for a single anchor.
    pub(crate) fn default_stream_name(room: &RoomKey, user: &UserId) -> String {
        let room_part = match &room.room {
            RoomId::Num(n) => n.to_string(),
            RoomId::Str(s) => s.clone(),
        };
        format!("{}_{}_{}_main", room.app, room_part, user)
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
        if tasks.values().any(|e| e.spec.stream == spec.stream) {
            return Err(RelayError::StreamInUse(spec.stream));
        }
        if spec.id.is_empty() {
            spec.id = new_task_id();
        }
        if let Some(r) = spec.record.as_mut()
            && r.dir.as_os_str().is_empty()
        {
            r.dir = PathBuf::from(&spec.stream);
            r.prefix = spec.stream.clone();
        }
        let (control, control_rx) = mpsc::channel(CONTROL_CAPACITY);
        let (status_tx, status_rx) = watch::channel(RelayStatus {
            state: TaskState::Waiting,
            attached: false,
            frames: 0,
            targets: Vec::new(),
            transcoding: Vec::new(),
        });
        let deps = task::Deps {
            rooms: self.rooms.clone(),
            hub: self.hub.clone(),
            hls_root: self.hls_root.clone(),
            record_root: self.record_root(),
        };
        tokio::spawn(task::run(spec.clone(), deps, control_rx, status_tx));
        let id = spec.id.clone();
        tasks.insert(
            id.clone(),
            Entry {
                spec,
                sequence: None,
                control,
                status: status_rx,
            },
        );
        Ok(id)
    }

    pub(crate) fn stop(&self, id: &str) -> Result<(), RelayError> {
        self.control(id, Control::Stop)
    }

    /// Replaces a running task's RTMP targets.
    pub(crate) fn set_targets(&self, id: &str, urls: Vec<String>) -> Result<(), RelayError> {
        if urls.len() > crate::profile::MAX_RTMP_TARGETS {
            return Err(RelayError::Invalid("at most 10 rtmp targets".into()));
        }
        for u in &urls {
            crate::rtmp::push::PushUrl::parse(u).map_err(RelayError::Invalid)?;
        }
        self.control(id, Control::SetTargets(urls))
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
        layout: Option<crate::profile::Layout>,
        volumes: Vec<(UserId, u32)>,
        audio_filter: Option<crate::mix::pipeline::AudioFilter>,
    ) -> Result<(), RelayError> {
        {
            // The stored settings follow live changes, so a restart keeps them.
            let mut tasks = self.lock();
            let e = tasks.get_mut(id).ok_or(RelayError::NoSuchTask)?;
            let Some(mix) = e.spec.mix.as_mut() else {
                return Err(RelayError::Invalid("not a mix task".into()));
            };
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
            self.control(id, Control::SetLayout(l))?;
        }
        for (u, v) in volumes {
            self.control(id, Control::SetVolume(u, v))?;
        }
        if let Some(f) = audio_filter {
            self.control(id, Control::SetAudioFilter(f))?;
        }
        Ok(())
    }

    /// Restarts a running mix with new settings (another canvas size, rate
    /// or encoding); its outputs stay connected.
    pub(crate) fn restart_mix(
        &self,
        id: &str,
        settings: crate::mix::pipeline::MixSettings,
    ) -> Result<(), RelayError> {
        {
            let mut tasks = self.lock();
            let e = tasks.get_mut(id).ok_or(RelayError::NoSuchTask)?;
            let Some(mix) = e.spec.mix.as_mut() else {
                return Err(RelayError::Invalid("not a mix task".into()));
            };
            *mix = settings.clone();
        }
        self.control(id, Control::RestartMix(Box::new(settings)))
    }

    fn control(&self, id: &str, msg: Control) -> Result<(), RelayError> {
        let tasks = self.lock();
        let e = tasks.get(id).ok_or(RelayError::NoSuchTask)?;
        if matches!(e.status.borrow().state, TaskState::Stopped(_)) {
            return Err(RelayError::Finished);
        }
        e.control.try_send(msg).map_err(|_| RelayError::Busy)
    }

    pub(crate) fn status(&self, id: &str) -> Option<(RelaySpec, RelayStatus)> {
        self.lock()
            .get(id)
            .map(|e| (e.spec.clone(), e.status.borrow().clone()))
    }

    pub(crate) fn list(&self) -> Vec<(RelaySpec, RelayStatus)> {
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
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "auto relay fell behind room events");
                        continue;
                    }
                    Err(_) => return,
                };
                // Dumb terminals (robots, relay agents) are not relayed.
                let (EventKind::TrackPublished { user, .. }, Audience::Room) =
                    (&ev.kind, &ev.audience)
                else {
                    continue;
                };
                for p in &autos {
                    let room_name = ev.room.room.to_string();
                    if !p.auto.as_ref().is_some_and(|a| a.matches(&room_name)) {
                        continue;
                    }
                    let mut spec = match RelaySpec::for_anchor(ev.room.clone(), user.clone(), p) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("auto relay not started: {e}");
                            continue;
                        }
                    };
                    if autos.len() > 1 {
                        spec.stream = format!("{}_{}", spec.stream, p.name);
                    }
                    match this.start(spec) {
                        Ok(id) => {
                            tracing::info!(task = %id, profile = %p.name, room = %ev.room, user = %user, "auto relay started")
                        }
                        Err(RelayError::StreamInUse(_)) => {}
                        Err(e) => tracing::warn!(profile = %p.name, "auto relay not started: {e}"),
                    }
                }
            }
        }))
    }

    /// Asks every task to stop and waits (bounded) for them to finish.
    pub(crate) async fn shutdown(&self) {
        let mut waits = Vec::new();
        for e in self.lock().values() {
            let _ = e.control.try_send(Control::Stop);
            waits.push(e.status.clone());
        }
        for mut w in waits {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                w.wait_for(|s| matches!(s.state, TaskState::Stopped(_))),
            )
            .await;
        }
    }
}

pub(crate) fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

fn new_task_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("relay-{}", hex::encode(b))
}
