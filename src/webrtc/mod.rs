//! WebRTC edges: WHIP publish into rooms and WHEP playback of anchors.
//!
//! The webrtc crate (0.21, handler/poll API) owns ICE, DTLS and SRTP; each
//! session is one peer connection bound to one UDP port of the configured
//! range (on loopback and on every interface), with NAT 1:1 when a public IP
//! is configured. `whip` turns a publisher's RTP into `MediaMessage`s on the
//! media hub (through the pure `depacketize`), `whep` sends an anchor's
//! frames to a viewer; `ports` hands out the UDP ports. The HTTP side is in
//! `api::webrtc`.

pub(crate) mod depacketize;
pub(crate) mod ports;
pub(crate) mod rtcp;
pub(crate) mod whep;
pub(crate) mod whip;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::webrtc::media_stream::track_remote::TrackRemote;
use ::webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, SettingEngineBuilder,
};
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateType;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::media::hub::MediaHub;
use crate::room::{RoomHandle, RoomKey, UserId};

/// Largest SDP offer accepted.
pub(crate) const MAX_SDP_BYTES: usize = 64 * 1024;
/// A session that has not connected this long after its answer is closed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for ICE gathering before the answer is sent.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// WebRTC sessions (WHIP and WHEP) one user may hold at once.
const MAX_SESSIONS_PER_USER: usize = 4;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WebRtcError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("webrtc: {0}")]
    Internal(String),
}

/// What a WHIP/WHEP request asks for, checked by the HTTP edge.
#[derive(Debug, Clone)]
pub(crate) struct SessionRequest {
    pub room: RoomKey,
    pub user: UserId,
    pub usersig: String,
    pub offer: String,
}

/// A session the HTTP edge can end.
#[derive(Clone)]
struct SessionEntry {
    owner: (u64, UserId),
    stop: Arc<tokio::sync::Notify>,
}

/// The WebRTC side of the gateway, shared by the HTTP handlers.
#[derive(Clone)]
pub(crate) struct WebRtc {
    pub config: Arc<Config>,
    pub rooms: RoomHandle,
    pub hub: MediaHub,
    ports: ports::PortPool,
    sessions: Arc<Mutex<HashMap<String, SessionEntry>>>,
}

impl WebRtc {
    pub(crate) fn new(config: Arc<Config>, rooms: RoomHandle, hub: MediaHub) -> WebRtc {
        let range = config.webrtc.udp_ports;
        WebRtc {
            config,
            rooms,
            hub,
            ports: ports::PortPool::new(range.low, range.high),
            sessions: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a session (HTTP DELETE). `false` if there is no such session.
    pub(crate) fn end(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(e) => {
                e.stop.notify_one();
                true
            }
            None => false,
        }
    }

    pub(crate) fn exists(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn check_user_limit(&self, app: u64, user: &UserId) -> Result<(), WebRtcError> {
        let n = self
            .lock()
            .values()
            .filter(|e| e.owner.0 == app && &e.owner.1 == user)
            .count();
        if n >= MAX_SESSIONS_PER_USER {
            return Err(WebRtcError::TooMany(format!(
                "user {user} already has {n} WebRTC sessions (at most {MAX_SESSIONS_PER_USER})"
            )));
        }
        Ok(())
    }

    fn register(&self, id: &str, app: u64, user: &UserId) -> Arc<tokio::sync::Notify> {
        let stop = Arc::new(tokio::sync::Notify::new());
        self.lock().insert(
            id.to_owned(),
            SessionEntry {
                owner: (app, user.clone()),
                stop: stop.clone(),
            },
        );
        stop
    }

    fn unregister(&self, id: &str) {
        self.lock().remove(id);
    }

    /// A peer connection on a port of the range, with our codecs and the
    /// interceptors that pass sender reports and keyframe requests up.
    async fn peer_connection(
        &self,
        events: mpsc::UnboundedSender<PcEvent>,
    ) -> Result<(Arc<dyn PeerConnection>, ports::PortLease), WebRtcError> {
        let lease = self
            .ports
            .take()
            .ok_or_else(|| WebRtcError::Unavailable("no free UDP port for WebRTC".into()))?;
        let mut media = MediaEngine::default();
        media
            .register_default_codecs()
            .map_err(|e| WebRtcError::Internal(e.to_string()))?;
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| WebRtcError::Internal(e.to_string()))?
            .with(Slot::from(14_000), rtcp::ToApplication::default());
        let mut settings = SettingEngineBuilder::new()
            .with_ice_timeouts(
                Some(Duration::from_secs(5)),
                Some(Duration::from_secs(15)),
                Some(Duration::from_secs(2)),
            )
            .with_include_loopback_candidate(true);
        if let Some(ip) = self.config.webrtc.public_ip {
            settings = settings.with_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
        }
        let port = lease.port();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler { events }) as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}")])
            .build()
            .await
            .map_err(|e| WebRtcError::Internal(format!("peer connection: {e}")))?;
        Ok((Arc::new(pc), lease))
    }
}

/// What the peer connection tells its session task.
pub(crate) enum PcEvent {
    State(RTCPeerConnectionState),
    Gathered,
    Track(Arc<dyn TrackRemote>),
}

struct Handler {
    events: mpsc::UnboundedSender<PcEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(PcEvent::Gathered);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PcEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PcEvent::Track(track));
    }
}

/// Sets the offer, answers, waits for ICE gathering; returns the answer SDP.
/// Events other than gathering that arrive meanwhile are kept in `early`.
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    offer: RTCSessionDescription,
    events: &mut mpsc::UnboundedReceiver<PcEvent>,
    early: &mut Vec<PcEvent>,
) -> Result<String, WebRtcError> {
    answer(pc, offer).await?;
    gathered(pc, events, early).await
}

/// Sets the offer (parsed by [`check_offer`]) and the answer to it: where an
/// offer the peer connection cannot take is refused.
async fn answer(
    pc: &Arc<dyn PeerConnection>,
    offer: RTCSessionDescription,
) -> Result<(), WebRtcError> {
    pc.set_remote_description(offer)
        .await
        .map_err(|e| WebRtcError::BadRequest(format!("SDP offer refused: {e}")))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| WebRtcError::BadRequest(format!("no answer to this offer: {e}")))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| WebRtcError::Internal(format!("local description: {e}")))
}

/// Waits for ICE gathering (at most [`GATHER_TIMEOUT`]); returns the answer
/// SDP with its candidates. Other events that arrive meanwhile go to `early`.
async fn gathered(
    pc: &Arc<dyn PeerConnection>,
    events: &mut mpsc::UnboundedReceiver<PcEvent>,
    early: &mut Vec<PcEvent>,
) -> Result<String, WebRtcError> {
    let deadline = tokio::time::Instant::now() + GATHER_TIMEOUT;
    loop {
        match crate::ticks::timeout_at(deadline, events.recv()).await {
            Ok(Some(PcEvent::Gathered)) | Err(_) => break,
            Ok(Some(ev)) => early.push(ev),
            Ok(None) => return Err(WebRtcError::Internal("peer connection closed".into())),
        }
    }
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| WebRtcError::Internal("no local description".into()))?
        .sdp;
    Ok(sdp)
}

/// A fresh session id: 128 random bits, hex.
fn session_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Media codecs an SDP offer names (rtpmap encoding names, lower case).
fn offered_codecs(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=rtpmap:"))
        .filter_map(|rest| rest.split_whitespace().nth(1))
        .filter_map(|enc| enc.split('/').next())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Which way an offer's media sections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// A publisher's offer (WHIP): some section must send.
    Publish,
    /// A viewer's offer (WHEP): some section must receive.
    Play,
}

/// Whether some media section of `sdp` goes `way` (RFC 8866 §6.7: a
/// section's direction attribute, else the session's, else sendrecv).
fn goes(sdp: &str, way: Way) -> bool {
    let direction = |l: &str| match l.trim() {
        "a=sendrecv" => Some((true, true)),
        "a=sendonly" => Some((true, false)),
        "a=recvonly" => Some((false, true)),
        "a=inactive" => Some((false, false)),
        _ => None,
    };
    let mut sections = sdp.split("\nm=");
    let session = sections
        .next()
        .unwrap_or("")
        .lines()
        .find_map(direction)
        .unwrap_or((true, true));
    sections.any(|m| {
        let (sends, receives) = m.lines().find_map(direction).unwrap_or(session);
        match way {
            Way::Publish => sends,
            Way::Play => receives,
        }
    })
}

/// Media sections (m= lines) an offer may have.
const MAX_MEDIA_SECTIONS: usize = 4;

/// Refuses, before anything is allocated, an offer that is not SDP (parsed
/// in full by the same parser the peer connection uses), that has no ICE
/// credentials or DTLS fingerprint, or that has nothing we can receive or
/// send, or whose media all go the other way. Returns the parsed offer for
/// the peer connection.
pub(crate) fn check_offer(sdp: &str, way: Way) -> Result<RTCSessionDescription, WebRtcError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(WebRtcError::BadRequest(format!(
            "SDP offer larger than {MAX_SDP_BYTES} bytes"
        )));
    }
    if !sdp.trim_start().starts_with("v=0") || !sdp.contains("\nm=") {
        return Err(WebRtcError::BadRequest(
            "malformed SDP offer: expected v=0 and at least one m= section".into(),
        ));
    }
    let offer = RTCSessionDescription::offer(sdp.to_owned())
        .map_err(|e| WebRtcError::BadRequest(format!("malformed SDP offer: {e}")))?;
    // Each received track costs a reassembly buffer: a publisher sends audio
    // and video, a viewer receives them.
    let sections = sdp.lines().filter(|l| l.starts_with("m=")).count();
    if sections > MAX_MEDIA_SECTIONS {
        return Err(WebRtcError::BadRequest(format!(
            "the SDP offer has {sections} media sections; at most {MAX_MEDIA_SECTIONS} are taken"
        )));
    }
    let codecs = offered_codecs(sdp);
    if !codecs
        .iter()
        .any(|c| matches!(c.as_str(), "opus" | "h264" | "vp8" | "vp9"))
    {
        return Err(WebRtcError::BadRequest(format!(
            "no usable codec in the offer (offered: {}); roomcast takes Opus, H.264, VP8, VP9",
            if codecs.is_empty() {
                "none".to_owned()
            } else {
                codecs.join(", ")
            }
        )));
    }
    for (attr, what) in [
        ("a=ice-ufrag:", "ICE username fragment (a=ice-ufrag)"),
        ("a=ice-pwd:", "ICE password (a=ice-pwd)"),
        ("a=fingerprint:", "DTLS fingerprint (a=fingerprint)"),
    ] {
        if !sdp.lines().any(|l| l.trim_start().starts_with(attr)) {
            return Err(WebRtcError::BadRequest(format!(
                "the SDP offer has no {what}"
            )));
        }
    }
    if !goes(sdp, way) {
        return Err(WebRtcError::BadRequest(match way {
            Way::Publish => "the SDP offer sends no media (every m= section is recvonly or inactive): use WHEP to play".into(),
            Way::Play => "the SDP offer receives no media (every m= section is sendonly or inactive): use WHIP to publish".into(),
        }));
    }
    Ok(offer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal offer as a browser would send it, with `codec` in its m= line.
    fn offer(rtpmap: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             a=fingerprint:sha-256 {fp}\r\na=setup:actpass\r\na=sendonly\r\na=rtcp-mux\r\n\
             a=rtpmap:{rtpmap}\r\n",
            fp = ["AB"; 32].join(":")
        )
    }

    #[test]
    fn offers_without_usable_codecs_or_not_sdp_are_refused() {
        assert!(check_offer("hello", Way::Publish).is_err());
        assert!(check_offer(&offer("111 opus/48000/2"), Way::Publish).is_ok());
        assert!(check_offer(&offer("111 PCMU/8000"), Way::Publish).is_err());
        let big = format!("{}{}", offer("111 opus/48000/2"), "a=x\r\n".repeat(20_000));
        assert!(check_offer(&big, Way::Publish).is_err());
        let extra = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:9\r\n".repeat(4);
        let many = format!("{}{extra}", offer("111 opus/48000/2"));
        assert!(
            check_offer(&many, Way::Publish)
                .unwrap_err()
                .to_string()
                .contains("media sections")
        );
    }

    #[test]
    fn an_offer_going_the_wrong_way_is_refused() {
        let publish = offer("111 opus/48000/2");
        let play = publish.replace("a=sendonly", "a=recvonly");
        assert!(check_offer(&publish, Way::Publish).is_ok());
        assert!(check_offer(&play, Way::Play).is_ok());
        let e = check_offer(&play, Way::Publish).unwrap_err().to_string();
        assert!(e.contains("sends no media"), "{e}");
        let e = check_offer(&publish, Way::Play).unwrap_err().to_string();
        assert!(e.contains("receives no media"), "{e}");
        // No direction anywhere: sendrecv, both ways.
        let both = publish.replace("a=sendonly\r\n", "");
        assert!(check_offer(&both, Way::Publish).is_ok());
        assert!(check_offer(&both, Way::Play).is_ok());
        // The session's direction stands for sections without their own.
        let session = both.replacen("\r\nm=", "\r\na=inactive\r\nm=", 1);
        assert!(check_offer(&session, Way::Publish).is_err());
    }

    #[test]
    fn offers_that_only_look_like_sdp_are_refused() {
        // The shape passes a glance (v=0, an m= line, a codec) but not the parser.
        let garbage = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                       \u{1}\u{2}garbage\r\nzz\r\n";
        let e = check_offer(garbage, Way::Publish).unwrap_err().to_string();
        assert!(e.contains("malformed SDP offer"), "{e}");
        for missing in ["a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"] {
            let o: String = offer("111 opus/48000/2")
                .split_inclusive("\r\n")
                .filter(|l| !l.starts_with(missing))
                .collect();
            assert!(check_offer(&o, Way::Publish).is_err(), "without {missing}");
        }
    }
}
