//! A table of named deadlines: the earliest one is the engine's next wake-up.
//!
//! Setting a timer that exists moves it; cancelling is by name. Pure.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct TimerTable<K: Ord + Hash + Clone> {
    by_deadline: BTreeSet<(Instant, K)>,
    by_name: HashMap<K, Instant>,
}

impl<K: Ord + Hash + Clone> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            by_deadline: BTreeSet::new(),
            by_name: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> TimerTable<K> {
    pub(crate) fn set(&mut self, name: K, at: Instant) {
        self.cancel(&name);
        self.by_deadline.insert((at, name.clone()));
        self.by_name.insert(name, at);
    }

    pub(crate) fn cancel(&mut self, name: &K) {
        if let Some(at) = self.by_name.remove(name) {
            self.by_deadline.remove(&(at, name.clone()));
        }
    }

    pub(crate) fn is_set(&self, name: &K) -> bool {
        self.by_name.contains_key(name)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let (at, _) = self.by_deadline.first()?;
        if *at > now {
            return None;
        }
        let (_, name) = self.by_deadline.pop_first()?;
        self.by_name.remove(&name);
        Some(name)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_reset_moves() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set("a", t0 + Duration::from_secs(5));
        t.set("b", t0 + Duration::from_secs(3));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(3)));
        t.set("b", t0 + Duration::from_secs(9));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(4)), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(10)), Some("a"));
        t.cancel(&"b");
        assert!(t.is_empty());
        assert_eq!(t.pop_due(t0 + Duration::from_secs(100)), None);
    }
}
