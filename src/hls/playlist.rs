//! The HLS media playlist: a sliding window of segments, written by hand.
//!
//! Holds what the live playlist lists (with `EXT-X-PROGRAM-DATE-TIME`,
//! `EXT-X-DISCONTINUITY` and the matching `EXT-X-DISCONTINUITY-SEQUENCE`,
//! `EXT-X-ENDLIST` once finished) and says which segments fell out of the
//! window so the writer can delete them. Pure: times are passed in.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    pub discontinuity: bool,
    /// Wall-clock unix milliseconds of the segment's first sample.
    pub program_date_time_ms: u64,
}

/// Where a live stream stands, so that another node serving it after a
/// failover continues its numbering: the next media sequence number, and
/// the discontinuity sequence number of its last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub next_msn: u64,
    pub last_cc: u64,
}

impl Position {
    /// `"<next msn> <last cc>"`, as kept in the cluster store.
    pub(crate) fn encode(self) -> String {
        format!("{} {}", self.next_msn, self.last_cc)
    }

    pub(crate) fn parse(s: &str) -> Option<Position> {
        let (msn, cc) = s.split_once(' ')?;
        Some(Position {
            next_msn: msn.parse().ok()?,
            last_cc: cc.parse().ok()?,
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Playlist {
    target_duration: u32,
    window: usize,
    media_sequence: u64,
    discontinuity_sequence: u64,
    segments: Vec<Segment>,
    ended: bool,
}

impl Playlist {
    pub(crate) fn new(target_duration: u32, window: usize) -> Playlist {
        Playlist {
            target_duration: target_duration.max(1),
            window: window.max(1),
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: Vec::new(),
            ended: false,
        }
    }

    /// Adds a finished segment; returns the URIs that left the window.
    pub(crate) fn add_segment(&mut self, seg: Segment) -> Vec<String> {
        // A segment may run past the target (keyframe spacing); the target
        // duration must cover every listed segment, rounded.
        self.target_duration = self.target_duration.max(seg.duration.round() as u32);
        self.segments.push(seg);
        let mut removed = Vec::new();
        while self.segments.len() > self.window {
            let old = self.segments.remove(0);
            self.media_sequence += 1;
            if self.segments.first().is_some_and(|s| s.discontinuity) {
                // The discontinuity tag of the new first segment leaves with it.
                self.discontinuity_sequence += 1;
            }
            removed.push(old.uri);
        }
        removed
    }

    pub(crate) fn end(&mut self) {
        self.ended = true;
    }

    /// Where this playlist stands (the first listed segment's
    /// discontinuity is counted in the sequence already).
    pub(crate) fn position(&self) -> Position {
        Position {
            next_msn: self.media_sequence + self.segments.len() as u64,
            last_cc: self.discontinuity_sequence
                + self
                    .segments
                    .iter()
                    .skip(1)
                    .filter(|s| s.discontinuity)
                    .count() as u64,
        }
    }

    /// Continues the numbering of a stream another node served (before
    /// the first segment only): media sequence numbers go on from
    /// `at.next_msn`, and the first segment starts a new discontinuity
    /// (the writer marks it so). `false` if segments were added already.
    pub(crate) fn continue_from(&mut self, at: Position) -> bool {
        if !self.segments.is_empty() {
            return false;
        }
        self.media_sequence = at.next_msn;
        self.discontinuity_sequence = at.last_cc + 1;
        true
    }

    pub(crate) fn render(&self) -> String {
        let mut s = String::with_capacity(256 + 128 * self.segments.len());
        s.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(s, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                s,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        for (i, seg) in self.segments.iter().enumerate() {
            // The first listed segment's discontinuity is counted by the sequence above.
            if seg.discontinuity && i > 0 {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(
                s,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                iso8601(seg.program_date_time_ms)
            );
            let _ = writeln!(s, "#EXTINF:{:.3},", seg.duration);
            s.push_str(&seg.uri);
            s.push('\n');
        }
        if self.ended {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        s
    }
}

/// `2023-11-14T22:13:20.000Z` for unix milliseconds.
pub(super) fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let date = crate::auth::tc3::utc_date(secs);
    let sod = secs % 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u32, d: f64, disc: bool) -> Segment {
        Segment {
            uri: format!("seg{n}.ts"),
            duration: d,
            discontinuity: disc,
            program_date_time_ms: 1_700_000_000_000 + u64::from(n) * 2000,
        }
    }

    #[test]
    fn window_slides_and_reports_removed() {
        let mut p = Playlist::new(2, 3);
        for n in 0..3 {
            assert!(p.add_segment(seg(n, 2.0, false)).is_empty());
        }
        assert_eq!(p.add_segment(seg(3, 2.0, false)), vec!["seg0.ts"]);
        let text = p.render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("seg0.ts"));
        assert!(
            text.contains(
                "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z\n#EXTINF:2.000,\nseg1.ts"
            ),
            "{text}"
        );
        assert!(!text.contains("ENDLIST"));
        p.end();
        assert!(p.render().ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn discontinuities_are_tagged_and_counted_when_they_leave() {
        let mut p = Playlist::new(2, 2);
        p.add_segment(seg(0, 2.0, false));
        p.add_segment(seg(1, 2.0, true));
        assert!(
            p.render()
                .contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME")
        );
        p.add_segment(seg(2, 2.0, false));
        let text = p.render();
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    }

    #[test]
    fn a_continued_playlist_goes_on_after_one_discontinuity() {
        for discs in [
            vec![false, false, false],
            vec![true, false, true, true],
            vec![false],
        ] {
            let mut first = Playlist::new(2, 3);
            for (i, d) in discs.iter().enumerate() {
                first.add_segment(seg(i as u32, 2.0, i > 0 && *d));
            }
            let listed = crate::hls::live::tests::numbered(&first.render());
            let (last_msn, last_cc) = *listed.last().expect("segments");
            let at = first.position();
            assert_eq!(at.next_msn, last_msn + 1);

            let mut second = Playlist::new(2, 3);
            assert!(second.continue_from(at));
            for i in 0..5 {
                // The writer marks the first segment of a continued stream.
                second.add_segment(seg(i, 2.0, i == 0));
                let listed = crate::hls::live::tests::numbered(&second.render());
                assert_eq!(
                    listed[0].0,
                    second.position().next_msn - listed.len() as u64
                );
                assert!(
                    listed
                        .iter()
                        .all(|&(msn, cc)| msn > last_msn && cc == last_cc + 1),
                    "{discs:?} {listed:?}"
                );
            }
            assert!(!second.continue_from(at), "only before the first segment");
        }
    }

    #[test]
    fn target_duration_covers_long_segments() {
        let mut p = Playlist::new(2, 5);
        p.add_segment(seg(0, 4.4, false));
        assert!(p.render().contains("#EXT-X-TARGETDURATION:4\n"));
    }

    #[test]
    fn parses_with_m3u8_rs() {
        let mut p = Playlist::new(2, 5);
        p.add_segment(seg(0, 2.0, false));
        p.add_segment(seg(1, 2.0, true));
        p.end();
        let text = p.render();
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("valid playlist");
        assert_eq!(parsed.segments.len(), 2);
        assert!(parsed.segments[1].discontinuity);
        assert!(parsed.end_list);
    }
}
