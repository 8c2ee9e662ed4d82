//! WHEP: a viewer receives one anchor's media over WebRTC, without
//! transcoding.
//!
//! The anchor's frames are taken from the media hub and packetized again
//! (H.264 with its parameter sets before every keyframe, VP8, VP9, Opus);
//! timestamps follow the anchor's. A viewer's keyframe request (PLI/FIR) is
//! passed to the anchor (a PLI to a WebRTC publisher; an RTMP publisher
//! cannot be asked). AAC audio (RTMP anchors) is transcoded to Opus (48 kHz
//! stereo, 64 kbps) on a stage thread, since WebRTC carries Opus. The viewer is
//! authenticated by its UserSig but does not take a seat in the room, as a
//! CDN viewer would not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use ::webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use ::webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};
use ::webrtc::rtp_transceiver::RtpSender;
use bytes::Bytes;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, mpsc};

use super::whip::Started;
use super::{PcEvent, SessionRequest, WebRtc, WebRtcError, check_offer, negotiate, session_id};
use crate::auth::client::authenticate;
use crate::media::hub::Subscription;
use crate::media::{Codec, MediaMessage, TimeBase, TrackConfig, TrackKind, h264};
use crate::room::UserId;

/// How long a viewer's request waits for a just-started anchor's first video header.
const CONFIG_WAIT: Duration = Duration::from_secs(3);

fn rtp_codec(codec: Codec) -> Option<RTCRtpCodec> {
    let (mime, rate, channels, fmtp) = match codec {
        Codec::H264 => (
            MIME_TYPE_H264,
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
        Codec::Vp8 => (MIME_TYPE_VP8, 90_000, 0, ""),
        Codec::Vp9 => (MIME_TYPE_VP9, 90_000, 0, "profile-id=0"),
        Codec::Opus => (MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1"),
        Codec::Aac => return None,
    };
    Some(RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate: rate,
        channels,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: vec![],
    })
}

/// One track sent to the viewer.
struct Outgoing {
    kind: TrackKind,
    codec: Codec,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    payload_type: u8,
    /// H.264 parameter sets, sent before every keyframe.
    params: Vec<Bytes>,
    last_ms: Option<i64>,
}

/// Media bytes sent to viewers (the metrics' counter, looked up once).
static SENT: std::sync::LazyLock<crate::metrics::ByteCounter> =
    std::sync::LazyLock::new(|| crate::metrics::metrics().sent(crate::metrics::Output::Whep));

pub(crate) async fn play(
    rtc: &WebRtc,
    req: SessionRequest,
    anchor: UserId,
) -> Result<Started, WebRtcError> {
    let offer = check_offer(&req.offer, super::Way::Play)?;
    let app = req.room.app;
    authenticate(
        rtc.config.app_key(app),
        app,
        req.user.as_str(),
        &req.usersig,
        crate::unix_now(),
    )
    .map_err(|e| WebRtcError::Unauthorized(e.to_string()))?;
    rtc.check_user_limit(app, &req.user)?;
    let mut sub = rtc.hub.subscribe(&req.room, &anchor).ok_or_else(|| {
        WebRtcError::NotFound(format!("{anchor} is not publishing in room {}", req.room))
    })?;
    // An anchor that has just started may not have sent its video header yet.
    let deadline = tokio::time::Instant::now() + CONFIG_WAIT;
    while sub.configs.video.is_none() {
        match crate::ticks::timeout_at(deadline, sub.messages.recv()).await {
            Ok(Ok(m)) => {
                if let MediaMessage::Config(c) = &*m {
                    match c.kind {
                        TrackKind::Video => sub.configs.video = Some(c.clone()),
                        TrackKind::Audio => sub.configs.audio = Some(c.clone()),
                    }
                }
            }
            Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) | Err(_) => break,
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (pc, lease) = rtc.peer_connection(tx).await?;
    let mut tracks = Vec::new();
    // AAC (an RTMP anchor) is transcoded to Opus for the viewer.
    let mut opus = None;
    let opus_config = TrackConfig {
        kind: TrackKind::Audio,
        codec: Codec::Opus,
        extradata: Bytes::new(),
    };
    if let Some(aac) = sub.configs.audio.as_ref().filter(|c| c.codec == Codec::Aac) {
        let mut stage = crate::media::aac::opus_stage();
        stage.offer(&Arc::new(MediaMessage::Config(aac.clone())));
        opus = Some(stage);
    }
    let audio = if opus.is_some() {
        Some(&opus_config)
    } else {
        sub.configs.audio.as_ref()
    };
    for config in [sub.configs.video.as_ref(), audio].into_iter().flatten() {
        match add_track(&pc, config).await {
            Ok(Some(t)) => tracks.push(t),
            Ok(None) => {
                tracing::info!(room = %req.room, %anchor, codec = ?config.codec, "whep: this codec is not sent over WebRTC; the viewer gets the other tracks");
            }
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        }
    }
    if tracks.is_empty() {
        let _ = pc.close().await;
        return Err(WebRtcError::NotFound(format!(
            "{anchor} publishes nothing WebRTC can carry yet"
        )));
    }
    let mut early = Vec::new();
    let answer = match negotiate(&pc, offer, &mut rx, &mut early).await {
        Ok(a) => a,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    for t in &mut tracks {
        let codecs = t
            .sender
            .get_parameters()
            .await
            .map(|p| p.rtp_parameters.codecs)
            .unwrap_or_default();
        let Some(want) = rtp_codec(t.codec) else {
            continue;
        };
        // The viewer's payload type for our codec (H.264: packetization-mode 1, ours first).
        let same = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
            c.rtp_codec.mime_type.eq_ignore_ascii_case(&want.mime_type)
                && (t.codec != Codec::H264
                    || c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
        };
        let chosen = codecs
            .iter()
            .filter(same)
            .find(|c| c.rtp_codec.sdp_fmtp_line == want.sdp_fmtp_line)
            .or_else(|| codecs.iter().find(same));
        match chosen {
            Some(c) => t.payload_type = c.payload_type,
            None => {
                let _ = pc.close().await;
                return Err(WebRtcError::BadRequest(format!(
                    "the offer cannot receive {} (the anchor's codec)",
                    want.mime_type
                )));
            }
        }
    }
    for t in &tracks {
        tracing::debug!(codec = ?t.codec, payload_type = t.payload_type, ssrc = t.ssrc, "whep track negotiated");
    }
    let id = session_id();
    let stop = rtc.register(&id, app, &req.user);
    tracing::info!(room = %req.room, %anchor, viewer = %req.user, session = %id, "whep playback started");
    let rtc2 = rtc.clone();
    let id2 = id.clone();
    let counted = crate::metrics::metrics().session("whep");
    tokio::spawn(async move {
        let why = run(pc.clone(), rx, early, stop, sub, tracks, opus).await;
        tracing::info!(session = %id2, "whep playback ended: {why}");
        let _ = pc.close().await;
        rtc2.unregister(&id2);
        drop((lease, counted));
    });
    Ok(Started { id, answer })
}

async fn add_track(
    pc: &Arc<dyn PeerConnection>,
    config: &TrackConfig,
) -> Result<Option<Outgoing>, WebRtcError> {
    let Some(codec) = rtp_codec(config.codec) else {
        return Ok(None);
    };
    let kind = config.kind;
    let ssrc = rand::random::<u32>();
    let name = match kind {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
    };
    let track = TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "roomcast".to_owned(),
            format!("roomcast-{name}"),
            format!("roomcast-{name}"),
            match kind {
                TrackKind::Video => RtpCodecKind::Video,
                TrackKind::Audio => RtpCodecKind::Audio,
            },
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        ),
    )
    .map_err(|e| WebRtcError::Internal(format!("local track: {e}")))?;
    let track = Arc::new(track);
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(|e| WebRtcError::Internal(format!("add track: {e}")))?;
    let params = if config.codec == Codec::H264 {
        h264::parameter_sets(&config.extradata)
            .into_iter()
            .map(Bytes::copy_from_slice)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Some(Outgoing {
        kind,
        codec: config.codec,
        track,
        sender,
        ssrc,
        payload_type: 0,
        params,
        last_ms: None,
    }))
}

async fn run(
    pc: Arc<dyn PeerConnection>,
    mut rx: mpsc::UnboundedReceiver<PcEvent>,
    early: Vec<PcEvent>,
    stop: Arc<Notify>,
    mut sub: Subscription,
    mut tracks: Vec<Outgoing>,
    mut opus: Option<crate::media::stage::Stage>,
) -> String {
    let _ = pc;
    // Keyframe requests from the viewer go to the anchor.
    let wanted = Arc::new(Notify::new());
    let mut feedback = Vec::new();
    for t in &tracks {
        let track = t.track.clone();
        let wanted = wanted.clone();
        feedback.push(tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = ev else {
                    continue;
                };
                if packets.iter().any(|p| {
                    p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
                }) {
                    wanted.notify_one();
                }
            }
        }));
    }
    let mut connected = false;
    let mut waiting_keyframe = tracks.iter().any(|t| t.kind == TrackKind::Video);
    let connect_deadline = tokio::time::Instant::now() + super::CONNECT_TIMEOUT;
    let mut states: Vec<PcEvent> = early;
    let why = loop {
        for ev in states.drain(..) {
            if let PcEvent::State(s) = ev {
                match s {
                    RTCPeerConnectionState::Connected => {
                        tracing::debug!("whep connected; asking the anchor for a keyframe");
                        connected = true;
                        sub.request_keyframe();
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        return format!("connection {s}");
                    }
                    _ => {}
                }
            }
        }
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => states.push(ev),
                None => break "peer connection gone".to_owned(),
            },
            () = stop.notified() => break "ended by the viewer".to_owned(),
            () = wanted.notified() => sub.request_keyframe(),
            () = crate::ticks::sleep_until(connect_deadline), if !connected => {
                break format!("not connected within {:?}", super::CONNECT_TIMEOUT);
            }
            m = async {
                match opus.as_mut() {
                    Some(s) => s.out.recv().await,
                    None => std::future::pending().await,
                }
            } => match m {
                Some(m) if connected => {
                    if let Err(e) = send(&mut tracks, &m, &mut waiting_keyframe).await {
                        tracing::debug!("whep: sample not sent: {e}");
                    }
                }
                Some(_) => {}
                None => opus = None,
            },
            m = sub.messages.recv() => match m {
                Ok(m) if opus.is_some() && is_aac(&m) => {
                    if let Some(s) = opus.as_mut() {
                        s.offer(&m);
                    }
                }
                Ok(m) if connected => {
                    if let Err(e) = send(&mut tracks, &m, &mut waiting_keyframe).await {
                        tracing::debug!("whep: sample not sent: {e}");
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    waiting_keyframe = tracks.iter().any(|t| t.kind == TrackKind::Video);
                    sub.request_keyframe();
                }
                Err(RecvError::Closed) => break "the anchor stopped publishing".to_owned(),
            },
        }
    };
    for f in feedback {
        f.abort();
    }
    why
}

fn is_aac(m: &MediaMessage) -> bool {
    match m {
        MediaMessage::Config(c) => c.codec == Codec::Aac,
        MediaMessage::Frame(f) => f.codec == Codec::Aac,
    }
}

async fn send(
    tracks: &mut [Outgoing],
    m: &MediaMessage,
    waiting_keyframe: &mut bool,
) -> Result<(), ::webrtc::error::Error> {
    let f = match m {
        MediaMessage::Config(c) => {
            if let Some(t) = tracks
                .iter_mut()
                .find(|t| t.kind == c.kind && t.codec == c.codec)
                && c.codec == Codec::H264
            {
                t.params = h264::parameter_sets(&c.extradata)
                    .into_iter()
                    .map(Bytes::copy_from_slice)
                    .collect();
            }
            return Ok(());
        }
        MediaMessage::Frame(f) => f,
    };
    if f.kind == TrackKind::Video {
        if *waiting_keyframe && !f.keyframe {
            return Ok(());
        }
        *waiting_keyframe = false;
    }
    let Some(t) = tracks
        .iter_mut()
        .find(|t| t.kind == f.kind && t.codec == f.codec)
    else {
        return Ok(());
    };
    let ms = f.time_base.rescale(f.pts, TimeBase::MILLIS);
    let default = if f.kind == TrackKind::Video { 33 } else { 20 };
    let step = t.last_ms.map_or(default, |l| (ms - l).clamp(0, 1000));
    t.last_ms = Some(ms);
    let data = if t.codec == Codec::H264 {
        let params: Vec<&[u8]> = if f.keyframe {
            t.params.iter().map(|b| &b[..]).collect()
        } else {
            Vec::new()
        };
        h264::avcc_to_annexb(&f.data, &params)
    } else {
        f.data.clone()
    };
    SENT.add(data.len());
    t.track
        .sample_writer(t.ssrc, t.payload_type)
        .write_sample(&Sample {
            data,
            duration: Duration::from_millis(step as u64),
            ..Sample::new(Instant::now())
        })
        .await
}
