//! The TRTC server API driven by Tencent's official Python SDK
//! (`tencentcloud-sdk-python-trtc`, installed in `.venv` by `make test`).
// These tests run outside the gateway, where tokio's timers are fine (the
// crate's own code makes timers through `ticks`: see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::media::{Origin, Publisher, decode};
use common::{Gateway, http};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "api-test-key";
const SECRET_ID: &str = "AKIDroomcastTEST";
const SECRET_KEY: &str = "roomcastTESTsecret";

/// One SDK call: `{"ok": true, "response": …}` or `{"ok": false, "code": …}`.
fn sdk_with(
    gw: &Gateway,
    id: &str,
    key: &str,
    action: &str,
    params: Value,
    extra: &[&str],
) -> Value {
    common::trtc_sdk(gw.http_port, (id, key), action, &params, extra)
}

/// A gateway with the test application and its API credential.
fn gateway() -> Gateway {
    Gateway::for_app(APP, KEY, (SECRET_ID, SECRET_KEY))
}

fn sdk(gw: &Gateway, action: &str, params: Value) -> Value {
    sdk_with(gw, SECRET_ID, SECRET_KEY, action, params, &[])
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("OK")
}

#[test]
fn refusals_carry_the_codes_the_sdk_raises() {
    let gw = gateway();
    let dismiss = json!({"SdkAppId": APP, "RoomId": 1234});
    let wrong_key = sdk_with(&gw, SECRET_ID, "wrong", "DismissRoom", dismiss.clone(), &[]);
    assert_eq!(
        code(&wrong_key),
        "AuthFailure.SignatureFailure",
        "{wrong_key}"
    );
    assert!(
        wrong_key["request_id"]
            .as_str()
            .is_some_and(|r| r.len() == 36)
    );
    let stale = sdk_with(
        &gw,
        SECRET_ID,
        SECRET_KEY,
        "DismissRoom",
        dismiss.clone(),
        &["--skew", "-3600"],
    );
    assert_eq!(code(&stale), "AuthFailure.SignatureExpire", "{stale}");
    let unknown_id = sdk_with(
        &gw,
        "AKIDnobody",
        SECRET_KEY,
        "DismissRoom",
        dismiss.clone(),
        &[],
    );
    assert_eq!(
        code(&unknown_id),
        "AuthFailure.SecretIdNotFound",
        "{unknown_id}"
    );
    let unknown_action = sdk_with(
        &gw,
        SECRET_ID,
        SECRET_KEY,
        "DescribeNothing",
        json!({}),
        &["--raw"],
    );
    assert_eq!(code(&unknown_action), "InvalidAction", "{unknown_action}");
    for (action, params, want) in [
        (
            "DismissRoom",
            json!({"SdkAppId": APP, "RoomId": 1234}),
            "FailedOperation.RoomNotExist",
        ),
        (
            "DismissRoom",
            json!({"SdkAppId": 42, "RoomId": 1234}),
            "InvalidParameter.SdkAppId",
        ),
        (
            "DismissRoom",
            json!({"SdkAppId": APP, "RoomId": 0}),
            "InvalidParameter.RoomId",
        ),
        (
            "DismissRoom",
            json!({"SdkAppId": APP}),
            "MissingParameter.RoomId",
        ),
        (
            "DismissRoomByStrRoomId",
            json!({"SdkAppId": APP, "RoomId": "a*b"}),
            "InvalidParameter.RoomId",
        ),
        (
            "RemoveUser",
            json!({"SdkAppId": APP, "RoomId": 1234, "UserIds": []}),
            "InvalidParameter.UserIds",
        ),
        (
            "RemoveUserByStrRoomId",
            json!({"SdkAppId": APP, "RoomId": "r", "UserIds": ["a"]}),
            "FailedOperation.RoomNotExist",
        ),
        (
            "StopPublishCdnStream",
            json!({"SdkAppId": APP, "TaskId": "relay-nope"}),
            "FailedOperation.TaskNotExist",
        ),
        (
            "UpdatePublishCdnStream",
            json!({"SdkAppId": APP, "TaskId": "relay-nope", "SequenceNumber": 1}),
            "FailedOperation.TaskNotExist",
        ),
        (
            "CreateCloudRecording",
            json!({"SdkAppId": APP, "RoomId": "r", "RoomIdType": 0, "UserId": "u", "UserSig": "s", "RecordParams": {"RecordMode": 1}, "StorageParams": {}}),
            "InvalidParameter.UserSig",
        ),
        (
            "StartPublishCdnStream",
            json!({"SdkAppId": APP, "RoomId": "1", "RoomIdType": 0, "AgentParams": {"UserId": "bot"}, "WithTranscoding": 1, "PublishCdnParams": [{"PublishCdnUrl": "rtmp://127.0.0.1/live/x"}]}),
            "MissingParameter",
        ),
        (
            "StartPublishCdnStream",
            json!({"SdkAppId": APP, "RoomId": "1", "RoomIdType": 0, "AgentParams": {"UserId": "bot"}, "WithTranscoding": 1, "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}}, "VideoParams": {"VideoEncode": {"Width": 1280, "Height": 720, "Fps": 15, "BitRate": 1500, "Gop": 2}, "BackgroundImageUrl": "http://127.0.0.1:9/bg.png"}, "PublishCdnParams": [{"PublishCdnUrl": "rtmp://127.0.0.1/live/x"}]}),
            "InvalidParameter",
        ),
        (
            "StartPublishCdnStream",
            json!({"SdkAppId": APP, "RoomId": "1", "RoomIdType": 0, "AgentParams": {"UserId": "bot"}, "WithTranscoding": 1, "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}}, "VideoParams": {"VideoEncode": {"Width": 1280, "Height": 720, "Fps": 15, "BitRate": 1500, "Gop": 2}, "LayoutParams": {"MixLayoutMode": 4, "MixLayoutList": [{"ImageWidth": 2000, "ImageHeight": 100}]}}, "PublishCdnParams": [{"PublishCdnUrl": "rtmp://127.0.0.1/live/x"}]}),
            "InvalidParameter",
        ),
        (
            "StartPublishCdnStream",
            json!({"SdkAppId": APP, "RoomId": "1", "RoomIdType": 0, "AgentParams": {"UserId": "bot", "MaxIdleTime": 1}, "WithTranscoding": 0}),
            "InvalidParameter",
        ),
        (
            "StartPublishCdnStream",
            json!({"SdkAppId": APP, "RoomId": "1", "RoomIdType": 0, "AgentParams": {"UserId": "bot"}, "WithTranscoding": 0, "SingleSubscribeParams": {"UserMediaStream": {"UserInfo": {"UserId": "a"}}}}),
            "MissingParameter",
        ),
    ] {
        let got = sdk(&gw, action, params.clone());
        assert_eq!(code(&got), want, "{action} {params}: {got}");
    }
}

#[test]
fn envelope_is_exact_and_bodies_are_bounded() {
    let gw = gateway();
    let big = "x".repeat(2 << 20);
    let (status, headers, body) = http(gw.http_port, "POST", "/", Some(&big)).unwrap();
    assert_eq!(status, 200);
    assert!(
        headers.contains(&("content-type".into(), "application/json".into())),
        "{headers:?}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["Response"]["Error"]["Code"], "RequestSizeLimitExceeded",
        "{v}"
    );
    let (_, _, body) = http(gw.http_port, "POST", "/", Some("{}")).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["Response"]["Error"]["Code"], "AuthFailure.InvalidAuthorization",
        "{v}"
    );
}

async fn ws(
    gw: &Gateway,
    room: &str,
    user: &str,
    extra: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let sig = common::usersig(APP, KEY, user);
    let url = format!(
        "ws://127.0.0.1:{}/v1/rooms/{room}/ws?sdkappid={APP}&userid={user}&usersig={sig}{extra}",
        gw.http_port
    );
    let (mut s, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(matches!(
        next(&mut s).await["type"].as_str(),
        Some("welcome")
    ));
    s
}

async fn next(
    s: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dismiss_and_remove_reach_the_room_engine() {
    let gw = gateway();
    let mut a = ws(&gw, "1234", "alice", "").await;
    let mut b = ws(&gw, "1234", "bob", "").await;
    assert_eq!(next(&mut a).await["type"], "user_entered");
    let r = tokio::task::block_in_place(|| {
        sdk(
            &gw,
            "RemoveUser",
            json!({"SdkAppId": APP, "RoomId": 1234, "UserIds": ["bob"]}),
        )
    });
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        next(&mut b).await,
        json!({"type": "kicked", "reason": "removed"})
    );
    assert_eq!(
        next(&mut a).await,
        json!({"type": "user_exited", "userid": "bob", "reason": "removed"})
    );
    let r = tokio::task::block_in_place(|| {
        sdk(&gw, "DismissRoom", json!({"SdkAppId": APP, "RoomId": 1234}))
    });
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        next(&mut a).await,
        json!({"type": "kicked", "reason": "room_dismissed"})
    );

    // The string-room twins, and the SDK's GET variant.
    let mut c = ws(&gw, "1234", "carol", "&roomtype=str").await;
    let mut d = ws(&gw, "1234", "dave", "&roomtype=str").await;
    let r = tokio::task::block_in_place(|| {
        sdk_with(
            &gw,
            SECRET_ID,
            SECRET_KEY,
            "RemoveUserByStrRoomId",
            json!({"SdkAppId": APP, "RoomId": "1234", "UserIds": ["dave"]}),
            &["--get"],
        )
    });
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(next(&mut d).await["reason"], "removed");
    assert_eq!(next(&mut c).await["type"], "user_entered");
    assert_eq!(next(&mut c).await["type"], "user_exited");
    let r = tokio::task::block_in_place(|| {
        sdk(
            &gw,
            "DismissRoomByStrRoomId",
            json!({"SdkAppId": APP, "RoomId": "1234"}),
        )
    });
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(next(&mut c).await["reason"], "room_dismissed");
}

#[test]
fn bypass_relay_started_updated_and_stopped_by_the_sdk() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let origin = Origin::start();
    let start = json!({
        "SdkAppId": APP, "RoomId": "live-1", "RoomIdType": 1,
        "AgentParams": {"UserId": "relay_robot", "MaxIdleTime": 30},
        "WithTranscoding": 0,
        "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}},
        "SingleSubscribeParams": {"UserMediaStream": {"UserInfo": {"UserId": "host", "RoomId": "live-1", "RoomIdType": 1}}},
        "PublishCdnParams": [{"PublishCdnUrl": origin.url("sdk1"), "IsTencentCdn": 0}],
    });
    let r = sdk(&gw, "StartPublishCdnStream", start);
    assert_eq!(r["ok"], true, "{r}");
    let task_id = r["response"]["TaskId"].as_str().unwrap().to_owned();

    let url = gw.publish_url(APP, KEY, "live-1", "host");
    let mut obs = Publisher::start(&url, 14, &gw.dir.0);
    common::wait_for("first target", Duration::from_secs(10), || {
        !origin.recordings("sdk1").is_empty()
    });

    let update = |seq: u64, urls: &[String]| {
        let targets: Vec<Value> = urls
            .iter()
            .map(|u| json!({"PublishCdnUrl": u, "IsTencentCdn": 0}))
            .collect();
        sdk(
            &gw,
            "UpdatePublishCdnStream",
            json!({"SdkAppId": APP, "TaskId": task_id, "SequenceNumber": seq, "PublishCdnParams": targets}),
        )
    };
    let r = update(1, &[origin.url("sdk1"), origin.url("sdk2")]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["response"]["TaskId"], task_id.as_str());
    common::wait_for("second target", Duration::from_secs(10), || {
        !origin.recordings("sdk2").is_empty()
    });
    let stale = update(1, &[origin.url("sdk1")]);
    assert_eq!(code(&stale), "FailedOperation.RequestOutdated", "{stale}");
    std::thread::sleep(Duration::from_secs(3));

    let r = sdk(
        &gw,
        "StopPublishCdnStream",
        json!({"SdkAppId": APP, "TaskId": task_id}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let after = update(2, &[origin.url("sdk1")]);
    assert_eq!(code(&after), "FailedOperation.TaskFinished", "{after}");
    assert!(obs.wait(Duration::from_secs(30)).unwrap().success());

    assert_eq!(
        origin.recordings("sdk1").len(),
        1,
        "the first target stayed connected through the update"
    );
    for name in ["sdk1", "sdk2"] {
        let rec = &origin.recordings(name)[0];
        let (errors, duration) = decode(rec.to_str().unwrap());
        assert!(errors.is_empty(), "{name}: {errors:?}");
        assert!(duration > 2.0, "{name}: {duration}");
        let streams = common::media::probe_streams(rec.to_str().unwrap());
        let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
        assert_eq!(
            audio["sample_rate"], "48000",
            "AudioEncode applied: {streams:?}"
        );
    }
}

#[test]
fn a_mix_started_updated_and_stopped_by_the_sdk() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let origin = Origin::start();
    let anchor =
        |user: &str| json!({"UserInfo": {"UserId": user, "RoomId": "1234", "RoomIdType": 0}});
    // The shape of Tencent's own example: a custom two-cell layout, an audio
    // allowlist with a SoundLevel, a text watermark and SEI (accepted).
    let start = json!({
        "SdkAppId": APP, "RoomId": "1234", "RoomIdType": 0,
        "AgentParams": {"UserId": "mcu_robot_1234", "MaxIdleTime": 30},
        "WithTranscoding": 1,
        "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64, "Codec": 0},
                        "SubscribeAudioList": [anchor("red"), {"UserInfo": anchor("blue")["UserInfo"], "SoundLevel": 80}]},
        "VideoParams": {"VideoEncode": {"Width": 1280, "Height": 720, "Fps": 15, "BitRate": 1500, "Gop": 2},
                        "LayoutParams": {"MixLayoutMode": 4, "PureAudioHoldPlaceMode": 0, "MixLayoutList": [
                            {"UserMediaStream": {"UserInfo": anchor("red")["UserInfo"], "StreamType": 0}, "ImageWidth": 640, "ImageHeight": 720, "LocationX": 0, "LocationY": 0, "ZOrder": 1, "RenderMode": 0},
                            {"UserMediaStream": {"UserInfo": anchor("blue")["UserInfo"], "StreamType": 0}, "ImageWidth": 640, "ImageHeight": 720, "LocationX": 640, "LocationY": 0, "ZOrder": 1, "RenderMode": 0}]},
                        "BackGroundColor": "0x000000",
                        "WaterMarkList": [{"WaterMarkType": 1, "WaterMarkText": {"Text": "LIVE", "WaterMarkWidth": 200, "WaterMarkHeight": 40, "LocationX": 1060, "LocationY": 20, "FontSize": 24, "FontColor": "0xFFFFFF", "BackGroundColor": "0x000000"}}]},
        "PublishCdnParams": [{"PublishCdnUrl": origin.url("mix1234"), "IsTencentCdn": 0}],
        "SeiParams": {"LayoutVolume": {"AppData": "{}", "PayloadType": 100, "Interval": 1000, "FollowIdr": 1}},
    });
    let r = sdk(&gw, "StartPublishCdnStream", start);
    assert_eq!(r["ok"], true, "{r}");
    let task_id = r["response"]["TaskId"].as_str().unwrap().to_owned();

    let url = |user: &str| format!("{}&roomtype=int", gw.publish_url(APP, KEY, "1234", user));
    let mut red = Publisher::start_lavfi(
        &url("red"),
        "color=c=red:size=640x360:rate=30",
        "sine=frequency=440:sample_rate=48000",
        12,
        &gw.dir.0,
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut blue = Publisher::start_lavfi(
        &url("blue"),
        "color=c=blue:size=640x360:rate=30",
        "sine=frequency=880:sample_rate=48000",
        11,
        &gw.dir.0,
    );
    common::wait_for("mix at the origin", Duration::from_secs(10), || {
        !origin.recordings("mix1234").is_empty()
    });
    std::thread::sleep(Duration::from_secs(4));

    // Floating with blue as the big picture; only blue is heard.
    let update = json!({
        "SdkAppId": APP, "TaskId": task_id, "SequenceNumber": 1, "WithTranscoding": 1,
        "AudioParams": {"SubscribeAudioList": [anchor("blue")]},
        "VideoParams": {"LayoutParams": {"MixLayoutMode": 1, "MaxVideoUser": {"UserMediaStream": anchor("blue")}}},
    });
    let r = sdk(&gw, "UpdatePublishCdnStream", update);
    assert_eq!(r["ok"], true, "{r}");
    std::thread::sleep(Duration::from_secs(4));
    // A new video size: the mix restarts inside the task, same connection.
    let resize = json!({
        "SdkAppId": APP, "TaskId": task_id, "SequenceNumber": 2, "WithTranscoding": 1,
        "VideoParams": {"VideoEncode": {"Width": 640, "Height": 360, "Fps": 15, "BitRate": 800, "Gop": 2},
                        "LayoutParams": {"MixLayoutMode": 1, "MaxVideoUser": {"UserMediaStream": anchor("blue")}}},
    });
    let r = sdk(&gw, "UpdatePublishCdnStream", resize);
    assert_eq!(r["ok"], true, "{r}");
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    assert!(blue.wait(Duration::from_secs(30)).unwrap().success());
    let r = sdk(
        &gw,
        "StopPublishCdnStream",
        json!({"SdkAppId": APP, "TaskId": task_id}),
    );
    assert_eq!(r["ok"], true, "{r}");

    let rec = origin.recordings("mix1234");
    assert_eq!(rec.len(), 1, "one connection through the update");
    let file = rec[0].to_str().unwrap();
    let streams = common::media::probe_streams(file);
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (
            v["width"].as_str(),
            v["height"].as_str(),
            v["r_frame_rate"].as_str()
        ),
        ("1280", "720", "15/1")
    );
    let before = common::media::rgb_frame(file, 2.0, 1280, 720);
    assert!(common::media::near(
        common::media::pixel(&before, 1280, 320, 360),
        (255, 0, 0),
        40
    ));
    assert!(common::media::near(
        common::media::pixel(&before, 1280, 960, 360),
        (0, 0, 255),
        40
    ));
    let after = common::media::rgb_frame(file, 7.0, 1280, 720);
    assert!(
        common::media::near(
            common::media::pixel(&after, 1280, 960, 300),
            (0, 0, 255),
            40
        ),
        "blue is the big picture"
    );
    assert!(
        common::media::near(
            common::media::pixel(&after, 1280, 120, 620),
            (255, 0, 0),
            40
        ),
        "red small, bottom-left"
    );
    // After the resize, HLS carries 640x360.
    let (_, _, playlist) = http(gw.http_port, "GET", "/hls/mix1234/index.m3u8", None).unwrap();
    let last = playlist.lines().rfind(|l| l.ends_with(".ts")).unwrap();
    let streams = common::media::probe_streams(&format!(
        "http://127.0.0.1:{}/hls/mix1234/{last}",
        gw.http_port
    ));
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (v["width"].as_str(), v["height"].as_str()),
        ("640", "360"),
        "{streams:?}"
    );
    // The end is blue's voice only.
    let samples = common::media::pcm(file);
    let tail = &samples[samples.len() - 48_000..];
    let (red_tone, blue_tone) = (
        common::media::tone_power(tail, 440.0, 48_000.0),
        common::media::tone_power(tail, 880.0, 48_000.0),
    );
    assert!(
        blue_tone > 100.0 * red_tone,
        "440 Hz {red_tone:e} vs 880 Hz {blue_tone:e}"
    );
}

/// A 4 s MP4 (test pattern, 440 Hz) in `dir`.
fn clip(dir: &std::path::Path) {
    common::media::lavfi_file(
        &dir.join("clip.mp4"),
        "testsrc=size=320x240:rate=30",
        "sine=frequency=440:sample_rate=48000",
        4,
    );
}

fn start_relay(gw: &Gateway, room: &str, user: &str) -> (String, String) {
    let body = json!({"sdkappid": APP, "room": room, "roomtype": "str", "userid": user});
    let (status, _, text) =
        http(gw.http_port, "POST", "/v1/relays", Some(&body.to_string())).unwrap();
    assert_eq!(status, 201, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    (
        v["task_id"].as_str().unwrap().to_owned(),
        v["stream"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn stream_ingest_pulls_an_mp4_into_the_room_where_a_relay_sees_it() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    clip(&gw.dir.0);
    let files = common::FileServer::start(&gw.dir.0);
    let (relay, stream) = start_relay(&gw, "cinema", "robot");
    let started = sdk(
        &gw,
        "StartStreamIngest",
        json!({"SdkAppId": APP, "RoomId": "cinema", "RoomIdType": 0, "UserId": "robot",
               "UserSig": common::usersig(APP, KEY, "robot"), "StreamUrl": files.url("clip.mp4"), "RepeatNum": 2}),
    );
    assert_eq!(started["ok"], true, "{started}");
    let task = started["response"]["TaskId"].as_str().unwrap().to_owned();
    let describe = || {
        sdk(
            &gw,
            "DescribeStreamIngest",
            json!({"SdkAppId": APP, "TaskId": task}),
        )
    };
    assert_eq!(describe()["response"]["Status"], "InProgress");
    common::wait_for("relay running", Duration::from_secs(10), || {
        gw.relay_status(&relay)["state"] == "running"
    });
    // Two plays of 4 s, then the robot leaves and the room closes.
    common::wait_for("relay stopped", Duration::from_secs(30), || {
        gw.relay_status(&relay)["state"] == "stopped"
    });
    assert!(gw.wait_log(
        "stream ingest ended: played 2 time(s)",
        Duration::from_secs(2)
    ));
    assert_eq!(describe()["response"]["Status"], "NotExist");
    let stop = sdk(
        &gw,
        "StopStreamIngest",
        json!({"SdkAppId": APP, "TaskId": task}),
    );
    assert_eq!(code(&stop), "FailedOperation.TaskFinished", "{stop}");

    let url = format!("http://127.0.0.1:{}/hls/{stream}/index.m3u8", gw.http_port);
    let streams = common::media::probe_streams(&url);
    assert!(
        streams
            .iter()
            .any(|s| s["codec_name"] == "h264" && s["width"] == "320"),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s["codec_name"] == "aac"),
        "{streams:?}"
    );
    let (errors, secs) = decode(&url);
    assert!(errors.is_empty(), "{errors:?}");
    assert!((7.0..9.0).contains(&secs), "two plays of 4 s, got {secs} s");
}

#[test]
fn a_looping_ingest_stops_on_request_and_bad_ingests_are_refused() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    clip(&gw.dir.0);
    let files = common::FileServer::start(&gw.dir.0);
    let base = json!({"SdkAppId": APP, "RoomId": "loop", "RoomIdType": 0, "UserId": "robot",
                      "UserSig": common::usersig(APP, KEY, "robot"), "StreamUrl": files.url("clip.mp4")});
    let with = |k: &str, v: Value| {
        let mut p = base.clone();
        p[k] = v;
        p
    };
    for (params, want) in [
        (
            with("StreamUrl", json!("file:///etc/passwd")),
            "InvalidParameter.StreamUrl",
        ),
        (
            with("StreamUrl", json!("not a url")),
            "InvalidParameter.StreamUrl",
        ),
        (
            with("UserSig", json!(common::usersig(APP, KEY, "someone-else"))),
            "InvalidParameter.UserSig",
        ),
        (with("RepeatNum", json!(0)), "InvalidParameter"),
        (with("MaxDuration", json!(20_000)), "InvalidParameter"),
        (with("RoomIdType", json!(1)), "InvalidParameter.RoomId"),
        (with("Volume", json!(50)), "UnsupportedOperation"),
        (with("Tempo", json!(1.5)), "UnsupportedOperation"),
    ] {
        let r = sdk(&gw, "StartStreamIngest", params.clone());
        assert_eq!(code(&r), want, "{params}: {r}");
    }
    // Nobody entered the room for those.
    assert!(!gw.log_text().contains("stream ingest started"));

    let (relay, _) = start_relay(&gw, "loop", "robot");
    let started = sdk(&gw, "StartStreamIngest", with("RepeatNum", json!(-1)));
    assert_eq!(started["ok"], true, "{started}");
    let task = started["response"]["TaskId"].as_str().unwrap().to_owned();
    let again = sdk(&gw, "StartStreamIngest", with("RepeatNum", json!(-1)));
    assert_eq!(code(&again), "FailedOperation.TaskExist", "{again}");
    common::wait_for("relay running", Duration::from_secs(10), || {
        gw.relay_status(&relay)["state"] == "running"
    });
    // Past the end of the first play: still going.
    common::wait_for("a second play", Duration::from_secs(10), || {
        gw.relay_status(&relay)["frames"].as_u64().unwrap_or(0) > 200
    });
    assert_eq!(gw.relay_status(&relay)["state"], "running");
    let stop = sdk(
        &gw,
        "StopStreamIngest",
        json!({"SdkAppId": APP, "TaskId": task}),
    );
    assert_eq!(stop["ok"], true, "{stop}");
    common::wait_for("relay stopped", Duration::from_secs(10), || {
        gw.relay_status(&relay)["state"] == "stopped"
    });
    assert!(gw.wait_log(
        "stream ingest ended: stopped by request",
        Duration::from_secs(2)
    ));

    // A URL that cannot be read: the task starts, fails, and the robot leaves.
    let dead = sdk(
        &gw,
        "StartStreamIngest",
        with("StreamUrl", json!(files.url("missing.mp4"))),
    );
    assert_eq!(dead["ok"], true, "{dead}");
    let task = dead["response"]["TaskId"].as_str().unwrap().to_owned();
    common::wait_for("dead task gone", Duration::from_secs(15), || {
        sdk(
            &gw,
            "DescribeStreamIngest",
            json!({"SdkAppId": APP, "TaskId": task}),
        )["response"]["Status"]
            == "NotExist"
    });
    assert!(gw.wait_log("cannot open", Duration::from_secs(2)));
}

#[test]
fn an_rtmp_stream_pulled_from_an_origin_is_mixed_beside_an_anchor() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let origin = Origin::start();
    // Somebody else's live stream, on a real nginx-rtmp origin.
    let mut live = Publisher::start_lavfi(
        &origin.url("live-red"),
        "color=c=red:size=640x360:rate=30",
        "sine=frequency=440:sample_rate=48000",
        14,
        &gw.dir.0,
    );
    let body =
        json!({"sdkappid": APP, "room": "studio", "roomtype": "str", "profile": "grid-720p"});
    let (status, _, text) =
        http(gw.http_port, "POST", "/v1/relays", Some(&body.to_string())).unwrap();
    assert_eq!(status, 201, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let (relay, stream) = (
        v["task_id"].as_str().unwrap().to_owned(),
        v["stream"].as_str().unwrap().to_owned(),
    );
    let mut blue = Publisher::start_lavfi(
        &gw.publish_url(APP, KEY, "studio", "host"),
        "color=c=blue:size=640x360:rate=30",
        "sine=frequency=880:sample_rate=48000",
        8,
        &gw.dir.0,
    );
    common::wait_for("mix running", Duration::from_secs(10), || {
        gw.relay_status(&relay)["state"] == "running"
    });
    let started = sdk(
        &gw,
        "StartStreamIngest",
        json!({"SdkAppId": APP, "RoomId": "studio", "RoomIdType": 0, "UserId": "guest",
               "UserSig": common::usersig(APP, KEY, "guest"), "StreamUrl": origin.url("live-red"), "RepeatNum": 1}),
    );
    assert_eq!(started["ok"], true, "{started}");
    let task = started["response"]["TaskId"].as_str().unwrap().to_owned();
    assert!(blue.wait(Duration::from_secs(30)).unwrap().success());
    let stop = sdk(
        &gw,
        "StopStreamIngest",
        json!({"SdkAppId": APP, "TaskId": task}),
    );
    assert_eq!(stop["ok"], true, "{stop}");
    common::wait_for("mix stopped", Duration::from_secs(15), || {
        gw.relay_status(&relay)["state"] == "stopped"
    });
    let _ = live.child.kill();

    let url = format!("http://127.0.0.1:{}/hls/{stream}/index.m3u8", gw.http_port);
    let found = (1..8).map(f64::from).find(|&t| {
        let pic = common::media::rgb_frame(&url, t, 1280, 720);
        let (l, r) = (
            common::media::pixel(&pic, 1280, 320, 360),
            common::media::pixel(&pic, 1280, 960, 360),
        );
        common::media::near(l, (0, 0, 255), 40) && common::media::near(r, (255, 0, 0), 40)
    });
    assert!(
        found.is_some(),
        "no picture with the anchor left and the pulled stream right"
    );
}

fn storage() -> Value {
    json!({"CloudStorage": {"Vendor": 0, "Region": "ap-guangzhou", "Bucket": "b-1250000000",
                            "AccessKey": "ak", "SecretKey": "sk"}})
}

fn recording_dir(gw: &Gateway, task: &str) -> std::path::PathBuf {
    gw.dir.0.join("data").join("recordings").join(task)
}

#[test]
fn a_mixed_cloud_recording_is_written_to_disk_and_listed() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let created = sdk(
        &gw,
        "CreateCloudRecording",
        json!({"SdkAppId": APP, "RoomId": "lesson", "RoomIdType": 0, "UserId": "recorder",
               "UserSig": common::usersig(APP, KEY, "recorder"), "StorageParams": storage(),
               "RecordParams": {"RecordMode": 2, "OutputFormat": 1, "MaxIdleTime": 5},
               "MixTranscodeParams": {"VideoParams": {"Width": 640, "Height": 360, "Fps": 15,
                                                      "BitRate": 800000, "Gop": 2}},
               "MixLayoutParams": {"MixLayoutMode": 3, "BackGroundColor": "#000000"}}),
    );
    assert_eq!(created["ok"], true, "{created}");
    let task = created["response"]["TaskId"].as_str().unwrap().to_owned();
    let describe = || {
        sdk(
            &gw,
            "DescribeCloudRecording",
            json!({"SdkAppId": APP, "TaskId": task}),
        )
    };
    assert_eq!(describe()["response"]["Status"], "Idle");
    let mut red = Publisher::start_lavfi(
        &gw.publish_url(APP, KEY, "lesson", "red"),
        "color=c=red:size=640x360:rate=30",
        "sine=frequency=440:sample_rate=48000",
        8,
        &gw.dir.0,
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut blue = Publisher::start_lavfi(
        &gw.publish_url(APP, KEY, "lesson", "blue"),
        "color=c=blue:size=640x360:rate=30",
        "sine=frequency=880:sample_rate=48000",
        8,
        &gw.dir.0,
    );
    common::wait_for("recording in progress", Duration::from_secs(15), || {
        describe()["response"]["Status"] == "InProgress"
    });
    let modified = sdk(
        &gw,
        "ModifyCloudRecording",
        json!({"SdkAppId": APP, "TaskId": task, "MixLayoutParams": {"MixLayoutMode": 3}}),
    );
    assert_eq!(modified["ok"], true, "{modified}");
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    assert!(blue.wait(Duration::from_secs(30)).unwrap().success());
    // The anchors left: the room closed and the recording ended by itself.
    common::wait_for("recording exited", Duration::from_secs(20), || {
        describe()["response"]["Status"] == "Exited"
    });
    let d = describe();
    let files: Vec<&str> = d["response"]["StorageFileList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FileName"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"mix_0.mp4"), "{d}");
    assert!(files.contains(&"mix_hls/index.m3u8"), "{d}");
    let dir = recording_dir(&gw, &task);
    let mp4 = dir.join("mix_0.mp4");
    let mp4 = mp4.to_str().unwrap();
    let streams = common::media::probe_streams(mp4);
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!((v["width"].as_str(), v["height"].as_str()), ("640", "360"));
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"));
    let (errors, secs) = decode(mp4);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(secs > 5.0, "{secs} s recorded");
    let pic = common::media::rgb_frame(mp4, 4.0, 640, 360);
    assert!(common::media::near(
        common::media::pixel(&pic, 640, 160, 180),
        (255, 0, 0),
        40
    ));
    assert!(common::media::near(
        common::media::pixel(&pic, 640, 480, 180),
        (0, 0, 255),
        40
    ));
    let (errors, _) = decode(dir.join("mix_hls/index.m3u8").to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    let gone = sdk(
        &gw,
        "DeleteCloudRecording",
        json!({"SdkAppId": APP, "TaskId": task}),
    );
    assert_eq!(code(&gone), "ResourceNotFound", "{gone}");
}

#[test]
fn single_stream_recordings_follow_the_subscription_and_refuse_bad_requests() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let base = json!({"SdkAppId": APP, "RoomId": "1234", "RoomIdType": 1, "UserId": "recorder",
                      "UserSig": common::usersig(APP, KEY, "recorder"), "StorageParams": storage(),
                      "RecordParams": {"RecordMode": 1, "OutputFormat": 4, "MaxIdleTime": 5,
                                       "SubscribeStreamUserIds": {"SubscribeAudioUserIds": ["anna"]}}});
    let with = |path: &[&str], v: Value| {
        let mut p = base.clone();
        let mut node = &mut p;
        for k in &path[..path.len() - 1] {
            node = &mut node[*k];
        }
        if v.is_null() {
            node.as_object_mut().unwrap().remove(path[path.len() - 1]);
        } else {
            node[path[path.len() - 1]] = v;
        }
        p
    };
    for (params, want) in [
        (
            with(&["StorageParams"], Value::Null),
            "MissingParameter.StorageParams",
        ),
        (
            with(&["RecordParams"], Value::Null),
            "MissingParameter.RecordParams",
        ),
        (
            with(&["RecordParams", "RecordMode"], json!(3)),
            "InvalidParameter",
        ),
        (
            with(&["RecordParams", "OutputFormat"], json!(9)),
            "InvalidParameter",
        ),
        (
            with(&["UserSig"], json!(common::usersig(APP, KEY, "intruder"))),
            "InvalidParameter.UserSig",
        ),
        (with(&["RoomId"], json!("0")), "InvalidParameter.RoomId"),
        (
            with(&["RecordParams", "StreamType"], json!(2)),
            "UnsupportedOperation",
        ),
    ] {
        let r = sdk(&gw, "CreateCloudRecording", params.clone());
        assert_eq!(code(&r), want, "{params}: {r}");
    }
    for action in ["DescribeCloudRecording", "DeleteCloudRecording"] {
        let r = sdk(&gw, action, json!({"SdkAppId": APP, "TaskId": "rec-nope"}));
        assert_eq!(code(&r), "ResourceNotFound", "{action}: {r}");
    }

    let created = sdk(&gw, "CreateCloudRecording", base.clone());
    assert_eq!(created["ok"], true, "{created}");
    let task = created["response"]["TaskId"].as_str().unwrap().to_owned();
    let layout = sdk(
        &gw,
        "ModifyCloudRecording",
        json!({"SdkAppId": APP, "TaskId": task, "MixLayoutParams": {"MixLayoutMode": 1}}),
    );
    assert_eq!(code(&layout), "InvalidParameter", "{layout}");
    let url = |user: &str| {
        format!(
            "rtmp://127.0.0.1:{}/push/1234?sdkappid={APP}&userid={user}&usersig={}&roomtype=int",
            gw.rtmp_port(),
            common::usersig(APP, KEY, user)
        )
    };
    let mut anna = Publisher::start(&url("anna"), 6, &gw.dir.0);
    let mut bob = Publisher::start(&url("bob"), 6, &gw.dir.0);
    assert!(anna.wait(Duration::from_secs(30)).unwrap().success());
    assert!(bob.wait(Duration::from_secs(30)).unwrap().success());
    let describe = || {
        sdk(
            &gw,
            "DescribeCloudRecording",
            json!({"SdkAppId": APP, "TaskId": task}),
        )
    };
    common::wait_for("recording exited", Duration::from_secs(20), || {
        describe()["response"]["Status"] == "Exited"
    });
    let d = describe();
    let list = d["response"]["StorageFileList"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only anna is subscribed: {d}");
    assert_eq!(list[0]["UserId"], "anna");
    assert_eq!(list[0]["FileName"], "anna_0.m4a");
    assert_eq!(list[0]["TrackType"], "audio");
    let m4a = recording_dir(&gw, &task).join("anna_0.m4a");
    let streams = common::media::probe_streams(m4a.to_str().unwrap());
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0]["codec_name"], "aac");
    let (errors, secs) = decode(m4a.to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(secs > 4.0, "{secs} s");
}

#[test]
fn a_mix_is_pushed_back_into_another_room_as_a_user() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let origin = Origin::start();
    // Whoever watches the other room: a relay of the robot the mix comes in as.
    let (relay, stream) = start_relay(&gw, "stage", "mixbot");
    let start = json!({
        "SdkAppId": APP, "RoomId": "1234", "RoomIdType": 0,
        "AgentParams": {"UserId": "mcu_robot_1234"},
        "WithTranscoding": 1,
        "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}},
        "VideoParams": {"VideoEncode": {"Width": 640, "Height": 360, "Fps": 15, "BitRate": 800, "Gop": 2},
                        "LayoutParams": {"MixLayoutMode": 3}},
        "PublishCdnParams": [{"PublishCdnUrl": origin.url("fb1234")}],
        "FeedBackRoomParams": [{"RoomId": "stage", "RoomIdType": 1, "UserId": "mixbot",
                                "UserSig": common::usersig(APP, KEY, "mixbot")}],
    });
    let bad_sig = {
        let mut s = start.clone();
        s["FeedBackRoomParams"][0]["UserSig"] = json!(common::usersig(APP, KEY, "someone"));
        s
    };
    assert_eq!(
        code(&sdk(&gw, "StartPublishCdnStream", bad_sig)),
        "InvalidParameter.UserSig"
    );
    let r = sdk(&gw, "StartPublishCdnStream", start);
    assert_eq!(r["ok"], true, "{r}");
    let task = r["response"]["TaskId"].as_str().unwrap().to_owned();
    let url = format!("{}&roomtype=int", gw.publish_url(APP, KEY, "1234", "red"));
    let mut red = Publisher::start_lavfi(
        &url,
        "color=c=red:size=640x360:rate=30",
        "sine=frequency=440:sample_rate=48000",
        8,
        &gw.dir.0,
    );
    common::wait_for(
        "the mix arriving in the other room",
        Duration::from_secs(15),
        || gw.relay_status(&relay)["state"] == "running",
    );
    assert!(red.wait(Duration::from_secs(30)).unwrap().success());
    let stop = sdk(
        &gw,
        "StopPublishCdnStream",
        json!({"SdkAppId": APP, "TaskId": task}),
    );
    assert_eq!(stop["ok"], true, "{stop}");
    // The robot left the other room: it closed and its relay stopped.
    common::wait_for("relay stopped", Duration::from_secs(15), || {
        gw.relay_status(&relay)["state"] == "stopped"
    });
    let hls = format!("http://127.0.0.1:{}/hls/{stream}/index.m3u8", gw.http_port);
    let streams = common::media::probe_streams(&hls);
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!((v["width"].as_str(), v["height"].as_str()), ("640", "360"));
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"));
    let pic = common::media::rgb_frame(&hls, 3.0, 640, 360);
    let px = common::media::pixel(&pic, 640, 320, 180);
    assert!(common::media::near(px, (255, 0, 0), 40), "{px:?}");
    let (errors, _) = decode(&hls);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn dismissing_a_room_stops_its_relay_mix_and_ingest_tasks() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let origin = Origin::start();
    clip(&gw.dir.0);
    let files = common::FileServer::start(&gw.dir.0);
    // A bypass relay and a mix of room 4321, and a looping ingest into it.
    let bypass = sdk(
        &gw,
        "StartPublishCdnStream",
        json!({"SdkAppId": APP, "RoomId": "4321", "RoomIdType": 0,
               "AgentParams": {"UserId": "relay_robot"}, "WithTranscoding": 0,
               "SingleSubscribeParams": {"UserMediaStream": {"UserInfo": {"UserId": "host", "RoomId": "4321", "RoomIdType": 0}}},
               "PublishCdnParams": [{"PublishCdnUrl": origin.url("bypass4321")}]}),
    );
    assert_eq!(bypass["ok"], true, "{bypass}");
    let mix = sdk(
        &gw,
        "StartPublishCdnStream",
        json!({"SdkAppId": APP, "RoomId": "4321", "RoomIdType": 0,
               "AgentParams": {"UserId": "mcu_robot"}, "WithTranscoding": 1,
               "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}},
               "VideoParams": {"VideoEncode": {"Width": 640, "Height": 360, "Fps": 15, "BitRate": 800, "Gop": 2},
                               "LayoutParams": {"MixLayoutMode": 3}},
               "PublishCdnParams": [{"PublishCdnUrl": origin.url("mix4321")}]}),
    );
    assert_eq!(mix["ok"], true, "{mix}");
    let url = format!("{}&roomtype=int", gw.publish_url(APP, KEY, "4321", "host"));
    let mut host = Publisher::start(&url, 20, &gw.dir.0);
    let ingest = sdk(
        &gw,
        "StartStreamIngest",
        json!({"SdkAppId": APP, "RoomId": "4321", "RoomIdType": 1, "UserId": "guest",
               "UserSig": common::usersig(APP, KEY, "guest"), "StreamUrl": files.url("clip.mp4"), "RepeatNum": -1}),
    );
    assert_eq!(ingest["ok"], true, "{ingest}");
    let relay_id = |r: &Value| r["response"]["TaskId"].as_str().unwrap().to_owned();
    let (bypass, mix, ingest) = (relay_id(&bypass), relay_id(&mix), relay_id(&ingest));
    common::wait_for("both relays running", Duration::from_secs(15), || {
        gw.relay_status(&bypass)["state"] == "running"
            && gw.relay_status(&mix)["state"] == "running"
    });

    let r = sdk(&gw, "DismissRoom", json!({"SdkAppId": APP, "RoomId": 4321}));
    assert_eq!(r["ok"], true, "{r}");
    common::wait_for("every task stopped", Duration::from_secs(10), || {
        gw.relay_status(&bypass)["state"] == "stopped"
            && gw.relay_status(&mix)["state"] == "stopped"
            && sdk(
                &gw,
                "DescribeStreamIngest",
                json!({"SdkAppId": APP, "TaskId": ingest}),
            )["response"]["Status"]
                == "NotExist"
    });
    for id in [&bypass, &mix] {
        let reason = gw.relay_status(id)["reason"].as_str().unwrap().to_owned();
        assert!(reason.contains("dismissed"), "{id}: {reason}");
    }
    // The anchor publishing over RTMP is let go too: its connection is
    // closed, so its ffmpeg ends long before its 20 s are up.
    common::wait_for(
        "the RTMP anchor's connection closed",
        Duration::from_secs(8),
        || host.child.try_wait().unwrap().is_some(),
    );
}

#[test]
fn a_task_over_the_cpu_budget_is_refused_by_both_apis_before_it_starts() {
    // 0.05 cores: a bypass relay writing HLS (0.006) fits, a 720p mix does not.
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some((SECRET_ID, SECRET_KEY)),
        "[limits]\ncpu_budget = 0.05\n",
    )));
    let mix = sdk(
        &gw,
        "StartPublishCdnStream",
        json!({"SdkAppId": APP, "RoomId": "budget", "RoomIdType": 1, "AgentParams": {"UserId": "bot"}, "WithTranscoding": 1,
            "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}},
            "VideoParams": {"VideoEncode": {"Width": 1280, "Height": 720, "Fps": 30, "BitRate": 2000, "Gop": 2}},
            "PublishCdnParams": [{"PublishCdnUrl": "rtmp://127.0.0.1:1/live/budget"}]}),
    );
    assert_eq!(code(&mix), "FailedOperation.RestrictedConcurrency", "{mix}");
    assert!(
        mix["message"].as_str().unwrap_or("").contains("cpu_budget"),
        "{mix}"
    );
    let (status, _, text) = http(
        gw.http_port,
        "POST",
        "/v1/relays",
        Some(
            &json!({"sdkappid": APP, "room": "budget", "roomtype": "str", "profile": "grid-720p"})
                .to_string(),
        ),
    )
    .unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("over the CPU budget"), "{text}");
    // Nothing was started for either, and a cheap task still fits.
    let (_, _, list) = http(gw.http_port, "GET", "/v1/relays", None).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["tasks"],
        json!([]),
        "{list}"
    );
    let (status, _, text) = http(
        gw.http_port,
        "POST",
        "/v1/relays",
        Some(
            &json!({"sdkappid": APP, "room": "budget", "roomtype": "str", "userid": "teacher"})
                .to_string(),
        ),
    )
    .unwrap();
    assert_eq!(status, 201, "{text}");
    let (_, _, metrics) = http(gw.http_port, "GET", "/metrics", None).unwrap();
    assert!(
        metrics.contains("roomcast_cpu_budget_cores 0.05"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "roomcast_cpu_budget_in_use_cores 0.006"),
        "{metrics}"
    );
    assert!(
        gw.log_text()
            .contains("relay task refused: over the CPU budget")
    );
}

#[test]
fn image_urls_are_fetched_and_drawn_and_bad_ones_refused_at_the_call() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let origin = Origin::start();
    let pics = common::TempDir::new("pics");
    for (name, colour) in [("blue.png", "blue"), ("green.jpg", "green")] {
        common::media::still_image(&pics.0.join(name), colour);
    }
    std::fs::write(pics.0.join("notes.png"), "not a picture at all\n").unwrap();
    let files = common::FileServer::start(&pics.0);
    let url = |name: &str| files.url(name);
    let anchor = json!({"UserInfo": {"UserId": "red", "RoomId": "img", "RoomIdType": 1}});
    let ghost = json!({"UserInfo": {"UserId": "ghost", "RoomId": "img", "RoomIdType": 1}});
    let start = |background: &str, placeholder: &str| {
        json!({
            "SdkAppId": APP, "RoomId": "img", "RoomIdType": 1,
            "AgentParams": {"UserId": "mcu_img", "MaxIdleTime": 30},
            "WithTranscoding": 1,
            "AudioParams": {"AudioEncode": {"SampleRate": 48000, "Channel": 2, "BitRate": 64}},
            "VideoParams": {"VideoEncode": {"Width": 640, "Height": 360, "Fps": 15, "BitRate": 800, "Gop": 2},
                            "BackgroundImageUrl": background,
                            "LayoutParams": {"MixLayoutMode": 4, "MixLayoutList": [
                                {"UserMediaStream": anchor, "ImageWidth": 320, "ImageHeight": 180, "LocationX": 0, "LocationY": 0},
                                {"UserMediaStream": ghost, "ImageWidth": 320, "ImageHeight": 180, "LocationX": 320, "LocationY": 0,
                                 "BackgroundImageUrl": placeholder}]}},
            "PublishCdnParams": [{"PublishCdnUrl": origin.url("img")}],
        })
    };
    // Refused at the call, with the reason, and nothing started.
    for (bg, why) in [
        (url("missing.png"), "HTTP 404"),
        (url("notes.png"), "not a picture"),
        ("ftp://127.0.0.1/x.png".to_owned(), "http"),
    ] {
        let r = sdk(&gw, "StartPublishCdnStream", start(&bg, &url("green.jpg")));
        assert_eq!(r["code"], "InvalidParameter", "{r}");
        assert!(r["message"].as_str().unwrap().contains(why), "{r}");
    }
    let (_, relays) = common::http_get(gw.http_port, "/v1/relays").unwrap();
    assert!(
        relays.contains(r#""tasks":[]"#),
        "nothing started: {relays}"
    );
    // Recordings take a background and a placeholder for every cell too.
    let record = |background: &str| {
        json!({"SdkAppId": APP, "RoomId": "img", "RoomIdType": 0, "UserId": "recorder",
               "UserSig": common::usersig(APP, KEY, "recorder"), "StorageParams": storage(),
               "RecordParams": {"RecordMode": 2, "OutputFormat": 3, "MaxIdleTime": 5},
               "MixLayoutParams": {"MixLayoutMode": 3, "BackgroundImageUrl": background,
                                   "DefaultSubBackgroundImage": url("green.jpg")}})
    };
    let r = sdk(&gw, "CreateCloudRecording", record(&url("notes.png")));
    assert_eq!(r["code"], "InvalidParameter", "{r}");
    let r = sdk(&gw, "CreateCloudRecording", record(&url("blue.png")));
    assert_eq!(r["ok"], true, "{r}");
    let task = r["response"]["TaskId"].as_str().unwrap();
    let r = sdk(
        &gw,
        "DeleteCloudRecording",
        json!({"SdkAppId": APP, "TaskId": task}),
    );
    assert_eq!(r["ok"], true, "{r}");

    let r = sdk(
        &gw,
        "StartPublishCdnStream",
        start(&url("blue.png"), &url("green.jpg")),
    );
    assert_eq!(r["ok"], true, "{r}");
    let _red = Publisher::start_lavfi(
        &format!("{}&roomtype=str", gw.publish_url(APP, KEY, "img", "red")),
        "color=c=red:size=640x360:rate=30",
        "sine=frequency=440:sample_rate=48000",
        20,
        &gw.dir.0,
    );
    // The latest picture of the recording so far, once it shows the anchor.
    let latest = || -> Option<Vec<u8>> {
        let rec = origin.recordings("img").pop()?;
        let rec = rec.to_str()?;
        let secs = common::media::decode(rec).1;
        if secs < 2.0 {
            return None;
        }
        let out = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-nostdin",
                "-ss",
                &format!("{:.2}", secs - 1.0),
                "-i",
                rec,
            ])
            .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .output()
            .ok()?;
        (out.stdout.len() == 640 * 360 * 3).then_some(out.stdout)
    };
    let mut rgb = Vec::new();
    common::wait_for(
        "the anchor in the mix at the origin",
        Duration::from_secs(30),
        || {
            rgb = latest().unwrap_or_default();
            !rgb.is_empty()
                && common::media::near(common::media::pixel(&rgb, 640, 160, 90), (255, 0, 0), 40)
        },
    );
    let at = |x, y| common::media::pixel(&rgb, 640, x, y);
    assert!(
        common::media::near(at(160, 90), (255, 0, 0), 40),
        "the anchor: {:?}",
        at(160, 90)
    );
    assert!(
        common::media::near(at(480, 90), (0, 128, 0), 40),
        "the placeholder image: {:?}",
        at(480, 90)
    );
    assert!(
        common::media::near(at(320, 270), (0, 0, 255), 40),
        "the background image: {:?}",
        at(320, 270)
    );
}

/// An RTMP anchor removed by `RemoveUser…`, or whose room is dismissed, is
/// disconnected at once: the gateway closes its connection (ffmpeg ends
/// with an error long before its stream would) and says why in its log.
#[test]
fn remove_user_and_dismiss_room_disconnect_rtmp_anchors() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let count = |needle: &str| gw.log_text().matches(needle).count();
    let publish = |user: &str, n: usize| {
        // A string room, as an RTMP path's room is unless told otherwise.
        let url = gw.publish_url(APP, KEY, "kick-room", user);
        let p = Publisher::start(&url, 60, &gw.dir.0);
        common::wait_for("the anchor publishing", Duration::from_secs(15), || {
            count("rtmp publish started") == n
        });
        p
    };
    // `p`'s ffmpeg ends with an error (its connection cut), and the log
    // has said why `n` times.
    let cut_off = |p: &mut Publisher, what: &str, why: &str, n: usize| {
        let ended = p
            .wait(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{what} was not disconnected"));
        assert!(!ended.success(), "ffmpeg saw its connection cut");
        common::wait_for("the log's reason", Duration::from_secs(5), || {
            count(&format!("rtmp publisher disconnected: {why}")) == n
        });
    };
    let mut host = publish("host", 1);
    let mut guest = publish("guest", 2);

    let r = sdk(
        &gw,
        "RemoveUserByStrRoomId",
        json!({"SdkAppId": APP, "RoomId": "kick-room", "UserIds": ["guest"]}),
    );
    assert_eq!(r["ok"], true, "{r}");
    cut_off(&mut guest, "the removed anchor", "removed", 1);
    assert!(host.child.try_wait().unwrap().is_none(), "the host goes on");

    let r = sdk(
        &gw,
        "DismissRoomByStrRoomId",
        json!({"SdkAppId": APP, "RoomId": "kick-room"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    cut_off(&mut host, "the dismissed room's anchor", "", 2);
}
