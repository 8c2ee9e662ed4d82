//! The mix parameters of TRTC requests as serde types.
//!
//! StartPublishCdnStream's VideoParams/AudioParams and CreateCloudRecording's
//! MixTranscodeParams/MixLayoutParams are read in one pass; a field of the
//! wrong type is refused with its path (`VideoParams.VideoEncode.Width`).
//! What they mean is then written into a `ProfileFile`, which the one
//! profile validation checks (ranges, cell geometry), as for a profile file.
//! Unknown fields are ignored, as TRTC's server ignores what it does not
//! use; fields roomcast cannot honour are named so the caller can refuse
//! them.

use serde::de::{self, DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::ApiError;
use super::params::{Params, invalid, missing};

/// Reads the parameter `name` of the request as `T`; `None` when absent or null.
pub(super) fn read<T: DeserializeOwned>(p: &Params<'_>, name: &str) -> Result<Option<T>, ApiError> {
    match p.get(name) {
        None => Ok(None),
        Some(v @ Value::Object(_)) => parse(v, name).map(Some),
        Some(_) => Err(invalid(name, "not an object")),
    }
}

/// `v` as `T`; an error names the field's path under `name`.
pub(super) fn parse<T: DeserializeOwned>(v: &Value, name: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = match path.as_str() {
            "." => name.to_owned(),
            p if p.starts_with('[') => format!("{name}{p}"),
            p => format!("{name}.{p}"),
        };
        invalid(&at, e.into_inner())
    })
}

/// A required field: `MissingParameter` naming it when absent.
pub(super) fn req<T>(v: Option<T>, name: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| missing(name))
}

/// An unsigned integer, as JSON has it or as a GET query flattens it (a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Num(pub u64);

impl Num {
    /// As a profile field: out-of-range values are refused by validation, never wrapped.
    pub(super) fn int(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an unsigned integer")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Num, E> {
                Ok(Num(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Num, E> {
                u64::try_from(n)
                    .map(Num)
                    .map_err(|_| E::custom("not an unsigned integer"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Num, E> {
                s.parse()
                    .map(Num)
                    .map_err(|_| E::custom("not an unsigned integer"))
            }
        }
        d.deserialize_any(V)
    }
}

/// StartPublishCdnStream / UpdatePublishCdnStream `VideoParams` (McuVideoParams).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct McuVideoParams {
    pub video_encode: Option<McuVideoEncode>,
    pub layout_params: Option<McuLayoutParams>,
    pub back_ground_color: Option<String>,
    pub background_image_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct McuVideoEncode {
    pub width: Option<Num>,
    pub height: Option<Num>,
    pub fps: Option<Num>,
    pub bit_rate: Option<Num>,
    pub gop: Option<Num>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct McuLayoutParams {
    pub mix_layout_mode: Option<Num>,
    pub pure_audio_hold_place_mode: Option<Num>,
    pub render_mode: Option<Num>,
    pub max_video_user: Option<MaxVideoUser>,
    pub mix_layout_list: Option<Vec<McuLayout>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct MaxVideoUser {
    pub user_media_stream: Option<UserMediaStream>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UserMediaStream {
    pub user_info: Option<UserInfo>,
}

impl UserMediaStream {
    pub(super) fn user(&self) -> Option<&str> {
        self.user_info.as_ref()?.user_id.as_deref()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UserInfo {
    pub user_id: Option<String>,
}

/// One cell of a custom layout (McuLayout).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct McuLayout {
    pub user_media_stream: Option<UserMediaStream>,
    pub image_width: Option<Num>,
    pub image_height: Option<Num>,
    pub location_x: Option<Num>,
    pub location_y: Option<Num>,
    pub z_order: Option<Num>,
    pub render_mode: Option<Num>,
    pub background_image_url: Option<String>,
    pub transparent_url: Option<String>,
    pub custom_crop: Option<IgnoredAny>,
}

/// `AudioParams` (McuAudioParams).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct McuAudioParams {
    pub audio_encode: Option<McuAudioEncode>,
    pub subscribe_audio_list: Option<Vec<McuUserInfoParams>>,
    pub un_subscribe_audio_list: Option<Vec<McuUserInfoParams>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct McuAudioEncode {
    pub sample_rate: Option<Num>,
    pub channel: Option<Num>,
    pub bit_rate: Option<Num>,
    pub codec: Option<Num>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct McuUserInfoParams {
    pub user_info: Option<UserInfo>,
    pub sound_level: Option<Num>,
}

/// CreateCloudRecording `MixTranscodeParams`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct MixTranscodeParams {
    pub video_params: Option<RecordVideoParams>,
    pub audio_params: Option<RecordAudioParams>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RecordVideoParams {
    pub width: Option<Num>,
    pub height: Option<Num>,
    pub fps: Option<Num>,
    /// Bits per second.
    pub bit_rate: Option<Num>,
    pub gop: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RecordAudioParams {
    /// 1 = 48 kHz, 2 = 44.1 kHz, 3 = 16 kHz.
    pub sample_rate: Option<Num>,
    pub channel: Option<Num>,
    /// Bits per second.
    pub bit_rate: Option<Num>,
}

/// CreateCloudRecording / ModifyCloudRecording `MixLayoutParams`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct MixLayoutParams {
    pub mix_layout_mode: Option<Num>,
    pub back_ground_color: Option<String>,
    pub max_resolution_user_id: Option<String>,
    /// The canvas's image (fetched at the call: `images`).
    pub background_image_url: Option<String>,
    /// Every cell's placeholder image.
    pub default_sub_background_image: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_come_as_json_numbers_or_query_strings() {
        let v: McuVideoEncode = parse(
            &json!({"Width": 1280, "Height": "720", "Fps": null}),
            "VideoEncode",
        )
        .unwrap();
        assert_eq!(
            (v.width, v.height, v.fps),
            (Some(Num(1280)), Some(Num(720)), None)
        );
    }

    #[test]
    fn a_bad_field_is_named_by_its_path() {
        let e = parse::<McuVideoParams>(
            &json!({"LayoutParams": {"MixLayoutList": [{"ImageWidth": 1}, {"ImageWidth": -3}]}}),
            "VideoParams",
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidParameter");
        assert!(
            e.message
                .contains("VideoParams.LayoutParams.MixLayoutList[1].ImageWidth"),
            "{}",
            e.message
        );
        let e =
            parse::<McuAudioParams>(&json!({"SubscribeAudioList": 5}), "AudioParams").unwrap_err();
        assert!(
            e.message.contains("AudioParams.SubscribeAudioList"),
            "{}",
            e.message
        );
        let e =
            parse::<Vec<McuUserInfoParams>>(&json!([{"SoundLevel": "loud"}]), "List").unwrap_err();
        assert!(e.message.contains("`List[0].SoundLevel`"), "{}", e.message);
        let body = json!({"VideoParams": [1]});
        let e = read::<McuVideoParams>(&Params::new(body.as_object().unwrap()), "VideoParams")
            .unwrap_err();
        assert!(
            e.message
                .contains("`VideoParams` is invalid: not an object"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_named_ones_kept() {
        let v: McuLayout = parse(
            &json!({"CustomCrop": {"CropWidth": 1}, "Extra": [1, 2], "UserMediaStream": {"UserInfo": {"UserId": "a"}}}),
            "MixLayoutList",
        )
        .unwrap();
        assert!(v.custom_crop.is_some());
        assert_eq!(v.user_media_stream.unwrap().user(), Some("a"));
    }
}
