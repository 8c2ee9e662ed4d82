//! A strict checker for Low-Latency HLS media playlists, after
//! draft-pantos-hls-rfc8216bis (the second edition of RFC 8216).
//!
//! `parse` reads a media playlist and refuses what its structure cannot
//! hold: a first line other than `#EXTM3U`, malformed values, a media
//! playlist tag twice or after the first segment, `EXT-X-SKIP` anywhere but
//! before every segment, segment tags (`EXT-X-DISCONTINUITY`, `EXT-X-MAP`,
//! `EXT-X-PROGRAM-DATE-TIME`, `EXT-X-KEY`) after the first `EXT-X-PART` of
//! their segment, two preload hints of one TYPE. `validate` then checks the
//! numbers (durations, hold-backs, versions, dates, hints) and
//! `validate_successor` a reload against the one before it. Both list every
//! violation, one a line; `advisories` lists the spec's SHOULDs that a
//! playlist misses, which are not errors.
//!
//! Where the spec says SHOULD, `validate` stays silent; the few rules the
//! spec does not state but this gateway relies on (an `EXT-X-MAP` ahead of
//! partial segments, `CAN-BLOCK-RELOAD=YES` with parts, one preload hint a
//! TYPE) say so in their message.
#![allow(dead_code)]

use std::collections::HashMap;

/// Slack for durations the playlist prints rounded (seconds).
const ROUNDING: f64 = 0.001;
/// Slack for a duration a reload must repeat unchanged (float noise only).
const SAME: f64 = 1e-5;

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
    /// `GAP=YES`: the part is not available.
    pub gap: bool,
    /// `BYTERANGE` as (length, offset), the offset resolved against the
    /// previous part of the same parent when the tag leaves it out.
    pub byterange: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub msn: u64,
    pub uri: String,
    pub duration: f64,
    pub discontinuity: bool,
    /// The `EXT-X-MAP` in effect for this segment (the last one above it),
    /// unknown after an `EXT-X-SKIP` unless the playlist repeats it.
    pub map_uri: Option<String>,
    /// The segment's own `EXT-X-PROGRAM-DATE-TIME`, as written.
    pub program_date_time: Option<String>,
    /// Its partial segments still listed (the oldest may have lost leading
    /// ones: parts leave the playlist in order).
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `EXT-X-VERSION`; 0 when the tag is missing.
    pub version: u32,
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub part_target: Option<f64>,
    /// `EXT-X-SERVER-CONTROL` attributes, quotes removed.
    pub server_control: HashMap<String, String>,
    pub skipped_segments: u64,
    pub segments: Vec<Segment>,
    /// Parts of the segment in progress, after the last complete one.
    pub trailing_parts: Vec<Part>,
    /// The `EXT-X-PRELOAD-HINT` as (TYPE, URI): the PART hint when there is
    /// one, else the MAP hint.
    pub preload_hint: Option<(String, String)>,
    /// The PART hint's `BYTERANGE-START` (absent means 0).
    pub preload_hint_byterange_start: Option<u64>,
    /// The `EXT-X-MAP` in effect after the last complete segment (for the
    /// trailing parts and the hint).
    pub trailing_map_uri: Option<String>,
    /// An `EXT-X-DISCONTINUITY` ahead of the trailing parts.
    pub trailing_discontinuity: bool,
    pub ended: bool,
}

impl MediaPlaylist {
    /// Media Sequence Number of the first segment listed (after skipped ones).
    pub fn first_listed_msn(&self) -> u64 {
        self.media_sequence + self.skipped_segments
    }

    /// Media Sequence Number of the segment after the last complete one: the
    /// parent of the trailing parts and of a PART hint.
    pub fn next_msn(&self) -> u64 {
        self.first_listed_msn() + self.segments.len() as u64
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let i = msn.checked_sub(self.first_listed_msn())?;
        self.segments.get(usize::try_from(i).ok()?)
    }

    pub fn has_parts(&self) -> bool {
        !self.trailing_parts.is_empty() || self.segments.iter().any(|s| !s.parts.is_empty())
    }

    fn all_parts(&self) -> impl Iterator<Item = &Part> {
        self.segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(self.trailing_parts.iter())
    }

    /// Seconds of complete segments listed (skipped ones not counted).
    pub fn listed_duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    fn server_control_f64(&self, key: &str) -> Option<Result<f64, String>> {
        self.server_control.get(key).map(|v| {
            dec_float(v).ok_or_else(|| {
                format!("EXT-X-SERVER-CONTROL: {key}={v} is not a decimal-floating-point number")
            })
        })
    }
}

// ---------------------------------------------------------------- parsing

#[derive(Default)]
struct Pending {
    extinf: Option<f64>,
    discontinuity: bool,
    pdt: Option<String>,
    parts: Vec<Part>,
}

/// Reads a media playlist. `Err` lists every structural problem, one a line
/// (`line N: ...`).
pub fn parse(text: &str) -> Result<MediaPlaylist, String> {
    let mut errors: Vec<String> = Vec::new();
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        _ => errors.push("line 1: a playlist must start with #EXTM3U".into()),
    }

    let mut version: Option<u32> = None;
    let mut target: Option<u64> = None;
    let mut media_sequence: Option<u64> = None;
    let mut discontinuity_sequence: Option<u64> = None;
    let mut part_target: Option<f64> = None;
    let mut server_control: Option<HashMap<String, String>> = None;
    let mut skipped: Option<u64> = None;
    let mut skip_dateranges_line: Option<usize> = None;
    let mut ended = false;
    let mut seen_media = false; // a segment, part or segment tag so far
    let mut seen_discontinuity = false;
    let mut map: Option<String> = None;
    let mut hints: HashMap<String, (String, Option<u64>)> = HashMap::new();
    let mut once: HashMap<&'static str, usize> = HashMap::new();
    let mut pending = Pending::default();
    let mut segments: Vec<Segment> = Vec::new();

    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            // A URI line closes the segment.
            let Some(duration) = pending.extinf.take() else {
                errors.push(format!("line {n}: URI {line} without an EXTINF before it"));
                continue;
            };
            let p = std::mem::take(&mut pending);
            segments.push(Segment {
                msn: 0,
                uri: line.trim().to_string(),
                duration,
                discontinuity: p.discontinuity,
                map_uri: map.clone(),
                program_date_time: p.pdt,
                parts: p.parts,
            });
            continue;
        }
        if !line.starts_with("#EXT") {
            continue; // a comment
        }
        let (name, value) = match line.find(':') {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        let mut err = |m: String| errors.push(format!("line {n}: {m}"));

        const SINGLE: [&str; 10] = [
            "#EXT-X-VERSION",
            "#EXT-X-TARGETDURATION",
            "#EXT-X-MEDIA-SEQUENCE",
            "#EXT-X-DISCONTINUITY-SEQUENCE",
            "#EXT-X-ENDLIST",
            "#EXT-X-PLAYLIST-TYPE",
            "#EXT-X-I-FRAMES-ONLY",
            "#EXT-X-PART-INF",
            "#EXT-X-SERVER-CONTROL",
            "#EXT-X-SKIP",
        ];
        if let Some(tag) = SINGLE.iter().find(|t| **t == name)
            && let Some(first) = once.insert(tag, n)
        {
            err(format!(
                "{name} appears twice (first on line {first}); it MUST NOT appear more than once"
            ));
            continue;
        }
        // Tags that apply to a segment must precede its first part (between
        // its EXTINF and URI is fine: ffmpeg writes EXT-X-PROGRAM-DATE-TIME there).
        let before_parts = |what: &str, pending: &Pending| -> Option<String> {
            if !pending.parts.is_empty() {
                Some(format!(
                    "{what} after the first EXT-X-PART of its segment; it MUST appear before it"
                ))
            } else {
                None
            }
        };

        match name {
            "#EXTM3U" => err("#EXTM3U again".into()),
            "#EXT-X-VERSION" => match value.and_then(dec_int) {
                Some(v) if v >= 1 && v <= u32::MAX as u64 => version = Some(v as u32),
                _ => err(format!(
                    "EXT-X-VERSION needs a positive decimal-integer, not {value:?}"
                )),
            },
            "#EXT-X-TARGETDURATION" => {
                if seen_media {
                    err("EXT-X-TARGETDURATION after the first segment".into());
                }
                match value.and_then(dec_int) {
                    Some(v) => target = Some(v),
                    None => err(format!(
                        "EXT-X-TARGETDURATION needs a decimal-integer, not {value:?}"
                    )),
                }
            }
            "#EXT-X-MEDIA-SEQUENCE" => {
                if seen_media {
                    err("EXT-X-MEDIA-SEQUENCE MUST appear before the first Media Segment".into());
                }
                match value.and_then(dec_int) {
                    Some(v) => media_sequence = Some(v),
                    None => err(format!(
                        "EXT-X-MEDIA-SEQUENCE needs a decimal-integer, not {value:?}"
                    )),
                }
            }
            "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                if seen_media || seen_discontinuity {
                    err("EXT-X-DISCONTINUITY-SEQUENCE MUST appear before the first Media Segment and any EXT-X-DISCONTINUITY".into());
                }
                match value.and_then(dec_int) {
                    Some(v) => discontinuity_sequence = Some(v),
                    None => err(format!(
                        "EXT-X-DISCONTINUITY-SEQUENCE needs a decimal-integer, not {value:?}"
                    )),
                }
            }
            "#EXT-X-PART-INF" => match attributes(value.unwrap_or("")) {
                Ok(a) => match a.get("PART-TARGET") {
                    Some((v, false)) => match dec_float(v) {
                        Some(t) if t > 0.0 => part_target = Some(t),
                        _ => err(format!(
                            "EXT-X-PART-INF: PART-TARGET={v} is not a positive decimal-floating-point number"
                        )),
                    },
                    Some(_) => err("EXT-X-PART-INF: PART-TARGET must not be quoted".into()),
                    None => err("EXT-X-PART-INF without its REQUIRED PART-TARGET".into()),
                },
                Err(e) => err(format!("EXT-X-PART-INF: {e}")),
            },
            "#EXT-X-SERVER-CONTROL" => match attributes(value.unwrap_or("")) {
                Ok(a) => server_control = Some(a.into_iter().map(|(k, (v, _))| (k, v)).collect()),
                Err(e) => err(format!("EXT-X-SERVER-CONTROL: {e}")),
            },
            "#EXT-X-ENDLIST" => ended = true,
            "#EXT-X-PLAYLIST-TYPE"
            | "#EXT-X-I-FRAMES-ONLY"
            | "#EXT-X-INDEPENDENT-SEGMENTS"
            | "#EXT-X-START"
            | "#EXT-X-DEFINE" => {}
            "#EXT-X-SKIP" => {
                if seen_media {
                    err("EXT-X-SKIP must come before every segment and segment tag (it replaces the first ones)".into());
                }
                seen_media = true;
                match attributes(value.unwrap_or("")) {
                    Ok(a) => {
                        match a
                            .get("SKIPPED-SEGMENTS")
                            .and_then(|(v, q)| if *q { None } else { dec_int(v) })
                        {
                            Some(k) => skipped = Some(k),
                            None => err(
                                "EXT-X-SKIP without a decimal-integer SKIPPED-SEGMENTS (REQUIRED)"
                                    .into(),
                            ),
                        }
                        if a.contains_key("RECENTLY-REMOVED-DATERANGES") {
                            skip_dateranges_line = Some(n);
                        }
                    }
                    Err(e) => err(format!("EXT-X-SKIP: {e}")),
                }
            }
            "#EXTINF" => {
                seen_media = true;
                if pending.extinf.is_some() {
                    err("a second EXTINF before the segment's URI".into());
                }
                let v = value.unwrap_or("");
                let Some((d, _title)) = v.split_once(',') else {
                    err(format!("EXTINF:{v} needs a comma after the duration"));
                    continue;
                };
                match dec_float(d) {
                    Some(d) => pending.extinf = Some(d),
                    None => err(format!(
                        "EXTINF duration {d:?} is not a decimal-floating-point number"
                    )),
                }
            }
            "#EXT-X-PART" => {
                seen_media = true;
                if pending.extinf.is_some() {
                    err("EXT-X-PART between an EXTINF and its URI".into());
                }
                match part(value.unwrap_or(""), pending.parts.last()) {
                    Ok(p) => pending.parts.push(p),
                    Err(e) => err(format!("EXT-X-PART: {e}")),
                }
            }
            "#EXT-X-DISCONTINUITY" => {
                seen_media = true;
                seen_discontinuity = true;
                if let Some(m) = before_parts("EXT-X-DISCONTINUITY", &pending) {
                    err(m);
                }
                pending.discontinuity = true;
            }
            "#EXT-X-PROGRAM-DATE-TIME" => {
                seen_media = true;
                if let Some(m) = before_parts("EXT-X-PROGRAM-DATE-TIME", &pending) {
                    err(m);
                }
                pending.pdt = Some(value.unwrap_or("").trim().to_string());
            }
            "#EXT-X-MAP" => {
                seen_media = true;
                if let Some(m) = before_parts("EXT-X-MAP", &pending) {
                    err(m);
                }
                match attributes(value.unwrap_or("")) {
                    Ok(a) => match a.get("URI") {
                        Some((u, true)) if !u.is_empty() => map = Some(u.clone()),
                        _ => err("EXT-X-MAP needs a quoted URI (REQUIRED)".into()),
                    },
                    Err(e) => err(format!("EXT-X-MAP: {e}")),
                }
            }
            "#EXT-X-KEY" => {
                seen_media = true;
                if let Some(m) = before_parts("EXT-X-KEY", &pending) {
                    err(m);
                }
            }
            "#EXT-X-PRELOAD-HINT" => match attributes(value.unwrap_or("")) {
                Ok(a) => {
                    let ty = match a.get("TYPE") {
                        Some((t, false)) => t.clone(),
                        _ => {
                            err("EXT-X-PRELOAD-HINT without an enumerated TYPE (REQUIRED)".into());
                            continue;
                        }
                    };
                    let uri = match a.get("URI") {
                        Some((u, true)) if !u.is_empty() => u.clone(),
                        _ => {
                            err(format!(
                                "EXT-X-PRELOAD-HINT TYPE={ty} without a quoted URI (REQUIRED)"
                            ));
                            continue;
                        }
                    };
                    let start = match a.get("BYTERANGE-START") {
                        None => None,
                        Some((v, _)) => match dec_int(v) {
                            Some(s) => Some(s),
                            None => {
                                err(format!(
                                    "EXT-X-PRELOAD-HINT: BYTERANGE-START={v} is not a decimal-integer"
                                ));
                                None
                            }
                        },
                    };
                    if ty != "PART" && ty != "MAP" {
                        continue; // clients MUST ignore unknown TYPEs
                    }
                    if hints.insert(ty.clone(), (uri, start)).is_some() {
                        err(format!(
                            "a second EXT-X-PRELOAD-HINT of TYPE={ty} (the spec: SHOULD NOT; this checker allows one a TYPE)"
                        ));
                    }
                }
                Err(e) => err(format!("EXT-X-PRELOAD-HINT: {e}")),
            },
            "#EXT-X-STREAM-INF"
            | "#EXT-X-MEDIA"
            | "#EXT-X-I-FRAME-STREAM-INF"
            | "#EXT-X-SESSION-DATA"
            | "#EXT-X-SESSION-KEY"
            | "#EXT-X-CONTENT-STEERING" => err(format!(
                "{name} belongs to a multivariant playlist, not a media playlist"
            )),
            _ => {} // EXT-X-RENDITION-REPORT, EXT-X-DATERANGE, EXT-X-GAP, ...: not checked
        }
    }
    if pending.extinf.is_some() {
        errors.push("the last EXTINF has no URI line after it".into());
    }
    if target.is_none() {
        errors.push("EXT-X-TARGETDURATION is REQUIRED".into());
    }
    if let (Some(n), v) = (skip_dateranges_line, version.unwrap_or(0))
        && v < 10
    {
        errors.push(format!(
            "line {n}: an EXT-X-SKIP that replaces EXT-X-DATERANGE tags needs EXT-X-VERSION 10 or higher, not {v}"
        ));
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }

    let media_sequence = media_sequence.unwrap_or(0);
    let skipped_segments = skipped.unwrap_or(0);
    for (i, s) in segments.iter_mut().enumerate() {
        s.msn = media_sequence + skipped_segments + i as u64;
    }
    let (preload_hint, preload_hint_byterange_start) =
        match (hints.remove("PART"), hints.remove("MAP")) {
            (Some((u, s)), _) => (Some(("PART".to_string(), u)), s),
            (None, Some((u, _))) => (Some(("MAP".to_string(), u)), None),
            (None, None) => (None, None),
        };
    Ok(MediaPlaylist {
        version: version.unwrap_or(0),
        target_duration: target.unwrap_or(0),
        media_sequence,
        discontinuity_sequence: discontinuity_sequence.unwrap_or(0),
        part_target,
        server_control: server_control.unwrap_or_default(),
        skipped_segments,
        segments,
        trailing_discontinuity: pending.discontinuity,
        trailing_parts: pending.parts,
        preload_hint,
        preload_hint_byterange_start,
        trailing_map_uri: map,
        ended,
    })
}

fn part(value: &str, previous: Option<&Part>) -> Result<Part, String> {
    let a = attributes(value)?;
    let uri = match a.get("URI") {
        Some((u, true)) if !u.is_empty() => u.clone(),
        _ => return Err("needs a quoted URI (REQUIRED)".into()),
    };
    let duration = match a.get("DURATION") {
        Some((d, false)) => dec_float(d)
            .ok_or_else(|| format!("DURATION={d} is not a decimal-floating-point number"))?,
        _ => return Err(format!("{uri}: needs a DURATION (REQUIRED)")),
    };
    let yes = |k: &str| -> Result<bool, String> {
        match a.get(k) {
            None => Ok(false),
            Some((v, false)) if v == "YES" => Ok(true),
            Some((v, _)) => Err(format!("{uri}: {k}={v}; the only value is YES")),
        }
    };
    let byterange = match a.get("BYTERANGE") {
        None => None,
        Some((r, true)) => {
            let (len, off) = match r.split_once('@') {
                Some((l, o)) => (dec_int(l), Some(dec_int(o))),
                None => (dec_int(r), None),
            };
            let len = len.ok_or_else(|| format!("{uri}: BYTERANGE=\"{r}\" is not <n>[@<o>]"))?;
            let off = match off {
                Some(o) => o.ok_or_else(|| format!("{uri}: BYTERANGE=\"{r}\" is not <n>[@<o>]"))?,
                None => match previous {
                    Some(Part {
                        uri: pu,
                        byterange: Some((pl, po)),
                        ..
                    }) if *pu == uri => po + pl,
                    _ => {
                        return Err(format!(
                            "{uri}: BYTERANGE=\"{r}\" leaves out the offset, but no earlier part of this parent has a range of the same URI"
                        ));
                    }
                },
            };
            Some((len, off))
        }
        Some(_) => return Err(format!("{uri}: BYTERANGE must be a quoted-string")),
    };
    Ok(Part {
        independent: yes("INDEPENDENT")?,
        gap: yes("GAP")?,
        uri,
        duration,
        byterange,
    })
}

/// `NAME=value` pairs; values as (text without quotes, was quoted).
fn attributes(s: &str) -> Result<HashMap<String, (String, bool)>, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("attribute without '=' in {s:?}"))?;
        let name = rest[..eq].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("bad attribute name {name:?} in {s:?}"));
        }
        rest = &rest[eq + 1..];
        let (value, quoted) = if let Some(r) = rest.strip_prefix('"') {
            let end = r
                .find('"')
                .ok_or_else(|| format!("unterminated quoted-string in {s:?}"))?;
            let v = &r[..end];
            rest = &r[end + 1..];
            (v.to_string(), true)
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let v = rest[..end].trim();
            rest = &rest[end..];
            (v.to_string(), false)
        };
        if out.insert(name.to_string(), (value, quoted)).is_some() {
            return Err(format!("attribute {name} twice in {s:?}"));
        }
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected ',' before {rest:?} in {s:?}"));
        }
    }
    Ok(out)
}

fn dec_int(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A decimal-floating-point: digits with at most one '.', no sign or exponent.
fn dec_float(s: &str) -> Option<f64> {
    let s = s.trim();
    let digits = s.bytes().filter(|b| b.is_ascii_digit()).count();
    let dots = s.bytes().filter(|b| *b == b'.').count();
    if digits == 0 || dots > 1 || digits + dots != s.len() {
        return None;
    }
    s.parse().ok()
}

/// An ISO 8601 / RFC 3339 date-time (`2019-02-14T02:13:36.106Z`,
/// `...+08:00`, `...+0800`) as seconds since 1970 (UTC). A time without a
/// zone is read as UTC.
pub fn iso8601_seconds(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let t = s.get(from..from + len)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo)
        || !(1..=days_in_month(y, mo)).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac = 0.0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        frac = format!("0.{}", &s[start..i]).parse().ok()?;
    }
    let offset = match &s[i..] {
        "" | "Z" | "z" => 0,
        z => {
            let sign = match z.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z = &z[1..];
            if !z.bytes().all(|c| c.is_ascii_digit() || c == b':') {
                return None;
            }
            let (oh, om): (i64, i64) = match z.len() {
                2 => (z.parse().ok()?, 0),
                4 => (z[..2].parse().ok()?, z[2..].parse().ok()?),
                5 if &z[2..3] == ":" => (z[..2].parse().ok()?, z[3..].parse().ok()?),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

// ------------------------------------------------------------- validation

fn fmt_s(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Checks every numeric rule; Err lists each violation, one per line.
pub fn validate(p: &MediaPlaylist) -> Result<(), String> {
    let mut v: Vec<String> = Vec::new();
    let td = p.target_duration as f64;
    let has_parts = p.has_parts();

    // EXT-X-VERSION (Section 8).
    if p.version == 0 {
        v.push(
            "EXT-X-VERSION is missing (a playlist with tags beyond version 1 MUST carry it)".into(),
        );
    }
    let mut need: Vec<(u32, &str)> = Vec::new();
    if p.segments.iter().any(|s| s.duration.fract() != 0.0) {
        need.push((3, "floating-point EXTINF durations"));
    }
    if p.segments.iter().any(|s| s.map_uri.is_some()) || p.trailing_map_uri.is_some() {
        need.push((6, "EXT-X-MAP"));
    }
    if p.skipped_segments > 0 {
        need.push((9, "EXT-X-SKIP"));
    }
    for (min, what) in need {
        if p.version != 0 && p.version < min {
            v.push(format!(
                "EXT-X-VERSION:{} but {what} needs version {min} or higher",
                p.version
            ));
        }
    }

    // Media sequence numbering.
    for (i, s) in p.segments.iter().enumerate() {
        let want = p.first_listed_msn() + i as u64;
        if s.msn != want {
            v.push(format!("segment {} ({}) is numbered {} but is number {want} (media sequence + skipped + index)", i, s.uri, s.msn));
        }
    }

    // EXT-X-TARGETDURATION.
    if p.target_duration == 0 {
        v.push("EXT-X-TARGETDURATION is missing or 0".into());
    }
    for s in &p.segments {
        if s.duration.round() > td {
            v.push(format!(
                "EXT-X-TARGETDURATION:{} but segment {} ({}) has EXTINF {} (rounds to {})",
                p.target_duration,
                s.msn,
                s.uri,
                fmt_s(s.duration),
                s.duration.round()
            ));
        }
    }

    // EXT-X-PART-INF and the parts' durations.
    if has_parts && p.part_target.is_none() {
        v.push("EXT-X-PART-INF is REQUIRED when the playlist has EXT-X-PART tags".into());
    }
    if let Some(pt) = p.part_target {
        // The last part of a list is exempt from the 85 % floor: it is its
        // segment's final part, or (trailing) may yet turn out to be.
        let mut check_list = |parts: &[Part], whose: String| {
            for (j, part) in parts.iter().enumerate() {
                if part.duration > pt + ROUNDING {
                    v.push(format!(
                        "part {} of {whose} lasts {} s, more than PART-TARGET {}",
                        part.uri,
                        fmt_s(part.duration),
                        fmt_s(pt)
                    ));
                }
                let last = j + 1 == parts.len();
                let before_gap = parts.get(j + 1).is_some_and(|n| n.gap);
                let exempt = part.independent || part.gap || before_gap || last;
                if !exempt && part.duration < 0.85 * pt - ROUNDING {
                    v.push(format!(
                        "part {} of {whose} lasts {} s, less than 85% of PART-TARGET {} ({} s); only the final part of a segment, INDEPENDENT=YES or GAP=YES parts and parts before a GAP may be shorter",
                        part.uri,
                        fmt_s(part.duration),
                        fmt_s(pt),
                        fmt_s(0.85 * pt)
                    ));
                }
            }
        };
        for s in &p.segments {
            check_list(&s.parts, format!("segment {}", s.msn));
        }
        check_list(
            &p.trailing_parts,
            format!("segment {} (in progress)", p.next_msn()),
        );
    }

    // A segment and its parts hold the same media: the durations add up.
    let first_with_parts = p.segments.iter().position(|s| !s.parts.is_empty());
    for (i, s) in p.segments.iter().enumerate() {
        if s.parts.is_empty() {
            if let Some(f) = first_with_parts
                && i > f
            {
                v.push(format!(
                    "segment {} lists no parts but the older segment {} does: EXT-X-PART tags MUST be removed in playlist order",
                    s.msn, p.segments[f].msn
                ));
            }
            continue;
        }
        let sum: f64 = s.parts.iter().map(|x| x.duration).sum();
        let tol = 0.0005 * (s.parts.len() + 1) as f64 + ROUNDING;
        let oldest = Some(i) == first_with_parts;
        if (sum - s.duration).abs() > tol && !(oldest && sum < s.duration) {
            v.push(format!(
                "segment {} ({}) has EXTINF {} but its parts add up to {} s",
                s.msn,
                s.uri,
                fmt_s(s.duration),
                fmt_s(sum)
            ));
        }
    }

    // EXT-X-SERVER-CONTROL.
    let number = |key: &str, v: &mut Vec<String>| -> Option<f64> {
        match p.server_control_f64(key)? {
            Ok(x) => Some(x),
            Err(e) => {
                v.push(e);
                None
            }
        }
    };
    let hold_back = number("HOLD-BACK", &mut v);
    let part_hold_back = number("PART-HOLD-BACK", &mut v);
    let can_skip_until = number("CAN-SKIP-UNTIL", &mut v);
    if let Some(hb) = hold_back
        && hb < 3.0 * td - 1e-9
    {
        v.push(format!(
            "EXT-X-SERVER-CONTROL: HOLD-BACK={} is less than three target durations ({})",
            fmt_s(hb),
            3 * p.target_duration
        ));
    }
    if let Some(pt) = p.part_target {
        match part_hold_back {
            None if !p.server_control.contains_key("PART-HOLD-BACK") => {
                v.push("EXT-X-SERVER-CONTROL: PART-HOLD-BACK is REQUIRED when the playlist has EXT-X-PART-INF".into())
            }
            None => {} // reported as malformed
            Some(phb) if phb < 2.0 * pt - 1e-9 => v.push(format!(
                "EXT-X-SERVER-CONTROL: PART-HOLD-BACK={} is less than twice PART-TARGET ({})",
                fmt_s(phb),
                fmt_s(2.0 * pt)
            )),
            Some(_) => {}
        }
    }
    if let Some(csu) = can_skip_until
        && csu < 6.0 * td - 1e-9
    {
        v.push(format!(
            "EXT-X-SERVER-CONTROL: CAN-SKIP-UNTIL={} is less than six target durations ({})",
            fmt_s(csu),
            6 * p.target_duration
        ));
    }
    for key in ["CAN-BLOCK-RELOAD", "CAN-SKIP-DATERANGES"] {
        if let Some(x) = p.server_control.get(key)
            && x != "YES"
        {
            v.push(format!(
                "EXT-X-SERVER-CONTROL: {key}={x}; the only value is YES"
            ));
        }
    }
    if p.server_control.contains_key("CAN-SKIP-DATERANGES") && can_skip_until.is_none() {
        v.push("EXT-X-SERVER-CONTROL: CAN-SKIP-DATERANGES requires CAN-SKIP-UNTIL".into());
    }
    if (has_parts || p.part_target.is_some())
        && p.server_control.get("CAN-BLOCK-RELOAD").map(String::as_str) != Some("YES")
    {
        v.push("EXT-X-SERVER-CONTROL: CAN-BLOCK-RELOAD=YES is missing, but a low-latency playlist with parts needs blocking reload (Appendix B.1)".into());
    }

    // EXT-X-SKIP: a Playlist Delta Update.
    if p.skipped_segments > 0 {
        match can_skip_until {
            None => v.push(format!(
                "EXT-X-SKIP:SKIPPED-SEGMENTS={} but EXT-X-SERVER-CONTROL has no CAN-SKIP-UNTIL",
                p.skipped_segments
            )),
            Some(csu) => {
                // Skipped segments start further than CAN-SKIP-UNTIL from the
                // end of the last segment: what stays spans at least that, less
                // at most one segment.
                let kept = p.listed_duration();
                if kept + td < csu - ROUNDING {
                    v.push(format!(
                        "EXT-X-SKIP skipped {} segments but only {} s of segments remain, nearer the end than CAN-SKIP-UNTIL={}",
                        p.skipped_segments,
                        fmt_s(kept),
                        fmt_s(csu)
                    ));
                }
            }
        }
        if p.ended {
            v.push("EXT-X-SKIP in a playlist with EXT-X-ENDLIST (the server MUST ignore _HLS_skip then)".into());
        }
    }

    // EXT-X-MAP ahead of the partial segments (the gateway's fMP4 parts).
    if p.skipped_segments == 0
        && (has_parts || matches!(&p.preload_hint, Some((t, _)) if t == "PART"))
    {
        let mapped = match p.segments.first() {
            Some(s) => s.map_uri.is_some(),
            None => p.trailing_map_uri.is_some(),
        };
        if !mapped {
            v.push("EXT-X-MAP is missing before the first segment/part (fMP4 partial segments need their initialization section)".into());
        }
    }

    // EXT-X-PRELOAD-HINT.
    if let Some((ty, uri)) = &p.preload_hint {
        if p.ended {
            v.push(format!(
                "EXT-X-PRELOAD-HINT ({uri}) in a playlist with EXT-X-ENDLIST"
            ));
        }
        if ty == "PART" {
            let start = p.preload_hint_byterange_start.unwrap_or(0);
            for part in p.all_parts() {
                let same = part.uri == *uri
                    && match part.byterange {
                        None => true,
                        Some((len, off)) => (off..off + len.max(1)).contains(&start),
                    };
                if same {
                    v.push(format!(
                        "EXT-X-PRELOAD-HINT hints {uri}, which is already listed as an EXT-X-PART"
                    ));
                    break;
                }
            }
            if p.segments.iter().any(|s| s.uri == *uri) {
                v.push(format!(
                    "EXT-X-PRELOAD-HINT hints {uri}, which is already listed as a segment"
                ));
            }
        }
    }

    // EXT-X-ENDLIST closes every segment.
    if p.ended && !p.trailing_parts.is_empty() {
        v.push(format!(
            "EXT-X-ENDLIST but {} parts after the last segment never get their parent segment",
            p.trailing_parts.len()
        ));
    }

    // EXT-X-PROGRAM-DATE-TIME.
    let mut last: Option<(usize, f64)> = None;
    for (i, s) in p.segments.iter().enumerate() {
        if s.discontinuity {
            last = None;
        }
        let Some(text) = &s.program_date_time else {
            continue;
        };
        let Some(t) = iso8601_seconds(text) else {
            v.push(format!(
                "EXT-X-PROGRAM-DATE-TIME:{text} (segment {}) is not an ISO 8601 date-time",
                s.msn
            ));
            last = None;
            continue;
        };
        if let Some((j, tj)) = last {
            let expected: f64 = p.segments[j..i].iter().map(|x| x.duration).sum();
            if ((t - tj) - expected).abs() > 1.0 {
                v.push(format!(
                    "EXT-X-PROGRAM-DATE-TIME of segment {} is {} s after segment {}'s, but the segments between last {} s (no discontinuity between them)",
                    s.msn,
                    fmt_s(t - tj),
                    p.segments[j].msn,
                    fmt_s(expected)
                ));
            }
        }
        last = Some((i, t));
    }

    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("\n"))
    }
}

/// The spec's SHOULDs this playlist misses: worth a look, not violations.
pub fn advisories(p: &MediaPlaylist) -> Vec<String> {
    let mut a = Vec::new();
    let td = p.target_duration as f64;
    if let (Some(pt), Some(Ok(phb))) = (p.part_target, p.server_control_f64("PART-HOLD-BACK"))
        && phb < 3.0 * pt - 1e-9
    {
        a.push(format!(
            "PART-HOLD-BACK={} SHOULD be at least three times PART-TARGET ({})",
            fmt_s(phb),
            fmt_s(3.0 * pt)
        ));
    }
    // Parts SHOULD leave once more than three target durations from the end.
    let trailing: f64 = p.trailing_parts.iter().map(|x| x.duration).sum();
    let mut after = trailing;
    for s in p.segments.iter().rev() {
        if !s.parts.is_empty() && after > 3.0 * td + ROUNDING {
            a.push(format!(
                "segment {} still lists its parts {} s from the end (SHOULD be removed after three target durations)",
                s.msn,
                fmt_s(after)
            ));
        }
        after += s.duration;
    }
    // A segment starts with an independent frame, so its first part SHOULD say so.
    let first_with_parts = p.segments.iter().position(|s| !s.parts.is_empty());
    for (i, s) in p.segments.iter().enumerate() {
        if Some(i) == first_with_parts {
            continue; // its leading parts may be gone
        }
        if let Some(first) = s.parts.first()
            && !first.independent
        {
            a.push(format!(
                "segment {}'s first part {} has no INDEPENDENT=YES",
                s.msn, first.uri
            ));
        }
    }
    if let Some(first) = p.trailing_parts.first()
        && !first.independent
    {
        a.push(format!(
            "segment {}'s first part {} has no INDEPENDENT=YES",
            p.next_msn(),
            first.uri
        ));
    }
    if p.segments.iter().any(|s| s.program_date_time.is_some()) {
        for s in p
            .segments
            .iter()
            .filter(|s| s.discontinuity && s.program_date_time.is_none())
        {
            a.push(format!(
                "segment {} has EXT-X-DISCONTINUITY but no EXT-X-PROGRAM-DATE-TIME",
                s.msn
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for part in p.all_parts().filter(|x| x.byterange.is_none()) {
        if !seen.insert(part.uri.as_str()) {
            a.push(format!("part URI {} is listed twice", part.uri));
        }
    }
    a
}

fn same_part(a: &Part, b: &Part) -> bool {
    a.uri == b.uri && a.byterange == b.byterange && (a.duration - b.duration).abs() <= SAME
}

fn part_names(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|x| x.uri.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that `next` may follow `prev` as a later reload of the same live
/// playlist: numbering across segment boundaries, the discontinuity
/// sequence, parts turning into their segment, no segment changed or lost
/// except by leaving the window.
pub fn validate_successor(prev: &MediaPlaylist, next: &MediaPlaylist) -> Result<(), String> {
    let mut v: Vec<String> = Vec::new();

    if next.target_duration != prev.target_duration {
        v.push(format!(
            "EXT-X-TARGETDURATION changed from {} to {} (it MUST NOT change)",
            prev.target_duration, next.target_duration
        ));
    }
    if next.media_sequence < prev.media_sequence {
        v.push(format!(
            "EXT-X-MEDIA-SEQUENCE went back from {} to {}",
            prev.media_sequence, next.media_sequence
        ));
    }
    if next.discontinuity_sequence < prev.discontinuity_sequence {
        v.push(format!(
            "EXT-X-DISCONTINUITY-SEQUENCE went back from {} to {}",
            prev.discontinuity_sequence, next.discontinuity_sequence
        ));
    }
    if prev.ended {
        if !next.ended {
            v.push("the previous playlist had EXT-X-ENDLIST, this one has not".into());
        }
        if next.next_msn() != prev.next_msn() {
            v.push(format!(
                "segments after EXT-X-ENDLIST: the last segment was {}, now {}",
                prev.next_msn() as i128 - 1,
                next.next_msn() as i128 - 1
            ));
        }
    }

    // Every segment still in the window is there, unchanged.
    let mut lost = Vec::new();
    for s in &prev.segments {
        if s.msn < next.media_sequence || s.msn < next.first_listed_msn() {
            continue; // left the window, or skipped in a delta update
        }
        let Some(n) = next.segment(s.msn) else {
            lost.push(s.msn);
            continue;
        };
        if n.uri != s.uri {
            v.push(format!(
                "segment {} changed its URI from {} to {}",
                s.msn, s.uri, n.uri
            ));
        }
        if (n.duration - s.duration).abs() > SAME {
            v.push(format!(
                "segment {} ({}) changed its EXTINF from {} to {}",
                s.msn,
                s.uri,
                fmt_s(s.duration),
                fmt_s(n.duration)
            ));
        }
        if n.discontinuity != s.discontinuity {
            v.push(format!(
                "segment {} ({}) changed its EXT-X-DISCONTINUITY",
                s.msn, s.uri
            ));
        }
        if let (Some(a), Some(b)) = (&s.map_uri, &n.map_uri)
            && a != b
        {
            v.push(format!(
                "segment {} changed its EXT-X-MAP from {a} to {b}",
                s.msn
            ));
        }
        if !n.parts.is_empty() {
            // Parts only leave, oldest first: what is left is a tail of what was.
            let ok = n.parts.len() <= s.parts.len()
                && s.parts[s.parts.len() - n.parts.len()..]
                    .iter()
                    .zip(&n.parts)
                    .all(|(a, b)| same_part(a, b));
            if !ok {
                v.push(format!(
                    "segment {}'s parts were [{}] and are now [{}]; parts may only leave, oldest first",
                    s.msn,
                    part_names(&s.parts),
                    part_names(&n.parts)
                ));
            }
        }
    }
    if !lost.is_empty() {
        v.push(format!(
            "segments {lost:?} are gone though EXT-X-MEDIA-SEQUENCE {} still covers them (the last segment now is {})",
            next.media_sequence,
            next.next_msn() as i128 - 1
        ));
    }

    // The parts of the segment in progress reappear in it.
    let m = prev.next_msn();
    let t = &prev.trailing_parts;
    if !t.is_empty() && m >= next.first_listed_msn() {
        if let Some(n) = next.segment(m) {
            let sum: f64 = n.parts.iter().map(|x| x.duration).sum();
            let complete = !n.parts.is_empty()
                && (sum - n.duration).abs() <= 0.0005 * (n.parts.len() + 1) as f64 + ROUNDING;
            let ok = if n.parts.is_empty() {
                true // parts removed
            } else if complete {
                n.parts.len() >= t.len() && t.iter().zip(&n.parts).all(|(a, b)| same_part(a, b))
            } else {
                match t.iter().position(|x| same_part(x, &n.parts[0])) {
                    Some(k) => t[k..].iter().zip(&n.parts).all(|(a, b)| same_part(a, b)),
                    None => !n.parts.iter().any(|b| {
                        t.iter()
                            .any(|a| a.uri == b.uri && a.byterange == b.byterange)
                    }),
                }
            };
            if !ok {
                v.push(format!(
                    "segment {m} was in progress with parts [{}] but completed with parts [{}]",
                    part_names(t),
                    part_names(&n.parts)
                ));
            }
            if n.parts.len() < t.len() && complete {
                v.push(format!(
                    "segment {m} completed with fewer parts than it had in progress"
                ));
            }
        } else if next.next_msn() == m {
            let ok = next.trailing_parts.len() >= t.len()
                && t.iter()
                    .zip(&next.trailing_parts)
                    .all(|(a, b)| same_part(a, b));
            if !ok {
                v.push(format!(
                    "segment {m} in progress had parts [{}], now [{}]",
                    part_names(t),
                    part_names(&next.trailing_parts)
                ));
            }
        }
    }

    // The hinted part is the next one to be listed (unless a discontinuity
    // changed the plan: the server MAY then drop a hint).
    if let (Some((ty, hint)), None) = (&prev.preload_hint, prev.preload_hint_byterange_start)
        && ty == "PART"
        && m >= next.first_listed_msn()
    {
        // A segment's parts in `next` when they still start at its first
        // part, with its EXT-X-DISCONTINUITY.
        let from_start = |msn: u64| -> Option<(&[Part], bool)> {
            match next.segment(msn) {
                Some(s) => {
                    let sum: f64 = s.parts.iter().map(|x| x.duration).sum();
                    let tol = 0.0005 * (s.parts.len() + 1) as f64 + ROUNDING;
                    (!s.parts.is_empty() && (sum - s.duration).abs() <= tol)
                        .then_some((&s.parts[..], s.discontinuity))
                }
                None if msn == next.next_msn() => {
                    Some((&next.trailing_parts[..], next.trailing_discontinuity))
                }
                None => None,
            }
        };
        let slot = match from_start(m) {
            Some((ps, _)) if !t.iter().zip(ps).all(|(a, b)| same_part(a, b)) => None, // reported above
            Some((ps, disc)) if ps.len() > t.len() => Some((&ps[t.len()], disc && t.is_empty())),
            Some((ps, _)) if ps.len() == t.len() && next.segment(m).is_some() => {
                from_start(m + 1).and_then(|(ps2, disc2)| ps2.first().map(|x| (x, disc2)))
            }
            _ => None,
        };
        if let Some((next_part, disc)) = slot
            && !disc
            && next_part.uri != *hint
        {
            v.push(format!(
                "EXT-X-PRELOAD-HINT promised {hint} but the next part listed is {}",
                next_part.uri
            ));
        }
    }

    // The discontinuity sequence counts the EXT-X-DISCONTINUITY tags that left.
    let left: Vec<&Segment> = prev
        .segments
        .iter()
        .filter(|s| s.msn < next.media_sequence)
        .collect();
    let gone_disc = left.iter().filter(|s| s.discontinuity).count() as u64;
    let known = !(prev.skipped_segments > 0 && next.media_sequence > prev.media_sequence) // skipped ones left
        && next.media_sequence <= prev.next_msn(); // or ones prev never listed
    let want = prev.discontinuity_sequence + gone_disc;
    if known && next.discontinuity_sequence != want {
        v.push(format!(
            "EXT-X-DISCONTINUITY-SEQUENCE is {} but should be {want}: {} plus the {gone_disc} EXT-X-DISCONTINUITY segments that left the window",
            next.discontinuity_sequence, prev.discontinuity_sequence
        ));
    } else if !known && next.discontinuity_sequence < want {
        v.push(format!(
            "EXT-X-DISCONTINUITY-SEQUENCE is {} but at least {gone_disc} EXT-X-DISCONTINUITY segments left the window since {}",
            next.discontinuity_sequence, prev.discontinuity_sequence
        ));
    }

    // Removing segments must leave three target durations of playlist.
    if next.media_sequence > prev.media_sequence && !next.ended && next.skipped_segments == 0 {
        let span =
            next.listed_duration() + next.trailing_parts.iter().map(|x| x.duration).sum::<f64>();
        if span < 3.0 * next.target_duration as f64 - ROUNDING {
            v.push(format!(
                "segments were removed leaving {} s, less than three target durations ({} s)",
                fmt_s(span),
                3 * next.target_duration
            ));
        }
    }

    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("\n"))
    }
}

/// Checks media playlists of one multivariant playlist, taken at about the
/// same time, against each other: the same target duration and the same
/// EXT-X-SERVER-CONTROL (Section 6.2.4).
pub fn validate_renditions(playlists: &[&MediaPlaylist]) -> Result<(), String> {
    let mut v = Vec::new();
    let Some(first) = playlists.first() else {
        return Ok(());
    };
    for (i, p) in playlists.iter().enumerate().skip(1) {
        if p.target_duration != first.target_duration {
            v.push(format!(
                "rendition {i} has EXT-X-TARGETDURATION {}, rendition 0 has {}",
                p.target_duration, first.target_duration
            ));
        }
        if p.server_control != first.server_control {
            v.push(format!(
                "rendition {i} has EXT-X-SERVER-CONTROL {:?}, rendition 0 has {:?}",
                p.server_control, first.server_control
            ));
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("\n"))
    }
}
