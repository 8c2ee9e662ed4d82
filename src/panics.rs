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

/// A panic's message, when its payload is text (`panic!`'s are).
pub(crate) fn message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

fn report(info: &PanicHookInfo<'_>) {
    metrics().panics.inc();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let place = info
        .location()
        .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
    let message = message(info.payload()).unwrap_or("(not text)");
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(thread, place, %backtrace, "panicked: {message}");
    } else {
        tracing::error!(thread, place, "panicked: {message}");
    }
}

/// Logs why a guard found its owner dropped before it finished, for the
/// guards named above: with a panic unwinding through it, an internal
/// error (`error`); otherwise its task was dropped unpolled, which only the
/// gateway's shutdown does (`info`: every connection and task open at a
/// clean stop goes this way, and that is not a fault).
///
/// `unfinished!("what", "what the guard does about it", fields...)`, the
/// fields as `tracing` takes them.
macro_rules! unfinished {
    ($what:literal, $then:literal $(, $($field:tt)+)?) => {
        if ::std::thread::panicking() {
            ::tracing::error!(
                $($($field)+ ,)?
                concat!($what, " ended by an internal error; ", $then)
            );
        } else {
            ::tracing::info!(
                $($($field)+ ,)?
                concat!($what, " closed as the gateway stops; ", $then)
            );
        }
    };
}
pub(crate) use unfinished;

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Everything logged on this thread while `f` runs, one line a record.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = buf.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    struct Guard(&'static str);

    impl Drop for Guard {
        fn drop(&mut self) {
            super::unfinished!("test task", "its member leaves", task = self.0);
        }
    }

    #[test]
    fn a_guard_dropped_by_a_panic_logs_an_error_and_by_a_stop_only_info() {
        let stopped = logged(|| drop(Guard("stopped")));
        assert!(stopped.contains(" INFO "), "{stopped}");
        assert!(
            stopped.contains("test task closed as the gateway stops; its member leaves"),
            "{stopped}"
        );
        assert!(stopped.contains("task=\"stopped\""), "{stopped}");
        assert!(!stopped.contains("ERROR"), "{stopped}");

        let panicked = logged(|| {
            let died = std::panic::catch_unwind(|| {
                let _held = Guard("panicked");
                panic!("a bug inside the task");
            });
            assert!(died.is_err());
        });
        let line = panicked
            .lines()
            .find(|l| l.contains("test task"))
            .unwrap_or_else(|| panic!("no guard line in {panicked}"));
        assert!(line.contains(" ERROR "), "{line}");
        assert!(
            line.contains("test task ended by an internal error; its member leaves"),
            "{line}"
        );
        assert!(line.contains("task=\"panicked\""), "{line}");
    }
}
