use super::*;
use crate::media::TimeBase;

/// libx264's 640x360 High SPS in an avcC record, with a PPS.
fn video_config() -> MediaMessage {
    let sps = [
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    let mut rec = vec![1, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
    rec.extend_from_slice(&sps);
    rec.extend_from_slice(&[1, 0, 4, 0x68, 0xeb, 0xe3, 0xcb]);
    MediaMessage::Config(TrackConfig {
        kind: TrackKind::Video,
        codec: Codec::H264,
        extradata: Bytes::from(rec),
    })
}

fn audio_config(asc: [u8; 2]) -> MediaMessage {
    MediaMessage::Config(TrackConfig {
        kind: TrackKind::Audio,
        codec: Codec::Aac,
        extradata: Bytes::copy_from_slice(&asc),
    })
}

fn frame(kind: TrackKind, ms: i64, key: bool) -> MediaMessage {
    MediaMessage::Frame(EncodedFrame {
        kind,
        codec: if kind == TrackKind::Video {
            Codec::H264
        } else {
            Codec::Aac
        },
        pts: ms,
        dts: ms,
        time_base: TimeBase::MILLIS,
        keyframe: key,
        data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
    })
}

/// 30 fps video (keyframe every `gop` frames) and 48 kHz AAC, interleaved by time, for `ms`.
fn av(seg: &mut Segmenter, from_ms: i64, ms: i64, gop: i64, out: &mut Vec<Event>) {
    let mut v = 0i64;
    let mut a = 0i64;
    loop {
        let vt = from_ms + v * 1000 / 30;
        let at = from_ms + a * 1024 * 1000 / 48_000;
        if vt.min(at) >= from_ms + ms {
            break;
        }
        if vt <= at {
            seg.push(&frame(TrackKind::Video, vt, v % gop == 0), 0, out);
            v += 1;
        } else {
            seg.push(&frame(TrackKind::Audio, at, true), 0, out);
            a += 1;
        }
    }
}

/// Parts as (duration, independent, opens a segment), segment ends as None.
type Shape = Option<(u64, bool, bool)>;

fn shape(events: &[Event]) -> Vec<Shape> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Part { part, start, .. } => {
                Some(Some((part.duration_ms, part.independent, start.is_some())))
            }
            Event::SegmentEnd => Some(None),
            Event::Init { .. } => None,
        })
        .collect()
}

#[test]
fn parts_fit_the_target_and_segments_start_on_keyframes() {
    let mut seg = Segmenter::new(1000, 200);
    let mut out = Vec::new();
    seg.push(&video_config(), 0, &mut out);
    seg.push(&audio_config([0x11, 0x90]), 0, &mut out);
    av(&mut seg, 0, 4000, 30, &mut out);
    seg.finish(0, &mut out);
    assert!(matches!(out[0], Event::Init { id: 0, .. }));
    let parts = shape(&out);
    let segments: Vec<&[Shape]> = parts.split(|p| p.is_none()).collect();
    // Four 1 s segments of five 200 ms parts, the first independent, then nothing after the last end.
    assert_eq!(segments.len(), 5, "{parts:?}");
    assert!(segments[4].is_empty());
    for (i, s) in segments[..4].iter().enumerate() {
        let durations: Vec<u64> = s.iter().map(|p| p.unwrap().0).collect();
        let total = durations.iter().sum::<u64>();
        if i < 3 {
            assert_eq!(total, 1000, "{durations:?}");
        } else {
            // The last one ends where its last sample (audio here) ends.
            assert!((990..=1030).contains(&total), "{durations:?}");
        }
        assert!(
            durations[..4].iter().all(|&d| (170..=201).contains(&d)),
            "{durations:?}"
        );
        assert!(s[0].unwrap().1 && s[0].unwrap().2);
        assert!(s[1..].iter().all(|p| !p.unwrap().1 && !p.unwrap().2));
    }
}

#[test]
fn uneven_frame_intervals_never_make_a_part_longer_than_the_target() {
    // A returning anchor's first pictures clamped to the attachment's base
    // come closer together (15, 25 ms) than the 33s around them. Wherever
    // such a pair falls in a part, the part stays within its target.
    for shift in 0..12 {
        let mut seg = Segmenter::new(1000, 200);
        let mut out = Vec::new();
        seg.push(&video_config(), 0, &mut out);
        let mut t = 0i64;
        for i in 0..240i64 {
            seg.push(&frame(TrackKind::Video, t, i % 30 == 0), 0, &mut out);
            t += match (i + shift) % 12 {
                4 => 15,
                5 => 25,
                _ => 33,
            };
        }
        let parts = shape(&out);
        assert!(parts.len() > 30, "{parts:?}");
        for p in parts.iter().flatten() {
            assert!(p.0 <= 201, "shift {shift}: a part of {} ms: {parts:?}", p.0);
        }
    }
}

#[test]
fn audio_ahead_of_the_video_at_the_end_never_makes_a_part_longer_than_the_target() {
    // An anchor leaves: its audio had run up to `lead` ms ahead of its last
    // picture. The closing part ends at the target and the rest of the
    // audio is a part of its own.
    for lead in [0i64, 8, 30, 150, 260, 450] {
        for tail_ms in [100i64, 190, 210, 350] {
            let mut seg = Segmenter::new(1000, 200);
            let mut out = Vec::new();
            seg.push(&video_config(), 0, &mut out);
            seg.push(&audio_config([0x11, 0x90]), 0, &mut out);
            let ms = 2000 + tail_ms;
            av(&mut seg, 0, ms, 30, &mut out);
            let mut a = ms * 48 / 1024 + 1;
            loop {
                let at = a * 1024 * 1000 / 48_000;
                if at >= ms + lead {
                    break;
                }
                seg.push(&frame(TrackKind::Audio, at, true), 0, &mut out);
                a += 1;
            }
            seg.finish(0, &mut out);
            let parts = shape(&out);
            for p in parts.iter().flatten() {
                assert!(
                    p.0 <= 201,
                    "lead {lead}, tail {tail_ms}: a part of {} ms: {parts:?}",
                    p.0
                );
            }
            // Nothing is lost: the parts cover the audio up to its end.
            let total: u64 = parts.iter().flatten().map(|p| p.0).sum();
            assert!(
                total as i64 + 25 >= ms + lead,
                "lead {lead}: {total} ms: {parts:?}"
            );
        }
    }
}

#[test]
fn a_long_gop_makes_longer_segments_with_dependent_parts() {
    let mut seg = Segmenter::new(1000, 200);
    let mut out = Vec::new();
    seg.push(&video_config(), 0, &mut out);
    av(&mut seg, 0, 4100, 60, &mut out);
    let parts = shape(&out);
    let segments: Vec<&[Shape]> = parts.split(|p| p.is_none()).collect();
    let total: u64 = segments[0].iter().map(|p| p.unwrap().0).sum();
    assert_eq!(total, 2000, "a segment waits for the keyframe at 2 s");
}

#[test]
fn a_new_configuration_makes_a_new_init_and_a_discontinuity() {
    let mut seg = Segmenter::new(1000, 200);
    let mut out = Vec::new();
    seg.push(&video_config(), 0, &mut out);
    seg.push(&audio_config([0x11, 0x90]), 0, &mut out);
    av(&mut seg, 0, 1500, 30, &mut out);
    out.clear();
    seg.push(&audio_config([0x12, 0x10]), 0, &mut out);
    // The open segment ends at once.
    assert_eq!(shape(&out).last(), Some(&None));
    out.clear();
    av(&mut seg, 2000, 500, 30, &mut out);
    match &out[0] {
        Event::Init { id, info, .. } => {
            assert_eq!(*id, 1);
            assert_eq!(info.audio_timescale, Some(44_100));
        }
        other => panic!("expected an init, got {other:?}"),
    }
    match &out[1] {
        Event::Part {
            start: Some(start), ..
        } => {
            assert!(start.discontinuity);
            assert_eq!(start.init, 1);
        }
        other => panic!("expected a segment's first part, got {other:?}"),
    }
}

#[test]
fn discontinuity_closes_the_segment_and_marks_the_next() {
    let mut seg = Segmenter::new(1000, 200);
    let mut out = Vec::new();
    seg.push(&video_config(), 0, &mut out);
    av(&mut seg, 0, 700, 30, &mut out);
    seg.discontinuity(&mut out);
    assert_eq!(shape(&out).last(), Some(&None));
    out.clear();
    // Frames before the next keyframe are not shown.
    seg.push(&frame(TrackKind::Video, 800, false), 0, &mut out);
    av(&mut seg, 900, 500, 30, &mut out);
    let first = out.iter().find_map(|e| match e {
        Event::Part { start, .. } => Some(*start),
        _ => None,
    });
    assert!(
        first
            .flatten()
            .is_some_and(|s| s.discontinuity && s.init == 0)
    );
    assert!(!out.iter().any(|e| matches!(e, Event::Init { .. })));
}

#[test]
fn audio_only_streams_wait_for_video_then_cut_on_any_frame() {
    let mut seg = Segmenter::new(1000, 200);
    let mut out = Vec::new();
    seg.push(&audio_config([0x11, 0x90]), 0, &mut out);
    for a in 0..40 {
        seg.push(
            &frame(TrackKind::Audio, a * 1024 * 1000 / 48_000, true),
            0,
            &mut out,
        );
    }
    assert!(out.is_empty(), "audio waits 1.5 s for a video track");
    for a in 40..200 {
        seg.push(
            &frame(TrackKind::Audio, a * 1024 * 1000 / 48_000, true),
            0,
            &mut out,
        );
    }
    seg.finish(0, &mut out);
    let parts = shape(&out);
    assert!(
        parts.iter().flatten().all(|p| p.1),
        "every audio part is independent"
    );
    assert!(parts.iter().flatten().all(|p| p.0 <= 200), "{parts:?}");
    let total: u64 = parts.iter().flatten().map(|p| p.0).sum();
    assert!((4200..=4300).contains(&total), "all 200 frames: {total}");
}

#[test]
fn audio_keeps_a_gapless_clock_across_parts() {
    let mut seg = Segmenter::new(1000, 200);
    let mut out = Vec::new();
    seg.push(&video_config(), 0, &mut out);
    seg.push(&audio_config([0x11, 0x90]), 0, &mut out);
    av(&mut seg, 0, 2000, 30, &mut out);
    seg.finish(0, &mut out);
    // Each fragment's audio tfdt continues where the last one ended.
    let mut expected: Option<u64> = None;
    for e in &out {
        if let Event::Part { bytes, .. } = e {
            let (tfdt, count) = audio_run(bytes).expect("audio in every part");
            if let Some(x) = expected {
                assert_eq!(tfdt, x);
            }
            expected = Some(tfdt + u64::from(count) * 1024);
        }
    }
}

/// The audio track's tfdt and sample count in a fragment.
fn audio_run(frag: &[u8]) -> Option<(u64, u32)> {
    fn boxes(mut b: &[u8]) -> Vec<(&[u8], &[u8])> {
        let mut v = Vec::new();
        while b.len() >= 8 {
            let size = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
            if size < 8 || size > b.len() {
                break;
            }
            v.push((&b[4..8], &b[8..size]));
            b = &b[size..];
        }
        v
    }
    let moof = boxes(frag).into_iter().find(|(t, _)| t == b"moof")?.1;
    for (t, traf) in boxes(moof) {
        if t != b"traf" {
            continue;
        }
        let inner = boxes(traf);
        let tfhd = inner.iter().find(|(t, _)| t == b"tfhd")?.1;
        if u32::from_be_bytes(tfhd[4..8].try_into().unwrap()) != fmp4::AUDIO_TRACK {
            continue;
        }
        let tfdt = inner.iter().find(|(t, _)| t == b"tfdt")?.1;
        let trun = inner.iter().find(|(t, _)| t == b"trun")?.1;
        return Some((
            u64::from_be_bytes(tfdt[4..12].try_into().unwrap()),
            u32::from_be_bytes(trun[4..8].try_into().unwrap()),
        ));
    }
    None
}

/// One generated stream: for each 30 fps picture slot whether the source
/// dropped it (a busy mix skips pictures), how late it is stamped (ms), and
/// how far the audio runs ahead of the video in arrival order.
#[derive(Debug, Clone)]
struct Busy {
    slots: Vec<(bool, i64)>,
    audio_jitter: Vec<i64>,
    audio_lead_ms: i64,
    gop_ms: i64,
}

fn busy() -> impl proptest::strategy::Strategy<Value = Busy> {
    use proptest::prelude::*;
    (
        proptest::collection::vec((prop::bool::weighted(0.25), 0i64..=4), 60..400),
        proptest::collection::vec(-3i64..=3, 600),
        0i64..=120,
        prop::sample::select(vec![1000i64, 2000]),
    )
        .prop_map(|(mut slots, audio_jitter, audio_lead_ms, gop_ms)| {
            // Never more than two pictures in a row missing (a 100 ms gap at
            // most): past that a single picture outlasts half a part.
            let mut run = 0;
            for s in &mut slots {
                run = if s.0 { run + 1 } else { 0 };
                if run > 2 {
                    s.0 = false;
                    run = 0;
                }
            }
            slots[0].0 = false;
            Busy {
                slots,
                audio_jitter,
                audio_lead_ms,
                gop_ms,
            }
        })
}

/// Feeds `b` (video and 48 kHz AAC, in arrival order) and finishes;
/// returns how long the media lasts: from the first picture to the last
/// held as long as the interval before it, or to the last audio frame's end.
fn feed_busy(b: &Busy, seg: &mut Segmenter, out: &mut Vec<Event>) -> i64 {
    let mut events: Vec<(i64, MediaMessage)> = Vec::new();
    let mut next_key = 0i64;
    let mut last_dts = -1i64;
    let mut last_gap = 33;
    for (i, &(dropped, late)) in b.slots.iter().enumerate() {
        if dropped {
            continue;
        }
        let slot = i as i64 * 1000 / 30;
        let dts = (slot + late).max(last_dts + 1);
        let key = slot >= next_key;
        if key {
            next_key = slot - slot % b.gop_ms + b.gop_ms;
        }
        if last_dts >= 0 {
            last_gap = dts - last_dts;
        }
        last_dts = dts;
        events.push((dts, frame(TrackKind::Video, dts, key)));
    }
    let end = b.slots.len() as i64 * 1000 / 30;
    let mut a = 0i64;
    let mut last_audio = -1i64;
    loop {
        let at = a * 1024 * 1000 / 48_000 + b.audio_jitter[a as usize % b.audio_jitter.len()];
        let at = at.max(last_audio + 1).max(0);
        if at >= end {
            break;
        }
        last_audio = at;
        events.push((at - b.audio_lead_ms, frame(TrackKind::Audio, at, true)));
        a += 1;
    }
    events.sort_by_key(|e| e.0);
    for (_, m) in &events {
        seg.push(m, 0, out);
    }
    seg.finish(0, out);
    let first = events
        .iter()
        .find(|e| matches!(&e.1, MediaMessage::Frame(f) if f.kind == TrackKind::Video));
    let first = first.map_or(0, |e| e.0);
    (last_dts + last_gap.min(100)).max(last_audio + 22) - first
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// A busy source (pictures dropped, stamps late by a few ms, audio
    /// jittered and ahead of the video) still gets parts that keep the
    /// LL-HLS rules: none longer than PART-TARGET, none but a segment's last
    /// (or an independent one) shorter than 85 % of it, segments opened by
    /// an independent part, and the parts' durations covering the stream.
    #[test]
    fn parts_keep_the_rules_when_pictures_are_dropped(b in busy()) {
        let part_ms = 200i64;
        let mut seg = Segmenter::new(1000, part_ms as u32);
        let mut out = Vec::new();
        seg.push(&video_config(), 0, &mut out);
        seg.push(&audio_config([0x11, 0x90]), 0, &mut out);
        let end = feed_busy(&b, &mut seg, &mut out);
        let parts = shape(&out);
        proptest::prop_assert_eq!(parts.last(), Some(&None), "the stream ends with a segment end");
        let segments: Vec<&[Shape]> = parts.split(|p| p.is_none()).collect();
        let mut total = 0u64;
        for s in &segments[..segments.len() - 1] {
            proptest::prop_assert!(!s.is_empty());
            let first = s[0].unwrap();
            proptest::prop_assert!(first.1 && first.2, "a segment opens with an independent part: {parts:?}");
            for (j, p) in s.iter().enumerate() {
                let (ms, independent, _) = p.unwrap();
                total += ms;
                proptest::prop_assert!(ms as i64 <= part_ms + 1, "a part of {ms} ms: {parts:?}");
                let last = j + 1 == s.len();
                proptest::prop_assert!(
                    last || independent || ms as i64 * 100 >= part_ms * 85 - 100,
                    "a part of {ms} ms before the segment's last: {parts:?}"
                );
            }
        }
        // The first segment opens at the first picture and the last
        // ends with the media (its last frame, of audio or of a picture
        // after a gap, may straddle the target): no time lost or made up
        // between.
        let total = total as i64;
        proptest::prop_assert!(total <= end + 2 && total + 100 >= end, "parts sum to {total} ms for {end} ms: {parts:?}");
    }
}
