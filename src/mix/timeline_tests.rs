use super::*;

const MS: Duration = Duration::from_millis(1);

/// 30 fps video, 48 kHz audio in frames of 1024 samples (21.33 ms).
fn clock(t0: Instant) -> OutputClock {
    OutputClock::new(t0, Some(30), 48_000, 1024)
}

/// The lead an input's frames must keep to be laid in time (the mixer's).
fn min_ahead(c: &OutputClock) -> Duration {
    c.audio_lead() + ARRIVAL_MARGIN
}

fn released<T>(tl: &mut InputTimeline<T>, now: Instant, c: &OutputClock) -> Vec<Released<T>> {
    let mut out = Vec::new();
    tl.release(now, c, &mut out);
    out
}

#[test]
fn audio_and_video_of_an_input_share_one_clock_in_either_arrival_order() {
    let t0 = Instant::now();
    let c = clock(t0);
    for video_first in [true, false] {
        let mut tl = InputTimeline::default();
        let order = if video_first {
            [TrackKind::Video, TrackKind::Audio]
        } else {
            [TrackKind::Audio, TrackKind::Video]
        };
        // Both stamped 1000 ms; the second arrives 40 ms after the first.
        tl.push(order[0], Some(1000), "first", t0, min_ahead(&c));
        tl.push(order[1], Some(1000), "second", t0 + 40 * MS, min_ahead(&c));
        // Both are due a jitter delay after the first arrival.
        let due = t0 + JITTER_DELAY;
        assert_eq!(tl.video.front().unwrap().0, due);
        assert_eq!(tl.audio.front().unwrap().0, due);
    }
}

#[test]
fn pictures_are_released_at_the_nearest_tick_and_audio_a_frame_ahead() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = InputTimeline::default();
    // Arriving 5 ms after the clock's start: due clear of the boundary
    // between two ticks (see the next tests for one due at it).
    let arrival = t0 + 5 * MS;
    tl.push(TrackKind::Video, Some(0), "v", arrival, min_ahead(&c));
    tl.push(TrackKind::Audio, Some(0), "a", arrival, min_ahead(&c));
    let due = arrival + JITTER_DELAY;
    // Audio leads by one output frame and a margin.
    let audio_at = due - c.audio_lead();
    assert!(released(&mut tl, audio_at - MS, &c).is_empty());
    assert_eq!(
        released(&mut tl, audio_at, &c),
        vec![Released::Audio {
            msg: "a",
            at: c.sample_at(due)
        }]
    );
    // Video leads by half a frame (16.7 ms at 30 fps).
    let video_at = due - c.video_lead();
    assert!(released(&mut tl, video_at - MS, &c).is_empty());
    assert_eq!(released(&mut tl, video_at, &c), vec![Released::Video("v")]);
}

#[test]
fn a_frame_too_late_to_be_laid_anchors_the_clock_again() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = InputTimeline::default();
    tl.push(TrackKind::Audio, Some(0), 0, t0, min_ahead(&c));
    // Stamped 100 ms but arriving 500 ms later: due in the past.
    let late = t0 + 500 * MS;
    tl.push(TrackKind::Audio, Some(100), 1, late, min_ahead(&c));
    assert_eq!(tl.audio.back().unwrap().0, late + JITTER_DELAY);
    // The next frame follows the new anchor, not the old one.
    tl.push(
        TrackKind::Audio,
        Some(120),
        2,
        late + 20 * MS,
        min_ahead(&c),
    );
    assert_eq!(tl.audio.back().unwrap().0, late + 20 * MS + JITTER_DELAY);
}

#[test]
fn a_late_first_frame_does_not_hold_every_later_one() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = InputTimeline::default();
    // The first frame (stamped 0) arrives 300 ms late; the rest on time.
    tl.push(TrackKind::Video, Some(0), 0, t0 + 300 * MS, min_ahead(&c));
    let mut last_wait = Duration::ZERO;
    for i in 1..=90u32 {
        let ts = i64::from(i) * 33;
        let now = t0 + Duration::from_millis(ts as u64);
        if now < t0 + 300 * MS {
            continue; // what was due before the first frame came in with it
        }
        tl.push(TrackKind::Video, Some(ts), i, now, min_ahead(&c));
        last_wait = tl.video.back().unwrap().0.saturating_duration_since(now);
    }
    // After two seconds of frames early for the clock, they wait the jitter
    // delay again, not 300 ms more.
    assert!(last_wait <= JITTER_DELAY + MS, "{last_wait:?}");
}

#[test]
fn the_jitter_buffer_is_the_inputs_own() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = InputTimeline::new(60 * MS);
    tl.push(TrackKind::Video, Some(0), 0, t0, min_ahead(&c));
    tl.push(TrackKind::Audio, Some(33), 1, t0 + 33 * MS, min_ahead(&c));
    assert_eq!(tl.video.back().unwrap().0, t0 + 60 * MS);
    assert_eq!(tl.audio.back().unwrap().0, t0 + 93 * MS);
}

#[test]
fn a_burst_is_paced_not_followed() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = InputTimeline::default();
    tl.push(TrackKind::Video, Some(0), 0, t0, min_ahead(&c));
    // A second of backlog arrives at once, then frames come on time.
    for i in 1..=30u32 {
        tl.push(
            TrackKind::Video,
            Some(i64::from(i) * 33),
            i,
            t0 + MS,
            min_ahead(&c),
        );
    }
    for i in 31..=120u32 {
        let ts = i64::from(i) * 33;
        let now = t0 + Duration::from_millis(ts as u64);
        tl.push(TrackKind::Video, Some(ts), i, now, min_ahead(&c));
        let wait = tl.video.back().unwrap().0.saturating_duration_since(now);
        assert_eq!(wait, JITTER_DELAY, "frame {i}");
    }
    // The burst itself kept its timestamps' spacing.
    let dues: Vec<Instant> = tl.video.iter().take(31).map(|(d, _)| *d).collect();
    assert_eq!(dues[30].duration_since(dues[0]), 990 * MS);
}

#[test]
fn a_timestamp_jump_anchors_the_clock_again() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = InputTimeline::default();
    tl.push(TrackKind::Video, Some(5_000), 0, t0, min_ahead(&c));
    // A reconnect: timestamps restart a minute ahead, 33 ms later.
    let now = t0 + 33 * MS;
    tl.push(TrackKind::Video, Some(65_000), 1, now, min_ahead(&c));
    assert_eq!(tl.video.back().unwrap().0, now + JITTER_DELAY);
    // A small step ahead is kept as the timestamps say.
    tl.push(TrackKind::Video, Some(65_500), 2, now, min_ahead(&c));
    assert_eq!(tl.video.back().unwrap().0, now + 500 * MS + JITTER_DELAY);
    // A frame far behind (the reconnect's other direction) anchors again.
    tl.push(TrackKind::Video, Some(5_000), 3, now + MS, min_ahead(&c));
    assert_eq!(tl.video.back().unwrap().0, now + MS + JITTER_DELAY);
}

#[test]
fn configs_keep_their_place_in_the_queue() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = InputTimeline::default();
    tl.push(TrackKind::Video, Some(0), "f0", t0, min_ahead(&c));
    tl.push(TrackKind::Video, Some(500), "f1", t0, min_ahead(&c));
    tl.push(TrackKind::Video, None, "config", t0 + MS, min_ahead(&c));
    tl.push(TrackKind::Video, Some(510), "f2", t0 + MS, min_ahead(&c));
    // The config is due with the frame before it, so it is decoded between.
    let all = released(&mut tl, t0 + 2 * JITTER_DELAY + Duration::from_secs(1), &c);
    assert_eq!(
        all,
        Vec::from(["f0", "f1", "config", "f2"].map(Released::Video))
    );
    // A config on an empty queue is due at once.
    tl.push(TrackKind::Audio, None, "aconfig", t0, min_ahead(&c));
    assert_eq!(tl.audio.front().unwrap().0, t0);
}

#[test]
fn the_jitter_buffer_is_bounded_and_says_when_it_dropped() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = InputTimeline::default();
    for i in 0..MAX_PENDING {
        assert!(!tl.push(TrackKind::Video, Some(i as i64), i, t0, min_ahead(&c)));
    }
    assert!(tl.push(
        TrackKind::Video,
        Some(MAX_PENDING as i64),
        MAX_PENDING,
        t0,
        min_ahead(&c)
    ));
    assert_eq!(tl.video.len(), MAX_PENDING);
    assert_eq!(tl.video.front().unwrap().1, 1);
    // Audio has its own bound.
    assert!(!tl.push(TrackKind::Audio, Some(0), 0, t0, min_ahead(&c)));
}

#[test]
fn a_stalled_input_freezes_then_shows_its_placeholder() {
    let t0 = Instant::now();
    let freeze = Duration::from_secs(2);
    let mut tl = InputTimeline::<()>::default();
    assert!(!tl.shows_picture(t0, freeze), "no picture yet");
    tl.showed_picture(t0);
    assert!(tl.shows_picture(t0 + Duration::from_secs(1), freeze));
    assert!(tl.shows_picture(t0 + freeze, freeze));
    assert!(!tl.shows_picture(t0 + freeze + MS, freeze));
    // A new picture brings it back.
    tl.showed_picture(t0 + Duration::from_secs(5));
    assert!(tl.shows_picture(t0 + Duration::from_secs(6), freeze));
}

/// Every tick a thread late at `now` produces, call after call, until it
/// has caught up: (pictures, audio frames, pictures skipped).
fn catch_up(c: &mut OutputClock, now: Instant) -> (Vec<u64>, Vec<u64>, u64) {
    let (mut videos, mut audios, mut skipped) = (Vec::new(), Vec::new(), 0);
    while c.next() <= now {
        let d = c.due(now);
        videos.extend(d.video);
        audios.extend(d.audio);
        skipped += d.skipped;
    }
    (videos, audios, skipped)
}

#[test]
fn ticks_are_regular_and_an_overloaded_thread_keeps_every_audio_tick_and_sheds_late_pictures() {
    let t0 = Instant::now();
    let mut c = clock(t0);
    assert_eq!(c.next(), t0);
    assert_eq!(
        c.due(t0),
        Due {
            video: Some(0),
            audio: Some(0),
            skipped: 0,
        }
    );
    // Video every 33.333 ms, audio every 21.333 ms: the next is audio.
    assert_eq!(c.next(), t0 + Duration::from_nanos(21_333_333));
    assert_eq!(
        c.due(t0 + 20 * MS),
        Due {
            video: None,
            audio: None,
            skipped: 0,
        }
    );
    // A short stall (90 ms): every tick comes, one of each kind a call,
    // numbered in order, until it has caught up; nothing is skipped.
    let (videos, audios, skipped) = catch_up(&mut c, t0 + 90 * MS);
    assert_eq!((videos, audios, skipped), (vec![1, 2], vec![1, 2, 3, 4], 0));
    // Overload: the thread is 300 ms late. Every audio frame still comes (the
    // sound never breaks); pictures more than 100 ms late are skipped, the
    // rest come, and the numbering keeps the output's time.
    let late = t0 + 400 * MS;
    let (videos, audios, skipped) = catch_up(&mut c, late);
    assert_eq!(
        audios,
        (5..=18).collect::<Vec<_>>(),
        "no audio frame is lost"
    );
    // Pictures 3..=8 (100..267 ms) are over 100 ms late at 400 ms; 9..=12 are not.
    assert_eq!(skipped, 6);
    assert_eq!(videos, (9..=12).collect::<Vec<_>>());
    assert!(c.next() > late);
    // An audio-only clock has only audio ticks.
    let mut a = OutputClock::new(t0, None, 48_000, 1024);
    assert_eq!(
        a.due(t0),
        Due {
            video: None,
            audio: Some(0),
            skipped: 0,
        }
    );
    assert_eq!(a.video_lead(), Duration::ZERO);
}

#[test]
fn an_input_joining_mid_stream_is_heard_from_its_own_time() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut lane = AudioLane::new(1);
    // The input's first audio is due 10 s into the output.
    let pos = c.sample_at(t0 + Duration::from_secs(10));
    assert_eq!(pos, 480_000);
    lane.lay(&[vec![0.5; 1024]], pos, c.resync_samples());
    let mut mix = vec![vec![0.0; 1024]];
    // Output frames before it: silence from this input.
    lane.mix_into(&mut mix, pos - 2048, Some(1.0));
    assert!(mix[0].iter().all(|s| *s == 0.0));
    // The frame straddling its start: silence, then its samples.
    let mut mix = vec![vec![0.0; 1024]];
    lane.mix_into(&mut mix, pos - 24, Some(1.0));
    assert!(mix[0][..24].iter().all(|s| *s == 0.0));
    assert!(mix[0][24..].iter().all(|s| *s == 0.5));
    // The rest follows in the next frame.
    let mut mix = vec![vec![0.0; 1024]];
    lane.mix_into(&mut mix, pos + 1000, Some(1.0));
    assert!(mix[0][..24].iter().all(|s| *s == 0.5));
    assert!(mix[0][24..].iter().all(|s| *s == 0.0));
}

#[test]
fn chunks_whose_times_agree_join_and_a_jump_is_laid_where_it_says() {
    let mut lane = AudioLane::new(2);
    let chunk = |v: f32| vec![vec![v; 1024]; 2];
    lane.lay(&chunk(0.1), 0, 1440);
    // 10 samples off: joined right after the first chunk.
    lane.lay(&chunk(0.2), 1034, 1440);
    assert_eq!(lane.samples[0].len(), 2048);
    // Far off (a second later): laid there, silence between.
    lane.lay(&chunk(0.3), 48_000, 1440);
    assert_eq!(lane.samples[1].len(), 48_000 + 1024);
    assert_eq!(lane.samples[1][2048], 0.0);
    assert_eq!(lane.samples[1][48_000], 0.3);
    // Output moves past all of it unheard: consumed all the same.
    let mut mix = vec![vec![0.0; 1024]; 2];
    lane.mix_into(&mut mix, 60_000, None);
    assert!(mix[0].iter().all(|s| *s == 0.0));
    assert!(lane.samples[0].is_empty());
    // A new decoder's chunk for a time already produced is never heard.
    lane.restart();
    lane.lay(&chunk(0.9), 0, 1440);
    let mut mix = vec![vec![0.0; 1024]; 2];
    lane.mix_into(&mut mix, 61_024, Some(1.0));
    assert!(mix[1].iter().all(|s| *s == 0.0), "too late to be heard");
    assert!(lane.samples[1].is_empty());
}

#[test]
fn gain_and_filter_apply_when_mixing() {
    let mut lane = AudioLane::new(1);
    lane.lay(&[vec![0.5; 2048]], 0, 1440);
    let mut mix = vec![vec![0.25; 1024]];
    lane.mix_into(&mut mix, 0, Some(0.5));
    assert!(mix[0].iter().all(|s| *s == 0.5));
    // Filtered out: the samples are consumed without being heard.
    let mut mix = vec![vec![0.0; 1024]];
    lane.mix_into(&mut mix, 1024, None);
    assert!(mix[0].iter().all(|s| *s == 0.0));
    assert!(lane.samples[0].is_empty());
}

#[test]
fn a_thread_running_late_shows_every_picture_in_its_own_frame() {
    let t0 = Instant::now();
    let mut c = clock(t0);
    let mut tl = InputTimeline::new(Duration::ZERO);
    // Pictures stamped at each output tick, arriving in real time.
    let frame = |i: i64| Duration::from_micros(i as u64 * 1_000_000 / 30);
    let mut arrived = 0i64;
    // The thread wakes 80 ms late, then at its own pace: each turn takes
    // the earliest tick and releases only what that tick shows.
    let mut shown = Vec::new();
    let mut pending = Vec::new();
    let mut now = t0 + 80 * MS;
    while shown.len() < 6 {
        while t0 + frame(arrived) <= now {
            let ts = frame(arrived).as_millis() as i64;
            tl.push(
                TrackKind::Video,
                Some(ts),
                arrived,
                t0 + frame(arrived),
                min_ahead(&c),
            );
            arrived += 1;
        }
        let (at, due) = c.turn(now);
        assert_eq!(due.skipped, 0);
        // Released since the last picture's tick: what this one shows.
        pending.extend(
            released(&mut tl, at, &c)
                .into_iter()
                .filter_map(|r| match r {
                    Released::Video(i) => Some(i),
                    Released::Audio { .. } => None,
                }),
        );
        if let Some(n) = due.video {
            shown.push((n, std::mem::take(&mut pending)));
        }
        now += MS;
    }
    let expected: Vec<(u64, Vec<i64>)> = (0..6).map(|n| (n, vec![n as i64])).collect();
    assert_eq!(shown, expected);
}

/// An adaptive timeline as the mixer makes it, up to `ceiling_ms`.
fn adaptive(c: &OutputClock, ceiling_ms: u64) -> InputTimeline<u32> {
    InputTimeline::adaptive(min_ahead(c), Duration::from_millis(ceiling_ms))
}

/// Pushes a 30 fps picture stamped `i * 33` ms arriving `late` after its
/// time (`t0` being stamp 0's); its wait in the buffer.
fn picture(
    tl: &mut InputTimeline<u32>,
    c: &OutputClock,
    t0: Instant,
    i: u32,
    late: Duration,
) -> Duration {
    let ts = u64::from(i) * 33;
    let now = t0 + Duration::from_millis(ts) + late;
    tl.push(TrackKind::Video, Some(ts as i64), i, now, min_ahead(c));
    tl.video.back().unwrap().0.saturating_duration_since(now)
}

#[test]
fn an_adaptive_buffer_holds_on_time_frames_only_as_long_as_the_mix_needs() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = adaptive(&c, 150);
    let least = min_ahead(&c) + ADAPT_HEADROOM;
    for i in 0..300 {
        assert_eq!(picture(&mut tl, &c, t0, i, Duration::ZERO), least);
    }
    assert_eq!(tl.delay(), least);
    // A ceiling under what the mix needs is a fixed delay at the ceiling.
    let mut low = adaptive(&c, 50);
    assert_eq!(low.delay(), 50 * MS);
    picture(&mut low, &c, t0, 0, Duration::ZERO);
    picture(&mut low, &c, t0, 1, 30 * MS);
    assert_eq!(low.delay(), 50 * MS);
}

#[test]
fn a_late_frame_grows_the_adaptive_buffer_at_once_and_it_shrinks_in_steps() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = adaptive(&c, 150);
    let least = min_ahead(&c) + ADAPT_HEADROOM;
    for i in 0..30 {
        picture(&mut tl, &c, t0, i, Duration::ZERO);
    }
    // 50 ms late: it still gets the least wait (it is laid in time, the
    // clock is not anchored again) and the delay covers that lateness.
    assert_eq!(picture(&mut tl, &c, t0, 30, 50 * MS), least);
    assert_eq!(tl.delay(), least + 50 * MS);
    assert_eq!(tl.clock, Some((0, t0)));
    // The same lateness again needs no more.
    assert_eq!(picture(&mut tl, &c, t0, 31, 50 * MS), least);
    assert_eq!(tl.delay(), least + 50 * MS);
    // On time from then on: the delay stays for a window, then shrinks a
    // step per window down to the least.
    let mut delays = vec![tl.delay()];
    for i in 32..32 + 30 * 60 {
        picture(&mut tl, &c, t0, i, Duration::ZERO);
        if tl.delay() != *delays.last().unwrap() {
            delays.push(tl.delay());
        }
    }
    assert_eq!(
        delays,
        [least + 50 * MS, least + 30 * MS, least + 10 * MS, least]
    );
}

#[test]
fn the_adaptive_buffer_never_passes_its_ceiling() {
    let t0 = Instant::now();
    let c = clock(t0);
    let mut tl = adaptive(&c, 150);
    picture(&mut tl, &c, t0, 0, Duration::ZERO);
    // Half a second late: the delay stops at the ceiling and, that not
    // being enough, the clock is anchored again on this frame.
    let wait = picture(&mut tl, &c, t0, 1, 500 * MS);
    assert_eq!(tl.delay(), 150 * MS);
    assert_eq!(wait, 150 * MS);
    assert_eq!(tl.clock, Some((33, t0 + 533 * MS)));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Whatever the lateness (up to what the ceiling covers), no frame is
    /// too late to be laid, the delay stays within its bounds, moves down
    /// by at most a step per window, and returns to the least once the
    /// input is on time again.
    #[test]
    fn an_adaptive_buffer_covers_any_lateness_within_its_ceiling(
        lateness in proptest::collection::vec(0u64..=70, 1..600),
        ceiling in 80u64..=400,
    ) {
        let t0 = Instant::now();
        let c = clock(t0);
        let mut tl = adaptive(&c, ceiling);
        let least = min_ahead(&c) + ADAPT_HEADROOM;
        let covered = Duration::from_millis(ceiling).saturating_sub(min_ahead(&c));
        let mut last_shrink: Option<Instant> = None;
        let mut delay = tl.delay();
        for (i, late) in lateness.iter().enumerate() {
            let late = Duration::from_millis(*late).min(covered);
            let now = t0 + Duration::from_millis(i as u64 * 33) + late;
            let wait = picture(&mut tl, &c, t0, i as u32, late);
            proptest::prop_assert!(wait >= min_ahead(&c), "frame {i} waits {wait:?}");
            proptest::prop_assert_eq!(tl.clock.map(|(ts, _)| ts), Some(0));
            proptest::prop_assert!(tl.delay() >= least.min(Duration::from_millis(ceiling)));
            proptest::prop_assert!(tl.delay() <= Duration::from_millis(ceiling));
            if tl.delay() < delay {
                proptest::prop_assert!(delay - tl.delay() <= SHRINK_STEP);
                if let Some(at) = last_shrink {
                    proptest::prop_assert!(now.duration_since(at) >= SHRINK_AFTER);
                }
                last_shrink = Some(now);
            }
            delay = tl.delay();
        }
        // A minute and a half on time brings it back down.
        let n = lateness.len() as u32;
        for i in n..n + 30 * 90 {
            picture(&mut tl, &c, t0, i, Duration::ZERO);
        }
        proptest::prop_assert_eq!(tl.delay(), least.min(Duration::from_millis(ceiling)));
    }
}

/// Pictures stamped `stamp(k)` ms, arriving on time from `phase` after the
/// mix's start, through `ticks` ticks of a 30 fps mix: how many each tick
/// got, after `check` looked at the timeline.
fn pictures_per_tick(
    tl: &mut InputTimeline<u64>,
    stamp: impl Fn(u64) -> u64,
    phase: Duration,
    ticks: u64,
    check: impl Fn(&InputTimeline<u64>),
) -> Vec<usize> {
    let t0 = Instant::now();
    let c = clock(t0);
    let first = t0 + phase;
    let mut next = 0u64;
    let mut per_tick = Vec::new();
    for n in 0..ticks {
        let tick = t0 + Duration::from_nanos(n * 1_000_000_000 / 30);
        while first + stamp(next) as u32 * MS <= tick {
            let ts = stamp(next);
            tl.push(
                TrackKind::Video,
                Some(ts as i64),
                next,
                first + ts as u32 * MS,
                min_ahead(&c),
            );
            next += 1;
        }
        per_tick.push(released(tl, tick, &c).len());
        check(tl);
    }
    per_tick
}

fn adaptive_or_fixed(adaptive: bool) -> InputTimeline<u64> {
    if adaptive {
        InputTimeline::adaptive(min_ahead(&clock(Instant::now())), 400 * MS)
    } else {
        InputTimeline::default()
    }
}

#[test]
fn pictures_stamped_in_milliseconds_each_get_their_own_tick_at_any_phase() {
    // 30 fps stamped in whole milliseconds (RTMP, FLV: 0, 33, 67, 100 ...)
    // into a 30 fps mix, whatever the phase of their clock against its ticks.
    let stamp = |k: u64| (k * 1000 + 15) / 30;
    for adaptive in [false, true] {
        for phase_us in (0..33_400u64).step_by(50) {
            let mut tl = adaptive_or_fixed(adaptive);
            let phase = Duration::from_micros(phase_us);
            let per_tick = pictures_per_tick(&mut tl, stamp, phase, 300, |_| {});
            // Past the jitter buffer's fill, one picture per tick.
            let steady = &per_tick[60..];
            assert!(
                steady.iter().all(|&n| n == 1),
                "phase {phase_us} us, adaptive {adaptive}: {steady:?}"
            );
        }
    }
}

#[test]
fn a_drifting_input_is_moved_clear_of_the_boundary_without_the_offset_growing() {
    // 29.97 fps stamped in milliseconds into a 30 fps mix: its pictures
    // walk across every boundary between ticks, one a little over 33 s.
    let stamp = |k: u64| (k * 1001 + 15) / 30;
    let bound = (PICTURE_GUARD + PICTURE_CLEARANCE).as_nanos() as i64;
    let mut tl = adaptive_or_fixed(true);
    let per_tick = pictures_per_tick(&mut tl, stamp, 3 * MS, 30 * 200, |tl| {
        assert!(
            tl.picture_offset.abs() <= bound,
            "offset {}",
            tl.picture_offset
        );
    });
    let steady = &per_tick[60..];
    let doubled = steady.iter().filter(|&&n| n > 1).count();
    let empty = steady.iter().filter(|&&n| n == 0).count();
    // 200 s: six crossings, one picture repeated at each (the input is
    // slower) and none lost, give or take the crossing the offset moved
    // a picture back over.
    assert!((5..=8).contains(&empty), "{empty} ticks without a picture");
    assert!(doubled <= 2, "{doubled} ticks with two pictures");
}

#[test]
fn the_boundary_between_ticks_is_half_a_frame_past_each() {
    let t0 = Instant::now();
    let c = clock(t0);
    // Within a nanosecond: ticks are whole nanoseconds apart.
    let at = |t: Instant, ms: f64| {
        let p = c.past_picture_boundary(t).unwrap();
        assert!((p - (ms * 1e6) as i64).abs() <= 1, "{p} ns, not {ms} ms");
    };
    // 30 fps: boundaries at 16.67 ms, 50 ms, 83.3 ms...
    at(t0 + c.video_lead(), 0.0);
    at(t0 + 50 * MS, 0.0);
    at(t0 + 52 * MS, 2.0);
    at(t0 + 47 * MS, -3.0);
    at(t0, -c.video_lead().as_secs_f64() * 1e3);
    at(t0 + 33 * MS, 16.333_333);
    let audio_only = OutputClock::new(t0, None, 48_000, 1024);
    assert_eq!(audio_only.past_picture_boundary(t0), None);
}
