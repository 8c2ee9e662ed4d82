//! Real media peers for tests: an nginx-rtmp origin and ffmpeg publishers,
//! each started on loopback and killed by its pid when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port};

/// nginx with libnginx-mod-rtmp: `rtmp://127.0.0.1:<port>/live/<name>`,
/// recording every published stream to `rec/` (a new file per publish).
pub struct Origin {
    pub child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl Origin {
    pub fn start() -> Origin {
        let dir = TempDir::new("origin");
        Origin::start_in(dir, free_port())
    }

    pub fn start_in(dir: TempDir, port: u16) -> Origin {
        let rec = dir.0.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        let conf = dir.0.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
                 daemon off;\nmaster_process off;\nworker_processes 1;\n\
                 error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 64; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{\n\
                   live on; record all; record_path {rec}; record_unique on;\n\
                 }} }} }}\n",
                d = dir.0.display(),
                rec = rec.display(),
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .args(["-c", conf.to_str().unwrap(), "-p", dir.0.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (make test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Origin { child, port, dir }
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port)
    }

    /// Recorded files of stream `name`, oldest first.
    pub fn recordings(&self, name: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.0.join("rec"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}-")) && n.ends_with(".flv"))
        });
        v.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        v
    }

    /// Kills nginx by pid and returns its directory and port for a restart.
    pub fn kill(mut self) -> (TempDir, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, TempDir(PathBuf::new()));
        (dir, self.port)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ffmpeg publishing a test pattern and a tone, like OBS, in real time.
pub struct Publisher {
    pub child: Child,
    pub log: PathBuf,
}

impl Publisher {
    /// 640x360 at 30 fps, GOP 1 s, 440 Hz tone, for `secs` seconds.
    pub fn start(url: &str, secs: u32, log_dir: &Path) -> Publisher {
        Publisher::start_with(url, secs, log_dir, &[])
    }

    /// The test pattern and tone at 1 Mbps, with extra output options.
    pub fn start_with(url: &str, secs: u32, log_dir: &Path, extra: &[&str]) -> Publisher {
        let mut options = vec!["-b:v", "1000k"];
        options.extend_from_slice(extra);
        Publisher::spawn(
            url,
            "testsrc=size=640x360:rate=30",
            "sine=frequency=440:sample_rate=48000",
            secs,
            log_dir,
            &options,
        )
    }

    /// Any lavfi video and audio sources, e.g. `color=c=red:size=640x360:rate=30`
    /// and `sine=frequency=440:sample_rate=48000`.
    pub fn start_lavfi(
        url: &str,
        video: &str,
        audio: &str,
        secs: u32,
        log_dir: &Path,
    ) -> Publisher {
        Publisher::spawn(url, video, audio, secs, log_dir, &[])
    }

    /// ffmpeg reading both sources in real time, H.264 (GOP 1 s) + AAC to FLV.
    fn spawn(
        url: &str,
        video: &str,
        audio: &str,
        secs: u32,
        log_dir: &Path,
        extra: &[&str],
    ) -> Publisher {
        let log = log_dir.join(format!("ffmpeg-{}.log", free_port()));
        let secs = secs.to_string();
        let mut args: Vec<&str> = vec![
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "warning",
            "-re",
            "-f",
            "lavfi",
            "-i",
            video,
            "-re",
            "-f",
            "lavfi",
            "-i",
            audio,
            "-t",
            &secs,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-f", "flv", url]);
        let child = Command::new("ffmpeg")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("ffmpeg (make test installs it)");
        Publisher { child, log }
    }

    pub fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ffprobe's `stream=` entries of a file or URL, one map per stream.
/// A 64x48 picture of one colour at `path` (its extension picks the format).
pub fn still_image(path: &Path, colour: &str) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("color=c={colour}:size=64x48"))
        .args(["-frames:v", "1", "-y"])
        .arg(path)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "ffmpeg could not write {}",
        path.display()
    );
}

pub fn probe_streams(input: &str) -> Vec<std::collections::HashMap<String, String>> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,codec_type,width,height,r_frame_rate,sample_rate",
            "-of",
            "compact",
            input,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("stream|"))
        .map(|l| {
            l.split('|')
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// Decodes all of `input`; returns (decode error lines, decoded duration in seconds).
///
/// Decoded frames keep `input`'s own time base (`-enc_time_base -1`): by
/// default the CLI rounds video to 1/fps, and two frames 33 ms apart whose
/// stint starts half a frame off the first stint's cadence (a re-attached
/// anchor) round to one tick and read as a repeated timestamp. A timestamp
/// really repeated in `input` is still reported.
pub fn decode(input: &str) -> (Vec<String>, f64) {
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-i",
            input,
            "-enc_time_base",
            "-1",
            "-progress",
            "pipe:1",
            "-nostats",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    let duration = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("out_time_us="))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e6;
    (errors, duration)
}

/// The steps (seconds) between consecutive packets of `input`'s stream
/// `select` (`a:0`, `v:0`), in the order read. In MPEG-TS a PES holding
/// several AAC frames carries the first one's time only and the demuxer
/// counts the rest on from it, so frames squeezed together inside a PES
/// show as one short (or negative) step at the next PES.
pub fn packet_steps(input: &str, select: &str) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            select,
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            input,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Whether the first video frame of `input` is a keyframe.
pub fn first_video_frame_is_key(input: &str) -> bool {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=key_frame",
            "-read_intervals",
            "%+#1",
            "-of",
            "default=nw=1:nk=1",
            input,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().next() == Some("1")
}

/// One decoded RGB picture of `input` at `at_seconds` (or from the end when negative).
pub fn rgb_frame(input: &str, at_seconds: f64, width: usize, height: usize) -> Vec<u8> {
    let pos = if at_seconds < 0.0 { "-sseof" } else { "-ss" };
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            pos,
            &format!("{at_seconds}"),
            "-i",
            input,
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout.len(),
        width * height * 3,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The RGB colour at (x, y) of a picture from `rgb_frame`.
pub fn pixel(rgb: &[u8], width: usize, x: usize, y: usize) -> (u8, u8, u8) {
    let i = (y * width + x) * 3;
    (rgb[i], rgb[i + 1], rgb[i + 2])
}

/// Whether a colour is near another (per channel, within `tol`).
pub fn near(a: (u8, u8, u8), b: (u8, u8, u8), tol: i32) -> bool {
    (i32::from(a.0) - i32::from(b.0)).abs() <= tol
        && (i32::from(a.1) - i32::from(b.1)).abs() <= tol
        && (i32::from(a.2) - i32::from(b.2)).abs() <= tol
}

/// Mono 48 kHz samples of `input`'s audio.
pub fn pcm(input: &str) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args([
            "-v", "error", "-nostdin", "-i", input, "-vn", "-ac", "1", "-ar", "48000", "-f",
            "f32le", "-",
        ])
        .output()
        .unwrap();
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Power of one frequency in `samples` (Goertzel), normalised by length.
pub fn tone_power(samples: &[f32], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.len().max(1) as f64).powi(2)
}

/// Times at which `values` rise above `threshold` (re-armed below a quarter of it).
pub fn onsets(values: &[(f64, f64)], threshold: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut armed = true;
    for &(t, v) in values {
        if armed && v > threshold {
            out.push(t);
            armed = false;
        }
        if v < threshold / 4.0 {
            armed = true;
        }
    }
    out
}

/// One value per frame of `input`'s stream `map`, with the frame's own
/// timestamp (seconds): what the filter chain `chain` measures, printed by
/// the metadata filter as `key`.
pub fn timed(input: &str, map: &str, chain: &str, key: &str) -> Vec<(f64, f64)> {
    let (flag, print) = if map.ends_with('v') {
        ("-vf", "metadata")
    } else {
        ("-af", "ametadata")
    };
    let filter = format!("{chain},{print}=mode=print:key={key}:file=-");
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-v", "error", "-nostdin", "-i", input, "-map", map, flag, &filter, "-f", "null", "-",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut values = Vec::new();
    let mut at = None;
    for line in text.lines() {
        if let Some(t) = line.split("pts_time:").nth(1) {
            at = t.trim().parse::<f64>().ok();
        } else if let (Some(t), Some(v)) = (at.take(), line.split('=').nth(1)) {
            values.push((t, v.trim().parse::<f64>().unwrap_or(f64::NEG_INFINITY)));
        }
    }
    values
}

/// The flash-and-beep clock: white luma and a 1 kHz beep during the first
/// 100 ms of every second (lavfi sources for `Publisher::start_lavfi` or a file).
pub const FLASH: &str = "color=c=black:size=320x180:rate=30,format=yuv420p,geq=lum='if(lt(mod(T\\,1)\\,0.1)\\,235\\,16)':cb=128:cr=128";
pub const BEEP: &str = "aevalsrc='if(lt(mod(t\\,1)\\,0.1)\\,0.8*sin(2*PI*1000*t)\\,0)':s=48000";

/// Audio minus video time of each flash in a 1280x720 output (centre
/// crop) against its nearest beep, sorted; at least `min` of each.
pub fn av_offsets(url: &str, min: usize) -> Vec<f64> {
    // Video: mean luma of the centre, frame by frame; audio: peak level
    // every millisecond. Both with their own timestamps, so a frame lost on
    // the way cannot shift one against the other.
    let luma = timed(
        url,
        "0:v",
        "crop=64:64:608:328,signalstats",
        "lavfi.signalstats.YAVG",
    );
    let energy: Vec<(f64, f64)> = timed(
        url,
        "0:a",
        "aformat=channel_layouts=mono,asetnsamples=n=48:p=0,astats=metadata=1:reset=1",
        "lavfi.astats.Overall.Peak_level",
    )
    .into_iter()
    .map(|(t, db)| (t, 10f64.powf(db / 20.0)))
    .collect();
    let flashes = onsets(&luma, 128.0);
    let beeps = onsets(&energy, 0.3);
    assert!(
        flashes.len() >= min && beeps.len() >= min,
        "flashes {flashes:?} beeps {beeps:?}"
    );
    let mut offsets: Vec<f64> = flashes
        .iter()
        .filter_map(|f| {
            beeps
                .iter()
                .map(|b| b - f)
                .min_by(|x, y| x.abs().total_cmp(&y.abs()))
        })
        .collect();
    offsets.sort_by(|a, b| a.total_cmp(b));
    offsets
}

/// Writes `secs` of lavfi `video` and `audio` to `path`: H.264 (GOP 1 s, no
/// B-frames) with PCM audio in `.mkv` (for peers that re-encode), AAC in
/// anything else (MP4 with its index first).
pub fn lavfi_file(path: &Path, video: &str, audio: &str, secs: u32) {
    let mkv = path.extension().is_some_and(|e| e == "mkv");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", video])
        .args(["-f", "lavfi", "-i", audio, "-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-bf",
            "0",
        ])
        .args(["-pix_fmt", "yuv420p"])
        .args(if mkv {
            &["-c:a", "pcm_s16le"][..]
        } else {
            &["-c:a", "aac", "-movflags", "+faststart"][..]
        })
        .arg(path)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "ffmpeg could not write {}",
        path.display()
    );
}

/// `input` decodes without a single error and lasts more than `min_secs`.
pub fn assert_plays(input: &str, min_secs: f64) {
    let (errors, secs) = decode(input);
    assert!(errors.is_empty(), "{input}: {errors:?}");
    assert!(secs > min_secs, "{input} holds {secs} s");
}
