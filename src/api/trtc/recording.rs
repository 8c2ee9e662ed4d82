//! CreateCloudRecording, DescribeCloudRecording, ModifyCloudRecording,
//! DeleteCloudRecording onto `record::tasks`. RoomIdType here: 0 = string
//! room, 1 = integer room (the default), as TRTC has it for recordings.
//!
//! Files are written under `<data_dir>/recordings/<TaskId>/` and uploaded
//! as they close to `StorageParams.CloudStorage` (COS or S3, through the S3
//! API: `record::uploader`), to `<FileNamePrefix...>/<TaskId>/<file>`.
//! `CloudVod` answers UnsupportedOperation.

use serde_json::{Map, Value};

use super::mix::Images;
use super::params::{Params, invalid, missing, unsupported};
use super::request::{MixLayoutParams, MixTranscodeParams, Num, read};
use super::{ApiError, ApiResult};
use crate::api::AppState;
use crate::auth::client::authenticate;
use crate::mix::pipeline::AudioFilter;
use crate::profile::{
    self, AudioFile, LayoutFile, ProfileFile, RecordFormat, RecordOutput, VideoFile,
};
use crate::record::tasks::{Mode, Subscription};
use crate::record::upload::Destination;
use crate::relay::{RelayError, RelaySpec};
use crate::room::{RoomId, RoomKey, UserId};

fn not_found() -> ApiError {
    ApiError::new(
        "ResourceNotFound",
        "The recording task does not exist or has ended.",
    )
}

fn users(p: &Params<'_>, name: &str) -> Result<Option<Vec<UserId>>, ApiError> {
    let Some(list) = p.array(name)? else {
        return Ok(None);
    };
    list.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| invalid(name, "entries are UserIds"))
                .and_then(|s| UserId::new(s).map_err(|e| invalid(name, e)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// SubscribeStreamUserIds: (allow, block) over audio and video together.
fn subscription(p: &Params<'_>) -> Result<Option<Subscription>, ApiError> {
    let Some(s) = p.object("SubscribeStreamUserIds")? else {
        return Ok(None);
    };
    let mut allow: Option<Vec<UserId>> = None;
    for name in ["SubscribeAudioUserIds", "SubscribeVideoUserIds"] {
        if let Some(list) = users(&s, name)? {
            let a = allow.get_or_insert_with(Vec::new);
            for u in list {
                if !a.contains(&u) {
                    a.push(u);
                }
            }
        }
    }
    let mut block = Vec::new();
    for name in ["UnSubscribeAudioUserIds", "UnSubscribeVideoUserIds"] {
        block.extend(users(&s, name)?.unwrap_or_default());
    }
    Ok(Some(Subscription {
        allow: allow.filter(|a| !a.is_empty()),
        block,
    }))
}

fn output(r: &Params<'_>) -> Result<RecordOutput, ApiError> {
    let format = match r.u64("OutputFormat")?.unwrap_or(0) {
        0 => RecordFormat::Hls,
        1 => RecordFormat::HlsAndMp4,
        2 => return Err(unsupported("OutputFormat 2 (hls+aac)")),
        3 => RecordFormat::Mp4,
        4 => RecordFormat::Aac,
        _ => return Err(invalid("OutputFormat", "0 to 4")),
    };
    let minutes = r.u64("MaxMediaFileDuration")?.unwrap_or(1440);
    if !(1..=1440).contains(&minutes) {
        return Err(invalid("MaxMediaFileDuration", "1 to 1440 minutes"));
    }
    Ok(RecordOutput {
        format,
        max_file_minutes: minutes as u32,
    })
}

/// MixLayoutParams → the layout of a mix profile.
fn layout(p: Option<&MixLayoutParams>, images: &Images) -> Result<LayoutFile, ApiError> {
    let mut t = LayoutFile::default();
    let mode = match p.and_then(|l| l.mix_layout_mode).map(|m| m.0) {
        None | Some(3) => "grid",
        Some(1) => "floating",
        Some(2) => "screen-share",
        Some(4) => return Err(unsupported("A custom recording layout (MixLayoutMode 4)")),
        Some(_) => return Err(invalid("MixLayoutMode", "1 to 4")),
    };
    t.mode = Some(mode.into());
    if let Some(l) = p {
        if let Some(c) = &l.back_ground_color {
            let hex = c.trim_start_matches('#').trim_start_matches("0x");
            if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid("BackGroundColor", "#RRGGBB"));
            }
            t.background_color = Some(format!("0x{hex}"));
        }
        if let Some(u) = &l.max_resolution_user_id {
            UserId::new(u).map_err(|e| invalid("MaxResolutionUserId", e))?;
            t.main_user = Some(u.clone());
        }
        let local = |url: &Option<String>| match url.as_deref().filter(|u| !u.is_empty()) {
            None => Ok(None),
            Some(u) => images
                .get(u)
                .map(|p| Some(p.display().to_string()))
                .ok_or_else(|| invalid("BackgroundImageUrl", format!("{u} was not fetched"))),
        };
        t.background_image = local(&l.background_image_url)?;
        t.placeholder_image = local(&l.default_sub_background_image)?;
    }
    Ok(t)
}

/// MixTranscodeParams + MixLayoutParams → a validated mix profile (TRTC's
/// defaults: 360x640, 15 fps, 550 kbps, GOP 10 s; 48 kHz stereo 64 kbps).
fn mix_profile(p: &Params<'_>, images: &Images) -> Result<profile::RelayProfile, ApiError> {
    let mix: MixTranscodeParams = read(p, "MixTranscodeParams")?.unwrap_or_default();
    let v = mix.video_params.unwrap_or_default();
    let a = mix.audio_params.unwrap_or_default();
    let or = |n: Option<Num>, d: u64| n.map_or(d, |n| n.0);
    let video = VideoFile {
        width: Some(Num(or(v.width, 360)).int()),
        height: Some(Num(or(v.height, 640)).int()),
        fps: Some(Num(or(v.fps, 15)).int()),
        bitrate_kbps: Some(Num(or(v.bit_rate, 550_000) / 1000).int()),
        gop_seconds: Some(Num(or(v.gop, 10).min(5)).int()),
        preset: Some("veryfast".into()),
        ..VideoFile::default()
    };
    let rate = match or(a.sample_rate, 1) {
        1 => 48_000,
        2 => 44_100,
        3 => 16_000,
        _ => {
            return Err(invalid(
                "SampleRate",
                "1 (48 kHz), 2 (44.1 kHz) or 3 (16 kHz)",
            ));
        }
    };
    let audio = AudioFile {
        sample_rate: Some(rate),
        channels: Some(Num(or(a.channel, 2)).int()),
        bitrate_kbps: Some(Num(or(a.bit_rate, 64_000) / 1000).int()),
        ..AudioFile::default()
    };
    let layout_params: Option<MixLayoutParams> = read(p, "MixLayoutParams")?;
    let file = ProfileFile {
        video: Some(video),
        audio: Some(audio),
        layout: Some(layout(layout_params.as_ref(), images)?),
        ..ProfileFile::default()
    };
    super::params::validated(file, "api-recording", "InvalidParameter.OutOfRange")
}

fn relay_error(e: RelayError) -> ApiError {
    match e {
        RelayError::TooMany(_) | RelayError::TooManyForApp(_) | RelayError::OverBudget(_) => {
            ApiError::new("FailedOperation.RestrictedConcurrency", e.to_string())
        }
        RelayError::Invalid(m) => ApiError::new("InvalidParameter", m),
        other => ApiError::new("FailedOperation", other.to_string()),
    }
}

pub(super) fn create(state: &AppState, p: &Params<'_>, images: &Images) -> ApiResult {
    create_as(state, p, images, None)
}

/// CreateCloudRecording; with `resume`, the task another cluster node ran
/// starts again here under its TaskId.
pub(super) fn create_as(
    state: &AppState,
    p: &Params<'_>,
    images: &Images,
    resume: Option<crate::record::tasks::Resume>,
) -> ApiResult {
    let app = super::rooms::sdk_app_id(state, p)?;
    let room_str = p.req_str("RoomId")?;
    let room = match p.u64("RoomIdType")?.unwrap_or(1) {
        0 => RoomId::string(room_str),
        1 => RoomId::numeric(room_str),
        _ => return Err(invalid("RoomIdType", "0 (string) or 1 (integer)")),
    }
    .map_err(|e| invalid("RoomId", e))?;
    let user = p.req_str("UserId")?;
    let usersig = p.req_str("UserSig")?;
    let unix_now = crate::unix_now();
    authenticate(state.config.app_key(app), app, user, usersig, unix_now)
        .map_err(|e| invalid("UserSig", e))?;
    let r = p
        .object("RecordParams")?
        .ok_or_else(|| missing("RecordParams"))?;
    let mode = r.u64("RecordMode")?.ok_or_else(|| missing("RecordMode"))?;
    let max_idle =
        crate::relay::max_idle(r.u64("MaxIdleTime")?).map_err(|why| invalid("MaxIdleTime", why))?;
    match r.u64("StreamType")?.unwrap_or(0) {
        0 => {}
        1 | 2 => {
            return Err(unsupported(
                "Recording audio or video alone (StreamType 1, 2); use OutputFormat 4 for audio",
            ));
        }
        _ => return Err(invalid("StreamType", "0, 1 or 2")),
    }
    let out = output(&r)?;
    let storage = p
        .object("StorageParams")?
        .ok_or_else(|| missing("StorageParams"))?;
    let dest = destination(&storage)?;
    let sub = subscription(&r)?;
    let key = RoomKey { app, room };
    let mode = match mode {
        1 => {
            let profile = super::relay::passthrough(state)?.clone();
            Mode::Single {
                profile: Box::new(profile),
                subscription: sub.unwrap_or_default(),
            }
        }
        2 => {
            let profile = mix_profile(p, images)?;
            let mut spec = RelaySpec::for_mix(key.clone(), &profile).map_err(relay_error)?;
            if let (Some(mix), Some(s)) = (spec.mix_mut(), sub) {
                mix.audio_filter = AudioFilter {
                    allow: s
                        .allow
                        .map(|a| a.iter().map(|u| u.as_str().to_owned()).collect()),
                    block: s.block.iter().map(|u| u.as_str().to_owned()).collect(),
                };
            }
            Mode::Mixed(Box::new(spec))
        }
        _ => return Err(invalid("RecordMode", "1 (single streams) or 2 (mixed)")),
    };
    let id = state
        .recordings
        .start((key, user), mode, out, max_idle, Some(dest), resume)
        .map_err(relay_error)?;
    let mut o = Map::new();
    o.insert("TaskId".into(), Value::String(id));
    Ok(o)
}

/// StorageParams.CloudStorage → where the files go. The keys are checked
/// for shape only here; the storage itself answers at the first upload.
fn destination(storage: &Params<'_>) -> Result<Destination, ApiError> {
    let Some(c) = storage.object("CloudStorage")? else {
        return Err(match storage.object("CloudVod")? {
            Some(_) => unsupported("CloudVod (Tencent VOD)"),
            None => missing("CloudStorage"),
        });
    };
    let vendor = match c.req_u64("Vendor")? {
        0 => 0,
        1 => 1,
        _ => return Err(invalid("Vendor", "0 (Tencent COS) or 1 (AWS S3)")),
    };
    let text = |name: &str| -> Result<String, ApiError> {
        let v = c.req_str(name)?;
        if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
            return Err(invalid(name, "1 to 256 printable characters"));
        }
        Ok(v.to_owned())
    };
    let mut prefix = Vec::new();
    for v in c
        .array("FileNamePrefix")?
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let seg = v
            .as_str()
            .filter(|s| Destination::valid_prefix(s))
            .ok_or_else(|| invalid("FileNamePrefix", "segments of a-z, A-Z, 0-9, _ and -"))?;
        prefix.push(seg.to_owned());
    }
    if prefix.len() > 16 {
        return Err(invalid("FileNamePrefix", "at most 16 segments"));
    }
    Ok(Destination {
        vendor,
        region: text("Region")?,
        bucket: text("Bucket")?,
        access_key: text("AccessKey")?,
        secret_key: text("SecretKey")?,
        prefix,
    })
}

pub(super) fn describe(state: &AppState, p: &Params<'_>) -> ApiResult {
    let app = super::rooms::sdk_app_id(state, p)?;
    let id = p.req_str("TaskId")?;
    let d = state.recordings.describe(app, id).ok_or_else(not_found)?;
    let files: Vec<Value> = d
        .files
        .iter()
        .map(|(f, upload)| {
            let mut v = serde_json::json!({
                "UserId": f.user,
                "FileName": f.name,
                "TrackType": f.track,
                "BeginTimeStamp": f.begin * 1000,
            });
            if let Some(u) = upload {
                // roomcast's addition: where the file's upload stands.
                v["UploadStatus"] = Value::String(u.as_str().into());
            }
            v
        })
        .collect();
    let mut o = Map::new();
    o.insert("TaskId".into(), Value::String(id.to_owned()));
    o.insert("Status".into(), Value::String(d.status.into()));
    o.insert(
        "StorageFileList".into(),
        if files.is_empty() {
            Value::Null
        } else {
            Value::Array(files)
        },
    );
    Ok(o)
}

pub(super) fn modify(state: &AppState, p: &Params<'_>, images: &Images) -> ApiResult {
    let app = super::rooms::sdk_app_id(state, p)?;
    let id = p.req_str("TaskId")?;
    let sub = subscription(p)?;
    let new_layout: Option<MixLayoutParams> = read(p, "MixLayoutParams")?;
    if let Some(relay) = state.recordings.mix_relay(app, id) {
        let layout = match new_layout {
            Some(l) => {
                // A whole profile around the layout, so it is validated the same way.
                let file = ProfileFile {
                    layout: Some(layout(Some(&l), images)?),
                    audio: Some(AudioFile {
                        sample_rate: Some(48_000),
                        channels: Some(2),
                        bitrate_kbps: Some(64),
                        ..AudioFile::default()
                    }),
                    ..ProfileFile::default()
                };
                let prof = super::params::validated(file, "api-recording", "InvalidParameter")?;
                match prof.mode {
                    profile::RelayMode::Mix { layout } => Some(layout),
                    profile::RelayMode::Passthrough { .. } => None,
                }
            }
            None => None,
        };
        let filter = sub.map(|s| AudioFilter {
            allow: s
                .allow
                .map(|a| a.iter().map(|u| u.as_str().to_owned()).collect()),
            block: s.block.iter().map(|u| u.as_str().to_owned()).collect(),
        });
        state
            .relays
            .update_mix(&relay, layout, Vec::new(), filter)
            .map_err(relay_error)?;
    } else {
        if new_layout.is_some() {
            return Err(match state.recordings.describe(app, id) {
                Some(d) if d.status != "Exited" => {
                    invalid("MixLayoutParams", "a single-stream recording has no layout")
                }
                _ => not_found(),
            });
        }
        let sub = sub.ok_or_else(|| missing("SubscribeStreamUserIds"))?;
        if !state.recordings.set_subscription(app, id, sub) {
            return Err(not_found());
        }
    }
    let mut o = Map::new();
    o.insert("TaskId".into(), Value::String(id.to_owned()));
    Ok(o)
}

pub(super) fn delete(state: &AppState, p: &Params<'_>) -> ApiResult {
    let app = super::rooms::sdk_app_id(state, p)?;
    let id = p.req_str("TaskId")?;
    if !state.recordings.stop(app, id) {
        return Err(not_found());
    }
    let mut o = Map::new();
    o.insert("TaskId".into(), Value::String(id.to_owned()));
    Ok(o)
}
