//! Cluster nodes sharing a real Redis (Debian's redis-server, started here
//! on a free port): room leases, races, a dead node's rooms taken over, a
//! lost lease, and Redis going away and coming back.
// These tests run outside the gateway, where tokio's timers are fine (the
// crate's own code makes timers through `ticks`: see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::Gateway;
use common::redis::Redis;

const APP: u64 = 1_400_000_000;
const KEY: &str = "cluster-test-key";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The two tests that mix media run one at a time (2 cores).
static MEDIA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const API: (&str, &str) = ("AKIDclustertest", "cluster-api-secret");

/// A node named `name` on `redis`, with short heartbeats and leases.
fn node(redis_port: u16, name: &str) -> Gateway {
    let config = common::app_config(
        APP,
        KEY,
        Some(API),
        &format!(
            "[cluster]\nredis_url = \"redis://127.0.0.1:{redis_port}\"\nnode_id = \"{name}\"\nheartbeat_ms = 200\nlease_ms = 2000\n"
        ),
    );
    let g = Gateway::spawn(Some(&config), &[]);
    g.wait_healthy();
    g
}

/// A metric's value, summed over its labels; `None` if absent.
fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let (_, body) = common::http_get(gw.http_port, "/metrics").ok()?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn url(gw: &Gateway, room: u32, user: &str) -> String {
    format!(
        "ws://127.0.0.1:{}/v1/rooms/{room}/ws?sdkappid={APP}&userid={user}&usersig={}",
        gw.http_port,
        common::usersig(APP, KEY, user)
    )
}

/// Enters `room` as `user`: the socket and its welcome, or the refusal's
/// status and reason.
async fn enter(gw: &Gateway, room: u32, user: &str) -> Result<(Ws, Value), (u16, String)> {
    match tokio_tungstenite::connect_async(url(gw, room, user)).await {
        Ok((mut ws, _)) => {
            let welcome = next(&mut ws).await;
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            Ok((ws, welcome))
        }
        Err(tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("{user}: {e}"),
    }
}

async fn next(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message in time");
        match msg {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return json!({"type": "closed"}),
            _ => continue,
        }
    }
}

fn lease(redis: &Redis, room: u32) -> String {
    redis
        .cli(&["GET", &format!("roomcast:room:{APP}/{room}")])
        .unwrap_or_default()
}

fn both_registered(redis: &Redis, names: &[&str]) -> bool {
    names.iter().all(|n| {
        redis
            .cli(&["EXISTS", &format!("roomcast:node:{n}")])
            .as_deref()
            == Some("1")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_room_never_both_own_it() {
    let redis = Redis::start(common::free_port());
    let a = node(redis.port, "node-a");
    let b = node(redis.port, "node-b");
    common::wait_for("both heartbeats", Duration::from_secs(10), || {
        both_registered(&redis, &["node-a", "node-b"])
    });
    // Each race: one user enters through node-a, one through node-b, at
    // once. Whichever node wins the lease owns the room; the other carries
    // its user there, so both meet in one room on one node.
    let mut sockets = Vec::new();
    for room in 100..130u32 {
        let (alice, bob) = (format!("alice{room}"), format!("bob{room}"));
        let (ra, rb) = tokio::join!(enter(&a, room, &alice), enter(&b, room, &bob));
        let ((wa, welcome_a), (wb, welcome_b)) = (
            ra.unwrap_or_else(|e| panic!("room {room}: {e:?}")),
            rb.unwrap_or_else(|e| panic!("room {room}: {e:?}")),
        );
        let owner = lease(&redis, room);
        assert!(
            owner.starts_with("node-a ") || owner.starts_with("node-b "),
            "room {room}: {owner}"
        );
        assert!(
            welcome_a.to_string().contains(&bob) || welcome_b.to_string().contains(&alice),
            "room {room}: alice and bob are not in one room: {welcome_a} / {welcome_b}"
        );
        sockets.push((wa, wb));
    }
    // Never both: every room is open on exactly one node, the one whose lease it holds.
    let rooms = |g: &Gateway| metric(g, "roomcast_rooms").unwrap_or(0.0);
    let leases = |g: &Gateway| metric(g, "roomcast_cluster_room_leases").unwrap_or(0.0);
    eprintln!("rooms won: node-a {}, node-b {}", rooms(&a), rooms(&b));
    assert_eq!(rooms(&a) + rooms(&b), 30.0);
    assert_eq!((leases(&a), leases(&b)), (rooms(&a), rooms(&b)));
    // `roomcast status cluster` (signed) on either node lists both, with their rooms.
    let out = Command::new(common::BIN)
        .args([
            "status",
            "cluster",
            "--http",
            &format!("127.0.0.1:{}", b.http_port),
        ])
        .args(["--secret-id", API.0, "--secret-key", API.1])
        .output()
        .unwrap();
    let cluster: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(cluster["node_id"], "node-b", "{cluster}");
    assert_eq!(cluster["redis"], "up", "{cluster}");
    let listed: Vec<(String, f64)> = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_owned(),
                n["rooms"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2, "{cluster}");
    assert_eq!(listed[0].0, "node-a");
    assert_eq!(listed[1].0, "node-b");
    // The fencing tokens only grow: 30 claims, 30 tokens.
    assert_eq!(redis.cli(&["GET", "roomcast:fence"]).as_deref(), Some("30"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_room_is_taken_over_and_a_lost_lease_closes_the_room() {
    let redis = Redis::start(common::free_port());
    let mut a = node(redis.port, "node-a");
    let b = node(redis.port, "node-b");
    common::wait_for("both heartbeats", Duration::from_secs(10), || {
        both_registered(&redis, &["node-a", "node-b"])
    });

    // Room 7 lives on node-a; node-b carries its entrants there.
    let _alice = enter(&a, 7, "alice").await.expect("alice enters on node-a");
    let (mut carried, welcome) = enter(&b, 7, "bob")
        .await
        .expect("bob enters through node-b");
    assert!(welcome.to_string().contains("alice"), "{welcome}");
    assert_eq!(metric(&b, "roomcast_rooms").unwrap_or(0.0), 0.0);

    // node-a dies without a word: its heartbeat stops, and node-b takes the
    // room over as soon as node-a is dead to it, not after the lease.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    // The carried socket ends with its owner: bob's client reconnects.
    assert_eq!(next(&mut carried).await["type"], "closed");
    let mut bob = loop {
        match enter(&b, 7, "bob").await {
            Ok((ws, _)) => break ws,
            Err((502 | 504, _)) if killed.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("node-b never took room 7 over: {e:?}"),
        }
    };
    eprintln!(
        "room 7 taken over {:?} after its owner died",
        killed.elapsed()
    );
    assert!(
        lease(&redis, 7).starts_with("node-b "),
        "{}",
        lease(&redis, 7)
    );

    // Someone else's token in the lease: node-b has lost the room and
    // closes it at its next renewal (a quarter of the lease).
    redis
        .cli(&[
            "SET",
            &format!("roomcast:room:{APP}/7"),
            "node-z 999999",
            "PX",
            "60000",
        ])
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = next(&mut bob).await;
            if m["type"] == "closed" || m.to_string().contains("dismissed") {
                return m;
            }
        }
    })
    .await
    .expect("bob is told the room is gone");
    eprintln!("after the lease was lost: {seen}");
    common::wait_for("node-b to hold no lease", Duration::from_secs(5), || {
        metric(&b, "roomcast_cluster_room_leases") == Some(0.0)
    });
    assert_eq!(
        lease(&redis, 7),
        "node-z 999999",
        "a lost lease is not released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_running_rooms_and_refuses_only_new_ones() {
    use common::media::{Origin, Publisher};
    let _serial = MEDIA.lock().await;
    let port = common::free_port();
    let mut redis = Redis::start(port);
    let a = node(port, "node-a");
    common::wait_for("the heartbeat", Duration::from_secs(10), || {
        both_registered(&redis, &["node-a"])
    });
    let _alice = enter(&a, 1, "alice").await.expect("alice enters");
    assert!(lease(&redis, 1).starts_with("node-a "));
    // A mix of a live anchor, pushed to an origin and served as HLS.
    let origin = Origin::start();
    let _teacher = Publisher::start(&a.publish_url(APP, KEY, "live", "teacher"), 60, &a.dir.0);
    // Started with Tencent's SDK, so its record is in Redis.
    let task = start_mix(&a, "live", &origin.url("live"));
    let stream = "live";
    let record = format!("roomcast:task:{task}");
    assert_eq!(redis.cli(&["EXISTS", &record]).as_deref(), Some("1"));
    let sequence = || {
        common::http_get(a.http_port, &format!("/hls/{stream}/index.m3u8"))
            .ok()
            .and_then(|(_, b)| {
                // The newest segment's number (`seg<N>.ts`).
                b.lines().rfind(|l| l.starts_with("seg")).and_then(|l| {
                    l.trim_start_matches("seg")
                        .split('.')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
            })
    };
    common::wait_for(
        "the mix live on HLS and at the origin",
        Duration::from_secs(20),
        || sequence().is_some() && a.relay_status(&task)["targets"][0]["state"] == "publishing",
    );

    redis.kill();
    let down = Instant::now();
    common::wait_for("Redis to be seen down", Duration::from_secs(10), || {
        metric(&a, "roomcast_cluster_redis_up") == Some(0.0)
    });
    let (seq_before, bytes_before) = (sequence().unwrap(), origin_bytes(&origin, "live"));
    // The running room takes new users; a new room is refused, clearly.
    let _bob = enter(&a, 1, "bob")
        .await
        .expect("bob enters the running room");
    let (status, why) = enter(&a, 2, "carol")
        .await
        .expect_err("a new room is refused");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("Redis") && why.contains("new rooms"), "{why}");
    assert_eq!(common::http_get(a.http_port, "/healthz").unwrap().0, 200);
    let (ready, why) = common::http_get(a.http_port, "/readyz").unwrap();
    assert_eq!(ready, 503, "{why}");
    assert!(why.contains("Redis"), "{why}");
    assert!(a.log_text().contains("running rooms continue"));
    // Twenty seconds without Redis: the mix keeps pushing and HLS advances.
    while down.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = a.relay_status(&task);
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["targets"][0]["state"], "publishing", "{st}");
    let (seq_after, bytes_after) = (sequence().unwrap(), origin_bytes(&origin, "live"));
    eprintln!(
        "20 s without Redis: newest HLS segment {seq_before} -> {seq_after}, origin {bytes_before} -> {bytes_after} bytes"
    );
    assert!(
        seq_after >= seq_before + 5,
        "HLS stalled: {seq_before} -> {seq_after}"
    );
    assert!(bytes_after > bytes_before + 1_000_000, "the push stalled");

    // Redis comes back empty: the running room's lease is set again and new
    // rooms are taken.
    let redis = Redis::start(port);
    common::wait_for(
        "the lease and the task record restored",
        Duration::from_secs(10),
        || {
            lease(&redis, 1).starts_with("node-a ")
                && redis
                    .cli(&["GET", &record])
                    .is_some_and(|r| r.contains("\"node\":\"node-a\""))
        },
    );
    common::wait_for("a new room taken", Duration::from_secs(10), || {
        futures_executor_enter(&a, 3, "dave")
    });
    assert_eq!(metric(&a, "roomcast_cluster_redis_up"), Some(1.0));
    assert_eq!(common::http_get(a.http_port, "/readyz").unwrap().0, 200);
}

/// A 720p grid mix of string room `room` pushed to `cdn` (its HLS stream is
/// named after the URL's last segment), started through `gw` with
/// Tencent's SDK; its TaskId.
fn start_mix(gw: &Gateway, room: &str, cdn: &str) -> String {
    let start = json!({
        "SdkAppId": APP, "RoomId": room, "RoomIdType": 1,
        "AgentParams": {"UserId": "mixer", "MaxIdleTime": 60},
        "WithTranscoding": 1,
        "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}},
        "VideoParams": {
            "VideoEncode": {"Width": 1280, "Height": 720, "Fps": 15, "BitRate": 1500, "Gop": 1},
            "LayoutParams": {"MixLayoutMode": 3},
        },
        "PublishCdnParams": [{"PublishCdnUrl": cdn}],
    });
    let r = common::trtc_sdk(gw.http_port, API, "StartPublishCdnStream", &start, &[]);
    assert_eq!(r["ok"], true, "{r}");
    r["response"]["TaskId"].as_str().unwrap().to_owned()
}

/// Bytes the origin has recorded of `name` so far.
fn origin_bytes(origin: &common::media::Origin, name: &str) -> u64 {
    origin
        .recordings(name)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Enters from a blocking poll (a fresh runtime per try).
fn futures_executor_enter(gw: &Gateway, room: u32, user: &str) -> bool {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async { enter(gw, room, user).await.is_ok() })
        })
        .join()
        .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_is_an_entry_point_for_publishers_players_and_signalling() {
    use common::media::{Publisher, near, pixel, rgb_frame};
    let _serial = MEDIA.lock().await;
    let redis = Redis::start(common::free_port());
    let a = node(redis.port, "node-a");
    let b = node(redis.port, "node-b");
    common::wait_for("both heartbeats", Duration::from_secs(10), || {
        both_registered(&redis, &["node-a", "node-b"])
    });

    // The teacher publishes to node-a, which takes the room; the guest's
    // OBS-like publish reaches node-b and is forwarded to node-a.
    let _teacher = Publisher::start_lavfi(
        &a.publish_url(APP, KEY, "class", "teacher"),
        "color=c=blue:size=640x360:rate=30",
        "sine=frequency=440:sample_rate=48000",
        40,
        &a.dir.0,
    );
    common::wait_for("node-a to own the room", Duration::from_secs(15), || {
        redis
            .cli(&["GET", &format!("roomcast:room:{APP}/str:class")])
            .is_some_and(|v| v.starts_with("node-a "))
    });
    let guest = Publisher::start_lavfi(
        &b.publish_url(APP, KEY, "class", "guest"),
        "color=c=red:size=640x360:rate=30",
        "sine=frequency=880:sample_rate=48000",
        40,
        &b.dir.0,
    );
    common::wait_for(
        "both anchors publishing on node-a",
        Duration::from_secs(15),
        || metric(&a, "roomcast_publishers") == Some(2.0),
    );
    assert!(
        b.log_text()
            .contains("rtmp publish forwarded to the room's owner node")
    );

    // A mix on the owner; its HLS asked of node-b is a redirect to node-a,
    // which ffmpeg follows like any player.
    let (_, stream) = a.start_relay(
        &json!({"sdkappid": APP, "room": "class", "roomtype": "str", "profile": "grid-720p"}),
    );
    let via_b = b.hls_url(&stream);
    common::wait_for(
        "the mix's playlist through node-b",
        Duration::from_secs(30),
        || {
            matches!(common::http(b.http_port, "GET", &format!("/hls/{stream}/index.m3u8"), None),
            Ok((302, headers, _)) if headers.iter().any(|(k, v)| k == "location" && v.contains(&format!(":{}/hls/", a.http_port))))
                && common::http_get(a.http_port, &format!("/hls/{stream}/index.m3u8"))
                    .is_ok_and(|(s, body)| s == 200 && body.matches("#EXTINF").count() >= 2)
        },
    );
    let frame = rgb_frame(&via_b, 1.0, 1280, 720);
    let (left, right) = (pixel(&frame, 1280, 320, 360), pixel(&frame, 1280, 960, 360));
    eprintln!("mix through node-b: left {left:?}, right {right:?}");
    let blue = (0, 0, 255);
    let red = (255, 0, 0);
    assert!(
        (near(left, blue, 60) && near(right, red, 60))
            || (near(left, red, 60) && near(right, blue, 60)),
        "both anchors in the mix: left {left:?}, right {right:?}"
    );

    // A browser's signalling socket on node-b is carried to node-a.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{}&roomtype=str",
        url(&b, 0, "carol").replace("/rooms/0/", "/rooms/class/")
    ))
    .await
    .expect("carol's socket through node-b");
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let members = welcome.to_string();
    assert!(
        members.contains("teacher") && members.contains("guest"),
        "{welcome}"
    );

    // WHIP to node-b: 307 to node-a, same path and query.
    let path = format!("/v1/whip/class?sdkappid={APP}&userid=dan&roomtype=str");
    let sig = common::usersig(APP, KEY, "dan");
    let (status, headers, _) = common::http_with(
        b.http_port,
        "POST",
        &path,
        &[
            ("content-type", "application/sdp"),
            ("authorization", &format!("Bearer {sig}")),
        ],
        b"v=0\r\n",
    )
    .unwrap();
    assert_eq!(status, 307);
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone());
    assert_eq!(
        location,
        Some(format!("http://127.0.0.1:{}{path}", a.http_port))
    );
    // Without a valid UserSig, nothing is said about the cluster.
    let (status, _, _) = common::http_with(
        b.http_port,
        "POST",
        &path,
        &[
            ("content-type", "application/sdp"),
            ("authorization", "Bearer forged"),
        ],
        b"v=0\r\n",
    )
    .unwrap();
    assert_eq!(status, 401);

    // A stream ingest asked of node-b runs on node-a (the room's owner);
    // calls naming its TaskId reach it through node-b too.
    let started = common::trtc_sdk(
        b.http_port,
        API,
        "StartStreamIngest",
        &json!({"SdkAppId": APP, "RoomId": "class", "RoomIdType": 0, "UserId": "robot",
                "UserSig": common::usersig(APP, KEY, "robot"),
                "StreamUrl": format!("http://127.0.0.1:{}/hls/{stream}/index.m3u8", a.http_port)}),
        &[],
    );
    assert_eq!(started["ok"], true, "{started}");
    let ingest = started["response"]["TaskId"].as_str().unwrap().to_owned();
    let (_, scrape) = common::http_get(b.http_port, "/metrics").unwrap();
    assert!(
        scrape
            .lines()
            .any(|l| l.contains("action=\"StartStreamIngest\"")
                && l.contains("code=\"carried\"")
                && !l.ends_with(" 0")),
        "node-b carried the call"
    );
    let describe = common::trtc_sdk(
        b.http_port,
        API,
        "DescribeStreamIngest",
        &json!({"SdkAppId": APP, "TaskId": ingest}),
        &[],
    );
    assert_eq!(describe["response"]["Status"], "InProgress", "{describe}");
    let stopped = common::trtc_sdk(
        b.http_port,
        API,
        "StopStreamIngest",
        &json!({"SdkAppId": APP, "TaskId": ingest}),
        &[],
    );
    assert_eq!(stopped["ok"], true, "{stopped}");
    let gone = common::trtc_sdk(
        b.http_port,
        API,
        "DescribeStreamIngest",
        &json!({"SdkAppId": APP, "TaskId": ingest}),
        &[],
    );
    assert_eq!(gone["response"]["Status"], "NotExist", "{gone}");
    drop(guest);
}

/// A TS playlist served through `port` (a redirect to the owner is
/// followed): the port that served it and its text.
fn playlist(port: u16, stream: &str) -> Option<(u16, String)> {
    let (status, headers, body) =
        common::http(port, "GET", &format!("/hls/{stream}/index.m3u8"), None).ok()?;
    eprintln!(
        "playlist through {port}: {status} {headers:?} {}",
        body.len()
    );
    match status {
        200 => Some((port, body)),
        302 => {
            let to = headers.iter().find(|(k, _)| k == "location")?.1.clone();
            let rest = to.strip_prefix("http://127.0.0.1:")?;
            let (p, _) = rest.split_once('/')?;
            let p: u16 = p.parse().ok()?;
            let (s, b) = common::http_get(p, &format!("/hls/{stream}/index.m3u8")).ok()?;
            (s == 200).then_some((p, b))
        }
        _ => None,
    }
}

/// The newest media segment's URL in a TS playlist served through `port`.
fn newest_segment(port: u16, stream: &str) -> Option<String> {
    let (port, body) = playlist(port, stream)?;
    let seg = body
        .lines()
        .rfind(|l| !l.starts_with('#') && !l.is_empty())?;
    Some(format!("http://127.0.0.1:{port}/hls/{stream}/{seg}"))
}

/// Each listed segment's (media sequence number, discontinuity sequence
/// number), counted as a player counts them.
fn numbered(text: &str) -> Vec<(u64, u64)> {
    let tag = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let (mut msn, mut cc) = (
        tag("#EXT-X-MEDIA-SEQUENCE:"),
        tag("#EXT-X-DISCONTINUITY-SEQUENCE:"),
    );
    let mut out = Vec::new();
    for line in text.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            cc += 1;
        } else if line.starts_with("#EXTINF") {
            out.push((msn, cc));
            msn += 1;
        }
    }
    out
}

/// The node (`node` field) a cluster-wide status listing gives for task `id`.
fn listed_on(gw: &Gateway, doc: &str, id: &str) -> Option<String> {
    let (code, headers, v) = common::status_get(gw.http_port, API, &format!("/v1/status/{doc}"));
    assert_eq!(code, 200, "{v}");
    assert!(
        !headers.iter().any(|(k, _)| k == "x-roomcast-nodes-missing"),
        "{headers:?}"
    );
    v.as_array()?.iter().find(|t| t["task_id"] == id)?["node"]
        .as_str()
        .map(str::to_owned)
}

/// Files of recording `task` in `gw`'s data directory.
fn recorded_files(gw: &Gateway, task: &str) -> Vec<String> {
    std::fs::read_dir(gw.dir.0.join("data").join("recordings").join(task))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".mp4"))
                .collect()
        })
        .unwrap_or_default()
}

/// Both anchors in the mix (one blue half, one red) and both tones.
fn shows_and_sounds_both(segment: &str) -> Result<(), String> {
    use common::media::{near, pcm, pixel, rgb_frame, tone_power};
    let frame = rgb_frame(segment, 0.5, 1280, 720);
    // Wherever the layout puts the two cells, one of these points is in each.
    let points = [
        (320, 360),
        (960, 360),
        (640, 180),
        (640, 540),
        (320, 180),
        (960, 540),
    ];
    let seen: Vec<(u8, u8, u8)> = points
        .iter()
        .map(|&(x, y)| pixel(&frame, 1280, x, y))
        .collect();
    let (blue, red) = ((0, 0, 255), (255, 0, 0));
    let pictures =
        seen.iter().any(|&p| near(p, blue, 60)) && seen.iter().any(|&p| near(p, red, 60));
    let (left, right) = (seen[0], seen[1]);
    let samples = pcm(segment);
    let (a, b, off) = (
        tone_power(&samples, 440.0, 48_000.0),
        tone_power(&samples, 880.0, 48_000.0),
        tone_power(&samples, 660.0, 48_000.0),
    );
    let tones = a > 50.0 * off && b > 50.0 * off;
    if pictures && tones {
        Ok(())
    } else {
        Err(format!(
            "{seen:?} (left {left:?}, right {right:?}); 440 Hz {a:e}, 880 Hz {b:e}, 660 Hz {off:e}"
        ))
    }
}

/// Waits (30 s at most) until the newest segment of `stream`, asked of
/// `gw`, shows and sounds both anchors; each miss is printed.
fn wait_for_both_in_hls(gw: &Gateway, stream: &str) {
    common::wait_for(
        &format!(
            "both anchors in {stream}'s HLS through port {}",
            gw.http_port
        ),
        Duration::from_secs(30),
        || match newest_segment(gw.http_port, stream).map(|s| shows_and_sounds_both(&s)) {
            Some(Ok(())) => true,
            other => {
                eprintln!("not yet: {other:?}");
                false
            }
        },
    );
}

#[test]
fn a_mix_started_on_a_third_node_resumes_by_itself_when_its_owner_dies() {
    use common::media::{Origin, Publisher};
    let _serial = MEDIA.blocking_lock();
    let redis = Redis::start(common::free_port());
    let mut a = node(redis.port, "node-a");
    let b = node(redis.port, "node-b");
    let c = node(redis.port, "node-c");
    common::wait_for("three heartbeats", Duration::from_secs(10), || {
        both_registered(&redis, &["node-a", "node-b", "node-c"])
    });
    let origin = Origin::start();
    let teacher = |gw: &Gateway| {
        Publisher::start_lavfi(
            &gw.publish_url(APP, KEY, "class", "teacher"),
            "color=c=blue:size=640x360:rate=30",
            "sine=frequency=440:sample_rate=48000",
            90,
            &gw.dir.0,
        )
    };
    let guest = |gw: &Gateway| {
        Publisher::start_lavfi(
            &gw.publish_url(APP, KEY, "class", "guest"),
            "color=c=red:size=640x360:rate=30",
            "sine=frequency=880:sample_rate=48000",
            90,
            &gw.dir.0,
        )
    };
    // The teacher publishes to node-a, the guest to node-b.
    let mut t1 = teacher(&a);
    common::wait_for("node-a to own the room", Duration::from_secs(15), || {
        redis
            .cli(&["GET", &format!("roomcast:room:{APP}/str:class")])
            .is_some_and(|v| v.starts_with("node-a "))
    });
    let mut g1 = guest(&b);
    common::wait_for("both anchors on node-a", Duration::from_secs(15), || {
        metric(&a, "roomcast_publishers") == Some(2.0)
    });

    // The mix is asked of node-c with Tencent's SDK; node-c carries the
    // call to node-a, which owns the room.
    let task = start_mix(&c, "class", &origin.url("mix1"));
    assert!(
        a.relay_status(&task)["state"].is_string(),
        "the mix runs on node-a"
    );
    common::wait_for(
        "the mix publishing to the origin",
        Duration::from_secs(20),
        || a.relay_status(&task)["targets"][0]["state"] == "publishing",
    );

    // HLS of the mix from any node shows both anchors and sounds both tones.
    wait_for_both_in_hls(&c, "mix1");

    // A single-stream recording of the room, asked of node-c (it runs on
    // node-a), and a stream ingest into a room of its own on node-a: a
    // looping clip, with nobody in that room to reconnect when node-a dies.
    let recording = common::trtc_call(
        c.http_port,
        API,
        "CreateCloudRecording",
        json!({"SdkAppId": APP, "RoomId": "class", "RoomIdType": 0, "UserId": "recorder",
               "UserSig": common::usersig(APP, KEY, "recorder"),
               "StorageParams": {"CloudStorage": {"Vendor": 0, "Region": "ap-guangzhou",
                   "Bucket": "b-1250000000", "AccessKey": "ak", "SecretKey": "sk"}},
               "RecordParams": {"RecordMode": 1, "OutputFormat": 3, "MaxIdleTime": 30}}),
    );
    let recording = recording["TaskId"]
        .as_str()
        .unwrap_or_else(|| panic!("{recording}"))
        .to_owned();
    let clips = common::TempDir::new("clips");
    common::media::lavfi_file(
        &clips.0.join("radio.mp4"),
        "color=c=green:size=320x240:rate=15",
        "sine=frequency=330:sample_rate=48000",
        10,
    );
    let files = common::FileServer::start(&clips.0);
    let ingest = common::trtc_call(
        a.http_port,
        API,
        "StartStreamIngest",
        json!({"SdkAppId": APP, "RoomId": "radio", "RoomIdType": 0, "UserId": "radio-bot",
               "UserSig": common::usersig(APP, KEY, "radio-bot"),
               "StreamUrl": files.url("radio.mp4"), "RepeatNum": -1}),
    );
    let ingest = ingest["TaskId"]
        .as_str()
        .unwrap_or_else(|| panic!("{ingest}"))
        .to_owned();
    common::wait_for(
        "node-a recording both anchors",
        Duration::from_secs(15),
        || recorded_files(&a, &recording).len() == 2,
    );
    // Listings asked of any node cover the cluster, each entry naming its node.
    assert_eq!(listed_on(&b, "tasks", &task).as_deref(), Some("node-a"));
    assert_eq!(
        listed_on(&c, "recordings", &recording).as_deref(),
        Some("node-a")
    );
    assert_eq!(listed_on(&b, "ingests", &ingest).as_deref(), Some("node-a"));
    let (_, mine) = playlist(c.http_port, "mix1").expect("the mix's playlist");
    let before = *numbered(&mine).last().expect("segments");

    // The owner is killed. Both anchors' publishers see their connections
    // end (the guest's forward lost its owner) and publish again, through
    // the surviving nodes.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    assert!(
        t1.wait(Duration::from_secs(10)).is_some(),
        "the teacher's publish to the dead node ends"
    );
    assert!(
        g1.wait(Duration::from_secs(10)).is_some(),
        "the guest's forwarded publish ends"
    );
    // Like OBS, each publisher retries until it is taken: the first tries
    // may still be sent to the dead node, for the heartbeats it has left.
    let mut t2 = teacher(&b);
    let mut g2 = guest(&c);
    // Starts again each publisher that ended; how many it started.
    let retry = |t2: &mut Publisher, g2: &mut Publisher| {
        let mut started = 0;
        if t2.child.try_wait().unwrap().is_some() {
            *t2 = teacher(&b);
            started += 1;
        }
        if g2.child.try_wait().unwrap().is_some() {
            *g2 = guest(&c);
            started += 1;
        }
        started
    };
    let running = |gw: &Gateway| {
        let st = gw.relay_status(&task);
        st["state"] == "running" && st["targets"][0]["state"] == "publishing"
    };
    let owner = loop {
        retry(&mut t2, &mut g2);
        if running(&b) {
            break &b;
        }
        if running(&c) {
            break &c;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the mix did not resume within 15 s\nnode-b:\n{}\nnode-c:\n{}",
            b.log_text(),
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let resumed = killed.elapsed();
    let name = if std::ptr::eq(owner, &b) {
        "node-b"
    } else {
        "node-c"
    };
    eprintln!("the mix resumed on {name} {resumed:?} after its owner was killed");
    assert!(owner.log_text().contains("cluster: task resumed here"));
    assert!(
        redis
            .cli(&["GET", &format!("roomcast:task:{task}")])
            .is_some_and(|r| r.contains(&format!("\"node\":\"{name}\""))),
        "the stored task names its new node"
    );
    // The same origin receives it again: a second recording of mix1.
    common::wait_for(
        "a second publish at the origin",
        Duration::from_secs(15),
        || origin.recordings("mix1").len() >= 2,
    );
    wait_for_both_in_hls(&c, "mix1");
    // Players see the stream go on: the next media sequence numbers, one
    // discontinuity later.
    let (_, text) = playlist(c.http_port, "mix1").expect("the mix's playlist");
    let after = numbered(&text);
    eprintln!("before the kill the playlist ended at {before:?}; after: {after:?}");
    assert!(
        after
            .iter()
            .all(|&(msn, cc)| msn > before.0 && cc == before.1 + 1),
        "{before:?} then {after:?}\n{text}"
    );

    // The recording resumed beside the mix (same room, same owner), its
    // files named apart from the first node's.
    common::wait_for(
        "the recording resumed on the new owner",
        Duration::from_secs(15),
        || {
            recorded_files(owner, &recording)
                .iter()
                .filter(|f| f.contains("_r1_"))
                .count()
                == 2
        },
    );
    let other = if std::ptr::eq(owner, &b) { &c } else { &b };
    let describe = || {
        common::trtc_call(
            other.http_port,
            API,
            "DescribeCloudRecording",
            json!({"SdkAppId": APP, "TaskId": recording}),
        )
    };
    // Recording as soon as an anchor is attached: on a busy box a
    // publisher may still be between tries (a first try taken on the way
    // to the dead node can end after the mix resumed), so, as above, each
    // publisher that ended is started again, and asked until it says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut restarts = 0;
    let described = loop {
        let d = describe();
        if d["Status"] == "InProgress" {
            break d;
        }
        restarts += retry(&mut t2, &mut g2);
        assert!(
            Instant::now() < deadline,
            "not recording: {d}\npublishers started again: {restarts}\n\
             node-b:\n{}\nnode-c:\n{}",
            b.log_text(),
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    if restarts > 0 {
        eprintln!("publishers started again while waiting for the recording: {restarts}");
    }
    assert!(described.to_string().contains("_r1_"), "{described}");
    assert_eq!(
        listed_on(other, "recordings", &recording).as_deref(),
        Some(name)
    );
    // The ingest's room had nobody to reconnect: a surviving node took it
    // by itself and pulls the clip again, under the same TaskId.
    common::wait_for("the ingest resumed", Duration::from_secs(15), || {
        listed_on(&b, "ingests", &ingest).is_some_and(|n| n != "node-a")
    });
    let adopter = listed_on(&c, "ingests", &ingest).unwrap();
    eprintln!(
        "the ingest resumed on {adopter} {:?} after the kill",
        killed.elapsed()
    );
    let described = common::trtc_call(
        b.http_port,
        API,
        "DescribeStreamIngest",
        json!({"SdkAppId": APP, "TaskId": ingest}),
    );
    assert_eq!(described["Status"], "InProgress", "{described}");
    for (action, id) in [
        ("DeleteCloudRecording", &recording),
        ("StopStreamIngest", &ingest),
    ] {
        let r = common::trtc_call(
            other.http_port,
            API,
            action,
            json!({"SdkAppId": APP, "TaskId": id}),
        );
        assert!(r.get("Error").is_none(), "{action}: {r}");
        common::wait_for(
            &format!("{action} forgotten"),
            Duration::from_secs(10),
            || {
                redis
                    .cli(&["EXISTS", &format!("roomcast:task:{id}")])
                    .as_deref()
                    == Some("0")
            },
        );
    }
    drop(files);

    // Stopped through the other node: carried to the owner, and forgotten in Redis.
    let r = common::trtc_sdk(
        other.http_port,
        API,
        "StopPublishCdnStream",
        &json!({"SdkAppId": APP, "TaskId": task}),
        &[],
    );
    assert_eq!(r["ok"], true, "{r}");
    common::wait_for(
        "the task stopped on its owner",
        Duration::from_secs(10),
        || owner.relay_status(&task)["state"] == "stopped",
    );
    assert_eq!(
        redis
            .cli(&["EXISTS", &format!("roomcast:task:{task}")])
            .as_deref(),
        Some("0")
    );
}
