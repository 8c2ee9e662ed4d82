//! Relay profiles: the TOML form of a relay task's encoding, layout and outputs.
//!
//! A profile file (`profiles/*.toml`) is parsed into a `ProfileFile`
//! (`file`) that mirrors the TOML exactly, then validated (`validate`) into a
//! `RelayProfile` that the rest of the code uses; `load` reads files. The
//! TRTC API builds a `ProfileFile` from its request and validates it the same
//! way. The shape follows TRTC's StartPublishCdnStream
//! parameters (SPEC §2.5) and their ranges. Every error names the file, the
//! line where it can be found, the field and the allowed values.
//!
//! Pure apart from reading the files it is asked to load and checking that
//! images a profile names exist; no clock, no sockets.

use std::fmt;
use std::path::PathBuf;

/// Inputs a mix may hold at most (TRTC: 16).
pub const MAX_INPUTS: u32 = 16;
/// Default time a stalled anchor's last picture stays before its placeholder.
pub const DEFAULT_FREEZE_MS: u32 = 800;
/// Each mixed anchor's jitter buffer (`layout.jitter_buffer_ms`).
pub const DEFAULT_JITTER_BUFFER_MS: u32 = 150;
/// RTMP targets a task may push to at most (TRTC: 10).
pub const MAX_RTMP_TARGETS: usize = 10;

/// The profiles shipped in `profiles/`, embedded so the gateway has them on
/// its built-in defaults even without a profiles directory.
pub const BUILTIN: &[(&str, &str)] = &[
    ("grid-720p", include_str!("../../profiles/grid-720p.toml")),
    (
        "floating-1080p",
        include_str!("../../profiles/floating-1080p.toml"),
    ),
    (
        "screen-share-1080p",
        include_str!("../../profiles/screen-share-1080p.toml"),
    ),
    ("pip-720p", include_str!("../../profiles/pip-720p.toml")),
    (
        "passthrough",
        include_str!("../../profiles/passthrough.toml"),
    ),
    ("audio-only", include_str!("../../profiles/audio-only.toml")),
];

/// A validation failure: `file:line: field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.reason)
        } else {
            write!(f, ": {}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ProfileError {}

mod file;
mod load;
mod validate;

pub(crate) use file::*;
pub use load::{load_all, load_file, parse};
pub(crate) use validate::validate;

// ---------------------------------------------------------------------------
// The validated profile.

#[derive(Debug, Clone, PartialEq)]
pub struct RelayProfile {
    pub name: String,
    pub description: String,
    /// Where the profile came from (a file, or `builtin:NAME`).
    pub source: PathBuf,
    pub mode: RelayMode,
    /// `None` for audio-only profiles.
    pub video: Option<VideoEncoding>,
    pub audio: AudioEncoding,
    pub outputs: Outputs,
    /// Relay every anchor of matching rooms automatically (`auto = true`).
    pub auto: Option<AutoRelay>,
}

/// Which rooms an automatic profile relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoRelay {
    /// Room id patterns: exact, or a prefix ending in `*`. Empty: every room.
    pub rooms: Vec<String>,
}

impl AutoRelay {
    pub fn matches(&self, room: &str) -> bool {
        self.rooms.is_empty()
            || self.rooms.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => room == p,
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RelayMode {
    /// One anchor remuxed without video transcoding (TRTC WithTranscoding=0).
    Passthrough {
        /// Re-encode AAC audio too (TRTC always re-encodes audio).
        audio_reencode: bool,
    },
    /// Several anchors decoded, composed by layout and re-encoded.
    Mix { layout: Layout },
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoEncoding {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub gop_seconds: u32,
    pub preset: String,
    pub profile: H264Profile,
    pub tune: Option<String>,
    pub bframes: u32,
}

#[cfg(test)]
impl VideoEncoding {
    /// A small, quick encoding for codec tests: 320x180 at `fps`, an IDR
    /// every second, x264 ultrafast with no delay.
    pub(crate) fn small(fps: u32) -> VideoEncoding {
        VideoEncoding {
            width: 320,
            height: 180,
            fps,
            bitrate_kbps: 300,
            gop_seconds: 1,
            preset: "ultrafast".into(),
            profile: H264Profile::High,
            tune: Some("zerolatency".into()),
            bframes: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Profile {
    Baseline,
    Main,
    High,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioEncoding {
    pub sample_rate: u32,
    pub channels: u32,
    pub bitrate_kbps: u32,
    pub codec: AudioCodec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    AacLc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub mode: LayoutMode,
    pub max_inputs: u32,
    pub render_mode: RenderMode,
    pub background: Background,
    pub placeholder: Background,
    /// Audio-only users hold a cell (TRTC PureAudioHoldPlaceMode).
    pub audio_only_holds_cell: bool,
    /// The user shown big in floating / screen-share layouts (TRTC MaxVideoUser).
    pub main_user: Option<String>,
    /// Custom layouts only.
    pub cells: Vec<Cell>,
    /// A stalled anchor keeps its last picture this long, then shows its placeholder.
    pub freeze_ms: u32,
    /// How long past its own clock each anchor's frames are held to absorb
    /// network jitter (taken when the mix starts): the delay when the
    /// buffer is fixed, the most it grows to when adaptive.
    pub jitter_buffer_ms: u32,
    /// Whether each anchor's jitter buffer follows the lateness of its
    /// frames (`layout.jitter_buffer`).
    pub jitter_buffer: JitterBuffer,
}

/// How a mixed anchor's jitter buffer is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterBuffer {
    /// As little as the anchor's own lateness needs, up to
    /// `jitter_buffer_ms`: grown at once, shrunk slowly.
    Adaptive,
    /// Always `jitter_buffer_ms`.
    Fixed,
}

impl Default for Layout {
    /// What a profile without `[layout]` gets: a grid of up to 16, cropped,
    /// on black, dark grey placeholders.
    fn default() -> Layout {
        Layout {
            mode: LayoutMode::Grid,
            max_inputs: MAX_INPUTS,
            render_mode: RenderMode::Crop,
            background: Background::Color(Rgb(0, 0, 0)),
            placeholder: Background::Color(Rgb(0x33, 0x33, 0x33)),
            audio_only_holds_cell: false,
            main_user: None,
            cells: Vec::new(),
            freeze_ms: DEFAULT_FREEZE_MS,
            jitter_buffer_ms: DEFAULT_JITTER_BUFFER_MS,
            jitter_buffer: JitterBuffer::Adaptive,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutMode {
    Floating,
    Grid,
    ScreenShare,
    Pip,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderMode {
    /// Scale to fill the cell, cropping overflow.
    Crop,
    /// Scale to fit inside the cell, background showing around.
    Fit,
    /// Scale to the cell's size, ignoring aspect ratio.
    Stretch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Background {
    Color(Rgb),
    Image(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub z_order: u32,
    pub render_mode: RenderMode,
    /// Pinned user; unpinned cells are filled in entry order.
    pub user_id: Option<String>,
    pub placeholder: Option<Background>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    pub rtmp: Vec<String>,
    pub hls: Option<HlsOutput>,
    pub record: Option<RecordOutput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HlsOutput {
    pub segment_seconds: u32,
    /// Segments kept in the live playlist.
    pub window: u32,
    pub low_latency: bool,
    pub part_ms: u32,
    /// Segment container; LL-HLS is always fMP4.
    pub container: HlsContainer,
    /// Lower renditions of an ABR ladder (`[[outputs.hls.renditions]]`), each
    /// a full encoding: size, rate and fps from the profile, the rest from
    /// `[video]`. Keyframes follow the task's own output.
    pub renditions: Vec<VideoEncoding>,
}

/// Renditions a profile's ladder may list besides its own stream.
pub const MAX_RENDITIONS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HlsContainer {
    /// MPEG-TS segments (the default: every player, however old).
    Ts,
    /// CMAF/fMP4 segments (`EXT-X-MAP`), served from memory.
    Fmp4,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordOutput {
    pub format: RecordFormat,
    pub max_file_minutes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    Mp4,
    Hls,
    HlsAndMp4,
    Aac,
}

/// `0xRRGGBB` (TRTC) or `#RRGGBB`.
pub fn parse_rgb(s: &str) -> Option<Rgb> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .or_else(|| s.strip_prefix('#'))?;
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let n = u32::from_str_radix(hex, 16).ok()?;
    Some(Rgb((n >> 16) as u8, (n >> 8) as u8, n as u8))
}

/// An RTMP push target: `rtmp://host[:port]/app/stream[?query]`.
pub fn check_rtmp_url(url: &str) -> Result<(), String> {
    if url.len() > 1024 {
        return Err("URL longer than 1024 bytes".into());
    }
    crate::rtmp::push::PushUrl::parse(url).map(|_| ())
}

#[cfg(test)]
mod tests;
