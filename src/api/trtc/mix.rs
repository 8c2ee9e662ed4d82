//! WithTranscoding = 1: TRTC's mix parameters → a validated mix profile.
//!
//! VideoParams (VideoEncode, LayoutParams, BackGroundColor) and
//! AudioParams (AudioEncode, SubscribeAudioList / UnSubscribeAudioList with
//! SoundLevel) are translated into a `ProfileFile` and validated by the same
//! code as `profiles/*.toml`, so ranges and cell geometry are checked once.
//! Image URLs (canvas background, cell placeholders) are fetched first
//! (`images`) and drawn from their local copies; custom crops and
//! transparency templates answer UnsupportedOperation; watermarks and SEI are accepted and not drawn
//! (documented in README).

use super::ApiError;
use super::params::{Params, invalid, unsupported};
use super::request::{
    McuAudioParams, McuLayoutParams, McuUserInfoParams, McuVideoParams, Num, read, req,
};
use crate::mix::pipeline::AudioFilter;
use crate::profile::{
    self, AudioFile, CellFile, LayoutFile, ProfileFile, RelayProfile, VideoEncoding, VideoFile,
};

fn render_mode(n: Num) -> Result<&'static str, ApiError> {
    match n.0 {
        0 => Ok("crop"),
        1 => Ok("stretch"),
        2 => Ok("fit"),
        _ => Err(invalid("RenderMode", "0, 1 or 2")),
    }
}

/// Image URLs of the request and their local copies (`images::prefetch`).
pub(super) type Images = std::collections::HashMap<String, std::path::PathBuf>;

/// The local copy of an image URL of the request.
fn image(images: &Images, url: Option<&String>) -> Result<Option<String>, ApiError> {
    match url.filter(|u| !u.is_empty()) {
        None => Ok(None),
        Some(u) => images
            .get(u)
            .map(|p| Some(p.display().to_string()))
            .ok_or_else(|| invalid("BackgroundImageUrl", format!("{u} was not fetched"))),
    }
}

/// The layout of a profile from LayoutParams (+ BackGroundColor, BackgroundImageUrl).
fn layout_of(video: &McuVideoParams, images: &Images) -> Result<LayoutFile, ApiError> {
    let mut layout = LayoutFile {
        background_color: video.back_ground_color.clone(),
        background_image: image(images, video.background_image_url.as_ref())?,
        ..LayoutFile::default()
    };
    let Some(lp) = &video.layout_params else {
        layout.mode = Some("floating".into());
        return Ok(layout);
    };
    let mode = match lp.mix_layout_mode.map_or(1, |m| m.0) {
        1 => "floating",
        2 => "screen-share",
        3 => "grid",
        4 => "custom",
        _ => return Err(invalid("MixLayoutMode", "1, 2, 3 or 4")),
    };
    layout.mode = Some(mode.into());
    if lp.pure_audio_hold_place_mode == Some(Num(1)) {
        layout.audio_only_holds_cell = Some(true);
    }
    if let Some(r) = lp.render_mode {
        layout.render_mode = Some(render_mode(r)?.into());
    }
    if let Some(user) = lp
        .max_video_user
        .as_ref()
        .and_then(|m| m.user_media_stream.as_ref())
        .and_then(|s| s.user())
        && mode != "grid"
        && mode != "custom"
    {
        layout.main_user = Some(user.to_owned());
    }
    if mode == "custom" {
        layout.cells = cells(lp, images)?;
    }
    Ok(layout)
}

/// MixLayoutList: the cells of a custom layout.
fn cells(lp: &McuLayoutParams, images: &Images) -> Result<Vec<CellFile>, ApiError> {
    let list = req(lp.mix_layout_list.as_ref(), "MixLayoutList")?;
    let mut cells = Vec::with_capacity(list.len());
    for c in list {
        if c.transparent_url.as_deref().is_some_and(|u| !u.is_empty()) {
            return Err(unsupported("A transparency template (TransparentUrl)"));
        }
        if c.custom_crop.is_some() {
            return Err(unsupported("Cropping an input (CustomCrop)"));
        }
        let at = |n: Option<Num>| n.map_or(0, Num::int);
        cells.push(CellFile {
            x: at(c.location_x),
            y: at(c.location_y),
            width: at(c.image_width),
            height: at(c.image_height),
            z_order: at(c.z_order),
            render_mode: c
                .render_mode
                .map(render_mode)
                .transpose()?
                .map(str::to_owned),
            user_id: c
                .user_media_stream
                .as_ref()
                .and_then(|s| s.user())
                .map(str::to_owned),
            placeholder_image: image(images, c.background_image_url.as_ref())?,
            ..CellFile::default()
        });
    }
    Ok(cells)
}

/// A mix profile from the request; `current` is the running task's video
/// encoding on update (its size stays).
pub(super) fn profile(
    p: &Params<'_>,
    current: Option<(&VideoEncoding, &profile::AudioEncoding)>,
    images: &Images,
) -> Result<RelayProfile, ApiError> {
    let video: Option<McuVideoParams> = read(p, "VideoParams")?;
    let audio: Option<McuAudioParams> = read(p, "AudioParams")?;
    let mut file = ProfileFile::default();
    match (
        video.as_ref().and_then(|v| v.video_encode.as_ref()),
        current,
    ) {
        // New encodings (start, or an update that restarts the mix).
        (Some(enc), _) => {
            file.video = Some(VideoFile {
                width: Some(req(enc.width, "Width")?.int()),
                height: Some(req(enc.height, "Height")?.int()),
                fps: Some(req(enc.fps, "Fps")?.int()),
                bitrate_kbps: Some(req(enc.bit_rate, "BitRate")?.int()),
                gop_seconds: Some(req(enc.gop, "Gop")?.int()),
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
        (None, None) if video.is_some() => return Err(super::params::missing("VideoEncode")),
        (None, None) => file.audio_only = true,
    }
    match &video {
        Some(v) => file.layout = Some(layout_of(v, images)?),
        None if current.is_some() => return Err(super::params::missing("VideoParams")),
        None => {}
    }
    let encode = audio.as_ref().and_then(|a| a.audio_encode.as_ref());
    file.audio = Some(match (encode, current) {
        (Some(enc), None) => {
            if enc.codec.is_some_and(|c| c.0 != 0) {
                return Err(unsupported("HE-AAC (this libavcodec has no libfdk_aac)"));
            }
            AudioFile {
                sample_rate: Some(req(enc.sample_rate, "SampleRate")?.int()),
                channels: Some(req(enc.channel, "Channel")?.int()),
                bitrate_kbps: Some(req(enc.bit_rate, "BitRate")?.int()),
                ..AudioFile::default()
            }
        }
        (None, None) => return Err(super::params::missing("AudioEncode")),
        (Some(_), Some(_)) => {
            return Err(unsupported("Changing the audio encoding of a running mix"));
        }
        (None, Some((_, a))) => AudioFile {
            sample_rate: Some(a.sample_rate.into()),
            channels: Some(a.channels.into()),
            bitrate_kbps: Some(a.bitrate_kbps.into()),
            ..AudioFile::default()
        },
    });
    super::params::validated(file, "api-mix", "InvalidParameter")
}

/// Per-user volumes, TRTC SoundLevel 0..=100.
pub(super) type Volumes = Vec<(String, u32)>;
/// A list of McuUserInfoParams: (UserId, SoundLevel).
type UserList = Vec<(String, Option<u32>)>;

fn user_list(items: Option<&Vec<McuUserInfoParams>>) -> Result<Option<UserList>, ApiError> {
    let Some(items) = items else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(items.len());
    for e in items {
        let info = req(e.user_info.as_ref(), "UserInfo")?;
        let user = req(info.user_id.as_deref(), "UserId")?;
        let level = match e.sound_level {
            Some(Num(l)) if l > 100 => return Err(invalid("SoundLevel", "0 to 100")),
            Some(Num(l)) => Some(l as u32),
            None => None,
        };
        out.push((user.to_owned(), level));
    }
    Ok(Some(out))
}

/// The audio allow/block lists and SoundLevels; `None` when neither list is given.
pub(super) fn audio_filter(p: &Params<'_>) -> Result<Option<(AudioFilter, Volumes)>, ApiError> {
    let Some(a) = read::<McuAudioParams>(p, "AudioParams")? else {
        return Ok(None);
    };
    let allow = user_list(a.subscribe_audio_list.as_ref())?;
    let block = user_list(a.un_subscribe_audio_list.as_ref())?;
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
