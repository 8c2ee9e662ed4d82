//! The cluster shell: this node's heartbeat in Redis, and the leases of the
//! rooms it owns.
//!
//! A room lives on one node. Before a room is opened here (the first
//! `Enter` of a room this node does not hold), its lease is claimed in
//! Redis with a fencing token from one counter; a lease held by another
//! live node refuses the entry with that node's name and address. Leases
//! are renewed four times per `lease_ms`; a renewal that finds another
//! owner's token means the lease was lost, and the room is closed here.
//! Leases of rooms no longer open are released (compare-and-delete).
//!
//! Redis down is not an outage: rooms already held keep running (their
//! renewals fail quietly and succeed again when Redis returns, re-setting a
//! lease Redis forgot); only new rooms are refused, with a clear error.
//! The decisions are in `lease` (pure); this file does the I/O.

pub(crate) mod forward;
pub(crate) mod lease;
mod rounds;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::config::{ClusterConfig, Config};
use crate::hls::playlist::Position;
use crate::room::{Command, RoomHandle, RoomKey};
use lease::{LeaseValue, Leases, NodeRecord, Placement, WhenHeld};

const PREFIX: &str = "roomcast:";
/// Longest wait for one Redis exchange.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// A task whose resume failed is tried again after this long.
const RESUME_RETRY: Duration = Duration::from_secs(30);
/// A claimed room has this long to open before its lease counts as unused.
const CLAIM_GRACE: Duration = Duration::from_secs(5);

/// KEYS[1] the lease, KEYS[2] the fencing counter; ARGV[1] this node,
/// ARGV[2] the lease in ms, ARGV[3] the value expected there ("" = none).
/// Returns {1, new value} or {0, the value found}.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] then return {0, cur} end
if (not cur) and ARGV[3] ~= '' then return {0, ''} end
local token = redis.call('INCR', KEYS[2])
local v = ARGV[1] .. ' ' .. token
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return {1, v}
";

/// KEYS[1] the lease, KEYS[2] the fencing counter; ARGV[1] the value held,
/// ARGV[2] the lease in ms, ARGV[3] its token. 1: renewed; 2: Redis had
/// forgotten it (restarted empty, or silent past the lease) and nobody else
/// took it: set again, the counter kept above the token; 0: lost.
const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[2], ARGV[3])
  end
  return 2
end
return 0
";

/// KEYS[1] the lease; ARGV[1] the value held. Deletes only our own.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error("room {room} is owned by cluster node {node} ({http}); connect there")]
    Elsewhere {
        room: String,
        node: String,
        http: String,
        rtmp: String,
    },
    #[error(
        "this node has no CPU budget left for a new room; node {node} ({http}) has: connect there"
    )]
    PlacedElsewhere {
        node: String,
        http: String,
        rtmp: String,
    },
    #[error("no node of the cluster has CPU budget left for a new room")]
    Full,
    #[error(
        "the cluster store (Redis) is unreachable, so new rooms are refused until it returns: {0}"
    )]
    Unavailable(String),
}

/// What the heartbeat reports about this node's load.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Load {
    pub tasks: u64,
    pub budget: f64,
    pub budget_in_use: f64,
}

/// A task started through the TRTC API (a relay or mix, a cloud recording,
/// a stream ingest), as stored in Redis: enough for another node to start
/// it again, with the same id, when the room's owner dies.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TaskRecord {
    pub id: String,
    /// The room, as `RoomKey` displays it.
    pub room: String,
    /// The node running it.
    pub node: String,
    /// The action that started it and its parameters, then every update's.
    pub action: String,
    pub params: serde_json::Value,
    #[serde(default)]
    pub updates: Vec<serde_json::Value>,
    /// How many times it was started again on another node.
    #[serde(default)]
    pub resumes: u32,
}

impl TaskRecord {
    /// How long Redis keeps a record (rewritten at every change and by its
    /// node, forgotten when the task ends): a week.
    fn keep_ms(&self) -> u64 {
        7 * 86_400_000
    }
}

/// What the cluster asks of the node's tasks (the API implements it: it
/// can start a task from its stored request).
pub(crate) trait Tasks: Send + Sync {
    /// The tasks running here, and their rooms.
    fn local(&self) -> LocalTasks;
    /// Stops the tasks of a room this node lost.
    fn stop_room(&self, room: &RoomKey);
    /// Starts a stored task here with its id (`Ok` too if it already runs here).
    fn resume(
        &self,
        record: TaskRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
}

/// The tasks of this node: their ids, and the rooms with one running (their
/// leases are kept while no user is in them).
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalTasks {
    pub running_rooms: std::collections::HashSet<RoomKey>,
    pub running: std::collections::HashSet<String>,
}

type LoadFn = Box<dyn Fn() -> Load + Send + Sync>;

type StreamsFn = Box<dyn Fn() -> Vec<(String, Option<Position>)> + Send + Sync>;

/// How long Redis keeps where a stream's numbering stood (for a node that
/// continues it after its own died).
const POSITION_KEEP_MS: u64 = 600_000;

pub(crate) struct Cluster {
    me: String,
    http: String,
    rtmp: String,
    lease_ms: u64,
    heartbeat_ms: u64,
    redis: ConnectionManager,
    leases: Mutex<Leases>,
    /// One claim at a time, so two entries into one new room here never
    /// race each other in Redis.
    claiming: tokio::sync::Mutex<()>,
    up: AtomicBool,
    load: std::sync::OnceLock<LoadFn>,
    streams: std::sync::OnceLock<StreamsFn>,
    tasks: std::sync::OnceLock<Arc<dyn Tasks>>,
    /// The records of tasks running here, written again if Redis forgets
    /// them (a restart without persistence).
    records: Mutex<std::collections::HashMap<String, TaskRecord>>,
    /// Every task this process stored: a record naming this node that is
    /// not among them is an earlier life's, to be resumed.
    known: Mutex<std::collections::HashSet<String>>,
    /// Tasks whose resume failed here, and when: tried again after a while.
    held_back: Mutex<std::collections::HashMap<String, Instant>>,
    /// The rooms whose tasks are being resumed here (one round at a time).
    resuming: rounds::Rounds<RoomKey>,
    /// Itself, for tasks spawned from `&self`.
    this: std::sync::OnceLock<std::sync::Weak<Cluster>>,
    /// The runtime it was made on (the shared one), where claims run.
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.me).finish()
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(' '))
        .unwrap_or_else(|| "node".into())
}

/// Renders the redis crate's error without the password of the URL.
fn why(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "cannot reach Redis (timed out)".into()
    } else if e.is_connection_refusal() {
        "cannot reach Redis (connection refused)".into()
    } else if e.is_io_error() {
        "cannot reach Redis (connection lost)".into()
    } else {
        e.to_string()
    }
}

impl Cluster {
    /// Connects lazily (a node starts while Redis is down) and starts the
    /// heartbeat, renewal and release loop. `None` without `[cluster]`.
    pub(crate) fn start(
        config: &Config,
        rooms: RoomHandle,
    ) -> Result<Option<Arc<Cluster>>, String> {
        let Some(c) = &config.cluster else {
            return Ok(None);
        };
        let cluster = Arc::new(Cluster::new(config, c)?);
        let _ = cluster.this.set(Arc::downgrade(&cluster));
        rooms.set_cluster(cluster.clone());
        tracing::info!(
            node = %cluster.me,
            http = %cluster.http,
            rtmp = %cluster.rtmp,
            "cluster node: rooms are leased in Redis"
        );
        tokio::spawn(cluster.clone().run(rooms));
        Ok(Some(cluster))
    }

    fn new(config: &Config, c: &ClusterConfig) -> Result<Cluster, String> {
        let client = redis::Client::open(c.redis_url.as_str())
            .map_err(|e| format!("cluster.redis_url: {e}"))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| format!("cluster.redis_url: {e}"))?;
        let host = |bind: std::net::IpAddr| {
            if bind.is_unspecified() {
                host_name()
            } else {
                bind.to_string()
            }
        };
        Ok(Cluster {
            me: c
                .node_id
                .clone()
                .unwrap_or_else(|| format!("{}:{}", host_name(), config.http.port)),
            http: c.advertise_http.clone().unwrap_or_else(|| {
                format!("http://{}:{}", host(config.http.bind), config.http.port)
            }),
            rtmp: c.advertise_rtmp.clone().unwrap_or_else(|| {
                format!("rtmp://{}:{}", host(config.rtmp.bind), config.rtmp.port)
            }),
            lease_ms: c.lease_ms,
            heartbeat_ms: c.heartbeat_ms,
            redis,
            leases: Mutex::new(Leases::default()),
            claiming: tokio::sync::Mutex::new(()),
            up: AtomicBool::new(false),
            load: std::sync::OnceLock::new(),
            streams: std::sync::OnceLock::new(),
            tasks: std::sync::OnceLock::new(),
            records: Mutex::new(std::collections::HashMap::new()),
            known: Mutex::new(std::collections::HashSet::new()),
            held_back: Mutex::new(std::collections::HashMap::new()),
            resuming: rounds::Rounds::default(),
            this: std::sync::OnceLock::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Where the heartbeat reads this node's load from.
    pub(crate) fn set_load(&self, load: impl Fn() -> Load + Send + Sync + 'static) {
        let _ = self.load.set(Box::new(load));
    }

    /// Where the heartbeat reads the HLS streams served here from: each is
    /// announced in Redis, so any node can send its players here, with
    /// where its numbering stands, so a node resuming its task continues it.
    pub(crate) fn set_streams(
        &self,
        streams: impl Fn() -> Vec<(String, Option<Position>)> + Send + Sync + 'static,
    ) {
        let _ = self.streams.set(Box::new(streams));
    }

    /// Where HLS stream `name` is to go on from: where it stood when a
    /// node last announced it, past the segments that node may have made
    /// between that heartbeat and its death (one per second at most).
    pub(crate) async fn stream_position(&self, name: &str) -> Option<Position> {
        let mut con = self.redis.clone();
        let v: Option<String> = self
            .call(
                redis::cmd("GET")
                    .arg(format!("{PREFIX}hls-pos:{name}"))
                    .query_async(&mut con),
            )
            .await
            .ok()?;
        let mut at = Position::parse(&v?)?;
        at.next_msn += 1 + self.heartbeat_ms / 1000;
        Some(at)
    }

    /// The HTTP address of the node serving HLS stream `name`, if another
    /// live node announced it.
    pub(crate) async fn stream_node(&self, name: &str) -> Option<String> {
        let mut con = self.redis.clone();
        let node: String = self
            .call(
                redis::cmd("GET")
                    .arg(format!("{PREFIX}hls:{name}"))
                    .query_async::<Option<String>>(&mut con),
            )
            .await
            .ok()??;
        if node == self.me {
            return None;
        }
        Some(self.node_record(&node).await.ok()??.http)
    }

    /// A live node's record (`None`: its heartbeat has stopped).
    async fn node_record(&self, node: &str) -> Result<Option<NodeRecord>, String> {
        let mut con = self.redis.clone();
        let json: Option<String> = self
            .call(
                redis::cmd("GET")
                    .arg(Self::node_key(node))
                    .query_async(&mut con),
            )
            .await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// This node's relay tasks, as the cluster needs them.
    pub(crate) fn set_tasks(&self, tasks: Arc<dyn Tasks>) {
        let _ = self.tasks.set(tasks);
    }

    fn task_key(id: &str) -> String {
        format!("{PREFIX}task:{id}")
    }

    fn room_tasks_key(room: &str) -> String {
        format!("{PREFIX}room-tasks:{room}")
    }

    /// Every stored task's id, for the orphan scan.
    fn tasks_key() -> String {
        format!("{PREFIX}tasks")
    }

    /// Stores a task started here (or resumed here: it now runs here).
    pub(crate) async fn save_task(&self, record: &TaskRecord) -> Result<(), String> {
        if let Ok(mut r) = self.records.lock() {
            r.insert(record.id.clone(), record.clone());
        }
        if let Ok(mut k) = self.known.lock() {
            k.insert(record.id.clone());
        }
        let json = serde_json::to_string(record).map_err(|e| e.to_string())?;
        let mut con = self.redis.clone();
        self.call(
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(Self::task_key(&record.id))
                .arg(json)
                .arg("PX")
                .arg(record.keep_ms())
                .ignore()
                .cmd("SADD")
                .arg(Self::room_tasks_key(&record.room))
                .arg(&record.id)
                .ignore()
                .cmd("SADD")
                .arg(Self::tasks_key())
                .arg(&record.id)
                .ignore()
                .query_async::<()>(&mut con),
        )
        .await
    }

    pub(crate) async fn task(&self, id: &str) -> Result<Option<TaskRecord>, String> {
        let mut con = self.redis.clone();
        let json: Option<String> = self
            .call(
                redis::cmd("GET")
                    .arg(Self::task_key(id))
                    .query_async(&mut con),
            )
            .await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Appends an update's parameters to a stored task.
    pub(crate) async fn task_updated(&self, id: &str, params: serde_json::Value) {
        if let Ok(Some(mut record)) = self.task(id).await {
            record.updates.push(params);
            let _ = self.save_task(&record).await;
        }
    }

    /// Forgets a task that was stopped or ended.
    pub(crate) async fn forget_task(&self, id: &str) {
        if let Ok(mut r) = self.records.lock() {
            r.remove(id);
        }
        let Ok(Some(record)) = self.task(id).await else {
            return;
        };
        let mut con = self.redis.clone();
        let _ = self
            .call(
                redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(Self::task_key(id))
                    .ignore()
                    .cmd("SREM")
                    .arg(Self::room_tasks_key(&record.room))
                    .arg(id)
                    .ignore()
                    .cmd("SREM")
                    .arg(Self::tasks_key())
                    .arg(id)
                    .ignore()
                    .query_async::<()>(&mut con),
            )
            .await;
    }

    /// Writes again the records of tasks running here that Redis lost
    /// (`SET NX`: a record another node rewrote since is left alone).
    async fn restore_records(&self) {
        let records: Vec<TaskRecord> = match self.records.lock() {
            Ok(r) => r.values().cloned().collect(),
            Err(_) => return,
        };
        if records.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for record in &records {
            let Ok(json) = serde_json::to_string(record) else {
                continue;
            };
            pipe.cmd("SET")
                .arg(Self::task_key(&record.id))
                .arg(json)
                .arg("PX")
                .arg(record.keep_ms())
                .arg("NX")
                .ignore()
                .cmd("SADD")
                .arg(Self::room_tasks_key(&record.room))
                .arg(&record.id)
                .ignore()
                .cmd("SADD")
                .arg(Self::tasks_key())
                .arg(&record.id)
                .ignore();
        }
        let mut con = self.redis.clone();
        let _ = self.call(pipe.query_async::<()>(&mut con)).await;
    }

    /// Starts again, here, every stored task of `room` (just leased here)
    /// that does not run here: its node died or let the room go. Asked
    /// while a round for the room is under way (the lease and the scan for
    /// orphans at once), that round goes again instead of a second one
    /// starting the same tasks beside it.
    async fn resume_tasks(self: Arc<Self>, room: RoomKey) {
        let Some(mut round) = self.resuming.begin(&room) else {
            return;
        };
        loop {
            self.resume_round(&room).await;
            if !round.again() {
                break;
            }
        }
    }

    async fn resume_round(&self, room: &RoomKey) {
        let Some(tasks) = self.tasks.get().cloned() else {
            return;
        };
        let mut con = self.redis.clone();
        let ids: Vec<String> = match self
            .call(
                redis::cmd("SMEMBERS")
                    .arg(Self::room_tasks_key(&room.to_string()))
                    .query_async(&mut con),
            )
            .await
        {
            Ok(ids) => ids,
            Err(_) => return,
        };
        let running = tasks.local().running;
        for id in ids {
            let mut record = match self.task(&id).await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    // Its record expired or was forgotten: out of the room's set.
                    let _ = self
                        .call(
                            redis::cmd("SREM")
                                .arg(Self::room_tasks_key(&room.to_string()))
                                .arg(&id)
                                .query_async::<()>(&mut con),
                        )
                        .await;
                    continue;
                }
                Err(_) => continue,
            };
            let from = record.node.clone();
            if running.contains(&id) {
                continue; // it runs here already (this node took it once)
            }
            if record.node == self.me && self.known.lock().is_ok_and(|k| k.contains(&id)) {
                continue; // it ran here and ended: its record is being forgotten
            }
            record.resumes += 1;
            match tasks.resume(record.clone()).await {
                Ok(()) => {
                    tracing::info!(room = %room, task = %id, from = %from, "cluster: task resumed here");
                    record.node = self.me.clone();
                    let _ = self.save_task(&record).await;
                }
                Err(e) => {
                    tracing::warn!(room = %room, task = %id, "cluster: task not resumed (tried again in {RESUME_RETRY:?}): {e}");
                    if let Ok(mut h) = self.held_back.lock() {
                        h.insert(id, Instant::now());
                    }
                }
            }
        }
    }

    /// Finds stored tasks nobody runs: their node died (no heartbeat) or
    /// is an earlier life of this one. Their rooms may have nobody to
    /// reconnect (an ingest, a recording waiting for its anchors), so this
    /// node claims each such room, as an entry would (placement and the
    /// lease decide between nodes scanning at once), and the claim resumes
    /// its tasks. A room held here already has them resumed again.
    async fn adopt_orphans(self: &Arc<Self>, local: &LocalTasks, nodes: &[NodeRecord]) {
        let mut con = self.redis.clone();
        let Ok(ids) = self
            .call(
                redis::cmd("SMEMBERS")
                    .arg(Self::tasks_key())
                    .query_async::<Vec<String>>(&mut con),
            )
            .await
        else {
            return;
        };
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !local.running.contains(id))
            .collect();
        if ids.is_empty() {
            return;
        }
        let keys: Vec<String> = ids.iter().map(|id| Self::task_key(id)).collect();
        let Ok(records) = self
            .call(
                redis::cmd("MGET")
                    .arg(&keys)
                    .query_async::<Vec<Option<String>>>(&mut con),
            )
            .await
        else {
            return;
        };
        let live: std::collections::HashSet<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        let mut rooms = std::collections::BTreeSet::new();
        for (id, json) in ids.iter().zip(records) {
            let Some(record) = json.and_then(|j| serde_json::from_str::<TaskRecord>(&j).ok())
            else {
                // Expired: out of the set.
                let _ = self
                    .call(
                        redis::cmd("SREM")
                            .arg(Self::tasks_key())
                            .arg(id)
                            .query_async::<()>(&mut con),
                    )
                    .await;
                continue;
            };
            let orphan = if record.node == self.me {
                !self.known.lock().is_ok_and(|k| k.contains(id))
            } else {
                !live.contains(record.node.as_str())
            };
            let held_back = self
                .held_back
                .lock()
                .is_ok_and(|h| h.get(id).is_some_and(|t| t.elapsed() < RESUME_RETRY));
            if orphan
                && !held_back
                && let Some(room) = RoomKey::parse(&record.room)
            {
                rooms.insert(room);
            }
        }
        for room in rooms {
            if self.leases.lock().is_ok_and(|l| l.holds(&room)) {
                self.clone().resume_tasks(room).await;
            } else if self.ensure_owned(&room).await.is_ok() {
                tracing::info!(room = %room, "cluster: took a room whose tasks lost their node");
            }
        }
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.me
    }

    /// Whether the last exchange with Redis worked.
    pub(crate) fn redis_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn leases_held(&self) -> usize {
        self.leases.lock().map_or(0, |l| l.len())
    }

    fn lease_key(room: &RoomKey) -> String {
        format!("{PREFIX}room:{room}")
    }

    fn node_key(node: &str) -> String {
        format!("{PREFIX}node:{node}")
    }

    fn fence_key() -> String {
        format!("{PREFIX}fence")
    }

    fn nodes_key() -> String {
        format!("{PREFIX}nodes")
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let r = match crate::ticks::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(why(&e)),
            Err(_) => Err("Redis did not answer in time".into()),
        };
        let ok = r.is_ok();
        if self.up.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("cluster: Redis reachable again");
            } else if let Err(e) = &r {
                tracing::warn!("cluster: {e}; running rooms continue, new rooms are refused");
            }
        }
        r
    }

    fn record(&self) -> NodeRecord {
        let load = self.load.get().map(|f| f()).unwrap_or_default();
        NodeRecord {
            node: self.me.clone(),
            http: self.http.clone(),
            rtmp: self.rtmp.clone(),
            rooms: self.leases_held() as u64,
            tasks: load.tasks,
            budget: load.budget,
            budget_in_use: load.budget_in_use,
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// Every live node's record (this one included, as last written).
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let mut con = self.redis.clone();
        let names: Vec<String> = self
            .call(
                redis::cmd("SMEMBERS")
                    .arg(Self::nodes_key())
                    .query_async(&mut con),
            )
            .await
            .map_err(ClusterError::Unavailable)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = names.iter().map(|n| Self::node_key(n)).collect();
        let records: Vec<Option<String>> = self
            .call(redis::cmd("MGET").arg(&keys).query_async(&mut con))
            .await
            .map_err(ClusterError::Unavailable)?;
        let mut nodes: Vec<NodeRecord> = records
            .into_iter()
            .flatten()
            .filter_map(|r| serde_json::from_str(&r).ok())
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }

    /// Makes sure this node owns `room` before it is opened or entered
    /// here: a room whose lease is held here passes without Redis.
    ///
    /// Otherwise the claim runs on the runtime the cluster was made on,
    /// whoever asks. A publisher entering asks from its RTMP loop, whose
    /// runtime has no timers (the Redis client's would panic there), and
    /// the tasks a claim resumes belong on the shared runtime, not on a
    /// loop.
    pub(crate) async fn ensure_owned(&self, room: &RoomKey) -> Result<(), ClusterError> {
        if self.leases.lock().is_ok_and(|l| l.holds(room)) {
            return Ok(());
        }
        let me = self.this.get().and_then(std::sync::Weak::upgrade);
        match (me, &self.runtime) {
            (Some(me), Some(runtime)) => {
                let room = room.clone();
                runtime
                    .spawn(async move { me.claim(&room).await })
                    .await
                    .unwrap_or_else(|e| {
                        Err(ClusterError::Unavailable(format!("the claim ended: {e}")))
                    })
            }
            _ => self.claim(room).await,
        }
    }

    /// [`Cluster::ensure_owned`]'s claim, on the cluster's runtime.
    async fn claim(&self, room: &RoomKey) -> Result<(), ClusterError> {
        if self.leases.lock().is_ok_and(|l| l.holds(room)) {
            return Ok(());
        }
        let _one = self.claiming.lock().await;
        if self.leases.lock().is_ok_and(|l| l.holds(room)) {
            return Ok(());
        }
        let mut con = self.redis.clone();
        let key = Self::lease_key(room);
        // Budget first: a full node sends new rooms elsewhere.
        if self.load.get().is_some() {
            let existing: Option<String> = self
                .call(redis::cmd("GET").arg(&key).query_async(&mut con))
                .await
                .map_err(ClusterError::Unavailable)?;
            if existing.is_none() {
                match lease::place(&self.record(), &self.nodes().await?) {
                    Placement::Here => {}
                    Placement::There(n) => {
                        return Err(ClusterError::PlacedElsewhere {
                            node: n.node,
                            http: n.http,
                            rtmp: n.rtmp,
                        });
                    }
                    Placement::Nowhere => return Err(ClusterError::Full),
                }
            }
        }
        let mut expected = String::new();
        for _ in 0..3 {
            let (won, value): (i64, String) = self
                .call(
                    redis::Script::new(CLAIM)
                        .key(&key)
                        .key(Self::fence_key())
                        .arg(&self.me)
                        .arg(self.lease_ms)
                        .arg(&expected)
                        .invoke_async(&mut con),
                )
                .await
                .map_err(ClusterError::Unavailable)?;
            if won == 1 {
                let Some(v) = LeaseValue::parse(&value) else {
                    return Err(ClusterError::Unavailable(format!(
                        "unexpected lease value {value:?}"
                    )));
                };
                tracing::info!(room = %room, token = v.token, "cluster: room leased here");
                if let Ok(mut l) = self.leases.lock() {
                    l.insert(room.clone(), v, Instant::now());
                }
                // Its stored tasks start here, beside the entry that claimed it.
                if let Some(me) = self.this.get().and_then(std::sync::Weak::upgrade) {
                    tokio::spawn(me.resume_tasks(room.clone()));
                }
                return Ok(());
            }
            if value.is_empty() {
                expected.clear(); // it expired meanwhile: claim it afresh
                continue;
            }
            let current = LeaseValue::parse(&value);
            let owner = match &current {
                Some(v) => self
                    .node_record(&v.node)
                    .await
                    .map_err(ClusterError::Unavailable)?,
                None => None,
            };
            match lease::when_held(current.as_ref(), &self.me, owner.is_some()) {
                WhenHeld::TakeOver => {
                    tracing::info!(room = %room, from = %value, "cluster: taking over a stale lease");
                    expected = value;
                }
                WhenHeld::Elsewhere(node) => {
                    let (http, rtmp) = owner.map_or_else(
                        || ("address unknown".into(), String::new()),
                        |n| (n.http, n.rtmp),
                    );
                    return Err(ClusterError::Elsewhere {
                        room: room.to_string(),
                        node,
                        http,
                        rtmp,
                    });
                }
            }
        }
        Err(ClusterError::Unavailable(
            "the room's lease kept changing hands".into(),
        ))
    }

    /// The node (name, HTTP address) that owns `room` if it is not this
    /// one; `None` if this node holds it or nobody does. Claims nothing.
    pub(crate) async fn owner_elsewhere(
        &self,
        room: &RoomKey,
    ) -> Result<Option<(String, String)>, ClusterError> {
        if self.leases.lock().is_ok_and(|l| l.holds(room)) {
            return Ok(None);
        }
        let mut con = self.redis.clone();
        let value: Option<String> = self
            .call(
                redis::cmd("GET")
                    .arg(Self::lease_key(room))
                    .query_async(&mut con),
            )
            .await
            .map_err(ClusterError::Unavailable)?;
        let Some(owner) = value.as_deref().and_then(LeaseValue::parse) else {
            return Ok(None);
        };
        if owner.node == self.me {
            return Ok(None);
        }
        Ok(self
            .node_record(&owner.node)
            .await
            .map_err(ClusterError::Unavailable)?
            .map(|n| (n.node, n.http)))
    }

    /// A WHIP or WHEP request for a room another node owns is sent there
    /// (307, the same path and query): the owner answers, and ICE goes to
    /// its address. `publish` claims a room nobody owns for this node.
    pub(crate) async fn redirect_for(
        &self,
        room: &RoomKey,
        publish: bool,
    ) -> Result<Option<String>, ClusterError> {
        if publish {
            return match self.ensure_owned(room).await {
                Ok(()) => Ok(None),
                Err(
                    ClusterError::Elsewhere { http, .. }
                    | ClusterError::PlacedElsewhere { http, .. },
                ) if http.starts_with("http") => Ok(Some(http)),
                Err(e) => Err(e),
            };
        }
        Ok(self.owner_elsewhere(room).await?.map(|(_, http)| http))
    }

    async fn heartbeat(&self) {
        let record = self.record();
        let Ok(json) = serde_json::to_string(&record) else {
            return;
        };
        let mut con = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(Self::node_key(&self.me))
            .arg(json)
            .arg("PX")
            .arg(self.heartbeat_ms * 3)
            .ignore()
            .cmd("SADD")
            .arg(Self::nodes_key())
            .arg(&self.me)
            .ignore();
        for (name, position) in self.streams.get().map(|f| f()).unwrap_or_default() {
            pipe.cmd("SET")
                .arg(format!("{PREFIX}hls:{name}"))
                .arg(&self.me)
                .arg("PX")
                .arg(self.heartbeat_ms * 3)
                .ignore();
            if let Some(p) = position {
                pipe.cmd("SET")
                    .arg(format!("{PREFIX}hls-pos:{name}"))
                    .arg(p.encode())
                    .arg("PX")
                    .arg(POSITION_KEEP_MS)
                    .ignore();
            }
        }
        let _ = self.call(pipe.query_async::<()>(&mut con)).await;
    }

    /// Renews every lease; returns the rooms whose lease another node holds now.
    async fn renew(&self) -> Vec<RoomKey> {
        let held = self.leases.lock().map(|l| l.all()).unwrap_or_default();
        let mut lost = Vec::new();
        let mut con = self.redis.clone();
        for (room, value) in held {
            let r: Result<i64, String> = self
                .call(
                    redis::Script::new(RENEW)
                        .key(Self::lease_key(&room))
                        .key(Self::fence_key())
                        .arg(value.encode())
                        .arg(self.lease_ms)
                        .arg(value.token)
                        .invoke_async(&mut con),
                )
                .await;
            match r {
                Ok(0) => {
                    if self
                        .leases
                        .lock()
                        .is_ok_and(|mut l| l.remove(&room, &value))
                    {
                        tracing::warn!(room = %room, token = value.token, "cluster: lease lost to another node; closing the room here");
                        lost.push(room);
                    }
                }
                Ok(2) => {
                    tracing::info!(room = %room, token = value.token, "cluster: lease restored in Redis")
                }
                Ok(_) => {}
                Err(_) => break, // Redis is down: try again next round
            }
        }
        lost
    }

    async fn release(&self, room: &RoomKey, value: &LeaseValue) {
        let mut con = self.redis.clone();
        let r: Result<i64, String> = self
            .call(
                redis::Script::new(RELEASE)
                    .key(Self::lease_key(room))
                    .arg(value.encode())
                    .invoke_async(&mut con),
            )
            .await;
        if r.is_ok() && self.leases.lock().is_ok_and(|mut l| l.remove(room, value)) {
            tracing::info!(room = %room, token = value.token, "cluster: room released");
        }
    }

    /// The loop: heartbeat every `heartbeat_ms`, renewals four times per
    /// lease, releases of rooms closed here, and closing of rooms whose
    /// lease was lost.
    async fn run(self: Arc<Self>, rooms: RoomHandle) {
        let beat = Duration::from_millis(self.heartbeat_ms);
        let renew_every = Duration::from_millis(self.lease_ms / 4);
        let mut tick = crate::ticks::interval(beat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renew = Instant::now();
        // Tasks that ended here, still to be forgotten in Redis.
        let mut to_forget = std::collections::HashSet::new();
        let mut resolved = std::collections::HashMap::new();
        loop {
            tick.tick().await;
            self.heartbeat().await;
            let local = self.tasks.get().map(|t| t.local()).unwrap_or_default();
            if let Ok(mut records) = self.records.lock() {
                records.retain(|id, _| {
                    let runs = local.running.contains(id);
                    if !runs {
                        to_forget.insert(id.clone());
                    }
                    runs
                });
            }
            if last_renew.elapsed() >= renew_every {
                last_renew = Instant::now();
                self.restore_records().await;
                for room in self.renew().await {
                    if let Some(t) = self.tasks.get() {
                        t.stop_room(&room);
                    }
                    let _ = rooms.command(Command::DismissRoom { room }).await;
                }
                // One read of the registry for both (Redis down: neither).
                if let Ok(nodes) = self.nodes().await {
                    self.adopt_orphans(&local, &nodes).await;
                    self.refresh_peers(&nodes, &mut resolved).await;
                }
            }
            let ids: Vec<String> = to_forget.iter().cloned().collect();
            for id in ids {
                // Only a record this node still runs: a task of a room lost
                // to another node is that node's now.
                match self.task(&id).await {
                    Ok(Some(r)) => {
                        if r.node == self.me {
                            self.forget_task(&id).await;
                        }
                        to_forget.remove(&id);
                    }
                    Ok(None) => {
                        to_forget.remove(&id);
                    }
                    Err(_) => {} // Redis is down: next round
                }
            }
            let open: std::collections::HashSet<RoomKey> =
                rooms.room_keys().await.into_iter().collect();
            let busy = |k: &RoomKey| open.contains(k) || local.running_rooms.contains(k);
            let unused = self
                .leases
                .lock()
                .map(|l| l.unused(&busy, Instant::now(), CLAIM_GRACE))
                .unwrap_or_default();
            for (room, value) in unused {
                self.release(&room, &value).await;
            }
            // A room opened here without a lease (an entry that passed
            // the gate as its old lease was being released) claims one.
            for room in open {
                if !self.leases.lock().is_ok_and(|l| l.holds(&room))
                    && let Err(e @ ClusterError::Elsewhere { .. }) = self.ensure_owned(&room).await
                {
                    tracing::warn!(room = %room, "cluster: {e}; closing the room here");
                    if let Some(t) = self.tasks.get() {
                        t.stop_room(&room);
                    }
                    let _ = rooms.command(Command::DismissRoom { room }).await;
                }
            }
        }
    }

    /// Tells the listeners which addresses are the other live nodes' (not
    /// capped per address). Host names are resolved at most once a minute.
    async fn refresh_peers(
        &self,
        nodes: &[NodeRecord],
        resolved: &mut std::collections::HashMap<String, (Instant, Vec<std::net::IpAddr>)>,
    ) {
        let mut peers = std::collections::HashSet::new();
        for n in nodes.iter().filter(|n| n.node != self.me) {
            for url in [&n.http, &n.rtmp] {
                let Some((host, port)) = lease::host_port(url) else {
                    continue;
                };
                if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                    peers.insert(ip);
                    continue;
                }
                let fresh = resolved
                    .get(&host)
                    .is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(60));
                if !fresh {
                    let ips = crate::ticks::timeout(
                        Duration::from_secs(1),
                        tokio::net::lookup_host((host.as_str(), port)),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|a| a.map(|a| a.ip()).collect())
                    .unwrap_or_default();
                    resolved.insert(host.clone(), (Instant::now(), ips));
                }
                if let Some((_, ips)) = resolved.get(&host) {
                    peers.extend(ips.iter().copied());
                }
            }
        }
        crate::net::set_cluster_peers(peers);
    }

    /// A graceful stop: every lease released and this node's record removed,
    /// so others take its rooms at once instead of after the lease.
    pub(crate) async fn leave(&self) {
        let held = self.leases.lock().map(|l| l.all()).unwrap_or_default();
        for (room, value) in held {
            self.release(&room, &value).await;
        }
        let mut con = self.redis.clone();
        let _ = self
            .call(
                redis::pipe()
                    .cmd("DEL")
                    .arg(Self::node_key(&self.me))
                    .ignore()
                    .cmd("SREM")
                    .arg(Self::nodes_key())
                    .arg(&self.me)
                    .ignore()
                    .query_async::<()>(&mut con),
            )
            .await;
    }
}
