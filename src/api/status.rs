//! The live status API: `GET /v1/status` (everything), `/v1/status/node`,
//! `/v1/status/rooms`, `/v1/status/tasks`, `/v1/status/ingests` and
//! `/v1/status/cluster`, as JSON.
//!
//! Every request is signed with an API credential: TC3-HMAC-SHA256 exactly
//! as for the TRTC API, with the request's path as the canonical URI (so a
//! signature for one document does not open another), or carries a console
//! session made from a credential at login. Loopback gets no
//! exemption: rooms and users are an application's business.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::credential;
use crate::auth::session::Access;
use crate::relay::{RelaySpec, RelayStatus, TaskState};
use crate::room::RoomKey;

/// `None` if the request is signed with an API credential (or carries a
/// console session made from one), else the refusal.
fn refused(state: &AppState, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    credential::admit(state, (method, uri, headers), b"", Access::Read).err()
}

pub(crate) async fn all(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refused(&state, &method, &uri, &headers) {
        return r;
    }
    json_ok(document(&state).await)
}

/// The whole status document: node, rooms and tasks.
pub(super) async fn document(state: &AppState) -> Value {
    json!({
        "node": node(state).await,
        "rooms": rooms(state).await,
        "tasks": tasks(state),
        "ingests": ingests(state),
        "cluster": cluster(state).await,
    })
}

/// The cluster as this node sees it (`null` on a single node): its id,
/// whether Redis answers, its leases, and every live node's record.
async fn cluster(state: &AppState) -> Value {
    let Some(c) = state.rooms.cluster() else {
        return Value::Null;
    };
    let nodes = match c.nodes().await {
        Ok(n) => serde_json::to_value(n).unwrap_or(Value::Null),
        Err(e) => json!({ "error": e.to_string() }),
    };
    json!({
        "node_id": c.node_id(),
        "redis": if c.redis_up() { "up" } else { "down" },
        "leases": c.leases_held(),
        "nodes": nodes,
    })
}

/// Every running stream ingest (StartStreamIngest): the user it publishes
/// as and its source without the query.
fn ingests(state: &AppState) -> Value {
    Value::Array(
        state
            .pulls
            .list()
            .into_iter()
            .map(|(id, p)| {
                json!({
                    "task_id": id,
                    "sdkappid": p.room.app,
                    "room": p.room.room.to_string(),
                    "roomtype": room_type(&p.room),
                    "userid": p.user.as_str(),
                    "source": p.source,
                    "state": "running",
                })
            })
            .collect(),
    )
}

pub(crate) async fn part(
    State(state): State<AppState>,
    Path(part): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    _body: Body,
) -> Response {
    if let Some(r) = refused(&state, &method, &uri, &headers) {
        return r;
    }
    match part.as_str() {
        "node" => json_ok(node(&state).await),
        "cluster" => json_ok(cluster(&state).await),
        "rooms" => json_ok(rooms(&state).await),
        "ingests" => json_ok(ingests(&state)),
        "tasks" => json_ok(tasks(&state)),
        _ => credential::error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "status documents: /v1/status, /v1/status/node, /v1/status/rooms, /v1/status/tasks, /v1/status/ingests, /v1/status/cluster",
        ),
    }
}

fn json_ok(v: Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

/// The node's load: CPU (cores busy since start and now), memory, counts.
async fn node(state: &AppState) -> Value {
    let stats = state.rooms.stats().await;
    let (rooms, anchors, audience) = stats
        .iter()
        .fold((0, 0, 0), |a, (_, r, an, au)| (a.0 + r, a.1 + an, a.2 + au));
    let relays = state.relays.list();
    let running = relays
        .iter()
        .filter(|(_, st)| !matches!(st.state, TaskState::Stopped(_)))
        .count();
    let (cpu_seconds, resident) = crate::metrics::process_usage();
    let (budget, in_use) = state.relays.budget();
    json!({
        "node_id": state.rooms.cluster().map(|c| c.node_id().to_string()),
        "cores": crate::capacity::cores(),
        "cpu_seconds": cpu_seconds,
        "cpu_cores_busy": crate::metrics::cpu_busy(),
        "resident_bytes": resident,
        "cpu_budget": budget,
        "cpu_budget_in_use": (in_use * 1000.0).round() / 1000.0,
        "rooms": rooms,
        "anchors": anchors,
        "audience": audience,
        "relay_tasks": running,
        "recordings": state.recordings.running_apps().len(),
        "stream_ingests": state.pulls.running_apps().len(),
        "uptime_seconds": crate::metrics::uptime().as_secs(),
    })
}

/// Every room: its users, roles, tracks and, for publishers, codecs.
async fn rooms(state: &AppState) -> Value {
    let views = state.rooms.snapshot().await;
    Value::Array(
        views
            .into_iter()
            .map(|r| {
                let users: Vec<Value> = r
                    .members
                    .iter()
                    .map(|m| {
                        let configs = state.hub.configs(&r.room, &m.user);
                        let codec =
                            |c: Option<&crate::media::TrackConfig>| c.map(|c| c.codec.as_str());
                        json!({
                            "userid": m.user.as_str(),
                            "role": m.role.as_str(),
                            "hidden": m.hidden,
                            "connected": m.connected,
                            "tracks": m.tracks.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                            "publishing": configs.is_some(),
                            "video_codec": configs.as_ref().and_then(|c| codec(c.video.as_ref())),
                            "audio_codec": configs.as_ref().and_then(|c| codec(c.audio.as_ref())),
                        })
                    })
                    .collect();
                json!({
                    "sdkappid": r.room.app,
                    "room": r.room.room.to_string(),
                    "roomtype": room_type(&r.room),
                    "scene": r.scene.as_str(),
                    "owner": r.owner.as_str(),
                    "users": users,
                })
            })
            .collect(),
    )
}

fn room_type(room: &RoomKey) -> &'static str {
    match room.room {
        crate::room::RoomId::Num(_) => "int",
        crate::room::RoomId::Str(_) => "str",
    }
}

/// Every relay task (stopped ones until the next start): its input, each
/// output's state, rates, drops and last error.
fn tasks(state: &AppState) -> Value {
    Value::Array(
        state
            .relays
            .list()
            .iter()
            .map(|(spec, st)| task(spec, st))
            .collect(),
    )
}

fn task(spec: &RelaySpec, st: &RelayStatus) -> Value {
    let mut outputs: Vec<Value> = st
        .targets
        .iter()
        .map(|(url, state, dropped)| {
            json!({
                "kind": "rtmp",
                // Stream keys and tokens stay out of the status.
                "url": url.split('?').next().unwrap_or(url),
                "state": state.as_str(),
                "dropped": dropped,
                "last_error": state.error(),
            })
        })
        .collect();
    if let Some(h) = &spec.outputs.hls {
        let fmp4 = h.container == crate::profile::HlsContainer::Fmp4;
        let mut o = json!({
            "kind": "hls",
            "path": format!("/hls/{}/index.m3u8", spec.stream),
            "container": if fmp4 { "fmp4" } else { "ts" },
            "low_latency": h.low_latency,
        });
        if fmp4 {
            o["master"] = json!(format!("/hls/{}/master.m3u8", spec.stream));
            o["renditions"] = h
                .renditions
                .iter()
                .map(|r| json!({"width": r.width, "height": r.height, "fps": r.fps, "bitrate_kbps": r.bitrate_kbps}))
                .collect();
        }
        outputs.push(o);
    }
    if spec.outputs.record.is_some() {
        outputs.push(json!({"kind": "record"}));
    }
    for f in &spec.outputs.feedback {
        outputs.push(
            json!({"kind": "room", "room": f.room.room.to_string(), "userid": f.user.as_str()}),
        );
    }
    // What the relay admin path shows, with the kind, room type and every output.
    let mut v = super::relays::status_json(spec, st);
    v["kind"] = json!(if spec.mix().is_some() {
        "mix"
    } else {
        "passthrough"
    });
    v["roomtype"] = json!(room_type(&spec.room));
    v["anchor"] = json!(spec.user().map(|u| u.as_str()));
    v["outputs"] = Value::Array(outputs);
    v
}
