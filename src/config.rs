//! Gateway configuration: built-in defaults < `roomcast.toml` < `ROOMCAST_*` env.
//!
//! Owns the shape of `roomcast.toml` (INTERFACES.md), its validation, and the
//! development credentials created under the data dir when no application is
//! configured. Unknown keys are errors that name the key and where it came
//! from. Nothing here starts a listener or reads a clock.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::auth::tc3;

/// The default config file looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "roomcast.toml";
/// SDKAppID of the development application created when none is configured.
pub const DEV_SDKAPPID: u64 = 1_400_000_001;
/// File under the data dir holding the generated development credentials.
pub const DEV_CREDENTIALS_FILE: &str = "dev-credentials.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Figment(Box<figment::Error>),
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Figment(Box::new(e))
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Development credentials, HLS segments, recordings.
    pub data_dir: PathBuf,
    /// Relay profiles (`*.toml`).
    pub profiles_dir: PathBuf,
    pub http: HttpConfig,
    pub rtmp: RtmpConfig,
    pub webrtc: WebRtcConfig,
    pub apps: Vec<AppConfig>,
    pub api: ApiConfig,
    pub limits: Limits,
    pub tls: TlsConfig,
    pub storage: StorageConfig,
    pub runtime: RuntimeConfig,
    /// Several nodes sharing one Redis; absent: one node, no Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: nodes register in Redis with a heartbeat, and each room is
/// owned by one node through a lease with a fencing token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]` (TLS, `rediss://`, is refused: not supported yet).
    pub redis_url: String,
    /// This node's name in the cluster; default: the host name and the
    /// HTTP port (`host:8080`). Unique per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// How other nodes and redirected clients reach this node's HTTP;
    /// default `http://<http.bind>:<http.port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_http: Option<String>,
    /// And its RTMP port; default `rtmp://<rtmp.bind>:<rtmp.port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_rtmp: Option<String>,
    /// How often a node writes its heartbeat; a node silent for three
    /// heartbeats is dead to the others.
    #[serde(default = "ClusterConfig::default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a room's lease lasts without renewal (renewed four times
    /// per lease).
    #[serde(default = "ClusterConfig::default_lease_ms")]
    pub lease_ms: u64,
}

impl ClusterConfig {
    fn default_heartbeat_ms() -> u64 {
        1000
    }

    fn default_lease_ms() -> u64 {
        10_000
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.redis_url.trim();
        if url.starts_with("rediss://") {
            return Err(invalid(
                "cluster.redis_url",
                "TLS to Redis (rediss://) is not supported yet; use redis:// on a private network",
            ));
        }
        if !url.starts_with("redis://") || url.len() <= "redis://".len() {
            return Err(invalid("cluster.redis_url", "must be a redis:// URL"));
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
        {
            return Err(invalid(
                "cluster.node_id",
                "must be 1 to 64 of A-Z a-z 0-9 - _ . :",
            ));
        }
        for (field, url, schemes) in [
            (
                "cluster.advertise_http",
                &self.advertise_http,
                &["http://", "https://"][..],
            ),
            (
                "cluster.advertise_rtmp",
                &self.advertise_rtmp,
                &["rtmp://", "rtmps://"][..],
            ),
        ] {
            if let Some(u) = url
                && !schemes
                    .iter()
                    .any(|s| u.starts_with(s) && u.len() > s.len())
            {
                return Err(invalid(
                    field,
                    format!("must start with {}", schemes.join(" or ")),
                ));
            }
        }
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            return Err(invalid("cluster.heartbeat_ms", "must be in 100..=60000"));
        }
        if self.lease_ms < 3 * self.heartbeat_ms || self.lease_ms > 600_000 {
            return Err(invalid(
                "cluster.lease_ms",
                "must be at least three heartbeats and at most 600000",
            ));
        }
        Ok(())
    }
}

/// The async runtime that carries the sockets (RTMP, HTTP, WebRTC, pushes
/// to origins). Mixes, transcodes and muxers run on threads of their own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads; unset: one per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_threads: Option<usize>,
    /// Single-threaded event loops that carry the RTMP publishers'
    /// connections (and the bypass relays that write in their turn) and the
    /// push targets; unset: one; 0: none, they share the runtime above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp_threads: Option<usize>,
    /// Whether the RTMP loops' threads run under Linux's `SCHED_BATCH`
    /// policy; unset: yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp_batch: Option<bool>,
    /// Whether `serve` asks glibc's allocator for transparent huge pages
    /// (starting itself again with `GLIBC_TUNABLES`); unset: yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<bool>,
}

impl RuntimeConfig {
    /// `io_threads`, or one per core. One thread is a little cheaper for
    /// many relays (`cargo bench --bench relay`, 50 relays: 0.0017 CPU-s
    /// per stream-second with one worker, 0.0019–0.0020 with two; one
    /// relay the same), but
    /// every socket then waits on it: WebRTC ingest on a busy 2-core box
    /// was not shown to keep its timing with one, so it is not the default.
    pub fn io_threads(&self) -> usize {
        self.io_threads.unwrap_or_else(crate::capacity::cores)
    }

    /// `rtmp_threads`, or one. One loop relayed 50 streams for less than
    /// two did on a 2-core box (`cargo bench --bench relay`); a loop
    /// carries several hundred 2 Mbps relays before it fills its core.
    pub fn rtmp_threads(&self) -> usize {
        self.rtmp_threads.unwrap_or(1)
    }

    /// `rtmp_batch`, or yes. A loop woken by a publisher's bytes then does
    /// not preempt the task running on its core, and is preempted less by
    /// the origin it wakes in turn; it runs its batch of sockets through,
    /// then sleeps. `cargo bench --bench relay` (publisher, relay, origin
    /// and player on one 2-core box): see the README's "Loops that run
    /// their batch through". The cost: on a core that other work fills, a
    /// woken loop waits for the running task's slice (a few ms) instead
    /// of preempting it.
    pub fn rtmp_batch(&self) -> bool {
        self.rtmp_batch.unwrap_or(true)
    }

    /// `huge_pages`, or yes. With the kernel's transparent huge pages in
    /// `madvise` mode, glibc's heaps then sit on 2 MiB pages, and the
    /// relays' scattered touches of memory miss the CPU's address cache
    /// less (`cargo bench --bench relay`: see the README's "Huge pages for
    /// the allocator"). The cost: a larger resident size, and on a host
    /// whose memory is fragmented, a heap's growth may wait while the
    /// kernel compacts memory for a huge page (its `defrag` setting).
    pub fn huge_pages(&self) -> bool {
        self.huge_pages.unwrap_or(true)
    }
}

/// Object storage for recordings (TRTC `StorageParams.CloudStorage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// An S3-compatible endpoint used instead of the vendor's own (AWS S3
    /// by region, Tencent COS at `<bucket>.cos.<region>.myqcloud.com`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible
    /// servers want; otherwise virtual-hosted (`bucket.endpoint/key`).
    pub force_path_style: bool,
}

/// TLS. The HTTPS and RTMPS listeners (`http.tls_port`, `rtmp.tls_port`)
/// serve `cert` with `key`; outgoing connections (`rtmps://` pushes,
/// `https://` callbacks) trust the Mozilla root store plus `ca_file`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain (PEM) of the HTTPS and RTMPS listeners; re-read
    /// on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Extra roots (PEM) trusted for outgoing `rtmps://` and `https://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            profiles_dir: PathBuf::from("./profiles"),
            http: HttpConfig::default(),
            rtmp: RtmpConfig::default(),
            webrtc: WebRtcConfig::default(),
            apps: Vec::new(),
            api: ApiConfig::default(),
            limits: Limits::default(),
            tls: TlsConfig::default(),
            storage: StorageConfig::default(),
            runtime: RuntimeConfig::default(),
            cluster: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub bind: IpAddr,
    pub port: u16,
    /// Largest request body accepted (REST API, WHIP offers), bytes.
    pub max_body_bytes: usize,
    /// A request's headers must arrive within this many seconds of the
    /// connection opening or of the previous response (so it is also how long
    /// an idle keep-alive connection is kept).
    pub header_timeout_secs: u64,
    /// A connection with no byte either way for this many seconds is closed
    /// (a stalled body or response, a silent upgraded socket).
    pub idle_timeout_secs: u64,
    /// HTTP connections open at once; further ones are closed on accept.
    pub max_connections: usize,
    /// HTTP connections open at once from one address.
    pub max_connections_per_ip: usize,
    /// Messages a room signalling WebSocket may send a second, on average
    /// (bursts of twice that pass); a socket over it is closed (1008).
    pub ws_messages_per_sec: u32,
    /// HTTPS beside plain HTTP on this port (needs `tls.cert` and `tls.key`);
    /// unset: no HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u16>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            max_body_bytes: 1 << 20,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 4096,
            max_connections_per_ip: 256,
            ws_messages_per_sec: 20,
            tls_port: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    pub bind: IpAddr,
    pub port: u16,
    /// The handshake, `connect` and `publish` must all be done within this
    /// many seconds of the connection opening.
    pub handshake_timeout_secs: u64,
    /// RTMP connections open at once; further ones are closed on accept.
    pub max_connections: usize,
    /// RTMP connections open at once from one address.
    pub max_connections_per_ip: usize,
    /// A push to a CDN origin whose acknowledgements stop progressing (or
    /// whose socket takes nothing) this long is reconnected.
    pub push_stall_timeout_secs: u64,
    /// RTMPS ingest on this port (needs `tls.cert` and `tls.key`); unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u16>,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 1935,
            handshake_timeout_secs: 10,
            push_stall_timeout_secs: 30,
            max_connections: 1024,
            max_connections_per_ip: 64,
            tls_port: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// `"LOW-HIGH"`, inclusive.
    pub udp_ports: PortRange,
    /// NAT 1:1 address put in ICE candidates.
    pub public_ip: Option<IpAddr>,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            udp_ports: PortRange {
                low: 50_000,
                high: 50_100,
            },
            public_ip: None,
        }
    }
}

/// An inclusive UDP port range written `"50000-50100"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a port range like \"50000-50100\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let low: u16 = a.trim().parse().map_err(|_| bad())?;
        let high: u16 = b.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(format!("`{s}`: need 1 <= low <= high <= 65535"));
        }
        Ok(PortRange { low, high })
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// One application (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub sdkappid: u64,
    pub secret_key: String,
    /// Where TRTC-style room and media event callbacks are POSTed (`http://` or `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The key callbacks are signed with (`Sign` header); required with a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// TC3 callers of the REST API.
    pub credentials: Vec<ApiCredential>,
    /// Tolerated difference between X-TC-Timestamp and server time, seconds.
    pub max_clock_skew_secs: u64,
    /// A bearer token that lets a scraper read `/metrics` from off the
    /// machine (`Authorization: Bearer <token>`); unset, only loopback can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            credentials: Vec::new(),
            max_clock_skew_secs: tc3::DEFAULT_MAX_SKEW_SECS,
            metrics_token: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiCredential {
    pub secret_id: String,
    pub secret_key: String,
}

/// Capacity limits, TRTC-like defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Rooms open at once per application.
    pub rooms_per_app: u32,
    /// Relay, mix and recording tasks running at once per application, so
    /// one application cannot take every task place of the node.
    pub tasks_per_app: u32,
    /// Users (anchors + audience) in one live-scene room.
    pub users_per_room: u32,
    /// Users in one call-scene room (videocall/audiocall: everyone is an anchor).
    pub users_per_call_room: u32,
    /// Anchors at once in one room.
    pub anchors_per_room: u32,
    /// A dropped user stays in its room this long (TRTC: 90 s).
    pub disconnect_grace_secs: u64,
    /// A live-scene room whose last user out was audience stays this long (TRTC: 600 s).
    pub audience_linger_secs: u64,
    /// Cores relay tasks may be expected to use together (admission
    /// control); unset: 85 % of the machine's cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_budget: Option<f64>,
    /// Time the codecs at start-up (a short libx264 encode) and charge
    /// tasks' codec work by how this machine compares with the one the cost
    /// model was fitted on; false: charge the reference machine's costs.
    pub cpu_calibrate: bool,
    /// MB of its last group of pictures each publisher keeps, so a relay,
    /// recording or mix started while it publishes starts at once from its
    /// last keyframe; 0 keeps none (they wait for the next keyframe).
    pub gop_cache_mb: u32,
}

impl Limits {
    /// `gop_cache_mb` in bytes.
    pub fn gop_cache_bytes(&self) -> usize {
        self.gop_cache_mb as usize * (1 << 20)
    }

    /// `cpu_budget`, or 85 % of the cores.
    pub fn cpu_budget(&self) -> f64 {
        self.cpu_budget
            .unwrap_or_else(|| 0.85 * crate::capacity::cores() as f64)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rooms_per_app: 10_000,
            tasks_per_app: 100,
            users_per_room: 100_000,
            users_per_call_room: 300,
            anchors_per_room: 50,
            disconnect_grace_secs: 90,
            audience_linger_secs: 600,
            cpu_budget: None,
            cpu_calibrate: true,
            gop_cache_mb: (crate::media::hub::GOP_CACHE_BYTES >> 20) as u32,
        }
    }
}

impl Config {
    /// Loads defaults < file < env. `file` is `--config`; without it,
    /// `roomcast.toml` in the working directory is read if it exists.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(p) if !p.is_file() => return Err(ConfigError::Missing(p.to_path_buf())),
            Some(p) => fig = fig.merge(Toml::file_exact(p)),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                fig = fig.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        fig = fig.merge(Env::prefixed("ROOMCAST_").split("__"));
        let cfg: Config = fig.extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: uniqueness, non-empty secrets, sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        let mut ids = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            if app.sdkappid == 0 || app.sdkappid > u64::from(u32::MAX) {
                return Err(invalid(
                    format!("apps[{i}].sdkappid"),
                    "must be in 1..=4294967295",
                ));
            }
            if !ids.insert(app.sdkappid) {
                return Err(invalid(
                    format!("apps[{i}].sdkappid"),
                    format!("{} is configured twice", app.sdkappid),
                ));
            }
            if app.secret_key.trim().is_empty() {
                return Err(invalid(
                    format!("apps[{i}].secret_key"),
                    "must not be empty",
                ));
            }
            if let Some(url) = &app.callback_url {
                if let Err(why) = crate::callback::HttpUrl::parse(url) {
                    return Err(invalid(format!("apps[{i}].callback_url"), why));
                }
                if app
                    .callback_key
                    .as_deref()
                    .is_none_or(|k| k.trim().is_empty())
                {
                    return Err(invalid(
                        format!("apps[{i}].callback_key"),
                        "is required with callback_url (callbacks are signed)",
                    ));
                }
            }
        }
        let mut ids = HashSet::new();
        for (i, c) in self.api.credentials.iter().enumerate() {
            if c.secret_id.trim().is_empty() || c.secret_key.trim().is_empty() {
                return Err(invalid(
                    format!("api.credentials[{i}]"),
                    "secret_id and secret_key must not be empty",
                ));
            }
            if !ids.insert(&c.secret_id) {
                return Err(invalid(
                    format!("api.credentials[{i}].secret_id"),
                    "configured twice",
                ));
            }
        }
        if let Some(b) = self.limits.cpu_budget
            && !(b.is_finite() && (0.0..=4096.0).contains(&b))
        {
            return Err(invalid("limits.cpu_budget", "0 to 4096 cores"));
        }
        if self.limits.gop_cache_mb > 1024 {
            return Err(invalid("limits.gop_cache_mb", "0 to 1024 MB"));
        }
        if let Some(t) = &self.api.metrics_token
            && (t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(
                "api.metrics_token",
                "at least 16 printable characters, no spaces",
            ));
        }
        if self.http.port != 0
            && self.http.port == self.rtmp.port
            && self.http.bind == self.rtmp.bind
        {
            return Err(invalid("rtmp.port", "must differ from http.port"));
        }
        for (field, value) in [
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("http.idle_timeout_secs", self.http.idle_timeout_secs),
            (
                "rtmp.handshake_timeout_secs",
                self.rtmp.handshake_timeout_secs,
            ),
            (
                "rtmp.push_stall_timeout_secs",
                self.rtmp.push_stall_timeout_secs,
            ),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(invalid(field, "must be 1 to 3600 seconds"));
            }
        }
        for (field, value) in [
            ("http.max_connections", self.http.max_connections),
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip,
            ),
            ("rtmp.max_connections", self.rtmp.max_connections),
            (
                "rtmp.max_connections_per_ip",
                self.rtmp.max_connections_per_ip,
            ),
        ] {
            if !(1..=1_000_000).contains(&value) {
                return Err(invalid(field, "must be 1 to 1000000"));
            }
        }
        if let Some(n) = self.runtime.io_threads
            && !(1..=1024).contains(&n)
        {
            return Err(invalid("runtime.io_threads", "must be 1 to 1024"));
        }
        if let Some(n) = self.runtime.rtmp_threads
            && n > 1024
        {
            return Err(invalid("runtime.rtmp_threads", "must be 0 to 1024"));
        }
        if !(1..=10_000).contains(&self.http.ws_messages_per_sec) {
            return Err(invalid("http.ws_messages_per_sec", "must be 1 to 10000"));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        let l = &self.limits;
        for (name, v) in [
            ("limits.rooms_per_app", l.rooms_per_app),
            ("limits.tasks_per_app", l.tasks_per_app),
            ("limits.users_per_room", l.users_per_room),
            ("limits.users_per_call_room", l.users_per_call_room),
            ("limits.anchors_per_room", l.anchors_per_room),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        for (name, v) in [
            ("limits.disconnect_grace_secs", l.disconnect_grace_secs),
            ("limits.audience_linger_secs", l.audience_linger_secs),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        for (name, port) in [
            ("http.tls_port", self.http.tls_port),
            ("rtmp.tls_port", self.rtmp.tls_port),
        ] {
            if port.is_some() && (self.tls.cert.is_none() || self.tls.key.is_none()) {
                return Err(invalid(name, "needs tls.cert and tls.key"));
            }
        }
        if let Some(e) = &self.storage.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(invalid("storage.endpoint", "an http:// or https:// URL"));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid("tls.key", "tls.cert and tls.key go together"));
        }
        Ok(())
    }

    /// The secret key of a configured application.
    pub fn app_key(&self, sdkappid: u64) -> Option<&str> {
        self.apps
            .iter()
            .find(|a| a.sdkappid == sdkappid)
            .map(|a| a.secret_key.as_str())
    }

    /// The secret key of a configured API caller.
    pub fn api_key(&self, secret_id: &str) -> Option<&str> {
        self.api
            .credentials
            .iter()
            .find(|c| c.secret_id == secret_id)
            .map(|c| c.secret_key.as_str())
    }

    /// When no application (or no API credential) is configured, fills them
    /// from `data_dir/dev-credentials.toml`, generating that file with fresh
    /// random keys on first start. Returns the file when it was used.
    pub fn ensure_dev_credentials(&mut self) -> Result<Option<DevCredentials>, ConfigError> {
        if !self.apps.is_empty() && !self.api.credentials.is_empty() {
            return Ok(None);
        }
        let path = self.data_dir.join(DEV_CREDENTIALS_FILE);
        let io = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        let (dev, created) = if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let dev: DevCredentials = toml::from_str(&text)
                .map_err(|e| invalid(path.display().to_string(), format!("unreadable: {e}")))?;
            (dev, false)
        } else {
            let dev = DevCredentials::generate();
            std::fs::create_dir_all(&self.data_dir).map_err(|source| ConfigError::Io {
                path: self.data_dir.clone(),
                source,
            })?;
            write_private(&path, &dev.to_toml()).map_err(io)?;
            (dev, true)
        };
        if self.apps.is_empty() {
            self.apps = dev.apps.clone();
        }
        if self.api.credentials.is_empty() {
            self.api.credentials = dev.api.credentials.clone();
        }
        self.validate()?;
        Ok(Some(DevCredentials {
            created,
            path,
            ..dev
        }))
    }
}

/// Generated development application and API credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevCredentials {
    pub apps: Vec<AppConfig>,
    pub api: DevApi,
    #[serde(skip)]
    pub created: bool,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevApi {
    pub credentials: Vec<ApiCredential>,
}

impl DevCredentials {
    fn generate() -> Self {
        DevCredentials {
            apps: vec![AppConfig {
                sdkappid: DEV_SDKAPPID,
                secret_key: random_hex(32),
                callback_url: None,
                callback_key: None,
            }],
            api: DevApi {
                credentials: vec![ApiCredential {
                    secret_id: format!("AKIDdev{}", random_hex(12)),
                    secret_key: random_hex(16),
                }],
            },
            created: true,
            path: PathBuf::new(),
        }
    }

    fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("plain structs serialise");
        format!(
            "# Development credentials generated by `roomcast serve` because the\n\
             # configuration names no [[apps]] / [[api.credentials]]. Keep this file\n\
             # private; configure your own keys in roomcast.toml for production.\n{body}"
        )
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
// figment's Jail closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail(jail: &mut Jail, toml: &str) -> Result<Config, ConfigError> {
        jail.create_file("roomcast.toml", toml).unwrap();
        Config::load(None)
    }

    #[test]
    fn defaults_match_interfaces() {
        let c = Config::default();
        assert_eq!(c.http.port, 8080);
        assert_eq!(c.rtmp.port, 1935);
        assert_eq!(c.webrtc.udp_ports.to_string(), "50000-50100");
        assert_eq!(c.api.max_clock_skew_secs, 300);
    }

    #[test]
    fn file_then_env_override() {
        Jail::expect_with(|jail| {
            jail.set_env("ROOMCAST_HTTP__PORT", "9000");
            let c = load_in_jail(
                jail,
                r#"
                data_dir = "/tmp/x"
                [http]
                port = 8081
                [rtmp]
                port = 1936
                [webrtc]
                udp_ports = "40000-40010"
                public_ip = "203.0.113.7"
                [[apps]]
                sdkappid = 1400000000
                secret_key = "k"
                [[api.credentials]]
                secret_id = "AKID"
                secret_key = "s"
                "#,
            )
            .unwrap();
            assert_eq!(c.http.port, 9000);
            assert_eq!(c.rtmp.port, 1936);
            assert_eq!(
                c.webrtc.udp_ports,
                PortRange {
                    low: 40000,
                    high: 40010
                }
            );
            assert_eq!(c.app_key(1_400_000_000), Some("k"));
            assert_eq!(c.api_key("AKID"), Some("s"));
            Ok(())
        });
    }

    #[test]
    fn io_threads_default_to_one_per_core_and_are_bounded() {
        let cores = crate::capacity::cores();
        assert_eq!(RuntimeConfig::default().io_threads(), cores);
        Jail::expect_with(|jail| {
            jail.set_env("ROOMCAST_RUNTIME__IO_THREADS", "3");
            let c = load_in_jail(jail, "").unwrap();
            assert_eq!(c.runtime.io_threads(), 3);
            Ok(())
        });
        Jail::expect_with(|jail| {
            let err = load_in_jail(jail, "[runtime]\nio_threads = 0\n")
                .unwrap_err()
                .to_string();
            assert!(err.contains("runtime.io_threads"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn codecs_are_timed_at_start_up_unless_told_not_to() {
        assert!(Limits::default().cpu_calibrate);
        Jail::expect_with(|jail| {
            let c = load_in_jail(jail, "[limits]\ncpu_calibrate = false\n").unwrap();
            assert!(!c.limits.cpu_calibrate);
            let err = load_in_jail(jail, "[limits]\ncpu_calibrate = 1\n")
                .unwrap_err()
                .to_string();
            assert!(err.contains("cpu_calibrate"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn batch_loops_and_huge_pages_are_on_unless_told_not_to() {
        type Switch = fn(&RuntimeConfig) -> bool;
        let switches: [(&str, Switch); 2] = [
            ("rtmp_batch", RuntimeConfig::rtmp_batch),
            ("huge_pages", RuntimeConfig::huge_pages),
        ];
        for (key, on) in switches {
            assert!(on(&RuntimeConfig::default()), "{key}");
            Jail::expect_with(|jail| {
                let c = load_in_jail(jail, &format!("[runtime]\n{key} = false\n")).unwrap();
                assert!(!on(&c.runtime), "{key}");
                let err = load_in_jail(jail, &format!("[runtime]\n{key} = \"sometimes\"\n"))
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(key), "{err}");
                Ok(())
            });
        }
    }

    #[test]
    fn rtmp_threads_default_to_one_may_be_none_and_are_bounded() {
        assert_eq!(RuntimeConfig::default().rtmp_threads(), 1);
        Jail::expect_with(|jail| {
            let c = load_in_jail(jail, "[runtime]\nrtmp_threads = 0\n").unwrap();
            assert_eq!(c.runtime.rtmp_threads(), 0);
            jail.set_env("ROOMCAST_RUNTIME__RTMP_THREADS", "3");
            let c = load_in_jail(jail, "").unwrap();
            assert_eq!(c.runtime.rtmp_threads(), 3);
            Ok(())
        });
        Jail::expect_with(|jail| {
            let err = load_in_jail(jail, "[runtime]\nrtmp_threads = 5000\n")
                .unwrap_err()
                .to_string();
            assert!(err.contains("runtime.rtmp_threads"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_gop_cache_defaults_to_8_mb_may_be_off_and_is_bounded() {
        Jail::expect_with(|jail| {
            let c = load_in_jail(jail, "").unwrap();
            assert_eq!(c.limits.gop_cache_bytes(), 8 << 20);
            assert_eq!(
                c.limits.gop_cache_bytes(),
                crate::media::hub::GOP_CACHE_BYTES
            );
            let c = load_in_jail(jail, "[limits]\ngop_cache_mb = 0\n").unwrap();
            assert_eq!(c.limits.gop_cache_bytes(), 0);
            jail.set_env("ROOMCAST_LIMITS__GOP_CACHE_MB", "32");
            let c = load_in_jail(jail, "").unwrap();
            assert_eq!(c.limits.gop_cache_bytes(), 32 << 20);
            jail.set_env("ROOMCAST_LIMITS__GOP_CACHE_MB", "2000");
            let err = load_in_jail(jail, "").unwrap_err().to_string();
            assert!(err.contains("limits.gop_cache_mb"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_cluster_section_is_checked_and_its_keys_come_from_the_environment_too() {
        Jail::expect_with(|jail| {
            let c = load_in_jail(jail, "").unwrap();
            assert_eq!(c.cluster, None, "no [cluster]: one node, no Redis");
            jail.set_env("ROOMCAST_CLUSTER__REDIS_URL", "redis://10.0.0.9:6379");
            jail.set_env("ROOMCAST_CLUSTER__NODE_ID", "edge-1");
            let c = load_in_jail(jail, "").unwrap().cluster.unwrap();
            assert_eq!(c.redis_url, "redis://10.0.0.9:6379");
            assert_eq!(c.node_id.as_deref(), Some("edge-1"));
            assert_eq!((c.heartbeat_ms, c.lease_ms), (1000, 10_000));
            Ok(())
        });
        for (toml, field) in [
            ("[cluster]\nredis_url = \"http://x\"\n", "cluster.redis_url"),
            (
                "[cluster]\nredis_url = \"rediss://x:6380\"\n",
                "cluster.redis_url",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nnode_id = \"a b\"\n",
                "cluster.node_id",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nadvertise_http = \"x:8080\"\n",
                "cluster.advertise_http",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nadvertise_rtmp = \"http://x\"\n",
                "cluster.advertise_rtmp",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nheartbeat_ms = 1000\nlease_ms = 2000\n",
                "cluster.lease_ms",
            ),
            (
                "[cluster]\nredis_url = \"redis://x\"\nheartbeat_ms = 10\n",
                "cluster.heartbeat_ms",
            ),
        ] {
            Jail::expect_with(|jail| {
                let err = load_in_jail(jail, toml).unwrap_err().to_string();
                assert!(err.contains(field), "{toml}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn unknown_keys_name_key_and_file() {
        Jail::expect_with(|jail| {
            let err = load_in_jail(jail, "[http]\nprot = 1\n")
                .unwrap_err()
                .to_string();
            assert!(err.contains("prot"), "{err}");
            assert!(err.contains("roomcast.toml"), "{err}");
            let err = load_in_jail(jail, "colour = 1\n").unwrap_err().to_string();
            assert!(
                err.contains("colour") && err.contains("roomcast.toml"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_env_key_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("ROOMCAST_HTTP__PROT", "1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("prot") && err.contains("ROOMCAST_"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            ("[http]\nport = 70000\n", "port"),
            ("[webrtc]\nudp_ports = \"5-3\"\n", "udp_ports"),
            ("[webrtc]\nudp_ports = \"abc\"\n", "udp_ports"),
            ("[webrtc]\npublic_ip = \"nope\"\n", "public_ip"),
            (
                "[[apps]]\nsdkappid = 0\nsecret_key = \"k\"\n",
                "apps[0].sdkappid",
            ),
            (
                "[[apps]]\nsdkappid = 1\nsecret_key = \"k\"\n[[apps]]\nsdkappid = 1\nsecret_key = \"j\"\n",
                "apps[1].sdkappid",
            ),
            (
                "[[apps]]\nsdkappid = 1\nsecret_key = \"\"\n",
                "apps[0].secret_key",
            ),
            ("[[apps]]\nsdkappid = 1\n", "secret_key"),
            (
                "[limits]\nanchors_per_room = 0\n",
                "limits.anchors_per_room",
            ),
        ];
        for (toml, field) in cases {
            Jail::expect_with(|jail| {
                let err = load_in_jail(jail, toml).unwrap_err().to_string();
                assert!(err.contains(field), "{toml:?} -> {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        assert!(matches!(
            Config::load(Some(Path::new("/nonexistent/roomcast.toml"))),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn dev_credentials_are_generated_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("roomcast-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let first = c.ensure_dev_credentials().unwrap().unwrap();
        assert!(first.created);
        let key = c.app_key(DEV_SDKAPPID).unwrap().to_owned();
        assert_eq!(key.len(), 64);
        let mut again = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let second = again.ensure_dev_credentials().unwrap().unwrap();
        assert!(!second.created);
        assert_eq!(again.app_key(DEV_SDKAPPID), Some(key.as_str()));
        assert_eq!(again.api.credentials, c.api.credentials);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
