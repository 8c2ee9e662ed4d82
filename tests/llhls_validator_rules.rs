//! The LL-HLS playlist checker of `tests/common/llhls.rs`, against the
//! spec's own example playlists (draft-pantos-hls-rfc8216bis, "Low-Latency
//! Playlist" examples) and one broken playlist a rule.

#[path = "common/llhls.rs"]
mod llhls;

use llhls::{MediaPlaylist, advisories, iso8601_seconds, parse, validate, validate_successor};

/// The spec's low-latency example, verbatim: the answer to
/// `GET https://example.com/2M/waitForMSN.php?_HLS_msn=273&_HLS_part=2`.
const SPEC_EXAMPLE: &str = r#"#EXTM3U
# This Playlist is a response to: GET https://example.com/2M/waitForMSN.php?_HLS_msn=273&_HLS_part=2
#EXT-X-TARGETDURATION:4
#EXT-X-VERSION:6
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:13:36.106Z
#EXT-X-MAP:URI="init.mp4"
#EXTINF:4.00008,
fileSequence266.mp4
#EXTINF:4.00008,
fileSequence267.mp4
#EXTINF:4.00008,
fileSequence268.mp4
#EXTINF:4.00008,
fileSequence269.mp4
#EXTINF:4.00008,
fileSequence270.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart271.0.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.1.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.2.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.3.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.4.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart271.5.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.6.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.7.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.8.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart271.9.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.10.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.11.mp4"
#EXTINF:4.00008,
fileSequence271.mp4
#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:14:00.106Z
#EXT-X-PART:DURATION=0.33334,URI="filePart272.a.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.b.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.c.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.d.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.e.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.f.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart272.g.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.h.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.i.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.j.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.k.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.l.mp4"
#EXTINF:4.00008,
fileSequence272.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart273.0.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart273.1.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart273.2.mp4"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart273.3.mp4"

#EXT-X-RENDITION-REPORT:URI="../1M/waitForMSN.php",LAST-MSN=273,LAST-PART=2
#EXT-X-RENDITION-REPORT:URI="../4M/waitForMSN.php",LAST-MSN=273,LAST-PART=1
"#;

/// The spec's Playlist Delta Update that follows it, verbatim
/// (`..._HLS_msn=273&_HLS_part=3&_HLS_skip=YES`).
const SPEC_DELTA: &str = r#"#EXTM3U
# Following the example above, this Playlist is a response to: GET https://example.com/2M/waitForMSN.php?_HLS_msn=273&_HLS_part=3&_HLS_skip=YES
#EXT-X-TARGETDURATION:4
#EXT-X-VERSION:9
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-SKIP:SKIPPED-SEGMENTS=3
#EXTINF:4.00008,
fileSequence269.mp4
#EXTINF:4.00008,
fileSequence270.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart271.0.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.1.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.2.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.3.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.4.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart271.5.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.6.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.7.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.8.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart271.9.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.10.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart271.11.mp4"
#EXTINF:4.00008,
fileSequence271.mp4
#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:14:00.106Z
#EXT-X-PART:DURATION=0.33334,URI="filePart272.a.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.b.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.c.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.d.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.e.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.f.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart272.g.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.h.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.i.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.j.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.k.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.l.mp4"
#EXTINF:4.00008,
fileSequence272.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart273.0.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart273.1.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart273.2.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart273.3.mp4"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart273.4.mp4"

#EXT-X-RENDITION-REPORT:URI="../1M/waitForMSN.php",LAST-MSN=273,LAST-PART=3
#EXT-X-RENDITION-REPORT:URI="../4M/waitForMSN.php",LAST-MSN=273,LAST-PART=3
"#;

/// The spec's example with its one slip mended: CAN-SKIP-UNTIL (the Skip
/// Boundary) MUST be at least six target durations, 24 s here, not 12.
fn good() -> String {
    SPEC_EXAMPLE.replace("CAN-SKIP-UNTIL=12.0", "CAN-SKIP-UNTIL=24.0")
}

/// The spec's delta update with the boundary at 24 s: what stays must then
/// reach back about 24 s, so it skips one segment, not three.
fn mended_delta() -> String {
    let text = edit(
        &edit(SPEC_DELTA, "CAN-SKIP-UNTIL=12.0", "CAN-SKIP-UNTIL=24.0"),
        "SKIPPED-SEGMENTS=3\n",
        "SKIPPED-SEGMENTS=1\n",
    );
    edit(
        &text,
        "#EXTINF:4.00008,\nfileSequence269.mp4\n",
        "#EXTINF:4.00008,\nfileSequence267.mp4\n#EXTINF:4.00008,\nfileSequence268.mp4\n#EXTINF:4.00008,\nfileSequence269.mp4\n",
    )
}

fn parsed(text: &str) -> MediaPlaylist {
    parse(text).unwrap_or_else(|e| panic!("parse failed:\n{e}\n---\n{text}"))
}

/// Replaces exactly one occurrence, so a test cannot silently edit nothing.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

/// `validate` fails, and one of its lines names `needle`.
#[track_caller]
fn rejects(text: &str, needle: &str) -> String {
    let err = validate(&parsed(text)).expect_err("the checker accepted a broken playlist");
    assert!(
        err.contains(needle),
        "expected a line with {needle:?}, got:\n{err}"
    );
    err
}

/// `validate` fails with exactly one line, naming `needle`.
#[track_caller]
fn rejects_only(text: &str, needle: &str) {
    let err = rejects(text, needle);
    assert_eq!(
        err.lines().count(),
        1,
        "expected one violation, got:\n{err}"
    );
}

#[track_caller]
fn accepts(text: &str) -> MediaPlaylist {
    let p = parsed(text);
    if let Err(e) = validate(&p) {
        panic!("rejected:\n{e}\n---\n{text}");
    }
    p
}

#[track_caller]
fn parse_rejects(text: &str, needle: &str) {
    let err = parse(text).expect_err("the parser accepted a broken playlist");
    assert!(
        err.contains(needle),
        "expected a line with {needle:?}, got:\n{err}"
    );
}

// ------------------------------------------------------------ good ones

#[test]
fn the_spec_example_breaks_only_its_own_skip_boundary() {
    // CAN-SKIP-UNTIL=12.0 with EXT-X-TARGETDURATION:4: the spec's MUST is 6 x 4 = 24.
    rejects_only(
        SPEC_EXAMPLE,
        "CAN-SKIP-UNTIL=12 is less than six target durations (24)",
    );
}

#[test]
fn the_mended_spec_example_is_read_and_accepted() {
    let p = accepts(&good());
    assert_eq!(p.version, 6);
    assert_eq!(p.target_duration, 4);
    assert_eq!(p.media_sequence, 266);
    assert_eq!(p.part_target, Some(0.33334));
    assert_eq!(
        p.server_control.get("CAN-BLOCK-RELOAD").map(String::as_str),
        Some("YES")
    );
    assert_eq!(
        p.server_control.get("PART-HOLD-BACK").map(String::as_str),
        Some("1.0")
    );
    assert_eq!(p.segments.len(), 7);
    assert_eq!(p.segments[0].msn, 266);
    assert_eq!(p.segments[6].msn, 272);
    assert_eq!(p.segments[6].uri, "fileSequence272.mp4");
    assert!(
        p.segments
            .iter()
            .all(|s| s.map_uri.as_deref() == Some("init.mp4"))
    );
    assert_eq!(
        p.segments[0].program_date_time.as_deref(),
        Some("2019-02-14T02:13:36.106Z")
    );
    assert_eq!(
        p.segments[6].program_date_time.as_deref(),
        Some("2019-02-14T02:14:00.106Z")
    );
    assert_eq!(p.segments[5].parts.len(), 12);
    assert!(p.segments[5].parts[4].independent && !p.segments[5].parts[3].independent);
    assert_eq!(p.segments[6].parts[0].uri, "filePart272.a.mp4");
    let trailing: Vec<_> = p.trailing_parts.iter().map(|x| x.uri.as_str()).collect();
    assert_eq!(
        trailing,
        [
            "filePart273.0.mp4",
            "filePart273.1.mp4",
            "filePart273.2.mp4"
        ]
    );
    assert_eq!(p.next_msn(), 273);
    assert_eq!(
        p.preload_hint,
        Some(("PART".to_string(), "filePart273.3.mp4".to_string()))
    );
    assert!(!p.ended);
    // PART-HOLD-BACK=1.0 is just under the SHOULD of 3 x 0.33334.
    let notes = advisories(&p);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("PART-HOLD-BACK=1 SHOULD be at least three times")),
        "{notes:?}"
    );
}

#[test]
fn the_spec_delta_update_is_read_and_accepted_with_its_boundary_mended() {
    // Verbatim, it has the example's CAN-SKIP-UNTIL slip.
    rejects_only(SPEC_DELTA, "CAN-SKIP-UNTIL=12 is less than six");
    let p = accepts(&mended_delta());
    assert_eq!(p.skipped_segments, 1);
    assert_eq!(p.segments[0].msn, 267);
    assert_eq!(
        p.segments[0].map_uri, None,
        "the skipped part held the EXT-X-MAP"
    );
}

#[test]
fn byte_range_parts_and_a_hint_into_the_same_resource_are_fine() {
    let text = r#"#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:5
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.06
#EXT-X-PART-INF:PART-TARGET=1.02
#EXT-X-MEDIA-SEQUENCE:268
#EXT-X-MAP:URI="init.mp4"
#EXTINF:4.08,
fs268.mp4
#EXTINF:4.08,
fs269.mp4
#EXTINF:4.08,
fs270.mp4
#EXT-X-PART:DURATION=1.02,URI="fs271.mp4",BYTERANGE="20000@0",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.02,URI="fs271.mp4",BYTERANGE="23000@20000"
#EXT-X-PART:DURATION=1.02,URI="fs271.mp4",BYTERANGE="18000"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="fs271.mp4",BYTERANGE-START=61000
"#;
    let p = accepts(text);
    assert_eq!(
        p.trailing_parts[2].byterange,
        Some((18000, 43000)),
        "offset follows the previous part"
    );
    assert_eq!(p.preload_hint_byterange_start, Some(61000));
    // A hint into bytes already listed is not.
    rejects_only(
        &edit(text, "BYTERANGE-START=61000", "BYTERANGE-START=43000"),
        "already listed as an EXT-X-PART",
    );
}

#[test]
fn a_stream_that_just_started_has_only_parts_and_a_hint() {
    let text = r#"#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5,HOLD-BACK=6
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T10:00:00.000+08:00
#EXT-X-PART:DURATION=0.500,URI="p0.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI="p0.1.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="p0.2.m4s"
"#;
    let p = accepts(text);
    assert!(p.segments.is_empty());
    assert_eq!(p.trailing_parts.len(), 2);
    assert_eq!(p.trailing_map_uri.as_deref(), Some("init.mp4"));
    assert_eq!(p.next_msn(), 0);
    assert!(advisories(&p).is_empty(), "{:?}", advisories(&p));
    // Without its EXT-X-MAP the fMP4 parts cannot be decoded.
    rejects(
        &edit(text, "#EXT-X-MAP:URI=\"init.mp4\"\n", ""),
        "EXT-X-MAP is missing",
    );
}

#[test]
fn a_finished_playlist_without_parts_is_fine() {
    let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\na.ts\n#EXTINF:1.500,\nb.ts\n#EXT-X-ENDLIST\n";
    let p = accepts(text);
    assert!(p.ended && p.part_target.is_none() && !p.has_parts());
}

// ------------------------------------------------------- one rule each

#[test]
fn the_first_line_is_extm3u() {
    parse_rejects(
        &good().replacen("#EXTM3U\n", "", 1),
        "must start with #EXTM3U",
    );
    parse_rejects(&format!("\n{}", good()), "must start with #EXTM3U");
}

#[test]
fn ext_x_version_is_present_and_high_enough() {
    rejects_only(
        &edit(&good(), "#EXT-X-VERSION:6\n", ""),
        "EXT-X-VERSION is missing",
    );
    rejects_only(
        &edit(&good(), "#EXT-X-VERSION:6\n", "#EXT-X-VERSION:5\n"),
        "EXT-X-MAP needs version 6",
    );
    let ints = "#EXTM3U\n#EXT-X-VERSION:2\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.5,\na.ts\n";
    rejects_only(ints, "floating-point EXTINF durations needs version 3");
    rejects_only(
        &edit(&mended_delta(), "#EXT-X-VERSION:9\n", "#EXT-X-VERSION:8\n"),
        "EXT-X-VERSION:8 but EXT-X-SKIP needs version 9",
    );
    parse_rejects(
        &format!("{}#EXT-X-VERSION:6\n", good()),
        "EXT-X-VERSION appears twice",
    );
}

#[test]
fn every_extinf_rounds_to_at_most_the_target_duration() {
    let text = edit(
        &good(),
        "#EXTINF:4.00008,\nfileSequence266.mp4",
        "#EXTINF:4.5,\nfileSequence266.mp4",
    );
    // 4.5 rounds to 5 (and the next date moves by half a second: within a second).
    rejects_only(
        &text,
        "EXT-X-TARGETDURATION:4 but segment 266 (fileSequence266.mp4) has EXTINF 4.5 (rounds to 5)",
    );
    accepts(&edit(
        &good(),
        "#EXTINF:4.00008,\nfileSequence266.mp4",
        "#EXTINF:4.49,\nfileSequence266.mp4",
    ));
    parse_rejects(
        &edit(
            &good(),
            "#EXT-X-TARGETDURATION:4\n",
            "#EXT-X-TARGETDURATION:4.0\n",
        ),
        "EXT-X-TARGETDURATION needs a decimal-integer",
    );
    parse_rejects(
        &edit(&good(), "#EXT-X-TARGETDURATION:4\n", ""),
        "EXT-X-TARGETDURATION is REQUIRED",
    );
}

#[test]
fn parts_need_ext_x_part_inf() {
    let text = edit(&good(), "#EXT-X-PART-INF:PART-TARGET=0.33334\n", "");
    rejects(&text, "EXT-X-PART-INF is REQUIRED");
    // (and PART-HOLD-BACK then measures nothing; no other complaint.)
    assert_eq!(validate(&parsed(&text)).unwrap_err().lines().count(), 1);
    parse_rejects(
        &edit(&good(), "PART-TARGET=0.33334", "PART-TARGET=\"0.33334\""),
        "PART-TARGET must not be quoted",
    );
}

#[test]
fn no_part_is_longer_than_part_target() {
    // One part 6 ms too long, its neighbour shorter: the segment still adds up.
    let text = edit(
        &good(),
        "DURATION=0.33334,URI=\"filePart271.1.mp4\"",
        "DURATION=0.34,URI=\"filePart271.1.mp4\"",
    );
    let text = edit(
        &text,
        "DURATION=0.33334,URI=\"filePart271.2.mp4\"",
        "DURATION=0.32668,URI=\"filePart271.2.mp4\"",
    );
    rejects_only(
        &text,
        "part filePart271.1.mp4 of segment 271 lasts 0.34 s, more than PART-TARGET 0.33334",
    );
    // A millisecond over is rounding.
    let text = edit(
        &good(),
        "DURATION=0.33334,URI=\"filePart271.1.mp4\"",
        "DURATION=0.3343,URI=\"filePart271.1.mp4\"",
    );
    accepts(&edit(
        &text,
        "DURATION=0.33334,URI=\"filePart271.2.mp4\"",
        "DURATION=0.33238,URI=\"filePart271.2.mp4\"",
    ));
    // So is the last part of the segment in progress.
    rejects_only(
        &edit(
            &good(),
            "DURATION=0.33334,URI=\"filePart273.2.mp4\"",
            "DURATION=0.4,URI=\"filePart273.2.mp4\"",
        ),
        "filePart273.2.mp4 of segment 273 (in progress) lasts 0.4 s",
    );
}

/// Part 271.1 shortened to `d`, and its segment's EXTINF with it.
fn short_part_271_1(flags: &str) -> String {
    let text = edit(
        &good(),
        "DURATION=0.33334,URI=\"filePart271.1.mp4\"",
        &format!("DURATION=0.2,URI=\"filePart271.1.mp4\"{flags}"),
    );
    edit(
        &text,
        "#EXTINF:4.00008,\nfileSequence271.mp4",
        "#EXTINF:3.86674,\nfileSequence271.mp4",
    )
}

#[test]
fn parts_last_at_least_85_percent_of_part_target_but_the_exempt_ones() {
    rejects_only(
        &short_part_271_1(""),
        "part filePart271.1.mp4 of segment 271 lasts 0.2 s, less than 85% of PART-TARGET 0.33334",
    );
    // The spec exempts INDEPENDENT=YES parts, GAP=YES parts, the part before a GAP ...
    accepts(&short_part_271_1(",INDEPENDENT=YES"));
    accepts(&short_part_271_1(",GAP=YES"));
    accepts(&edit(
        &short_part_271_1(""),
        "URI=\"filePart271.2.mp4\"",
        "URI=\"filePart271.2.mp4\",GAP=YES",
    ));
    // ... and the final part of its segment.
    let text = edit(
        &good(),
        "DURATION=0.33334,URI=\"filePart271.11.mp4\"",
        "DURATION=0.2,URI=\"filePart271.11.mp4\"",
    );
    accepts(&edit(
        &text,
        "#EXTINF:4.00008,\nfileSequence271.mp4",
        "#EXTINF:3.86674,\nfileSequence271.mp4",
    ));
    // 85 % of 0.33334 is 0.283339: 0.2834 passes, 0.28 does not.
    let at = |d: &str| {
        let t = edit(
            &good(),
            "DURATION=0.33334,URI=\"filePart273.1.mp4\"",
            &format!("DURATION={d},URI=\"filePart273.1.mp4\""),
        );
        validate(&parsed(&t))
    };
    assert!(at("0.2834").is_ok());
    assert!(
        at("0.28")
            .unwrap_err()
            .contains("filePart273.1.mp4 of segment 273 (in progress) lasts 0.28 s, less than 85%")
    );
    // The newest part may yet be its segment's last.
    assert!(
        validate(&parsed(&edit(
            &good(),
            "DURATION=0.33334,URI=\"filePart273.2.mp4\"",
            "DURATION=0.1,URI=\"filePart273.2.mp4\""
        )))
        .is_ok()
    );
}

#[test]
fn a_segments_parts_add_up_to_its_extinf() {
    rejects_only(
        &edit(
            &good(),
            "#EXTINF:4.00008,\nfileSequence272.mp4",
            "#EXTINF:3.9,\nfileSequence272.mp4",
        ),
        "segment 272 (fileSequence272.mp4) has EXTINF 3.9 but its parts add up to 4.00008 s",
    );
    // Milliseconds of rounding are fine.
    accepts(&edit(
        &good(),
        "#EXTINF:4.00008,\nfileSequence272.mp4",
        "#EXTINF:4.002,\nfileSequence272.mp4",
    ));
    // The oldest segment with parts may have lost its first ones (they leave in order).
    accepts(&edit(
        &good(),
        "#EXT-X-PART:DURATION=0.33334,URI=\"filePart271.0.mp4\"\n",
        "",
    ));
    // But not a newer one.
    rejects_only(
        &edit(
            &good(),
            "#EXT-X-PART:DURATION=0.33334,URI=\"filePart272.a.mp4\"\n",
            "",
        ),
        "segment 272 (fileSequence272.mp4) has EXTINF 4.00008 but its parts add up to 3.66674 s",
    );
}

#[test]
fn parts_leave_the_playlist_in_order() {
    let mut text = good();
    for x in "abcdefghijkl".chars() {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("filePart272.{x}.mp4")))
            .unwrap()
            .to_string();
        text = edit(&text, &format!("{line}\n"), "");
    }
    rejects_only(
        &text,
        "segment 272 lists no parts but the older segment 271 does: EXT-X-PART tags MUST be removed in playlist order",
    );
}

#[test]
fn part_hold_back_is_required_and_at_least_twice_part_target() {
    rejects_only(
        &edit(&good(), "PART-HOLD-BACK=1.0,", ""),
        "PART-HOLD-BACK is REQUIRED",
    );
    rejects_only(
        &edit(&good(), "PART-HOLD-BACK=1.0", "PART-HOLD-BACK=0.66"),
        "PART-HOLD-BACK=0.66 is less than twice PART-TARGET (0.66668)",
    );
    // Twice is the MUST; three times only a SHOULD.
    let p = accepts(&edit(&good(), "PART-HOLD-BACK=1.0", "PART-HOLD-BACK=0.67"));
    assert!(
        advisories(&p)
            .iter()
            .any(|a| a.contains("SHOULD be at least three times PART-TARGET"))
    );
    let p = accepts(&edit(&good(), "PART-HOLD-BACK=1.0", "PART-HOLD-BACK=1.1"));
    assert!(!advisories(&p).iter().any(|a| a.contains("PART-HOLD-BACK")));
    rejects_only(
        &edit(&good(), "PART-HOLD-BACK=1.0", "PART-HOLD-BACK=1s"),
        "PART-HOLD-BACK=1s is not a decimal-floating-point number",
    );
}

#[test]
fn hold_back_is_at_least_three_target_durations() {
    rejects_only(
        &edit(
            &good(),
            "PART-HOLD-BACK=1.0",
            "PART-HOLD-BACK=1.0,HOLD-BACK=11.9",
        ),
        "HOLD-BACK=11.9 is less than three target durations (12)",
    );
    accepts(&edit(
        &good(),
        "PART-HOLD-BACK=1.0",
        "PART-HOLD-BACK=1.0,HOLD-BACK=12",
    ));
}

#[test]
fn can_skip_until_is_at_least_six_target_durations() {
    rejects_only(
        &edit(&good(), "CAN-SKIP-UNTIL=24.0", "CAN-SKIP-UNTIL=23.9"),
        "CAN-SKIP-UNTIL=23.9 is less than six target durations (24)",
    );
    rejects_only(
        &edit(&good(), "CAN-SKIP-UNTIL=24.0", "CAN-SKIP-DATERANGES=YES"),
        "CAN-SKIP-DATERANGES requires CAN-SKIP-UNTIL",
    );
}

#[test]
fn parts_need_blocking_reload() {
    rejects_only(
        &edit(&good(), "CAN-BLOCK-RELOAD=YES,", ""),
        "CAN-BLOCK-RELOAD=YES is missing",
    );
    rejects(
        &edit(&good(), "CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO"),
        "CAN-BLOCK-RELOAD=NO; the only value is YES",
    );
}

#[test]
fn ext_x_skip_comes_first_once_and_only_with_a_skip_boundary() {
    let delta = mended_delta();
    accepts(&delta);
    // Not after a segment.
    let moved = edit(&delta, "#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n", "");
    parse_rejects(
        &edit(
            &moved,
            "fileSequence267.mp4\n",
            "fileSequence267.mp4\n#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n",
        ),
        "EXT-X-SKIP must come before every segment",
    );
    parse_rejects(
        &edit(
            &delta,
            "#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n",
            "#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n",
        ),
        "EXT-X-SKIP appears twice",
    );
    parse_rejects(
        &edit(&delta, "SKIPPED-SEGMENTS=1", "SKIPPED=1"),
        "EXT-X-SKIP without a decimal-integer SKIPPED-SEGMENTS",
    );
    // Only when the server said it can skip.
    rejects_only(
        &edit(&delta, ",CAN-SKIP-UNTIL=24.0", ""),
        "EXT-X-SKIP:SKIPPED-SEGMENTS=1 but EXT-X-SERVER-CONTROL has no CAN-SKIP-UNTIL",
    );
    // And only what lies beyond the Skip Boundary: SPEC_DELTA's 3 leave 16 s of a 24 s boundary.
    rejects_only(
        &SPEC_DELTA.replace("CAN-SKIP-UNTIL=12.0", "CAN-SKIP-UNTIL=24.0"),
        "only 16.00032 s of segments remain, nearer the end than CAN-SKIP-UNTIL=24",
    );
    // Skipping date ranges is version 10.
    parse_rejects(
        &edit(
            &delta,
            "SKIPPED-SEGMENTS=1",
            "SKIPPED-SEGMENTS=1,RECENTLY-REMOVED-DATERANGES=\"\"",
        ),
        "needs EXT-X-VERSION 10",
    );
}

#[test]
fn one_preload_hint_with_a_uri_that_is_not_listed_yet() {
    parse_rejects(
        &edit(
            &good(),
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"filePart273.3.mp4\"\n",
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"filePart273.3.mp4\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"filePart273.4.mp4\"\n",
        ),
        "a second EXT-X-PRELOAD-HINT of TYPE=PART",
    );
    parse_rejects(
        &edit(&good(), "TYPE=PART,URI=\"filePart273.3.mp4\"", "TYPE=PART"),
        "EXT-X-PRELOAD-HINT TYPE=PART without a quoted URI",
    );
    parse_rejects(
        &edit(
            &good(),
            "TYPE=PART,URI=\"filePart273.3.mp4\"",
            "URI=\"filePart273.3.mp4\"",
        ),
        "without an enumerated TYPE",
    );
    rejects_only(
        &edit(
            &good(),
            "TYPE=PART,URI=\"filePart273.3.mp4\"",
            "TYPE=PART,URI=\"filePart273.1.mp4\"",
        ),
        "EXT-X-PRELOAD-HINT hints filePart273.1.mp4, which is already listed as an EXT-X-PART",
    );
    rejects_only(
        &edit(
            &good(),
            "TYPE=PART,URI=\"filePart273.3.mp4\"",
            "TYPE=PART,URI=\"fileSequence272.mp4\"",
        ),
        "already listed as a segment",
    );
    // A MAP hint besides the PART hint is fine; an unknown TYPE is ignored.
    let p = accepts(&edit(
        &good(),
        "#EXT-X-PRELOAD-HINT:",
        "#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"init2.mp4\"\n#EXT-X-PRELOAD-HINT:TYPE=FUTURE,URI=\"x\"\n#EXT-X-PRELOAD-HINT:",
    ));
    assert_eq!(p.preload_hint.as_ref().map(|h| h.0.as_str()), Some("PART"));
}

#[test]
fn a_finished_playlist_has_no_hint_and_no_parts_after_its_last_segment() {
    let ended = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PART:DURATION=0.5,URI=\"p0.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.5,URI=\"p0.1.m4s\"\n#EXTINF:1.0,\ns0.m4s\n#EXT-X-ENDLIST\n";
    accepts(ended);
    rejects_only(
        &format!("{ended}#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p1.0.m4s\"\n"),
        "EXT-X-PRELOAD-HINT (p1.0.m4s) in a playlist with EXT-X-ENDLIST",
    );
    rejects_only(
        &format!("{ended}#EXT-X-PART:DURATION=0.5,URI=\"p1.0.m4s\"\n"),
        "EXT-X-ENDLIST but 1 parts after the last segment",
    );
}

#[test]
fn ext_x_map_comes_before_the_first_segment_and_part() {
    rejects_only(
        &edit(&good(), "#EXT-X-MAP:URI=\"init.mp4\"\n", ""),
        "EXT-X-MAP is missing before the first segment/part",
    );
    // MAP, DISCONTINUITY, PROGRAM-DATE-TIME and KEY of a segment precede its first part.
    for tag in [
        "#EXT-X-MAP:URI=\"init2.mp4\"",
        "#EXT-X-DISCONTINUITY",
        "#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:14:04.106Z",
        "#EXT-X-KEY:METHOD=NONE",
    ] {
        let text = edit(
            &good(),
            "#EXT-X-PART:DURATION=0.33334,URI=\"filePart273.1.mp4\"\n",
            &format!("{tag}\n#EXT-X-PART:DURATION=0.33334,URI=\"filePart273.1.mp4\"\n"),
        );
        parse_rejects(
            &text,
            "after the first EXT-X-PART of its segment; it MUST appear before it",
        );
        let text = edit(
            &good(),
            "#EXT-X-PART:DURATION=0.33334,URI=\"filePart273.0.mp4\"",
            &format!("{tag}\n#EXT-X-PART:DURATION=0.33334,URI=\"filePart273.0.mp4\""),
        );
        parse(&text).unwrap_or_else(|e| panic!("{tag} before the first part: {e}"));
    }
}

#[test]
fn media_sequence_numbers_follow_the_skip() {
    let p = parsed(SPEC_DELTA);
    let msns: Vec<u64> = p.segments.iter().map(|s| s.msn).collect();
    assert_eq!(msns, [269, 270, 271, 272]);
    assert_eq!(p.next_msn(), 273);
    let mut broken = p.clone();
    broken.segments[1].msn = 271;
    assert!(
        validate(&broken)
            .unwrap_err()
            .contains("segment 1 (fileSequence270.mp4) is numbered 271 but is number 270")
    );
    parse_rejects(
        &edit(&good(), "#EXT-X-MEDIA-SEQUENCE:266\n", "").replacen(
            "fileSequence266.mp4\n",
            "fileSequence266.mp4\n#EXT-X-MEDIA-SEQUENCE:266\n",
            1,
        ),
        "EXT-X-MEDIA-SEQUENCE MUST appear before the first Media Segment",
    );
}

#[test]
fn program_date_time_is_iso_8601_and_keeps_pace_with_the_segments() {
    rejects_only(
        &edit(&good(), "2019-02-14T02:14:00.106Z", "2019-02-14 02:14:00"),
        "EXT-X-PROGRAM-DATE-TIME:2019-02-14 02:14:00 (segment 272) is not an ISO 8601 date-time",
    );
    // 24.0005 s of segments between the two dates: 2 s off is too much ...
    rejects_only(
        &edit(
            &good(),
            "2019-02-14T02:14:00.106Z",
            "2019-02-14T02:14:02.106Z",
        ),
        "EXT-X-PROGRAM-DATE-TIME of segment 272 is 26 s after segment 266's, but the segments between last 24.00048 s",
    );
    // ... 0.8 s (or a zone offset) is not ...
    accepts(&edit(
        &good(),
        "2019-02-14T02:14:00.106Z",
        "2019-02-14T02:14:00.906Z",
    ));
    accepts(&edit(
        &good(),
        "2019-02-14T02:14:00.106Z",
        "2019-02-14T10:14:00.106+08:00",
    ));
    // ... and a discontinuity restarts the clock.
    let text = edit(
        &good(),
        "#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:14:00.106Z\n",
        "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2019-02-14T09:00:00.000Z\n",
    );
    accepts(&text);
}

#[test]
fn iso_8601_dates() {
    let at = |s: &str, want: f64| {
        let got = iso8601_seconds(s).unwrap_or_else(|| panic!("{s} not read"));
        assert!((got - want).abs() < 1e-6, "{s}: {got} != {want}");
    };
    at("1970-01-01T00:00:00Z", 0.0);
    at("2019-02-14T02:13:36.106Z", 1_550_110_416.106);
    at("2019-02-14T10:13:36.106+08:00", 1_550_110_416.106);
    at("2019-02-13T21:13:36.106-0500", 1_550_110_416.106);
    at("2019-02-14T02:13:36.106", 1_550_110_416.106);
    at("2024-02-29T00:00:00Z", 1_709_164_800.0);
    for bad in [
        "2023-02-29T00:00:00Z",
        "2019-02-14",
        "2019-02-14T25:00:00Z",
        "2019-02-14T02:13:36.Z",
        "2019-02-14T02:13:36+8",
        "yesterday",
    ] {
        assert_eq!(iso8601_seconds(bad), None, "{bad}");
    }
}

#[test]
fn malformed_tags_are_refused_with_their_line() {
    parse_rejects(
        &edit(
            &good(),
            "#EXTINF:4.00008,\nfileSequence266.mp4",
            "#EXTINF:4.00008\nfileSequence266.mp4",
        ),
        "line 10: EXTINF:4.00008 needs a comma",
    );
    parse_rejects(
        &edit(
            &good(),
            "#EXTINF:4.00008,\nfileSequence266.mp4",
            "#EXTINF:-4,\nfileSequence266.mp4",
        ),
        "is not a decimal-floating-point number",
    );
    parse_rejects(
        &edit(
            &good(),
            "URI=\"filePart271.3.mp4\"",
            "URI=filePart271.3.mp4",
        ),
        "EXT-X-PART: needs a quoted URI",
    );
    parse_rejects(
        &edit(
            &good(),
            "DURATION=0.33334,URI=\"filePart271.3.mp4\"",
            "URI=\"filePart271.3.mp4\"",
        ),
        "filePart271.3.mp4: needs a DURATION",
    );
    parse_rejects(
        &edit(
            &good(),
            "URI=\"filePart271.4.mp4\",INDEPENDENT=YES",
            "URI=\"filePart271.4.mp4\",INDEPENDENT=NO",
        ),
        "INDEPENDENT=NO; the only value is YES",
    );
    parse_rejects(
        &edit(
            &good(),
            "fileSequence266.mp4\n",
            "fileSequence266.mp4\nstray.mp4\n",
        ),
        "URI stray.mp4 without an EXTINF",
    );
    parse_rejects(
        &format!("{}#EXTINF:4.0,\n", good()),
        "the last EXTINF has no URI line",
    );
    parse_rejects(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n",
        "belongs to a multivariant playlist",
    );
}

// ------------------------------------------------------------- reloads

const T: f64 = 0.33334;

/// A live playlist in the spec example's shape: segments `segs` (all with
/// 12 parts of 0.33334 s, the last two listing them), `trailing` parts of
/// the next one, a hint for the part after.
fn live(ms: u64, ds: u64, segs: std::ops::Range<u64>, trailing: usize) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-VERSION:6\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.1,CAN-SKIP-UNTIL=24.0\n#EXT-X-PART-INF:PART-TARGET={T}\n#EXT-X-MEDIA-SEQUENCE:{ms}\n#EXT-X-DISCONTINUITY-SEQUENCE:{ds}\n#EXT-X-MAP:URI=\"init.mp4\"\n"
    );
    let last = segs.end;
    for msn in segs {
        if msn + 2 >= last {
            for i in 0..12 {
                let ind = if i == 0 { ",INDEPENDENT=YES" } else { "" };
                s += &format!("#EXT-X-PART:DURATION={T},URI=\"filePart{msn}.{i}.mp4\"{ind}\n");
            }
        }
        s += &format!("#EXTINF:4.00008,\nfileSequence{msn}.mp4\n");
    }
    for i in 0..trailing {
        let ind = if i == 0 { ",INDEPENDENT=YES" } else { "" };
        s += &format!("#EXT-X-PART:DURATION={T},URI=\"filePart{last}.{i}.mp4\"{ind}\n");
    }
    let (hm, hi) = if trailing == 12 {
        (last + 1, 0)
    } else {
        (last, trailing)
    };
    s += &format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"filePart{hm}.{hi}.mp4\"\n");
    s
}

#[track_caller]
fn follows(prev: &str, next: &str) {
    let (a, b) = (accepts(prev), accepts(next));
    if let Err(e) = validate_successor(&a, &b) {
        panic!("not a valid reload:\n{e}\n--- prev\n{prev}\n--- next\n{next}");
    }
}

#[track_caller]
fn does_not_follow(prev: &str, next: &str, needle: &str) {
    let err =
        validate_successor(&parsed(prev), &parsed(next)).expect_err("accepted a broken reload");
    assert!(
        err.contains(needle),
        "expected a line with {needle:?}, got:\n{err}"
    );
}

#[test]
fn the_spec_delta_update_follows_the_spec_example() {
    let (a, b) = (parsed(SPEC_EXAMPLE), parsed(SPEC_DELTA));
    validate_successor(&a, &b).unwrap();
}

#[test]
fn parts_grow_into_their_segment_and_the_window_slides() {
    let a = live(266, 0, 266..273, 3);
    follows(&a, &live(266, 0, 266..273, 4)); // one more part
    follows(&a, &live(266, 0, 266..273, 12)); // all of them, hint into segment 274
    follows(&a, &live(266, 0, 266..274, 0)); // segment 273 complete
    follows(&a, &live(267, 0, 267..274, 1)); // and 266 left the window
    follows(&live(266, 0, 266..273, 12), &live(267, 0, 267..274, 1));
    follows(&live(266, 0, 266..273, 0), &live(266, 0, 266..273, 1));
}

#[test]
fn in_progress_parts_keep_their_names_when_the_segment_completes() {
    let a = live(266, 0, 266..273, 3);
    does_not_follow(
        &a,
        &live(266, 0, 266..274, 0).replace("filePart273.1.mp4", "filePart273.1b.mp4"),
        "segment 273 was in progress with parts [filePart273.0.mp4, filePart273.1.mp4, filePart273.2.mp4] but completed with parts [filePart273.0.mp4, filePart273.1b.mp4",
    );
    does_not_follow(
        &a,
        &live(266, 0, 266..273, 4).replace("filePart273.2.mp4", "filePart273.2b.mp4"),
        "segment 273 in progress had parts",
    );
    // A part cannot change its duration either.
    let b = live(266, 0, 266..273, 4).replace(
        &format!("DURATION={T},URI=\"filePart273.1.mp4\""),
        "DURATION=0.3,URI=\"filePart273.1.mp4\"",
    );
    does_not_follow(&a, &b, "segment 273 in progress had parts");
}

#[test]
fn the_hinted_part_is_the_next_one_listed() {
    let a = live(266, 0, 266..273, 3);
    does_not_follow(
        &a,
        &live(266, 0, 266..273, 4).replace("filePart273.3.mp4", "other.mp4"),
        "EXT-X-PRELOAD-HINT promised filePart273.3.mp4 but the next part listed is other.mp4",
    );
    let full = live(266, 0, 266..273, 12);
    does_not_follow(
        &full,
        &live(266, 0, 266..274, 1).replace("filePart274.0.mp4", "x.mp4"),
        "promised filePart274.0.mp4 but the next part listed is x.mp4",
    );
    // After a discontinuity the server MAY drop its plan.
    let next = live(266, 0, 266..274, 1).replace("filePart274.0.mp4", "x.mp4");
    let next = next.replace(
        "#EXT-X-PART:DURATION=0.33334,URI=\"x.mp4\"",
        "#EXT-X-DISCONTINUITY\n#EXT-X-PART:DURATION=0.33334,URI=\"x.mp4\"",
    );
    follows(&full, &next);
}

#[test]
fn listed_segments_do_not_change() {
    let a = live(266, 0, 266..273, 3);
    does_not_follow(
        &a,
        &live(266, 0, 266..273, 4).replace("fileSequence268.mp4", "fileSequence268b.mp4"),
        "segment 268 changed its URI from fileSequence268.mp4 to fileSequence268b.mp4",
    );
    let b = edit(
        &live(266, 0, 266..273, 4),
        "#EXTINF:4.00008,\nfileSequence267.mp4",
        "#EXTINF:4.0,\nfileSequence267.mp4",
    );
    does_not_follow(
        &a,
        &b,
        "segment 267 (fileSequence267.mp4) changed its EXTINF from 4.00008 to 4",
    );
    let b = edit(
        &live(266, 0, 266..273, 4),
        "#EXTINF:4.00008,\nfileSequence269.mp4",
        "#EXT-X-DISCONTINUITY\n#EXTINF:4.00008,\nfileSequence269.mp4",
    );
    does_not_follow(
        &a,
        &b,
        "segment 269 (fileSequence269.mp4) changed its EXT-X-DISCONTINUITY",
    );
    // Parts of a listed segment may leave, oldest first, but nothing else.
    let b = edit(
        &live(266, 0, 266..273, 4),
        "#EXT-X-PART:DURATION=0.33334,URI=\"filePart271.0.mp4\",INDEPENDENT=YES\n",
        "",
    );
    follows(&a, &b);
    let b = edit(
        &live(266, 0, 266..273, 4),
        "#EXT-X-PART:DURATION=0.33334,URI=\"filePart272.5.mp4\"\n",
        "",
    );
    does_not_follow(&a, &b, "segment 272's parts were [");
}

#[test]
fn no_segment_is_lost_inside_the_window() {
    let a = live(266, 0, 266..273, 3);
    does_not_follow(
        &a,
        &live(266, 0, 266..272, 0),
        "segments [272] are gone though EXT-X-MEDIA-SEQUENCE 266 still covers them",
    );
    does_not_follow(
        &a,
        &live(265, 0, 265..274, 0),
        "EXT-X-MEDIA-SEQUENCE went back from 266 to 265",
    );
    does_not_follow(
        &a,
        &live(266, 0, 266..273, 4).replace("TARGETDURATION:4", "TARGETDURATION:5"),
        "EXT-X-TARGETDURATION changed from 4 to 5",
    );
}

#[test]
fn removing_segments_leaves_three_target_durations() {
    let a = live(266, 0, 266..273, 3);
    // 271..273 complete is 8 s, plus a part: under 12 s.
    does_not_follow(
        &a,
        &live(271, 0, 271..273, 3),
        "segments were removed leaving 9.00018 s, less than three target durations (12 s)",
    );
    follows(&a, &live(270, 0, 270..273, 3));
}

#[test]
fn the_discontinuity_sequence_counts_discontinuities_leaving() {
    let with_disc = |text: String| {
        edit(
            &text,
            "#EXTINF:4.00008,\nfileSequence267.mp4",
            "#EXT-X-DISCONTINUITY\n#EXTINF:4.00008,\nfileSequence267.mp4",
        )
    };
    let a = with_disc(live(266, 3, 266..273, 3));
    follows(&a, &with_disc(live(267, 3, 267..273, 4))); // the tag is still there
    follows(&a, &live(268, 4, 268..273, 4)); // it left: +1
    does_not_follow(
        &a,
        &live(268, 3, 268..273, 4),
        "EXT-X-DISCONTINUITY-SEQUENCE is 3 but should be 4",
    );
    does_not_follow(
        &a,
        &live(268, 5, 268..273, 4),
        "EXT-X-DISCONTINUITY-SEQUENCE is 5 but should be 4",
    );
    does_not_follow(
        &live(266, 3, 266..273, 3),
        &live(267, 2, 267..273, 4),
        "EXT-X-DISCONTINUITY-SEQUENCE went back from 3 to 2",
    );
}

#[test]
fn nothing_follows_the_end() {
    let ended = format!(
        "{}\n#EXT-X-ENDLIST\n",
        live(266, 0, 266..273, 0)
            .lines()
            .filter(|l| !l.starts_with("#EXT-X-PRELOAD-HINT"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let again = live(266, 0, 266..274, 0);
    does_not_follow(
        &ended,
        &again,
        "the previous playlist had EXT-X-ENDLIST, this one has not",
    );
    does_not_follow(
        &ended,
        &again,
        "segments after EXT-X-ENDLIST: the last segment was 272, now 273",
    );
    follows(&ended, &ended);
}

#[test]
fn advisories_name_the_shoulds() {
    // Parts listed further than three target durations from the end SHOULD go.
    let notes = advisories(&accepts(&live(266, 0, 266..273, 3)));
    assert!(notes.is_empty(), "{notes:?}");
    // Segment 268 ends 16 s from the end, 269 12 s (within rounding), 270 8 s.
    let mut text = live(266, 0, 266..273, 0);
    for msn in [268u64, 269, 270] {
        let parts: String = (0..12)
            .map(|i| {
                format!(
                    "#EXT-X-PART:DURATION={T},URI=\"filePart{msn}.{i}.mp4\"{}\n",
                    if i == 0 { ",INDEPENDENT=YES" } else { "" }
                )
            })
            .collect();
        text = edit(
            &text,
            &format!("#EXTINF:4.00008,\nfileSequence{msn}.mp4"),
            &format!("{parts}#EXTINF:4.00008,\nfileSequence{msn}.mp4"),
        );
    }
    let notes = advisories(&accepts(&text));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("segment 268 still lists its parts 16.00032 s from the end"),
        "{notes:?}"
    );
    // A segment's first part SHOULD be INDEPENDENT=YES.
    let text = live(266, 0, 266..273, 3)
        .replace("filePart272.0.mp4\",INDEPENDENT=YES", "filePart272.0.mp4\"");
    let notes = advisories(&accepts(&text));
    assert_eq!(
        notes,
        ["segment 272's first part filePart272.0.mp4 has no INDEPENDENT=YES"]
    );
}

#[test]
fn ffmpeg_style_dates_between_extinf_and_uri_are_fine_without_parts() {
    // ffmpeg's hls muxer writes EXT-X-PROGRAM-DATE-TIME after the EXTINF.
    let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:12\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init_0.mp4\"\n#EXTINF:1.000000,\n#EXT-X-PROGRAM-DATE-TIME:2026-12-01T12:41:32.332+0000\nseg12.m4s\n#EXTINF:1.000000,\n#EXT-X-PROGRAM-DATE-TIME:2026-12-01T12:41:33.332+0000\nseg13.m4s\n#EXTINF:1.000000,\n#EXT-X-PROGRAM-DATE-TIME:2026-12-01T12:41:34.332+0000\nseg14.m4s\n";
    let p = accepts(text);
    assert_eq!(
        p.segments[1].program_date_time.as_deref(),
        Some("2026-12-01T12:41:33.332+0000")
    );
    // With parts, the date belongs before the segment's first part.
    let late = edit(
        &good(),
        "#EXTINF:4.00008,\nfileSequence272.mp4",
        "#EXTINF:4.00008,\n#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:14:04.106Z\nfileSequence272.mp4",
    );
    parse_rejects(
        &late,
        "EXT-X-PROGRAM-DATE-TIME after the first EXT-X-PART of its segment",
    );
}

#[test]
fn renditions_share_target_duration_and_server_control() {
    let a = parsed(&good());
    let b = parsed(&edit(&good(), "PART-HOLD-BACK=1.0", "PART-HOLD-BACK=1.1"));
    llhls::validate_renditions(&[&a, &a.clone()]).unwrap();
    let err = llhls::validate_renditions(&[&a, &b]).unwrap_err();
    assert!(
        err.contains("rendition 1 has EXT-X-SERVER-CONTROL"),
        "{err}"
    );
}
