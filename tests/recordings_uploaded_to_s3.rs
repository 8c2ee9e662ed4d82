//! Cloud recordings uploaded to a real S3-compatible server (moto's server
//! mode, from the test venv) behind an nginx `stream` proxy the test can
//! take down: segments appear while recording, an upload cut off by the
//! storage going away resumes, a roomcast killed mid-upload finishes after
//! its restart, and the final MP4 downloaded from the bucket plays.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::media::{Publisher, decode};
use common::{Gateway, TempDir, free_ports};
use serde_json::{Value, json};

const APP: u64 = 1_400_000_900;
const KEY: &str = "s3-app-key";
const SECRET_ID: &str = "AKIDs3";
const SECRET_KEY: &str = "s3-api-secret";
const BUCKET: &str = "recordings";
const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
const S3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/s3.py");

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn moto(port: u16, dir: &Path) -> Proc {
    let child = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.venv/bin/moto_server"
    ))
    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join("moto.log")).unwrap())
    .spawn()
    .expect("moto_server (make test installs it)");
    wait_port(port);
    Proc(child)
}

/// nginx forwarding TCP from `port` to `to`: the storage as roomcast sees it.
fn proxy(dir: &Path, port: u16, to: u16) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
             daemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             stream {{ server {{ listen 127.0.0.1:{port}; proxy_pass 127.0.0.1:{to}; }} }}\n"
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .args([
            "-c",
            dir.join("nginx.conf").to_str().unwrap(),
            "-p",
            dir.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx");
    wait_port(port);
    Proc(child)
}

fn s3(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(PY)
        .arg(S3)
        .arg(endpoint)
        .args(args)
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "s3.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn objects(endpoint: &str, prefix: &str) -> BTreeMap<String, u64> {
    serde_json::from_str(&s3(endpoint, &["list", BUCKET, prefix])).unwrap()
}

fn sdk(gw: &Gateway, action: &str, params: Value) -> Value {
    // The raw answer: the SDK's models drop fields they do not know.
    common::trtc_sdk(
        gw.http_port,
        (SECRET_ID, SECRET_KEY),
        action,
        &params,
        &["--raw"],
    )
}

fn gateway(data: &Path, storage_port: u16, callbacks: u16) -> Gateway {
    let storage = format!(
        "[storage]\nendpoint = \"http://127.0.0.1:{storage_port}\"\nforce_path_style = true\n"
    );
    Gateway::start(Some(&format!(
        "data_dir = \"{}\"\n[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n\
         callback_url = \"http://127.0.0.1:{callbacks}/trtc\"\ncallback_key = \"cb\"\n\
         [[api.credentials]]\nsecret_id = \"{SECRET_ID}\"\nsecret_key = \"{SECRET_KEY}\"\n{storage}",
        data.display(),
    )))
}

/// The recording callbacks (group 3) received so far: (type, EventInfo).
fn recording_events(
    seen: &std::sync::Arc<std::sync::Mutex<Vec<common::Received>>>,
) -> Vec<(u64, Value)> {
    common::callback_events(seen)
        .into_iter()
        .filter(|(g, _, _)| *g == 3)
        .map(|(_, t, info)| (t, info))
        .collect()
}

#[test]
fn a_recording_reaches_the_bucket_through_outages_and_a_restart() {
    let work = TempDir::new("s3");
    let data = work.0.join("data");
    let [moto_port, storage_port] = free_ports::<2>();
    let _moto = moto(moto_port, &work.0);
    let direct = format!("http://127.0.0.1:{moto_port}");
    s3(&direct, &["create", BUCKET]);
    let mut storage = Some(proxy(&work.0.join("proxy"), storage_port, moto_port));
    let (receiver, seen) = common::callback_receiver(0);
    let mut gw = gateway(&data, storage_port, receiver);

    let _anchor = Publisher::start(
        &gw.publish_url(APP, KEY, "lesson", "teacher"),
        120,
        &gw.dir.0,
    );
    let created = sdk(
        &gw,
        "CreateCloudRecording",
        json!({"SdkAppId": APP, "RoomId": "lesson", "RoomIdType": 0, "UserId": "recorder",
               "UserSig": common::usersig(APP, KEY, "recorder"),
               "StorageParams": {"CloudStorage": {"Vendor": 1, "Region": "us-east-1",
                   "Bucket": BUCKET, "AccessKey": "AKIDTESTS3", "SecretKey": "s3-secret-key",
                   "FileNamePrefix": ["school", "class1"]}},
               "RecordParams": {"RecordMode": 2, "OutputFormat": 1, "MaxIdleTime": 30},
               "MixTranscodeParams": {"VideoParams": {"Width": 640, "Height": 360, "Fps": 15,
                                                      "BitRate": 600000, "Gop": 2}}}),
    );
    assert_eq!(created["ok"], true, "{created}");
    let task = created["response"]["TaskId"].as_str().unwrap().to_owned();
    let prefix = format!("school/class1/{task}/");
    let describe = |gw: &Gateway| {
        sdk(
            gw,
            "DescribeCloudRecording",
            json!({"SdkAppId": APP, "TaskId": task}),
        )
    };

    // Segments reach the bucket while the recording runs.
    common::wait_for("segments in the bucket", Duration::from_secs(40), || {
        let got = objects(&direct, &prefix);
        got.keys().filter(|k| k.ends_with(".ts")).count() >= 2
            && got.contains_key(&format!("{prefix}mix_hls/index.m3u8"))
    });
    let d = describe(&gw);
    let states: Vec<&str> = d["response"]["StorageFileList"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["UploadStatus"].as_str())
        .collect();
    assert!(!states.is_empty(), "{d}");
    assert!(
        !d.to_string().contains("s3-secret-key"),
        "no secret in answers"
    );

    // The storage goes away: uploads fail and say so.
    storage.take();
    common::wait_for("an upload retrying", Duration::from_secs(30), || {
        describe(&gw)["response"]["StorageFileList"]
            .as_array()
            .is_some_and(|l| l.iter().any(|f| f["UploadStatus"] == "retrying"))
    });
    // The recording ends while the storage is away; roomcast is then killed.
    let stopped = sdk(
        &gw,
        "DeleteCloudRecording",
        json!({"SdkAppId": APP, "TaskId": task}),
    );
    assert_eq!(stopped["ok"], true, "{stopped}");
    common::wait_for("the recording exited", Duration::from_secs(20), || {
        describe(&gw)["response"]["Status"] == "Exited"
    });
    let ledger = data.join("uploads").join(format!("{task}.json"));
    assert!(ledger.exists(), "the pending uploads are on disk");
    let text = std::fs::read_to_string(&ledger).unwrap();
    assert!(text.contains("mix_0.mp4"), "{text}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ledger).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the ledger holds a secret: {mode:o}");
    }
    assert!(
        !gw.log_text().contains("s3-secret-key"),
        "no secret in logs"
    );
    gw.signal("KILL");
    assert!(gw.wait_exit(Duration::from_secs(5)).is_some());

    // Restarted with the storage back: everything arrives.
    let _storage = proxy(&work.0.join("proxy"), storage_port, moto_port);
    let gw = gateway(&data, storage_port, receiver);
    assert!(gw.wait_log("recording upload resumed", Duration::from_secs(5)));
    common::wait_for("every file uploaded", Duration::from_secs(60), || {
        !ledger.exists()
    });
    assert!(gw.log_text().contains("recording uploaded"));
    let got = objects(&direct, &prefix);
    let local = data.join("recordings").join(&task);
    for entry in std::fs::read_dir(local.join("mix_hls")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let key = format!("{prefix}mix_hls/{name}");
        assert!(got.contains_key(&key), "{key} missing from {got:?}");
    }
    let mp4 = work.0.join("downloaded.mp4");
    s3(
        &direct,
        &[
            "get",
            BUCKET,
            &format!("{prefix}mix_0.mp4"),
            mp4.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::metadata(&mp4).unwrap().len(),
        std::fs::metadata(local.join("mix_0.mp4")).unwrap().len()
    );
    let (errors, secs) = decode(mp4.to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(secs > 5.0, "{secs}");

    // The recording callbacks, each once and in order, the last one sent
    // by the restarted gateway.
    common::wait_for("305 delivered", Duration::from_secs(10), || {
        recording_events(&seen).iter().any(|(t, _)| *t == 305)
    });
    let events = recording_events(&seen);
    let order: Vec<u64> = events.iter().map(|(t, _)| *t).collect();
    assert_eq!(order, vec![301, 303, 307, 304, 302, 305], "{events:?}");
    for (t, info) in &events {
        assert_eq!(
            (&info["TaskId"], &info["UserId"], &info["RoomId"]),
            (&json!(task), &json!("recorder"), &json!("lesson")),
            "{t}: {info}"
        );
    }
    let info = |t: u64| &events.iter().find(|(k, _)| *k == t).unwrap().1["Payload"];
    assert_eq!(info(307)["FileName"], "mix_hls/index.m3u8");
    assert_eq!(info(304)["FileList"][0]["FileName"], "mix_hls/index.m3u8");
    assert_eq!(info(302)["LeaveCode"], 0);
    assert_eq!(info(305)["Status"], 0);
}

#[test]
fn cloud_vod_and_bad_storage_params_are_refused() {
    let work = TempDir::new("s3-params");
    let gw = gateway(&work.0.join("data"), 9, 9);
    let base = json!({"SdkAppId": APP, "RoomId": "r", "RoomIdType": 0, "UserId": "recorder",
                      "UserSig": common::usersig(APP, KEY, "recorder"),
                      "RecordParams": {"RecordMode": 2}});
    let with = |storage: Value| {
        let mut p = base.clone();
        p["StorageParams"] = storage;
        sdk(&gw, "CreateCloudRecording", p)
    };
    let cos = |extra: Value| {
        let mut c = json!({"Vendor": 0, "Region": "ap-guangzhou", "Bucket": "b-1250000000",
                           "AccessKey": "ak", "SecretKey": "sk"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        json!({"CloudStorage": c})
    };
    let vod = with(json!({"CloudVod": {"TencentVod": {}}}));
    assert_eq!(vod["code"], "UnsupportedOperation", "{vod}");
    let r = with(cos(json!({"Vendor": 7})));
    assert!(
        r["code"].as_str().unwrap().starts_with("InvalidParameter"),
        "{r}"
    );
    let r = with(cos(json!({"FileNamePrefix": ["ok", "not/ok"]})));
    assert!(
        r["code"].as_str().unwrap().starts_with("InvalidParameter"),
        "{r}"
    );
    let r = with(cos(json!({"SecretKey": ""})));
    assert!(
        r["code"].as_str().unwrap().starts_with("InvalidParameter"),
        "{r}"
    );
}
