//! The live fMP4 media playlist, low-latency or not: segments made of parts,
//! a sliding window, blocking-reload decisions and delta updates, after
//! draft-pantos-hls-rfc8216bis. Pure: no clock, no I/O; the shell
//! (`hls::store`) asks it questions and renders what it answers.
//!
//! Names are fixed: `init<k>.mp4` (one per decoder configuration),
//! `seg<msn>.m4s` (a whole segment), `part<msn>.<i>.m4s` (its parts).

use std::collections::VecDeque;
use std::fmt::Write as _;

pub(crate) use super::playlist::Position;

/// The Advance Part Limit of the spec: how far past the last part a
/// blocking request may reach before it is refused.
const ADVANCE_PART_LIMIT: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LiveSettings {
    /// The configured segment duration (the starting target duration).
    pub segment_ms: u32,
    /// `Some(part target)` for LL-HLS; `None` for a plain fMP4 playlist.
    pub part_ms: Option<u32>,
    /// Complete segments kept in the playlist.
    pub window: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Part {
    pub duration_ms: u64,
    pub independent: bool,
}

/// What opens a segment: its first part carries these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SegmentStart {
    pub discontinuity: bool,
    /// The init section (`init<k>.mp4`) its media needs.
    pub init: u32,
    /// Wall-clock unix milliseconds of its first sample.
    pub program_date_time_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Segment {
    msn: u64,
    start: SegmentStart,
    parts: Vec<Part>,
}

impl Segment {
    fn duration_ms(&self) -> u64 {
        self.parts.iter().map(|p| p.duration_ms).sum()
    }
}

/// How a blocking playlist request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reload {
    /// Answer now.
    Ready,
    /// Hold the request until the playlist changes (or the deadline).
    Wait,
    /// Refuse at once with 400 and this reason.
    TooFar(&'static str),
}

/// The playlist's live state.
#[derive(Debug, Clone)]
pub(crate) struct LivePlaylist {
    settings: LiveSettings,
    /// Seconds; grows (never shrinks) when keyframe spacing makes a longer segment.
    target_duration: u64,
    /// Complete segments, oldest first.
    segments: VecDeque<Segment>,
    /// The segment whose parts are being produced (msn = `next_msn`).
    current: Option<Segment>,
    next_msn: u64,
    discontinuity_sequence: u64,
    ended: bool,
    /// The first segment starts a discontinuity (a stream continued from
    /// another node's).
    continued: bool,
}

impl LivePlaylist {
    pub(crate) fn new(settings: LiveSettings) -> LivePlaylist {
        LivePlaylist {
            target_duration: u64::from(settings.segment_ms.div_ceil(1000).max(1)),
            settings: LiveSettings {
                window: settings.window.max(1),
                ..settings
            },
            segments: VecDeque::new(),
            current: None,
            next_msn: 0,
            discontinuity_sequence: 0,
            ended: false,
            continued: false,
        }
    }

    /// Where this playlist stands; an open segment counts as used.
    pub(crate) fn position(&self) -> Position {
        let open = self.current.as_ref();
        let tags = self
            .segments
            .iter()
            .chain(open)
            .filter(|s| s.start.discontinuity)
            .count() as u64;
        Position {
            next_msn: self.next_msn + u64::from(open.is_some()),
            last_cc: self.discontinuity_sequence + tags,
        }
    }

    /// Continues the numbering of a stream another node served (before
    /// the first part only): segments are numbered from `at.next_msn` and
    /// the first one starts a discontinuity. `false` if parts were added.
    pub(crate) fn continue_from(&mut self, at: Position) -> bool {
        if self.current.is_some() || !self.segments.is_empty() {
            return false;
        }
        self.next_msn = at.next_msn;
        self.discontinuity_sequence = at.last_cc;
        self.continued = true;
        true
    }

    pub(crate) fn low_latency(&self) -> bool {
        self.settings.part_ms.is_some()
    }

    pub(crate) fn target_duration_ms(&self) -> u64 {
        self.target_duration * 1000
    }

    /// Adds a finished part; `start` is `Some` for the first part of a
    /// segment (ignored when a segment is already open). Returns its
    /// `(msn, part index)`.
    pub(crate) fn add_part(&mut self, part: Part, start: Option<SegmentStart>) -> (u64, u32) {
        let msn = self.next_msn;
        let continued = &mut self.continued;
        let current = self.current.get_or_insert_with(|| {
            let mut start = start.unwrap_or(SegmentStart {
                discontinuity: false,
                init: 0,
                program_date_time_ms: 0,
            });
            start.discontinuity |= std::mem::take(continued);
            Segment {
                msn,
                start,
                parts: Vec::new(),
            }
        });
        current.parts.push(part);
        (msn, current.parts.len() as u32 - 1)
    }

    /// Closes the open segment. Returns its msn and the msns that left the
    /// window (their media can go), or `None` when no segment was open.
    pub(crate) fn finish_segment(&mut self) -> Option<(u64, Vec<u64>)> {
        let seg = self.current.take()?;
        let msn = seg.msn;
        // Every listed EXTINF must round to at most the target duration.
        let rounded = (seg.duration_ms() + 500) / 1000;
        self.target_duration = self.target_duration.max(rounded);
        self.segments.push_back(seg);
        self.next_msn += 1;
        let mut removed = Vec::new();
        while self.segments.len() > self.settings.window {
            let old = self.segments.pop_front().expect("longer than the window");
            if old.start.discontinuity {
                // The tag leaves with its segment; the sequence keeps the count.
                self.discontinuity_sequence += 1;
            }
            removed.push(old.msn);
        }
        Some((msn, removed))
    }

    /// The stream is over: the open segment is closed and the playlist ends.
    pub(crate) fn end(&mut self) -> Vec<u64> {
        let removed = self.finish_segment().map(|(_, r)| r).unwrap_or_default();
        self.ended = true;
        removed
    }

    /// The oldest msn still listed.
    pub(crate) fn first_msn(&self) -> u64 {
        self.segments.front().map_or(self.next_msn, |s| s.msn)
    }

    /// A complete segment's duration.
    pub(crate) fn segment_duration_ms(&self, msn: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.msn == msn)
            .map(Segment::duration_ms)
    }

    /// Whether `msn` is a complete segment still listed.
    pub(crate) fn has_segment(&self, msn: u64) -> bool {
        self.segments.iter().any(|s| s.msn == msn)
    }

    /// The init sections the listed segments (and the open one) use.
    pub(crate) fn inits_in_use(&self) -> impl Iterator<Item = u32> + '_ {
        self.segments
            .iter()
            .chain(self.current.as_ref())
            .map(|s| s.start.init)
    }

    /// The part a player will ask for next (the preload hint).
    pub(crate) fn next_part(&self) -> (u64, u32) {
        match &self.current {
            Some(c) => (c.msn, c.parts.len() as u32),
            None => (self.next_msn, 0),
        }
    }

    /// The last part produced, if any.
    fn last_part(&self) -> Option<(u64, u32)> {
        match &self.current {
            Some(c) if !c.parts.is_empty() => Some((c.msn, c.parts.len() as u32 - 1)),
            _ => self
                .segments
                .back()
                .map(|s| (s.msn, s.parts.len().saturating_sub(1) as u32)),
        }
    }

    /// The spec's blocking reload: hold until the playlist holds segment
    /// `msn` (complete) or, with `part`, part `part` of segment `msn` or
    /// any later part.
    pub(crate) fn reload(&self, msn: u64, part: Option<u32>) -> Reload {
        if self.ended {
            return Reload::Ready;
        }
        // The last segment the playlist shows (the open one counts).
        let last_msn = self.next_msn;
        if msn > last_msn + 2 {
            return Reload::TooFar("_HLS_msn is more than two segments past the playlist's last");
        }
        match part {
            None => {
                if msn < self.next_msn {
                    Reload::Ready
                } else {
                    Reload::Wait
                }
            }
            Some(p) => {
                let (next_msn, next_part) = self.next_part();
                if (msn == next_msn && p >= next_part + ADVANCE_PART_LIMIT)
                    || (msn > next_msn && p >= ADVANCE_PART_LIMIT)
                {
                    return Reload::TooFar("_HLS_part is too far past the playlist's last part");
                }
                match self.last_part() {
                    Some(last) if (msn, p) <= last => Reload::Ready,
                    // A complete segment with fewer parts: its successor's first part is "later".
                    _ => Reload::Wait,
                }
            }
        }
    }

    /// Whether a part request may wait for `(msn, part)`: it is the hinted
    /// next part (or the one after it in the same segment).
    pub(crate) fn may_wait_for_part(&self, msn: u64, part: u32) -> bool {
        if self.ended || !self.low_latency() {
            return false;
        }
        let (next_msn, next_part) = self.next_part();
        msn == next_msn && part >= next_part && part < next_part + ADVANCE_PART_LIMIT
    }

    fn part_target_s(&self) -> Option<f64> {
        self.settings.part_ms.map(|p| f64::from(p) / 1000.0)
    }

    /// CAN-SKIP-UNTIL, seconds: six target durations, as the spec advises.
    fn skip_until_s(&self) -> u64 {
        6 * self.target_duration
    }

    /// The playlist; `skip` asks for a delta update (`_HLS_skip=YES|v2`),
    /// honoured for LL-HLS playlists only.
    pub(crate) fn render(&self, skip: bool) -> String {
        let ll = self.low_latency();
        let mut s = String::with_capacity(512 + 160 * self.segments.len());
        // Count the segments a delta update leaves out: those wholly older
        // than the skip boundary, measured from the playlist's end.
        let mut skipped = 0usize;
        if skip && ll && !self.ended {
            let total: u64 = self
                .segments
                .iter()
                .chain(self.current.as_ref())
                .map(Segment::duration_ms)
                .sum();
            let boundary = total.saturating_sub(self.skip_until_s() * 1000);
            let mut end = 0;
            for seg in &self.segments {
                end += seg.duration_ms();
                if end > boundary {
                    break;
                }
                skipped += 1;
            }
        }
        let version = if skipped > 0 { 9 } else { 6 };
        s.push_str("#EXTM3U\n");
        let _ = writeln!(s, "#EXT-X-VERSION:{version}");
        let _ = writeln!(s, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        if let Some(pt) = self.part_target_s() {
            let _ = writeln!(
                s,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3},HOLD-BACK={:.1}",
                self.skip_until_s() as f64,
                3.0 * pt,
                3.0 * self.target_duration as f64
            );
            let _ = writeln!(s, "#EXT-X-PART-INF:PART-TARGET={pt:.3}");
        }
        let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{}", self.first_msn());
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                s,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        if skipped > 0 {
            let _ = writeln!(s, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        // Parts are listed for the last three target durations (the spec's advice).
        let total_ms: u64 = self
            .segments
            .iter()
            .chain(self.current.as_ref())
            .map(Segment::duration_ms)
            .sum();
        let parts_from_ms = total_ms.saturating_sub(3 * self.target_duration_ms());
        let mut at_ms = 0;
        let mut map: Option<u32> = None;
        for (i, seg) in self.segments.iter().enumerate() {
            at_ms += seg.duration_ms();
            if i < skipped {
                continue;
            }
            let with_parts = ll && at_ms > parts_from_ms;
            self.render_segment_head(&mut s, seg, &mut map);
            if with_parts {
                render_parts(&mut s, seg);
            }
            let _ = writeln!(s, "#EXTINF:{:.3},", seg.duration_ms() as f64 / 1000.0);
            let _ = writeln!(s, "seg{}.m4s", seg.msn);
        }
        if ll && !self.ended {
            if let Some(c) = self.current.as_ref().filter(|c| !c.parts.is_empty()) {
                self.render_segment_head(&mut s, c, &mut map);
                render_parts(&mut s, c);
            }
            let (msn, part) = self.next_part();
            let _ = writeln!(
                s,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{msn}.{part}.m4s\""
            );
        }
        if self.ended {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        s
    }

    fn render_segment_head(&self, s: &mut String, seg: &Segment, map: &mut Option<u32>) {
        if seg.start.discontinuity {
            s.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if *map != Some(seg.start.init) {
            let _ = writeln!(s, "#EXT-X-MAP:URI=\"init{}.mp4\"", seg.start.init);
            *map = Some(seg.start.init);
        }
        let _ = writeln!(
            s,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            super::playlist::iso8601(seg.start.program_date_time_ms)
        );
    }
}

fn render_parts(s: &mut String, seg: &Segment) {
    for (i, p) in seg.parts.iter().enumerate() {
        let _ = write!(
            s,
            "#EXT-X-PART:DURATION={:.3},URI=\"part{}.{i}.m4s\"",
            p.duration_ms as f64 / 1000.0,
            seg.msn
        );
        s.push_str(if p.independent {
            ",INDEPENDENT=YES\n"
        } else {
            "\n"
        });
    }
}

/// What a request under `/hls/<stream>/` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Object {
    Playlist,
    Master,
    Init(u32),
    Segment(u64),
    Part(u64, u32),
    /// An MPEG-TS segment of a plain HLS output.
    TsSegment(u64),
}

impl Object {
    /// Parses a file name; anything the writers never produce is `None`.
    pub(crate) fn parse(file: &str) -> Option<Object> {
        fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
            if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        match file {
            "index.m3u8" => return Some(Object::Playlist),
            "master.m3u8" => return Some(Object::Master),
            _ => {}
        }
        if let Some(n) = file
            .strip_prefix("init")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            return number(n).map(Object::Init);
        }
        if let Some(n) = file.strip_prefix("seg") {
            if let Some(n) = n.strip_suffix(".m4s") {
                return number(n).map(Object::Segment);
            }
            return n
                .strip_suffix(".ts")
                .and_then(number)
                .map(Object::TsSegment);
        }
        let (msn, part) = file
            .strip_prefix("part")?
            .strip_suffix(".m4s")?
            .split_once('.')?;
        Some(Object::Part(number(msn)?, number(part)?))
    }
}

/// The query of a playlist request (the spec's delivery directives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u32>,
    pub skip: bool,
}

impl Directives {
    /// Parses `_HLS_msn`, `_HLS_part` and `_HLS_skip`; other parameters
    /// (cache busters) are ignored. A malformed directive is an error.
    pub(crate) fn parse(query: Option<&str>) -> Result<Directives, &'static str> {
        let mut d = Directives::default();
        let Some(q) = query else { return Ok(d) };
        let mut seen = [false; 3];
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let slot = match &*k {
                "_HLS_msn" => 0,
                "_HLS_part" => 1,
                "_HLS_skip" => 2,
                _ => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err("a delivery directive is repeated");
            }
            let numeric =
                |v: &str| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
            match slot {
                0 if numeric(&v) => d.msn = v.parse().ok(),
                1 if numeric(&v) && v.len() <= 9 => d.part = v.parse().ok(),
                2 if v == "YES" || v == "v2" => d.skip = true,
                0 => return Err("_HLS_msn must be a non-negative integer"),
                1 => return Err("_HLS_part must be a non-negative integer"),
                _ => return Err("_HLS_skip must be YES or v2"),
            }
            if slot < 2 && d.msn.is_none() && d.part.is_none() {
                return Err("a delivery directive is out of range");
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            return Err("_HLS_part needs _HLS_msn");
        }
        Ok(d)
    }
}

#[cfg(test)]
#[path = "live_tests.rs"]
pub(crate) mod tests;
