//! The shell around [`super::upload::Ledger`]: one task per recording with
//! cloud storage, uploading with `object_store` (S3 API: AWS S3, Tencent
//! COS, or any S3-compatible endpoint set by `storage.endpoint`).
//!
//! Every 2 s, and when the recording ends, the task lists the recording's
//! directory, lets the ledger decide what is closed and due, uploads it
//! (multipart above 16 MiB) and writes the ledger to
//! `<data_dir>/uploads/<TaskId>.json` (mode 0600: it holds the storage
//! secret) after each change. At start the gateway resumes every ledger
//! left there: the recording itself ended with the process, so all of its
//! files are closed. A ledger whose files are all up is deleted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::upload::{Destination, Ledger, Seen, UploadState};
use super::{FileList, RecordedFile, RecordingEvent, RecordingEventKind, RecordingEvents};
use crate::config::StorageConfig;
use crate::room::RoomKey;

/// How often a recording's directory is looked at.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// Files larger than this go up in parts of this size.
const PART_BYTES: usize = 16 << 20;

type Shared = Arc<Mutex<Ledger>>;

/// Every recording's uploads.
#[derive(Clone)]
pub(crate) struct Uploads {
    /// `<data_dir>/uploads`: the ledgers.
    ledgers_dir: PathBuf,
    /// `<data_dir>/recordings`: the files.
    recordings_dir: PathBuf,
    storage: StorageConfig,
    live: Arc<Mutex<HashMap<String, Shared>>>,
    events: RecordingEvents,
}

impl Uploads {
    pub(crate) fn new(data_dir: &Path, storage: StorageConfig, events: RecordingEvents) -> Uploads {
        Uploads {
            ledgers_dir: data_dir.join("uploads"),
            recordings_dir: data_dir.join("recordings"),
            storage,
            live: Arc::default(),
            events,
        }
    }

    /// Resumes the uploads a previous run left unfinished.
    pub(crate) fn resume_all(&self) {
        let Ok(rd) = std::fs::read_dir(&self.ledgers_dir) else {
            return;
        };
        for path in rd.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let ledger = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Ledger>(&b).map_err(|e| e.to_string()));
            match ledger {
                Ok(mut l) => {
                    tracing::info!(task = %l.task, files = l.files.len(), "recording upload resumed");
                    l.finish();
                    let (_tx, rx) = watch::channel(true);
                    self.spawn(l, rx, None);
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), "upload ledger unreadable, left as is: {e}")
                }
            }
        }
    }

    /// Uploads recording `task` to `dest` as its files close; `finished`
    /// turns true when the recording ends.
    pub(crate) fn start(
        &self,
        task: &str,
        (room, user): (&RoomKey, &str),
        dest: Destination,
        files: FileList,
        finished: watch::Receiver<bool>,
    ) {
        self.spawn(Ledger::new(task, room, user, dest), finished, Some(files));
    }

    fn spawn(&self, ledger: Ledger, finished: watch::Receiver<bool>, files: Option<FileList>) {
        let task = ledger.task.clone();
        let store = match self.store(&ledger.dest) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%task, "recording upload cannot start: {e}");
                return;
            }
        };
        let shared = Arc::new(Mutex::new(ledger));
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.clone(), shared.clone());
        let run = Run {
            ledger: shared,
            store,
            dir: self.recordings_dir.join(&task),
            file: self.ledgers_dir.join(format!("{task}.json")),
            events: self.events.clone(),
            files,
        };
        let live = self.live.clone();
        tokio::spawn(async move {
            run.run(finished).await;
            live.lock().unwrap_or_else(|p| p.into_inner()).remove(&task);
        });
    }

    /// The S3 client for `dest`.
    fn store(&self, dest: &Destination) -> Result<Arc<dyn ObjectStore>, String> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&dest.bucket)
            .with_region(&dest.region)
            .with_access_key_id(&dest.access_key)
            .with_secret_access_key(&dest.secret_key)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        match (&self.storage.endpoint, dest.vendor) {
            (Some(endpoint), _) => {
                b = b
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(!self.storage.force_path_style);
            }
            // Tencent COS: the bucket's own host name.
            (None, 0) => {
                b = b
                    .with_endpoint(format!(
                        "https://{}.cos.{}.myqcloud.com",
                        dest.bucket, dest.region
                    ))
                    .with_virtual_hosted_style_request(true);
            }
            (None, _) => {}
        }
        b.build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            .map_err(|e| e.to_string())
    }

    /// A file's upload state, if `task` uploads.
    pub(crate) fn state(&self, task: &str, file: &str) -> Option<UploadState> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let ledger = live.get(task)?.lock().unwrap_or_else(|p| p.into_inner());
        Some(ledger.state(file).unwrap_or(UploadState::Pending))
    }
}

struct Run {
    ledger: Shared,
    store: Arc<dyn ObjectStore>,
    dir: PathBuf,
    file: PathBuf,
    events: RecordingEvents,
    /// The recording's own list (who, which tracks, since when), while it runs.
    files: Option<FileList>,
}

impl Run {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `kind` once per `key` (kept in the ledger, so a restart does
    /// not repeat it). True if it was new (the ledger needs saving).
    fn announce(&self, key: &str, kind: impl FnOnce() -> RecordingEventKind) -> bool {
        let mut l = self.lock();
        if !l.announce(key) {
            return false;
        }
        let _ = self.events.send(RecordingEvent {
            room: l.room_key(),
            task: l.task.clone(),
            user: l.user.clone(),
            at_ms: crate::unix_now_ms(),
            kind: kind(),
        });
        true
    }

    /// What the recording's list says of `name`, or as much as is known.
    fn recorded(&self, name: &str) -> RecordedFile {
        self.files
            .as_ref()
            .and_then(|f| {
                f.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|r| r.name == name)
                    .cloned()
            })
            .unwrap_or_else(|| RecordedFile {
                user: None,
                name: name.to_owned(),
                track: "audio_video",
                begin: 0,
            })
    }

    /// 307 for each playlist that cut its first segment, 304 for each that
    /// reached the bucket.
    fn announce_files(&self) -> bool {
        let playlists = self.lock().playlists();
        let mut changed = false;
        for (name, sliced, uploaded) in playlists {
            if sliced {
                changed |=
                    self.announce(&format!("307:{name}"), || RecordingEventKind::FileSlice {
                        file: self.recorded(&name),
                    });
            }
            if uploaded {
                changed |= self.announce(&format!("304:{name}"), || RecordingEventKind::FileInfo {
                    files: vec![self.recorded(&name)],
                });
            }
        }
        changed
    }

    async fn run(self, mut finished: watch::Receiver<bool>) {
        let task = self.lock().task.clone();
        if self.announce("303", || RecordingEventKind::UploadStart) {
            self.persist().await;
        }
        loop {
            let ended = *finished.borrow_and_update();
            let seen = scan(&self.dir).await;
            let changed = {
                let mut l = self.lock();
                let mut changed = l.observe(&seen);
                if ended && !l.finished {
                    l.finish();
                    changed = true;
                }
                changed
            };
            let announced = self.announce_files();
            if changed || announced {
                self.persist().await;
            }
            loop {
                let due = self.lock().next_due(crate::unix_now_ms());
                let Some(name) = due else { break };
                let result = self.upload(&task, &name).await;
                {
                    let mut l = self.lock();
                    match result {
                        Ok((size, mtime)) => {
                            tracing::debug!(%task, file = %name, size, "uploaded");
                            l.uploaded(&name, size, mtime);
                        }
                        Err(e) => {
                            tracing::warn!(%task, file = %name, "upload failed, will retry: {e}");
                            l.failed(&name, e, crate::unix_now_ms());
                        }
                    }
                }
                self.announce_files();
                self.persist().await;
            }
            let complete = self.lock().complete();
            if complete {
                self.announce("305", || RecordingEventKind::UploadStop);
                let _ = tokio::fs::remove_file(&self.file).await;
                tracing::info!(%task, "recording uploaded");
                return;
            }
            let next_retry = self.lock().next_retry_ms();
            let retry =
                next_retry.map(|at| Duration::from_millis(at.saturating_sub(crate::unix_now_ms())));
            let pause = retry.map_or(SCAN_EVERY, |r| r.min(SCAN_EVERY));
            tokio::select! {
                _ = crate::ticks::sleep(pause) => {}
                r = finished.changed(), if !ended => {
                    if r.is_err() {
                        // The recording's side is gone: it has ended.
                        let mut l = self.lock();
                        if !l.finished {
                            l.finish();
                        }
                    }
                }
            }
        }
    }

    /// Uploads one file as it is now: its (size, mtime) when read.
    async fn upload(&self, task: &str, name: &str) -> Result<(u64, u64), String> {
        let path = self.dir.join(name);
        let key = self.lock().dest.object_key(task, name);
        let location = ObjectPath::parse(&key).map_err(|e| e.to_string())?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let (size, mtime) = (meta.len(), mtime_ms(&meta));
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        if size as usize <= PART_BYTES {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            self.store
                .put(&location, PutPayload::from(buf))
                .await
                .map_err(|e| e.to_string())?;
        } else {
            let upload = self
                .store
                .put_multipart(&location)
                .await
                .map_err(|e| e.to_string())?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| format!("{name}: {e}"))?;
                if n == 0 {
                    break;
                }
                w.wait_for_capacity(2).await.map_err(|e| e.to_string())?;
                w.write(&buf[..n]);
            }
            w.finish().await.map_err(|e| e.to_string())?;
        }
        Ok((size, mtime))
    }

    /// Writes the ledger (0600, through a temporary file and a rename).
    async fn persist(&self) {
        let bytes = match serde_json::to_vec(&*self.lock()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("upload ledger: {e}");
                return;
            }
        };
        let file = self.file.clone();
        let r = tokio::task::spawn_blocking(move || write_private(&file, &bytes)).await;
        if let Ok(Err(e)) = r {
            tracing::error!(file = %self.file.display(), "upload ledger not saved: {e}");
        }
    }
}

fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

fn mtime_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every file under `dir`, names relative and `/`-separated.
async fn scan(dir: &Path) -> Vec<Seen> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut stack = vec![(dir.clone(), String::new())];
        while let Some((d, rel)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                let name = e.file_name().to_string_lossy().into_owned();
                let rel_name = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if meta.is_dir() {
                    stack.push((e.path(), rel_name));
                } else if meta.is_file() && !rel_name.ends_with(".tmp") {
                    out.push(Seen {
                        name: rel_name,
                        size: meta.len(),
                        mtime_ms: mtime_ms(&meta),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    })
    .await
    .unwrap_or_default()
}
