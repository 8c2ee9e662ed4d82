//! The system clock steps an hour forward, then two back, while a mix runs
//! (libfaketime moves roomcast's wall clock only; its monotonic clock runs
//! on): the mix keeps its output clock, its HLS segments stay their length,
//! and the CDN origin records one continuous stream.
//!
//! The mix is a 640x360p30 grid at x264's ultrafast preset: the output
//! clock is the same at any size, and this test's debug-built gateway (its
//! wall clock read through libfaketime's offset file at every call) would
//! otherwise run a 720p mix on a 2-core box with little to spare, where a
//! busy moment alone can cost it frames.

mod common;

use std::time::Duration;

use common::media::{Origin, Publisher, decode};
use common::{Gateway, TempDir, http_get, wait_for};
use serde_json::json;

const APP: u64 = 1_400_000_000;
const KEY: &str = "clock-test-key";
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

const GRID: &str = r#"
name = "clock-grid"
[video]
width = 640
height = 360
fps = 30
bitrate_kbps = 800
gop_seconds = 2
preset = "ultrafast"
tune = "zerolatency"
[audio]
bitrate_kbps = 64
[layout]
mode = "grid"
[outputs.hls]
segment_seconds = 2
"#;

fn durations(gw: &Gateway, stream: &str) -> Vec<f64> {
    http_get(gw.http_port, &format!("/hls/{stream}/index.m3u8"))
        .map(|(_, t)| {
            t.lines()
                .filter_map(|l| l.strip_prefix("#EXTINF:"))
                .filter_map(|l| l.split(',').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_mix_rides_through_wall_clock_steps() {
    let clock = TempDir::new("faketime");
    let offset = clock.0.join("offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let profiles = TempDir::new("clock-profiles");
    std::fs::write(profiles.0.join("clock-grid.toml"), GRID).unwrap();
    let gw = Gateway::spawn(
        Some(&common::app_config(APP, KEY, Some(("AKIDclock", "k")), "")),
        &[
            ("ROOMCAST_PROFILES_DIR", profiles.0.to_str().unwrap()),
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    gw.wait_healthy();
    let origin = Origin::start();
    let mut anchor = Publisher::start(&gw.publish_url(APP, KEY, "clock", "host"), 20, &gw.dir.0);
    let (id, stream) = gw.start_relay(
        &json!({"sdkappid": APP, "room": "clock", "profile": "clock-grid",
                                               "rtmp": [origin.url("clock")]}),
    );
    let health = || {
        let st = gw.relay_status(&id);
        (
            st["late_ticks"].as_u64().unwrap_or(0),
            st["effective_fps"].as_f64().unwrap_or(0.0),
        )
    };
    wait_for("the mix at full rate", Duration::from_secs(20), || {
        health().1 >= 27.0
    });
    let (late_before, _) = health();

    let mut worst = f64::MAX;
    for step in ["+3600", "-3600"] {
        std::fs::write(&offset, format!("{step}\n")).unwrap();
        // Four seconds on the monotonic clock after each step.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(4) {
            worst = worst.min(health().1);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let (late_after, fps) = health();
    eprintln!(
        "clock steps: fps worst {worst:.1}, now {fps:.1}; late ticks {late_before} -> {late_after}"
    );
    assert!(worst >= 24.0, "the mix fell to {worst} fps");
    let d = durations(&gw, &stream);
    assert!(
        d.len() >= 3 && d.iter().all(|s| (0.5..=4.0).contains(s)),
        "{d:?}"
    );

    assert!(
        anchor.wait(Duration::from_secs(30)).unwrap().success(),
        "{}",
        anchor.log_text()
    );
    // The mix may have ended with its room; either way the push is over.
    let _ = common::http(gw.http_port, "DELETE", &format!("/v1/relays/{id}"), None);
    let mut rec = Vec::new();
    wait_for("the origin's recording", Duration::from_secs(15), || {
        rec = origin.recordings("clock");
        rec.len() == 1 && decode(rec[0].to_str().unwrap()).1 > 15.0
    });
    let (errors, secs) = decode(rec[0].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!((15.0..25.0).contains(&secs), "the origin got {secs} s");
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "{log}");
    // The steps did reach roomcast: its log is stamped by the wall clock,
    // and some lines are an hour off its first.
    let hour = |l: &str| l.get(11..13).and_then(|h| h.parse::<u32>().ok());
    let first = log.lines().find_map(hour).expect("a stamped log line");
    assert!(
        log.lines()
            .filter_map(hour)
            .any(|h| h == (first + 1) % 24 || h == (first + 23) % 24),
        "no line stamped an hour off:\n{log}"
    );
}
