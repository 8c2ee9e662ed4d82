//! An ABR ladder: the lower renditions of a task's HLS output, on a thread.
//!
//! The task's own output (a mix's composite or a passthrough's anchor,
//! H.264, already on the output timeline) is decoded once; each picture is
//! scaled to every rendition's size and encoded with libx264, an IDR exactly
//! where the source has a keyframe, so every rendition's segments start at
//! the same instants as the task's own. Audio is the task's, muxed into each
//! rendition. Each rendition is an fMP4 stream of its own in the store,
//! `<stream>.r<i>`, listed by `<stream>/master.m3u8`.
//!
//! A rendition with a lower frame rate keeps the pictures due at its rate
//! ([`Decimator`], pure); keyframes always pass.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use ffmpeg_next as ff;

use super::store::{HlsStore, LiveOutput};
use crate::media::worker::{Cmd, Worker};
use crate::media::{EncodedFrame, MediaMessage, TimeBase, TrackKind};
use crate::mix::video::{GatedDecoder, VideoEncoder};
use crate::profile::{HlsOutput, VideoEncoding};

/// Messages queued for the ladder thread (a few seconds of a stream).
const QUEUE_CAPACITY: usize = 512;
/// A rendition's own keyframe interval: long, so only the source's keyframes
/// (forced) make IDRs.
const RENDITION_GOP_SECONDS: u32 = 60;

/// The store name of rendition `i` (from 1) of `stream`.
pub(crate) fn rendition_name(stream: &str, i: usize) -> String {
    format!("{stream}.r{i}")
}

/// Keeps the pictures due at `fps` out of a faster stream. Pure.
#[derive(Debug, Clone)]
pub(crate) struct Decimator {
    interval_ms: f64,
    next_ms: Option<f64>,
}

impl Decimator {
    pub(crate) fn new(fps: u32) -> Decimator {
        Decimator {
            interval_ms: 1000.0 / f64::from(fps.max(1)),
            next_ms: None,
        }
    }

    /// Whether the picture at `ms` is kept.
    pub(crate) fn admit(&mut self, ms: i64, keyframe: bool) -> bool {
        let t = ms as f64;
        // Half a source frame of slack: 30 → 15 fps keeps every other picture.
        let due = self.next_ms.is_none_or(|n| t + self.interval_ms / 4.0 >= n);
        if !(due || keyframe) {
            return false;
        }
        let next = self.next_ms.map_or(t, |n| n.max(t - self.interval_ms));
        // From a keyframe the schedule starts again; otherwise it keeps its grid.
        self.next_ms = Some(if keyframe { t } else { next } + self.interval_ms);
        true
    }
}

/// The task's side of a ladder: a worker thread fed the task's output.
pub(crate) type Ladder = Worker;

/// Starts the renditions of `stream` (none when `hls` lists none).
pub(crate) fn spawn(stream: &str, hls: &HlsOutput, store: &HlsStore) -> Option<Ladder> {
    if hls.renditions.is_empty() {
        return None;
    }
    let outputs = open_outputs(stream, hls, store);
    let runtime = tokio::runtime::Handle::current();
    let task = stream.to_string();
    Some(Worker::spawn("hls-ladder", QUEUE_CAPACITY, move |rx| {
        // LiveOutput::finish schedules the stream's removal on the runtime.
        let _rt = runtime.enter();
        // libswscale's contexts stay on this thread.
        run(rx, rungs(outputs), &task);
    }))
}

/// Each rendition's encoding and its stream in the store.
fn open_outputs(
    stream: &str,
    hls: &HlsOutput,
    store: &HlsStore,
) -> Vec<(VideoEncoding, LiveOutput)> {
    hls.renditions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let settings = VideoEncoding {
                gop_seconds: RENDITION_GOP_SECONDS,
                ..v.clone()
            };
            (settings, store.open(&rendition_name(stream, i + 1), hls, 0))
        })
        .collect()
}

fn rungs(outputs: Vec<(VideoEncoding, LiveOutput)>) -> Vec<Rung> {
    outputs
        .into_iter()
        .map(|(settings, output)| Rung {
            picture: ff::frame::Video::new(
                ff::format::Pixel::YUV420P,
                settings.width,
                settings.height,
            ),
            decimator: Decimator::new(settings.fps),
            settings,
            output,
            encoder: None,
            scaler: None,
            failed: false,
        })
        .collect()
}

struct Rung {
    settings: VideoEncoding,
    output: LiveOutput,
    encoder: Option<VideoEncoder>,
    /// The scaler and the source size and format it was made for.
    scaler: Option<(
        ff::software::scaling::Context,
        (u32, u32, ff::format::Pixel),
    )>,
    picture: ff::frame::Video,
    decimator: Decimator,
    /// The encoder could not be opened: logged once, the rung stays silent.
    failed: bool,
}

impl Rung {
    /// Scales and encodes `source` (the decode of `f`, queued at `queued_ms`).
    fn picture(&mut self, source: &ff::frame::Video, f: &EncodedFrame, queued_ms: u64, task: &str) {
        let ms = f.time_base.rescale(f.pts, TimeBase::MILLIS);
        if self.failed || !self.decimator.admit(ms, f.keyframe) {
            return;
        }
        if self.encoder.is_none() {
            match VideoEncoder::new_vfr(&self.settings) {
                Ok(e) => {
                    self.output.offer_at(
                        &Arc::new(MediaMessage::Config(e.config().clone())),
                        queued_ms,
                    );
                    self.encoder = Some(e);
                }
                Err(e) => {
                    tracing::warn!(%task, width = self.settings.width, height = self.settings.height, "hls rendition: encoder: {e}");
                    self.failed = true;
                    return;
                }
            }
        }
        let key = (source.width(), source.height(), source.format());
        if self.scaler.as_ref().is_none_or(|(_, k)| *k != key) {
            match ff::software::scaling::Context::get(
                key.2,
                key.0,
                key.1,
                ff::format::Pixel::YUV420P,
                self.settings.width,
                self.settings.height,
                ff::software::scaling::Flags::BILINEAR,
            ) {
                Ok(s) => self.scaler = Some((s, key)),
                Err(e) => {
                    tracing::debug!(%task, "hls rendition: cannot scale {key:?}: {e}");
                    return;
                }
            }
        }
        let (scaler, _) = self.scaler.as_mut().expect("set above");
        if let Err(e) = scaler.run(source, &mut self.picture) {
            tracing::debug!(%task, "hls rendition: scaling: {e}");
            return;
        }
        let enc = self.encoder.as_mut().expect("set above");
        match enc.encode_at(&mut self.picture, ms, f.keyframe) {
            Ok(frames) => {
                for frame in frames {
                    // Dated by when the task produced the source, not by
                    // when this thread got to it (it may be catching up).
                    self.output
                        .offer_at(&Arc::new(MediaMessage::Frame(frame)), queued_ms);
                }
            }
            Err(e) => tracing::debug!(%task, "hls rendition: encode: {e}"),
        }
    }
}

fn run(rx: Receiver<Cmd>, mut rungs: Vec<Rung>, task: &str) {
    let mut decoder = GatedDecoder::default();
    while let Ok(cmd) = rx.recv() {
        let (m, queued_ms) = match cmd {
            Cmd::Media(m, queued_ms) => (m, queued_ms),
            Cmd::Discontinuity => {
                for r in &mut rungs {
                    r.output.discontinuity();
                }
                continue;
            }
            Cmd::Finish => break,
        };
        match &*m {
            MediaMessage::Config(c) if c.kind == TrackKind::Video => {
                if let Err(e) = decoder.configure(c) {
                    tracing::warn!(%task, "hls renditions: {e}; pictures skipped until the next config");
                }
            }
            MediaMessage::Frame(f) if f.kind == TrackKind::Video => match decoder.decode(f) {
                Ok(Some(picture)) => {
                    for r in &mut rungs {
                        r.picture(picture, f, queued_ms, task);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(%task, "hls renditions: undecodable frame: {e}"),
            },
            // Audio goes to every rendition as it is.
            _ => {
                for r in &mut rungs {
                    r.output.offer_at(&m, queued_ms);
                }
            }
        }
    }
    for r in rungs {
        r.output.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(fps: u32, frames: &[(i64, bool)]) -> Vec<i64> {
        let mut d = Decimator::new(fps);
        frames
            .iter()
            .filter(|(ms, key)| d.admit(*ms, *key))
            .map(|(ms, _)| *ms)
            .collect()
    }

    /// 30 fps in whole milliseconds, keyframe every `gop` frames.
    fn thirty(n: i64, gop: i64) -> Vec<(i64, bool)> {
        (0..n).map(|i| (i * 1000 / 30, i % gop == 0)).collect()
    }

    #[test]
    fn halving_keeps_every_other_picture_and_every_keyframe() {
        let kept = kept(15, &thirty(90, 30));
        assert_eq!(kept.len(), 45, "{kept:?}");
        assert!(kept.contains(&1000) && kept.contains(&2000));
        for w in kept.windows(2) {
            assert!((66..=67).contains(&(w[1] - w[0])), "{kept:?}");
        }
    }

    #[test]
    fn the_same_rate_keeps_everything_and_a_higher_one_too() {
        assert_eq!(kept(30, &thirty(60, 30)).len(), 60);
        assert_eq!(kept(60, &thirty(60, 30)).len(), 60);
    }

    /// A ladder thread that runs late (here: three seconds of the task's
    /// output queued a minute ago, worked through now in one burst) dates
    /// its renditions' segments by when the task made their source, as the
    /// task's own stream is dated. Players line renditions up by
    /// `EXT-X-PROGRAM-DATE-TIME` when they switch (hls.js looks the next
    /// fragment up by it): a rendition dated by when the ladder caught up
    /// sends them seconds back.
    #[test]
    fn a_late_ladder_dates_segments_by_when_the_task_made_their_source() {
        use crate::hls::late_queue;
        use crate::profile::HlsContainer;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _rt = rt.enter(); // finishing a stream schedules its removal
        let hls = HlsOutput {
            low_latency: true,
            renditions: vec![VideoEncoding {
                width: 160,
                height: 90,
                bitrate_kbps: 100,
                ..VideoEncoding::small(15)
            }],
            ..late_queue::one_second_segments(HlsContainer::Fmp4)
        };
        let made_at = crate::unix_now_ms() - 60_000;
        let rx = late_queue::queued_video(made_at, 3);
        let store = HlsStore::default();
        run(rx, rungs(open_outputs("late", &hls, &store)), "late");

        let text = store.get("late.r1").unwrap().lock().playlist_text(false);
        late_queue::assert_dated_from(std::str::from_utf8(&text).unwrap(), made_at, 3, 40);
    }

    #[test]
    fn an_odd_keyframe_restarts_the_grid() {
        let mut frames = thirty(30, 1000);
        frames[7].1 = true; // 233 ms, off the 15 fps grid
        let kept = kept(15, &frames);
        assert!(kept.contains(&233));
        assert!(
            kept.contains(&300),
            "the grid restarts at the keyframe: {kept:?}"
        );
    }
}
