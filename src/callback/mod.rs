//! TRTC-style event callbacks: room events (EventGroupId 1), media events
//! (2), cloud recording events (3) and relay events (4) POSTed as JSON to each application's
//! `callback_url`, signed with its `callback_key` (`Sign` =
//! base64(HMAC-SHA256(key, body)), plus an `SdkAppId` header).
//!
//! `payload` is the pure mapping from room events; the shell subscribes to
//! the room engine's events, queues deliveries in a bounded queue per
//! application (a full queue drops the oldest and counts it: a slow
//! receiver never holds a room back) and delivers them in order with TRTC's
//! policy: 5 s timeout, one immediate retry, then every 10 s for a minute.
//! `http://` and `https://` receivers (TLS verified against the Mozilla
//! roots and `tls.ca_file`: [`crate::tls`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::config::Config;
use crate::record::RecordingEvent;
use crate::relay::RelayManager;
use crate::room::{
    Audience, EventKind, ExitReason, Role, RoomEvent, RoomHandle, RoomId, TrackKind,
};
use crate::rtmp::push::PushState;

/// Deliveries waiting per application.
pub(crate) const QUEUE_CAPACITY: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_secs(10);
const RETRY_FOR: Duration = Duration::from_secs(60);

/// An `http[s]://host[:port]/path` receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub tls: bool,
}

impl HttpUrl {
    pub(crate) fn parse(url: &str) -> Result<HttpUrl, String> {
        let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("https://") {
            (r, true, 443)
        } else if let Some(r) = url.strip_prefix("http://") {
            (r, false, 80)
        } else {
            return Err("must be an http:// or https:// URL".into());
        };
        let rest = rest.split('#').next().unwrap_or("");
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains('@') {
            return Err("must name a host".into());
        }
        let parse = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port `{p}`"));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("a bad IPv6 host")?;
            match after.strip_prefix(':') {
                Some(p) => (h, parse(p)?),
                None => (h, default_port),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, parse(p)?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
            return Err("must name a host".into());
        }
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path: match path {
                "" => "/".into(),
                p if p.starts_with('?') => format!("/{p}"),
                p => p.into(),
            },
            tls,
        })
    }

    /// A connection to the URL's host: TCP, inside verified TLS for https.
    pub(crate) async fn connect(&self) -> std::io::Result<crate::tls::Conn> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        crate::tls::wrap(&self.host, tcp, self.tls)
            .await
            .map_err(std::io::Error::other)
    }
}

/// `Sign` header value for `body`.
fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn room_value(room: &RoomId) -> Value {
    match room {
        RoomId::Num(n) => json!(n),
        RoomId::Str(s) => json!(s),
    }
}

fn role_code(role: Role) -> u32 {
    match role {
        Role::Anchor => 20,
        Role::Audience => 21,
    }
}

/// TRTC's exit reasons: 1 normal, 2 timeout, 3 removed, 4 room dismissed.
fn exit_code(reason: ExitReason) -> u32 {
    match reason {
        ExitReason::Left | ExitReason::MovedToAnotherRoom => 1,
        ExitReason::DisconnectTimeout => 2,
        ExitReason::Removed => 3,
        ExitReason::RoomDismissed | ExitReason::RoomClosed => 4,
    }
}

/// The callback for an event, if TRTC has one: (EventGroupId, EventType, body).
/// Events about hidden users are internal and never called back.
pub(crate) fn payload(ev: &RoomEvent, now_ms: u64) -> Option<Value> {
    let (group, kind, extra) = match &ev.kind {
        EventKind::RoomCreated { owner, .. } => (1, 101, json!({"UserId": owner.as_str()})),
        EventKind::RoomClosed { reason } => (1, 102, json!({"Reason": reason.as_str()})),
        EventKind::UserEntered { user, role } if ev.audience == Audience::Room => (
            1,
            103,
            json!({"UserId": user.as_str(), "Role": role_code(*role)}),
        ),
        EventKind::UserExited { user, reason } if ev.audience == Audience::Room => (
            1,
            104,
            json!({"UserId": user.as_str(), "Reason": exit_code(*reason)}),
        ),
        EventKind::RoleSwitched { user, role } if ev.audience == Audience::Room => (
            1,
            105,
            json!({"UserId": user.as_str(), "Role": role_code(*role)}),
        ),
        EventKind::TrackPublished { user, kind } if ev.audience == Audience::Room => {
            let t = if *kind == TrackKind::Video { 201 } else { 203 };
            (2, t, json!({"UserId": user.as_str()}))
        }
        EventKind::TrackUnpublished { user, kind } if ev.audience == Audience::Room => {
            let t = if *kind == TrackKind::Video { 202 } else { 204 };
            (2, t, json!({"UserId": user.as_str()}))
        }
        _ => return None,
    };
    let mut info = json!({
        "RoomId": room_value(&ev.room.room),
        "EventTs": now_ms / 1000,
        "EventMsTs": now_ms,
    });
    if let (Value::Object(i), Value::Object(e)) = (&mut info, extra) {
        i.extend(e);
    }
    Some(json!({
        "EventGroupId": group,
        "EventType": kind,
        "CallbackTs": now_ms,
        "EventInfo": info,
    }))
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    dropped: u64,
}

struct Sink {
    queue: std::sync::Mutex<Queue>,
    wake: Notify,
    /// The queue's length in the metrics.
    queued: prometheus_client::metrics::gauge::Gauge,
    dropped: prometheus_client::metrics::counter::Counter,
    failures: prometheus_client::metrics::counter::Counter,
}

/// A relay target's state as TRTC's relay callback (401) `Status`: 2 is
/// TRTC's "pushing" (its documented example); the others are roomcast's:
/// 1 connecting, 3 retrying, 4 failed (given up), 5 stopped.
fn relay_status_code(state: &PushState) -> u32 {
    match state {
        PushState::Connecting { .. } => 1,
        PushState::Publishing => 2,
        PushState::Retrying { .. } => 3,
        PushState::Failed { .. } => 4,
        PushState::Stopped => 5,
    }
}

/// The 401 callback of one relay target's state; `reason` (roomcast's
/// addition) is the last error while retrying or failed.
fn relay_payload(
    room: &crate::room::RoomKey,
    user: Option<&str>,
    task: &str,
    (url, status, reason): (&str, u32, Option<&str>),
    now_ms: u64,
) -> Value {
    let mut payload = json!({"Url": url, "Status": status});
    if let Some(r) = reason {
        payload["Reason"] = json!(r);
    }
    json!({
        "EventGroupId": 4,
        "EventType": 401,
        "CallbackTs": now_ms,
        "EventInfo": {
            "RoomId": room_value(&room.room),
            "RoomType": match room.room { RoomId::Num(_) => 0, RoomId::Str(_) => 1 },
            "EventTsMs": now_ms,
            "UserId": user.unwrap_or(""),
            "TaskId": task,
            "Payload": payload,
        },
    })
}

/// Runs until the room engine stops: one dispatcher, one sender per app,
/// and a watcher of relay targets (401).
pub(crate) fn spawn(
    config: Arc<Config>,
    rooms: &RoomHandle,
    relays: RelayManager,
    recordings: tokio::sync::broadcast::Receiver<RecordingEvent>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut sinks: HashMap<u64, Arc<Sink>> = HashMap::new();
    let m = crate::metrics::metrics();
    let label = |sdkappid| crate::metrics::AppLabel { sdkappid };
    for app in &config.apps {
        let (Some(url), Some(key)) = (&app.callback_url, &app.callback_key) else {
            continue;
        };
        let Ok(url) = HttpUrl::parse(url) else {
            continue; // refused by config validation already
        };
        let sink = Arc::new(Sink {
            queue: std::sync::Mutex::new(Queue {
                items: VecDeque::new(),
                dropped: 0,
            }),
            wake: Notify::new(),
            queued: m.callback_queue.get_or_create(&label(app.sdkappid)).clone(),
            dropped: m
                .callbacks_dropped
                .get_or_create(&label(app.sdkappid))
                .clone(),
            failures: m
                .callback_failures
                .get_or_create(&label(app.sdkappid))
                .clone(),
        });
        tokio::spawn(deliver(app.sdkappid, url, key.clone(), sink.clone()));
        tracing::info!(sdkappid = app.sdkappid, "event callbacks enabled");
        sinks.insert(app.sdkappid, sink);
    }
    if sinks.is_empty() {
        return None;
    }
    let sinks = Arc::new(sinks);
    tokio::spawn(watch_relays(relays, sinks.clone()));
    tokio::spawn(forward_recordings(recordings, sinks.clone()));
    let mut events = rooms.subscribe();
    Some(tokio::spawn(async move {
        // TRTC reports an exit as 104 alone, not as 202/204 first: a track
        // ending waits a moment in case its user's exit follows.
        let mut held: Vec<Arc<RoomEvent>> = Vec::new();
        loop {
            let next = if held.is_empty() {
                Ok(events.recv().await)
            } else {
                crate::ticks::timeout(Duration::from_millis(200), events.recv()).await
            };
            let ev = match next {
                Ok(Ok(ev)) => ev,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    tracing::warn!(missed = n, "callbacks fell behind the room engine");
                    continue;
                }
                Ok(Err(_)) => return,
                Err(_) => {
                    for h in std::mem::take(&mut held) {
                        enqueue(&sinks, &h);
                    }
                    continue;
                }
            };
            if matches!(ev.kind, EventKind::TrackUnpublished { .. }) {
                held.push(ev);
                continue;
            }
            if let EventKind::UserExited { user, .. } = &ev.kind {
                held.retain(|h| !(h.room == ev.room && h.subject() == Some(user)));
            }
            for h in std::mem::take(&mut held) {
                enqueue(&sinks, &h);
            }
            enqueue(&sinks, &ev);
        }
    }))
}

/// Cloud recording events (group 3) as they come.
async fn forward_recordings(
    mut events: tokio::sync::broadcast::Receiver<RecordingEvent>,
    sinks: Arc<HashMap<u64, Arc<Sink>>>,
) {
    loop {
        match events.recv().await {
            Ok(ev) => {
                if let Some(sink) = sinks.get(&ev.room.app) {
                    push(sink, recording_payload(&ev, crate::unix_now_ms()));
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "recording callbacks fell behind");
            }
            Err(_) => return,
        }
    }
}

fn recorded_file(f: &crate::record::RecordedFile) -> Value {
    json!({
        "FileName": f.name,
        "UserId": f.user.as_deref().unwrap_or(""),
        "TrackType": f.track,
        "BeginTimeStamp": f.begin * 1000,
    })
}

/// A cloud recording event as TRTC's group 3 callback: 301 recorder start
/// `{Status: 0}`, 302 recorder stop `{LeaveCode}`, 303 upload start
/// `{Status: 0}`, 304 file info `{FileList: [file]}`, 305 upload stop
/// `{Status: 0}`, 307 first slice `{FileName, UserId, TrackType,
/// BeginTimeStamp}`.
pub(crate) fn recording_payload(ev: &RecordingEvent, now_ms: u64) -> Value {
    use crate::record::RecordingEventKind as K;
    let (kind, payload) = match &ev.kind {
        K::RecorderStart => (301, json!({"Status": 0})),
        K::RecorderStop { leave_code } => (302, json!({"LeaveCode": leave_code})),
        K::UploadStart => (303, json!({"Status": 0})),
        K::FileInfo { files } => (
            304,
            json!({"FileList": files.iter().map(recorded_file).collect::<Vec<_>>()}),
        ),
        K::UploadStop => (305, json!({"Status": 0})),
        K::FileSlice { file } => (307, recorded_file(file)),
    };
    json!({
        "EventGroupId": 3,
        "EventType": kind,
        "CallbackTs": now_ms,
        "EventInfo": {
            "RoomId": room_value(&ev.room.room),
            "EventTs": ev.at_ms / 1000,
            "EventMsTs": ev.at_ms,
            "UserId": ev.user,
            "TaskId": ev.task,
            "Payload": payload,
        },
    })
}

/// Reports every relay target's state changes (401): the relay table is
/// read again whenever the manager says a task's state changed.
async fn watch_relays(relays: RelayManager, sinks: Arc<HashMap<u64, Arc<Sink>>>) {
    let mut last: HashMap<(String, String), u32> = HashMap::new();
    let mut changes = relays.watch_changes();
    changes.mark_changed();
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        for (spec, status) in relays.list() {
            let Some(sink) = sinks.get(&spec.room.app) else {
                continue;
            };
            let stopped = matches!(status.state, crate::relay::TaskState::Stopped(_));
            for (url, state, _) in &status.targets {
                let key = (spec.id.clone(), url.clone());
                let code = if stopped { 5 } else { relay_status_code(state) };
                seen.insert(key.clone());
                if last.get(&key) == Some(&code) {
                    continue;
                }
                last.insert(key, code);
                let user = spec.user().map(|u| u.as_str());
                let shown = url.split('?').next().unwrap_or(url);
                push(
                    sink,
                    relay_payload(
                        &spec.room,
                        user,
                        &spec.id,
                        (shown, code, state.error().filter(|_| !stopped)),
                        crate::unix_now_ms(),
                    ),
                );
            }
        }
        last.retain(|k, _| seen.contains(k));
    }
}

/// Queues the callback of `ev` for its application, if it has one.
fn enqueue(sinks: &HashMap<u64, Arc<Sink>>, ev: &RoomEvent) {
    let Some(sink) = sinks.get(&ev.room.app) else {
        return;
    };
    let Some(body) = payload(ev, crate::unix_now_ms()) else {
        return;
    };
    push(sink, body);
}

fn push(sink: &Sink, body: Value) {
    let mut q = sink.queue.lock().unwrap_or_else(|p| p.into_inner());
    if q.items.len() >= QUEUE_CAPACITY {
        q.items.pop_front();
        q.dropped += 1;
        sink.dropped.inc();
        tracing::warn!(
            dropped = q.dropped,
            "callback queue full: oldest callback dropped"
        );
    }
    q.items.push_back(body.to_string().into_bytes());
    sink.queued.set(q.items.len() as i64);
    drop(q);
    sink.wake.notify_one();
}

async fn deliver(app: u64, url: HttpUrl, key: String, sink: Arc<Sink>) {
    loop {
        let next = {
            let mut q = sink.queue.lock().unwrap_or_else(|p| p.into_inner());
            let next = q.items.pop_front();
            sink.queued.set(q.items.len() as i64);
            next
        };
        let Some(body) = next else {
            sink.wake.notified().await;
            continue;
        };
        let sign = sign(&key, &body);
        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match crate::ticks::timeout(TIMEOUT, post(&url, app, &sign, &body)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => break,
                Ok(Ok(status)) => {
                    tracing::warn!(
                        sdkappid = app,
                        status,
                        attempt,
                        "callback refused by the receiver"
                    )
                }
                Ok(Err(e)) => {
                    tracing::warn!(sdkappid = app, attempt, "callback not delivered: {e}")
                }
                Err(_) => tracing::warn!(sdkappid = app, attempt, "callback timed out"),
            }
            sink.failures.inc();
            if started.elapsed() >= RETRY_FOR {
                tracing::warn!(sdkappid = app, "callback given up after {RETRY_FOR:?}");
                break;
            }
            // One immediate retry, then every 10 s.
            if attempt > 1 {
                crate::ticks::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// One HTTP/1.1 POST; the response status.
async fn post(url: &HttpUrl, app: u64, sign: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = url.connect().await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nSdkAppId: {app}\r\nSign: {sign}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host,
        url.port,
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // The status line is enough; bound what is read.
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status in the answer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{RoomKey, Scene, UserId};

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert_eq!(
            HttpUrl::parse("http://127.0.0.1:8081/cb").unwrap(),
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 8081,
                path: "/cb".into(),
                tls: false,
            }
        );
        assert_eq!(HttpUrl::parse("http://example.com").unwrap().port, 80);
        let u = HttpUrl::parse("https://example.com/cb").unwrap();
        assert_eq!((u.port, u.tls, u.path.as_str()), (443, true, "/cb"));
        assert!(HttpUrl::parse("ftp://example.com/cb").is_err());
        let u = HttpUrl::parse("http://127.0.0.1:8000/a/b.png?x=1#f").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8000, "/a/b.png?x=1")
        );
        let u = HttpUrl::parse("https://cdn.example.com").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.tls),
            ("cdn.example.com", 443, "/", true)
        );
        assert!(HttpUrl::parse("http://user@x/y").is_err());
        assert!(HttpUrl::parse("http:///cb").is_err());
        assert!(HttpUrl::parse("http://h:x/").is_err());
    }

    #[test]
    fn relay_states_map_to_401_statuses() {
        assert_eq!(relay_status_code(&PushState::Publishing), 2);
        assert_eq!(relay_status_code(&PushState::Connecting { attempt: 1 }), 1);
        let p = relay_payload(
            &RoomKey {
                app: 1,
                room: RoomId::Str("x".into()),
            },
            None,
            "relay-1",
            ("rtmp://o/live/x", 2, None),
            5,
        );
        assert_eq!(p["EventGroupId"], 4);
        assert!(p["EventInfo"]["Payload"].get("Reason").is_none());
        assert_eq!(p["EventInfo"]["RoomType"], 1);
        assert_eq!(p["EventInfo"]["Payload"]["Status"], 2);
        assert_eq!(p["EventInfo"]["UserId"], "");
    }

    #[test]
    fn recording_events_map_to_group_3() {
        use crate::record::{RecordedFile, RecordingEventKind};
        let ev = |kind| RecordingEvent {
            room: RoomKey {
                app: 1,
                room: RoomId::Num(42),
            },
            task: "rec-1".into(),
            user: "recorder".into(),
            at_ms: 1_700_000_000_123,
            kind,
        };
        let p = recording_payload(&ev(RecordingEventKind::RecorderStop { leave_code: 99 }), 5);
        assert_eq!(
            (&p["EventGroupId"], &p["EventType"]),
            (&json!(3), &json!(302))
        );
        let i = &p["EventInfo"];
        assert_eq!(
            (
                &i["RoomId"],
                &i["EventTs"],
                &i["UserId"],
                &i["Payload"]["LeaveCode"]
            ),
            (
                &json!(42),
                &json!(1_700_000_000u64),
                &json!("recorder"),
                &json!(99)
            )
        );
        let file = RecordedFile {
            user: Some("a".into()),
            name: "a_hls/index.m3u8".into(),
            track: "audio_video",
            begin: 7,
        };
        let p = recording_payload(
            &ev(RecordingEventKind::FileInfo {
                files: vec![file.clone()],
            }),
            5,
        );
        assert_eq!(p["EventType"], 304);
        assert_eq!(
            p["EventInfo"]["Payload"]["FileList"][0]["BeginTimeStamp"],
            7000
        );
        let p = recording_payload(&ev(RecordingEventKind::FileSlice { file }), 5);
        assert_eq!(p["EventType"], 307);
        assert_eq!(p["EventInfo"]["Payload"]["UserId"], "a");
    }

    #[test]
    fn sign_is_base64_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let s = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(s, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
    }

    #[test]
    fn events_map_to_trtc_groups_and_types() {
        let room = RoomKey {
            app: 1,
            room: RoomId::Num(1234),
        };
        let ev = |audience, kind| RoomEvent {
            room: room.clone(),
            audience,
            kind,
        };
        let alice = UserId::new("alice").unwrap();
        let p = payload(
            &ev(
                Audience::Room,
                EventKind::UserEntered {
                    user: alice.clone(),
                    role: Role::Anchor,
                },
            ),
            1_700_000_000_123,
        )
        .unwrap();
        assert_eq!(p["EventGroupId"], 1);
        assert_eq!(p["EventType"], 103);
        assert_eq!(p["EventInfo"]["RoomId"], 1234);
        assert_eq!(p["EventInfo"]["UserId"], "alice");
        assert_eq!(p["EventInfo"]["Role"], 20);
        assert_eq!(p["EventInfo"]["EventTs"], 1_700_000_000u64);
        let v = payload(
            &ev(
                Audience::Room,
                EventKind::TrackPublished {
                    user: alice.clone(),
                    kind: TrackKind::Video,
                },
            ),
            0,
        )
        .unwrap();
        assert_eq!(
            (v["EventGroupId"].clone(), v["EventType"].clone()),
            (json!(2), json!(201))
        );
        let a = payload(
            &ev(
                Audience::Room,
                EventKind::TrackUnpublished {
                    user: alice.clone(),
                    kind: TrackKind::Audio,
                },
            ),
            0,
        )
        .unwrap();
        assert_eq!(a["EventType"], 204);
        // A hidden user's entry is internal: no callback.
        assert!(
            payload(
                &ev(
                    Audience::Internal,
                    EventKind::UserEntered {
                        user: alice.clone(),
                        role: Role::Anchor
                    }
                ),
                0
            )
            .is_none()
        );
        let c = payload(
            &ev(
                Audience::Room,
                EventKind::RoomCreated {
                    owner: alice,
                    scene: Scene::Live,
                },
            ),
            0,
        )
        .unwrap();
        assert_eq!(c["EventType"], 101);
    }
}
