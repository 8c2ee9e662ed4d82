//! Recordings to disk: a relay output that writes what the task emits
//! (one anchor's stream or the mix) into files.
//!
//! Formats (profile `outputs.record.format`, TRTC OutputFormat): `mp4`
//! (fragmented MP4, so a file cut short by a crash still plays), `aac`
//! (the audio alone, `.m4a`), `hls` (an HLS playlist that keeps every
//! segment) and `hls+mp4`. MP4 files are split at the first keyframe after
//! `max_file_minutes`, and whenever a track's configuration changes. Every
//! file written is listed in a shared list (DescribeCloudRecording).

pub(crate) mod tasks;
pub(crate) mod upload;
pub(crate) mod uploader;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use ffmpeg_next as ff;

use crate::hls::writer::{HlsError, HlsWriter, add_stream};
use crate::media::{DropToKeyframe, EncodedFrame, MediaMessage, TimeBase, TrackConfig, TrackKind};
use crate::profile::{HlsOutput, RecordFormat, RecordOutput};

const QUEUE_CAPACITY: usize = 1024;

/// A file a recording wrote (or is writing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedFile {
    /// The user whose stream it is; `None` for a mix.
    pub user: Option<String>,
    /// Relative to the recording's directory.
    pub name: String,
    /// `video`, `audio` or `audio_video`.
    pub track: &'static str,
    /// Unix seconds of its first frame.
    pub begin: u64,
}

pub(crate) type FileList = Arc<Mutex<Vec<RecordedFile>>>;

/// At start, before uploads resume: the HLS playlists of recordings a
/// killed process left open (`<root>/<task>/<prefix>_hls/index.m3u8`
/// without `#EXT-X-ENDLIST`) are closed, so players take them as the
/// complete recordings they now are instead of waiting for more. No writer
/// runs yet. Returns how many were closed.
pub(crate) fn close_interrupted(root: &std::path::Path) -> usize {
    let mut closed = 0;
    let Ok(tasks) = std::fs::read_dir(root) else {
        return 0;
    };
    for task in tasks.filter_map(|e| e.ok().map(|e| e.path())) {
        let Ok(entries) = std::fs::read_dir(&task) else {
            continue;
        };
        for dir in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if !dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("_hls"))
            {
                continue;
            }
            let playlist = dir.join("index.m3u8");
            let Ok(text) = std::fs::read_to_string(&playlist) else {
                continue;
            };
            if text.contains("#EXT-X-ENDLIST") || !text.starts_with("#EXTM3U") {
                continue;
            }
            let ended = if text.ends_with('\n') {
                format!("{text}#EXT-X-ENDLIST\n")
            } else {
                format!("{text}\n#EXT-X-ENDLIST\n")
            };
            // Written beside and renamed over: a crash now leaves the old or the new.
            let tmp = dir.join("index.m3u8.closing");
            match std::fs::write(&tmp, ended).and_then(|()| std::fs::rename(&tmp, &playlist)) {
                Ok(()) => {
                    closed += 1;
                    tracing::info!(playlist = %playlist.display(), "recording playlist left open by an interrupted run closed");
                }
                Err(e) => {
                    tracing::warn!(playlist = %playlist.display(), "recording playlist left open by an interrupted run: cannot close it: {e}");
                }
            }
        }
    }
    closed
}

/// What a cloud recording reports to the application's callback receiver
/// (TRTC's event group 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordingEvent {
    pub room: crate::room::RoomKey,
    pub task: String,
    /// The recording's own UserId (CreateCloudRecording's `UserId`).
    pub user: String,
    pub at_ms: u64,
    pub kind: RecordingEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordingEventKind {
    /// 301: the recorder started.
    RecorderStart,
    /// 302: the recorder left; 0 stopped by the API, 99 nobody to record
    /// for `MaxIdleTime`, 2 the room ended.
    RecorderStop { leave_code: u32 },
    /// 303: uploading to object storage started.
    UploadStart,
    /// 304: a playlist reached the bucket for the first time.
    FileInfo { files: Vec<RecordedFile> },
    /// 305: every file is in the bucket.
    UploadStop,
    /// 307: a playlist cut its first segment.
    FileSlice { file: RecordedFile },
}

/// Where recordings send their events (a dropped receiver is fine).
pub(crate) type RecordingEvents = tokio::sync::broadcast::Sender<RecordingEvent>;

/// Where and how one stream is recorded.
#[derive(Debug, Clone)]
pub(crate) struct RecordTarget {
    /// The recording's directory; files are named `<prefix>_<n>.mp4`, HLS
    /// goes to `<prefix>_hls/`.
    pub dir: PathBuf,
    pub prefix: String,
    pub user: Option<String>,
    pub output: RecordOutput,
    pub files: FileList,
}

enum Cmd {
    Media(Arc<MediaMessage>),
    Finish,
}

/// Media bytes handed to recorders (the metrics' counter, looked up once).
static WRITTEN: std::sync::LazyLock<crate::metrics::ByteCounter> =
    std::sync::LazyLock::new(|| crate::metrics::metrics().sent(crate::metrics::Output::Record));

/// The relay's side of a recording.
pub(crate) struct Recorder {
    tx: Option<SyncSender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
    gate: DropToKeyframe,
    counted: crate::metrics::DropCounter,
    hls: Option<HlsWriter>,
    /// The HLS playlist, listed when its first frame comes.
    hls_listing: Option<(FileList, RecordedFile)>,
}

impl Recorder {
    pub(crate) fn spawn(t: RecordTarget) -> Recorder {
        if let Err(e) = std::fs::create_dir_all(&t.dir) {
            tracing::error!(dir = %t.dir.display(), "recording: {e}");
        }
        let (files_too, hls_too, audio_only) = match t.output.format {
            RecordFormat::Mp4 => (true, false, false),
            RecordFormat::Aac => (true, false, true),
            RecordFormat::Hls => (false, true, false),
            RecordFormat::HlsAndMp4 => (true, true, false),
        };
        let hls_listing = hls_too.then(|| {
            (
                t.files.clone(),
                RecordedFile {
                    user: t.user.clone(),
                    name: format!("{}_hls/index.m3u8", t.prefix),
                    track: "audio_video",
                    begin: 0,
                },
            )
        });
        let hls = hls_too.then(|| {
            crate::hls::writer::spawn(
                t.dir.join(format!("{}_hls", t.prefix)),
                HlsOutput {
                    segment_seconds: 4,
                    // Every segment stays: a recording, not a live window.
                    window: u32::MAX,
                    low_latency: false,
                    part_ms: 0,
                    container: crate::profile::HlsContainer::Ts,
                    renditions: Vec::new(),
                },
            )
        });
        let (tx, thread) = if files_too {
            let (tx, rx) = sync_channel(QUEUE_CAPACITY);
            let thread = std::thread::Builder::new()
                .name("recorder".into())
                .spawn(move || {
                    let dir = t.dir.clone();
                    if let Err(e) = Mp4Writer::new(t, audio_only).run(rx) {
                        tracing::error!(dir = %dir.display(), "recording stopped: {e}");
                    }
                })
                .expect("spawn thread");
            (Some(tx), Some(thread))
        } else {
            (None, None)
        };
        Recorder {
            tx,
            thread,
            gate: DropToKeyframe::default(),
            counted: crate::metrics::DropCounter::new(crate::metrics::DropReason::SlowOutput),
            hls,
            hls_listing,
        }
    }

    /// Queues without waiting; on overflow skips to the next keyframe.
    pub(crate) fn offer(&mut self, msg: &Arc<MediaMessage>) {
        if let Some(h) = self.hls.as_mut() {
            h.offer(msg);
        }
        if matches!(&**msg, MediaMessage::Frame(_))
            && let Some((files, mut file)) = self.hls_listing.take()
        {
            file.begin = crate::unix_now();
            files.lock().unwrap_or_else(|p| p.into_inner()).push(file);
        }
        let Some(tx) = &self.tx else {
            return;
        };
        if !self.gate.admit(msg) {
            self.counted.sync(self.gate.dropped);
            return;
        }
        match tx.try_send(Cmd::Media(msg.clone())) {
            Err(TrySendError::Full(_)) => {
                self.gate.overflowed();
                self.counted.sync(self.gate.dropped);
            }
            Ok(()) => {
                if let MediaMessage::Frame(f) = &**msg {
                    WRITTEN.add(f.data.len());
                }
            }
            Err(_) => {}
        }
    }

    pub(crate) fn discontinuity(&mut self) {
        if let Some(h) = self.hls.as_mut() {
            h.discontinuity();
        }
    }

    /// Closes the files and waits for them to be complete.
    pub(crate) async fn finish(mut self) {
        if let Some(h) = self.hls.take() {
            h.finish().await;
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Cmd::Finish);
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

struct OpenFile {
    octx: ff::format::context::Output,
    video: Option<(usize, ff::Rational)>,
    audio: Option<(usize, ff::Rational)>,
    start_ms: i64,
}

struct Mp4Writer {
    t: RecordTarget,
    audio_only: bool,
    video: Option<TrackConfig>,
    audio: Option<TrackConfig>,
    file: Option<OpenFile>,
    next_index: u32,
}

impl Mp4Writer {
    fn new(t: RecordTarget, audio_only: bool) -> Mp4Writer {
        Mp4Writer {
            t,
            audio_only,
            video: None,
            audio: None,
            file: None,
            next_index: 0,
        }
    }

    fn run(mut self, rx: Receiver<Cmd>) -> Result<(), HlsError> {
        ff::init()?;
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Cmd::Media(m) => match &*m {
                    MediaMessage::Config(c) => {
                        if self.audio_only && c.kind == TrackKind::Video {
                            continue;
                        }
                        let slot = match c.kind {
                            TrackKind::Video => &mut self.video,
                            TrackKind::Audio => &mut self.audio,
                        };
                        if slot.as_ref() != Some(c) {
                            *slot = Some(c.clone());
                            // New parameters: a new file from the next keyframe.
                            self.close()?;
                        }
                    }
                    MediaMessage::Frame(f) => self.frame(f)?,
                },
                Cmd::Finish => break,
            }
        }
        self.close()
    }

    fn frame(&mut self, f: &EncodedFrame) -> Result<(), HlsError> {
        if self.audio_only && f.kind == TrackKind::Video {
            return Ok(());
        }
        let has_video = self.video.is_some();
        let cut_point = if has_video {
            f.kind == TrackKind::Video && f.keyframe
        } else {
            f.kind == TrackKind::Audio
        };
        let dts = f.time_base.rescale(f.dts, TimeBase::MILLIS);
        let pts = f.time_base.rescale(f.pts, TimeBase::MILLIS);
        let max_ms = i64::from(self.t.output.max_file_minutes) * 60_000;
        if cut_point
            && self
                .file
                .as_ref()
                .is_some_and(|o| dts - o.start_ms >= max_ms)
        {
            self.close()?;
        }
        if self.file.is_none() {
            if !cut_point {
                return Ok(());
            }
            self.open(dts)?;
        }
        let file = self.file.as_mut().expect("opened above");
        let Some((index, tb)) = (match f.kind {
            TrackKind::Video => file.video,
            TrackKind::Audio => file.audio,
        }) else {
            return Ok(());
        };
        if dts < file.start_ms {
            return Ok(()); // from before the file's first keyframe
        }
        let ms = ff::Rational::new(1, 1000);
        let mut pkt = ff::Packet::copy(&f.data);
        pkt.set_stream(index);
        let rel = |t: i64| ff::rescale::Rescale::rescale(&(t - file.start_ms), ms, tb);
        pkt.set_dts(Some(rel(dts)));
        pkt.set_pts(Some(rel(pts)));
        if f.keyframe {
            pkt.set_flags(ff::packet::Flags::KEY);
        }
        pkt.write_interleaved(&mut file.octx)?;
        Ok(())
    }

    fn open(&mut self, start_ms: i64) -> Result<(), HlsError> {
        let ext = if self.audio_only { "m4a" } else { "mp4" };
        let name = format!("{}_{}.{ext}", self.t.prefix, self.next_index);
        self.next_index += 1;
        let path = self.t.dir.join(&name);
        let mut octx = ff::format::output_as(&path, "mp4")?;
        let mut video = None;
        let mut audio = None;
        for cfg in [&self.video, &self.audio].into_iter().flatten() {
            let i = add_stream(&mut octx, cfg)?;
            if cfg.codec == crate::media::Codec::H264
                && let Some((w, h)) = crate::media::h264::parameter_sets(&cfg.extradata)
                    .first()
                    .and_then(|sps| crate::media::h264::sps_dimensions(sps))
                && let Some(mut st) = octx.stream_mut(i)
            {
                // MP4 needs the picture size in its sample description.
                crate::media::ffi::set_stream_picture_size(&mut st, w, h);
            }
            match cfg.kind {
                TrackKind::Video => video = Some(i),
                TrackKind::Audio => audio = Some(i),
            }
        }
        let mut opts = ff::Dictionary::new();
        // Fragments: a file cut short (crash, power loss) still plays.
        opts.set("movflags", "frag_keyframe+empty_moov+default_base_moof");
        // Each finished fragment goes to the file at once, not when 32 KiB
        // of buffer fill: a kill loses the fragment in progress, no more.
        opts.set("flush_packets", "1");
        octx.write_header_with(opts)?;
        let tb = |i: Option<usize>| i.map(|i| (i, octx.stream(i).expect("added").time_base()));
        let (video, audio) = (tb(video), tb(audio));
        let track = match (video.is_some(), audio.is_some()) {
            (true, true) => "audio_video",
            (true, false) => "video",
            _ => "audio",
        };
        tracing::info!(file = %path.display(), "recording into a new file");
        self.t
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RecordedFile {
                user: self.t.user.clone(),
                name,
                track,
                begin: crate::unix_now(),
            });
        self.file = Some(OpenFile {
            octx,
            video,
            audio,
            start_ms,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), HlsError> {
        if let Some(mut f) = self.file.take() {
            f.octx.write_trailer()?;
        }
        Ok(())
    }
}
