//! The disk fills up under a recording (roomcast's data directory on a
//! 2 MiB tmpfs): the recording stops with a clear error naming the disk,
//! and the room's other outputs (an RTMP push to a CDN origin, live HLS
//! served from memory) go on as if nothing happened.

mod common;

use std::time::Duration;

use common::media::{Origin, Publisher, decode};
use common::{Gateway, http_get, wait_for};
use serde_json::json;

const APP: u64 = 1_400_000_000;
const KEY: &str = "disk-test-key";
const API: (&str, &str) = ("AKIDdisk", "disk-secret");

fn segments(gw: &Gateway, stream: &str) -> Vec<String> {
    http_get(gw.http_port, &format!("/hls/{stream}/index.m3u8"))
        .map(|(_, t)| {
            t.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_full_disk_stops_the_recording_and_nothing_else() {
    let gw = Gateway::start_on_small_disk(Some(&common::app_config(APP, KEY, Some(API), "")), 2);
    let origin = Origin::start();
    let (relay, stream) = gw.start_relay(
        &json!({"sdkappid": APP, "room": "full", "userid": "host", "rtmp": [origin.url("full")]}),
    );
    let task = common::start_mix_recording(gw.http_port, API, (APP, KEY), "full", 1500000);
    let mut anchor = Publisher::start(&gw.publish_url(APP, KEY, "full", "host"), 24, &gw.dir.0);

    // The disk fills: the recording says so and stops.
    assert!(
        gw.wait_log("No space left on device", Duration::from_secs(30)),
        "{}",
        gw.log_text()
    );
    let at_full = segments(&gw, &stream);
    let describe = common::trtc_call(
        gw.http_port,
        API,
        "DescribeCloudRecording",
        json!({"SdkAppId": APP, "TaskId": task}),
    );
    eprintln!("after the disk filled: {describe}");
    for line in gw
        .log_text()
        .lines()
        .filter(|l| l.contains("No space"))
        .take(4)
    {
        eprintln!("{line}");
    }

    // The live HLS keeps advancing and the push keeps publishing.
    wait_for(
        "live HLS to advance past the full disk",
        Duration::from_secs(15),
        || {
            let now = segments(&gw, &stream);
            now.last().is_some() && now.last() != at_full.last()
        },
    );
    assert_eq!(gw.relay_status(&relay)["targets"][0]["state"], "publishing");
    assert!(
        anchor.wait(Duration::from_secs(40)).unwrap().success(),
        "{}",
        anchor.log_text()
    );
    let rec = origin.recordings("full");
    assert_eq!(rec.len(), 1, "{rec:?}");
    let (errors, secs) = decode(rec[0].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(secs > 20.0, "the origin got {secs} s of 24");
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
