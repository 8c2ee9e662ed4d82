//! `GET /metrics` scraped while a real mix runs: two ffmpeg anchors publish
//! over RTMP into a room, the mix goes to a real nginx-rtmp origin and to
//! HLS, and the numbers move as anchors join and leave. The text is read
//! by prometheus_client's own OpenMetrics parser, not by a regex.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::media::{Origin, Publisher};
use common::{Gateway, http, http_with};
use serde_json::{Value, json};

static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "metrics-key";

type Samples = HashMap<String, f64>;

/// One scrape, parsed by the reference parser (which fails on bad text).
fn scrape(gw: &Gateway) -> Samples {
    let (code, headers, text) = http(gw.http_port, "GET", "/metrics", None).unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text")),
        "{headers:?}"
    );
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/metrics_parse.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A sample's value, 0 when the series does not exist (yet).
fn get(s: &Samples, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

fn anchor(gw: &Gateway, user: &str, colour: &str, secs: u32) -> Publisher {
    Publisher::start_lavfi(
        &gw.publish_url(APP, KEY, "lesson", user),
        &format!("color=c={colour}:size=640x360:rate=30"),
        "sine=frequency=440:sample_rate=48000",
        secs,
        &gw.dir.0,
    )
}

/// Scrapes until `pred` holds, failing after `within`.
fn scrape_until(
    gw: &Gateway,
    what: &str,
    within: Duration,
    pred: impl Fn(&Samples) -> bool,
) -> Samples {
    let mut last = Samples::new();
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::wait_for(what, within, || {
            last = scrape(gw);
            pred(&last)
        })
    }));
    if ok.is_err() {
        let mut keys: Vec<_> = last.iter().filter(|(_, v)| **v != 0.0).collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        panic!("timed out waiting for {what}; last scrape (non-zero): {keys:?}");
    }
    last
}

#[test]
fn metrics_move_as_anchors_join_and_leave_a_live_mix() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = Gateway::start(Some(&common::app_config(APP, KEY, None, "")));
    let origin = Origin::start();
    let app = format!("sdkappid=\"{APP}\"");

    let (id, stream) = gw.start_relay(&json!({
        "sdkappid": APP, "room": "lesson", "profile": "grid-720p", "rtmp": [origin.url("lesson-mix")]
    }));
    let before = scrape(&gw);
    assert_eq!(
        get(
            &before,
            &format!("roomcast_tasks{{kind=\"mix\",{app},state=\"waiting\"}}")
        ),
        1.0
    );
    assert_eq!(get(&before, "roomcast_publishers{edge=\"rtmp\"}"), 0.0);

    // Two anchors: publishers, users and the mix's own numbers move.
    let mut red = anchor(&gw, "red", "red", 14);
    let mut blue = anchor(&gw, "blue", "blue", 8);
    let both = scrape_until(
        &gw,
        "two publishers in a running mix",
        Duration::from_secs(20),
        |s| {
            get(s, "roomcast_publishers{edge=\"rtmp\"}") == 2.0
                // Both publishers' connections and the mix's push target,
                // on the one RTMP loop.
                && get(s, "roomcast_rtmp_loop_tasks{loop=\"0\"}") == 3.0
                && get(
                    s,
                    &format!("roomcast_tasks{{kind=\"mix\",{app},state=\"running\"}}"),
                ) == 1.0
                && get(
                    s,
                    &format!("roomcast_rtmp_targets{{{app},state=\"publishing\"}}"),
                ) == 1.0
                && get(s, "roomcast_mix_latency_seconds_count{}") > 10.0
                && get(s, "roomcast_received_bytes_total{edge=\"rtmp\"}") > 10_000.0
                && get(s, "roomcast_sent_bytes_total{output=\"rtmp\"}") > 10_000.0
        },
    );
    assert_eq!(get(&both, &format!("roomcast_rooms{{{app}}}")), 1.0);
    common::wait_for("both anchors in the mix", Duration::from_secs(5), || {
        let st = gw.relay_status(&id);
        let mut inputs: Vec<&str> = st["inputs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        inputs.sort_unstable();
        inputs == ["blue", "red"]
    });
    assert_eq!(
        get(
            &both,
            &format!("roomcast_room_users{{role=\"anchor\",{app}}}")
        ),
        2.0
    );
    assert!(get(&both, "roomcast_received_bytes_total{edge=\"rtmp\"}") > 10_000.0);
    assert!(get(&both, "roomcast_sent_bytes_total{output=\"rtmp\"}") > 10_000.0);
    assert!(get(&both, "roomcast_process_cpu_seconds_total{}") > 0.0);
    assert!(get(&both, "roomcast_process_resident_memory_bytes{}") > 1e6);
    // Pictures leave the mixer in well under a second.
    let p50_bucket = get(&both, "roomcast_mix_latency_seconds_bucket{le=\"0.512\"}");
    assert!(
        p50_bucket >= get(&both, "roomcast_mix_latency_seconds_count{}") / 2.0,
        "half the pictures within 512 ms"
    );

    // The task's status says how many distinct pictures it makes (how
    // many is the box's business: a busy one makes fewer, never more than
    // the output rate), and, once enough have gone through, how long they
    // took.
    let mut st = Value::Null;
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::wait_for("an effective frame rate", Duration::from_secs(10), || {
            st = gw.relay_status(&id);
            st["effective_fps"].as_f64().is_some_and(|f| f > 5.0)
                && st["latency_ms"]["pictures"]
                    .as_u64()
                    .is_some_and(|n| n > 30)
        })
    }));
    assert!(found.is_ok(), "last status: {st}");
    assert!(
        st["effective_fps"].as_f64().unwrap() <= st["fps"].as_f64().unwrap() + 0.5,
        "distinct pictures are at most the output rate: {st}"
    );
    // And how long a picture takes through it, split.
    let lat = &st["latency_ms"];
    let (p50, p99) = (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99, "{st}");
    assert!(lat["jitter_buffer_p50"].as_f64().unwrap() <= p50, "{st}");
    assert!(lat["encode_p50"].as_f64().unwrap() <= p50, "{st}");
    assert!(lat["pictures"].as_u64().unwrap() > 30, "{st}");
    // The mix keeps ticking between scrapes, and shows new pictures.
    let later = scrape_until(&gw, "the mix to tick on", Duration::from_secs(10), |s| {
        get(s, "roomcast_mix_ticks_total{}") >= get(&both, "roomcast_mix_ticks_total{}") + 30.0
    });
    assert!(
        get(&later, "roomcast_mix_pictures_total{}") > get(&both, "roomcast_mix_pictures_total{}")
    );
    assert!(get(&later, "roomcast_mix_tick_lateness_seconds_count{}") > 0.0);

    // HLS requests are counted by object type (the first segment may
    // still be on its way: every attempt counts).
    let mut playlist_requests = 0.0;
    common::wait_for("the HLS playlist", Duration::from_secs(10), || {
        playlist_requests += 1.0;
        let url = format!("/hls/{stream}/index.m3u8");
        http(gw.http_port, "GET", &url, None).unwrap().0 == 200
    });
    let (code, _, _) = http(gw.http_port, "GET", "/hls/no-such-stream/secret.txt", None).unwrap();
    assert_eq!(code, 404);
    // A TRTC API call is counted by action and result code.
    let (code, _, _) = http_with(
        gw.http_port,
        "POST",
        "/",
        &[
            ("X-TC-Action", "DismissRoom"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    )
    .unwrap();
    assert_eq!(code, 200);
    let served = scrape(&gw);
    assert_eq!(
        get(&served, "roomcast_hls_requests_total{object=\"playlist\"}"),
        playlist_requests
    );
    assert_eq!(
        get(&served, "roomcast_hls_requests_total{object=\"other\"}"),
        1.0
    );
    assert!(get(&served, "roomcast_sent_bytes_total{output=\"hls\"}") > 0.0);
    let api: f64 = served
        .iter()
        .filter(|(k, _)| k.starts_with("roomcast_api_requests_total{action=\"DismissRoom\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(api, 1.0, "one refused DismissRoom");

    // Blue leaves: one publisher, one anchor.
    assert!(blue.wait(Duration::from_secs(30)).unwrap().success());
    scrape_until(&gw, "blue gone", Duration::from_secs(10), |s| {
        get(s, "roomcast_publishers{edge=\"rtmp\"}") == 1.0
            && get(s, &format!("roomcast_room_users{{role=\"anchor\",{app}}}")) == 1.0
    });
    // Red leaves: the room closes and the mix ends.
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    let after = scrape_until(
        &gw,
        "the room closed and the mix ended",
        Duration::from_secs(15),
        |s| {
            get(s, "roomcast_publishers{edge=\"rtmp\"}") == 0.0
                && get(s, &format!("roomcast_rooms{{{app}}}")) == 0.0
                && get(
                    s,
                    &format!("roomcast_tasks{{kind=\"mix\",{app},state=\"running\"}}"),
                ) == 0.0
        },
    );
    assert!(
        get(&after, "roomcast_received_bytes_total{edge=\"rtmp\"}")
            >= get(&later, "roomcast_received_bytes_total{edge=\"rtmp\"}")
    );
    common::wait_for("mix stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });
    // Every connection and target gave its place on the loop back, and
    // nothing panicked on the way.
    let end = scrape_until(&gw, "the RTMP loop empty", Duration::from_secs(10), |s| {
        get(s, "roomcast_rtmp_loop_tasks{loop=\"0\"}") == 0.0
    });
    assert_eq!(end.get("roomcast_panics_total{}"), Some(&0.0), "{end:?}");
}
