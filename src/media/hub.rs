//! The media hub: where relay tasks find a publisher's stream.
//!
//! A publisher registers its (room, user) and gets a `Publisher` to send on;
//! consumers subscribe and get the current track configurations plus every
//! message from then on. Fan-out is a bounded broadcast channel: a consumer
//! that falls `FANOUT_CAPACITY` messages behind loses them and is told so;
//! it must then wait for the next keyframe (the publisher is never slowed
//! by a consumer). The registry lock guards only the map of publishers,
//! never the media path.
//!
//! A consumer that only passes messages on (a passthrough relay) can take
//! them as a [`Tap`] instead: called in the publisher's own turn, in order,
//! without a channel or a task of its own waking per message. A tap must
//! not block: it never slows the publisher more than its own work costs.
//! Taps can also follow a room ([`MediaHub::follow_room`]) or one user in
//! it ([`MediaHub::follow`]): the hub attaches one to each publisher as that
//! registers, before its first message, where a tap attached on news of
//! the publisher would miss what came meanwhile. A tap attached to a
//! publisher already sending may start at its last keyframe: each
//! publisher keeps the messages since then ([`GopCache`], bounded).
//!
//! Who publishes in a room is a watch ([`MediaHub::watch_room`]):
//! recordings wake when it changes and read the latest list, so one that
//! was busy misses nothing, it only reads a newer snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast, watch};

use super::{Codec, MediaMessage, TrackConfig, TrackKind};
use crate::metrics::{ByteCounter, Edge, GaugeGuard, metrics};
use crate::room::{RoomKey, UserId};

/// Messages buffered per consumer: about 4 s of 30 fps video plus audio.
const FANOUT_CAPACITY: usize = 512;
/// A publisher's group of pictures is kept for late taps up to this many
/// messages and, by default, bytes (10 s of 30 fps video and 48 kHz AAC;
/// 8 MB, a 6 s group at 10 Mbps); a longer one is not kept. The bytes are
/// `limits.gop_cache_mb` ([`MediaHub::with_gop_cache`]).
const GOP_CACHE_MESSAGES: usize = 800;
pub(crate) const GOP_CACHE_BYTES: usize = 8 << 20;

type Key = (RoomKey, UserId);

#[derive(Clone)]
pub(crate) struct MediaHub {
    inner: Arc<Mutex<Inner>>,
    /// Bytes of its last group of pictures each publisher keeps (0: none).
    gop_cache_bytes: usize,
}

impl Default for MediaHub {
    fn default() -> Self {
        MediaHub::with_gop_cache(GOP_CACHE_BYTES)
    }
}

/// Who publishes in one room, in the order they started, each with its
/// publisher's number (so a publisher replaced by a newer one of the same
/// user is a change too).
pub(crate) type RoomPublishers = Arc<[(UserId, u64)]>;

#[derive(Default)]
struct Inner {
    publishers: HashMap<Key, Entry>,
    /// One watch per room that has publishers or watchers.
    rooms: HashMap<RoomKey, watch::Sender<RoomPublishers>>,
    /// What follows a room's publishers ([`MediaHub::follow_room`]), each
    /// with the number its taps carry.
    following: HashMap<RoomKey, Vec<(u64, TapFor)>>,
}

impl Inner {
    /// Tells `room`'s watchers its new list of publishers; forgets the
    /// room's watch when nobody publishes or watches.
    fn room_changed(&mut self, room: &RoomKey) {
        let mut list: Vec<(u64, UserId)> = self
            .publishers
            .iter()
            .filter(|((r, _), _)| r == room)
            .map(|((_, u), e)| (e.id, u.clone()))
            .collect();
        list.sort();
        let list: RoomPublishers = list.into_iter().map(|(id, u)| (u, id)).collect();
        match self.rooms.get(room) {
            Some(tx) if list.is_empty() && tx.receiver_count() == 0 => {
                self.rooms.remove(room);
            }
            Some(tx) => {
                tx.send_replace(list);
            }
            None if list.is_empty() => {}
            None => {
                self.rooms.insert(room.clone(), watch::channel(list).0);
            }
        }
    }
}

/// A consumer called in the publisher's turn ([`MediaHub::follow_room`]).
pub(crate) trait Tap: Send + Sync {
    /// Taking the stream from now on, with its current track configs and
    /// where to ask the publisher for a keyframe. Called once, before any
    /// message.
    fn attached(&self, configs: &Configs, keyframe: &Arc<Notify>);
    /// One message, in the publisher's order. Runs inside the publisher's
    /// send: it must not block or wait, nor send on a publisher.
    fn deliver(&self, m: &Arc<MediaMessage>);
    /// The publisher is gone (stopped or replaced); nothing more comes.
    fn closed(&self);
    /// What a publisher already sending sent since its last keyframe
    /// (with `configs`, those it was attached with), once, right after
    /// [`Tap::attached`], for a tap that starts there
    /// ([`Start::LastKeyframe`]). Delivered like any message unless the
    /// tap does better.
    fn replayed(&self, configs: &Configs, messages: &[Arc<MediaMessage>]) {
        let _ = configs;
        for m in messages {
            self.deliver(m);
        }
    }
}

/// Where a follower's tap starts on a publisher already sending
/// ([`MediaHub::follow_room`]); one that registers later is always taken
/// from its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// With the next message.
    Now,
    /// With the publisher's last video keyframe and everything since, if
    /// kept ([`Tap::replayed`]): a relay or a recording starts its outputs
    /// at once, a mix shows the anchor's picture at once, not at the next
    /// keyframe, up to a group of pictures later.
    LastKeyframe,
}

/// A publisher's messages since its last video keyframe, for a tap that
/// starts there ([`Start::LastKeyframe`]). A config empties it (what
/// follows may not decode with the one before), and so does a group of
/// pictures longer than the bounds. Audio before the first keyframe, and
/// an audio-only stream, are not kept: audio starts anywhere.
struct GopCache {
    messages: Vec<Arc<MediaMessage>>,
    bytes: usize,
    /// Bytes kept at most; 0 keeps nothing.
    limit: usize,
    /// What the cache let go of and nobody else held, emptied: the
    /// publisher's next messages are put in these ([`GopCache::wrap`]).
    /// A group is let go of all at once, at the next keyframe: freeing
    /// its 150 or so small blocks together overflows the allocator's
    /// per-thread cache, and the next large block (a payload's) then
    /// makes it sort them all, so every message's allocation and free
    /// cost several times what reusing one does.
    spare: Vec<Arc<MediaMessage>>,
}

/// How many emptied messages a cache keeps for reuse at most: a group of
/// 4 s at 30 pictures and 47 audio frames a second.
const SPARE_MESSAGES: usize = 320;

/// What a spare message holds while it waits: nothing that keeps memory.
fn vacant() -> MediaMessage {
    MediaMessage::Config(TrackConfig {
        kind: TrackKind::Audio,
        codec: Codec::Aac,
        extradata: bytes::Bytes::new(),
    })
}

impl GopCache {
    fn new(limit: usize) -> GopCache {
        GopCache {
            messages: Vec::new(),
            bytes: 0,
            limit,
            spare: Vec::new(),
        }
    }

    /// `msg`, shareable: in a spare message's place if there is one.
    fn wrap(&mut self, msg: MediaMessage) -> Arc<MediaMessage> {
        if let Some(mut spare) = self.spare.pop()
            && let Some(slot) = Arc::get_mut(&mut spare)
        {
            *slot = msg;
            // The next spare's counts (an `Arc`'s two counts come right
            // before its value) were last touched when its group was let
            // go of: fetched while this message goes its way.
            if let Some(next) = self.spare.last() {
                let counts = Arc::as_ptr(next)
                    .cast::<u8>()
                    .wrapping_sub(2 * std::mem::size_of::<usize>());
                super::ffi::prefetch(counts);
            }
            return spare;
        }
        Arc::new(msg)
    }

    fn push(&mut self, m: &Arc<MediaMessage>) {
        if self.limit == 0 {
            return;
        }
        let (keyframe, len) = match &**m {
            MediaMessage::Config(_) => return self.clear(),
            MediaMessage::Frame(f) => (f.kind == TrackKind::Video && f.keyframe, f.data.len()),
        };
        if keyframe {
            self.clear();
        } else if self.messages.is_empty() {
            return;
        }
        if self.messages.len() >= GOP_CACHE_MESSAGES || self.bytes + len > self.limit {
            return self.clear();
        }
        self.messages.push(m.clone());
        self.bytes += len;
        // Where the next one goes, last written a group ago.
        super::ffi::prefetch(self.messages.as_ptr().wrapping_add(self.messages.len()));
    }

    fn clear(&mut self) {
        // The vectors keep their capacity: no allocation per group.
        for mut m in self.messages.drain(..) {
            if self.spare.len() < SPARE_MESSAGES
                && let Some(slot) = Arc::get_mut(&mut m)
            {
                *slot = vacant();
                self.spare.push(m);
            }
        }
        self.bytes = 0;
    }
}

/// A tap with its follower's number, which its guard detaches it by.
type NumberedTap = (u64, Arc<dyn Tap>);

/// The tap a follower attaches to a new publisher of the given user, if
/// any ([`MediaHub::follow_room`]). Called under the hub's lock: it must
/// not call into the hub, block or wait.
pub(crate) type TapFor = Arc<dyn Fn(&UserId) -> Option<Arc<dyn Tap>> + Send + Sync>;

/// A publisher's taps. The publisher's configs change under this lock
/// too, so a tap attaches with the configs, then sees every message after
/// them, with nothing between lost or repeated.
struct Taps {
    list: Vec<NumberedTap>,
    closed: bool,
    gop: GopCache,
}

type SharedTaps = Arc<Mutex<Taps>>;

fn lock_taps(t: &SharedTaps) -> std::sync::MutexGuard<'_, Taps> {
    // Taps are only pushed and removed whole; a poisoned lock is usable.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A follower's registration ([`MediaHub::follow_room`]): dropping it
/// detaches its taps from the publishers they are on (without `closed`)
/// and stops it following.
pub(crate) struct FollowGuard {
    hub: MediaHub,
    room: RoomKey,
    id: u64,
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        if let Some(list) = inner.following.get_mut(&self.room) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                inner.following.remove(&self.room);
            }
        }
        for ((room, _), e) in &inner.publishers {
            if *room == self.room {
                lock_taps(&e.taps).list.retain(|(id, _)| *id != self.id);
            }
        }
    }
}

impl Entry {
    /// Attaches the tap `tap_for` gives for `user`, if any, numbered `id`,
    /// with the configs so far (and from `start`); nothing if the
    /// publisher has ended.
    fn attach(&self, user: &UserId, tap_for: &TapFor, id: u64, start: Start) {
        let mut taps = lock_taps(&self.taps);
        if taps.closed {
            return;
        }
        if let Some(tap) = tap_for(user) {
            // A copy: the watch is not held while the tap runs.
            let configs = self.configs.borrow().clone();
            tap.attached(&configs, &self.keyframe);
            if start == Start::LastKeyframe && !taps.gop.messages.is_empty() {
                tap.replayed(&configs, &taps.gop.messages);
            }
            taps.list.push((id, tap));
        }
    }
}

#[derive(Clone)]
struct Entry {
    id: u64,
    messages: broadcast::Sender<Arc<MediaMessage>>,
    subscribers: Arc<AtomicUsize>,
    taps: SharedTaps,
    configs: watch::Receiver<Configs>,
    keyframe: Arc<Notify>,
}

/// The latest configuration of each track.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Configs {
    pub video: Option<TrackConfig>,
    pub audio: Option<TrackConfig>,
}

/// The sending side, held by an ingest session. Dropping it unregisters.
pub(crate) struct Publisher {
    hub: MediaHub,
    /// The ingest edge it came through: its bytes, and its count while it
    /// lives (none for the gateway's own output fed back).
    counted: Option<(ByteCounter, GaugeGuard)>,
    key: Key,
    id: u64,
    messages: broadcast::Sender<Arc<MediaMessage>>,
    /// Live [`Subscription`]s: with none (a plain relay only taps), a
    /// message skips the channel and its lock.
    subscribers: Arc<AtomicUsize>,
    taps: SharedTaps,
    configs: watch::Sender<Configs>,
    keyframe: Arc<Notify>,
}

/// The receiving side, held by a relay task. Take messages from
/// `messages` in place: the subscription counts as one while it lives.
pub(crate) struct Subscription {
    pub configs: Configs,
    pub messages: broadcast::Receiver<Arc<MediaMessage>>,
    keyframe: Arc<Notify>,
    _counted: Subscribed,
}

/// One of a publisher's live subscriptions, uncounted when dropped.
struct Subscribed(Arc<AtomicUsize>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Subscription {
    /// Asks the publisher for a keyframe (a WebRTC publisher sends a PLI;
    /// RTMP cannot be asked, its next keyframe comes on its own).
    pub(crate) fn request_keyframe(&self) {
        self.keyframe.notify_one();
    }
}

impl MediaHub {
    /// A hub whose publishers each keep up to `bytes` of their last
    /// group of pictures ([`Start::LastKeyframe`]; `limits.gop_cache_mb`);
    /// 0 keeps none: a follower then starts at the next keyframe.
    pub(crate) fn with_gop_cache(bytes: usize) -> MediaHub {
        MediaHub {
            inner: Arc::default(),
            gop_cache_bytes: bytes,
        }
    }

    /// Registers a publisher, replacing any older one of the same user.
    /// `edge` is where its media comes from (counted in the metrics);
    /// `None` for the gateway's own output fed back into a room.
    pub(crate) fn publish(&self, room: RoomKey, user: UserId, edge: Option<Edge>) -> Publisher {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (messages, _) = broadcast::channel(FANOUT_CAPACITY);
        let subscribers = Arc::new(AtomicUsize::new(0));
        let (configs, configs_rx) = watch::channel(Configs::default());
        let keyframe = Arc::new(Notify::new());
        let taps = Arc::new(Mutex::new(Taps {
            list: Vec::new(),
            closed: false,
            gop: GopCache::new(self.gop_cache_bytes),
        }));
        let key = (room, user);
        let mut inner = self.lock();
        let following = inner.following.get(&key.0).cloned().unwrap_or_default();
        // A follower's tap leaves the publisher this one replaces first:
        // closed there, then a tap attached here, never on both.
        if let Some(old) = inner.publishers.get(&key)
            && !following.is_empty()
        {
            let mut old_taps = lock_taps(&old.taps);
            let mut left = Vec::new();
            old_taps.list.retain(|(id, t)| {
                let follows = following.iter().any(|(f, _)| f == id);
                if follows {
                    left.push(t.clone());
                }
                !follows
            });
            drop(old_taps);
            for t in left {
                t.closed();
            }
        }
        let entry = Entry {
            id,
            messages: messages.clone(),
            subscribers: subscribers.clone(),
            taps: taps.clone(),
            configs: configs_rx,
            keyframe: keyframe.clone(),
        };
        // Attached before the publisher has sent anything: from its first
        // message on, with nothing missed.
        for (follower, tap_for) in &following {
            entry.attach(&key.1, tap_for, *follower, Start::Now);
        }
        inner.publishers.insert(key.clone(), entry);
        inner.room_changed(&key.0);
        drop(inner);
        Publisher {
            hub: self.clone(),
            counted: edge.map(|e| (metrics().received(e), metrics().publishing(e))),
            key,
            id,
            messages,
            subscribers,
            taps,
            configs,
            keyframe,
        }
    }

    /// Follows every publisher of `room` from now on: to each one
    /// publishing now (in the order they started, from `start`) and to
    /// each later one as it registers, before its first message, attaches
    /// the tap `tap_for` gives for its user, if any. A tap attached on
    /// seeing the publisher in the room's watch can miss what it sent
    /// meanwhile: its first keyframe, and so a whole group of pictures.
    /// Each tap is told [`Tap::closed`] at its publisher's end; a publisher
    /// replaced by a newer one of the same user ends before the newer
    /// one's tap attaches.
    pub(crate) fn follow_room(&self, room: &RoomKey, start: Start, tap_for: TapFor) -> FollowGuard {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.lock();
        let mut now: Vec<(&UserId, &Entry)> = inner
            .publishers
            .iter()
            .filter(|((r, _), _)| r == room)
            .map(|((_, u), e)| (u, e))
            .collect();
        now.sort_by_key(|(_, e)| e.id);
        for (user, e) in now {
            e.attach(user, &tap_for, id, start);
        }
        inner
            .following
            .entry(room.clone())
            .or_default()
            .push((id, tap_for));
        FollowGuard {
            hub: self.clone(),
            room: room.clone(),
            id,
        }
    }

    /// Attaches `tap` to every publisher of `user` in `room` from now on
    /// ([`MediaHub::follow_room`] for one user, with the same tap):
    /// [`Tap::closed`] at each publisher's end, then [`Tap::attached`]
    /// again at the next.
    pub(crate) fn follow(
        &self,
        room: &RoomKey,
        user: &UserId,
        start: Start,
        tap: Arc<dyn Tap>,
    ) -> FollowGuard {
        let user = user.clone();
        self.follow_room(
            room,
            start,
            Arc::new(move |u| (*u == user).then(|| tap.clone())),
        )
    }

    /// How many follow `room`'s publishers.
    #[cfg(test)]
    pub(crate) fn followers(&self, room: &RoomKey) -> usize {
        self.lock().following.get(room).map_or(0, Vec::len)
    }

    /// The publisher's stream, if it is publishing.
    pub(crate) fn subscribe(&self, room: &RoomKey, user: &UserId) -> Option<Subscription> {
        let inner = self.lock();
        let e = inner.publishers.get(&(room.clone(), user.clone()))?;
        // Counted before its receiver exists: every message sent once it
        // does goes into the channel.
        e.subscribers.fetch_add(1, Ordering::SeqCst);
        let messages = e.messages.subscribe();
        Some(Subscription {
            messages,
            configs: e.configs.borrow().clone(),
            keyframe: e.keyframe.clone(),
            _counted: Subscribed(e.subscribers.clone()),
        })
    }

    /// How many publish in `room` now.
    pub(crate) fn count_in(&self, room: &RoomKey) -> usize {
        self.lock()
            .rooms
            .get(room)
            .map_or(0, |tx| tx.borrow().len())
    }

    /// The latest track configurations of a publisher, if it is publishing.
    pub(crate) fn configs(&self, room: &RoomKey, user: &UserId) -> Option<Configs> {
        let inner = self.lock();
        let e = inner.publishers.get(&(room.clone(), user.clone()))?;
        Some(e.configs.borrow().clone())
    }

    /// Who publishes in `room`, now and whenever that changes.
    pub(crate) fn watch_room(&self, room: &RoomKey) -> watch::Receiver<RoomPublishers> {
        let mut inner = self.lock();
        // Forget rooms nobody publishes in or watches any more.
        inner
            .rooms
            .retain(|_, tx| !tx.borrow().is_empty() || tx.receiver_count() > 0);
        inner
            .rooms
            .entry(room.clone())
            .or_insert_with(|| watch::channel(RoomPublishers::from([])).0)
            .subscribe()
    }

    pub(crate) fn is_publishing(&self, room: &RoomKey, user: &UserId) -> bool {
        self.lock()
            .publishers
            .contains_key(&(room.clone(), user.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent
        // (single inserts/removes, each followed by its room's update), so a
        // poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Publisher {
    /// Woken when a consumer needs a keyframe.
    pub(crate) fn keyframe_requests(&self) -> Arc<Notify> {
        self.keyframe.clone()
    }

    pub(crate) fn send(&self, msg: MediaMessage) {
        // Configs change under the taps' lock: see `Taps`.
        let mut taps = lock_taps(&self.taps);
        if let MediaMessage::Config(c) = &msg {
            self.configs.send_modify(|cfg| match c.kind {
                TrackKind::Video => cfg.video = Some(c.clone()),
                TrackKind::Audio => cfg.audio = Some(c.clone()),
            });
        }
        if let (Some((bytes, _)), MediaMessage::Frame(f)) = (&self.counted, &msg) {
            bytes.add(f.data.len());
        }
        let msg = taps.gop.wrap(msg);
        for (_, t) in &taps.list {
            t.deliver(&msg);
        }
        taps.gop.push(&msg);
        // Nobody subscribed (a plain relay only taps): the channel's lock
        // is not taken. No receiver is fine: nobody mixes or plays this
        // anchor right now.
        if self.subscribers.load(Ordering::SeqCst) > 0 {
            let _ = self.messages.send(msg);
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        {
            // Told under the lock: a following tap moving to this user's
            // next publisher ([`MediaHub::publish`]) takes this lock first,
            // so it is told `closed` here before `attached` there.
            let mut t = lock_taps(&self.taps);
            t.closed = true;
            for (_, tap) in std::mem::take(&mut t.list) {
                tap.closed();
            }
        }
        let mut inner = self.hub.lock();
        if inner
            .publishers
            .get(&self.key)
            .is_some_and(|e| e.id == self.id)
        {
            inner.publishers.remove(&self.key);
            inner.room_changed(&self.key.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::RoomId;

    fn room(name: &str) -> RoomKey {
        RoomKey {
            app: 1,
            room: RoomId::parse(name, None).unwrap(),
        }
    }

    fn users(w: &mut watch::Receiver<RoomPublishers>) -> Vec<String> {
        w.borrow_and_update()
            .iter()
            .map(|(u, _)| u.as_str().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn watchers_see_their_rooms_publishers_come_and_go() {
        let hub = MediaHub::default();
        let (r, other) = (room("r"), room("o"));
        let mut w = hub.watch_room(&r);
        assert!(users(&mut w).is_empty());
        let a = hub.publish(r.clone(), UserId::new("a").unwrap(), None);
        assert!(w.has_changed().unwrap());
        assert_eq!(users(&mut w), ["a"]);
        // Another room's publishers are not this watch's business.
        let elsewhere = hub.publish(other.clone(), UserId::new("a").unwrap(), None);
        assert!(!w.has_changed().unwrap());
        // Entry order is the order they started.
        let b = hub.publish(r.clone(), UserId::new("b").unwrap(), None);
        assert_eq!(users(&mut w), ["a", "b"]);
        // A replacement is a change (a new stream to follow); the replaced
        // publisher's drop is not.
        let a2 = hub.publish(r.clone(), UserId::new("a").unwrap(), None);
        assert!(w.has_changed().unwrap());
        assert_eq!(users(&mut w), ["b", "a"]);
        drop(a);
        assert!(!w.has_changed().unwrap());
        drop((a2, b));
        assert!(w.has_changed().unwrap());
        assert!(users(&mut w).is_empty());
        // A watch that ends and an emptied room leave nothing behind.
        drop(w);
        drop(elsewhere);
        let _ = hub.watch_room(&other);
        assert_eq!(hub.lock().rooms.len(), 1, "only the room watched now");
    }

    #[test]
    fn subscriptions_get_every_message_while_any_lives_and_the_count_follows_them() {
        let hub = MediaHub::default();
        let (r, a) = (room("r"), UserId::new("a").unwrap());
        let p = hub.publish(r.clone(), a.clone(), None);
        let count = || p.subscribers.load(Ordering::SeqCst);
        p.send(frame(b"unseen"));
        let mut one = hub.subscribe(&r, &a).unwrap();
        let mut two = hub.subscribe(&r, &a).unwrap();
        assert_eq!(count(), 2);
        p.send(frame(b"both"));
        drop(two);
        assert_eq!(count(), 1);
        p.send(frame(b"one"));
        let got = |s: &mut Subscription| {
            std::iter::from_fn(|| s.messages.try_recv().ok())
                .map(|m| match &*m {
                    MediaMessage::Frame(f) => f.data.clone(),
                    MediaMessage::Config(_) => unreachable!(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(got(&mut one), [&b"both"[..], b"one"]);
        drop(one);
        assert_eq!(count(), 0);
        p.send(frame(b"nobody"));
        // A new subscription takes the stream from then on.
        two = hub.subscribe(&r, &a).unwrap();
        p.send(frame(b"again"));
        assert_eq!(got(&mut two), [&b"again"[..]]);
    }

    /// A tap that writes down what it is given.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Tap for Log {
        fn attached(&self, configs: &Configs, _: &Arc<Notify>) {
            self.0.lock().unwrap().push(attached(configs));
        }
        fn deliver(&self, m: &Arc<MediaMessage>) {
            self.0.lock().unwrap().push(delivered(m));
        }
        fn closed(&self) {
            self.0.lock().unwrap().push("closed".into());
        }
    }

    fn attached(configs: &Configs) -> String {
        let c = |c: &Option<TrackConfig>| {
            c.as_ref()
                .map_or("-".into(), |c| format!("{:?}", c.extradata))
        };
        format!("attached v={} a={}", c(&configs.video), c(&configs.audio))
    }

    fn delivered(m: &MediaMessage) -> String {
        match m {
            MediaMessage::Config(c) => format!("config {:?}", c.extradata),
            MediaMessage::Frame(f) => format!("frame {:?}", f.data),
        }
    }

    /// A tap made for one publisher: writes into a shared log what it is
    /// given, after the publisher's user and the tap's number.
    struct Made {
        who: String,
        log: Arc<Log>,
    }

    impl Tap for Made {
        fn attached(&self, configs: &Configs, _: &Arc<Notify>) {
            let line = format!("{} {}", self.who, attached(configs));
            self.log.0.lock().unwrap().push(line);
        }
        fn deliver(&self, m: &Arc<MediaMessage>) {
            let line = format!("{} {}", self.who, delivered(m));
            self.log.0.lock().unwrap().push(line);
        }
        fn closed(&self) {
            let line = format!("{} closed", self.who);
            self.log.0.lock().unwrap().push(line);
        }
    }

    fn config(kind: TrackKind, data: &'static [u8]) -> MediaMessage {
        MediaMessage::Config(TrackConfig {
            kind,
            codec: super::super::Codec::H264,
            extradata: bytes::Bytes::from_static(data),
        })
    }

    fn frame(data: &'static [u8]) -> MediaMessage {
        super::super::test_frame(TrackKind::Video, false, bytes::Bytes::from_static(data))
    }

    #[test]
    fn a_tap_gets_the_configs_then_every_message_in_order_until_detached_or_closed() {
        let hub = MediaHub::default();
        let (r, a) = (room("r"), UserId::new("a").unwrap());
        let p = hub.publish(r.clone(), a.clone(), None);
        p.send(config(TrackKind::Video, b"v1"));
        p.send(frame(b"before"));
        // Taken from now on, with the configs sent so far; channel
        // subscribers still get the stream too.
        let mut sub = hub.subscribe(&r, &a).unwrap();
        let log = Arc::new(Log::default());
        let guard = hub.follow(&r, &a, Start::Now, log.clone());
        p.send(config(TrackKind::Audio, b"a1"));
        p.send(frame(b"one"));
        p.send(frame(b"two"));
        assert_eq!(
            *log.0.lock().unwrap(),
            [
                "attached v=b\"v1\" a=-",
                "config b\"a1\"",
                "frame b\"one\"",
                "frame b\"two\""
            ]
        );
        assert_eq!(sub.messages.try_recv().map(|_| ()), Ok(()));
        // A second tap attaches with both configs.
        let other = Arc::new(Log::default());
        let other_guard = hub.follow(&r, &a, Start::Now, other.clone());
        assert_eq!(*other.0.lock().unwrap(), ["attached v=b\"v1\" a=b\"a1\""]);
        // Detached: nothing more.
        drop(guard);
        p.send(frame(b"three"));
        assert_eq!(log.0.lock().unwrap().len(), 4);
        // The publisher goes: the taps still attached are told, and a
        // follower coming now finds nothing to tap.
        drop(p);
        assert_eq!(
            *other.0.lock().unwrap(),
            ["attached v=b\"v1\" a=b\"a1\"", "frame b\"three\"", "closed"]
        );
        assert_eq!(log.0.lock().unwrap().len(), 4, "a detached tap is not told");
        drop(other_guard);
        let late = Arc::new(Log::default());
        let _late_guard = hub.follow(&r, &a, Start::Now, late.clone());
        assert!(take(&late).is_empty());
    }

    /// Taking what a log holds so far.
    fn take(log: &Log) -> Vec<String> {
        std::mem::take(&mut *log.0.lock().unwrap())
    }

    #[test]
    fn a_following_tap_gets_every_publisher_of_its_user_from_its_first_message() {
        let hub = MediaHub::default();
        let (r, a, b) = (
            room("r"),
            UserId::new("a").unwrap(),
            UserId::new("b").unwrap(),
        );
        let log = Arc::new(Log::default());
        let guard = hub.follow(&r, &a, Start::Now, log.clone());
        assert!(take(&log).is_empty(), "nobody publishes yet");
        // Another user's publisher is not followed.
        let other = hub.publish(r.clone(), b.clone(), None);
        other.send(frame(b"b's"));
        // Attached as the publisher registers, before anything is sent:
        // its very first messages are delivered.
        let p = hub.publish(r.clone(), a.clone(), None);
        p.send(config(TrackKind::Video, b"v1"));
        p.send(frame(b"first"));
        drop(p);
        assert_eq!(
            take(&log),
            [
                "attached v=- a=-",
                "config b\"v1\"",
                "frame b\"first\"",
                "closed"
            ]
        );
        // The next session of the user is followed too.
        let p = hub.publish(r.clone(), a.clone(), None);
        p.send(frame(b"again"));
        assert_eq!(take(&log), ["attached v=- a=-", "frame b\"again\""]);
        // Dropping the registration detaches it, and later sessions are
        // not followed.
        drop(guard);
        p.send(frame(b"unseen"));
        drop(p);
        let p = hub.publish(r.clone(), a.clone(), None);
        p.send(frame(b"unseen"));
        assert!(take(&log).is_empty());
        // Following a user publishing now attaches with its configs.
        p.send(config(TrackKind::Audio, b"a1"));
        let now = Arc::new(Log::default());
        let _now_guard = hub.follow(&r, &a, Start::Now, now.clone());
        p.send(frame(b"next"));
        assert_eq!(take(&now), ["attached v=- a=b\"a1\"", "frame b\"next\""]);
        drop(other);
    }

    #[test]
    fn a_following_tap_leaves_a_replaced_publisher_before_joining_its_successor() {
        let hub = MediaHub::default();
        let (r, a) = (room("r"), UserId::new("a").unwrap());
        let log = Arc::new(Log::default());
        let _guard = hub.follow(&r, &a, Start::Now, log.clone());
        let old = hub.publish(r.clone(), a.clone(), None);
        old.send(frame(b"old"));
        // A new session replaces the old one while it still lives (a
        // publisher reconnecting before its old connection timed out).
        let new = hub.publish(r.clone(), a.clone(), None);
        old.send(frame(b"stale"));
        new.send(frame(b"new"));
        // The old one ending later tells the tap nothing more.
        drop(old);
        new.send(frame(b"still"));
        assert_eq!(
            take(&log),
            [
                "attached v=- a=-",
                "frame b\"old\"",
                "closed",
                "attached v=- a=-",
                "frame b\"new\"",
                "frame b\"still\""
            ]
        );
    }

    #[test]
    fn a_room_follower_gets_a_tap_on_each_publisher_of_its_room_from_its_first_message() {
        let hub = MediaHub::default();
        let (r, other) = (room("r"), room("o"));
        let user = |name: &str| UserId::new(name).unwrap();
        let b = hub.publish(r.clone(), user("b"), None);
        b.send(config(TrackKind::Video, b"vb"));
        let a = hub.publish(r.clone(), user("a"), None);
        let _robot = hub.publish(r.clone(), user("robot"), None);
        let _elsewhere = hub.publish(other.clone(), user("c"), None);
        // Each tap is made for its publisher and numbered, so that one of a
        // user's sessions is told from the next; the robot is left out.
        let log = Arc::new(Log::default());
        let made = Arc::new(AtomicUsize::new(0));
        let tap_for: TapFor = {
            let (log, made) = (log.clone(), made.clone());
            Arc::new(move |u: &UserId| {
                (u.as_str() != "robot").then(|| {
                    let n = made.fetch_add(1, Ordering::SeqCst) + 1;
                    Arc::new(Made {
                        who: format!("{u}#{n}"),
                        log: log.clone(),
                    }) as Arc<dyn Tap>
                })
            })
        };
        let guard = hub.follow_room(&r, Start::Now, tap_for);
        assert_eq!(hub.followers(&r), 1);
        // Those publishing now, in the order they started, with their
        // configs so far.
        assert_eq!(
            take(&log),
            ["b#1 attached v=b\"vb\" a=-", "a#2 attached v=- a=-"]
        );
        // A publisher registering later is taken from its first message;
        // one replacing an older session ends that one's tap first.
        let c = hub.publish(r.clone(), user("c"), None);
        c.send(frame(b"c's first"));
        let a2 = hub.publish(r.clone(), user("a"), None);
        a.send(frame(b"stale"));
        a2.send(frame(b"a's second"));
        drop(a);
        b.send(frame(b"b's"));
        assert_eq!(
            take(&log),
            [
                "c#3 attached v=- a=-",
                "c#3 frame b\"c's first\"",
                "a#2 closed",
                "a#4 attached v=- a=-",
                "a#4 frame b\"a's second\"",
                "b#1 frame b\"b's\""
            ]
        );
        drop(c);
        assert_eq!(take(&log), ["c#3 closed"]);
        // Dropping the registration detaches every tap (without `closed`:
        // the follower stopped, not the publishers) and stops following.
        drop(guard);
        assert_eq!(hub.followers(&r), 0);
        a2.send(frame(b"unseen"));
        b.send(frame(b"unseen"));
        let _d = hub.publish(r.clone(), user("d"), None);
        assert!(take(&log).is_empty());
        assert_eq!(made.load(Ordering::SeqCst), 4);
        assert!(
            lock_taps(&a2.taps).list.is_empty() && lock_taps(&b.taps).list.is_empty(),
            "the taps are dropped"
        );
    }

    fn video(keyframe: bool, data: &'static [u8]) -> MediaMessage {
        super::super::test_frame(TrackKind::Video, keyframe, bytes::Bytes::from_static(data))
    }

    fn audio(data: &'static [u8]) -> MediaMessage {
        super::super::test_frame(TrackKind::Audio, false, bytes::Bytes::from_static(data))
    }

    #[test]
    fn a_tap_can_start_at_the_last_keyframe_of_a_publisher_already_sending() {
        let hub = MediaHub::default();
        let (r, a) = (room("r"), UserId::new("a").unwrap());
        let p = hub.publish(r.clone(), a.clone(), None);
        p.send(config(TrackKind::Video, b"v1"));
        p.send(audio(b"audio before any keyframe"));
        p.send(video(true, b"k1"));
        p.send(video(false, b"p1"));
        p.send(video(true, b"k2"));
        p.send(audio(b"a2"));
        p.send(video(false, b"p2"));
        let from_key = Arc::new(Log::default());
        let _g1 = hub.follow(&r, &a, Start::LastKeyframe, from_key.clone());
        let now = Arc::new(Log::default());
        let _g2 = hub.follow(&r, &a, Start::Now, now.clone());
        p.send(video(false, b"p3"));
        assert_eq!(
            take(&from_key),
            [
                "attached v=b\"v1\" a=-",
                "frame b\"k2\"",
                "frame b\"a2\"",
                "frame b\"p2\"",
                "frame b\"p3\""
            ]
        );
        assert_eq!(take(&now), ["attached v=b\"v1\" a=-", "frame b\"p3\""]);
        // A new config: what was kept may not decode with it, so nothing
        // is kept until the next keyframe.
        p.send(config(TrackKind::Video, b"v2"));
        p.send(video(false, b"p4"));
        let late = Arc::new(Log::default());
        let _g3 = hub.follow(&r, &a, Start::LastKeyframe, late.clone());
        assert_eq!(take(&late), ["attached v=b\"v2\" a=-"]);
    }

    /// With the cache off (`limits.gop_cache_mb = 0`) a publisher keeps
    /// nothing: a tap asking for the last keyframe starts with the next
    /// message, as one starting now does.
    #[test]
    fn a_hub_without_a_gop_cache_replays_nothing() {
        let hub = MediaHub::with_gop_cache(0);
        let (r, a) = (room("r"), UserId::new("a").unwrap());
        let p = hub.publish(r.clone(), a.clone(), None);
        p.send(config(TrackKind::Video, b"v1"));
        p.send(video(true, b"k1"));
        p.send(video(false, b"p1"));
        let from_key = Arc::new(Log::default());
        let _g = hub.follow(&r, &a, Start::LastKeyframe, from_key.clone());
        p.send(video(false, b"p2"));
        assert_eq!(take(&from_key), ["attached v=b\"v1\" a=-", "frame b\"p2\""]);
    }

    /// A group's messages that nobody else holds when the next keyframe
    /// lets it go are emptied and carry the publisher's next messages; one
    /// still held is left as it is.
    #[test]
    fn a_group_let_go_of_lends_its_unshared_messages_to_the_next() {
        let mut gop = GopCache::new(GOP_CACHE_BYTES);
        let send = |gop: &mut GopCache, m: MediaMessage| {
            let m = gop.wrap(m);
            gop.push(&m);
            m
        };
        let k1 = send(&mut gop, video(true, b"k1"));
        let p1 = send(&mut gop, video(false, b"p1"));
        let held = p1.clone();
        let k1_at = Arc::as_ptr(&k1);
        drop((k1, p1));
        send(&mut gop, video(true, b"k2"));
        assert_eq!(gop.spare.len(), 1, "k1 only: p1 is still held");
        assert_eq!(*gop.spare[0], vacant(), "emptied while it waits");
        assert_eq!(*held, video(false, b"p1"));
        let p2 = gop.wrap(video(false, b"p2"));
        assert_eq!(Arc::as_ptr(&p2), k1_at);
        assert_eq!(*p2, video(false, b"p2"));
        // With none spare, a message is allocated.
        let p3 = gop.wrap(video(false, b"p3"));
        assert_eq!(*p3, video(false, b"p3"));
        assert_ne!(Arc::as_ptr(&p3), k1_at);
        // Spares are bounded.
        for _ in 0..SPARE_MESSAGES + 10 {
            send(&mut gop, video(false, b"p"));
        }
        send(&mut gop, video(true, b"k3"));
        assert_eq!(gop.spare.len(), SPARE_MESSAGES);
        // Without a cache nothing is kept, so nothing is spare.
        let mut off = GopCache::new(0);
        send(&mut off, video(true, b"k"));
        send(&mut off, video(true, b"k"));
        assert!(off.spare.is_empty());
    }

    #[test]
    fn a_gop_cache_keeps_one_group_within_its_bounds_and_nothing_of_audio_alone() {
        let mut gop = GopCache::new(GOP_CACHE_BYTES);
        let keep = |gop: &mut GopCache, m: MediaMessage| gop.push(&Arc::new(m));
        // Audio alone (or before the first keyframe) is not kept.
        keep(&mut gop, audio(b"a"));
        assert!(gop.messages.is_empty());
        // A keyframe starts a group; the next starts another.
        keep(&mut gop, video(true, b"k1"));
        keep(&mut gop, audio(b"a"));
        keep(&mut gop, video(false, b"p"));
        assert_eq!(gop.messages.len(), 3);
        assert_eq!(gop.bytes, 4);
        keep(&mut gop, video(true, b"k2"));
        assert_eq!((gop.messages.len(), gop.bytes), (1, 2));
        // A group longer than the bounds is dropped whole, until the next
        // keyframe: a partial one would not start at a keyframe.
        for _ in 1..GOP_CACHE_MESSAGES {
            keep(&mut gop, video(false, b"p"));
        }
        assert_eq!(gop.messages.len(), GOP_CACHE_MESSAGES);
        keep(&mut gop, video(false, b"p"));
        assert!(gop.messages.is_empty());
        keep(&mut gop, video(false, b"p"));
        assert!(gop.messages.is_empty(), "not again before a keyframe");
        keep(&mut gop, video(true, b"k3"));
        assert_eq!(gop.messages.len(), 1);
        // Bytes are bounded too.
        let big = bytes::Bytes::from(vec![0u8; GOP_CACHE_BYTES / 2]);
        for _ in 0..2 {
            gop.push(&Arc::new(crate::media::test_frame(
                TrackKind::Video,
                false,
                big.clone(),
            )));
        }
        assert!(gop.messages.is_empty() && gop.bytes == 0);
    }

    /// A publisher ending on one thread while the next one registers on
    /// another: the tap is always told `closed` before `attached`, and
    /// ends attached to the one that lives.
    #[test]
    fn a_following_tap_is_closed_before_attached_when_sessions_race() {
        let hub = MediaHub::default();
        let (r, a) = (room("r"), UserId::new("a").unwrap());
        for _ in 0..200 {
            let log = Arc::new(Log::default());
            let _guard = hub.follow(&r, &a, Start::Now, log.clone());
            let old = hub.publish(r.clone(), a.clone(), None);
            let ending = std::thread::spawn(move || drop(old));
            let new = hub.publish(r.clone(), a.clone(), None);
            ending.join().unwrap();
            new.send(frame(b"new"));
            let got = take(&log);
            assert_eq!(got.len(), 4, "{got:?}");
            assert_eq!(
                got[1..],
                ["closed", "attached v=- a=-", "frame b\"new\""],
                "{got:?}"
            );
            drop(new);
        }
    }
}
