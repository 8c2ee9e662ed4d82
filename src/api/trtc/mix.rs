//! WithTranscoding = 1: TRTC's mix parameters → a validated mix profile.
//!
//! VideoParams (VideoEncode, LayoutParams, BackGroundColor) and
//! AudioParams (AudioEncode, SubscribeAudioList / UnSubscribeAudioList with
//! SoundLevel) are translated into a relay profile and validated by the same
//! code as `profiles/*.toml`, so ranges and cell geometry are checked once.
//! Image URLs, custom crops and transparency templates answer
//! UnsupportedOperation; watermarks and SEI are accepted and not drawn
//! (documented in README).

use serde_json::Value;
use toml::Table;

use super::ApiError;
use super::params::{Params, invalid, missing, unsupported};
use crate::mix::pipeline::AudioFilter;
use crate::profile::{self, RelayProfile, VideoEncoding};

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

/// The layout table of a profile from LayoutParams (+ BackGroundColor).
fn layout_table(video: &Params<'_>) -> Result<Table, ApiError> {
    let mut layout = Table::new();
    if video
        .str("BackgroundImageUrl")?
        .is_some_and(|u| !u.is_empty())
    {
        return Err(unsupported("A background image (BackgroundImageUrl)"));
    }
    if let Some(c) = video.str("BackGroundColor")? {
        layout.insert("background_color".into(), c.into());
    }
    let Some(lp) = video.object("LayoutParams")? else {
        layout.insert("mode".into(), "floating".into());
        return Ok(layout);
    };
    let mode = match lp.u64("MixLayoutMode")?.unwrap_or(1) {
        1 => "floating",
        2 => "screen-share",
        3 => "grid",
        4 => "custom",
        _ => return Err(invalid("MixLayoutMode", "1, 2, 3 or 4")),
    };
    layout.insert("mode".into(), mode.into());
    if lp.u64("PureAudioHoldPlaceMode")? == Some(1) {
        layout.insert("audio_only_holds_cell".into(), true.into());
    }
    if let Some(r) = lp.u64("RenderMode")? {
        layout.insert("render_mode".into(), render_mode(r)?.into());
    }
    if let Some(max) = lp.object("MaxVideoUser")?
        && let Some(stream) = max.object("UserMediaStream")?
        && let Some(user) = user_of(&stream)?
        && mode != "grid"
        && mode != "custom"
    {
        layout.insert("main_user".into(), user.into());
    }
    if mode == "custom" {
        let list = lp
            .array("MixLayoutList")?
            .ok_or_else(|| missing("MixLayoutList"))?;
        let mut cells = Vec::new();
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
            let mut cell = Table::new();
            for (from, to) in [
                ("LocationX", "x"),
                ("LocationY", "y"),
                ("ImageWidth", "width"),
                ("ImageHeight", "height"),
                ("ZOrder", "z_order"),
            ] {
                cell.insert(to.into(), (c.u64(from)?.unwrap_or(0) as i64).into());
            }
            if let Some(r) = c.u64("RenderMode")? {
                cell.insert("render_mode".into(), render_mode(r)?.into());
            }
            if let Some(stream) = c.object("UserMediaStream")?
                && let Some(user) = user_of(&stream)?
            {
                cell.insert("user_id".into(), user.into());
            }
            cells.push(toml::Value::Table(cell));
        }
        layout.insert("cells".into(), cells.into());
    }
    Ok(layout)
}

/// A mix profile from the request; `current` is the running task's video
/// encoding on update (its size stays).
pub(super) fn profile(
    p: &Params<'_>,
    current: Option<(&VideoEncoding, &profile::AudioEncoding)>,
) -> Result<RelayProfile, ApiError> {
    let mut root = Table::new();
    let video = p.object("VideoParams")?;
    let new_encode = match &video {
        Some(v) => v.object("VideoEncode")?,
        None => None,
    };
    match (new_encode, current) {
        // New encodings (start, or an update that restarts the mix).
        (Some(enc), _) => {
            let mut t = Table::new();
            for (from, to) in [
                ("Width", "width"),
                ("Height", "height"),
                ("Fps", "fps"),
                ("BitRate", "bitrate_kbps"),
                ("Gop", "gop_seconds"),
            ] {
                t.insert(to.into(), (enc.req_u64(from)? as i64).into());
            }
            t.insert("preset".into(), "veryfast".into());
            root.insert("video".into(), t.into());
        }
        // An update keeping the running encoding exactly.
        (None, Some((v, _))) => {
            let mut t = Table::new();
            t.insert("width".into(), i64::from(v.width).into());
            t.insert("height".into(), i64::from(v.height).into());
            t.insert("fps".into(), i64::from(v.fps).into());
            t.insert("bitrate_kbps".into(), i64::from(v.bitrate_kbps).into());
            t.insert("gop_seconds".into(), i64::from(v.gop_seconds).into());
            t.insert("preset".into(), v.preset.clone().into());
            t.insert("bframes".into(), i64::from(v.bframes).into());
            let prof = match v.profile {
                profile::H264Profile::Baseline => "baseline",
                profile::H264Profile::Main => "main",
                profile::H264Profile::High => "high",
            };
            t.insert("profile".into(), prof.into());
            if let Some(tune) = &v.tune {
                t.insert("tune".into(), tune.clone().into());
            }
            root.insert("video".into(), t.into());
        }
        (None, None) if video.is_some() => return Err(missing("VideoEncode")),
        (None, None) => {
            root.insert("audio_only".into(), true.into());
        }
    }
    if let Some(v) = &video {
        root.insert("layout".into(), layout_table(v)?.into());
    } else if current.is_some() {
        return Err(missing("VideoParams"));
    }
    let mut audio = Table::new();
    match (
        p.object("AudioParams")?
            .and_then(|a| a.object("AudioEncode").ok().flatten()),
        current,
    ) {
        (Some(enc), None) => {
            audio.insert(
                "sample_rate".into(),
                (enc.req_u64("SampleRate")? as i64).into(),
            );
            audio.insert("channels".into(), (enc.req_u64("Channel")? as i64).into());
            audio.insert(
                "bitrate_kbps".into(),
                (enc.req_u64("BitRate")? as i64).into(),
            );
            if enc.u64("Codec")?.unwrap_or(0) != 0 {
                return Err(unsupported("HE-AAC (this libavcodec has no libfdk_aac)"));
            }
        }
        (None, None) => return Err(missing("AudioEncode")),
        (Some(_), Some(_)) => {
            return Err(unsupported("Changing the audio encoding of a running mix"));
        }
        (None, Some((_, a))) => {
            audio.insert("sample_rate".into(), i64::from(a.sample_rate).into());
            audio.insert("channels".into(), i64::from(a.channels).into());
            audio.insert("bitrate_kbps".into(), i64::from(a.bitrate_kbps).into());
        }
    }
    root.insert("audio".into(), audio.into());
    super::params::profile_from(&root, "api-mix", "InvalidParameter")
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
