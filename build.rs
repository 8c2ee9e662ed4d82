//! Lays out the gateway's hot code side by side in release builds.
//!
//! A bypass relay sleeps between messages, and each wake finds its code
//! cold: what it costs depends on how many cache lines and pages the code
//! it runs is spread over, not only on how many instructions it runs. The
//! linker places functions in the order it meets them, so the few hundred
//! that relay a message sit among 30,000 others, on about 200 pages.
//! `link/hot-functions.txt` names them (their symbols, hottest first, as
//! `cargo bench --bench relay_instructions` saw them run, in this build and
//! in the benches' build, whose symbols differ); handed to the linker as a
//! symbol ordering file, they go first, and a relayed message runs from
//! about 70 pages (the C library's included) instead of 200.
//!
//! Only where the linker is LLD: Rust's own (`rust-lld`, the default for
//! x86_64 Linux since Rust 1.90), with no other linker chosen. A symbol
//! the list names and the build lacks (renamed since) is skipped without a
//! word; a function the list lacks is laid out as before. Builds with
//! profile-guided optimisation (`make pgo`) lay out by their profile
//! instead. Debug builds are left as they are.

use std::env;
use std::path::Path;
use std::process::Command;

const LIST: &str = "link/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("profile-use") || flags.contains("profile-generate") {
        return;
    }
    let list = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join(LIST);
    let why_not = if list.is_file() {
        why_not_lld(&flags)
    } else {
        Some(format!("{LIST} is missing"))
    };
    match why_not {
        None => {
            println!(
                "cargo:rustc-link-arg-bin=roomcast=-Wl,--symbol-ordering-file={}",
                list.display()
            );
            println!("cargo:rustc-link-arg-bin=roomcast=-Wl,--no-warn-symbol-ordering");
        }
        Some(why) => println!(
            "cargo:warning=the relay's hot code is laid out as the linker finds it, not side by side: {why}"
        ),
    }
}

/// Why this build may not link with Rust's own LLD, if it may not.
fn why_not_lld(flags: &str) -> Option<String> {
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" {
        return Some(format!("{target} does not link with LLD by default"));
    }
    if env::var_os("RUSTC_LINKER").is_some() || flags.contains("link") {
        return Some("another linker or linking flags are set".into());
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // `rustc 1.95.0 (59807616e 2026-04-14)`
    let mut numbers = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) >= (1, 90) => None,
        _ => Some(format!(
            "`{} -V` says {:?}: not Rust 1.90 or later, whose linker is LLD",
            rustc,
            version.trim()
        )),
    }
}
