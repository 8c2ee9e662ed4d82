//! DismissRoom, DismissRoomByStrRoomId, RemoveUser, RemoveUserByStrRoomId.

use serde_json::{Map, Value};

use super::params::{Params, invalid};
use super::{ApiError, ApiResult};
use crate::api::AppState;
use crate::room::{Command, RoomCallError, RoomError, RoomId, RoomKey, UserId};

/// SdkAppId, which must be a configured application.
pub(super) fn sdk_app_id(state: &AppState, p: &Params<'_>) -> Result<u64, ApiError> {
    let app = p.req_u64("SdkAppId")?;
    if state.config.app_key(app).is_none() {
        return Err(ApiError::new(
            "InvalidParameter.SdkAppId",
            "SdkAppId is incorrect.",
        ));
    }
    Ok(app)
}

/// SdkAppId and RoomId: a u32 number for the plain actions, a string for `ByStrRoomId`.
pub(super) fn room_key(
    state: &AppState,
    p: &Params<'_>,
    str_room: bool,
) -> Result<RoomKey, ApiError> {
    let app = sdk_app_id(state, p)?;
    let room = if str_room {
        let s = p.req_str("RoomId")?;
        RoomId::string(s).map_err(|e| invalid("RoomId", e))?
    } else {
        let n = p.req_u64("RoomId")?;
        u32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(RoomId::Num)
            .ok_or_else(|| invalid("RoomId", "a numeric room id is in 1..=4294967295"))?
    };
    Ok(RoomKey { app, room })
}

fn room_error(e: RoomCallError) -> ApiError {
    match e {
        RoomCallError::Refused(RoomError::NoSuchRoom) => {
            ApiError::new("FailedOperation.RoomNotExist", "The room does not exist.")
        }
        other => {
            tracing::error!("room engine: {other}");
            ApiError::new("InternalError", "Internal error.")
        }
    }
}

pub(super) async fn dismiss(state: &AppState, p: &Params<'_>, str_room: bool) -> ApiResult {
    let room = room_key(state, p, str_room)?;
    state
        .rooms
        .command(Command::DismissRoom { room })
        .await
        .map_err(room_error)?;
    Ok(Map::new())
}

pub(super) async fn remove_user(state: &AppState, p: &Params<'_>, str_room: bool) -> ApiResult {
    let room = room_key(state, p, str_room)?;
    let ids = p
        .array("UserIds")?
        .ok_or_else(|| super::params::missing("UserIds"))?;
    if ids.is_empty() || ids.len() > 10 {
        return Err(invalid("UserIds", "give 1 to 10 UserIDs"));
    }
    let users = ids
        .iter()
        .map(|v| match v {
            Value::String(s) => UserId::new(s).map_err(|e| invalid("UserIds", e)),
            _ => Err(invalid("UserIds", "UserIDs are strings")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    state
        .rooms
        .command(Command::RemoveUser { room, users })
        .await
        .map_err(room_error)?;
    Ok(Map::new())
}
