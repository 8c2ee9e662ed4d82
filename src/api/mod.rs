//! The HTTP edge: one axum router for everything on the HTTP port.
//!
//! Owns request parsing and response shapes; delegates decisions to the
//! cores (room engine, auth). Internal errors are logged, never echoed.
//! Routes: `GET /healthz`; `GET /v1/rooms/<RoomId>/ws` (room signalling).

pub mod signalling;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

use crate::config::Config;
use crate::room::RoomHandle;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub rooms: RoomHandle,
}

pub fn router(state: AppState) -> Router {
    let body_limit = DefaultBodyLimit::max(state.config.http.max_body_bytes);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/rooms/{room_id}/ws", get(signalling::upgrade))
        .layer(body_limit)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}
