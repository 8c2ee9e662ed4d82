//! RTMP ingest: OBS and ffmpeg publish into rooms.
//!
//! `rtmp://HOST/push/<RoomId>?sdkappid=&userid=&usersig=[&roomtype=]`. The
//! rml_rtmp server session does the protocol; this module owns the socket,
//! the timeouts and limits, the UserSig check at publish, the room entry (the
//! publisher is an anchor; unpublishing leaves; a dropped socket is a
//! disconnect) and the hand-off of frames to the media hub. Playback is
//! refused: roomcast serves viewers over HLS and WHEP.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use super::chunk::{self, ChunkError, ChunkLimits, Next, SessionFeed};
use super::flv;
use super::loops::Loops;
use super::push::{PushState, PushTarget};
use crate::auth::client::authenticate;
use crate::cluster::ClusterError;
use crate::config::Config;
use crate::media::MediaMessage;
use crate::media::hub::{MediaHub, Publisher};
use crate::net::ConnLimiter;
use crate::room::RoomCallError;
use crate::room::{
    Command, Enter, EventKind, Grant, Role, RoomHandle, RoomId, RoomIdType, RoomKey, Scene,
    SessionId, UserId,
};
use crate::tls::ServerTls;

/// The RTMP application publishers must use (TRTC's).
const APP_NAME: &str = "push";
/// Why a publisher whose end event was lost (it lagged) stops.
const MISSED_END: &str = "its session ended while its room events were missed";
/// A publishing socket silent this long is dropped.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a publishing connection checks whether it has gone quiet.
const IDLE_CHECK: Duration = Duration::from_millis(2500);

/// Whether a publisher has gone quiet, without reading the clock on every
/// read: a read is noted, and a check every [`IDLE_CHECK`] sees whether
/// one came since the last check. Quiet means no read for at least [`IDLE_TIMEOUT`], and
/// it is seen within two checks after that.
#[derive(Debug)]
struct Quiet {
    /// A read came since the last check.
    heard: bool,
    /// A check that saw reads: the last read came at or before it.
    active_at: tokio::time::Instant,
}

impl Quiet {
    fn new(now: tokio::time::Instant) -> Quiet {
        Quiet {
            heard: false,
            active_at: now,
        }
    }

    fn read(&mut self) {
        self.heard = true;
    }

    /// A check at `now`: `true` when nothing was read for [`IDLE_TIMEOUT`].
    fn is_quiet(&mut self, now: tokio::time::Instant) -> bool {
        if std::mem::take(&mut self.heard) {
            self.active_at = now;
            return false;
        }
        now.saturating_duration_since(self.active_at) >= IDLE_TIMEOUT
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    #[error("handshake/publish not completed in time")]
    Timeout,
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("connection closed by peer")]
    Closed,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad handshake: {0:?}")]
    Handshake(rml_rtmp::handshake::HandshakeError),
    #[error("bad RTMP data: {0}")]
    Protocol(String),
    #[error("refused chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("unsupported media: {0}")]
    Media(#[from] flv::FlvError),
    #[error("session ended by the room: {0}")]
    Ended(&'static str),
    #[error("forwarding to the owner node: {0}")]
    Forward(String),
}

/// The next item of a broadcast channel, as one future ready with each in
/// turn, for a task that polls it on every turn it would sleep (a
/// connection's loop, between reads of its socket).
///
/// It stays registered with the channel between polls: a `recv()` made
/// afresh for every read would join and leave the channel's list of
/// waiters each time, under its lock, which every connection shares. And
/// it asks the channel only when the channel woke it or it has just
/// yielded an item: otherwise a poll is two atomic operations (the task's
/// waker kept, a flag read), not the channel's locks and the receiver's
/// state, cold in the cache after the task slept.
struct NextEvent<T> {
    receiving: Receiving<T>,
    /// Set by the channel's wake (and after an item); wakes the task.
    signal: Arc<EventSignal>,
    /// `signal` as the waker the channel holds.
    waker: Waker,
}

type Receiver<T> = tokio::sync::broadcast::Receiver<T>;
/// One receive, giving the receiver back with what it received.
type Receiving<T> = Pin<Box<dyn Future<Output = (Receiver<T>, Result<T, RecvError>)> + Send>>;

#[derive(Default)]
struct EventSignal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for EventSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<T: Clone + Send + 'static> NextEvent<T> {
    fn new(rx: Receiver<T>) -> Self {
        let signal = Arc::new(EventSignal::default());
        // The first poll asks the channel, and so registers with it.
        signal.woken.store(true, Ordering::Relaxed);
        NextEvent {
            receiving: Self::arm(rx),
            waker: Waker::from(signal.clone()),
            signal,
        }
    }

    fn arm(mut rx: Receiver<T>) -> Receiving<T> {
        Box::pin(async move {
            let r = rx.recv().await;
            (rx, r)
        })
    }
}

impl<T: Clone + Send + 'static> Future for NextEvent<T> {
    type Output = Result<T, RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Either the receiver is registered with the channel (its last
        // poll was pending) and the channel sets `woken` when it has
        // something, or `woken` is already set.
        this.signal.task.register(cx.waker());
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut inner = Context::from_waker(&this.waker);
        let (rx, r) = ready!(this.receiving.as_mut().poll(&mut inner));
        this.receiving = Self::arm(rx);
        // The new receive is not registered yet: ask at the next poll.
        this.signal.woken.store(true, Ordering::Release);
        Poll::Ready(r)
    }
}

/// What the ingest needs from the rest of the gateway.
#[derive(Clone)]
pub(crate) struct Ingest {
    pub config: Arc<Config>,
    pub rooms: RoomHandle,
    pub hub: MediaHub,
    /// Where connections run (`runtime.rtmp_threads`).
    pub loops: Loops,
}

impl Ingest {
    /// Accepts connections until the task is dropped; with `tls`, RTMPS
    /// (the TLS handshake counts against the RTMP handshake's deadline).
    pub(crate) async fn serve(self, listener: TcpListener, tls: Option<Arc<ServerTls>>) {
        let rtmp = &self.config.rtmp;
        let name = if tls.is_some() { "rtmps" } else { "rtmp" };
        let limiter = ConnLimiter::new(name, rtmp.max_connections, rtmp.max_connections_per_ip);
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("rtmp accept: {e}");
                    crate::ticks::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(guard) = limiter.admit(peer.ip(), std::time::Instant::now()) else {
                drop(socket);
                continue;
            };
            let deadline = tokio::time::Instant::now()
                + Duration::from_secs(self.config.rtmp.handshake_timeout_secs);
            let this = self.clone();
            let acceptor = tls.as_ref().map(|t| t.rtmp());
            let _ = socket.set_nodelay(true);
            self.loops.spawn(socket, move |socket| async move {
                let _guard = guard;
                let socket: crate::tls::Conn = match acceptor {
                    None => socket,
                    Some(a) => match crate::ticks::timeout_at(deadline, a.accept(socket)).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::info!(%peer, "rtmps connection refused: TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "rtmps connection refused: no TLS handshake in time");
                            return;
                        }
                    },
                };
                this.serve_connection(socket, peer, deadline).await;
            });
        }
    }

    /// Serves one accepted connection (past TLS) to its end; `deadline` is
    /// when its publish must have started.
    pub(crate) async fn serve_connection(
        self,
        socket: crate::tls::Conn,
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) {
        let mut conn = Connection {
            ingest: self,
            peer,
            socket,
            published: None,
            deadline,
        };
        let result = conn.run().await;
        conn.finish(result).await;
    }
}

/// A connection that ends without [`Connection::finish`] (a panic inside
/// it, or its loop stopped with the gateway) must not leave its publisher
/// in the room for ever: it is disconnected, as if its socket had dropped
/// (the grace applies). Its publisher leaves the hub as it is dropped.
impl Drop for Connection {
    fn drop(&mut self) {
        let Some(p) = self.published.take() else {
            return;
        };
        let Sink::Local(_) = &p.sink else {
            return;
        };
        crate::panics::unfinished!(
            "rtmp connection",
            "its session is disconnected",
            peer = %self.peer, room = %p.key, user = %p.user
        );
        self.ingest.rooms.end_detached(p.session, false);
    }
}

/// Where a publisher's media goes.
enum Sink {
    /// The room is open here: onto the hub.
    Local(Publisher),
    /// The room is owned by another cluster node: pushed there over RTMP,
    /// with the publisher's own stream key (OBS cannot follow a redirect).
    Forward { node: String, target: PushTarget },
}

/// A publisher that entered its room (here, or on its owner node).
struct Published {
    key: RoomKey,
    user: UserId,
    session: SessionId,
    sink: Sink,
    announced: [bool; 2],
    /// The client sent deleteStream/FCUnpublish: leaving, not dropping.
    finished: bool,
}

struct Connection {
    ingest: Ingest,
    peer: SocketAddr,
    socket: crate::tls::Conn,
    published: Option<Published>,
    /// Until publishing: when the handshake, connect and publish must be
    /// done, reads and writes alike.
    deadline: tokio::time::Instant,
}

impl Connection {
    async fn run(&mut self) -> Result<(), IngestError> {
        // One deadline from accept to a started publish: handshake, connect,
        // and a publish however slowly its bytes come.
        let handshake_deadline = self.deadline;
        let leftover = crate::ticks::timeout_at(handshake_deadline, self.handshake())
            .await
            .map_err(|_| IngestError::Timeout)??;
        let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| IngestError::Protocol(format!("{e:?}")))?;
        self.apply(&mut session, initial).await?;
        // The session is only given single-chunk messages the reader checked.
        let results = session
            .handle_input(&chunk::SESSION_PREAMBLE)
            .map_err(|e| IngestError::Protocol(format!("{e:?}")))?;
        self.apply(&mut session, results).await?;
        let mut feed = SessionFeed::for_publisher(ChunkLimits::default());
        self.feed(&mut session, &mut feed, &leftover).await?;

        let mut events = NextEvent::new(self.ingest.rooms.subscribe());
        // A forwarded publish ends when its owner node stops taking it, so
        // the publisher reconnects and is placed again.
        let mut forward: Option<tokio::sync::watch::Receiver<PushState>> = None;
        let mut buf = vec![0u8; 64 * 1024];
        // One timer for the connection, not one per read: it fires at the
        // publish deadline, then (publishing) on the `IDLE_CHECK` grid. Polled
        // only once fired, not each time the read goes pending.
        let mut idle = crate::ticks::Deadline::new(handshake_deadline);
        let mut quiet = Quiet::new(tokio::time::Instant::now());
        loop {
            if self.published.as_ref().is_some_and(|p| p.finished) {
                return Ok(());
            }
            // The read first: it is what wakes the task nearly every time,
            // and the others are not polled when it is ready. A publisher
            // that never lets it be pending still gives way when the
            // budget for the task (its loop's, or the runtime's) runs out.
            let n = tokio::select! {
                biased;
                r = self.socket.read(&mut buf) => match r {
                    Ok(0) => return Err(IngestError::Closed),
                    Ok(n) => n,
                    Err(e) => return Err(e.into()),
                },
                () = &mut idle => {
                    if self.published.is_none() {
                        return Err(IngestError::Timeout);
                    }
                    let now = tokio::time::Instant::now();
                    if quiet.is_quiet(now) {
                        return Err(IngestError::Idle(IDLE_TIMEOUT));
                    }
                    // On the grid: the keeper fires every connection's
                    // check in one wake, not one wake each.
                    idle.reset(crate::ticks::next_on_grid(IDLE_CHECK));
                    continue;
                }
                r = async { forward.as_mut().expect("guarded").changed().await }, if forward.is_some() => {
                    let state = forward.as_mut().expect("guarded").borrow_and_update().clone();
                    match (r, state) {
                        (Err(_), _) | (_, PushState::Failed { .. } | PushState::Stopped) => {
                            return Err(IngestError::Forward("the room's owner node refused the stream".into()));
                        }
                        (_, PushState::Retrying { error, .. }) => {
                            return Err(IngestError::Forward(format!("lost the room's owner node: {error}")));
                        }
                        _ => continue,
                    }
                }
                ev = &mut events, if self.published.is_some() => {
                    match ev {
                        Ok(ev) => {
                            let p = self.published.as_ref().expect("guarded");
                            if ev.is_for(&p.key, p.session) {
                                match ev.kind {
                                    EventKind::SessionReplaced { .. } => return Err(IngestError::Ended("replaced by a new session")),
                                    EventKind::SessionEnded { reason, .. } => return Err(IngestError::Ended(reason.as_str())),
                                    EventKind::RoomClosed { .. } => return Err(IngestError::Ended("room closed")),
                                    _ => {}
                                }
                            }
                        }
                        // Events were missed: ask whether ours was among them.
                        Err(RecvError::Lagged(_)) => {
                            let session = self.published.as_ref().expect("guarded").session;
                            if !self.ingest.rooms.has_session(session).await {
                                return Err(IngestError::Ended(MISSED_END));
                            }
                        }
                        Err(RecvError::Closed) => return Err(IngestError::Ended("shutting down")),
                    }
                    continue;
                }
            };
            quiet.read();
            self.feed(&mut session, &mut feed, &buf[..n]).await?;
            if forward.is_none()
                && let Some(Published {
                    sink: Sink::Forward { target, .. },
                    ..
                }) = &self.published
            {
                forward = Some(target.state.clone());
            }
        }
    }

    /// Reads `bytes` through the chunk reader and hands each message it
    /// accepts to the session, in order, reacting to what the session says.
    async fn feed(
        &mut self,
        session: &mut ServerSession,
        feed: &mut SessionFeed,
        bytes: &[u8],
    ) -> Result<(), IngestError> {
        let read = feed.push(bytes);
        // Messages completed before a refused one are still handled.
        while let Some(next) = feed.next() {
            match next {
                Next::Session(framed) => {
                    let results = session
                        .handle_input(framed)
                        .map_err(|e| IngestError::Protocol(format!("{e:?}")))?;
                    let was_publishing = self.published.is_some();
                    self.apply(session, results).await?;
                    if !was_publishing && self.published.is_some() {
                        feed.publishing_on_last_stream();
                    }
                }
                Next::Media(msg) => {
                    let data = msg.payload;
                    let parsed = if msg.type_id == 9 {
                        flv::parse_video(data, msg.timestamp)?
                    } else {
                        flv::parse_audio(data, msg.timestamp)?
                    };
                    self.media(parsed).await?;
                }
            }
            if self.published.as_ref().is_some_and(|p| p.finished) {
                break;
            }
        }
        if let Some(ack) = feed.ack_due() {
            self.send(&ack).await?;
        }
        read.map_err(IngestError::from)
    }

    /// Runs the server side of the RTMP handshake; returns bytes read past it.
    async fn handshake(&mut self) -> Result<Vec<u8>, IngestError> {
        let mut hs = Handshake::new(PeerType::Server);
        let mut buf = [0u8; 4096];
        loop {
            let n = self.socket.read(&mut buf).await?;
            if n == 0 {
                return Err(IngestError::Closed);
            }
            match hs
                .process_bytes(&buf[..n])
                .map_err(IngestError::Handshake)?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.socket.write_all(&response_bytes).await?;
                    self.socket.flush().await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.socket.write_all(&response_bytes).await?;
                    self.socket.flush().await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    }

    /// Writes responses and reacts to events, in order.
    async fn apply(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<(), IngestError> {
        let mut queue = std::collections::VecDeque::from(results);
        while let Some(r) = queue.pop_front() {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.send(&p.bytes).await?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
                ServerSessionResult::RaisedEvent(ev) => {
                    let more = self.on_event(session, ev).await?;
                    // Responses to this event go before later results.
                    for m in more.into_iter().rev() {
                        queue.push_front(m);
                    }
                }
            }
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        session: &mut ServerSession,
        ev: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, IngestError> {
        let proto = |e| IngestError::Protocol(format!("{e:?}"));
        match ev {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') != APP_NAME {
                    let r = session
                        .reject_request(
                            request_id,
                            "NetConnection.Connect.Rejected",
                            "use rtmp://HOST/push/<RoomId>?sdkappid=&userid=&usersig=",
                        )
                        .map_err(proto)?;
                    self.write_all(r).await?;
                    return Err(IngestError::Refused(format!(
                        "unknown application `{app_name}`"
                    )));
                }
                session.accept_request(request_id).map_err(proto)
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => match self.enter_room(&stream_key).await {
                Ok(p) => {
                    tracing::info!(peer = %self.peer, room = %p.key, user = %p.user, "rtmp publish started");
                    self.published = Some(p);
                    session.accept_request(request_id).map_err(proto)
                }
                Err(reason) => {
                    let r = session
                        .reject_request(request_id, "NetStream.Publish.BadName", &reason)
                        .map_err(proto)?;
                    self.write_all(r).await?;
                    Err(IngestError::Refused(reason))
                }
            },
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let r = session
                    .reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "roomcast does not serve RTMP playback; use HLS or WHEP",
                    )
                    .map_err(proto)?;
                self.write_all(r).await?;
                Err(IngestError::Refused("play requests are not served".into()))
            }
            // Media never reaches the session while publishing (the feed
            // hands it over directly), and the session drops it before.
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(p) = &mut self.published {
                    p.finished = true;
                }
                Ok(vec![])
            }
            _ => Ok(vec![]),
        }
    }

    async fn write_all(&mut self, results: Vec<ServerSessionResult>) -> Result<(), IngestError> {
        for r in results {
            if let ServerSessionResult::OutboundResponse(p) = r {
                self.send(&p.bytes).await?;
            }
        }
        Ok(())
    }

    /// Writes to the peer; a peer that stops reading is dropped at the
    /// publish deadline or, publishing, after the idle timeout.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        let (deadline, err) = match self.published {
            Some(_) => (
                tokio::time::Instant::now() + IDLE_TIMEOUT,
                IngestError::Idle(IDLE_TIMEOUT),
            ),
            None => (self.deadline, IngestError::Timeout),
        };
        let socket = &mut self.socket;
        let write = async move {
            socket.write_all(bytes).await?;
            // TLS holds records until flushed (a no-op on plain TCP).
            socket.flush().await
        };
        match crate::ticks::timeout_at(deadline, write).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(err),
        }
    }

    async fn media(&mut self, msg: Option<MediaMessage>) -> Result<(), IngestError> {
        let (Some(msg), Some(p)) = (msg, self.published.as_mut()) else {
            return Ok(());
        };
        let publisher = match &mut p.sink {
            Sink::Local(publisher) => publisher,
            Sink::Forward { target, .. } => {
                target.offer(&Arc::new(msg));
                return Ok(());
            }
        };
        let kind = match &msg {
            MediaMessage::Config(c) => c.kind,
            MediaMessage::Frame(f) => f.kind,
        };
        let slot = kind.index();
        if !p.announced[slot] {
            p.announced[slot] = true;
            let session = p.session;
            if let Err(e) = self
                .ingest
                .rooms
                .command(Command::Publish { session, kind })
                .await
            {
                return Err(IngestError::Refused(e.to_string()));
            }
        }
        publisher.send(msg);
        Ok(())
    }

    /// Checks the stream key and enters the room as an anchor. `Err` is the
    /// reason sent back to the client.
    async fn enter_room(&mut self, stream_key: &str) -> Result<Published, String> {
        if self.published.is_some() {
            return Err("this connection already publishes".into());
        }
        let (room, query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
        let mut sdkappid = None;
        let mut userid = None;
        let mut usersig = None;
        let mut roomtype = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "sdkappid" => sdkappid = Some(v.into_owned()),
                "userid" => userid = Some(v.into_owned()),
                "usersig" => usersig = Some(v.into_owned()),
                "roomtype" => roomtype = Some(v.into_owned()),
                _ => {}
            }
        }
        let sdkappid: u64 = sdkappid
            .ok_or("missing sdkappid")?
            .parse()
            .map_err(|_| "sdkappid must be an unsigned integer")?;
        let userid = userid.ok_or("missing userid")?;
        let user = UserId::new(&userid).map_err(|e| e.to_string())?;
        let usersig = usersig.ok_or("missing usersig")?;
        // As in TRTC, the room in the RTMP path is a string room unless told otherwise.
        let ty = match roomtype.as_deref() {
            None | Some("str") => RoomIdType::Str,
            Some("int") => RoomIdType::Int,
            Some(_) => return Err("roomtype must be int or str".into()),
        };
        let room = RoomId::parse(room, Some(ty)).map_err(|e| e.to_string())?;
        let unix_now = crate::unix_now();
        let pmk = authenticate(
            self.ingest.config.app_key(sdkappid),
            sdkappid,
            &userid,
            &usersig,
            unix_now,
        )
        .map_err(|e| e.to_string())?;
        let key = RoomKey {
            app: sdkappid,
            room,
        };
        if self.ingest.hub.is_publishing(&key, &user) {
            return Err(format!("user {user} is already publishing in this room"));
        }
        let session = self.ingest.rooms.new_session();
        let entered = self
            .ingest
            .rooms
            .command(Command::Enter(Enter {
                room: key.clone(),
                user: user.clone(),
                session,
                role: Role::Anchor,
                scene: Scene::Live,
                hidden: false,
                grant: pmk.map(Grant::from),
                unix_now,
            }))
            .await;
        let sink = match entered {
            Ok(()) => Sink::Local(self.ingest.hub.publish(
                key.clone(),
                user.clone(),
                Some(crate::metrics::Edge::Rtmp),
            )),
            Err(RoomCallError::Cluster(
                ClusterError::Elsewhere { node, rtmp, .. }
                | ClusterError::PlacedElsewhere { node, rtmp, .. },
            )) if rtmp.starts_with("rtmp") => {
                let url = format!("{}/{APP_NAME}/{stream_key}", rtmp.trim_end_matches('/'));
                // On this connection's own runtime (its loop, if it has one).
                let target = PushTarget::spawn(
                    &url,
                    &format!("forward of {user} in {key}"),
                    &Loops::none(),
                )?;
                tracing::info!(peer = %self.peer, room = %key, user = %user, owner = %node, "rtmp publish forwarded to the room's owner node");
                Sink::Forward { node, target }
            }
            Err(e) => return Err(e.to_string()),
        };
        Ok(Published {
            key,
            user,
            session,
            sink,
            announced: [false; 2],
            finished: false,
        })
    }

    /// Tells the room how the connection ended and logs it.
    async fn finish(&mut self, result: Result<(), IngestError>) {
        let limit = match &result {
            Err(IngestError::Timeout) => Some("handshake_timeout"),
            Err(IngestError::Idle(_)) => Some("idle_timeout"),
            Err(IngestError::Chunk(ChunkError::TooLarge { .. })) => Some("message_size"),
            Err(IngestError::Chunk(ChunkError::Buffered(_))) => Some("buffered_bytes"),
            Err(IngestError::Chunk(ChunkError::TooManyStreams(_))) => Some("chunk_streams"),
            Err(IngestError::Chunk(ChunkError::Amf(_))) => Some("amf"),
            _ => None,
        };
        if let Some(limit) = limit {
            crate::metrics::metrics().limit_hit("rtmp", limit);
        }
        let published = self.published.take();
        if let Some(Published {
            sink: Sink::Forward { node, .. },
            key,
            user,
            ..
        }) = &published
        {
            // Nothing of it is in a room here; the owner sees the push end.
            match &result {
                Ok(()) => {
                    tracing::info!(peer = %self.peer, room = %key, user = %user, owner = %node, "forwarded rtmp publish finished")
                }
                Err(e) => {
                    tracing::warn!(peer = %self.peer, room = %key, user = %user, owner = %node, "forwarded rtmp publish ended: {e}")
                }
            }
            let _ = self.socket.shutdown().await;
            return;
        }
        match (&result, &published) {
            (Ok(()), Some(p)) => {
                tracing::info!(peer = %self.peer, room = %p.key, user = %p.user, "rtmp publish finished");
                let _ = self
                    .ingest
                    .rooms
                    .command(Command::Leave { session: p.session })
                    .await;
            }
            (Err(IngestError::Ended(why)), Some(p)) => {
                tracing::info!(peer = %self.peer, room = %p.key, user = %p.user, "rtmp publisher disconnected: {why}");
            }
            (Err(e), Some(p)) => {
                tracing::warn!(peer = %self.peer, room = %p.key, user = %p.user, "rtmp publisher dropped: {e}");
                let _ = self
                    .ingest
                    .rooms
                    .command(Command::Disconnect { session: p.session })
                    .await;
            }
            (Err(IngestError::Closed), None) | (Ok(()), None) => {
                tracing::debug!(peer = %self.peer, "rtmp connection closed before publishing");
            }
            (Err(e), None) => tracing::warn!(peer = %self.peer, "rtmp connection refused: {e}"),
        }
        let _ = self.socket.shutdown().await;
        // Dropping the publisher unregisters it from the hub.
        drop(published);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::testing::{Anchor, config, panic_holding};
    use std::sync::atomic::AtomicUsize;

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The events come in order, each waking the task that waits, with
    /// none lost whether it was polled between them or not.
    #[test]
    fn next_event_yields_each_item_and_wakes_the_task_for_it() {
        let (tx, rx) = tokio::sync::broadcast::channel::<u32>(8);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut next = NextEvent::new(rx);
        let mut poll = |n: &mut NextEvent<u32>| match Pin::new(n).poll(&mut cx) {
            Poll::Ready(r) => Some(r.expect("an item")),
            Poll::Pending => None,
        };
        let woken = || wakes.0.load(Ordering::SeqCst);

        assert_eq!(poll(&mut next), None);
        // Polled again without a wake: still nothing.
        assert_eq!(poll(&mut next), None);
        assert_eq!(woken(), 0);
        tx.send(1).unwrap();
        assert_eq!(woken(), 1, "the item woke the task");
        assert_eq!(poll(&mut next), Some(1));
        // Two at once: one wake, then both, then nothing.
        assert_eq!(poll(&mut next), None);
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        assert_eq!(woken(), 2);
        assert_eq!(poll(&mut next), Some(2));
        assert_eq!(poll(&mut next), Some(3));
        assert_eq!(poll(&mut next), None);
        // Sent while the task was not polling (after an item, before
        // the next poll): still there at the next poll.
        tx.send(4).unwrap();
        assert_eq!(poll(&mut next), Some(4));
        tx.send(5).unwrap();
        assert_eq!(poll(&mut next), Some(5));
        assert_eq!(poll(&mut next), None);
        drop(tx);
        assert!(woken() >= 3, "the channel's end woke the task");
        assert!(matches!(
            Pin::new(&mut next).poll(&mut cx),
            Poll::Ready(Err(RecvError::Closed))
        ));
    }

    /// A receiver that fell behind is told so, then goes on.
    #[test]
    fn quiet_is_no_read_for_the_idle_timeout_seen_within_two_checks() {
        let t0 = tokio::time::Instant::now();
        let mut q = Quiet::new(t0);
        let at = |checks: u32| t0 + IDLE_CHECK * checks;
        // Reads between checks keep it active, however many checks pass.
        for c in 1..=20 {
            q.read();
            assert!(!q.is_quiet(at(c)), "check {c}");
        }
        // The last read came just after check 20 (seen at check 21): quiet
        // no earlier than the timeout after check 21, and by the check
        // after that at the latest.
        q.read();
        let checks = (IDLE_TIMEOUT.as_millis() / IDLE_CHECK.as_millis()) as u32;
        for c in 21..21 + checks {
            assert!(!q.is_quiet(at(c)), "check {c}");
        }
        assert!(q.is_quiet(at(21 + checks)));
        // A check that comes late still measures from the last active one.
        let mut q = Quiet::new(t0);
        assert!(!q.is_quiet(t0 + IDLE_TIMEOUT - Duration::from_millis(1)));
        assert!(q.is_quiet(t0 + IDLE_TIMEOUT));
        // A read wakes it again.
        q.read();
        assert!(!q.is_quiet(t0 + IDLE_TIMEOUT * 3));
        assert!(q.is_quiet(t0 + IDLE_TIMEOUT * 4));
    }

    #[test]
    fn next_event_reports_a_lag() {
        let (tx, rx) = tokio::sync::broadcast::channel::<u32>(2);
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut next = NextEvent::new(rx);
        assert!(Pin::new(&mut next).poll(&mut cx).is_pending());
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert!(matches!(
            Pin::new(&mut next).poll(&mut cx),
            Poll::Ready(Err(RecvError::Lagged(3)))
        ));
        assert!(matches!(
            Pin::new(&mut next).poll(&mut cx),
            Poll::Ready(Ok(3))
        ));
        assert!(matches!(
            Pin::new(&mut next).poll(&mut cx),
            Poll::Ready(Ok(4))
        ));
        assert!(Pin::new(&mut next).poll(&mut cx).is_pending());
    }

    /// A connection task that dies inside (its future dropped unfinished,
    /// as a panic drops it) leaves the hub and is disconnected in its
    /// room, not left an anchor for ever.
    #[tokio::test]
    async fn a_connection_that_dies_unfinished_is_disconnected_from_its_room() {
        let config = config();
        let a = Anchor::enter(&config, "teacher").await;
        let hub = MediaHub::default();
        let publisher = hub.publish(a.room.clone(), a.user.clone(), None);
        let (_client, server) = tokio::io::duplex(1024);
        let conn = Connection {
            ingest: Ingest {
                config: Arc::new(config),
                rooms: a.rooms.clone(),
                hub: hub.clone(),
                loops: Loops::none(),
            },
            peer: "127.0.0.1:40000".parse().unwrap(),
            socket: Box::new(server),
            published: Some(Published {
                key: a.room.clone(),
                user: a.user.clone(),
                session: a.session,
                sink: Sink::Local(publisher),
                announced: [false; 2],
                finished: false,
            }),
            deadline: tokio::time::Instant::now(),
        };
        assert_eq!(a.connected().await, Some(true));
        panic_holding(conn).await;
        assert!(
            !hub.is_publishing(&a.room, &a.user),
            "its publisher left the hub"
        );
        a.wait_connected(Some(false), "the session was not disconnected")
            .await;
    }
}
