//! RTMP push: one relay output to one CDN origin, with its own retries.
//!
//! Each target is its own task with a bounded queue; it connects, publishes,
//! sends the sequence headers first and starts (and restarts) at a video
//! keyframe. Liveness: once the origin has shown it acknowledges, an
//! acknowledgement it owes must come, and a write must not stay blocked,
//! within the stall timeout (`rtmp.push_stall_timeout_secs`); see
//! [`AckWatch`]. Reconnects use capped exponential backoff with jitter; a
//! target that never accepted a publish (bad host, refused key) is given up
//! after `FAIL_FAST_ATTEMPTS` and reported failed. A slow target never slows
//! the relay: its queue overflows and the relay drops to the next keyframe
//! for it.
//!
//! While a plain-TCP target publishes, the relay writes its media itself
//! ([`super::direct`]): chunked into the target's backlog and written
//! without waiting; the target's task reads the origin and finishes writes
//! the socket did not take at once. A backlog over [`super::direct::BACKLOG`]
//! drops to the next keyframe, as a full queue does.

use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::chunk::{self, ChunkLimits, SessionFeed};
use super::direct::{Direct, Latest, Link, Path, SharedTcp, TargetSocket};
use super::flv;
use super::loops::Loops;
use crate::media::{DropToKeyframe, MediaMessage, TimeBase, TrackKind};
use crate::metrics::{DropCounter, DropReason};
use crate::tls::Conn;

/// Messages queued per target (about 4 s of 30 fps video plus audio).
pub(crate) const QUEUE_CAPACITY: usize = 512;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the handshake, connect and publish exchange.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// No acknowledgement progress (or a write blocked) this many seconds:
/// reconnect. `rtmp.push_stall_timeout_secs`, set once at start.
static STALL_TIMEOUT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(30);

/// Sets the stall timeout of every push (the server, from its configuration).
pub(crate) fn set_stall_timeout(secs: u64) {
    STALL_TIMEOUT_SECS.store(secs.max(1), std::sync::atomic::Ordering::Relaxed);
}

fn stall_timeout() -> Duration {
    Duration::from_secs(STALL_TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed))
}
/// The origin is asked to acknowledge every this many bytes.
const ACK_WINDOW: u32 = 128 * 1024;
/// The chunk size announced to the origin (rml_rtmp sends it at connect),
/// which media written here uses too.
const CHUNK_SIZE: u32 = 4096;
/// Chunk streams of pushed video and audio (rml_rtmp's, which then never
/// writes media itself).
const VIDEO_CSID: u8 = 4;
const AUDIO_CSID: u8 = 5;
/// A target that never accepted a publish is given up after this many tries.
const FAIL_FAST_ATTEMPTS: u32 = 3;
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(4);

/// Where to push: `rtmp://host[:port]/app[/more]/stream[?query]`, or
/// `rtmps://` (TLS, port 443 unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushUrl {
    pub host: String,
    pub port: u16,
    pub app: String,
    pub stream_key: String,
    pub tc_url: String,
    /// `rtmps://`: RTMP inside TLS, the certificate verified for `host`.
    pub tls: bool,
}

impl PushUrl {
    pub(crate) fn parse(url: &str) -> Result<PushUrl, String> {
        let (scheme, tls, default_port, rest) = if let Some(r) = url.strip_prefix("rtmps://") {
            ("rtmps", true, 443, r)
        } else if let Some(r) = url.strip_prefix("rtmp://") {
            ("rtmp", false, 1935, r)
        } else {
            return Err(format!("`{url}` must start with rtmp:// or rtmps://"));
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{url}` has no application path"))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h,
                p.parse().map_err(|_| format!("`{url}`: bad port `{p}`"))?,
            ),
            _ => (authority, default_port),
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let (app, stream_key) = path.split_once('/').unwrap_or((path, ""));
        if app.is_empty() || stream_key.is_empty() {
            return Err(format!("`{url}` needs {scheme}://host/app/stream"));
        }
        Ok(PushUrl {
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            stream_key: stream_key.to_owned(),
            tc_url: format!("{scheme}://{authority}/{app}"),
            tls,
        })
    }
}

/// What a target is doing, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushState {
    Connecting { attempt: u32 },
    Publishing,
    Retrying { attempt: u32, error: String },
    Failed { error: String },
    Stopped,
}

impl PushState {
    /// Its name in status, metrics and logs.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            PushState::Connecting { .. } => "connecting",
            PushState::Publishing => "publishing",
            PushState::Retrying { .. } => "retrying",
            PushState::Failed { .. } => "failed",
            PushState::Stopped => "stopped",
        }
    }

    /// The last error, while retrying or after giving up.
    pub(crate) fn error(&self) -> Option<&str> {
        match self {
            PushState::Retrying { error, .. } | PushState::Failed { error } => Some(error),
            _ => None,
        }
    }
}

/// The relay's side of a target.
pub(crate) struct PushTarget {
    pub url: String,
    queue: mpsc::Sender<Arc<MediaMessage>>,
    /// The queue, or the socket itself while publishing over plain TCP.
    link: Arc<Link>,
    pub state: watch::Receiver<PushState>,
    gate: DropToKeyframe,
    counted: DropCounter,
}

impl PushTarget {
    /// Starts the target's task, on one of `loops` (or here without).
    /// Frames sent must be in milliseconds. A target of relay task `task`
    /// (named in its log lines).
    pub(crate) fn spawn(url: &str, task: &str, loops: &Loops) -> Result<PushTarget, String> {
        let parsed = PushUrl::parse(url)?;
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (state_tx, state) = watch::channel(PushState::Connecting { attempt: 1 });
        let label = url.split('?').next().unwrap_or(url).to_owned();
        let link = Arc::new(Link::default());
        loops.spawn_task(run(
            parsed,
            (task.to_owned(), label),
            (rx, link.clone()),
            state_tx,
        ));
        Ok(PushTarget {
            url: url.to_owned(),
            queue,
            link,
            state,
            gate: DropToKeyframe::default(),
            counted: DropCounter::new(DropReason::SlowTarget),
        })
    }

    /// Queues a message, or writes it while the target publishes over
    /// plain TCP, without waiting; on overflow the target skips to the next
    /// video keyframe (configs are always attempted).
    pub(crate) fn offer(&mut self, msg: &Arc<MediaMessage>) {
        if !self.gate.admit(msg) {
            self.count_drops();
            return;
        }
        // Under the lock either way: the task switches paths under it, so
        // nothing queued is overtaken by what is written directly.
        let taken = match &mut *self.link.lock() {
            Path::Direct(d) => d.offer(msg, &self.link.wake),
            Path::Queue => !matches!(
                self.queue.try_send(msg.clone()),
                Err(mpsc::error::TrySendError::Full(_))
            ),
        };
        if !taken {
            self.gate.overflowed();
        }
        self.count_drops();
    }

    /// Frames this target skipped because it fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.gate.dropped
    }

    fn count_drops(&mut self) {
        self.counted.sync(self.gate.dropped);
    }
}

struct Stream {
    socket: Conn,
    /// The socket of a plain-TCP target, which the relay may write itself.
    tcp: Option<Arc<TargetSocket>>,
    session: ClientSession,
    origin: SessionFeed,
    /// The message stream the origin accepted the publish on: media is
    /// chunked here, straight from the frame (rml_rtmp would build the FLV
    /// body, then copy it into chunks, then into the write). `None` if the
    /// publish request could not be read: rml_rtmp writes the media.
    media_stream: Option<u32>,
    /// Bytes written through `socket` while publishing on the queue path.
    written: u64,
}

/// The origin's bytes, read under the same limits as a publisher's
/// ([`super::chunk`]) before the client session decodes them: an origin is a
/// stranger too.
fn feed_origin(
    feed: &mut SessionFeed,
    session: &mut ClientSession,
    bytes: &[u8],
) -> Result<Vec<ClientSessionResult>, String> {
    feed.push(bytes)
        .map_err(|e| format!("origin sent bad RTMP: {e}"))?;
    let mut results = Vec::new();
    while let Some(framed) = feed.next_framed() {
        results.extend(
            session
                .handle_input(framed)
                .map_err(|e| format!("origin sent bad RTMP: {e:?}"))?,
        );
    }
    Ok(results)
}

async fn run(
    url: PushUrl,
    (task, label): (String, String),
    (mut rx, link): (mpsc::Receiver<Arc<MediaMessage>>, Arc<Link>),
    state: watch::Sender<PushState>,
) {
    let mut latest = Latest::default();
    let mut ever_published = false;
    let mut attempt = 0u32;
    let mut backoff = BACKOFF_START;
    loop {
        attempt += 1;
        let _ = state.send(PushState::Connecting { attempt });
        let error = match crate::ticks::timeout(SETUP_TIMEOUT, connect(&url)).await {
            Err(_) => "connect/publish timed out".to_owned(),
            Ok(Err(e)) => e,
            Ok(Ok(mut stream)) => {
                // Plain TCP with the origin's stream known: the relay writes.
                let direct = stream.tcp.is_some() && stream.media_stream.is_some();
                tracing::info!(%task, target = %label, attempt, written_by = if direct { "relay" } else { "queue" }, "rtmp push publishing");
                let _ = state.send(PushState::Publishing);
                ever_published = true;
                attempt = 0;
                backoff = BACKOFF_START;
                let published = match (stream.tcp.clone(), stream.media_stream) {
                    (Some(tcp), Some(stream_id)) => {
                        publish_direct(&mut stream, (tcp, stream_id), &mut rx, &mut latest, &link)
                            .await
                    }
                    _ => publish(&mut stream, &mut rx, &mut latest).await,
                };
                match published {
                    Ok(()) => {
                        // The last holder of a plain socket sends FIN.
                        stream.tcp = None;
                        let _ = stream.socket.shutdown().await;
                        let _ = state.send(PushState::Stopped);
                        tracing::info!(%task, target = %label, "rtmp push stopped");
                        return;
                    }
                    Err(e) => e,
                }
            }
        };
        if !ever_published && attempt >= FAIL_FAST_ATTEMPTS {
            tracing::warn!(%task, target = %label, attempts = attempt, "rtmp push failed: {error}");
            let _ = state.send(PushState::Failed { error });
            // Drain so the relay never blocks on us; stop when it does.
            while rx.recv().await.is_some() {}
            return;
        }
        tracing::warn!(%task, target = %label, attempt, retry_in_ms = backoff.as_millis() as u64, "rtmp push retrying: {error}");
        crate::metrics::metrics().push_reconnects.inc();
        let _ = state.send(PushState::Retrying {
            attempt,
            error: error.clone(),
        });
        // Keep the latest configs while waiting; drop frames (we restart at a keyframe).
        let wait = crate::ticks::sleep(jitter(backoff));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                msg = rx.recv() => match msg {
                    Some(m) => latest.remember(&m),
                    None => {
                        let _ = state.send(PushState::Stopped);
                        return;
                    }
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

/// Bytes written to origins (the metrics' counter, looked up once).
pub(super) static SENT: std::sync::LazyLock<crate::metrics::ByteCounter> =
    std::sync::LazyLock::new(|| crate::metrics::metrics().sent(crate::metrics::Output::Rtmp));

/// Writes the session's responses and raises its events; the bytes written.
async fn write_results(
    socket: &mut Conn,
    results: Vec<ClientSessionResult>,
    events: &mut Vec<ClientSessionEvent>,
) -> Result<usize, String> {
    let mut written = 0;
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => {
                socket
                    .write_all(&p.bytes)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                SENT.add(p.bytes.len());
                written += p.bytes.len();
            }
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    // TLS holds records until flushed (a no-op on plain TCP).
    socket.flush().await.map_err(|e| format!("write: {e}"))?;
    Ok(written)
}

/// Writes and flushes handshake bytes.
async fn write_flushed(socket: &mut Conn, bytes: &[u8]) -> Result<(), String> {
    socket.write_all(bytes).await.map_err(|e| e.to_string())?;
    socket.flush().await.map_err(|e| e.to_string())
}

/// TCP connect, handshake, connect(app), publish(stream key).
async fn connect(url: &PushUrl) -> Result<Stream, String> {
    let socket = crate::ticks::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| "TCP connect timed out".to_owned())?
    .map_err(|e| format!("connect {}:{}: {e}", url.host, url.port))?;
    let _ = socket.set_nodelay(true);
    let (mut socket, tcp): (Conn, _) = if url.tls {
        (crate::tls::wrap(&url.host, socket, true).await?, None)
    } else {
        let tcp = Arc::new(TargetSocket::adopt(socket).map_err(|e| format!("socket: {e}"))?);
        (Box::new(SharedTcp(tcp.clone())), Some(tcp))
    };

    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| format!("handshake: {e:?}"))?;
    write_flushed(&mut socket, &p0p1).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let leftover = loop {
        let n = socket.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("origin closed during handshake".into());
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| format!("handshake: {e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                write_flushed(&mut socket, &response_bytes).await?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                write_flushed(&mut socket, &response_bytes).await?;
                break remaining_bytes;
            }
        }
    };

    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(url.tc_url.clone());
    config.window_ack_size = ACK_WINDOW;
    config.chunk_size = CHUNK_SIZE;
    let (mut session, initial) = ClientSession::new(config).map_err(|e| format!("{e:?}"))?;
    // The session is only given single-chunk messages the reader checked.
    session
        .handle_input(&chunk::SESSION_PREAMBLE)
        .map_err(|e| format!("{e:?}"))?;
    let mut origin = SessionFeed::new(ChunkLimits::default());
    let mut events = Vec::new();
    write_results(&mut socket, initial, &mut events).await?;
    let r = session
        .request_connection(url.app.clone())
        .map_err(|e| format!("{e:?}"))?;
    write_results(&mut socket, vec![r], &mut events).await?;
    let mut input = leftover;
    let mut requested_publish = false;
    let mut media_stream = None;
    loop {
        if !input.is_empty() {
            let results = feed_origin(&mut origin, &mut session, &input)?;
            // The session sends `publish` on the stream the origin created.
            for r in &results {
                if let ClientSessionResult::OutboundResponse(p) = r
                    && let Some(id) = chunk::publish_stream_of(&p.bytes)
                {
                    media_stream = Some(id);
                }
            }
            write_results(&mut socket, results, &mut events).await?;
        }
        for ev in events.drain(..) {
            match ev {
                ClientSessionEvent::ConnectionRequestAccepted if !requested_publish => {
                    requested_publish = true;
                    let r = session
                        .request_publishing(url.stream_key.clone(), PublishRequestType::Live)
                        .map_err(|e| format!("{e:?}"))?;
                    let mut more = Vec::new();
                    write_results(&mut socket, vec![r], &mut more).await?;
                }
                ClientSessionEvent::ConnectionRequestRejected { description } => {
                    return Err(format!("origin refused connect: {description}"));
                }
                ClientSessionEvent::PublishRequestAccepted => {
                    return Ok(Stream {
                        socket,
                        tcp,
                        session,
                        origin,
                        media_stream,
                        written: 0,
                    });
                }
                ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                    return Err(format!("origin refused publish: {code}"));
                }
                _ => {}
            }
        }
        let n = socket.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("origin closed the connection (refused?)".into());
        }
        input = buf[..n].to_vec();
    }
}

/// Sends until the queue closes (`Ok`) or the origin fails (`Err`).
async fn publish(
    stream: &mut Stream,
    rx: &mut mpsc::Receiver<Arc<MediaMessage>>,
    latest: &mut Latest,
) -> Result<(), String> {
    let mut events = Vec::new();
    // What is queued when the task wakes goes out in one write; the
    // sequence headers first.
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    for m in [&latest.video, &latest.audio].into_iter().flatten() {
        serialize(stream, m, &mut out)?;
    }
    write_out(stream, &out).await?;
    let mut need_keyframe = true;
    let now = tokio::time::Instant::now;
    let mut acks = AckWatch::new(stall_timeout());
    let mut buf = vec![0u8; 16 * 1024];
    let mut check = crate::ticks::Deadline::new(next_liveness_check(&acks, now(), None));
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(mut m) = msg else { return Ok(()) };
                out.clear();
                loop {
                    let skip = match &*m {
                        MediaMessage::Config(_) => {
                            latest.remember(&m);
                            false
                        }
                        MediaMessage::Frame(f) => {
                            let skip = need_keyframe && latest.holds_back(f);
                            need_keyframe &= skip;
                            skip
                        }
                    };
                    if !skip {
                        serialize(stream, &m, &mut out)?;
                    }
                    if out.len() >= MAX_WRITE {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(next) => m = next,
                        Err(_) => break,
                    }
                }
                write_out(stream, &out).await?;
            }
            r = stream.socket.read(&mut buf) => {
                let n = r.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("origin closed the connection".into());
                }
                let results = feed_origin(&mut stream.origin, &mut stream.session, &buf[..n])?;
                stream.written += write_results(&mut stream.socket, results, &mut events).await? as u64;
            }
            () = &mut check => {
                let at = now();
                acks.check(at, stream.written)?;
                check.reset(next_liveness_check(&acks, at, None));
            }
        }
        if !events.is_empty() {
            acks.note(&mut events, stream.written);
        }
    }
}

/// `m` as RTMP chunks on message stream `stream_id`, straight from the
/// frame (nothing for what FLV cannot carry: a relay transcodes it first).
fn chunk_media(stream_id: u32, m: &MediaMessage) -> Option<chunk::Outgoing<'_>> {
    let (kind, ts, head, body) = match m {
        MediaMessage::Config(c) => (c.kind, 0, flv::config_head(c), &c.extradata),
        MediaMessage::Frame(f) => {
            debug_assert_eq!(f.time_base, TimeBase::MILLIS);
            (f.kind, f.dts.max(0) as u32, flv::frame_head(f), &f.data)
        }
    };
    let (head, head_len) = head?;
    let (csid, type_id) = match kind {
        TrackKind::Video => (VIDEO_CSID, 9),
        TrackKind::Audio => (AUDIO_CSID, 8),
    };
    Some(chunk::Outgoing {
        csid,
        header: (type_id, stream_id, ts),
        chunk_size: CHUNK_SIZE as usize,
        head,
        head_len,
        body,
    })
}

/// Publishes over plain TCP with the relay writing the media itself
/// ([`super::direct`]) until the queue closes (`Ok`) or the origin fails
/// (`Err`); the target's path is the queue again after, its configs kept.
async fn publish_direct(
    stream: &mut Stream,
    (tcp, stream_id): (Arc<TargetSocket>, u32),
    rx: &mut mpsc::Receiver<Arc<MediaMessage>>,
    latest: &mut Latest,
    link: &Link,
) -> Result<(), String> {
    {
        // The configs first, then what was queued, then the relay's own.
        let mut d = Direct::new(tcp.clone(), stream_id, chunk_media, std::mem::take(latest));
        let mut path = link.lock();
        while let Ok(m) = rx.try_recv() {
            d.push(&m);
        }
        d.write_now();
        *path = Path::Direct(d);
    }
    let result = direct_loop(stream, &tcp, rx, link).await;
    if let Path::Direct(d) = std::mem::take(&mut *link.lock()) {
        *latest = d.latest;
    }
    result
}

async fn direct_loop(
    stream: &mut Stream,
    tcp: &TargetSocket,
    rx: &mut mpsc::Receiver<Arc<MediaMessage>>,
    link: &Link,
) -> Result<(), String> {
    // Bytes waiting, or a write error, as the relay left them.
    let backlog = || link.with_direct(Direct::outcome).unwrap_or(Ok(0));
    let mut events = Vec::new();
    let written = || link.with_direct(|d| d.written).unwrap_or(0);
    let now = tokio::time::Instant::now;
    let mut acks = AckWatch::new(stall_timeout());
    // When the socket last took bytes, or had nothing waiting.
    let mut last_write = now();
    let mut buf = vec![0u8; 16 * 1024];
    let mut check = crate::ticks::Deadline::new(next_liveness_check(&acks, now(), None));
    loop {
        let waiting = backlog()? > 0;
        if !waiting {
            last_write = tokio::time::Instant::now();
        }
        tokio::select! {
            () = link.wake.notified(), if !waiting => {}
            r = tcp.writable(), if waiting => {
                r.map_err(|e| format!("write: {e}"))?;
                if link.with_direct(Direct::write_now) == Some(true) {
                    last_write = tokio::time::Instant::now();
                }
            }
            msg = rx.recv() => match msg {
                // The relay is done: what it wrote goes out, then FIN.
                None => return flush_direct(tcp, link).await,
                // Nothing is queued while direct; kept in order all the same.
                Some(m) => {
                    link.with_direct(|d| d.offer(&m, &link.wake));
                }
            },
            r = stream.socket.read(&mut buf) => {
                let n = r.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("origin closed the connection".into());
                }
                let results = feed_origin(&mut stream.origin, &mut stream.session, &buf[..n])?;
                for r in results {
                    match r {
                        // Between messages, after what the relay appended.
                        ClientSessionResult::OutboundResponse(p) => {
                            link.with_direct(|d| {
                                d.push_bytes(&p.bytes);
                                d.write_now();
                            });
                        }
                        ClientSessionResult::RaisedEvent(e) => events.push(e),
                        ClientSessionResult::UnhandleableMessageReceived(_) => {}
                    }
                }
            }
            () = &mut check => {
                let at = now();
                acks.check(at, written())?;
                if waiting && at.duration_since(last_write) >= acks.timeout {
                    return Err("write blocked: origin stalled".into());
                }
                check.reset(next_liveness_check(&acks, at, waiting.then_some(last_write)));
            }
        }
        if !events.is_empty() {
            acks.note(&mut events, written());
        }
    }
}

/// Writes the backlog out (an origin that takes none of it for the stall
/// timeout has stalled).
async fn flush_direct(tcp: &TargetSocket, link: &Link) -> Result<(), String> {
    loop {
        let left = link
            .with_direct(|d| {
                d.write_now();
                d.outcome()
            })
            .unwrap_or(Ok(0))?;
        if left == 0 {
            return Ok(());
        }
        crate::ticks::timeout(stall_timeout(), tcp.writable())
            .await
            .map_err(|_| "write blocked: origin stalled".to_owned())?
            .map_err(|e| format!("write: {e}"))?;
    }
}

/// When a target's liveness is next checked ([`AckWatch::next_check`]),
/// its next look on the wall clock's multiples of a quarter of the stall
/// timeout, which every target shares.
fn next_liveness_check(
    acks: &AckWatch,
    now: tokio::time::Instant,
    blocked_since: Option<tokio::time::Instant>,
) -> tokio::time::Instant {
    acks.next_check(
        now,
        crate::ticks::next_on_grid(acks.timeout / 4),
        blocked_since,
    )
}

/// Bytes written since the origin's acknowledgements last progressed past
/// which it surely owes one: it acknowledges every [`ACK_WINDOW`] it
/// receives, counted from where its own count started.
const OWED: u64 = 2 * ACK_WINDOW as u64;

/// The origin's acknowledgements: once it has shown it acknowledges, an
/// acknowledgement owed (more than [`OWED`] bytes written since the last
/// progress) and not come for the stall timeout means it stalled. A stream
/// too slow to fill the window within the timeout (audio alone, a still
/// screen, an anchor away) owes nothing, so it is never taken for a stall.
/// Time and the bytes written are arguments.
///
/// A target's liveness is checked by one timer at [`AckWatch::next_check`],
/// moved only when it fires: at most a quarter of a stall timeout apart,
/// on the wall clock's multiples of it ([`next_liveness_check`]) so that
/// every target's checks fire together, until an acknowledgement is owed
/// (a healthy target's fires four times a stall timeout, not once a
/// second); then a stall timeout after the check that first found it owed.
/// An acknowledgement owed is caught within a quarter of a timeout of being
/// owed, and the origin always has the whole timeout to send it; bytes left
/// waiting come due a stall timeout after the socket last took some.
struct AckWatch {
    timeout: Duration,
    acked: Option<u32>,
    /// Bytes written when acknowledgements last progressed.
    written_then: u64,
    /// The first check that found an acknowledgement owed since then.
    owed_since: Option<tokio::time::Instant>,
}

impl AckWatch {
    fn new(timeout: Duration) -> AckWatch {
        AckWatch {
            timeout,
            acked: None,
            written_then: 0,
            owed_since: None,
        }
    }

    /// Takes the session's events, noting acknowledgements that progress
    /// with the bytes `written` so far.
    fn note(&mut self, events: &mut Vec<ClientSessionEvent>, written: u64) {
        for ev in events.drain(..) {
            if let ClientSessionEvent::AcknowledgementReceived { bytes_received } = ev
                && self.acked != Some(bytes_received)
            {
                self.acked = Some(bytes_received);
                self.written_then = written;
                self.owed_since = None;
            }
        }
    }

    /// When liveness is next in doubt: a stall timeout after an
    /// acknowledgement was found owed, otherwise the next look,
    /// `next_look` (a quarter of one from `now` at the latest); and a stall
    /// timeout after `blocked_since` (bytes waiting since the socket last
    /// took some).
    fn next_check(
        &self,
        now: tokio::time::Instant,
        next_look: tokio::time::Instant,
        blocked_since: Option<tokio::time::Instant>,
    ) -> tokio::time::Instant {
        let mut at = match self.owed_since {
            Some(since) => since + self.timeout,
            None => next_look.min(now + self.timeout / 4),
        };
        if let Some(since) = blocked_since {
            at = at.min(since + self.timeout);
        }
        at
    }

    /// The check at `now`, with the bytes `written` so far.
    fn check(&mut self, now: tokio::time::Instant, written: u64) -> Result<(), String> {
        if self.acked.is_none() || written.wrapping_sub(self.written_then) < OWED {
            return Ok(());
        }
        let since = *self.owed_since.get_or_insert(now);
        if now.duration_since(since) >= self.timeout {
            return Err(format!(
                "origin stalled: {} KiB written and no acknowledgement for {:?}",
                written.wrapping_sub(self.written_then) / 1024,
                self.timeout
            ));
        }
        Ok(())
    }
}

/// Messages already queued are written together up to this many bytes.
const MAX_WRITE: usize = 256 * 1024;

/// Writes and flushes `out` (nothing if empty); an origin that takes none
/// of it for the stall timeout has stalled.
async fn write_out(stream: &mut Stream, out: &[u8]) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    crate::ticks::timeout(stall_timeout(), write_flushed(&mut stream.socket, out))
        .await
        .map_err(|_| "write blocked: origin stalled".to_owned())?
        .map_err(|e| format!("write: {e}"))?;
    SENT.add(out.len());
    stream.written += out.len() as u64;
    Ok(())
}

/// Appends `m`'s RTMP chunks, from the client session, to `out` (nothing
/// for what FLV cannot carry).
fn serialize(stream: &mut Stream, m: &MediaMessage, out: &mut Vec<u8>) -> Result<(), String> {
    if let Some(stream_id) = stream.media_stream {
        if let Some(o) = chunk_media(stream_id, m) {
            o.write(out);
        }
        return Ok(());
    }
    let r = match m {
        MediaMessage::Config(c) => {
            // Codecs FLV cannot carry are skipped (a relay transcodes them first).
            let Some(tag) = flv::config_tag(c) else {
                return Ok(());
            };
            match c.kind {
                TrackKind::Video => {
                    stream
                        .session
                        .publish_video_data(tag, RtmpTimestamp::new(0), false)
                }
                TrackKind::Audio => {
                    stream
                        .session
                        .publish_audio_data(tag, RtmpTimestamp::new(0), false)
                }
            }
        }
        MediaMessage::Frame(f) => {
            debug_assert_eq!(f.time_base, TimeBase::MILLIS);
            let ts = RtmpTimestamp::new(f.dts.max(0) as u32);
            let Some(tag) = flv::frame_tag(f) else {
                return Ok(());
            };
            match f.kind {
                TrackKind::Video => stream.session.publish_video_data(tag, ts, false),
                TrackKind::Audio => stream.session.publish_audio_data(tag, ts, false),
            }
        }
    }
    .map_err(|e| format!("{e:?}"))?;
    if let ClientSessionResult::OutboundResponse(p) = r {
        out.extend_from_slice(&p.bytes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_push_urls() {
        let u = PushUrl::parse("rtmp://origin.example.com/live/room1?key=abc").unwrap();
        assert_eq!(u.host, "origin.example.com");
        assert_eq!(u.port, 1935);
        assert_eq!(u.app, "live");
        assert_eq!(u.stream_key, "room1?key=abc");
        assert_eq!(u.tc_url, "rtmp://origin.example.com/live");
        let u = PushUrl::parse("rtmp://127.0.0.1:19351/live/a/b").unwrap();
        assert_eq!(
            (u.port, u.app.as_str(), u.stream_key.as_str(), u.tls),
            (19351, "live", "a/b", false)
        );
        let u = PushUrl::parse("rtmps://live-api-s.facebook.com/rtmp/KEY").unwrap();
        assert_eq!((u.port, u.tls), (443, true));
        assert_eq!(u.tc_url, "rtmps://live-api-s.facebook.com/rtmp");
        let u = PushUrl::parse("rtmps://localhost:1936/live/s").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("localhost", 1936, true));
        for bad in [
            "http://x/a/b",
            "rtmp://x/app",
            "rtmp:///a/b",
            "rtmp://x:99999/a/b",
            "rtmps://x/a",
            "srt://x/a/b",
        ] {
            assert!(PushUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// The check comes a quarter of a stall timeout apart, a stall timeout
    /// after an acknowledgement was found owed, and a stall timeout after
    /// bytes began to wait.
    #[test]
    fn liveness_is_checked_when_it_is_next_in_doubt() {
        let ack = |n: u32| vec![ClientSessionEvent::AcknowledgementReceived { bytes_received: n }];
        let timeout = Duration::from_secs(30);
        let s = Duration::from_secs;
        let t0 = tokio::time::Instant::now();
        let mut acks = AckWatch::new(timeout);
        // Before the origin acknowledges: no acknowledgements are no
        // stall, whatever was written.
        assert_eq!(
            acks.next_check(t0 + s(1), t0 + s(1) + s(30) / 4, None),
            t0 + s(1) + s(30) / 4
        );
        // The next look is never further than a quarter of the timeout.
        assert_eq!(acks.next_check(t0, t0 + s(60), None), t0 + s(30) / 4);
        assert!(acks.check(t0 + s(100), 10 * OWED).is_ok());
        acks.note(&mut ack(100), 1_000);
        assert_eq!(
            acks.next_check(t0 + s(3), t0 + s(3) + s(30) / 4, None),
            t0 + s(3) + s(30) / 4
        );
        // Bytes waiting since long ago come first.
        assert_eq!(
            acks.next_check(t0 + s(3), t0 + s(3) + s(30) / 4, Some(t0 + s(1))),
            t0 + s(3) + s(30) / 4
        );
        assert_eq!(
            acks.next_check(t0 + s(30), t0 + s(30) + s(30) / 4, Some(t0 + s(1))),
            t0 + s(31)
        );
        // Less than owed written since: no doubt, however long ago.
        assert!(acks.check(t0 + s(500), 1_000 + OWED - 1).is_ok());
        assert_eq!(acks.owed_since, None);
        // Owed: the origin has a stall timeout from the check that saw it;
        // the same count again is no progress.
        assert!(acks.check(t0 + s(501), 1_000 + OWED).is_ok());
        assert_eq!(
            acks.next_check(t0 + s(501), t0 + s(501) + s(1), None),
            t0 + s(531)
        );
        acks.note(&mut ack(100), 1_000 + OWED + 5);
        assert!(acks.check(t0 + s(530), 1_000 + OWED + 9).is_ok());
        let stalled = acks.check(t0 + s(531), 1_000 + OWED + 9);
        assert!(
            stalled
                .as_ref()
                .is_err_and(|e| e.contains("origin stalled")),
            "{stalled:?}"
        );
        // A new count is progress: nothing owed from there.
        acks.note(&mut ack(200), 1_000 + OWED + 9);
        assert!(acks.check(t0 + s(531), 1_000 + OWED + 9).is_ok());
        assert_eq!(
            acks.next_check(t0 + s(540), t0 + s(540) + s(2), None),
            t0 + s(542)
        );
        // The byte count may wrap.
        let mut acks = AckWatch::new(timeout);
        acks.note(&mut ack(1), u64::MAX - 10);
        assert!(acks.check(t0, OWED + 20).is_ok());
        assert!(acks.owed_since.is_some());
    }

    /// What the origin does in [`stream_past_an_origin`].
    #[derive(Debug, Clone, Copy)]
    enum Origin {
        /// Acknowledges every window it receives, from its own offset.
        Healthy,
        /// Stops acknowledging at this second, or after its first
        /// acknowledgement if later (still reading).
        SilentFrom(u64),
    }

    /// Runs a target's liveness as its task does, in steps of 50 ms: a
    /// stream of `rate` bytes a second, paused during `pause` (seconds),
    /// written to an origin that counts from `offset`; the check only when
    /// its deadline comes. When it found the origin stalled, and the
    /// second the origin first owed an acknowledgement it did not send.
    fn stream_past_an_origin(
        rate: u64,
        pause: (u64, u64),
        offset: u64,
        origin: Origin,
        secs: u64,
    ) -> (Option<Duration>, Option<Duration>) {
        let timeout = Duration::from_secs(30);
        let t0 = tokio::time::Instant::now();
        let step = Duration::from_millis(50);
        let mut acks = AckWatch::new(timeout);
        // The wall clock at `t0`, off the grid.
        let epoch = Duration::from_millis(1_765_000_000_123);
        let look = |t: Duration| t0 + t + crate::ticks::delay_to_grid(epoch + t, timeout / 4);
        let mut check = acks.next_check(t0, look(Duration::ZERO), None);
        let (mut written, mut counted_to) = (0u64, offset);
        let mut unanswered: Option<Duration> = None;
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(secs) {
            t += step;
            let now = t0 + t;
            if !(pause.0..pause.1).contains(&t.as_secs()) {
                written += rate / 20;
            }
            // The origin receives what was written and acknowledges each
            // whole window past its last acknowledgement.
            let received = offset + written;
            if received - counted_to >= u64::from(ACK_WINDOW) {
                match origin {
                    Origin::SilentFrom(at) if t.as_secs() >= at && acks.acked.is_some() => {
                        unanswered.get_or_insert(t);
                    }
                    _ => {
                        counted_to = received;
                        acks.note(
                            &mut vec![ClientSessionEvent::AcknowledgementReceived {
                                bytes_received: received as u32,
                            }],
                            written,
                        );
                    }
                }
            }
            if now >= check {
                if acks.check(now, written).is_err() {
                    return (Some(t), unanswered);
                }
                check = acks.next_check(now, look(t), None);
            }
        }
        (None, unanswered)
    }

    proptest::proptest! {
        /// An origin that acknowledges is never taken for a stall, however
        /// slow the stream (down to 1 kbps) or long its pauses.
        #[test]
        fn an_origin_that_acknowledges_never_stalls(
            rate in 128u64..1_000_000,
            pause_at in 0u64..120,
            pause_for in 0u64..120,
            offset in 0u64..(1 << 20),
        ) {
            let (stalled, _) =
                stream_past_an_origin(rate, (pause_at, pause_at + pause_for), offset, Origin::Healthy, 300);
            proptest::prop_assert_eq!(stalled, None);
        }

        /// An origin that stops acknowledging is found stalled no sooner than
        /// a stall timeout after it first owed an acknowledgement, and within
        /// a quarter of one more, once more than two windows went unanswered.
        #[test]
        fn an_origin_that_stops_acknowledging_is_caught(
            rate in 20_000u64..1_000_000,
            silent_from in 1u64..60,
            offset in 0u64..(1 << 20),
        ) {
            let (stalled, unanswered) =
                stream_past_an_origin(rate, (0, 0), offset, Origin::SilentFrom(silent_from), 300);
            let unanswered = unanswered.expect("the origin owes an acknowledgement");
            let stalled = stalled.expect("the silent origin is found stalled");
            let timeout = Duration::from_secs(30);
            proptest::prop_assert!(stalled >= unanswered + timeout, "{stalled:?} {unanswered:?}");
            // Two windows unanswered: at most the time to write two more.
            let owed = unanswered + Duration::from_secs_f64(2.0 * f64::from(ACK_WINDOW) / rate as f64);
            proptest::prop_assert!(
                stalled <= owed + timeout + timeout / 4 + Duration::from_millis(100),
                "{stalled:?} {owed:?}"
            );
        }
    }
}
