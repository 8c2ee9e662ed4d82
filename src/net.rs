//! Admission of strangers' TCP connections: a cap per peer address and in
//! total, shared by the RTMP and HTTP listeners.
//!
//! A listener asks [`ConnLimiter::admit`] for every accepted socket; the
//! [`ConnGuard`] it returns gives the place back when the connection ends.
//! A refused socket is closed at once by the listener. Refusals are logged
//! at most once a second per listener, with how many there were, so a flood
//! cannot flood the log too. No I/O here: the log line's clock is an argument.
//!
//! The addresses of the other nodes of a cluster are not capped per address
//! (only in total): a node forwarding a thousand publishers or sockets to
//! the room's owner is not a stranger holding a thousand connections.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The other cluster nodes' addresses (empty on a single node).
static CLUSTER_PEERS: RwLock<Option<HashSet<IpAddr>>> = RwLock::new(None);

/// Sets the addresses of the cluster's other live nodes (the cluster shell
/// refreshes them from the node registry).
pub(crate) fn set_cluster_peers(peers: HashSet<IpAddr>) {
    *CLUSTER_PEERS.write().unwrap_or_else(|e| e.into_inner()) = Some(peers);
}

fn is_cluster_peer(ip: &IpAddr) -> bool {
    CLUSTER_PEERS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|p| p.contains(ip))
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The listener holds `max_connections` already.
    Total(usize),
    /// This address holds `max_connections_per_ip` already.
    PerIp(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Total(n) => write!(f, "{n} connections open in total (max_connections)"),
            Refusal::PerIp(n) => write!(
                f,
                "{n} connections open from this address (max_connections_per_ip)"
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One log line a second at most for a repeated event, counting the others.
#[derive(Debug, Default)]
pub(crate) struct RateLog(Mutex<(u64, Option<Instant>)>);

impl RateLog {
    /// Counts an event at `now`; `Some(n)` when a line should be written
    /// now, for the `n` events since the last one.
    pub(crate) fn hit(&self, now: Instant) -> Option<u64> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (unlogged, logged_at) = &mut *g;
        *unlogged += 1;
        if logged_at.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return None;
        }
        *logged_at = Some(now);
        Some(std::mem::take(unlogged))
    }
}

/// A rate limit: `rate` events a second on average, bursts of `burst`.
/// Pure: time is an argument.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: None,
        }
    }

    /// Takes one event at `now`; `false` when it is over the limit.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connection caps of one listener.
#[derive(Debug, Clone)]
pub(crate) struct ConnLimiter {
    name: &'static str,
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
    refusals: Arc<RateLog>,
}

/// A connection's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnLimiter {
    /// `name` is the listener's, for log lines ("rtmp", "http").
    pub(crate) fn new(name: &'static str, max_total: usize, max_per_ip: usize) -> Self {
        ConnLimiter {
            name,
            max_total,
            max_per_ip,
            counts: Arc::default(),
            refusals: Arc::default(),
        }
    }

    /// Takes a place for a connection from `ip`, or says why not. A refusal
    /// is logged (at most one line a second, counting the others) as of `now`.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<ConnGuard, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        let refusal = if c.total >= self.max_total {
            Some(Refusal::Total(self.max_total))
        } else if from_ip >= self.max_per_ip && !is_cluster_peer(&ip) {
            Some(Refusal::PerIp(self.max_per_ip))
        } else {
            None
        };
        if let Some(why) = refusal {
            drop(c);
            crate::metrics::metrics().limit_hit(
                self.name,
                match why {
                    Refusal::Total(_) => "connections",
                    Refusal::PerIp(_) => "connections_per_ip",
                },
            );
            if let Some(refused) = self.refusals.hit(now) {
                tracing::warn!(listener = self.name, peer = %ip, refused, "connection refused: {why}");
            }
            return Err(why);
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        Ok(ConnGuard {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_bucket_passes_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 20);
        assert_eq!((0..25).filter(|_| b.take(t0)).count(), 20);
        // 100 ms later: one more (10 a second), not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 20);
        // Steady at the rate: every event passes.
        let mut t = t2;
        for _ in 0..100 {
            t += Duration::from_millis(100);
            assert!(b.take(t));
        }
        // A clock that goes back takes nothing and gives nothing.
        assert!(!b.take(t0) || b.take(t));
    }

    #[test]
    fn caps_per_address_and_in_total_and_places_come_back() {
        let l = ConnLimiter::new("test", 3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let now = Instant::now();
        let a1 = l.admit(a, now).unwrap();
        let _a2 = l.admit(a, now).unwrap();
        assert_eq!(l.admit(a, now).unwrap_err(), Refusal::PerIp(2));
        let b1 = l.admit(b, now).unwrap();
        assert_eq!(l.admit(b, now).unwrap_err(), Refusal::Total(3));
        assert_eq!(l.open(), 3);
        drop(a1);
        let _a3 = l.admit(a, now).unwrap();
        drop(b1);
        assert_eq!(l.open(), 2);
        assert!(!l.counts.lock().unwrap().per_ip.contains_key(&b));
    }

    #[test]
    fn cluster_peers_are_capped_in_total_only() {
        let l = ConnLimiter::new("test", 5, 1);
        let peer: IpAddr = [10, 9, 9, 9].into();
        let stranger: IpAddr = [10, 9, 9, 8].into();
        let now = Instant::now();
        set_cluster_peers([peer].into());
        let mut held: Vec<ConnGuard> = (0..3).map(|_| l.admit(peer, now).unwrap()).collect();
        held.push(l.admit(stranger, now).unwrap());
        assert_eq!(l.admit(stranger, now).unwrap_err(), Refusal::PerIp(1));
        held.push(l.admit(peer, now).unwrap());
        assert_eq!(l.admit(peer, now).unwrap_err(), Refusal::Total(5));
    }

    #[test]
    fn refusals_are_counted_into_one_log_line_a_second() {
        let l = ConnLimiter::new("test", 0, 0);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.admit(ip, t0 + Duration::from_millis(i)).is_err());
        }
        // The first was logged; four wait for the next line, which counts them.
        assert_eq!(l.refusals.0.lock().unwrap().0, 4);
        assert_eq!(l.refusals.hit(t0 + Duration::from_secs(1)), Some(5));
        assert_eq!(l.refusals.hit(t0 + Duration::from_millis(1500)), None);
    }
}
