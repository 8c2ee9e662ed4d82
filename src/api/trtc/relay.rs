//! StartPublishCdnStream, UpdatePublishCdnStream, StopPublishCdnStream,
//! mapped onto relay tasks: bypass (WithTranscoding = 0, the `passthrough`
//! profile overridden by the request) or mix (WithTranscoding = 1, a mix
//! profile made from the request by `mix`). Pushing back into a room and
//! relay recording are answered with UnsupportedOperation rather than
//! half-done; SEI and watermarks are accepted and not acted on.

use serde_json::{Map, Value};

use super::params::{Params, invalid, missing, unsupported};
use super::{ApiError, ApiResult};
use crate::api::AppState;
use crate::profile::{AudioCodec, AudioEncoding};
use crate::relay::{Feedback, RelayError, RelaySpec, TaskState, valid_stream_name};
use crate::room::{RoomId, RoomKey, UserId};

fn task_missing() -> ApiError {
    ApiError::new(
        "FailedOperation.TaskNotExist",
        "The task does not exist or is stopped.",
    )
}

/// The loaded `passthrough` profile, which bypass relays and single-stream
/// recordings start from.
pub(super) fn passthrough(state: &AppState) -> Result<&crate::profile::RelayProfile, ApiError> {
    state
        .profiles
        .iter()
        .find(|p| p.name == "passthrough")
        .ok_or_else(|| ApiError::new("InternalError", "No `passthrough` profile is loaded."))
}

pub(super) fn relay_error(e: RelayError) -> ApiError {
    match e {
        RelayError::NoSuchTask => task_missing(),
        RelayError::Finished => {
            ApiError::new("FailedOperation.TaskFinished", "The task has finished.")
        }
        RelayError::Outdated { last } => ApiError::new(
            "FailedOperation.RequestOutdated",
            format!("SequenceNumber must be greater than {last}."),
        ),
        RelayError::TooMany(_) | RelayError::TooManyForApp(_) | RelayError::OverBudget(_) => {
            ApiError::new("FailedOperation.RestrictedConcurrency", e.to_string())
        }
        RelayError::StreamInUse(_) | RelayError::Busy => {
            ApiError::new("FailedOperation", e.to_string())
        }
        RelayError::Invalid(m) => ApiError::new("InvalidParameter", m),
    }
}

/// PublishCdnParams: up to 10 `{PublishCdnUrl, IsTencentCdn}`.
fn cdn_urls(p: &Params<'_>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = p.array("PublishCdnParams")? else {
        return Ok(None);
    };
    if list.len() > 10 {
        return Err(invalid("PublishCdnParams", "at most 10 CDN targets"));
    }
    let mut urls = Vec::with_capacity(list.len());
    for v in list {
        let Value::Object(o) = v else {
            return Err(invalid("PublishCdnParams", "entries are objects"));
        };
        let url = Params::new(o).req_str("PublishCdnUrl")?;
        crate::rtmp::push::PushUrl::parse(url).map_err(|e| invalid("PublishCdnUrl", e))?;
        urls.push(url.to_owned());
    }
    Ok(Some(urls))
}

/// AudioParams.AudioEncode → the re-encoding settings.
fn audio_encode(p: &Params<'_>) -> Result<Option<AudioEncoding>, ApiError> {
    let Some(audio) = p.object("AudioParams")? else {
        return Ok(None);
    };
    let Some(enc) = audio.object("AudioEncode")? else {
        return Ok(None);
    };
    let sample_rate = enc.req_u64("SampleRate")?;
    if ![48_000, 44_100, 32_000, 24_000, 16_000, 8_000].contains(&sample_rate) {
        return Err(invalid(
            "SampleRate",
            "one of 48000, 44100, 32000, 24000, 16000, 8000",
        ));
    }
    let channels = enc.req_u64("Channel")?;
    if !(1..=2).contains(&channels) {
        return Err(invalid("Channel", "1 or 2"));
    }
    let bitrate = enc.req_u64("BitRate")?;
    if !(8..=500).contains(&bitrate) {
        return Err(invalid("BitRate", "8 to 500 kbps"));
    }
    match enc.u64("Codec")?.unwrap_or(0) {
        0 => {}
        1 | 2 => return Err(unsupported("HE-AAC (this libavcodec has no libfdk_aac)")),
        _ => return Err(invalid("Codec", "0, 1 or 2")),
    }
    Ok(Some(AudioEncoding {
        sample_rate: sample_rate as u32,
        channels: channels as u32,
        bitrate_kbps: bitrate as u32,
        codec: AudioCodec::AacLc,
    }))
}

/// The anchor of a bypass relay: SingleSubscribeParams.UserMediaStream.
fn single_user(p: &Params<'_>) -> Result<Option<UserId>, ApiError> {
    let Some(single) = p.object("SingleSubscribeParams")? else {
        return Ok(None);
    };
    let stream = single
        .object("UserMediaStream")?
        .ok_or_else(|| missing("UserMediaStream"))?;
    if stream.u64("StreamType")?.unwrap_or(0) != 0 {
        return Err(unsupported(
            "Relaying a screen-share substream (StreamType 1)",
        ));
    }
    let info = stream
        .object("UserInfo")?
        .ok_or_else(|| missing("UserInfo"))?;
    let user = info.req_str("UserId")?;
    UserId::new(user)
        .map(Some)
        .map_err(|e| invalid("UserId", e))
}

/// FeedBackRoomParams: up to 10 rooms the mix is pushed back into, each
/// entered by its robot (UserId + UserSig checked now). RoomIdType here:
/// 0 = integer, 1 = string.
fn feedback(state: &AppState, app: u64, p: &Params<'_>) -> Result<Vec<Feedback>, ApiError> {
    let Some(list) = p.array("FeedBackRoomParams")? else {
        return Ok(Vec::new());
    };
    if list.len() > 10 {
        return Err(invalid("FeedBackRoomParams", "at most 10 rooms"));
    }
    let unix_now = crate::unix_now();
    let mut out = Vec::new();
    for v in list {
        let Value::Object(o) = v else {
            return Err(invalid("FeedBackRoomParams", "entries are objects"));
        };
        let f = Params::new(o);
        let room_str = f.req_str("RoomId")?;
        let room = match f.req_u64("RoomIdType")? {
            0 => RoomId::numeric(room_str),
            1 => RoomId::string(room_str),
            _ => return Err(invalid("RoomIdType", "0 (integer) or 1 (string)")),
        }
        .map_err(|e| invalid("RoomId", e))?;
        let user = f.req_str("UserId")?;
        let user_id = UserId::new(user).map_err(|e| invalid("UserId", e))?;
        let sig = f.req_str("UserSig")?;
        let pmk =
            crate::auth::client::authenticate(state.config.app_key(app), app, user, sig, unix_now)
                .map_err(|e| invalid("UserSig", e))?;
        out.push(Feedback {
            room: RoomKey { app, room },
            user: user_id,
            grant: pmk.map(crate::room::Grant::from),
        });
    }
    Ok(out)
}

fn check_no_unsupported(p: &Params<'_>) -> Result<(), ApiError> {
    if p.get("RecordParams").is_some() {
        return Err(unsupported("Relay recording (RecordParams)"));
    }
    Ok(())
}

pub(super) fn start(state: &AppState, p: &Params<'_>, images: &super::mix::Images) -> ApiResult {
    start_as(state, p, images, None)
}

/// StartPublishCdnStream; `id` set: a stored task started again with its TaskId.
pub(super) fn start_as(
    state: &AppState,
    p: &Params<'_>,
    images: &super::mix::Images,
    id: Option<String>,
) -> ApiResult {
    let spec = spec_as(state, p, images, id)?;
    let id = state.relays.start(spec).map_err(relay_error)?;
    let mut out = Map::new();
    out.insert("TaskId".into(), Value::String(id));
    Ok(out)
}

/// The task StartPublishCdnStream asks for, checked, not started.
pub(super) fn spec_as(
    state: &AppState,
    p: &Params<'_>,
    images: &super::mix::Images,
    id: Option<String>,
) -> Result<RelaySpec, ApiError> {
    let app = super::rooms::sdk_app_id(state, p)?;
    let room_str = p.req_str("RoomId")?;
    // RoomIdType here: 0 = integer room, 1 = string room.
    let room = match p.req_u64("RoomIdType")? {
        0 => RoomId::numeric(room_str),
        1 => RoomId::string(room_str),
        _ => return Err(invalid("RoomIdType", "0 (integer) or 1 (string)")),
    }
    .map_err(|e| invalid("RoomId", e))?;
    let agent = p
        .object("AgentParams")?
        .ok_or_else(|| missing("AgentParams"))?;
    UserId::new(agent.req_str("UserId")?).map_err(|e| invalid("AgentParams.UserId", e))?;
    let max_idle = crate::relay::max_idle(agent.u64("MaxIdleTime")?)
        .map_err(|why| invalid("MaxIdleTime", why))?;
    let with_transcoding = p.req_u64("WithTranscoding")?;
    check_no_unsupported(p)?;
    let feedback = feedback(state, app, p)?;
    if !feedback.is_empty() && with_transcoding != 1 {
        return Err(unsupported(
            "Pushing a bypass relay back into a room (FeedBackRoomParams needs WithTranscoding 1)",
        ));
    }
    let urls = cdn_urls(p)?.unwrap_or_default();
    if urls.is_empty() {
        return Err(missing("PublishCdnParams"));
    }
    let key = RoomKey { app, room };
    let mut spec = match with_transcoding {
        0 => {
            let user = single_user(p)?.ok_or_else(|| missing("SingleSubscribeParams"))?;
            let profile = passthrough(state)?;
            let mut spec = RelaySpec::for_anchor(key, user, profile).map_err(relay_error)?;
            // As in TRTC, audio is re-encoded with AudioEncode when it is given.
            if let Some(a) = audio_encode(p)?
                && let Some(anchor) = spec.anchor_mut()
            {
                anchor.audio_reencode = Some(a);
            }
            spec
        }
        1 => {
            let profile = super::mix::profile(p, None, images)?;
            let mut spec = RelaySpec::for_mix(key, &profile).map_err(relay_error)?;
            if let (Some(mix), Some((filter, volumes))) =
                (spec.mix_mut(), super::mix::audio_filter(p)?)
            {
                mix.audio_filter = filter;
                mix.volumes = volumes;
            }
            spec
        }
        _ => return Err(invalid("WithTranscoding", "0 or 1")),
    };
    spec.max_idle = max_idle;
    spec.outputs.feedback = feedback;
    // The stream is named after the first CDN URL's last path segment.
    if let Some(name) = urls[0]
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| valid_stream_name(n))
    {
        spec.stream = name.to_owned();
    }
    spec.outputs.rtmp = urls;
    spec.id = id.unwrap_or_default();
    Ok(spec)
}

/// The task named by SdkAppId + TaskId, if it belongs to that application.
fn task(
    state: &AppState,
    p: &Params<'_>,
) -> Result<(String, std::sync::Arc<RelaySpec>, TaskState), ApiError> {
    let app = super::rooms::sdk_app_id(state, p)?;
    let id = p.req_str("TaskId")?;
    let (spec, status) = state.relays.status(id).ok_or_else(task_missing)?;
    if spec.room.app != app {
        return Err(task_missing());
    }
    Ok((id.to_owned(), spec, status.state))
}

pub(super) fn update(state: &AppState, p: &Params<'_>, images: &super::mix::Images) -> ApiResult {
    let (id, spec, st) = task(state, p)?;
    let seq = p.req_u64("SequenceNumber")?;
    if matches!(st, TaskState::Stopped(_)) {
        return Err(relay_error(RelayError::Finished));
    }
    check_no_unsupported(p)?;
    if p.array("FeedBackRoomParams")?
        .is_some_and(|a| !a.is_empty())
    {
        return Err(unsupported(
            "Changing FeedBackRoomParams of a running task (start a new task)",
        ));
    }
    let mut mix_update = None;
    match spec.mix() {
        None => {
            if p.u64("WithTranscoding")? == Some(1) {
                return Err(unsupported(
                    "Turning a bypass relay into a mix (start a new task)",
                ));
            }
            if let Some(user) = single_user(p)?
                && Some(&user) != spec.user()
            {
                return Err(unsupported("Switching the relayed anchor"));
            }
            if audio_encode(p)?
                .is_some_and(|a| Some(&a) != spec.anchor().and_then(|x| x.audio_reencode.as_ref()))
            {
                return Err(unsupported(
                    "Changing the audio encoding of a running relay",
                ));
            }
        }
        Some(mix) => {
            if p.u64("WithTranscoding")? == Some(0) {
                return Err(unsupported(
                    "Turning a mix into a bypass relay (start a new task)",
                ));
            }
            if p.get("SingleSubscribeParams").is_some() {
                return Err(invalid("SingleSubscribeParams", "only for bypass relays"));
            }
            let mut restart = None;
            let layout = match (p.object("VideoParams")?, &mix.video) {
                (Some(_), Some(v)) => {
                    let profile = super::mix::profile(p, Some((v, &mix.audio)), images)?;
                    if profile.video.as_ref() != Some(v) {
                        // New video encoding: the mix restarts inside the task.
                        let mut next = RelaySpec::for_mix(spec.room.clone(), &profile)
                            .map_err(relay_error)?
                            .into_mix()
                            .expect("a mix spec");
                        next.audio_filter = mix.audio_filter.clone();
                        next.volumes = mix.volumes.clone();
                        restart = Some(next);
                        None
                    } else {
                        match profile.mode {
                            crate::profile::RelayMode::Mix { layout } => Some(layout),
                            crate::profile::RelayMode::Passthrough { .. } => None,
                        }
                    }
                }
                (Some(_), None) => return Err(unsupported("Adding video to an audio-only mix")),
                (None, _) => None,
            };
            if let Some(next) = restart {
                state.relays.restart_mix(&id, next).map_err(relay_error)?;
            }
            if p.object("AudioParams")?
                .is_some_and(|a| a.get("AudioEncode").is_some())
            {
                return Err(unsupported("Changing the audio encoding of a running mix"));
            }
            mix_update = Some((layout, super::mix::audio_filter(p)?));
        }
    }
    state
        .relays
        .advance_sequence(&id, seq)
        .map_err(relay_error)?;
    if let Some((layout, audio)) = mix_update {
        let (filter, volumes) = match audio {
            Some((f, v)) => (Some(f), v),
            None => (None, Vec::new()),
        };
        let volumes = volumes
            .into_iter()
            .map(|(u, l)| {
                UserId::new(&u)
                    .map(|u| (u, l))
                    .map_err(|e| invalid("UserId", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        state
            .relays
            .update_mix(&id, layout, volumes, filter)
            .map_err(relay_error)?;
    }
    if let Some(urls) = cdn_urls(p)? {
        state.relays.set_targets(&id, urls).map_err(relay_error)?;
    }
    let mut out = Map::new();
    out.insert("TaskId".into(), Value::String(id));
    Ok(out)
}

pub(super) fn stop(state: &AppState, p: &Params<'_>) -> ApiResult {
    let (id, _, st) = task(state, p)?;
    if !matches!(st, TaskState::Stopped(_)) {
        match state.relays.stop(&id) {
            Ok(()) | Err(RelayError::Finished) => {}
            Err(e) => return Err(relay_error(e)),
        }
    }
    let mut out = Map::new();
    out.insert("TaskId".into(), Value::String(id));
    Ok(out)
}
