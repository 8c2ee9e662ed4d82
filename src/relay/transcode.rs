//! The video stage of a passthrough relay whose anchor sends video that FLV
//! and MPEG-TS cannot carry (VP8/VP9 from WebRTC): decoded and re-encoded
//! to H.264 at the anchor's own size, on a thread of its own.
//!
//! Pictures keep the anchor's timing: each is encoded as frame number
//! `round(t * fps)` of a constant-rate stream, and a picture that falls on
//! the number of the previous one is skipped (the output never exceeds
//! `fps`). A new input configuration or picture size restarts the encoder
//! with a new H.264 configuration.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use crate::media::stage::Stage;
use crate::media::{MediaMessage, TimeBase, TrackKind};
use crate::mix::video::{GatedDecoder, VideoEncoder};
use crate::profile::{H264Profile, VideoEncoding};

const STAGE_CAPACITY: usize = 256;

/// The H.264 settings a transcoded anchor gets: a frame rate cap, a bitrate
/// by picture size, keyframes every 2 s, no B-frames, low latency.
fn default_encoding(width: u32, height: u32) -> VideoEncoding {
    let pixels = u64::from(width) * u64::from(height);
    let bitrate_kbps = match pixels {
        0..=230_400 => 600,           // up to 640x360
        230_401..=921_600 => 1_500,   // up to 1280x720
        921_601..=2_073_600 => 3_000, // up to 1920x1080
        _ => 6_000,
    };
    VideoEncoding {
        width,
        height,
        fps: 30,
        bitrate_kbps,
        gop_seconds: 2,
        preset: "veryfast".into(),
        profile: H264Profile::High,
        tune: Some("zerolatency".into()),
        bframes: 0,
    }
}

/// Starts the stage: offer video messages, read H.264 messages from `out`.
pub(crate) fn spawn(task: String) -> Stage {
    Stage::spawn("h264-transcode", STAGE_CAPACITY, move |rx, out| {
        stage(rx, out, task)
    })
}

fn stage(
    rx: Receiver<Arc<MediaMessage>>,
    out: tokio::sync::mpsc::Sender<Arc<MediaMessage>>,
    task: String,
) {
    let mut decoder = GatedDecoder::default();
    let mut encoder: Option<(VideoEncoder, (u32, u32))> = None;
    let mut last_n: Option<i64> = None;
    while let Ok(m) = rx.recv() {
        match &*m {
            MediaMessage::Config(c) if c.kind == TrackKind::Video => {
                if let Err(e) = decoder.configure(c) {
                    tracing::warn!(%task, "video transcode: {e}; video dropped until the next config");
                }
            }
            MediaMessage::Config(_) => {}
            MediaMessage::Frame(f) => {
                let pic = match decoder.decode(f) {
                    Ok(Some(pic)) => pic,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(%task, "video transcode: undecodable frame: {e}");
                        continue;
                    }
                };
                if pic.format() != ffmpeg_next::format::Pixel::YUV420P {
                    tracing::warn!(%task, format = ?pic.format(), "video transcode: only 4:2:0 pictures are re-encoded");
                    continue;
                }
                let size = (pic.width(), pic.height());
                if encoder.as_ref().is_none_or(|(_, s)| *s != size) {
                    match VideoEncoder::new(&default_encoding(size.0, size.1)) {
                        Ok(e) => {
                            tracing::info!(%task, width = size.0, height = size.1, "transcoding the anchor's video to H.264");
                            let cfg = Arc::new(MediaMessage::Config(e.config().clone()));
                            encoder = Some((e, size));
                            if out.blocking_send(cfg).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%task, "video transcode: encoder: {e}");
                            continue;
                        }
                    }
                }
                let (enc, _) = encoder.as_mut().expect("set above");
                let ms = f.time_base.rescale(f.pts, TimeBase::MILLIS);
                let n = (ms * 30 + 500).div_euclid(1000);
                if last_n.is_some_and(|l| n <= l) {
                    continue;
                }
                last_n = Some(n);
                match enc.encode(pic, n) {
                    Ok(frames) => {
                        if !crate::media::stage::send_frames(&out, frames) {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(%task, "video transcode: encode: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrate_follows_the_picture_size() {
        assert_eq!(default_encoding(640, 360).bitrate_kbps, 600);
        assert_eq!(default_encoding(1280, 720).bitrate_kbps, 1_500);
        assert_eq!(default_encoding(1920, 1080).bitrate_kbps, 3_000);
        assert_eq!(default_encoding(3840, 2160).bitrate_kbps, 6_000);
        assert_eq!(default_encoding(320, 240).bframes, 0);
    }
}
