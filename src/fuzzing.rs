//! The doors strangers' bytes come in by, one function each, for the fuzz
//! targets in `fuzz/` and for `tests/fuzz_regressions.rs`, which replays
//! every seed and every input that once failed on stable.
//!
//! Each function takes arbitrary bytes and must return: a panic, an abort
//! or a hang (an in-memory connection still open after [`HANG`]) is a
//! finding. The pure ones call the parser directly. The others drive the
//! real gateway in memory: [`rtmp_ingest`] runs the ingest connection over
//! an in-memory socket, [`http`] serves raw bytes on one HTTP/1.1
//! connection to the real router, [`trtc_api`] and [`whip_offer`] sign or
//! authenticate what the fuzzer wrote (it cannot forge an HMAC) so that the
//! handlers behind the signature are reached, and [`signalling`] sends
//! messages on an upgraded room WebSocket. The gateway is built once per
//! process, and every room, relay and ingest is ended after each input.
//!
//! Each returns how far its input got (frames published, parts written, a
//! request past its signature...), so the regression test can show that
//! the real captures the corpora start from reach the deep code.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{ApiCredential, AppConfig, Config};
use crate::media::hub::MediaHub;
use crate::media::{MediaMessage, TrackKind, h264};
use crate::room::{Command, RoomHandle};

/// An in-memory connection still open this long after its input ended hangs.
pub const HANG: Duration = Duration::from_secs(10);
/// The application every authenticated input uses.
pub const SDKAPPID: u64 = 1_400_000_001;
/// Its UserSig key.
pub const APP_KEY: &str = "fuzz-app-key-0123456789abcdef0123456789abcdef";
/// The TC3 caller [`trtc_api`] signs as.
/// (Tencent's documented example credential, which the SDK captures in
/// `fixtures/trtc` are signed with.)
pub const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
/// Its key.
pub const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";

/// RTMP, from the first byte of the handshake: the ingest connection as it
/// runs on a socket (handshake, chunk reader, rml_rtmp's session, the
/// publish checks, FLV parsing, the room and the hub). Returns the media
/// bytes it published.
pub fn rtmp_ingest(data: &[u8]) -> u64 {
    let g = gateway();
    let counter = crate::metrics::metrics()
        .bytes_in
        .get_or_create(&crate::metrics::EdgeLabel {
            edge: crate::metrics::Edge::Rtmp,
        })
        .clone();
    let before = counter.get();
    g.run(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let ingest = crate::rtmp::ingest::Ingest {
            config: g.config.clone(),
            rooms: g.rooms.clone(),
            hub: g.hub.clone(),
            loops: crate::rtmp::loops::Loops::none(),
        };
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("literal");
        let deadline = tokio::time::Instant::now() + HANG;
        let conn = tokio::spawn(ingest.serve_connection(Box::new(server), peer, deadline));
        talk(client, data).await;
        if crate::ticks::timeout(HANG, conn).await.is_err() {
            panic!("the RTMP connection did not end within {HANG:?} of its input");
        }
    });
    counter.get() - before
}

/// RTMP chunks after the handshake: the chunk reader and rml_rtmp's session
/// as the ingest drives them, accepting every request, parsing every media
/// message as FLV. Much faster than [`rtmp_ingest`]. Returns the media
/// messages parsed.
pub fn rtmp_chunks(data: &[u8]) -> u64 {
    use rml_rtmp::sessions::{
        ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
    };
    let mut parsed = 0;
    let Some((&split, data)) = data.split_first() else {
        return parsed;
    };
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else {
        return parsed;
    };
    if session
        .handle_input(&crate::rtmp::chunk::SESSION_PREAMBLE)
        .is_err()
    {
        return parsed;
    }
    let mut feed = crate::rtmp::chunk::SessionFeed::new(Default::default());
    // Reads of varying size, as a socket delivers them.
    let step = usize::from(split).max(1) * 16;
    for piece in data.chunks(step) {
        let read = feed.push(piece);
        while let Some(framed) = feed.next_framed() {
            let Ok(results) = session.handle_input(framed) else {
                return parsed;
            };
            for r in results {
                let ServerSessionResult::RaisedEvent(ev) = r else {
                    continue;
                };
                let media = match ev {
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                        let _ = session.accept_request(request_id);
                        continue;
                    }
                    ServerSessionEvent::VideoDataReceived {
                        data, timestamp, ..
                    } => crate::rtmp::flv::parse_video(data, timestamp.value),
                    ServerSessionEvent::AudioDataReceived {
                        data, timestamp, ..
                    } => crate::rtmp::flv::parse_audio(data, timestamp.value),
                    _ => continue,
                };
                parsed += u64::from(matches!(media, Ok(Some(_))));
            }
        }
        if read.is_err() {
            break;
        }
    }
    parsed
}

/// FLV tag bodies (what RTMP audio and video messages carry) through
/// everything that reads them: the FLV parser, the AVCC and ADTS/ASC
/// helpers, the MPEG-TS packetiser and the CMAF segmenter that write HLS
/// segments and parts. Input: records
/// of `[kind (even: audio, odd: video), timestamp (4, BE), length (2, BE),
/// body]`. Returns the HLS parts written.
pub fn flv_media(data: &[u8]) -> u64 {
    use crate::hls::cmaf::Event;
    let mut parts = 0;
    let mut segmenter = crate::hls::cmaf::Segmenter::new(2000, 200);
    let mut events = Vec::new();
    let mut sets: Vec<Bytes> = Vec::new();
    let mut configs: [Option<crate::media::TrackConfig>; 2] = [None, None];
    let mut ts_mux = None;
    let mut packets = Vec::new();
    let mut rest = data;
    let mut last_ts = 0u64;
    while rest.len() >= 7 {
        let kind = rest[0];
        let ts = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = usize::from(u16::from_be_bytes([rest[5], rest[6]]));
        let body = &rest[7..(7 + len).min(rest.len())];
        rest = &rest[(7 + len).min(rest.len())..];
        let body = Bytes::copy_from_slice(body);
        let parsed = if kind.is_multiple_of(2) {
            crate::rtmp::flv::parse_audio(body, ts)
        } else {
            crate::rtmp::flv::parse_video(body, ts)
        };
        let Ok(Some(msg)) = parsed else { continue };
        match &msg {
            MediaMessage::Config(c) => {
                configs[usize::from(c.kind == TrackKind::Video)] = Some(c.clone());
                let [audio, video] = &configs;
                ts_mux = crate::hls::ts::TsMuxer::new(video.as_ref(), audio.as_ref()).ok();
                if let Some(mux) = ts_mux.as_mut() {
                    packets.clear();
                    mux.tables(&mut packets);
                }
            }
            MediaMessage::Frame(f) => {
                if let Some(mux) = ts_mux.as_mut() {
                    packets.clear();
                    mux.frame(f, &mut packets);
                    mux.flush(&mut packets);
                    assert_eq!(packets.len() % 188, 0, "whole TS packets");
                }
            }
        }
        match &msg {
            MediaMessage::Config(c) if c.kind == TrackKind::Video => {
                sets = h264::parameter_sets(&c.extradata)
                    .into_iter()
                    .map(Bytes::copy_from_slice)
                    .collect();
                for s in &sets {
                    let _ = h264::sps_dimensions(s);
                }
            }
            MediaMessage::Config(c) => {
                let _ = crate::hls::writer::aac_rate_channels(&c.extradata);
            }
            MediaMessage::Frame(f) if f.kind == TrackKind::Video => {
                let prefix: Vec<&[u8]> = sets.iter().map(|s| &s[..]).collect();
                let annexb = h264::avcc_to_annexb(&f.data, &prefix);
                let _ = h264::annexb_to_avcc(&annexb);
                let _ = h264::avcc_record(&annexb);
            }
            MediaMessage::Frame(_) => {}
        }
        last_ts = last_ts.max(u64::from(ts));
        segmenter.push(&msg, last_ts, &mut events);
        parts += events
            .drain(..)
            .filter(|e| matches!(e, Event::Part { .. }))
            .count() as u64;
    }
    segmenter.finish(last_ts, &mut events);
    parts
        + events
            .iter()
            .filter(|e| matches!(e, Event::Part { .. }))
            .count() as u64
}

/// RTP packets into a WebRTC track's depacketizer, as a WHIP publisher's
/// arrive. The first byte picks the codec (H.264, VP8, VP9, Opus); then
/// records of `[length (2, BE), packet]`, where a packet whose first byte
/// is 0 is a sender report (`ntp (8), rtp (4)`). Returns the frames and
/// configurations it put out.
pub fn rtp_depacketize(data: &[u8]) -> u64 {
    use rtc::shared::marshal::Unmarshal;
    let mut frames = 0;
    let Some((&codec, mut rest)) = data.split_first() else {
        return frames;
    };
    let (mime, rate) = match codec % 4 {
        0 => ("video/H264", 90_000),
        1 => ("video/VP8", 90_000),
        2 => ("video/VP9", 90_000),
        _ => ("audio/opus", 48_000),
    };
    let start = Instant::now();
    let clock = crate::webrtc::depacketize::SessionClock::new(start);
    let Some(mut track) = crate::webrtc::depacketize::TrackDepacketizer::new(mime, rate, clock)
    else {
        return frames;
    };
    let mut out = Vec::new();
    let mut i = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = (2 + len).min(rest.len());
        let packet = &rest[2..end];
        rest = &rest[end..];
        i += 1;
        // Packets 5 ms apart, so the depacketizer's waits run out.
        let now = start + Duration::from_millis(5 * i);
        if packet.first() == Some(&0) && packet.len() >= 13 {
            let ntp = u64::from_be_bytes(packet[1..9].try_into().expect("8 bytes"));
            let rtp = u32::from_be_bytes(packet[9..13].try_into().expect("4 bytes"));
            track.sender_report(now, ntp, rtp);
            continue;
        }
        let mut buf = Bytes::copy_from_slice(packet);
        if let Ok(p) = rtc::rtp::Packet::unmarshal(&mut buf) {
            track.push(now, p, &mut out);
            frames += out.len() as u64;
            out.clear();
        }
    }
    frames
}

/// An SDP offer through the checks WHIP and WHEP make before anything is
/// allocated (webrtc-rs's parser included). Returns whether WHIP and
/// whether WHEP would take it.
pub fn sdp_offer(data: &[u8]) -> (bool, bool) {
    use crate::webrtc::{Way, check_offer};
    let sdp = String::from_utf8_lossy(data);
    (
        check_offer(&sdp, Way::Publish).is_ok(),
        check_offer(&sdp, Way::Play).is_ok(),
    )
}

/// A WHIP publish with an offer the fuzzer wrote, through the router and a
/// real peer connection's negotiation; the session is deleted after.
/// Returns whether it was answered (201).
pub fn whip_offer(data: &[u8]) -> bool {
    let g = gateway();
    let body = data.to_vec();
    let mut created = false;
    g.run(async {
        let sig = usersig("whip");
        let req = axum::http::Request::post(format!(
            "/v1/whip/fuzz?sdkappid={SDKAPPID}&userid=whip&roomtype=str"
        ))
        .header("content-type", "application/sdp")
        .header("authorization", format!("Bearer {sig}"))
        .body(axum::body::Body::from(body))
        .expect("request");
        let resp = g.call(req).await;
        created = resp.status() == axum::http::StatusCode::CREATED;
        if let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
            let del = axum::http::Request::delete(loc.to_owned())
                .body(axum::body::Body::empty())
                .expect("request");
            let _ = g.call(del).await;
        }
    });
    created
}

/// A TC3-signed request in its parts: lines `Authorization`,
/// `X-TC-Timestamp`, `Host`, `Content-Type`, then the body. Verified at the
/// time it names, so the checks past the clock's are reached. Returns
/// whether it verified.
pub fn tc3_verify(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(5, '\n');
    let auth = lines.next().unwrap_or("");
    let timestamp = lines.next().unwrap_or("");
    let host = lines.next().unwrap_or("");
    let content_type = lines.next().unwrap_or("");
    let body = lines.next().unwrap_or("");
    let now = timestamp.trim().parse().unwrap_or(0);
    let header = |name: &str| match name {
        "authorization" => Some(auth),
        "x-tc-timestamp" => Some(timestamp),
        "host" => Some(host),
        "content-type" => Some(content_type),
        "x-tc-action" => Some("DescribeRoomInfo"),
        _ => None,
    };
    let req = crate::auth::tc3::SignedRequest {
        method: "POST",
        path: "/",
        query: "",
        header: &header,
        body: body.as_bytes(),
    };
    crate::auth::tc3::verify(&req, now, 300, |id| (id == SECRET_ID).then_some(SECRET_KEY)).is_ok()
}

/// A TRTC API call: the first line is the action, the rest its JSON body,
/// signed as Tencent's SDKs sign and sent through the router. Returns the
/// answer's error code (`None`: a success).
pub fn trtc_api(data: &[u8]) -> Option<String> {
    let g = gateway();
    let mut code = Some(String::new());
    let text = String::from_utf8_lossy(data).into_owned();
    let (action, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (action, body) = (action.trim().to_owned(), body.to_owned());
    g.run(async {
        let now = crate::unix_now();
        let auth = crate::auth::tc3::authorization_for_post(
            SECRET_ID,
            SECRET_KEY,
            now,
            "trtc.tencentcloudapi.com",
            "application/json",
            body.as_bytes(),
        );
        let Ok(req) = axum::http::Request::post("/")
            .header("host", "trtc.tencentcloudapi.com")
            .header("content-type", "application/json")
            .header("authorization", auth)
            .header("x-tc-action", action)
            .header("x-tc-version", "2019-07-22")
            .header("x-tc-timestamp", now.to_string())
            .body(axum::body::Body::from(body))
        else {
            return;
        };
        let resp = g.call(req).await;
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        code = v["Response"]["Error"]["Code"].as_str().map(str::to_owned);
    });
    code
}

/// Raw bytes on one HTTP/1.1 connection to the router: every route, its
/// queries, headers and bodies (the TRTC API's signature check, HLS file
/// names and delivery directives, WHIP/WHEP, the console, upgrades).
/// Returns the bytes answered.
pub fn http(data: &[u8]) -> u64 {
    let g = gateway();
    let mut answered = 0;
    g.run(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let conn = tokio::spawn(g.serve_http(server));
        answered = talk(client, data).await;
        if crate::ticks::timeout(HANG, conn).await.is_err() {
            panic!("the HTTP connection did not end within {HANG:?} of its input");
        }
    });
    answered
}

/// The room WebSocket: the first line is the query after the credentials
/// (`role=anchor&scene=live`...), every further line one text message.
/// Returns the messages the gateway sent.
pub fn signalling(data: &[u8]) -> u64 {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let g = gateway();
    let text = String::from_utf8_lossy(data).into_owned();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = received.clone();
    g.run(async move {
        let mut lines = text.split('\n');
        let extra = lines.next().unwrap_or("");
        let sig = usersig("ws");
        let url = format!(
            "ws://127.0.0.1/v1/rooms/fuzz/ws?sdkappid={SDKAPPID}&userid=ws&usersig={sig}&{extra}"
        );
        let (client, server) = tokio::io::duplex(64 * 1024);
        let conn = tokio::spawn(g.serve_http(server));
        if let Ok((ws, _)) = tokio_tungstenite::client_async(url.as_str(), client).await {
            use futures_util::StreamExt;
            let (mut ws_tx, mut ws_rx) = ws.split();
            let drain = tokio::spawn(async move {
                while let Some(Ok(_)) = ws_rx.next().await {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            for line in lines {
                if ws_tx.send(Message::text(line.to_owned())).await.is_err() {
                    break;
                }
            }
            let _ = ws_tx.close().await;
            if crate::ticks::timeout(HANG, drain).await.is_err() {
                panic!("the room WebSocket was not closed within {HANG:?} of the client's close");
            }
        }
        if crate::ticks::timeout(HANG, conn).await.is_err() {
            panic!("the signalling connection did not end within {HANG:?} of its input");
        }
    });
    received.load(std::sync::atomic::Ordering::Relaxed)
}

/// An HLS request's file name and query (`<file>?<query>`) against a live
/// LL-HLS playlist: the object named, the delivery directives, the
/// blocking-reload decision and the playlist rendered. Returns whether the
/// directives were valid.
pub fn hls_request(data: &[u8]) -> bool {
    use crate::hls::live::{Directives, LivePlaylist, LiveSettings, Object, Part, SegmentStart};
    let text = String::from_utf8_lossy(data);
    let (file, query) = match text.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (&*text, None),
    };
    let _ = Object::parse(file);
    let Ok(d) = Directives::parse(query) else {
        return false;
    };
    let mut playlist = LivePlaylist::new(LiveSettings {
        segment_ms: 2000,
        part_ms: Some(200),
        window: 3,
    });
    for i in 0..57u64 {
        let start = (i % 10 == 0).then_some(SegmentStart {
            discontinuity: i == 30,
            init: 0,
            program_date_time_ms: 1_700_000_000_000 + 200 * i,
        });
        if start.is_some() && i > 0 {
            playlist.finish_segment();
        }
        playlist.add_part(
            Part {
                duration_ms: 200,
                independent: i % 10 == 0,
            },
            start,
        );
    }
    if let Some(msn) = d.msn {
        let _ = playlist.reload(msn, d.part);
        if let Some(part) = d.part {
            let _ = playlist.may_wait_for_part(msn, part);
        }
    }
    let _ = playlist.render(d.skip);
    true
}

/// A relay profile file (`profiles/*.toml`), parsed and validated.
/// Returns whether it is valid.
pub fn profile_toml(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let dir = std::path::Path::new("profiles");
    crate::profile::parse(&text, "fuzz", &dir.join("fuzz.toml"), dir).is_ok()
}

/// `roomcast.toml`, parsed and validated as `serve` loads it. Returns
/// whether it is valid.
pub fn config_toml(data: &[u8]) -> bool {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};
    let text = String::from_utf8_lossy(data);
    let fig = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&text));
    match fig.extract::<Config>() {
        Ok(c) => {
            let _ = c.limits.cpu_budget();
            c.validate().is_ok()
        }
        Err(_) => false,
    }
}

/// Writes `data` to `client` in reads of varying size while draining what
/// the server says, then closes the client's side. Returns the bytes the
/// server sent.
async fn talk(client: tokio::io::DuplexStream, data: &[u8]) -> u64 {
    let (mut rx, mut tx) = tokio::io::split(client);
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0u64;
        while let Ok(n) = rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    for piece in data.chunks(4096) {
        if tx.write_all(piece).await.is_err() {
            break;
        }
    }
    let _ = tx.shutdown().await;
    match crate::ticks::timeout(HANG, drain).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => 0,
        Err(_) => panic!("the server did not close the connection within {HANG:?} of its input"),
    }
}

fn usersig(user: &str) -> String {
    let now = crate::unix_now();
    crate::auth::usersig::generate(SDKAPPID, APP_KEY, user, 86_400 * 3650, now, None)
}

/// The gateway the in-memory targets drive, built once per process.
struct Gateway {
    rt: tokio::runtime::Runtime,
    config: Arc<Config>,
    rooms: RoomHandle,
    hub: MediaHub,
    router: axum::Router,
    state: crate::api::AppState,
}

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let data_dir = std::env::temp_dir().join(format!("roomcast-fuzz-{}", std::process::id()));
        let mut config = Config {
            data_dir,
            apps: vec![AppConfig {
                sdkappid: SDKAPPID,
                secret_key: APP_KEY.into(),
                callback_url: None,
                callback_key: None,
            }],
            ..Config::default()
        };
        config.api.credentials = vec![ApiCredential {
            secret_id: SECRET_ID.into(),
            secret_key: SECRET_KEY.into(),
        }];
        // Every task is refused by admission after its request is parsed:
        // the fuzzer reaches the checks, not a hundred encoders.
        config.limits.cpu_budget = Some(0.001);
        let config = Arc::new(config);
        let (rooms, hub, state) = rt.block_on(async {
            let (rooms, _task) = crate::room::spawn(&config);
            let hub = MediaHub::default();
            let parts = crate::server::assemble(
                &config,
                Vec::new(),
                &rooms,
                &hub,
                &crate::rtmp::loops::Loops::none(),
            );
            (rooms, hub, parts.state)
        });
        let router = crate::api::router(state.clone());
        Gateway {
            rt,
            config,
            rooms,
            hub,
            router,
            state,
        }
    })
}

/// Set by the panic hook: a task or a thread of the gateway panicked.
/// Tokio catches a task's panic and axum runs upgraded sockets in their
/// own tasks, so without this a panic there would pass unseen on stable
/// (under libFuzzer its own hook aborts at once).
static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Gateway {
    /// Runs one input's work, then ends everything it started; a panic in
    /// any of the gateway's tasks meanwhile is raised here.
    fn run<F: std::future::Future<Output = ()>>(&self, work: F) {
        PANICKED.store(false, std::sync::atomic::Ordering::SeqCst);
        self.rt.block_on(async {
            work.await;
            self.reset().await;
        });
        assert!(
            !PANICKED.load(std::sync::atomic::Ordering::SeqCst),
            "a gateway task panicked on this input (its message is above)"
        );
    }

    async fn reset(&self) {
        for (spec, _) in self.state.relays.list() {
            let _ = self.state.relays.stop(&spec.id);
        }
        for (id, _) in self.state.pulls.list() {
            let _ = self.state.pulls.stop(&id);
        }
        for room in self.rooms.room_keys().await {
            let _ = self.rooms.command(Command::DismissRoom { room }).await;
        }
    }

    async fn call(&self, req: axum::http::Request<axum::body::Body>) -> axum::response::Response {
        use tower_service::Service;
        let mut req = req;
        let peer: SocketAddr = "127.0.0.1:40001".parse().expect("literal");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        match self.router.clone().call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// Serves one HTTP/1.1 connection on `io` as the listener does.
    fn serve_http(
        &'static self,
        io: tokio::io::DuplexStream,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        use tower_service::Service;
        let router = self.router.clone();
        async move {
            let peer: SocketAddr = "127.0.0.1:40002".parse().expect("literal");
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    router.clone().call(req)
                },
            );
            // The client's end of input is not the end of its requests.
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades()
                .await;
        }
    }
}
