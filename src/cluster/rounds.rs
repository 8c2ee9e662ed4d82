//! One round at a time per key, with nothing asked for lost: a node resumes
//! a room's stored tasks when it leases the room and again when its scan
//! for orphaned tasks finds the room's; both can ask at once. The second
//! ask joins the round under way, which goes round once more when it ends
//! (the second may know of a task the first read too early to see), instead
//! of starting every task a second time beside the first (refused, logged
//! as a failure, retried later).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// The keys with a round under way, and whether each was asked again.
#[derive(Debug)]
pub(crate) struct Rounds<K> {
    under_way: Mutex<HashMap<K, bool>>,
}

impl<K: Eq + Hash + Clone> Default for Rounds<K> {
    fn default() -> Self {
        Rounds {
            under_way: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Rounds<K> {
    /// A round for `key`, if none is under way; else `None`, and the one
    /// under way is asked to go round again.
    pub(crate) fn begin(&self, key: &K) -> Option<Round<'_, K>> {
        let mut m = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(key) {
            Some(again) => {
                *again = true;
                None
            }
            None => {
                m.insert(key.clone(), false);
                Some(Round {
                    rounds: self,
                    key: key.clone(),
                    ended: false,
                })
            }
        }
    }

    #[cfg(test)]
    fn under_way(&self) -> usize {
        self.under_way.lock().map_or(0, |m| m.len())
    }
}

/// A round under way for one key; dropped (ended or abandoned), the key is
/// free again.
#[derive(Debug)]
pub(crate) struct Round<'r, K: Eq + Hash + Clone> {
    rounds: &'r Rounds<K>,
    key: K,
    /// `again` said no, and freed the key in the same breath.
    ended: bool,
}

impl<K: Eq + Hash + Clone> Round<'_, K> {
    /// Called when a round's work is done: whether it was asked for again
    /// meanwhile (then the caller goes round once more, and is asked this
    /// again after it). When not, the key is free from this moment: an ask
    /// right after starts a round of its own, it is not lost on a round
    /// that is about to end.
    pub(crate) fn again(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let mut m = self
            .rounds
            .under_way
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match m.get_mut(&self.key) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                m.remove(&self.key);
                self.ended = true;
                false
            }
        }
    }
}

impl<K: Eq + Hash + Clone> Drop for Round<'_, K> {
    fn drop(&mut self) {
        if !self.ended {
            let mut m = self
                .rounds
                .under_way
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            m.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_second_ask_joins_the_round_under_way_and_makes_it_go_again() {
        let rounds = Rounds::default();
        let mut round = rounds.begin(&"room").expect("the first ask runs");
        assert!(rounds.begin(&"room").is_none());
        assert!(rounds.begin(&"room").is_none(), "two asks: one more round");
        assert!(rounds.begin(&"other").is_some(), "other keys are not held");
        assert!(round.again());
        assert!(!round.again());
        assert_eq!(rounds.under_way(), 0, "free once it said no");
        let next = rounds.begin(&"room");
        assert!(next.is_some(), "an ask after that runs");
        drop(round);
        assert!(
            rounds.begin(&"room").is_none(),
            "the ended round's drop frees nothing of the next's"
        );
    }

    #[test]
    fn an_abandoned_round_frees_its_key() {
        let rounds = Rounds::default();
        let round = rounds.begin(&1).unwrap();
        assert!(rounds.begin(&1).is_none());
        drop(round); // its task was cancelled mid-round
        assert!(rounds.begin(&1).is_some());
    }

    /// Threads ask for rounds of a few keys. Rounds of a key never overlap,
    /// and every ask is served by a round that began its work after it (its
    /// own, or one the round under way went round again for): each thread
    /// waits for that before it asks again, so a lost ask is a thread
    /// stuck, not a miss covered by someone's later ask.
    #[test]
    fn rounds_never_overlap_and_every_ask_is_served() {
        const KEYS: usize = 2;
        const ASKS: usize = 2_000;
        let rounds = Arc::new(Rounds::default());
        let active: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        // Per key: asks made so far, and how many of them the latest
        // round to begin its work saw.
        let asked: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let served: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (rounds, active, asked, served) = (
                    rounds.clone(),
                    active.clone(),
                    asked.clone(),
                    served.clone(),
                );
                std::thread::spawn(move || {
                    for i in 0..ASKS {
                        let k = (i + t) % KEYS;
                        let mine = asked[k].fetch_add(1, Ordering::SeqCst) + 1;
                        if let Some(mut round) = rounds.begin(&k) {
                            loop {
                                assert_eq!(active[k].fetch_add(1, Ordering::SeqCst), 0, "overlap");
                                served[k]
                                    .fetch_max(asked[k].load(Ordering::SeqCst), Ordering::SeqCst);
                                std::thread::yield_now();
                                active[k].fetch_sub(1, Ordering::SeqCst);
                                if !round.again() {
                                    break;
                                }
                            }
                            // Between a round's last word and its end.
                            std::thread::yield_now();
                        }
                        let deadline =
                            std::time::Instant::now() + std::time::Duration::from_secs(10);
                        while served[k].load(Ordering::SeqCst) < mine {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "ask {mine} of key {k} was never served"
                            );
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(rounds.under_way(), 0);
    }
}
