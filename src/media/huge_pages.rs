//! Whether the gateway asks the C allocator for transparent huge pages.
//!
//! With fifty relays, every relayed message touches a dozen places in
//! memory that were last touched tens of milliseconds before: the
//! publisher's state, the payload block, the group-of-pictures cache, the
//! relay's output. Spread over tens of megabytes of 4 KiB pages, each such
//! touch can miss the CPU's address cache (TLB) too, in the gateway's own
//! code and in the kernel's copies to and from its buffers; on a virtual
//! machine a miss walks two sets of page tables. glibc (2.35 and later)
//! asks the kernel for 2 MiB pages for its heaps when its tunable
//! `glibc.malloc.hugetlb=1` is set, which the kernel gives them when its
//! transparent huge pages are in `madvise` mode. `cargo bench --bench
//! relay` measured 0.80x to 1.00x the CPU at 50 relays and 0.85x to 0.92x
//! at one: see the README's "Huge pages for the allocator".
//!
//! A tunable is read once, as the process starts, from `GLIBC_TUNABLES`;
//! there is no call to set it later. So `roomcast serve` starts itself
//! again, once, with the tunable added, before it starts anything else
//! (`runtime.huge_pages`, on by default). Pure: the caller reads the
//! kernel's mode and the environment, and does the `exec`.

/// The tunable glibc reads.
pub(crate) const TUNABLE: &str = "glibc.malloc.hugetlb";

/// What to do about huge pages as `serve` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Start again with `GLIBC_TUNABLES` set to this.
    Restart { tunables: String },
    /// Go on as is, for this reason.
    Keep(Keep),
}

/// Why the process goes on as it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// `runtime.huge_pages = false`.
    TurnedOff,
    /// `GLIBC_TUNABLES` names the tunable already, with this value (`1`:
    /// asked for, by this process's first start or by whoever started it).
    AlreadySet(bool),
    /// The kernel has no transparent huge pages.
    NoKernelSupport,
    /// The kernel's transparent huge pages are `never`.
    KernelOff,
    /// The kernel's transparent huge pages are `always`: every heap has
    /// them without asking.
    KernelAlways,
    /// The process runs under valgrind (its preloaded library is in
    /// `LD_PRELOAD`), where `/proc/self/exe` names valgrind's own tool, so
    /// starting again would fail; valgrind's own allocator, or its
    /// simulated CPU, has no use for huge pages anyway.
    UnderValgrind,
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Keep::TurnedOff => "runtime.huge_pages = false",
            Keep::AlreadySet(true) => "the allocator asks for huge pages (GLIBC_TUNABLES)",
            Keep::AlreadySet(false) => "GLIBC_TUNABLES turns the allocator's huge pages off",
            Keep::NoKernelSupport => "the kernel has no transparent huge pages",
            Keep::KernelOff => "the kernel's transparent huge pages are off (never)",
            Keep::KernelAlways => "the kernel gives every heap huge pages (always)",
            Keep::UnderValgrind => {
                "running under valgrind, which cannot start this process again; GLIBC_TUNABLES=glibc.malloc.hugetlb=1 asks for huge pages there"
            }
        })
    }
}

/// The plan, from whether huge pages are wanted (`runtime.huge_pages`), the
/// kernel's mode (`/sys/kernel/mm/transparent_hugepage/enabled`, `None`
/// if it could not be read), `GLIBC_TUNABLES` and `LD_PRELOAD` (`None` if
/// unset).
pub fn plan(
    wanted: bool,
    kernel_mode: Option<&str>,
    tunables: Option<&str>,
    preload: Option<&str>,
) -> Plan {
    if !wanted {
        return Plan::Keep(Keep::TurnedOff);
    }
    let tunables = tunables.unwrap_or("");
    // `name=value` pairs, `:` between them; the last one counts.
    if let Some(value) = tunables
        .split(':')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| *name == TUNABLE)
        .map(|(_, value)| value)
        .next_back()
    {
        return Plan::Keep(Keep::AlreadySet(value.trim() != "0"));
    }
    // valgrind preloads `vgpreload_core-<arch>.so` (and one for its tool)
    // into the program it runs, by path.
    if preload.is_some_and(|p| p.split([':', ' ']).any(|lib| lib.contains("/vgpreload_"))) {
        return Plan::Keep(Keep::UnderValgrind);
    }
    // The mode in force is the bracketed word: `always [madvise] never`.
    let mode = kernel_mode
        .and_then(|m| m.split_once('['))
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(mode, _)| mode);
    match mode {
        None => Plan::Keep(Keep::NoKernelSupport),
        Some("never") => Plan::Keep(Keep::KernelOff),
        Some("always") => Plan::Keep(Keep::KernelAlways),
        Some(_) => Plan::Restart {
            tunables: if tunables.is_empty() {
                format!("{TUNABLE}=1")
            } else {
                format!("{tunables}:{TUNABLE}=1")
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MADVISE: &str = "always [madvise] never\n";

    #[test]
    fn a_madvise_kernel_gets_the_tunable_added() {
        assert_eq!(
            plan(true, Some(MADVISE), None, None),
            Plan::Restart {
                tunables: "glibc.malloc.hugetlb=1".into()
            }
        );
        assert_eq!(
            plan(true, Some(MADVISE), Some("glibc.malloc.arena_max=2"), None),
            Plan::Restart {
                tunables: "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1".into()
            }
        );
    }

    #[test]
    fn what_the_operator_or_the_kernel_decided_is_kept() {
        assert_eq!(
            plan(false, Some(MADVISE), None, None),
            Plan::Keep(Keep::TurnedOff)
        );
        assert_eq!(
            plan(true, Some(MADVISE), Some("glibc.malloc.hugetlb=0"), None),
            Plan::Keep(Keep::AlreadySet(false))
        );
        assert_eq!(
            plan(true, Some("[always] madvise never"), None, None),
            Plan::Keep(Keep::KernelAlways)
        );
        assert_eq!(
            plan(true, Some("always madvise [never]"), None, None),
            Plan::Keep(Keep::KernelOff)
        );
        assert_eq!(
            plan(true, None, None, None),
            Plan::Keep(Keep::NoKernelSupport)
        );
        assert_eq!(
            plan(true, Some(""), None, None),
            Plan::Keep(Keep::NoKernelSupport)
        );
    }

    #[test]
    fn under_valgrind_the_process_is_not_started_again() {
        let preload = "/usr/libexec/valgrind/vgpreload_core-amd64-linux.so:/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so";
        assert_eq!(
            plan(true, Some(MADVISE), None, Some(preload)),
            Plan::Keep(Keep::UnderValgrind)
        );
        // What an operator set still counts there.
        assert_eq!(
            plan(
                true,
                Some(MADVISE),
                Some("glibc.malloc.hugetlb=1"),
                Some(preload)
            ),
            Plan::Keep(Keep::AlreadySet(true))
        );
        // Other preloaded libraries (a heap profiler, say) survive `exec`.
        assert!(matches!(
            plan(
                true,
                Some(MADVISE),
                None,
                Some("/usr/lib/heaptrack/libheaptrack_preload.so")
            ),
            Plan::Restart { .. }
        ));
    }

    proptest! {
        /// A restart's environment names the tunable, so the process it
        /// starts keeps going: it never starts itself again, whatever the
        /// environment held before.
        #[test]
        fn a_restart_happens_once(before in proptest::option::of("[a-z._=0-9:]{0,40}")) {
            if let Plan::Restart { tunables } = plan(true, Some(MADVISE), before.as_deref(), None) {
                prop_assert_eq!(
                    plan(true, Some(MADVISE), Some(&tunables), None),
                    Plan::Keep(Keep::AlreadySet(true))
                );
                if let Some(b) = before.as_deref().filter(|b| !b.is_empty()) {
                    prop_assert!(tunables.starts_with(b));
                }
            }
        }
    }
}
