//! Processes the benchmarks run: free ports, nginx-rtmp, the gateway,
//! each killed by its id when dropped; and their CPU time.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16) {
    wait_port_within(port, Duration::from_secs(15));
}

/// [`wait_port`] with a deadline of its own (a process under valgrind
/// starts slower).
pub fn wait_port_within(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn nginx(dir: &Path, body: &str) -> Killed {
    nginx_under(&[], dir, body)
}

/// [`nginx`] run by `wrapper` (a command and its arguments, before nginx's
/// own), e.g. valgrind.
pub fn nginx_under(wrapper: &[String], dir: &Path, body: &str) -> Killed {
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {d}/error.log warn;\npid {d}/nginx.pid;\nevents {{ worker_connections 1024; }}\n{body}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    Killed(
        under(wrapper, "nginx")
            .args(["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    )
}

/// The gateway binary serving `dir` (its working directory, where
/// `roomcast.toml` is) on loopback ports, logging warnings only.
pub fn gateway(dir: &Path, http_port: u16, rtmp_port: u16) -> Killed {
    gateway_under(&[], dir, http_port, rtmp_port)
}

/// The gateway binary the benches run: `BENCH_GATEWAY_BIN` if set (another
/// build of it, e.g. `make pgo`'s target/pgo/release/roomcast), else the
/// release build cargo made for this bench. Not a `ROOMCAST_` name: the
/// gateway inherits this environment and reads those as its configuration.
pub fn gateway_bin() -> String {
    bin_from_env("BENCH_GATEWAY_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_roomcast").to_owned())
}

/// A gateway build named by the environment variable `var`, if set and
/// not empty; a relative path is taken from the directory the bench was
/// started in (the gateway runs in a work directory of its own).
pub fn bin_from_env(var: &str) -> Option<String> {
    let bin = std::env::var(var).ok().filter(|b| !b.is_empty())?;
    Some(match std::path::absolute(&bin) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(_) => bin,
    })
}

/// [`gateway`] run by `wrapper`, as [`nginx_under`].
pub fn gateway_under(wrapper: &[String], dir: &Path, http_port: u16, rtmp_port: u16) -> Killed {
    gateway_bin_under(wrapper, &gateway_bin(), dir, http_port, rtmp_port)
}

/// [`gateway_under`] with the binary `bin`.
pub fn gateway_bin_under(
    wrapper: &[String],
    bin: &str,
    dir: &Path,
    http_port: u16,
    rtmp_port: u16,
) -> Killed {
    assert!(Path::new(bin).is_file(), "no gateway binary at {bin}");
    let mut command = under(wrapper, bin);
    if !wrapper.is_empty() {
        // Under a wrapper (valgrind) `serve` does not start itself again
        // to ask for huge pages (`runtime.huge_pages`): the tunable set
        // here keeps the allocator in the mode of a plain start.
        command.env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1");
    }
    Killed(
        command
            .arg("serve")
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .env("ROOMCAST_HTTP__BIND", "127.0.0.1")
            .env("ROOMCAST_HTTP__PORT", http_port.to_string())
            .env("ROOMCAST_RTMP__BIND", "127.0.0.1")
            .env("ROOMCAST_RTMP__PORT", rtmp_port.to_string())
            .stdout(Stdio::null())
            // Its warnings, for a run that fails (the work directory is
            // left behind then).
            .stderr(std::fs::File::create(dir.join("gateway.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// `program` as a command, or `wrapper` running it.
fn under(wrapper: &[String], program: &str) -> Command {
    match wrapper.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    }
}

/// Two distinct free ports (held together while chosen).
pub fn two_ports() -> (u16, u16) {
    let (a, b) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// CPU seconds of process `pid`'s live threads, to the nanosecond (the
/// scheduler's own account, `/proc/<pid>/task/*/schedstat`; `/proc/<pid>/stat`
/// counts in 10 ms ticks, too coarse for a relay's few milliseconds a
/// second). Threads that ended are not counted: measure steady states.
pub fn cpu_seconds_precise(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}

/// Waits, up to `within`, until process `pid` has no thread named `name`
/// (its `comm`, at most 15 bytes): a start-up thread that ends takes its
/// CPU out of [`cpu_seconds_precise`], so a span measured across its end
/// reads less than nothing. False if one is still there.
pub fn wait_thread_gone(pid: u32, name: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let running = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks.flatten().any(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|comm| comm.trim_end() == name)
                })
            })
            .unwrap_or(false);
        if !running {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// User and kernel CPU of process `pid` in clock ticks (10 ms each):
/// `/proc/<pid>/stat`'s utime and stime, for the split only.
pub fn user_kernel_ticks(pid: u32) -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0, 0);
    };
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let mut f = rest.split_whitespace().skip(11);
    let mut next = || f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// One HTTP/1.1 request to loopback `port` (a JSON body, or none when
/// empty): the status and the body, de-chunked.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Chunked answers: the JSON is between the size lines.
    let body = if resp.contains("chunked") {
        body.lines()
            .filter(|l| !l.chars().all(|c| c.is_ascii_hexdigit()) || l.is_empty())
            .collect::<String>()
    } else {
        body.to_owned()
    };
    (code, body)
}
