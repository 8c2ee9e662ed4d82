//! WithTranscoding = 1: TRTC's mix parameters → a validated mix profile.
//!
//! VideoParams (VideoEncode, LayoutParams, BackGroundColor) and
//! AudioParams (AudioEncode, SubscribeAudioList / UnSubscribeAudioList with
//! SoundLevel) are translated into a `ProfileFile` and validated by the same
//! code as `profiles/*.toml`, so ranges and cell geometry are checked once.
//! Image URLs, custom crops and transparency templates answer
//! UnsupportedOperation; watermarks and SEI are accepted and not drawn
//! (documented in README).

use serde_json::Value;

use super::ApiError;
use super::params::{Params, int, invalid, missing, unsupported};
use crate::mix::pipeline::AudioFilter;
use crate::profile::{
    self, AudioFile, CellFile, LayoutFile, ProfileFile, RelayProfile, VideoEncoding, VideoFile,
};

fn user_of(stream: &Params<'_>) -> Result<Option<String>, ApiError> {
    let Some(info) = stream.object("UserInfo")? else {
        return Ok(None);
    };
    Ok(info.str("UserId")?.map(str::to_owned))
}

fn render_mode(n: u64) -> Result<&'static str, ApiError> {
    match n {
        0 => Ok("crop"),
        1 => Ok("stretch"),
        2 => Ok("fit"),
        _ => Err(invalid("RenderMode", "0, 1 or 2")),
    }
}

/// The layout of a profile from LayoutParams (+ BackGroundColor).
fn layout_of(video: &Params<'_>) -> Result<LayoutFile, ApiError> {
    let mut layout = LayoutFile::default();
    if video
        .str("BackgroundImageUrl")?
        .is_some_and(|u| !u.is_empty())
    {
        return Err(unsupported("A background image (BackgroundImageUrl)"));
    }
    layout.background_color = video.str("BackGroundColor")?.map(str::to_owned);
    let Some(lp) = video.object("LayoutParams")? else {
        layout.mode = Some("floating".into());
        return Ok(layout);
    };
    let mode = match lp.u64("MixLayoutMode")?.unwrap_or(1) {
        1 => "floating",
        2 => "screen-share",
        3 => "grid",
        4 => "custom",
        _ => return Err(invalid("MixLayoutMode", "1, 2, 3 or 4")),
    };
    layout.mode = Some(mode.into());
    if lp.u64("PureAudioHoldPlaceMode")? == Some(1) {
        layout.audio_only_holds_cell = Some(true);
    }
    if let Some(r) = lp.u64("RenderMode")? {
        layout.render_mode = Some(render_mode(r)?.into());
    }
    if let Some(max) = lp.object("MaxVideoUser")?
        && let Some(stream) = max.object("UserMediaStream")?
        && let Some(user) = user_of(&stream)?
        && mode != "grid"
        && mode != "custom"
    {
        layout.main_user = Some(user);
    }
    if mode == "custom" {
        let list = lp
            .array("MixLayoutList")?
            .ok_or_else(|| missing("MixLayoutList"))?;
        for v in list {
            let Value::Object(o) = v else {
                return Err(invalid("MixLayoutList", "entries are objects"));
            };
            let c = Params::new(o);
            for (key, what) in [
                (
                    "BackgroundImageUrl",
                    "A cell placeholder image (BackgroundImageUrl)",
                ),
                ("TransparentUrl", "A transparency template (TransparentUrl)"),
            ] {
                if c.str(key)?.is_some_and(|u| !u.is_empty()) {
                    return Err(unsupported(what));
                }
            }
            if c.get("CustomCrop").is_some() {
                return Err(unsupported("Cropping an input (CustomCrop)"));
            }
            let at = |k: &str| -> Result<i64, ApiError> { Ok(int(c.u64(k)?.unwrap_or(0))) };
            let mut cell = CellFile {
                x: at("LocationX")?,
                y: at("LocationY")?,
                width: at("ImageWidth")?,
                height: at("ImageHeight")?,
                z_order: at("ZOrder")?,
                ..CellFile::default()
            };
            if let Some(r) = c.u64("RenderMode")? {
                cell.render_mode = Some(render_mode(r)?.into());
            }
            if let Some(stream) = c.object("UserMediaStream")? {
                cell.user_id = user_of(&stream)?;
            }
            layout.cells.push(cell);
        }
    }
    Ok(layout)
}

/// A mix profile from the request; `current` is the running task's video
/// encoding on update (its size stays).
pub(super) fn profile(
    p: &Params<'_>,
    current: Option<(&VideoEncoding, &profile::AudioEncoding)>,
) -> Result<RelayProfile, ApiError> {
    let mut file = ProfileFile::default();
    let video = p.object("VideoParams")?;
    let new_encode = match &video {
        Some(v) => v.object("VideoEncode")?,
        None => None,
    };
    match (new_encode, current) {
        // New encodings (start, or an update that restarts the mix).
        (Some(enc), _) => {
            file.video = Some(VideoFile {
                width: Some(int(enc.req_u64("Width")?)),
                height: Some(int(enc.req_u64("Height")?)),
                fps: Some(int(enc.req_u64("Fps")?)),
                bitrate_kbps: Some(int(enc.req_u64("BitRate")?)),
                gop_seconds: Some(int(enc.req_u64("Gop")?)),
                preset: Some("veryfast".into()),
                ..VideoFile::default()
            });
        }
        // An update keeping the running encoding exactly.
        (None, Some((v, _))) => {
            let prof = match v.profile {
                profile::H264Profile::Baseline => "baseline",
                profile::H264Profile::Main => "main",
                profile::H264Profile::High => "high",
            };
            file.video = Some(VideoFile {
                width: Some(v.width.into()),
                height: Some(v.height.into()),
                fps: Some(v.fps.into()),
                bitrate_kbps: Some(v.bitrate_kbps.into()),
                gop_seconds: Some(v.gop_seconds.into()),
                preset: Some(v.preset.clone()),
                profile: Some(prof.into()),
                tune: v.tune.clone(),
                bframes: Some(v.bframes.into()),
            });
        }
        (None, None) if video.is_some() => return Err(missing("VideoEncode")),
        (None, None) => file.audio_only = true,
    }
    if let Some(v) = &video {
        file.layout = Some(layout_of(v)?);
    } else if current.is_some() {
        return Err(missing("VideoParams"));
    }
    let audio = match (
        p.object("AudioParams")?
            .and_then(|a| a.object("AudioEncode").ok().flatten()),
        current,
    ) {
        (Some(enc), None) => {
            let audio = AudioFile {
                sample_rate: Some(int(enc.req_u64("SampleRate")?)),
                channels: Some(int(enc.req_u64("Channel")?)),
                bitrate_kbps: Some(int(enc.req_u64("BitRate")?)),
                ..AudioFile::default()
            };
            if enc.u64("Codec")?.unwrap_or(0) != 0 {
                return Err(unsupported("HE-AAC (this libavcodec has no libfdk_aac)"));
            }
            audio
        }
        (None, None) => return Err(missing("AudioEncode")),
        (Some(_), Some(_)) => {
            return Err(unsupported("Changing the audio encoding of a running mix"));
        }
        (None, Some((_, a))) => AudioFile {
            sample_rate: Some(a.sample_rate.into()),
            channels: Some(a.channels.into()),
            bitrate_kbps: Some(a.bitrate_kbps.into()),
            ..AudioFile::default()
        },
    };
    file.audio = Some(audio);
    super::params::validated(file, "api-mix", "InvalidParameter")
}

/// Per-user volumes, TRTC SoundLevel 0..=100.
pub(super) type Volumes = Vec<(String, u32)>;
/// A list of McuUserInfoParams: (UserId, SoundLevel).
type UserList = Vec<(String, Option<u32>)>;

/// The audio allow/block lists and SoundLevels; `None` when neither list is given.
pub(super) fn audio_filter(p: &Params<'_>) -> Result<Option<(AudioFilter, Volumes)>, ApiError> {
    let Some(a) = p.object("AudioParams")? else {
        return Ok(None);
    };
    let list = |name: &str| -> Result<Option<UserList>, ApiError> {
        let Some(items) = a.array(name)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for v in items {
            let Value::Object(o) = v else {
                return Err(invalid(name, "entries are objects"));
            };
            let e = Params::new(o);
            let info = e.object("UserInfo")?.ok_or_else(|| missing("UserInfo"))?;
            let level = e.u64("SoundLevel")?;
            if level.is_some_and(|l| l > 100) {
                return Err(invalid("SoundLevel", "0 to 100"));
            }
            out.push((info.req_str("UserId")?.to_owned(), level.map(|l| l as u32)));
        }
        Ok(Some(out))
    };
    let allow = list("SubscribeAudioList")?;
    let block = list("UnSubscribeAudioList")?;
    if allow.is_none() && block.is_none() {
        return Ok(None);
    }
    let volumes: Vec<(String, u32)> = allow
        .iter()
        .flatten()
        .map(|(u, l)| (u.clone(), l.unwrap_or(100)))
        .collect();
    let filter = AudioFilter {
        // An empty allowlist means everyone (TRTC: "empty means mixing all anchors").
        allow: allow
            .filter(|a| !a.is_empty())
            .map(|a| a.into_iter().map(|(u, _)| u).collect()),
        block: block
            .unwrap_or_default()
            .into_iter()
            .map(|(u, _)| u)
            .collect(),
    };
    Ok(Some((filter, volumes)))
}
