//! Instructions per relayed message: roomcast's passthrough relay against
//! nginx-rtmp's `push`, counted by callgrind.
//!
//! `cargo bench --bench relay` measures time on CPU, which is what part of
//! the job costs; but on a small virtual machine it moves by a tenth
//! between runs of the same code, more than any one change to the relay's
//! path. A relay's user-space work is what differs between the two
//! (their kernel time is about the same: the same reads, writes and
//! wake-ups), and callgrind counts it exactly: the instructions each
//! process executes, repeatable to a fraction of a percent. It does not see
//! the kernel, nor what a cold cache costs, so it is a yardstick for
//! changes to the path, not a replacement for the CPU bench.
//!
//! Each relay runs under `valgrind --tool=callgrind`, passing the same
//! 720p30 2 Mbps stream from the harness's publisher to an nginx-rtmp
//! origin, where a player counts the pictures that arrive. Instrumentation
//! is switched on 3 s into the stream (after the connection, its
//! authentication and the relay's start) and the counts dumped at 13 s; the
//! instructions of that window are divided by the messages published in it.
//! Each side runs twice, in the order roomcast, nginx-rtmp, nginx-rtmp,
//! roomcast, and each run's figure is printed with a split by where the
//! instructions ran (the async runtime, the allocator, memory copies, the
//! C library, the relay's own code, other crates) and how much code they
//! ran from (distinct cache lines and pages: the window's code footprint,
//! which costs more than the count on a relay whose every wake is cold),
//! with the cache lines by the same split (a line holding code inlined
//! from two places counts under both). The window's footprint counts
//! what ran once in ten seconds as much as what every message ran, so each
//! run also says how much code every message runs: the lines and pages of
//! the instructions that ran at least once for every two messages.
//!
//! The roomcast runs also say which of the gateway's functions ran in the
//! window, hottest first: `hot-functions.txt` in the work directory, the
//! list release builds lay out side by side (`link/hot-functions.txt`,
//! see `build.rs`). The bench says how much of the window's code the
//! checked-in list still covers; `make hot-functions` runs it and
//! replaces the list.
//!
//! Run: `cargo bench --bench relay_instructions` (needs `make test`'s
//! set-up and `apt-get install valgrind`). The dumps stay in the run's
//! work directory for `callgrind_annotate`. With
//! `RELAY_INSTRUCTIONS_START_MS=N` the publisher's timestamps start at N ms,
//! not 0: what a relay started while its anchor publishes sees (it moves
//! every frame onto its output's timeline).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "../build/names.rs"]
mod names;
use names::without_llvm_suffix;
#[path = "common/flv_file.rs"]
mod flv_file;
#[path = "common/procs.rs"]
mod procs;
#[path = "common/relay_case.rs"]
mod relay_case;
#[path = "common/rtmp_client.rs"]
mod rtmp_client;
use procs::{free_port, gateway_under, http, nginx_under, two_ports, wait_port_within};
use rml_rtmp::sessions::ClientSessionEvent;
use rml_rtmp::time::RtmpTimestamp;
use rtmp_client::Rtmp;

const APP: u64 = 1_400_000_000;
const KEY: &str = "bench-key";
/// The counted window, in stream time.
const FROM_MS: u32 = 3_000;
const TO_MS: u32 = 13_000;

fn main() {
    let valgrind = Command::new("valgrind").arg("--version").output();
    assert!(
        valgrind.is_ok_and(|o| o.status.success()),
        "this bench needs valgrind: apt-get install valgrind"
    );
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-relay-instructions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let tags = relay_case::source(&work);
    let (_origin, origin_port) = relay_case::origin(&work.join("origin"));
    println!(
        "source: {} tags, 720p30 H.264 2 Mbps + AAC 128k; instructions counted from {} s to {} s of stream",
        tags.len(),
        FROM_MS / 1000,
        TO_MS / 1000
    );

    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut code: BTreeMap<&str, Footprint> = BTreeMap::new();
    let gateway = procs::gateway_bin();
    let symbols = Symbols::of(Path::new(&gateway));
    let mut hot: BTreeMap<String, u64> = BTreeMap::new();
    for (run, side) in ["roomcast", "nginx-rtmp", "nginx-rtmp", "roomcast"]
        .into_iter()
        .enumerate()
    {
        let dir = work.join(format!("{run}-{side}"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("callgrind.out");
        let wrapper: Vec<String> = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--dump-instr=yes",
            "--log-file=valgrind.log",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--callgrind-out-file={}", out.display())])
        .collect();
        let stream = format!("s{run}");
        let (relay, port, app, key) = if side == "roomcast" {
            roomcast(&dir, &wrapper, origin_port, &stream)
        } else {
            let port = free_port();
            let relay = nginx_under(
                &wrapper,
                &dir,
                &format!(
                    "rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; push rtmp://127.0.0.1:{origin_port}/live; }} }} }}"
                ),
            );
            wait_port_within(port, Duration::from_secs(60));
            (relay, port, "live", stream.clone())
        };
        let (messages, pictures) =
            publish(&tags, port, app, &key, origin_port, &stream, relay.0.id());
        let dump = dump_of(&out);
        drop(relay);
        let split = split(&dump);
        let total: u64 = split.values().sum();
        let per = total as f64 / messages as f64;
        let code_run = footprint(&dump, messages);
        let (lines, pages) = (code_run.lines, code_run.pages);
        if side == "roomcast" {
            for (name, n) in symbols.costs(&dump, &gateway) {
                *hot.entry(name).or_insert(0) += n;
            }
        }
        println!(
            "\n{side}: {per:.0} instructions a message ({total} over {messages} messages; {pictures} pictures reached the origin in the run)"
        );
        println!(
            "  code run in the window: {lines} cache lines ({} KiB) on {pages} pages",
            lines * 64 / 1024
        );
        println!(
            "  code every message runs: {} cache lines on {} pages",
            code_run.every_message_lines, code_run.every_message_pages
        );
        println!("  {:18} {:>6} {:>12}", "", "a message", "cache lines");
        for (what, n) in &split {
            println!(
                "  {what:18} {:9.0} {:>12}",
                *n as f64 / messages as f64,
                code_run.by_kind.get(what).copied().unwrap_or(0)
            );
        }
        // A relay that delivered nothing would be cheap: it must have
        // passed on at least the pictures of the counted window.
        assert!(
            pictures >= u64::from(TO_MS - FROM_MS) * 30 / 1000,
            "{side} delivered only {pictures} pictures; see {}",
            dir.display()
        );
        results.entry(side).or_default().push(per);
        code.insert(side, code_run);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (rc, ng) = (mean(&results["roomcast"]), mean(&results["nginx-rtmp"]));
    println!(
        "\ninstructions a message: roomcast {rc:.0} ({:.0}, {:.0}), nginx-rtmp {ng:.0} ({:.0}, {:.0}); ratio {:.2}x",
        results["roomcast"][0],
        results["roomcast"][1],
        results["nginx-rtmp"][0],
        results["nginx-rtmp"][1],
        rc / ng
    );
    let (rc, ng) = (&code["roomcast"], &code["nginx-rtmp"]);
    for (what, rc_lines, rc_pages, ng_lines, ng_pages) in [
        ("code run", rc.lines, rc.pages, ng.lines, ng.pages),
        (
            "code every message runs",
            rc.every_message_lines,
            rc.every_message_pages,
            ng.every_message_lines,
            ng.every_message_pages,
        ),
    ] {
        println!(
            "{what} (last run each): roomcast {rc_lines} lines on {rc_pages} pages, nginx-rtmp {ng_lines} lines on {ng_pages} pages; ratio {:.2}x lines, {:.2}x pages",
            rc_lines as f64 / ng_lines as f64,
            rc_pages as f64 / ng_pages as f64
        );
    }
    report_hot_functions(&hot, &symbols, &work);
    println!(
        "work directory (dumps for callgrind_annotate): {}",
        work.display()
    );
}

/// The checked-in list release builds lay out by (see `build.rs`).
const LAYOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/link/hot-functions.txt");

/// Writes the functions that ran, hottest first, to the work directory's
/// `hot-functions.txt`, and says how much of what ran the checked-in list
/// names: functions renamed or new since it was made are laid out
/// elsewhere, and the list is due to be made again.
///
/// An entry is what `build.rs` matches sections by: a symbol without its
/// `.llvm.N` suffix (renumbered by any change to its module), with `*` for
/// its hash where the name without the hash is one function of this build
/// only (so a new hash keeps its place; a generic function's instances
/// differ by their hash alone, and keep it). A function's aliases (other
/// functions LLVM merged into it) are named too: the section bears one of
/// their names.
fn report_hot_functions(hot: &BTreeMap<String, u64>, symbols: &Symbols, work: &Path) {
    let mut ranked: Vec<(&String, &u64)> = hot.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let instances = symbols.instances();
    let mut entries: Vec<String> = Vec::new();
    for (name, _) in &ranked {
        for alias in symbols.aliases(name) {
            let entry = entry(alias, &instances);
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
    }
    let text: String = entries.iter().map(|e| format!("{e}\n")).collect();
    let path = work.join("hot-functions.txt");
    std::fs::write(&path, text).unwrap();
    let total: u64 = hot.values().sum();
    let listed: Vec<String> = std::fs::read_to_string(LAYOUT)
        .unwrap_or_default()
        .lines()
        .map(|line| without_llvm_suffix(line.trim()).to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    let unlisted: Vec<u64> = hot
        .iter()
        .filter(|(name, _)| {
            !symbols.aliases(name).iter().any(|alias| {
                let alias = without_llvm_suffix(alias);
                listed.iter().any(|entry| matches(entry, alias))
            })
        })
        .map(|(_, n)| *n)
        .collect();
    let missing = unlisted.len();
    let covered = total - unlisted.iter().sum::<u64>();
    println!(
        "hot functions: {} ran in the gateway's own code; the checked-in list names {:.1} % of their instructions ({missing} functions not in it); this run's list: {} (`make hot-functions` puts it in place)",
        hot.len(),
        100.0 * covered as f64 / total.max(1) as f64,
        path.display()
    );
}

/// `name` without its hash (`17h<16 hex digits>E` at its end), if it has
/// one.
fn without_hash(name: &str) -> Option<&str> {
    let base = name.strip_suffix('E')?;
    let (base, hash) = base.split_at_checked(base.len().checked_sub(16)?)?;
    let base = base.strip_suffix("17h")?;
    hash.bytes().all(|b| b.is_ascii_hexdigit()).then_some(base)
}

/// The list's entry for function `name` (see `report_hot_functions`),
/// given how many functions share each name without its hash.
fn entry(name: &str, instances: &std::collections::HashMap<&str, usize>) -> String {
    let name = without_llvm_suffix(name);
    match without_hash(name) {
        Some(base) if instances.get(base) == Some(&1) => format!("{base}17h*E"),
        _ => name.to_owned(),
    }
}

/// Whether `name` matches the list's `entry`, where `*` stands for any
/// run of characters (the linker script's glob; the list uses no other).
fn matches(entry: &str, name: &str) -> bool {
    let mut parts = entry.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The functions of a binary (`nm`): where each starts, its size, its
/// symbol.
struct Symbols(Vec<(u64, u64, String)>);

impl Symbols {
    fn of(binary: &Path) -> Symbols {
        let out = Command::new("nm")
            .args(["-p", "-S", "--defined-only"])
            .arg(binary)
            .output()
            .expect("nm (binutils)");
        assert!(out.status.success(), "nm {}", binary.display());
        let mut all: Vec<(u64, u64, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let (at, size, kind, name) = (f.next()?, f.next()?, f.next()?, f.next()?);
                if !matches!(kind, "t" | "T" | "w" | "W") {
                    return None;
                }
                let at = u64::from_str_radix(at, 16).ok()?;
                let size = u64::from_str_radix(size, 16).ok()?;
                Some((at, size, name.to_owned()))
            })
            .collect();
        all.sort();
        Symbols(all)
    }

    /// Every function at `name`'s address, `name` first: functions LLVM
    /// merged into one are aliases of it.
    fn aliases<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        let mut all = vec![name];
        if let Some((start, _, _)) = self.0.iter().find(|(_, _, n)| n == name) {
            let from = self.0.partition_point(|(s, _, _)| s < start);
            all.extend(
                self.0[from..]
                    .iter()
                    .take_while(|(s, _, _)| s == start)
                    .map(|(_, _, n)| n.as_str())
                    .filter(|n| *n != name),
            );
        }
        all
    }

    /// How many functions share each name without its hash (a generic
    /// function's instances do).
    fn instances(&self) -> std::collections::HashMap<&str, usize> {
        let mut n = std::collections::HashMap::new();
        for base in self
            .0
            .iter()
            .filter_map(|(_, _, name)| without_hash(without_llvm_suffix(name)))
        {
            *n.entry(base).or_insert(0) += 1;
        }
        n
    }

    /// The function `at` lies in.
    fn at(&self, at: u64) -> Option<&str> {
        let i = self.0.partition_point(|(start, _, _)| *start <= at);
        let (start, size, name) = self.0.get(i.checked_sub(1)?)?;
        (at < start + (*size).max(1)).then_some(name.as_str())
    }

    /// The instructions the dump counted in each of `binary`'s functions
    /// (the dump's object `binary`; a cost line starts with the
    /// instruction's address and line, then the count; the line after a
    /// `calls=` is the call's inclusive cost, not counted here).
    fn costs(&self, dump: &Path, binary: &str) -> BTreeMap<String, u64> {
        let text = std::fs::read_to_string(dump).unwrap();
        let mut objects: BTreeMap<&str, bool> = BTreeMap::new();
        let (mut inside, mut call, mut at) = (false, false, 0u64);
        let (mut mapped, mut unmapped) = (0u64, 0u64);
        let mut costs = BTreeMap::new();
        for line in text.lines() {
            // `ob=(3) /path` the first time, `ob=(3)` after; the first
            // time may also be a call's `cob=(3) /path`.
            let named = match line.strip_prefix("cob=") {
                Some(ob) => Some((true, ob)),
                None => line.strip_prefix("ob=").map(|ob| (false, ob)),
            };
            if let Some((called, named)) = named {
                let (id, path) = named.split_once(' ').unwrap_or((named, ""));
                if !path.is_empty() {
                    objects.insert(id, path == binary);
                }
                if !called {
                    inside = objects.get(id).copied().unwrap_or(false);
                }
                continue;
            }
            if line.starts_with("calls=") {
                call = true;
                continue;
            }
            let mut f = line.split_whitespace();
            let Some(next) = f.next().and_then(|first| address(first, at)) else {
                continue;
            };
            at = next;
            if std::mem::take(&mut call) || !inside {
                continue;
            }
            let n: u64 = f.nth(1).and_then(|t| t.parse().ok()).unwrap_or(0);
            match self.at(at) {
                Some(name) => {
                    mapped += n;
                    *costs.entry(name.to_owned()).or_insert(0) += n;
                }
                None => unmapped += n,
            }
        }
        assert!(
            mapped > 0,
            "no instructions of {binary} in {}",
            dump.display()
        );
        // The dump's addresses are the binary's own (callgrind takes off
        // where it was loaded); if they were not, nothing would map.
        assert!(
            mapped > 9 * unmapped,
            "{} of the gateway's instructions in {} fall in no function of {binary}",
            unmapped,
            dump.display()
        );
        costs
    }
}

/// The gateway under `wrapper` with a passthrough relay of room `stream`'s
/// anchor to the origin; its RTMP port, app and stream key.
fn roomcast(
    dir: &Path,
    wrapper: &[String],
    origin_port: u16,
    stream: &str,
) -> (procs::Killed, u16, &'static str, String) {
    std::fs::write(
        dir.join("roomcast.toml"),
        format!("[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\n[[api.credentials]]\nsecret_id = \"AKID\"\nsecret_key = \"k\"\n"),
    )
    .unwrap();
    // The same job as nginx's `push`: the RTMP output only.
    relay_case::push_only_profile(dir, false);
    let (http_port, rtmp_port) = two_ports();
    let gw = gateway_under(wrapper, dir, http_port, rtmp_port);
    wait_port_within(http_port, Duration::from_secs(60));
    let body = format!(
        "{{\"sdkappid\":{APP},\"room\":\"{stream}\",\"userid\":\"anchor\",\"profile\":\"push-only\",\"rtmp\":[\"rtmp://127.0.0.1:{origin_port}/live/{stream}\"]}}"
    );
    let (code, resp) = http(http_port, "POST", "/v1/relays", &body);
    assert_eq!(code, 201, "{resp}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = roomcast::auth::usersig::generate(APP, KEY, "anchor", 3600, now, None);
    let key = format!("{stream}?sdkappid={APP}&userid=anchor&usersig={sig}");
    (gw, rtmp_port, "push", key)
}

/// Publishes `tags` in real time to `key` on `port`, switching callgrind's
/// instrumentation of `pid` on at [`FROM_MS`] and dumping at [`TO_MS`];
/// returns the messages published in that window and the pictures a player
/// of `stream` on the origin received.
fn publish(
    tags: &[(bool, u32, bytes::Bytes)],
    port: u16,
    app: &str,
    key: &str,
    origin_port: u16,
    stream: &str,
    pid: u32,
) -> (u64, u64) {
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let stream = stream.to_owned();
    let player = std::thread::spawn(move || {
        let mut p = Rtmp::player(origin_port, "live", &stream);
        let _ = subscribed_tx.send(());
        p.socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut pictures = 0u64;
        let mut end: Option<Instant> = None;
        while end.is_none_or(|e| Instant::now() < e) {
            if end.is_none() && done.try_recv().is_ok() {
                end = Some(Instant::now() + Duration::from_secs(3));
            }
            if !p.pump() {
                break;
            }
            pictures += p
                .events
                .drain(..)
                .filter(|e| matches!(e, ClientSessionEvent::VideoDataReceived { .. }))
                .count() as u64;
        }
        pictures
    });
    subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("the player was not accepted by the origin");
    let start_ms: u32 = std::env::var("RELAY_INSTRUCTIONS_START_MS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("RELAY_INSTRUCTIONS_START_MS: milliseconds")
        })
        .unwrap_or(0);
    let mut publisher = Rtmp::publisher(port, app, key);
    let (mut on, mut dumped) = (false, false);
    let mut messages = 0u64;
    let t0 = Instant::now();
    for (is_video, ts, data) in tags {
        let due = t0 + Duration::from_millis(u64::from(*ts));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        if !on && *ts >= FROM_MS {
            callgrind_control(&["-i", "on"], pid);
            on = true;
        }
        if on && !dumped && *ts >= TO_MS {
            callgrind_control(&["-d"], pid);
            callgrind_control(&["-i", "off"], pid);
            dumped = true;
        }
        if on && !dumped {
            messages += 1;
        }
        let ts = RtmpTimestamp::new(start_ms.wrapping_add(*ts));
        let r = if *is_video {
            publisher
                .session
                .publish_video_data(data.clone(), ts, false)
        } else {
            publisher
                .session
                .publish_audio_data(data.clone(), ts, false)
        }
        .unwrap();
        publisher.apply(vec![r]);
    }
    assert!(dumped, "the source is shorter than the counted window");
    let _ = done_tx.send(());
    drop(publisher);
    (messages, player.join().unwrap())
}

fn callgrind_control(args: &[&str], pid: u32) {
    let status = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("callgrind_control (valgrind's package)");
    assert!(status.success(), "callgrind_control {args:?} {pid} failed");
}

/// The dump `-d` wrote next to `out` (callgrind numbers them from 1).
fn dump_of(out: &Path) -> PathBuf {
    let dump = PathBuf::from(format!("{}.1", out.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&dump).is_ok_and(|s| s.contains("\ntotals:")) {
        assert!(
            Instant::now() < deadline,
            "no callgrind dump at {}",
            dump.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    dump
}

/// The code a run ran from: see [`footprint`].
struct Footprint {
    /// Distinct 64-byte lines and 4 KiB pages of every instruction that
    /// ran in the window.
    lines: usize,
    pages: usize,
    /// The lines by where they ran (as [`split`] counts instructions).
    by_kind: BTreeMap<&'static str, usize>,
    /// The same for the instructions that ran at least once for every two
    /// messages: the code each message's wake goes through.
    every_message_lines: usize,
    every_message_pages: usize,
}

/// How much code the window ran: the distinct 64-byte lines and 4 KiB
/// pages its instructions are on (the dump's cost lines start with an
/// instruction's address: `0x…` absolute, `+n`/`-n` relative to the last,
/// `*` the same, then the source line, then the instructions run there),
/// the lines by where they ran (as [`split`] counts instructions: by the
/// source file and function of each, which the dump's `fl=`/`fi=`/`fe=`,
/// `fn=` and `ob=` lines name), and the lines of the instructions run at
/// least `messages / 2` times (a cost line after `calls=` holds the
/// callee's inclusive cost, not the call instruction's own).
///
/// A relay sleeps between messages, and each wake finds its code cold:
/// running the same instructions from a larger spread of code costs more.
/// A bare epoll relay made to call 3,000 distinct small functions (106 KiB)
/// a wake cost 42 µs more a message on a 2-core VM; the same 3,000 calls
/// among 10 functions, 8 µs. The window is ten seconds: what runs once in
/// it (a status tick, a thread the blocking pool starts again) counts as
/// much as what every message runs.
fn footprint(dump: &Path, messages: u64) -> Footprint {
    let text = std::fs::read_to_string(dump).unwrap();
    // Compressed names: `fl=(3) /path` the first time, `fl=(3)` after;
    // files, functions and objects each have their own numbers, and a
    // call's `cfi=`, `cfn=` and `cob=` may be the first to name one.
    let mut names: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    let (mut object, mut file, mut function) = ("", "", "");
    let mut here = kind("");
    let mut at: u64 = 0;
    let mut lines = std::collections::HashSet::new();
    let mut by_kind: BTreeMap<&'static str, std::collections::HashSet<(&str, u64)>> =
        BTreeMap::new();
    // Instructions run at each address (its own, summed over the
    // contexts that name it).
    let mut runs: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    // `positions: instr line`: the cost follows the position columns.
    let mut cost_at = 2;
    let mut call_cost_next = false;
    for line in text.lines() {
        if let Some(columns) = line.strip_prefix("positions:") {
            cost_at = columns.split_whitespace().count();
            continue;
        }
        if line.starts_with("calls=") {
            call_cost_next = true;
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && matches!(
                key,
                "ob" | "cob" | "fl" | "fi" | "fe" | "cfi" | "cfl" | "fn" | "cfn"
            )
        {
            let (id, named) = value.split_once(' ').unwrap_or((value, ""));
            let table = match key {
                "ob" | "cob" => "ob",
                "fn" | "cfn" => "fn",
                _ => "fl",
            };
            if !named.is_empty() {
                names.insert((table, id), named);
            }
            let named = names.get(&(table, id)).copied().unwrap_or("");
            match key {
                "ob" => object = named,
                "fl" | "fi" | "fe" => file = named,
                "fn" => function = named,
                _ => continue,
            }
            here = kind(&format!("{file}:{function} [{object}]"));
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(next) = words.next().and_then(|first| address(first, at)) else {
            continue;
        };
        at = next;
        lines.insert(at >> 6);
        by_kind.entry(here).or_default().insert((object, at >> 6));
        let cost = words
            .nth(cost_at - 1)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        if !std::mem::take(&mut call_cost_next) {
            *runs.entry(at).or_insert(0) += cost;
        }
    }
    let pages: std::collections::HashSet<u64> = lines.iter().map(|l| l >> 6).collect();
    let every_message: std::collections::HashSet<u64> = runs
        .iter()
        .filter(|&(_, &n)| n * 2 >= messages)
        .map(|(a, _)| a >> 6)
        .collect();
    let every_message_pages: std::collections::HashSet<u64> =
        every_message.iter().map(|l| l >> 6).collect();
    Footprint {
        lines: lines.len(),
        pages: pages.len(),
        by_kind: by_kind.into_iter().map(|(k, v)| (k, v.len())).collect(),
        every_message_lines: every_message.len(),
        every_message_pages: every_message_pages.len(),
    }
}

/// The instruction address a dump's line starts with, given the last one:
/// `0x…` absolute, `+n`/`-n` relative to the last, `*` the same; `None`
/// for a line that names no address (`fn=…`, `calls=…`, `events: …`).
fn address(first: &str, last: u64) -> Option<u64> {
    let number = |t: &str| match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    };
    if let Some(n) = first.strip_prefix('+') {
        Some(last.wrapping_add(number(n)?))
    } else if let Some(n) = first.strip_prefix('-') {
        Some(last.wrapping_sub(number(n)?))
    } else if first == "*" {
        Some(last)
    } else if first.starts_with("0x") {
        number(first)
    } else {
        None
    }
}

/// The dump's instructions by where they ran: `callgrind_annotate`'s lines
/// (one per source file and function) grouped by the file's crate or
/// library.
fn split(dump: &Path) -> BTreeMap<&'static str, u64> {
    let out = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--auto=no"])
        .arg(dump)
        // Not the package's root, where it would shorten our own files'
        // names to `src/...`.
        .current_dir(dump.parent().unwrap())
        .output()
        .expect("callgrind_annotate (valgrind's package)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut split = BTreeMap::new();
    for line in text.lines() {
        // `  1,234 (12.34%)  file:function [object]`
        let Some((count, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let Some((_, place)) = rest.split_once(")  ") else {
            continue;
        };
        if place.contains("PROGRAM TOTALS") {
            continue;
        }
        *split.entry(kind(place)).or_insert(0) += count;
    }
    split
}

/// Where a `file:function [object]` of callgrind_annotate's ran.
fn kind(place: &str) -> &'static str {
    let (file, function) = place.split_once(':').unwrap_or((place, ""));
    let names = |c: &str| function.contains(&format!("{c}::"));
    if file.contains("/tokio-") || file.contains("/mio-") {
        "async runtime"
    } else if file.contains("malloc") {
        "allocator"
    } else if file.contains("memmove") || file.contains("memcpy") || file.contains("memset") {
        "memory copies"
    } else if file.starts_with("./") || place.contains("libc.so") {
        "C library"
    } else if file.contains("/rustc/") {
        // Rust's standard library, inlined: counted with its caller.
        if names("tokio") || names("mio") {
            "async runtime"
        } else if names("roomcast") {
            "relay"
        } else {
            "std, other crates"
        }
    } else if file.contains("/.cargo/registry/") {
        "std, other crates"
    } else if place.contains("ngx_") || place.contains("nginx") || file.contains("/src/") {
        "relay"
    } else {
        "other"
    }
}
