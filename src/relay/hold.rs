//! The start of an attachment, interleaved: what a passthrough gives its
//! outputs is held until both tracks have begun, then let out in
//! timestamp order.
//!
//! One track often begins after the other. Audio transcoded from Opus or
//! re-encoded comes out of its stage (another thread) after the video
//! that went straight on; a WebRTC publisher holds each track's first
//! frames until its sender has reported how the track's clock relates to
//! its wallclock, then lets each out on its own, a second of video in one
//! burst and then a second of audio. Passed on as they come, the outputs
//! would start with one track and restart when the other's configuration
//! arrives (an HLS discontinuity after a first segment without sound),
//! and the tracks would be a second apart in every output's order. So an
//! attachment's outputs get nothing until both tracks have a frame: then
//! the configurations, then the frames in timestamp order, until the
//! track that was ahead has less than [`CAUGHT_UP_MS`] left waiting. From
//! then on messages pass as they come. A stream with one track only is let
//! out once [`HOLD_MS`] of it (or [`HOLD_MAX`] messages) waited.
//!
//! What is let out late carries the wall clock it arrived at (given with
//! each message), so outputs that date their media (HLS's
//! PROGRAM-DATE-TIME) date it by when it came, not by when it was let out
//! in a burst. Pure.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::media::{MediaMessage, TimeBase};

/// Media held at most on one track before everything is let out (a
/// WebRTC publisher holds its first frames up to 2 s).
pub(crate) const HOLD_MS: i64 = 3_000;
/// Messages held at most.
pub(crate) const HOLD_MAX: usize = 512;
/// The track that was ahead is let out as it comes once less than this of
/// it waits for the other.
pub(crate) const CAUGHT_UP_MS: i64 = 100;

/// A message and the wall clock it arrived at (unix ms).
pub(crate) type Held = (Arc<MediaMessage>, u64);

#[derive(Debug, Default)]
pub(crate) struct StartHold {
    holding: bool,
    configs: Vec<Held>,
    /// Each track's frames waiting, with their times in ms.
    frames: [VecDeque<(i64, Held)>; 2],
    /// Whether each track has had a frame in this attachment.
    started: [bool; 2],
}

impl StartHold {
    /// For a new attachment. (The default lets everything pass.)
    pub(crate) fn holding() -> StartHold {
        StartHold {
            holding: true,
            ..StartHold::default()
        }
    }

    /// Whether messages pass as they come.
    pub(crate) fn is_open(&self) -> bool {
        !self.holding
    }

    /// `m` arrives at `wall_ms` (unix ms); what may go on now is appended
    /// to `out`, in order, each with the wall clock it arrived at.
    pub(crate) fn offer(&mut self, m: &Arc<MediaMessage>, wall_ms: u64, out: &mut Vec<Held>) {
        if !self.holding {
            out.push((m.clone(), wall_ms));
            return;
        }
        match &**m {
            MediaMessage::Config(_) => self.configs.push((m.clone(), wall_ms)),
            MediaMessage::Frame(f) => {
                let s = f.kind.index();
                let ms = f.time_base.rescale(f.dts, TimeBase::MILLIS);
                self.frames[s].push_back((ms, (m.clone(), wall_ms)));
                self.started[s] = true;
            }
        }
        let span = |q: &VecDeque<(i64, Held)>| match (q.front(), q.back()) {
            (Some((a, _)), Some((b, _))) => b.saturating_sub(*a),
            _ => 0,
        };
        let held = self.configs.len() + self.frames.iter().map(VecDeque::len).sum::<usize>();
        if held >= HOLD_MAX || self.frames.iter().any(|q| span(q) >= HOLD_MS) {
            self.release_all(out);
            return;
        }
        if !(self.started[0] && self.started[1]) {
            return;
        }
        // Both tracks have begun: out in timestamp order while both wait.
        self.merge(out);
        // One track has nothing waiting: the other is ahead. Open once what
        // is left of it is short.
        if self.frames.iter().all(|q| span(q) < CAUGHT_UP_MS) {
            self.release_all(out);
        }
    }

    /// Everything held, configurations first, frames in timestamp order
    /// (each track's own order kept); from now on messages pass.
    fn release_all(&mut self, out: &mut Vec<Held>) {
        self.merge(out);
        // At most one track has frames left, all after the other's.
        for q in &mut self.frames {
            out.extend(q.drain(..).map(|(_, m)| m));
        }
        self.holding = false;
    }

    /// The configurations, then frames in timestamp order (video first on
    /// a tie) while both tracks have some waiting.
    fn merge(&mut self, out: &mut Vec<Held>) {
        out.append(&mut self.configs);
        while let (Some((a, _)), Some((v, _))) = (self.frames[0].front(), self.frames[1].front()) {
            let next = usize::from(v <= a);
            let (_, m) = self.frames[next].pop_front().expect("peeked");
            out.push(m);
        }
    }
}

/// How far back a replayed message is dated at most: a kept group of
/// pictures spans a few seconds, and a timestamp jump inside one must not
/// date media hours back.
pub(crate) const BACK_DATE_MAX_MS: u64 = 10_000;

/// When each message of a group the anchor sent earlier (`group`, oldest
/// first, replayed now in one burst) was sent, unix ms: `now_ms` less how
/// far its timestamp lies behind the group's newest frame, at most
/// [`BACK_DATE_MAX_MS`]. A config takes the date of the frame before it
/// (the group's first date if none). So HLS dates the segment the group
/// opens by when its keyframe came, not by when the relay started.
pub(crate) fn back_dates(now_ms: u64, group: &[Arc<MediaMessage>]) -> Vec<u64> {
    let ms = |m: &MediaMessage| match m {
        MediaMessage::Frame(f) => Some(f.time_base.rescale(f.dts, TimeBase::MILLIS)),
        MediaMessage::Config(_) => None,
    };
    let Some(newest) = group.iter().filter_map(|m| ms(m)).max() else {
        return vec![now_ms; group.len()];
    };
    let date = |t: i64| {
        now_ms.saturating_sub(newest.saturating_sub(t).clamp(0, BACK_DATE_MAX_MS as i64) as u64)
    };
    let first = group.iter().find_map(|m| ms(m)).map_or(now_ms, date);
    let mut last = first;
    group
        .iter()
        .map(|m| {
            if let Some(t) = ms(m) {
                last = date(t);
            }
            last
        })
        .collect()
}

/// Replayed messages a stage's dates remember at most (a kept group is
/// bounded by `limits.gop_cache_mb`; this bounds a stage that never
/// answers).
pub(crate) const STAGE_DATES_MAX: usize = 4_096;

/// When the media a stage (a transcode on its own thread) made from a
/// replayed group was sent: the group's frames go in dated by
/// [`back_dates`], and come out of the stage later, in a burst, on the
/// same timeline (a stage keeps its input's timestamps). Each output frame
/// is dated by the input frame at or before its timestamp, plus the
/// distance between the two; an output past the group's last frame (live
/// media) has no date here, and is dated when it comes out. Pure.
#[derive(Default)]
pub(crate) struct StageDates {
    /// Replayed frames offered to the stage, oldest first: (ms, unix ms).
    marks: VecDeque<(i64, u64)>,
    /// The last date given: dates never go back (a group's dates are
    /// bounded in how far back they go, so its distances may not add up).
    given: u64,
}

impl StageDates {
    /// A replayed message offered to the stage, sent at `wall` (unix ms).
    pub(crate) fn offered(&mut self, m: &MediaMessage, wall: u64) {
        let MediaMessage::Frame(f) = m else { return };
        let ms = f.time_base.rescale(f.dts, TimeBase::MILLIS);
        // A timestamp going back starts a new group: the old one is past.
        if self.marks.back().is_some_and(|(last, _)| ms < *last) {
            self.clear();
        }
        if self.marks.len() == STAGE_DATES_MAX {
            self.marks.pop_front();
        }
        self.marks.push_back((ms, wall));
    }

    /// The date of a frame the stage made, if it came from the replayed
    /// group; `None` for a config (it takes the next frame's) and for live
    /// media.
    pub(crate) fn date(&mut self, m: &MediaMessage) -> Option<u64> {
        let MediaMessage::Frame(f) = m else {
            return None;
        };
        let ms = f.time_base.rescale(f.dts, TimeBase::MILLIS);
        let &(last, _) = self.marks.back()?;
        // An output up to a frame after the group's last (a stage's
        // rounding of timestamps) is still the group's.
        if ms > last + CAUGHT_UP_MS {
            self.clear();
            return None;
        }
        // The marks before the one this frame is dated by are done with.
        while self.marks.len() > 1 && self.marks[1].0 <= ms {
            self.marks.pop_front();
        }
        let (at, wall) = self.marks[0];
        let date = if ms >= at {
            wall.saturating_add((ms - at) as u64)
        } else {
            wall.saturating_sub((at - ms).min(BACK_DATE_MAX_MS as i64) as u64)
        }
        .max(self.given);
        self.given = date;
        if ms >= last {
            self.clear();
        }
        Some(date)
    }

    /// Forgets the group (a new attachment).
    pub(crate) fn clear(&mut self) {
        self.marks.clear();
        self.given = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Codec, EncodedFrame, TrackConfig, TrackKind};
    use bytes::Bytes;

    fn frame(kind: TrackKind, ms: i64) -> Arc<MediaMessage> {
        Arc::new(MediaMessage::Frame(EncodedFrame {
            kind,
            codec: match kind {
                TrackKind::Audio => Codec::Aac,
                TrackKind::Video => Codec::H264,
            },
            pts: ms,
            dts: ms,
            time_base: TimeBase::MILLIS,
            keyframe: true,
            data: Bytes::new(),
        }))
    }

    fn config(kind: TrackKind) -> Arc<MediaMessage> {
        Arc::new(MediaMessage::Config(TrackConfig {
            kind,
            codec: match kind {
                TrackKind::Audio => Codec::Aac,
                TrackKind::Video => Codec::H264,
            },
            extradata: Bytes::new(),
        }))
    }

    /// What came out, as (kind or config, ms).
    fn shown(out: &[Held]) -> Vec<(char, i64)> {
        out.iter()
            .map(|(m, _)| match &**m {
                MediaMessage::Config(c) => (if c.kind == TrackKind::Video { 'V' } else { 'A' }, -1),
                MediaMessage::Frame(f) => {
                    (if f.kind == TrackKind::Video { 'v' } else { 'a' }, f.dts)
                }
            })
            .collect()
    }

    /// Offers `input`, the n-th message arriving at wall clock `WALL + n`.
    fn run(hold: &mut StartHold, input: &[Arc<MediaMessage>]) -> Vec<Vec<(char, i64)>> {
        run_dated(hold, input).0
    }

    const WALL: u64 = 1_800_000_000_000;

    /// [`run`], and every message's wall clock as it came out.
    fn run_dated(
        hold: &mut StartHold,
        input: &[Arc<MediaMessage>],
    ) -> (Vec<Vec<(char, i64)>>, Vec<u64>) {
        let mut walls = Vec::new();
        let steps = input
            .iter()
            .enumerate()
            .map(|(n, m)| {
                let mut out = Vec::new();
                hold.offer(m, WALL + n as u64, &mut out);
                walls.extend(out.iter().map(|(_, w)| *w));
                shown(&out)
            })
            .collect();
        (steps, walls)
    }

    #[test]
    fn the_default_hold_lets_everything_pass() {
        let mut h = StartHold::default();
        assert!(h.is_open());
        let steps = run(
            &mut h,
            &[frame(TrackKind::Audio, 5), frame(TrackKind::Video, 0)],
        );
        assert_eq!(steps, [vec![('a', 5)], vec![('v', 0)]]);
    }

    #[test]
    fn a_track_let_out_in_one_burst_after_the_other_is_interleaved() {
        // A WebRTC publisher's held first second: video, then audio.
        let mut h = StartHold::holding();
        let mut input = vec![config(TrackKind::Video)];
        input.extend((0..30).map(|i| frame(TrackKind::Video, i * 1000 / 30)));
        input.push(config(TrackKind::Audio));
        input.extend((0..50).map(|i| frame(TrackKind::Audio, i * 20)));
        input.push(frame(TrackKind::Video, 1000));
        let steps = run(&mut h, &input);
        // Nothing comes out while only video has begun.
        assert!(steps[..32].iter().all(Vec::is_empty), "{steps:?}");
        let out: Vec<(char, i64)> = steps.concat();
        assert_eq!(&out[..2], [('V', -1), ('A', -1)]);
        // Every message once, and in time order across the tracks (within
        // what was still waiting when the video was caught up).
        assert_eq!(out.len(), input.len());
        for w in out[2..].windows(2) {
            assert!(w[1].1 + CAUGHT_UP_MS >= w[0].1, "{out:?}");
        }
        assert!(h.is_open());
        // From then on, as they come.
        let mut o = Vec::new();
        h.offer(&frame(TrackKind::Audio, 1000), WALL + 99, &mut o);
        assert_eq!(shown(&o), [('a', 1000)]);
        assert_eq!(o[0].1, WALL + 99);
    }

    #[test]
    fn an_interleaved_start_opens_at_once() {
        // An RTMP publisher starting after the relay: configs, then both
        // tracks together.
        let mut h = StartHold::holding();
        let steps = run(
            &mut h,
            &[
                config(TrackKind::Video),
                config(TrackKind::Audio),
                frame(TrackKind::Video, 0),
                frame(TrackKind::Audio, 0),
                frame(TrackKind::Audio, 21),
            ],
        );
        assert_eq!(
            steps,
            [
                vec![],
                vec![],
                vec![],
                vec![('V', -1), ('A', -1), ('v', 0), ('a', 0)],
                vec![('a', 21)]
            ]
        );
    }

    #[test]
    fn one_track_alone_is_let_out_after_the_hold() {
        let mut h = StartHold::holding();
        let mut input = vec![config(TrackKind::Audio)];
        input.extend((0..=150).map(|i| frame(TrackKind::Audio, i * 20)));
        let (steps, walls) = run_dated(&mut h, &input);
        let first = steps.iter().position(|s| !s.is_empty()).unwrap();
        assert_eq!(first, 151, "released at 3 s of audio");
        assert_eq!(steps[first].len(), 152, "the config and every frame");
        assert_eq!(steps[first][0], ('A', -1));
        assert!(h.is_open());
        // Let out in one burst, each dated by when it came.
        let arrived: Vec<u64> = (0..input.len() as u64).map(|n| WALL + n).collect();
        assert_eq!(walls, arrived);
    }

    #[test]
    fn the_hold_is_bounded_in_messages() {
        let mut h = StartHold::holding();
        let input: Vec<_> = (0..HOLD_MAX as i64)
            .map(|i| frame(TrackKind::Video, i / 100))
            .collect();
        let steps = run(&mut h, &input);
        assert_eq!(steps.concat().len(), HOLD_MAX);
        assert!(h.is_open());
    }

    /// A replayed group is dated back from now by each frame's distance
    /// to its newest frame, across tracks; a config takes the date before
    /// it; a timestamp jump dates no further back than the bound.
    #[test]
    fn a_replayed_group_is_dated_by_when_it_was_sent() {
        use TrackKind::{Audio, Video};
        let now = 1_000_000;
        let group = [
            frame(Video, 4_000),
            frame(Audio, 4_010),
            config(Audio),
            frame(Video, 4_033),
            frame(Audio, 6_500),
            frame(Video, 7_000),
        ];
        assert_eq!(
            back_dates(now, &group),
            [
                now - 3_000,
                now - 2_990,
                now - 2_990,
                now - 2_967,
                now - 500,
                now
            ]
        );
        let jump = [config(Video), frame(Video, 0), frame(Video, 1_000_000)];
        assert_eq!(
            back_dates(now, &jump),
            [now - BACK_DATE_MAX_MS, now - BACK_DATE_MAX_MS, now]
        );
        // No frame: nothing to date back by.
        assert_eq!(back_dates(now, &[config(Video)]), [now]);
        assert!(back_dates(now, &[]).is_empty());
        // Near the epoch, it saturates.
        assert_eq!(back_dates(100, &group[..1]), [100]);
        assert_eq!(
            back_dates(100, &[frame(Video, 0), frame(Video, 500)]),
            [0, 100]
        );
    }

    /// Frames a stage made from a replayed group are dated by the input
    /// frame at or before them plus the distance; past the group's last
    /// frame they are live (no date), and stay so.
    #[test]
    fn a_stages_output_of_a_replayed_group_is_dated_by_its_input() {
        use TrackKind::Video;
        let now = 1_000_000;
        let group = [
            frame(Video, 1_000),
            frame(Video, 1_033),
            frame(Video, 3_966),
        ];
        let walls = back_dates(now, &group);
        let mut dates = StageDates::default();
        for (m, w) in group.iter().zip(&walls) {
            dates.offered(m, *w);
        }
        // A config out of the stage has no date of its own.
        assert_eq!(dates.date(&config(Video)), None);
        // The stage's timeline rounds to its own rate (1/30 s here).
        assert_eq!(dates.date(&frame(Video, 1_000)), Some(now - 2_966));
        assert_eq!(dates.date(&frame(Video, 1_033)), Some(now - 2_933));
        assert_eq!(dates.date(&frame(Video, 2_000)), Some(now - 1_966));
        // One ms past the last input: rounding, still the group's.
        assert_eq!(dates.date(&frame(Video, 3_967)), Some(now + 1));
        assert_eq!(dates.date(&frame(Video, 4_000)), None);
        assert_eq!(dates.date(&frame(Video, 3_000)), None);
        // Live media after the group, straight away: no date.
        let mut dates = StageDates::default();
        dates.offered(&group[2], now);
        assert_eq!(dates.date(&frame(Video, 4_200)), None);
        assert_eq!(dates.date(&frame(Video, 3_966)), None);
        // An output before the first input (an encoder's priming) is dated
        // back from it, by at most the bound.
        let mut dates = StageDates::default();
        dates.offered(&group[0], now);
        assert_eq!(dates.date(&frame(Video, 979)), Some(now - 21));
        let mut dates = StageDates::default();
        dates.offered(&group[2], now);
        assert_eq!(
            dates.date(&frame(Video, -100_000)),
            Some(now - BACK_DATE_MAX_MS)
        );
        // A group starting over forgets the last.
        let mut dates = StageDates::default();
        dates.offered(&group[2], now);
        dates.offered(&group[0], now + 5);
        assert_eq!(dates.date(&frame(Video, 1_000)), Some(now + 5));
        dates.offered(&group[0], now);
        dates.clear();
        assert_eq!(dates.date(&frame(Video, 1_000)), None);
    }

    proptest::proptest! {
        /// Whatever a stage makes of a replayed group, in order: the dates
        /// never go back, never pass the group's newest date by more than a
        /// frame's rounding, and end (live) once an output passes the group.
        #[test]
        fn a_stages_dates_run_forwards_within_the_group(
            inputs in proptest::collection::vec(0i64..200, 1..100),
            outputs in proptest::collection::vec(0i64..200, 0..120),
        ) {
            use TrackKind::Video;
            let now = 10_000_000;
            let mut t = 0;
            let group: Vec<_> = inputs.iter().map(|d| { t += d; frame(Video, t) }).collect();
            let walls = back_dates(now, &group);
            let mut dates = StageDates::default();
            for (m, w) in group.iter().zip(&walls) {
                dates.offered(m, *w);
            }
            let (first, last) = (0, t);
            let mut o = first - 50;
            let mut prev: Option<u64> = None;
            let mut ended = false;
            for d in outputs {
                o += d;
                let date = dates.date(&frame(Video, o));
                if ended {
                    proptest::prop_assert_eq!(date, None);
                    continue;
                }
                match date {
                    Some(date) => {
                        proptest::prop_assert!(o <= last + CAUGHT_UP_MS);
                        proptest::prop_assert!(date <= now + CAUGHT_UP_MS as u64, "{date}");
                        proptest::prop_assert!(prev.is_none_or(|p| p <= date), "{prev:?} then {date}");
                        prev = Some(date);
                        ended = o >= last;
                    }
                    None => {
                        proptest::prop_assert!(o > last + CAUGHT_UP_MS);
                        ended = true;
                    }
                }
            }
        }
    }
}
