//! The real `blazar-server` binary as a child process, for tests that kill it (SIGKILL) or run
//! several instances on one database. Include with `#[path = "support/process.rs"] mod process;`.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Server {
    child: Child,
    pub base: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sqlite_url(db: &Path) -> String {
    format!("sqlite://{}?mode=rwc", db.display())
}

impl Server {
    /// Starts `blazar-server serve` on a free port with a 2 s event claim and waits until it answers.
    pub async fn start(database_url: &str, log: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(database_url, log, extra, &[]).await
    }

    /// As [`Server::start`], with extra environment variables (`BLAZAR_FAILPOINTS`, ...).
    pub async fn start_with_env(
        database_url: &str,
        log: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        // This process talks HTTP too (reqwest with rustls): it needs a crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_blazar-server"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--database-url", database_url])
            .args(["--event-claim-seconds", "2", "--log-filter", "warn"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        while client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits (up to `limit`) for the process to exit; returns its status.
    pub async fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the server did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
