//! HLS over HTTP: `GET /hls/<stream>/index.m3u8` and its segments.
//!
//! Only names the writer produces are served (`index.m3u8`, `seg<N>.ts`)
//! from `<data_dir>/hls/<stream>/`, so no path can leave that directory.
//! Playlists are cached for a second, segments (immutable) for a day; CORS
//! is open so any web player can load them.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{HlsLabel, HlsObject, Output, metrics};
use crate::relay::valid_stream_name;

pub(crate) async fn get(
    State(state): State<AppState>,
    Path((stream, file)): Path<(String, String)>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such stream or segment\n").into_response();
    let m = metrics();
    if !valid_stream_name(&stream) {
        m.hls_requests
            .get_or_create(&HlsLabel {
                object: HlsObject::Other,
            })
            .inc();
        return not_found();
    }
    let (content_type, cache, object) = if file == "index.m3u8" {
        (
            "application/vnd.apple.mpegurl",
            "max-age=1",
            HlsObject::Playlist,
        )
    } else if file
        .strip_prefix("seg")
        .and_then(|r| r.strip_suffix(".ts"))
        .is_some_and(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
    {
        ("video/mp2t", "max-age=86400", HlsObject::Segment)
    } else {
        m.hls_requests
            .get_or_create(&HlsLabel {
                object: HlsObject::Other,
            })
            .inc();
        return not_found();
    };
    m.hls_requests.get_or_create(&HlsLabel { object }).inc();
    let path = state.hls_root.join(&stream).join(&file);
    match tokio::fs::read(&path).await {
        Ok(body) => {
            m.sent(Output::Hls).add(body.len());
            let mut resp = body.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            resp
        }
        Err(_) => not_found(),
    }
}
