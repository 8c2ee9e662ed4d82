//! ffmpeg publishing like OBS into a room; a passthrough relay task pushes
//! to a real nginx-rtmp origin and serves HLS; the origin is killed and comes
//! back; a bad target fails fast beside a good one.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::media::{Origin, Publisher, decode, first_video_frame_is_key, probe_streams};
use common::{Gateway, free_port, http};
use serde_json::{Value, json};

/// Media tests encode in real time; one at a time on a 2-core machine.
static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "relay-test-key";

#[test]
fn ffmpeg_publish_is_relayed_to_an_origin_and_served_as_hls() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some(("AKIDtest", "k")),
        "",
    )));
    let origin = Origin::start();
    let (id, stream) = gw.start_relay(&json!({"sdkappid": APP, "room": "class1", "roomtype": "str", "userid": "teacher", "rtmp": [origin.url("class1")]}),
    );
    assert_eq!(stream, "1400000000_class1_teacher_main");
    assert_eq!(gw.relay_status(&id)["state"], "waiting");

    let secs = 6;
    let mut obs = Publisher::start(
        &gw.publish_url(APP, KEY, "class1", "teacher"),
        secs,
        &gw.dir.0,
    );
    common::wait_for("relay running", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "running"
    });
    let st = gw.relay_status(&id);
    assert_eq!(st["targets"][0]["state"], "publishing", "{st}");
    // A plain rtmp:// origin is written from the relay's own turn.
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("rtmp push publishing") && l.contains("written_by=\"relay\"")),
        "{log}"
    );
    let exit = obs
        .wait(Duration::from_secs(30))
        .expect("publisher finishes");
    assert!(exit.success(), "{}", obs.log_text());

    // The anchor left, the room closed, the task stopped and HLS ended.
    common::wait_for("task stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });
    assert!(
        gw.relay_status(&id)["reason"]
            .as_str()
            .unwrap()
            .contains("room closed")
    );

    let rec = origin.recordings("class1");
    assert_eq!(rec.len(), 1, "{rec:?}");
    let streams = probe_streams(rec[0].to_str().unwrap());
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("video at origin");
    assert_eq!(
        (
            video["codec_name"].as_str(),
            video["width"].as_str(),
            video["height"].as_str()
        ),
        ("h264", "640", "360")
    );
    assert_eq!(video["r_frame_rate"], "30/1");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("audio at origin");
    assert_eq!(audio["codec_name"], "aac");
    assert!(first_video_frame_is_key(rec[0].to_str().unwrap()));

    // HLS through roomcast's own HTTP server.
    let playlist = format!("/hls/{stream}/index.m3u8");
    let (code, headers, body) = http(gw.http_port, "GET", &playlist, None).unwrap();
    assert_eq!(code, 200);
    let header = |k: &str| {
        headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(header("access-control-allow-origin"), Some("*"));
    assert_eq!(header("cache-control"), Some("max-age=1"));
    assert!(
        body.contains("#EXT-X-PROGRAM-DATE-TIME:") && body.ends_with("#EXT-X-ENDLIST\n"),
        "{body}"
    );
    let first_seg = body.lines().find(|l| l.ends_with(".ts")).unwrap();
    let (code, headers, _) = http(
        gw.http_port,
        "GET",
        &format!("/hls/{stream}/{first_seg}"),
        None,
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(headers.contains(&("content-type".into(), "video/mp2t".into())));
    let url = format!("http://127.0.0.1:{}{playlist}", gw.http_port);
    let (errors, duration) = decode(&url);
    assert!(errors.is_empty(), "decode errors: {errors:?}");
    let want = f64::from(secs);
    assert!(
        (duration - want).abs() <= want * 0.1,
        "HLS duration {duration} vs {want}"
    );

    for bad in [
        "/hls/nope/index.m3u8".to_owned(),
        format!("/hls/{stream}/../../dev-credentials.toml"),
        format!("/hls/{stream}/%2e%2e%2fdev-credentials.toml"),
        format!("/hls/..%2f{stream}/index.m3u8"),
        format!("/hls/{stream}/seg0.mp4"),
    ] {
        assert_eq!(
            http(gw.http_port, "GET", &bad, None).unwrap().0,
            404,
            "{bad}"
        );
    }
}

#[test]
fn origin_restart_resumes_push_at_a_keyframe_and_hls_never_notices() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some(("AKIDtest", "k")),
        "",
    )));
    let origin = Origin::start();
    let (id, stream) = gw.start_relay(
        &json!({"sdkappid": APP, "room": "show", "userid": "host", "rtmp": [origin.url("show")]}),
    );
    let secs = 16;
    let mut obs = Publisher::start(&gw.publish_url(APP, KEY, "show", "host"), secs, &gw.dir.0);
    common::wait_for("first recording", Duration::from_secs(10), || {
        !origin.recordings("show").is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    let (dir, port) = origin.kill();
    common::wait_for(
        "push notices the origin is gone",
        Duration::from_secs(10),
        || gw.relay_status(&id)["targets"][0]["state"] != "publishing",
    );
    std::thread::sleep(Duration::from_secs(2));
    let origin = Origin::start_in(dir, port);
    let back = Instant::now();
    common::wait_for("push resumes within 10 s", Duration::from_secs(10), || {
        gw.relay_status(&id)["targets"][0]["state"] == "publishing"
            && origin.recordings("show").len() == 2
    });
    let resumed_after = back.elapsed();
    let exit = obs
        .wait(Duration::from_secs(40))
        .expect("publisher finishes");
    assert!(
        exit.success(),
        "the publisher never noticed: {}",
        obs.log_text()
    );
    common::wait_for("task stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });

    let rec = origin.recordings("show");
    assert_eq!(rec.len(), 2, "{rec:?}");
    assert!(
        first_video_frame_is_key(rec[1].to_str().unwrap()),
        "restart at a keyframe"
    );
    let (errors, duration) = decode(rec[1].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        duration > 3.0,
        "second recording holds the rest: {duration}"
    );
    assert!(resumed_after < Duration::from_secs(10), "{resumed_after:?}");

    // HLS: the live window (6 x 2 s) decodes cleanly, no discontinuity was
    // needed, and every segment ever written adds up to the wall time.
    let path = format!("/hls/{stream}/index.m3u8");
    let (_, _, playlist) = http(gw.http_port, "GET", &path, None).unwrap();
    assert!(!playlist.contains("#EXT-X-DISCONTINUITY"), "{playlist}");
    let url = format!("http://127.0.0.1:{}{path}", gw.http_port);
    let (errors, _) = decode(&url);
    assert!(errors.is_empty(), "HLS decode errors: {errors:?}");
    let first_seq: f64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .unwrap()
        .parse()
        .unwrap();
    let listed: Vec<f64> = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse().unwrap())
        .collect();
    // Segments before the window were cut every 2 s (GOP 1 s).
    let duration = first_seq * 2.0 + listed.iter().sum::<f64>();
    let want = f64::from(secs);
    assert!(
        (duration - want).abs() <= want * 0.1,
        "HLS duration {duration} vs {want}: {playlist}"
    );
}

#[test]
fn a_refusing_target_fails_fast_while_a_good_one_keeps_working() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some(("AKIDtest", "k")),
        "",
    )));
    let origin = Origin::start();
    let dead = format!("rtmp://127.0.0.1:{}/live/nobody", free_port());
    let (id, _) = gw.start_relay(&json!({"sdkappid": APP, "room": "duo", "userid": "host", "rtmp": [dead, origin.url("duo")]}),
    );
    let mut obs = Publisher::start(&gw.publish_url(APP, KEY, "duo", "host"), 8, &gw.dir.0);
    let t0 = Instant::now();
    common::wait_for(
        "dead target reported failed",
        Duration::from_secs(15),
        || gw.relay_status(&id)["targets"][0]["state"] == "failed",
    );
    let failed_after = t0.elapsed();
    let st = gw.relay_status(&id);
    assert!(
        st["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{st}"
    );
    assert_eq!(st["targets"][1]["state"], "publishing", "{st}");
    assert!(obs.wait(Duration::from_secs(30)).unwrap().success());
    let rec = origin.recordings("duo");
    assert_eq!(rec.len(), 1);
    let (errors, duration) = decode(rec[0].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(duration > 6.5, "the good target got it all: {duration}");
    assert!(failed_after < Duration::from_secs(10), "{failed_after:?}");
}

#[test]
fn relay_admin_path_refuses_bad_requests() {
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some(("AKIDtest", "k")),
        "",
    )));
    for (body, want) in [
        (
            json!({"sdkappid": 1, "room": "r", "userid": "u"}),
            "not configured",
        ),
        (
            json!({"sdkappid": APP, "room": "a*b", "userid": "u"}),
            "string room id",
        ),
        (
            json!({"sdkappid": APP, "room": "r", "userid": "u u"}),
            "UserID",
        ),
        (
            json!({"sdkappid": APP, "room": "r", "userid": "u", "profile": "nope"}),
            "no relay profile",
        ),
        (
            json!({"sdkappid": APP, "room": "r", "userid": "u", "profile": "grid-720p"}),
            "mixes every anchor",
        ),
        (
            json!({"sdkappid": APP, "room": "r", "userid": "u", "rtmp": ["http://x/y/z"]}),
            "rtmp://",
        ),
        (
            json!({"sdkappid": APP, "room": "r", "userid": "u", "max_idle_time": 1}),
            "max_idle_time",
        ),
        (
            json!({"sdkappid": APP, "room": "r", "userid": "u", "stream": "../x"}),
            "stream name",
        ),
        (
            json!({"sdkappid": APP, "room": "r", "userid": "u", "colour": 1}),
            "unknown field",
        ),
    ] {
        let (code, _, text) =
            http(gw.http_port, "POST", "/v1/relays", Some(&body.to_string())).unwrap();
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    let (code, _, _) = http(gw.http_port, "POST", "/v1/relays", Some("{not json")).unwrap();
    assert_eq!(code, 400);
    let body = json!({"sdkappid": APP, "room": "r", "userid": "u"}).to_string();
    let (code, _, text) = http(gw.http_port, "POST", "/v1/relays", Some(&body)).unwrap();
    assert_eq!(code, 201, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _, text) = http(gw.http_port, "POST", "/v1/relays", Some(&body)).unwrap();
    assert_eq!(code, 409, "same stream twice: {text}");
    let (code, _, text) = http(gw.http_port, "GET", "/v1/relays", None).unwrap();
    assert_eq!(code, 200);
    assert!(text.contains(&id), "{text}");
    assert_eq!(
        http(gw.http_port, "DELETE", &format!("/v1/relays/{id}"), None)
            .unwrap()
            .0,
        204
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.relay_status(&id)["state"] != "stopped" {
        assert!(Instant::now() < deadline, "stop by request");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gw.relay_status(&id)["reason"], "stopped by request");
    assert_eq!(
        http(gw.http_port, "DELETE", "/v1/relays/relay-nope", None)
            .unwrap()
            .0,
        404
    );
}
