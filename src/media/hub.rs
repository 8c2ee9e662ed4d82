//! The media hub: where relay tasks find a publisher's stream.
//!
//! A publisher registers its (room, user) and gets a `Publisher` to send on;
//! consumers subscribe and get the current track configurations plus every
//! message from then on. Fan-out is a bounded broadcast channel: a consumer
//! that falls `FANOUT_CAPACITY` messages behind loses them and is told so;
//! it must then wait for the next keyframe (the publisher is never slowed
//! by a consumer). The registry lock guards only the map of publishers,
//! never the media path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast, watch};

use super::{MediaMessage, TrackConfig, TrackKind};
use crate::room::{RoomKey, UserId};

/// Messages buffered per consumer: about 4 s of 30 fps video plus audio.
pub(crate) const FANOUT_CAPACITY: usize = 512;

type Key = (RoomKey, UserId);

#[derive(Clone)]
pub(crate) struct MediaHub {
    publishers: Arc<Mutex<HashMap<Key, Entry>>>,
    /// Bumped whenever a publisher comes or goes: watchers then read the
    /// set again ([`MediaHub::publishers_in`]), so one that was busy misses
    /// nothing, it only reads a newer snapshot.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for MediaHub {
    fn default() -> Self {
        MediaHub {
            publishers: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

#[derive(Clone)]
struct Entry {
    id: u64,
    messages: broadcast::Sender<Arc<MediaMessage>>,
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
    key: Key,
    id: u64,
    messages: broadcast::Sender<Arc<MediaMessage>>,
    configs: watch::Sender<Configs>,
    keyframe: Arc<Notify>,
}

/// The receiving side, held by a relay task.
pub(crate) struct Subscription {
    pub configs: Configs,
    pub messages: broadcast::Receiver<Arc<MediaMessage>>,
    keyframe: Arc<Notify>,
}

impl Subscription {
    /// Asks the publisher for a keyframe (a WebRTC publisher sends a PLI;
    /// RTMP cannot be asked, its next keyframe comes on its own).
    pub(crate) fn request_keyframe(&self) {
        self.keyframe.notify_one();
    }
}

impl MediaHub {
    /// Registers a publisher, replacing any older one of the same user.
    pub(crate) fn publish(&self, room: RoomKey, user: UserId) -> Publisher {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (messages, _) = broadcast::channel(FANOUT_CAPACITY);
        let (configs, configs_rx) = watch::channel(Configs::default());
        let keyframe = Arc::new(Notify::new());
        let key = (room, user);
        self.lock().insert(
            key.clone(),
            Entry {
                id,
                messages: messages.clone(),
                configs: configs_rx,
                keyframe: keyframe.clone(),
            },
        );
        self.changes.send_modify(|g| *g += 1);
        Publisher {
            hub: self.clone(),
            key,
            id,
            messages,
            configs,
            keyframe,
        }
    }

    /// The publisher's stream, if it is publishing.
    pub(crate) fn subscribe(&self, room: &RoomKey, user: &UserId) -> Option<Subscription> {
        let map = self.lock();
        let e = map.get(&(room.clone(), user.clone()))?;
        Some(Subscription {
            messages: e.messages.subscribe(),
            configs: e.configs.borrow().clone(),
            keyframe: e.keyframe.clone(),
        })
    }

    /// Changes whenever a publisher starts or stops, in any room.
    pub(crate) fn watch_publishers(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Who publishes in `room`, in the order they started.
    pub(crate) fn publishers_in(&self, room: &RoomKey) -> Vec<UserId> {
        let map = self.lock();
        let mut v: Vec<(u64, UserId)> = map
            .iter()
            .filter(|((r, _), _)| r == room)
            .map(|((_, u), e)| (e.id, u.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, u)| u).collect()
    }

    pub(crate) fn is_publishing(&self, room: &RoomKey, user: &UserId) -> bool {
        self.lock().contains_key(&(room.clone(), user.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts/removes), so a poisoned lock is still usable.
        self.publishers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Publisher {
    /// Woken when a consumer needs a keyframe.
    pub(crate) fn keyframe_requests(&self) -> Arc<Notify> {
        self.keyframe.clone()
    }

    pub(crate) fn send(&self, msg: MediaMessage) {
        if let MediaMessage::Config(c) = &msg {
            self.configs.send_modify(|cfg| match c.kind {
                TrackKind::Video => cfg.video = Some(c.clone()),
                TrackKind::Audio => cfg.audio = Some(c.clone()),
            });
        }
        // No receiver is fine: nobody relays this anchor right now.
        let _ = self.messages.send(Arc::new(msg));
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let mut map = self.hub.lock();
        if map.get(&self.key).is_some_and(|e| e.id == self.id) {
            map.remove(&self.key);
            drop(map);
            self.hub.changes.send_modify(|g| *g += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::RoomId;

    #[tokio::test]
    async fn watchers_see_publishers_come_and_go() {
        let hub = MediaHub::default();
        let mut w = hub.watch_publishers();
        let room = RoomKey {
            app: 1,
            room: RoomId::parse("r", None).unwrap(),
        };
        let p = hub.publish(room.clone(), UserId::new("a").unwrap());
        assert!(w.has_changed().unwrap());
        w.borrow_and_update();
        assert_eq!(hub.publishers_in(&room), [UserId::new("a").unwrap()]);
        // A replaced publisher's drop changes nothing; the last one's does.
        let q = hub.publish(room.clone(), UserId::new("a").unwrap());
        w.borrow_and_update();
        drop(p);
        assert!(!w.has_changed().unwrap());
        drop(q);
        assert!(w.has_changed().unwrap());
        assert!(hub.publishers_in(&room).is_empty());
    }
}
