//! The TRTC server API (Tencent Cloud API 3.0, service `trtc`, version
//! `2019-07-22`) at `POST /` (and `GET /` with flattened query parameters).
//!
//! This module owns the envelope: body size limit, TC3-HMAC-SHA256
//! verification against the configured credentials (or a console session
//! with its CSRF token: `credential`), version and action checks,
//! `{"Response": {…, "RequestId"}}` answers with
//! `Content-Type: application/json` exactly (the Python SDK ignores errors
//! otherwise), and the TRTC error codes. Each action family has its file:
//! `rooms` (DismissRoom, RemoveUser and their string-room twins) and
//! `relay` (Start/Update/StopPublishCdnStream). Internal detail is logged,
//! never echoed.

mod cluster;
mod images;
mod ingest;
mod mix;
mod params;
mod recording;
mod relay;
mod request;
mod rooms;

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::credential::{self, Refusal};
use crate::auth::session::Access;
use crate::auth::tc3;

pub(crate) const VERSION: &str = "2019-07-22";

/// A TRTC error: code and message, as the SDKs raise them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

pub(crate) type ApiResult = Result<Map<String, Value>, ApiError>;

pub(crate) use cluster::attach as attach_cluster;

/// What an action came to: fields to answer with, or the owner node's whole
/// answer (on a cluster, for a room owned by another node).
enum Reply {
    Fields(Map<String, Value>),
    Carried(Response),
}

fn request_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn envelope(result: ApiResult, action: &str) -> Response {
    let request_id = request_id();
    let body = match result {
        Ok(mut fields) => {
            fields.insert("RequestId".into(), Value::String(request_id));
            json!({ "Response": fields })
        }
        Err(e) => {
            tracing::info!(action, code = e.code, "trtc api refused: {}", e.message);
            json!({"Response": {"Error": {"Code": e.code, "Message": e.message}, "RequestId": request_id}})
        }
    };
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let action = headers
        .get("x-tc-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let result = process(&state, &method, &uri, &headers, body, &action).await;
    let code = match &result {
        Ok(Reply::Fields(_)) => "ok",
        Ok(Reply::Carried(_)) => "carried",
        Err(e) => e.code,
    };
    crate::metrics::metrics()
        .api_requests
        .get_or_create(&crate::metrics::ApiLabel {
            action: crate::metrics::action_label(&action),
            code,
        })
        .inc();
    match result {
        Ok(Reply::Carried(resp)) => resp,
        Ok(Reply::Fields(f)) => envelope(Ok(f), &action),
        Err(e) => envelope(Err(e), &action),
    }
}

async fn process(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    action: &str,
) -> Result<Reply, ApiError> {
    let limit = state.config.http.max_body_bytes;
    let body = to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            "RequestSizeLimitExceeded",
            format!("The request body is larger than {limit} bytes."),
        )
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let query = uri.query().unwrap_or("");
    verify(state, method, query, headers, &body)?;

    match header("x-tc-version") {
        Some(VERSION) => {}
        Some(v) => {
            return Err(ApiError::new(
                "NoSuchVersion",
                format!("The API version `{v}` does not exist; use {VERSION}."),
            ));
        }
        None => {
            return Err(ApiError::new(
                "MissingParameter",
                "The X-TC-Version header is missing.",
            ));
        }
    }

    let params: Value = if *method == Method::GET {
        params::from_query(query)?
    } else if body.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| ApiError::new("InvalidParameter", "The request body is not valid JSON."))?
    };
    let Value::Object(params) = params else {
        return Err(ApiError::new(
            "InvalidParameter",
            "The request body must be a JSON object.",
        ));
    };
    let p = params::Params::new(&params);
    if let Some(owner) = cluster::route(state, action, &p, headers).await? {
        return Ok(Reply::Carried(
            cluster::carry(&owner, method, uri, headers, body).await,
        ));
    }
    let out = act(state, action, &p, &params).await?;
    cluster::remember(state, action, &p, &params, &out).await;
    Ok(Reply::Fields(out))
}

async fn act(
    state: &AppState,
    action: &str,
    p: &params::Params<'_>,
    params: &Map<String, Value>,
) -> ApiResult {
    match action {
        "DismissRoom" => rooms::dismiss(state, p, false).await,
        "DismissRoomByStrRoomId" => rooms::dismiss(state, p, true).await,
        "RemoveUser" => rooms::remove_user(state, p, false).await,
        "RemoveUserByStrRoomId" => rooms::remove_user(state, p, true).await,
        "StartPublishCdnStream" => relay::start(state, p, &images::prefetch(state, params).await?),
        "UpdatePublishCdnStream" => {
            relay::update(state, p, &images::prefetch(state, params).await?)
        }
        "StopPublishCdnStream" => relay::stop(state, p),
        "StartStreamIngest" => ingest::start(state, p).await,
        "StopStreamIngest" => ingest::stop(state, p),
        "DescribeStreamIngest" => ingest::describe(state, p),
        "CreateCloudRecording" => {
            recording::create(state, p, &images::prefetch(state, params).await?)
        }
        "DescribeCloudRecording" => recording::describe(state, p),
        "ModifyCloudRecording" => {
            recording::modify(state, p, &images::prefetch(state, params).await?)
        }
        "DeleteCloudRecording" => recording::delete(state, p),
        "" => Err(ApiError::new(
            "MissingParameter",
            "The X-TC-Action header is missing.",
        )),
        other => Err(ApiError::new(
            "InvalidAction",
            format!("The action `{other}` is not supported."),
        )),
    }
}

fn verify(
    state: &AppState,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let req = credential::Request {
        method: method.as_str(),
        path: "/",
        query: if *method == Method::GET { query } else { "" },
        headers,
        body,
        // Every action changes something, or may: a session needs its CSRF token.
        access: Access::Write,
    };
    credential::caller(state, &req).map(|_| ()).map_err(|e| {
        let code = e.code();
        let message = match e {
            Refusal::Tc3(tc3::Tc3Error::SignatureFailure(_)) => {
                "The provided credentials could not be validated. Please check your signature is correct.".to_owned()
            }
            Refusal::Tc3(tc3::Tc3Error::SignatureExpire { max_skew }) => format!(
                "Signature expired. Timestamp and server time cannot differ by more than {max_skew} seconds."
            ),
            other => other.to_string(),
        };
        ApiError::new(code, message)
    })
}
