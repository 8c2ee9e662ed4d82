//! Bad RTMP publishers are refused with a clear log line and never disturb a
//! good publisher relayed at the same time.

mod common;

use common::unix_now;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::media::{Publisher, decode};
use common::{Gateway, closed_within, http, rtmp_handshake};
use roomcast::auth::usersig;
use serde_json::{Value, json};

const APP: u64 = 1_400_000_000;
const KEY: &str = "bad-input-key";

fn url(gw: &Gateway, room: &str, user: &str, sig: &str) -> String {
    format!(
        "rtmp://127.0.0.1:{}/push/{room}?sdkappid={APP}&userid={user}&usersig={sig}",
        gw.rtmp_port()
    )
}

#[test]
fn bad_publishers_are_refused_and_a_good_one_is_unaffected() {
    let config = format!(
        "[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[[api.credentials]]\nsecret_id = \"AKID\"\nsecret_key = \"k\"\n"
    );
    let gw = Gateway::start(Some(&config));
    let port = gw.rtmp_port();
    let body = json!({"sdkappid": APP, "room": "good", "userid": "anchor"}).to_string();
    let (code, _, text) = http(gw.http_port, "POST", "/v1/relays", Some(&body)).unwrap();
    assert_eq!(code, 201, "{text}");
    let task: Value = serde_json::from_str(&text).unwrap();
    let (id, stream) = (
        task["task_id"].as_str().unwrap(),
        task["stream"].as_str().unwrap(),
    );
    let good_sig = common::usersig(APP, KEY, "anchor");
    let mut good = Publisher::start(&url(&gw, "good", "anchor", &good_sig), 20, &gw.dir.0);
    let frames = || -> u64 {
        let (_, _, t) = http(gw.http_port, "GET", &format!("/v1/relays/{id}"), None).unwrap();
        serde_json::from_str::<Value>(&t).unwrap()["frames"]
            .as_u64()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames() == 0 {
        assert!(Instant::now() < deadline, "good publisher not relayed");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A wrong key and an expired sig: ffmpeg is refused at publish.
    let wrong = usersig::generate(APP, "not-the-key", "mallory", 3600, unix_now(), None);
    let expired = usersig::generate(APP, KEY, "mallory", 10, unix_now() - 100, None);
    for (sig, reason) in [(wrong, "bad signature"), (expired, "expired")] {
        let mut bad = Publisher::start(&url(&gw, "good", "mallory", &sig), 3, &gw.dir.0);
        let exit = bad
            .wait(Duration::from_secs(15))
            .expect("refused publisher exits");
        assert!(!exit.success());
        assert!(
            gw.wait_log(reason, Duration::from_secs(5)),
            "no log line for {reason}: {}",
            gw.log_text()
        );
    }
    // The same user publishing twice: the second is refused.
    let mut twice = Publisher::start(&url(&gw, "good", "anchor", &good_sig), 3, &gw.dir.0);
    assert!(!twice.wait(Duration::from_secs(15)).unwrap().success());
    assert!(
        gw.wait_log("already publishing", Duration::from_secs(5)),
        "{}",
        gw.log_text()
    );

    // Garbage instead of a handshake.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&[0xffu8; 3000]).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    assert!(
        gw.wait_log("bad handshake", Duration::from_secs(5)),
        "{}",
        gw.log_text()
    );

    // A handshake, then silence: dropped after the handshake timeout.
    let mut s = rtmp_handshake(port);
    assert!(closed_within(&mut s, Duration::from_secs(15)));
    assert!(
        gw.wait_log("not completed in time", Duration::from_secs(5)),
        "{}",
        gw.log_text()
    );

    // An oversized message: a 16 MiB video message after a huge chunk size.
    let mut s = rtmp_handshake(port);
    let mut msg = vec![0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0];
    msg.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    msg.extend_from_slice(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 0x09, 1, 0, 0, 0]);
    s.write_all(&msg).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..(6 * 16) {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    assert!(
        gw.wait_log("message larger than", Duration::from_secs(5)),
        "{}",
        gw.log_text()
    );

    // A play request is refused.
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
            &url(&gw, "good", "viewer", "x"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        gw.wait_log("play requests are not served", Duration::from_secs(5)),
        "{}",
        gw.log_text()
    );

    // The good publisher never noticed.
    let before = frames();
    std::thread::sleep(Duration::from_secs(1));
    assert!(frames() > before, "still relaying");
    assert!(
        good.wait(Duration::from_secs(30)).unwrap().success(),
        "{}",
        good.log_text()
    );
    let (errors, _) = decode(&format!(
        "http://127.0.0.1:{}/hls/{stream}/index.m3u8",
        gw.http_port
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!gw.log_text().contains("panicked"));
}
