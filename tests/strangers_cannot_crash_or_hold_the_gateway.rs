//! What an unauthenticated stranger can send before any credential is
//! checked: AMF0 nested a hundred thousand deep, a 4 MiB `connect`, an RTMP
//! message that never completes, idle and trickling HTTP connections, and a
//! WHIP offer that is not SDP. Each closes only that connection, with a log
//! line naming why and the peer; an honest publisher in another room keeps
//! publishing, its HLS keeps advancing, and the process stays up.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::media::Publisher;
use common::{
    Gateway, callback_events, callback_receiver, closed_within, http, http_get, http_with,
    rtmp_handshake, wait_for,
};
use serde_json::json;

/// Media tests encode in real time; one at a time on a 2-core machine.
static MEDIA: Mutex<()> = Mutex::new(());

const APP: u64 = 1_400_000_000;
const KEY: &str = "stranger-test-key";

const OBJECT: u8 = 0x03;
const ECMA_ARRAY: u8 = 0x08;
const STRICT_ARRAY: u8 = 0x0a;

/// A `connect` command whose first argument nests `depth` containers of
/// `marker`, closed properly (it is well-formed AMF0, only deep).
fn nested_connect(marker: u8, depth: usize) -> Vec<u8> {
    let mut b = vec![0x02, 0, 7];
    b.extend_from_slice(b"connect");
    b.push(0x00);
    b.extend_from_slice(&1f64.to_be_bytes());
    for _ in 0..depth {
        b.push(marker);
        match marker {
            OBJECT => b.extend_from_slice(&[0, 3, b'a', b'p', b'p']),
            ECMA_ARRAY => b.extend_from_slice(&[0, 0, 0, 1, 0, 3, b'a', b'p', b'p']),
            _ => b.extend_from_slice(&[0, 0, 0, 1]),
        }
    }
    b.push(0x05);
    if marker != STRICT_ARRAY {
        for _ in 0..depth {
            b.extend_from_slice(&[0, 0, 0x09]);
        }
    }
    b
}

/// A `connect` with one flat object of about `bytes` bytes.
fn flat_connect(bytes: usize) -> Vec<u8> {
    let mut b = vec![0x02, 0, 7];
    b.extend_from_slice(b"connect");
    b.push(0x00);
    b.extend_from_slice(&1f64.to_be_bytes());
    b.push(OBJECT);
    let mut i = 0u32;
    while b.len() < bytes {
        let name = format!("k{i}");
        b.extend_from_slice(&(name.len() as u16).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b.push(0x00);
        b.extend_from_slice(&f64::from(i).to_be_bytes());
        i += 1;
    }
    b.extend_from_slice(&[0, 0, 0x09]);
    b
}

/// Set Chunk Size 1 MiB, then `payload` as one message of `type_id` (20:
/// AMF0 command, 17: AMF3 command, 18: AMF0 data).
fn command_message(type_id: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0];
    b.extend_from_slice(&(1u32 << 20).to_be_bytes());
    let len = payload.len() as u32;
    b.push(0x03);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&len.to_be_bytes()[1..]);
    b.push(type_id);
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(payload);
    b
}

/// The newest segment named in an HLS playlist.
fn last_segment(gw: &Gateway, stream: &str) -> Option<String> {
    let (code, body) = http_get(gw.http_port, &format!("/hls/{stream}/index.m3u8")).ok()?;
    if code != 200 {
        return None;
    }
    body.lines()
        .rev()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
}

#[test]
fn abusive_rtmp_commands_close_only_their_own_connection() {
    let _media = MEDIA.lock().unwrap_or_else(|e| e.into_inner());
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        None,
        "[rtmp]\nhandshake_timeout_secs = 3\n",
    )));
    let port = gw.rtmp_port();
    let (_, stream) =
        gw.start_relay(&json!({"sdkappid": APP, "room": "honest", "userid": "anchor"}));
    let mut honest = Publisher::start(&gw.publish_url(APP, KEY, "honest", "anchor"), 40, &gw.dir.0);
    let mut seen = None;
    wait_for("the honest anchor's HLS", Duration::from_secs(20), || {
        seen = last_segment(&gw, &stream);
        seen.is_some()
    });

    // Deep AMF0, each container kind: 100,000 levels (refused by size at the
    // chunk header) and 4,000 (small enough to be read, refused by depth).
    let mut cases = Vec::new();
    for marker in [OBJECT, STRICT_ARRAY, ECMA_ARRAY] {
        cases.push((20, nested_connect(marker, 100_000), "message larger than"));
        cases.push((20, nested_connect(marker, 4_000), "nested deeper than"));
    }
    // The AMF3-flagged command and AMF0 data types are decoded as AMF0 too.
    cases.push((17, nested_connect(OBJECT, 4_000), "nested deeper than"));
    cases.push((18, nested_connect(OBJECT, 4_000), "nested deeper than"));
    // A 4 MiB flat object.
    cases.push((20, flat_connect(4 << 20), "message larger than"));
    for (type_id, payload, reason) in cases {
        let mut s = rtmp_handshake(port);
        let local = s.local_addr().unwrap().to_string();
        // The server may close before all of it is written.
        let _ = s.write_all(&command_message(type_id, &payload));
        assert!(
            closed_within(&mut s, Duration::from_secs(5)),
            "{reason}: still open"
        );
        let line = format!("peer={local}");
        wait_for(
            &format!("a log line for {reason}"),
            Duration::from_secs(5),
            || {
                gw.log_text()
                    .lines()
                    .any(|l| l.contains(&line) && l.contains(reason))
            },
        );
    }

    // A declared 16 MiB message is refused at its header, before any body.
    let mut s = rtmp_handshake(port);
    s.write_all(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 0x09, 1, 0, 0, 0])
        .unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(2)));
    assert!(t0.elapsed() < Duration::from_secs(2));
    // A message under the limit that never completes: dropped at the
    // publish deadline (3 s from accept here), not held open.
    let mut s = rtmp_handshake(port);
    let mut partial = vec![0x04, 0, 0, 0, 0x30, 0, 0, 0x09, 1, 0, 0, 0];
    partial.extend_from_slice(&[0u8; 100]);
    s.write_all(&partial).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(6)));
    // And one trickling a byte at a time is dropped at the same deadline.
    let mut s = rtmp_handshake(port);
    let t0 = Instant::now();
    let mut dropped = false;
    while t0.elapsed() < Duration::from_secs(8) {
        // 0x09 bytes make a type-0 header of a 592 KB video message, then its body.
        if s.write_all(&[0x09]).is_err() || closed_within(&mut s, Duration::from_millis(300)) {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "a trickling connection was held open");
    assert!(gw.wait_log("not completed in time", Duration::from_secs(5)));

    // The honest anchor never noticed: its HLS keeps advancing.
    let before = seen.clone();
    wait_for(
        "the HLS playlist to advance",
        Duration::from_secs(15),
        || {
            let now = last_segment(&gw, &stream);
            now.is_some() && now != before
        },
    );
    assert_eq!(http_get(gw.http_port, "/healthz").unwrap().0, 200);
    assert!(
        honest.child.try_wait().unwrap().is_none(),
        "{}",
        honest.log_text()
    );
    let log = gw.log_text();
    assert!(
        !log.contains("panicked") && !log.contains("overflow"),
        "{log}"
    );
    // Each limit that bit is counted.
    let (_, metrics) = http_get(gw.http_port, "/metrics").unwrap();
    for limit in ["amf", "message_size", "handshake_timeout"] {
        let line = format!(r#"roomcast_limit_refusals_total{{edge="rtmp",limit="{limit}"}} "#);
        assert!(metrics.contains(&line), "{limit}: {metrics}");
    }
    drop(honest);
}

/// Whether the server has closed `s` (a read gives end of file or a reset).
fn is_closed(mut s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// `n` blocking connections to loopback `port` from 127.0.0.2.
fn connect_from_second_loopback(port: u16, n: usize) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut all = Vec::new();
        for _ in 0..n {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
            let s = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
            let s = s.into_std().unwrap();
            s.set_nonblocking(false).unwrap();
            all.push(s);
        }
        all
    })
}

#[test]
fn idle_slow_and_excess_http_connections_are_closed() {
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        None,
        "[http]\nheader_timeout_secs = 2\nidle_timeout_secs = 3\nmax_connections_per_ip = 40\n",
    )));
    let port = gw.http_port;
    let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();

    // Sixty idle connections from one address: twenty over the cap are
    // closed on accept. The address is 127.0.0.2: the health probe's
    // connection from 127.0.0.1 can hold its place for a moment after the
    // probe closed it, and the cap is per address.
    let opened = Instant::now();
    let idle = connect_from_second_loopback(port, 60);
    wait_for(
        "20 connections refused over the cap",
        Duration::from_secs(2),
        || idle.iter().filter(|s| is_closed(s)).count() >= 20,
    );
    let open = idle.iter().filter(|s| !is_closed(s)).count();
    if opened.elapsed() < Duration::from_millis(1500) {
        assert_eq!(open, 40, "the admitted ones wait for their header timeout");
    }
    assert!(gw.wait_log("max_connections_per_ip", Duration::from_secs(2)));
    // The admitted ones sent nothing: closed at the header timeout.
    wait_for(
        "the idle connections to be closed",
        Duration::from_secs(4),
        || idle.iter().all(is_closed),
    );
    assert!(gw.wait_log("no complete request headers within", Duration::from_secs(2)));

    // Slowloris: a request line, then a header line now and then.
    let mut slow = connect();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A keep-alive connection after one complete request.
    let mut kept = connect();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = kept.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // A body that stalls: the headers are complete, so only the idle
    // timeout ends it.
    let mut stalled = connect();
    stalled
        .write_all(b"POST /v1/relays HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sdk")
        .unwrap();
    let t0 = Instant::now();
    let mut slow_closed = None;
    let mut kept_closed = None;
    let mut stalled_closed = None;
    while t0.elapsed() < Duration::from_secs(8) {
        if slow_closed.is_none()
            && (slow.write_all(b"X-Trickle: 1\r\n").is_err() || is_closed(&slow))
        {
            slow_closed = Some(t0.elapsed());
        }
        if kept_closed.is_none() && is_closed(&kept) {
            kept_closed = Some(t0.elapsed());
        }
        if stalled_closed.is_none() && is_closed(&stalled) {
            stalled_closed = Some(t0.elapsed());
        }
        if slow_closed.is_some() && kept_closed.is_some() && stalled_closed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let slow_closed = slow_closed.expect("a trickling request was held open");
    let kept_closed = kept_closed.expect("an idle keep-alive connection was held open");
    let stalled_closed = stalled_closed.expect("a stalled body was held open");
    assert!(slow_closed < Duration::from_secs(4), "{slow_closed:?}");
    assert!(kept_closed < Duration::from_secs(4), "{kept_closed:?}");
    // Idle timeout 3 s: not before it, and soon after.
    assert!(
        stalled_closed >= Duration::from_millis(2500),
        "{stalled_closed:?}"
    );
    assert!(
        stalled_closed < Duration::from_secs(6),
        "{stalled_closed:?}"
    );
    assert!(gw.wait_log("no traffic for", Duration::from_secs(2)));
    // Places came back: a new client is served.
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    // Each limit that bit is counted.
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let count = |labels: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("roomcast_limit_refusals_total{{{labels}}} ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        count(r#"edge="http",limit="connections_per_ip""#) >= 20,
        "{metrics}"
    );
    assert!(
        count(r#"edge="http",limit="header_timeout""#) >= 40,
        "{metrics}"
    );
}

#[test]
fn a_garbage_whip_offer_leaves_no_room_behind() {
    let _media = MEDIA.lock().unwrap_or_else(|e| e.into_inner());
    let (cb_port, seen) = callback_receiver(0);
    let gw = Gateway::start(Some(&common::app_config(
        APP,
        KEY,
        None,
        &format!(
            "callback_url = \"http://127.0.0.1:{cb_port}/events\"\ncallback_key = \"cb-key\"\n"
        ),
    )));
    let sig = common::usersig(APP, KEY, "mallory");
    let auth = format!("Bearer {sig}");
    let valid_looking = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
         a=sendonly\r\na=rtpmap:111 opus/48000/2\r\n";
    let offers: [&[u8]; 4] = [
        b"hello, this is not SDP",
        // The shape of SDP, not its grammar.
        b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\x01garbage\r\nzzz\r\n",
        // Parses, but carries no ICE credentials or DTLS fingerprint.
        valid_looking.as_bytes(),
        &[0xff, 0xfe, 0x00, 0x01],
    ];
    for offer in offers {
        let (code, _, body) = http_with(
            gw.http_port,
            "POST",
            "/v1/whip/lure?sdkappid=1400000000&userid=mallory&roomtype=str",
            &[
                ("Content-Type", "application/sdp"),
                ("Authorization", &auth),
            ],
            offer,
        )
        .unwrap();
        assert_eq!(code, 400, "{body}");
    }
    // A real anchor in another room: its 101 (room created) is called back,
    // so the receiver works and the refused offers really left nothing.
    let mut anchor = Publisher::start(&gw.publish_url(APP, KEY, "real", "anchor"), 2, &gw.dir.0);
    wait_for("the real room's callback", Duration::from_secs(20), || {
        callback_events(&seen)
            .iter()
            .any(|(g, t, info)| (*g, *t) == (1, 101) && info["RoomId"] == "real")
    });
    assert!(anchor.wait(Duration::from_secs(20)).is_some());
    for (group, ty, info) in callback_events(&seen) {
        assert_ne!(
            info["RoomId"], "lure",
            "callback {group}/{ty} for the refused room"
        );
    }
    let log = gw.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("room event") && l.contains("lure")),
        "{log}"
    );
    // The relay listing knows nothing of it either.
    let (_, _, relays) = http(gw.http_port, "GET", "/v1/relays", None).unwrap();
    assert!(!relays.contains("lure"), "{relays}");
}
