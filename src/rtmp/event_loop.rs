//! An event loop of our own: a thread, an epoll (through mio), a run queue
//! of tasks and the sockets registered with it. No timers: a task's timers
//! are made on the keeper (`crate::ticks`), which wakes the task here.
//!
//! Why not a single-threaded tokio runtime: a relayed message wakes its
//! loop once, and every wake of a tokio runtime pays its scheduler's and
//! I/O driver's bookkeeping (busy-time metrics read the clock twice, the
//! readiness of every socket goes through a shared slot with a tick count,
//! the task harness moves through four states): 1,561 instructions and
//! about 640 cache lines of code a message in the async runtime (`cargo
//! bench --bench relay_instructions`), where nginx-rtmp's epoll loop has
//! none. Here a wake is an epoll event setting a socket's readiness and
//! pushing its task on the queue, and a poll of the task.
//!
//! - **Tasks** are boxed futures in a slab. A task's waker pushes it on the
//!   loop's queue once until it is polled (any thread may wake it); the
//!   loop sleeps in `epoll_wait` only with the queue empty, and a wake from
//!   another thread while it sleeps writes its eventfd.
//! - **Sockets** ([`LoopStream`]) are registered edge-triggered, readable
//!   and writable, on the loop whose task registers them. A socket's
//!   readiness is two flags the events set and a `WouldBlock` (or a short
//!   read, unless the peer closed: its close may have come with the same
//!   edge as the bytes) clears; a read or write that finds its flag clear
//!   parks the task's waker for the next event. A socket is polled on its
//!   loop only.
//! - **Fairness.** A task may do [`BUDGET`] reads and writes a poll; then
//!   its next one is pending and it goes to the back of the queue, so a
//!   publisher whose socket is never empty cannot hold its loop. The queue
//!   is run a batch at a time, with the events read between batches.
//! - **Panics** in a task's poll are caught: the task is dropped (its
//!   guards clean up) and the loop goes on; the panic hook has logged it.
//! - **Tokio inside.** The thread enters the runtime that started it, so
//!   what a task does with tokio (spawn, a tokio socket, a channel) works
//!   as it would on that runtime: a spawned task runs there, and a tokio
//!   socket is that runtime's to wake (a TLS push target's). A plain-TCP
//!   push target's socket is a [`LoopStream`] of its task's loop, written
//!   from other threads too ([`LoopStream::write_from_any`]).
//! - **Stopping.** [`Remote::stop`] ends the loop: its tasks are dropped
//!   on its thread, then the thread ends.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read, Write};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use mio::{Events, Interest, Token};
use slab::Slab;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads and writes a task may make in one poll before it gives way.
pub(crate) const BUDGET: u32 = 128;
/// Tasks run between two looks at the events.
const BATCH: usize = 64;
/// The eventfd's token; sockets' tokens are their slots.
const WAKE: Token = Token(usize::MAX);

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What other threads hand the loop.
#[derive(Default)]
struct Inbox {
    /// Tasks woken, by slot and generation.
    woken: Vec<(usize, u64)>,
    spawned: Vec<Task>,
    /// Sockets dropped off their loop: their slots to free.
    closed: Vec<usize>,
    stopped: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    /// The inbox has something: the loop takes it before it sleeps.
    pending: AtomicBool,
    /// The loop waits (or is about to) in `epoll_wait` with nothing
    /// queued: whoever hands it something writes its eventfd.
    asleep: AtomicBool,
    waker: mio::Waker,
    registry: mio::Registry,
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // A panic never happens with the lock held (pushes and swaps only).
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the inbox and wakes the loop if it sleeps. `pending`
    /// is set before `asleep` is read, and the loop sets `asleep` before it
    /// reads `pending`: one of the two sees the other's (both `SeqCst`).
    fn hand(&self, f: impl FnOnce(&mut Inbox)) {
        f(&mut self.inbox());
        self.pending.store(true, Ordering::SeqCst);
        if self.asleep.swap(false, Ordering::SeqCst)
            && let Err(e) = self.waker.wake()
        {
            tracing::error!("event loop: cannot wake the loop: {e}");
        }
    }

    /// This thread runs this loop.
    fn is_current(self: &Arc<Self>) -> bool {
        CURRENT.with(|c| c.borrow().as_ref().is_some_and(|s| Arc::ptr_eq(s, self)))
    }
}

/// A task's waker: queues it once until it is polled.
struct TaskWaker {
    slot: usize,
    generation: u64,
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let woken = (self.slot, self.generation);
        if self.shared.is_current() {
            // Woken by the loop itself (an event, a task): no lock.
            QUEUE.with(|q| q.borrow_mut().push_back(woken));
        } else {
            self.shared.hand(|i| i.woken.push(woken));
        }
    }
}

/// Spawns onto, and stops, one loop from any thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Remote {
    shared: Arc<Shared>,
}

impl Remote {
    /// Runs `task` on the loop; dropped at once (here) if the loop stopped.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let task: Task = Box::pin(task);
        let mut refused = None;
        self.shared.hand(|i| {
            if i.stopped {
                refused = Some(task);
            } else {
                i.spawned.push(task);
            }
        });
        drop(refused);
    }

    /// Ends the loop: its tasks are dropped on its thread.
    pub(crate) fn stop(&self) {
        self.shared.hand(|i| i.stopped = true);
    }
}

/// Starts a loop on a thread of its own named `name`, inside the runtime
/// of `runtime` (see the module's notes); `on_start` runs first on it.
pub(crate) fn start(
    name: String,
    runtime: tokio::runtime::Handle,
    on_start: impl FnOnce() + Send + 'static,
) -> io::Result<Remote> {
    let poll = mio::Poll::new()?;
    let shared = Arc::new(Shared {
        inbox: Mutex::new(Inbox::default()),
        pending: AtomicBool::new(false),
        asleep: AtomicBool::new(false),
        waker: mio::Waker::new(poll.registry(), WAKE)?,
        registry: poll.registry().try_clone()?,
    });
    let remote = Remote {
        shared: shared.clone(),
    };
    std::thread::Builder::new().name(name).spawn(move || {
        let _runtime = runtime.enter();
        on_start();
        Loop::new(poll, shared).run();
    })?;
    Ok(remote)
}

thread_local! {
    /// The loop running on this thread.
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
    /// Its tasks woken and not run yet, by slot and generation.
    static QUEUE: RefCell<VecDeque<(usize, u64)>> = const { RefCell::new(VecDeque::new()) };
    /// Its sockets, by token.
    static SOCKETS: RefCell<Slab<Arc<Readiness>>> = const { RefCell::new(Slab::new()) };
    /// Reads and writes left to the task being polled.
    static LEFT: Cell<u32> = const { Cell::new(BUDGET) };
}

struct Slot {
    task: Task,
    waker: Waker,
    state: Arc<TaskWaker>,
}

struct Loop {
    poll: mio::Poll,
    shared: Arc<Shared>,
    tasks: Slab<Slot>,
    generation: u64,
}

impl Loop {
    fn new(poll: mio::Poll, shared: Arc<Shared>) -> Loop {
        Loop {
            poll,
            shared,
            tasks: Slab::new(),
            generation: 0,
        }
    }

    fn run(mut self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.shared.clone()));
        let mut events = Events::with_capacity(256);
        let mut inbox = Inbox::default();
        loop {
            if self.shared.pending.swap(false, Ordering::SeqCst) {
                std::mem::swap(&mut *self.shared.inbox(), &mut inbox);
                if inbox.stopped {
                    break;
                }
                self.take(&mut inbox);
            }
            for _ in 0..BATCH {
                let Some((slot, generation)) = QUEUE.with(|q| q.borrow_mut().pop_front()) else {
                    break;
                };
                self.poll_task(slot, generation);
            }
            // Sleep only with nothing to run, here or handed over.
            let idle = QUEUE.with(|q| q.borrow().is_empty()) && {
                self.shared.asleep.store(true, Ordering::SeqCst);
                !self.shared.pending.load(Ordering::SeqCst)
            };
            let timeout = if idle { None } else { Some(Duration::ZERO) };
            let polled = self.poll.poll(&mut events, timeout);
            self.shared.asleep.store(false, Ordering::SeqCst);
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Not seen in practice: epoll_wait fails only on a
                    // bad descriptor or buffer. Ending the loop drops its
                    // connections, which their peers see as closed.
                    tracing::error!("event loop: epoll failed, its connections end: {e}");
                    break;
                }
            }
            dispatch(&events);
        }
        self.shared.inbox().stopped = true;
        // Dropped here, on the loop's thread, inside its runtime.
        for slot in self.tasks.drain() {
            drop_task(slot.task);
        }
        // What was handed over meanwhile, dropped outside the lock.
        let rest = std::mem::replace(
            &mut *self.shared.inbox(),
            Inbox {
                stopped: true,
                ..Inbox::default()
            },
        );
        drop(rest);
        SOCKETS.with(|s| s.borrow_mut().clear());
        QUEUE.with(|q| q.borrow_mut().clear());
        CURRENT.with(|c| *c.borrow_mut() = None);
    }

    /// Queues what other threads handed over; leaves `inbox` empty.
    fn take(&mut self, inbox: &mut Inbox) {
        for slot in inbox.closed.drain(..) {
            SOCKETS.with(|s| s.borrow_mut().try_remove(slot));
        }
        QUEUE.with(|q| q.borrow_mut().extend(inbox.woken.drain(..)));
        for task in inbox.spawned.drain(..) {
            let added = self.add(task);
            QUEUE.with(|q| q.borrow_mut().push_back(added));
        }
    }

    fn add(&mut self, task: Task) -> (usize, u64) {
        self.generation += 1;
        let state = Arc::new(TaskWaker {
            slot: self.tasks.vacant_key(),
            generation: self.generation,
            queued: AtomicBool::new(true),
            shared: self.shared.clone(),
        });
        let slot = self.tasks.insert(Slot {
            task,
            waker: Waker::from(state.clone()),
            state,
        });
        (slot, self.generation)
    }

    fn poll_task(&mut self, slot: usize, generation: u64) {
        let Some(entry) = self.tasks.get_mut(slot) else {
            return;
        };
        if entry.state.generation != generation {
            // A wake for the task that had the slot before.
            return;
        }
        entry.state.queued.store(false, Ordering::Release);
        LEFT.with(|l| l.set(BUDGET));
        let mut cx = Context::from_waker(&entry.waker);
        let task = entry.task.as_mut();
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| task.poll(&mut cx)));
        let done = match polled {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(_) => {
                tracing::error!("event loop: a task panicked; it is dropped");
                true
            }
        };
        if done && let Some(slot) = self.tasks.try_remove(slot) {
            drop_task(slot.task);
        }
    }
}

/// Drops a finished (or stopped) task; a panic in its drop is logged.
fn drop_task(task: Task) {
    if std::panic::catch_unwind(AssertUnwindSafe(move || drop(task))).is_err() {
        tracing::error!("event loop: a task panicked as it was dropped");
    }
}

/// Sets the readiness the events report and wakes the tasks waiting on it
/// (on this thread: a socket's waker is its task's).
fn dispatch(events: &Events) {
    SOCKETS.with(|s| {
        let sockets = s.borrow();
        for e in events.iter() {
            let Some(r) = sockets.get(e.token().0) else {
                continue;
            };
            let closed = e.is_read_closed() || e.is_error();
            if closed {
                // For good: the close came with the edge that said so.
                r.read_closed.store(true, Ordering::Release);
            }
            if closed || e.is_readable() {
                r.readable.store(true, Ordering::Release);
                r.reader.wake();
            }
            if e.is_writable() || e.is_write_closed() || e.is_error() {
                r.writable.store(true, Ordering::Release);
                r.writer.wake();
            }
        }
    });
}

/// Takes one read or write from the polled task's budget; with none left,
/// the task is queued again and the caller returns pending.
fn take_budget(cx: &Context<'_>) -> bool {
    LEFT.with(|l| match l.get() {
        0 => {
            cx.waker().wake_by_ref();
            false
        }
        n => {
            l.set(n - 1);
            true
        }
    })
}

/// The calling thread runs a loop: a socket registered now is its.
pub(crate) fn on_a_loop() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// A socket's readiness, set by the loop's events.
#[derive(Default)]
struct Readiness {
    readable: AtomicBool,
    /// The peer closed (or the socket failed): readable until dropped. A
    /// short read does not mean the rest was seen: data and the close can
    /// come with one edge, and no other follows.
    read_closed: AtomicBool,
    writable: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// A TCP connection registered with the loop it was made on.
pub(crate) struct LoopStream {
    io: mio::net::TcpStream,
    slot: usize,
    readiness: Arc<Readiness>,
    shared: Arc<Shared>,
}

impl LoopStream {
    /// Registers `socket` with the loop running this thread; an error off
    /// a loop.
    pub(crate) fn register(socket: std::net::TcpStream) -> io::Result<LoopStream> {
        let Some(shared) = CURRENT.with(|c| c.borrow().clone()) else {
            return Err(io::Error::other("not on an event loop"));
        };
        socket.set_nonblocking(true)?;
        let mut io = mio::net::TcpStream::from_std(socket);
        // Taken as ready until a call says otherwise: a socket accepted
        // with bytes waiting needs no event first.
        let readiness = Arc::new(Readiness {
            readable: AtomicBool::new(true),
            writable: AtomicBool::new(true),
            ..Readiness::default()
        });
        let slot = SOCKETS.with(|s| s.borrow_mut().insert(readiness.clone()));
        if let Err(e) = shared.registry.register(
            &mut io,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            SOCKETS.with(|s| s.borrow_mut().try_remove(slot));
            return Err(e);
        }
        Ok(LoopStream {
            io,
            slot,
            readiness,
            shared,
        })
    }

    /// Runs `op` once the socket is readable (`write`: writable). The
    /// flag is cleared when `op` would block, or says it emptied the socket
    /// (a short read: a later byte brings an edge) and the peer has not
    /// closed; then the task waits for the next event.
    fn poll_io<R>(
        &self,
        cx: &Context<'_>,
        write: bool,
        mut op: impl FnMut(&mio::net::TcpStream) -> io::Result<(R, bool)>,
    ) -> Poll<io::Result<R>> {
        if !take_budget(cx) {
            return Poll::Pending;
        }
        let (flag, waiter) = if write {
            (&self.readiness.writable, &self.readiness.writer)
        } else {
            (&self.readiness.readable, &self.readiness.reader)
        };
        loop {
            if !flag.load(Ordering::Acquire) {
                // Events are set on this thread, between polls: none can
                // come before the waker is in place.
                waiter.register(cx.waker());
                return Poll::Pending;
            }
            match op(&self.io) {
                Ok((r, drained)) => {
                    if drained && !self.readiness.read_closed.load(Ordering::Acquire) {
                        flag.store(false, Ordering::Release);
                    }
                    return Poll::Ready(Ok(r));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    flag.store(false, Ordering::Release);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// A write from any thread, outside every task's budget (the
    /// publisher's turn writing a push target's socket on another loop):
    /// `op` on the socket. A `WouldBlock` clears the writable flag on the
    /// socket's own loop only: there no event can come between the write
    /// and the clear, elsewhere one could, and be lost. A flag left set
    /// costs the socket's task one more write that would block, on its
    /// loop, which clears it.
    pub(crate) fn write_from_any<R>(
        &self,
        op: impl FnOnce(&mio::net::TcpStream) -> io::Result<R>,
    ) -> io::Result<R> {
        let r = op(&self.io);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) && self.shared.is_current()
        {
            self.readiness.writable.store(false, Ordering::Release);
        }
        r
    }

    /// Ready while the socket is taken as writable; else the task waits
    /// for the next writable edge. On the socket's loop only.
    pub(crate) fn poll_writable(&self, cx: &Context<'_>) -> Poll<()> {
        if self.readiness.writable.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.readiness.writer.register(cx.waker());
        Poll::Pending
    }

    /// [`AsyncRead::poll_read`] through a shared reference.
    pub(crate) fn poll_read_ref(
        &self,
        cx: &Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = std::task::ready!(self.poll_io(cx, false, |mut io| {
            let unfilled = buf.initialize_unfilled();
            let want = unfilled.len();
            let n = io.read(unfilled)?;
            // A short read emptied the socket: a later byte brings an event.
            Ok((n, n > 0 && n < want))
        }))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }

    /// [`AsyncWrite::poll_write`] through a shared reference.
    pub(crate) fn poll_write_ref(&self, cx: &Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_io(cx, true, |mut io| Ok((io.write(buf)?, false)))
    }

    /// Sends FIN (nothing if the connection is gone already).
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self.io.shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for LoopStream {
    fn drop(&mut self) {
        let _ = self.shared.registry.deregister(&mut self.io);
        // On its loop, freed now; elsewhere (or from inside a wake, with
        // the sockets borrowed), at the loop's next turn.
        let freed = self.shared.is_current()
            && SOCKETS.with(|s| {
                s.try_borrow_mut()
                    .map(|mut s| s.try_remove(self.slot))
                    .is_ok()
            });
        if !freed {
            let slot = self.slot;
            self.shared.hand(|i| i.closed.push(slot));
        }
    }
}

impl AsyncRead for LoopStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_read_ref(cx, buf)
    }
}

impl AsyncWrite for LoopStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_ref(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, true, |mut io| Ok((io.write_vectored(bufs)?, false)))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

/// Sockets registered on this thread's loop (tests).
#[cfg(test)]
pub(crate) fn sockets_here() -> usize {
    SOCKETS.with(|s| s.borrow().len())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    fn a_loop() -> Remote {
        start(
            "test-loop".into(),
            tokio::runtime::Handle::current(),
            crate::ticks::mark_loop_thread,
        )
        .unwrap()
    }

    /// A connected pair: the client's end here, the server's as a std
    /// socket to register on a loop.
    async fn pair(listener: &TcpListener) -> (TcpStream, std::net::TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server.into_std().unwrap())
    }

    /// Serves `socket` on `remote`: each read is answered with its length.
    fn echo_lengths(remote: &Remote, socket: std::net::TcpStream) {
        remote.spawn(async move {
            let mut s = LoopStream::register(socket).unwrap();
            let mut buf = [0u8; 256];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&[n as u8]).await.is_err() {
                    break;
                }
            }
        });
    }

    async fn ask(client: &mut TcpStream) -> u8 {
        client.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 1];
        crate::ticks::timeout(DEADLINE, client.read_exact(&mut got))
            .await
            .expect("an answer in time")
            .unwrap();
        got[0]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publisher_that_never_stops_sending_does_not_hold_its_loop() {
        let remote = a_loop();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // A reader that never waits for anything but its socket, fed
        // faster than it reads (a byte a read): every read is ready.
        let (mut flood, socket) = pair(&listener).await;
        let (read_tx, read_rx) = oneshot::channel::<()>();
        remote.spawn(async move {
            let mut s = LoopStream::register(socket).unwrap();
            let mut read_tx = Some(read_tx);
            let mut byte = [0u8; 1];
            while let Ok(1) = s.read(&mut byte).await {
                if let Some(tx) = read_tx.take() {
                    let _ = tx.send(());
                }
            }
        });
        let flooding = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            while flood.write_all(&chunk).await.is_ok() {}
        });
        // The flood is being read before the other connection asks.
        read_rx.await.unwrap();
        let (mut client, socket) = pair(&listener).await;
        echo_lengths(&remote, socket);
        for _ in 0..20 {
            assert_eq!(ask(&mut client).await, 3);
        }
        flooding.abort();
        remote.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_that_comes_with_the_last_bytes_is_seen() {
        // The bytes and the close arrive before the loop looks, and one
        // edge reports both: the read of the bytes is short, and must not
        // be taken for "nothing more to come".
        let remote = a_loop();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut client, socket) = pair(&listener).await;
        // The same socket, watched by an epoll of the test's own.
        let mut probe = mio::net::TcpStream::from_std(socket.try_clone().unwrap());
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (seen_tx, seen_rx) = oneshot::channel::<Vec<u8>>();
        remote.spawn(async move {
            let mut s = LoopStream::register(socket).unwrap();
            let _ = go_rx.await;
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            let _ = seen_tx.send(got);
        });
        client.write_all(b"last words").await.unwrap();
        drop(client);
        // Woken only once the close is there: the loop's next look at the
        // events sees the bytes and the close in one.
        tokio::task::spawn_blocking(move || {
            let mut poll = mio::Poll::new().unwrap();
            poll.registry()
                .register(&mut probe, Token(0), Interest::READABLE)
                .unwrap();
            let mut events = Events::with_capacity(4);
            let deadline = Instant::now() + DEADLINE;
            while !events.iter().any(|e| e.is_read_closed()) {
                assert!(Instant::now() < deadline, "the close never came");
                poll.poll(&mut events, Some(Duration::from_millis(100)))
                    .unwrap();
            }
        })
        .await
        .unwrap();
        go_tx.send(()).unwrap();
        let got = crate::ticks::timeout(DEADLINE, seen_rx)
            .await
            .expect("the close is seen")
            .unwrap();
        assert_eq!(got, b"last words");
        remote.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_that_panics_is_dropped_and_the_loop_goes_on() {
        let remote = a_loop();
        let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
        remote.spawn(async move {
            let _guard = dropped_tx;
            // Pending once, so the panic is in a later poll.
            tokio::task::yield_now().await;
            panic!("a task's bug");
        });
        // Its guard was dropped (the sender is gone unsent).
        let dropped = crate::ticks::timeout(DEADLINE, dropped_rx).await;
        assert!(matches!(dropped, Ok(Err(_))), "{dropped:?}");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut client, socket) = pair(&listener).await;
        echo_lengths(&remote, socket);
        assert_eq!(ask(&mut client).await, 3);
        remote.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_from_other_threads_are_never_lost() {
        // Round trips between a task on the loop and one here: each leg is
        // a wake from the other thread, many of them while the loop sleeps.
        let remote = a_loop();
        let (to_loop, mut on_loop) = mpsc::channel::<u32>(1);
        let (to_here, mut here) = mpsc::channel::<u32>(1);
        remote.spawn(async move {
            while let Some(n) = on_loop.recv().await {
                if to_here.send(n + 1).await.is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        for i in 0..20_000u32 {
            to_loop.send(i).await.unwrap();
            let back = crate::ticks::timeout(DEADLINE, here.recv())
                .await
                .unwrap_or_else(|_| panic!("round trip {i} lost after {:?}", start.elapsed()));
            assert_eq!(back, Some(i + 1));
        }
        remote.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sockets_give_their_slots_back_and_stopping_ends_the_loops_tasks() {
        let remote = a_loop();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut clients = Vec::new();
        for _ in 0..3 {
            let (mut client, socket) = pair(&listener).await;
            echo_lengths(&remote, socket);
            assert_eq!(ask(&mut client).await, 3);
            clients.push(client);
        }
        let count = || {
            let (tx, rx) = oneshot::channel();
            remote.spawn(async move {
                let _ = tx.send(sockets_here());
            });
            rx
        };
        assert_eq!(count().await.unwrap(), 3);
        // Closed by the clients: the servers end, their sockets are freed.
        clients.truncate(1);
        let deadline = Instant::now() + DEADLINE;
        while count().await.unwrap() != 1 {
            assert!(Instant::now() < deadline, "sockets not freed");
            crate::ticks::sleep(Duration::from_millis(10)).await;
        }
        // Off a loop, no socket can be registered.
        let (_c, socket) = pair(&listener).await;
        assert!(LoopStream::register(socket).is_err());
        // Stopped: the last server is dropped and its socket closed.
        remote.stop();
        let mut rest = Vec::new();
        let n = crate::ticks::timeout(DEADLINE, clients[0].read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // A task handed to a stopped loop is dropped at once.
        let (tx, rx) = oneshot::channel::<()>();
        remote.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        assert!(rx.await.is_err());
    }
}
