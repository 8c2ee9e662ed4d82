//! The TRTC API on a cluster: an action is carried out on the node that owns
//! the room it names (the request carried there as it came, signature and
//! all, and the owner's answer returned as it is), and the tasks it starts
//! (relays and mixes, cloud recordings, stream ingests) are stored in Redis
//! so that a node taking the room over starts them again with the same
//! TaskId.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::params::{Params, invalid};
use super::{ApiError, relay, rooms};
use crate::api::AppState;
use crate::cluster::{ClusterError, LocalTasks, TaskRecord, forward};
use crate::relay::TaskState;
use crate::room::{RoomId, RoomKey};

/// The room an action names, if it names one (`None`: act here).
async fn room_of(
    state: &AppState,
    action: &str,
    p: &Params<'_>,
) -> Result<Option<RoomKey>, ApiError> {
    // RoomIdType is 0 = integer, 1 = string for relays; the reverse for
    // ingests and recordings.
    let typed = |int_is: u64| -> Result<Option<RoomKey>, ApiError> {
        let app = rooms::sdk_app_id(state, p)?;
        let s = p.req_str("RoomId")?;
        let room = if p.u64("RoomIdType")?.unwrap_or(int_is) == int_is {
            RoomId::numeric(s)
        } else {
            RoomId::string(s)
        }
        .map_err(|e| invalid("RoomId", e))?;
        Ok(Some(RoomKey { app, room }))
    };
    match action {
        "StartPublishCdnStream" => typed(0),
        "StartStreamIngest" | "CreateCloudRecording" => typed(1),
        "DismissRoom" | "RemoveUser" => rooms::room_key(state, p, false).map(Some),
        "DismissRoomByStrRoomId" | "RemoveUserByStrRoomId" => {
            rooms::room_key(state, p, true).map(Some)
        }
        "UpdatePublishCdnStream"
        | "StopPublishCdnStream"
        | "DescribeStreamIngest"
        | "StopStreamIngest"
        | "DescribeCloudRecording"
        | "ModifyCloudRecording"
        | "DeleteCloudRecording" => {
            let Some(cluster) = state.rooms.cluster() else {
                return Ok(None);
            };
            let Some(id) = p.str("TaskId")? else {
                return Ok(None);
            };
            if state.relays.status(id).is_some() {
                return Ok(None); // it runs here
            }
            // Any other task of this node's is its own to answer.
            let record = cluster.task(id).await.ok().flatten();
            let app = rooms::sdk_app_id(state, p)?;
            Ok(record
                .and_then(|r| RoomKey::parse(&r.room))
                .filter(|room| room.app == app))
        }
        _ => Ok(None),
    }
}

/// Where the action is carried out: `None` here, or the owner's address.
/// Actions that start something claim a room nobody owns for this node.
pub(super) async fn route(
    state: &AppState,
    action: &str,
    p: &Params<'_>,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let Some(cluster) = state.rooms.cluster() else {
        return Ok(None);
    };
    if headers.contains_key(forward::FORWARDED) {
        return Ok(None); // carried here already: the owner answers
    }
    let Some(room) = room_of(state, action, p).await? else {
        return Ok(None);
    };
    let starts = matches!(
        action,
        "StartPublishCdnStream" | "StartStreamIngest" | "CreateCloudRecording"
    );
    if starts {
        return match cluster.ensure_owned(&room).await {
            Ok(()) => Ok(None),
            Err(
                ClusterError::Elsewhere { http, .. } | ClusterError::PlacedElsewhere { http, .. },
            ) if http.starts_with("http") => Ok(Some(http)),
            Err(ClusterError::Full) => Err(ApiError::new(
                "FailedOperation.RestrictedConcurrency",
                "No node of the cluster has CPU budget left for this room.",
            )),
            Err(e) => Err(ApiError::new("FailedOperation", e.to_string())),
        };
    }
    // Redis down: the room, if it is anywhere reachable, is here.
    Ok(cluster
        .owner_elsewhere(&room)
        .await
        .ok()
        .flatten()
        .map(|(_, http)| http))
}

/// Carries the request to `http` and returns the owner's answer.
pub(super) async fn carry(
    http: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut req = axum::http::Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.path_and_query().map_or_else(
        || Uri::from_static("/"),
        |pq| pq.as_str().parse().unwrap_or(Uri::from_static("/")),
    );
    *req.headers_mut() = headers.clone();
    match forward::forward(http, req).await {
        Ok(resp) => resp.map(axum::body::Body::from).into_response(),
        Err(e) => {
            tracing::warn!("trtc api: {e}");
            super::envelope(
                Err(ApiError::new(
                    "InternalError",
                    "The node that owns the room did not answer.",
                )),
                "",
            )
        }
    }
}

/// After an action succeeded here: its task stored, updated or forgotten.
pub(super) async fn remember(
    state: &AppState,
    action: &str,
    p: &Params<'_>,
    params: &Map<String, Value>,
    out: &Map<String, Value>,
) {
    let Some(cluster) = state.rooms.cluster() else {
        return;
    };
    let Some(id) = out.get("TaskId").and_then(Value::as_str) else {
        return;
    };
    let room = match action {
        "StartPublishCdnStream" => match state.relays.status(id) {
            Some((spec, _)) => Some(spec.room.clone()),
            None => return,
        },
        "StartStreamIngest" | "CreateCloudRecording" => match room_of(state, action, p).await {
            Ok(Some(room)) => Some(room),
            _ => return,
        },
        _ => None,
    };
    if let Some(room) = room {
        // Its parameters (a recording's include its storage keys) stay in
        // Redis while it runs, so that another node can start it again.
        let record = TaskRecord {
            id: id.to_owned(),
            room: room.to_string(),
            node: cluster.node_id().to_owned(),
            action: action.to_owned(),
            params: Value::Object(params.clone()),
            updates: Vec::new(),
            resumes: 0,
        };
        if let Err(e) = cluster.save_task(&record).await {
            tracing::warn!(task = %id, "cluster: task not stored, it will not resume elsewhere: {e}");
        }
        return;
    }
    match action {
        "UpdatePublishCdnStream" | "ModifyCloudRecording" => {
            cluster
                .task_updated(id, Value::Object(params.clone()))
                .await
        }
        "StopPublishCdnStream" | "StopStreamIngest" | "DeleteCloudRecording" => {
            cluster.forget_task(id).await
        }
        _ => {}
    }
}

/// The node's tasks (relays and mixes, recordings, ingests) as the cluster
/// sees them.
struct ApiTasks(AppState);

impl crate::cluster::Tasks for ApiTasks {
    fn local(&self) -> LocalTasks {
        let mut local = LocalTasks::default();
        for (spec, st) in self.0.relays.list() {
            if !matches!(st.state, TaskState::Stopped(_)) {
                local.running.insert(spec.id.clone());
                local.running_rooms.insert(spec.room.clone());
            }
        }
        for (id, room, running) in self.0.recordings.list() {
            if running {
                local.running.insert(id);
                local.running_rooms.insert(room);
            }
        }
        for (id, info) in self.0.pulls.list() {
            local.running.insert(id);
            local.running_rooms.insert(info.room);
        }
        local
    }

    fn stop_room(&self, room: &RoomKey) {
        let stopping = |id: &str| tracing::info!(task = %id, room = %room, "cluster: stopping the task of a room lost to another node");
        for (spec, st) in self.0.relays.list() {
            if &spec.room == room && !matches!(st.state, TaskState::Stopped(_)) {
                stopping(&spec.id);
                let _ = self.0.relays.stop(&spec.id);
            }
        }
        for (id, r, running) in self.0.recordings.list() {
            if &r == room && running {
                stopping(&id);
                self.0.recordings.stop(r.app, &id);
            }
        }
        for (id, info) in self.0.pulls.list() {
            if &info.room == room {
                stopping(&id);
                self.0.pulls.stop(&id);
            }
        }
    }

    fn resume(
        &self,
        record: TaskRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        let state = self.0.clone();
        Box::pin(async move {
            if self_running(&state, &record.id) {
                return Ok(());
            }
            let Value::Object(params) = &record.params else {
                return Err("stored parameters are not an object".into());
            };
            let p = Params::new(params);
            let images = super::images::prefetch(&state, params)
                .await
                .map_err(|e| e.message)?;
            match record.action.as_str() {
                "StartPublishCdnStream" => {
                    let spec = relay::spec_as(&state, &p, &images, Some(record.id.clone()))
                        .map_err(|e| e.message)?;
                    continue_hls(&state, &spec).await;
                    state
                        .relays
                        .start(spec)
                        .map_err(|e| relay::relay_error(e).message)?;
                }
                "CreateCloudRecording" => {
                    let resume = crate::record::tasks::Resume {
                        id: record.id.clone(),
                        part: record.resumes.max(1),
                    };
                    super::recording::create_as(&state, &p, &images, Some(resume))
                        .map_err(|e| e.message)?;
                }
                "StartStreamIngest" => {
                    super::ingest::start_as(&state, &p, Some(record.id.clone()))
                        .await
                        .map_err(|e| e.message)?;
                }
                other => return Err(format!("{other} tasks are not started again")),
            }
            for update in &record.updates {
                let Value::Object(u) = update else { continue };
                let images = super::images::prefetch(&state, u)
                    .await
                    .map_err(|e| e.message)?;
                let p = Params::new(u);
                let r = match record.action.as_str() {
                    "CreateCloudRecording" => super::recording::modify(&state, &p, &images),
                    _ => relay::update(&state, &p, &images),
                };
                if let Err(e) = r {
                    tracing::warn!(task = %record.id, "cluster: a stored update does not apply again: {}", e.message);
                }
            }
            Ok(())
        })
    }
}

/// The HLS streams of a resumed relay task (its ladder's too) continue the
/// numbering their dead node announced: players following the stream see
/// the next segments after a discontinuity, not a new stream.
async fn continue_hls(state: &AppState, spec: &crate::relay::RelaySpec) {
    let Some(cluster) = state.rooms.cluster() else {
        return;
    };
    let Some(hls) = &spec.outputs.hls else {
        return;
    };
    let names = std::iter::once(spec.stream.clone()).chain(
        (0..hls.renditions.len()).map(|i| crate::hls::ladder::rendition_name(&spec.stream, i)),
    );
    for name in names {
        if let Some(at) = cluster.stream_position(&name).await {
            state.hls_store.continue_from(&name, at);
        }
    }
}

/// Whether task `id` (of any kind) runs on this node.
fn self_running(state: &AppState, id: &str) -> bool {
    state
        .relays
        .status(id)
        .is_some_and(|(_, st)| !matches!(st.state, TaskState::Stopped(_)))
        || state.pulls.get(id).is_some()
        || state
            .recordings
            .list()
            .iter()
            .any(|(i, _, running)| i == id && *running)
}

/// Hands the cluster this node's relay tasks (on a cluster node).
pub(crate) fn attach(state: &AppState) {
    if let Some(cluster) = state.rooms.cluster() {
        cluster.set_tasks(Arc::new(ApiTasks(state.clone())));
    }
}
