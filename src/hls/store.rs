//! Live fMP4 HLS kept in memory: what each stream's playlist lists, with
//! its init sections, segments and parts as `Bytes` (served without a
//! copy; a complete segment's parts are slices of the segment).
//!
//! [`Stream`] is the pure state, fed by the segmenter's events. The shell
//! around it ([`HlsStore`], [`LiveOutput`]) shares streams between the
//! relay task that writes and the HTTP requests that read, and wakes
//! every blocked request together through one watch channel per stream:
//! a thousand waiting players cost a thousand receivers, nothing more.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::cmaf::{Event, Segmenter};
use super::fmp4::InitInfo;
use super::ladder::rendition_name;
use super::live::{LivePlaylist, LiveSettings, Object, Position};
use crate::media::{DropToKeyframe, MediaMessage};
use crate::profile::HlsOutput;

/// How long an ended stream stays readable (players fetch its tail).
const LINGER: Duration = Duration::from_secs(30);
/// Fragmentation of a plain (not low-latency) fMP4 playlist's segments.
const PLAIN_FRAGMENT_MS: u32 = 1000;

/// One stream's playlist and media. Pure.
pub(crate) struct Stream {
    pub(crate) playlist: LivePlaylist,
    inits: BTreeMap<u32, Bytes>,
    /// The last init's description (codecs, size) for the master playlist.
    info: Option<InitInfo>,
    segments: BTreeMap<u64, Bytes>,
    parts: BTreeMap<(u64, u32), Bytes>,
    /// Bytes of the open segment's parts, to make the segment at its end.
    open: Vec<Bytes>,
    /// A random tag for ETags: names repeat when a stream starts again.
    pub(crate) generation: u64,
    /// Video frames of the open segment, and of each complete one.
    open_frames: u32,
    segment_frames: BTreeMap<u64, u32>,
    /// Renditions of a ladder this stream heads (`<name>.r<i>`).
    pub(crate) renditions: usize,
    /// The playlist as last rendered (full, delta), until the next change:
    /// players polling between parts share one rendering.
    rendered: [Option<Bytes>; 2],
}

impl Stream {
    pub(crate) fn new(settings: LiveSettings, generation: u64) -> Stream {
        Stream {
            playlist: LivePlaylist::new(settings),
            inits: BTreeMap::new(),
            info: None,
            segments: BTreeMap::new(),
            parts: BTreeMap::new(),
            open: Vec::new(),
            generation,
            open_frames: 0,
            segment_frames: BTreeMap::new(),
            renditions: 0,
            rendered: [None, None],
        }
    }

    /// The playlist text (`skip`: a delta update), rendered once per change.
    pub(crate) fn playlist_text(&mut self, skip: bool) -> Bytes {
        let slot = &mut self.rendered[usize::from(skip)];
        if let Some(b) = slot {
            return b.clone();
        }
        let b = Bytes::from(self.playlist.render(skip));
        *slot = Some(b.clone());
        b
    }

    pub(crate) fn apply(&mut self, event: Event) {
        self.rendered = [None, None];
        match event {
            Event::Init { id, bytes, info } => {
                self.inits.insert(id, bytes);
                self.info = Some(info);
            }
            Event::Part {
                bytes,
                part,
                start,
                frames,
            } => {
                let at = self.playlist.add_part(part, start);
                self.open_frames += frames;
                self.open.push(bytes.clone());
                self.parts.insert(at, bytes);
            }
            Event::SegmentEnd => {
                let Some((msn, removed)) = self.playlist.finish_segment() else {
                    return;
                };
                self.store_segment(msn);
                self.forget(&removed);
            }
        }
    }

    /// Ends the playlist (what is open is closed).
    pub(crate) fn end(&mut self) {
        self.rendered = [None, None];
        let open = self.playlist.next_part();
        let removed = self.playlist.end();
        if self.playlist.has_segment(open.0) {
            self.store_segment(open.0);
        }
        self.forget(&removed);
    }

    /// Joins the open parts into the segment and re-points them at it.
    fn store_segment(&mut self, msn: u64) {
        let parts = std::mem::take(&mut self.open);
        let len = parts.iter().map(Bytes::len).sum();
        let mut whole = BytesMut::with_capacity(len);
        for p in &parts {
            whole.extend_from_slice(p);
        }
        let whole = whole.freeze();
        let mut at = 0;
        for (i, p) in parts.iter().enumerate() {
            self.parts
                .insert((msn, i as u32), whole.slice(at..at + p.len()));
            at += p.len();
        }
        let frames = std::mem::take(&mut self.open_frames);
        self.segment_frames.insert(msn, frames);
        self.segments.insert(msn, whole);
    }

    fn forget(&mut self, removed: &[u64]) {
        for msn in removed {
            self.segments.remove(msn);
            self.segment_frames.remove(msn);
            self.parts.retain(|(m, _), _| m != msn);
        }
        let used: Vec<u32> = self.playlist.inits_in_use().collect();
        if !used.is_empty() {
            self.inits.retain(|id, _| used.contains(id));
        }
    }

    /// The media an object names, if held.
    pub(crate) fn media(&self, object: Object) -> Option<Bytes> {
        match object {
            Object::Init(id) => self.inits.get(&id).cloned(),
            Object::Segment(msn) => self.segments.get(&msn).cloned(),
            Object::Part(msn, i) => self.parts.get(&(msn, i)).cloned(),
            _ => None,
        }
    }

    /// The listed segments' (msn, bytes, ms).
    fn listed(&self) -> impl Iterator<Item = (u64, usize, u64)> + '_ {
        self.segments.iter().filter_map(|(msn, b)| {
            let ms = self.playlist.segment_duration_ms(*msn)?;
            Some((*msn, b.len(), ms.max(1)))
        })
    }

    /// Peak bits per second over the listed segments (BANDWIDTH).
    fn peak_bps(&self) -> u64 {
        self.listed()
            .map(|(_, len, ms)| len as u64 * 8 * 1000 / ms)
            .max()
            .unwrap_or(0)
    }

    /// The highest frame rate of the listed segments (FRAME-RATE is the
    /// maximum, RFC 8216bis 4.4.6.2): a stream whose source dropped pictures
    /// for a while (a busy box) still states the rate it runs at. Segments
    /// shorter than half the longest listed (a stream's last, cut short)
    /// are left out: a picture or two over a few milliseconds is no rate.
    fn peak_frame_rate(&self) -> Option<f64> {
        let longest = self.listed().map(|(_, _, ms)| ms).max()?;
        self.listed()
            .filter(|&(_, _, ms)| ms * 2 >= longest)
            .filter_map(|(msn, _, ms)| {
                let frames = self.segment_frames.get(&msn).copied().unwrap_or(0);
                (frames > 0).then(|| f64::from(frames) * 1000.0 / ms as f64)
            })
            .reduce(f64::max)
    }

    /// This stream as a variant of a master playlist, at `uri`: what a
    /// player needs to choose it. `None` until its first init section.
    pub(crate) fn variant(&self, uri: &str) -> Option<String> {
        use std::fmt::Write as _;
        let info = self.info.as_ref()?;
        // Before a segment is complete, a generous guess.
        let bandwidth = match self.peak_bps() {
            0 => 2_000_000,
            peak => peak,
        };
        let mut s = format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"",
            info.codecs
        );
        if let (Some(w), Some(h)) = (info.width, info.height) {
            let _ = write!(s, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = self.peak_frame_rate() {
            let _ = write!(s, ",FRAME-RATE={fps:.3}");
        }
        let _ = write!(s, "\n{uri}\n");
        Some(s)
    }
}

fn log_continued(name: &str, at: Position, applied: bool) {
    if applied {
        tracing::info!(
            stream = name,
            msn = at.next_msn,
            "hls: continuing another node's numbering, after a discontinuity"
        );
    } else {
        tracing::warn!(
            stream = name,
            "hls: the stream has media already; it does not continue another node's numbering"
        );
    }
}

/// An entry of the store: the state and its change counter.
pub(crate) struct Shared {
    pub(crate) state: Mutex<Stream>,
    pub(crate) changed: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Stream> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A live MPEG-TS stream (plain HLS): what `hls::writer` last published.
pub(crate) struct TsShared {
    pub(crate) name: String,
    state: Mutex<TsStream>,
}

#[derive(Default)]
struct TsStream {
    playlist: Option<Bytes>,
    /// By index (`seg<N>.ts`).
    segments: HashMap<u64, Bytes>,
    /// Where the playlist stands, once it has a segment.
    position: Option<Position>,
    /// Where its numbering is to start (a stream continued from another
    /// node), until the writer takes it.
    start: Option<Position>,
}

impl TsShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, TsStream> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new segment (if any), the playlist that lists it, and the segment
    /// names that left the window.
    pub(crate) fn update(
        &self,
        segment: Option<(u64, Bytes)>,
        (playlist, position): (String, Position),
        removed: &[String],
    ) {
        let mut s = self.lock();
        if segment.is_some() || s.position.is_some() {
            s.position = Some(position);
        }
        if let Some((index, bytes)) = segment {
            s.segments.insert(index, bytes);
        }
        for uri in removed {
            if let Some(Object::TsSegment(n)) = Object::parse(uri) {
                s.segments.remove(&n);
            }
        }
        s.playlist = Some(Bytes::from(playlist));
    }

    /// Where the writer's numbering starts, if this stream continues
    /// another node's (taken once, before its first segment).
    pub(crate) fn take_start(&self) -> Option<Position> {
        self.lock().start.take()
    }

    /// The playlist, or a segment.
    pub(crate) fn media(&self, object: Object) -> Option<Bytes> {
        let s = self.lock();
        match object {
            Object::Playlist => s.playlist.clone(),
            Object::TsSegment(n) => s.segments.get(&n).cloned(),
            _ => None,
        }
    }
}

/// Every live stream by name: fMP4 (LL or not) and MPEG-TS.
#[derive(Clone, Default)]
pub(crate) struct HlsStore {
    streams: Arc<Mutex<HashMap<String, Arc<Shared>>>>,
    ts: Arc<Mutex<HashMap<String, Arc<TsShared>>>>,
    /// Numbering to continue for streams not opened yet (a task resumed
    /// from another node), and when it was given.
    continued: Arc<Mutex<HashMap<String, (Position, std::time::Instant)>>>,
}

/// How long a numbering to continue waits for its stream to open.
const CONTINUE_WITHIN: Duration = Duration::from_secs(60);

impl HlsStore {
    fn ts_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TsShared>>> {
        self.ts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get_ts(&self, name: &str) -> Option<Arc<TsShared>> {
        self.ts_map().get(name).cloned()
    }

    /// Starts (or restarts) the MPEG-TS stream `name`; an fMP4 stream of the
    /// same name stops being served.
    pub(crate) fn open_ts(&self, name: &str) -> Arc<TsShared> {
        let shared = Arc::new(TsShared {
            name: name.to_string(),
            state: Mutex::new(TsStream {
                start: self.take_continued(name),
                ..TsStream::default()
            }),
        });
        self.ts_map().insert(name.to_string(), shared.clone());
        if let Some(old) = self.map().remove(name) {
            old.lock().end();
            old.changed.send_modify(|v| *v += 1);
        }
        shared
    }

    /// Drops the TS stream `name` after a while, if it is still `shared`.
    pub(crate) fn linger_ts(&self, shared: Arc<TsShared>) {
        let store = self.clone();
        tokio::spawn(async move {
            crate::ticks::sleep(LINGER).await;
            let mut map = store.ts_map();
            if map
                .get(&shared.name)
                .is_some_and(|s| Arc::ptr_eq(s, &shared))
            {
                map.remove(&shared.name);
            }
        });
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Shared>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Shared>> {
        self.map().get(name).cloned()
    }

    /// Every stream served from here (fMP4 and TS), and where it stands
    /// once it has media.
    pub(crate) fn names(&self) -> Vec<(String, Option<Position>)> {
        let mut names: Vec<(String, Option<Position>)> = self
            .map()
            .iter()
            .map(|(name, s)| {
                let st = s.lock();
                let started = st.playlist.first_msn() != 0 || st.playlist.next_part() != (0, 0);
                (name.clone(), started.then(|| st.playlist.position()))
            })
            .collect();
        names.extend(
            self.ts_map()
                .iter()
                .map(|(name, s)| (name.clone(), s.lock().position)),
        );
        names
    }

    /// Makes stream `name` (open now or soon) continue the numbering of the
    /// same stream on another node, which died: the next segment number
    /// and a discontinuity. Too late once it has media: logged, skipped.
    pub(crate) fn continue_from(&self, name: &str, at: Position) {
        if let Some(shared) = self.get(name) {
            let applied = shared.lock().playlist.continue_from(at);
            log_continued(name, at, applied);
            return;
        }
        if let Some(ts) = self.get_ts(name) {
            let mut s = ts.lock();
            let applied = s.position.is_none();
            if applied {
                s.start = Some(at);
            }
            log_continued(name, at, applied);
            return;
        }
        self.continued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), (at, std::time::Instant::now()));
        log_continued(name, at, true);
    }

    fn take_continued(&self, name: &str) -> Option<Position> {
        let mut c = self.continued.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|_, (_, at)| at.elapsed() < CONTINUE_WITHIN);
        c.remove(name).map(|(p, _)| p)
    }

    /// The master playlist of `name`: its own stream, then each rendition of
    /// its ladder, lowest last. `None` until every one has an init section.
    pub(crate) fn master(&self, name: &str) -> Option<String> {
        let main = self.get(name)?;
        let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        let renditions = {
            let m = main.lock();
            s.push_str(&m.variant("index.m3u8")?);
            m.renditions
        };
        for i in 1..=renditions {
            let r = rendition_name(name, i);
            let line = self
                .get(&r)?
                .lock()
                .variant(&format!("../{r}/index.m3u8"))?;
            s.push_str(&line);
        }
        Some(s)
    }

    /// Starts (or restarts) the stream `name`, at the head of a ladder of
    /// `renditions` (opened by `hls::ladder`).
    pub(crate) fn open(&self, name: &str, settings: &HlsOutput, renditions: usize) -> LiveOutput {
        let live = LiveSettings {
            segment_ms: settings.segment_seconds * 1000,
            part_ms: settings.low_latency.then_some(settings.part_ms),
            window: settings.window as usize,
        };
        let mut stream = Stream::new(live, rand::random());
        stream.renditions = renditions;
        if let Some(at) = self.take_continued(name) {
            stream.playlist.continue_from(at);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(stream),
            changed: watch::channel(0).0,
        });
        // A TS stream of the same name (an earlier task) stops being served.
        self.ts_map().remove(name);
        if let Some(old) = self.map().insert(name.to_string(), shared.clone()) {
            // Anyone still waiting on the old stream gets its (ended) answer.
            old.lock().end();
            old.changed.send_modify(|v| *v += 1);
        }
        let fragment_ms = if settings.low_latency {
            settings.part_ms
        } else {
            PLAIN_FRAGMENT_MS.min(settings.segment_seconds * 1000)
        };
        LiveOutput {
            store: self.clone(),
            name: name.to_string(),
            shared,
            segmenter: Segmenter::new(settings.segment_seconds * 1000, fragment_ms),
            events: Vec::new(),
            gate: DropToKeyframe::default(),
        }
    }

    /// Drops `name` if it is still `shared` (a newer stream may have replaced it).
    fn remove_if(&self, name: &str, shared: &Arc<Shared>) {
        let mut map = self.map();
        if map.get(name).is_some_and(|s| Arc::ptr_eq(s, shared)) {
            map.remove(name);
        }
    }
}

/// A relay's fMP4 HLS output: segments in the relay's own task (fMP4 is
/// a few copies, no codec work), published to readers as it goes.
pub(crate) struct LiveOutput {
    store: HlsStore,
    name: String,
    shared: Arc<Shared>,
    segmenter: Segmenter,
    events: Vec<Event>,
    gate: DropToKeyframe,
}

impl LiveOutput {
    /// Offers a message that belongs to the wall clock `wall_ms` (unix ms):
    /// when it arrived, for an output fed late (from a start hold, or a
    /// queue that may run late: an ABR rendition), so its segments are
    /// dated like the source's.
    pub(crate) fn offer_at(&mut self, msg: &Arc<MediaMessage>, wall_ms: u64) {
        if !self.gate.admit(msg) {
            return;
        }
        self.segmenter.push(msg, wall_ms, &mut self.events);
        self.publish();
    }

    pub(crate) fn discontinuity(&mut self) {
        self.segmenter.discontinuity(&mut self.events);
        self.publish();
    }

    fn publish(&mut self) {
        if self.events.is_empty() {
            return;
        }
        {
            let mut stream = self.shared.lock();
            for e in self.events.drain(..) {
                stream.apply(e);
            }
        }
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// Ends the playlist; the stream stays readable for a while.
    pub(crate) fn finish(mut self) {
        self.segmenter
            .finish(crate::unix_now_ms(), &mut self.events);
        self.publish();
        self.shared.lock().end();
        self.shared.changed.send_modify(|v| *v += 1);
        let (store, name, shared) = (self.store, self.name, self.shared);
        tokio::spawn(async move {
            crate::ticks::sleep(LINGER).await;
            store.remove_if(&name, &shared);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::live::{Part, SegmentStart};

    fn part(n: u8, start: bool) -> Event {
        Event::Part {
            bytes: Bytes::from(vec![n; 4]),
            part: Part {
                duration_ms: 500,
                independent: start,
            },
            start: start.then_some(SegmentStart {
                discontinuity: false,
                init: 0,
                program_date_time_ms: 0,
            }),
            frames: 0,
        }
    }

    #[test]
    fn parts_become_slices_of_their_segment_and_leave_with_it() {
        let mut s = Stream::new(
            LiveSettings {
                segment_ms: 1000,
                part_ms: Some(500),
                window: 3,
            },
            1,
        );
        for seg in 0..5u8 {
            s.apply(part(seg * 2, true));
            s.apply(part(seg * 2 + 1, false));
            s.apply(Event::SegmentEnd);
        }
        let seg4 = s.media(Object::Segment(4)).expect("listed");
        assert_eq!(&seg4[..], &[8, 8, 8, 8, 9, 9, 9, 9]);
        let p = s.media(Object::Part(4, 1)).expect("listed");
        assert_eq!(&p[..], &[9, 9, 9, 9]);
        // The part points into the segment: no second copy.
        assert_eq!(p.as_ptr(), seg4[4..].as_ptr());
        assert!(s.media(Object::Segment(1)).is_none());
        assert!(s.media(Object::Part(1, 0)).is_none());
        assert_eq!(s.segments.len(), 3);
        // 8 bytes per second: 64 bit/s.
        assert_eq!(s.peak_bps(), 64);
    }

    #[test]
    fn the_frame_rate_is_the_highest_of_the_listed_segments() {
        let mut s = Stream::new(
            LiveSettings {
                segment_ms: 1000,
                part_ms: Some(500),
                window: 4,
            },
            1,
        );
        let with_frames = |e: Event, n: u32, ms: u64| match e {
            Event::Part {
                bytes, part, start, ..
            } => Event::Part {
                bytes,
                part: Part {
                    duration_ms: ms,
                    ..part
                },
                start,
                frames: n,
            },
            other => other,
        };
        // 30 fps, then a second that lost pictures (18 fps), then 30 fps,
        // then a segment cut short by a discontinuity: two pictures in 40 ms
        // is shorter than half the longest and is no rate.
        for (seg, frames) in [(0u8, 15), (1, 9), (2, 15)] {
            s.apply(with_frames(part(seg * 2, true), frames, 500));
            s.apply(with_frames(part(seg * 2 + 1, false), frames, 500));
            s.apply(Event::SegmentEnd);
        }
        s.apply(with_frames(part(6, true), 2, 40));
        s.apply(Event::SegmentEnd);
        assert_eq!(s.peak_frame_rate(), Some(30.0));
        // Once the 30 fps seconds leave the window, the rate says so.
        for seg in 4..7u8 {
            s.apply(with_frames(part(seg * 2, true), 9, 500));
            s.apply(with_frames(part(seg * 2 + 1, false), 9, 500));
            s.apply(Event::SegmentEnd);
        }
        assert_eq!(s.peak_frame_rate(), Some(18.0));
    }
}
