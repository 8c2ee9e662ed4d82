//! Timing a call in this process: the mean over many calls after a warm-up.

use std::time::Instant;

/// Microseconds a call of `f`, over `n` calls after `n / 10` to warm up.
pub fn per_call_us(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}
