//! `GET /metrics` read the way Prometheus reads it: every scrape is parsed by the reference
//! parser (`prometheus_client.parser` from PyPI, pinned below, in a virtualenv), and the tests
//! check that counters move as requests, lease events, webhook deliveries and write turns happen,
//! that the gauges follow the database, that the route needs no identity, and that it can be
//! turned off or moved to an address of its own.
//!
//! A test binary of its own (not a module of tests/api) because it needs Python, and one test
//! builds the application itself to learn the second listener's address.
#[path = "support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    io::Write as _,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use blazar_server::{app::Application, clock::ManualClock, config::Settings};
use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Value, json};
use support::{lease_body, python_env, spawn_with, t0};

const PARSER: &[&str] = &["prometheus-client==0.26.0"];
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Parses the exposition with prometheus_client; prints every family with its samples as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {
        "type": f.type,
        "help": f.documentation,
        "samples": [[s.name, s.labels, s.value] for s in f.samples],
    }
print(json.dumps(out))
"#;

/// One parsed scrape.
struct Scrape {
    families: BTreeMap<String, Value>,
}

impl Scrape {
    fn family(&self, name: &str) -> &Value {
        self.families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}; got {:?}", self.families.keys()))
    }

    /// The value of the sample `name` with exactly these labels, 0 when absent (a counter not
    /// yet moved has no series).
    fn value(&self, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.family(family)["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s[0] == name
                    && serde_json::from_value::<BTreeMap<String, String>>(s[1].clone()).unwrap()
                        == want
            })
            .map_or(0.0, |s| s[2].as_f64().unwrap())
    }
}

fn parse(text: &str) -> Scrape {
    let venv = python_env("prometheus-parser", PARSER);
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Scrape {
        families: serde_json::from_slice(&out.stdout).unwrap(),
    }
}

/// GETs `/metrics` at `base` with no identity headers at all; checks the content type; parses.
async fn scrape(base: &str) -> Scrape {
    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        CONTENT_TYPE
    );
    let text = resp.text().await.unwrap();
    for family in [
        "blazar_http_requests_total",
        "blazar_leases",
        "blazar_events_run_total",
        "blazar_db_write_wait_seconds",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "{text}");
        assert!(text.contains(&format!("# TYPE {family} ")), "{text}");
    }
    tokio::task::spawn_blocking(move || parse(&text))
        .await
        .unwrap()
}

fn at(h: u32, m: u32, s: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2030, 1, 1)
        .unwrap()
        .and_hms_opt(h, m, s)
        .unwrap()
}

/// Scrapes until `check` holds (webhooks are delivered in the background), at most 5 s.
async fn scrape_until(base: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..50 {
        let s = scrape(base).await;
        if check(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the metrics never reached the expected values");
}

const REQUESTS: &str = "blazar_http_requests";
const REQUESTS_TOTAL: &str = "blazar_http_requests_total";

fn requests(s: &Scrape, op: &str, status: &str) -> f64 {
    s.value(
        REQUESTS,
        REQUESTS_TOTAL,
        &[("operation_id", op), ("status", status)],
    )
}

fn lease_gauge(s: &Scrape, status: &str) -> f64 {
    s.value("blazar_leases", "blazar_leases", &[("status", status)])
}

fn single(s: &Scrape, name: &str) -> f64 {
    s.value(name, name, &[])
}

#[tokio::test]
async fn counters_move_with_requests_events_and_webhooks() {
    let (url, inbox) = support::webhook_receiver(1).await;
    let app = spawn_with(|s| {
        s.notifications.urls = vec![url];
        s.notifications.backoff_ms = 10;
    })
    .await;
    let before = scrape(&app.base).await;

    // The families and their types, as the parser read them.
    for (family, kind) in [
        (REQUESTS, "counter"),
        ("blazar_http_request_duration_seconds", "histogram"),
        ("blazar_leases", "gauge"),
        ("blazar_hosts_enrolled", "gauge"),
        ("blazar_hosts_reserved", "gauge"),
        ("blazar_events_due", "gauge"),
        ("blazar_events_run", "counter"),
        ("blazar_event_lateness_seconds", "histogram"),
        ("blazar_db_write_wait_seconds", "histogram"),
        ("blazar_webhook_deliveries", "counter"),
        ("blazar_webhook_attempt_failures", "counter"),
        ("blazar_webhook_dropped", "counter"),
    ] {
        assert_eq!(before.family(family)["type"], kind, "{family}");
        assert!(
            !before.family(family)["help"].as_str().unwrap().is_empty(),
            "{family} has help"
        );
    }
    assert_eq!(single(&before, "blazar_hosts_enrolled"), 0.0);
    assert_eq!(lease_gauge(&before, "PENDING"), 0.0);
    assert_eq!(requests(&before, "createHost", "202"), 0.0);
    let waits_before = single_count(&before, "blazar_db_write_wait_seconds");

    // Requests: by operationId and status; the `.json` form counts as the same operation; an
    // unknown path is "unmatched" whatever it is.
    app.host("c1", json!({})).await;
    app.host("c2", json!({})).await;
    let id = app
        .lease("l", "2030-01-01 13:00", "2030-01-02 13:00", 1, 1, "")
        .await
        .expect(202)
        .body["lease"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.get("/v1/leases").await.expect(200);
    app.get("/v1/leases.json").await.expect(200);
    app.get(&format!("/v1/leases/{id}")).await.expect(200);
    app.get("/v1/leases/no-such-lease").await.expect(404);
    app.get("/v1/no/such/path/abc123").await.expect(404);
    app.get("/v1/other/path/xyz").await.expect(404);
    let bad = app
        .post(
            "/v1/leases",
            &lease_body("bad", "2030-01-01 13:00", "2029-01-01 13:00", 1, 1, ""),
        )
        .await;
    assert_eq!(bad.status, 400);

    // Booked for later: nothing is held and nothing is due yet.
    let booked = scrape(&app.base).await;
    assert_eq!(single(&booked, "blazar_hosts_reserved"), 0.0);
    assert_eq!(single(&booked, "blazar_events_due"), 0.0);

    app.clock().set(at(13, 0, 30));
    let due = scrape(&app.base).await;
    assert_eq!(requests(&due, "createHost", "202"), 2.0);
    assert_eq!(requests(&due, "createLease", "202"), 1.0);
    assert_eq!(requests(&due, "createLease", "400"), 1.0);
    assert_eq!(requests(&due, "listLeases", "200"), 2.0);
    assert_eq!(requests(&due, "getLease", "200"), 1.0);
    assert_eq!(requests(&due, "getLease", "404"), 1.0);
    assert_eq!(requests(&due, "unmatched", "404"), 2.0);
    // Every operationId label is one of the spec's (or "unmatched"): bounded cardinality.
    let spec: Value = app.get("/openapi.json").await.expect(200).body;
    let mut ops: Vec<String> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|o| o["operationId"].as_str().unwrap().to_string())
        .collect();
    ops.push("unmatched".into());
    for s in due.family(REQUESTS)["samples"].as_array().unwrap() {
        let op = s[1]["operation_id"].as_str().unwrap();
        assert!(
            ops.iter().any(|o| o == op),
            "label {op} is not an operation"
        );
    }
    let latency = "blazar_http_request_duration_seconds";
    assert_eq!(
        due.value(
            latency,
            &format!("{latency}_count"),
            &[("operation_id", "createHost")]
        ),
        2.0
    );
    assert_eq!(
        due.value(
            latency,
            &format!("{latency}_bucket"),
            &[("operation_id", "createHost"), ("le", "+Inf")]
        ),
        2.0
    );
    // Gauges from the database: two hosts, one pending lease whose start is due, and its host
    // reserved (its window has begun, though the start event has yet to run).
    assert_eq!(single(&due, "blazar_hosts_enrolled"), 2.0);
    assert_eq!(lease_gauge(&due, "PENDING"), 1.0);
    assert_eq!(lease_gauge(&due, "ACTIVE"), 0.0);
    assert_eq!(single(&due, "blazar_events_due"), 1.0);
    assert_eq!(single(&due, "blazar_hosts_reserved"), 1.0);
    // Three writes took the write turn (two hosts, one lease) at least.
    assert!(single_count(&due, "blazar_db_write_wait_seconds") >= waits_before + 3.0);

    // The start event runs 30 s late.
    assert_eq!(app.run_due().await.done, 1);
    let run = scrape(&app.base).await;
    let events = |s: &Scrape, ty: &str, outcome: &str| {
        s.value(
            "blazar_events_run",
            "blazar_events_run_total",
            &[("event_type", ty), ("outcome", outcome)],
        )
    };
    assert_eq!(events(&before, "start_lease", "DONE"), 0.0);
    assert_eq!(events(&run, "start_lease", "DONE"), 1.0);
    assert_eq!(events(&run, "end_lease", "DONE"), 0.0);
    assert_eq!(events(&run, "start_lease", "ERROR"), 0.0);
    let late = "blazar_event_lateness_seconds";
    let bucket = |le: &str| {
        run.value(
            late,
            &format!("{late}_bucket"),
            &[("event_type", "start_lease"), ("le", le)],
        )
    };
    assert_eq!(bucket("10"), 0.0, "30 s late is not within 10 s");
    assert_eq!(bucket("30"), 1.0);
    assert_eq!(
        run.value(
            late,
            &format!("{late}_sum"),
            &[("event_type", "start_lease")]
        ),
        30.0
    );
    assert_eq!(lease_gauge(&run, "PENDING"), 0.0);
    assert_eq!(lease_gauge(&run, "ACTIVE"), 1.0);
    assert_eq!(single(&run, "blazar_events_due"), 0.0);
    assert_eq!(single(&run, "blazar_hosts_reserved"), 1.0);

    // Webhooks: lease.create (refused once, then delivered on retry) and lease.event.start_lease
    // reached the receiver; the refusal is an attempt failure, not a failed delivery.
    let deliveries = |s: &Scrape, outcome: &str| {
        s.value(
            "blazar_webhook_deliveries",
            "blazar_webhook_deliveries_total",
            &[("outcome", outcome)],
        )
    };
    let hooks = scrape_until(&app.base, |s| deliveries(s, "delivered") >= 2.0).await;
    assert_eq!(deliveries(&hooks, "delivered"), 2.0);
    assert_eq!(deliveries(&hooks, "failed"), 0.0);
    assert_eq!(total(&hooks, "blazar_webhook_attempt_failures"), 1.0);
    assert_eq!(inbox.received.lock().unwrap().len(), 2);
    // The scrapes themselves are requests too, outside the spec.
    assert!(requests(&hooks, "unmatched", "200") >= 4.0);
}

/// A counter without labels: the parser names its family without `_total`.
fn total(s: &Scrape, family: &str) -> f64 {
    s.value(family, &format!("{family}_total"), &[])
}

fn single_count(s: &Scrape, histogram: &str) -> f64 {
    s.value(histogram, &format!("{histogram}_count"), &[])
}

#[tokio::test]
async fn webhook_failures_are_counted() {
    let (url, inbox) = support::webhook_receiver(usize::MAX).await;
    let app = spawn_with(|s| {
        s.notifications.urls = vec![url];
        s.notifications.backoff_ms = 1;
        s.notifications.max_attempts = 2;
    })
    .await;
    app.host("c1", json!({})).await;
    app.lease("l", "2030-01-01 13:00", "2030-01-02 13:00", 1, 1, "")
        .await
        .expect(202);
    let s = scrape_until(&app.base, |s| {
        s.value(
            "blazar_webhook_deliveries",
            "blazar_webhook_deliveries_total",
            &[("outcome", "failed")],
        ) >= 1.0
    })
    .await;
    assert_eq!(total(&s, "blazar_webhook_attempt_failures"), 2.0);
    assert!(inbox.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn metrics_need_no_identity() {
    // Keystone mode with a Keystone that cannot be reached: every /v1 call fails (401 without a
    // token, 503 with one), and /metrics answers anyway, so it never asks who is calling.
    let app = spawn_with(|s| {
        s.api.auth_strategy = "keystone".into();
        s.keystone_authtoken.auth_url = Some("http://127.0.0.1:9/v3".into());
        s.keystone_authtoken.password = Some("unused".into());
    })
    .await;
    app.get("/v1/leases").await.expect_error(401);
    let with_token = app
        .raw(
            reqwest::Method::GET,
            "/v1/leases",
            &[("x-auth-token", "some-token")],
            None,
        )
        .await;
    with_token.expect_error(503);
    let resp = app
        .raw(
            reqwest::Method::GET,
            "/metrics",
            &[("x-auth-token", "some-token")],
            None,
        )
        .await
        .expect(200);
    assert!(
        resp.text
            .contains("blazar_http_requests_total{operation_id=\"listLeases\",status=\"401\"} 1\n")
    );
    let s = scrape(&app.base).await;
    assert_eq!(requests(&s, "listLeases", "503"), 1.0);

    // noauth with no default roles: /v1 refuses, /metrics does not care.
    let app = spawn_with(|s| s.api.default_roles = String::new()).await;
    app.get("/v1/os-hosts").await.expect_error(403);
    scrape(&app.base).await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_with(|s| s.metrics.enabled = false).await;
    app.get("/metrics").await.expect_error(404);
    app.get("/v1/leases").await.expect(200);
}

#[tokio::test]
async fn metrics_on_their_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.api.bind = "127.0.0.1:0".into();
    settings.metrics.bind = Some("127.0.0.1:0".into());
    settings.database.connection = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("blazar.db").display()
    );
    settings.log.filter = "warn".into();
    settings.runner.enabled = false;
    let app = Application::build(settings, Arc::new(ManualClock::new(t0())))
        .await
        .unwrap();
    let main = format!("http://{}", app.addr());
    let metrics = format!("http://{}", app.metrics_addr().expect("a metrics listener"));
    assert_ne!(main, metrics);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let r = client
        .get(format!("{main}/v1/leases"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("{main}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404, "not on the main port");
    let envelope: Value = r.json().await.unwrap();
    assert_eq!(envelope["error_code"], 404);
    // The metrics listener serves only /metrics.
    let r = client
        .get(format!("{metrics}/v1/leases"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let s = scrape(&metrics).await;
    // It counts what the main port answered: one registry per process.
    assert_eq!(requests(&s, "listLeases", "200"), 1.0);
    assert_eq!(requests(&s, "unmatched", "404"), 2.0);

    // Both listeners stop with the server.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(
        client
            .get(format!("{metrics}/metrics"))
            .send()
            .await
            .is_err()
    );
}
