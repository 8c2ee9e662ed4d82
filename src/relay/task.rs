//! One relay task: an anchor's stream passed through to RTMP targets and HLS.
//!
//! The task follows its anchor: it attaches to the anchor's stream in the
//! media hub when the anchor publishes, starts every output at a keyframe,
//! rebases timestamps so the output never goes back when the anchor drops
//! and returns (HLS marks a discontinuity; RTMP stays connected), and stops
//! when asked, when the room closes, or after `max_idle` without input.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{oneshot, watch};

use super::rebase::Rebaser;
use crate::hls::HlsWriter;
use crate::media::hub::{MediaHub, Subscription};
use crate::media::{EncodedFrame, MediaMessage, TimeBase, TrackKind};
use crate::room::{EventKind, RoomHandle, RoomKey, UserId};
use crate::rtmp::push::{PushState, PushTarget};

/// What a task is asked to do.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    pub id: String,
    pub room: RoomKey,
    pub user: UserId,
    pub stream: String,
    pub rtmp: Vec<String>,
    pub hls: Option<crate::profile::HlsOutput>,
    pub max_idle: Duration,
}

/// What a task reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayStatus {
    pub state: TaskState,
    pub attached: bool,
    pub frames: u64,
    pub targets: Vec<(String, PushState, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Waiting,
    Running,
    Stopped(String),
}

pub struct Deps {
    pub rooms: RoomHandle,
    pub hub: MediaHub,
    pub hls_root: std::path::PathBuf,
}

pub async fn run(
    spec: RelaySpec,
    deps: Deps,
    mut stop: oneshot::Receiver<()>,
    status: watch::Sender<RelayStatus>,
) {
    let mut events = deps.rooms.subscribe();
    let mut targets: Vec<PushTarget> = Vec::new();
    for url in &spec.rtmp {
        match PushTarget::spawn(url) {
            Ok(t) => targets.push(t),
            Err(e) => tracing::warn!(task = %spec.id, "rtmp target refused: {e}"),
        }
    }
    let mut hls = spec
        .hls
        .as_ref()
        .map(|h| HlsWriter::spawn(deps.hls_root.join(&spec.stream), h.clone()));
    let mut source: Option<Subscription> = deps.hub.subscribe(&spec.room, &spec.user);
    let mut rebaser = Rebaser::default();
    let mut need_keyframe = true;
    let mut frames = 0u64;
    let mut idle_since = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    if let Some(s) = &source {
        start_attachment(
            s,
            &mut targets,
            hls.as_mut(),
            &mut rebaser,
            &mut need_keyframe,
        );
    }
    tracing::info!(task = %spec.id, room = %spec.room, user = %spec.user, stream = %spec.stream, "relay task started");

    let reason = loop {
        let report = |attached: bool, frames: u64, targets: &[PushTarget]| RelayStatus {
            state: if attached {
                TaskState::Running
            } else {
                TaskState::Waiting
            },
            attached,
            frames,
            targets: targets
                .iter()
                .map(|t| (t.url.clone(), t.state.borrow().clone(), t.dropped()))
                .collect(),
        };
        tokio::select! {
            _ = &mut stop => break "stopped by request".to_owned(),
            msg = recv(&mut source) => match msg {
                Ok(m) => {
                    let out = match &*m {
                        MediaMessage::Config(_) => Some(m.clone()),
                        MediaMessage::Frame(f) => {
                            if need_keyframe && source.as_ref().is_some_and(|s| s.configs.video.is_some()) && !(f.kind == TrackKind::Video && f.keyframe) {
                                None
                            } else {
                                need_keyframe = false;
                                frames += 1;
                                Some(Arc::new(MediaMessage::Frame(rebase(&mut rebaser, f))))
                            }
                        }
                    };
                    if let (Some(out), Some(s)) = (out, source.as_mut()) {
                        if let MediaMessage::Config(c) = &*out {
                            match c.kind {
                                TrackKind::Video => s.configs.video = Some(c.clone()),
                                TrackKind::Audio => s.configs.audio = Some(c.clone()),
                            }
                        }
                        for t in &mut targets {
                            t.offer(&out);
                        }
                        if let Some(h) = hls.as_mut() {
                            h.offer(&out);
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(task = %spec.id, missed = n, "relay fell behind its source; resuming at the next keyframe");
                    need_keyframe = true;
                }
                Err(RecvError::Closed) => {
                    tracing::info!(task = %spec.id, "anchor stopped publishing; waiting for it to come back");
                    source = None;
                    idle_since = tokio::time::Instant::now();
                    let _ = status.send(report(false, frames, &targets));
                }
            },
            ev = events.recv() => match ev {
                Ok(ev) if ev.room == spec.room => match &ev.kind {
                    EventKind::RoomClosed { reason } => break format!("room closed ({})", reason.as_str()),
                    EventKind::TrackPublished { user, .. } if *user == spec.user && source.is_none() => {
                        if let Some(s) = deps.hub.subscribe(&spec.room, &spec.user) {
                            tracing::info!(task = %spec.id, "anchor is back; relaying");
                            start_attachment(&s, &mut targets, hls.as_mut(), &mut rebaser, &mut need_keyframe);
                            source = Some(s);
                        }
                    }
                    _ => {}
                },
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break "shutting down".to_owned(),
            },
            _ = tick.tick() => {
                if source.is_none() && idle_since.elapsed() >= spec.max_idle {
                    break format!("no input for {:?}", spec.max_idle);
                }
                let _ = status.send(report(source.is_some(), frames, &targets));
            }
        }
    };
    tracing::info!(task = %spec.id, "relay task stopping: {reason}");
    // Closing the queues lets targets and HLS finish in order.
    let targets_final: Vec<_> = targets
        .iter()
        .map(|t| (t.url.clone(), t.state.borrow().clone(), t.dropped()))
        .collect();
    drop(targets);
    if let Some(h) = hls.take() {
        h.finish().await;
    }
    let _ = status.send(RelayStatus {
        state: TaskState::Stopped(reason),
        attached: false,
        frames,
        targets: targets_final,
    });
}

async fn recv(source: &mut Option<Subscription>) -> Result<Arc<MediaMessage>, RecvError> {
    match source {
        Some(s) => s.messages.recv().await,
        None => std::future::pending().await,
    }
}

/// A (re)attachment: configs to every output, a keyframe before frames,
/// a new time base segment, and a discontinuity in HLS.
fn start_attachment(
    s: &Subscription,
    targets: &mut [PushTarget],
    mut hls: Option<&mut HlsWriter>,
    rebaser: &mut Rebaser,
    need_keyframe: &mut bool,
) {
    rebaser.reattach();
    *need_keyframe = true;
    if let Some(h) = hls.as_deref_mut() {
        h.discontinuity();
    }
    for c in [&s.configs.video, &s.configs.audio].into_iter().flatten() {
        let m = Arc::new(MediaMessage::Config(c.clone()));
        for t in targets.iter_mut() {
            t.offer(&m);
        }
        if let Some(h) = hls.as_deref_mut() {
            h.offer(&m);
        }
    }
}

fn rebase(r: &mut Rebaser, f: &EncodedFrame) -> EncodedFrame {
    let dts = f.time_base.rescale(f.dts, TimeBase::MILLIS);
    let pts = f.time_base.rescale(f.pts, TimeBase::MILLIS);
    let (dts, pts) = r.map(f.kind, dts, pts);
    EncodedFrame {
        dts,
        pts,
        time_base: TimeBase::MILLIS,
        ..f.clone()
    }
}
