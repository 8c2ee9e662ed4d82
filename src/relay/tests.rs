//! The manager and a passthrough driver against the real room task and hub
//! (no media flows: what is checked is who tells whom).

use std::time::Duration;

use super::*;
use crate::media::{MediaMessage, TrackKind};
use crate::room::{Command, RoomId, SessionId};

use crate::room::testing::{self, APP};

fn gateway() -> (
    RelayManager,
    RoomHandle,
    tokio::task::JoinHandle<()>,
    PathBuf,
) {
    let (rooms, task) = crate::room::spawn(&testing::config());
    let dir = std::env::temp_dir().join(format!(
        "roomcast-relay-tests-{}-{}",
        std::process::id(),
        new_task_id()
    ));
    let relays = RelayManager::new(
        rooms.clone(),
        MediaHub::default(),
        dir.join("hls"),
        crate::hls::store::HlsStore::default(),
        1.0,
    );
    (relays, rooms, task, dir)
}

fn room() -> RoomKey {
    testing::lesson()
}

fn profile(name: &str) -> RelayProfile {
    crate::profile::load_all(None)
        .unwrap()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap()
}

fn enter(session: SessionId, user: &str) -> Command {
    testing::enter(&room(), session, user)
}

async fn stopped(relays: &RelayManager, id: &str) -> String {
    let mut st = relays.watch(id).unwrap();
    let st = crate::ticks::timeout(
        Duration::from_secs(5),
        st.wait_for(|s| matches!(s.state, TaskState::Stopped(_))),
    )
    .await
    .expect("the task stops")
    .unwrap()
    .clone();
    match st.state {
        TaskState::Stopped(why) => why,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_passthrough_refuses_mix_changes_and_ends_with_its_room() {
    let (relays, rooms, engine, dir) = gateway();
    let mut changes = relays.watch_changes();
    changes.borrow_and_update();
    let anchor = UserId::new("teacher").unwrap();
    let spec = RelaySpec::for_anchor(room(), anchor.clone(), &profile("passthrough")).unwrap();
    let id = relays.start(spec).unwrap();
    assert!(changes.has_changed().unwrap(), "a start is a change");

    // Mix changes cannot reach a passthrough: refused, with the reason.
    let refused = relays.update_mix(&id, None, vec![(anchor.clone(), 50)], None);
    assert!(
        matches!(&refused, Err(RelayError::Invalid(m)) if m.contains("not a mix task")),
        "{refused:?}"
    );
    let mix = RelaySpec::for_mix(room(), &profile("grid-720p")).unwrap();
    let refused = relays.restart_mix(&id, mix.into_mix().unwrap());
    assert!(
        matches!(refused, Err(RelayError::Invalid(_))),
        "{refused:?}"
    );
    // The stored spec is untouched by the refusals.
    assert!(relays.status(&id).unwrap().0.mix().is_none());

    // The room opens and closes around the waiting task: it ends, and says why.
    let session = rooms.new_session();
    rooms.command(enter(session, "teacher")).await.unwrap();
    rooms.command(Command::Leave { session }).await.unwrap();
    let why = stopped(&relays, &id).await;
    assert!(why.starts_with("room closed"), "{why}");
    assert_eq!(relays.stop(&id), Err(RelayError::Finished));

    rooms.shutdown().await;
    engine.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_task_started_in_a_closed_room_waits_for_the_next_opening_to_end() {
    let (relays, rooms, engine, dir) = gateway();
    // An opening and a close before the task exists are not its business.
    let first = rooms.new_session();
    rooms.command(enter(first, "a")).await.unwrap();
    rooms
        .command(Command::Leave { session: first })
        .await
        .unwrap();
    let spec =
        RelaySpec::for_anchor(room(), UserId::new("a").unwrap(), &profile("passthrough")).unwrap();
    let id = relays.start(spec).unwrap();
    let second = rooms.new_session();
    rooms.command(enter(second, "a")).await.unwrap();
    // Still waiting while the room is open: on this single-threaded
    // runtime, yielding lets the task see the opening before we look.
    assert!(rooms.has_session(second).await);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        relays.watch(&id).unwrap().borrow().state,
        TaskState::Waiting
    );
    rooms
        .command(Command::Leave { session: second })
        .await
        .unwrap();
    assert!(stopped(&relays, &id).await.starts_with("room closed"));
    rooms.shutdown().await;
    engine.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn tasks_end_when_the_gateway_shuts_down() {
    let (relays, rooms, engine, dir) = gateway();
    let spec =
        RelaySpec::for_anchor(room(), UserId::new("a").unwrap(), &profile("passthrough")).unwrap();
    let id = relays.start(spec).unwrap();
    rooms.shutdown().await;
    engine.await.unwrap();
    assert_eq!(stopped(&relays, &id).await, "shutting down");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_task_over_the_cpu_budget_is_refused_before_it_starts() {
    let (relays, rooms, engine, dir) = gateway();
    // Budget 1 core: a 720p mix (about 0.34) fits twice, not three times.
    let mix = |n: usize| {
        let mut s = RelaySpec::for_mix(room(), &profile("grid-720p")).unwrap();
        s.stream = format!("mix-{n}");
        s
    };
    let a = relays.start(mix(1)).unwrap();
    relays.start(mix(2)).unwrap();
    let refused = relays.start(mix(3));
    assert!(
        matches!(&refused, Err(RelayError::OverBudget(e)) if e.cost > e.free),
        "{refused:?}"
    );
    assert_eq!(
        relays.list().len(),
        2,
        "nothing started for the refused task"
    );
    let (budget, in_use) = relays.budget();
    assert!(
        (budget - 1.0).abs() < 1e-9 && in_use > 0.6 && in_use <= 1.0,
        "{in_use}"
    );
    // A stopped task gives its share back.
    relays.stop(&a).unwrap();
    stopped(&relays, &a).await;
    relays.start(mix(3)).unwrap();
    rooms.shutdown().await;
    engine.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn one_application_cannot_take_every_task_place() {
    let (relays, rooms, engine, dir) = gateway();
    let relays = relays.with_tasks_per_app(2);
    let spec = |app: u64, user: &str| {
        let key = RoomKey {
            app,
            room: RoomId::parse("lesson", None).unwrap(),
        };
        RelaySpec::for_anchor(key, UserId::new(user).unwrap(), &profile("passthrough")).unwrap()
    };
    let a = relays.start(spec(APP, "a")).unwrap();
    relays.start(spec(APP, "b")).unwrap();
    assert_eq!(
        relays.start(spec(APP, "c")),
        Err(RelayError::TooManyForApp(2))
    );
    // Another application still starts tasks.
    relays.start(spec(APP + 1, "c")).unwrap();
    // A place freed is a place again.
    relays.stop(&a).unwrap();
    stopped(&relays, &a).await;
    relays.start(spec(APP, "c")).unwrap();
    rooms.shutdown().await;
    engine.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// What a passthrough relay of the teacher, without HLS, gives its outputs.
fn passthrough_outputs(
    rooms: &RoomHandle,
    hub: &MediaHub,
    dir: &std::path::Path,
) -> (outputs::Deps, RelaySpec) {
    let deps = outputs::Deps {
        rooms: rooms.clone(),
        hub: hub.clone(),
        hls_store: crate::hls::store::HlsStore::default(),
        record_root: dir.join("recordings"),
        loops: crate::rtmp::loops::Loops::none(),
    };
    let mut spec = RelaySpec::for_anchor(
        room(),
        UserId::new("teacher").unwrap(),
        &profile("passthrough"),
    )
    .unwrap();
    spec.outputs.hls = None;
    (deps, spec)
}

/// Polls `done` until it holds, failing after `within` with what `what`
/// says then.
async fn wait_until(within: Duration, mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{}", what());
        crate::ticks::sleep(Duration::from_millis(5)).await;
    }
}

/// The teacher in the room, as a relay task's anchors are.
async fn teacher_enters(rooms: &RoomHandle) -> UserId {
    let session = rooms.new_session();
    rooms.command(enter(session, "teacher")).await.unwrap();
    UserId::new("teacher").unwrap()
}

/// A passthrough of `anchor` whose output is published back into the room
/// as `robot`, where it is read.
fn relay_fed_back(anchor: &UserId, robot: &UserId) -> RelaySpec {
    let mut spec = RelaySpec::for_anchor(room(), anchor.clone(), &profile("passthrough")).unwrap();
    spec.outputs.hls = None;
    spec.outputs.feedback.push(Feedback {
        room: room(),
        user: robot.clone(),
        grant: None,
    });
    spec
}

/// A grid mix of the room at a small size, without HLS.
fn small_mix() -> RelaySpec {
    let mut spec = RelaySpec::for_mix(room(), &profile("grid-720p")).unwrap();
    spec.outputs.hls = None;
    spec.mix_mut().unwrap().video = Some(crate::profile::VideoEncoding::small(15));
    spec
}

/// The config and `n` pictures of one group of a small H.264 stream (a
/// keyframe every second at 15 fps: only the first, for `n` up to 15).
fn one_group(n: i64) -> (MediaMessage, Vec<crate::media::EncodedFrame>) {
    use crate::mix::video::{Canvas, VideoEncoder};
    use crate::profile::{Background, Rgb, VideoEncoding};
    ffmpeg_next::init().unwrap();
    let mut enc = VideoEncoder::new(&VideoEncoding::small(15)).unwrap();
    let mut canvas = Canvas::new(320, 180, &Background::Color(Rgb(255, 0, 0)));
    canvas.compose(&[], false, |_| None).unwrap();
    let mut pictures = Vec::new();
    for i in 0..n {
        pictures.extend(enc.encode(canvas.frame_mut(), i).unwrap());
    }
    assert!(pictures[0].keyframe);
    assert!(pictures[1..].iter().all(|p| !p.keyframe));
    (MediaMessage::Config(enc.config().clone()), pictures)
}

/// The pictures the mix `id` showed, by its latency window (a counter:
/// it changes the task's status without waking watchers).
fn pictures_shown(relays: &RelayManager, id: &str) -> usize {
    relays
        .status(id)
        .and_then(|(_, st)| st.latency)
        .map_or(0, |l| l.pictures)
}

/// Starts `spec` and waits until the room has `followers` followers (the
/// task's among them).
async fn start_following(relays: &RelayManager, spec: RelaySpec, followers: usize) -> String {
    let id = relays.start(spec).unwrap();
    wait_until(
        Duration::from_secs(5),
        || relays.hub.followers(&room()) == followers,
        || "the task did not start following its room".into(),
    )
    .await;
    id
}

/// Sends `pictures` as frames on `anchor`.
fn send_pictures(
    anchor: &crate::media::hub::Publisher,
    pictures: impl IntoIterator<Item = crate::media::EncodedFrame>,
) {
    for p in pictures {
        anchor.send(MediaMessage::Frame(p));
    }
}

/// Stops task `id` and waits for it, then for the room engine; removes `dir`.
async fn finish(
    relays: &RelayManager,
    id: &str,
    rooms: RoomHandle,
    engine: tokio::task::JoinHandle<()>,
    dir: PathBuf,
) {
    relays.stop(id).unwrap();
    stopped(relays, id).await;
    rooms.shutdown().await;
    engine.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

fn test_config(kind: TrackKind) -> MediaMessage {
    MediaMessage::Config(crate::media::TrackConfig {
        kind,
        codec: crate::media::Codec::H264,
        extradata: bytes::Bytes::from_static(b"config"),
    })
}

fn test_frame(kind: TrackKind, keyframe: bool, data: &'static str) -> MediaMessage {
    crate::media::test_frame(kind, keyframe, bytes::Bytes::from_static(data.as_bytes()))
}

/// What a tap is given: frames as `kind data` lines.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<String>>);

impl Seen {
    fn frames(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl crate::media::hub::Tap for Seen {
    fn attached(&self, _: &crate::media::hub::Configs, _: &std::sync::Arc<tokio::sync::Notify>) {}
    fn deliver(&self, m: &std::sync::Arc<MediaMessage>) {
        if let MediaMessage::Frame(f) = &**m {
            let line = format!("{:?} {}", f.kind, String::from_utf8_lossy(&f.data));
            self.0.lock().unwrap().push(line);
        }
    }
    fn closed(&self) {}
}

/// A relay takes its anchor from the first message the anchor sends,
/// even when the anchor registers and sends its first group of pictures
/// before the relay's task next runs (here: in one turn of a
/// single-threaded runtime, so the task cannot run between). A relay that
/// tapped the anchor on seeing it in the room's list of publishers
/// missed its first keyframe then, and so its first group of pictures.
#[tokio::test]
async fn a_relay_takes_an_anchor_from_its_first_keyframe_however_soon_it_comes() {
    use crate::media::hub::Start;
    let (relays, rooms, engine, dir) = gateway();
    let hub = relays.hub.clone();
    let teacher = teacher_enters(&rooms).await;
    let robot = UserId::new("robot-first").unwrap();
    let seen = std::sync::Arc::new(Seen::default());
    let _reading = hub.follow(&room(), &robot, Start::Now, seen.clone());
    let id = start_following(&relays, relay_fed_back(&teacher, &robot), 2).await;
    let five = Duration::from_secs(5);

    let anchor = hub.publish(room(), teacher.clone(), None);
    anchor.send(test_config(TrackKind::Video));
    anchor.send(test_frame(TrackKind::Video, true, "the first keyframe"));
    anchor.send(test_config(TrackKind::Audio));
    anchor.send(test_frame(TrackKind::Audio, false, "audio"));
    anchor.send(test_frame(TrackKind::Video, false, "next"));

    wait_until(
        five,
        || seen.frames().len() == 3,
        || format!("the relay's output is {:?}", seen.frames()),
    )
    .await;
    assert_eq!(
        seen.frames(),
        ["Video the first keyframe", "Audio audio", "Video next"]
    );
    drop(anchor);
    finish(&relays, &id, rooms, engine, dir).await;
}

/// A relay started while its anchor publishes starts its outputs with the
/// anchor's last keyframe and what came after it, at once: not at the
/// next keyframe, a group of pictures later (a recording would lose it).
#[tokio::test]
async fn a_relay_started_while_its_anchor_publishes_starts_at_the_last_keyframe() {
    use crate::media::hub::Start;
    let (relays, rooms, engine, dir) = gateway();
    let hub = relays.hub.clone();
    let teacher = teacher_enters(&rooms).await;
    let robot = UserId::new("robot-late").unwrap();
    let seen = std::sync::Arc::new(Seen::default());
    let _reading = hub.follow(&room(), &robot, Start::Now, seen.clone());

    let anchor = hub.publish(room(), teacher.clone(), None);
    anchor.send(test_config(TrackKind::Video));
    anchor.send(test_config(TrackKind::Audio));
    anchor.send(test_frame(TrackKind::Video, true, "first keyframe"));
    anchor.send(test_frame(TrackKind::Video, false, "p1"));
    anchor.send(test_frame(TrackKind::Video, true, "last keyframe"));
    anchor.send(test_frame(TrackKind::Audio, false, "a2"));
    anchor.send(test_frame(TrackKind::Video, false, "p2"));

    let id = relays.start(relay_fed_back(&teacher, &robot)).unwrap();
    let five = Duration::from_secs(5);
    let output = || format!("the relay's output is {:?}", seen.frames());
    wait_until(five, || seen.frames().len() == 3, output).await;
    // Then live.
    anchor.send(test_frame(TrackKind::Video, false, "p3"));
    wait_until(five, || seen.frames().len() == 4, output).await;
    assert_eq!(
        seen.frames(),
        ["Video last keyframe", "Audio a2", "Video p2", "Video p3"]
    );
    drop(anchor);
    finish(&relays, &id, rooms, engine, dir).await;
}

/// Where the test streams of a relay started mid-group have keyframes (ms).
const KEYFRAMES_MS: [i64; 5] = [0, 1000, 4000, 5000, 6000];

fn assert_keyframes_at(frames: &[crate::media::EncodedFrame], at: &[i64]) {
    let keyframes: Vec<i64> = frames
        .iter()
        .filter(|f| f.keyframe)
        .map(|f| f.dts)
        .collect();
    assert_eq!(keyframes, at);
}

/// Seven seconds of a small H.264 stream at 30 fps, a still picture, with
/// keyframes at 0, 1, 4, 5 and 6 s only (timestamps in ms).
fn seven_seconds_of_video() -> (MediaMessage, Vec<crate::media::EncodedFrame>) {
    use crate::mix::video::VideoEncoder;
    use crate::profile::VideoEncoding;
    use ffmpeg_next as ff;
    ff::init().unwrap();
    ff::util::log::set_level(ff::util::log::Level::Error);
    let mut source = VideoEncoding::small(30);
    source.gop_seconds = 10;
    let mut enc = VideoEncoder::new_vfr(&source).unwrap();
    let mut picture =
        ff::frame::Video::new(ff::format::Pixel::YUV420P, source.width, source.height);
    picture.data_mut(0).fill(90);
    let mut frames = Vec::new();
    for i in 0..210 {
        let ms = i * 1000 / 30;
        let key = KEYFRAMES_MS.contains(&ms);
        frames.extend(enc.encode_at(&mut picture, ms, key).unwrap());
    }
    assert_keyframes_at(&frames, &KEYFRAMES_MS);
    (MediaMessage::Config(enc.config().clone()), frames)
}

/// Seven seconds of VP8 at 30 fps with keyframes at 0, 1, 4, 5 and 6 s,
/// as a WebRTC anchor sends it (its config names the codec only).
fn seven_seconds_of_vp8() -> (MediaMessage, Vec<crate::media::EncodedFrame>) {
    use crate::media::{Codec, EncodedFrame, TimeBase, TrackConfig};
    use ffmpeg_next as ff;
    ff::init().unwrap();
    ff::util::log::set_level(ff::util::log::Level::Error);
    let codec = ff::encoder::find_by_name("libvpx").expect("libavcodec has libvpx");
    let mut enc = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .unwrap();
    let (w, h) = (320, 180);
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(ff::Rational::new(1, 1000));
    enc.set_bit_rate(300_000);
    // Keyframes where asked only.
    enc.set_gop(100_000);
    let mut opts = ff::Dictionary::new();
    opts.set("deadline", "realtime");
    opts.set("cpu-used", "8");
    opts.set("lag-in-frames", "0");
    let mut enc = enc.open_as_with(codec, opts).unwrap();
    let mut picture = ff::frame::Video::new(ff::format::Pixel::YUV420P, w, h);
    picture.data_mut(0).fill(90);
    picture.data_mut(1).fill(128);
    picture.data_mut(2).fill(128);
    let mut frames = Vec::new();
    let mut packet = ff::Packet::empty();
    for i in 0..210 {
        let ms = i * 1000 / 30;
        let key = KEYFRAMES_MS.contains(&ms);
        picture.set_pts(Some(ms));
        picture.set_kind(if key {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        enc.send_frame(&picture).unwrap();
        while enc.receive_packet(&mut packet).is_ok() {
            let pts = packet.pts().expect("libvpx dates its packets");
            frames.push(EncodedFrame {
                kind: TrackKind::Video,
                codec: Codec::Vp8,
                pts,
                dts: pts,
                time_base: TimeBase::MILLIS,
                keyframe: packet.is_key(),
                data: bytes::Bytes::copy_from_slice(packet.data().unwrap_or_default()),
            });
        }
    }
    assert_keyframes_at(&frames, &KEYFRAMES_MS);
    let config = TrackConfig {
        kind: TrackKind::Video,
        codec: Codec::Vp8,
        extradata: bytes::Bytes::new(),
    };
    (MediaMessage::Config(config), frames)
}

/// A relay started while its anchor publishes, from the anchor's last
/// keyframe (above), dates its first HLS segment by when the anchor sent
/// that keyframe, not by when the relay started: that group of pictures
/// began seconds before the start, and the following segments are dated
/// by when their media comes.
#[tokio::test]
async fn a_relay_started_mid_group_dates_its_first_segment_by_the_anchors_keyframe() {
    let (config, frames) = seven_seconds_of_video();
    // Segments cut at the keyframes at 4, 5 and 6 s.
    first_segment_of_a_relay_started_mid_group(config, frames, 3, None).await;
}

/// The same for an anchor whose video is transcoded (VP8 from WebRTC, to
/// H.264 on the stage's thread): the kept group comes out of the stage
/// after the start, in a burst, and the first segment is still dated by
/// when the anchor sent its first picture.
#[tokio::test]
async fn a_relay_started_mid_group_dates_a_transcoded_first_segment_by_the_anchors_keyframe() {
    let (config, frames) = seven_seconds_of_vp8();
    // The stage's H.264 has a keyframe every 2 s: segments from 1 and 3 s.
    first_segment_of_a_relay_started_mid_group(config, frames, 2, Some("video vp8→h264")).await;
}

/// Publishes `frames` (keyframes at 0, 1, 4, 5 and 6 s) up to 4 s, starts
/// a passthrough relay with a TS HLS output (so it starts from the keyframe
/// at 1 s, 2,966 ms before the newest frame), then publishes the rest; once
/// the playlist has `segments` dated segments, the first must be dated
/// 2,966 ms before the start. `transcoding`: the stage the relay must run.
async fn first_segment_of_a_relay_started_mid_group(
    config: MediaMessage,
    frames: Vec<crate::media::EncodedFrame>,
    segments: usize,
    transcoding: Option<&str>,
) {
    use crate::hls::late_queue;
    use crate::hls::live::Object;
    let (relays, rooms, engine, dir) = gateway();
    let hub = relays.hub.clone();
    let teacher = teacher_enters(&rooms).await;
    let (kept, live): (Vec<_>, Vec<_>) = frames.into_iter().partition(|f| f.dts < 4000);
    // Up to 3,966 ms: the group from the keyframe at 1 s is kept, its last
    // picture 2,966 ms after that keyframe.
    let anchor = hub.publish(room(), teacher.clone(), None);
    anchor.send(config);
    for f in kept {
        anchor.send(MediaMessage::Frame(f));
    }

    let mut spec = RelaySpec::for_anchor(room(), teacher, &profile("passthrough")).unwrap();
    spec.outputs.hls = Some(late_queue::one_second_segments(
        crate::profile::HlsContainer::Ts,
    ));
    let started = crate::unix_now_ms();
    let id = relays.start(spec.clone()).unwrap();
    // Attached, so the kept group went out.
    wait_until(
        Duration::from_secs(5),
        || {
            relays
                .status(&id)
                .is_some_and(|(_, st)| !st.inputs.is_empty())
        },
        || "the relay never followed its anchor".into(),
    )
    .await;
    let replayed_by = crate::unix_now_ms();
    for f in live {
        anchor.send(MediaMessage::Frame(f));
    }
    let playlist = || {
        relays
            .hls_store
            .get_ts(&spec.stream)
            .and_then(|s| s.media(Object::Playlist))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(20),
        || late_queue::dates(&playlist()).len() >= segments,
        || format!("the playlist is:\n{}", playlist()),
    )
    .await;
    let text = playlist();
    if let Some(stage) = transcoding {
        let (_, st) = relays.status(&id).expect("running");
        assert!(
            st.transcoding.iter().any(|t| t == stage),
            "{:?}",
            st.transcoding
        );
    }
    let first = late_queue::dates(&text)[0];
    // Sent between the start and `replayed_by`, less 2,966 ms; as ms into the day.
    let day = 86_400_000;
    let (earliest, latest) = (
        (started - 2_966 - 20) % day,
        (replayed_by - 2_966 + 20) % day,
    );
    let within = if earliest <= latest {
        (earliest..=latest).contains(&first)
    } else {
        first >= earliest || first <= latest
    };
    assert!(
        within,
        "the first segment is dated {first} ms into the day, its keyframe was sent between {earliest} and {latest} (the relay started at {}):\n{text}",
        started % day
    );
    drop(anchor);
    finish(&relays, &id, rooms, engine, dir).await;
}

/// A mix takes each anchor from the first message it sends, as a relay
/// does (above), even when the anchor registers and sends its first
/// picture before the mix's task next runs. A mix that tapped the anchor
/// on seeing it in the room's list of publishers missed that keyframe,
/// and with it the anchor's first group of pictures: here, with nothing
/// after them, every picture the anchor sends.
#[tokio::test]
async fn a_mix_takes_an_anchor_from_its_first_keyframe_however_soon_it_comes() {
    let (relays, rooms, engine, dir) = gateway();
    let hub = relays.hub.clone();
    let teacher = teacher_enters(&rooms).await;
    let id = start_following(&relays, small_mix(), 1).await;

    // Part of one group of pictures, and nothing after it.
    let (config, pictures) = one_group(10);
    let anchor = hub.publish(room(), teacher.clone(), None);
    anchor.send(config);
    send_pictures(&anchor, pictures);

    wait_until(
        Duration::from_secs(10),
        || pictures_shown(&relays, &id) > 0,
        || "the anchor's pictures were never mixed".into(),
    )
    .await;
    assert_eq!(relays.status(&id).unwrap().1.inputs, ["teacher"]);
    drop(anchor);
    finish(&relays, &id, rooms, engine, dir).await;
}

/// A mix started while an anchor publishes shows the anchor at once: it
/// decodes the anchor's pictures since its last keyframe, so the picture
/// shows and the next ones decode, not a placeholder until the anchor's
/// next keyframe (for an RTMP anchor, a group of pictures later).
#[tokio::test]
async fn a_mix_started_while_an_anchor_publishes_shows_it_before_its_next_keyframe() {
    let (relays, rooms, engine, dir) = gateway();
    let hub = relays.hub.clone();
    let teacher = teacher_enters(&rooms).await;

    // Ten pictures of one group: five sent before the mix starts, five after.
    let (config, mut pictures) = one_group(10);
    let live = pictures.split_off(5);
    let anchor = hub.publish(room(), teacher.clone(), None);
    anchor.send(config);
    send_pictures(&anchor, pictures);
    let id = start_following(&relays, small_mix(), 1).await;
    send_pictures(&anchor, live);

    // The picture the anchor showed when the mix started, then the live
    // ones (a few may share an output tick).
    wait_until(
        Duration::from_secs(10),
        || pictures_shown(&relays, &id) >= 4,
        || {
            format!(
                "the mix showed {} of the anchor's pictures",
                pictures_shown(&relays, &id)
            )
        },
    )
    .await;
    drop(anchor);
    finish(&relays, &id, rooms, engine, dir).await;
}

/// A task that dies (a panic) before its outputs finish still takes the
/// robots it fed its output back with out of their rooms.
#[tokio::test]
async fn outputs_dropped_unfinished_take_their_robots_out_of_the_rooms() {
    let (_relays, rooms, _task, dir) = gateway();
    let hub = MediaHub::default();
    let (deps, mut spec) = passthrough_outputs(&rooms, &hub, &dir);
    let robot = UserId::new("robot-out").unwrap();
    spec.outputs.feedback.push(Feedback {
        room: room(),
        user: robot.clone(),
        grant: None,
    });
    let mut out = outputs::Outputs::new(&spec, &deps);
    out.enter_feedback_rooms(&spec, &deps, true).await;
    let in_room = || async { testing::connected(&rooms, &robot).await.is_some() };
    assert!(in_room().await, "the robot entered");
    assert!(hub.is_publishing(&room(), &robot));
    testing::panic_holding(out).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while in_room().await || hub.is_publishing(&room(), &robot) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the robot is still in the room"
        );
        crate::ticks::sleep(Duration::from_millis(10)).await;
    }
}

/// A frame whose times already are the output's goes out as the message
/// it came in (no copy); one that must move (after a discontinuity its
/// times start again, or its clock is not milliseconds) is a new message
/// with the output's times and the same payload, in the last moved
/// frame's allocation once nothing holds that.
#[tokio::test]
async fn rebase_passes_a_frame_already_on_the_output_timeline_without_a_copy() {
    use crate::media::{Codec, EncodedFrame, MediaMessage, TimeBase, TrackKind};
    let (_relays, rooms, _task, dir) = gateway();
    let (deps, spec) = passthrough_outputs(&rooms, &MediaHub::default(), &dir);
    let mut out = outputs::Outputs::new(&spec, &deps);
    let payload = bytes::Bytes::from_static(b"a picture");
    let frame = |t: i64, time_base: TimeBase| {
        Arc::new(MediaMessage::Frame(EncodedFrame {
            kind: TrackKind::Video,
            codec: Codec::H264,
            pts: t,
            dts: t,
            time_base,
            keyframe: true,
            data: payload.clone(),
        }))
    };
    let times = |m: &MediaMessage| match m {
        MediaMessage::Frame(f) => (f.dts, f.pts, f.time_base, f.data.as_ptr()),
        MediaMessage::Config(_) => panic!("a frame went in"),
    };
    for t in [0, 33, 66] {
        let m = frame(t, TimeBase::MILLIS);
        let r = out.rebase(&m).unwrap();
        assert!(Arc::ptr_eq(&m, &r), "the frame at {t} ms was copied");
    }
    // The stream starts again at 0: the output goes on 40 ms after 66.
    out.discontinuity();
    let m = frame(0, TimeBase::MILLIS);
    let r = out.rebase(&m).unwrap();
    assert!(!Arc::ptr_eq(&m, &r));
    assert_eq!(
        times(&r),
        (106, 106, TimeBase::MILLIS, payload.as_ptr()),
        "the output's times, the same bytes"
    );
    // 33 ms later in a 90 kHz clock: the same number of ms on the output,
    // but written in ms.
    let m = frame(33 * 90, TimeBase::MPEG);
    let r = out.rebase(&m).unwrap();
    assert!(!Arc::ptr_eq(&m, &r));
    assert_eq!(times(&r), (139, 139, TimeBase::MILLIS, payload.as_ptr()));
    // While an output holds a moved frame, the next one is new and the
    // held one stays as it was; once let go of, its place is taken again.
    let held = r;
    let r = out.rebase(&frame(66 * 90, TimeBase::MPEG)).unwrap();
    assert!(!Arc::ptr_eq(&held, &r), "a frame still held was reused");
    assert_eq!(times(&held), (139, 139, TimeBase::MILLIS, payload.as_ptr()));
    assert_eq!(times(&r), (172, 172, TimeBase::MILLIS, payload.as_ptr()));
    let place = Arc::as_ptr(&r);
    drop((held, r));
    let r = out.rebase(&frame(99 * 90, TimeBase::MPEG)).unwrap();
    assert_eq!(Arc::as_ptr(&r), place, "a moved frame made a new message");
    // (Not the allocator handing the same place back: the outputs keep it.)
    assert_eq!(Arc::strong_count(&r), 2, "the outputs let go of it");
    assert_eq!(times(&r), (205, 205, TimeBase::MILLIS, payload.as_ptr()));
    let _ = std::fs::remove_dir_all(dir);
}
