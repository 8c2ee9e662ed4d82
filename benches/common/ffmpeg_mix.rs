//! The ffmpeg CLI's side of the mixing benchmarks: the encoder settings
//! roomcast's mix uses (x264 veryfast zerolatency high, 2 Mbps with a 1 s
//! VBV, a keyframe every 2 s exactly, no B-frames, 30 fps; AAC 128k 48 kHz),
//! as arguments after `-map`.

/// `-c:v libx264 … -ar 48000`, then the caller's `-f`.
pub const ENCODE_ARGS: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-tune",
    "zerolatency",
    "-profile:v",
    "high",
    "-b:v",
    "2000k",
    "-maxrate",
    "2000k",
    "-bufsize",
    "2000k",
    "-g",
    "60",
    "-keyint_min",
    "60",
    "-sc_threshold",
    "0",
    "-bf",
    "0",
    "-r",
    "30",
    "-c:a",
    "aac",
    "-b:a",
    "128k",
    "-ar",
    "48000",
];
