//! Relay latency and CPU: roomcast against nginx-rtmp relaying the same stream.
//!
//! A 2 Mbps 720p30 H.264/AAC stream (encoded once by ffmpeg) is published in
//! real time by an RTMP client in this harness, relayed to an nginx-rtmp
//! origin, and played back from that origin by a second client. Latency is
//! matched per video frame by payload hash (passthrough keeps payloads
//! byte-identical). CPU is the relay process's time on CPU (the scheduler's
//! account, to the nanosecond) per second of stream, counted from 3 s into
//! the stream to its end (`STEADY_FROM_MS`, below). Baseline in the same
//! run: an nginx-rtmp instance relaying with its `push` directive.
//!
//! Then the same with 50 relays at once (each its own publisher, all to the
//! same origin), timing the first and counting CPU per stream. Each case runs
//! twice per side, in the order roomcast, nginx-rtmp, nginx-rtmp, roomcast;
//! latencies are pooled over both runs, CPU is their mean (each run's is
//! printed too). `RELAY_BENCH_ROUNDS=3` repeats that order three times:
//! CPU on a VM moves by a tenth or more between runs, so each round's CPU
//! ratio is printed too, with their median and spread.
//!
//! The player is subscribed to the origin before anything is published, so
//! every frame that reaches the origin is timed. roomcast's relay delivers
//! all of them (about 601 a run: the sequence header and 600 frames; its
//! first 45 ms are the start hold waiting for the source's first audio
//! frame, which ffmpeg placed 44 ms after its first picture). nginx-rtmp's
//! `push` connects to the origin when the publish begins and relays from
//! the first keyframe after it is connected: alone, the stream's first
//! frames come before that, so its first group of pictures never reaches
//! the origin (about 542 a run) and its sequence header arrives with the
//! second keyframe, 2 s late, which is its max latency. (With 50 relays the
//! timed stream's publisher connects first, and its push is ready in time.)
//! Counted from the start, nginx-rtmp's CPU would then cover 18 s of
//! delivery against roomcast's 20 s; from 3 s on, both deliver every frame.
//!
//! `RELAY_BENCH_ALT_BIN=<path>`: a second build of the gateway (e.g. `make
//! pgo`'s target/pgo/release/roomcast) relays too, as "roomcast-alt", in the
//! same run: the order is then roomcast, roomcast-alt, nginx-rtmp,
//! nginx-rtmp, roomcast-alt, roomcast. (`BENCH_GATEWAY_BIN` replaces the
//! gateway of every bench instead.)
//!
//! Run: `cargo bench --bench relay` (needs ffmpeg and nginx from `make test`'s set-up).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "common/flv_file.rs"]
mod flv_file;
#[path = "common/procs.rs"]
mod procs;
#[path = "common/relay_case.rs"]
mod relay_case;
#[path = "common/rtmp_client.rs"]
mod rtmp_client;
use procs::{free_port, gateway_bin, gateway_bin_under, http, nginx, two_ports, wait_port};
use relay_case::{SECONDS, STEADY_FROM_MS, run_case, summary};
const APP: u64 = 1_400_000_000;
const KEY: &str = "bench-key";

/// One gateway relaying: its process and ports.
struct Gateway {
    proc: procs::Killed,
    http_port: u16,
    rtmp_port: u16,
}

/// The gateway binary `bin` serving `dir`, configured for `many` relays
/// (and `limits`, more lines of its `[limits]` table), with the push-only
/// profile (writing HLS too if `hls`); its idle CPU is printed as `name`'s.
fn start_gateway(
    name: &str,
    bin: &str,
    dir: &std::path::Path,
    (many, limits): (usize, &str),
    hls: bool,
) -> Gateway {
    std::fs::create_dir_all(dir).unwrap();
    // `RELAY_BENCH_IO_THREADS=1`, `RELAY_BENCH_RTMP_THREADS=0`: the
    // gateway's `runtime.io_threads` and `runtime.rtmp_threads`.
    let runtime_key = |var: &str, key: &str| {
        std::env::var(var)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(String::new(), |n| format!("{key} = {n}\n"))
    };
    let runtime = format!(
        "[runtime]\n{}{}",
        runtime_key("RELAY_BENCH_IO_THREADS", "io_threads"),
        runtime_key("RELAY_BENCH_RTMP_THREADS", "rtmp_threads")
    );
    std::fs::write(
        dir.join("roomcast.toml"),
        // More relays than an application may run by default need the
        // limit raised, and more publishers than one address may connect
        // (64: the harness publishes them all from 127.0.0.1); admission is
        // not what this measures.
        format!("[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[[api.credentials]]\nsecret_id = \"AKID\"\nsecret_key = \"k\"\n[limits]\ntasks_per_app = {}\ncpu_budget = 64\n{limits}\n[rtmp]\nmax_connections_per_ip = {}\n{runtime}", many.max(100), many.max(56) + 8),
    )
    .unwrap();
    relay_case::push_only_profile(dir, hls);
    let (http_port, rtmp_port) = two_ports();
    let proc = gateway_bin_under(&[], bin, dir, http_port, rtmp_port);
    wait_port(http_port);
    // What the gateway costs doing nothing, over the same span as a run,
    // once its start-up codec probe is done (its thread's CPU would leave
    // the count as it ends).
    assert!(
        procs::wait_thread_gone(
            proc.0.id(),
            roomcast::mix::PROBE_THREAD,
            Duration::from_secs(30)
        ),
        "{name}: the start-up codec probe still runs after 30 s"
    );
    let idle_from = procs::cpu_seconds_precise(proc.0.id());
    std::thread::sleep(Duration::from_secs(10));
    let idle = (procs::cpu_seconds_precise(proc.0.id()) - idle_from) / 10.0;
    println!("{name} idle: CPU {idle:.4} s/s ({bin})");
    Gateway {
        proc,
        http_port,
        rtmp_port,
    }
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
    let tags = relay_case::source(&work);
    println!(
        "source: {} tags, {SECONDS} s of 720p30 H.264 2 Mbps + AAC 128k; CPU counted from {} s on",
        tags.len(),
        f64::from(STEADY_FROM_MS) / 1000.0
    );
    // The same job as nginx's `push`: the RTMP output only (the shipped
    // passthrough profile also writes HLS). `RELAY_BENCH_HLS=1`: HLS too,
    // as the shipped profile does, for what a relay costs the gateway then
    // (nginx-rtmp still only pushes).
    let hls = std::env::var("RELAY_BENCH_HLS").is_ok_and(|v| v == "1");
    if hls {
        println!("roomcast relays write HLS too");
    }

    // The origin every relay delivers to.
    let (_origin, origin_port) = relay_case::origin(&work.join("origin"));

    // roomcast (and a second build of it, if given): publish into a room, a
    // passthrough relay pushes to the origin. `RELAY_BENCH_LIMITS` and
    // `RELAY_BENCH_ALT_LIMITS` (e.g. `gop_cache_mb = 0`): more lines of
    // each one's `[limits]`; the same binary as both, with other limits,
    // compares settings in one run.
    let limits = |var: &str| std::env::var(var).unwrap_or_default().replace("\\n", "\n");
    let mut gateways = vec![(
        "roomcast",
        start_gateway(
            "roomcast",
            &gateway_bin(),
            &work.join("roomcast"),
            (many, &limits("RELAY_BENCH_LIMITS")),
            hls,
        ),
    )];
    if let Some(alt) = procs::bin_from_env("RELAY_BENCH_ALT_BIN") {
        gateways.push((
            "roomcast-alt",
            start_gateway(
                "roomcast-alt",
                &alt,
                &work.join("roomcast-alt"),
                (many, &limits("RELAY_BENCH_ALT_LIMITS")),
                hls,
            ),
        ));
    }
    // nginx-rtmp relaying the same stream with `push`.
    let relay_port = free_port();
    let relay = nginx(
        &work.join("nginx-relay"),
        &format!(
            "rtmp {{ server {{ listen 127.0.0.1:{relay_port}; application live {{ live on; push rtmp://127.0.0.1:{origin_port}/live; }} }} }}"
        ),
    );
    wait_port(relay_port);

    // Relay `i`: room `bench<i>`, anchor `anchor<i>`, pushed as `rc<i>`;
    // its tasks are deleted after the case.
    let roomcast_case = |gw: &Gateway, from: usize, n: usize| -> (Vec<f64>, f64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut tasks = Vec::new();
        let publish: Vec<(u16, &'static str, String)> = (from..from + n)
            .map(|i| {
                let body = format!(
                    "{{\"sdkappid\":{APP},\"room\":\"bench{i}\",\"userid\":\"anchor{i}\",\"profile\":\"push-only\",\"rtmp\":[\"rtmp://127.0.0.1:{origin_port}/live/rc{i}\"]}}"
                );
                let (code, resp) = http(gw.http_port, "POST", "/v1/relays", &body);
                assert_eq!(code, 201, "{resp}");
                let resp: serde_json::Value = serde_json::from_str(&resp).unwrap();
                tasks.push(resp["task_id"].as_str().expect("task id").to_owned());
                let user = format!("anchor{i}");
                let sig = roomcast::auth::usersig::generate(APP, KEY, &user, 3600, now, None);
                (gw.rtmp_port, "push", format!("bench{i}?sdkappid={APP}&userid={user}&usersig={sig}"))
            })
            .collect();
        let out = run_case(
            &tags,
            &publish,
            origin_port,
            &format!("rc{from}"),
            gw.proc.0.id(),
        );
        for id in tasks {
            http(gw.http_port, "DELETE", &format!("/v1/relays/{id}"), "");
        }
        out
    };
    let nginx_case = |from: usize, n: usize| -> (Vec<f64>, f64) {
        let publish: Vec<(u16, &'static str, String)> = (from..from + n)
            .map(|i| (relay_port, "live", format!("ng{i}")))
            .collect();
        run_case(
            &tags,
            &publish,
            origin_port,
            &format!("ng{from}"),
            relay.0.id(),
        )
    };

    // Each case twice per side a round, in the order roomcast(s), nginx,
    // nginx, roomcast(s) reversed, so no side gets the warmer or the later
    // slots; each run its own stream numbers. `RELAY_BENCH_ROUNDS` rounds
    // (1): CPU on a VM moves between runs, so with
    // more rounds each round's ratio is printed too, and their spread.
    let rounds = std::env::var("RELAY_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let mut next_stream = 0;
    let mut streams = |n: usize| {
        next_stream += n;
        next_stream - n
    };
    for (label, n) in [
        ("one relay".to_owned(), 1),
        (
            format!("{many} relays at once (the first one timed; CPU per stream)"),
            many,
        ),
    ] {
        // Every run of each side (the gateways', then nginx-rtmp's last),
        // and each round's mean CPU per side.
        let nginx_side = gateways.len();
        let mut runs: Vec<Vec<(Vec<f64>, f64)>> = vec![Vec::new(); nginx_side + 1];
        let mut round_cpu: Vec<Vec<f64>> = Vec::new();
        for _ in 0..rounds {
            let mut this: Vec<Vec<f64>> = vec![Vec::new(); nginx_side + 1];
            let mut record = |k: usize, run: (Vec<f64>, f64)| {
                this[k].push(run.1);
                runs[k].push(run);
            };
            for (k, (_, gw)) in gateways.iter().enumerate() {
                record(k, roomcast_case(gw, streams(n), n));
            }
            for _ in 0..2 {
                record(nginx_side, nginx_case(streams(n), n));
            }
            for (k, (_, gw)) in gateways.iter().enumerate().rev() {
                record(k, roomcast_case(gw, streams(n), n));
            }
            round_cpu.push(
                this.iter()
                    .map(|c| c.iter().sum::<f64>() / c.len() as f64)
                    .collect(),
            );
        }
        println!("\n{label}:");
        let side = |name: &str, runs: Vec<(Vec<f64>, f64)>| -> (f64, f64) {
            let cpu: Vec<f64> = runs.iter().map(|r| r.1).collect();
            let mut lat: Vec<f64> = runs.into_iter().flat_map(|r| r.0).collect();
            let (p50, mean) = summary(name, &mut lat, cpu.iter().sum::<f64>() / cpu.len() as f64);
            let each: Vec<String> = cpu.iter().map(|c| format!("{c:.5}")).collect();
            println!("{:10} CPU per run {} s/s of stream", "", each.join(", "));
            (p50, mean)
        };
        let mut runs = runs.into_iter();
        let ours: Vec<(&str, (f64, f64))> = gateways
            .iter()
            .zip(runs.by_ref())
            .map(|((name, _), r)| (*name, side(name, r)))
            .collect();
        let (ng_p50, ng_cpu_s) = side("nginx-rtmp", runs.next().expect("nginx-rtmp's runs"));
        for (k, (name, (p50, cpu_s))) in ours.iter().enumerate() {
            println!(
                "ratio {name}/nginx-rtmp: latency p50 {:.2}x, CPU {:.2}x",
                p50 / ng_p50,
                cpu_s / ng_cpu_s.max(1e-9)
            );
            if rounds > 1 {
                let mut each: Vec<f64> = round_cpu
                    .iter()
                    .map(|r| r[k] / r[nginx_side].max(1e-9))
                    .collect();
                let listed: Vec<String> = each.iter().map(|r| format!("{r:.2}x")).collect();
                each.sort_by(f64::total_cmp);
                println!(
                    "      CPU ratio per round: {} (median {:.2}x, {:.2}x to {:.2}x)",
                    listed.join(", "),
                    each[each.len() / 2],
                    each[0],
                    each[each.len() - 1]
                );
            }
        }
        if let [(_, (p50, cpu_s)), (alt, (alt_p50, alt_cpu_s))] = ours[..] {
            println!(
                "ratio {alt}/roomcast: latency p50 {:.2}x, CPU {:.2}x",
                alt_p50 / p50,
                alt_cpu_s / cpu_s.max(1e-9)
            );
        }
    }
    drop(relay);
    drop(gateways);
    let _ = std::fs::remove_dir_all(&work);
}
