//! When the memory the C allocator keeps free goes back to the kernel.
//!
//! The allocator keeps what it frees ([`super::tune_allocator`]), and a
//! burst (two thousand players at once) must not stay resident for good. But
//! handing back all free memory every few seconds (`malloc_trim`) also hands
//! back the pages the steady churn frees and takes again a moment later
//! (groups of pictures, picture buffers), and the kernel faults them in
//! again, zeroed: with fifty relays, bursts of page faults 10 s apart, about
//! 1 % of the relays' CPU (`perf record` of `cargo bench --bench relay`).
//!
//! So free memory goes back only when it has grown by more than [`SLACK`]
//! since its lowest point after the last hand-back: what a burst left, not
//! what the churn cycles. Pure: the caller reads the allocator's free bytes
//! and does the handing back.

/// How far free memory may grow above its low point before it is handed
/// back: less than a burst, and about what the steady churn of a full box
/// frees at once (fifty relays' groups of pictures: about 25 MiB), so that
/// churn is handed back now and then, not at every look. At 64 MiB and at
/// 32 MiB, a thousand WebSockets and then two thousand LL-HLS players
/// leaving (about 20 and 34 MB) stayed resident for good
/// (`tests/load_waves.rs` wants the gateway back within 48 MiB of where it
/// started).
pub(crate) const SLACK: usize = 16 << 20;

/// The low point of free memory since the last hand-back.
#[derive(Debug, Default)]
pub(crate) struct HandBack {
    low: Option<usize>,
}

impl HandBack {
    /// Whether to hand free memory back now, with `free` bytes free in the
    /// allocator. Afterwards that level counts as handed back.
    pub(crate) fn due(&mut self, free: usize) -> bool {
        let low = self.low.map_or(free, |low| low.min(free));
        let due = free - low > SLACK;
        self.low = Some(if due { free } else { low });
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Free memory that moves within a band narrower than the slack (the
        /// steady churn) is never handed back, wherever the band lies.
        #[test]
        fn churn_is_kept(base in 0usize..(1 << 40), moves in prop::collection::vec(0..=SLACK, 1..200)) {
            let mut hand_back = HandBack::default();
            for m in moves {
                prop_assert!(!hand_back.due(base + m));
            }
        }

        /// Free memory that grows by more than the slack over its level a
        /// moment ago (a burst that ended) is handed back, whatever came
        /// before; and not again until it grows that much once more.
        #[test]
        fn a_burst_is_handed_back_once(
            before in prop::collection::vec(0usize..(1 << 34), 0..50),
            last in 0usize..(1 << 34),
            burst in (SLACK + 1)..(1 << 34),
            after in prop::collection::vec(0..=SLACK, 0..50),
        ) {
            let mut hand_back = HandBack::default();
            for free in before {
                hand_back.due(free);
            }
            hand_back.due(last);
            prop_assert!(hand_back.due(last + burst));
            for m in after {
                prop_assert!(!hand_back.due(last + burst + m));
            }
        }
    }

    /// A second burst after the first was taken up again is handed back
    /// too: the low point follows free memory down.
    #[test]
    fn memory_taken_up_again_lowers_the_mark() {
        let mut hand_back = HandBack::default();
        let mib = 1 << 20;
        assert!(!hand_back.due(10 * mib));
        assert!(hand_back.due(200 * mib));
        assert!(!hand_back.due(200 * mib));
        // The next burst takes it all up, then ends.
        assert!(!hand_back.due(5 * mib));
        assert!(!hand_back.due(5 * mib + SLACK));
        assert!(hand_back.due(150 * mib));
    }
}
