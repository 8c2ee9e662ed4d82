//! The file shape: exactly what a profile's TOML says, before validation.
//! The TRTC API builds the same shape from its request parameters, so both
//! are validated by one [`super::validate`].

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileFile {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) passthrough: bool,
    #[serde(default)]
    pub(crate) audio_only: bool,
    #[serde(default)]
    pub(crate) auto: bool,
    pub(crate) auto_rooms: Option<Vec<String>>,
    pub(crate) video: Option<VideoFile>,
    pub(crate) audio: Option<AudioFile>,
    pub(crate) layout: Option<LayoutFile>,
    pub(crate) outputs: Option<OutputsFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VideoFile {
    pub(crate) width: Option<i64>,
    pub(crate) height: Option<i64>,
    pub(crate) fps: Option<i64>,
    pub(crate) bitrate_kbps: Option<i64>,
    pub(crate) gop_seconds: Option<i64>,
    pub(crate) preset: Option<String>,
    pub(crate) profile: Option<String>,
    pub(crate) tune: Option<String>,
    pub(crate) bframes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AudioFile {
    pub(crate) sample_rate: Option<i64>,
    pub(crate) channels: Option<i64>,
    pub(crate) bitrate_kbps: Option<i64>,
    pub(crate) codec: Option<String>,
    pub(crate) reencode: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LayoutFile {
    pub(crate) mode: Option<String>,
    pub(crate) max_inputs: Option<i64>,
    pub(crate) render_mode: Option<String>,
    pub(crate) background_color: Option<String>,
    pub(crate) background_image: Option<String>,
    pub(crate) placeholder_color: Option<String>,
    pub(crate) placeholder_image: Option<String>,
    pub(crate) audio_only_holds_cell: Option<bool>,
    pub(crate) main_user: Option<String>,
    pub(crate) freeze_ms: Option<i64>,
    pub(crate) jitter_buffer_ms: Option<i64>,
    pub(crate) jitter_buffer: Option<String>,
    #[serde(default)]
    pub(crate) cells: Vec<CellFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CellFile {
    pub(crate) x: i64,
    pub(crate) y: i64,
    pub(crate) width: i64,
    pub(crate) height: i64,
    #[serde(default)]
    pub(crate) z_order: i64,
    pub(crate) render_mode: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) placeholder_color: Option<String>,
    pub(crate) placeholder_image: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutputsFile {
    #[serde(default)]
    pub(crate) rtmp: Vec<String>,
    pub(crate) hls: Option<HlsFile>,
    pub(crate) record: Option<RecordFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HlsFile {
    pub(crate) enabled: Option<bool>,
    pub(crate) segment_seconds: Option<i64>,
    pub(crate) window: Option<i64>,
    pub(crate) low_latency: Option<bool>,
    pub(crate) part_ms: Option<i64>,
    pub(crate) container: Option<String>,
    pub(crate) renditions: Option<Vec<RenditionFile>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenditionFile {
    pub(crate) width: Option<i64>,
    pub(crate) height: Option<i64>,
    pub(crate) bitrate_kbps: Option<i64>,
    pub(crate) fps: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordFile {
    pub(crate) enabled: Option<bool>,
    pub(crate) format: Option<String>,
    pub(crate) max_file_minutes: Option<i64>,
}
