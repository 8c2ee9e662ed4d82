//! The web console, driven in Debian's headless Chromium by selenium
//! (`tests/python/console_browser.py`, in the test venv) while two real
//! ffmpeg anchors publish over RTMP; and the console's sessions checked at
//! the HTTP level: the cookie's flags, CSRF on every change, the task API
//! signed with TC3 for scripts.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::media::Publisher;
use common::redis::Redis;
use common::{Gateway, http_with};
use roomcast::auth::tc3;
use serde_json::{Value, json};

static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_700;
const KEY: &str = "console-app-key";
const SECRET_ID: &str = "AKIDconsole";
const SECRET_KEY: &str = "console-secret";
const ROOM: &str = "4242";

/// A one-node cluster, so the console's cluster view shows.
fn gateway(redis_port: u16) -> Gateway {
    Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some((SECRET_ID, SECRET_KEY)),
        &format!(
            "[cluster]\nredis_url = \"redis://127.0.0.1:{redis_port}\"\nnode_id = \"console-node\"\n"
        ),
    )))
}

/// Kills a process group by its id when dropped (python, chromedriver, chromium).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        // `kill -KILL -<pgid>` is misread by procps as a signal number: spell it out.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_person_logs_in_watches_a_mix_and_stops_it_in_chromium() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let redis = Redis::start(common::free_port());
    let gw = gateway(redis.port);
    let _teacher = Publisher::start(&gw.publish_url(APP, KEY, ROOM, "teacher"), 120, &gw.dir.0);
    let _guest = Publisher::start(&gw.publish_url(APP, KEY, ROOM, "guest"), 120, &gw.dir.0);

    // Screenshots outlive the run (the target dir's tmp), to be looked at.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/console_browser.py"
    );
    let out_path = gw.dir.0.join("browser.out");
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(python)
            .args([
                script,
                &format!("http://127.0.0.1:{}", gw.http_port),
                SECRET_ID,
                SECRET_KEY,
                &APP.to_string(),
                ROOM,
                shots.to_str().unwrap(),
            ])
            .process_group(0)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(gw.dir.0.join("browser.err")).unwrap())
            .spawn()
            .expect("the test venv (make test creates it)")
    };
    let _group = Group(child.id());
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(gw.dir.0.join("browser.err")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser run failed ({status:?}): {out}\n{err}\ngateway log tail:\n{}",
        tail(&gw.log_text(), 40)
    );
    let seen: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["users"], json!(["guest", "teacher"]), "{seen}");
    // The page shows the scale the start-up probe found, as the API has it.
    let (code, _, node) =
        common::status_get(gw.http_port, (SECRET_ID, SECRET_KEY), "/v1/status/node");
    assert_eq!(code, 200, "{node}");
    assert_eq!(node["cpu_calibrated"], json!(true), "{node}");
    let scale = node["cpu_cost_scale"].as_f64().unwrap();
    let shown: f64 = seen["codecs"]
        .as_str()
        .and_then(|t| t.strip_prefix("codecs cost "))
        .and_then(|t| t.strip_suffix("x the reference"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{seen}"));
    // Two decimals on the page, three in the API.
    assert!((shown - scale).abs() <= 0.0051, "{shown} vs {scale}");

    // What the page did, the gateway did: the mix was started, then stopped.
    let task = seen["task"].as_str().unwrap();
    let status = gw.relay_status(task);
    assert_eq!(status["state"], "stopped", "{status}");
    assert!(status["mix"].as_bool().unwrap(), "{status}");
    let log = gw.log_text();
    assert!(
        log.contains("console login refused"),
        "a wrong key is logged"
    );
    assert!(log.contains("console login"), "a login is logged");
    for shot in ["01-wrong-key.png", "03-preview.png", "04-stopped.png"] {
        let len = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Logs in over HTTP: (cookie header value, CSRF token, Set-Cookie).
fn login(gw: &Gateway) -> (String, String, String) {
    let body = json!({"secret_id": SECRET_ID, "secret_key": SECRET_KEY}).to_string();
    let (code, headers, text) = http_with(
        gw.http_port,
        "POST",
        "/console/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 200, "{text}");
    let set_cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .expect("a session cookie");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let v: Value = serde_json::from_str(&text).unwrap();
    (cookie, v["csrf"].as_str().unwrap().to_owned(), set_cookie)
}

/// The first `status` event of the console's live stream.
fn first_event(gw: &Gateway, cookie: &str) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /console/api/events HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the event stream closed");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(data) = text
            .split("event: status\n")
            .nth(1)
            .and_then(|r| r.split("\n\n").next())
        {
            let json: String = data
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            return serde_json::from_str(&json).unwrap();
        }
    }
    panic!("no status event in 10 s");
}

#[test]
fn sessions_need_their_csrf_token_to_change_anything_and_scripts_sign_instead() {
    let redis = Redis::start(common::free_port());
    let gw = gateway(redis.port);
    let port = gw.http_port;

    // The page itself is public (it holds no data) and embedded; data is not.
    let (code, headers, page) = http_with(port, "GET", "/console/", &[], b"").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("id=\"secret-key\" name=\"secret_key\" type=\"password\""));
    let csp = headers.iter().find(|(k, _)| k == "content-security-policy");
    assert!(csp.is_some_and(|(_, v)| v.contains("default-src 'self'")));
    let etag = headers.iter().find(|(k, _)| k == "etag").unwrap().1.clone();
    let (code, _, _) =
        http_with(port, "GET", "/console/", &[("If-None-Match", &etag)], b"").unwrap();
    assert_eq!(code, 304);
    let (code, _, js) = http_with(port, "GET", "/console/hls.light.min.js", &[], b"").unwrap();
    assert_eq!((code, js.len() > 100_000), (200, true));
    for path in [
        "/console/api/events",
        "/console/api/profiles",
        "/console/api/session",
    ] {
        let (code, _, _) = http_with(port, "GET", path, &[], b"").unwrap();
        assert_eq!(code, 401, "{path} without a session");
    }

    // Wrong keys, unknown ids and bad bodies open nothing.
    for body in [
        json!({"secret_id": SECRET_ID, "secret_key": "nope"}).to_string(),
        json!({"secret_id": "AKIDnobody", "secret_key": SECRET_KEY}).to_string(),
        "{not json".to_owned(),
    ] {
        let (code, headers, text) = http_with(
            port,
            "POST",
            "/console/api/login",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
        assert!(code == 401 || code == 400, "{code} {text}");
        assert!(!headers.iter().any(|(k, _)| k == "set-cookie"), "{body}");
    }

    let (cookie, csrf, set_cookie) = login(&gw);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    let doc = first_event(&gw, &cookie);
    assert!(doc["node"]["cpu_budget"].as_f64().unwrap() > 0.0, "{doc}");
    assert_eq!(doc["tasks"], json!([]));
    assert_eq!(doc["ingests"], json!([]));
    let (code, _, _) =
        http_with(port, "GET", "/v1/status/node", &[("Cookie", &cookie)], b"").unwrap();
    assert_eq!(code, 200, "a session reads the status API");

    // Changes need the CSRF token beside the cookie, on every API.
    let start = json!({"sdkappid": APP, "room": ROOM, "profile": "grid-720p"}).to_string();
    let json_ct = ("Content-Type", "application/json");
    let (code, _, text) = http_with(
        port,
        "POST",
        "/v1/tasks",
        &[json_ct, ("Cookie", &cookie)],
        start.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("AuthFailure.UnauthorizedOperation"), "{text}");
    let trtc = [
        json_ct,
        ("Cookie", &cookie),
        ("X-TC-Action", "DismissRoom"),
        ("X-TC-Version", "2019-07-22"),
    ];
    let dismiss = json!({"SdkAppId": APP, "RoomId": 4242}).to_string();
    let (_, _, text) = http_with(port, "POST", "/", &trtc, dismiss.as_bytes()).unwrap();
    assert!(text.contains("AuthFailure.UnauthorizedOperation"), "{text}");
    let mut with_csrf = trtc.to_vec();
    with_csrf.push(("X-Roomcast-Csrf", &csrf));
    let (_, _, text) = http_with(port, "POST", "/", &with_csrf, dismiss.as_bytes()).unwrap();
    assert!(
        text.contains("ResourceNotFound")
            || text.contains("FailedOperation.RoomNotExist")
            || text.contains("RequestId"),
        "the action runs (on a room that does not exist): {text}"
    );
    assert!(!text.contains("AuthFailure"), "{text}");

    // A viewer's UserSig for the WHEP preview: a change too, short-lived.
    let app = json!({"sdkappid": APP}).to_string();
    let (code, _, _) = http_with(
        port,
        "POST",
        "/console/api/viewer",
        &[json_ct, ("Cookie", &cookie)],
        app.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 401);
    let (code, _, text) = http_with(
        port,
        "POST",
        "/console/api/viewer",
        &[json_ct, ("Cookie", &cookie), ("X-Roomcast-Csrf", &csrf)],
        app.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 200, "{text}");
    let viewer: Value = serde_json::from_str(&text).unwrap();
    let user = viewer["userid"].as_str().unwrap();
    assert!(user.starts_with("console-"), "{viewer}");
    let doc = roomcast::auth::usersig::verify(
        viewer["usersig"].as_str().unwrap(),
        APP,
        KEY,
        user,
        roomcast::unix_now(),
        roomcast::auth::usersig::UserBufCheck::Absent,
    )
    .unwrap();
    assert_eq!(doc.expire, 120);

    let (code, _, text) = http_with(
        port,
        "POST",
        "/v1/tasks",
        &[json_ct, ("Cookie", &cookie), ("X-Roomcast-Csrf", &csrf)],
        start.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 201, "{text}");
    let task = serde_json::from_str::<Value>(&text).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(gw.relay_status(&task)["state"], "waiting");

    // A script signs the same calls with TC3 over the path and body.
    let signed = |method: &str, path: &str, body: &str, key: &str| {
        let now = roomcast::unix_now();
        let host = format!("127.0.0.1:{port}");
        let auth = tc3::authorization_for(
            SECRET_ID,
            key,
            now,
            &host,
            (method, path, ""),
            "application/json",
            body.as_bytes(),
        );
        let ts = now.to_string();
        http_with(
            port,
            method,
            path,
            &[json_ct, ("Authorization", &auth), ("X-TC-Timestamp", &ts)],
            body.as_bytes(),
        )
        .unwrap()
    };
    let layout = json!({"profile": "pip-720p"}).to_string();
    let path = format!("/v1/tasks/{task}");
    let (code, _, text) = signed("PATCH", &path, &layout, "wrong-key");
    assert_eq!(code, 401, "{text}");
    let (code, _, text) = signed("PATCH", &path, &layout, SECRET_KEY);
    assert_eq!(code, 204, "{text}");
    let (code, _, text) = signed("DELETE", &path, "", SECRET_KEY);
    assert_eq!(code, 204, "{text}");
    common::wait_for("the task stopped", Duration::from_secs(10), || {
        gw.relay_status(&task)["state"] == "stopped"
    });

    // Logging out closes the session everywhere.
    let (code, _, _) = http_with(
        port,
        "POST",
        "/console/api/logout",
        &[("Cookie", &cookie)],
        b"",
    )
    .unwrap();
    assert_eq!(
        code, 401,
        "logging out is a change: it needs the CSRF token too"
    );
    let (code, _, _) = http_with(
        port,
        "POST",
        "/console/api/logout",
        &[("Cookie", &cookie), ("X-Roomcast-Csrf", &csrf)],
        b"",
    )
    .unwrap();
    assert_eq!(code, 204);
    let (code, _, _) =
        http_with(port, "GET", "/v1/status/node", &[("Cookie", &cookie)], b"").unwrap();
    assert_eq!(code, 401);

    // An address that keeps guessing is held off, even with the right key.
    let try_login = |key: &str| {
        let body = json!({"secret_id": SECRET_ID, "secret_key": key}).to_string();
        let json_ct = [("Content-Type", "application/json")];
        http_with(
            port,
            "POST",
            "/console/api/login",
            &json_ct,
            body.as_bytes(),
        )
        .unwrap()
        .0
    };
    // Two wrong keys were tried above (a wrong key and an unknown id).
    let codes: Vec<u16> = (0..9).map(|_| try_login("guess")).collect();
    assert_eq!(codes[..8], [401; 8], "{codes:?}");
    assert_eq!(codes[8], 429, "{codes:?}");
    assert_eq!(try_login(SECRET_KEY), 429);
    assert!(gw.log_text().contains("too many failed logins"));
}
