//! Cost of the per-request checks: UserSig generation and verification, TC3
//! verification. Baseline in the same run: Tencent's official Python
//! `tls-sig-api-v2` generating the same UserSig (from the test venv, if set up).
//!
//! Run: `cargo bench --bench auth` (after `make test` has made `.venv/`).

use std::hint::black_box;
use std::process::Command;

use roomcast::auth::tc3::{self, SignedRequest};
use roomcast::auth::usersig::{self, UserBufCheck};

#[path = "common/timing.rs"]
mod timing;
use timing::per_call_us;

const N: u32 = 20_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

fn python_gen_us() -> Option<f64> {
    let py = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = format!(
        "import time, TLSSigAPIv2\n\
         api = TLSSigAPIv2.TLSSigAPIv2(1400000000, '{KEY}')\n\
         for _ in range({w}): api.gen_sig('xiaojun', 15552000)\n\
         t = time.perf_counter()\n\
         for _ in range({N}): api.gen_sig('xiaojun', 15552000)\n\
         print((time.perf_counter() - t) * 1e6 / {N})",
        w = N / 10
    );
    let out = Command::new(py).args(["-c", &script]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn main() {
    let now = 1_700_000_000;
    let gen_us = per_call_us(N, || {
        black_box(usersig::generate(
            1_400_000_000,
            KEY,
            "xiaojun",
            15_552_000,
            now,
            None,
        ));
    });
    let sig = usersig::generate(1_400_000_000, KEY, "xiaojun", 15_552_000, now, None);
    let verify_us = per_call_us(N, || {
        black_box(
            usersig::verify(&sig, 1_400_000_000, KEY, "xiaojun", now, UserBufCheck::Any).is_ok(),
        );
    });

    let body = br#"{"SdkAppId": 1400188366, "RoomId": 1234}"#;
    let auth = tc3::authorization_for_post(
        "AKID",
        "secret",
        now,
        "127.0.0.1:8080",
        "application/json",
        body,
    );
    let headers = |name: &str| match name {
        "authorization" => Some(auth.as_str()),
        "x-tc-timestamp" => Some("1700000000"),
        "host" => Some("127.0.0.1:8080"),
        "content-type" => Some("application/json"),
        _ => None,
    };
    let tc3_us = per_call_us(N, || {
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            header: &headers,
            body,
        };
        black_box(tc3::verify(&req, now, 300, |_| Some("secret")).is_ok());
    });

    println!("usersig generate   roomcast {gen_us:8.2} us/op");
    match python_gen_us() {
        Some(py) => println!(
            "usersig generate   python tls-sig-api-v2 {py:8.2} us/op   ratio roomcast/python = {:.3}",
            gen_us / py
        ),
        None => println!(
            "usersig generate   python baseline unavailable (run `make test` once to create .venv)"
        ),
    }
    println!("usersig verify     roomcast {verify_us:8.2} us/op");
    println!("tc3 verify         roomcast {tc3_us:8.2} us/op");
}
