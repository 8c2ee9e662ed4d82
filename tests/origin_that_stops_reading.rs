//! A CDN origin that accepts the push, then stops reading without closing:
//! the push notices within `rtmp.push_stall_timeout_secs`, reconnects and
//! publishes again; the relay's other target never notices. A stream too
//! slow to fill the origin's acknowledgement window within the timeout is
//! not taken for a stalled origin.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::media::{Origin, Publisher, decode};
use common::{Gateway, wait_for};
use serde_json::json;

const APP: u64 = 1_400_000_000;
const KEY: &str = "stall-test-key";

/// A TCP proxy to `upstream`. Its first connection forwards for `freeze_after`,
/// then closes the upstream side and never reads from the client again
/// (the socket stays open); later connections forward normally.
struct FreezingProxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FreezingProxy {
    fn start(upstream: u16, freeze_after: Duration) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let n = a.fetch_add(1, Ordering::Relaxed);
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let deadline = (n == 0).then(|| Instant::now() + freeze_after);
                held.push(client.try_clone().unwrap());
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || copy(server, c2, None, n == 0));
                std::thread::spawn(move || copy(client, s2, deadline, false));
            }
            drop(held);
        });
        FreezingProxy {
            port,
            accepted,
            stop,
        }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`; past `freeze`, closes `to` and stops reading
/// `from` (keeping it open) until the test ends. With `hold`, the end of
/// `from` is not passed on: `to` (the frozen client) stays open.
fn copy(mut from: TcpStream, mut to: TcpStream, freeze: Option<Instant>, hold: bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if freeze.is_some_and(|f| Instant::now() >= f) {
            let _ = to.shutdown(Shutdown::Both);
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    if hold {
        std::thread::sleep(Duration::from_secs(60));
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A gateway whose pushes stall after 3 s, and an nginx-rtmp origin.
fn gateway_and_origin() -> (Gateway, Origin) {
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        Some(("AKIDtest", "k")),
        "[rtmp]\npush_stall_timeout_secs = 3\n",
    )));
    (gw, Origin::start())
}

#[test]
fn a_stalled_origin_is_reconnected_and_the_other_target_never_notices() {
    let (gw, origin) = gateway_and_origin();
    let proxy = FreezingProxy::start(origin.port, Duration::from_secs(4));
    let frozen = format!("rtmp://127.0.0.1:{}/live/frozen", proxy.port);
    let (id, _) = gw.start_relay(
        &json!({"sdkappid": APP, "room": "stall", "userid": "host", "rtmp": [frozen, origin.url("steady")]}),
    );
    let mut obs = Publisher::start(&gw.publish_url(APP, KEY, "stall", "host"), 16, &gw.dir.0);

    // The freeze is noticed and the push reconnects through the proxy.
    wait_for(
        "the stalled push to reconnect",
        Duration::from_secs(20),
        || proxy.accepted.load(Ordering::Relaxed) >= 2,
    );
    assert!(
        gw.wait_log("origin stalled", Duration::from_secs(2)),
        "{}",
        gw.log_text()
    );
    wait_for(
        "the reconnected push to publish",
        Duration::from_secs(10),
        || gw.relay_status(&id)["targets"][0]["state"] == "publishing",
    );
    let st = gw.relay_status(&id);
    assert_eq!(st["targets"][1]["state"], "publishing", "{st}");

    assert!(
        obs.wait(Duration::from_secs(30)).unwrap().success(),
        "{}",
        obs.log_text()
    );
    // The steady target got everything in one piece; the frozen one got a
    // second recording after the reconnect, decodable from its start.
    let mut steady = Vec::new();
    wait_for("the steady recording", Duration::from_secs(15), || {
        steady = origin.recordings("steady");
        steady.len() == 1 && decode(steady[0].to_str().unwrap()).1 > 14.0
    });
    let (errors, duration) = decode(steady[0].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(duration > 14.0, "steady: {duration}");
    let again = origin.recordings("frozen");
    assert_eq!(again.len(), 2, "{again:?}");
    let (errors, duration) = decode(again[1].to_str().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(duration > 3.0, "after the reconnect: {duration}");
}

#[test]
fn a_stream_slower_than_the_acknowledgement_window_is_not_taken_for_a_stall() {
    // About 130 kbps: the origin acknowledges every 128 KiB, about every
    // 8 s, far apart beyond the 3 s stall timeout.
    let (gw, origin) = gateway_and_origin();
    let (id, _) = gw.start_relay(
        &json!({"sdkappid": APP, "room": "slow", "userid": "host", "rtmp": [origin.url("slow")]}),
    );
    let mut obs = Publisher::start_with(
        &gw.publish_url(APP, KEY, "slow", "host"),
        20,
        &gw.dir.0,
        &[
            "-b:v", "100k", "-maxrate", "100k", "-bufsize", "100k", "-b:a", "32k",
        ],
    );
    assert!(
        obs.wait(Duration::from_secs(40)).unwrap().success(),
        "{}",
        obs.log_text()
    );
    let st = gw.relay_status(&id);
    assert_eq!(st["targets"][0]["state"], "publishing", "{st}");
    let log = gw.log_text();
    assert!(!log.contains("rtmp push retrying"), "{log}");
    // Acknowledgements did come, slower than the timeout: the rule was
    // in force, and held.
    assert!(log.contains("rtmp push publishing"), "{log}");
    let mut got = Vec::new();
    wait_for("the slow recording", Duration::from_secs(15), || {
        got = origin.recordings("slow");
        got.len() == 1 && decode(got[0].to_str().unwrap()).1 > 18.0
    });
    assert_eq!(got.len(), 1, "{got:?}");
}
