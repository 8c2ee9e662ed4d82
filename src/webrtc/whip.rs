//! WHIP (RFC 9725): a browser or OBS publishes into a room as an anchor.
//!
//! `publish` checks everything before allocating (offer, UserSig, limits),
//! enters the room, answers the offer and leaves a session task running:
//! it reads each received track through a `TrackDepacketizer` onto the
//! media hub, announces the tracks to the room as they start, sends a PLI
//! when a consumer asks for a keyframe, and ends the session on DELETE
//! (leave), on ICE/DTLS failure or timeout (a disconnect: the room's grace
//! applies), or when the room ends it (kick, dismiss, replaced).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use ::webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::depacketize::{SessionClock, TrackDepacketizer};
use super::{
    PcEvent, SessionRequest, WebRtc, WebRtcError, answer, check_offer, gathered, session_id,
};
use crate::auth::client::authenticate;
use crate::cluster::ClusterError;
use crate::media::hub::Publisher;
use crate::room::{Command, Enter, EventKind, Grant, Role, RoomCallError, Scene, SessionId};

/// Keyframe requests sent to a publisher at most this often.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// A WHIP session that started: its id (for `Location`) and the SDP answer.
pub(crate) struct Started {
    pub id: String,
    pub answer: String,
}

pub(crate) async fn publish(rtc: &WebRtc, req: SessionRequest) -> Result<Started, WebRtcError> {
    let offer = check_offer(&req.offer, super::Way::Publish)?;
    let app = req.room.app;
    let now = crate::unix_now();
    let pmk = authenticate(
        rtc.config.app_key(app),
        app,
        req.user.as_str(),
        &req.usersig,
        now,
    )
    .map_err(|e| WebRtcError::Unauthorized(e.to_string()))?;
    rtc.check_user_limit(app, &req.user)?;
    if rtc.hub.is_publishing(&req.room, &req.user) {
        return Err(WebRtcError::Conflict(format!(
            "user {} is already publishing in this room",
            req.user
        )));
    }
    // The offer is taken by a peer connection before the room is entered:
    // an offer refused here leaves nothing behind in the room.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (pc, lease) = rtc.peer_connection(tx).await?;
    if let Err(e) = answer(&pc, offer).await {
        let _ = pc.close().await;
        return Err(e);
    }
    let session = rtc.rooms.new_session();
    if let Err(e) = rtc
        .rooms
        .command(Command::Enter(Enter {
            room: req.room.clone(),
            user: req.user.clone(),
            session,
            role: Role::Anchor,
            scene: Scene::Live,
            hidden: false,
            grant: pmk.map(Grant::from),
            unix_now: now,
        }))
        .await
    {
        let _ = pc.close().await;
        return Err(match e {
            RoomCallError::Cluster(
                ClusterError::Elsewhere { .. } | ClusterError::PlacedElsewhere { .. },
            ) => WebRtcError::Conflict(e.to_string()),
            RoomCallError::Cluster(_) | RoomCallError::Stopped => {
                WebRtcError::Unavailable(e.to_string())
            }
            RoomCallError::Refused(_) => WebRtcError::Forbidden(e.to_string()),
        });
    }
    let mut early = Vec::new();
    let answer = match gathered(&pc, &mut rx, &mut early).await {
        Ok(a) => a,
        Err(e) => {
            let _ = pc.close().await;
            let _ = rtc.rooms.command(Command::Leave { session }).await;
            return Err(e);
        }
    };
    let id = session_id();
    let stop = rtc.register(&id, app, &req.user);
    let publisher = Arc::new(rtc.hub.publish(
        req.room.clone(),
        req.user.clone(),
        Some(crate::metrics::Edge::Whip),
    ));
    tracing::info!(room = %req.room, user = %req.user, session = %id, "whip publish started");
    let mut task = Session {
        rtc: rtc.clone(),
        id: id.clone(),
        req,
        session,
        pc,
        publisher,
        clock: SessionClock::new(Instant::now()),
        video: Vec::new(),
        readers: Vec::new(),
        finished: false,
    };
    let counted = crate::metrics::metrics().session("whip");
    tokio::spawn(async move {
        let end = task.run(rx, early, stop).await;
        task.finish(end).await;
        drop((lease, counted));
    });
    Ok(Started { id, answer })
}

enum End {
    /// DELETE: the publisher left.
    Left,
    /// The connection failed or never came up: a disconnect.
    Dropped(String),
    /// The room ended the session (kicked, dismissed, replaced, shutting down).
    Ended(String),
}

struct Session {
    rtc: WebRtc,
    id: String,
    req: SessionRequest,
    session: SessionId,
    pc: Arc<dyn PeerConnection>,
    publisher: Arc<Publisher>,
    clock: SessionClock,
    /// Video tracks and their SSRC, for keyframe requests.
    video: Vec<(Arc<dyn TrackRemote>, u32)>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// `finish` ran (or is running): nothing is left to the drop guard.
    finished: bool,
}

/// A session task that ends without `finish` (a panic inside it, or
/// dropped as the gateway stops) must not leave its anchor in the room,
/// its readers publishing and its peer connection open: it is ended as if
/// its connection had dropped (the room's grace applies).
impl Drop for Session {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (room, user, id) = (&self.req.room, &self.req.user, &self.id);
        crate::panics::unfinished!(
            "whip session",
            "it is disconnected",
            %room, %user, session = %id
        );
        for r in self.readers.drain(..) {
            r.abort();
        }
        self.rtc.unregister(&self.id);
        let pc = self.pc.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
        self.rtc.rooms.end_detached(self.session, false);
    }
}

impl Session {
    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<PcEvent>,
        early: Vec<PcEvent>,
        stop: Arc<tokio::sync::Notify>,
    ) -> End {
        let mut events = self.rtc.rooms.subscribe();
        let keyframes = self.publisher.keyframe_requests();
        let connect_deadline = tokio::time::Instant::now() + super::CONNECT_TIMEOUT;
        let mut connected = false;
        let mut last_pli: Option<Instant> = None;
        for ev in early {
            if let Some(end) = self.on_pc_event(ev, &mut connected).await {
                return end;
            }
        }
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else {
                        return End::Dropped("peer connection gone".into());
                    };
                    if let Some(end) = self.on_pc_event(ev, &mut connected).await {
                        return end;
                    }
                }
                () = stop.notified() => return End::Left,
                () = keyframes.notified() => {
                    if last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL) {
                        last_pli = Some(Instant::now());
                        self.request_keyframe().await;
                    }
                }
                () = crate::ticks::sleep_until(connect_deadline), if !connected => {
                    return End::Dropped(format!("not connected within {:?}", super::CONNECT_TIMEOUT));
                }
                ev = events.recv() => match ev {
                    Ok(ev) if ev.is_for(&self.req.room, self.session) => match &ev.kind {
                        EventKind::SessionReplaced { .. } => return End::Ended("replaced by a new session".into()),
                        EventKind::SessionEnded { reason, .. } => return End::Ended(reason.as_str().into()),
                        EventKind::RoomClosed { .. } => return End::Ended("room closed".into()),
                        _ => {}
                    },
                    // Events were missed: ask whether ours was among them.
                    Err(RecvError::Lagged(_)) => {
                        if !self.rtc.rooms.has_session(self.session).await {
                            return End::Ended("its session ended while its room events were missed".into());
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Closed) => return End::Ended("shutting down".into()),
                },
            }
        }
    }

    async fn on_pc_event(&mut self, ev: PcEvent, connected: &mut bool) -> Option<End> {
        match ev {
            PcEvent::State(RTCPeerConnectionState::Connected) => {
                *connected = true;
                tracing::info!(session = %self.id, "whip connected");
            }
            PcEvent::State(RTCPeerConnectionState::Failed) => {
                return Some(End::Dropped("ICE/DTLS failed".into()));
            }
            PcEvent::State(RTCPeerConnectionState::Closed) => {
                return Some(End::Dropped("connection closed".into()));
            }
            PcEvent::State(_) | PcEvent::Gathered => {}
            PcEvent::Track(track) => self.on_track(track).await,
        }
        None
    }

    async fn on_track(&mut self, track: Arc<dyn TrackRemote>) {
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let Some(codec) = track.codec(ssrc).await else {
            return;
        };
        let Some(depacketizer) =
            TrackDepacketizer::new(&codec.mime_type, codec.clock_rate, self.clock.clone())
        else {
            tracing::warn!(session = %self.id, codec = %codec.mime_type, "whip: track with an unusable codec or clock rate ignored");
            return;
        };
        tracing::info!(session = %self.id, codec = %codec.mime_type, ssrc, "whip track started");
        if track.kind().await == RtpCodecKind::Video {
            self.video.push((track.clone(), ssrc));
            send_pli(&track, ssrc).await;
        }
        let reader = Reader {
            rtc: self.rtc.clone(),
            session: self.session,
            publisher: self.publisher.clone(),
            depacketizer,
            id: self.id.clone(),
        };
        self.readers.push(tokio::spawn(reader.run(track, ssrc)));
    }

    async fn request_keyframe(&self) {
        for (track, ssrc) in &self.video {
            send_pli(track, *ssrc).await;
        }
    }

    async fn finish(mut self, end: End) {
        self.finished = true;
        let _ = self.pc.close().await;
        for r in self.readers.drain(..) {
            r.abort();
        }
        let (room, user, id) = (&self.req.room, &self.req.user, &self.id);
        match &end {
            End::Left => {
                tracing::info!(%room, %user, session = %id, "whip publish finished");
                let _ = self
                    .rtc
                    .rooms
                    .command(Command::Leave {
                        session: self.session,
                    })
                    .await;
            }
            End::Dropped(why) => {
                tracing::warn!(%room, %user, session = %id, "whip publisher dropped: {why}");
                let _ = self
                    .rtc
                    .rooms
                    .command(Command::Disconnect {
                        session: self.session,
                    })
                    .await;
            }
            End::Ended(why) => {
                tracing::info!(%room, %user, session = %id, "whip session ended: {why}");
            }
        }
        self.rtc.unregister(&self.id);
        // Dropping the last publisher handle unregisters it from the hub.
    }
}

async fn send_pli(track: &Arc<dyn TrackRemote>, ssrc: u32) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    match track.write_rtcp(vec![Box::new(pli)]).await {
        Ok(()) => tracing::debug!(ssrc, "whip: keyframe requested (PLI)"),
        Err(e) => tracing::debug!(ssrc, "whip: PLI not sent: {e}"),
    }
}

/// One received track onto the hub.
struct Reader {
    rtc: WebRtc,
    session: SessionId,
    publisher: Arc<Publisher>,
    depacketizer: TrackDepacketizer,
    id: String,
}

impl Reader {
    async fn run(mut self, track: Arc<dyn TrackRemote>, ssrc: u32) {
        let kind = self.depacketizer.kind();
        let mut announced = false;
        let mut out = Vec::new();
        let mut sent = 0u64;
        while let Some(ev) = track.poll().await {
            match ev {
                TrackRemoteEvent::OnRtpPacket(p) => {
                    if p.header.ssrc != ssrc {
                        continue;
                    }
                    self.depacketizer.push(Instant::now(), p, &mut out);
                }
                TrackRemoteEvent::OnRtcpPacket(packets) => {
                    for p in packets {
                        if let Some(sr) = p.as_any().downcast_ref::<SenderReport>()
                            && sr.ssrc == ssrc
                        {
                            self.depacketizer.sender_report(
                                Instant::now(),
                                sr.ntp_time,
                                sr.rtp_time,
                            );
                        }
                    }
                }
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
            if out.is_empty() {
                continue;
            }
            if !announced {
                announced = true;
                if let Err(e) = self
                    .rtc
                    .rooms
                    .command(Command::Publish {
                        session: self.session,
                        kind,
                    })
                    .await
                {
                    tracing::warn!(session = %self.id, ?kind, "whip: track refused by the room: {e}");
                    return;
                }
            }
            for m in out.drain(..) {
                if let crate::media::MediaMessage::Frame(f) = &m {
                    sent += 1;
                    if sent.is_multiple_of(50) {
                        tracing::debug!(session = %self.id, ?kind, sent, pts = f.pts, "whip frames");
                    }
                }
                self.publisher.send(m);
            }
        }
        tracing::debug!(session = %self.id, ?kind, skipped = self.depacketizer.skipped, "whip track ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::hub::MediaHub;
    use crate::room::testing::{Anchor, config, panic_holding};

    /// A session task that dies inside (dropped unfinished, as a panic
    /// drops it) is disconnected from its room, leaves the hub and the
    /// session table, and its peer connection is closed.
    #[tokio::test]
    async fn a_session_that_dies_unfinished_is_disconnected_and_closed() {
        let config = config();
        let a = Anchor::enter(&config, "teacher").await;
        let hub = MediaHub::default();
        let rtc = WebRtc::new(Arc::new(config), a.rooms.clone(), hub.clone());
        let (tx, mut pc_events) = mpsc::unbounded_channel();
        let (pc, _lease) = rtc.peer_connection(tx).await.unwrap();
        let id = session_id();
        let _stop = rtc.register(&id, a.room.app, &a.user);
        let task = Session {
            rtc: rtc.clone(),
            id: id.clone(),
            req: SessionRequest {
                room: a.room.clone(),
                user: a.user.clone(),
                usersig: String::new(),
                offer: String::new(),
            },
            session: a.session,
            pc,
            publisher: Arc::new(hub.publish(a.room.clone(), a.user.clone(), None)),
            clock: SessionClock::new(Instant::now()),
            video: Vec::new(),
            readers: Vec::new(),
            finished: false,
        };
        assert!(hub.is_publishing(&a.room, &a.user));
        panic_holding(task).await;
        assert!(
            !hub.is_publishing(&a.room, &a.user),
            "its publisher left the hub"
        );
        assert!(!rtc.end(&id), "it left the session table");
        a.wait_connected(Some(false), "the session was not disconnected")
            .await;
        // The peer connection was closed.
        let closed = crate::ticks::timeout(Duration::from_secs(5), async {
            while let Some(ev) = pc_events.recv().await {
                if matches!(ev, PcEvent::State(RTCPeerConnectionState::Closed)) {
                    return true;
                }
            }
            true
        })
        .await;
        assert_eq!(closed, Ok(true), "the peer connection was not closed");
    }
}
