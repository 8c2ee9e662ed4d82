//! The command line a user types: `usersig gen|verify` and `profile check`.

mod common;

use std::process::Command;

use common::BIN;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn usersig_gen_then_verify() {
    let (code, sig) = run(&[
        "usersig",
        "gen",
        "--sdkappid",
        "1400000000",
        "--key",
        "k3y",
        "--userid",
        "alice",
    ]);
    assert_eq!(code, 0, "{sig}");
    let sig = sig.trim();
    assert!(
        !sig.contains(char::is_whitespace),
        "the sig alone on stdout: {sig:?}"
    );

    let (code, out) = run(&[
        "usersig",
        "verify",
        "--sdkappid",
        "1400000000",
        "--key",
        "k3y",
        "--userid",
        "alice",
        "--sig",
        sig,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("identifier: alice") && out.contains("sdkappid: 1400000000"),
        "{out}"
    );
    assert!(out.contains("expire: 15552000"), "{out}");

    for (args, reason) in [
        (
            [
                "--sdkappid",
                "1400000000",
                "--key",
                "other",
                "--userid",
                "alice",
            ],
            "bad signature",
        ),
        (
            [
                "--sdkappid",
                "1400000000",
                "--key",
                "k3y",
                "--userid",
                "bob",
            ],
            "identifier mismatch",
        ),
        (
            [
                "--sdkappid",
                "1400000009",
                "--key",
                "k3y",
                "--userid",
                "alice",
            ],
            "sdkappid mismatch",
        ),
    ] {
        let mut a = vec!["usersig", "verify"];
        a.extend(args);
        a.extend(["--sig", sig]);
        let (code, out) = run(&a);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(reason), "{out}");
        assert_eq!(out.lines().count(), 1, "one line: {out}");
    }
    let (code, out) = run(&[
        "usersig",
        "verify",
        "--sdkappid",
        "1",
        "--key",
        "k",
        "--userid",
        "a",
        "--sig",
        "!!!",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("malformed"), "{out}");
}

#[test]
fn usersig_verify_reports_expiry_of_an_official_token() {
    // The official demo token: issued 2023-11-14 for 180 days, long expired.
    let sig = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__";
    let (code, out) = run(&[
        "usersig",
        "verify",
        "--sdkappid",
        "1400000000",
        "--key",
        "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e",
        "--userid",
        "xiaojun",
        "--sig",
        sig,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("expired"), "{out}");
}

#[test]
fn profile_check_accepts_shipped_and_names_bad_fields() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut args = vec!["profile", "check"];
    args.extend(files.iter().map(String::as_str));
    let (code, out) = run(&args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches(": ok (").count(), 6, "{out}");

    let tmp = common::TempDir::new("pc");
    let bad = tmp.0.join("bad.toml");
    std::fs::write(&bad, "# my profile\n[audio]\nbitrate_kbps = 900\n").unwrap();
    let (code, out) = run(&["profile", "check", files[0].as_str(), bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "{}:3: audio.bitrate_kbps: 900 is out of range 8..=500",
            bad.display()
        )),
        "{out}"
    );
    let (code, out) = run(&["profile", "check", "/nonexistent.toml"]);
    assert_eq!(code, 1);
    assert!(out.contains("/nonexistent.toml: cannot read"), "{out}");
}
