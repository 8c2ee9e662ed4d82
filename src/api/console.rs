//! The web console at `/console/`: a page embedded in the binary (std's
//! `include_bytes!`, no run-time fetches; hls.js is vendored beside it under
//! its Apache-2.0 licence) and the few endpoints only a browser needs.
//!
//! - `POST /console/api/login` `{"secret_id", "secret_key"}`: checks an API
//!   credential, opens a session (an HttpOnly, SameSite=Strict cookie) and
//!   answers its CSRF token; the SecretKey never leaves the login request.
//! - `GET /console/api/session`: the session's SecretId and CSRF token (a
//!   reloaded page stays logged in).
//! - `POST /console/api/logout`.
//! - `GET /console/api/events`: Server-Sent Events, one `status` event per
//!   second with the status API's whole document (node, rooms, tasks).
//! - `GET /console/api/profiles`: the loaded profiles' names and kinds.
//! - `POST /console/api/viewer` `{"sdkappid"}`: a UserSig for a fresh viewer
//!   id (`console-<hex>`), valid [`VIEWER_SIG_SECS`], for the page's WHEP
//!   preview of an anchor; WHEP checks it as it checks any viewer's.
//!
//! Every action the page takes goes through the API a script would use,
//! with the session in place of a signature (`credential`): `/v1/tasks` to
//! start, change and stop tasks, the TRTC API's RemoveUser and DismissRoom.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::credential::{self, SESSION_COOKIE, error_response as refuse};
use crate::auth::session::{Access, LIFETIME};
use crate::auth::tc3::constant_time_eq;

/// One embedded file: its name under `/console/`, type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("console/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("console/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("console/console.css"),
    },
    Asset {
        name: "hls.light.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("console/hls.light.min.js"),
    },
    Asset {
        name: "LICENSE.hls.js.txt",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("console/LICENSE.hls.js.txt"),
    },
];

/// The page may load only what this server serves (hls.js runs its
/// transmuxer in a blob: worker and feeds the player blob: media).
const CSP: &str = "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
                   worker-src 'self' blob:; connect-src 'self'; style-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Each asset's ETag, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        use sha2::Digest;
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", hex::encode(&sha2::Sha256::digest(a.bytes)[..12])))
            .collect()
    })
}

pub(crate) async fn index_redirect() -> Redirect {
    Redirect::permanent("/console/")
}

pub(crate) async fn index(headers: HeaderMap) -> Response {
    asset("", &headers)
}

pub(crate) async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    asset(&name, &headers)
}

fn asset(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such console file\n").into_response();
    };
    let (a, etag) = (&ASSETS[i], &etags()[i]);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body: &'static [u8] = if fresh { b"" } else { a.bytes };
    (
        status,
        [
            (header::CONTENT_TYPE, a.content_type),
            (header::ETAG, etag.as_str()),
            // Revalidate every time: a new binary serves a new page at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

fn no_store_json(v: Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    secret_id: String,
    secret_key: String,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    https: Option<axum::Extension<super::serve::Https>>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Log in with a JSON body: {\"secret_id\": …, \"secret_key\": …}.",
        );
    };
    let throttle = || {
        state
            .login_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    };
    if !throttle().allows(peer.ip(), Instant::now()) {
        tracing::warn!(%peer, "console login refused: too many failed logins from this address");
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "RequestLimitExceeded",
            "Too many failed logins from this address; try again in a minute.",
        );
    }
    let known = state.config.api_key(&req.secret_id);
    // Compare against something even for an unknown id: same work either way.
    let ok = constant_time_eq(known.unwrap_or("").as_bytes(), req.secret_key.as_bytes())
        && known.is_some();
    if !ok {
        throttle().failed(peer.ip(), Instant::now());
        tracing::info!(secret_id = %req.secret_id, %peer, "console login refused: wrong SecretId or SecretKey");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "AuthFailure.SignatureFailure",
            "The SecretId or SecretKey is wrong.",
        );
    }
    let (token, csrf) = (random_hex(), random_hex());
    let evicted = state
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .open(&req.secret_id, token.clone(), csrf.clone(), Instant::now());
    if evicted.is_some() {
        tracing::info!("console sessions full: the least recently used one was closed");
    }
    tracing::info!(secret_id = %req.secret_id, %peer, "console login");
    // Over HTTPS the browser must never send the cookie in the clear.
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if https.is_some() { "; Secure" } else { "" }
    );
    let mut resp = no_store_json(json!({"secret_id": req.secret_id, "csrf": csrf}));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(crate) async fn session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
    match credential::session_token(&headers).and_then(|t| sessions.csrf(t, Instant::now())) {
        Some((id, csrf)) => no_store_json(json!({"secret_id": id, "csrf": csrf})),
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "AuthFailure.TokenFailure",
            "Not logged in.",
        ),
    }
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = credential::admit(&state, (&method, &uri, &headers), b"", Access::Write) {
        return r;
    }
    if let Some(t) = credential::session_token(&headers) {
        state
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close(t);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("roomcast_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

/// A reading request's refusal, if it has neither signature nor session.
fn unreadable(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    credential::admit(state, (method, uri, headers), b"", Access::Read).err()
}

pub(crate) async fn profiles(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unreadable(&state, &method, &uri, &headers) {
        return r;
    }
    let list: Vec<Value> = state
        .profiles
        .iter()
        .map(|p| {
            let kind = match p.mode {
                crate::profile::RelayMode::Mix { .. } => "mix",
                crate::profile::RelayMode::Passthrough { .. } => "passthrough",
            };
            json!({
                "name": p.name,
                "kind": kind,
                "width": p.video.as_ref().map(|v| v.width),
                "height": p.video.as_ref().map(|v| v.height),
            })
        })
        .collect();
    no_store_json(Value::Array(list))
}

/// How long a console viewer's UserSig is valid: long enough to POST a
/// WHEP offer; the session it opens outlives it.
pub(crate) const VIEWER_SIG_SECS: u64 = 120;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Viewer {
    sdkappid: u64,
}

pub(crate) async fn viewer(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<Viewer>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let secret_id = match credential::admit(&state, (&method, &uri, &headers), b"", Access::Write) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Ok(Json(req)) = body else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Ask with a JSON body: {\"sdkappid\": …}.",
        );
    };
    let Some(key) = state.config.app_key(req.sdkappid) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidParameter.SdkAppId",
            "SdkAppId is incorrect.",
        );
    };
    let user = format!("console-{}", &random_hex()[..16]);
    let sig = crate::auth::usersig::generate(
        req.sdkappid,
        key,
        &user,
        VIEWER_SIG_SECS,
        crate::unix_now(),
        None,
    );
    tracing::info!(%secret_id, sdkappid = req.sdkappid, viewer = %user, "console viewer UserSig issued");
    no_store_json(json!({"userid": user, "usersig": sig, "expire": VIEWER_SIG_SECS}))
}

/// How often the console's live view is refreshed.
const EVENT_PERIOD: Duration = Duration::from_secs(1);

pub(crate) async fn events(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unreadable(&state, &method, &uri, &headers) {
        return r;
    }
    let token = credential::session_token(&headers).map(str::to_owned);
    let mut tick = crate::ticks::interval(EVENT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures_util::stream::unfold(
        (state, token, tick, false),
        |(state, token, mut tick, ended)| async move {
            if ended {
                return None;
            }
            tick.tick().await;
            // A session logged out (or expired) ends its stream.
            let live = token.as_deref().is_none_or(|t| {
                state
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .check(t, None, Access::Read, Instant::now())
                    .is_ok()
            });
            let event = if live {
                Event::default()
                    .event("status")
                    .data(super::status::document(&state).await.to_string())
            } else {
                Event::default().event("logout").data("{}")
            };
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (state, token, tick, !live),
            ))
        },
    );
    let mut resp = Sse::new(stream).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
