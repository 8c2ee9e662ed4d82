//! An anchor whose RTMP timestamps jump ten minutes forward, then back: the
//! relay's origin and its HLS see one continuous stream, without a
//! ten-minute gap, a pile-up of frames a millisecond apart, or a reconnect.

mod common;

#[path = "../benches/common/flv_file.rs"]
mod flv_file;
#[path = "../benches/common/rtmp_client.rs"]
mod rtmp_client;

use std::time::{Duration, Instant};

use common::media::{Origin, decode, lavfi_file};
use common::{Gateway, http_get, wait_for};
use rml_rtmp::time::RtmpTimestamp;
use serde_json::json;

const APP: u64 = 1_400_000_000;
const KEY: &str = "jump-test-key";
/// Ten minutes, in RTMP milliseconds.
const JUMP_MS: u32 = 600_000;

#[test]
fn timestamps_jumping_forward_and_back_make_one_continuous_output() {
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some(("AKIDtest", "k")),
        "",
    )));
    let origin = Origin::start();
    let file = gw.dir.0.join("source.flv");
    lavfi_file(
        &file,
        "testsrc=size=320x240:rate=30",
        "sine=frequency=440:sample_rate=44100",
        12,
    );
    let tags = flv_file::read_flv(&file);
    assert!(tags.len() > 500, "{} tags", tags.len());

    let (id, stream) = gw.start_relay(
        &json!({"sdkappid": APP, "room": "jumpy", "userid": "host", "rtmp": [origin.url("jumpy")]}),
    );
    let url = gw.publish_url(APP, KEY, "jumpy", "host");
    let key = url.split_once("/push/").expect("a push URL").1;
    let mut publisher = rtmp_client::Rtmp::publisher(gw.rtmp_port(), "push", key);

    // In real time: 0-4 s as encoded, 4-8 s ten minutes later, 8-12 s as
    // encoded again (ten minutes back).
    let t0 = Instant::now();
    let mut playlist_mid_jump = None;
    for (video, ts, body) in tags {
        let due = t0 + Duration::from_millis(u64::from(ts));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = if (4_000..8_000).contains(&ts) {
            ts + JUMP_MS
        } else {
            ts
        };
        let t = RtmpTimestamp::new(sent);
        let result = if video {
            publisher.session.publish_video_data(body, t, false)
        } else {
            publisher.session.publish_audio_data(body, t, false)
        }
        .expect("a media packet");
        publisher.apply(vec![result]);
        if playlist_mid_jump.is_none() && ts >= 10_000 {
            playlist_mid_jump = Some(http_get(gw.http_port, &format!("/hls/{stream}/index.m3u8")));
        }
    }
    // Both jumps were seen and said.
    assert!(gw.wait_log("the input's timestamps jumped", Duration::from_secs(2)));
    let st = gw.relay_status(&id);
    assert_eq!(st["targets"][0]["state"], "publishing", "{st}");

    // HLS: every segment about as long as the target, none holding a jump.
    let (status, text) = playlist_mid_jump
        .expect("a playlist")
        .expect("HLS answered");
    assert_eq!(status, 200, "{text}");
    let durations: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    assert!(durations.len() >= 3, "{text}");
    assert!(
        durations.iter().all(|d| (0.5..=4.5).contains(d)),
        "{durations:?}\n{text}"
    );

    // The origin: one recording, about twelve seconds, decodable throughout.
    drop(publisher);
    let (status, _, text) = common::http(gw.http_port, "DELETE", &format!("/v1/relays/{id}"), None)
        .expect("relay stopped");
    assert!(status < 300, "{status} {text}");
    let mut recordings = Vec::new();
    wait_for("the origin's recording", Duration::from_secs(15), || {
        recordings = origin.recordings("jumpy");
        recordings.len() == 1 && decode(recordings[0].to_str().unwrap()).1 > 10.0
    });
    let (errors, duration) = decode(recordings[0].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        (10.0..14.0).contains(&duration),
        "the origin got {duration} s"
    );
}
