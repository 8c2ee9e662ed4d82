//! The process's panic policy: a panic anywhere (a connection's task, a
//! codec stage's thread, a viewer's session) is written to the gateway's
//! log, as a line of its format (text or JSON) with the thread, the place
//! and the message, and a backtrace when `RUST_BACKTRACE` asks for one;
//! and it is counted (`roomcast_panics_total`), so an alert can fire on it.
//!
//! What a panic leaves behind is each task's own business: relay tasks,
//! RTMP connections, WHIP sessions, signalling sockets and stream ingests
//! clean up in their guards' drops (a member leaves its room, a task
//! reads stopped). Tasks that hold no room session (WHEP viewers,
//! callbacks, the cluster, uploads) lose their viewer or delivery; the log
//! line and the count are what says so.

use std::panic::PanicHookInfo;
use std::sync::Once;

use crate::metrics::metrics;

/// Replaces the default hook (which writes plain text to stderr, outside
/// the log's format) with [`report`]. Idempotent.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(report)));
}

/// Panics counted since the process started.
pub fn count() -> u64 {
    metrics().panics.get()
}

fn report(info: &PanicHookInfo<'_>) {
    metrics().panics.inc();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let place = info
        .location()
        .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not text)");
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(thread, place, %backtrace, "panicked: {message}");
    } else {
        tracing::error!(thread, place, "panicked: {message}");
    }
}
