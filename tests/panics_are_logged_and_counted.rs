//! The gateway's panic policy: a panic on a thread or in a runtime task is
//! written to the log (the thread, the place and the message, as a log
//! line) and counted for `roomcast_panics_total`. In a process of its own:
//! the hook is process-wide.

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        // Shown if the test fails: its own assertion's panic is logged too.
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_on_a_thread_or_in_a_task_is_logged_and_counted() {
    let log = Log::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    roomcast::panics::install();
    roomcast::panics::install(); // once is enough; twice changes nothing
    let before = roomcast::panics::count();

    let thread = std::thread::Builder::new()
        .name("doomed-stage".into())
        .spawn(|| panic!("a stage gave up"))
        .unwrap();
    assert!(thread.join().is_err());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("doomed-loop")
        .build()
        .unwrap();
    let joined = rt.block_on(async {
        tokio::spawn(async {
            let n = 7;
            panic!("a task gave up on {n}")
        })
        .await
    });
    assert!(joined.unwrap_err().is_panic());

    assert_eq!(roomcast::panics::count(), before + 2);
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("roomcast::panics: panicked: "))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("ERROR")
            && lines[0].contains("thread=\"doomed-stage\"")
            && lines[0].contains("panics_are_logged_and_counted.rs:")
            && lines[0].contains("panicked: a stage gave up"),
        "{text}"
    );
    assert!(
        lines[1].contains("thread=\"doomed-loop\"") && lines[1].contains("a task gave up on 7"),
        "{text}"
    );
}
