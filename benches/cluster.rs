//! A forwarded RTMP publish against a direct one, in one run.
//!
//! Two cluster nodes share a Redis (Debian's redis-server on a free port).
//! Node A owns two rooms (a push-only passthrough relay started there for
//! each, to an nginx-rtmp origin). The same 2 Mbps 720p30 H.264/AAC stream
//! is published in real time by this harness once straight to node A, and
//! once to node B, which forwards it to A (a publisher behind a load
//! balancer lands on any node). Latency is publish to origin playback, per
//! video frame (matched by payload hash); CPU is each node's, per second of
//! stream.
//!
//! Run: `cargo bench --bench cluster` (needs ffmpeg, nginx and
//! redis-server from `make test`'s set-up).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "common/flv_file.rs"]
mod flv_file;
#[path = "common/procs.rs"]
mod procs;
#[path = "common/relay_case.rs"]
mod relay_case;
#[path = "common/rtmp_client.rs"]
mod rtmp_client;
use procs::{Killed, free_port, http, two_ports, wait_port};
use relay_case::{SECONDS, run_case, summary};

const APP: u64 = 1_400_000_000;
const KEY: &str = "bench-key";

/// A cluster node in `dir` named `name`.
fn node(dir: &Path, name: &str, redis_port: u16) -> (Killed, u16, u16) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("roomcast.toml"),
        format!(
            "[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[cluster]\nredis_url = \"redis://127.0.0.1:{redis_port}\"\nnode_id = \"{name}\"\n"
        ),
    )
    .unwrap();
    relay_case::push_only_profile(dir, false);
    let (http_port, rtmp_port) = two_ports();
    let gw = procs::gateway(dir, http_port, rtmp_port);
    wait_port(http_port);
    (gw, http_port, rtmp_port)
}

fn main() {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let tags = relay_case::source(&work);

    let redis_port = free_port();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (make test's set-up installs it)"),
    );
    wait_port(redis_port);
    let (_origin, origin_port) = relay_case::origin(&work.join("origin"));
    let (a, a_http, a_rtmp) = node(&work.join("a"), "node-a", redis_port);
    let (b, _, b_rtmp) = node(&work.join("b"), "node-b", redis_port);
    // Both nodes' heartbeats are in before the first publish.
    std::thread::sleep(Duration::from_secs(2));

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Room `bench<i>` is owned by node A: its relay starts there.
    let relay_on_a = |i: usize| {
        let body = format!(
            "{{\"sdkappid\":{APP},\"room\":\"bench{i}\",\"userid\":\"anchor{i}\",\"profile\":\"push-only\",\"rtmp\":[\"rtmp://127.0.0.1:{origin_port}/live/rc{i}\"]}}"
        );
        let (code, resp) = http(a_http, "POST", "/v1/relays", &body);
        assert_eq!(code, 201, "{resp}");
        let user = format!("anchor{i}");
        let sig = roomcast::auth::usersig::generate(APP, KEY, &user, 3600, now, None);
        format!("bench{i}?sdkappid={APP}&userid={user}&usersig={sig}")
    };
    let direct_key = relay_on_a(0);
    let forwarded_key = relay_on_a(1);

    let cpu = |pid: u32| procs::cpu_seconds_precise(pid);
    let b0 = cpu(b.0.id());
    let (mut direct, direct_a) = run_case(
        &tags,
        &[(a_rtmp, "push", direct_key)],
        origin_port,
        "rc0",
        a.0.id(),
    );
    let direct_b = (cpu(b.0.id()) - b0) / f64::from(SECONDS);
    let b0 = cpu(b.0.id());
    let (mut forwarded, forwarded_a) = run_case(
        &tags,
        &[(b_rtmp, "push", forwarded_key)],
        origin_port,
        "rc1",
        a.0.id(),
    );
    let forwarded_b = (cpu(b.0.id()) - b0) / f64::from(SECONDS);

    println!("\nA publish into a room owned by node A, relayed to an origin:");
    let (d50, _) = summary("direct", &mut direct, direct_a);
    let (f50, _) = summary("forwarded", &mut forwarded, forwarded_a);
    println!(
        "node B CPU: direct {direct_b:.4} s/s (idle), forwarded {forwarded_b:.4} s/s of stream"
    );
    println!(
        "forwarding through node B adds {:.2} ms at p50 ({:.2}x the direct latency)",
        f50 - d50,
        f50 / d50
    );
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&work);
}
