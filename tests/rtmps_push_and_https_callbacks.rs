//! Outgoing TLS with real peers: a relay and a mix push over RTMPS to an
//! nginx-rtmp origin behind nginx's `stream` module terminating TLS with a
//! certificate from a CA the test makes (trusted through `tls.ca_file`);
//! targets with a wrong CA or a wrong host name fail with the reason in the
//! task status; room callbacks reach an https:// receiver.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::media::{Origin, Publisher, decode, probe_streams};
use common::{Gateway, TempDir, callback_events, callback_receiver, free_ports};
use serde_json::json;

static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_800;
const KEY: &str = "tls-app-key";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (make test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `<name>-ca.pem` and a certificate `<name>.pem` (key `<name>.key`)
/// it signed for DNS name `localhost` only.
fn ca_and_leaf(dir: &Path, name: &str) {
    let ca = format!("{name}-ca");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=roomcast test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// nginx terminating TLS: `stream` servers in front of the RTMP origin (one
/// per certificate), and an HTTPS server in front of a plain HTTP receiver.
struct TlsFront {
    child: Child,
    _dir: TempDir,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_front(certs: &Path, streams: &[(u16, &str, u16)], https: (u16, u16)) -> TlsFront {
    let dir = TempDir::new("tls-front");
    let d = dir.0.display();
    let c = certs.display();
    let mut servers = String::new();
    for (port, cert, origin) in streams {
        servers.push_str(&format!(
            "server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {c}/{cert}.pem; \
             ssl_certificate_key {c}/{cert}.key; proxy_pass 127.0.0.1:{origin}; }}\n"
        ));
    }
    let conf = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         daemon off;\nmaster_process off;\nworker_processes 1;\n\
         error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         stream {{\n{servers}}}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{hp} ssl; ssl_certificate {c}/good.pem; ssl_certificate_key {c}/good.key;\n\
             location / {{ proxy_pass http://127.0.0.1:{up}; }} }} }}\n",
        hp = https.0,
        up = https.1,
    );
    std::fs::write(dir.0.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args([
            "-c",
            dir.0.join("nginx.conf").to_str().unwrap(),
            "-p",
            dir.0.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in streams.iter().map(|s| s.0).chain([https.0]) {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx's TLS front did not listen on {port}: {}",
                std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    TlsFront { child, _dir: dir }
}

/// A task's target whose URL contains `url_part`; null until the task has
/// its targets (a relay makes them when its anchor arrives).
fn target<'a>(status: &'a serde_json::Value, url_part: &str) -> &'a serde_json::Value {
    static NONE: serde_json::Value = serde_json::Value::Null;
    status["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["url"].as_str().is_some_and(|u| u.contains(url_part)))
        .unwrap_or(&NONE)
}

#[test]
fn relays_and_mixes_push_over_rtmps_and_bad_certificates_say_why() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let certs = TempDir::new("certs");
    ca_and_leaf(&certs.0, "good");
    ca_and_leaf(&certs.0, "other");
    let origin = Origin::start();
    let (receiver, seen) = callback_receiver(0);
    let [good, other, https] = free_ports::<3>();
    let _front = tls_front(
        &certs.0,
        &[(good, "good", origin.port), (other, "other", origin.port)],
        (https, receiver),
    );
    let gw = Gateway::start(Some(&format!(
        "[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n\
         callback_url = \"https://localhost:{https}/trtc/events\"\ncallback_key = \"cb-key\"\n\
         [[api.credentials]]\nsecret_id = \"AKIDtls\"\nsecret_key = \"tls-secret\"\n\
         [tls]\nca_file = \"{}\"\n",
        certs.0.join("good-ca.pem").display()
    )));

    let (relay, _) = gw.start_relay(&json!({
        "sdkappid": APP, "room": "tls", "userid": "anchor",
        "rtmp": [
            format!("rtmps://localhost:{good}/live/relay"),
            format!("rtmps://127.0.0.1:{good}/live/wrongname"),
            format!("rtmps://localhost:{other}/live/wrongca"),
        ]
    }));
    let (mix, _) = gw.start_relay(&json!({
        "sdkappid": APP, "room": "tls", "profile": "grid-720p",
        "rtmp": [format!("rtmps://localhost:{good}/live/mix")]
    }));
    let _anchor = Publisher::start(&gw.publish_url(APP, KEY, "tls", "anchor"), 60, &gw.dir.0);

    common::wait_for(
        "both tasks publishing over RTMPS",
        Duration::from_secs(30),
        || {
            target(&gw.relay_status(&relay), "/live/relay")["state"] == "publishing"
                && target(&gw.relay_status(&mix), "/live/mix")["state"] == "publishing"
        },
    );
    // The bad ones retry, each with its reason.
    let mut status = json!(null);
    common::wait_for("the bad targets' reasons", Duration::from_secs(20), || {
        status = gw.relay_status(&relay);
        !target(&status, "wrongname")["error"].is_null()
            && !target(&status, "wrongca")["error"].is_null()
    });
    let name_error = target(&status, "wrongname")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca_error = target(&status, "wrongca")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        name_error.contains("certificate") && name_error.contains("not valid for name"),
        "{name_error}"
    );
    assert!(ca_error.contains("UnknownIssuer"), "{ca_error}");
    eprintln!("wrong name: {name_error}\nwrong CA: {ca_error}");
    assert_ne!(target(&status, "wrongca")["state"], "publishing");

    // What went through TLS reached the origin as h264 + aac that decodes.
    common::wait_for(
        "both recordings at the origin",
        Duration::from_secs(30),
        || {
            ["relay", "mix"].iter().all(|n| {
                origin.recordings(n).last().is_some_and(|f| {
                    let f = f.to_str().unwrap();
                    let codecs: Vec<String> = probe_streams(f)
                        .iter()
                        .filter_map(|s| s.get("codec_name").cloned())
                        .collect();
                    codecs.contains(&"h264".to_owned())
                        && codecs.contains(&"aac".to_owned())
                        && decode(f).1 > 3.0
                })
            })
        },
    );

    // RTMPS pull (StartStreamIngest, libavformat's own TLS) still works:
    // the relay's stream, read back through the TLS front, re-enters the
    // room as a robot that is relayed again to the origin.
    let pulled = common::trtc_sdk(
        gw.http_port,
        ("AKIDtls", "tls-secret"),
        "StartStreamIngest",
        &json!({"SdkAppId": APP, "RoomId": "tls", "RoomIdType": 0, "UserId": "puller",
                "UserSig": common::usersig(APP, KEY, "puller"),
                "StreamUrl": format!("rtmps://localhost:{good}/live/relay")}),
        &[],
    );
    assert_eq!(pulled["ok"], true, "{pulled}");
    let (again, _) = gw.start_relay(&json!({
        "sdkappid": APP, "room": "tls", "userid": "puller", "rtmp": [origin.url("pulled")]
    }));
    common::wait_for("the RTMPS pull relayed", Duration::from_secs(30), || {
        gw.relay_status(&again)["state"] == "running"
            && origin
                .recordings("pulled")
                .last()
                .is_some_and(|f| decode(f.to_str().unwrap()).1 > 2.0)
    });

    // Room events reached the https:// receiver, signed.
    common::wait_for("callbacks over HTTPS", Duration::from_secs(15), || {
        callback_events(&seen)
            .iter()
            .any(|(g, t, _)| *g == 1 && *t == 103)
    });
    // And the relay callback (401) of the target with the wrong CA says why.
    common::wait_for("a 401 with the reason", Duration::from_secs(15), || {
        callback_events(&seen).iter().any(|(_, t, info)| {
            *t == 401
                && info["Payload"]["Url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/wrongca"))
                && info["Payload"]["Reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("UnknownIssuer"))
        })
    });
    let got = seen.lock().unwrap();
    assert!(
        got.iter()
            .all(|r| r.headers.iter().any(|(k, _)| k == "sign"))
    );
}

#[test]
fn a_bad_ca_file_stops_the_start_with_its_name() {
    let dir = TempDir::new("bad-ca");
    std::fs::write(dir.0.join("ca.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        dir.0.join("roomcast.toml"),
        format!(
            "[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[tls]\nca_file = \"ca.pem\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .arg("serve")
        .current_dir(&dir.0)
        .env("ROOMCAST_HTTP__PORT", "0")
        .env("ROOMCAST_RTMP__PORT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.ca_file") && err.contains("ca.pem"),
        "{err}"
    );
}

/// The subject of the certificate a TLS server on `port` presents for `localhost`.
fn served_subject(port: u16) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn https_and_rtmps_listeners_serve_the_api_and_obs_and_reload_on_sighup() {
    let _serial = MEDIA.lock().unwrap_or_else(|p| p.into_inner());
    let certs = TempDir::new("certs");
    ca_and_leaf(&certs.0, "good");
    // A second certificate from the same CA, told apart by its subject.
    openssl(
        &certs.0,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost/O=renewed",
            "-keyout",
            "renewed.key",
            "-out",
            "renewed.csr",
        ],
    );
    openssl(
        &certs.0,
        &[
            "x509",
            "-req",
            "-in",
            "renewed.csr",
            "-CA",
            "good-ca.pem",
            "-CAkey",
            "good-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "good.ext",
            "-out",
            "renewed.pem",
        ],
    );
    let served = certs.0.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let install = |name: &str| {
        std::fs::copy(certs.0.join(format!("{name}.pem")), served.join("cert.pem")).unwrap();
        std::fs::copy(certs.0.join(format!("{name}.key")), served.join("key.pem")).unwrap();
    };
    install("good");
    let origin = Origin::start();
    let [https, rtmps] = free_ports::<2>();
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some(("AKIDtls", "tls-secret")),
        &format!(
            "[http]\ntls_port = {https}\n[rtmp]\ntls_port = {rtmps}\n\
             [tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
            d = served.display()
        ),
    )));
    assert!(gw.wait_log("HTTPS listening", Duration::from_secs(5)));

    // curl, verifying with the test CA.
    let ca = certs.0.join("good-ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "--cacert", ca.to_str().unwrap()])
        .arg(format!("https://localhost:{https}/healthz"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Tencent's SDK over HTTPS (the room does not exist yet: the API answered).
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/trtc_sdk_call.py");
    let out = Command::new(python)
        .args([
            script,
            &format!("localhost:{https}"),
            "AKIDtls",
            "tls-secret",
            "DismissRoomByStrRoomId",
            &json!({"SdkAppId": APP, "RoomId": "nobody"}).to_string(),
            "--https",
        ])
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("FailedOperation.RoomNotExist"),
        "{answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ffmpeg publishing over RTMPS, as OBS would, relayed to the origin.
    let sig = common::usersig(APP, KEY, "obs");
    let url = format!("rtmps://localhost:{rtmps}/push/tls?sdkappid={APP}&userid=obs&usersig={sig}");
    let _obs = Publisher::start(&url, 60, &gw.dir.0);
    let (relay, _) = gw.start_relay(&json!({
        "sdkappid": APP, "room": "tls", "userid": "obs", "rtmp": [origin.url("fromtls")]
    }));
    common::wait_for("the RTMPS anchor relayed", Duration::from_secs(20), || {
        gw.relay_status(&relay)["state"] == "running"
            && origin
                .recordings("fromtls")
                .last()
                .is_some_and(|f| decode(f.to_str().unwrap()).1 > 2.0)
    });

    // A renewed certificate, taken on SIGHUP without dropping the stream.
    assert!(
        served_subject(https).contains("CN = localhost"),
        "{}",
        served_subject(https)
    );
    assert!(!served_subject(https).contains("renewed"));
    install("renewed");
    let frames = gw.relay_status(&relay)["frames"].as_u64().unwrap();
    gw.signal("HUP");
    assert!(gw.wait_log("TLS certificate reloaded", Duration::from_secs(5)));
    assert!(
        served_subject(https).contains("O = renewed"),
        "{}",
        served_subject(https)
    );
    assert!(served_subject(rtmps).contains("O = renewed"));
    common::wait_for("the stream still flowing", Duration::from_secs(10), || {
        gw.relay_status(&relay)["frames"].as_u64().unwrap() > frames + 60
    });
    // A broken file is refused and the certificate in use kept.
    std::fs::write(served.join("cert.pem"), "garbage\n").unwrap();
    gw.signal("HUP");
    assert!(gw.wait_log("keeping the old one", Duration::from_secs(5)));
    assert!(served_subject(https).contains("O = renewed"));
    assert_eq!(gw.relay_status(&relay)["state"], "running");
}

#[test]
fn a_tls_port_without_a_certificate_is_refused_by_name() {
    let dir = TempDir::new("tls-port");
    std::fs::write(
        dir.0.join("roomcast.toml"),
        format!("[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[http]\ntls_port = 8443\n"),
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .arg("serve")
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tls_port") && err.contains("tls.cert"),
        "{err}"
    );
}
