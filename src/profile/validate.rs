//! Validation: a [`ProfileFile`] becomes a [`RelayProfile`], or an error
//! naming the field path, the allowed values and (for a file) its line.

use std::path::Path;

use super::file::*;
use super::*;

pub(super) struct Validator<'a> {
    /// The TOML text errors find their line in (empty when built in code).
    pub(super) text: &'a str,
    pub(super) source: &'a Path,
    pub(super) base_dir: &'a Path,
}

/// Validates a profile built in code (the TRTC API's requests): errors name
/// the field path; `source` is what they show as the file.
pub(crate) fn validate(
    file: ProfileFile,
    name: &str,
    source: &Path,
) -> Result<RelayProfile, ProfileError> {
    Validator {
        text: "",
        source,
        base_dir: Path::new("."),
    }
    .profile(file, name)
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

    pub(super) fn profile(
        &self,
        f: ProfileFile,
        default_name: &str,
    ) -> Result<RelayProfile, ProfileError> {
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
        let outputs = self.outputs(f.outputs, f.audio_only, video.as_ref())?;
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

    /// `[[outputs.hls.renditions]]`: each a copy of `[video]` at its own
    /// size, bit rate and frame rate.
    fn renditions(
        &self,
        list: Option<Vec<RenditionFile>>,
        video: Option<&VideoEncoding>,
        container: HlsContainer,
    ) -> Result<Vec<VideoEncoding>, ProfileError> {
        let list = list.unwrap_or_default();
        if list.is_empty() {
            return Ok(Vec::new());
        }
        let at = [Seg::Key("outputs"), Seg::Key("hls"), Seg::Key("renditions")];
        let Some(base) = video else {
            return Err(self.err(&at, "an audio-only profile has no pictures to scale"));
        };
        if container != HlsContainer::Fmp4 {
            return Err(self.err(
                &at,
                "a ladder is served as fMP4: set container = \"fmp4\" or low_latency = true",
            ));
        }
        if list.len() > MAX_RENDITIONS {
            return Err(self.err(
                &at,
                format!("{} renditions; at most {MAX_RENDITIONS}", list.len()),
            ));
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, r) in list.into_iter().enumerate() {
            let p = |k| {
                [
                    Seg::Key("outputs"),
                    Seg::Key("hls"),
                    Seg::Key("renditions"),
                    Seg::Index(i),
                    Seg::Key(k),
                ]
            };
            let required =
                |k, v: Option<i64>| v.map(Some).ok_or_else(|| self.err(&p(k), "is required"));
            let width = self.range(&p("width"), required("width", r.width)?, 0, 16, 1920)?;
            let height = self.range(&p("height"), required("height", r.height)?, 0, 16, 1920)?;
            for (k, n) in [("width", width), ("height", height)] {
                if n % 2 != 0 {
                    return Err(self.err(&p(k), format!("{n} must be even (4:2:0 chroma)")));
                }
            }
            let bitrate_kbps = self.range(
                &p("bitrate_kbps"),
                required("bitrate_kbps", r.bitrate_kbps)?,
                0,
                1,
                10_000,
            )?;
            let fps = self.range(&p("fps"), r.fps, base.fps, 1, 60)?;
            out.push(VideoEncoding {
                width,
                height,
                fps,
                bitrate_kbps,
                ..base.clone()
            });
        }
        Ok(out)
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
        let jitter_buffer_ms = self.range(
            &p("jitter_buffer_ms"),
            l.jitter_buffer_ms,
            DEFAULT_JITTER_BUFFER_MS,
            // Audio is laid an output frame and a margin (about 42 ms) ahead.
            50,
            1000,
        )?;
        let jitter_buffer = self.choice(
            &p("jitter_buffer"),
            l.jitter_buffer.as_deref(),
            JitterBuffer::Adaptive,
            &[
                ("adaptive", JitterBuffer::Adaptive),
                ("fixed", JitterBuffer::Fixed),
            ],
        )?;
        Ok(Layout {
            freeze_ms,
            jitter_buffer_ms,
            jitter_buffer,
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

    fn outputs(
        &self,
        o: Option<OutputsFile>,
        audio_only: bool,
        video: Option<&VideoEncoding>,
    ) -> Result<Outputs, ProfileError> {
        let Some(o) = o else {
            return Ok(Outputs {
                rtmp: Vec::new(),
                hls: Some(HlsOutput {
                    segment_seconds: 2,
                    window: 6,
                    low_latency: false,
                    part_ms: 200,
                    container: HlsContainer::Ts,
                    renditions: Vec::new(),
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
                    container: None,
                    renditions: None,
                });
                let p = |k| [Seg::Key("outputs"), Seg::Key("hls"), Seg::Key(k)];
                let segment_seconds =
                    self.range(&p("segment_seconds"), h.segment_seconds, 2, 1, 10)?;
                let window = self.range(&p("window"), h.window, 6, 3, 60)?;
                // 200 ms parts: a player holding back three parts sits well under a second behind.
                let part_ms = self.range(&p("part_ms"), h.part_ms, 200, 100, 2000)?;
                if part_ms >= segment_seconds * 1000 {
                    return Err(self.err(&p("part_ms"), "must be shorter than segment_seconds"));
                }
                let low_latency = h.low_latency.unwrap_or(false);
                let default = if low_latency {
                    HlsContainer::Fmp4
                } else {
                    HlsContainer::Ts
                };
                let container = self.choice(
                    &p("container"),
                    h.container.as_deref(),
                    default,
                    &[("ts", HlsContainer::Ts), ("fmp4", HlsContainer::Fmp4)],
                )?;
                if low_latency && container == HlsContainer::Ts {
                    return Err(self.err(&p("container"), "LL-HLS is always fmp4"));
                }
                let renditions = self.renditions(h.renditions, video, container)?;
                Some(HlsOutput {
                    segment_seconds,
                    window,
                    low_latency,
                    part_ms,
                    container,
                    renditions,
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

pub(super) fn line_of_offset(text: &str, offset: usize) -> usize {
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
