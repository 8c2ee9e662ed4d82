//! Latency through a mix, per picture: from an anchor's frame arriving to
//! the composite that first shows it leaving the encoder, split into the
//! jitter buffer (arrival to release), the wait for the output clock
//! (release, decode, the next tick) and compose + encode (the tick to the
//! encoder's output). Pure: instants are passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Pictures remembered: about half a minute of two anchors at 30 fps.
pub(crate) const WINDOW: usize = 2048;

/// One picture's way through, as offsets from its arrival.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Split {
    pub total: Duration,
    pub jitter: Duration,
    pub encode: Duration,
}

impl Split {
    /// `arrived` at the mix, `released` by its jitter buffer, its tick began
    /// at `tick`, and the encoder gave it out at `out`.
    pub(crate) fn new(arrived: Instant, released: Instant, tick: Instant, out: Instant) -> Split {
        Split {
            total: out.saturating_duration_since(arrived),
            jitter: released.saturating_duration_since(arrived),
            encode: out.saturating_duration_since(tick),
        }
    }
}

/// Quantiles over the window, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Medians of the parts: jitter buffer, then compose + encode; the rest
    /// of `p50_ms` is the wait for the output clock (and the decode).
    pub jitter_p50_ms: f64,
    pub encode_p50_ms: f64,
    pub pictures: usize,
}

#[derive(Debug, Default)]
pub(crate) struct LatencyWindow {
    samples: VecDeque<Split>,
}

impl LatencyWindow {
    pub(crate) fn push(&mut self, s: Split) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub(crate) fn summary(&self) -> Option<LatencySummary> {
        if self.samples.is_empty() {
            return None;
        }
        let q = |f: fn(&Split) -> Duration, p: f64| {
            let mut v: Vec<Duration> = self.samples.iter().map(f).collect();
            v.sort_unstable();
            // Nearest rank.
            let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1000.0
        };
        Some(LatencySummary {
            p50_ms: q(|s| s.total, 0.50),
            p99_ms: q(|s| s.total, 0.99),
            jitter_p50_ms: q(|s| s.jitter, 0.50),
            encode_p50_ms: q(|s| s.encode, 0.50),
            pictures: self.samples.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank_over_the_last_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = LatencyWindow::default();
        assert_eq!(w.summary(), None);
        for i in 1..=100u64 {
            w.push(Split::new(t0, t0 + ms(10), t0 + ms(i - 1), t0 + ms(i)));
        }
        let s = w.summary().unwrap();
        assert_eq!((s.p50_ms, s.p99_ms), (50.0, 99.0));
        assert_eq!(s.jitter_p50_ms, 10.0);
        assert_eq!(s.encode_p50_ms, 1.0);
        for _ in 0..WINDOW {
            w.push(Split::new(t0, t0, t0, t0 + ms(5)));
        }
        let s = w.summary().unwrap();
        assert_eq!((s.p50_ms, s.p99_ms, s.pictures), (5.0, 5.0, WINDOW));
    }

    #[test]
    fn instants_out_of_order_count_as_zero() {
        let t0 = Instant::now();
        let s = Split::new(t0 + Duration::from_millis(3), t0, t0, t0);
        assert_eq!(s.total, Duration::ZERO);
        assert_eq!(s.jitter, Duration::ZERO);
    }
}
