//! Prometheus metrics: what the gateway is doing, with bounded labels.
//!
//! Counters, gauges and histograms that change where things happen (a
//! publisher starts, a target reconnects, a mix tick is late) live in one
//! process-wide [`Metrics`]; the code that counts calls [`metrics()`].
//! What is state rather than events (rooms and users, tasks and targets,
//! the process's CPU and memory) is read from its owner at scrape time
//! ([`Scrape`]), so it can never drift from the truth.
//!
//! Labels are only ever: sdkappid, a task kind, an output kind, an ingest
//! edge, a role, a state or a reason from a fixed set, an HLS object type,
//! a TRTC action (known names only) and an error code (TRTC's fixed set).
//! Never a connection, user, stream or URL.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Where media enters.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum Edge {
    Rtmp,
    Whip,
    Pull,
}

/// Where media leaves.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum Output {
    Rtmp,
    Hls,
    Record,
    Whep,
}

/// Why frames were dropped.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// An RTMP target's queue was full (a slow CDN origin).
    SlowTarget,
    /// An HLS writer, recorder or transcoding stage could not keep up.
    SlowOutput,
    /// A mix input arrived too late, or faster than the mix can take it.
    LateInput,
    /// An overloaded mix skipped pictures it was too late to encode.
    Overload,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum HlsObject {
    Playlist,
    Segment,
    Part,
    Init,
    Other,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EdgeLabel {
    pub edge: Edge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutputLabel {
    pub output: Output,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: DropReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HlsLabel {
    pub object: HlsObject,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SessionLabel {
    /// `whip` or `whep`.
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabel {
    /// The listener or socket: `rtmp`, `rtmps`, `http`, `https`, `ws`.
    pub edge: &'static str,
    /// Which limit: `connections`, `connections_per_ip`, `header_timeout`,
    /// `message_rate`, `message_size`.
    pub limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppLabel {
    pub sdkappid: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiLabel {
    /// A known TRTC action, or `other`.
    pub action: &'static str,
    /// `ok` or a TRTC error code (a fixed set).
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RoleLabel {
    pub sdkappid: u64,
    /// `anchor` or `audience`.
    pub role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TaskLabel {
    pub sdkappid: u64,
    /// `passthrough`, `mix`, `record` or `ingest`.
    pub kind: &'static str,
    /// `waiting`, `running` (or, for targets, their connection state).
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TargetLabel {
    pub sdkappid: u64,
    /// `connecting`, `publishing`, `retrying`, `failed`, `stopped`.
    pub state: &'static str,
}

/// Label values are written as Prometheus spells them: lower case, snake case.
macro_rules! label_values {
    ($($t:ty { $($v:ident => $s:literal),+ $(,)? })+) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                e.write_str(match self { $(<$t>::$v => $s),+ })
            }
        }
    )+};
}

label_values! {
    Edge { Rtmp => "rtmp", Whip => "whip", Pull => "pull" }
    Output { Rtmp => "rtmp", Hls => "hls", Record => "record", Whep => "whep" }
    DropReason { SlowTarget => "slow_target", SlowOutput => "slow_output", LateInput => "late_input", Overload => "overload" }
    HlsObject { Playlist => "playlist", Segment => "segment", Part => "part", Init => "init", Other => "other" }
}

/// Everything counted where it happens.
pub(crate) struct Metrics {
    pub publishers: Family<EdgeLabel, Gauge>,
    pub webrtc_sessions: Family<SessionLabel, Gauge>,
    pub bytes_in: Family<EdgeLabel, Counter>,
    pub bytes_out: Family<OutputLabel, Counter>,
    pub push_reconnects: Counter,
    pub frames_dropped: Family<ReasonLabel, Counter>,
    pub mix_tick_lateness: Histogram,
    pub mix_latency: Histogram,
    pub mix_ticks: Counter,
    pub mix_pictures: Counter,
    pub mix_queue_depth: Histogram,
    pub hls_requests: Family<HlsLabel, Counter>,
    pub callback_queue: Family<AppLabel, Gauge>,
    pub callbacks_dropped: Family<AppLabel, Counter>,
    pub callback_failures: Family<AppLabel, Counter>,
    pub api_requests: Family<ApiLabel, Counter>,
    pub limit_refusals: Family<LimitLabel, Counter>,
    pub panics: Counter,
}

static ENABLED: AtomicBool = AtomicBool::new(true);

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    // Seconds: 1 ms to about 4 s.
    let latency = || Histogram::new(exponential(0.001, 2.0, 13));
    Metrics {
        publishers: Family::default(),
        webrtc_sessions: Family::default(),
        bytes_in: Family::default(),
        bytes_out: Family::default(),
        push_reconnects: Counter::default(),
        frames_dropped: Family::default(),
        mix_tick_lateness: latency(),
        mix_latency: latency(),
        mix_ticks: Counter::default(),
        mix_pictures: Counter::default(),
        mix_queue_depth: Histogram::new([0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        hls_requests: Family::default(),
        callback_queue: Family::default(),
        callbacks_dropped: Family::default(),
        callback_failures: Family::default(),
        api_requests: Family::default(),
        limit_refusals: Family::default(),
        panics: Counter::default(),
    }
});

fn exponential(start: f64, factor: f64, n: u16) -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(start, factor, n)
}

/// The process's metrics. Whatever the switch says, the handle is valid.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

/// Whether counting on hot paths (per frame, per tick) is on. On by
/// default; the mix benchmark turns it off to measure what it costs.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// See [`set_enabled`].
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

impl Metrics {
    /// A limit bit: a connection, request or message refused or closed.
    pub(crate) fn limit_hit(&self, edge: &'static str, limit: &'static str) {
        self.limit_refusals
            .get_or_create(&LimitLabel { edge, limit })
            .inc();
    }

    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.frames_dropped
                .get_or_create(&ReasonLabel { reason })
                .inc_by(n);
        }
    }

    /// The byte counter of an ingest edge, looked up once for a hot path.
    pub(crate) fn received(&self, edge: Edge) -> ByteCounter {
        ByteCounter(self.bytes_in.get_or_create(&EdgeLabel { edge }).clone())
    }

    /// The byte counter of an output, looked up once for a hot path.
    pub(crate) fn sent(&self, output: Output) -> ByteCounter {
        ByteCounter(
            self.bytes_out
                .get_or_create(&OutputLabel { output })
                .clone(),
        )
    }

    /// A publisher from `edge` while the guard lives.
    pub(crate) fn publishing(&self, edge: Edge) -> GaugeGuard {
        GaugeGuard::new(self.publishers.get_or_create(&EdgeLabel { edge }).clone())
    }

    /// A WHIP (`whip`) or WHEP (`whep`) session while the guard lives.
    pub(crate) fn session(&self, kind: &'static str) -> GaugeGuard {
        GaugeGuard::new(
            self.webrtc_sessions
                .get_or_create(&SessionLabel { kind })
                .clone(),
        )
    }
}

/// Bytes counted per frame or per write: adding is one atomic.
#[derive(Debug, Clone)]
pub(crate) struct ByteCounter(Counter);

impl ByteCounter {
    pub(crate) fn add(&self, n: usize) {
        if enabled() {
            self.0.inc_by(n as u64);
        }
    }
}

/// Carries a drop-to-keyframe gate's count into the metrics: `sync` adds
/// what the gate dropped since the last call.
#[derive(Debug)]
pub(crate) struct DropCounter {
    reason: DropReason,
    counted: u64,
}

impl DropCounter {
    pub(crate) fn new(reason: DropReason) -> DropCounter {
        DropCounter { reason, counted: 0 }
    }

    pub(crate) fn sync(&mut self, dropped: u64) {
        if dropped > self.counted {
            metrics().dropped(self.reason, dropped - self.counted);
            self.counted = dropped;
        }
    }
}

/// One up on a gauge while it lives.
#[derive(Debug)]
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(g: Gauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the state owners report at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// Per application: rooms open, anchors and audience in them.
    pub rooms: Vec<(u64, u64, u64, u64)>,
    /// Tasks by (sdkappid, kind, state).
    pub tasks: Vec<(TaskLabel, i64)>,
    /// RTMP targets by (sdkappid, state).
    pub targets: Vec<(TargetLabel, i64)>,
    /// The admission budget and what running tasks were admitted for, cores.
    pub budget: (f64, f64),
    /// What tasks' codecs are charged against the reference machine's.
    pub cost_scale: f64,
    /// On a cluster node: its id, whether Redis answers, room leases held.
    pub cluster: Option<(String, bool, u64)>,
    /// Connections and push targets on each RTMP loop, in order.
    pub rtmp_loops: Vec<usize>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeLabel {
    pub node: String,
}

/// The whole exposition, OpenMetrics text (which Prometheus reads).
pub(crate) fn encode(scrape: Scrape) -> Result<String, std::fmt::Error> {
    let m = metrics();
    let mut r = Registry::with_prefix("roomcast");

    let rooms: Family<AppLabel, Gauge> = Family::default();
    let users: Family<RoleLabel, Gauge> = Family::default();
    for (app, open, anchors, audience) in scrape.rooms {
        rooms
            .get_or_create(&AppLabel { sdkappid: app })
            .set(open as i64);
        users
            .get_or_create(&RoleLabel {
                sdkappid: app,
                role: "anchor",
            })
            .set(anchors as i64);
        users
            .get_or_create(&RoleLabel {
                sdkappid: app,
                role: "audience",
            })
            .set(audience as i64);
    }
    r.register("rooms", "Rooms open", rooms);
    if let Some((node, up, leases)) = scrape.cluster {
        let info: Family<NodeLabel, Gauge> = Family::default();
        info.get_or_create(&NodeLabel { node }).set(1);
        r.register("cluster_node", "This cluster node's id (always 1)", info);
        let redis_up: Gauge = Gauge::default();
        redis_up.set(i64::from(up));
        r.register(
            "cluster_redis_up",
            "Whether the last exchange with the cluster's Redis worked",
            redis_up,
        );
        let held: Gauge = Gauge::default();
        held.set(leases as i64);
        r.register("cluster_room_leases", "Room leases this node holds", held);
    }
    r.register("room_users", "Users in rooms, by role", users);
    let tasks: Family<TaskLabel, Gauge> = Family::default();
    for (l, n) in scrape.tasks {
        tasks.get_or_create(&l).inc_by(n);
    }
    r.register(
        "tasks",
        "Relay, mix, recording and ingest tasks by kind and state",
        tasks,
    );
    let targets: Family<TargetLabel, Gauge> = Family::default();
    for (l, n) in scrape.targets {
        targets.get_or_create(&l).inc_by(n);
    }
    r.register("rtmp_targets", "RTMP push targets by state", targets);
    let loops: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
    for (i, n) in scrape.rtmp_loops.iter().enumerate() {
        loops
            .get_or_create(&vec![("loop", i.to_string())])
            .set(*n as i64);
    }
    r.register(
        "rtmp_loop_tasks",
        "RTMP connections and push targets running on each event loop (runtime.rtmp_threads)",
        loops,
    );
    r.register(
        "panics",
        "Panics caught by the process's hook (each is logged with its thread and place)",
        m.panics.clone(),
    );

    r.register(
        "publishers",
        "Anchors publishing, by ingest edge",
        m.publishers.clone(),
    );
    r.register(
        "webrtc_sessions",
        "WHIP and WHEP sessions",
        m.webrtc_sessions.clone(),
    );
    r.register_with_unit(
        "received",
        "Media payload received, by ingest edge",
        Unit::Bytes,
        m.bytes_in.clone(),
    );
    r.register_with_unit(
        "sent",
        "Bytes sent, by output (RTMP: on the wire; HLS: served; record: media written; WHEP: media)",
        Unit::Bytes,
        m.bytes_out.clone(),
    );
    r.register(
        "push_reconnects",
        "RTMP push reconnection attempts",
        m.push_reconnects.clone(),
    );
    r.register(
        "limit_refusals",
        "Connections, requests and messages refused or closed by a limit, by edge and limit",
        m.limit_refusals.clone(),
    );
    r.register(
        "frames_dropped",
        "Frames dropped, by reason",
        m.frames_dropped.clone(),
    );
    r.register_with_unit(
        "mix_tick_lateness",
        "How late mix output ticks ran after their due time",
        Unit::Seconds,
        m.mix_tick_lateness.clone(),
    );
    r.register_with_unit(
        "mix_latency",
        "An input picture's arrival to its composite leaving the encoder",
        Unit::Seconds,
        m.mix_latency.clone(),
    );
    r.register(
        "mix_ticks",
        "Mix video output ticks (frames encoded, repeats included)",
        m.mix_ticks.clone(),
    );
    r.register(
        "mix_pictures",
        "Mix video output ticks that showed something new (effective frames)",
        m.mix_pictures.clone(),
    );
    r.register(
        "mix_output_queue_depth",
        "Encoded frames waiting between a mix and its outputs, sampled every tick",
        m.mix_queue_depth.clone(),
    );
    r.register(
        "hls_requests",
        "HLS requests, by object type",
        m.hls_requests.clone(),
    );
    r.register(
        "callback_queue",
        "Event callbacks waiting to be delivered",
        m.callback_queue.clone(),
    );
    r.register(
        "callbacks_dropped",
        "Event callbacks dropped from a full queue",
        m.callbacks_dropped.clone(),
    );
    r.register(
        "callback_failures",
        "Event callback delivery attempts that failed",
        m.callback_failures.clone(),
    );
    r.register(
        "api_requests",
        "TRTC API requests, by action and result code",
        m.api_requests.clone(),
    );

    r.register_with_unit(
        "cpu_budget",
        "Admission budget (limits.cpu_budget)",
        Unit::Other("cores".into()),
        f64_gauge(scrape.budget.0),
    );
    r.register_with_unit(
        "cpu_budget_in_use",
        "Cores the running relay tasks were admitted for",
        Unit::Other("cores".into()),
        f64_gauge(scrape.budget.1),
    );
    r.register(
        "cpu_cost_scale",
        "What tasks' codecs are charged, against the reference machine's (the start-up probe; 1 until it ran)",
        f64_gauge(scrape.cost_scale),
    );

    let (cpu, rss) = process_usage();
    let cpu_total: Counter<f64> = Counter::default();
    cpu_total.inc_by(cpu);
    r.register_with_unit(
        "process_cpu",
        "CPU time of the process (user and system)",
        Unit::Seconds,
        cpu_total,
    );
    let resident: Gauge = Gauge::default();
    resident.set(rss as i64);
    r.register_with_unit(
        "process_resident_memory",
        "Resident memory of the process",
        Unit::Bytes,
        resident,
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)?;
    Ok(out)
}

static START: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

/// Time since the gateway started (the first call).
pub(crate) fn uptime() -> std::time::Duration {
    START.elapsed()
}

/// Cores kept busy by this process: over the time since the previous call
/// when that was at least a second ago (the value then stays for the next
/// second's callers), else since the start.
pub(crate) fn cpu_busy() -> f64 {
    static LAST: std::sync::Mutex<Option<(std::time::Instant, f64, f64)>> =
        std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let (cpu, _) = process_usage();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    match *last {
        Some((at, _, busy)) if now.duration_since(at).as_secs_f64() < 1.0 => busy,
        Some((at, then, _)) => {
            let busy = (cpu - then) / now.duration_since(at).as_secs_f64();
            *last = Some((now, cpu, busy));
            busy
        }
        None => {
            let busy = cpu / uptime().as_secs_f64().max(1e-3);
            *last = Some((now, cpu, busy));
            busy
        }
    }
}

/// A gauge of a fraction, set to `value`.
fn f64_gauge(value: f64) -> Gauge<f64, std::sync::atomic::AtomicU64> {
    let g = Gauge::default();
    g.set(value);
    g
}

/// CPU seconds (user + system) of process `pid`, or of this one, from
/// /proc (0 elsewhere). The benchmarks measure the gateway and nginx with it.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / ticks
}

/// CPU seconds and resident bytes of this process, from /proc (0 elsewhere).
pub(crate) fn process_usage() -> (f64, u64) {
    let cpu = cpu_seconds(None);
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, pages * 4096)
}

/// A TRTC action as a label: known names as themselves, anything else `other`.
pub(crate) fn action_label(action: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "DismissRoom",
        "DismissRoomByStrRoomId",
        "RemoveUser",
        "RemoveUserByStrRoomId",
        "StartPublishCdnStream",
        "UpdatePublishCdnStream",
        "StopPublishCdnStream",
        "CreateCloudRecording",
        "DescribeCloudRecording",
        "ModifyCloudRecording",
        "DeleteCloudRecording",
        "StartStreamIngest",
        "StopStreamIngest",
        "DescribeStreamIngest",
    ];
    KNOWN
        .iter()
        .find(|k| **k == action)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_while_they_live_and_the_text_names_everything() {
        let before = metrics()
            .publishers
            .get_or_create(&EdgeLabel { edge: Edge::Pull })
            .get();
        let g = metrics().publishing(Edge::Pull);
        assert_eq!(
            metrics()
                .publishers
                .get_or_create(&EdgeLabel { edge: Edge::Pull })
                .get(),
            before + 1
        );
        drop(g);
        let text = encode(Scrape {
            rooms: vec![(1400000000, 2, 3, 1)],
            rtmp_loops: vec![3, 0],
            ..Scrape::default()
        })
        .unwrap();
        assert!(
            text.contains("roomcast_rtmp_loop_tasks{loop=\"0\"} 3\n")
                && text.contains("roomcast_rtmp_loop_tasks{loop=\"1\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE roomcast_panics counter"), "{text}");
        assert!(
            text.contains("roomcast_rooms{sdkappid=\"1400000000\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("roomcast_room_users{sdkappid=\"1400000000\",role=\"audience\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE roomcast_mix_latency_seconds histogram"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            action_label("StartPublishCdnStream"),
            "StartPublishCdnStream"
        );
        assert_eq!(action_label("../../etc"), "other");
    }
}
