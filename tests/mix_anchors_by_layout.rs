//! MixTranscoding end to end: ffmpeg anchors (solid colours and tones) mixed
//! by layout, checked by decoding roomcast's HLS: pixels where the layout
//! puts each anchor, both tones in the spectrum, placeholders when an anchor
//! stops, constant frame rate, and a layout change without a new connection.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::media::{
    BEEP, FLASH, Origin, Publisher, av_offsets, near, pcm, pixel, rgb_frame, tone_power,
};
use common::{Gateway, TempDir, http};
use serde_json::{Value, json};

static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "mix-key";
const RED: (u8, u8, u8) = (255, 0, 0);
const BLUE: (u8, u8, u8) = (0, 0, 255);

fn gateway(profiles: &[(&str, &str)]) -> (Gateway, TempDir) {
    let dir = TempDir::new("mix-profiles");
    for (name, text) in profiles {
        std::fs::write(dir.0.join(format!("{name}.toml")), text).unwrap();
    }
    let gw = Gateway::spawn(
        Some(&common::app_config(APP, KEY, Some(("AKID", "k")), "")),
        &[("ROOMCAST_PROFILES_DIR", dir.0.to_str().unwrap())],
    );
    gw.wait_healthy();
    (gw, dir)
}

fn anchor(gw: &Gateway, room: &str, user: &str, colour: &str, freq: u32, secs: u32) -> Publisher {
    Publisher::start_lavfi(
        &gw.publish_url(APP, KEY, room, user),
        &format!("color=c={colour}:size=640x360:rate=30"),
        &format!("sine=frequency={freq}:sample_rate=48000"),
        secs,
        &gw.dir.0,
    )
}

fn start_mix(gw: &Gateway, room: &str, profile: &str, extra: Value) -> (String, String) {
    let mut body = json!({"sdkappid": APP, "room": room, "profile": profile});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    gw.start_relay(&body)
}

fn assert_both_tones(input: &str) {
    let samples = pcm(input);
    assert!(samples.len() > 48_000, "{} samples", samples.len());
    let tail = &samples[samples.len() / 3..];
    let (a, b, off) = (
        tone_power(tail, 440.0, 48_000.0),
        tone_power(tail, 880.0, 48_000.0),
        tone_power(tail, 660.0, 48_000.0),
    );
    assert!(
        a > 50.0 * off && b > 50.0 * off,
        "440 Hz {a:e}, 880 Hz {b:e}, 660 Hz {off:e}"
    );
}

#[test]
fn grid_mix_shows_both_anchors_side_by_side_and_mixes_both_tones() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let (gw, _p) = gateway(&[]);
    let (id, stream) = start_mix(&gw, "grid", "grid-720p", json!({}));
    let mut red = anchor(&gw, "grid", "red", "red", 440, 8);
    std::thread::sleep(Duration::from_millis(300));
    let mut blue = anchor(&gw, "grid", "blue", "blue", 880, 7);
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    assert!(blue.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("mix stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });

    let url = gw.hls_url(&stream);
    let streams = common::media::probe_streams(&url);
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (
            v["width"].as_str(),
            v["height"].as_str(),
            v["r_frame_rate"].as_str()
        ),
        ("1280", "720", "30/1")
    );
    let pic = rgb_frame(&url, 4.0, 1280, 720);
    assert!(
        near(pixel(&pic, 1280, 320, 360), RED, 40),
        "left {:?}",
        pixel(&pic, 1280, 320, 360)
    );
    assert!(
        near(pixel(&pic, 1280, 960, 360), BLUE, 40),
        "right {:?}",
        pixel(&pic, 1280, 960, 360)
    );
    assert_both_tones(&url);
    let (errors, _) = common::media::decode(&url);
    assert!(errors.is_empty(), "{errors:?}");
}

const CUSTOM: &str = r#"
[video]
width = 1280
height = 720
fps = 30
bitrate_kbps = 1500
preset = "veryfast"
tune = "zerolatency"
[layout]
mode = "custom"
background_color = "0x000000"
[[layout.cells]]
x = 0
y = 0
width = 320
height = 180
user_id = "blue"
placeholder_color = "0x00ff00"
[[layout.cells]]
x = 640
y = 360
width = 640
height = 360
user_id = "red"
"#;

#[test]
fn custom_layout_places_pinned_anchors_and_shows_placeholders_when_one_stops() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let (gw, _p) = gateway(&[("custom", CUSTOM)]);
    let origin = Origin::start();
    let (id, _) = start_mix(&gw, "cust", "custom", json!({"rtmp": [origin.url("cust")]}));
    let mut red = anchor(&gw, "cust", "red", "red", 440, 14);
    std::thread::sleep(Duration::from_millis(300));
    let blue1 = anchor(&gw, "cust", "blue", "blue", 880, 30);
    common::wait_for("both in", Duration::from_secs(10), || {
        gw.relay_status(&id)["frames"].as_u64().unwrap() > 60
    });
    std::thread::sleep(Duration::from_secs(3));
    drop(blue1); // killed: its pinned cell shows the placeholder
    std::thread::sleep(Duration::from_secs(3));
    let _blue2 = anchor(&gw, "cust", "blue", "blue", 880, 4);
    assert!(red.wait(Duration::from_secs(40)).unwrap().success());
    common::wait_for("mix stopped", Duration::from_secs(30), || {
        gw.relay_status(&id)["state"] == "stopped"
    });
    // Pictures the mix skipped because it ran late (a busy box): the only
    // gaps its output may have.
    let skipped = gw.relay_status(&id)["skipped_pictures"]
        .as_u64()
        .expect("skipped_pictures");

    let rec = origin.recordings("cust");
    assert_eq!(rec.len(), 1, "one RTMP connection throughout");
    let file = rec[0].to_str().unwrap().to_owned();
    // While both publish: blue top-left, red bottom-right, black elsewhere.
    let pic = rgb_frame(&file, 2.5, 1280, 720);
    assert!(
        near(pixel(&pic, 1280, 160, 90), BLUE, 40),
        "{:?}",
        pixel(&pic, 1280, 160, 90)
    );
    assert!(
        near(pixel(&pic, 1280, 960, 540), RED, 40),
        "{:?}",
        pixel(&pic, 1280, 960, 540)
    );
    assert!(
        near(pixel(&pic, 1280, 960, 100), (0, 0, 0), 30),
        "{:?}",
        pixel(&pic, 1280, 960, 100)
    );
    // After blue dropped: its cell is the placeholder colour, red stays.
    let pic = rgb_frame(&file, 6.8, 1280, 720);
    assert!(
        near(pixel(&pic, 1280, 160, 90), (0, 255, 0), 60),
        "placeholder {:?}",
        pixel(&pic, 1280, 160, 90)
    );
    assert!(near(pixel(&pic, 1280, 960, 540), RED, 40));
    // Blue back: it reappears.
    let pic = rgb_frame(&file, 9.5, 1280, 720);
    assert!(
        near(pixel(&pic, 1280, 160, 90), BLUE, 40),
        "back {:?}",
        pixel(&pic, 1280, 160, 90)
    );

    assert_both_tones(&file);

    // Constant frame rate, no gaps or jumps in the output timestamps.
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=dts",
            "-of",
            "csv=p=0",
            &file,
        ])
        .output()
        .unwrap();
    let dts: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(dts.len() > 300, "{}", dts.len());
    // Constant frame rate: every step one frame (33 or 34 ms), or whole
    // frames when the mix skipped pictures it was too late for, never
    // more of them than it reported.
    let mut missing = 0;
    for w in dts.windows(2) {
        let d = w[1] - w[0];
        let frames = ((d as f64) * 30.0 / 1000.0).round() as i64;
        let off = (d as f64 - frames as f64 * 1000.0 / 30.0).abs();
        assert!(
            frames >= 1 && off <= 1.0,
            "frame interval {d} ms at {}",
            w[0]
        );
        missing += frames as u64 - 1;
    }
    assert!(
        missing <= skipped,
        "{missing} pictures missing from the output, {skipped} skipped by the mix"
    );
    assert!(skipped < 30, "{skipped} pictures skipped");
}

#[test]
fn a_live_layout_change_from_grid_to_picture_in_picture() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    // The grid-720p encodings with a picture-in-picture layout.
    let grid = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/grid-720p.toml"
    ))
    .unwrap();
    let pip = grid
        .replace("name = \"grid-720p\"", "name = \"pip-same\"")
        .replace("mode = \"grid\"", "mode = \"pip\"");
    let (gw, _p) = gateway(&[("pip-same", pip.as_str())]);
    let origin = Origin::start();
    let (id, _) = start_mix(
        &gw,
        "flt",
        "grid-720p",
        json!({"rtmp": [origin.url("flt")]}),
    );
    let mut red = anchor(&gw, "flt", "red", "red", 440, 12);
    std::thread::sleep(Duration::from_millis(300));
    let mut blue = anchor(&gw, "flt", "blue", "blue", 880, 11);
    // Both anchors in the mix (blue's encoder may start late on a busy
    // machine), then two seconds of the grid.
    common::wait_for("both in", Duration::from_secs(10), || {
        let st = gw.relay_status(&id);
        st["frames"].as_u64().unwrap() > 60 && st["inputs"].as_array().is_some_and(|i| i.len() == 2)
    });
    std::thread::sleep(Duration::from_secs(2));
    // grid → pip with the same encodings: the layout changes live.
    let (code, _, text) = http(
        gw.http_port,
        "PATCH",
        &format!("/v1/relays/{id}"),
        Some(r#"{"profile": "pip-same"}"#),
    )
    .unwrap();
    assert_eq!(code, 204, "{text}");
    std::thread::sleep(Duration::from_secs(4));
    // floating-1080p: another canvas; the mix restarts its encoders, the
    // RTMP connection and HLS stay, time keeps moving forward.
    let (code, _, text) = http(
        gw.http_port,
        "PATCH",
        &format!("/v1/relays/{id}"),
        Some(r#"{"profile": "floating-1080p"}"#),
    )
    .unwrap();
    assert_eq!(code, 204, "{text}");
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    assert!(blue.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("mix stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });

    let rec = origin.recordings("flt");
    assert_eq!(rec.len(), 1);
    let file = rec[0].to_str().unwrap();
    // The grid with both, before the switch (blue joined a little after red).
    let grid_with_both = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
        .iter()
        .any(|&t| {
            let before = rgb_frame(file, t, 1280, 720);
            near(pixel(&before, 1280, 320, 360), RED, 40)
                && near(pixel(&before, 1280, 960, 360), BLUE, 40)
        });
    assert!(
        grid_with_both,
        "no grid picture with red left and blue right"
    );
    // pip: red full screen, blue in the bottom-right corner window (the HLS
    // segment just before the restart's discontinuity).
    let stream = gw.relay_status(&id)["stream"].as_str().unwrap().to_owned();
    let (_, _, playlist) = http(
        gw.http_port,
        "GET",
        &format!("/hls/{stream}/index.m3u8"),
        None,
    )
    .unwrap();
    let lines: Vec<&str> = playlist.lines().collect();
    let disc = lines
        .iter()
        .position(|l| *l == "#EXT-X-DISCONTINUITY")
        .expect("a discontinuity at the restart");
    let pip_segment = lines[..disc]
        .iter()
        .rfind(|l| l.ends_with(".ts"))
        .expect("a pip segment in the window");
    let pip_url = format!(
        "http://127.0.0.1:{}/hls/{stream}/{pip_segment}",
        gw.http_port
    );
    let after = rgb_frame(&pip_url, 0.0, 1280, 720);
    assert!(
        near(pixel(&after, 1280, 320, 360), RED, 40),
        "{:?}",
        pixel(&after, 1280, 320, 360)
    );
    assert!(
        near(pixel(&after, 1280, 960, 300), RED, 40),
        "{:?}",
        pixel(&after, 1280, 960, 300)
    );
    assert!(
        near(pixel(&after, 1280, 1088, 612), BLUE, 40),
        "corner {:?}",
        pixel(&after, 1280, 1088, 612)
    );
    assert_both_tones(file);
    // The last HLS segment is 1080p.
    let last = playlist.lines().rfind(|l| l.ends_with(".ts")).unwrap();
    let streams = common::media::probe_streams(&format!(
        "http://127.0.0.1:{}/hls/{stream}/{last}",
        gw.http_port
    ));
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (v["width"].as_str(), v["height"].as_str()),
        ("1920", "1080"),
        "{streams:?}"
    );
}

#[test]
fn floating_layout_main_full_screen_others_small_bottom_left() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let (gw, _p) = gateway(&[]);
    let (id, stream) = start_mix(&gw, "float", "floating-1080p", json!({}));
    let mut red = anchor(&gw, "float", "red", "red", 440, 6);
    std::thread::sleep(Duration::from_millis(300));
    let mut blue = anchor(&gw, "float", "blue", "blue", 880, 5);
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    assert!(blue.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("mix stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });
    let url = gw.hls_url(&stream);
    let pic = rgb_frame(&url, 3.0, 1920, 1080);
    assert!(
        near(pixel(&pic, 1920, 960, 400), RED, 40),
        "main {:?}",
        pixel(&pic, 1920, 960, 400)
    );
    // The first small window: from the bottom-left corner.
    assert!(
        near(pixel(&pic, 1920, 200, 900), BLUE, 40),
        "small {:?}",
        pixel(&pic, 1920, 200, 900)
    );
    assert_both_tones(&url);
    assert!(
        near(pixel(&pic, 1920, 1500, 900), RED, 40),
        "{:?}",
        pixel(&pic, 1920, 1500, 900)
    );
}

/// Onsets (seconds) where a signal first rises above `threshold` in each second.
#[test]
fn audio_and_video_of_an_anchor_stay_in_sync_through_the_mix() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let (gw, _p) = gateway(&[]);
    let (id, stream) = start_mix(&gw, "sync", "grid-720p", json!({}));
    // A white flash and a 1 kHz beep during the first 100 ms of every second.
    let mut obs = Publisher::start_lavfi(
        &gw.publish_url(APP, KEY, "sync", "clock"),
        FLASH,
        BEEP,
        10,
        &gw.dir.0,
    );
    assert!(
        obs.wait(Duration::from_secs(30)).unwrap().success(),
        "{}",
        obs.log_text()
    );
    common::wait_for("mix stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });
    let url = gw.hls_url(&stream);

    let offsets = av_offsets(&url, 6);
    let median = offsets[offsets.len() / 2];
    eprintln!("A/V offsets (audio - video, s): {offsets:?}");
    assert!(
        median.abs() <= 0.045,
        "median A/V offset {median:.3} s: {offsets:?}"
    );
}

#[test]
fn an_audio_only_mix_mixes_every_voice() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let (gw, _p) = gateway(&[]);
    let (id, stream) = start_mix(&gw, "voices", "audio-only", json!({}));
    let mut a = anchor(&gw, "voices", "red", "red", 440, 6);
    std::thread::sleep(Duration::from_millis(300));
    let mut b = anchor(&gw, "voices", "blue", "blue", 880, 5);
    assert!(a.wait(Duration::from_secs(30)).unwrap().success());
    assert!(b.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("mix stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });
    let url = gw.hls_url(&stream);
    let streams = common::media::probe_streams(&url);
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0]["codec_name"], "aac");
    assert_both_tones(&url);
}

#[test]
fn image_background_and_placeholder() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let profile = r#"
[video]
width = 640
height = 360
fps = 25
preset = "veryfast"
tune = "zerolatency"
[layout]
mode = "custom"
background_image = "green.png"
[[layout.cells]]
x = 0
y = 0
width = 320
height = 180
user_id = "red"
[[layout.cells]]
x = 320
y = 180
width = 320
height = 180
user_id = "absent"
placeholder_image = "yellow.jpg"
"#;
    let dir = TempDir::new("mix-images");
    for (file, colour) in [("green.png", "0x00ff00"), ("yellow.jpg", "0xffff00")] {
        common::media::still_image(&dir.0.join(file), colour);
    }
    std::fs::write(dir.0.join("images.toml"), profile).unwrap();
    let gw = Gateway::spawn(
        Some(&common::app_config(APP, KEY, Some(("AKID", "k")), "")),
        &[("ROOMCAST_PROFILES_DIR", dir.0.to_str().unwrap())],
    );
    gw.wait_healthy();
    let (id, stream) = start_mix(&gw, "img", "images", json!({}));
    let mut red = anchor(&gw, "img", "red", "red", 440, 4);
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("mix stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });
    let pic = rgb_frame(&gw.hls_url(&stream), 2.0, 640, 360);
    assert!(
        near(pixel(&pic, 640, 160, 90), RED, 40),
        "red cell {:?}",
        pixel(&pic, 640, 160, 90)
    );
    assert!(
        near(pixel(&pic, 640, 480, 270), (255, 255, 0), 40),
        "placeholder image {:?}",
        pixel(&pic, 640, 480, 270)
    );
    assert!(
        near(pixel(&pic, 640, 500, 60), (0, 255, 0), 40),
        "background image {:?}",
        pixel(&pic, 640, 500, 60)
    );
}

#[test]
fn a_video_only_anchor_is_shown_and_the_other_heard() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let (gw, _p) = gateway(&[]);
    let (id, stream) = start_mix(&gw, "vonly", "grid-720p", json!({}));
    let mut silent = Publisher::start_with(
        &gw.publish_url(APP, KEY, "vonly", "silent"),
        5,
        &gw.dir.0,
        &["-an"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut red = anchor(&gw, "vonly", "red", "red", 440, 5);
    assert!(
        silent.wait(Duration::from_secs(30)).unwrap().success(),
        "{}",
        silent.log_text()
    );
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("mix stopped", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "stopped"
    });
    let url = gw.hls_url(&stream);
    let pic = rgb_frame(&url, 2.5, 1280, 720);
    // The video-only anchor (a test pattern) on the left, red on the right.
    assert!(
        !near(pixel(&pic, 1280, 320, 360), (0x33, 0x33, 0x33), 10),
        "the silent anchor is drawn"
    );
    assert!(
        near(pixel(&pic, 1280, 960, 360), RED, 40),
        "{:?}",
        pixel(&pic, 1280, 960, 360)
    );
    let samples = pcm(&url);
    let tail = &samples[samples.len() / 3..];
    let (a, off) = (
        tone_power(tail, 440.0, 48_000.0),
        tone_power(tail, 660.0, 48_000.0),
    );
    assert!(a > 50.0 * off, "440 Hz {a:e} vs 660 Hz {off:e}");
}
