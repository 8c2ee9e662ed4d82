//! roomcast killed with SIGKILL in the middle of a cloud recording: the
//! fragmented MP4 and the HLS recording written so far play, from their
//! first frame to the last complete fragment.

mod common;

use std::time::{Duration, Instant};

use common::media::{Publisher, decode};
use common::{Gateway, wait_for};

const APP: u64 = 1_400_000_000;
const KEY: &str = "sigkill-test-key";
const SECRET_ID: &str = "AKIDkill";
const SECRET_KEY: &str = "kill-secret";

#[test]
fn recordings_cut_by_sigkill_play_up_to_the_kill() {
    let mut gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some((SECRET_ID, SECRET_KEY)),
        "",
    )));
    let task = common::start_mix_recording(
        gw.http_port,
        (SECRET_ID, SECRET_KEY),
        (APP, KEY),
        "kill",
        800000,
    );
    let mut anchor = Publisher::start(&gw.publish_url(APP, KEY, "kill", "anchor"), 30, &gw.dir.0);
    let dir = gw.dir.0.join("data").join("recordings").join(&task);
    let mp4 = dir.join("mix_0.mp4");
    let playlist = dir.join("mix_hls").join("index.m3u8");
    // Record until the HLS recording has three segments, then kill.
    wait_for("three recorded segments", Duration::from_secs(30), || {
        std::fs::read_to_string(&playlist).is_ok_and(|p| p.matches("#EXTINF").count() >= 3)
    });
    let killed = Instant::now();
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    let _ = anchor.child.kill();
    assert!(killed.elapsed() < Duration::from_secs(5));

    // The playlist of a recording cut short has no end tag, so players
    // would wait for more as for a live one, until roomcast starts again
    // and closes it.
    let text = std::fs::read_to_string(&playlist).unwrap();
    assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
    let gw = Gateway::restart(gw);
    assert!(gw.wait_log(
        "recording playlist left open by an interrupted run closed",
        Duration::from_secs(5)
    ));
    let closed = std::fs::read_to_string(&playlist).unwrap();
    assert_eq!(closed, format!("{text}#EXT-X-ENDLIST\n"));
    let (errors, hls_secs) = decode(playlist.to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(hls_secs > 4.0, "the HLS recording plays {hls_secs} s");
    // The MP4 plays as far as its last complete fragment: only the fragment
    // being written at the kill may be cut (a fragment is at most a GOP, 2 s).
    let (errors, mp4_secs) = decode(mp4.to_str().unwrap());
    let truncation = [
        "partial file",
        "Invalid NAL unit size",
        "missing picture in access unit",
        "Error splitting the input into NAL units",
        "Invalid data found when processing input",
    ];
    assert!(
        errors
            .iter()
            .all(|e| truncation.iter().any(|t| e.contains(t))),
        "{errors:?}"
    );
    eprintln!("after SIGKILL: the MP4 plays {mp4_secs} s, the HLS recording {hls_secs} s");
    assert!(
        mp4_secs > 4.0 && mp4_secs + 2.5 >= hls_secs,
        "the MP4 plays {mp4_secs} s, the HLS recording {hls_secs} s"
    );
}
