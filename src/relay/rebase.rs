//! Output timestamps for a relay: monotonic across anchor drops and returns.
//!
//! An anchor that comes back restarts its timestamps (RTMP starts at 0
//! again); the output must not. Each attachment gets an offset that places
//! its first frame just after the last output frame; within an attachment,
//! per-track timestamps are kept strictly increasing. Pure.

use crate::media::TrackKind;

/// Gap inserted between the last frame before a re-attachment and the first after, ms.
const REATTACH_GAP_MS: i64 = 40;

#[derive(Debug, Default)]
pub(crate) struct Rebaser {
    offset: Option<i64>,
    last: [Option<i64>; 2],
    max_out: Option<i64>,
    /// The current attachment's first output timestamp.
    floor: i64,
}

fn slot(kind: TrackKind) -> usize {
    match kind {
        TrackKind::Audio => 0,
        TrackKind::Video => 1,
    }
}

impl Rebaser {
    /// A new input attachment begins: the next frame sets the offset.
    pub(crate) fn reattach(&mut self) {
        self.offset = None;
    }

    /// Maps an input (dts, pts) in ms to output (dts, pts).
    pub(crate) fn map(&mut self, kind: TrackKind, dts: i64, pts: i64) -> (i64, i64) {
        let offset = *self.offset.get_or_insert_with(|| {
            let base = self.max_out.map_or(0, |m| m + REATTACH_GAP_MS);
            self.floor = base;
            base - dts
        });
        // The other track may start a little earlier than the frame that set
        // the offset: it starts at the attachment's base instead (never
        // before the previous attachment, never negative).
        let mut out = (dts + offset).max(self.floor);
        if let Some(prev) = self.last[slot(kind)]
            && out <= prev
        {
            out = prev + 1;
        }
        self.last[slot(kind)] = Some(out);
        self.max_out = Some(self.max_out.map_or(out, |m| m.max(out)));
        (out, out + (pts - dts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_zero_and_stays_monotonic_across_reattach() {
        let mut r = Rebaser::default();
        assert_eq!(r.map(TrackKind::Video, 5000, 5040), (0, 40));
        assert_eq!(r.map(TrackKind::Audio, 5010, 5010), (10, 10));
        assert_eq!(r.map(TrackKind::Video, 5033, 5033), (33, 33));
        r.reattach();
        // The anchor came back with timestamps from 0.
        assert_eq!(r.map(TrackKind::Video, 0, 0), (73, 73));
        assert_eq!(r.map(TrackKind::Audio, 0, 0), (73, 73));
    }

    #[test]
    fn a_track_starting_before_the_first_frame_never_goes_negative() {
        let mut r = Rebaser::default();
        // A mix's first picture (presented 21 ms late) comes before its audio.
        assert_eq!(r.map(TrackKind::Video, 21, 21), (0, 0));
        assert_eq!(r.map(TrackKind::Audio, 0, 0), (0, 0));
        assert_eq!(r.map(TrackKind::Audio, 21, 21), (1, 1));
        assert_eq!(r.map(TrackKind::Audio, 42, 42), (21, 21));
        r.reattach();
        assert_eq!(r.map(TrackKind::Video, 500, 500), (61, 61));
        assert_eq!(r.map(TrackKind::Audio, 480, 480), (61, 61));
    }

    #[test]
    fn backwards_input_is_clamped() {
        let mut r = Rebaser::default();
        r.map(TrackKind::Audio, 100, 100);
        assert_eq!(r.map(TrackKind::Audio, 90, 90), (1, 1));
        assert_eq!(r.map(TrackKind::Audio, 95, 95), (2, 2));
    }
}
