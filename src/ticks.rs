//! Housekeeping ticks on a shared grid.
//!
//! Every relay task reports its status once a second, and every mix task
//! five times. Started at their own moments, fifty relays' ticks wake the
//! shared runtime fifty times a second, each for one task's few
//! microseconds of work, and each wake costs a parked worker thread a
//! futex and two context switches. A [`grid_interval`] ticks at the
//! multiples of its period in wall-clock time instead, so tasks of one
//! period fire in the same millisecond and are run in one wake.
//!
//! A timer costs its runtime more than one wake: tokio's timer wheel keeps
//! a deadline more than 64 ms away in a coarser slot and wakes at the
//! slot's start to file it finer, so a 500 ms tick woke its worker twice
//! (`strace` of a relay's workers). Hence one relay status a second, not
//! two, and a push target's liveness checked by one [`Deadline`] at the
//! next multiple of a quarter of the stall timeout ([`next_on_grid`]), not
//! by a tick a second.
//!
//! Only the phase comes from the wall clock (its milliseconds since the
//! Unix epoch); the ticks themselves are on the runtime's monotonic clock.
//! A wall-clock step moves the phase of tasks started after it, nothing
//! else. No I/O here but the clock read in [`grid_interval`] and the
//! keeper's thread (below); the grid itself is [`delay_to_grid`], with
//! time as an argument.
//!
//! The RTMP loops' timers are kept elsewhere. A loop parks once for every
//! message it relays, and when the loops were tokio runtimes each park of
//! one with timers read the clock, looked up the next deadline in its wheel
//! and swept the wheel: about 130 instructions a message with timers in
//! the wheel, and about 500 more with the wheel empty (`cargo bench --bench
//! relay_instructions`). So a loop (`rtmp::event_loop`) has no timers at
//! all, and every timer made on a loop thread is made on the keeper: a
//! runtime with timers only, on a thread of its own for the life of the
//! process (never shut down, so no timer is polled after its driver
//! stopped). A timer firing there wakes its task on its loop.
//!
//! The crate makes every timer through the functions here ([`sleep`],
//! [`sleep_until`], [`timeout`], [`timeout_at`], [`interval`],
//! [`grid_interval`]): `clippy.toml` disallows tokio's everywhere else (on a
//! loop, tokio's would be kept by the shared runtime, whose workers would
//! wake for them). Off a loop they are tokio's. If the keeper cannot start,
//! a warning says so and there are no loops: RTMP connections share the
//! runtime.
#![allow(clippy::disallowed_methods)]

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Timeout;

thread_local! {
    /// This thread is an RTMP loop: its timers go to the keeper.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as an RTMP loop (see the module's notes).
pub(crate) fn mark_loop_thread() {
    ON_LOOP.with(|l| l.set(true));
}

/// The timer keeper, started on first use; none if it could not be.
fn keeper() -> Option<&'static Handle> {
    static KEEPER: OnceLock<Option<Handle>> = OnceLock::new();
    KEEPER.get_or_init(start_keeper).as_ref()
}

/// Starts the keeper's thread, which builds its runtime and runs it for
/// good (so that the runtime is never dropped here: on a loop, inside a
/// task, dropping one panics).
fn start_keeper() -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("timers".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build();
            match rt {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    let started = spawned.and_then(|_| {
        rx.recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread ended")))
    });
    started
        .map_err(|e| tracing::warn!("timers stay on the RTMP loops: no keeper thread: {e}"))
        .ok()
}

/// The keeper runs (starting it if it has not been): an RTMP loop then
/// needs no timers of its own.
pub(crate) fn keeper_runs() -> bool {
    keeper().is_some()
}

/// Runs `make` (which makes a timer) with the keeper's runtime current
/// when called on an RTMP loop; as is elsewhere.
fn on_keeper<R>(make: impl FnOnce() -> R) -> R {
    if ON_LOOP.with(Cell::get)
        && let Some(keeper) = keeper()
    {
        let _keeper = keeper.enter();
        return make();
    }
    make()
}

/// `tokio::time::sleep_until`, kept by the keeper on an RTMP loop.
pub(crate) fn sleep_until(deadline: tokio::time::Instant) -> tokio::time::Sleep {
    on_keeper(|| tokio::time::sleep_until(deadline))
}

/// `tokio::time::sleep`, kept by the keeper on an RTMP loop.
pub(crate) fn sleep(duration: Duration) -> tokio::time::Sleep {
    on_keeper(|| tokio::time::sleep(duration))
}

/// `tokio::time::timeout`, its timer kept by the keeper on an RTMP loop
/// (`future` runs where it is polled).
pub(crate) fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    on_keeper(|| tokio::time::timeout(duration, future))
}

/// `tokio::time::timeout_at`, its timer kept by the keeper on an RTMP
/// loop.
pub(crate) fn timeout_at<F: IntoFuture>(
    deadline: tokio::time::Instant,
    future: F,
) -> Timeout<F::IntoFuture> {
    on_keeper(|| tokio::time::timeout_at(deadline, future))
}

/// `tokio::time::interval`, kept by the keeper on an RTMP loop.
pub(crate) fn interval(period: Duration) -> tokio::time::Interval {
    on_keeper(|| tokio::time::interval(period))
}

/// A task's one long timer beside a hot branch of its `select!` (an RTMP
/// connection's idle check beside its socket's reads): made by
/// [`sleep_until`], and polled only once it has fired. A pending `Sleep`
/// costs about 110 instructions a poll, and a loop that polls it whenever
/// the hot branch goes pending pays that on every message. Once a poll
/// has left the task's waker with the timer, the timer firing both marks
/// it elapsed and wakes the task, so until then a poll is one load.
///
/// The task that polls it must stay the same between [`Deadline::reset`]s
/// (the waker left is that task's), as an `async fn`'s own timer does.
pub(crate) struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// A poll since the last reset left the waker with the timer.
    armed: bool,
}

impl Deadline {
    /// A deadline at `at`.
    pub(crate) fn new(at: tokio::time::Instant) -> Deadline {
        Deadline {
            sleep: Box::pin(sleep_until(at)),
            armed: false,
        }
    }

    /// Moves it to `at`, fired or not.
    pub(crate) fn reset(&mut self, at: tokio::time::Instant) {
        self.sleep.as_mut().reset(at);
        self.armed = false;
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = self.get_mut();
        if me.armed && !me.sleep.is_elapsed() {
            return Poll::Pending;
        }
        let fired = me.sleep.as_mut().poll(cx);
        me.armed = fired.is_pending();
        fired
    }
}

/// How long from `since_epoch` (wall-clock time) to the next multiple of
/// `period`: in `(0, period]`, never zero, so a tick set now is not due
/// at once. A zero period has no grid: zero.
pub(crate) fn delay_to_grid(since_epoch: Duration, period: Duration) -> Duration {
    let period_ns = period.as_nanos();
    if period_ns == 0 {
        return Duration::ZERO;
    }
    let into = since_epoch.as_nanos() % period_ns;
    let left = period_ns - into;
    Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX))
}

/// The next multiple of `period` on the wall clock, as an instant on the
/// runtime's clock: a one-off check on the grid, so that many tasks'
/// checks of one period fire together.
pub(crate) fn next_on_grid(period: Duration) -> tokio::time::Instant {
    let since_epoch = Duration::from_millis(crate::unix_now_ms());
    tokio::time::Instant::now() + delay_to_grid(since_epoch, period)
}

/// An interval of `period` whose ticks fall on the wall clock's multiples
/// of it. Unlike `tokio::time::interval`, its first tick is not at once
/// but at the next multiple (within one period). Kept by the keeper on an
/// RTMP loop.
pub(crate) fn grid_interval(period: Duration) -> tokio::time::Interval {
    let since_epoch = Duration::from_millis(crate::unix_now_ms());
    on_keeper(|| interval_from(since_epoch, tokio::time::Instant::now(), period))
}

/// [`grid_interval`] made at wall-clock time `since_epoch`, which is `now`
/// on the runtime's clock.
fn interval_from(
    since_epoch: Duration,
    now: tokio::time::Instant,
    period: Duration,
) -> tokio::time::Interval {
    let period = period.max(Duration::from_millis(1));
    let mut interval = tokio::time::interval_at(now + delay_to_grid(since_epoch, period), period);
    // A late tick is skipped, not made up in a burst: the next is on the
    // grid again.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn a_deadline_fires_at_its_time_and_again_after_a_reset() {
        use futures_util::poll;
        use tokio::time::Instant;
        let mut deadline = Deadline::new(Instant::now() + Duration::from_millis(50));
        // Each round arms it with a pending poll and leaves it alone: only
        // its firing can wake the task. A round whose first poll came after
        // its deadline (a stalled machine) proves nothing and is tried again.
        let mut rounds = 0;
        for _ in 0..20 {
            let at = Instant::now() + Duration::from_millis(50);
            deadline.reset(at);
            if poll!(&mut deadline).is_ready() {
                continue;
            }
            tokio::time::timeout(Duration::from_secs(10), &mut deadline)
                .await
                .expect("the deadline fires");
            assert!(Instant::now() >= at);
            // Fired, it stays fired until reset.
            assert!(poll!(&mut deadline).is_ready());
            rounds += 1;
            if rounds == 3 {
                break;
            }
        }
        assert_eq!(rounds, 3);
        // Moved while armed, to a later time and then to an earlier one.
        deadline.reset(Instant::now() + Duration::from_secs(3600));
        assert!(poll!(&mut deadline).is_pending());
        assert!(poll!(&mut deadline).is_pending());
        deadline.reset(Instant::now() + Duration::from_millis(10));
        tokio::time::timeout(Duration::from_secs(10), &mut deadline)
            .await
            .expect("the deadline moved earlier fires");
    }

    #[tokio::test]
    async fn a_check_on_the_grid_is_within_one_period() {
        let period = Duration::from_millis(2500);
        let before = tokio::time::Instant::now();
        let at = next_on_grid(period);
        let after = tokio::time::Instant::now();
        assert!(at > before && at <= after + period, "{:?}", at - before);
    }

    #[test]
    fn on_the_grid_waits_a_whole_period() {
        let p = Duration::from_millis(500);
        assert_eq!(delay_to_grid(Duration::from_millis(1_000), p), p);
        assert_eq!(
            delay_to_grid(Duration::from_millis(1_200), p),
            Duration::from_millis(300)
        );
        assert_eq!(
            delay_to_grid(Duration::from_secs(5), Duration::ZERO),
            Duration::ZERO
        );
    }

    proptest! {
        /// The next tick is within one period, lands on a multiple of it,
        /// and tasks set up at different moments share it.
        #[test]
        fn ticks_land_on_multiples_of_the_period(
            a_ns in 0u64..4_000_000_000_000_000_000,
            later_ns in 0u64..2_000_000_000,
            period_ms in 1u64..5_000,
        ) {
            let period = Duration::from_millis(period_ms);
            let a = Duration::from_nanos(a_ns);
            let d = delay_to_grid(a, period);
            prop_assert!(d > Duration::ZERO && d <= period);
            prop_assert_eq!((a + d).as_nanos() % period.as_nanos(), 0);
            // A second task, set up later but before that tick, meets it.
            let b = a + Duration::from_nanos(later_ns);
            if b < a + d {
                prop_assert_eq!(b + delay_to_grid(b, period), a + d);
            }
        }
    }

    /// Two intervals made 70 ms apart first tick together. (Only the
    /// first tick: `tick` gives the time it was due whenever it runs, but
    /// a tick run late on a busy machine moves the next one.)
    #[tokio::test]
    async fn intervals_made_apart_tick_together() {
        let period = Duration::from_millis(200);
        let wall = Duration::from_millis(1_700_000_000_070);
        let t0 = tokio::time::Instant::now();
        let later = Duration::from_millis(70);
        let mut first = interval_from(wall, t0, period);
        let mut second = interval_from(wall + later, t0 + later, period);
        let due = t0 + Duration::from_millis(130);
        assert_eq!(first.tick().await, due);
        assert_eq!(second.tick().await, due);
    }
}
