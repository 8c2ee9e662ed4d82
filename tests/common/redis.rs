//! A redis-server of the test's own (Debian's, which `scripts/setup.sh
//! --test` installs), on a loopback port, without persistence.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::TempDir;

/// A redis-server of our own: no persistence, loopback, killed by its id.
pub struct Redis {
    pub child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        let dir = TempDir::new("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", dir.0.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh --test installs it)");
        let r = Redis {
            child,
            port,
            _dir: dir,
        };
        super::wait_for("redis-server to answer", Duration::from_secs(10), || {
            r.cli(&["PING"]).as_deref() == Some("PONG")
        });
        r
    }

    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
