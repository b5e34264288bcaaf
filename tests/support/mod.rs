//! Shared by the test binaries: `spawn_app` (the real app on port 0 with a fresh database and a
//! manual clock), HTTP helpers, and the tools that external-client tests need (Python virtualenvs,
//! commands with their output shown on failure).
#![allow(dead_code)]

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use blazar_server::{
    app::Application,
    clock::{ManualClock, SharedClock, SystemClock},
    config::Settings,
    jobs::{
        driver::{ResourceDriver, StandaloneDriver},
        runner::Runner,
    },
    nova::sync::NovaSync,
    service::Services,
};
use chrono::{NaiveDate, NaiveDateTime};
use reqwest::{Method, header::HeaderMap};
use serde_json::{Value, json};

/// The manual clock starts here: 2030-01-01 12:00:00 UTC.
pub fn t0() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2030, 1, 1)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap()
}

/// True in the `api_postgres` test binary: the same HTTP tests as `api`, each on a fresh
/// PostgreSQL database on the server named by `BLAZAR_TEST_DATABASE_URL`.
pub fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME") == "api_postgres"
}

/// Why this test cannot run here, if it cannot.
pub fn skip_reason() -> Option<&'static str> {
    (on_postgres() && std::env::var("BLAZAR_TEST_DATABASE_URL").is_err()).then_some(
        "BLAZAR_TEST_DATABASE_URL is not set, so the PostgreSQL run of this test is skipped \
         (.ci/run sets it; e.g. postgres://postgres@127.0.0.1:5432/test)",
    )
}

/// First line of every HTTP test: returns early, saying why, where the test cannot run.
#[macro_export]
macro_rules! skip_if_no_database {
    () => {
        if let Some(why) = $crate::helpers::skip_reason() {
            // Straight to the file descriptor: the test harness would swallow eprintln!.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED {}: {why}", module_path!());
            return;
        }
    };
}

/// A fresh PostgreSQL database for one app; dropped (best effort) with the app.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    async fn create() -> (Self, String) {
        let admin_url = std::env::var("BLAZAR_TEST_DATABASE_URL").expect("checked by skip_reason");
        let name = format!("blazar_t_{}", uuid::Uuid::new_v4().simple());
        let admin = sea_orm::Database::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("BLAZAR_TEST_DATABASE_URL={admin_url}: cannot connect: {e}")
            });
        sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let _ = admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin_url.clone());
        let url = format!("{base}/{name}");
        (Self { admin_url, name }, url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // The test's runtime is shutting down; drop the database from a runtime of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = sea_orm::Database::connect(&url).await {
                    let _ = sea_orm::ConnectionTrait::execute_unprepared(
                        &admin,
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    manual_clock: Option<Arc<ManualClock>>,
    /// The running app's services, for tests that look below the API.
    pub services: Arc<Services>,
    /// The event runner; manual-clock apps do not run it in the background: tests call
    /// `run_due(now)`.
    pub runner: Arc<Runner>,
    /// Reconciliation and health polling, in nova mode.
    pub nova_sync: Option<Arc<NovaSync>>,
    _dir: tempfile::TempDir,
    /// Resolves the app's shutdown future when sent or dropped (the test's end).
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// `Application::run`, to see when it returns.
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _pg: Option<PgDatabase>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts an error envelope with this status, and returns its message.
    #[track_caller]
    pub fn expect_error(self, status: u16) -> String {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_envelope(&self, status);
        self.body["error_message"].as_str().unwrap().to_string()
    }
}

/// Checks the error envelope shape and the request id header.
#[track_caller]
pub fn assert_envelope(r: &Resp, status: u16) {
    let b = &r.body;
    assert_eq!(b["error_code"], json!(status), "envelope: {}", r.text);
    assert!(
        b["error_message"].as_str().is_some_and(|m| !m.is_empty()),
        "envelope: {}",
        r.text
    );
    assert!(
        b["error_name"].as_str().is_some_and(|m| !m.is_empty()),
        "envelope: {}",
        r.text
    );
    assert_eq!(b.as_object().unwrap().len(), 3, "envelope: {}", r.text);
    let rid = r
        .headers
        .get("x-openstack-request-id")
        .expect("request id header");
    assert!(rid.to_str().unwrap().starts_with("req-"));
    assert!(
        r.headers
            .get("content-type")
            .is_some_and(|c| c.to_str().unwrap().starts_with("application/json")),
        "content type of an error"
    );
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// The app with a manual clock starting at [`t0`] and no background runner.
pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_with_driver(configure, Arc::new(StandaloneDriver)).await
}

/// As [`spawn_with`], with another resource driver.
pub async fn spawn_with_driver(
    configure: impl FnOnce(&mut Settings),
    driver: Arc<dyn ResourceDriver>,
) -> TestApp {
    let clock = Arc::new(ManualClock::new(t0()));
    let configure = |s: &mut Settings| {
        s.runner.enabled = false;
        configure(s)
    };
    spawn_clocked(configure, clock.clone(), Some(clock), Some(driver)).await
}

/// The app with a manual clock and no background runner, with the resource driver its settings
/// name (nova mode tests).
pub async fn spawn_manual(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let clock = Arc::new(ManualClock::new(t0()));
    let configure = |s: &mut Settings| {
        s.runner.enabled = false;
        configure(s)
    };
    spawn_clocked(configure, clock.clone(), Some(clock), None).await
}

/// The app on the real clock, with its background runner, for tests that drive it with external
/// clients or real time.
pub async fn spawn_live(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_clocked(configure, Arc::new(SystemClock), None, None).await
}

async fn spawn_clocked(
    configure: impl FnOnce(&mut Settings),
    clock: SharedClock,
    manual_clock: Option<Arc<ManualClock>>,
    driver: Option<Arc<dyn ResourceDriver>>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.api.bind = "127.0.0.1:0".into();
    settings.database.connection = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("blazar.db").display()
    );
    settings.log.filter = "warn".into();
    let pg = if on_postgres() {
        let (db, url) = PgDatabase::create().await;
        settings.database.connection = url;
        Some(db)
    } else {
        None
    };
    configure(&mut settings);
    let app = Application::build_with_driver(settings, clock, driver)
        .await
        .unwrap();
    let nova_sync = app.nova_sync();
    let base = format!("http://{}", app.addr());
    let services = app.services();
    let runner = app.runner();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        manual_clock,
        services,
        runner,
        nova_sync,
        _dir: dir,
        shutdown: Some(tx),
        running: Some(running),
        _pg: pg,
    }
}

impl TestApp {
    /// Stops the app as SIGTERM does and waits for `run` to return; returns how long that took.
    pub async fn stop(&mut self) -> std::time::Duration {
        let started = std::time::Instant::now();
        drop(self.shutdown.take());
        let running = self.running.take().expect("the app runs");
        running.await.unwrap().unwrap();
        started.elapsed()
    }

    /// Runs the events due at the manual clock's time.
    pub async fn run_due(&self) -> blazar_server::jobs::runner::RunReport {
        self.runner
            .run_due(blazar_server::clock::Clock::now(self.clock()))
            .await
            .unwrap()
    }

    /// The manual clock (panics for an app on the real clock).
    pub fn clock(&self) -> &ManualClock {
        self.manual_clock
            .as_ref()
            .expect("this app runs on the real clock")
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.raw(Method::GET, path, &[("accept", "application/json")], None)
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.raw(Method::DELETE, path, &[], None).await
    }

    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Resp {
        self.raw(
            method,
            path,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::PUT, path, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::PATCH, path, body).await
    }

    /// Enrols a host; returns it.
    pub async fn host(&self, name: &str, extra: Value) -> Value {
        let mut body = json!({ "name": name });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        self.post("/v1/os-hosts", &body).await.expect(202).body["host"].clone()
    }

    /// Creates a lease of `min..=max` hosts matching `filter` (resource_properties) for the window.
    pub async fn lease(
        &self,
        name: &str,
        start: &str,
        end: &str,
        min: i64,
        max: i64,
        filter: &str,
    ) -> Resp {
        self.post(
            "/v1/leases",
            &lease_body(name, start, end, min, max, filter),
        )
        .await
    }

    /// Every row of every table, in a stable order: for "nothing changed" checks that look
    /// below the API.
    pub async fn dump(&self) -> String {
        use entity::*;
        use sea_orm::{EntityTrait, QueryOrder};
        let db = self.services.db.conn();
        let mut out = String::new();
        macro_rules! table {
            ($m:ident, $col:expr) => {
                for row in $m::Entity::find().order_by_asc($col).all(db).await.unwrap() {
                    out.push_str(&format!("{row:?}\n"));
                }
            };
        }
        table!(lease, lease::Column::Id);
        table!(reservation, reservation::Column::Id);
        table!(event, event::Column::Id);
        table!(host, host::Column::Id);
        table!(host_capability, host_capability::Column::Id);
        table!(resource_property, resource_property::Column::Id);
        table!(allocation, allocation::Column::Id);
        table!(event_run, event_run::Column::Id);
        table!(driver_action, driver_action::Column::Id);
        out
    }

    /// Everything a client can see, for "nothing changed" checks.
    pub async fn snapshot(&self) -> Value {
        json!({
            "leases": self.get("/v1/leases").await.expect(200).body,
            "hosts": self.get("/v1/os-hosts").await.expect(200).body,
            "allocations": self.get("/v1/os-hosts/allocations").await.expect(200).body,
            "properties": self.get("/v1/os-hosts/properties?detail=True&all=True").await.expect(200).body,
        })
    }

    /// Host ids held by a lease, from the allocations endpoint.
    pub async fn hosts_of(&self, lease_id: &str) -> Vec<String> {
        let all = self
            .get(&format!("/v1/os-hosts/allocations?lease_id={lease_id}"))
            .await
            .expect(200);
        let mut out: Vec<String> = all.body["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| !a["reservations"].as_array().unwrap().is_empty())
            .map(|a| a["resource_id"].as_str().unwrap().to_string())
            .collect();
        out.sort_by_key(|s| s.parse::<i64>().unwrap());
        out
    }
}

pub fn lease_body(name: &str, start: &str, end: &str, min: i64, max: i64, filter: &str) -> Value {
    json!({
        "name": name,
        "start_date": start,
        "end_date": end,
        "reservations": [{
            "resource_type": "physical:host",
            "min": min,
            "max": max,
            "hypervisor_properties": "",
            "resource_properties": filter,
        }],
        "events": []
    })
}

/// Where test tools (virtualenvs, node modules, screenshots) live: under target/, reused between
/// runs on one machine, rebuilt on a fresh clone.
pub fn tool_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command to completion; panics with its output when it fails.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if !out.status.success() {
        panic!(
            "{shown} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A Python virtualenv with exactly these (pinned) packages, created on first use and reused while
/// the package list is unchanged. Installing needs PyPI; a failure fails the test loudly.
pub fn python_env(name: &str, packages: &[&str]) -> PathBuf {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tool_dir("venvs").join(name);
    let lock = File::create(tool_dir("venvs").join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap(); // other test processes wait here
    let marker = dir.join(".installed");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages));
    std::fs::write(&marker, wanted).unwrap();
    dir
}

/// Joins futures on the runtime's worker threads (without a futures-util dependency), so that
/// requests really overlap in a multi-thread test.
pub async fn join_all<F, T>(futs: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Serves `app` on a free port of 127.0.0.1 in this process (a receiver of webhooks or of
/// enforcement checks); returns `http://addr`.
pub async fn serve(app: impl poem::Endpoint + 'static) -> String {
    use poem::listener::{Acceptor, Listener, TcpListener};
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    format!("http://{addr}")
}

/// What a webhook receiver got.
#[derive(Default)]
pub struct Inbox {
    pub received: Mutex<Vec<Value>>,
    /// Requests to refuse (500) before accepting, to exercise retries.
    pub refuse_first: std::sync::atomic::AtomicUsize,
    pub attempts: std::sync::atomic::AtomicUsize,
}

#[poem::handler]
fn inbox_hook(
    inbox: poem::web::Data<&Arc<Inbox>>,
    body: poem::web::Json<Value>,
) -> poem::http::StatusCode {
    use std::sync::atomic::Ordering;
    inbox.attempts.fetch_add(1, Ordering::SeqCst);
    if inbox
        .refuse_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return poem::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    inbox.received.lock().unwrap().push(body.0);
    poem::http::StatusCode::NO_CONTENT
}

/// A webhook receiver in this process that refuses its first `refuse_first` requests; returns
/// its URL.
pub async fn webhook_receiver(refuse_first: usize) -> (String, Arc<Inbox>) {
    use poem::EndpointExt;
    let inbox = Arc::new(Inbox {
        refuse_first: refuse_first.into(),
        ..Default::default()
    });
    let app = poem::Route::new()
        .at("/hook", poem::post(inbox_hook))
        .data(inbox.clone());
    (format!("{}/hook", serve(app).await), inbox)
}

/// The first `n` notifications the receiver got (waits up to 5 s for them).
pub async fn wait_for(inbox: &Inbox, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let got = inbox.received.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "expected {n} notifications, got {:?}",
        inbox.received.lock().unwrap()
    );
}
