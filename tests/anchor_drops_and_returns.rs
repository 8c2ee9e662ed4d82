//! Relay tasks follow their anchor: a dropped publisher that comes back is
//! relayed on the same RTMP connection (HLS marks a discontinuity); an
//! audio-only or video-only publisher works; tasks stop after
//! max_idle_time; profiles with `auto = true` relay anchors of matching
//! rooms without being asked.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::media::{Origin, Publisher, decode, probe_streams};
use common::{Gateway, TempDir, http};
use serde_json::{Value, json};

static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "follow-key";

fn post_relay(gw: &Gateway, body: Value) -> Value {
    let (code, _, text) =
        http(gw.http_port, "POST", "/v1/relays", Some(&body.to_string())).unwrap();
    assert_eq!(code, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_dropped_anchor_that_returns_is_relayed_on_the_same_connection() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = Gateway::start(Some(&common::app_config(APP, KEY, Some(("AKID", "k")), "")));
    let origin = Origin::start();
    let task = post_relay(
        &gw,
        json!({"sdkappid": APP, "room": "lesson", "userid": "teacher", "rtmp": [origin.url("lesson")]}),
    );
    let id = task["task_id"].as_str().unwrap();
    let stream = task["stream"].as_str().unwrap();

    let url = gw.publish_url(APP, KEY, "lesson", "teacher");
    let first = Publisher::start(&url, 30, &gw.dir.0);
    common::wait_for("relaying", Duration::from_secs(10), || {
        gw.relay_status(id)["frames"].as_u64().unwrap() > 100
    });
    std::thread::sleep(Duration::from_secs(3));
    drop(first); // killed: the TCP connection drops without an unpublish
    common::wait_for("anchor gone", Duration::from_secs(10), || {
        gw.relay_status(id)["attached"] == false
    });
    assert_eq!(
        gw.relay_status(id)["state"],
        "waiting",
        "the task waits through the grace"
    );
    std::thread::sleep(Duration::from_secs(1));

    let mut second = Publisher::start(&url, 6, &gw.dir.0);
    common::wait_for("attached again", Duration::from_secs(10), || {
        gw.relay_status(id)["attached"] == true
    });
    assert!(
        second.wait(Duration::from_secs(30)).unwrap().success(),
        "{}",
        second.log_text()
    );
    common::wait_for("task stopped", Duration::from_secs(10), || {
        gw.relay_status(id)["state"] == "stopped"
    });

    let rec = origin.recordings("lesson");
    assert_eq!(rec.len(), 1, "the push stayed connected: {rec:?}");
    let (errors, duration) = decode(rec[0].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        duration > 9.0 && duration < 13.0,
        "both stints, no gap in timestamps: {duration}"
    );

    let (_, _, playlist) = http(
        gw.http_port,
        "GET",
        &format!("/hls/{stream}/index.m3u8"),
        None,
    )
    .unwrap();
    assert!(playlist.contains("#EXT-X-DISCONTINUITY\n"), "{playlist}");
    let (errors, _) = decode(&format!(
        "http://127.0.0.1:{}/hls/{stream}/index.m3u8",
        gw.http_port
    ));
    assert!(errors.is_empty(), "{errors:?}");
}

/// A publisher of one track only (`-vn` or `-an`): the relay's outputs
/// start once it has waited for the other track (the start hold), and
/// nothing of it is lost.
fn one_track_is_relayed(room: &str, drop_track: &str, codec: &str) {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = Gateway::start(Some(&common::app_config(APP, KEY, Some(("AKID", "k")), "")));
    let origin = Origin::start();
    let task = post_relay(
        &gw,
        json!({"sdkappid": APP, "room": room, "userid": "dj", "rtmp": [origin.url(room)]}),
    );
    let id = task["task_id"].as_str().unwrap();
    let stream = task["stream"].as_str().unwrap();
    let mut obs = Publisher::start_with(
        &gw.publish_url(APP, KEY, room, "dj"),
        5,
        &gw.dir.0,
        &[drop_track],
    );
    assert!(
        obs.wait(Duration::from_secs(30)).unwrap().success(),
        "{}",
        obs.log_text()
    );
    common::wait_for("task stopped", Duration::from_secs(10), || {
        gw.relay_status(id)["state"] == "stopped"
    });
    let rec = origin.recordings(room);
    assert_eq!(rec.len(), 1);
    let rec = rec[0].to_str().unwrap();
    let streams = probe_streams(rec);
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0]["codec_name"], codec);
    let (errors, duration) = decode(rec);
    assert!(errors.is_empty(), "{errors:?}");
    assert!((duration - 5.0).abs() < 0.5, "the origin got {duration} s");
    let (errors, duration) = decode(&format!(
        "http://127.0.0.1:{}/hls/{stream}/index.m3u8",
        gw.http_port
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert!((duration - 5.0).abs() < 0.5, "HLS holds {duration} s");
}

#[test]
fn an_audio_only_publisher_is_relayed() {
    one_track_is_relayed("radio", "-vn", "aac");
}

#[test]
fn a_video_only_publisher_is_relayed() {
    one_track_is_relayed("silent", "-an", "h264");
}

#[test]
fn a_task_without_input_stops_after_max_idle_time() {
    let gw = Gateway::start(Some(&common::app_config(APP, KEY, Some(("AKID", "k")), "")));
    let task = post_relay(
        &gw,
        json!({"sdkappid": APP, "room": "empty", "userid": "nobody", "max_idle_time": 5}),
    );
    let id = task["task_id"].as_str().unwrap();
    let t0 = Instant::now();
    common::wait_for("idle stop", Duration::from_secs(10), || {
        gw.relay_status(id)["state"] == "stopped"
    });
    assert!(t0.elapsed() >= Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(gw.relay_status(id)["reason"], "no input for 5s");
}

#[test]
fn auto_profiles_relay_anchors_of_matching_rooms() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let origin = Origin::start();
    let profiles = TempDir::new("auto-profiles");
    std::fs::write(
        profiles.0.join("auto.toml"),
        format!(
            "passthrough = true\nauto = true\nauto_rooms = [\"auto-*\"]\n[outputs]\nrtmp = [\"{}\"]\n",
            origin.url("auto")
        ),
    )
    .unwrap();
    let mut gw = Gateway::spawn(
        Some(&common::app_config(APP, KEY, Some(("AKID", "k")), "")),
        &[("ROOMCAST_PROFILES_DIR", profiles.0.to_str().unwrap())],
    );
    gw.wait_healthy();
    let mut matching =
        Publisher::start(&gw.publish_url(APP, KEY, "auto-1", "anchor"), 4, &gw.dir.0);
    let mut other = Publisher::start(&gw.publish_url(APP, KEY, "manual", "anchor2"), 4, &gw.dir.0);
    assert!(matching.wait(Duration::from_secs(30)).unwrap().success());
    assert!(other.wait(Duration::from_secs(30)).unwrap().success());
    let (_, _, text) = http(gw.http_port, "GET", "/v1/relays", None).unwrap();
    let tasks: Value = serde_json::from_str(&text).unwrap();
    let streams: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["1400000000_auto-1_anchor_main"], "{text}");
    common::wait_for("origin got the auto relay", Duration::from_secs(10), || {
        !origin.recordings("auto").is_empty()
    });
    let (errors, duration) = decode(origin.recordings("auto")[0].to_str().unwrap());
    assert!(errors.is_empty() && duration > 2.0, "{errors:?} {duration}");
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).unwrap().success());
}

#[test]
fn a_profile_can_ask_for_audio_to_be_reencoded() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let origin = Origin::start();
    let profiles = TempDir::new("reencode-profiles");
    std::fs::write(
        profiles.0.join("reencode.toml"),
        "passthrough = true\n[audio]\nsample_rate = 32000\nchannels = 2\nbitrate_kbps = 64\nreencode = true\n",
    )
    .unwrap();
    let mut gw = Gateway::spawn(
        Some(&common::app_config(APP, KEY, Some(("AKID", "k")), "")),
        &[("ROOMCAST_PROFILES_DIR", profiles.0.to_str().unwrap())],
    );
    gw.wait_healthy();
    let task = post_relay(
        &gw,
        json!({"sdkappid": APP, "room": "re", "userid": "anchor", "profile": "reencode", "rtmp": [origin.url("re")]}),
    );
    let id = task["task_id"].as_str().unwrap();
    let stream = task["stream"].as_str().unwrap();
    let mut obs = Publisher::start(&gw.publish_url(APP, KEY, "re", "anchor"), 5, &gw.dir.0);
    assert!(obs.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("task stopped", Duration::from_secs(10), || {
        gw.relay_status(id)["state"] == "stopped"
    });
    let rec = origin.recordings("re");
    assert_eq!(rec.len(), 1);
    let streams = probe_streams(rec[0].to_str().unwrap());
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("audio");
    assert_eq!(
        (audio["codec_name"].as_str(), audio["sample_rate"].as_str()),
        ("aac", "32000"),
        "{streams:?}"
    );
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("video passes through");
    assert_eq!(video["width"], "640");
    let (errors, duration) = decode(rec[0].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!((duration - 5.0).abs() < 0.6, "{duration}");
    let (errors, _) = decode(&format!(
        "http://127.0.0.1:{}/hls/{stream}/index.m3u8",
        gw.http_port
    ));
    assert!(errors.is_empty(), "{errors:?}");
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).unwrap().success());
}
