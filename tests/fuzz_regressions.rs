//! Every fuzz target's seeds (`fuzz/seeds/<target>/`, real captures) and
//! every input that once crashed or hung a target (`fuzz/regressions/<target>/`)
//! replayed through the same entry points on stable. A panic or a hang fails
//! the test; the seeds must also still reach the code behind the parsers
//! (a publish that publishes, an API call past its signature), or the
//! fuzzers would be exploring error paths only.

use std::path::{Path, PathBuf};

use roomcast::fuzzing;

/// One at a time: the in-memory gateway notices a panic in any of its
/// tasks, and a failing assertion in a test beside it would look like one.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn inputs(dir: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&d) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("readable");
            (p, data)
        })
        .collect();
    out.sort();
    out
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let s = inputs("seeds", target);
    assert!(!s.is_empty(), "no seeds for {target}");
    s
}

/// Replays the regressions of `target`; they only have to come back.
fn regressions<T>(target: &str, run: impl Fn(&[u8]) -> T) {
    for (path, data) in inputs("regressions", target) {
        eprintln!("{}", path.display());
        let _ = run(&data);
    }
}

#[test]
fn rtmp_ingest() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (path, data) in seeds("rtmp_ingest") {
        let published = fuzzing::rtmp_ingest(&data);
        assert!(
            published > 1000,
            "{}: published {published} bytes",
            path.display()
        );
    }
    regressions("rtmp_ingest", fuzzing::rtmp_ingest);
}

#[test]
fn rtmp_chunks() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (path, data) in seeds("rtmp_chunks") {
        let parsed = fuzzing::rtmp_chunks(&data);
        assert!(parsed >= 10, "{}: {parsed} media messages", path.display());
    }
    regressions("rtmp_chunks", fuzzing::rtmp_chunks);
}

#[test]
fn flv_media() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (path, data) in seeds("flv_media") {
        let parts = fuzzing::flv_media(&data);
        assert!(parts >= 3, "{}: {parts} parts", path.display());
    }
    regressions("flv_media", fuzzing::flv_media);
}

#[test]
fn rtp_depacketize() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (path, data) in seeds("rtp_depacketize") {
        let frames = fuzzing::rtp_depacketize(&data);
        assert!(frames >= 5, "{}: {frames} frames", path.display());
    }
    regressions("rtp_depacketize", fuzzing::rtp_depacketize);
}

#[test]
fn sdp_offer_and_whip() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (path, data) in seeds("sdp_offer") {
        let whip = name(&path).starts_with("whip");
        assert_eq!(
            fuzzing::sdp_offer(&data),
            (whip, !whip),
            "{}",
            path.display()
        );
    }
    regressions("sdp_offer", fuzzing::sdp_offer);
    for (path, data) in seeds("whip_offer") {
        // The WHEP offer receives only: refused as a publish, after parsing.
        let publishes = name(&path).starts_with("whip");
        assert_eq!(fuzzing::whip_offer(&data), publishes, "{}", path.display());
    }
    regressions("whip_offer", fuzzing::whip_offer);
}

#[test]
fn tc3_and_the_api() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (path, data) in seeds("tc3_verify") {
        assert!(fuzzing::tc3_verify(&data), "{}", path.display());
    }
    regressions("tc3_verify", fuzzing::tc3_verify);
    for (path, data) in seeds("trtc_api") {
        let code = fuzzing::trtc_api(&data);
        assert!(
            !code.as_deref().unwrap_or("").starts_with("AuthFailure")
                && code.as_deref() != Some("InvalidParameter"),
            "{}: {code:?}",
            path.display()
        );
    }
    regressions("trtc_api", fuzzing::trtc_api);
}

#[test]
fn http_and_signalling() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (path, data) in seeds("http") {
        let answered = fuzzing::http(&data);
        assert!(answered > 0, "{}: no answer", path.display());
    }
    regressions("http", fuzzing::http);
    for (path, data) in seeds("signalling") {
        // The welcome and a reply to each message.
        let received = fuzzing::signalling(&data);
        assert!(received >= 3, "{}: {received} messages", path.display());
    }
    regressions("signalling", fuzzing::signalling);
}

#[test]
fn hls_and_toml() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (path, data) in seeds("hls_request") {
        assert!(fuzzing::hls_request(&data), "{}", path.display());
    }
    regressions("hls_request", fuzzing::hls_request);
    for (path, data) in seeds("profile_toml") {
        assert!(fuzzing::profile_toml(&data), "{}", path.display());
    }
    regressions("profile_toml", fuzzing::profile_toml);
    for (path, data) in seeds("config_toml") {
        assert!(fuzzing::config_toml(&data), "{}", path.display());
    }
    regressions("config_toml", fuzzing::config_toml);
}
