//! Relay profiles: the TOML form of a relay task's encoding, layout and outputs.
//!
//! A profile file (`profiles/*.toml`) is parsed into a private `ProfileFile`
//! that mirrors the TOML exactly, then validated into a `RelayProfile` that
//! the rest of the code uses. The shape follows TRTC's StartPublishCdnStream
//! parameters (SPEC §2.5) and their ranges. Every error names the file, the
//! line where it can be found, the field and the allowed values.
//!
//! Pure apart from reading the files it is asked to load and checking that
//! images a profile names exist; no clock, no sockets.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Inputs a mix may hold at most (TRTC: 16).
pub const MAX_INPUTS: u32 = 16;
/// Default time a stalled anchor's last picture stays before its placeholder.
pub const DEFAULT_FREEZE_MS: u32 = 800;
/// RTMP targets a task may push to at most (TRTC: 10).
pub const MAX_RTMP_TARGETS: usize = 10;

/// The profiles shipped in `profiles/`, embedded so the gateway has them on
/// its built-in defaults even without a profiles directory.
pub const BUILTIN: &[(&str, &str)] = &[
    ("grid-720p", include_str!("../profiles/grid-720p.toml")),
    (
        "floating-1080p",
        include_str!("../profiles/floating-1080p.toml"),
    ),
    (
        "screen-share-1080p",
        include_str!("../profiles/screen-share-1080p.toml"),
    ),
    ("pip-720p", include_str!("../profiles/pip-720p.toml")),
    ("passthrough", include_str!("../profiles/passthrough.toml")),
    ("audio-only", include_str!("../profiles/audio-only.toml")),
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

// ---------------------------------------------------------------------------
// The file shape: exactly what the TOML says.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    passthrough: bool,
    #[serde(default)]
    audio_only: bool,
    #[serde(default)]
    auto: bool,
    auto_rooms: Option<Vec<String>>,
    video: Option<VideoFile>,
    audio: Option<AudioFile>,
    layout: Option<LayoutFile>,
    outputs: Option<OutputsFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VideoFile {
    width: Option<i64>,
    height: Option<i64>,
    fps: Option<i64>,
    bitrate_kbps: Option<i64>,
    gop_seconds: Option<i64>,
    preset: Option<String>,
    profile: Option<String>,
    tune: Option<String>,
    bframes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudioFile {
    sample_rate: Option<i64>,
    channels: Option<i64>,
    bitrate_kbps: Option<i64>,
    codec: Option<String>,
    reencode: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutFile {
    mode: Option<String>,
    max_inputs: Option<i64>,
    render_mode: Option<String>,
    background_color: Option<String>,
    background_image: Option<String>,
    placeholder_color: Option<String>,
    placeholder_image: Option<String>,
    audio_only_holds_cell: Option<bool>,
    main_user: Option<String>,
    freeze_ms: Option<i64>,
    #[serde(default)]
    cells: Vec<CellFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CellFile {
    x: i64,
    y: i64,
    width: i64,
    height: i64,
    #[serde(default)]
    z_order: i64,
    render_mode: Option<String>,
    user_id: Option<String>,
    placeholder_color: Option<String>,
    placeholder_image: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputsFile {
    #[serde(default)]
    rtmp: Vec<String>,
    hls: Option<HlsFile>,
    record: Option<RecordFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HlsFile {
    enabled: Option<bool>,
    segment_seconds: Option<i64>,
    window: Option<i64>,
    low_latency: Option<bool>,
    part_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    enabled: Option<bool>,
    format: Option<String>,
    max_file_minutes: Option<i64>,
}

// ---------------------------------------------------------------------------
// Loading.

/// Loads and validates one profile file.
pub fn load_file(path: &Path) -> Result<RelayProfile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
        file: path.to_path_buf(),
        line: None,
        field: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &stem, path, base)
}

/// Parses and validates profile text. `default_name` is used when the file
/// names none; `source` is the name errors show; relative image paths are
/// resolved against `base_dir`.
pub fn parse(
    text: &str,
    default_name: &str,
    source: &Path,
    base_dir: &Path,
) -> Result<RelayProfile, ProfileError> {
    let file: ProfileFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of_offset(text, s.start));
        let field = line
            .and_then(|l| text.lines().nth(l - 1))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().to_owned())
            .unwrap_or_default();
        ProfileError {
            file: source.to_path_buf(),
            line,
            field,
            reason: e.message().to_owned(),
        }
    })?;
    let v = Validator {
        text,
        source,
        base_dir,
    };
    v.profile(file, default_name)
}

/// The embedded profiles, then every `*.toml` in `dir` (a file overrides an
/// embedded profile of the same name). Returns every error, not just the first.
pub fn load_all(dir: Option<&Path>) -> Result<Vec<RelayProfile>, Vec<ProfileError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in BUILTIN {
        let src = PathBuf::from(format!("builtin:{name}"));
        match parse(text, name, &src, Path::new(".")) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e),
        }
    }
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) => {
                errors.push(ProfileError {
                    file: dir.to_path_buf(),
                    line: None,
                    field: String::new(),
                    reason: format!("cannot list: {e}"),
                });
                Vec::new()
            }
        };
        files.sort();
        for f in files {
            match load_file(&f) {
                Ok(p) => {
                    out.retain(|q: &RelayProfile| q.name != p.name);
                    out.push(p);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------
// Validation.

struct Validator<'a> {
    text: &'a str,
    source: &'a Path,
    base_dir: &'a Path,
}

/// One step of a path into the TOML document.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl Validator<'_> {
    fn err(&self, path: &[Seg<'_>], reason: impl Into<String>) -> ProfileError {
        let field = path
            .iter()
            .map(|s| match s {
                Seg::Key(k) => format!(".{k}"),
                Seg::Index(i) => format!("[{i}]"),
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_owned();
        ProfileError {
            file: self.source.to_path_buf(),
            line: line_of_path(self.text, path),
            field,
            reason: reason.into(),
        }
    }

    fn range(
        &self,
        path: &[Seg<'_>],
        v: Option<i64>,
        default: u32,
        lo: u32,
        hi: u32,
    ) -> Result<u32, ProfileError> {
        match v {
            None => Ok(default),
            Some(v) if v >= i64::from(lo) && v <= i64::from(hi) => Ok(v as u32),
            Some(v) => Err(self.err(path, format!("{v} is out of range {lo}..={hi}"))),
        }
    }

    fn choice<T: Copy>(
        &self,
        path: &[Seg<'_>],
        v: Option<&str>,
        default: T,
        allowed: &[(&str, T)],
    ) -> Result<T, ProfileError> {
        let Some(v) = v else { return Ok(default) };
        allowed
            .iter()
            .find(|(name, _)| *name == v)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let names: Vec<_> = allowed.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.err(path, format!("\"{v}\" is not one of {}", names.join(", ")))
            })
    }

    fn profile(&self, f: ProfileFile, default_name: &str) -> Result<RelayProfile, ProfileError> {
        let name = f.name.unwrap_or_else(|| default_name.to_owned());
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.err(
                &[Seg::Key("name")],
                "must be 1-64 characters of letters, digits, '-' and '_'",
            ));
        }
        if f.passthrough && f.layout.is_some() {
            return Err(self.err(
                &[Seg::Key("layout")],
                "a passthrough profile relays one anchor as is; it takes no [layout]",
            ));
        }
        if f.audio_only && f.video.is_some() {
            return Err(self.err(
                &[Seg::Key("video")],
                "an audio_only profile takes no [video]",
            ));
        }
        if f.audio_only && f.layout.is_some() {
            return Err(self.err(
                &[Seg::Key("layout")],
                "an audio_only profile has no picture; it takes no [layout]",
            ));
        }
        let video = if f.audio_only {
            None
        } else {
            Some(self.video(f.video)?)
        };
        let audio = self.audio(f.audio.as_ref())?;
        let audio_reencode = f.audio.as_ref().and_then(|a| a.reencode);
        let mode = if f.passthrough {
            RelayMode::Passthrough {
                audio_reencode: audio_reencode.unwrap_or(false),
            }
        } else {
            if audio_reencode.is_some() {
                return Err(self.err(
                    &[Seg::Key("audio"), Seg::Key("reencode")],
                    "only passthrough profiles choose; a mix always re-encodes audio",
                ));
            }
            let canvas = video.as_ref().map(|v| (v.width, v.height));
            RelayMode::Mix {
                layout: self.layout(f.layout, canvas)?,
            }
        };
        let outputs = self.outputs(f.outputs, f.audio_only)?;
        let auto = match (f.auto, f.auto_rooms) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(self.err(&[Seg::Key("auto_rooms")], "needs auto = true"));
            }
            (true, _) if !f.passthrough => {
                return Err(self.err(
                    &[Seg::Key("auto")],
                    "automatic relays take each anchor on its own: passthrough profiles only",
                ));
            }
            (true, rooms) => {
                let rooms = rooms.unwrap_or_default();
                if let Some(bad) = rooms.iter().find(|r| r.is_empty() || r.len() > 65) {
                    return Err(self.err(
                        &[Seg::Key("auto_rooms")],
                        format!("\"{bad}\": a room id or a prefix ending in '*'"),
                    ));
                }
                Some(AutoRelay { rooms })
            }
        };
        Ok(RelayProfile {
            auto,
            name,
            description: f.description.unwrap_or_default(),
            source: self.source.to_path_buf(),
            mode,
            video,
            audio,
            outputs,
        })
    }

    fn video(&self, v: Option<VideoFile>) -> Result<VideoEncoding, ProfileError> {
        let v = v.unwrap_or(VideoFile {
            width: None,
            height: None,
            fps: None,
            bitrate_kbps: None,
            gop_seconds: None,
            preset: None,
            profile: None,
            tune: None,
            bframes: None,
        });
        let p = |k| [Seg::Key("video"), Seg::Key(k)];
        let width = self.range(&p("width"), v.width, 1280, 16, 1920)?;
        let height = self.range(&p("height"), v.height, 720, 16, 1920)?;
        for (k, n) in [("width", width), ("height", height)] {
            if n % 2 != 0 {
                return Err(self.err(&p(k), format!("{n} must be even (4:2:0 chroma)")));
            }
        }
        let fps = self.range(&p("fps"), v.fps, 30, 1, 60)?;
        let bitrate_kbps = self.range(&p("bitrate_kbps"), v.bitrate_kbps, 2000, 1, 10_000)?;
        let gop_seconds = self.range(&p("gop_seconds"), v.gop_seconds, 2, 1, 5)?;
        const PRESETS: &[(&str, ())] = &[
            ("ultrafast", ()),
            ("superfast", ()),
            ("veryfast", ()),
            ("faster", ()),
            ("fast", ()),
            ("medium", ()),
            ("slow", ()),
            ("slower", ()),
            ("veryslow", ()),
        ];
        self.choice(&p("preset"), v.preset.as_deref(), (), PRESETS)?;
        let preset = v.preset.unwrap_or_else(|| "veryfast".into());
        let profile = self.choice(
            &p("profile"),
            v.profile.as_deref(),
            H264Profile::High,
            &[
                ("baseline", H264Profile::Baseline),
                ("main", H264Profile::Main),
                ("high", H264Profile::High),
            ],
        )?;
        const TUNES: &[(&str, ())] = &[
            ("film", ()),
            ("animation", ()),
            ("grain", ()),
            ("stillimage", ()),
            ("fastdecode", ()),
            ("zerolatency", ()),
        ];
        self.choice(&p("tune"), v.tune.as_deref(), (), TUNES)?;
        let bframes = self.range(&p("bframes"), v.bframes, 0, 0, 16)?;
        if profile == H264Profile::Baseline && bframes > 0 {
            return Err(self.err(&p("bframes"), "the baseline profile has no B-frames; use 0"));
        }
        if v.tune.as_deref() == Some("zerolatency") && bframes > 0 {
            return Err(self.err(
                &p("bframes"),
                "tune \"zerolatency\" disables B-frames; use 0",
            ));
        }
        Ok(VideoEncoding {
            width,
            height,
            fps,
            bitrate_kbps,
            gop_seconds,
            preset,
            profile,
            tune: v.tune,
            bframes,
        })
    }

    fn audio(&self, a: Option<&AudioFile>) -> Result<AudioEncoding, ProfileError> {
        let p = |k| [Seg::Key("audio"), Seg::Key(k)];
        let sample_rate = match a.and_then(|a| a.sample_rate) {
            None => 48_000,
            Some(r @ (48_000 | 44_100 | 32_000 | 24_000 | 16_000 | 8_000)) => r as u32,
            Some(r) => {
                return Err(self.err(
                    &p("sample_rate"),
                    format!("{r} is not one of 48000, 44100, 32000, 24000, 16000, 8000"),
                ));
            }
        };
        let channels = self.range(&p("channels"), a.and_then(|a| a.channels), 2, 1, 2)?;
        let bitrate_kbps = self.range(
            &p("bitrate_kbps"),
            a.and_then(|a| a.bitrate_kbps),
            128,
            8,
            500,
        )?;
        let codec_name = a.and_then(|a| a.codec.as_deref());
        if let Some(c @ ("he-aac" | "he-aac-v2")) = codec_name {
            return Err(self.err(
                &p("codec"),
                format!(
                    "\"{c}\" needs libfdk_aac, which this build's libavcodec does not have; use \"aac-lc\""
                ),
            ));
        }
        let codec = self.choice(
            &p("codec"),
            codec_name,
            AudioCodec::AacLc,
            &[("aac-lc", AudioCodec::AacLc)],
        )?;
        Ok(AudioEncoding {
            sample_rate,
            channels,
            bitrate_kbps,
            codec,
        })
    }

    fn background(
        &self,
        path: &[Seg<'_>],
        color: Option<&str>,
        color_key: &'static str,
        image: Option<&str>,
        image_key: &'static str,
        default: Rgb,
    ) -> Result<Background, ProfileError> {
        let key = |k| {
            let mut v = path.to_vec();
            v.push(Seg::Key(k));
            v
        };
        if let Some(img) = image {
            let file = self.base_dir.join(img);
            if img.is_empty() || !file.is_file() {
                return Err(self.err(
                    &key(image_key),
                    format!("image file \"{}\" does not exist", file.display()),
                ));
            }
            return Ok(Background::Image(file));
        }
        match color {
            None => Ok(Background::Color(default)),
            Some(c) => parse_rgb(c).map(Background::Color).ok_or_else(|| {
                self.err(
                    &key(color_key),
                    format!("\"{c}\" is not a colour like \"0x1a2b3c\" or \"#1a2b3c\""),
                )
            }),
        }
    }

    fn layout(
        &self,
        l: Option<LayoutFile>,
        canvas: Option<(u32, u32)>,
    ) -> Result<Layout, ProfileError> {
        let Some(l) = l else {
            return Ok(Layout::default());
        };
        let p = |k| [Seg::Key("layout"), Seg::Key(k)];
        const RENDER: &[(&str, RenderMode)] = &[
            ("crop", RenderMode::Crop),
            ("fit", RenderMode::Fit),
            ("stretch", RenderMode::Stretch),
        ];
        let mode = self.choice(
            &p("mode"),
            l.mode.as_deref(),
            LayoutMode::Grid,
            &[
                ("floating", LayoutMode::Floating),
                ("grid", LayoutMode::Grid),
                ("screen-share", LayoutMode::ScreenShare),
                ("pip", LayoutMode::Pip),
                ("custom", LayoutMode::Custom),
            ],
        )?;
        let max_inputs = self.range(&p("max_inputs"), l.max_inputs, MAX_INPUTS, 1, MAX_INPUTS)?;
        let render_mode = self.choice(
            &p("render_mode"),
            l.render_mode.as_deref(),
            RenderMode::Crop,
            RENDER,
        )?;
        let background = self.background(
            &[Seg::Key("layout")],
            l.background_color.as_deref(),
            "background_color",
            l.background_image.as_deref(),
            "background_image",
            Rgb(0, 0, 0),
        )?;
        let placeholder = self.background(
            &[Seg::Key("layout")],
            l.placeholder_color.as_deref(),
            "placeholder_color",
            l.placeholder_image.as_deref(),
            "placeholder_image",
            Rgb(0x33, 0x33, 0x33),
        )?;
        if let Some(u) = &l.main_user
            && !matches!(
                mode,
                LayoutMode::Floating | LayoutMode::ScreenShare | LayoutMode::Pip
            )
        {
            return Err(self.err(
                &p("main_user"),
                format!("\"{u}\": only floating, screen-share and pip layouts have a main user"),
            ));
        }
        if mode != LayoutMode::Custom && !l.cells.is_empty() {
            return Err(self.err(&p("cells"), "cells are for mode = \"custom\" only"));
        }
        if mode == LayoutMode::Custom && l.cells.is_empty() {
            return Err(self.err(
                &p("mode"),
                "a custom layout needs at least one [[layout.cells]]",
            ));
        }
        if l.cells.len() > MAX_INPUTS as usize {
            return Err(self.err(
                &p("cells"),
                format!("{} cells; at most {MAX_INPUTS}", l.cells.len()),
            ));
        }
        let (cw, ch) = canvas.unwrap_or((1920, 1920));
        let mut cells = Vec::with_capacity(l.cells.len());
        for (i, c) in l.cells.iter().enumerate() {
            let cp = |k| {
                [
                    Seg::Key("layout"),
                    Seg::Key("cells"),
                    Seg::Index(i),
                    Seg::Key(k),
                ]
            };
            let x = self.range(&cp("x"), Some(c.x), 0, 0, cw - 2)?;
            let y = self.range(&cp("y"), Some(c.y), 0, 0, ch - 2)?;
            let width = self.range(&cp("width"), Some(c.width), 0, 2, cw - x)?;
            let height = self.range(&cp("height"), Some(c.height), 0, 2, ch - y)?;
            let z_order = self.range(&cp("z_order"), Some(c.z_order), 0, 0, 255)?;
            let render_mode = self.choice(
                &cp("render_mode"),
                c.render_mode.as_deref(),
                render_mode,
                RENDER,
            )?;
            let placeholder = if c.placeholder_color.is_some() || c.placeholder_image.is_some() {
                Some(self.background(
                    &[Seg::Key("layout"), Seg::Key("cells"), Seg::Index(i)],
                    c.placeholder_color.as_deref(),
                    "placeholder_color",
                    c.placeholder_image.as_deref(),
                    "placeholder_image",
                    Rgb(0, 0, 0),
                )?)
            } else {
                None
            };
            if let Some(u) = &c.user_id {
                if u.is_empty() || u.len() > 32 {
                    return Err(self.err(&cp("user_id"), "a UserID is 1-32 bytes"));
                }
                if l.cells[..i].iter().any(|o| o.user_id.as_ref() == Some(u)) {
                    return Err(self.err(&cp("user_id"), format!("\"{u}\" is pinned to two cells")));
                }
            }
            cells.push(Cell {
                x,
                y,
                width,
                height,
                z_order,
                render_mode,
                user_id: c.user_id.clone(),
                placeholder,
            });
        }
        let freeze_ms = self.range(&p("freeze_ms"), l.freeze_ms, DEFAULT_FREEZE_MS, 0, 10_000)?;
        Ok(Layout {
            freeze_ms,
            mode,
            max_inputs,
            render_mode,
            background,
            placeholder,
            audio_only_holds_cell: l.audio_only_holds_cell.unwrap_or(false),
            main_user: l.main_user,
            cells,
        })
    }

    fn outputs(&self, o: Option<OutputsFile>, audio_only: bool) -> Result<Outputs, ProfileError> {
        let Some(o) = o else {
            return Ok(Outputs {
                rtmp: Vec::new(),
                hls: Some(HlsOutput {
                    segment_seconds: 2,
                    window: 6,
                    low_latency: false,
                    part_ms: 500,
                }),
                record: None,
            });
        };
        if o.rtmp.len() > MAX_RTMP_TARGETS {
            return Err(self.err(
                &[Seg::Key("outputs"), Seg::Key("rtmp")],
                format!("{} URLs; at most {MAX_RTMP_TARGETS}", o.rtmp.len()),
            ));
        }
        for (i, url) in o.rtmp.iter().enumerate() {
            if let Err(why) = check_rtmp_url(url) {
                return Err(self.err(&[Seg::Key("outputs"), Seg::Key("rtmp"), Seg::Index(i)], why));
            }
        }
        let hls = match o.hls {
            Some(h) if h.enabled == Some(false) => None,
            h => {
                let h = h.unwrap_or(HlsFile {
                    enabled: None,
                    segment_seconds: None,
                    window: None,
                    low_latency: None,
                    part_ms: None,
                });
                let p = |k| [Seg::Key("outputs"), Seg::Key("hls"), Seg::Key(k)];
                let segment_seconds =
                    self.range(&p("segment_seconds"), h.segment_seconds, 2, 1, 10)?;
                let window = self.range(&p("window"), h.window, 6, 3, 60)?;
                let part_ms = self.range(&p("part_ms"), h.part_ms, 500, 100, 2000)?;
                if part_ms >= segment_seconds * 1000 {
                    return Err(self.err(&p("part_ms"), "must be shorter than segment_seconds"));
                }
                Some(HlsOutput {
                    segment_seconds,
                    window,
                    low_latency: h.low_latency.unwrap_or(false),
                    part_ms,
                })
            }
        };
        let record = match o.record {
            Some(r) if r.enabled != Some(false) => {
                let p = |k| [Seg::Key("outputs"), Seg::Key("record"), Seg::Key(k)];
                let format = self.choice(
                    &p("format"),
                    r.format.as_deref(),
                    if audio_only {
                        RecordFormat::Aac
                    } else {
                        RecordFormat::Mp4
                    },
                    &[
                        ("mp4", RecordFormat::Mp4),
                        ("hls", RecordFormat::Hls),
                        ("hls+mp4", RecordFormat::HlsAndMp4),
                        ("aac", RecordFormat::Aac),
                    ],
                )?;
                let max_file_minutes =
                    self.range(&p("max_file_minutes"), r.max_file_minutes, 1440, 1, 1440)?;
                Some(RecordOutput {
                    format,
                    max_file_minutes,
                })
            }
            _ => None,
        };
        Ok(Outputs {
            rtmp: o.rtmp,
            hls,
            record,
        })
    }
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

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where a key path is written, found through toml_edit's spans;
/// falls back to the deepest ancestor that exists.
fn line_of_path(text: &str, path: &[Seg<'_>]) -> Option<usize> {
    use toml_edit::{ImDocument, Item, Table, Value};
    #[derive(Clone, Copy)]
    enum Node<'d> {
        Item(&'d Item),
        Table(&'d Table),
        Value(&'d Value),
    }
    fn table_child<'d>(
        t: &'d Table,
        k: &str,
    ) -> Option<(Option<std::ops::Range<usize>>, Node<'d>)> {
        t.get_key_value(k)
            .map(|(key, it)| (key.span(), Node::Item(it)))
    }
    let doc = ImDocument::parse(text).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut best = None;
    for seg in path {
        let next = match (seg, node) {
            (Seg::Key(k), Node::Table(t)) | (Seg::Key(k), Node::Item(Item::Table(t))) => {
                table_child(t, k)
            }
            (Seg::Key(k), Node::Item(Item::Value(Value::InlineTable(t))))
            | (Seg::Key(k), Node::Value(Value::InlineTable(t))) => t
                .get_key_value(k)
                .map(|(key, it)| (key.span(), Node::Item(it))),
            (Seg::Index(i), Node::Item(Item::ArrayOfTables(a))) => {
                a.get(*i).map(|t| (t.span(), Node::Table(t)))
            }
            (Seg::Index(i), Node::Item(Item::Value(Value::Array(a))))
            | (Seg::Index(i), Node::Value(Value::Array(a))) => {
                a.get(*i).map(|v| (v.span(), Node::Value(v)))
            }
            _ => None,
        };
        let Some((span, child)) = next else { break };
        if let Some(s) = span {
            best = Some(line_of_offset(text, s.start));
        }
        node = child;
    }
    best
}

#[cfg(test)]
mod tests;
