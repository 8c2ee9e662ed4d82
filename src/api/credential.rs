//! Who is calling: an API credential, shown either by a TC3-HMAC-SHA256
//! signature (scripts, the SDKs, the CLI) or by a console session made from
//! one at login (a browser). One gate for the status API, the task API, the
//! TRTC API and the console's live events, so the console can do nothing a
//! script with the same credential could not.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::session::{Access, SessionError, Sessions};
use crate::auth::tc3::{self, SignedRequest, Tc3Error};

/// The console's session cookie.
pub(crate) const SESSION_COOKIE: &str = "roomcast_console";
/// The header carrying a session's CSRF token on every change.
pub(crate) const CSRF_HEADER: &str = "x-roomcast-csrf";

/// The console sessions of this node.
pub(crate) type SessionStore = Arc<Mutex<Sessions>>;
/// Failed console logins per address.
pub(crate) type LoginThrottleStore = Arc<Mutex<crate::auth::session::LoginThrottle>>;

/// Why a caller is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("{0}")]
    Tc3(#[from] Tc3Error),
    #[error("{0}")]
    Session(#[from] SessionError),
}

impl Refusal {
    /// The API 3.0 error code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::Tc3(e) => e.code(),
            Refusal::Session(SessionError::NoSession) => "AuthFailure.TokenFailure",
            Refusal::Session(SessionError::Csrf) => "AuthFailure.UnauthorizedOperation",
        }
    }
}

/// What the request is, for its signature.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The canonical URI the signature covers.
    pub path: &'a str,
    /// The canonical query string the signature covers.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub access: Access,
}

/// The SecretId the request acts as. A request with an `Authorization`
/// header is judged by its signature alone; one without, by its session.
pub(crate) fn caller(state: &AppState, req: &Request<'_>) -> Result<String, Refusal> {
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    if header("authorization").is_none()
        && let Some(token) = session_token(req.headers)
    {
        let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
        return Ok(sessions.check(token, header(CSRF_HEADER), req.access, Instant::now())?);
    }
    let signed = SignedRequest {
        method: req.method,
        path: req.path,
        query: req.query,
        header: &header,
        body: req.body,
    };
    let verified = tc3::verify(
        &signed,
        crate::unix_now(),
        state.config.api.max_clock_skew_secs,
        |id| state.config.api_key(id),
    )?;
    Ok(verified.secret_id)
}

/// `{"error": {"code", "message"}}` with `status`: how the status API,
/// the task API and the console refuse.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

/// The caller of a request with this `access` and `body`, or the 401 to
/// send back.
#[allow(clippy::result_large_err)]
pub(crate) fn admit(
    state: &AppState,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    body: &[u8],
    access: Access,
) -> Result<String, Response> {
    let req = Request {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        body,
        access,
    };
    caller(state, &req).map_err(|e| {
        tracing::debug!(%method, path = uri.path(), "refused: {e}");
        error_response(StatusCode::UNAUTHORIZED, e.code(), &e.to_string())
    })
}

/// The session token in the request's cookies, if any.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(session_token(&h), None);
        h.append(
            "cookie",
            HeaderValue::from_static("a=1; roomcast_console=tok; b=2"),
        );
        assert_eq!(session_token(&h), Some("tok"));
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("roomcast_console="));
        assert_eq!(session_token(&h), None);
    }
}
