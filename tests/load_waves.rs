//! Load in waves beside a running mix (bounded, loopback only): 1,000
//! garbage RTMP connections at 200 a second, 1,000 room WebSockets opened
//! and closed, 300 RTMP publishers joining and leaving in three waves. The
//! mix keeps its clock and its HLS advances, every room the waves made is
//! gone after them, and the gateway's memory comes back near its baseline.
// These tests run outside the gateway, where tokio's timers are fine (the
// crate's own code makes timers through `ticks`: see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

#[path = "../benches/common/flv_file.rs"]
mod flv_file;
#[path = "../benches/common/rtmp_client.rs"]
mod rtmp_client;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::media::{Publisher, lavfi_file};
use common::{Gateway, TempDir, http_get, wait_for};
use futures_util::{SinkExt, StreamExt};
use rml_rtmp::time::RtmpTimestamp;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const APP: u64 = 1_400_000_000;
const KEY: &str = "load-test-key";

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Rooms open, from the metrics.
fn rooms_open(gw: &Gateway) -> u64 {
    let (_, text) = http_get(gw.http_port, "/metrics").unwrap();
    text.lines()
        .filter(|l| l.starts_with("roomcast_rooms{") || l.starts_with("roomcast_rooms "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn segments(gw: &Gateway, stream: &str) -> usize {
    http_get(gw.http_port, &format!("/hls/{stream}/index.m3u8"))
        .map(|(_, t)| t.matches("#EXTINF").count())
        .unwrap_or(0)
}

/// The mix's (late ticks, effective fps).
fn mix_health(gw: &Gateway, id: &str) -> (u64, f64) {
    let st = gw.relay_status(id);
    (
        st["late_ticks"].as_u64().unwrap_or(0),
        st["effective_fps"].as_f64().unwrap_or(0.0),
    )
}

#[test]
fn waves_of_connections_leave_the_mix_and_memory_as_they_were() {
    let profiles = TempDir::new("load-profiles");
    let grid = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/grid-720p.toml"),
    )
    .unwrap();
    let small = grid
        .replace("name = \"grid-720p\"", "name = \"load-mix\"")
        .replace("width = 1280", "width = 640")
        .replace("height = 720", "height = 360")
        .replace("fps = 30", "fps = 15")
        .replace("low_latency = false", "low_latency = true");
    std::fs::write(profiles.0.join("load-mix.toml"), small).unwrap();
    let gw = Gateway::spawn(
        Some(&common::app_config(
            APP,
            KEY,
            Some(("AKIDload", "k")),
            "[http]\nmax_connections_per_ip = 4096\nmax_connections = 8192\n\
             [rtmp]\nmax_connections_per_ip = 1024\n\
             [limits]\ndisconnect_grace_secs = 1\naudience_linger_secs = 1\n",
        )),
        &[("ROOMCAST_PROFILES_DIR", profiles.0.to_str().unwrap())],
    );
    gw.wait_healthy();
    let pid = gw.child.id();
    let _anchor = Publisher::start(&gw.publish_url(APP, KEY, "stage", "host"), 120, &gw.dir.0);
    let (id, stream) =
        gw.start_relay(&json!({"sdkappid": APP, "room": "stage", "profile": "load-mix"}));
    wait_for(
        "the mix to run at full rate",
        Duration::from_secs(20),
        || segments(&gw, &stream) >= 2 && mix_health(&gw, &id).1 >= 13.0,
    );
    let rss_before = rss_kb(pid);
    let (late_before, _) = mix_health(&gw, &id);
    let segments_before = segments(&gw, &stream);
    let mut worst_fps = f64::MAX;
    let mut watch = |what: &str| {
        let (_, fps) = mix_health(&gw, &id);
        worst_fps = worst_fps.min(fps);
        eprintln!("{what}: rss {} MB, mix {fps:.1} fps", rss_kb(pid) / 1024);
    };
    watch("baseline");

    // Wave 1: 1,000 connections of garbage at 200 a second.
    let port = gw.rtmp_port();
    let t0 = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut accepted = 0;
    for i in 0..1000u64 {
        let due = t0 + Duration::from_millis(5 * i);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let junk: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            accepted += 1;
            let _ = s.write_all(&[3]).and_then(|()| s.write_all(&junk));
        }
    }
    let garbage_secs = t0.elapsed().as_secs_f64();
    assert_eq!(accepted, 1000);
    watch("after 1000 garbage RTMP connections");

    // Wave 2: 1,000 room WebSockets, 100 in each of ten rooms; half leave,
    // half just drop.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http_port = gw.http_port;
    let ws_wave = |round: usize| {
        // The UserSigs are made first (the test's own CPU, out of the
        // wave), and members join 50 at a time: a crowd arriving, not one
        // burst of the debug-built client's work on the gateway's 2 cores.
        let urls: Vec<String> = (0..10)
            .flat_map(|batch| {
                (0..100).map(move |i| {
                    let user = format!("ws{round}_{batch}_{i}");
                    format!(
                        "ws://127.0.0.1:{http_port}/v1/rooms/crowd{round}_{batch}/ws?sdkappid={APP}&userid={user}&usersig={}&role=audience",
                        common::usersig(APP, KEY, &user)
                    )
                })
            })
            .collect();
        rt.block_on(async move {
            let mut sockets = Vec::new();
            for group in urls.chunks(50) {
                let mut joins = Vec::new();
                for url in group.iter().cloned() {
                    joins.push(tokio::spawn(async move {
                        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
                        loop {
                            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                                Ok(Some(Ok(Message::Text(t)))) if t.contains("welcome") => {
                                    return Some(ws);
                                }
                                Ok(Some(Ok(_))) => continue,
                                _ => return None,
                            }
                        }
                    }));
                }
                for j in joins {
                    if let Ok(Some(ws)) = j.await {
                        sockets.push(ws);
                    }
                }
            }
            let opened = sockets.len();
            for (i, mut ws) in sockets.into_iter().enumerate() {
                if i % 2 == 0 {
                    let _ = ws
                        .send(Message::Text(json!({"type": "leave"}).to_string().into()))
                        .await;
                    let _ = ws.close(None).await;
                }
            }
            opened
        })
    };
    assert_eq!(ws_wave(1), 1000, "room WebSockets welcomed");
    watch("after 1000 room WebSockets");
    let rss_first_ws = rss_kb(pid);
    // Again, once the first crowd's rooms are gone: memory is reused, not grown.
    wait_for(
        "the first crowd's rooms to close",
        Duration::from_secs(20),
        || rooms_open(&gw) == 1,
    );
    assert_eq!(ws_wave(2), 1000, "room WebSockets welcomed");
    watch("after 1000 more room WebSockets");
    let rss_second_ws = rss_kb(pid);

    // Wave 3: 300 RTMP publishers, ten per room, in three waves of 100,
    // each sending a second of media and leaving.
    let file = gw.dir.0.join("second.flv");
    lavfi_file(
        &file,
        "testsrc=size=320x180:rate=15",
        "sine=frequency=300:sample_rate=44100",
        1,
    );
    let tags = flv_file::read_flv(&file);
    let mut published = 0;
    for wave in 0..3 {
        let mut threads = Vec::new();
        for room in 0..10 {
            let tags = tags.clone();
            let urls: Vec<String> = (0..10)
                .map(|i| {
                    gw.publish_url(
                        APP,
                        KEY,
                        &format!("wave{wave}_{room}"),
                        &format!("w{wave}r{room}p{i}"),
                    )
                })
                .collect();
            threads.push(std::thread::spawn(move || {
                let mut ok = 0;
                for url in urls {
                    let key = url.split_once("/push/").unwrap().1.to_owned();
                    let sent = std::panic::catch_unwind(|| {
                        let mut p = rtmp_client::Rtmp::publisher(port, "push", &key);
                        for (video, ts, body) in &tags {
                            let t = RtmpTimestamp::new(*ts);
                            let r = if *video {
                                p.session.publish_video_data(body.clone(), t, false)
                            } else {
                                p.session.publish_audio_data(body.clone(), t, false)
                            };
                            p.apply(vec![r.unwrap()]);
                        }
                    });
                    ok += usize::from(sent.is_ok());
                }
                ok
            }));
        }
        published += threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum::<usize>();
        watch(&format!("after publisher wave {}", wave + 1));
    }
    assert_eq!(
        published,
        300,
        "{}",
        gw.log_text()
            .lines()
            .filter(|l| l.contains("rtmp") && !l.contains("DEBUG"))
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Wave 4: 2,000 players at once on the mix's LL-HLS, each a blocking
    // reload for the part being made.
    let (_, text) = http_get(gw.http_port, &format!("/hls/{stream}/index.m3u8")).unwrap();
    let hint = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part"))
        .and_then(|r| r.split_once(".m4s"))
        .map(|(n, _)| n.to_owned())
        .unwrap_or_else(|| panic!("no preload hint in\n{text}"));
    let (msn, part) = hint.split_once('.').unwrap();
    let path = format!("/hls/{stream}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}");
    let players = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = Instant::now();
        let joins: Vec<_> = (0..2000)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
                        .await
                        .ok()?;
                    let req =
                        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    s.write_all(req.as_bytes()).await.ok()?;
                    let mut body = Vec::new();
                    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut body))
                        .await
                        .ok()?
                        .ok()?;
                    let ok = body.starts_with(b"HTTP/1.1 200")
                        && body.windows(7).any(|w| w == b"#EXTM3U");
                    ok.then(|| started.elapsed())
                })
            })
            .collect();
        let mut answered = Vec::new();
        for j in joins {
            if let Ok(Some(t)) = j.await {
                answered.push(t);
            }
        }
        answered
    });
    let slowest = players.iter().max().copied().unwrap_or_default();
    eprintln!(
        "2000 LL-HLS players: {} answered, the last after {slowest:?}",
        players.len()
    );
    watch("after 2000 LL-HLS players");
    assert_eq!(players.len(), 2000, "LL-HLS blocking reloads answered");
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");

    // Everything the waves made is gone; the stage room stays.
    wait_for("the waves' rooms to close", Duration::from_secs(20), || {
        rooms_open(&gw) == 1
    });
    // The allocator keeps freed heap for reuse (media::ffi::tune_allocator)
    // and hands what is still free back to the kernel every 10 s: the
    // resident size comes back near its baseline within that.
    let near_baseline = rss_before + 48 * 1024;
    let back = Instant::now() + Duration::from_secs(25);
    let mut rss_after = rss_kb(pid);
    while rss_after > near_baseline && Instant::now() < back {
        std::thread::sleep(Duration::from_millis(200));
        rss_after = rss_kb(pid);
    }
    let (late_after, fps_after) = mix_health(&gw, &id);
    let segments_after = segments(&gw, &stream);
    eprintln!(
        "garbage wave {garbage_secs:.1} s; rss {} MB before, {} MB after; mix late ticks {late_before} -> {late_after}, \
         fps worst {worst_fps:.1}, now {fps_after:.1}; HLS segments {segments_before} -> {segments_after}",
        rss_before / 1024,
        rss_after / 1024
    );
    // The mix kept its clock and its output through all of it.
    assert!(worst_fps >= 12.0, "the mix fell to {worst_fps} fps");
    assert!(segments_after > segments_before, "the mix's HLS stalled");
    // Memory: a second crowd reuses what the first freed (no leak), and
    // the whole run ends near its baseline.
    eprintln!(
        "rss: baseline {} MB, first crowd {} MB, second crowd {} MB, end {} MB",
        rss_before / 1024,
        rss_first_ws / 1024,
        rss_second_ws / 1024,
        rss_after / 1024
    );
    assert!(
        rss_second_ws <= rss_first_ws + 8 * 1024,
        "the second crowd grew RSS from {rss_first_ws} kB to {rss_second_ws} kB"
    );
    assert!(
        rss_after <= near_baseline,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
