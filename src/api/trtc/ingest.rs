//! StartStreamIngest, StopStreamIngest, DescribeStreamIngest: a robot user
//! (UserId + UserSig, as TRTC asks) pulls an online stream into the room
//! through `pull`. RoomIdType here: 0 = string room, 1 = integer room.
//!
//! Honoured: StreamUrl (rtmp, rtmps, http, https: RTMP, HLS, HTTP-FLV, MP4),
//! SeekSecond, RepeatNum (-1 loops), MaxDuration, PrivateMapKey (in the
//! UserSig's place, TRTC's advanced permission), Volume 100. Refused with
//! UnsupportedOperation rather than ignored: another Volume, Tempo other
//! than 1.0, AutoPush, EnableProgress. IdleTimeout is accepted: a task ends
//! as soon as its stream ends, so it is never idle.

use std::time::Duration;

use serde_json::{Map, Value};

use super::params::{Params, invalid, unsupported};
use super::{ApiError, ApiResult};
use crate::api::AppState;
use crate::auth::client::authenticate;
use crate::pull::{PullSettings, PullStartError};
use crate::room::{Grant, RoomId, RoomKey, UserId};

fn stream_url(p: &Params<'_>) -> Result<String, ApiError> {
    let url = p.req_str("StreamUrl")?.trim();
    let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
    if !url.contains("://") || !matches!(scheme.as_str(), "rtmp" | "rtmps" | "http" | "https") {
        return Err(invalid(
            "StreamUrl",
            "an rtmp://, rtmps://, http:// or https:// URL (RTMP, HLS, HTTP-FLV, MP4)",
        ));
    }
    if url.len() > 4096 || url.chars().any(char::is_control) {
        return Err(invalid("StreamUrl", "at most 4096 printable characters"));
    }
    Ok(url.to_owned())
}

pub(super) async fn start(state: &AppState, p: &Params<'_>) -> ApiResult {
    start_as(state, p, None).await
}

/// StartStreamIngest; with `id`, the task another cluster node ran starts
/// again here under its TaskId (from its SeekSecond: the stream is read
/// anew).
pub(super) async fn start_as(state: &AppState, p: &Params<'_>, id: Option<String>) -> ApiResult {
    let app = super::rooms::sdk_app_id(state, p)?;
    let room_str = p.req_str("RoomId")?;
    let room = match p.req_u64("RoomIdType")? {
        0 => RoomId::string(room_str),
        1 => RoomId::numeric(room_str),
        _ => return Err(invalid("RoomIdType", "0 (string) or 1 (integer)")),
    }
    .map_err(|e| invalid("RoomId", e))?;
    let user = p.req_str("UserId")?;
    let user_id = UserId::new(user).map_err(|e| invalid("UserId", e))?;
    let usersig = p.req_str("UserSig")?;
    let url = stream_url(p)?;
    let seek = p.i64("SeekSecond")?.unwrap_or(0);
    if seek < 0 {
        return Err(invalid("SeekSecond", "not negative"));
    }
    let plays = match p.i64("RepeatNum")?.unwrap_or(1) {
        -1 => None,
        n @ 1..=1000 => Some(n as u32),
        _ => return Err(invalid("RepeatNum", "-1 (loop) or 1 to 1000")),
    };
    let max_duration = match p.i64("MaxDuration")? {
        None => None,
        Some(m @ 1..=10_080) => Some(Duration::from_secs(m as u64 * 60)),
        Some(_) => return Err(invalid("MaxDuration", "1 to 10080 minutes")),
    };
    match p.u64("Volume")? {
        None | Some(100) => {}
        Some(0..=99) => return Err(unsupported("A Volume other than 100")),
        Some(_) => return Err(invalid("Volume", "0 to 100")),
    }
    if p.f64("Tempo")?
        .is_some_and(|t| (t - 1.0).abs() > f64::EPSILON)
    {
        return Err(unsupported("A Tempo other than 1.0"));
    }
    if p.bool("AutoPush")? == Some(true) {
        return Err(unsupported(
            "AutoPush (start a relay with StartPublishCdnStream instead)",
        ));
    }
    if p.bool("EnableProgress")? == Some(true) {
        return Err(unsupported("EnableProgress"));
    }
    if let Some(t) = p.i64("IdleTimeout")?
        && !(0..=600).contains(&t)
    {
        return Err(invalid("IdleTimeout", "0 to 600 seconds"));
    }
    let unix_now = crate::unix_now();
    let pmk = authenticate(state.config.app_key(app), app, user, usersig, unix_now)
        .map_err(|e| invalid("UserSig", e))?;
    let grant = match (pmk, p.str("PrivateMapKey")?) {
        (Some(pmk), _) => Some(Grant::from(pmk)),
        (None, Some(key)) if !key.is_empty() => {
            // A PrivateMapKey is a signed ticket like a UserSig, its userbuf the grant.
            let pmk = authenticate(state.config.app_key(app), app, user, key, unix_now)
                .map_err(|e| invalid("PrivateMapKey", e))?
                .ok_or_else(|| invalid("PrivateMapKey", "it carries no permissions"))?;
            Some(Grant::from(pmk))
        }
        (None, _) => None,
    };
    let settings = PullSettings {
        url,
        seek_secs: seek as u64,
        plays,
        max_duration: if plays.is_none() { max_duration } else { None },
    };
    let id = state
        .pulls
        .start(
            RoomKey { app, room },
            user_id,
            grant,
            unix_now,
            settings,
            id,
        )
        .await
        .map_err(|e| match e {
            PullStartError::TooMany(_) => {
                ApiError::new("FailedOperation.RestrictedConcurrency", e.to_string())
            }
            PullStartError::Exists(_) => ApiError::new("FailedOperation.TaskExist", e.to_string()),
            PullStartError::Refused(m) => ApiError::new("FailedOperation.NotAllowed", m),
        })?;
    let mut out = Map::new();
    out.insert("TaskId".into(), Value::String(id));
    Ok(out)
}

pub(super) fn stop(state: &AppState, p: &Params<'_>) -> ApiResult {
    let app = super::rooms::sdk_app_id(state, p)?;
    let id = p.req_str("TaskId")?;
    match state.pulls.get(id) {
        Some(info) if info.room.app == app => {
            state.pulls.stop(id);
            Ok(Map::new())
        }
        _ => Err(ApiError::new(
            "FailedOperation.TaskFinished",
            "The task has finished or does not exist.",
        )),
    }
}

pub(super) fn describe(state: &AppState, p: &Params<'_>) -> ApiResult {
    let app = super::rooms::sdk_app_id(state, p)?;
    let id = p.req_str("TaskId")?;
    let status = match state.pulls.get(id) {
        Some(info) if info.room.app == app => "InProgress",
        _ => "NotExist",
    };
    let mut out = Map::new();
    out.insert("Status".into(), Value::String(status.into()));
    Ok(out)
}
