//! Lays out the gateway's hot code side by side in release builds.
//!
//! A bypass relay sleeps between messages, and each wake finds its code
//! cold: what it costs depends on how many cache lines and pages the code
//! it runs is spread over, not only on how many instructions it runs. The
//! linker places functions in the order it meets them, so the few hundred
//! that relay a message sit among 30,000 others, on about 200 pages.
//! `link/hot-functions.txt` names them (hottest first, as
//! `cargo bench --bench relay_instructions` saw them run, in this build and
//! in the benches' build, whose symbols differ); they go first, and a
//! relayed message runs from about 70 pages (the C library's included)
//! instead of 200.
//!
//! The list is handed to the linker as a linker script that places each
//! function's own section (`.text.<symbol>`; Rust gives every function
//! one) at the start of `.text`, in the list's order; the rest of `.text`
//! follows. (Not in an output section of its own: valgrind names only
//! functions inside `.text`, and the bench that makes the list would lose
//! them.) A script takes patterns where a symbol ordering file takes exact
//! names, so the list outlives the symbols it was made from:
//! - a symbol's `.llvm.N` suffix (a function LLVM made local, numbered
//!   by its module's contents, so renumbered by any change to the module)
//!   is matched whatever its number: the list may name it either way;
//! - an entry may put `*` for a symbol's hash (`17h*E`): the bench writes
//!   it so where the name without its hash was one function only in the
//!   build it measured (not a generic function's many instances), so a
//!   function whose hash changes keeps its place (20 of the list's did
//!   after one change of a dozen lines to the relay's path).
//!
//! A function LLVM merged into another of the same code is an alias of it,
//! with no section of its own: the bench names every symbol at a hot
//! function's address, so the one that names the section is among them.
//!
//! Only where the linker is LLD: Rust's own (`rust-lld`, the default for
//! x86_64 Linux since Rust 1.90), with no other linker chosen. An entry
//! the build lacks (renamed since) matches nothing; a function the list
//! lacks is laid out as before. Builds with profile-guided optimisation
//! (`make pgo`) lay out by their profile instead. Debug builds are left as
//! they are.

use std::env;
use std::path::Path;
use std::process::Command;

#[path = "build/names.rs"]
mod names;
use names::without_llvm_suffix;

const LIST: &str = "link/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/names.rs");
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
            let entries = std::fs::read_to_string(&list).expect("the list is a file");
            let script = Path::new(&env::var("OUT_DIR").expect("set by cargo")).join("hot.ld");
            std::fs::write(&script, linker_script(&entries)).expect("OUT_DIR is writable");
            println!(
                "cargo:rustc-link-arg-bin=roomcast=-Wl,-T,{}",
                script.display()
            );
        }
        Some(why) => println!(
            "cargo:warning=the relay's hot code is laid out as the linker finds it, not side by side: {why}"
        ),
    }
}

/// The linker script that puts the sections of the functions `list`
/// names (a symbol or a pattern a line, hottest first) first in `.text`,
/// in its order. A line that is not a symbol of the characters mangling uses
/// (a pattern's `*` aside) is skipped: the script must not fail the build.
fn linker_script(list: &str) -> String {
    let mut script = String::from(
        "/* Made by build.rs from link/hot-functions.txt: the relay's hot functions first. */\nSECTIONS\n{\n  .text :\n  {\n",
    );
    let mut seen = std::collections::HashSet::new();
    for line in list.lines().map(str::trim) {
        let name = without_llvm_suffix(line);
        let mangled = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '*'));
        if name.is_empty() || !mangled || !seen.insert(name) {
            continue;
        }
        // A function LLVM judged cold (`#[cold]`, a slow path) has its
        // section under `.text.unlikely.`.
        script.push_str(&format!(
            "    *(.text.{name} .text.{name}.llvm.* .text.unlikely.{name} .text.unlikely.{name}.llvm.*)\n"
        ));
    }
    // The rest of `.text` follows (the linker adds what no line names to
    // the output section of its name). Where `.text` was: before `.init`.
    script.push_str("  }\n}\nINSERT BEFORE .init;\n");
    script
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
