//! TRTC-style event callbacks delivered to a real HTTP receiver on loopback:
//! room and media events of an RTMP anchor, signed; a receiver that fails
//! gets the same callback again.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use common::media::Publisher;
use common::{Gateway, callback_events, callback_receiver};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Media tests encode in real time; one at a time on a 2-core machine.
static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "callback-app-key";
const CALLBACK_KEY: &str = "callback-sign-key";

fn gateway(port: u16) -> Gateway {
    Gateway::start(Some(&format!(
        "[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\ncallback_url = \"http://127.0.0.1:{port}/trtc/events\"\ncallback_key = \"{CALLBACK_KEY}\"\n[[api.credentials]]\nsecret_id = \"AKID\"\nsecret_key = \"k\"\n"
    )))
}

#[test]
fn an_anchors_room_and_media_events_are_called_back_signed() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let (port, seen) = callback_receiver(0);
    let gw = gateway(port);
    let mut obs = Publisher::start(&gw.publish_url(APP, KEY, "hall", "alice"), 3, &gw.dir.0);
    assert!(obs.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("room dismissed callback", Duration::from_secs(10), || {
        callback_events(&seen).iter().any(|(_, t, _)| *t == 102)
    });
    let got = callback_events(&seen);
    let types: Vec<u64> = got.iter().map(|(_, t, _)| *t).collect();
    // Created, entered, started video and audio (either order), exited,
    // closed; as in TRTC, leaving is 104 alone (no 202/204 before it).
    assert_eq!(&types[..2], &[101, 103], "{types:?}");
    for t in [201, 203, 104] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    assert!(!types.contains(&202) && !types.contains(&204), "{types:?}");
    assert_eq!(*types.last().unwrap(), 102, "{types:?}");
    let entered = &got.iter().find(|(_, t, _)| *t == 103).unwrap().2;
    assert_eq!(entered["RoomId"], "hall");
    assert_eq!(entered["UserId"], "alice");
    assert_eq!(entered["Role"], 20);
    let exited = &got.iter().find(|(_, t, _)| *t == 104).unwrap().2;
    assert_eq!(exited["Reason"], 1);
    for (g, t, _) in &got {
        assert_eq!(*g, if *t < 200 { 1 } else { 2 });
    }
    // Every request is signed over its exact body.
    for r in seen.lock().unwrap().iter() {
        let header = |k: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(CALLBACK_KEY.as_bytes()).unwrap();
        mac.update(r.body.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(header("sign").as_deref(), Some(want.as_str()));
        assert_eq!(header("sdkappid"), Some(APP.to_string()));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
    }
}

#[test]
fn a_failing_receiver_gets_the_callback_again() {
    let (port, seen) = callback_receiver(1);
    let gw = gateway(port);
    // A room event without media: a signalling client entering.
    let sig = common::usersig(APP, KEY, "bob");
    let url = format!(
        "ws://127.0.0.1:{}/v1/rooms/77/ws?sdkappid={APP}&userid=bob&usersig={sig}",
        gw.http_port
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        drop(ws);
    });
    common::wait_for("the retried callback", Duration::from_secs(10), || {
        seen.lock().unwrap().len() >= 2
    });
    let all = seen.lock().unwrap().clone();
    // The first one failed (500) and came again, unchanged.
    assert_eq!(all[0].body, all[1].body);
    let v: Value = serde_json::from_str(&all[0].body).unwrap();
    assert_eq!(v["EventType"], 101);
    assert_eq!(v["EventInfo"]["RoomId"], 77);
}

#[test]
fn a_callback_url_must_be_http_or_https_and_signed() {
    for (extra, field) in [
        (
            "callback_url = \"ftp://example.com/cb\"\ncallback_key = \"k\"\n",
            "callback_url",
        ),
        ("callback_url = \"http://127.0.0.1:9/cb\"\n", "callback_key"),
    ] {
        let dir = common::TempDir::new("cb-config");
        std::fs::write(
            dir.0.join("roomcast.toml"),
            format!("[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n{extra}"),
        )
        .unwrap();
        let out = std::process::Command::new(common::BIN)
            .arg("serve")
            .current_dir(&dir.0)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn a_relay_targets_states_are_called_back_as_401() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let (port, seen) = callback_receiver(0);
    let gw = gateway(port);
    let origin = common::media::Origin::start();
    let (task, _) = gw.start_relay(&serde_json::json!({
        "sdkappid": APP, "room": "stage", "roomtype": "str", "userid": "alice",
        "rtmp": [origin.url("stage")]
    }));
    let mut obs = Publisher::start(&gw.publish_url(APP, KEY, "stage", "alice"), 3, &gw.dir.0);
    assert!(obs.wait(Duration::from_secs(30)).unwrap().success());
    let relay_events = || -> Vec<Value> {
        callback_events(&seen)
            .into_iter()
            .filter(|(g, t, _)| *g == 4 && *t == 401)
            .map(|(_, _, info)| info)
            .collect()
    };
    common::wait_for("pushing and stopped", Duration::from_secs(15), || {
        let e = relay_events();
        e.iter().any(|i| i["Payload"]["Status"] == 2)
            && e.iter().any(|i| i["Payload"]["Status"] == 5)
    });
    let pushing = relay_events()
        .into_iter()
        .find(|i| i["Payload"]["Status"] == 2)
        .unwrap();
    assert_eq!(pushing["TaskId"], task.as_str());
    assert_eq!(pushing["RoomId"], "stage");
    assert_eq!(pushing["RoomType"], 1);
    assert_eq!(pushing["UserId"], "alice");
    assert_eq!(pushing["Payload"]["Url"], origin.url("stage").as_str());
}
