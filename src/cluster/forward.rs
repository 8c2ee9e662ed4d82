//! Carrying one HTTP request to another node and its answer back (the TRTC
//! API on the node that owns the room). HTTP/1.1 over plain TCP, bounded in
//! time and size; a request already carried once is never carried again.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Set on a carried request: the owner answers it itself.
pub(crate) const FORWARDED: &str = "x-roomcast-forwarded";
/// The whole exchange, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer carried back.
const MAX_ANSWER: usize = 4 << 20;

/// Sends `req` (its path and query, headers and body as received) to the
/// node at `base` (`http://host:port`) and returns its answer.
pub(crate) async fn forward(base: &str, req: Request<Bytes>) -> Result<Response<Bytes>, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("cannot carry a request to `{base}` (only http:// is supported)"))?
        .trim_end_matches('/')
        .to_owned();
    crate::ticks::timeout(TIMEOUT, async move {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("cannot reach the owner node at {authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("owner node {authority}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let (mut parts, body) = req.into_parts();
        parts
            .headers
            .insert(FORWARDED, hyper::header::HeaderValue::from_static("1"));
        parts.headers.remove(hyper::header::CONNECTION);
        parts.headers.remove(hyper::header::TRANSFER_ENCODING);
        parts.headers.insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(body.len()),
        );
        let resp = sender
            .send_request(Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(|e| format!("owner node {authority}: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("owner node {authority}: {e}"))?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    })
    .await
    .map_err(|_| format!("the owner node did not answer within {TIMEOUT:?}"))?
}
