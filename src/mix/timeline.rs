//! The mix's timing, as a pure core: when each input's frames are due, when
//! the output ticks, and where decoded audio lies on the output timeline.
//! No libav, no clock reads: time is an argument, so every rule is tested
//! on a manual clock.
//!
//! - [`OutputClock`]: a picture every 1/fps and an audio frame every
//!   `frame_size` samples from the mix's start. Output numbers count ticks,
//!   so stamps are exactly regular; a late thread catches up one tick of
//!   each kind per call. Audio ticks are never skipped; a picture more than
//!   [`MAX_VIDEO_LAG`] late is (graceful overload: the mix sheds encoding
//!   work and keeps its sound and its clock).
//! - [`InputTimeline`]: one input's clock (its timestamps anchored on its
//!   first arrival, one clock for its audio and video, anchored again on a
//!   jump or when too late to be laid in time, moved earlier when every frame
//!   for [`LEAD_WINDOW`] arrived ahead of it) and its jitter buffer (held
//!   [`JITTER_DELAY`] past that, at most [`MAX_PENDING`] per kind; or,
//!   adaptive, as little as the input's own lateness needs: grown at once to
//!   cover a late frame, shrunk by [`SHRINK_STEP`] after each
//!   [`SHRINK_AFTER`] in which no frame needed more, within a ceiling).
//!   Pictures are released at the output tick nearest their time (an input
//!   whose pictures come within [`PICTURE_GUARD`] of the boundary between
//!   two ticks is shown a few milliseconds off its time, clear of it, so
//!   millisecond stamps do not put two pictures in one tick and none in the
//!   next), audio one output frame plus a margin ahead. It also remembers when the input last
//!   showed a picture, for the freeze rule.
//! - [`AudioLane`]: one input's decoded audio laid at the output sample its
//!   time names (chunks that agree within [`AUDIO_RESYNC`] are joined without
//!   a gap), then summed into output frames and forgotten.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::TrackKind;

/// Every input's frames are played this long after their own timestamps say
/// (anchored on the first arrival): the jitter buffer. Audio and video of an
/// input stay aligned by their timestamps, whatever the arrival order.
pub(crate) const JITTER_DELAY: Duration =
    Duration::from_millis(crate::profile::DEFAULT_JITTER_BUFFER_MS as u64);
/// How long an input's frames must all arrive ahead of its clock before
/// the clock moves earlier by the least of those leads (its first frame was
/// late, so everything after waited longer than the jitter delay). A burst
/// is not moved for: the steady frames after it arrive on time.
const LEAD_WINDOW: Duration = Duration::from_secs(2);
/// Leads under this are clock noise, not a late anchor.
const LEAD_SLACK: Duration = Duration::from_millis(10);
/// Frames due further ahead than this re-anchor the input's clock (a
/// timestamp jump).
const MAX_EARLY: Duration = Duration::from_secs(2);
/// Messages held per input and kind at most (about 3 s).
pub(crate) const MAX_PENDING: usize = 400;
/// Audio is decoded one output frame plus this ahead of its time.
pub(crate) const AUDIO_MARGIN: Duration = Duration::from_millis(20);
/// A frame arriving later than its audio release (plus this) re-anchors its
/// input. Small: the mix thread takes what arrived before each tick, and
/// judges a frame by when it was offered, not when it got to it.
pub(crate) const ARRIVAL_MARGIN: Duration = Duration::from_millis(5);
/// Decoded audio continues the previous chunk unless its timestamp says it
/// belongs further away than this (then it is laid where it says).
const AUDIO_RESYNC: Duration = Duration::from_millis(30);

/// A picture whose tick is this far behind is skipped, not encoded late:
/// an overloaded mix drops pictures evenly instead of falling behind.
pub(crate) const MAX_VIDEO_LAG: Duration = Duration::from_millis(100);

/// A picture due closer than this to the instant where the tick it is shown
/// at changes (half a frame past a tick) moves its input's pictures clear
/// of it. Timestamps in whole milliseconds (RTMP, FLV) put pictures at the
/// output's own rate up to half a millisecond either side of their true
/// time: at that boundary they would alternate between two ticks, two
/// pictures in one and none in the next, and a third of them never shown.
pub(crate) const PICTURE_GUARD: Duration = Duration::from_millis(2);
/// Where a moved input's pictures land: this far to one side of the
/// boundary, the side that keeps the move smallest overall. An input is
/// never shown more than this and the guard away from its own time.
pub(crate) const PICTURE_CLEARANCE: Duration = Duration::from_millis(4);

/// An adaptive jitter buffer keeps this much above what the latest frame
/// of its input needed (and starts there, over the least the mixer needs).
pub(crate) const ADAPT_HEADROOM: Duration = Duration::from_millis(10);
/// An adaptive jitter buffer shrinks only after this long without a frame
/// that needed more...
pub(crate) const SHRINK_AFTER: Duration = Duration::from_secs(10);
/// ...and by at most this much at a time: audio laid within
/// [`AUDIO_RESYNC`] of where it was continues without a cut.
pub(crate) const SHRINK_STEP: Duration = Duration::from_millis(20);

/// The output's ticks.
#[derive(Debug, Clone)]
pub(crate) struct OutputClock {
    start: Instant,
    fps: Option<u32>,
    rate: u32,
    frame_size: u64,
    n_video: u64,
    n_audio: u64,
}

/// The ticks due now: output frame numbers to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub video: Option<u64>,
    pub audio: Option<u64>,
    /// Pictures skipped, too late to be worth encoding, before `video`.
    pub skipped: u64,
}

impl OutputClock {
    /// Output time 0 is `start`; `fps` `None` for an audio-only mix.
    pub(crate) fn new(start: Instant, fps: Option<u32>, rate: u32, frame_size: usize) -> Self {
        OutputClock {
            start,
            fps: fps.map(|f| f.max(1)),
            rate: rate.max(1),
            frame_size: frame_size as u64,
            n_video: 0,
            n_audio: 0,
        }
    }

    /// Output time 0 is now `start`, and no tick has been produced.
    pub(crate) fn restart(&mut self, start: Instant) {
        self.start = start;
        self.n_video = 0;
        self.n_audio = 0;
    }

    pub(crate) fn rate(&self) -> u32 {
        self.rate
    }

    fn video_at(&self, n: u64) -> Option<Instant> {
        self.fps
            .map(|f| self.start + Duration::from_nanos(n * 1_000_000_000 / u64::from(f)))
    }

    fn audio_at(&self, n: u64) -> Instant {
        self.start
            + Duration::from_nanos(n * self.frame_size * 1_000_000_000 / u64::from(self.rate))
    }

    /// When the next tick of either kind is due.
    pub(crate) fn next(&self) -> Instant {
        let audio = self.audio_at(self.n_audio);
        self.video_at(self.n_video).map_or(audio, |v| v.min(audio))
    }

    /// Takes the ticks due at `now`, at most one of each kind: a thread that
    /// fell behind produces every audio tick, back to back, until it catches
    /// up, and every picture not more than [`MAX_VIDEO_LAG`] late; earlier
    /// pictures are skipped (counted in `skipped`).
    pub(crate) fn due(&mut self, now: Instant) -> Due {
        let skipped = self.skip_late(now);
        let video = self
            .video_at(self.n_video)
            .filter(|at| *at <= now)
            .map(|_| {
                self.n_video += 1;
                self.n_video - 1
            });
        let audio = (self.audio_at(self.n_audio) <= now).then(|| {
            self.n_audio += 1;
            self.n_audio - 1
        });
        Due {
            video,
            audio,
            skipped,
        }
    }

    /// Skips the pictures more than [`MAX_VIDEO_LAG`] late at `now`.
    fn skip_late(&mut self, now: Instant) -> u64 {
        let mut skipped = 0;
        while self
            .video_at(self.n_video)
            .is_some_and(|at| now.saturating_duration_since(at) > MAX_VIDEO_LAG)
        {
            self.n_video += 1;
            skipped += 1;
        }
        skipped
    }

    /// One turn of a mix thread at `now`: skips the pictures too late to be
    /// worth encoding, then takes the earliest tick (or ticks, when audio's
    /// and video's coincide) due, and says that tick's own time. The inputs
    /// release what is due by then, not by `now`: a thread running late
    /// produces its ticks back to back, each picture in its own frame,
    /// instead of the newest picture in one frame and repeats after.
    pub(crate) fn turn(&mut self, now: Instant) -> (Instant, Due) {
        let skipped = self.skip_late(now);
        let at = self.next().min(now);
        let mut due = self.due(at);
        due.skipped += skipped;
        (at, due)
    }

    /// The output sample number of instant `t` (0 before the start).
    pub(crate) fn sample_at(&self, t: Instant) -> i64 {
        (t.saturating_duration_since(self.start).as_nanos() * u128::from(self.rate) / 1_000_000_000)
            as i64
    }

    /// How far ahead of its time a picture is released: half a frame, so it
    /// is shown at the tick nearest its time.
    pub(crate) fn video_lead(&self) -> Duration {
        self.fps.map_or(Duration::ZERO, |f| {
            Duration::from_nanos(500_000_000 / u64::from(f))
        })
    }

    /// How far ahead of its time audio is released: one output frame and a
    /// margin, so a tick always finds its samples laid.
    pub(crate) fn audio_lead(&self) -> Duration {
        Duration::from_nanos(self.frame_size * 1_000_000_000 / u64::from(self.rate)) + AUDIO_MARGIN
    }

    /// How far `t` lies from the nearest instant where the tick a picture is
    /// shown at changes (half a frame past each tick), in nanoseconds:
    /// negative before it (shown at the earlier tick). `None` without video.
    pub(crate) fn past_picture_boundary(&self, t: Instant) -> Option<i64> {
        let fps = i128::from(self.fps?);
        let origin = self.start + self.video_lead();
        let x = if t >= origin {
            t.duration_since(origin).as_nanos() as i128
        } else {
            -(origin.duration_since(t).as_nanos() as i128)
        };
        // The nearest boundary m / fps s, m rounded half up.
        let m = (2 * x * fps + 1_000_000_000).div_euclid(2_000_000_000);
        Some((x - m * 1_000_000_000 / fps) as i64)
    }

    /// Samples within which decoded chunks are joined ([`AUDIO_RESYNC`]).
    pub(crate) fn resync_samples(&self) -> i64 {
        i64::from(self.rate) * AUDIO_RESYNC.as_millis() as i64 / 1000
    }
}

/// `t` moved by `by` nanoseconds, either way (not before the clock's
/// earliest instant).
fn shifted(t: Instant, by: i64) -> Instant {
    let d = Duration::from_nanos(by.unsigned_abs());
    if by >= 0 {
        t + d
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}

/// What [`InputTimeline::release`] hands back.
#[derive(Debug, PartialEq)]
pub(crate) enum Released<T> {
    /// A picture (or a video config) to decode now.
    Video(T),
    /// Audio (or an audio config) to decode now and lay at output sample `at`.
    Audio { msg: T, at: i64 },
}

/// How an adaptive jitter buffer follows its input.
#[derive(Debug, Clone, Copy)]
struct Adaptive {
    /// The delay for frames that arrive on their clock's time.
    least: Duration,
    /// The most it grows to (`layout.jitter_buffer_ms`).
    ceiling: Duration,
    /// Since when the delay has not grown, and the most any frame arrived
    /// behind its clock since.
    window: Option<(Instant, Duration)>,
}

/// One input's clock and jitter buffer.
#[derive(Debug)]
pub(crate) struct InputTimeline<T> {
    /// (its first timestamp in ms, when it arrived).
    clock: Option<(i64, Instant)>,
    /// Since when, and by at least how much, every frame arrived ahead of
    /// the clock.
    lead: Option<(Instant, Duration)>,
    /// How long past the clock frames are held.
    delay: Duration,
    /// `None`: `delay` is fixed.
    adaptive: Option<Adaptive>,
    video: VecDeque<(Instant, T)>,
    audio: VecDeque<(Instant, T)>,
    last_picture: Option<Instant>,
    /// Nanoseconds this input's pictures are shown after (negative: before)
    /// their due, to keep clear of the ticks' boundaries
    /// ([`PICTURE_GUARD`]); within the guard and the clearance of zero.
    picture_offset: i64,
}

impl<T> Default for InputTimeline<T> {
    fn default() -> Self {
        InputTimeline::new(JITTER_DELAY)
    }
}

impl<T> InputTimeline<T> {
    /// An input whose frames wait `delay` past their clock.
    pub(crate) fn new(delay: Duration) -> Self {
        InputTimeline {
            delay,
            adaptive: None,
            clock: None,
            lead: None,
            video: VecDeque::new(),
            audio: VecDeque::new(),
            last_picture: None,
            picture_offset: 0,
        }
    }
}

impl<T> InputTimeline<T> {
    /// An input whose frames wait as little as their arrival needs: a frame
    /// arriving on its clock's time waits `min_ahead` (the least the mixer
    /// needs to lay it in time) and [`ADAPT_HEADROOM`]; one arriving later
    /// grows the delay at once by that much; the delay never passes
    /// `ceiling`, nor shrinks faster than [`SHRINK_STEP`] per
    /// [`SHRINK_AFTER`].
    pub(crate) fn adaptive(min_ahead: Duration, ceiling: Duration) -> Self {
        let least = (min_ahead + ADAPT_HEADROOM).min(ceiling);
        InputTimeline {
            adaptive: Some(Adaptive {
                least,
                ceiling,
                window: None,
            }),
            ..InputTimeline::new(least)
        }
    }

    /// The delay frames wait past their clock now.
    pub(crate) fn delay(&self) -> Duration {
        self.delay
    }

    /// An adaptive buffer's answer to a frame arriving `late` behind its
    /// clock at `now`: grown at once to cover it, or, once a window of
    /// [`SHRINK_AFTER`] passed in which every frame needed less than the
    /// delay, shrunk a step towards what the latest of them needed.
    fn adapt(&mut self, late: Duration, now: Instant) {
        let Some(a) = self.adaptive.as_mut() else {
            return;
        };
        let need = (late + a.least).min(a.ceiling);
        if need > self.delay {
            self.delay = need;
            a.window = Some((now, late));
            return;
        }
        let (since, worst) = a.window.get_or_insert((now, late));
        *worst = (*worst).max(late);
        if now.saturating_duration_since(*since) < SHRINK_AFTER {
            return;
        }
        let target = (*worst + a.least).min(a.ceiling);
        if target < self.delay {
            self.delay = target.max(self.delay.saturating_sub(SHRINK_STEP));
        }
        a.window = None;
    }

    /// Queues `msg` of `kind` arriving at `now`: a frame stamped `ts_ms`, or a
    /// config (`None`), which keeps its place after what is queued. A frame
    /// is due a jitter delay after its time on the input's clock; one due too
    /// far ahead, or too late to be laid `min_ahead` before its tick, anchors
    /// the clock again (audio and video share it, so they stay aligned).
    /// Returns whether the oldest message of that kind was dropped to make
    /// room (video must then wait for a keyframe).
    pub(crate) fn push(
        &mut self,
        kind: TrackKind,
        ts_ms: Option<i64>,
        msg: T,
        now: Instant,
        min_ahead: Duration,
    ) -> bool {
        let due = match ts_ms {
            None => self.queue(kind).back().map_or(now, |(d, _)| *d),
            Some(ts) => {
                let (ts0, t0) = *self.clock.get_or_insert((ts, now));
                let delta = ts - ts0;
                let at = shifted(t0, delta.saturating_mul(1_000_000));
                self.adapt(now.saturating_duration_since(at), now);
                let due = at + self.delay;
                if due > now + self.delay + MAX_EARLY || due < now + min_ahead {
                    self.clock = Some((ts, now));
                    self.lead = None;
                    now + self.delay
                } else {
                    due - self.follow_lead(at.saturating_duration_since(now), now)
                }
            }
        };
        let queue = self.queue(kind);
        let dropped = queue.len() >= MAX_PENDING;
        if dropped {
            queue.pop_front();
        }
        queue.push_back((due, msg));
        dropped
    }

    /// Notes a frame arriving `lead` ahead of the clock; once every frame
    /// for [`LEAD_WINDOW`] did, moves the clock earlier by the least lead
    /// and returns that (this frame's due moves with it).
    fn follow_lead(&mut self, lead: Duration, now: Instant) -> Duration {
        if lead < LEAD_SLACK {
            self.lead = None;
            return Duration::ZERO;
        }
        let (since, least) = self.lead.get_or_insert((now, lead));
        *least = (*least).min(lead);
        if now.saturating_duration_since(*since) < LEAD_WINDOW {
            return Duration::ZERO;
        }
        let shift = *least;
        self.lead = None;
        if let Some((_, t0)) = self.clock.as_mut() {
            *t0 = t0.checked_sub(shift).unwrap_or(*t0);
        }
        shift
    }

    fn queue(&mut self, kind: TrackKind) -> &mut VecDeque<(Instant, T)> {
        match kind {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio => &mut self.audio,
        }
    }

    /// Hands out, in order, what is due at `now` on `clock`: pictures half a
    /// frame ahead of their time, audio an output frame (and a margin) ahead,
    /// with the output sample it belongs at.
    pub(crate) fn release(
        &mut self,
        now: Instant,
        clock: &OutputClock,
        out: &mut Vec<Released<T>>,
    ) {
        let video_by = now + clock.video_lead();
        while let Some(&(due, _)) = self.video.front() {
            if self.picture_at(due, clock) > video_by {
                break;
            }
            let (_, msg) = self.video.pop_front().expect("checked");
            out.push(Released::Video(msg));
        }
        let audio_by = now + clock.audio_lead();
        while self.audio.front().is_some_and(|(due, _)| *due <= audio_by) {
            let (due, msg) = self.audio.pop_front().expect("checked");
            out.push(Released::Audio {
                msg,
                at: clock.sample_at(due),
            });
        }
    }

    /// When a picture due at `due` counts as due for the ticks: its due
    /// moved by the input's offset, which first moves (and stays moved for
    /// the pictures after) if that lies within [`PICTURE_GUARD`] of a
    /// boundary between ticks, to [`PICTURE_CLEARANCE`] before or after
    /// it, whichever leaves the offset nearer zero.
    fn picture_at(&mut self, due: Instant, clock: &OutputClock) -> Instant {
        let at = shifted(due, self.picture_offset);
        let guard = PICTURE_GUARD.as_nanos() as i64;
        let clearance = PICTURE_CLEARANCE.as_nanos() as i64;
        match clock.past_picture_boundary(at) {
            Some(p) if p.abs() < guard => {
                let later = self.picture_offset + clearance - p;
                let earlier = self.picture_offset - clearance - p;
                let by = if later.abs() <= earlier.abs() {
                    later
                } else {
                    earlier
                };
                self.picture_offset = by;
                shifted(due, by)
            }
            _ => at,
        }
    }

    /// A picture was decoded at `now`.
    pub(crate) fn showed_picture(&mut self, now: Instant) {
        self.last_picture = Some(now);
    }

    /// Whether the input's last picture is still shown at `now`: a stalled
    /// input keeps it for `freeze`, then shows its placeholder.
    pub(crate) fn shows_picture(&self, now: Instant, freeze: Duration) -> bool {
        self.last_picture
            .is_some_and(|t| now.saturating_duration_since(t) <= freeze)
    }
}

/// One input's decoded audio on the output timeline: `samples[ch][0]` is
/// output sample `start`.
#[derive(Debug, Clone)]
pub(crate) struct AudioLane {
    samples: Vec<Vec<f32>>,
    start: i64,
    /// Where the next chunk continues, while chunks' times agree.
    next: Option<i64>,
}

impl AudioLane {
    pub(crate) fn new(channels: usize) -> Self {
        AudioLane {
            samples: vec![Vec::new(); channels],
            start: 0,
            next: None,
        }
    }

    /// A new decoder: the next chunk is laid where its time says.
    pub(crate) fn restart(&mut self) {
        self.next = None;
    }

    /// Lays `decoded` (per channel) at output sample `pos`, or right after
    /// the previous chunk if that is within `tolerance` samples of `pos`.
    /// Samples for output already produced are dropped.
    pub(crate) fn lay(&mut self, decoded: &[Vec<f32>], pos: i64, tolerance: i64) {
        let len = decoded.first().map_or(0, Vec::len) as i64;
        if len == 0 {
            return;
        }
        let at = match self.next {
            Some(next) if (pos - next).abs() <= tolerance => next,
            _ => pos,
        };
        self.next = Some(at + len);
        if self.samples.first().is_none_or(Vec::is_empty) {
            self.start = at;
        }
        let offset = at - self.start;
        let skip = (-offset).clamp(0, len) as usize;
        let offset = offset.max(0) as usize;
        for (buf, new) in self.samples.iter_mut().zip(decoded) {
            buf.resize(offset, 0.0);
            buf.extend_from_slice(&new[skip..]);
        }
    }

    /// Output frame `[from, from + n)`: adds this lane's samples times `gain`
    /// into `mix` (`None`: not heard, but consumed all the same), and
    /// forgets them and anything older.
    pub(crate) fn mix_into(&mut self, mix: &mut [Vec<f32>], from: i64, gain: Option<f32>) {
        let n = mix.first().map_or(0, Vec::len);
        let have = self.samples.first().map_or(0, Vec::len);
        let stale = (from - self.start).clamp(0, have as i64) as usize;
        let lead = (self.start - from).clamp(0, n as i64) as usize;
        let take = (have - stale).min(n - lead);
        for (out, inp) in mix.iter_mut().zip(&mut self.samples) {
            if let Some(g) = gain {
                for (o, i) in out[lead..lead + take]
                    .iter_mut()
                    .zip(&inp[stale..stale + take])
                {
                    *o += i * g;
                }
            }
            inp.drain(..stale + take);
        }
        self.start += (stale + take) as i64;
    }
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
