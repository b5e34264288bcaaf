//! A real OpenStack Nova for test binaries: one per test process, started on first use by
//! tests/nova/harness.py (nova 34.0.0's API, conductor, scheduler with blazar-nova's
//! BlazarFilter, and fake-driver computes; placement 16.0.0; glance 33.0.0) on the machine's
//! MariaDB and RabbitMQ, with databases, vhost, ports and directory of its own. Tests talk to it
//! the way our server's Nova driver will: REST with a microversion header.
//!
//! Include it next to `support` (it uses `crate::support::{python_env, tool_dir}`):
//!
//! ```ignore
//! #[path = "support/mod.rs"]
//! mod support;
//! #[path = "support/nova.rs"]
//! mod nova;
//! ```
//!
//! The tests of one binary share one Nova with a fixed set of hosts (`compute-a`, `compute-b`,
//! ...; `BLAZAR_TEST_NOVA_COMPUTES`, default 2), so they take turns: each holds [`exclusive`]
//! and starts from [`Nova::reset`]. The noauth API takes `X-Auth-Token: <user>:<project>`
//! (`admin:admin` is an admin). The one stand-in is Neutron: a stub that answers empty lists,
//! because nova-api asks for ports on every GET /servers* and our servers have none.
//!
//! Nova never outlives the test process: `harness.py stop` runs at exit (an `atexit` hook;
//! statics are never dropped), the harness's watchdog cleans up when this process is gone however
//! it died, and the next start cleans up the runs of dead processes.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{python_env, tool_dir};

pub const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nova/harness.py");
/// The nova virtualenv (nova, placement, blazar-nova, keystonemiddleware), pinned.
const NOVA_REQUIREMENTS: &str = include_str!("../nova/requirements-nova.txt");
/// The glance virtualenv, pinned.
const GLANCE_REQUIREMENTS: &str = include_str!("../nova/requirements-glance.txt");
/// The compute API microversion of [`Nova::request`]; [`Nova::request_at`] takes another.
pub const MICROVERSION: &str = "2.74";
/// How long a server may take to become ACTIVE or ERROR, or to disappear after a delete.
const SERVER_TIMEOUT: Duration = Duration::from_secs(120);

fn pins(requirements: &'static str) -> Vec<&'static str> {
    requirements
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

pub struct Nova {
    /// `http://127.0.0.1:PORT/v2.1`: the noauth nova-api.
    pub compute_url: String,
    /// `http://127.0.0.1:PORT`: glance-api (unauthenticated).
    pub image_url: String,
    /// `http://127.0.0.1:PORT`: placement-api (noauth2: `X-Auth-Token: admin`).
    pub placement_url: String,
    /// `admin:admin`
    pub admin_token: String,
    /// The compute hosts, `compute-a`, `compute-b`, ...
    pub hosts: Vec<String>,
    /// A tiny image (community visibility) and flavor to boot servers with.
    pub image_id: String,
    pub flavor_id: String,
    /// The run's directory: conf/, state/, logs/ (one .log and one .out per service).
    pub dir: PathBuf,
    /// The run's tag, in its database and vhost names.
    pub tag: String,
    /// MariaDB databases by role: api, cell0, cell1, placement.
    pub databases: HashMap<String, String>,
    /// The RabbitMQ vhost.
    pub vhost: String,
    /// Everything the harness printed at start (pids, timings).
    pub started: Value,
    venv: PathBuf,
}

static SHARED: OnceLock<Result<Arc<Nova>, String>> = OnceLock::new();
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Nova of this test process, started on first call (blocking: 12-15 s with 2 computes and
/// about 25 s with 10 when the virtualenvs and the schema template exist; on a fresh clone add
/// about 100 s for the two virtualenvs and 25 s for the real db syncs that make the template).
/// From async code use [`shared`]. Panics loudly, with the harness's output, if Nova cannot be
/// installed or started; after a failure every later call fails at once with the same message.
pub fn start() -> Arc<Nova> {
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
        Ok(nova) => nova.clone(),
        Err(e) => panic!("the test Nova could not be started: {e}"),
    }
}

/// [`start`] without blocking the async runtime.
pub async fn shared() -> Arc<Nova> {
    tokio::task::spawn_blocking(start)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The turn of one test on the shared Nova (its hosts, aggregates and servers are the same for
/// every test of the binary). A panicking test releases it too; the next one calls
/// [`Nova::reset`].
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    TURN.lock().await
}

fn computes() -> usize {
    match std::env::var("BLAZAR_TEST_NOVA_COMPUTES") {
        Ok(n) => n
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .unwrap_or_else(|| panic!("BLAZAR_TEST_NOVA_COMPUTES={n}: want a number >= 1")),
        Err(_) => 2,
    }
}

fn launch() -> Nova {
    let t0 = Instant::now();
    let venv = python_env("nova", &pins(NOVA_REQUIREMENTS));
    let glance = python_env("nova-glance", &pins(GLANCE_REQUIREMENTS));
    let t_venv = t0.elapsed();
    let root = tool_dir("nova");
    let dir = root.join(format!("run-{}", std::process::id()));
    let out = harness(&venv)
        .arg("start")
        .arg("--dir")
        .arg(&dir)
        .arg("--glance-venv")
        .arg(&glance)
        .args(["--computes", &computes().to_string()])
        .args(["--watch-pid", &std::process::id().to_string()])
        .arg("--cache-dir")
        .arg(root.join("templates"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {HARNESS}: {e}"));
    // The harness cleans up after a failed start itself; its stderr has the logs' tails.
    let started: Value = serde_json::from_slice(&out.stdout)
        .ok()
        .filter(|_| out.status.success())
        .unwrap_or_else(|| panic!("{}", failure("harness start", &out)));
    let nova = Nova::from_state(started, venv);
    register_exit_stop(&nova);
    // Straight to the file descriptor, so that CI's log shows Nova's start-up time (the test
    // harness would swallow eprintln! of a passing test).
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "nova: virtualenvs ready in {:.1} s; {}",
        t_venv.as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    nova
}

fn harness(venv: &Path) -> Command {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(HARNESS)
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::null());
    cmd
}

fn failure(what: &str, out: &Output) -> String {
    format!(
        "{what} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A client per call: the Nova is shared by tests that each run their own tokio runtime, and a
/// pooled connection from a runtime that has ended fails the next request.
fn http() -> reqwest::Client {
    // reqwest is built without a default TLS crypto provider and refuses to build a client
    // until one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        // Everything is on 127.0.0.1; a proxy from the environment must not see it.
        .no_proxy()
        .build()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    });
    Ok((status, body))
}

fn items(body: &Value, key: &str) -> Vec<Value> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} list in {body}"))
        .clone()
}

impl Nova {
    fn from_state(state: Value, venv: PathBuf) -> Self {
        let text = |key: &str| {
            state[key]
                .as_str()
                .unwrap_or_else(|| panic!("harness state without {key}: {state}"))
                .to_string()
        };
        let map = |key: &str| -> HashMap<String, String> {
            state[key]
                .as_object()
                .unwrap_or_else(|| panic!("harness state without {key}: {state}"))
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        };
        Nova {
            compute_url: text("compute_url"),
            image_url: text("image_url"),
            placement_url: text("placement_url"),
            admin_token: text("admin_token"),
            hosts: state["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect(),
            image_id: text("image_id"),
            flavor_id: text("flavor_id"),
            dir: PathBuf::from(text("dir")),
            tag: text("tag"),
            databases: map("databases"),
            vhost: text("vhost"),
            started: state,
            venv,
        }
    }

    /// The nova virtualenv (`openstack`, `nova-manage`, python with novaclient).
    pub fn venv(&self) -> PathBuf {
        self.venv.clone()
    }

    /// The last `lines` lines of a service's log (`nova-api`, `nova-scheduler`,
    /// `nova-conductor`, `nova-compute-a`, `placement`, `glance`, `nova-api-keystone`), for
    /// failure messages.
    pub fn log_tail(&self, service: &str, lines: usize) -> String {
        let mut out = String::new();
        for ext in ["log", "out"] {
            let path = self.dir.join("logs").join(format!("{service}.{ext}"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                let all: Vec<&str> = text.lines().collect();
                let from = all.len().saturating_sub(lines);
                out.push_str(&format!(
                    "--- last lines of {} ---\n{}\n",
                    path.display(),
                    all[from..].join("\n")
                ));
            }
        }
        out
    }

    /// The logs that explain a boot or a delete.
    fn boot_logs(&self) -> String {
        let mut out = self.log_tail("nova-scheduler", 30) + &self.log_tail("nova-conductor", 30);
        for host in &self.hosts {
            out += &self.log_tail(&format!("nova-{host}"), 15);
        }
        out
    }

    /// A compute API call at [`MICROVERSION`]; `path` is below `/v2.1`. Panics if Nova does not
    /// answer at all (see [`Nova::try_request`]).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> (u16, Value) {
        self.request_at(MICROVERSION, method, path, body, token)
            .await
    }

    /// [`Nova::request`] at another microversion.
    pub async fn request_at(
        &self,
        microversion: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> (u16, Value) {
        let shown = format!("{method} {path}");
        self.try_request(microversion, method, path, body, token)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "nova-api did not answer {shown}: {e}\n{}",
                    self.log_tail("nova-api", 30)
                )
            })
    }

    /// A compute API call that returns the transport error (connection refused while the API
    /// is stopped) instead of panicking.
    pub async fn try_request(
        &self,
        microversion: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = http()
            .request(method, format!("{}{path}", self.compute_url))
            .header("x-auth-token", token)
            .header("openstack-api-version", format!("compute {microversion}"))
            .header("accept", "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req).await
    }

    /// An admin call that must succeed (2xx); returns the body.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let shown = format!("{method} {path}");
        let (status, body) = self.request(method, path, body, &self.admin_token).await;
        assert!(
            (200..300).contains(&status),
            "nova-api {shown}: {status} {body}\n{}",
            self.log_tail("nova-api", 20)
        );
        body
    }

    /// A placement call as its admin (`X-Auth-Token: admin`, the latest microversion).
    pub async fn placement(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = http()
            .request(method, format!("{}{path}", self.placement_url))
            .header("x-auth-token", "admin")
            .header("openstack-api-version", "placement latest")
            .header("accept", "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req)
            .await
            .unwrap_or_else(|e| panic!("placement did not answer {path}: {e}"))
    }

    pub async fn aggregates(&self) -> Vec<Value> {
        items(
            &self.admin(Method::GET, "/os-aggregates", None).await,
            "aggregates",
        )
    }

    pub async fn aggregate_by_name(&self, name: &str) -> Option<Value> {
        self.aggregates()
            .await
            .into_iter()
            .find(|a| a["name"] == name)
    }

    /// Boots a server of `project` (token `user-<project>:<project>`) from the tiny image and
    /// flavor, with no network, and the scheduler hint `reservation` if given; waits until it is
    /// ACTIVE or ERROR and returns it as an admin sees it (`status`, `OS-EXT-SRV-ATTR:host`,
    /// `fault`).
    pub async fn boot(&self, project: &str, hint: Option<&str>) -> Value {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!("harness-{project}-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let mut body = json!({"server": {
            "name": name,
            "imageRef": self.image_id,
            "flavorRef": self.flavor_id,
            "networks": "none",
        }});
        if let Some(hint) = hint {
            body["os:scheduler_hints"] = json!({ "reservation": hint });
        }
        let token = format!("user-{project}:{project}");
        let (status, created) = self
            .request(Method::POST, "/servers", Some(body), &token)
            .await;
        assert_eq!(
            status,
            202,
            "booting {name}: {created}\n{}",
            self.log_tail("nova-api", 20)
        );
        let id = created["server"]["id"].as_str().unwrap().to_string();
        let started = Instant::now();
        loop {
            let (status, body) = self
                .request(
                    Method::GET,
                    &format!("/servers/{id}"),
                    None,
                    &self.admin_token,
                )
                .await;
            assert_eq!(status, 200, "GET /servers/{id}: {body}");
            let server = &body["server"];
            if server["status"] == "ACTIVE" || server["status"] == "ERROR" {
                return server.clone();
            }
            assert!(
                started.elapsed() < SERVER_TIMEOUT,
                "server {name} ({id}) still {} after {SERVER_TIMEOUT:?}\n{}",
                server["status"],
                self.boot_logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every server of every project (admin, `all_tenants`), with details.
    pub async fn servers(&self) -> Vec<Value> {
        items(
            &self
                .admin(Method::GET, "/servers/detail?all_tenants=1", None)
                .await,
            "servers",
        )
    }

    /// The servers on a host, of every project: what Blazar lists before it frees a host.
    pub async fn servers_on(&self, host: &str) -> Vec<Value> {
        items(
            &self
                .admin(
                    Method::GET,
                    &format!("/servers/detail?all_tenants=1&host={host}"),
                    None,
                )
                .await,
            "servers",
        )
    }

    /// Deletes a server (gone already is fine); it disappears a moment later.
    pub async fn delete_server(&self, id: &str) {
        let (status, body) = self
            .request(
                Method::DELETE,
                &format!("/servers/{id}"),
                None,
                &self.admin_token,
            )
            .await;
        assert!(
            status == 204 || status == 404,
            "DELETE /servers/{id}: {status} {body}"
        );
    }

    /// Waits (bounded) until no server is left on the host.
    pub async fn wait_servers_gone(&self, host: &str) {
        let started = Instant::now();
        loop {
            let left = self.servers_on(host).await;
            if left.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < SERVER_TIMEOUT,
                "{} servers still on {host} after {SERVER_TIMEOUT:?}: {:?}\n{}",
                left.len(),
                left.iter().map(|s| &s["status"]).collect::<Vec<_>>(),
                self.boot_logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The host's nova-compute service as os-services shows it (`id`, `status`
    /// enabled/disabled, `state` up/down, `disabled_reason`).
    pub async fn service_state(&self, host: &str) -> Value {
        let body = self
            .admin(
                Method::GET,
                &format!("/os-services?binary=nova-compute&host={host}"),
                None,
            )
            .await;
        let services = items(&body, "services");
        assert_eq!(services.len(), 1, "nova-compute services of {host}: {body}");
        services[0].clone()
    }

    /// Disables or enables the host's nova-compute service (what an operator or a failure
    /// monitor does); returns the service.
    pub async fn set_service(&self, host: &str, enabled: bool) -> Value {
        let id = self.service_state(host).await["id"]
            .as_str()
            .expect("service ids are UUIDs from microversion 2.53")
            .to_string();
        let body = if enabled {
            json!({"status": "enabled"})
        } else {
            json!({"status": "disabled", "disabled_reason": "disabled by a test"})
        };
        self.admin(Method::PUT, &format!("/os-services/{id}"), Some(body))
            .await["service"]
            .clone()
    }

    /// A clean slate between tests: the noauth API running, no server, no aggregate (hosts
    /// removed first, as Nova requires), every compute service enabled.
    pub async fn reset(&self) {
        if self
            .try_request(MICROVERSION, Method::GET, "/", None, &self.admin_token)
            .await
            .is_err()
        {
            self.start_api().await; // an earlier test stopped it and failed
        }
        let servers = self.servers().await;
        for server in &servers {
            self.delete_server(server["id"].as_str().unwrap()).await;
        }
        let started = Instant::now();
        while !self.servers().await.is_empty() {
            assert!(
                started.elapsed() < SERVER_TIMEOUT,
                "servers left after {SERVER_TIMEOUT:?}: {:?}\n{}",
                self.servers().await,
                self.boot_logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for aggregate in self.aggregates().await {
            let id = &aggregate["id"];
            for host in aggregate["hosts"].as_array().into_iter().flatten() {
                self.admin(
                    Method::POST,
                    &format!("/os-aggregates/{id}/action"),
                    Some(json!({"remove_host": {"host": host}})),
                )
                .await;
            }
            self.admin(Method::DELETE, &format!("/os-aggregates/{id}"), None)
                .await;
        }
        for host in &self.hosts {
            if self.service_state(host).await["status"] != "enabled" {
                self.set_service(host, true).await;
            }
        }
    }

    async fn harness_call(&self, args: &[&str]) -> Value {
        let mut cmd = harness(&self.venv);
        cmd.args(args).arg("--dir").arg(&self.dir);
        let shown = args.join(" ");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot run {HARNESS} {shown}: {e}"));
        if !out.status.success() {
            panic!("{}", failure(&format!("harness {shown}"), &out));
        }
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Stops the noauth nova-api (SIGKILL); returns once its port refuses connections.
    pub async fn stop_api(&self) {
        self.harness_call(&["stop-api"]).await;
    }

    /// Starts the noauth nova-api again on the same port; returns once it answers.
    pub async fn start_api(&self) {
        self.harness_call(&["start-api"]).await;
    }

    /// How many requests in the noauth nova-api's own request log (the
    /// `nova.api.openstack.requestlog` lines, e.g. `"POST /v2.1/os-aggregates/5/action"
    /// status: 200`) contain `pattern`. A line is written before its response is sent.
    pub async fn api_requests(&self, pattern: &str) -> usize {
        let path = self.dir.join("logs/nova-api.log");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.lines()
            .filter(|l| l.contains("nova.api.openstack.requestlog") && l.contains(pattern))
            .count()
    }

    /// Starts a second nova-api whose pipeline validates tokens with keystonemiddleware against
    /// this Keystone (the account's domains are `Default`); returns its compute URL. A second
    /// call replaces the first.
    pub async fn start_keystone_api(
        &self,
        auth_url: &str,
        username: &str,
        password: &str,
        project_name: &str,
    ) -> String {
        let out = self
            .harness_call(&[
                "start-keystone-api",
                "--auth-url",
                auth_url,
                "--username",
                username,
                "--password",
                password,
                "--project-name",
                project_name,
            ])
            .await;
        out["compute_url"]
            .as_str()
            .unwrap_or_else(|| panic!("start-keystone-api printed {out}"))
            .to_string()
    }

    /// Every image glance lists. Its unauthenticated pipeline shows community images (ours)
    /// only when asked for them, so this asks for all visibilities.
    pub async fn images(&self) -> Vec<Value> {
        let (status, body) = send(
            http()
                .get(format!("{}/v2/images?visibility=all", self.image_url))
                .header("accept", "application/json"),
        )
        .await
        .unwrap_or_else(|e| panic!("glance did not answer: {e}"));
        assert_eq!(status, 200, "GET /v2/images: {body}");
        items(&body, "images")
    }

    /// Stops everything now (it is also stopped when the process exits).
    pub fn stop(&self) {
        let _ = harness(&self.venv)
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// The process-exit hook. libc is not a dependency of this crate, but std links it.
unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

static AT_EXIT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();

fn register_exit_stop(nova: &Nova) {
    extern "C" fn stop_nova() {
        if let Some((venv, dir)) = AT_EXIT.get() {
            // Synchronously: the databases and vhost are gone when the test binary has exited.
            let _ = harness(venv)
                .args(["stop", "--dir"])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    if AT_EXIT.set((nova.venv.clone(), nova.dir.clone())).is_ok() {
        // SAFETY: registers a plain function; it runs once, at exit, on the exiting thread.
        let rc = unsafe { atexit(stop_nova) };
        assert_eq!(rc, 0, "atexit");
    }
}
