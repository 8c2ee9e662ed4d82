//! HLS serving: roomcast's in-memory LL-HLS against nginx serving the same
//! bytes from files, in the same run.
//!
//! ffmpeg publishes a 2 Mbps 720p30 stream (GOP 2 s) over RTMP into a
//! passthrough relay with LL-HLS (2 s segments); once segments exist, the
//! playlist and one complete segment are copied into a directory that nginx
//! serves. `wrk` (2 threads, 100 connections, 6 s) then loads each server
//! in turn with the playlist and with the segment, in the order roomcast,
//! nginx, nginx, roomcast (so neither gains from going first or last).
//! The mean requests per second are printed with the ratio roomcast / nginx.
//!
//! Run: `cargo bench --bench hls` (needs ffmpeg and nginx from `make test`'s
//! set-up, and `wrk`: `apt-get install wrk`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/procs.rs"]
mod procs;
use procs::{Killed, free_port, gateway, nginx, two_ports, wait_port};

const APP: u64 = 1_400_000_000;
const KEY: &str = "bench-key";
const WRK_SECONDS: u32 = 6;

const PROFILE: &str = r#"
name = "bench-ll"
passthrough = true
[outputs.hls]
segment_seconds = 2
window = 60
low_latency = true
"#;

fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    let status = std::str::from_utf8(&raw[..split])
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw[split..].to_vec())
}

/// Requests per second `wrk` reaches on `url`.
fn wrk(url: &str) -> f64 {
    let out = Command::new("wrk")
        .args(["-t2", "-c100", &format!("-d{WRK_SECONDS}s"), url])
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        panic!("{url}: errors under load:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate from wrk:\n{text}"))
}

fn usersig(user: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "usersig",
            "gen",
            "--sdkappid",
            &APP.to_string(),
            "--key",
            KEY,
        ])
        .args(["--userid", user])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn publisher(rtmp_port: u16, dir: &Path) -> Killed {
    let url = format!(
        "rtmp://127.0.0.1:{rtmp_port}/push/bench?sdkappid={APP}&userid=anchor&usersig={}",
        usersig("anchor")
    );
    Killed(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
            .args([
                "-re",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ])
            .args(["-t", "300", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(["-tune", "zerolatency", "-g", "60", "-b:v", "2000k"])
            .args(["-maxrate", "2000k", "-bufsize", "2000k", "-c:a", "aac"])
            .args(["-f", "flv", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ffmpeg.log")).unwrap())
            .spawn()
            .expect("ffmpeg"),
    )
}

fn main() {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-hls");
    let _ = std::fs::remove_dir_all(&work);
    let gw_dir = work.join("gateway");
    std::fs::create_dir_all(gw_dir.join("profiles")).unwrap();
    std::fs::write(gw_dir.join("profiles/bench-ll.toml"), PROFILE).unwrap();
    std::fs::write(
        gw_dir.join("roomcast.toml"),
        format!("[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n"),
    )
    .unwrap();
    let (http_port, rtmp_port) = two_ports();
    let _gw = gateway(&gw_dir, http_port, rtmp_port);
    wait_port(http_port);
    let (code, body) = http(
        http_port,
        "POST",
        "/v1/relays",
        &format!(r#"{{"sdkappid":{APP},"room":"bench","userid":"anchor","profile":"bench-ll"}}"#),
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let stream = answer["stream"].as_str().unwrap().to_string();
    let _anchor = publisher(rtmp_port, &work);

    // Two complete segments, then a snapshot for nginx.
    let playlist_path = format!("/hls/{stream}/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (playlist, segment) = loop {
        assert!(Instant::now() < deadline, "no segments in time");
        let (code, body) = http(http_port, "GET", &playlist_path, "");
        let text = String::from_utf8_lossy(&body).to_string();
        let segs: Vec<&str> = text
            .lines()
            .filter(|l| l.ends_with(".m4s") && !l.starts_with('#'))
            .collect();
        if code == 200 && segs.len() >= 2 {
            break (text.clone(), segs[segs.len() - 1].to_string());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let segment_path = format!("/hls/{stream}/{segment}");
    let (code, seg_bytes) = http(http_port, "GET", &segment_path, "");
    assert_eq!(code, 200);
    let root = work.join("www");
    let files = root.join(format!("hls/{stream}"));
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("index.m3u8"), &playlist).unwrap();
    std::fs::write(files.join(&segment), &seg_bytes).unwrap();
    let ng_port = free_port();
    let _nginx = nginx(
        &work.join("nginx"),
        &format!(
            "http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n\
             types {{ application/vnd.apple.mpegurl m3u8; video/mp4 m4s; }}\n\
             server {{ listen 127.0.0.1:{ng_port}; root {}; add_header Access-Control-Allow-Origin *; }} }}",
            root.display()
        ),
    );
    wait_port(ng_port);

    println!(
        "HLS serving, wrk -t2 -c100 -d{WRK_SECONDS}s; playlist {} bytes, segment {} ({} bytes)",
        playlist.len(),
        segment,
        seg_bytes.len()
    );
    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "object", "roomcast r/s", "nginx r/s", "ratio"
    );
    for (name, path) in [("playlist", &playlist_path), ("segment", &segment_path)] {
        let (a, b) = (
            format!("http://127.0.0.1:{http_port}{path}"),
            format!("http://127.0.0.1:{ng_port}{path}"),
        );
        let (o1, t1, t2, o2) = (wrk(&a), wrk(&b), wrk(&b), wrk(&a));
        let (ours, theirs) = ((o1 + o2) / 2.0, (t1 + t2) / 2.0);
        println!(
            "{name:<10} {ours:>14.0} {theirs:>14.0} {:>7.2}x",
            ours / theirs
        );
    }
}
