//! `roomcast serve` with no configuration at all: starts, answers /healthz,
//! creates development credentials once, and stops cleanly on SIGTERM/SIGINT.

mod common;

use std::time::Duration;

use common::{Gateway, http_get};

#[test]
fn serve_without_config_starts_answers_health_and_stops_on_sigterm() {
    let mut gw = Gateway::start(None);
    assert_eq!(http_get(gw.http_port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(gw.http_port, "/no-such-path").unwrap().0, 404);

    let creds = gw.dir.0.join("data/dev-credentials.toml");
    let text = std::fs::read_to_string(&creds).expect("dev credentials written");
    assert!(text.contains("sdkappid = 1400000001"), "{text}");
    let log = gw.log_text();
    assert!(
        log.contains("roomcast usersig gen --sdkappid 1400000001 --key "),
        "{log}"
    );
    assert!(log.contains("HTTP listening"), "{log}");
    assert!(log.contains("relay profiles loaded"), "{log}");

    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", gw.log_text());
    assert!(gw.log_text().contains("SIGTERM"));
}

#[test]
fn dev_key_is_generated_once_and_reused() {
    let mut first = Gateway::start(None);
    let data = first.dir.0.join("data");
    let creds = std::fs::read_to_string(data.join("dev-credentials.toml")).unwrap();
    first.signal("INT");
    assert!(first.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(first.log_text().contains("SIGINT"));

    // Another start on the same data dir reads the key instead of making one.
    let mut again = Gateway::spawn(None, &[("ROOMCAST_DATA_DIR", data.to_str().unwrap())]);
    again.wait_healthy();
    assert!(
        again.log_text().contains("created=false"),
        "{}",
        again.log_text()
    );
    assert_eq!(
        std::fs::read_to_string(data.join("dev-credentials.toml")).unwrap(),
        creds
    );
    again.signal("TERM");
    assert!(again.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn bad_config_is_refused_naming_key_and_file() {
    let mut gw = Gateway::spawn(Some("[http]\nprot = 9000\n"), &[]);
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    let log = gw.log_text();
    assert!(
        log.contains("prot") && log.contains("roomcast.toml"),
        "{log}"
    );
}

#[test]
fn bad_profile_in_profiles_dir_stops_startup_with_its_location() {
    let dir = common::TempDir::new("profiles");
    std::fs::write(dir.0.join("broken.toml"), "[video]\nfps = 120\n").unwrap();
    let mut gw = Gateway::spawn(None, &[("ROOMCAST_PROFILES_DIR", dir.0.to_str().unwrap())]);
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    let log = gw.log_text();
    assert!(
        log.contains("broken.toml:2: video.fps: 120 is out of range 1..=60"),
        "{log}"
    );
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut gw = Gateway::spawn(None, &[("ROOMCAST_HTTP__PORT", &port)]);
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    assert!(
        gw.log_text().contains("cannot listen on 127.0.0.1:"),
        "{}",
        gw.log_text()
    );
}

/// Where the kernel gives transparent huge pages on request, `serve` asks
/// glibc's allocator for them by starting itself again, once and as the
/// same process (the id a supervisor knows), and the heaps are marked for
/// them; `runtime.huge_pages = false` leaves the process as it started.
#[test]
fn huge_pages_are_asked_for_once_in_the_same_process_unless_turned_off() {
    let kernel =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let madvise = kernel.contains("[madvise]");
    let asked = |gw: &Gateway| {
        let env = std::fs::read(format!("/proc/{}/environ", gw.child.id())).unwrap();
        env.split(|b| *b == 0)
            .any(|kv| kv == b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
    };
    // Mappings advised for huge pages carry `hg` in their flags.
    let advised = |gw: &Gateway| {
        std::fs::read_to_string(format!("/proc/{}/smaps", gw.child.id()))
            .unwrap()
            .lines()
            .any(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "hg"))
    };

    let mut on = Gateway::start(None);
    let log = on.log_text();
    assert_eq!(asked(&on), madvise, "{kernel}\n{log}");
    assert_eq!(advised(&on), madvise, "{kernel}\n{log}");
    assert_eq!(
        log.matches("memory: starting again with GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
            .count(),
        usize::from(madvise),
        "{log}"
    );
    assert_eq!(
        log.matches("memory: ").count(),
        1 + usize::from(madvise),
        "{log}"
    );
    assert_eq!(log.matches("HTTP listening").count(), 1, "{log}");
    if madvise {
        assert!(log.contains("huge_pages=true"), "{log}");
    }
    on.signal("TERM");
    assert!(on.wait_exit(Duration::from_secs(10)).unwrap().success());

    let mut off = Gateway::spawn(None, &[("ROOMCAST_RUNTIME__HUGE_PAGES", "false")]);
    off.wait_healthy();
    let log = off.log_text();
    assert!(!asked(&off) && !advised(&off), "{log}");
    assert!(log.contains("memory: runtime.huge_pages = false"), "{log}");
    assert!(!log.contains("starting again"), "{log}");
    off.signal("TERM");
    assert!(off.wait_exit(Duration::from_secs(10)).unwrap().success());
}
