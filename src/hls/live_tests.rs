use super::*;
use proptest::prelude::*;

fn ll(window: usize) -> LivePlaylist {
    LivePlaylist::new(LiveSettings {
        segment_ms: 1000,
        part_ms: Some(200),
        window,
    })
}

fn start(init: u32, disc: bool, n: u64) -> Option<SegmentStart> {
    Some(SegmentStart {
        discontinuity: disc,
        init,
        program_date_time_ms: 1_700_000_000_000 + n * 1000,
    })
}

/// Adds a 1 s segment of five 200 ms parts, leaving it open.
fn open_segment(p: &mut LivePlaylist, parts: usize, disc: bool) {
    let n = p.next_msn;
    for i in 0..parts {
        p.add_part(
            Part {
                duration_ms: 200,
                independent: i == 0,
            },
            start(0, disc, n),
        );
    }
}

fn segment(p: &mut LivePlaylist, disc: bool) -> Vec<u64> {
    open_segment(p, 5, disc);
    p.finish_segment().expect("open").1
}

#[test]
fn parts_hint_and_server_control_are_rendered() {
    let mut p = ll(6);
    segment(&mut p, false);
    open_segment(&mut p, 2, false);
    let text = p.render(false);
    assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n"));
    assert!(text.contains(
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=0.600,HOLD-BACK=3.0\n"
    ));
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n"));
    assert!(text.contains("#EXT-X-MAP:URI=\"init0.mp4\"\n"));
    assert!(text.contains(
        "#EXT-X-PART:DURATION=0.200,URI=\"part0.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.200,URI=\"part0.1.m4s\"\n"
    ));
    assert!(text.contains("#EXTINF:1.000,\nseg0.m4s\n"));
    assert!(
        text.contains("URI=\"part1.1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part1.2.m4s\"\n")
    );
    assert_eq!(text.matches("#EXT-X-MAP").count(), 1, "{text}");
}

#[test]
fn plain_fmp4_lists_segments_only() {
    let mut p = LivePlaylist::new(LiveSettings {
        segment_ms: 2000,
        part_ms: None,
        window: 3,
    });
    segment(&mut p, false);
    open_segment(&mut p, 2, false);
    let text = p.render(true);
    assert!(!text.contains("PART"), "{text}");
    assert!(!text.contains("SERVER-CONTROL"), "{text}");
    assert!(!text.contains("SKIP"), "{text}");
    assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
    let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("valid");
    assert_eq!(parsed.segments.len(), 1);
    assert!(parsed.segments[0].map.is_some());
}

#[test]
fn window_slides_and_discontinuities_are_counted_when_they_leave() {
    let mut p = ll(3);
    segment(&mut p, false);
    segment(&mut p, true);
    segment(&mut p, false);
    assert!(segment(&mut p, false) == vec![0]);
    let text = p.render(false);
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"));
    assert!(!text.contains("DISCONTINUITY-SEQUENCE"));
    assert!(text.contains("#EXT-X-DISCONTINUITY\n"));
    assert_eq!(segment(&mut p, false), vec![1]);
    let text = p.render(false);
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
}

#[test]
fn a_new_init_section_is_mapped_where_it_starts() {
    let mut p = ll(6);
    segment(&mut p, false);
    p.add_part(
        Part {
            duration_ms: 200,
            independent: true,
        },
        start(1, true, 1),
    );
    let text = p.render(false);
    let second = text
        .find("#EXT-X-MAP:URI=\"init1.mp4\"")
        .expect("second map");
    assert!(text[..second].ends_with("#EXT-X-DISCONTINUITY\n"), "{text}");
    assert_eq!(p.inits_in_use().collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn parts_are_listed_for_the_last_three_target_durations_only() {
    let mut p = ll(10);
    for _ in 0..6 {
        segment(&mut p, false);
    }
    let text = p.render(false);
    // 6 s of segments, target 1 s: the last three segments keep their parts.
    assert!(!text.contains("URI=\"part2.0.m4s\""), "{text}");
    assert!(text.contains("URI=\"part3.0.m4s\""), "{text}");
    assert!(text.contains("URI=\"part5.4.m4s\""), "{text}");
}

#[test]
fn blocking_reload_answers_when_the_part_exists() {
    let mut p = ll(6);
    assert_eq!(p.reload(0, Some(0)), Reload::Wait);
    open_segment(&mut p, 2, false);
    assert_eq!(p.reload(0, Some(1)), Reload::Ready);
    assert_eq!(p.reload(0, Some(2)), Reload::Wait);
    assert_eq!(p.reload(0, None), Reload::Wait);
    assert!(matches!(p.reload(0, Some(5)), Reload::TooFar(_)));
    assert!(matches!(p.reload(1, Some(3)), Reload::TooFar(_)));
    assert_eq!(p.reload(1, Some(0)), Reload::Wait);
    assert!(matches!(p.reload(3, None), Reload::TooFar(_)));
    assert_eq!(p.reload(2, None), Reload::Wait);
    open_segment(&mut p, 3, false);
    p.finish_segment();
    assert_eq!(p.reload(0, None), Reload::Ready);
    // Segment 0 ended with five parts: part 5 of it means part 0 of segment 1.
    assert_eq!(p.reload(0, Some(5)), Reload::Wait);
    assert!(p.may_wait_for_part(1, 0));
    assert!(p.may_wait_for_part(1, 2));
    assert!(!p.may_wait_for_part(1, 3));
    assert!(!p.may_wait_for_part(0, 5));
    open_segment(&mut p, 1, false);
    assert_eq!(p.reload(0, Some(5)), Reload::Ready);
    assert_eq!(p.reload(1, Some(0)), Reload::Ready);
    assert_eq!(p.reload(1, Some(1)), Reload::Wait);
    p.end();
    assert_eq!(p.reload(9, Some(9)), Reload::Ready);
    assert!(
        p.render(false)
            .ends_with("#EXTINF:0.200,\nseg1.m4s\n#EXT-X-ENDLIST\n")
    );
}

#[test]
fn delta_updates_skip_what_is_older_than_the_boundary() {
    let mut p = ll(12);
    for _ in 0..10 {
        segment(&mut p, false);
    }
    open_segment(&mut p, 1, false);
    let full = p.render(false);
    let delta = p.render(true);
    // 10.2 s listed, CAN-SKIP-UNTIL 6 s: segments ending at or before 4.2 s go.
    assert!(delta.contains("#EXT-X-VERSION:9\n"));
    assert!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"),
        "{delta}"
    );
    assert!(!delta.contains("seg3.m4s") && delta.contains("seg4.m4s"));
    assert!(delta.contains("#EXT-X-MAP"), "a delta keeps its map");
    assert!(full.contains("seg0.m4s") && !full.contains("SKIP:"));
}

#[test]
fn object_names() {
    assert_eq!(Object::parse("index.m3u8"), Some(Object::Playlist));
    assert_eq!(Object::parse("master.m3u8"), Some(Object::Master));
    assert_eq!(Object::parse("init3.mp4"), Some(Object::Init(3)));
    assert_eq!(Object::parse("seg12.m4s"), Some(Object::Segment(12)));
    assert_eq!(Object::parse("seg12.ts"), Some(Object::TsSegment(12)));
    assert_eq!(Object::parse("part12.4.m4s"), Some(Object::Part(12, 4)));
    for bad in [
        "",
        "seg.m4s",
        "seg-1.m4s",
        "seg1.m4s.",
        "part1.m4s",
        "part1..m4s",
        "part1.2.3.m4s",
        "../index.m3u8",
        "init.mp4",
        "seg+1.ts",
        "index.m3u8x",
        "part99999999999999999999999.0.m4s",
    ] {
        assert_eq!(Object::parse(bad), None, "{bad}");
    }
}

#[test]
fn directives() {
    let d = |q: &str| Directives::parse(Some(q));
    assert_eq!(Directives::parse(None), Ok(Directives::default()));
    assert_eq!(
        d("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES&t=123"),
        Ok(Directives {
            msn: Some(5),
            part: Some(2),
            skip: true
        })
    );
    assert_eq!(d("_HLS_skip=v2").map(|d| d.skip), Ok(true));
    assert!(d("_HLS_part=1").is_err());
    assert!(d("_HLS_msn=a").is_err());
    assert!(d("_HLS_msn=-1").is_err());
    assert!(d("_HLS_msn=1&_HLS_part=x").is_err());
    assert!(d("_HLS_msn=1&_HLS_msn=2").is_err());
    assert!(d("_HLS_msn=99999999999999999999").is_err());
    assert!(d("_HLS_msn=1&_HLS_part=9999999999").is_err());
    assert!(d("_HLS_skip=NO").is_err());
}

proptest! {
    /// Whatever the order of parts and cuts: numbering runs on, the
    /// window holds, every listed segment fits the target duration, and a
    /// request that was ready stays ready.
    #[test]
    fn playlist_invariants(steps in proptest::collection::vec((1u64..400, any::<bool>(), any::<bool>()), 1..200)) {
        let mut p = ll(4);
        let mut produced: Vec<(u64, u32)> = Vec::new();
        for (ms, cut, disc) in steps {
            let at = p.add_part(Part { duration_ms: ms, independent: cut }, start(0, disc, 0));
            produced.push(at);
            if cut {
                p.finish_segment();
            }
            prop_assert!(p.segments.len() <= 4);
            for &(m, i) in &produced {
                if m >= p.first_msn() {
                    prop_assert_eq!(p.reload(m, Some(i)), Reload::Ready);
                }
            }
            let text = p.render(false);
            let td = p.target_duration;
            for line in text.lines() {
                if let Some(d) = line.strip_prefix("#EXTINF:") {
                    let d: f64 = d.trim_end_matches(',').parse().unwrap();
                    prop_assert!(d.round() as u64 <= td);
                }
            }
            let first = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).unwrap();
            prop_assert_eq!(first.parse::<u64>().unwrap(), p.first_msn());
        }
    }
}

/// Each listed segment's (media sequence number, discontinuity sequence
/// number) as a player counts them: the sequence tags, then one more at
/// every `EXT-X-DISCONTINUITY`.
pub(crate) fn numbered(text: &str) -> Vec<(u64, u64)> {
    let tag = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0, |v| v.parse().expect("a number"))
    };
    let (mut msn, mut cc) = (
        tag("#EXT-X-MEDIA-SEQUENCE:"),
        tag("#EXT-X-DISCONTINUITY-SEQUENCE:"),
    );
    let mut out = Vec::new();
    for line in text.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            cc += 1;
        } else if line.starts_with("#EXTINF") {
            out.push((msn, cc));
            msn += 1;
        }
    }
    out
}

proptest! {
    /// A stream continued on another node after a failover goes on where
    /// the first node's last segment left it: the next media sequence
    /// number, one discontinuity later, however the first node's window
    /// and discontinuities stood (its open segment lost with it).
    #[test]
    fn a_continued_stream_goes_on_after_one_discontinuity(
        discs in proptest::collection::vec(any::<bool>(), 1..20),
        window in 1usize..6,
        open_parts in 0usize..4,
        later in 1usize..8,
    ) {
        let mut first = ll(window);
        for d in &discs {
            segment(&mut first, *d);
        }
        let (last_msn, last_cc) = *numbered(&first.render(false)).last().expect("segments");
        open_segment(&mut first, open_parts, false);
        let at = first.position();
        prop_assert_eq!(Position::parse(&at.encode()), Some(at));

        let mut second = ll(window);
        prop_assert!(second.continue_from(at));
        for _ in 0..later {
            segment(&mut second, false);
        }
        let listed = numbered(&second.render(false));
        let (msn, cc) = listed[0];
        let first_listed = second.first_msn();
        prop_assert_eq!(msn, first_listed);
        // Whatever slid out of the window, numbers go on from the first node's.
        prop_assert!(msn > last_msn);
        prop_assert_eq!(cc, last_cc + 1);
        prop_assert!(listed.iter().all(|&(_, c)| c == last_cc + 1));
        if later <= window {
            prop_assert_eq!(msn, at.next_msn);
            prop_assert!(msn <= last_msn + 2);
        }
    }
}

#[test]
fn a_stream_with_parts_does_not_take_another_numbering() {
    let mut p = ll(3);
    open_segment(&mut p, 1, false);
    assert!(!p.continue_from(Position {
        next_msn: 9,
        last_cc: 2
    }));
    assert_eq!(p.next_part(), (0, 1));
}
