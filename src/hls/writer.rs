//! The HLS writer: MPEG-TS segments, packetised by [`super::ts`].
//!
//! Receives rebased messages (milliseconds), cuts a
//! segment at the first video keyframe past the target duration (any audio
//! frame for audio-only streams), updates the playlist after each segment,
//! forgets segments that left the window, and ends the playlist when the
//! relay stops.
//!
//! Where it goes is the [`Sink`]: a directory (recordings: files written in
//! place, the playlist replaced atomically, on a thread of its own through
//! a bounded queue, as file writes may block) or the in-memory store (live
//! HLS: packets appended to the segment's buffer, served from there, right
//! where the relay delivers: [`LiveTsWriter`]).
//!
//! A track whose codec MPEG-TS cannot carry here (anything but H.264 and
//! AAC that ADTS describes) is left out, with a warning.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use ffmpeg_next as ff;

use super::playlist::{Playlist, Segment};
use super::store::TsShared;
use super::ts::{self, TsMuxer};
use crate::media::ffi::{self, StreamCodec};
use crate::media::worker::{Cmd, Worker};
use crate::media::{Codec, EncodedFrame, MediaMessage, TrackConfig, TrackKind};
use crate::profile::HlsOutput;

/// Messages queued for the writer thread (seconds of media; it is fast).
const QUEUE_CAPACITY: usize = 1024;
const PLAYLIST: &str = "index.m3u8";

/// Where a writer's segments and playlist go.
enum Sink {
    /// `index.m3u8` and `seg<N>.ts` in a directory (emptied first).
    Dir(PathBuf),
    /// The in-memory store.
    Memory(Arc<TsShared>),
}

impl Sink {
    /// What logs call the stream.
    fn name(&self) -> String {
        match self {
            Sink::Dir(dir) => dir.display().to_string(),
            Sink::Memory(m) => m.name.clone(),
        }
    }
}

/// A recording's side of an HLS output: a worker thread muxing into `sink`.
pub(crate) type HlsWriter = Worker;

/// Starts writing into `dir` (emptied first) on a thread: file writes may
/// block. A live stream in memory is a [`LiveTsWriter`] instead.
pub(crate) fn spawn(dir: PathBuf, settings: HlsOutput) -> HlsWriter {
    Worker::spawn("hls-writer", QUEUE_CAPACITY, move |rx| {
        let name = dir.display().to_string();
        if let Err(e) = Writer::new(Sink::Dir(dir), settings).and_then(|w| w.run(rx)) {
            tracing::error!(%name, "hls writer stopped: {e}");
        }
    })
}

/// A live stream's writer, muxing into memory where its messages are
/// delivered. No file is touched, so nothing blocks: a message costs a
/// copy into the segment's buffer, less than handing it to a thread would
/// (each hand-off wakes the thread, per message and per stream).
pub(crate) struct LiveTsWriter {
    name: String,
    /// `None` once it failed (logged then).
    writer: Option<Writer>,
}

impl LiveTsWriter {
    pub(crate) fn start(shared: Arc<TsShared>, settings: HlsOutput) -> LiveTsWriter {
        let name = shared.name.clone();
        let writer = Writer::new(Sink::Memory(shared), settings)
            .inspect_err(|e| tracing::error!(%name, "hls writer stopped: {e}"))
            .ok();
        LiveTsWriter { name, writer }
    }

    fn step(&mut self, f: impl FnOnce(&mut Writer) -> Result<(), HlsError>) {
        if let Some(w) = self.writer.as_mut()
            && let Err(e) = f(w)
        {
            tracing::error!(name = %self.name, "hls writer stopped: {e}");
            self.writer = None;
        }
    }

    /// Offers a message that arrived at `wall_ms` (unix ms): a segment it
    /// opens is dated by then.
    pub(crate) fn offer_at(&mut self, msg: &MediaMessage, wall_ms: u64) {
        self.step(|w| {
            w.queued_ms = Some(wall_ms);
            w.message(msg)
        });
    }

    pub(crate) fn discontinuity(&mut self) {
        self.step(Writer::discontinuity);
    }

    /// Closes the open segment and ends the playlist.
    pub(crate) fn finish(self) {
        drop(self);
    }
}

/// Dropped without `finish` (its task ended some other way), it still
/// publishes what it holds and ends the playlist, as the writer thread
/// did when its queue closed.
impl Drop for LiveTsWriter {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take()
            && let Err(e) = w.finish()
        {
            tracing::error!(name = %self.name, "hls writer stopped: {e}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("libavformat: {0}")]
    Av(#[from] ff::Error),
    #[error("{0}")]
    Track(#[from] ts::TsError),
}

/// Where an open segment's packets go.
enum SegmentOut {
    /// Its bytes, for the store.
    Memory(Vec<u8>),
    /// Its file, through `Writer::scratch`.
    File(std::io::BufWriter<std::fs::File>, PathBuf),
}

struct OpenSegment {
    out: SegmentOut,
    index: u64,
    start_ms: i64,
    last_ms: i64,
    wall_ms: u64,
    discontinuity: bool,
}

struct Writer {
    sink: Sink,
    settings: HlsOutput,
    playlist: Playlist,
    video: Option<TrackConfig>,
    audio: Option<TrackConfig>,
    segment: Option<OpenSegment>,
    /// The packetiser for the current tracks (continuity counters run on
    /// from segment to segment); `None` after a track changed.
    mux: Option<TsMuxer>,
    /// Packets on their way to a file.
    scratch: Vec<u8>,
    /// The last memory segment's size: the next one's buffer starts there.
    last_size: usize,
    /// Configurations left out (warned about once each).
    refused: [Option<TrackConfig>; 2],
    next_index: u64,
    pending_discontinuity: bool,
    /// Audio that came before any video at the very start, held a moment
    /// in case video follows (so the first segment has both tracks).
    startup_audio: Vec<EncodedFrame>,
    /// When the message being written was queued (unix ms), on a writer
    /// thread: what a segment it opens is dated by. `None` inline (now).
    queued_ms: Option<u64>,
}

/// How long (media time) the first audio waits for a video track to show up.
const STARTUP_VIDEO_WAIT_MS: i64 = 1500;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HlsError + '_ {
    move |source| HlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Writer {
    fn new(sink: Sink, settings: HlsOutput) -> Result<Writer, HlsError> {
        if let Sink::Dir(dir) = &sink {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(io(dir))?;
            }
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Ok(Writer {
            playlist: Playlist::new(settings.segment_seconds, settings.window as usize),
            sink,
            settings,
            video: None,
            audio: None,
            segment: None,
            mux: None,
            scratch: Vec::new(),
            last_size: 0,
            refused: [None, None],
            next_index: 0,
            startup_audio: Vec::new(),
            pending_discontinuity: false,
            queued_ms: None,
        })
    }

    fn run(mut self, rx: Receiver<Cmd>) -> Result<(), HlsError> {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Cmd::Media(m, queued_ms) => {
                    self.queued_ms = Some(queued_ms);
                    self.message(&m)?;
                }
                Cmd::Discontinuity => self.discontinuity()?,
                Cmd::Finish => break,
            }
        }
        self.finish()
    }

    fn message(&mut self, m: &MediaMessage) -> Result<(), HlsError> {
        match m {
            MediaMessage::Config(c) => {
                let slot = match c.kind {
                    TrackKind::Video => &mut self.video,
                    TrackKind::Audio => &mut self.audio,
                };
                let carried = match ts::check(c) {
                    Ok(()) => Some(c),
                    Err(e) => {
                        let refused = &mut self.refused[usize::from(c.kind == TrackKind::Video)];
                        if refused.as_ref() != Some(c) {
                            tracing::warn!(name = %self.sink.name(), "hls: {:?} track left out: {e}", c.kind);
                            *refused = Some(c.clone());
                        }
                        None
                    }
                };
                if c.kind == TrackKind::Video && carried.is_some() {
                    self.startup_audio.clear();
                }
                if slot.as_ref() != carried {
                    let new_track = slot.is_none();
                    *slot = carried.cloned();
                    // New codec parameters start a new segment at the next
                    // keyframe, with a packetiser for them.
                    if self.segment.is_some() {
                        self.close_segment()?;
                    }
                    self.mux = None;
                    // A track appearing changes the streams of the
                    // segments: players must reset their demuxer.
                    if new_track && self.next_index > 0 {
                        self.pending_discontinuity = true;
                    }
                }
                Ok(())
            }
            MediaMessage::Frame(f) => self.frame(f),
        }
    }

    fn discontinuity(&mut self) -> Result<(), HlsError> {
        if self.segment.is_some() {
            self.close_segment()?;
        }
        self.pending_discontinuity = self.next_index > 0;
        Ok(())
    }

    /// Closes what is open and ends the playlist.
    fn finish(mut self) -> Result<(), HlsError> {
        // A stream shorter than the wait: its audio is all there is.
        for a in std::mem::take(&mut self.startup_audio) {
            self.write_frame(&a)?;
        }
        if self.segment.is_some() {
            self.close_segment()?;
        }
        self.playlist.end();
        self.write_playlist()
    }

    fn frame(&mut self, f: &EncodedFrame) -> Result<(), HlsError> {
        if self.next_index == 0
            && self.segment.is_none()
            && self.video.is_none()
            && f.kind == TrackKind::Audio
        {
            let first = self.startup_audio.first().map_or(f.dts, |a| a.dts);
            if f.dts - first < STARTUP_VIDEO_WAIT_MS && self.startup_audio.len() < 512 {
                self.startup_audio.push(f.clone());
                return Ok(());
            }
            // No video after all: an audio-only stream, from its first frame.
            for a in std::mem::take(&mut self.startup_audio) {
                self.write_frame(&a)?;
            }
        }
        self.write_frame(f)
    }

    fn write_frame(&mut self, f: &EncodedFrame) -> Result<(), HlsError> {
        let video_stream = self.video.is_some();
        let cut_point = if video_stream {
            f.kind == TrackKind::Video && f.keyframe
        } else {
            f.kind == TrackKind::Audio
        };
        let target_ms = i64::from(self.settings.segment_seconds) * 1000;
        if let Some(seg) = &self.segment
            && cut_point
            && f.dts - seg.start_ms >= target_ms
        {
            self.close_segment()?;
        }
        if self.segment.is_none() {
            if !cut_point {
                return Ok(()); // wait for a keyframe
            }
            self.open_segment(f.dts)?;
        }
        let carried = match f.kind {
            TrackKind::Video => self.video.is_some(),
            TrackKind::Audio => self.audio.is_some(),
        };
        if !carried {
            return Ok(());
        }
        let (Some(seg), Some(mux)) = (self.segment.as_mut(), self.mux.as_mut()) else {
            return Ok(()); // opened above, with its packetiser
        };
        match &mut seg.out {
            SegmentOut::Memory(buf) => mux.frame(f, buf),
            SegmentOut::File(file, path) => {
                self.scratch.clear();
                mux.frame(f, &mut self.scratch);
                file.write_all(&self.scratch).map_err(io(path))?;
            }
        }
        seg.last_ms = seg.last_ms.max(f.dts);
        Ok(())
    }

    fn open_segment(&mut self, start_ms: i64) -> Result<(), HlsError> {
        if self.next_index == 0
            && let Sink::Memory(m) = &self.sink
            && let Some(at) = m.take_start()
            && self.playlist.continue_from(at)
        {
            // Another node served this stream: its numbering goes on.
            self.next_index = at.next_msn;
            self.pending_discontinuity = true;
        }
        let index = self.next_index;
        self.next_index += 1;
        let mux = match &mut self.mux {
            Some(mux) => mux,
            None => self.mux.insert(
                TsMuxer::new(self.video.as_ref(), self.audio.as_ref()).map_err(HlsError::Track)?,
            ),
        };
        let out = match &self.sink {
            Sink::Dir(dir) => {
                let path = dir.join(format!("seg{index}.ts"));
                let file = std::fs::File::create(&path).map_err(io(&path))?;
                let mut file = std::io::BufWriter::with_capacity(64 * 1024, file);
                self.scratch.clear();
                mux.tables(&mut self.scratch);
                file.write_all(&self.scratch).map_err(io(&path))?;
                SegmentOut::File(file, path)
            }
            Sink::Memory(_) => {
                // Sized for a segment like the last: no regrowth, no copy.
                let mut buf = Vec::with_capacity(self.last_size + self.last_size / 4);
                mux.tables(&mut buf);
                SegmentOut::Memory(buf)
            }
        };
        let wall_ms = self.queued_ms.unwrap_or_else(crate::unix_now_ms);
        self.segment = Some(OpenSegment {
            out,
            index,
            start_ms,
            last_ms: start_ms,
            wall_ms,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
        });
        Ok(())
    }

    fn close_segment(&mut self) -> Result<(), HlsError> {
        let Some(seg) = self.segment.take() else {
            return Ok(());
        };
        // The packetiser was made with the segment and lives until it closes.
        let mut flush = |out: &mut Vec<u8>| {
            if let Some(mux) = self.mux.as_mut() {
                mux.flush(out);
            }
        };
        let bytes = match seg.out {
            SegmentOut::Memory(mut buf) => {
                flush(&mut buf);
                self.last_size = buf.len();
                Some(bytes::Bytes::from(buf))
            }
            SegmentOut::File(mut file, path) => {
                let mut tail = Vec::new();
                flush(&mut tail);
                file.write_all(&tail).map_err(io(&path))?;
                file.flush().map_err(io(&path))?;
                None
            }
        };
        // Without a next frame to measure against, the last frame counts one nominal frame.
        let duration = ((seg.last_ms - seg.start_ms).max(0) as f64 + 33.0) / 1000.0;
        let removed = self.playlist.add_segment(Segment {
            uri: format!("seg{}.ts", seg.index),
            duration,
            discontinuity: seg.discontinuity,
            program_date_time_ms: seg.wall_ms,
        });
        match &self.sink {
            Sink::Dir(dir) => {
                self.write_playlist()?;
                for uri in removed {
                    let _ = std::fs::remove_file(dir.join(uri));
                }
            }
            Sink::Memory(m) => m.update(
                Some((seg.index, bytes.unwrap_or_default())),
                (self.playlist.render(), self.playlist.position()),
                &removed,
            ),
        }
        Ok(())
    }

    fn write_playlist(&self) -> Result<(), HlsError> {
        match &self.sink {
            Sink::Dir(dir) => {
                let tmp = dir.join(".index.m3u8.tmp");
                std::fs::write(&tmp, self.playlist.render()).map_err(io(&tmp))?;
                let dst = dir.join(PLAYLIST);
                std::fs::rename(&tmp, &dst).map_err(io(&dst))
            }
            Sink::Memory(m) => {
                m.update(
                    None,
                    (self.playlist.render(), self.playlist.position()),
                    &[],
                );
                Ok(())
            }
        }
    }
}

/// Adds a stream carrying `cfg`'s codec and extradata.
pub(crate) fn add_stream(
    octx: &mut ff::format::context::Output,
    cfg: &TrackConfig,
) -> Result<usize, HlsError> {
    let mut stream = octx.add_stream(Option::<ff::Codec>::None)?;
    let index = stream.index();
    stream.set_time_base(ff::Rational::new(1, 1000));
    let codec = match cfg.codec {
        Codec::H264 => StreamCodec::H264,
        _ => StreamCodec::Aac {
            rate_channels: aac_rate_channels(&cfg.extradata),
        },
    };
    ffi::describe_stream(&mut stream, codec, &cfg.extradata)?;
    Ok(index)
}

/// Sample rate and channel count from an AAC AudioSpecificConfig.
pub(crate) fn aac_rate_channels(asc: &[u8]) -> Option<(u32, u32)> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    if asc.len() < 2 {
        return None;
    }
    let freq_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
    let channels = (asc[1] >> 3) & 0x0f;
    let rate = *RATES.get(freq_index as usize)?;
    Some((rate, u32::from(channels.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recording's HLS writer that falls behind (its disk stalled) dates
    /// the segments it writes late by when their media was made, not by
    /// when it got to them.
    #[test]
    fn a_late_writer_dates_segments_by_when_their_media_was_made() {
        use crate::hls::late_queue;
        let dir = std::env::temp_dir().join(format!(
            "roomcast-late-writer-{}-{}",
            std::process::id(),
            crate::unix_now_ms()
        ));
        let settings = late_queue::one_second_segments(crate::profile::HlsContainer::Ts);
        let made_at = crate::unix_now_ms() - 60_000;
        let rx = late_queue::queued_video(made_at, 3);
        Writer::new(Sink::Dir(dir.clone()), settings)
            .and_then(|w| w.run(rx))
            .unwrap();
        let text = std::fs::read_to_string(dir.join(PLAYLIST)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        late_queue::assert_dated_from(&text, made_at, 3, 40);
    }

    #[test]
    fn audio_specific_config() {
        assert_eq!(aac_rate_channels(&[0x11, 0x90]), Some((48000, 2)));
        assert_eq!(aac_rate_channels(&[0x12, 0x10]), Some((44100, 2)));
        assert_eq!(aac_rate_channels(&[0x11]), None);
    }
}
