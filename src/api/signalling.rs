//! Room signalling over WebSocket: `GET /v1/rooms/<RoomId>/ws`.
//!
//! The UserSig (and any PrivateMapKey in it) is checked and the user enters
//! the room before the upgrade, so a refusal is a plain HTTP status with a
//! reason. After the upgrade the socket carries JSON: the room state first,
//! then events; the client may send `switch_role`, `leave` and `ping`. A
//! socket that closes (or stops answering pings) without `leave` is a
//! disconnect, which the room engine turns into its 90 s grace.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::auth::client::authenticate;
use crate::cluster::ClusterError;
use crate::room::{
    Command, Enter, EventKind, Grant, Role, RoomCallError, RoomError, RoomEvent, RoomHandle,
    RoomId, RoomIdType, RoomKey, RoomState, Scene, SessionId, UserId,
};

/// Largest client message accepted.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The server pings this often...
/// How long a proxied session waits for the owner node's WebSocket.
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// ...and treats a socket silent for this long as dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A refusal before the upgrade: status and one-line reason.
pub(crate) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, reason.into())
}

fn unauthorized(reason: impl Into<String>) -> Refusal {
    Refusal(StatusCode::UNAUTHORIZED, reason.into())
}

/// Maps an engine refusal to a status.
fn refusal(e: RoomCallError) -> Refusal {
    let status = match &e {
        RoomCallError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        RoomCallError::Cluster(c) => match c {
            ClusterError::Elsewhere { .. } | ClusterError::PlacedElsewhere { .. } => {
                StatusCode::MISDIRECTED_REQUEST
            }
            ClusterError::Full | ClusterError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        },
        RoomCallError::Refused(r) => match r {
            RoomError::UnknownApp(_) | RoomError::Grant(_) => StatusCode::FORBIDDEN,
            RoomError::InAnotherRoom(_) | RoomError::SessionInUse => StatusCode::CONFLICT,
            RoomError::TooManyRooms(_) | RoomError::RoomFull(_) | RoomError::TooManyAnchors(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            _ => StatusCode::BAD_REQUEST,
        },
    };
    Refusal(status, e.to_string())
}

#[derive(Deserialize)]
pub(crate) struct WsQuery {
    sdkappid: Option<String>,
    userid: Option<String>,
    usersig: Option<String>,
    role: Option<String>,
    roomtype: Option<String>,
    scene: Option<String>,
    hidden: Option<String>,
}

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    Query(q): Query<WsQuery>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ws: WebSocketUpgrade,
) -> Result<Response, Refusal> {
    let unix_now = crate::unix_now();
    let enter = parse_entry(&state, &room_id, q, unix_now)?;

    let rooms = state.rooms.clone();
    let mut events = rooms.subscribe();
    let session = enter.session;
    let key = enter.room.clone();
    let user = enter.user.clone();
    match rooms.command(Command::Enter(enter)).await {
        Ok(()) => {}
        Err(RoomCallError::Cluster(
            ClusterError::Elsewhere { http, node, .. }
            | ClusterError::PlacedElsewhere { http, node, .. },
        )) if http.starts_with("http") => {
            // Browsers do not follow redirects on WebSocket: the session is
            // carried to the owner node.
            tracing::info!(room = %key, user = %user, owner = %node, "signalling session proxied to the room's owner node");
            return proxy(ws, &http, &uri).await;
        }
        Err(e) => return Err(refusal(e)),
    }
    tracing::info!(room = %key, user = %user, session = session.0, "signalling session entered");

    // The first event for this session is its welcome; take it before the
    // upgrade so the state sent first is the state at entry.
    let welcome = loop {
        match events.recv().await {
            Ok(ev) if ev.is_for(&key, session) => {
                if let EventKind::Welcome { state } = &ev.kind {
                    break state.clone();
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => {
                return Err(Refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down".into(),
                ));
            }
        }
    };

    let failed_rooms = rooms.clone();
    let rate = state.config.http.ws_messages_per_sec;
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        // A frame's declared length is reserved before the message limit is
        // checked: bound frames too.
        .max_frame_size(MAX_MESSAGE_BYTES)
        // Signalling messages are small: 128 KiB read and write buffers a
        // socket (the defaults) made a thousand members cost 140 MB.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE_BYTES * 4)
        .on_failed_upgrade(move |e| {
            tracing::info!(session = session.0, "websocket upgrade failed: {e}");
            tokio::spawn(async move {
                let _ = failed_rooms.command(Command::Disconnect { session }).await;
            });
        })
        .on_upgrade(move |socket| async move {
            let conn = Connection {
                rooms,
                session,
                key,
                rate,
                finished: false,
            };
            conn.run(socket, welcome, events).await;
        }))
}

/// Opens the same WebSocket on the owner node (`http` as `ws://`, same path
/// and query, so the owner checks the UserSig again), then upgrades the
/// client and carries messages both ways until either side closes. The
/// owner's refusal is passed on as it is.
async fn proxy(
    ws: WebSocketUpgrade,
    http: &str,
    uri: &axum::http::Uri,
) -> Result<Response, Refusal> {
    use tokio_tungstenite::tungstenite;
    let base = http.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.trim_start_matches("http://"))
    };
    let url = format!("{base}{}", uri.path_and_query().map_or("", |p| p.as_str()));
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let upstream = match crate::ticks::timeout(PROXY_CONNECT_TIMEOUT, connect).await {
        Ok(Ok((u, _))) => u,
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            return Err(Refusal(status, body));
        }
        Ok(Err(e)) => {
            return Err(Refusal(
                StatusCode::BAD_GATEWAY,
                format!("the room's owner node cannot be reached: {e}"),
            ));
        }
        Err(_) => {
            return Err(Refusal(
                StatusCode::GATEWAY_TIMEOUT,
                "the room's owner node did not answer in time".into(),
            ));
        }
    };
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |client| carry(client, upstream)))
}

/// Carries text, binary and close messages between a client and its
/// owner node; pings are each side's own.
async fn carry(
    mut client: WebSocket,
    mut upstream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Up;
    loop {
        tokio::select! {
            m = client.recv() => {
                let up = match m {
                    Some(Ok(Message::Text(t))) => Up::text(t.as_str()),
                    Some(Ok(Message::Binary(b))) => Up::binary(b),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        let _ = upstream.close(None).await;
                        return;
                    }
                };
                if upstream.send(up).await.is_err() {
                    let _ = client.send(Message::Close(None)).await;
                    return;
                }
            }
            m = upstream.next() => {
                let down = match m {
                    Some(Ok(Up::Text(t))) => Message::Text(t.as_str().into()),
                    Some(Ok(Up::Binary(b))) => Message::Binary(b),
                    Some(Ok(Up::Ping(_) | Up::Pong(_) | Up::Frame(_))) => continue,
                    Some(Ok(Up::Close(_))) | Some(Err(_)) | None => {
                        let _ = client.send(Message::Close(None)).await;
                        return;
                    }
                };
                if client.send(down).await.is_err() {
                    let _ = upstream.close(None).await;
                    return;
                }
            }
        }
    }
}

/// Validates the query, then the UserSig: malformed requests are 400, bad
/// signatures 401.
fn parse_entry(
    state: &AppState,
    room_id: &str,
    q: WsQuery,
    unix_now: u64,
) -> Result<Enter, Refusal> {
    let sdkappid: u64 = q
        .sdkappid
        .as_deref()
        .ok_or_else(|| bad("missing sdkappid"))?
        .parse()
        .map_err(|_| bad("sdkappid must be an unsigned integer"))?;
    let userid = q.userid.as_deref().ok_or_else(|| bad("missing userid"))?;
    let user = UserId::new(userid).map_err(|e| bad(e.to_string()))?;
    let usersig = q
        .usersig
        .as_deref()
        .ok_or_else(|| unauthorized("missing usersig"))?;
    let ty = match q.roomtype.as_deref() {
        None => None,
        Some("int") => Some(RoomIdType::Int),
        Some("str") => Some(RoomIdType::Str),
        Some(_) => return Err(bad("roomtype must be int or str")),
    };
    let room = RoomId::parse(room_id, ty).map_err(|e| bad(e.to_string()))?;
    let role = match q.role.as_deref() {
        None | Some("anchor") => Role::Anchor,
        Some("audience") => Role::Audience,
        Some(_) => return Err(bad("role must be anchor or audience")),
    };
    let scene = match q.scene.as_deref() {
        None => Scene::Live,
        Some(s) => Scene::parse(s)
            .ok_or_else(|| bad("scene must be videocall, audiocall, live or voicechatroom"))?,
    };
    let hidden = match q.hidden.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(bad("hidden must be 0 or 1")),
    };

    let grant = authenticate(
        state.config.app_key(sdkappid),
        sdkappid,
        userid,
        usersig,
        unix_now,
    )
    .map_err(|e| unauthorized(e.to_string()))?
    .map(Grant::from);
    Ok(Enter {
        room: RoomKey {
            app: sdkappid,
            room,
        },
        user,
        session: state.rooms.new_session(),
        role,
        scene,
        hidden,
        grant,
        unix_now,
    })
}

struct Connection {
    rooms: RoomHandle,
    session: SessionId,
    key: RoomKey,
    /// `http.ws_messages_per_sec`.
    rate: u32,
    /// The room was told how the socket ended.
    finished: bool,
}

/// A socket task that dies inside (a panic) or is dropped as the gateway
/// stops must not leave its member in the room for ever: it is
/// disconnected, as if its socket had dropped.
impl Drop for Connection {
    fn drop(&mut self) {
        if !self.finished {
            crate::panics::unfinished!(
                "signalling session",
                "it is disconnected",
                room = %self.key, session = self.session.0
            );
            self.rooms.end_detached(self.session, false);
        }
    }
}

/// How a socket ended, which decides what the room is told.
enum End {
    /// The client sent `leave`.
    Left,
    /// The room ended this session (replaced, removed, room closed).
    Ended,
    /// The socket closed or went silent without `leave`.
    Dropped,
}

impl Connection {
    async fn run(
        mut self,
        mut socket: WebSocket,
        welcome: RoomState,
        mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<RoomEvent>>,
    ) {
        let end = 'conn: {
            if send(&mut socket, welcome_json(&self.key, self.session, &welcome))
                .await
                .is_err()
            {
                break 'conn End::Dropped;
            }
            let mut ping = crate::ticks::interval(PING_INTERVAL);
            ping.tick().await;
            let mut last_heard = tokio::time::Instant::now();
            let mut bucket = crate::net::TokenBucket::new(self.rate, self.rate.saturating_mul(2));
            loop {
                tokio::select! {
                    msg = socket.recv() => {
                        let Some(Ok(msg)) = msg else { break 'conn End::Dropped };
                        last_heard = tokio::time::Instant::now();
                        if !bucket.take(std::time::Instant::now()) {
                            // Every room's commands go through one engine:
                            // a flood here would slow them all.
                            crate::metrics::metrics().limit_hit("ws", "message_rate");
                            tracing::warn!(room = %self.key, session = self.session.0, limit = self.rate, "signalling socket closed: more than http.ws_messages_per_sec messages a second");
                            let _ = socket
                                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                                    code: 1008,
                                    reason: "more messages a second than http.ws_messages_per_sec allows".into(),
                                })))
                                .await;
                            break 'conn End::Dropped;
                        }
                        match msg {
                            Message::Text(text) => {
                                match self.on_client_message(text.as_str()).await {
                                    Ok(Some(reply)) => {
                                        if send(&mut socket, reply).await.is_err() {
                                            break 'conn End::Dropped;
                                        }
                                    }
                                    Ok(None) => {}
                                    Err(End::Left) => break 'conn End::Left,
                                    Err(other) => break 'conn other,
                                }
                            }
                            Message::Binary(_) => {
                                let _ = send(&mut socket, json!({"type": "error", "message": "binary messages are not supported"})).await;
                            }
                            Message::Close(_) => break 'conn End::Dropped,
                            Message::Ping(_) | Message::Pong(_) => {}
                        }
                    }
                    ev = events.recv() => match ev {
                        Ok(ev) if ev.is_for(&self.key, self.session) => {
                            let (msg, ends) = event_json(&ev);
                            if let Some(m) = msg
                                && send(&mut socket, m).await.is_err()
                            {
                                break 'conn End::Dropped;
                            }
                            if ends {
                                break 'conn End::Ended;
                            }
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(session = self.session.0, missed = n, "signalling socket lagged; closing for resync");
                            break 'conn End::Dropped;
                        }
                        Err(RecvError::Closed) => break 'conn End::Ended,
                    },
                    _ = ping.tick() => {
                        if last_heard.elapsed() > IDLE_TIMEOUT {
                            tracing::info!(session = self.session.0, "signalling socket silent; treating as dropped");
                            break 'conn End::Dropped;
                        }
                        if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                            break 'conn End::Dropped;
                        }
                    }
                }
            }
        };
        self.finished = true;
        match end {
            End::Left => {
                let _ = self
                    .rooms
                    .command(Command::Leave {
                        session: self.session,
                    })
                    .await;
                let _ = send(&mut socket, json!({"type": "left"})).await;
            }
            End::Dropped => {
                tracing::info!(room = %self.key, session = self.session.0, "signalling socket dropped");
                let _ = self
                    .rooms
                    .command(Command::Disconnect {
                        session: self.session,
                    })
                    .await;
            }
            End::Ended => {}
        }
        let _ = socket.send(Message::Close(None)).await;
    }

    /// Handles one client message; `Ok(Some)` is a reply, `Err` ends the socket.
    async fn on_client_message(&self, text: &str) -> Result<Option<Value>, End> {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return Ok(Some(json!({"type": "error", "message": "not JSON"})));
        };
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        let reply_err =
            |message: String| Ok(Some(json!({"type": "error", "id": id, "message": message})));
        match v.get("type").and_then(Value::as_str) {
            Some("ping") => Ok(Some(json!({"type": "pong", "id": id}))),
            Some("leave") => Err(End::Left),
            Some("switch_role") => {
                let role = match v.get("role").and_then(Value::as_str) {
                    Some("anchor") => Role::Anchor,
                    Some("audience") => Role::Audience,
                    _ => return reply_err("switch_role needs role: anchor or audience".into()),
                };
                match self
                    .rooms
                    .command(Command::SwitchRole {
                        session: self.session,
                        role,
                    })
                    .await
                {
                    Ok(()) => Ok(Some(json!({"type": "ok", "id": id}))),
                    Err(RoomCallError::Refused(RoomError::NoSuchSession)) => Err(End::Ended),
                    Err(e) => reply_err(e.to_string()),
                }
            }
            Some(other) => reply_err(format!("unknown message type `{other}`")),
            None => reply_err("a message needs a string `type`".into()),
        }
    }
}

async fn send(socket: &mut WebSocket, v: Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(v.to_string().into())).await
}

fn welcome_json(key: &RoomKey, session: SessionId, s: &RoomState) -> Value {
    json!({
        "type": "welcome",
        "sdkappid": key.app,
        "room": key.room.to_string(),
        "roomtype": match key.room { RoomId::Num(_) => "int", RoomId::Str(_) => "str" },
        "session": session.0,
        "scene": s.scene.as_str(),
        "owner": s.owner.as_str(),
        "role": s.role.as_str(),
        "members": s.members.iter().map(|m| json!({
            "userid": m.user.as_str(),
            "role": m.role.as_str(),
            "publishing": m.publishing.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The JSON for an event, and whether it ends this session.
fn event_json(ev: &RoomEvent) -> (Option<Value>, bool) {
    let v = match &ev.kind {
        EventKind::Welcome { .. } | EventKind::RoomCreated { .. } => return (None, false),
        EventKind::RoomClosed { reason } => {
            return (
                Some(json!({"type": "room_closed", "reason": reason.as_str()})),
                true,
            );
        }
        EventKind::UserEntered { user, role } => {
            json!({"type": "user_entered", "userid": user.as_str(), "role": role.as_str()})
        }
        EventKind::UserExited { user, reason } => {
            json!({"type": "user_exited", "userid": user.as_str(), "reason": reason.as_str()})
        }
        EventKind::RoleSwitched { user, role } => {
            json!({"type": "role_switched", "userid": user.as_str(), "role": role.as_str()})
        }
        EventKind::TrackPublished { user, kind } => {
            json!({"type": "track_published", "userid": user.as_str(), "kind": kind.as_str()})
        }
        EventKind::TrackUnpublished { user, kind } => {
            json!({"type": "track_unpublished", "userid": user.as_str(), "kind": kind.as_str()})
        }
        EventKind::OwnerChanged { owner } => {
            json!({"type": "owner_changed", "owner": owner.as_str()})
        }
        EventKind::SessionReplaced { .. } => {
            return (
                Some(json!({"type": "kicked", "reason": "replaced_by_new_session"})),
                true,
            );
        }
        EventKind::SessionEnded { reason, .. } => {
            return (
                Some(json!({"type": "kicked", "reason": reason.as_str()})),
                true,
            );
        }
    };
    (Some(v), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::testing::{Anchor, config, panic_holding};

    /// A socket task that dies inside (dropped before it told the room how
    /// the socket ended, as a panic drops it) is disconnected, not left a
    /// member for ever.
    #[tokio::test]
    async fn a_socket_task_that_dies_is_disconnected_from_its_room() {
        let a = Anchor::enter(&config(), "student").await;
        let conn = Connection {
            rooms: a.rooms.clone(),
            session: a.session,
            key: a.room.clone(),
            rate: 10,
            finished: false,
        };
        panic_holding(conn).await;
        a.wait_connected(Some(false), "the session was not disconnected")
            .await;
    }
}
