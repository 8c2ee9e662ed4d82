//! One relay case of the relay benches: a stream published in real time
//! by RTMP clients of this harness, played back from the origin, latency
//! matched per video frame by payload hash, and a process's CPU.
#![allow(dead_code)]

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::sessions::ClientSessionEvent;
use rml_rtmp::time::RtmpTimestamp;

use super::procs;
use super::rtmp_client::Rtmp;

/// Seconds of the source stream.
pub const SECONDS: u32 = 20;

/// Stream time (ms) from which the relay's CPU is counted: past the
/// source's second keyframe (2 s), where nginx-rtmp's `push` begins to
/// deliver, so both relays are measured passing every frame, and neither
/// on its start.
pub const STEADY_FROM_MS: u32 = 3_000;

/// The relay benches' source: `SECONDS` of 720p30 H.264 at 2 Mbps (GOP 2 s)
/// and AAC 128k, encoded once by ffmpeg into `work/source.flv`; its tags.
pub fn source(work: &std::path::Path) -> Vec<(bool, u32, Bytes)> {
    let src = work.join("source.flv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=1280x720:rate=30:duration={SECONDS}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={SECONDS}"))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2000k", "-maxrate", "2000k",
            "-bufsize", "2000k", "-g", "60", "-c:a", "aac", "-b:a", "128k", "-y",
        ])
        .arg(&src)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    super::flv_file::read_flv(&src)
}

/// Writes the `push-only` profile into the gateway directory `dir`: a
/// passthrough relay's RTMP output (nginx-rtmp's `push`, the same job),
/// with HLS too if `hls`.
pub fn push_only_profile(dir: &std::path::Path, hls: bool) {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(
        dir.join("profiles/push-only.toml"),
        format!("name = \"push-only\"\npassthrough = true\n[video]\nwidth = 1280\nheight = 720\nfps = 30\nbitrate_kbps = 2000\n[audio]\nbitrate_kbps = 128\n[outputs.hls]\nenabled = {hls}\n"),
    )
    .unwrap();
}

/// An nginx-rtmp origin (application `live`) on a free port in `dir`.
pub fn origin(dir: &std::path::Path) -> (procs::Killed, u16) {
    let port = procs::free_port();
    let nginx = procs::nginx(
        dir,
        &format!(
            "rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}"
        ),
    );
    procs::wait_port(port);
    (nginx, port)
}

pub fn hash(b: &[u8], state: &RandomState) -> u64 {
    state.hash_one(b)
}

/// Publishes `tags` in real time to `publish` and plays `play` from the
/// origin; returns per-frame latencies (ms) and the relay's CPU seconds
/// per second of stream, per stream, counted from [`STEADY_FROM_MS`] on.
/// Every publisher sends the same stream; the first one's is played and
/// timed.
pub fn run_case(
    tags: &[(bool, u32, Bytes)],
    publish: &[(u16, &str, String)],
    origin_port: u16,
    stream: &str,
    relay_pid: u32,
) -> (Vec<f64>, f64) {
    let state = RandomState::new();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let stream = stream.to_owned();
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let player_state = state.clone();
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel::<Instant>();
    let player = std::thread::spawn(move || {
        // nginx-rtmp lets a player wait for a stream that is not published yet.
        let mut p = Rtmp::player(origin_port, "live", &stream);
        let _ = subscribed_tx.send(());
        p.socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        // Until 3 s after the last frame was published (told by `done`).
        let mut end = Instant::now() + Duration::from_secs(3600);
        while Instant::now() < end {
            match done.try_recv() {
                Ok(at) => end = at + Duration::from_secs(3),
                // The harness gave up (it panicked).
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
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

    // The player is subscribed before anything is published, so it sees
    // the stream from its first frame whichever relay is faster to start.
    subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("the player was not accepted by the origin");
    let mut publishers: Vec<Rtmp> = publish
        .iter()
        .map(|(port, app, key)| Rtmp::publisher(*port, app, key))
        .collect();
    // The CPU counted from `STEADY_FROM_MS` of stream time on.
    let mut steady: Option<(f64, u32)> = None;
    let mut ticks0 = (0, 0);
    let mut last_ts = 0;
    let t0 = Instant::now();
    for (is_video, ts, data) in tags {
        let due = t0 + Duration::from_millis(u64::from(*ts));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        if steady.is_none() && *ts >= STEADY_FROM_MS {
            steady = Some((procs::cpu_seconds_precise(relay_pid), *ts));
            ticks0 = procs::user_kernel_ticks(relay_pid);
        }
        last_ts = last_ts.max(*ts);
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
    let (cpu0, from_ts) = steady.expect("the source is longer than the span not counted");
    let cpu = (procs::cpu_seconds_precise(relay_pid) - cpu0)
        / publishers.len() as f64
        / (f64::from(last_ts - from_ts) / 1000.0);
    let (user, kernel) = procs::user_kernel_ticks(relay_pid);
    let (user, kernel) = (
        user.saturating_sub(ticks0.0),
        kernel.saturating_sub(ticks0.1),
    );
    println!(
        "           this run: {:.0} % of the CPU in the kernel ({kernel} of {} ticks of 10 ms)",
        100.0 * kernel as f64 / (user + kernel).max(1) as f64,
        user + kernel
    );
    let _ = done_tx.send(Instant::now());
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

/// Prints and returns the latency p50 and `cpu` (s/s of stream).
pub fn summary(name: &str, lat: &mut [f64], cpu: f64) -> (f64, f64) {
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{name:10} frames {:4}  latency p50 {:7.2} ms  p95 {:7.2} ms  max {:7.2} ms  CPU {:.5} s/s of stream",
        lat.len(),
        p(0.5),
        p(0.95),
        p(1.0),
        cpu
    );
    (p(0.5), cpu)
}
