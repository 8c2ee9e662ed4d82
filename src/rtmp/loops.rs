//! RTMP connections on event loops of their own.
//!
//! A bypass relay does its work in its publisher's turn: the connection
//! reads a message, the relay chunks it and writes it to its origins
//! (`rtmp::direct`). On the shared multi-threaded runtime every such turn
//! also pays for the scheduler's balancing: a woken task may wake a parked
//! worker to steal it, and the workers meet on futexes; and on any tokio
//! runtime, for its per-wake bookkeeping. nginx-rtmp pays for none of that:
//! one process, one epoll loop. Here each RTMP connection is moved onto
//! one of a few loops of our own ([`event_loop`]: a thread, its epoll and a
//! run queue, no timers, no stealing), the one holding the fewest
//! connections; everything else (HTTP, WebRTC, the room engine) stays on
//! the shared runtime. A connection's socket is registered with its loop's
//! epoll, so its reads wake that thread only.
//!
//! What a push target does runs on a loop too ([`Loops::spawn_task`]);
//! what a loop's task spawns with tokio runs on the shared runtime. The
//! loops' timers are the keeper's (`crate::ticks`); without a keeper there
//! are no loops. The loops stop when the [`Stop`] that [`Loops::start`]
//! returns is dropped: their tasks are dropped, as the shared runtime's are
//! at shutdown. ([`Loops`] itself is held by every connection, so it cannot
//! be what stops them.)

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;

use super::event_loop::{self, LoopStream, Remote};

struct Loop {
    remote: Remote,
    /// Connections and tasks running on it.
    load: Arc<AtomicUsize>,
}

/// The RTMP loops; with none, connections run on the runtime that accepts
/// them. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Loops {
    loops: Arc<[Loop]>,
}

/// Stops the loops when dropped.
pub(crate) struct Stop {
    remotes: Vec<Remote>,
}

impl Drop for Stop {
    fn drop(&mut self) {
        for r in &self.remotes {
            r.stop();
        }
    }
}

/// Gives a connection's or task's place on its loop back when it ends.
struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Loops {
    /// Starts `n` loops, each a thread named `rtmp-loop-<i>`, inside the
    /// current runtime (which their tasks' tokio calls use), under
    /// `SCHED_BATCH` if `batch` (`runtime.rtmp_batch`); they run until the
    /// [`Stop`] is dropped. None without a runtime or a timer keeper.
    pub(crate) fn start(n: usize, batch: bool) -> std::io::Result<(Loops, Stop)> {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(h) => h,
            Err(_) if n == 0 => return Ok((Loops::none(), Stop { remotes: vec![] })),
            Err(e) => return Err(std::io::Error::other(e)),
        };
        if n > 0 && !crate::ticks::keeper_runs() {
            tracing::warn!("RTMP connections share the runtime: no timer keeper for their loops");
            return Ok((Loops::none(), Stop { remotes: vec![] }));
        }
        let mut loops = Vec::with_capacity(n);
        let mut remotes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("rtmp-loop-{i}");
            let on_start = move || {
                crate::ticks::mark_loop_thread();
                if let Some(Err(e)) = batch.then(crate::media::run_as_batch) {
                    tracing::warn!(error = %e, "an RTMP loop runs under the default scheduling policy: SCHED_BATCH was refused");
                }
            };
            let remote = event_loop::start(name, runtime.clone(), on_start)?;
            loops.push(Loop {
                remote: remote.clone(),
                load: Arc::new(AtomicUsize::new(0)),
            });
            remotes.push(remote);
        }
        Ok((
            Loops {
                loops: loops.into(),
            },
            Stop { remotes },
        ))
    }

    /// No loops: connections run on the runtime that accepts them.
    pub(crate) fn none() -> Loops {
        Loops {
            loops: Arc::new([]),
        }
    }

    /// How many loops there are.
    pub(crate) fn len(&self) -> usize {
        self.loops.len()
    }

    /// Connections and tasks running on each loop, in order (the metrics'
    /// `rtmp_loop_tasks`).
    pub(crate) fn loads(&self) -> Vec<usize> {
        self.loops
            .iter()
            .map(|l| l.load.load(Ordering::Relaxed))
            .collect()
    }

    /// The loop holding the fewest connections and tasks, with its place
    /// taken; none without loops.
    fn least_loaded(&self) -> Option<(&Remote, Load)> {
        let chosen = self
            .loops
            .iter()
            .min_by_key(|l| l.load.load(Ordering::Relaxed))?;
        chosen.load.fetch_add(1, Ordering::Relaxed);
        Some((&chosen.remote, Load(chosen.load.clone())))
    }

    /// Runs `task` (a push target's) on the least loaded loop, or on the
    /// current runtime without loops.
    pub(crate) fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.least_loaded() {
            Some((remote, load)) => {
                remote.spawn(async move {
                    let _load = load;
                    task.await;
                });
            }
            None => {
                tokio::spawn(task);
            }
        }
    }

    /// Runs `serve` on the accepted `socket` to its end: on the loop holding
    /// the fewest connections (the socket moved onto that loop's epoll), or
    /// here, on the current runtime, when there are no loops.
    pub(crate) fn spawn<F, Fut>(&self, socket: TcpStream, serve: F)
    where
        F: FnOnce(crate::tls::Conn) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.loops.is_empty() {
            tokio::spawn(serve(Box::new(socket)));
            return;
        }
        let socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("rtmp: could not move a connection onto its loop: {e}");
                return;
            }
        };
        self.spawn_task(async move {
            // Registered with this loop's epoll, not the acceptor's.
            match LoopStream::register(socket) {
                Ok(socket) => serve(Box::new(socket)).await,
                Err(e) => tracing::warn!("rtmp: could not register a connection on its loop: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    /// A connection served by `loops` that answers each read with the thread
    /// it runs on; returns the client's end.
    async fn served(loops: &Loops, listener: &TcpListener) -> TcpStream {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        loops.spawn(socket, |mut s| async move {
            let mut buf = [0u8; 16];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let name = std::thread::current().name().unwrap_or("").to_owned();
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        client
    }

    async fn thread_of(client: &mut TcpStream) -> String {
        client.write_all(b"?").await.unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while got.last() != Some(&b'\n') {
            let n = crate::ticks::timeout(Duration::from_secs(5), client.read(&mut byte))
                .await
                .expect("an answer")
                .unwrap();
            assert_eq!(n, 1, "the connection ended");
            got.push(byte[0]);
        }
        String::from_utf8(got).unwrap().trim().to_owned()
    }

    async fn wait_for_loads(loops: &Loops, want: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while loops.loads() != want {
            assert!(Instant::now() < deadline, "loads {:?}", loops.loads());
            crate::ticks::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_run_on_the_least_loaded_loop_and_free_their_place() {
        let (loops, _stop) = Loops::start(2, false).unwrap();
        assert_eq!(loops.len(), 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = served(&loops, &listener).await;
        let mut b = served(&loops, &listener).await;
        let mut c = served(&loops, &listener).await;
        assert_eq!(thread_of(&mut a).await, "rtmp-loop-0");
        assert_eq!(thread_of(&mut b).await, "rtmp-loop-1");
        assert_eq!(thread_of(&mut c).await, "rtmp-loop-0");
        assert_eq!(loops.loads(), [2, 1]);
        // Two end on loop 0: the next connection goes there.
        drop(a);
        drop(c);
        wait_for_loads(&loops, &[0, 1]).await;
        let mut d = served(&loops, &listener).await;
        assert_eq!(thread_of(&mut d).await, "rtmp-loop-0");
        assert_eq!(thread_of(&mut b).await, "rtmp-loop-1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_run_on_the_least_loaded_loop_and_count_while_they_run() {
        let (loops, _stop) = Loops::start(2, false).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = served(&loops, &listener).await;
        assert_eq!(thread_of(&mut a).await, "rtmp-loop-0");
        let (name_tx, name_rx) = oneshot::channel();
        let (end_tx, end_rx) = oneshot::channel::<()>();
        loops.spawn_task(async move {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = name_tx.send(name);
            let _ = end_rx.await;
        });
        assert_eq!(name_rx.await.unwrap(), "rtmp-loop-1");
        assert_eq!(loops.loads(), [1, 1]);
        drop(end_tx);
        wait_for_loads(&loops, &[1, 0]).await;
    }

    /// The scheduling policy of the thread that calls this, as the kernel
    /// reports it (`/proc/thread-self/stat`, field 41: 0 normal, 3 batch).
    #[cfg(target_os = "linux")]
    fn own_policy() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the name (in parentheses) start at the third.
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        after_name
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loops_run_as_batch_when_asked() {
        const SCHED_BATCH: u32 = 3;
        let normal = own_policy();
        assert_ne!(
            normal, SCHED_BATCH,
            "the test runs under the default policy"
        );
        for (batch, want) in [(true, SCHED_BATCH), (false, normal)] {
            let (loops, _stop) = Loops::start(1, batch).unwrap();
            let (tx, rx) = oneshot::channel();
            loops.spawn_task(async move {
                let _ = tx.send(own_policy());
            });
            assert_eq!(rx.await.unwrap(), want, "batch: {batch}");
        }
        // The runtime's own threads keep theirs.
        assert_eq!(own_policy(), normal);
    }

    /// Sets up `sleep` (made on the thread that awaits this) and waits it
    /// out; returns the name of the thread that woke it. `None` if no wake
    /// was needed (it had elapsed by its first poll).
    async fn woken_by(sleep: tokio::time::Sleep) -> Option<String> {
        struct Recorder {
            task: std::sync::Mutex<Option<std::task::Waker>>,
            by: std::sync::Mutex<Option<String>>,
        }
        impl std::task::Wake for Recorder {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                *self.by.lock().unwrap() = Some(name);
                if let Some(w) = self.task.lock().unwrap().take() {
                    w.wake();
                }
            }
        }
        let recorder = Arc::new(Recorder {
            task: std::sync::Mutex::new(None),
            by: std::sync::Mutex::new(None),
        });
        let waker = std::task::Waker::from(recorder.clone());
        let mut sleep = std::pin::pin!(sleep);
        std::future::poll_fn(|cx| {
            *recorder.task.lock().unwrap() = Some(cx.waker().clone());
            sleep
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker))
        })
        .await;
        recorder.by.lock().unwrap().take()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timers_made_on_a_loop_are_kept_off_it() {
        let (loops, _stop) = Loops::start(1, false).unwrap();
        let (tx, rx) = oneshot::channel();
        loops.spawn_task(async move {
            // The helpers' fire on the keeper. A slow first poll (a busy
            // machine) needs no wake: try again.
            let mut kept = None;
            for _ in 0..20 {
                let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
                kept = kept.or(woken_by(crate::ticks::sleep_until(soon())).await);
                if kept.is_some() {
                    break;
                }
            }
            // The other helpers work there too (tokio's would panic).
            crate::ticks::sleep(Duration::from_millis(5)).await;
            let mut tick = crate::ticks::interval(Duration::from_millis(5));
            tick.tick().await;
            tick.tick().await;
            crate::ticks::grid_interval(Duration::from_millis(5))
                .tick()
                .await;
            let timed_out =
                crate::ticks::timeout(Duration::from_millis(20), std::future::pending::<()>())
                    .await;
            let _ = tx.send((kept, timed_out.is_err()));
        });
        let (kept, timed_out) = crate::ticks::timeout(Duration::from_secs(30), rx)
            .await
            .expect("the loop's timers end")
            .unwrap();
        assert_eq!(kept.as_deref(), Some("timers"));
        assert!(timed_out, "a timeout made on the loop fires");
        // Off a loop, the helper leaves the timer on the caller's runtime.
        let mut here = None;
        for _ in 0..20 {
            let soon = tokio::time::Instant::now() + Duration::from_millis(50);
            here = woken_by(crate::ticks::sleep_until(soon)).await;
            if here.is_some() {
                break;
            }
        }
        assert_ne!(here.as_deref(), Some("timers"));
        assert!(here.is_some());
    }

    #[tokio::test]
    async fn without_loops_connections_run_here() {
        let loops = Loops::none();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = served(&loops, &listener).await;
        let here = std::thread::current().name().unwrap_or("").to_owned();
        assert_eq!(thread_of(&mut a).await, here);
    }

    #[tokio::test]
    async fn stopping_the_loops_ends_their_connections() {
        let (loops, stop) = Loops::start(1, false).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = served(&loops, &listener).await;
        assert_eq!(thread_of(&mut a).await, "rtmp-loop-0");
        drop(stop);
        let mut rest = Vec::new();
        let n = crate::ticks::timeout(Duration::from_secs(5), a.read_to_end(&mut rest))
            .await
            .expect("the connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
