//! The HTTP edge: one axum router for everything on the HTTP port.
//!
//! Owns request parsing and response shapes; delegates decisions to the
//! cores (room engine, auth). Internal errors are logged, never echoed.
//! Routes: `GET /healthz`; `GET /v1/rooms/<RoomId>/ws` (room signalling);
//! `/v1/relays` (relay admin, loopback only); `/v1/status/...` and
//! `/v1/tasks` (an API credential: TC3 or a console session); `/console/`
//! (the web console); `GET /metrics`; `GET /hls/<stream>/<file>`;
//! `POST /` and `GET /` (the TRTC server API); `/v1/whip/<RoomId>`,
//! `/v1/whep/<RoomId>/<AnchorUserID>` and `/v1/sessions/<id>` (WebRTC).

pub(crate) mod console;
pub(crate) mod credential;
pub(crate) mod hls;
pub(crate) mod metrics;
pub(crate) mod relays;
pub(crate) mod serve;
pub(crate) mod signalling;
pub(crate) mod status;
pub(crate) mod tasks;
pub(crate) mod trtc;
pub(crate) mod webrtc;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post};

use crate::config::Config;
use crate::profile::RelayProfile;
use crate::relay::RelayManager;
use crate::room::RoomHandle;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<Config>,
    pub rooms: RoomHandle,
    pub relays: RelayManager,
    pub profiles: Arc<Vec<RelayProfile>>,
    /// Live fMP4 HLS, in memory.
    pub hls_store: crate::hls::store::HlsStore,
    pub webrtc: crate::webrtc::WebRtc,
    pub pulls: crate::pull::PullManager,
    pub recordings: crate::record::tasks::Recordings,
    pub hub: crate::media::hub::MediaHub,
    /// Console logins.
    pub sessions: credential::SessionStore,
    /// Failed console logins per address.
    pub login_throttle: credential::LoginThrottleStore,
}

pub(crate) fn router(state: AppState) -> Router {
    let body_limit = DefaultBodyLimit::max(state.config.http.max_body_bytes);
    Router::new()
        // The TRTC API reads its body itself to answer oversize in its envelope.
        .route(
            "/",
            get(trtc::handle)
                .post(trtc::handle)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::get))
        .route("/v1/status", get(status::all))
        .route("/v1/status/{part}", get(status::part))
        .route("/v1/tasks", post(tasks::start))
        .route("/v1/tasks/{id}", patch(tasks::update).delete(tasks::stop))
        .route("/console", get(console::index_redirect))
        .route("/console/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route("/console/api/login", post(console::login))
        .route("/console/api/logout", post(console::logout))
        .route("/console/api/session", get(console::session))
        .route("/console/api/events", get(console::events))
        .route("/console/api/profiles", get(console::profiles))
        .route("/console/api/viewer", post(console::viewer))
        .route("/v1/rooms/{room_id}/ws", get(signalling::upgrade))
        .route("/v1/relays", get(relays::list).post(relays::start))
        .route(
            "/v1/relays/{id}",
            get(relays::get).delete(relays::stop).patch(relays::update),
        )
        .route("/hls/{stream}/{file}", get(hls::get))
        .route(
            "/v1/whip/{room_id}",
            post(webrtc::whip)
                .options(webrtc::options)
                .layer(DefaultBodyLimit::max(crate::webrtc::MAX_SDP_BYTES)),
        )
        .route(
            "/v1/whep/{room_id}/{anchor}",
            post(webrtc::whep)
                .options(webrtc::options)
                .layer(DefaultBodyLimit::max(crate::webrtc::MAX_SDP_BYTES)),
        )
        .route(
            "/v1/sessions/{id}",
            delete(webrtc::delete)
                .patch(webrtc::patch)
                .options(webrtc::options),
        )
        .layer(body_limit)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness for a load balancer: on a cluster node, whether it can take
/// new rooms (Redis answers); 503 with the reason while it cannot. Its
/// running rooms go on either way (`/healthz` stays 200).
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.rooms.cluster() {
        Some(c) if !c.redis_up() => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the cluster store (Redis) is unreachable, so new rooms are refused; running rooms continue\n",
        )
            .into_response(),
        _ => "ready\n".into_response(),
    }
}
