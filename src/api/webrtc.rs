//! WHIP and WHEP over HTTP (RFC 9725 and the WHEP draft).
//!
//! `POST /v1/whip/<RoomId>?sdkappid=&userid=[&roomtype=]` and
//! `POST /v1/whep/<RoomId>/<AnchorUserID>?...`, `Authorization: Bearer
//! <UserSig>`, body `application/sdp`: 201 with the answer and `Location:
//! /v1/sessions/<id>`. `DELETE` that location ends the session; `PATCH`
//! (trickle ICE) is answered 405, as the RFC allows a server without trickle;
//! `OPTIONS` and CORS headers let a browser page publish and play.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::room::{RoomId, RoomIdType, RoomKey, UserId};
use crate::webrtc::{SessionRequest, WebRtcError};

#[derive(Debug, Deserialize)]
pub(crate) struct SessionQuery {
    sdkappid: Option<String>,
    userid: Option<String>,
    roomtype: Option<String>,
}

const ALLOW_METHODS: &str = "POST, DELETE, PATCH, OPTIONS";

fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link, ETag, Accept-Post"),
    );
    r
}

fn error(status: StatusCode, reason: String) -> Response {
    cors(
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            reason + "\n",
        )
            .into_response(),
    )
}

impl IntoResponse for WebRtcError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebRtcError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebRtcError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebRtcError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebRtcError::NotFound(_) => StatusCode::NOT_FOUND,
            WebRtcError::Conflict(_) => StatusCode::CONFLICT,
            WebRtcError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            WebRtcError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebRtcError::Internal(e) => {
                tracing::warn!("webrtc session failed: {e}");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the session could not be set up".into(),
                );
            }
        };
        error(status, self.to_string())
    }
}

/// The room, user, UserSig and offer of a WHIP/WHEP POST, or why not.
fn session_request(
    room_id: &str,
    q: &SessionQuery,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<SessionRequest, (StatusCode, String)> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body must be an SDP offer (Content-Type: application/sdp), not `{ctype}`"),
        ));
    }
    let bad = |m: String| Err((StatusCode::BAD_REQUEST, m));
    let Some(app) = q.sdkappid.as_deref() else {
        return bad("missing sdkappid".into());
    };
    let Ok(app) = app.parse::<u64>() else {
        return bad("sdkappid must be an unsigned integer".into());
    };
    let Some(userid) = q.userid.as_deref() else {
        return bad("missing userid".into());
    };
    let user = match UserId::new(userid) {
        Ok(u) => u,
        Err(e) => return bad(e.to_string()),
    };
    let ty = match q.roomtype.as_deref() {
        None => None,
        Some("str") => Some(RoomIdType::Str),
        Some("int") => Some(RoomIdType::Int),
        Some(_) => return bad("roomtype must be int or str".into()),
    };
    let room = match RoomId::parse(room_id, ty) {
        Ok(r) => r,
        Err(e) => return bad(e.to_string()),
    };
    let usersig = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(usersig) = usersig else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <UserSig>`".into(),
        ));
    };
    let Ok(offer) = std::str::from_utf8(body) else {
        return bad("the SDP offer is not UTF-8".into());
    };
    Ok(SessionRequest {
        room: RoomKey { app, room },
        user,
        usersig: usersig.to_owned(),
        offer: offer.to_owned(),
    })
}

fn created(id: &str, answer: String) -> Response {
    cors(
        (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/sdp".to_owned()),
                (header::LOCATION, format!("/v1/sessions/{id}")),
            ],
            answer,
        )
            .into_response(),
    )
}

/// On a cluster node: a 307 to the room's owner (same path and query),
/// or a refusal when the cluster cannot place the room.
async fn elsewhere(
    s: &AppState,
    req: &SessionRequest,
    publish: bool,
    uri: &axum::http::Uri,
) -> Option<Response> {
    let (room, user, usersig) = (&req.room, &req.user, &req.usersig);
    let cluster = s.rooms.cluster()?;
    // Strangers learn nothing of the cluster and claim no room: the
    // UserSig first (the owner checks it again).
    if let Err(e) = crate::auth::client::authenticate(
        s.config.app_key(room.app),
        room.app,
        user.as_str(),
        usersig,
        crate::unix_now(),
    ) {
        return Some(error(StatusCode::UNAUTHORIZED, e.to_string()));
    }
    match cluster.redirect_for(room, publish).await {
        Ok(None) => None,
        Ok(Some(http)) => {
            let to = format!(
                "{}{}",
                http.trim_end_matches('/'),
                uri.path_and_query().map_or("", |p| p.as_str())
            );
            tracing::info!(room = %room, to = %to, "webrtc session sent to the room's owner node");
            Some(cors(
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, to)],
                    "the room is owned by another cluster node\n",
                )
                    .into_response(),
            ))
        }
        Err(e @ crate::cluster::ClusterError::Elsewhere { .. }) => {
            Some(error(StatusCode::CONFLICT, e.to_string()))
        }
        Err(e) => Some(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

pub(crate) async fn whip(
    State(s): State<AppState>,
    Path(room_id): Path<String>,
    Query(q): Query<SessionQuery>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match session_request(&room_id, &q, &headers, &body) {
        Ok(r) => r,
        Err((status, reason)) => return error(status, reason),
    };
    if let Some(r) = elsewhere(&s, &req, true, &uri).await {
        return r;
    }
    match crate::webrtc::whip::publish(&s.webrtc, req).await {
        Ok(started) => created(&started.id, started.answer),
        Err(e) => {
            tracing::info!("whip refused: {e}");
            e.into_response()
        }
    }
}

pub(crate) async fn whep(
    State(s): State<AppState>,
    Path((room_id, anchor)): Path<(String, String)>,
    Query(q): Query<SessionQuery>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match session_request(&room_id, &q, &headers, &body) {
        Ok(r) => r,
        Err((status, reason)) => return error(status, reason),
    };
    if let Some(r) = elsewhere(&s, &req, false, &uri).await {
        return r;
    }
    let anchor = match UserId::new(&anchor) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match crate::webrtc::whep::play(&s.webrtc, req, anchor).await {
        Ok(started) => created(&started.id, started.answer),
        Err(e) => {
            tracing::info!("whep refused: {e}");
            e.into_response()
        }
    }
}

pub(crate) async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if s.webrtc.end(&id) {
        cors(StatusCode::OK.into_response())
    } else {
        error(StatusCode::NOT_FOUND, "no such session".into())
    }
}

/// Trickle ICE and ICE restarts are not supported: 405 (RFC 9725 §4.3.1).
pub(crate) async fn patch(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if !s.webrtc.exists(&id) {
        return error(StatusCode::NOT_FOUND, "no such session".into());
    }
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported: send every candidate in the offer".into(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    r
}

/// CORS preflight and WHIP's `Accept-Post`.
pub(crate) async fn options() -> Response {
    let mut r = cors(StatusCode::NO_CONTENT.into_response());
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOW_METHODS));
    r
}
