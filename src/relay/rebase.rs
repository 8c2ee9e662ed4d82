//! Output timestamps for a relay: monotonic across anchor drops and returns.
//!
//! An anchor that comes back restarts its timestamps (RTMP starts at 0
//! again); the output must not. Each attachment gets an offset that places
//! its first frame just after the last output frame; within an attachment,
//! per-track timestamps are kept strictly increasing.
//!
//! A track's first frame in an attachment is measured against the
//! attachment's start, not against the other track's latest: a track that
//! comes in one burst after the other (a WebRTC publisher's held first
//! frames) keeps its place beside it.
//!
//! An anchor whose timestamps jump within an attachment (an encoder
//! restarted behind a relay, a wrapped 32-bit clock, a bad splice) would
//! otherwise leave a gap of that size in every output, or, backwards, pin
//! the rest of its frames one millisecond apart. A track whose next frame
//! lands more than [`MAX_BACK_MS`] before or [`MAX_FORWARD_MS`] after its
//! last one has jumped: it continues just after the last output frame,
//! or, if the other track already jumped the same way, on that track's
//! new offset, so audio and video stay aligned.
//!
//! Audio that arrives after the frame that started the attachment but
//! belongs before it (a WebRTC anchor's audio comes out of its transcode
//! after the video keyframe that opened the gate) is dropped: it cannot be
//! played at its own time, and clamped to the start it would put several
//! frames a millisecond apart, which players that predict a PES's later
//! frames from its first read as time going back. Video is clamped
//! instead, so a keyframe is never lost. Pure.

use crate::media::TrackKind;

/// Gap inserted between the last frame before a re-attachment and the first after, ms.
const REATTACH_GAP_MS: i64 = 40;
/// A track going back further than this has jumped (less is clamped).
pub(crate) const MAX_BACK_MS: i64 = 1_000;
/// A track going forward further than this has jumped (ffmpeg's default
/// discontinuity threshold).
pub(crate) const MAX_FORWARD_MS: i64 = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Rebaser {
    /// The current attachment's offset, set by its first frame.
    offset: Option<i64>,
    /// Each track's offset since its last jump (the attachment's until then).
    track_offset: [Option<i64>; 2],
    last: [Option<i64>; 2],
    max_out: Option<i64>,
    /// The current attachment's first output timestamp.
    floor: i64,
    /// Jumps seen, for the relay's log.
    pub jumps: u64,
    /// Audio frames dropped for falling before their attachment's start.
    pub early_audio: u64,
}

impl Rebaser {
    /// A new input attachment begins: the next frame sets the offset.
    pub(crate) fn reattach(&mut self) {
        self.offset = None;
        self.track_offset = [None; 2];
    }

    /// Maps an input (dts, pts) in ms to output (dts, pts); `None` for
    /// audio that falls before the attachment's first output frame.
    pub(crate) fn map(&mut self, kind: TrackKind, dts: i64, pts: i64) -> Option<(i64, i64)> {
        let attachment = *self.offset.get_or_insert_with(|| {
            let base = self.max_out.map_or(0, |m| m + REATTACH_GAP_MS);
            self.floor = base;
            base - dts
        });
        let s = kind.index();
        let mut offset = self.track_offset[s].unwrap_or(attachment);
        let jumped = |offset: i64, prev: i64| {
            let out = dts.saturating_add(offset);
            out < prev - MAX_BACK_MS || out > prev + MAX_FORWARD_MS
        };
        // A track's first frame in an attachment is measured against where
        // the attachment started, not against how far the other track has
        // got since: a WebRTC publisher's tracks, held until the sender's
        // first reports, come out one whole track after the other.
        let reference = if self.track_offset[s].is_none() {
            Some(self.floor)
        } else {
            self.last[s].or(self.max_out)
        };
        if let Some(prev) = reference
            && jumped(offset, prev)
        {
            let max_out = self.max_out.unwrap_or(prev);
            offset = match self.track_offset[1 - s] {
                // The other track made the same jump: its offset fits.
                Some(other) if other != offset && !jumped(other, max_out) => other,
                _ => max_out + REATTACH_GAP_MS - dts,
            };
            self.jumps += 1;
        }
        self.track_offset[s] = Some(offset);
        // The other track may start a little earlier than the frame that set
        // the offset: its audio is dropped up to the attachment's base, its
        // video starts there (never before the previous attachment, never
        // negative).
        let mapped = dts.saturating_add(offset);
        if mapped < self.floor && kind == TrackKind::Audio {
            self.early_audio += 1;
            return None;
        }
        let mut out = mapped.max(self.floor);
        if let Some(prev) = self.last[kind.index()]
            && out <= prev
        {
            out = prev + 1;
        }
        self.last[kind.index()] = Some(out);
        self.max_out = Some(self.max_out.map_or(out, |m| m.max(out)));
        Some((out, out + (pts - dts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_zero_and_stays_monotonic_across_reattach() {
        let mut r = Rebaser::default();
        assert_eq!(r.map(TrackKind::Video, 5000, 5040), Some((0, 40)));
        assert_eq!(r.map(TrackKind::Audio, 5010, 5010), Some((10, 10)));
        assert_eq!(r.map(TrackKind::Video, 5033, 5033), Some((33, 33)));
        r.reattach();
        // The anchor came back with timestamps from 0.
        assert_eq!(r.map(TrackKind::Video, 0, 0), Some((73, 73)));
        assert_eq!(r.map(TrackKind::Audio, 0, 0), Some((73, 73)));
    }

    #[test]
    fn audio_from_before_the_first_frame_is_dropped_not_squeezed() {
        let mut r = Rebaser::default();
        // A mix's first picture (presented 21 ms late) comes before its audio.
        assert_eq!(r.map(TrackKind::Video, 21, 21), Some((0, 0)));
        assert_eq!(r.map(TrackKind::Audio, 0, 0), None);
        assert_eq!(r.map(TrackKind::Audio, 21, 21), Some((0, 0)));
        assert_eq!(r.map(TrackKind::Audio, 42, 42), Some((21, 21)));
        r.reattach();
        assert_eq!(r.map(TrackKind::Video, 500, 500), Some((61, 61)));
        assert_eq!(r.map(TrackKind::Audio, 480, 480), None);
        assert_eq!(r.map(TrackKind::Audio, 501, 501), Some((62, 62)));
        assert_eq!(r.early_audio, 2);
    }

    #[test]
    fn a_track_that_comes_in_one_burst_after_the_other_stays_beside_it() {
        // A WebRTC publisher's first 1.5 s, held until its sender reports:
        // all the audio first, then all the video, then both as they come.
        let mut r = Rebaser::default();
        let mut out = Vec::new();
        let held = |kind, step: i64| (0..).map(move |i| (kind, 230 + i * step));
        let burst = held(TrackKind::Audio, 20)
            .take_while(|(_, t)| *t < 1_730)
            .chain(held(TrackKind::Video, 33).take_while(|(_, t)| *t < 1_730));
        for (kind, t) in burst.chain(stream(1_730, 2_000)) {
            out.push((kind, t, r.map(kind, t, t).unwrap().0));
        }
        assert_eq!(r.jumps, 0);
        for (kind, t, o) in out {
            assert!(
                (o - (t - 230)).abs() <= 1,
                "{kind:?} at {t} is output at {o}, not beside the other track"
            );
        }
    }

    #[test]
    fn video_from_before_the_first_frame_starts_with_it() {
        let mut r = Rebaser::default();
        assert_eq!(r.map(TrackKind::Audio, 40, 40), Some((0, 0)));
        // A keyframe from just before the first audio frame is kept.
        assert_eq!(r.map(TrackKind::Video, 20, 20), Some((0, 0)));
        assert_eq!(r.map(TrackKind::Video, 53, 53), Some((13, 13)));
    }

    #[test]
    fn audio_lagging_its_video_loses_only_the_lag() {
        // A WebRTC anchor whose audio comes out of its transcode 900 ms
        // after the video of the same time: 900 ms of audio is dropped, then
        // both flow at their own times.
        let mut r = Rebaser::default();
        let mut kept = Vec::new();
        for (kind, t) in stream(0, 3_000) {
            let t = if kind == TrackKind::Audio { t - 900 } else { t };
            if let Some((out, _)) = r.map(kind, t, t)
                && kind == TrackKind::Audio
            {
                kept.push(out);
            }
        }
        assert_eq!(kept[0], 5, "the first frame at or after the video's first");
        assert!(
            kept.windows(2).all(|w| (21..=24).contains(&(w[1] - w[0]))),
            "{kept:?}"
        );
        assert_eq!(r.early_audio, 39, "900 ms of 23.2 ms frames");
        assert_eq!(r.jumps, 0);
    }

    #[test]
    fn backwards_input_is_clamped() {
        let mut r = Rebaser::default();
        r.map(TrackKind::Audio, 100, 100);
        assert_eq!(r.map(TrackKind::Audio, 200, 200), Some((100, 100)));
        assert_eq!(r.map(TrackKind::Audio, 190, 190), Some((101, 101)));
        assert_eq!(r.map(TrackKind::Audio, 195, 195), Some((102, 102)));
    }

    /// 30 fps video and 23.2 ms audio frames from `from_ms` for `ms`,
    /// interleaved by timestamp.
    fn stream(from_ms: i64, ms: i64) -> Vec<(TrackKind, i64)> {
        let mut v: Vec<(TrackKind, i64)> = (0..)
            .map(|i| (TrackKind::Video, from_ms + i * 1000 / 30))
            .take_while(|(_, t)| *t < from_ms + ms)
            .chain(
                (0..)
                    .map(|i| (TrackKind::Audio, from_ms + i * 1024 * 1000 / 44_100))
                    .take_while(|(_, t)| *t < from_ms + ms),
            )
            .collect();
        v.sort_by_key(|(_, t)| *t);
        v
    }

    #[test]
    fn a_jump_either_way_continues_the_output_with_audio_and_video_aligned() {
        for jump in [-3_600_000, -5_000, 20_000, 600_000, i64::from(u32::MAX)] {
            let mut r = Rebaser::default();
            let before: Vec<_> = stream(1_000, 4_000);
            let after = stream(1_000 + 4_000 + jump, 4_000);
            let mut out = Vec::new();
            for (kind, t) in before.iter().chain(&after) {
                out.push((*kind, r.map(*kind, *t, *t).unwrap().0));
            }
            assert_eq!(r.jumps, 2, "jump {jump}: one per track");
            // No gap, no pile-up: the output runs 8 s, each track steady.
            let last = out.iter().map(|(_, t)| *t).max().unwrap();
            assert!(
                (7_900..=8_100).contains(&last),
                "jump {jump}: ends at {last}"
            );
            for kind in [TrackKind::Video, TrackKind::Audio] {
                let ts: Vec<i64> = out
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, t)| *t)
                    .collect();
                let steps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
                assert!(
                    steps.iter().all(|d| (1..=80).contains(d)),
                    "jump {jump}: {kind:?} steps {steps:?}"
                );
            }
            // After the jump, audio and video of the same input time are
            // output together, as before it.
            let v = out
                .iter()
                .rev()
                .find(|(k, _)| *k == TrackKind::Video)
                .unwrap()
                .1;
            let a = out
                .iter()
                .rev()
                .find(|(k, _)| *k == TrackKind::Audio)
                .unwrap()
                .1;
            let (vi, ai) = (
                after
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == TrackKind::Video)
                    .unwrap()
                    .1,
                after
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == TrackKind::Audio)
                    .unwrap()
                    .1,
            );
            assert!(
                ((v - a) - (vi - ai)).abs() <= 40,
                "jump {jump}: A/V moved by {}",
                (v - a) - (vi - ai)
            );
        }
    }

    #[test]
    fn gaps_within_the_limits_are_kept() {
        let mut r = Rebaser::default();
        assert_eq!(r.map(TrackKind::Video, 0, 0), Some((0, 0)));
        // A slide every 9 s, a small step back: timing as sent.
        assert_eq!(r.map(TrackKind::Video, 9_000, 9_000), Some((9_000, 9_000)));
        assert_eq!(r.map(TrackKind::Video, 8_500, 8_500), Some((9_001, 9_001)));
        assert_eq!(r.jumps, 0);
    }

    proptest::proptest! {
        /// Whatever the input does, each track's output only goes forward,
        /// and the output as a whole never leaps further than a jump allows.
        #[test]
        fn output_only_goes_forward_and_never_far(
            frames in proptest::collection::vec((proptest::bool::ANY, -20_000i64..20_000), 1..300),
            reattach_at in proptest::option::of(0usize..300),
        ) {
            let mut r = Rebaser::default();
            let mut input = [0i64; 2];
            let mut last: [Option<i64>; 2] = [None; 2];
            let mut max_out: Option<i64> = None;
            for (i, (video, step)) in frames.into_iter().enumerate() {
                if Some(i) == reattach_at {
                    r.reattach();
                }
                let kind = if video { TrackKind::Video } else { TrackKind::Audio };
                let s = kind.index();
                input[s] = input[s].saturating_add(step);
                let Some((dts, pts)) = r.map(kind, input[s], input[s]) else {
                    // Only audio from before its attachment's first frame.
                    proptest::prop_assert_eq!(kind, TrackKind::Audio);
                    continue;
                };
                proptest::prop_assert!(dts >= 0);
                proptest::prop_assert_eq!(dts, pts);
                if let Some(prev) = last[s] {
                    proptest::prop_assert!(dts > prev);
                }
                if let Some(m) = max_out {
                    proptest::prop_assert!(dts <= m + MAX_FORWARD_MS + REATTACH_GAP_MS, "{} after {}", dts, m);
                }
                last[s] = Some(dts);
                max_out = Some(max_out.map_or(dts, |m| m.max(dts)));
            }
        }
    }
}
