//! A real OpenStack Keystone for test binaries: one per test process, started on first use by
//! tests/keystone/harness.py (Keystone 30.0.0 under gunicorn, SQLite, fernet tokens) and seeded
//! with the projects and users below. Tests get tokens from it the way clients do and validate them
//! the way our server's Keystone mode does.
//!
//! Include it next to `support` (it uses `crate::support::{python_env, tool_dir}`):
//!
//! ```ignore
//! #[path = "support/mod.rs"]
//! mod support;
//! #[path = "support/keystone.rs"]
//! mod keystone;
//! ```
//!
//! Seeded (domain `default`, password `<name>-secret`, see [`password`]): project `service` with
//! user `blazar` (admin; the account our server validates tokens with), projects `alpha` and
//! `beta`, users `alice` (member of alpha), `bob` (member of beta), `carol` (admin on alpha),
//! `dave` (reader on alpha); and the bootstrap `admin` user with admin on project `admin`.
//!
//! Keystone never outlives the test process: it is killed at exit (an `atexit` hook; statics are
//! never dropped), a watchdog thread in gunicorn kills it when this process is gone however it
//! died, and the next start removes the run directories of dead processes.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    ffi::c_int,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::support::{python_env, tool_dir};

/// One virtualenv for Keystone and the clients that talk to it, pinned.
pub const PACKAGES: &[&str] = &[
    "keystone==30.0.0",
    "gunicorn==27.0.1",
    "python-blazarclient==4.6.0",
    "python-openstackclient==10.5.0",
];

pub const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keystone/harness.py");
/// The script that drives the `blazar` CLI through Keystone (see its docstring).
pub const BLAZAR_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/keystone/blazar_with_keystone.py"
);

/// The password of a seeded user.
pub fn password(user: &str) -> String {
    format!("{user}-secret")
}

pub struct Keystone {
    /// `http://127.0.0.1:PORT/v3`
    pub auth_url: String,
    /// A token of `admin` scoped to project `admin` (valid for an hour).
    pub admin_token: String,
    /// Project ids by name: admin, service, alpha, beta.
    pub projects: HashMap<String, String>,
    /// User ids by name: admin, blazar, alice, bob, carol, dave.
    pub users: HashMap<String, String>,
    /// Role ids by name: admin, manager, member, reader, service.
    pub roles: HashMap<String, String>,
    /// gunicorn's master (also its process group).
    pub pid: i32,
    /// Where its config, database and logs (keystone.log, gunicorn.log) are.
    pub dir: PathBuf,
    venv: PathBuf,
}

/// A token issued through an application credential that expires soon (see
/// [`Keystone::short_lived_token`]).
pub struct ShortLivedToken {
    pub token: String,
    /// As Keystone reports it (whole seconds).
    pub expires_at: DateTime<Utc>,
}

static SHARED: OnceLock<Result<Arc<Keystone>, String>> = OnceLock::new();

/// The Keystone of this test process, started on first call (blocking: seconds when the
/// virtualenv and the bootstrapped template exist, about a minute on a fresh clone). From async
/// code use [`shared`]. Panics loudly if Keystone cannot be installed or started; after a failure
/// every later call fails at once with the same message.
pub fn start() -> Arc<Keystone> {
    let started = SHARED.get_or_init(|| {
        std::panic::catch_unwind(|| Arc::new(launch())).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        })
    });
    match started {
        Ok(keystone) => keystone.clone(),
        Err(e) => panic!("the test Keystone could not be started: {e}"),
    }
}

/// [`start`] without blocking the async runtime.
pub async fn shared() -> Arc<Keystone> {
    tokio::task::spawn_blocking(start)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn launch() -> Keystone {
    let t0 = Instant::now();
    let venv = python_env("keystone", PACKAGES);
    let t_venv = t0.elapsed();
    let root = tool_dir("keystone");
    let dir = root.join(format!("run-{}", std::process::id()));
    let mut last_failure = String::new();
    // A free port can be taken by someone else between our probe and gunicorn's bind; then
    // gunicorn reports "Connection in use" and we try another.
    for _ in 0..3 {
        let port = free_port();
        let out = Command::new(venv.join("bin/python"))
            .arg(HARNESS)
            .arg("start")
            .arg("--dir")
            .arg(&dir)
            .arg("--port")
            .arg(port.to_string())
            .arg("--cache-dir")
            .arg(root.join("templates"))
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {HARNESS}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            let state: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "harness start printed no JSON ({e}):\n{}",
                    String::from_utf8_lossy(&out.stdout)
                )
            });
            let keystone = Keystone::from_state(&state, venv);
            register_exit_kill(keystone.pid, &keystone.dir);
            eprintln!(
                "keystone: virtualenv ready in {:.1} s; {}",
                t_venv.as_secs_f64(),
                stderr.lines().last().unwrap_or_default()
            );
            return keystone;
        }
        last_failure = format!(
            "harness start failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        if !stderr.contains("Connection in use") {
            break;
        }
    }
    panic!("{last_failure}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ids(state: &Value, key: &str) -> HashMap<String, String> {
    state[key]
        .as_object()
        .unwrap_or_else(|| panic!("harness state without {key}: {state}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

impl Keystone {
    fn from_state(state: &Value, venv: PathBuf) -> Self {
        let text = |key: &str| {
            state[key]
                .as_str()
                .unwrap_or_else(|| panic!("harness state without {key}: {state}"))
                .to_string()
        };
        Keystone {
            auth_url: text("auth_url"),
            admin_token: text("admin_token"),
            projects: ids(state, "projects"),
            users: ids(state, "users"),
            roles: ids(state, "roles"),
            pid: state["pid"].as_i64().unwrap() as i32,
            dir: PathBuf::from(text("dir")),
            venv,
        }
    }

    /// The virtualenv with `blazar`, `openstack` and Keystone (`venv().join("bin/blazar")`).
    pub fn venv(&self) -> PathBuf {
        self.venv.clone()
    }

    /// POST /v3/auth/tokens with a password, scoped to a project of domain `default`. Returns the
    /// token and the response body (`token.catalog`, `token.roles`, ...), or the status and body
    /// of a refusal.
    pub async fn try_password_token(
        &self,
        user: &str,
        password: &str,
        project: &str,
    ) -> Result<(String, Value), (u16, String)> {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }});
        self.issue(&body).await
    }

    /// A project-scoped token of `user` (panics if Keystone refuses).
    pub async fn password_token(&self, user: &str, password: &str, project: &str) -> String {
        self.try_password_token(user, password, project)
            .await
            .unwrap_or_else(|(status, body)| {
                panic!("token for {user} on {project}: Keystone said {status}: {body}")
            })
            .0
    }

    /// A token of `user` on `project` that expires in about `ttl` (Keystone rounds down to the
    /// second), with the same roles as a password token. The Keystone is shared, so its token
    /// lifetime stays an hour; a short token comes from an application credential that expires
    /// at now + ttl, which caps the expiry of tokens issued with it.
    pub async fn short_lived_token(
        &self,
        user: &str,
        password: &str,
        project: &str,
        ttl: Duration,
    ) -> ShortLivedToken {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let token = self.password_token(user, password, project).await;
        let user_id = self.user_id(user);
        let expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap();
        let name = format!(
            "short-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            expires.timestamp_micros()
        );
        let resp = http()
            .post(format!(
                "{}/users/{user_id}/application_credentials",
                self.auth_url
            ))
            .header("x-auth-token", &token)
            .json(&json!({"application_credential": {
                "name": name,
                "expires_at": expires.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            }}))
            .send()
            .await
            .expect("POST application_credentials");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "application credential for {user}: {body}");
        let cred = &body["application_credential"];
        let (token, body) = self
            .issue(&json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": cred["id"], "secret": cred["secret"]},
            }}}))
            .await
            .unwrap_or_else(|(s, b)| panic!("token from application credential: {s}: {b}"));
        let expires_at = body["token"]["expires_at"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .unwrap_or_else(|| panic!("token without expires_at: {body}"))
            .with_timezone(&Utc);
        ShortLivedToken { token, expires_at }
    }

    async fn issue(&self, body: &Value) -> Result<(String, Value), (u16, String)> {
        let resp = http()
            .post(format!("{}/auth/tokens", self.auth_url))
            .json(body)
            .send()
            .await
            .expect("POST /v3/auth/tokens");
        let status = resp.status().as_u16();
        let token = resp
            .headers()
            .get("x-subject-token")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap_or_default();
        match (status, token) {
            (201, Some(token)) => Ok((token, serde_json::from_str(&text).unwrap_or(Value::Null))),
            _ => Err((status, text)),
        }
    }

    /// GET /v3/auth/tokens: what our server does with a caller's token. Returns the status and
    /// the body (`token.user`, `token.project`, `token.roles`, `token.expires_at` on 200).
    pub async fn validate(&self, auth_token: &str, subject_token: &str) -> (u16, Value) {
        let resp = http()
            .get(format!("{}/auth/tokens", self.auth_url))
            .header("x-auth-token", auth_token)
            .header("x-subject-token", subject_token)
            .send()
            .await
            .expect("GET /v3/auth/tokens");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// DELETE /v3/auth/tokens with the admin token: the token is invalid from now on.
    pub async fn revoke(&self, token: &str) {
        let resp = http()
            .delete(format!("{}/auth/tokens", self.auth_url))
            .header("x-auth-token", &self.admin_token)
            .header("x-subject-token", token)
            .send()
            .await
            .expect("DELETE /v3/auth/tokens");
        let status = resp.status().as_u16();
        assert_eq!(
            status,
            204,
            "revoking a token: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// Points the catalog's `reservation` service (name `blazar`; public, internal and admin
    /// endpoints) at `url`, our server's `.../v1`. Clients with password auth then find us. The
    /// catalog is shared by every test of the process: tests that move it must not run at once.
    pub async fn set_reservation_endpoint(&self, url: &str) {
        self.set_endpoint("reservation", "blazar", url).await;
    }

    /// Points the catalog's service of type `kind` (named `name`; public, internal and admin
    /// endpoints) at `url`: `compute` makes our server find Nova there.
    pub async fn set_endpoint(&self, kind: &str, name: &str, url: &str) {
        let python = self.venv.join("bin/python");
        let (dir, kind, name, url) = (
            self.dir.clone(),
            kind.to_string(),
            name.to_string(),
            url.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            crate::support::run(
                Command::new(python)
                    .arg(HARNESS)
                    .args([
                        "set-endpoint",
                        "--url",
                        &url,
                        "--type",
                        &kind,
                        "--name",
                        &name,
                    ])
                    .arg("--dir")
                    .arg(dir),
            )
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }

    /// The id of a seeded user.
    pub fn user_id(&self, user: &str) -> &str {
        self.users
            .get(user)
            .unwrap_or_else(|| panic!("no seeded user {user}"))
    }

    /// The id of a seeded project.
    pub fn project_id(&self, project: &str) -> &str {
        self.projects
            .get(project)
            .unwrap_or_else(|| panic!("no seeded project {project}"))
    }

    /// `--os-*` flags for the `blazar` and `openstack` CLIs: password auth as `user` on `project`.
    pub fn cli_auth_args(&self, user: &str, project: &str) -> Vec<String> {
        [
            ("--os-auth-type", "password"),
            ("--os-auth-url", self.auth_url.as_str()),
            ("--os-username", user),
            ("--os-password", &password(user)),
            ("--os-project-name", project),
            ("--os-user-domain-id", "default"),
            ("--os-project-domain-id", "default"),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }

    /// Kills Keystone now (it is also killed when the process exits).
    pub fn stop(&self) {
        kill_if_ours(self.pid, &self.dir);
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client per call: the Keystone is shared by tests that each run their own tokio runtime, and a
/// pooled connection from a runtime that has ended fails the next request.
fn http() -> reqwest::Client {
    // reqwest is built without a default TLS crypto provider and refuses to build a client until
    // one is installed; the app installs the same one, but a test may ask Keystone for tokens
    // before (or without) starting an app.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

// The process-exit hook. libc is not a dependency of this crate, but std links it, so the two
// functions are declared here.
unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> c_int;
    fn kill(pid: i32, signal: c_int) -> c_int;
}
const SIGKILL: c_int = 9;

static AT_EXIT: OnceLock<(i32, PathBuf)> = OnceLock::new();

fn register_exit_kill(pid: i32, dir: &Path) {
    extern "C" fn kill_keystone() {
        if let Some((pid, dir)) = AT_EXIT.get() {
            kill_if_ours(*pid, dir);
        }
    }
    if AT_EXIT.set((pid, dir.to_path_buf())).is_ok() {
        // SAFETY: registers a plain function; it runs once, at exit, on the exiting thread.
        let rc = unsafe { atexit(kill_keystone) };
        assert_eq!(rc, 0, "atexit");
    }
}

/// SIGKILLs gunicorn's process group (master and worker), but only while `pid` is still the
/// gunicorn running in `dir`: after it died the pid may belong to someone else.
fn kill_if_ours(pid: i32, dir: &Path) {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
    if pid > 0 && cwd.is_ok_and(|cwd| cwd == dir) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            kill(-pid, SIGKILL);
        }
    }
}
