//! Housekeeping ticks on a shared grid.
//!
//! Every relay task reports its status twice a second, and every mix task
//! five times. Started at their own moments, fifty relays' ticks wake the
//! shared runtime a hundred times a second, each for one task's few
//! microseconds of work, and each wake costs a parked worker thread a
//! futex and two context switches. A [`grid_interval`] ticks at the
//! multiples of its period in wall-clock time instead, so tasks of one
//! period fire in the same millisecond and are run in one wake.
//!
//! Only the phase comes from the wall clock (its milliseconds since the
//! Unix epoch); the ticks themselves are on the runtime's monotonic clock.
//! A wall-clock step moves the phase of tasks started after it, nothing
//! else. No I/O here but the clock read in [`grid_interval`]; the grid
//! itself is [`delay_to_grid`], with time as an argument.

use std::time::Duration;

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

/// An interval of `period` whose ticks fall on the wall clock's multiples
/// of it. Unlike `tokio::time::interval`, its first tick is not at once
/// but at the next multiple (within one period).
pub(crate) fn grid_interval(period: Duration) -> tokio::time::Interval {
    let since_epoch = Duration::from_millis(crate::unix_now_ms());
    interval_from(since_epoch, tokio::time::Instant::now(), period)
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
