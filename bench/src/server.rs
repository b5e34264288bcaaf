//! The server under test: a fresh database, a child process running the Application, its memory.
//!
//! The server runs in a separate process (this binary re-executed with the hidden `serve`
//! subcommand) so that its peak RSS is its own, not the load generator's.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use blazar_server::{app::Application, clock::SystemClock, config::Settings};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

/// Runs the service in this process until standard input closes (the parent drops its end).
///
/// Writes the bound address to `addr_file` once listening, so the parent knows the port.
pub async fn serve(
    database_url: String,
    addr_file: PathBuf,
    log_filter: String,
) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::new(&log_filter);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .init();
    let mut settings = Settings::default();
    settings.api.bind = "127.0.0.1:0".into();
    settings.database.connection = database_url;
    settings.log.filter = log_filter;
    let app = Application::build(settings, Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())?;
    // Written to a temporary name and renamed, so the parent never reads half an address.
    let tmp = addr_file.with_extension("tmp");
    std::fs::write(&tmp, app.addr().to_string()).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &addr_file).map_err(|e| e.to_string())?;
    // EOF on stdin is the stop signal: it also comes when the parent dies, so no orphan stays.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = tx.send(());
    });
    app.run(async move {
        let _ = rx.await;
    })
    .await
    .map_err(|e| e.to_string())
}

/// Where the run's database lives and how to clean it up.
pub enum FreshDb {
    Sqlite {
        dir: PathBuf,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl FreshDb {
    /// A new, empty database: a temporary SQLite file, or a new database on the given server.
    pub async fn create(database_url: Option<&str>, work_dir: &Path) -> Result<Self, String> {
        match database_url {
            None => {
                let url = format!("sqlite://{}?mode=rwc", work_dir.join("bench.db").display());
                Ok(FreshDb::Sqlite {
                    dir: work_dir.to_path_buf(),
                    url,
                })
            }
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let name = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                let admin = Database::connect(u)
                    .await
                    .map_err(|e| format!("connect {u}: {e}"))?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .map_err(|e| format!("create database {name}: {e}"))?;
                let _ = admin.close().await;
                Ok(FreshDb::Postgres {
                    admin_url: u.to_string(),
                    url: with_database(u, &name),
                    name,
                })
            }
            Some(u) => Err(format!(
                "--database-url must be postgres://...; SQLite is the default (got {u})"
            )),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            FreshDb::Sqlite { url, .. } | FreshDb::Postgres { url, .. } => url,
        }
    }

    pub fn label(&self) -> String {
        match self {
            FreshDb::Sqlite { dir, .. } => format!("sqlite {}", dir.join("bench.db").display()),
            FreshDb::Postgres { name, .. } => format!("postgres database {name}"),
        }
    }

    /// On PostgreSQL, `ANALYZE` after the load, as autovacuum does after a bulk load: without
    /// statistics the planner takes 100,000 leases for a few hundred and chooses sequential scans
    /// (the machine this was measured on runs PostgreSQL with autovacuum off). Returns what it did.
    pub async fn analyze(&self) -> Result<Option<String>, String> {
        let FreshDb::Postgres { url, .. } = self else {
            return Ok(None);
        };
        let conn = Database::connect(url.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        conn.execute_unprepared("ANALYZE")
            .await
            .map_err(|e| format!("ANALYZE: {e}"))?;
        let _ = conn.close().await;
        Ok(Some(format!(
            "ANALYZE after loading took {:.1} s",
            started.elapsed().as_secs_f64()
        )))
    }

    /// Bytes on disk: the SQLite file with its WAL, or `pg_database_size`.
    pub async fn size_bytes(&self) -> Option<u64> {
        match self {
            FreshDb::Sqlite { dir, .. } => Some(
                ["bench.db", "bench.db-wal", "bench.db-shm"]
                    .iter()
                    .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
                    .map(|m| m.len())
                    .sum(),
            ),
            FreshDb::Postgres {
                admin_url, name, ..
            } => {
                let admin = Database::connect(admin_url.as_str()).await.ok()?;
                let row = admin
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        format!("SELECT pg_database_size('{name}') AS size"),
                    ))
                    .await
                    .ok()??;
                let size: i64 = row.try_get("", "size").ok()?;
                let _ = admin.close().await;
                Some(size as u64)
            }
        }
    }

    /// Drops the PostgreSQL database (the SQLite file goes with the work directory).
    pub async fn drop_db(&self) -> Result<(), String> {
        if let FreshDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let admin = Database::connect(admin_url.as_str())
                .await
                .map_err(|e| e.to_string())?;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .map_err(|e| format!("drop database {name}: {e}"))?;
            let _ = admin.close().await;
        }
        Ok(())
    }
}

/// The same server URL with another database name (keeps user, host, port and query).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..authority_end], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The child process running `serve`.
pub struct ServerProcess {
    child: Child,
    pub base_url: String,
}

impl ServerProcess {
    /// Starts the child and waits until it listens (migrations included).
    pub fn start(db_url: &str, work_dir: &Path, log_filter: &str) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let addr_file = work_dir.join("server.addr");
        let log = std::fs::File::create(work_dir.join("server.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--database-url")
            .arg(db_url)
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--log-filter")
            .arg(log_filter)
            // The server's own environment must not leak in (e.g. RUST_LOG overriding the filter).
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&addr_file) {
                return Ok(Self {
                    child,
                    base_url: format!("http://{}", addr.trim()),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(work_dir.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "the server exited ({status}) before listening:\n{log}"
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("the server did not listen within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak and current resident memory in KiB (VmHWM, VmRSS of /proc/<pid>/status).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// CPU time (user + system) the server has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// Closes the child's stdin (graceful shutdown) and waits; kills it after 40 s.
    pub fn stop(mut self) -> Result<(), String> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("the server did not stop within 40 s; killed".into());
                }
            }
        }
    }
}

/// `perf record` attached to the server for one row (`--perf-dir`).
pub struct Perf {
    child: Child,
}

impl Perf {
    /// Starts recording; None (with a warning) if perf cannot be run.
    pub fn start(dir: &Path, pid: u32, name: &str) -> Option<Self> {
        let _ = std::fs::create_dir_all(dir);
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "199",
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(dir.join(format!("{name}.data")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => {
                // perf needs a moment to attach to every thread; the row would start unobserved.
                std::thread::sleep(Duration::from_millis(300));
                Some(Perf { child })
            }
            Err(e) => {
                eprintln!("warning: cannot run perf: {e}");
                None
            }
        }
    }

    /// SIGINT makes perf write its file and exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// utime + stime of a /proc/<pid>/stat file, in seconds (clock ticks of 1/100 s on Linux).
pub fn cpu_seconds_of(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it start past the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is index 0, so utime (field 14) is index 11 and stime index 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://postgres@127.0.0.1:5432/test", "bench_x"),
            "postgres://postgres@127.0.0.1:5432/bench_x"
        );
        assert_eq!(
            super::with_database("postgres://u:p@h/db?sslmode=disable", "b"),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://h:1", "b"),
            "postgres://h:1/b"
        );
    }
}
