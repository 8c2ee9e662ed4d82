//! The live status API: `GET /v1/status` (everything), `/v1/status/node`,
//! `/v1/status/rooms`, `/v1/status/tasks`, `/v1/status/ingests`,
//! `/v1/status/recordings` and `/v1/status/cluster`, as JSON.
//!
//! On a cluster node the listings (rooms, tasks, ingests, recordings) are
//! the whole cluster's: this node asks every other live node for its own
//! (signed again with the caller's credential, marked as carried so the
//! other node answers for itself only), and each entry names its `node`.
//! A node that does not answer within 3 s is left out and named in the
//! `x-roomcast-nodes-missing` header.
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

/// The caller's SecretId if the request is signed with an API credential
/// (or carries a console session made from one), else the refusal.
#[allow(clippy::result_large_err)]
fn caller(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<String, Response> {
    credential::admit(state, (method, uri, headers), b"", Access::Read)
}

pub(crate) async fn all(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let secret_id = match caller(&state, &method, &uri, &headers) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let mut doc = document(&state).await;
    let Some(peers) = peers(&state, &headers).await else {
        return json_ok(doc);
    };
    let (answers, missing) = ask_peers(&state, &peers, "/v1/status", &secret_id).await;
    for key in LISTINGS {
        let mut mine = doc[key].take();
        let list = mine.as_array_mut().map(std::mem::take).unwrap_or_default();
        doc[key] = merge(&state, list, answers.iter().map(|(n, v)| (n, &v[key])));
    }
    with_missing(json_ok(doc), &missing)
}

/// The documents that list things (merged across a cluster).
const LISTINGS: [&str; 4] = ["rooms", "tasks", "ingests", "recordings"];

/// A live node of the cluster other than this one: its id and HTTP address.
type Peer = (String, String);

/// The other live nodes to ask, on a cluster node answering a caller (not
/// a request another node carried here: that one wants this node's own).
async fn peers(state: &AppState, headers: &HeaderMap) -> Option<Vec<Peer>> {
    let cluster = state.rooms.cluster()?;
    if headers.contains_key(crate::cluster::forward::FORWARDED) {
        return None;
    }
    let nodes = cluster.nodes().await.ok()?;
    Some(
        nodes
            .into_iter()
            .filter(|n| n.node != cluster.node_id())
            .map(|n| (n.node, n.http))
            .collect(),
    )
}

/// GETs `path` from every peer at once, signed with `secret_id`'s key:
/// the answers by node, and the nodes that did not answer.
async fn ask_peers(
    state: &AppState,
    peers: &[Peer],
    path: &str,
    secret_id: &str,
) -> (Vec<(String, Value)>, Vec<String>) {
    let key = state.config.api_key(secret_id).unwrap_or("").to_owned();
    let asks = peers.iter().map(|(node, http)| {
        let key = key.clone();
        async move {
            let host = http
                .strip_prefix("http://")
                .unwrap_or(http)
                .trim_end_matches('/');
            let now = crate::unix_now();
            let auth = crate::auth::tc3::authorization_for(
                secret_id,
                &key,
                now,
                host,
                ("GET", path, ""),
                "application/json",
                b"",
            );
            let req = axum::http::Request::get(path)
                .header(header::HOST, host)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, auth)
                .header("x-tc-timestamp", now.to_string())
                .body(bytes::Bytes::new());
            let answer = match req {
                Ok(req) => crate::ticks::timeout(
                    std::time::Duration::from_secs(3),
                    crate::cluster::forward::forward(http, req),
                )
                .await
                .map_err(|_| "no answer within 3 s".to_owned())
                .and_then(|r| r),
                Err(e) => Err(e.to_string()),
            };
            let value = answer.and_then(|resp| {
                if resp.status() != StatusCode::OK {
                    return Err(format!("answered {}", resp.status()));
                }
                serde_json::from_slice::<Value>(resp.body()).map_err(|e| e.to_string())
            });
            (node.clone(), value)
        }
    });
    let mut answers = Vec::new();
    let mut missing = Vec::new();
    for (node, value) in futures_util::future::join_all(asks).await {
        match value {
            Ok(v) => answers.push((node, v)),
            Err(e) => {
                tracing::warn!(%node, "status: cluster node left out of the listing: {e}");
                missing.push(node);
            }
        }
    }
    (answers, missing)
}

/// This node's entries and each peer's, every entry naming its node.
fn merge<'a>(
    state: &AppState,
    mut mine: Vec<Value>,
    theirs: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Value {
    let me = state
        .rooms
        .cluster()
        .map(|c| c.node_id().to_owned())
        .unwrap_or_default();
    for v in &mut mine {
        v["node"] = json!(me);
    }
    for (node, list) in theirs {
        for v in list.as_array().into_iter().flatten() {
            let mut v = v.clone();
            v["node"] = json!(node);
            mine.push(v);
        }
    }
    Value::Array(mine)
}

fn with_missing(mut resp: Response, missing: &[String]) -> Response {
    if !missing.is_empty()
        && let Ok(v) = axum::http::HeaderValue::from_str(&missing.join(","))
    {
        resp.headers_mut().insert("x-roomcast-nodes-missing", v);
    }
    resp
}

/// Every cloud recording this node knows: its room, whether it runs, its
/// DescribeCloudRecording status and how many files it wrote.
fn recordings(state: &AppState) -> Value {
    Value::Array(
        state
            .recordings
            .list()
            .into_iter()
            .map(|(id, room, _)| {
                let d = state.recordings.describe(room.app, &id);
                json!({
                    "task_id": id,
                    "sdkappid": room.app,
                    "room": room.room.to_string(),
                    "roomtype": room_type(&room),
                    "status": d.as_ref().map(|d| d.status),
                    "files": d.as_ref().map_or(0, |d| d.files.len()),
                })
            })
            .collect(),
    )
}

/// The whole status document: node, rooms and tasks.
pub(super) async fn document(state: &AppState) -> Value {
    json!({
        "node": node(state).await,
        "rooms": rooms(state).await,
        "tasks": tasks(state),
        "ingests": ingests(state),
        "recordings": recordings(state),
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
    let secret_id = match caller(&state, &method, &uri, &headers) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let mine = match part.as_str() {
        "node" => return json_ok(node(&state).await),
        "cluster" => return json_ok(cluster(&state).await),
        "rooms" => rooms(&state).await,
        "ingests" => ingests(&state),
        "tasks" => tasks(&state),
        "recordings" => recordings(&state),
        _ => {
            return credential::error_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                "status documents: /v1/status, /v1/status/node, /v1/status/rooms, /v1/status/tasks, /v1/status/ingests, /v1/status/recordings, /v1/status/cluster",
            );
        }
    };
    let Some(peers) = peers(&state, &headers).await else {
        return json_ok(mine);
    };
    let path = format!("/v1/status/{part}");
    let (answers, missing) = ask_peers(&state, &peers, &path, &secret_id).await;
    let list = match mine {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    with_missing(
        json_ok(merge(&state, list, answers.iter().map(|(n, v)| (n, v)))),
        &missing,
    )
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
    let (scale, calibrated) = state.relays.cost_scale().get();
    let thousandths = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "node_id": state.rooms.cluster().map(|c| c.node_id().to_string()),
        "cores": crate::capacity::cores(),
        "cpu_seconds": cpu_seconds,
        "cpu_cores_busy": crate::metrics::cpu_busy(),
        "resident_bytes": resident,
        "cpu_budget": budget,
        "cpu_budget_in_use": thousandths(in_use),
        "cpu_cost_scale": thousandths(scale),
        "cpu_calibrated": calibrated,
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
