//! Recordings uploaded to object storage (TRTC `StorageParams.CloudStorage`):
//! the pure ledger of a task's uploads.
//!
//! A recording's files go to `<FileNamePrefix...>/<TaskId>/<file>` in the
//! bucket, as TRTC puts them. A file is uploaded once it is closed: an MP4
//! part or an HLS segment when a later one of the same series exists (or the
//! recording has ended); a playlist each time it changed, after the
//! segments it names. The ledger is kept on disk by the shell
//! ([`super::uploader`]) after every change, so a restart loses nothing;
//! it holds the storage secret, so its file is private to the process's
//! user, and the secret never appears in `Debug` output, logs or answers.
//!
//! Pure: what is on disk and the time are arguments.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a task's files go.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Destination {
    /// 0: Tencent COS; 1: AWS S3. Both speak the S3 API.
    pub vendor: u8,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// `FileNamePrefix`: path segments before the task id.
    pub prefix: Vec<String>,
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("vendor", &self.vendor)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Destination {
    /// The object key of `file` (relative to the task's directory).
    pub(crate) fn object_key(&self, task: &str, file: &str) -> String {
        let mut parts: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        parts.push(task);
        parts.push(file);
        parts.join("/")
    }

    /// A `FileNamePrefix` segment: TRTC allows a-z, A-Z, 0-9, `_` and `-`.
    pub(crate) fn valid_prefix(segment: &str) -> bool {
        !segment.is_empty()
            && segment.len() <= 64
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }
}

/// A file as the recording directory shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Relative to the task's directory, `/`-separated.
    pub name: String,
    pub size: u64,
    pub mtime_ms: u64,
}

/// One file's upload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub size: u64,
    pub mtime_ms: u64,
    /// Closed: its content will not change (playlists never are).
    pub closed: bool,
    /// The (size, mtime) last uploaded.
    pub uploaded: Option<(u64, u64)>,
    /// Failed attempts since the last success.
    pub attempts: u32,
    pub error: Option<String>,
    /// Unix ms before which it is not tried again.
    pub retry_at_ms: u64,
}

/// A file's upload state, as DescribeCloudRecording shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadState {
    /// Still being written, or waiting its turn.
    Pending,
    Uploaded,
    /// The last attempt failed; it is tried again.
    Retrying,
}

impl UploadState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UploadState::Pending => "pending",
            UploadState::Uploaded => "uploaded",
            UploadState::Retrying => "retrying",
        }
    }
}

/// First retry after this; doubled each time up to [`RETRY_MAX_MS`].
const RETRY_FIRST_MS: u64 = 1_000;
const RETRY_MAX_MS: u64 = 30_000;

/// A task's uploads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ledger {
    pub task: String,
    pub sdkappid: u64,
    /// The room (as text, and whether it is a string room) and the
    /// recording's UserId: for the callbacks, also after a restart.
    #[serde(default)]
    pub room: String,
    #[serde(default)]
    pub room_str: bool,
    #[serde(default)]
    pub user: String,
    /// Callbacks already sent (`303`, `304:<playlist>`, `307:<playlist>`, `305`).
    #[serde(default)]
    pub announced: std::collections::BTreeSet<String>,
    pub dest: Destination,
    /// The recording has ended: every file is closed.
    pub finished: bool,
    pub files: BTreeMap<String, Entry>,
}

impl Ledger {
    pub(crate) fn new(
        task: &str,
        room: &crate::room::RoomKey,
        user: &str,
        dest: Destination,
    ) -> Ledger {
        Ledger {
            task: task.to_owned(),
            sdkappid: room.app,
            room: room.room.to_string(),
            room_str: matches!(room.room, crate::room::RoomId::Str(_)),
            user: user.to_owned(),
            announced: Default::default(),
            dest,
            finished: false,
            files: BTreeMap::new(),
        }
    }

    /// Takes in the directory as it is now. True if anything changed.
    pub(crate) fn observe(&mut self, seen: &[Seen]) -> bool {
        // The highest number of each series: anything below it is closed.
        let mut last: HashMap<(&str, &str), u64> = HashMap::new();
        for (stem, n, ext) in seen.iter().filter_map(|s| series(&s.name)) {
            let m = last.entry((stem, ext)).or_insert(n);
            *m = (*m).max(n);
        }
        let mut changed = false;
        for s in seen {
            let has_successor = series(&s.name)
                .is_some_and(|(stem, n, ext)| last.get(&(stem, ext)).is_some_and(|m| *m > n));
            let closed = self.finished || (!is_playlist(&s.name) && has_successor);
            let e = self.files.entry(s.name.clone()).or_default();
            if (e.size, e.mtime_ms, e.closed) != (s.size, s.mtime_ms, closed) {
                (e.size, e.mtime_ms, e.closed) = (s.size, s.mtime_ms, closed);
                changed = true;
            }
        }
        changed
    }

    /// The recording ended: everything on disk is closed.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
        for e in self.files.values_mut() {
            e.closed = true;
        }
    }

    fn wants(e: &Entry, name: &str) -> bool {
        let current = Some((e.size, e.mtime_ms));
        (e.closed || is_playlist(name)) && e.uploaded != current
    }

    /// The next file to upload at `now_ms`: media before playlists (a
    /// playlist never names a segment the bucket lacks), in name order.
    pub(crate) fn next_due(&self, now_ms: u64) -> Option<String> {
        let ready = |(n, e): &(&String, &Entry)| Self::wants(e, n) && e.retry_at_ms <= now_ms;
        let media = self
            .files
            .iter()
            .filter(|(n, _)| !is_playlist(n))
            .find(ready);
        let playlist = || {
            // Only once every closed media file is up.
            let media_pending = self
                .files
                .iter()
                .any(|(n, e)| !is_playlist(n) && e.closed && Self::wants(e, n));
            if media_pending {
                return None;
            }
            self.files
                .iter()
                .filter(|(n, _)| is_playlist(n))
                .find(ready)
        };
        media.or_else(playlist).map(|(n, _)| n.clone())
    }

    /// When the next retry falls due, if something waits only on time.
    pub(crate) fn next_retry_ms(&self) -> Option<u64> {
        self.files
            .iter()
            .filter(|(n, e)| Self::wants(e, n) && e.attempts > 0)
            .map(|(_, e)| e.retry_at_ms)
            .min()
    }

    /// `name` went up as it was at (`size`, `mtime_ms`).
    pub(crate) fn uploaded(&mut self, name: &str, size: u64, mtime_ms: u64) {
        if let Some(e) = self.files.get_mut(name) {
            e.uploaded = Some((size, mtime_ms));
            e.attempts = 0;
            e.error = None;
            e.retry_at_ms = 0;
        }
    }

    /// An attempt failed: tried again after a growing pause.
    pub(crate) fn failed(&mut self, name: &str, error: String, now_ms: u64) {
        if let Some(e) = self.files.get_mut(name) {
            e.attempts = e.attempts.saturating_add(1);
            let pause = RETRY_FIRST_MS
                .saturating_mul(1 << (e.attempts - 1).min(5))
                .min(RETRY_MAX_MS);
            e.retry_at_ms = now_ms + pause;
            e.error = Some(error);
        }
    }

    /// The room this recording is of.
    pub(crate) fn room_key(&self) -> crate::room::RoomKey {
        let room = match self.room.parse::<u32>() {
            Ok(n) if !self.room_str => crate::room::RoomId::Num(n),
            _ => crate::room::RoomId::Str(self.room.clone()),
        };
        crate::room::RoomKey {
            app: self.sdkappid,
            room,
        }
    }

    /// True the first time `what` is announced.
    pub(crate) fn announce(&mut self, what: &str) -> bool {
        self.announced.insert(what.to_owned())
    }

    /// Playlists that have a media file beside them, and those already in
    /// the bucket, in name order.
    pub(crate) fn playlists(&self) -> Vec<(String, bool, bool)> {
        self.files
            .iter()
            .filter(|(n, _)| is_playlist(n))
            .map(|(n, e)| {
                let dir = n.rsplit_once('/').map_or("", |(d, _)| d);
                let sliced = self
                    .files
                    .keys()
                    .any(|m| !is_playlist(m) && m.rsplit_once('/').map_or("", |(d, _)| d) == dir);
                (n.clone(), sliced, e.uploaded.is_some())
            })
            .collect()
    }

    /// Every file is up and nothing more will come.
    pub(crate) fn complete(&self) -> bool {
        self.finished && self.files.iter().all(|(n, e)| !Self::wants(e, n))
    }

    /// A file's state; a playlist's covers the segments beside it (what
    /// a player of the bucket's copy needs).
    pub(crate) fn state(&self, name: &str) -> Option<UploadState> {
        self.files.get(name)?;
        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
        let same_dir = |n: &str| n.rsplit_once('/').map_or("", |(d, _)| d) == dir;
        let members: Vec<(&String, &Entry)> = if is_playlist(name) {
            self.files.iter().filter(|(n, _)| same_dir(n)).collect()
        } else {
            self.files.get_key_value(name).into_iter().collect()
        };
        Some(if members.iter().any(|(_, e)| e.error.is_some()) {
            UploadState::Retrying
        } else if members
            .iter()
            .all(|(n, e)| !Self::wants(e, n) && e.uploaded.is_some())
        {
            UploadState::Uploaded
        } else {
            UploadState::Pending
        })
    }
}

fn is_playlist(name: &str) -> bool {
    name.ends_with(".m3u8")
}

/// (directory and stem without its trailing number, number, extension):
/// `seg3.ts` follows `seg2.ts`, `mix_2.mp4` follows `mix_1.mp4`.
fn series(name: &str) -> Option<(&str, u64, &str)> {
    let (base, ext) = name.rsplit_once('.')?;
    let digits = base.len() - base.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (stem, n) = base.split_at(base.len() - digits);
    Some((stem, n.parse().ok()?, ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> Destination {
        Destination {
            vendor: 1,
            region: "us-east-1".into(),
            bucket: "b".into(),
            access_key: "AK".into(),
            secret_key: "very-secret".into(),
            prefix: vec!["school".into(), "class1".into()],
        }
    }

    fn room() -> crate::room::RoomKey {
        crate::room::RoomKey {
            app: 1,
            room: crate::room::RoomId::Num(42),
        }
    }

    fn seen(list: &[(&str, u64, u64)]) -> Vec<Seen> {
        list.iter()
            .map(|(n, s, t)| Seen {
                name: (*n).into(),
                size: *s,
                mtime_ms: *t,
            })
            .collect()
    }

    #[test]
    fn objects_go_under_the_prefix_and_task_and_the_secret_stays_out_of_debug() {
        let d = dest();
        assert_eq!(
            d.object_key("rec-1", "mix_hls/seg0.ts"),
            "school/class1/rec-1/mix_hls/seg0.ts"
        );
        assert!(!format!("{d:?}").contains("very-secret"));
        assert!(Destination::valid_prefix("class_1-a"));
        assert!(!Destination::valid_prefix("a/b"));
        assert!(!Destination::valid_prefix(""));
    }

    #[test]
    fn segments_and_parts_go_up_once_closed_and_playlists_after_their_segments() {
        let mut l = Ledger::new("rec-1", &room(), "recorder", dest());
        l.observe(&seen(&[
            ("mix_hls/index.m3u8", 100, 1),
            ("mix_hls/seg0.ts", 5000, 1),
            ("mix_1.mp4", 9000, 1),
        ]));
        // seg0 and the MP4 part are still being written: only the playlist.
        assert_eq!(l.next_due(0).as_deref(), Some("mix_hls/index.m3u8"));
        l.uploaded("mix_hls/index.m3u8", 100, 1);
        assert_eq!(l.next_due(0), None);
        l.observe(&seen(&[
            ("mix_hls/index.m3u8", 140, 2),
            ("mix_hls/seg0.ts", 6000, 2),
            ("mix_hls/seg1.ts", 10, 2),
            ("mix_1.mp4", 9000, 1),
        ]));
        // seg0 is closed now; the playlist waits for it.
        assert_eq!(l.next_due(0).as_deref(), Some("mix_hls/seg0.ts"));
        l.uploaded("mix_hls/seg0.ts", 6000, 2);
        assert_eq!(l.next_due(0).as_deref(), Some("mix_hls/index.m3u8"));
        l.uploaded("mix_hls/index.m3u8", 140, 2);
        assert_eq!(l.next_due(0), None);
        assert!(!l.complete());
        assert_eq!(l.state("mix_1.mp4"), Some(UploadState::Pending));
        // The playlist stands for its segments: seg1 is not up yet.
        assert_eq!(l.state("mix_hls/index.m3u8"), Some(UploadState::Pending));
        let mut failing = l.clone();
        failing.failed("mix_hls/seg1.ts", "refused".into(), 0);
        assert_eq!(
            failing.state("mix_hls/index.m3u8"),
            Some(UploadState::Retrying)
        );
        // The end closes everything.
        l.finish();
        assert_eq!(l.next_due(0).as_deref(), Some("mix_1.mp4"));
        l.uploaded("mix_1.mp4", 9000, 1);
        assert_eq!(l.next_due(0).as_deref(), Some("mix_hls/seg1.ts"));
        l.uploaded("mix_hls/seg1.ts", 10, 2);
        assert!(l.complete());
        assert_eq!(l.state("mix_1.mp4"), Some(UploadState::Uploaded));
    }

    #[test]
    fn failures_back_off_and_survive_a_round_trip_through_json() {
        let mut l = Ledger::new("rec-1", &room(), "recorder", dest());
        l.observe(&seen(&[("a_1.mp4", 1, 1), ("a_2.mp4", 1, 1)]));
        assert_eq!(l.next_due(0).as_deref(), Some("a_1.mp4"));
        l.failed("a_1.mp4", "connection refused".into(), 10_000);
        assert_eq!(l.state("a_1.mp4"), Some(UploadState::Retrying));
        assert_eq!(l.next_due(10_500), None);
        assert_eq!(l.next_retry_ms(), Some(11_000));
        l.failed("a_1.mp4", "again".into(), 11_000);
        assert_eq!(l.next_retry_ms(), Some(13_000));
        for _ in 0..10 {
            l.failed("a_1.mp4", "again".into(), 0);
        }
        assert_eq!(l.next_retry_ms(), Some(RETRY_MAX_MS));
        assert!(l.announce("303"));
        assert!(!l.announce("303"));
        let back: Ledger = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.room_key(), room());
        l.uploaded("a_1.mp4", 1, 1);
        assert_eq!(l.state("a_1.mp4"), Some(UploadState::Uploaded));
    }
}
