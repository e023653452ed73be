//! The `halley` binary as a child process, for tests that need what only the binary wires up
//! (the admin listener, configuration from options and the environment).

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::within;

/// A running `halley` on loopback ports the system picked. Killed when dropped.
pub struct Halley {
    /// The public listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    child: Child,
}

impl Halley {
    /// Starts the binary with `args` after `--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`
    /// and `env`, and waits for both addresses on its stdout.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_halley"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("HALLEY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn halley");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let line = within("halley's addresses on stdout", lines.next_line())
                .await
                .expect("read stdout")
                .expect("halley exited before printing its addresses");
            let parse = |rest: &str| rest.parse::<SocketAddr>().ok();
            if let Some(rest) = line.strip_prefix("admin listening on http://") {
                admin = parse(rest);
            } else if let Some(rest) = line.strip_prefix("listening on http://") {
                addr = parse(rest);
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Halley {
            addr: addr.unwrap_or_else(|| unreachable!("the loop above ends only with both")),
            admin: admin.unwrap_or_else(|| unreachable!("the loop above ends only with both")),
            child,
        }
    }

    /// Runs the binary with `args` to its end (it is expected to refuse them) and returns its
    /// exit code and stderr.
    pub async fn refuse(args: &[&str]) -> (Option<i32>, String) {
        let output = within(
            "halley to exit",
            Command::new(env!("CARGO_BIN_EXE_halley"))
                .args(args)
                .stdout(Stdio::null())
                .output(),
        )
        .await
        .expect("run halley");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM (through `kill`: no `unsafe` here).
    pub async fn terminate(&self) {
        let pid = self.pid().expect("halley is still running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits, at most `limit`, for the process to exit; returns its exit code.
    pub async fn exited(&mut self, limit: std::time::Duration) -> Option<i32> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("halley exits after SIGTERM")
            .expect("wait for halley")
            .code()
    }
}
