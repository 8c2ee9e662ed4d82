use super::*;
use std::path::Path;

fn check(text: &str) -> Result<RelayProfile, ProfileError> {
    parse(text, "t", Path::new("t.toml"), Path::new("."))
}

#[test]
fn every_shipped_profile_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let p = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.name, path.file_stem().unwrap().to_str().unwrap());
        names.push(p.name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "audio-only",
            "floating-1080p",
            "grid-720p",
            "passthrough",
            "pip-720p",
            "screen-share-1080p"
        ]
    );
    let all = load_all(Some(&dir)).unwrap();
    assert_eq!(all.len(), BUILTIN.len());
}

#[test]
fn shipped_profiles_mean_what_they_say() {
    let all = load_all(None).unwrap();
    let get = |n: &str| all.iter().find(|p| p.name == n).unwrap();
    let grid = get("grid-720p");
    let v = grid.video.as_ref().unwrap();
    assert_eq!(
        (v.width, v.height, v.fps, v.bitrate_kbps),
        (1280, 720, 30, 2000)
    );
    assert!(matches!(&grid.mode, RelayMode::Mix { layout } if layout.mode == LayoutMode::Grid));
    assert!(get("audio-only").video.is_none());
    assert!(matches!(
        get("passthrough").mode,
        RelayMode::Passthrough {
            audio_reencode: false
        }
    ));
    let ss = get("screen-share-1080p");
    assert!(matches!(&ss.mode, RelayMode::Mix { layout } if layout.render_mode == RenderMode::Fit));
}

#[test]
fn empty_profile_takes_defaults() {
    let p = check("").unwrap();
    assert_eq!(p.name, "t");
    let v = p.video.clone().unwrap();
    assert_eq!(
        (v.width, v.height, v.fps, v.gop_seconds),
        (1280, 720, 30, 2)
    );
    assert_eq!(p.audio.sample_rate, 48_000);
    let jitter = |p: &RelayProfile| match &p.mode {
        RelayMode::Mix { layout } => (layout.jitter_buffer, layout.jitter_buffer_ms),
        other => panic!("{other:?}"),
    };
    assert_eq!(jitter(&p), (JitterBuffer::Adaptive, 150));
    let fixed = check("[layout]\njitter_buffer = \"fixed\"\njitter_buffer_ms = 80\n").unwrap();
    assert_eq!(jitter(&fixed), (JitterBuffer::Fixed, 80));
    let hls = p.outputs.hls.unwrap();
    assert_eq!(hls.segment_seconds, 2);
    assert_eq!(hls.container, HlsContainer::Ts);
    let abr = check(
        "[video]\nfps = 30\npreset = \"faster\"\n[outputs.hls]\ncontainer = \"fmp4\"\n[[outputs.hls.renditions]]\nwidth = 640\nheight = 360\nbitrate_kbps = 800\nfps = 15\n",
    )
    .unwrap();
    let r = &abr.outputs.hls.unwrap().renditions[0];
    assert_eq!(
        (r.width, r.height, r.bitrate_kbps, r.fps),
        (640, 360, 800, 15)
    );
    assert_eq!(r.preset, "faster", "the rest comes from [video]");
    let ll = check("[outputs.hls]\nlow_latency = true\n").unwrap();
    let hls = ll.outputs.hls.unwrap();
    assert_eq!((hls.container, hls.part_ms), (HlsContainer::Fmp4, 200));
}

#[test]
fn custom_layout_cells() {
    let p = check(
        r##"
[video]
width = 1280
height = 720
[layout]
mode = "custom"
[[layout.cells]]
x = 0
y = 0
width = 640
height = 720
user_id = "teacher"
[[layout.cells]]
x = 640
y = 0
width = 640
height = 720
z_order = 1
render_mode = "fit"
placeholder_color = "#ff0000"
"##,
    )
    .unwrap();
    let RelayMode::Mix { layout } = p.mode else {
        panic!()
    };
    assert_eq!(layout.cells.len(), 2);
    assert_eq!(layout.cells[0].user_id.as_deref(), Some("teacher"));
    assert_eq!(layout.cells[1].render_mode, RenderMode::Fit);
    assert_eq!(
        layout.cells[1].placeholder,
        Some(Background::Color(Rgb(255, 0, 0)))
    );
}

/// Each bad profile is refused, naming the field and the line it is on.
#[test]
fn bad_profiles_name_field_and_line() {
    let cell = "[[layout.cells]]\nx = 0\ny = 0\nwidth = 10\nheight = 10\nuser_id = \"a\"\n";
    let twice = format!("[layout]\nmode = \"custom\"\n{cell}{cell}");
    let cases: &[(&str, &str, Option<usize>, &str)] = &[
        (
            "[video]\nwidth = 4000\n",
            "video.width",
            Some(2),
            "16..=1920",
        ),
        ("[video]\nwidth = 641\n", "video.width", Some(2), "even"),
        (
            "[video]\nheight = 0\n",
            "video.height",
            Some(2),
            "16..=1920",
        ),
        ("[video]\nfps = 0\n", "video.fps", Some(2), "1..=60"),
        ("[video]\nfps = 61\n", "video.fps", Some(2), "1..=60"),
        (
            "[video]\nbitrate_kbps = 10001\n",
            "video.bitrate_kbps",
            Some(2),
            "1..=10000",
        ),
        (
            "[video]\ngop_seconds = 6\n",
            "video.gop_seconds",
            Some(2),
            "1..=5",
        ),
        (
            "[video]\npreset = \"warp\"\n",
            "video.preset",
            Some(2),
            "veryfast",
        ),
        (
            "[video]\nprofile = \"high10\"\n",
            "video.profile",
            Some(2),
            "baseline",
        ),
        (
            "[video]\ntune = \"fast\"\n",
            "video.tune",
            Some(2),
            "zerolatency",
        ),
        (
            "[video]\nprofile = \"baseline\"\nbframes = 2\n",
            "video.bframes",
            Some(3),
            "B-frames",
        ),
        (
            "[audio]\nsample_rate = 22050\n",
            "audio.sample_rate",
            Some(2),
            "48000",
        ),
        (
            "[audio]\nchannels = 3\n",
            "audio.channels",
            Some(2),
            "1..=2",
        ),
        (
            "[audio]\nbitrate_kbps = 7\n",
            "audio.bitrate_kbps",
            Some(2),
            "8..=500",
        ),
        (
            "[audio]\nbitrate_kbps = 501\n",
            "audio.bitrate_kbps",
            Some(2),
            "8..=500",
        ),
        (
            "[audio]\ncodec = \"he-aac\"\n",
            "audio.codec",
            Some(2),
            "libfdk_aac",
        ),
        (
            "[audio]\ncodec = \"mp3\"\n",
            "audio.codec",
            Some(2),
            "aac-lc",
        ),
        (
            "[audio]\nreencode = true\n",
            "audio.reencode",
            Some(2),
            "passthrough",
        ),
        (
            "[layout]\nmode = \"mosaic\"\n",
            "layout.mode",
            Some(2),
            "grid",
        ),
        (
            "[layout]\nmax_inputs = 17\n",
            "layout.max_inputs",
            Some(2),
            "1..=16",
        ),
        (
            "[layout]\nrender_mode = \"zoom\"\n",
            "layout.render_mode",
            Some(2),
            "crop",
        ),
        (
            "[layout]\nbackground_color = \"red\"\n",
            "layout.background_color",
            Some(2),
            "0x1a2b3c",
        ),
        (
            "[layout]\nbackground_image = \"nope.png\"\n",
            "layout.background_image",
            Some(2),
            "does not exist",
        ),
        (
            "[layout]\nmode = \"custom\"\n",
            "layout.mode",
            Some(2),
            "at least one",
        ),
        (
            "[layout]\nmode = \"grid\"\nmain_user = \"a\"\n",
            "layout.main_user",
            Some(3),
            "main user",
        ),
        (
            "[layout]\n[[layout.cells]]\nx = 0\ny = 0\nwidth = 10\nheight = 10\n",
            "layout.cells",
            Some(2),
            "custom",
        ),
        (
            "[layout]\nmode = \"custom\"\n[[layout.cells]]\nx = 0\ny = 0\nwidth = 2000\nheight = 10\n",
            "layout.cells[0].width",
            Some(6),
            "2..=1280",
        ),
        (
            "[layout]\nmode = \"custom\"\n[[layout.cells]]\nx = 1200\ny = 0\nwidth = 100\nheight = 10\n",
            "layout.cells[0].width",
            Some(6),
            "2..=80",
        ),
        (
            "[layout]\nmode = \"custom\"\n[[layout.cells]]\nx = 0\ny = 0\nwidth = 10\nheight = 10\nz_order = 300\n",
            "layout.cells[0].z_order",
            Some(8),
            "0..=255",
        ),
        (&twice, "layout.cells[1].user_id", Some(14), "two cells"),
        (
            "passthrough = true\n[layout]\nmode = \"grid\"\n",
            "layout",
            Some(2),
            "passthrough",
        ),
        (
            "audio_only = true\n[video]\nwidth = 640\n",
            "video",
            Some(2),
            "audio_only",
        ),
        (
            "audio_only = true\n[layout]\n",
            "layout",
            Some(2),
            "audio_only",
        ),
        ("name = \"bad name!\"\n", "name", Some(1), "letters"),
        (
            "auto = true\n",
            "auto",
            Some(1),
            "passthrough profiles only",
        ),
        (
            "passthrough = true\nauto_rooms = [\"a\"]\n",
            "auto_rooms",
            Some(2),
            "needs auto",
        ),
        (
            "[outputs]\nrtmp = [\"http://x/y\"]\n",
            "outputs.rtmp[0]",
            Some(2),
            "rtmp://",
        ),
        (
            "[outputs]\nrtmp = [\"rtmp://host\"]\n",
            "outputs.rtmp[0]",
            Some(2),
            "application path",
        ),
        (
            "[outputs]\nrtmp = [\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\",\"rtmp://a/b\"]\n",
            "outputs.rtmp",
            Some(2),
            "at most 10",
        ),
        (
            "[outputs.hls]\nsegment_seconds = 0\n",
            "outputs.hls.segment_seconds",
            Some(2),
            "1..=10",
        ),
        (
            "[outputs.hls]\nwindow = 2\n",
            "outputs.hls.window",
            Some(2),
            "3..=60",
        ),
        (
            "[outputs.hls]\nsegment_seconds = 1\npart_ms = 1000\n",
            "outputs.hls.part_ms",
            Some(3),
            "shorter",
        ),
        (
            "[layout]\njitter_buffer_ms = 10\n",
            "layout.jitter_buffer_ms",
            Some(2),
            "50..=1000",
        ),
        (
            "[layout]\njitter_buffer = \"auto\"\n",
            "layout.jitter_buffer",
            Some(2),
            "\"adaptive\", \"fixed\"",
        ),
        (
            "[outputs.hls]\ncontainer = \"mp4\"\n",
            "outputs.hls.container",
            Some(2),
            "\"ts\", \"fmp4\"",
        ),
        (
            "[outputs.hls]\nlow_latency = true\ncontainer = \"ts\"\n",
            "outputs.hls.container",
            Some(3),
            "always fmp4",
        ),
        (
            "[outputs.hls]\n[[outputs.hls.renditions]]\nwidth = 640\nheight = 360\nbitrate_kbps = 800\n",
            "outputs.hls.renditions",
            Some(2),
            "fmp4",
        ),
        (
            "[outputs.hls]\nlow_latency = true\n[[outputs.hls.renditions]]\nwidth = 640\nbitrate_kbps = 800\n",
            "outputs.hls.renditions[0].height",
            Some(3),
            "required",
        ),
        (
            "[outputs.hls]\nlow_latency = true\n[[outputs.hls.renditions]]\nwidth = 640\nheight = 361\nbitrate_kbps = 800\n",
            "outputs.hls.renditions[0].height",
            Some(5),
            "even",
        ),
        (
            "[outputs.record]\nformat = \"avi\"\n",
            "outputs.record.format",
            Some(2),
            "mp4",
        ),
        (
            "[outputs.record]\nmax_file_minutes = 0\n",
            "outputs.record.max_file_minutes",
            Some(2),
            "1..=1440",
        ),
        // serde-level errors: the line and the key written on it.
        ("[video]\nwidht = 640\n", "widht", Some(2), "unknown field"),
        (
            "\n\nframerate = 30\n",
            "framerate",
            Some(3),
            "unknown field",
        ),
        (
            "[video]\nwidth = \"wide\"\n",
            "width",
            Some(2),
            "invalid type",
        ),
        ("[video\n", "", Some(1), ""),
    ];
    for (text, field, line, reason) in cases {
        let err = check(text).expect_err(text);
        assert_eq!(&err.field, field, "{text:?}: {err}");
        assert_eq!(err.line, *line, "{text:?}: {err}");
        assert!(err.reason.contains(reason), "{text:?}: {err}");
        let shown = err.to_string();
        assert!(shown.starts_with("t.toml:"), "{shown}");
    }
}

#[test]
fn colours() {
    assert_eq!(parse_rgb("0xcc0033"), Some(Rgb(0xcc, 0, 0x33)));
    assert_eq!(parse_rgb("#99CCFF"), Some(Rgb(0x99, 0xcc, 0xff)));
    for bad in ["cc0033", "0xcc003", "0xgg0033", "#1234567", ""] {
        assert_eq!(parse_rgb(bad), None, "{bad}");
    }
}

#[test]
fn a_profiles_dir_overrides_builtin_by_name_and_reports_all_errors() {
    let dir = std::env::temp_dir().join(format!("roomcast-profiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("grid-720p.toml"), "[video]\nfps = 25\n").unwrap();
    std::fs::write(dir.join("extra.toml"), "audio_only = true\n").unwrap();
    let all = load_all(Some(&dir)).unwrap();
    assert_eq!(all.len(), BUILTIN.len() + 1);
    let grid = all.iter().find(|p| p.name == "grid-720p").unwrap();
    assert_eq!(grid.video.as_ref().unwrap().fps, 25);
    std::fs::write(dir.join("bad1.toml"), "[video]\nfps = 0\n").unwrap();
    std::fs::write(dir.join("bad2.toml"), "nope = 1\n").unwrap();
    let errs = load_all(Some(&dir)).unwrap_err();
    assert_eq!(errs.len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn auto_profiles_match_rooms() {
    let p =
        check("passthrough = true\nauto = true\nauto_rooms = [\"class-*\", \"1234\"]\n").unwrap();
    let auto = p.auto.unwrap();
    assert!(auto.matches("class-7") && auto.matches("1234"));
    assert!(!auto.matches("12345") && !auto.matches("clas"));
    let all = check("passthrough = true\nauto = true\n")
        .unwrap()
        .auto
        .unwrap();
    assert!(all.matches("anything"));
    assert!(check("passthrough = true\n").unwrap().auto.is_none());
}

#[test]
fn a_profile_built_in_code_is_validated_like_a_file_and_names_the_field() {
    let file = ProfileFile {
        video: Some(VideoFile {
            width: Some(100_000),
            ..VideoFile::default()
        }),
        ..ProfileFile::default()
    };
    let e = validate(file, "api-mix", Path::new("request")).unwrap_err();
    assert_eq!(e.field, "video.width");
    assert_eq!(e.line, None);
    assert!(e.reason.contains("out of range"), "{e}");
    // The same shape as the file says it: a cell's field path.
    let file = ProfileFile {
        layout: Some(LayoutFile {
            mode: Some("custom".into()),
            cells: vec![CellFile {
                width: 0,
                height: 10,
                ..CellFile::default()
            }],
            ..LayoutFile::default()
        }),
        ..ProfileFile::default()
    };
    let e = validate(file, "api-mix", Path::new("request")).unwrap_err();
    assert!(e.field.starts_with("layout.cells[0]"), "{e}");
    // And a valid one validates.
    assert!(validate(ProfileFile::default(), "api-mix", Path::new("request")).is_ok());
}
