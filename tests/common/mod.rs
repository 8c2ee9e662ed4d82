//! A real `roomcast` process on loopback ports, killed by its pid when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_roomcast");

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports (all held until chosen, so none repeats).
///
/// They come from below the kernel's ephemeral range (32768-60999 here):
/// a port the kernel handed out for a moment could be given again to some
/// process's outgoing connection before the gateway binds it, and a test
/// would fail with "Address already in use". Ports in 20000-32000 are only
/// ever taken on purpose.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each test process starts at its own place in the range.
    let _ = NEXT.compare_exchange(
        0,
        std::process::id().wrapping_mul(7_919) % SPAN + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut held: Vec<TcpListener> = Vec::with_capacity(N);
    while held.len() < N {
        let port = LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(l);
        }
    }
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A fresh directory under the target dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

fn rand_u64() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8) as u128
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Gateway {
    pub child: Child,
    pub http_port: u16,
    pub dir: TempDir,
    pub log: PathBuf,
}

impl Gateway {
    /// Starts `roomcast serve` in a fresh directory with `config` (if any) as
    /// its `roomcast.toml`, and waits until `/healthz` answers.
    pub fn start(config: Option<&str>) -> Gateway {
        let g = Gateway::spawn(config, &[]);
        g.wait_healthy();
        g
    }

    /// Starts one with application `app` (secret `key`) and the API
    /// credential `(secret_id, secret_key)`, otherwise on defaults.
    pub fn for_app(app: u64, key: &str, credential: (&str, &str)) -> Gateway {
        Gateway::start(Some(&app_config(app, key, Some(credential), "")))
    }

    pub fn spawn(config: Option<&str>, env: &[(&str, &str)]) -> Gateway {
        Gateway::spawn_in(config, env, None)
    }

    /// Starts roomcast with its data directory on a tmpfs of `mb` MiB, in a
    /// mount namespace of its own (`unshare -rm`: no root needed, nothing
    /// left mounted when it ends).
    pub fn start_on_small_disk(config: Option<&str>, mb: u32) -> Gateway {
        let g = Gateway::spawn_in(config, &[], Some(mb));
        g.wait_healthy();
        g
    }

    /// Starts roomcast again in the directory (configuration, data, log)
    /// of `old`, which must have ended, and waits until it is healthy.
    pub fn restart(mut old: Gateway) -> Gateway {
        assert!(
            old.child.try_wait().unwrap().is_some(),
            "the old process still runs"
        );
        let dir = std::mem::replace(&mut old.dir, TempDir(PathBuf::new()));
        let g = Gateway::spawn_at(dir, None, &[], None);
        g.wait_healthy();
        g
    }

    fn spawn_in(config: Option<&str>, env: &[(&str, &str)], tmpfs_mb: Option<u32>) -> Gateway {
        Gateway::spawn_at(TempDir::new("gw"), config, env, tmpfs_mb)
    }

    fn spawn_at(
        dir: TempDir,
        config: Option<&str>,
        env: &[(&str, &str)],
        tmpfs_mb: Option<u32>,
    ) -> Gateway {
        if let Some(c) = config {
            std::fs::write(dir.0.join("roomcast.toml"), c).unwrap();
        }
        let [http_port, rtmp_port] = free_ports::<2>();
        let log = dir.0.join("roomcast.log");
        let mut cmd = match tmpfs_mb {
            None => Command::new(BIN),
            Some(mb) => {
                std::fs::create_dir_all(dir.0.join("data")).unwrap();
                let mut c = Command::new("unshare");
                c.args(["-rm", "sh", "-c"])
                    .arg(format!(
                        "mount -t tmpfs -o size={mb}m tmpfs data && exec \"$0\" \"$@\""
                    ))
                    .arg(BIN);
                c
            }
        };
        cmd.arg("serve")
            .current_dir(&dir.0)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,roomcast=debug")
            .env("ROOMCAST_HTTP__BIND", "127.0.0.1")
            .env("ROOMCAST_HTTP__PORT", http_port.to_string())
            .env("ROOMCAST_RTMP__BIND", "127.0.0.1")
            .env("ROOMCAST_RTMP__PORT", rtmp_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Gateway {
            child,
            http_port,
            dir,
            log,
        }
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(self.http_port, "/healthz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway not healthy in time; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the process by pid.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit against a deadline.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Polls the log until it contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A panic inside the gateway fails the test that ran it, whatever
        // the test checked (the panic hook's line, text or JSON).
        if !std::thread::panicking() {
            let log = self.log_text();
            if let Some(line) = log
                .lines()
                .find(|l| l.contains("roomcast::panics") && l.contains("panicked: "))
            {
                panic!("the gateway panicked: {line}\nlog:\n{log}");
            }
        }
    }
}

impl Gateway {
    /// The RTMP port, from the gateway's own log line.
    pub fn rtmp_port(&self) -> u16 {
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("RTMP listening"))
            .expect("RTMP listening");
        line.split("addr=")
            .nth(1)
            .and_then(|a| a.trim().rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    /// `rtmp://…/push/<room>?sdkappid=&userid=&usersig=` with a fresh UserSig.
    pub fn publish_url(&self, app: u64, key: &str, room: &str, user: &str) -> String {
        let sig = usersig(app, key, user);
        format!(
            "rtmp://127.0.0.1:{}/push/{room}?sdkappid={app}&userid={user}&usersig={sig}",
            self.rtmp_port()
        )
    }

    /// `GET /v1/relays/<id>` as JSON.
    /// Starts a relay task through the admin path: (task id, stream name).
    pub fn start_relay(&self, body: &serde_json::Value) -> (String, String) {
        let (status, _, text) = http(
            self.http_port,
            "POST",
            "/v1/relays",
            Some(&body.to_string()),
        )
        .unwrap();
        assert_eq!(status, 201, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        (
            v["task_id"].as_str().unwrap().to_owned(),
            v["stream"].as_str().unwrap().to_owned(),
        )
    }

    /// The URL of a relay's HLS playlist.
    pub fn hls_url(&self, stream: &str) -> String {
        format!(
            "http://127.0.0.1:{}/hls/{stream}/index.m3u8",
            self.http_port
        )
    }

    pub fn relay_status(&self, id: &str) -> serde_json::Value {
        let (_, _, text) = http(self.http_port, "GET", &format!("/v1/relays/{id}"), None).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

pub use roomcast::unix_now;

/// `roomcast.toml` text: one application, an API credential (SecretId,
/// SecretKey) if given, then `extra`.
pub fn app_config(app: u64, key: &str, credential: Option<(&str, &str)>, extra: &str) -> String {
    let mut s = format!("[[apps]]\nsdkappid = {app}\nsecret_key = \"{key}\"\n");
    if let Some((id, secret)) = credential {
        s.push_str(&format!(
            "[[api.credentials]]\nsecret_id = \"{id}\"\nsecret_key = \"{secret}\"\n"
        ));
    }
    s + extra
}

/// A UserSig for `user`, valid for a day, made by the library.
pub fn usersig(app: u64, key: &str, user: &str) -> String {
    roomcast::auth::usersig::generate(app, key, user, 86_400, unix_now(), None)
}

/// Calls the TRTC API with Tencent's Python SDK (`tests/python/trtc_sdk_call.py`
/// in the test venv): its one-line JSON answer (`ok`, `response` or `code`).
pub fn trtc_sdk(
    http_port: u16,
    (secret_id, secret_key): (&str, &str),
    action: &str,
    params: &serde_json::Value,
    extra: &[&str],
) -> serde_json::Value {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/trtc_sdk_call.py"
        ))
        .args([
            &format!("127.0.0.1:{http_port}"),
            secret_id,
            secret_key,
            action,
            &params.to_string(),
        ])
        .args(extra)
        .env("NO_PROXY", "*")
        .output()
        .expect("the test venv (make test creates it)");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|_| panic!("{action}: {text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// Polls `f` until it holds, failing the test after `within`.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http(port, "GET", path, None).map(|(s, _, b)| (s, b))
}

/// Response headers, names in lower case.
pub type Headers = Vec<(String, String)>;

/// A minimal HTTP/1.1 request with a JSON body: (status, lower-case headers, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> std::io::Result<(u16, Headers, String)> {
    http_with(
        port,
        method,
        path,
        &[("Content-Type", "application/json")],
        json_body.unwrap_or("").as_bytes(),
    )
}

/// A minimal HTTP/1.1 request with the given headers and body.
pub fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Headers, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes())?;
    // A server may answer (413) before reading a large body: ignore a reset here.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let resp = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

/// The plain RTMP handshake (C0 C1, S0 S1 S2, C2) on a new connection.
pub fn rtmp_handshake(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend((0..1536).map(|i| (i * 7 % 251) as u8));
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 3073];
    s.read_exact(&mut s0s1s2).unwrap();
    s.write_all(&s0s1s2[1..1537]).unwrap();
    s
}

/// Reads until the server closes the socket (or `within` passes).
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// A request an HTTP callback receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A callback receiver on loopback: answers `fail_first` requests with 500,
/// then 200, and keeps every request. Returns its port and what it got.
pub fn callback_receiver(fail_first: usize) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).ok();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).ok();
            store.lock().unwrap().push(Received {
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let status = if n < fail_first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, seen)
}

/// The callbacks received so far: (EventGroupId, EventType, EventInfo).
pub fn callback_events(seen: &Arc<Mutex<Vec<Received>>>) -> Vec<(u64, u64, serde_json::Value)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            (
                v["EventGroupId"].as_u64().unwrap(),
                v["EventType"].as_u64().unwrap(),
                v["EventInfo"].clone(),
            )
        })
        .collect()
}

pub mod llhls;
pub mod media;
pub mod redis;

/// One TRTC API call signed as Tencent's SDKs sign it; the `Response` object.
pub fn trtc_call(
    port: u16,
    (secret_id, secret_key): (&str, &str),
    action: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let body = params.to_string();
    let host = format!("127.0.0.1:{port}");
    let now = roomcast::unix_now();
    let auth = roomcast::auth::tc3::authorization_for_post(
        secret_id,
        secret_key,
        now,
        &host,
        "application/json",
        body.as_bytes(),
    );
    let (status, _, text) = http_with(
        port,
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("Host", &host),
            ("Authorization", &auth),
            ("X-TC-Action", action),
            ("X-TC-Version", "2019-07-22"),
            ("X-TC-Timestamp", &now.to_string()),
        ],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["Response"].clone()
}

/// Starts a mixed cloud recording (MP4 and HLS, 640x360 at 15 fps) of
/// `room` through the TRTC API; its TaskId. The storage is never reached.
pub fn start_mix_recording(
    port: u16,
    api: (&str, &str),
    (app, key): (u64, &str),
    room: &str,
    bitrate: u32,
) -> String {
    let created = trtc_call(
        port,
        api,
        "CreateCloudRecording",
        serde_json::json!({"SdkAppId": app, "RoomId": room, "RoomIdType": 0, "UserId": "recorder",
               "UserSig": usersig(app, key, "recorder"),
               "StorageParams": {"CloudStorage": {"Vendor": 0, "Region": "ap-guangzhou",
                   "Bucket": "b-1250000000", "AccessKey": "ak", "SecretKey": "sk"}},
               "RecordParams": {"RecordMode": 2, "OutputFormat": 1, "MaxIdleTime": 5},
               "MixTranscodeParams": {"VideoParams": {"Width": 640, "Height": 360, "Fps": 15,
                                                      "BitRate": bitrate, "Gop": 2}},
               "MixLayoutParams": {"MixLayoutMode": 3}}),
    );
    created["TaskId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned()
}

/// A static HTTP server (Python's) over a directory, on loopback; killed
/// when dropped.
pub struct FileServer {
    child: Child,
    pub port: u16,
}

impl FileServer {
    pub fn start(dir: &std::path::Path) -> FileServer {
        let port = free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("file server", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        FileServer { child, port }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A status document (`path`, e.g. `/v1/status/tasks`) GET signed with
/// the API credential `(secret_id, secret_key)`: its status, headers and JSON.
pub fn status_get(
    port: u16,
    credential: (&str, &str),
    path: &str,
) -> (u16, Headers, serde_json::Value) {
    signed_get(port, credential, path, path)
}

/// A GET of `path` carrying a TC3 signature made for `signed_path` (the
/// same for an honest caller): its status, headers and JSON.
pub fn signed_get(
    port: u16,
    (secret_id, secret_key): (&str, &str),
    path: &str,
    signed_path: &str,
) -> (u16, Headers, serde_json::Value) {
    let now = roomcast::unix_now();
    let host = format!("127.0.0.1:{port}");
    let auth = roomcast::auth::tc3::authorization_for(
        secret_id,
        secret_key,
        now,
        &host,
        ("GET", signed_path, ""),
        "application/json",
        b"",
    );
    let ts = now.to_string();
    let (code, headers, body) = http_with(
        port,
        "GET",
        path,
        &[
            ("Authorization", &auth),
            ("X-TC-Timestamp", &ts),
            ("Content-Type", "application/json"),
        ],
        b"",
    )
    .unwrap();
    (
        code,
        headers,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}
