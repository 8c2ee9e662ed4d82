//! WebRTC end to end with aiortc (PyPI, in `.venv`) as the independent
//! peer: WHIP publishing into rooms (H.264 and VP8 with Opus), relayed to a
//! real nginx-rtmp origin and HLS, mixed beside an RTMP anchor, in sync
//! through the mixer; WHEP playback of an anchor; and the bad requests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::media::{
    BEEP, FLASH, Origin, Publisher, av_offsets, decode, near, pixel, probe_streams, rgb_frame,
};
use common::{Gateway, http_with};
use serde_json::{Value, json};

static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "webrtc-key";
const RED: (u8, u8, u8) = (255, 0, 0);
const BLUE: (u8, u8, u8) = (0, 0, 255);

fn gateway() -> Gateway {
    let gw = Gateway::start(Some(&format!(
        "[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[[api.credentials]]\nsecret_id = \"AKID\"\nsecret_key = \"k\"\n"
    )));
    gw.wait_healthy();
    gw
}

fn whip_path(room: &str, user: &str) -> String {
    format!("/v1/whip/{room}?sdkappid={APP}&userid={user}&roomtype=str")
}

fn whep_path(room: &str, anchor: &str, user: &str) -> String {
    format!("/v1/whep/{room}/{anchor}?sdkappid={APP}&userid={user}&roomtype=str")
}

/// A media file for aiortc to publish: lavfi video and audio, `secs` long.
fn media_file(dir: &Path, name: &str, video: &str, audio: &str, secs: u32) -> PathBuf {
    let path = dir.join(format!("{name}.mkv"));
    common::media::lavfi_file(&path, video, audio, secs);
    path
}

/// The aiortc peer script, run with the test venv's Python.
struct Peer {
    child: Child,
    out: PathBuf,
}

impl Peer {
    fn spawn(args: &[&str], dir: &Path) -> Peer {
        let out = dir.join(format!("peer-{}.log", common::free_port()));
        let child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/webrtc_peer.py"
            ))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .expect("the test venv (make test creates it)");
        Peer { child, out }
    }

    fn whip(gw: &Gateway, room: &str, user: &str, input: &Path, codec: &str, secs: f64) -> Peer {
        let url = format!("http://127.0.0.1:{}{}", gw.http_port, whip_path(room, user));
        Peer::spawn(
            &[
                "whip",
                &url,
                &common::usersig(APP, KEY, user),
                input.to_str().unwrap(),
                "--video",
                codec,
                "--seconds",
                &secs.to_string(),
            ],
            &gw.dir.0,
        )
    }

    fn text(&self) -> String {
        let err = std::fs::read_to_string(self.out.with_extension("err")).unwrap_or_default();
        format!(
            "{}\n{err}",
            std::fs::read_to_string(&self.out).unwrap_or_default()
        )
    }

    /// Waits for the peer to finish; its last JSON line.
    fn finish(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let text = std::fs::read_to_string(&self.out).unwrap_or_default();
                let last = text.lines().last().unwrap_or("{}");
                assert!(status.success(), "peer failed: {}", self.text());
                return serde_json::from_str(last).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "peer still running: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn saw(&self, event: &str) -> bool {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .contains(&format!("\"event\": \"{event}\""))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_stopped(gw: &Gateway, id: &str) {
    common::wait_for("task stopped", Duration::from_secs(15), || {
        gw.relay_status(id)["state"] == "stopped"
    });
}

#[test]
fn whip_h264_and_opus_reach_an_rtmp_origin_as_h264_and_aac_and_play_as_hls() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let origin = Origin::start();
    let input = media_file(
        &gw.dir.0,
        "pattern",
        "testsrc=size=320x240:rate=30",
        "sine=frequency=440:sample_rate=48000",
        12,
    );
    let (id, stream) = gw.start_relay(&json!({"sdkappid": APP, "room": "web", "roomtype": "str", "userid": "alice", "rtmp": [origin.url("web")]}),
    );
    let mut peer = Peer::whip(&gw, "web", "alice", &input, "h264", 6.0);
    common::wait_for("relay running", Duration::from_secs(20), || {
        gw.relay_status(&id)["state"] == "running"
    });
    let done = peer.finish(Duration::from_secs(40));
    assert_eq!(done["ok"], true, "{}", peer.text());
    // DELETE was a leave: the room closed and the task stopped.
    wait_stopped(&gw, &id);
    assert!(
        gw.relay_status(&id)["reason"]
            .as_str()
            .unwrap()
            .contains("room closed"),
        "{}",
        gw.relay_status(&id)
    );
    assert!(gw.wait_log(
        "transcoding the anchor's audio to AAC",
        Duration::from_secs(1)
    ));

    let rec = origin.recordings("web");
    assert_eq!(rec.len(), 1, "{rec:?}");
    let streams = probe_streams(rec[0].to_str().unwrap());
    let kinds: Vec<(&str, &str)> = streams
        .iter()
        .map(|s| (s["codec_type"].as_str(), s["codec_name"].as_str()))
        .collect();
    assert!(kinds.contains(&("video", "h264")), "{streams:?}");
    assert!(kinds.contains(&("audio", "aac")), "{streams:?}");
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!((v["width"].as_str(), v["height"].as_str()), ("320", "240"));

    let url = gw.hls_url(&stream);
    common::media::assert_plays(&url, 3.0);
    // The AAC made from the anchor's Opus runs at its own steady pace from
    // the first frame: 1024 samples at 48 kHz, 21.3 ms, every step.
    let steps = common::media::packet_steps(&url, "a:0");
    assert!(steps.len() > 100, "{steps:?}");
    assert!(
        steps.iter().all(|s| (0.020..0.023).contains(s)),
        "{steps:?}"
    );
}

#[test]
fn a_vp8_whip_anchor_is_transcoded_to_h264_in_a_passthrough_relay() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let input = media_file(
        &gw.dir.0,
        "pattern",
        "testsrc=size=320x240:rate=30",
        "sine=frequency=440:sample_rate=48000",
        12,
    );
    let (id, stream) = gw.start_relay(
        &json!({"sdkappid": APP, "room": "vp8", "roomtype": "str", "userid": "alice"}),
    );
    let mut peer = Peer::whip(&gw, "vp8", "alice", &input, "vp8", 6.0);
    common::wait_for("transcoding reported", Duration::from_secs(20), || {
        gw.relay_status(&id)["transcoding"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    });
    let st = gw.relay_status(&id);
    let mut what: Vec<&str> = st["transcoding"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    what.sort();
    assert_eq!(what, ["audio opus→aac", "video vp8→h264"], "{st}");
    assert_eq!(peer.finish(Duration::from_secs(40))["ok"], true);
    wait_stopped(&gw, &id);

    let url = gw.hls_url(&stream);
    let streams = probe_streams(&url);
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (
            v["codec_name"].as_str(),
            v["width"].as_str(),
            v["height"].as_str()
        ),
        ("h264", "320", "240")
    );
    assert!(
        streams.iter().any(|s| s["codec_name"] == "aac"),
        "{streams:?}"
    );
    common::media::assert_plays(&url, 3.0);
}

#[test]
fn a_vp8_whip_anchor_and_an_rtmp_anchor_are_mixed_side_by_side() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let input = media_file(
        &gw.dir.0,
        "blue",
        "color=c=blue:size=640x360:rate=30",
        "sine=frequency=880:sample_rate=48000",
        12,
    );
    let (id, stream) =
        gw.start_relay(&json!({"sdkappid": APP, "room": "mixed", "profile": "grid-720p"}));
    let mut red = Publisher::start_lavfi(
        &gw.publish_url(APP, KEY, "mixed", "red"),
        "color=c=red:size=640x360:rate=30",
        "sine=frequency=440:sample_rate=48000",
        10,
        &gw.dir.0,
    );
    common::wait_for("mix running", Duration::from_secs(10), || {
        gw.relay_status(&id)["state"] == "running"
    });
    let mut blue = Peer::whip(&gw, "mixed", "blue", &input, "vp8", 6.0);
    assert_eq!(blue.finish(Duration::from_secs(40))["ok"], true);
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    wait_stopped(&gw, &id);

    let url = gw.hls_url(&stream);
    // Find a picture with both anchors (the WHIP anchor joined a little later).
    let found = (2..9).map(f64::from).find(|&t| {
        let pic = rgb_frame(&url, t, 1280, 720);
        let (l, r) = (pixel(&pic, 1280, 320, 360), pixel(&pic, 1280, 960, 360));
        near(l, RED, 40) && near(r, BLUE, 40)
    });
    assert!(found.is_some(), "no picture with red left and blue right");
    let (errors, _) = decode(&url);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_whip_anchor_stays_in_sync_through_the_mix() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    // A white flash and a 1 kHz beep during the first 100 ms of every second.
    let input = media_file(&gw.dir.0, "clock", FLASH, BEEP, 12);
    let (id, stream) =
        gw.start_relay(&json!({"sdkappid": APP, "room": "sync", "profile": "grid-720p"}));
    let mut peer = Peer::whip(&gw, "sync", "clock", &input, "h264", 9.0);
    assert_eq!(peer.finish(Duration::from_secs(40))["ok"], true);
    wait_stopped(&gw, &id);

    let url = gw.hls_url(&stream);
    let offsets = av_offsets(&url, 5);
    let median = offsets[offsets.len() / 2];
    eprintln!("WHIP A/V offsets (audio - video, s): {offsets:?}");
    assert!(
        median.abs() <= 0.045,
        "median A/V offset {median:.3} s: {offsets:?}"
    );
}

#[test]
fn a_whep_viewer_receives_decodable_video_and_audio_of_an_rtmp_anchor() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let mut obs = Publisher::start(&gw.publish_url(APP, KEY, "show", "host"), 10, &gw.dir.0);
    // The anchor must be publishing before a viewer asks for it.
    common::wait_for("anchor publishing", Duration::from_secs(10), || {
        gw.wait_log("rtmp publish started", Duration::from_millis(10))
    });
    let url = format!(
        "http://127.0.0.1:{}{}",
        gw.http_port,
        whep_path("show", "host", "viewer")
    );
    let mut peer = Peer::spawn(
        &[
            "whep",
            &url,
            &common::usersig(APP, KEY, "viewer"),
            "--seconds",
            "3",
        ],
        &gw.dir.0,
    );
    let done = peer.finish(Duration::from_secs(30));
    assert_eq!(done["ok"], true, "{}", peer.text());
    assert!(peer.saw("connected"));
    // 3 s at 30 fps: most frames decoded, at the anchor's size.
    assert!(
        done["video_frames"].as_u64().unwrap() >= 45,
        "{}",
        peer.text()
    );
    assert_eq!(done["sizes"], json!([[640, 360]]));
    eprintln!("WHEP received: {done}");
    // The anchor's AAC arrives as Opus (about 50 frames a second).
    assert!(
        done["audio_frames"].as_u64().unwrap() >= 50,
        "{}",
        peer.text()
    );
    assert_eq!(done["delete_status"], 200);
    let _ = obs.wait(Duration::from_secs(20));
}

/// A valid offer from aiortc (receive-only), for requests that never connect.
fn offer(gw: &Gateway) -> String {
    let peer = Peer::spawn(&["offer", "both"], &gw.dir.0);
    let mut peer = peer;
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "offer not produced");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(&peer.out).unwrap()
}

#[test]
fn bad_whip_and_whep_requests_get_a_clear_4xx_and_allocate_nothing() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    // A receiving offer (WHEP's), and the same offer sending (WHIP's).
    let sdp = offer(&gw);
    let whip_sdp = sdp.replace("a=recvonly", "a=sendonly");
    let sig = common::usersig(APP, KEY, "mallory");
    let bearer = format!("Bearer {sig}");
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        http_with(gw.http_port, "POST", path, headers, body).unwrap()
    };
    let path = whip_path("bad", "mallory");
    let sdp_headers = [
        ("Content-Type", "application/sdp"),
        ("Authorization", bearer.as_str()),
    ];

    // Not SDP.
    let (s, _, b) = post(
        &path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        b"{}",
    );
    assert_eq!(s, 415, "{b}");
    // Malformed SDP, and an offer with no usable codec.
    let (s, _, b) = post(&path, &sdp_headers, b"hello");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("malformed SDP"), "{b}");
    let pcmu = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let (s, _, b) = post(&path, &sdp_headers, pcmu.as_bytes());
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("no usable codec"), "{b}");
    // A receiving offer at WHIP, with the reason.
    let (s, _, b) = post(&path, &sdp_headers, sdp.as_bytes());
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("use WHEP to play"), "{b}");
    // Missing and forged bearer tokens.
    let (s, _, b) = post(
        &path,
        &[("Content-Type", "application/sdp")],
        whip_sdp.as_bytes(),
    );
    assert_eq!(s, 401, "{b}");
    // Signed with another key: what a forger without the app key can make.
    let out = Command::new(common::BIN)
        .args([
            "usersig",
            "gen",
            "--sdkappid",
            &APP.to_string(),
            "--key",
            "not-the-key",
        ])
        .args(["--userid", "mallory"])
        .output()
        .unwrap();
    let forged = format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim());
    let (s, _, b) = post(
        &path,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &forged),
        ],
        whip_sdp.as_bytes(),
    );
    assert_eq!(s, 401, "{b}");
    // Someone else's UserSig.
    let other = format!("Bearer {}", common::usersig(APP, KEY, "alice"));
    let (s, _, _) = post(
        &path,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &other),
        ],
        whip_sdp.as_bytes(),
    );
    assert_eq!(s, 401);
    // Bad ids.
    let (s, _, _) = post(
        "/v1/whip/bad?sdkappid=x&userid=mallory",
        &sdp_headers,
        whip_sdp.as_bytes(),
    );
    assert_eq!(s, 400);
    let (s, _, _) = post(
        "/v1/whip/0?sdkappid=1400000000&userid=mallory&roomtype=int",
        &sdp_headers,
        whip_sdp.as_bytes(),
    );
    assert_eq!(s, 400);
    // Oversized body.
    let big = vec![b'a'; 200 * 1024];
    let (s, _, _) = post(&path, &sdp_headers, &big);
    assert_eq!(s, 413);
    // WHEP of someone not publishing.
    let (s, _, b) = post(
        &whep_path("bad", "nobody", "mallory"),
        &sdp_headers,
        sdp.as_bytes(),
    );
    assert_eq!(s, 404, "{b}");
    // Unknown sessions; PATCH (trickle) is 405 on a real one only.
    let (s, _, _) = http_with(gw.http_port, "DELETE", "/v1/sessions/nope", &[], b"").unwrap();
    assert_eq!(s, 404);
    let (s, _, _) = http_with(gw.http_port, "PATCH", "/v1/sessions/nope", &[], b"").unwrap();
    assert_eq!(s, 404);
    // CORS preflight for a browser page.
    let (s, h, _) = http_with(
        gw.http_port,
        "OPTIONS",
        &path,
        &[("Origin", "http://page")],
        b"",
    )
    .unwrap();
    assert_eq!(s, 204);
    let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("access-control-allow-origin").as_deref(), Some("*"));
    assert!(
        get("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        get("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    assert_eq!(get("accept-post").as_deref(), Some("application/sdp"));
    // Nothing was allocated: no session, nobody entered the room.
    assert!(!gw.log_text().contains("whip publish started"));

    // A real (never connected) session: PATCH 405, then too many sessions per user.
    let mut obs = Publisher::start(&gw.publish_url(APP, KEY, "bad", "host"), 30, &gw.dir.0);
    common::wait_for("anchor publishing", Duration::from_secs(10), || {
        gw.wait_log("rtmp publish started", Duration::from_millis(10))
    });
    let whep = whep_path("bad", "host", "mallory");
    let mut locations = Vec::new();
    for _ in 0..4 {
        let (s, h, b) = post(&whep, &sdp_headers, sdp.as_bytes());
        assert_eq!(s, 201, "{b}");
        assert!(b.starts_with("v=0"), "{b}");
        let loc = h.iter().find(|(n, _)| n == "location").unwrap().1.clone();
        assert!(loc.starts_with("/v1/sessions/"), "{loc}");
        locations.push(loc);
    }
    let (s, _, b) = post(&whep, &sdp_headers, sdp.as_bytes());
    assert_eq!(s, 429, "{b}");
    let (s, h, _) = http_with(gw.http_port, "PATCH", &locations[0], &[], b"").unwrap();
    assert_eq!(s, 405);
    assert!(h.iter().any(|(n, _)| n == "allow"));
    for loc in &locations {
        let (s, _, _) = http_with(gw.http_port, "DELETE", loc, &[], b"").unwrap();
        assert_eq!(s, 200);
    }
    // Sessions are gone once their tasks wind up.
    common::wait_for("sessions closed", Duration::from_secs(10), || {
        http_with(gw.http_port, "DELETE", &locations[3], &[], b"")
            .unwrap()
            .0
            == 404
    });
    let _ = obs.child.kill();
}
