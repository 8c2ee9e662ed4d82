//! The relay admin path: start, list and stop relay tasks over HTTP.
//!
//! `POST /v1/relays`, `GET /v1/relays`, `GET|PATCH|DELETE /v1/relays/<id>`:
//! tasks started from a profile by hand or by scripts on this machine; it
//! answers only to loopback callers. `/v1/tasks` (`tasks`) does the same for
//! callers with an API credential, wherever they are.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::relay::{RelayError, RelaySpec, RelayStatus};
use crate::room::{RoomId, RoomIdType, RoomKey, UserId};
use crate::rtmp::push::PushUrl;

pub(super) fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// The refusal for a caller that is not on this machine.
fn non_loopback(peer: SocketAddr) -> Option<Response> {
    (!peer.ip().is_loopback()).then(|| {
        err(
            StatusCode::FORBIDDEN,
            "the relay admin path answers loopback callers only",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRelay {
    sdkappid: u64,
    room: String,
    roomtype: Option<String>,
    /// The anchor of a passthrough relay; absent for a mix profile.
    userid: Option<String>,
    #[serde(default = "default_profile")]
    profile: String,
    rtmp: Option<Vec<String>>,
    stream: Option<String>,
    max_idle_time: Option<u64>,
}

fn default_profile() -> String {
    "passthrough".into()
}

/// A loopback caller's JSON body, or the refusal to send back.
#[allow(clippy::result_large_err)]
fn admitted<T>(
    peer: SocketAddr,
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Response> {
    if let Some(r) = non_loopback(peer) {
        return Err(r);
    }
    body.map(|Json(b)| b)
        .map_err(|e| err(StatusCode::BAD_REQUEST, e.body_text()))
}

pub(crate) async fn start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<StartRelay>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match admitted(peer, body) {
        Ok(req) => start_relay(&state, req).await,
        Err(r) => r,
    }
}

/// Starts a relay task from a profile; the answer to send back.
pub(super) async fn start_relay(state: &AppState, req: StartRelay) -> Response {
    if state.config.app_key(req.sdkappid).is_none() {
        return err(
            StatusCode::BAD_REQUEST,
            format!("sdkappid {} is not configured", req.sdkappid),
        );
    }
    let ty = match req.roomtype.as_deref() {
        None => None,
        Some("int") => Some(RoomIdType::Int),
        Some("str") => Some(RoomIdType::Str),
        Some(_) => return err(StatusCode::BAD_REQUEST, "roomtype must be int or str"),
    };
    let room = match RoomId::parse(&req.room, ty) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let user = match req.userid.as_deref().map(UserId::new).transpose() {
        Ok(u) => u,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(profile) = state.profiles.iter().find(|p| p.name == req.profile) else {
        return err(
            StatusCode::BAD_REQUEST,
            format!("no relay profile named `{}`", req.profile),
        );
    };
    let rtmp = req.rtmp.unwrap_or_else(|| profile.outputs.rtmp.clone());
    if rtmp.len() > crate::profile::MAX_RTMP_TARGETS {
        return err(StatusCode::BAD_REQUEST, "at most 10 rtmp targets");
    }
    for u in &rtmp {
        if let Err(e) = PushUrl::parse(u) {
            return err(StatusCode::BAD_REQUEST, e);
        }
    }
    let max_idle = match crate::relay::max_idle(req.max_idle_time) {
        Ok(d) => d,
        Err(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                "max_idle_time must be in 5..=86400 seconds",
            );
        }
    };
    let key = RoomKey {
        app: req.sdkappid,
        room,
    };
    // On a cluster the task runs where the room's anchors meet: this node
    // takes a room nobody owns; a room another node owns is refused here.
    if let Some(cluster) = state.rooms.cluster() {
        match cluster.ensure_owned(&key).await {
            Ok(()) => {}
            Err(
                e @ (crate::cluster::ClusterError::Elsewhere { .. }
                | crate::cluster::ClusterError::PlacedElsewhere { .. }),
            ) => return err(StatusCode::CONFLICT, e.to_string()),
            Err(e) => return err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    let spec = match user {
        Some(user) => RelaySpec::for_anchor(key, user, profile),
        None => RelaySpec::for_mix(key, profile),
    };
    let mut spec = match spec {
        Ok(s) => s,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    spec.outputs.rtmp = rtmp;
    spec.max_idle = max_idle;
    if let Some(s) = req.stream {
        spec.stream = s;
    }
    let stream = spec.stream.clone();
    match state.relays.start(spec) {
        Ok(id) => (
            StatusCode::CREATED,
            Json(json!({"task_id": id, "stream": stream, "hls": format!("/hls/{stream}/index.m3u8")})),
        )
            .into_response(),
        Err(e @ (RelayError::TooMany(_) | RelayError::TooManyForApp(_) | RelayError::StreamInUse(_))) => err(StatusCode::CONFLICT, e.to_string()),
        Err(e @ RelayError::OverBudget(_)) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => err(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRelay {
    /// Take the layout of this (mix) profile; its canvas must match.
    profile: Option<String>,
    /// Per-anchor volume, 0..=100 (TRTC SoundLevel).
    volumes: Option<std::collections::BTreeMap<String, u32>>,
    /// Replace the RTMP targets.
    rtmp: Option<Vec<String>>,
}

/// `PATCH /v1/relays/<id>`: change a running task live.
pub(crate) async fn update(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Result<Json<UpdateRelay>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match admitted(peer, body) {
        Ok(req) => update_relay(&state, &id, req),
        Err(r) => r,
    }
}

/// Changes a running task's layout, volumes or targets; the answer.
pub(super) fn update_relay(state: &AppState, id: &str, req: UpdateRelay) -> Response {
    let Some((spec, _)) = state.relays.status(id) else {
        return err(StatusCode::NOT_FOUND, "no such relay task");
    };
    let mut layout = None;
    let mut restart = None;
    if let Some(name) = &req.profile {
        let Some(p) = state.profiles.iter().find(|p| &p.name == name) else {
            return err(
                StatusCode::BAD_REQUEST,
                format!("no relay profile named `{name}`"),
            );
        };
        let (crate::profile::RelayMode::Mix { layout: l }, Some(mix)) = (&p.mode, spec.mix())
        else {
            return err(
                StatusCode::BAD_REQUEST,
                "a layout change needs a mix task and a mix profile",
            );
        };
        if p.video == mix.video && p.audio == mix.audio {
            layout = Some(l.clone());
        } else {
            // Other encodings: the mix restarts its encoders, outputs stay connected.
            match RelaySpec::for_mix(spec.room.clone(), p) {
                Ok(s) => restart = s.into_mix(),
                Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
    }
    let mut volumes = Vec::new();
    for (user, level) in req.volumes.unwrap_or_default() {
        if level > 100 {
            return err(StatusCode::BAD_REQUEST, "volumes are 0..=100");
        }
        match UserId::new(&user) {
            Ok(u) => volumes.push((u, level)),
            Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let result = match restart {
        Some(settings) => state.relays.restart_mix(id, settings),
        None => Ok(()),
    };
    let result = result.and_then(|()| {
        if layout.is_some() || !volumes.is_empty() {
            state.relays.update_mix(id, layout, volumes, None)
        } else {
            Ok(())
        }
    });
    let result = result.and_then(|()| match req.rtmp {
        Some(urls) => state.relays.set_targets(id, urls),
        None => Ok(()),
    });
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(RelayError::NoSuchTask) => err(StatusCode::NOT_FOUND, "no such relay task"),
        Err(e) => err(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Some(r) = non_loopback(peer) {
        return r;
    }
    let tasks: Vec<Value> = state
        .relays
        .list()
        .iter()
        .map(|(s, st)| status_json(s, st))
        .collect();
    Json(json!({"tasks": tasks})).into_response()
}

pub(crate) async fn get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = non_loopback(peer) {
        return r;
    }
    match state.relays.status(&id) {
        Some((s, st)) => Json(status_json(&s, &st)).into_response(),
        None => err(StatusCode::NOT_FOUND, "no such relay task"),
    }
}

pub(crate) async fn stop(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = non_loopback(peer) {
        return r;
    }
    stop_relay(&state, &id)
}

/// Stops a task; the answer.
pub(super) fn stop_relay(state: &AppState, id: &str) -> Response {
    match state.relays.stop(id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// A task as the relay admin path shows it; the status API adds to it.
pub(super) fn status_json(spec: &RelaySpec, st: &RelayStatus) -> Value {
    json!({
        "task_id": spec.id,
        "sdkappid": spec.room.app,
        "room": spec.room.room.to_string(),
        "userid": spec.user().map(UserId::as_str),
        "mix": spec.mix().is_some(),
        "stream": spec.stream,
        "state": st.state.as_str(),
        "reason": st.state.reason(),
        "attached": st.attached,
        "frames": st.frames,
        "fps": (f64::from(st.fps) * 10.0).round() / 10.0,
        "kbps": st.kbps,
        "inputs": st.inputs,
        "effective_fps": st.effective_fps.map(|f| (f64::from(f) * 10.0).round() / 10.0),
        "late_ticks": st.late_ticks,
        "skipped_pictures": st.skipped_pictures,
        "latency_ms": st.latency.map(|l| json!({
            "p50": (l.p50_ms * 10.0).round() / 10.0,
            "p99": (l.p99_ms * 10.0).round() / 10.0,
            "jitter_buffer_p50": (l.jitter_p50_ms * 10.0).round() / 10.0,
            "encode_p50": (l.encode_p50_ms * 10.0).round() / 10.0,
            "pictures": l.pictures,
        })),
        "transcoding": st.transcoding,
        "targets": st.targets.iter().map(|(url, ps, dropped)| {
            json!({"url": url.split('?').next().unwrap_or(url), "state": ps.as_str(), "error": ps.error(), "dropped": dropped})
        }).collect::<Vec<_>>(),
    })
}
