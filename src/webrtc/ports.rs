//! UDP ports of the configured range, one per WebRTC session.
//!
//! A port is leased while its session lives; a free port is one no session
//! of ours holds and that the system lets us bind right now.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub(crate) struct PortPool {
    start: u16,
    end: u16,
    state: Arc<Mutex<State>>,
}

struct State {
    used: HashSet<u16>,
    next: u16,
}

/// A port held by a session; returned to the pool when dropped.
pub(crate) struct PortLease {
    port: u16,
    pool: PortPool,
}

impl PortLease {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.lock().used.remove(&self.port);
    }
}

impl PortPool {
    pub(crate) fn new(start: u16, end: u16) -> PortPool {
        PortPool {
            start,
            end,
            state: Arc::new(Mutex::new(State {
                used: HashSet::new(),
                next: start,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next free port after the last one handed out (so a port just
    /// released is not reused at once), or `None` when the range is full.
    pub(crate) fn take(&self) -> Option<PortLease> {
        let mut st = self.lock();
        let count = u32::from(self.end - self.start) + 1;
        for _ in 0..count {
            let p = st.next;
            st.next = if p >= self.end { self.start } else { p + 1 };
            if st.used.contains(&p) {
                continue;
            }
            let free = ["0.0.0.0", "127.0.0.1"]
                .iter()
                .all(|ip| std::net::UdpSocket::bind((*ip, p)).is_ok());
            if free {
                st.used.insert(p);
                return Some(PortLease {
                    port: p,
                    pool: self.clone(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_and_come_back() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = s.local_addr().unwrap().port();
        drop(s);
        // A small range somewhere near a port that was free a moment ago.
        let (start, end) = (
            base.saturating_sub(1).max(1024),
            base.saturating_sub(1).max(1024) + 2,
        );
        let pool = PortPool::new(start, end);
        let leases: Vec<PortLease> = std::iter::from_fn(|| pool.take()).take(3).collect();
        let mut ports: Vec<u16> = leases.iter().map(PortLease::port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), leases.len());
        assert!(ports.iter().all(|p| (start..=end).contains(p)));
        let n = leases.len();
        drop(leases);
        assert_eq!(std::iter::from_fn(|| pool.take()).take(3).count(), n);
    }
}
