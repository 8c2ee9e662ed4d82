//! Image URLs in mix and recording requests (canvas backgrounds, cell
//! placeholders): fetched before the task starts,
//! under TRTC's limits (http or https, at most 5 MiB, 10 s, up to three
//! redirects), checked by decoding them with libav as the mixer will, and
//! cached under `<data_dir>/images/` by URL. A URL that cannot be fetched or
//! is not a picture is refused at the call, with the reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ApiError;
use super::params::invalid;
use crate::api::AppState;
use crate::callback::HttpUrl;

/// TRTC's limit on an image.
const MAX_BYTES: usize = 5 << 20;
/// The whole fetch, redirects included.
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 3;
const MAX_HEAD: usize = 16 << 10;

/// Where a request may name an image: the canvas (`BackgroundImageUrl`)
/// and cell placeholders (a custom cell's `BackgroundImageUrl`, a
/// recording's `DefaultSubBackgroundImage` and `SubBackgroundImage`).
const IMAGE_KEYS: &[&str] = &[
    "BackgroundImageUrl",
    "DefaultSubBackgroundImage",
    "SubBackgroundImage",
];

/// Every image URL anywhere in `v` (bounded depth: requests are shallow).
fn collect<'a>(v: &'a Value, depth: usize, out: &mut Vec<&'a str>) {
    if depth > 8 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(u) if IMAGE_KEYS.contains(&k.as_str()) => out.push(u),
                    _ => collect(v, depth + 1, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect(v, depth + 1, out)),
        _ => {}
    }
}

/// The local copy of every image URL of a mix or recording request, by URL.
pub(super) async fn prefetch(
    state: &AppState,
    params: &Map<String, Value>,
) -> Result<HashMap<String, PathBuf>, ApiError> {
    let mut urls = Vec::new();
    for v in params.values() {
        collect(v, 0, &mut urls);
    }
    let mut out = HashMap::new();
    for url in urls.into_iter().filter(|u| !u.is_empty()) {
        if out.contains_key(url) {
            continue;
        }
        if out.len() >= 32 {
            return Err(invalid(
                "BackgroundImageUrl",
                "at most 32 image URLs in a request",
            ));
        }
        let path = cached(state, url)
            .await
            .map_err(|why| invalid("BackgroundImageUrl", format!("{url}: {why}")))?;
        out.insert(url.to_owned(), path);
    }
    Ok(out)
}

/// The image at `url`, from the cache or fetched into it.
async fn cached(state: &AppState, url: &str) -> Result<PathBuf, String> {
    check_url(url)?;
    let dir = state.config.data_dir.join("images");
    let name = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..16]);
    let path = dir.join(format!("{name}.img"));
    if tokio::fs::metadata(&path).await.is_ok() {
        return Ok(path);
    }
    let bytes = crate::ticks::timeout(TIMEOUT, fetch(url))
        .await
        .map_err(|_| format!("not fetched within {TIMEOUT:?}"))??;
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("image cache: {e}"))?;
    let tmp = dir.join(format!("{name}.tmp"));
    tokio::fs::write(&tmp, &bytes)
        .await
        .map_err(|e| format!("image cache: {e}"))?;
    let check = tmp.clone();
    let decoded = tokio::task::spawn_blocking(move || crate::mix::video::check_image(&check))
        .await
        .map_err(|e| e.to_string())?;
    if let Err(e) = decoded {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(format!("not a picture libav can decode ({e})"));
    }
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| format!("image cache: {e}"))?;
    tracing::info!(%url, bytes = bytes.len(), "mix image fetched");
    Ok(path)
}

fn check_url(url: &str) -> Result<(), String> {
    if url.len() > 1024 {
        return Err("longer than 1024 characters".into());
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("an http:// or https:// URL".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("spaces or control characters".into());
    }
    Ok(())
}

/// GET `url`, following redirects; the body.
async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let mut url = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let target = HttpUrl::parse(&url)?;
        let (tls, host, port, path) = (target.tls, &target.host, target.port, &target.path);
        let mut s = target
            .connect()
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: roomcast\r\nAccept: image/*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 << 10];
        loop {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > MAX_BYTES + MAX_HEAD {
                return Err(format!("larger than {} MiB", MAX_BYTES >> 20));
            }
        }
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no HTTP answer")?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let body = &raw[end + 4..];
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or("no HTTP status")?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        match status {
            200 => {}
            301 | 302 | 303 | 307 | 308 => {
                let to = header("location").ok_or("a redirect without Location")?;
                url = if to.starts_with("http://") || to.starts_with("https://") {
                    to
                } else if to.starts_with('/') {
                    format!(
                        "{}://{}:{port}{to}",
                        if tls { "https" } else { "http" },
                        host
                    )
                } else {
                    return Err(format!("a redirect to `{to}`"));
                };
                continue;
            }
            other => return Err(format!("HTTP {other}")),
        }
        let body = if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            dechunk(body)?
        } else {
            body.to_vec()
        };
        if body.len() > MAX_BYTES {
            return Err(format!("larger than {} MiB", MAX_BYTES >> 20));
        }
        if body.is_empty() {
            return Err("an empty body".into());
        }
        return Ok(body);
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

/// A chunked body, joined.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a cut chunked body")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "a bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size || size > MAX_BYTES {
            return Err("a cut chunked body".into());
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).ok_or("a cut chunked body")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_spaces_are_refused_before_any_fetch() {
        assert!(check_url("http://x/a b.png").is_err());
        assert!(check_url("ftp://x/y").is_err());
    }

    #[test]
    fn image_urls_are_found_wherever_the_request_names_them() {
        let v = serde_json::json!({
            "VideoParams": {"BackgroundImageUrl": "http://h/bg.png",
                "LayoutParams": {"MixLayoutList": [{"BackgroundImageUrl": "http://h/p.png"}, {}]}},
            "MixLayoutParams": {"DefaultSubBackgroundImage": "http://h/d.png"},
            "Other": {"Text": "http://h/not-an-image"}
        });
        let mut out = Vec::new();
        collect(&v, 0, &mut out);
        out.sort();
        assert_eq!(out, ["http://h/bg.png", "http://h/d.png", "http://h/p.png"]);
    }

    #[test]
    fn chunked_bodies_are_joined_and_cut_ones_refused() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
