//! The live status API, signed with an API credential (TC3 over the
//! request's path), while a real ffmpeg anchor publishes over RTMP and a
//! passthrough relay pushes it to a real nginx-rtmp origin.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::media::{Origin, Publisher};
use common::{Gateway, http_with};
use serde_json::{Value, json};

static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "status-key";
const SECRET_ID: &str = "AKIDstatus";
const SECRET_KEY: &str = "status-secret";

/// A GET signed for `signed_path` with `secret_key`, sent to `path`.
fn get_signed(gw: &Gateway, path: &str, signed_path: &str, secret_key: &str) -> (u16, Value) {
    let (code, _, v) = common::signed_get(gw.http_port, (SECRET_ID, secret_key), path, signed_path);
    (code, v)
}

/// A gateway with the app and the API credential, otherwise on defaults.
fn gateway() -> Gateway {
    Gateway::for_app(APP, KEY, (SECRET_ID, SECRET_KEY))
}

fn status(gw: &Gateway, path: &str) -> Value {
    let (code, v) = get_signed(gw, path, path, SECRET_KEY);
    assert_eq!(code, 200, "{v}");
    v
}

#[test]
fn signed_callers_see_rooms_users_codecs_and_tasks_with_rates() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    let origin = Origin::start();

    // Unsigned, signed with another key, or signed for another document: refused.
    let (code, _, _) = http_with(gw.http_port, "GET", "/v1/status", &[], b"").unwrap();
    assert_eq!(code, 401);
    let (code, v) = get_signed(&gw, "/v1/status", "/v1/status", "wrong");
    assert_eq!(code, 401);
    assert_eq!(v["error"]["code"], "AuthFailure.SignatureFailure", "{v}");
    let (code, _) = get_signed(&gw, "/v1/status/rooms", "/v1/status/node", SECRET_KEY);
    assert_eq!(
        code, 401,
        "a signature opens only the document it was made for"
    );
    let (code, _) = get_signed(&gw, "/v1/status/nope", "/v1/status/nope", SECRET_KEY);
    assert_eq!(code, 404);

    let (id, _) = gw.start_relay(&json!({
        "sdkappid": APP, "room": "lesson", "userid": "teacher", "rtmp": [origin.url("lesson?key=secret")]
    }));
    let tasks = status(&gw, "/v1/status/tasks");
    assert_eq!(tasks[0]["task_id"], id.as_str());
    assert_eq!(tasks[0]["state"], "waiting");
    assert_eq!(tasks[0]["inputs"], json!([]));

    let mut teacher = Publisher::start(
        &gw.publish_url(APP, KEY, "lesson", "teacher"),
        10,
        &gw.dir.0,
    );
    let mut last = Value::Null;
    common::wait_for(
        "a running relay at full rate",
        Duration::from_secs(15),
        || {
            last = status(&gw, "/v1/status");
            let t = &last["tasks"][0];
            t["state"] == "running"
                && t["fps"].as_f64().unwrap_or(0.0) > 20.0
                && t["outputs"][0]["state"] == "publishing"
        },
    );
    let room = &last["rooms"][0];
    assert_eq!(
        (&room["sdkappid"], &room["room"], &room["owner"]),
        (&json!(APP), &json!("lesson"), &json!("teacher")),
        "{room}"
    );
    let user = &room["users"][0];
    assert_eq!(user["userid"], "teacher");
    assert_eq!(user["role"], "anchor");
    assert_eq!(user["tracks"], json!(["audio", "video"]), "{user}");
    assert_eq!(
        (&user["video_codec"], &user["audio_codec"]),
        (&json!("h264"), &json!("aac"))
    );
    let task = &last["tasks"][0];
    assert_eq!(task["kind"], "passthrough");
    assert_eq!(task["inputs"], json!(["teacher"]));
    assert!(task["kbps"].as_u64().unwrap() > 100, "{task}");
    let out = &task["outputs"][0];
    assert_eq!(out["kind"], "rtmp");
    assert!(
        !out["url"].as_str().unwrap().contains("secret"),
        "no stream keys: {out}"
    );
    // The command line signs the same request for scripts.
    let out = std::process::Command::new(common::BIN)
        .args([
            "status",
            "tasks",
            "--http",
            &format!("127.0.0.1:{}", gw.http_port),
        ])
        .env("ROOMCAST_SECRET_ID", SECRET_ID)
        .env("ROOMCAST_SECRET_KEY", SECRET_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli[0]["task_id"], id.as_str());
    let out = std::process::Command::new(common::BIN)
        .args(["status", "--http", &format!("127.0.0.1:{}", gw.http_port)])
        .args(["--secret-id", SECRET_ID, "--secret-key", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = &last["node"];
    assert_eq!(
        (&node["rooms"], &node["anchors"], &node["relay_tasks"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert!(node["resident_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(node["cores"].as_u64().unwrap() >= 1);

    // The anchor leaves; the room closes and the task says why it stopped.
    assert!(teacher.wait(Duration::from_secs(30)).unwrap().success());
    common::wait_for("the task stopped", Duration::from_secs(15), || {
        let t = &status(&gw, "/v1/status/tasks")[0];
        t["state"] == "stopped"
            && t["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("room closed"))
    });
    assert_eq!(status(&gw, "/v1/status/rooms"), json!([]));
    // Every state change of the task is one log line with its id and reason.
    let log = gw.log_text();
    let changes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("relay task state changed") && l.contains(id.as_str()))
        .collect();
    assert!(
        changes.len() >= 2
            && changes[0].contains("state=\"running\"")
            && changes.last().unwrap().contains("state=\"stopped\"")
            && changes.last().unwrap().contains("room closed"),
        "{changes:#?}"
    );
}

/// The gateway times its codecs at start-up and charges a mix what they
/// cost here: the node document says by how much, and a mix is admitted
/// for the reference machine's cost times that.
#[test]
fn a_mix_is_charged_what_its_codecs_cost_on_this_machine() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let gw = gateway();
    common::wait_for("the codecs timed", Duration::from_secs(60), || {
        status(&gw, "/v1/status/node")["cpu_calibrated"] == json!(true)
    });
    let node = status(&gw, "/v1/status/node");
    let scale = node["cpu_cost_scale"].as_f64().unwrap();
    assert!((0.25..=4.0).contains(&scale), "{node}");
    assert_eq!(node["cpu_budget_in_use"], json!(0.0), "{node}");
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("codecs timed") && l.contains("picture_us=")),
        "{log}"
    );
    let (_, _, metrics) = common::http(gw.http_port, "GET", "/metrics", None).unwrap();
    assert!(
        metrics.lines().any(|l| l
            .strip_prefix("roomcast_cpu_cost_scale ")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| (v - scale).abs() < 0.001)),
        "{metrics}"
    );

    // grid-720p with nobody publishing yet: two 360p30 inputs into 720p30,
    // 0.338 cores on the reference machine (`capacity`'s model).
    let (id, _) = gw.start_relay(&json!({
        "sdkappid": APP, "room": "scaled", "roomtype": "str", "profile": "grid-720p"
    }));
    let in_use = status(&gw, "/v1/status/node")["cpu_budget_in_use"]
        .as_f64()
        .unwrap();
    assert!(
        (in_use - 0.338_096 * scale).abs() < 0.001,
        "charged {in_use} cores at scale {scale}"
    );
    let (code, _, text) =
        common::http(gw.http_port, "DELETE", &format!("/v1/relays/{id}"), None).unwrap();
    assert!((200..300).contains(&code), "{text}");
}
