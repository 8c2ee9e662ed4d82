//! MixTranscoding cost: roomcast's mix against the ffmpeg CLI doing the same
//! composite and encode on the same inputs, in the same run.
//!
//! Inputs: N pre-encoded 640x360 30 fps H.264 + AAC streams. Output:
//! 1280x720 (and 1920x1080 for 4 inputs) 30 fps, x264 veryfast zerolatency
//! 2 Mbps, AAC 128k. Each picture's latency through roomcast's mix (arrival
//! to the encoder's output, split) is printed too, and again for four rooms
//! mixing at once. roomcast's mixer runs on its real-time output clock, fed in real
//! time; its CPU-seconds per output-second are measured on this process.
//! ffmpeg runs unthrottled (`-f null`), giving CPU-seconds per output-second
//! and its real-time speed factor. Run: `cargo bench --bench mix`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roomcast::media::MediaMessage;
use roomcast::mix::latency::LatencySummary;
use roomcast::mix::pipeline::{MixHandle, MixSettings};
use roomcast::profile::{AudioCodec, AudioEncoding, H264Profile, Layout, VideoEncoding};
use roomcast::rtmp::flv;

#[path = "common/ffmpeg_mix.rs"]
mod ffmpeg_mix;
#[path = "common/flv_file.rs"]
mod flv_file;
use flv_file::read_flv;

const SECONDS: u32 = 15;

fn make_inputs(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("in{i}.flv"));
            if !path.exists() {
                let status = Command::new("ffmpeg")
                    .args([
                        "-v",
                        "error",
                        "-f",
                        "lavfi",
                        "-i",
                        &format!(
                            "testsrc2=size=640x360:rate=30:duration={SECONDS},hue=h={}",
                            i * 90
                        ),
                        "-f",
                        "lavfi",
                        "-i",
                        &format!(
                            "sine=frequency={}:duration={SECONDS}:sample_rate=48000",
                            300 + 100 * i
                        ),
                        "-c:v",
                        "libx264",
                        "-preset",
                        "veryfast",
                        "-b:v",
                        "800k",
                        "-g",
                        "30",
                        "-c:a",
                        "aac",
                        "-b:a",
                        "96k",
                        "-y",
                        path.to_str().unwrap(),
                    ])
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            path
        })
        .collect()
}

/// Each input's jitter buffer: adaptive up to, or fixed at, this many ms.
#[derive(Clone, Copy)]
enum Jitter {
    Adaptive(u64),
    Fixed(u64),
}

/// The profiles' default: adaptive, up to 150 ms.
const DEFAULT_JITTER: Jitter = Jitter::Adaptive(150);

impl std::fmt::Display for Jitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Jitter::Adaptive(ms) => write!(f, "adaptive up to {ms} ms"),
            Jitter::Fixed(ms) => write!(f, "fixed at {ms} ms"),
        }
    }
}

/// (CPU-s per s, share of frames kept, latency per picture through the mix).
fn roomcast_mix(
    inputs: &[PathBuf],
    width: u32,
    height: u32,
    jitter: Jitter,
) -> (f64, f64, Option<LatencySummary>) {
    let (jitter_ms, jitter_adaptive) = match jitter {
        Jitter::Adaptive(ms) => (ms, true),
        Jitter::Fixed(ms) => (ms, false),
    };
    let settings = MixSettings {
        layout: Layout::default(),
        video: Some(VideoEncoding {
            width,
            height,
            fps: 30,
            bitrate_kbps: 2000,
            gop_seconds: 2,
            preset: "veryfast".into(),
            profile: H264Profile::High,
            // As the shipped profiles: no lookahead, pictures out at once.
            tune: Some("zerolatency".into()),
            bframes: 0,
        }),
        audio: AudioEncoding {
            sample_rate: 48_000,
            channels: 2,
            bitrate_kbps: 128,
            codec: AudioCodec::AacLc,
        },
        freeze: Duration::from_millis(800),
        jitter: Duration::from_millis(jitter_ms),
        jitter_adaptive,
        audio_filter: Default::default(),
        volumes: Vec::new(),
    };
    let mut mixer = MixHandle::spawn(settings);
    let mut out = std::mem::replace(&mut mixer.out, tokio::sync::mpsc::channel(1).1);
    let collector = std::thread::spawn(move || {
        let mut frames = 0u64;
        while let Some(m) = out.blocking_recv() {
            if let MediaMessage::Frame(f) = &*m
                && f.kind == roomcast::media::TrackKind::Video
            {
                frames += 1;
            }
        }
        frames
    });
    // All inputs' tags merged by timestamp, fed in real time.
    let mut all: Vec<(u32, usize, bool, Bytes)> = Vec::new();
    for (i, p) in inputs.iter().enumerate() {
        for (v, ts, b) in read_flv(p) {
            all.push((ts, i, v, b));
        }
    }
    all.sort_by_key(|t| t.0);
    let mut ins: Vec<_> = (0..inputs.len())
        .map(|i| mixer.input(&format!("u{i}")))
        .collect();
    let cpu0 = roomcast::metrics::cpu_seconds(None);
    let t0 = Instant::now();
    for (ts, i, is_video, body) in all {
        let due = t0 + Duration::from_millis(u64::from(ts));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let msg = if is_video {
            flv::parse_video(body, ts)
        } else {
            flv::parse_audio(body, ts)
        };
        if let Ok(Some(m)) = msg {
            ins[i].offer(&Arc::new(m));
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = roomcast::metrics::cpu_seconds(None) - cpu0;
    let latency = mixer.counters.latency();
    ins.clear();
    drop(mixer);
    let frames = collector.join().unwrap();
    (cpu / elapsed, frames as f64 / (elapsed * 30.0), latency)
}

fn show(l: Option<LatencySummary>) -> String {
    l.map_or("no pictures".into(), |l| {
        format!(
            "p50 {:.0} ms, p99 {:.0} ms (jitter buffer p50 {:.0}, compose+encode p50 {:.0}, the rest waiting for the output tick; {} pictures)",
            l.p50_ms, l.p99_ms, l.jitter_p50_ms, l.encode_p50_ms, l.pictures
        )
    })
}

fn ffmpeg_mix(inputs: &[PathBuf], width: u32, height: u32) -> (f64, f64) {
    let n = inputs.len();
    let (cw, ch) = if n <= 2 {
        (width / 2, height)
    } else {
        (width / 2, height / 2)
    };
    let layout = if n <= 2 {
        "0_0|w0_0"
    } else {
        "0_0|w0_0|0_h0|w0_h0"
    };
    let mut filter = String::new();
    for i in 0..n {
        filter.push_str(&format!(
            "[{i}:v]scale={cw}:{ch}:force_original_aspect_ratio=increase,crop={cw}:{ch}[v{i}];"
        ));
    }
    for i in 0..n {
        filter.push_str(&format!("[v{i}]"));
    }
    filter.push_str(&format!(
        "xstack=inputs={n}:layout={layout},scale={width}:{height},format=yuv420p[v];"
    ));
    for i in 0..n {
        filter.push_str(&format!("[{i}:a]"));
    }
    filter.push_str(&format!("amix=inputs={n}:normalize=0[a]"));
    let mut args: Vec<String> = vec!["-v".into(), "error".into(), "-nostdin".into()];
    for p in inputs {
        args.extend(["-i".into(), p.to_str().unwrap().into()]);
    }
    args.extend(["-filter_complex", &filter, "-map", "[v]", "-map", "[a]"].map(String::from));
    args.extend(ffmpeg_mix::ENCODE_ARGS.iter().map(|a| a.to_string()));
    args.extend(["-f", "null", "-"].map(String::from));
    let t0 = Instant::now();
    let child = Command::new("ffmpeg").args(&args).spawn().unwrap();
    let pid = child.id();
    // CPU of the child from wait4's rusage.
    let mut status = 0i32;
    let mut usage: [i64; 18] = [0; 18];
    let _ = std::mem::ManuallyDrop::new(child);
    unsafe extern "C" {
        fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut i64) -> i32;
    }
    unsafe { wait4(pid as i32, &mut status, 0, usage.as_mut_ptr()) };
    let wall = t0.elapsed().as_secs_f64();
    // struct rusage starts with ru_utime and ru_stime (timeval: sec, usec).
    let cpu = usage[0] as f64 + usage[1] as f64 / 1e6 + usage[2] as f64 + usage[3] as f64 / 1e6;
    (cpu / f64::from(SECONDS), f64::from(SECONDS) / wall)
}

fn main() {
    roomcast::media::tune_allocator();
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-mix");
    std::fs::create_dir_all(&dir).unwrap();
    let inputs = make_inputs(&dir, 4);
    println!(
        "{SECONDS} s of 640x360 30 fps inputs; x264 veryfast zerolatency 2 Mbps + AAC 128k out\n"
    );
    // `cargo bench --bench mix -- metrics`: only what metrics cost.
    let only_metrics = std::env::args().any(|a| a == "metrics");
    // `cargo bench --bench mix -- one`: only roomcast's two-input mix (to profile).
    if std::env::args().any(|a| a == "one") {
        let (cpu, kept, latency) = roomcast_mix(&inputs[..2], 1280, 720, DEFAULT_JITTER);
        println!(
            "2 inputs -> 1280x720: roomcast {cpu:.3} CPU-s/s, {:.0}% of frames; {}",
            kept * 100.0,
            show(latency)
        );
        return;
    }
    let cases: &[(usize, u32, u32)] = if only_metrics {
        &[]
    } else {
        &[(2, 1280, 720), (4, 1280, 720), (4, 1920, 1080)]
    };
    for &(n, w, h) in cases {
        let (rc_cpu, rc_kept, latency) = roomcast_mix(&inputs[..n], w, h, DEFAULT_JITTER);
        let (ff_cpu, ff_speed) = ffmpeg_mix(&inputs[..n], w, h);
        println!(
            "{n} inputs -> {w}x{h}: roomcast {rc_cpu:.3} CPU-s/s (real time kept: {:.0}% of frames) | ffmpeg CLI {ff_cpu:.3} CPU-s/s (speed {ff_speed:.2}x) | ratio {:.2}",
            rc_kept * 100.0,
            rc_cpu / ff_cpu
        );
        println!("  latency through the mix: {}", show(latency));
    }
    // Four rooms at once (two anchors each, 720p30 out): each picture's
    // latency from arrival to the encoder's output, room by room, with the
    // default jitter buffer (adaptive), the earlier default (fixed at 150 ms)
    // and a short fixed one.
    for jitter in [DEFAULT_JITTER, Jitter::Fixed(150), Jitter::Fixed(60)] {
        if only_metrics {
            break;
        }
        let rooms: Vec<_> = (0..4)
            .map(|r| {
                let two = inputs[(r % 2) * 2..(r % 2) * 2 + 2].to_vec();
                std::thread::spawn(move || roomcast_mix(&two, 1280, 720, jitter))
            })
            .collect();
        println!("\n4 rooms of 2 inputs -> 1280x720 at once, jitter buffer {jitter}:");
        for (r, h) in rooms.into_iter().enumerate() {
            let (_, kept, latency) = h.join().unwrap();
            println!(
                "  room {r}: {:.0}% of frames; latency {}",
                kept * 100.0,
                show(latency)
            );
        }
    }
    // What counting costs: the same mix with metrics on and off, in an
    // ABBA BAAB order so neither side gets the warmer or the later slots.
    let mut on = Vec::new();
    let mut off = Vec::new();
    for enabled in [true, false, false, true, false, true, true, false] {
        roomcast::metrics::set_enabled(enabled);
        let (cpu, _, _) = roomcast_mix(&inputs[..2], 1280, 720, DEFAULT_JITTER);
        if enabled { on.push(cpu) } else { off.push(cpu) }
    }
    roomcast::metrics::set_enabled(true);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "\nmetrics cost, 2 inputs -> 1280x720: on {on:.3?} off {off:.3?} CPU-s/s; on/off {:.3}",
        mean(&on) / mean(&off)
    );
}
