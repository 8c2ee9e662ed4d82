//! `/v1/tasks`: start a relay or mix task from a profile, change it, stop
//! it, for callers with an API credential wherever they are: signed with
//! TC3-HMAC-SHA256 over the request's path and body, or carrying a console
//! session and its CSRF token. The bodies and answers are the relay admin
//! path's (`relays`); the task list is `/v1/status/tasks`.
//!
//! `POST /v1/tasks`, `PATCH /v1/tasks/<id>`, `DELETE /v1/tasks/<id>`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::AppState;
use super::credential;
use super::relays;
use crate::auth::session::Access;

/// The caller's parsed body, or the refusal to send back.
#[allow(clippy::result_large_err)]
fn admitted<T: DeserializeOwned>(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<T>, Response> {
    let secret_id = credential::admit(state, (method, uri, headers), body, Access::Write)?;
    tracing::debug!(%secret_id, %method, path = uri.path(), "task API call");
    if body.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| relays::err(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

pub(crate) async fn start(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admitted(&state, &method, &uri, &headers, &body) {
        Ok(Some(req)) => relays::start_relay(&state, req).await,
        Ok(None) => relays::err(StatusCode::BAD_REQUEST, "a JSON body is required"),
        Err(r) => r,
    }
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admitted(&state, &method, &uri, &headers, &body) {
        Ok(Some(req)) => relays::update_relay(&state, &id, req),
        Ok(None) => relays::err(StatusCode::BAD_REQUEST, "a JSON body is required"),
        Err(r) => r,
    }
}

pub(crate) async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admitted::<serde_json::Value>(&state, &method, &uri, &headers, &body) {
        Ok(_) => relays::stop_relay(&state, &id),
        Err(r) => r,
    }
}
