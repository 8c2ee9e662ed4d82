//! HLS over HTTP: `GET|HEAD /hls/<stream>/<file>`.
//!
//! fMP4 streams (LL-HLS or plain) are answered from memory (`hls::store`):
//! the playlist, with blocking reloads (`_HLS_msn`, `_HLS_part`) and delta
//! updates (`_HLS_skip`); `master.m3u8`; init sections, segments and parts,
//! a request for the hinted next part waiting until it is complete.
//! MPEG-TS streams too are answered from memory (the playlist and its
//! segments). Only names the writers produce are served: no request reaches
//! the disk.
//! CORS is open so any web player can load them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::AppState;
use crate::hls::live::{Directives, Object, Reload};
use crate::hls::store::{HlsStore, Shared, TsShared};
use crate::metrics::{HlsLabel, HlsObject, Output, metrics};
use crate::relay::valid_stream_name;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// How long `master.m3u8` waits for a just-started stream's first init section.
const MASTER_WAIT: Duration = Duration::from_secs(10);

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such stream or segment\n").into_response()
}

fn bad_request(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
}

fn count(object: HlsObject) {
    metrics()
        .hls_requests
        .get_or_create(&HlsLabel { object })
        .inc();
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path((stream, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let object = match Object::parse(&file) {
        Some(o) if valid_stream_name(&stream) => o,
        _ => {
            count(HlsObject::Other);
            return not_found();
        }
    };
    count(match object {
        Object::Playlist | Object::Master => HlsObject::Playlist,
        Object::Segment(_) | Object::TsSegment(_) => HlsObject::Segment,
        Object::Part(..) => HlsObject::Part,
        Object::Init(_) => HlsObject::Init,
    });
    let resp = match state.hls_store.get(&stream) {
        Some(shared) => {
            live(
                &state.hls_store,
                &stream,
                shared,
                object,
                &file,
                query.as_deref(),
                &headers,
            )
            .await
        }
        None => match state.hls_store.get_ts(&stream) {
            Some(ts) => ts_media(&ts, object),
            None => match elsewhere(&state, &stream, &file, query.as_deref()).await {
                Some(r) => r,
                None => not_found(),
            },
        },
    };
    let mut resp = resp;
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// On a cluster node: a stream served by another node is a 302 there
/// (hls.js and players follow it; the rest of the stream's requests then
/// go to that node directly, its playlists naming objects relatively).
async fn elsewhere(
    state: &AppState,
    stream: &str,
    file: &str,
    query: Option<&str>,
) -> Option<Response> {
    let http = state.rooms.cluster()?.stream_node(stream).await?;
    let mut to = format!("{}/hls/{stream}/{file}", http.trim_end_matches('/'));
    if let Some(q) = query {
        to.push('?');
        to.push_str(q);
    }
    let location = HeaderValue::from_str(&to).ok()?;
    Some(
        (
            StatusCode::FOUND,
            [(header::LOCATION, location)],
            "served by another cluster node\n",
        )
            .into_response(),
    )
}

/// MPEG-TS HLS, muxed into memory by `hls::writer`.
fn ts_media(ts: &TsShared, object: Object) -> Response {
    let (content_type, cache) = match object {
        Object::Playlist => (PLAYLIST_TYPE, "max-age=1"),
        Object::TsSegment(_) => ("video/mp2t", "max-age=86400"),
        _ => return not_found(),
    };
    match ts.media(object) {
        Some(body) => body_response(body, content_type, cache),
        None => not_found(),
    }
}

fn body_response(body: Bytes, content_type: &'static str, cache: &str) -> Response {
    metrics().sent(Output::Hls).add(body.len());
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    resp
}

async fn live(
    store: &HlsStore,
    stream: &str,
    shared: Arc<Shared>,
    object: Object,
    file: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    match object {
        Object::Playlist => playlist(shared, query).await,
        Object::Master => master(store, stream, shared).await,
        Object::TsSegment(_) => not_found(),
        Object::Init(_) | Object::Segment(_) | Object::Part(..) => {
            media(shared, object, file, headers).await
        }
    }
}

/// Waits for the stream to change, until `deadline`; false when it passed.
async fn changed(
    rx: &mut tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
) -> bool {
    matches!(
        crate::ticks::timeout_at(deadline, rx.changed()).await,
        Ok(Ok(()))
    )
}

async fn playlist(shared: Arc<Shared>, query: Option<&str>) -> Response {
    let directives = match Directives::parse(query) {
        Ok(d) => d,
        Err(why) => return bad_request(why),
    };
    let (low_latency, target_ms) = {
        let s = shared.lock();
        (s.playlist.low_latency(), s.playlist.target_duration_ms())
    };
    let blocking = low_latency && directives.msn.is_some();
    if blocking {
        let msn = directives.msn.unwrap_or(0);
        // The spec: past three target durations, 503.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(3 * target_ms);
        let mut rx = shared.changed.subscribe();
        loop {
            match shared.lock().playlist.reload(msn, directives.part) {
                Reload::Ready => break,
                Reload::TooFar(why) => return bad_request(why),
                Reload::Wait => {}
            }
            if !changed(&mut rx, deadline).await {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the requested segment or part did not appear within three target durations\n",
                )
                    .into_response();
            }
        }
    }
    let (text, target_ms) = {
        let mut s = shared.lock();
        (
            s.playlist_text(directives.skip),
            s.playlist.target_duration_ms(),
        )
    };
    // A blocking answer names one version of the playlist, so caches may keep
    // it; the bare URL changes with every part (LL) or segment.
    let cache = if blocking {
        format!("max-age={}", 6 * target_ms / 1000)
    } else if low_latency {
        "no-cache".to_string()
    } else {
        "max-age=1".to_string()
    };
    body_response(text, PLAYLIST_TYPE, &cache)
}

/// Waits (a just-started stream) until every variant can be described.
async fn master(store: &HlsStore, stream: &str, shared: Arc<Shared>) -> Response {
    let deadline = tokio::time::Instant::now() + MASTER_WAIT;
    let mut rx = shared.changed.subscribe();
    loop {
        if let Some(text) = store.master(stream) {
            return body_response(Bytes::from(text), PLAYLIST_TYPE, "max-age=1");
        }
        if !changed(&mut rx, deadline).await {
            return not_found();
        }
    }
}

async fn media(shared: Arc<Shared>, object: Object, file: &str, headers: &HeaderMap) -> Response {
    let (generation, target_ms) = {
        let s = shared.lock();
        (s.generation, s.playlist.target_duration_ms())
    };
    let etag = format!("\"{generation:x}-{file}\"");
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3 * target_ms);
    let mut rx = shared.changed.subscribe();
    let body = loop {
        let waitable = {
            let s = shared.lock();
            if let Some(b) = s.media(object) {
                break b;
            }
            // The hinted part (or one just after it): hold until it is complete.
            matches!(object, Object::Part(m, p) if s.playlist.may_wait_for_part(m, p))
        };
        if !waitable || !changed(&mut rx, deadline).await {
            return not_found();
        }
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return resp;
    }
    // Media never changes under its name while the stream lives.
    let mut resp = body_response(body, "video/mp4", "max-age=60");
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}
