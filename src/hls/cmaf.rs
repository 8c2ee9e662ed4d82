//! The CMAF segmenter: a relay's messages (milliseconds) in, init sections
//! and parts (fMP4 fragments) out, cut where the playlist wants them. Pure:
//! the wall clock arrives as an argument; `hls::store` keeps what comes out.
//!
//! Cutting rules:
//! - a segment starts at a video keyframe (any audio frame for audio-only
//!   streams) once the segment target has passed;
//! - parts are declared on a grid of the part target: a part ends where the
//!   target does, cut before the first frame at or past that point. Its last
//!   frame may outlast it (into the next part's time), as frames straddle
//!   every cut; a frame late past the line (a gap: pictures a busy source
//!   dropped) starts the next part late rather than making this one longer.
//!   So every part but a segment's last lasts exactly PART-TARGET whatever
//!   the frames' intervals, within both LL-HLS bounds (at most the target,
//!   at least 85 % of it), while no gap is longer than a part;
//! - a part is INDEPENDENT when it starts at a keyframe (always, audio-only);
//! - a changed decoder configuration makes a new init section and a
//!   discontinuity; so does [`Segmenter::discontinuity`].
//!
//! The last video sample of a part learns its duration from the frame that
//! starts the next part, so a part is out one frame after its end; audio
//! (AAC) frames always last 1024 samples.

use bytes::Bytes;

use super::fmp4::{self, InitInfo, Sample};
use super::live::{Part, SegmentStart};
use crate::media::{Codec, EncodedFrame, MediaMessage, TrackConfig, TrackKind};

/// How long (media time) the first audio waits for a video track.
const STARTUP_VIDEO_WAIT_MS: i64 = 1500;
/// Samples held before a start, at most (a stream that never starts is dropped).
const STARTUP_AUDIO_CAP: usize = 512;
const VIDEO_TIMESCALE: i64 = 90_000;
const AAC_FRAME: u32 = 1024;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A new init section; the parts that follow need it.
    Init {
        id: u32,
        bytes: Bytes,
        info: InitInfo,
    },
    /// A finished part; `start` is `Some` when it opens a segment.
    Part {
        bytes: Bytes,
        part: Part,
        start: Option<SegmentStart>,
        /// Video samples in it (for the frame rate a master playlist states).
        frames: u32,
    },
    /// The open segment is complete.
    SegmentEnd,
}

struct OpenPart {
    start_ms: i64,
    /// Where its last sample ends, ms.
    end_ms: i64,
    video: Vec<Sample>,
    audio: Vec<Sample>,
    independent: bool,
    /// Set for the first part of a segment.
    segment: Option<SegmentStart>,
}

pub(crate) struct Segmenter {
    segment_ms: i64,
    part_ms: i64,
    video: Option<TrackConfig>,
    audio: Option<TrackConfig>,
    /// The init in use, with its audio timescale.
    init: Option<(u32, Option<u32>)>,
    next_init: u32,
    /// Configs changed since the init was made.
    init_stale: bool,
    discontinuity: bool,
    seg_start_ms: i64,
    part: Option<OpenPart>,
    /// The last video frame, waiting for the next to know its duration.
    held_video: Option<EncodedFrame>,
    /// The last interval between video frames, ms (at most half a part):
    /// the held frame's duration when the stream ends.
    last_gap: Option<i64>,
    /// The next audio sample's time (audio timescale), to keep AAC gapless.
    audio_clock: Option<i64>,
    startup_audio: Vec<EncodedFrame>,
    sequence: u32,
    /// The newest frame's time, ms: what `wall_ms` is the wall clock of.
    newest_ms: i64,
    /// A segment is open: the next part continues it.
    segment_open: bool,
    init_failed: bool,
}

/// A video frame's duration before two frames have shown one (30 fps).
const NOMINAL_INTERVAL: i64 = 33;

impl Segmenter {
    /// `part_ms` is the part target (for a plain playlist: how finely
    /// segments are fragmented).
    pub(crate) fn new(segment_ms: u32, part_ms: u32) -> Segmenter {
        Segmenter {
            segment_ms: i64::from(segment_ms.max(1)),
            part_ms: i64::from(part_ms.max(1)),
            video: None,
            audio: None,
            init: None,
            next_init: 0,
            init_stale: false,
            discontinuity: false,
            seg_start_ms: 0,
            part: None,
            held_video: None,
            last_gap: None,
            audio_clock: None,
            startup_audio: Vec::new(),
            sequence: 0,
            newest_ms: 0,
            segment_open: false,
            init_failed: false,
        }
    }

    /// The input changed (an anchor left and came back): the current
    /// segment ends and the next starts with a discontinuity.
    pub(crate) fn discontinuity(&mut self, out: &mut Vec<Event>) {
        self.close(out);
        self.discontinuity = self.init.is_some();
    }

    /// The stream ends: what is open is closed.
    pub(crate) fn finish(&mut self, wall_ms: u64, out: &mut Vec<Event>) {
        if self.init.is_none() && !self.startup_audio.is_empty() {
            // A stream shorter than the wait: its audio is all there is.
            let held = std::mem::take(&mut self.startup_audio);
            for f in &held {
                self.frame(f, wall_ms, out);
            }
        }
        self.close(out);
    }

    /// Feeds one message; `wall_ms` is now, unix milliseconds.
    pub(crate) fn push(&mut self, msg: &MediaMessage, wall_ms: u64, out: &mut Vec<Event>) {
        match msg {
            MediaMessage::Config(c) => {
                if !matches!(c.codec, Codec::H264 | Codec::Aac) {
                    return; // the relay only sends H.264/AAC here
                }
                let slot = match c.kind {
                    TrackKind::Video => &mut self.video,
                    TrackKind::Audio => &mut self.audio,
                };
                if slot.as_ref() != Some(c) {
                    *slot = Some(c.clone());
                    if c.kind == TrackKind::Video {
                        self.startup_audio.clear();
                    }
                    if self.init.is_some() {
                        // New parameters: the segment ends, the next gets a new init.
                        self.close(out);
                        self.init_stale = true;
                        self.discontinuity = true;
                    }
                }
            }
            MediaMessage::Frame(f) => {
                self.newest_ms = self.newest_ms.max(f.dts);
                if self.init.is_none()
                    && self.video.is_none()
                    && f.kind == TrackKind::Audio
                    && self.audio.is_some()
                {
                    let first = self.startup_audio.first().map_or(f.dts, |a| a.dts);
                    if f.dts - first < STARTUP_VIDEO_WAIT_MS
                        && self.startup_audio.len() < STARTUP_AUDIO_CAP
                    {
                        self.startup_audio.push(f.clone());
                        return;
                    }
                    // No video after all: an audio-only stream from its first frame.
                    let held = std::mem::take(&mut self.startup_audio);
                    for a in &held {
                        self.frame(a, wall_ms, out);
                    }
                }
                self.frame(f, wall_ms, out);
            }
        }
    }

    fn has_video(&self) -> bool {
        self.video.is_some()
    }

    fn frame(&mut self, f: &EncodedFrame, wall_ms: u64, out: &mut Vec<Event>) {
        match f.kind {
            TrackKind::Video if self.has_video() => self.video_frame(f, wall_ms, out),
            TrackKind::Audio if self.audio.is_some() => {
                if !self.has_video() {
                    // Audio drives the cuts of an audio-only stream.
                    self.cut_before(f.dts, true, wall_ms, out);
                }
                self.audio_frame(f);
            }
            _ => {}
        }
    }

    fn video_frame(&mut self, f: &EncodedFrame, wall_ms: u64, out: &mut Vec<Event>) {
        if let Some(prev) = self.held_video.take() {
            let gap = (f.dts - prev.dts).max(1);
            self.last_gap = Some(gap.min(self.part_ms / 2).max(1));
            if let Some(part) = self.part.as_mut() {
                part.video.push(video_sample(&prev, gap));
                part.end_ms = part.end_ms.max(f.dts);
            }
        }
        self.cut_before(f.dts, f.keyframe, wall_ms, out);
        if self.part.is_some() {
            self.held_video = Some(f.clone());
        }
    }

    /// Closes the part (and segment) that ends before `dts`, and opens the
    /// next when `dts` may start one.
    fn cut_before(&mut self, dts: i64, independent: bool, wall_ms: u64, out: &mut Vec<Event>) {
        // Where the next part's time starts: this frame, or the grid line
        // the last part ended on.
        let mut start_ms = dts;
        if let Some(part) = &self.part {
            let line = part.start_ms + self.part_ms;
            let full = dts >= line;
            let elapsed = dts - self.seg_start_ms;
            // At a part boundary, less than half a part short of the target
            // counts as there: no sliver of a last part.
            let new_segment = independent
                && (elapsed >= self.segment_ms
                    || (full && elapsed + self.part_ms / 2 > self.segment_ms));
            if !full && !new_segment {
                return;
            }
            // A frame past the line: the part ends on it and the next starts
            // there, its first frame late by less than the gap before it.
            // Never a whole part late: a gap longer than a part makes a
            // longer part (no picture came to start one), not a lag that
            // grows.
            let end = if full {
                line.max(dts - self.part_ms)
            } else {
                dts
            };
            self.emit_part(end, out);
            start_ms = end;
            if new_segment {
                out.push(Event::SegmentEnd);
                self.segment_open = false;
            }
        }
        let segment = if self.segment_open {
            None
        } else {
            if !independent {
                return; // a segment waits for a keyframe
            }
            if self.init.is_none() || self.init_stale {
                self.make_init(out);
                if self.init.is_none() {
                    return;
                }
            }
            self.seg_start_ms = start_ms;
            self.segment_open = true;
            Some(SegmentStart {
                discontinuity: std::mem::take(&mut self.discontinuity),
                init: self.init.map_or(0, |(id, _)| id),
                // The date of the segment's first sample (this frame; the
                // segment's time may start a little before it, on the part
                // grid). The wall clock belongs to the newest frame; this one
                // may be older.
                program_date_time_ms: wall_ms
                    .saturating_sub(u64::try_from(self.newest_ms - dts).unwrap_or(0)),
            })
        };
        self.part = Some(OpenPart {
            start_ms,
            end_ms: dts,
            video: Vec::new(),
            audio: Vec::new(),
            independent,
            segment,
        });
    }

    fn make_init(&mut self, out: &mut Vec<Event>) {
        match fmp4::init_segment(self.video.as_ref(), self.audio.as_ref()) {
            Ok((bytes, info)) => {
                let id = self.next_init;
                self.next_init += 1;
                self.init = Some((id, info.audio_timescale));
                self.init_stale = false;
                self.audio_clock = None;
                out.push(Event::Init { id, bytes, info });
            }
            Err(e) => {
                if !self.init_failed {
                    tracing::warn!("hls: cannot describe the stream in fMP4: {e}");
                    self.init_failed = true;
                }
            }
        }
    }

    /// Closes the open part at `end_ms` into a fragment.
    fn emit_part(&mut self, end_ms: i64, out: &mut Vec<Event>) {
        let Some(part) = self.part.take() else {
            return;
        };
        if part.video.is_empty() && part.audio.is_empty() {
            return;
        }
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let bytes = fmp4::fragment(self.sequence, &part.video, &part.audio);
        out.push(Event::Part {
            frames: part.video.len() as u32,
            bytes,
            part: Part {
                duration_ms: (end_ms - part.start_ms).max(1) as u64,
                independent: part.independent,
            },
            start: part.segment,
        });
    }

    /// Ends what is open: the held frame with a nominal duration, the part,
    /// the segment.
    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some(prev) = self.held_video.take()
            && let Some(part) = self.part.as_mut()
        {
            let interval = self.last_gap.unwrap_or(NOMINAL_INTERVAL);
            part.video.push(video_sample(&prev, interval));
            part.end_ms = part.end_ms.max(prev.dts + interval);
        }
        let rate = i64::from(self.init.and_then(|(_, r)| r).unwrap_or(48_000));
        while let Some(mut part) = self.part.take() {
            // Audio runs ahead of the video: what starts past the target
            // goes into a part of its own, so no part outgrows the target.
            let limit = part.start_ms + self.part_ms;
            let past = part.audio.iter().position(|s| s.dts * 1000 / rate >= limit);
            match past {
                Some(i) if part.end_ms > limit + 1 && (i > 0 || !part.video.is_empty()) => {
                    let tail = OpenPart {
                        start_ms: limit,
                        end_ms: part.end_ms,
                        video: Vec::new(),
                        audio: part.audio.split_off(i),
                        independent: false,
                        segment: None,
                    };
                    self.part = Some(part);
                    self.emit_part(limit, out);
                    self.part = Some(tail);
                }
                _ => {
                    // The last audio frame may straddle the target, as
                    // frames straddle every cut: the part is declared to it.
                    let end = if past.is_none() {
                        part.end_ms.min(limit)
                    } else {
                        part.end_ms
                    };
                    self.part = Some(part);
                    self.emit_part(end, out);
                }
            }
        }
        if std::mem::take(&mut self.segment_open) {
            out.push(Event::SegmentEnd);
        }
    }

    fn audio_frame(&mut self, f: &EncodedFrame) {
        let Some(part) = self.part.as_mut() else {
            return;
        };
        let rate = i64::from(self.init.and_then(|(_, r)| r).unwrap_or(48_000));
        let at = f.dts * rate / 1000;
        // Within half a frame of where the last one ended: continue the clock.
        let dts = match self.audio_clock {
            Some(c) if (at - c).abs() < i64::from(AAC_FRAME / 2) => c,
            _ => at,
        };
        self.audio_clock = Some(dts + i64::from(AAC_FRAME));
        part.end_ms = part.end_ms.max(f.dts + i64::from(AAC_FRAME) * 1000 / rate);
        part.audio.push(Sample {
            dts,
            pts: dts,
            duration: AAC_FRAME,
            keyframe: true,
            data: f.data.clone(),
        });
    }
}

fn video_sample(f: &EncodedFrame, duration_ms: i64) -> Sample {
    let ticks = VIDEO_TIMESCALE / 1000;
    Sample {
        dts: f.dts * ticks,
        pts: f.pts * ticks,
        duration: (duration_ms * ticks).clamp(1, i64::from(u32::MAX)) as u32,
        keyframe: f.keyframe,
        data: f.data.clone(),
    }
}

#[cfg(test)]
#[path = "cmaf_tests.rs"]
mod tests;
