//! What a Prometheus scrape costs with 100 relay tasks running.
//!
//! The release gateway is started on loopback, 100 passthrough relays are
//! created (one per anchor of a room, each pushing to an RTMP origin that
//! is up, so every task has a live target), then `/metrics` is scraped 200
//! times in a row. Printed: the scrape's wall time (p50, p99), its size,
//! and the gateway's CPU per scrape (from /proc, the gateway process only).
//! The mix's cost with metrics on and off is in `cargo bench --bench mix`.
//!
//! Run: `cargo bench --bench metrics` (needs nginx from `make test`'s set-up).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "common/procs.rs"]
mod procs;
use procs::{free_port, gateway, nginx, two_ports, wait_port};

const APP: u64 = 1_400_000_000;
const TASKS: usize = 100;
const SCRAPES: usize = 200;

fn request(port: u16, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

fn main() {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let origin_port = free_port();
    let _origin = nginx(
        &work.join("origin"),
        &format!(
            "rtmp {{ server {{ listen 127.0.0.1:{origin_port}; application live {{ live on; }} }} }}"
        ),
    );
    wait_port(origin_port);

    std::fs::write(
        work.join("roomcast.toml"),
        format!("[[apps]]\nsdkappid = {APP}\nsecret_key = \"bench\"\n"),
    )
    .unwrap();
    let (http_port, rtmp_port) = two_ports();
    let gw = gateway(&work, http_port, rtmp_port);
    wait_port(http_port);
    for i in 0..TASKS {
        let body = format!(
            "{{\"sdkappid\":{APP},\"room\":\"bench\",\"userid\":\"u{i}\",\"max_idle_time\":3600,\"rtmp\":[\"rtmp://127.0.0.1:{origin_port}/live/s{i}\"]}}"
        );
        let resp = request(http_port, "POST", "/v1/relays", &body);
        assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    }
    // Let the targets connect and the tasks settle.
    std::thread::sleep(Duration::from_secs(3));
    let pid = gw.0.id();
    let mut times = Vec::with_capacity(SCRAPES);
    let mut size = 0;
    let cpu0 = roomcast::metrics::cpu_seconds(Some(pid));
    for _ in 0..SCRAPES {
        let t = Instant::now();
        let resp = request(http_port, "GET", "/metrics", "");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        size = resp.len();
    }
    let cpu = roomcast::metrics::cpu_seconds(Some(pid)) - cpu0;
    times.sort_by(f64::total_cmp);
    let targets = request(http_port, "GET", "/metrics", "")
        .lines()
        .filter(|l| l.starts_with("roomcast_rtmp_targets{"))
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .join(", ");
    println!("{TASKS} relay tasks ({targets})");
    println!(
        "scrape: p50 {:.2} ms, p99 {:.2} ms, {size} bytes; gateway CPU {:.2} ms per scrape (all its threads, {SCRAPES} scrapes)",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        cpu * 1e3 / SCRAPES as f64
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&work);
}
