//! Rooms: N real-time mixing rooms end to end, roomcast against the ffmpeg
//! CLI doing the same job, in the same run.
//!
//! Each room has two camera-like anchors (640x360p30 H.264 + AAC, looped
//! from files) publishing RTMP into roomcast in real time (one thread of this
//! harness publishes them all, so the load generator takes little of the
//! box: a process per anchor would compete with both sides; it stands for
//! publishers on other machines, so it runs at a higher priority than the
//! gateway when the bench runs as root, and how late its sends ran is
//! printed); a mix
//! task (2-cell grid at 1280x720p30, each anchor scaled and centre-cropped
//! into its cell; x264 veryfast zerolatency high 2 Mbps, VBV 1 s, GOP 2 s;
//! AAC 128k) pushes to a local nginx-rtmp origin. The baseline is one ffmpeg
//! process per room reading the same files in real time (`-re`), doing the
//! same scale/crop/hstack/amix and encode, and pushing to the same origin.
//!
//! For each N, in the order roomcast, ffmpeg, ffmpeg, roomcast (so neither
//! side gets the warmer or the later slots), after a warm-up, over a window:
//! - CPU-seconds per room-second (roomcast: the gateway process; ffmpeg: its
//!   processes);
//! - each room's effective frame rate (roomcast: the task's distinct
//!   pictures per second; ffmpeg: frames encoded less repeats) and its output
//!   rate (media time reaching the origin per second of wall time, from
//!   nginx-rtmp's statistics: 1.00 is real time); for roomcast also the mix
//!   ticks that ran late and the pictures skipped over the window;
//! - how evenly pictures are lost: the lowest room's frame rate over the
//!   rooms' mean, per run (1.00 when every room keeps the same rate);
//! - resident memory per room (roomcast: the gateway's growth over its idle
//!   size; ffmpeg: each process's);
//! - the codec floor, measured between the two sides' runs: what the same
//!   x264 encode (of the room's composite, read raw), the two anchors'
//!   H.264 decodes and the audio (two AAC decodes, the mix, the AAC encode)
//!   cost per room-second alone, each on one thread of the ffmpeg CLI as
//!   fast as it goes (the difference between a 10 s and a 2 s job, the
//!   least of three each, so start-up and the box's neighbours drop out);
//!   each side's CPU per room over it, and how many rooms the codecs alone
//!   fill the cores with: no mixer on this box holds more.
//!
//! A side holds N rooms when every room keeps at least 29 fps and an output
//! rate of at least 0.98 in both of its runs. After N = 1 and 4 the bench
//! adds rooms one at a time until neither side holds them.
//!
//! Run: `cargo bench --bench rooms` (or `-- 1 4 8` for chosen N). Needs
//! ffmpeg and nginx with its rtmp module (`scripts/setup.sh --test`). Takes
//! about two minutes per N.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rml_rtmp::time::RtmpTimestamp;

#[path = "common/ffmpeg_mix.rs"]
mod ffmpeg_mix;
#[path = "common/flv_file.rs"]
mod flv_file;
#[path = "common/procs.rs"]
mod procs;
#[path = "common/rtmp_client.rs"]
mod rtmp_client;
use procs::{Killed, free_port, gateway, http, nginx, two_ports, wait_port};
use rtmp_client::Rtmp;

const APP: u64 = 1_400_000_000;
const KEY: &str = "bench-key";
const FPS: f64 = 30.0;
const WARMUP: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(15);
const MAX_ROOMS: usize = 16;

const PROFILE: &str = r#"name = "bench-grid"
[video]
width = 1280
height = 720
fps = 30
bitrate_kbps = 2000
gop_seconds = 2
preset = "veryfast"
profile = "high"
tune = "zerolatency"
bframes = 0
[audio]
sample_rate = 48000
channels = 2
bitrate_kbps = 128
[layout]
mode = "grid"
render_mode = "crop"
[outputs.hls]
enabled = false
"#;

/// One anchor's file: 30 s of 640x360p30 H.264 (1 Mbps, GOP 2 s) + AAC.
fn make_input(dir: &Path, i: usize) -> PathBuf {
    let path = dir.join(format!("anchor{i}.flv"));
    if path.exists() {
        return path;
    }
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size=640x360:rate=30:duration=30,hue=h={}",
            i * 120
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency={}:duration=30:sample_rate=48000",
            330 + 220 * i
        ))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1000k", "-g", "60", "-pix_fmt",
            "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-y",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    path
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|p| procs::cpu_seconds_precise(*p)).sum()
}

/// The last media timestamp (ms) nginx-rtmp received on each stream, from
/// its statistics page.
fn origin_timestamps(stat_port: u16) -> std::collections::HashMap<String, u64> {
    let (_, xml) = http(stat_port, "GET", "/stat", "");
    let mut out = std::collections::HashMap::new();
    for stream in xml.split("<stream>").skip(1) {
        let tag = |t: &str| {
            stream
                .split_once(&format!("<{t}>"))
                .and_then(|(_, r)| r.split_once(&format!("</{t}>")))
                .map(|(v, _)| v.to_owned())
        };
        let Some(name) = tag("name") else { continue };
        // The publishing client's latest timestamp.
        let ts = stream
            .split("<client>")
            .skip(1)
            .filter(|c| c.contains("<publishing/>"))
            .find_map(|c| {
                c.split_once("<timestamp>")
                    .and_then(|(_, r)| r.split_once("</timestamp>"))
                    .and_then(|(v, _)| v.parse().ok())
            });
        if let Some(ts) = ts {
            out.insert(name, ts);
        }
    }
    out
}

/// What one run of N rooms measured.
struct Run {
    cpu_per_room_s: f64,
    /// Per room: effective fps, output rate (media s per wall s).
    rooms: Vec<(f64, f64)>,
    mem_per_room_mb: f64,
    /// roomcast: late ticks and skipped pictures over the window, all rooms.
    late_skipped: Option<(u64, u64)>,
    /// roomcast: the harness's sends of the anchors' media more than a
    /// frame late over the window, and the worst lateness (ms).
    publish_late: Option<(u64, f64)>,
}

impl Run {
    fn held(&self) -> bool {
        self.rooms
            .iter()
            .all(|&(fps, rate)| fps >= 29.0 && rate >= 0.98)
    }
}

struct Setup {
    work: PathBuf,
    inputs: [PathBuf; 2],
    origin_port: u16,
    stat_port: u16,
}

/// The anchors of every room, published in real time by one thread of
/// this harness (the files looped, timestamps running on), so the load
/// generator costs the box little beside the gateway.
struct Anchors {
    stop: Arc<AtomicBool>,
    late: Arc<Lateness>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How late the harness's sends ran since the last [`Anchors::lateness`].
#[derive(Default)]
struct Lateness {
    /// Sends more than a frame (34 ms) behind their time.
    over_a_frame: AtomicU64,
    worst_us: AtomicU64,
}

impl Anchors {
    /// `keys[room][anchor]`: each publishes `inputs[anchor]`.
    fn publish(inputs: &[PathBuf; 2], rtmp_port: u16, keys: Vec<[String; 2]>) -> Anchors {
        let mut tags: Vec<(u32, usize, bool, bytes::Bytes)> = Vec::new();
        for (a, input) in inputs.iter().enumerate() {
            for (video, ts, body) in flv_file::read_flv(input) {
                tags.push((ts, a, video, body));
            }
        }
        tags.sort_by_key(|t| t.0);
        // A loop lasts to the last tag plus a frame.
        let span = tags.last().map_or(1000, |t| t.0 + 33);
        let mut conns: Vec<[Rtmp; 2]> = keys
            .iter()
            .map(|k| {
                [
                    Rtmp::publisher(rtmp_port, "push", &k[0]),
                    Rtmp::publisher(rtmp_port, "push", &k[1]),
                ]
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let late = Arc::new(Lateness::default());
        let lateness = late.clone();
        let thread = std::thread::spawn(move || {
            // The anchors stand for publishers on other machines, whose
            // packets arrive whatever the gateway's load: this thread goes
            // before the gateway's when both are ready (as root; it keeps
            // its priority otherwise, and its lateness is printed).
            // SAFETY: plain system calls on the calling thread.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10);
            }
            let t0 = Instant::now();
            for round in 0u32.. {
                for (ts, a, video, body) in &tags {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    // Sequence headers once, as a looping encoder sends them.
                    if round > 0 && body.get(1) == Some(&0) {
                        continue;
                    }
                    let ts = ts + round * span;
                    let due = t0 + Duration::from_millis(u64::from(ts));
                    let now = Instant::now();
                    match due.checked_duration_since(now) {
                        Some(d) => std::thread::sleep(d),
                        None => {
                            let behind = now.duration_since(due);
                            if behind > Duration::from_millis(34) {
                                lateness.over_a_frame.fetch_add(1, Ordering::Relaxed);
                            }
                            lateness
                                .worst_us
                                .fetch_max(behind.as_micros() as u64, Ordering::Relaxed);
                        }
                    }
                    for room in &mut conns {
                        let p = &mut room[*a];
                        let t = RtmpTimestamp::new(ts);
                        let r = if *video {
                            p.session.publish_video_data(body.clone(), t, false)
                        } else {
                            p.session.publish_audio_data(body.clone(), t, false)
                        };
                        if let Ok(r) = r {
                            p.apply(vec![r]);
                        }
                    }
                }
            }
        });
        Anchors {
            stop,
            late,
            thread: Some(thread),
        }
    }

    /// Sends more than a frame late and the worst lateness (ms) since the
    /// last call.
    fn lateness(&self) -> (u64, f64) {
        (
            self.late.over_a_frame.swap(0, Ordering::Relaxed),
            self.late.worst_us.swap(0, Ordering::Relaxed) as f64 / 1e3,
        )
    }
}

impl Drop for Anchors {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn roomcast_run(s: &Setup, n: usize, tag: &str) -> Run {
    let dir = s.work.join(format!("roomcast-{tag}"));
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(
        dir.join("roomcast.toml"),
        format!(
            "[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[limits]\ncpu_budget = 64.0\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("profiles/bench-grid.toml"), PROFILE).unwrap();
    let (http_port, rtmp_port) = two_ports();
    let gw = gateway(&dir, http_port, rtmp_port);
    let pid = gw.0.id();
    wait_port(http_port);
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = rss_bytes(pid);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut keys = Vec::new();
    let mut tasks = Vec::new();
    for r in 0..n {
        let body = format!(
            "{{\"sdkappid\":{APP},\"room\":\"room{r}\",\"profile\":\"bench-grid\",\"rtmp\":[\"rtmp://127.0.0.1:{}/live/rc{tag}{r}\"]}}",
            s.origin_port
        );
        let (code, resp) = http(http_port, "POST", "/v1/relays", &body);
        assert_eq!(code, 201, "{resp}");
        let resp: serde_json::Value = serde_json::from_str(&resp).unwrap();
        let id = resp["task_id"].as_str().expect("task id").to_owned();
        tasks.push(id);
        keys.push([0, 1].map(|a| {
            let user = format!("r{r}anchor{a}");
            let sig = roomcast::auth::usersig::generate(APP, KEY, &user, 3600, now, None);
            format!("room{r}?sdkappid={APP}&userid={user}&usersig={sig}")
        }));
    }
    let publishers = Anchors::publish(&s.inputs, rtmp_port, keys);
    // Every task mixing both anchors and pushing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = http(http_port, "GET", "/v1/relays", "");
        let tasks: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        let mixing = tasks["tasks"].as_array().map_or(0, |t| {
            t.iter()
                .filter(|t| {
                    t["inputs"].as_array().is_some_and(|i| i.len() == 2)
                        && t["targets"][0]["state"] == "publishing"
                })
                .count()
        });
        if mixing >= n {
            break;
        }
        assert!(Instant::now() < deadline, "rooms not mixing: {list}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(WARMUP);
    let names: Vec<String> = (0..n).map(|r| format!("rc{tag}{r}")).collect();
    let late_skipped = || {
        let (_, list) = http(http_port, "GET", "/v1/relays", "");
        let list: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        list["tasks"].as_array().map_or((0, 0), |t| {
            t.iter().fold((0, 0), |(l, k), t| {
                (
                    l + t["late_ticks"].as_u64().unwrap_or(0),
                    k + t["skipped_pictures"].as_u64().unwrap_or(0),
                )
            })
        })
    };
    let before = late_skipped();
    publishers.lateness();
    let (cpu0, ts0, t0) = (cpu(&[pid]), origin_timestamps(s.stat_port), Instant::now());
    std::thread::sleep(WINDOW);
    let (cpu1, ts1, wall) = (
        cpu(&[pid]),
        origin_timestamps(s.stat_port),
        t0.elapsed().as_secs_f64(),
    );
    let rss = rss_bytes(pid);
    let after = late_skipped();
    let publish_late = publishers.lateness();
    let mut rooms = Vec::new();
    for (id, name) in tasks.iter().zip(&names) {
        let (_, st) = http(http_port, "GET", &format!("/v1/relays/{id}"), "");
        let st: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
        let fps = st["effective_fps"].as_f64().unwrap_or(0.0);
        rooms.push((fps, output_rate(&ts0, &ts1, name, wall)));
    }
    drop(publishers);
    drop(gw);
    Run {
        cpu_per_room_s: (cpu1 - cpu0) / (wall * n as f64),
        rooms,
        mem_per_room_mb: rss.saturating_sub(idle_rss) as f64 / n as f64 / 1e6,
        late_skipped: Some((after.0 - before.0, after.1 - before.1)),
        publish_late: Some(publish_late),
    }
}

fn output_rate(
    ts0: &std::collections::HashMap<String, u64>,
    ts1: &std::collections::HashMap<String, u64>,
    name: &str,
    wall: f64,
) -> f64 {
    match (ts0.get(name), ts1.get(name)) {
        (Some(a), Some(b)) => b.saturating_sub(*a) as f64 / 1000.0 / wall,
        _ => 0.0,
    }
}

/// `-progress` output's latest `frame=` less its `dup_frames=`: distinct
/// pictures encoded (ffmpeg repeats a picture to keep `-r 30` when one is
/// late; roomcast's effective fps does not count repeats either).
fn progress_frames(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last = |key: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or(0)
    };
    last("frame=").saturating_sub(last("dup_frames="))
}

/// The ffmpeg CLI's room, video: each anchor scaled and centre-cropped into
/// its 640x720 cell, side by side.
const COMPOSITE: &str = "[0:v]scale=640:720:force_original_aspect_ratio=increase,crop=640:720[v0];\
                         [1:v]scale=640:720:force_original_aspect_ratio=increase,crop=640:720[v1];\
                         [v0][v1]hstack=inputs=2,format=yuv420p[v]";
/// And audio: the two anchors summed.
const AMIX: &str = "[0:a][1:a]amix=inputs=2:normalize=0[a]";

fn ffmpeg_run(s: &Setup, n: usize, tag: &str) -> Run {
    let filter = format!("{COMPOSITE};{AMIX}");
    let dir = s.work.join(format!("ffmpeg-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut procs = Vec::new();
    for r in 0..n {
        let progress = dir.join(format!("progress{r}"));
        let mut cmd = Command::new("ffmpeg");
        cmd.args([
            "-v",
            "error",
            "-nostdin",
            "-stats_period",
            "0.1",
            "-progress",
        ])
        .arg(&progress);
        for input in &s.inputs {
            cmd.args(["-re", "-stream_loop", "-1", "-i"]).arg(input);
        }
        cmd.args(["-filter_complex", &filter, "-map", "[v]", "-map", "[a]"])
            .args(ffmpeg_mix::ENCODE_ARGS)
            .args(["-f", "flv"])
            .arg(format!(
                "rtmp://127.0.0.1:{}/live/ff{tag}{r}",
                s.origin_port
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        procs.push((Killed(cmd.spawn().expect("ffmpeg")), progress));
    }
    let pids: Vec<u32> = procs.iter().map(|(k, _)| k.0.id()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while procs.iter().any(|(_, p)| progress_frames(p) == 0) {
        assert!(Instant::now() < deadline, "ffmpeg not encoding");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(WARMUP);
    let names: Vec<String> = (0..n).map(|r| format!("ff{tag}{r}")).collect();
    let frames0: Vec<u64> = procs.iter().map(|(_, p)| progress_frames(p)).collect();
    let (cpu0, ts0, t0) = (cpu(&pids), origin_timestamps(s.stat_port), Instant::now());
    std::thread::sleep(WINDOW);
    let (cpu1, ts1, wall) = (
        cpu(&pids),
        origin_timestamps(s.stat_port),
        t0.elapsed().as_secs_f64(),
    );
    let rss: u64 = pids.iter().map(|p| rss_bytes(*p)).sum();
    // -progress writes twice a second: the window's frames, give or take one update.
    let rooms = procs
        .iter()
        .zip(&frames0)
        .zip(&names)
        .map(|(((_, p), f0), name)| {
            let fps = progress_frames(p).saturating_sub(*f0) as f64 / wall;
            (fps.min(FPS), output_rate(&ts0, &ts1, name, wall))
        })
        .collect();
    drop(procs);
    Run {
        cpu_per_room_s: (cpu1 - cpu0) / (wall * n as f64),
        rooms,
        mem_per_room_mb: rss as f64 / n as f64 / 1e6,
        late_skipped: None,
        publish_late: None,
    }
}

fn describe(name: &str, runs: &[Run]) -> String {
    let cpu = runs.iter().map(|r| r.cpu_per_room_s).sum::<f64>() / runs.len() as f64;
    let fps: Vec<String> = runs
        .iter()
        .map(|r| {
            r.rooms
                .iter()
                .map(|(f, o)| format!("{f:.1}/{o:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mem = runs.iter().map(|r| r.mem_per_room_mb).sum::<f64>() / runs.len() as f64;
    // How evenly pictures are lost when the box cannot hold N: the lowest
    // room's frame rate against the rooms' mean, per run (1.00: even).
    let evenness: Vec<String> = runs
        .iter()
        .map(|r| {
            let fps = r.rooms.iter().map(|(f, _)| *f);
            let mean = fps.clone().sum::<f64>() / r.rooms.len().max(1) as f64;
            let min = fps.fold(f64::INFINITY, f64::min);
            format!("{min:.1}/{mean:.1}={:.2}", min / mean.max(1e-9))
        })
        .collect();
    let late: Vec<String> = runs
        .iter()
        .filter_map(|r| r.late_skipped)
        .map(|(l, k)| format!("{l}/{k}"))
        .collect();
    let publish_late: Vec<String> = runs
        .iter()
        .filter_map(|r| r.publish_late)
        .map(|(n, worst)| format!("{n}/{worst:.0} ms"))
        .collect();
    format!(
        "{name}: {cpu:.3} CPU-s per room-s; {mem:.0} MB per room; fps/output rate per room: [{}]; lowest/mean fps: {}{}{}",
        fps.join("] ["),
        evenness.join(", "),
        if late.is_empty() {
            String::new()
        } else {
            format!(
                "; late ticks/skipped pictures: {}; anchors' sends over a frame late/worst: {}",
                late.join(", "),
                publish_late.join(", ")
            )
        },
        if runs.iter().all(Run::held) {
            ""
        } else {
            " NOT HELD"
        }
    )
}

/// The CPU-seconds (user + system) of every child this process has waited
/// for so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage only fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Runs the ffmpeg CLI with `args` to its end; the CPU-seconds it took.
fn ffmpeg_cpu(args: &[String]) -> f64 {
    let before = children_cpu();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg {args:?}");
    children_cpu() - before
}

/// The least CPU-seconds of three runs of the ffmpeg CLI with `args` (the
/// least: the box's neighbours only ever add to it).
fn least_cpu(args: &[String]) -> f64 {
    (0..3)
        .map(|_| ffmpeg_cpu(args))
        .fold(f64::INFINITY, f64::min)
}

/// CPU-seconds per second of media of the job `args(seconds)`: the
/// difference between a long and a short run, so the CLI's own start-up
/// and probing drop out.
fn per_media_second(args: impl Fn(u32) -> Vec<String>) -> f64 {
    const SHORT: u32 = 2;
    const LONG: u32 = 10;
    (least_cpu(&args(LONG)) - least_cpu(&args(SHORT))).max(0.0) / f64::from(LONG - SHORT)
}

/// `-t seconds -i input` for each of `inputs`.
fn input_args(seconds: u32, inputs: &[&PathBuf]) -> Vec<String> {
    let mut args = Vec::new();
    for input in inputs {
        args.extend(["-t".to_string(), seconds.to_string(), "-i".to_string()]);
        args.push(input.to_string_lossy().into_owned());
    }
    args
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|a| a.to_string()).collect()
}

/// Ten seconds of a room's composite (the ffmpeg CLI's), raw 1280x720
/// yuv420p, for `codec_floor`'s encode; made once, kept with the inputs.
fn raw_composite(s: &Setup) -> PathBuf {
    let raw = s.work.join("composite.yuv");
    if raw.exists() {
        return raw;
    }
    // Written aside and renamed: a run cut short leaves no short file.
    let part = s
        .work
        .join(format!("composite-{}.part", std::process::id()));
    let mut args = input_args(10, &[&s.inputs[0], &s.inputs[1]]);
    args.extend(strings(&[
        "-filter_complex",
        COMPOSITE,
        "-map",
        "[v]",
        "-f",
        "rawvideo",
        "-y",
    ]));
    args.push(part.to_string_lossy().into_owned());
    ffmpeg_cpu(&args);
    std::fs::rename(&part, &raw).unwrap();
    raw
}

/// What the codecs alone cost per room-second, whoever calls them: the
/// same x264 encode of the room's composite (`raw`, made beforehand), the
/// two anchors' H.264 decodes, and the audio (two AAC decodes, the mix, the
/// AAC encode), each run by the ffmpeg CLI on one thread as fast as it
/// goes. Returns (x264, H.264 decodes, audio) in CPU-s per room-s.
fn codec_floor(s: &Setup, raw: &Path) -> (f64, f64, f64) {
    let raw_arg = raw.to_string_lossy().into_owned();
    let x264 = per_media_second(|seconds| {
        let mut args = strings(&[
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "1280x720", "-r", "30", "-i",
        ]);
        args.push(raw_arg.clone());
        args.extend(strings(&["-frames:v", &(seconds * 30).to_string()]));
        // The video half of the mix's encoder settings (up to `-c:a`).
        args.extend(
            ffmpeg_mix::ENCODE_ARGS
                .iter()
                .take_while(|a| **a != "-c:a")
                .map(|a| a.to_string()),
        );
        args.extend(strings(&["-threads", "1", "-f", "null", "-"]));
        args
    });
    let decodes: f64 = (0..2)
        .map(|i| {
            per_media_second(|seconds| {
                let mut args = strings(&["-threads", "1"]);
                args.extend(input_args(seconds, &[&s.inputs[i]]));
                args.extend(strings(&["-an", "-f", "null", "-"]));
                args
            })
        })
        .sum();
    let audio = per_media_second(|seconds| {
        let mut args = input_args(seconds, &[&s.inputs[0], &s.inputs[1]]);
        args.extend(strings(&["-filter_complex", AMIX, "-map", "[a]"]));
        // The audio half of the mix's encoder settings (from `-c:a`).
        args.extend(
            ffmpeg_mix::ENCODE_ARGS
                .iter()
                .skip_while(|a| **a != "-c:a")
                .map(|a| a.to_string()),
        );
        args.extend(strings(&["-f", "null", "-"]));
        args
    });
    (x264, decodes, audio)
}

fn main() {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-rooms");
    std::fs::create_dir_all(&work).unwrap();
    let inputs = [make_input(&work, 0), make_input(&work, 1)];
    let origin_port = free_port();
    let stat_port = free_port();
    let _origin = nginx(
        &work.join(format!("origin-{}", std::process::id())),
        &format!(
            "rtmp {{ server {{ listen 127.0.0.1:{origin_port}; application live {{ live on; }} }} }}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:{stat_port}; location /stat {{ rtmp_stat all; }} }} }}"
        ),
    );
    wait_port(origin_port);
    wait_port(stat_port);
    let setup = Setup {
        work,
        inputs,
        origin_port,
        stat_port,
    };
    let chosen: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    println!(
        "two 640x360p30 anchors per room -> 2-cell grid 1280x720p30, x264 veryfast zerolatency 2 Mbps + AAC 128k, pushed to nginx-rtmp; {} s windows after {} s warm-up\n",
        WINDOW.as_secs(),
        WARMUP.as_secs()
    );
    let raw = raw_composite(&setup);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut held = (0usize, 0usize);
    // Each N run, and whether roomcast and the ffmpeg CLI held it.
    let mut tried: Vec<(usize, bool, bool)> = Vec::new();
    let mut n = chosen.first().copied().unwrap_or(1);
    let mut step = 0;
    loop {
        let rc1 = roomcast_run(&setup, n, &format!("{n}a"));
        let ff1 = ffmpeg_run(&setup, n, &format!("{n}a"));
        // Between the two sides' runs, as the box is at this N's turn.
        let (x264, decodes, audio) = codec_floor(&setup, &raw);
        let floor = x264 + decodes + audio;
        let ff2 = ffmpeg_run(&setup, n, &format!("{n}b"));
        let rc2 = roomcast_run(&setup, n, &format!("{n}b"));
        let (rc, ff) = ([rc1, rc2], [ff1, ff2]);
        let mean = |r: &[Run]| r.iter().map(|r| r.cpu_per_room_s).sum::<f64>() / r.len() as f64;
        println!(
            "N = {n}: ratio roomcast/ffmpeg {:.2}",
            mean(&rc) / mean(&ff)
        );
        println!(
            "  codec floor {floor:.3} CPU-s per room-s (x264 {x264:.3}, two H.264 decodes {decodes:.3}, audio {audio:.3}; each alone on one thread, as fast as it goes; the codecs alone fill {cores} cores at {:.1} rooms); per room over it: roomcast {:.2}x, ffmpeg {:.2}x",
            cores as f64 / floor,
            mean(&rc) / floor,
            mean(&ff) / floor
        );
        println!("  {}", describe("roomcast", &rc));
        println!("  {}", describe("ffmpeg  ", &ff));
        let (rc_held, ff_held) = (rc.iter().all(Run::held), ff.iter().all(Run::held));
        if rc_held {
            held.0 = held.0.max(n);
        }
        if ff_held {
            held.1 = held.1.max(n);
        }
        tried.push((n, rc_held, ff_held));
        step += 1;
        n = if !chosen.is_empty() {
            match chosen.get(step) {
                Some(&n) => n,
                None => break,
            }
        } else if n == 1 {
            4
        } else if (rc_held || ff_held) && n < MAX_ROOMS {
            n + 1
        } else {
            break;
        };
    }
    println!(
        "\nrooms held at full frame rate: roomcast {}{}, ffmpeg CLI {}{} ({:.2}x)",
        held.0,
        bound(&tried, held.0, |t| t.1),
        held.1,
        bound(&tried, held.1, |t| t.2),
        held.0 as f64 / held.1.max(1) as f64
    );
}

/// What bounds a side's rooms held from above: the next N it was run at
/// and did not hold, and the N between that were not run (chosen N can
/// skip some), so a ratio of two maxima is not read as more than it is.
fn bound(
    tried: &[(usize, bool, bool)],
    held: usize,
    ok: impl Fn(&(usize, bool, bool)) -> bool,
) -> String {
    let failed = tried
        .iter()
        .filter(|t| t.0 > held && !ok(t))
        .map(|t| t.0)
        .min();
    match failed {
        None => " (no larger N run)".to_owned(),
        Some(f) if f == held + 1 => format!(" ({f} not held)"),
        Some(f) if f == held + 2 => format!(" ({f} not held; {} not run)", held + 1),
        Some(f) => format!(" ({f} not held; {} to {} not run)", held + 1, f - 1),
    }
}
