//! Relay latency and CPU: roomcast against nginx-rtmp relaying the same stream.
//!
//! A 2 Mbps 720p30 H.264/AAC stream (encoded once by ffmpeg) is published in
//! real time by an RTMP client in this harness, relayed to an nginx-rtmp
//! origin, and played back from that origin by a second client. Latency is
//! matched per video frame by payload hash (passthrough keeps payloads
//! byte-identical). CPU is the relay process's time on CPU (the scheduler's
//! account, to the nanosecond). Baseline in
//! the same run: an nginx-rtmp instance relaying with its `push` directive.
//!
//! Then the same with 50 relays at once (each its own publisher, all to the
//! same origin), timing the first and counting CPU per stream.
//!
//! Run: `cargo bench --bench relay` (needs ffmpeg and nginx from `make test`'s set-up).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rml_rtmp::sessions::ClientSessionEvent;
use rml_rtmp::time::RtmpTimestamp;

#[path = "common/flv_file.rs"]
mod flv_file;
#[path = "common/procs.rs"]
mod procs;
#[path = "common/rtmp_client.rs"]
mod rtmp_client;
use flv_file::read_flv;
use procs::{free_port, gateway, http, nginx, two_ports, wait_port};
use rtmp_client::Rtmp;

const SECONDS: u32 = 20;
const APP: u64 = 1_400_000_000;
const KEY: &str = "bench-key";

fn hash(b: &[u8], state: &RandomState) -> u64 {
    state.hash_one(b)
}

/// Publishes `tags` in real time to `publish` and plays `play` from the
/// origin; returns per-frame latencies (ms) and the relay's CPU seconds.
/// Every publisher sends the same stream; the first one's is played and
/// timed. The CPU returned is the relay's per stream.
fn run_case(
    tags: &[(bool, u32, Bytes)],
    publish: &[(u16, &str, String)],
    origin_port: u16,
    stream: &str,
    relay_pid: u32,
) -> (Vec<f64>, f64) {
    let state = RandomState::new();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut publishers: Vec<Rtmp> = publish
        .iter()
        .map(|(port, app, key)| Rtmp::publisher(*port, app, key))
        .collect();

    let stream = stream.to_owned();
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let player_state = state.clone();
    let player = std::thread::spawn(move || {
        // nginx-rtmp lets a player wait for a stream that is not published yet.
        let mut p = Rtmp::connect(origin_port, "live");
        let r = p.session.request_playback(stream.clone()).unwrap();
        p.apply(vec![r]);
        p.wait_for(|e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted));
        p.socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let end = Instant::now() + Duration::from_secs(u64::from(SECONDS) + 5);
        while Instant::now() < end {
            if !p.pump() {
                break;
            }
            for e in p.events.drain(..) {
                if let ClientSessionEvent::VideoDataReceived { data, .. } = e {
                    let _ = tx.send((hash(&data, &player_state), Instant::now()));
                }
            }
        }
    });

    let cpu0 = procs::cpu_seconds_precise(relay_pid);
    let t0 = Instant::now();
    for (is_video, ts, data) in tags {
        let due = t0 + Duration::from_millis(u64::from(*ts));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        if *is_video {
            sent.insert(hash(data, &state), Instant::now());
        }
        for publisher in &mut publishers {
            let r = if *is_video {
                publisher
                    .session
                    .publish_video_data(data.clone(), RtmpTimestamp::new(*ts), false)
            } else {
                publisher
                    .session
                    .publish_audio_data(data.clone(), RtmpTimestamp::new(*ts), false)
            }
            .unwrap();
            publisher.apply(vec![r]);
        }
    }
    let cpu = (procs::cpu_seconds_precise(relay_pid) - cpu0) / publishers.len() as f64;
    drop(publishers);
    player.join().unwrap();
    let lat: Vec<f64> = rx
        .try_iter()
        .filter_map(|(h, at)| {
            sent.get(&h)
                .map(|s| at.duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    (lat, cpu)
}

fn summary(name: &str, lat: &mut [f64], cpu: f64) -> (f64, f64) {
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let per_s = cpu / f64::from(SECONDS);
    println!(
        "{name:10} frames {:4}  latency p50 {:7.2} ms  p95 {:7.2} ms  max {:7.2} ms  CPU {:.4} s/s of stream",
        lat.len(),
        p(0.5),
        p(0.95),
        p(1.0),
        per_s
    );
    (p(0.5), per_s)
}

fn main() {
    // `cargo bench --bench relay -- 20`: that many relays at once (default 50).
    let many: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-relay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let src = work.join("source.flv");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size=1280x720:rate=30:duration={SECONDS}"),
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency=440:duration={SECONDS}"),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "2000k",
            "-maxrate",
            "2000k",
            "-bufsize",
            "2000k",
            "-g",
            "60",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-y",
            src.to_str().unwrap(),
        ])
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let tags = read_flv(&src);
    println!(
        "source: {} tags, {SECONDS} s of 720p30 H.264 2 Mbps + AAC 128k",
        tags.len()
    );

    // The origin both relays deliver to.
    let origin_port = free_port();
    let _origin = nginx(
        &work.join("origin"),
        &format!(
            "rtmp {{ server {{ listen 127.0.0.1:{origin_port}; application live {{ live on; }} }} }}"
        ),
    );
    wait_port(origin_port);

    // roomcast: publish into a room, a passthrough relay pushes to the origin.
    let gw_dir = work.join("roomcast");
    std::fs::create_dir_all(&gw_dir).unwrap();
    std::fs::write(
        gw_dir.join("roomcast.toml"),
        format!("[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[[api.credentials]]\nsecret_id = \"AKID\"\nsecret_key = \"k\"\n"),
    )
    .unwrap();
    // The same job as nginx's `push`: the RTMP output only (the shipped
    // passthrough profile also writes HLS).
    std::fs::create_dir_all(gw_dir.join("profiles")).unwrap();
    std::fs::write(
        gw_dir.join("profiles/push-only.toml"),
        "name = \"push-only\"\npassthrough = true\n[video]\nwidth = 1280\nheight = 720\nfps = 30\nbitrate_kbps = 2000\n[audio]\nbitrate_kbps = 128\n[outputs.hls]\nenabled = false\n",
    )
    .unwrap();
    let (http_port, rtmp_port) = two_ports();
    let gw = gateway(&gw_dir, http_port, rtmp_port);
    wait_port(http_port);
    // What the gateway costs doing nothing, over the same span as a run.
    let idle_from = procs::cpu_seconds_precise(gw.0.id());
    std::thread::sleep(Duration::from_secs(10));
    let idle = (procs::cpu_seconds_precise(gw.0.id()) - idle_from) / 10.0;
    println!("roomcast idle: CPU {idle:.4} s/s");
    // Relay `i`: room `bench<i>`, anchor `anchor<i>`, pushed as `rc<i>`.
    let relays = |from: usize, n: usize| -> Vec<(u16, &'static str, String)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (from..from + n)
            .map(|i| {
                let body = format!(
                    "{{\"sdkappid\":{APP},\"room\":\"bench{i}\",\"userid\":\"anchor{i}\",\"profile\":\"push-only\",\"rtmp\":[\"rtmp://127.0.0.1:{origin_port}/live/rc{i}\"]}}"
                );
                let (code, resp) = http(http_port, "POST", "/v1/relays", &body);
                assert_eq!(code, 201, "{resp}");
                let user = format!("anchor{i}");
                let sig = roomcast::auth::usersig::generate(APP, KEY, &user, 3600, now, None);
                (rtmp_port, "push", format!("bench{i}?sdkappid={APP}&userid={user}&usersig={sig}"))
            })
            .collect()
    };
    let (mut rc_lat, rc_cpu) = run_case(&tags, &relays(0, 1), origin_port, "rc0", gw.0.id());
    let (mut rc_many_lat, rc_many_cpu) =
        run_case(&tags, &relays(1, many), origin_port, "rc1", gw.0.id());

    // nginx-rtmp relaying the same stream with `push`.
    let relay_port = free_port();
    let relay = nginx(
        &work.join("nginx-relay"),
        &format!(
            "rtmp {{ server {{ listen 127.0.0.1:{relay_port}; application live {{ live on; push rtmp://127.0.0.1:{origin_port}/live; }} }} }}"
        ),
    );
    wait_port(relay_port);
    let nginx_streams = |from: usize, n: usize| -> Vec<(u16, &'static str, String)> {
        (from..from + n)
            .map(|i| (relay_port, "live", format!("ng{i}")))
            .collect()
    };
    let (mut ng_lat, ng_cpu) = run_case(
        &tags,
        &nginx_streams(0, 1),
        origin_port,
        "ng0",
        relay.0.id(),
    );
    let (mut ng_many_lat, ng_many_cpu) = run_case(
        &tags,
        &nginx_streams(1, many),
        origin_port,
        "ng1",
        relay.0.id(),
    );

    for (label, (rc_lat, rc_cpu), (ng_lat, ng_cpu)) in [
        ("one relay", (&mut rc_lat, rc_cpu), (&mut ng_lat, ng_cpu)),
        (
            &*format!("{many} relays at once (the first one timed; CPU per stream)"),
            (&mut rc_many_lat, rc_many_cpu),
            (&mut ng_many_lat, ng_many_cpu),
        ),
    ] {
        println!("\n{label}:");
        let (rc_p50, rc_cpu_s) = summary("roomcast", rc_lat, rc_cpu);
        let (ng_p50, ng_cpu_s) = summary("nginx-rtmp", ng_lat, ng_cpu);
        println!(
            "ratio roomcast/nginx-rtmp: latency p50 {:.2}x, CPU {:.2}x",
            rc_p50 / ng_p50,
            rc_cpu_s / ng_cpu_s.max(1e-9)
        );
    }
    drop(relay);
    drop(gw);
    let _ = std::fs::remove_dir_all(&work);
}
