//! The host calendar page at /calendar (docs/calendar.md): how its files are served, and the page
//! itself in Debian's Chromium driven by playwright-core (tests/browser/calendar.mjs) against the
//! real app, with leases of two projects created through the API.

#[path = "support/mod.rs"]
mod support;

#[path = "support/browser.rs"]
mod browser;

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use chrono::{Datelike, NaiveDateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

/// The script's own steps time out after 30 s each; this catches a hung browser or node.
const SCRIPT_LIMIT: Duration = Duration::from_secs(4 * 60);
const GPU: &str = r#"["==", "$gpu", "true"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_files_are_served_embedded_with_their_types_and_are_not_in_the_spec() {
    let app = support::spawn_app().await;
    let html = app
        .raw(Method::GET, "/calendar", &[], None)
        .await
        .expect(200);
    let header = |r: &support::Resp, name: &str| {
        r.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header(&html, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&html, "cache-control"), "no-cache");
    assert!(header(&html, "content-security-policy").contains("script-src 'self'"));
    assert!(html.text.contains(r#"src="/calendar/calendar.js""#));
    // The trailing-slash form is the same page.
    let slash = app
        .raw(Method::GET, "/calendar/", &[], None)
        .await
        .expect(200);
    assert_eq!(slash.text, html.text);
    for (path, content_type) in [
        ("/calendar/calendar.js", "text/javascript; charset=utf-8"),
        ("/calendar/calendar.css", "text/css; charset=utf-8"),
    ] {
        let r = app.raw(Method::GET, path, &[], None).await.expect(200);
        assert_eq!(header(&r, "content-type"), content_type, "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert!(r.text.len() > 1000, "{path} is {} bytes", r.text.len());
        // Revalidation: the same ETag answers 304 with no body.
        let etag = header(&r, "etag");
        assert!(
            etag.starts_with('"') && etag.len() == 18,
            "{path}: ETag {etag}"
        );
        let again = app
            .raw(Method::GET, path, &[("if-none-match", &etag)], None)
            .await
            .expect(304);
        assert!(again.text.is_empty());
    }
    // Not an API path: no Accept rule, and a missing file is the usual envelope.
    app.raw(Method::GET, "/calendar", &[("accept", "text/html")], None)
        .await
        .expect(200);
    let missing = app
        .raw(Method::GET, "/calendar/nothing.js", &[], None)
        .await;
    missing.expect_error(404);
    let spec = app.get("/openapi.json").await.expect(200).body;
    let paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
    assert!(
        !paths.iter().any(|p| p.starts_with("/calendar")),
        "the page is in the spec: {paths:?}"
    );
}

/// Who creates which lease: (project, roles) as noauth headers.
const ALPHA: (&str, &str) = ("alpha", "member");
const BETA: (&str, &str) = ("beta", "member");

async fn lease_as(app: &support::TestApp, who: (&str, &str), body: &Value) -> Value {
    app.raw(
        Method::POST,
        "/v1/leases",
        &[
            ("content-type", "application/json"),
            ("x-project-id", who.0),
            ("x-roles", who.1),
        ],
        Some(serde_json::to_vec(body).unwrap()),
    )
    .await
    .expect(202)
    .body["lease"]
        .clone()
}

/// What the page must show, from the endpoints that existed before the calendar's (as the
/// default admin): every host in id order with its GPU capability and the leases it holds.
async fn facts(app: &support::TestApp, monday: NaiveDateTime) -> Value {
    let leases: BTreeMap<String, Value> = app.get("/v1/leases").await.expect(200).body["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["id"].as_str().unwrap().to_string(), l.clone()))
        .collect();
    let allocations = app.get("/v1/os-hosts/allocations").await.expect(200).body;
    let mut hosts: Vec<Value> = app.get("/v1/os-hosts").await.expect(200).body["hosts"]
        .as_array()
        .unwrap()
        .clone();
    hosts.sort_by_key(|h| h["id"].as_str().unwrap().parse::<i64>().unwrap());
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|h| {
            let id = h["id"].as_str().unwrap();
            let bookings: Vec<Value> = allocations["allocations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["resource_id"] == id)
                .flat_map(|a| a["reservations"].as_array().unwrap().clone())
                .map(|r| {
                    let lease = &leases[r["lease_id"].as_str().unwrap()];
                    json!({
                        "lease_id": lease["id"], "lease_name": lease["name"],
                        "project_id": lease["project_id"],
                        "start_date": lease["start_date"], "end_date": lease["end_date"],
                    })
                })
                .collect();
            json!({
                "id": id, "name": h["hypervisor_hostname"],
                "gpu": h["gpu"].as_str().unwrap_or(""), "bookings": bookings,
            })
        })
        .collect();
    json!({
        "monday": monday.format("%Y-%m-%d").to_string(),
        "member": { "project": ALPHA.0, "roles": ALPHA.1 },
        "gpu_filter": GPU,
        "hosts": hosts,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_page_shows_the_bookings_finds_a_slot_and_creates_its_lease() {
    let started = Instant::now();
    let logs = support::tool_dir("browser");
    let node_dir = tokio::task::spawn_blocking({
        let logs = logs.clone();
        move || {
            browser::ensure_chromium(&logs);
            browser::ensure_node_modules(&logs, &["calendar.mjs"])
        }
    })
    .await
    .unwrap();

    let app = support::spawn_live(|_| {}).await;
    for (name, gpu) in [
        ("compute-1", "true"),
        ("compute-2", "true"),
        ("compute-3", "false"),
        ("compute-4", "false"),
    ] {
        app.host(name, json!({ "vcpus": 16, "gpu": gpu })).await;
    }
    // A week of the real clock's future (four weeks ahead, from Monday 00:00 UTC), so that the
    // leases are all pending and nothing else is booked then.
    let ahead = Utc::now().date_naive() + chrono::Days::new(28);
    let monday = (ahead - chrono::Days::new(ahead.weekday().num_days_from_monday().into()))
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let at = |days: u64, hours: i64| {
        (monday + chrono::Days::new(days) + chrono::TimeDelta::hours(hours))
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    // Monday morning both GPU hosts are taken, one until Tuesday 06:00: two GPU hosts are free
    // together from then on (until beta-batch, perhaps). One more lease the next week.
    let leases = [
        (ALPHA, "alpha-train", at(0, 0), at(0, 12), 1, GPU),
        (BETA, "beta-render", at(0, 0), at(1, 6), 1, GPU),
        (BETA, "beta-batch", at(2, 8), at(3, 20), 2, ""),
        (ALPHA, "alpha-eval", at(4, 10), at(4, 18), 1, ""),
        (BETA, "beta-next-week", at(8, 0), at(9, 0), 1, ""),
    ];
    for (who, name, start, end, n, filter) in &leases {
        let body = support::lease_body(name, start, end, *n, *n, filter);
        lease_as(&app, *who, &body).await;
    }
    let facts = facts(&app, monday).await;
    let facts_file = logs.join("calendar-facts.json");
    std::fs::write(&facts_file, serde_json::to_vec_pretty(&facts).unwrap()).unwrap();

    let screenshot = logs.join("calendar.png");
    for old in [&screenshot, &logs.join("calendar.failed.png")] {
        let _ = std::fs::remove_file(old);
    }
    let script_started = Instant::now();
    let base = app.base.clone();
    let shot = screenshot.clone();
    // Blocking: the in-process server keeps serving on the runtime's workers meanwhile.
    let done = tokio::task::spawn_blocking(move || {
        browser::run_limited(
            Command::new("node")
                .arg(node_dir.join("calendar.mjs"))
                .arg(&base)
                .arg(&shot)
                .arg(&facts_file)
                .env("CHROMIUM", browser::CHROMIUM),
            SCRIPT_LIMIT,
            &logs,
            "calendar",
        )
    })
    .await
    .unwrap();
    eprintln!(
        "calendar.mjs in {:?}\n{}{}",
        script_started.elapsed(),
        done.stdout,
        done.stderr
    );
    assert!(
        done.success && done.stdout.contains("PASS calendar"),
        "the browser check failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        done.stdout,
        done.stderr
    );

    // The lease the page created, as the API has it: alpha's, on two GPU hosts, in the window.
    let result: Value = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a RESULT line");
    let id = result["lease_id"].as_str().unwrap();
    let lease = app.get(&format!("/v1/leases/{id}")).await.expect(200).body["lease"].clone();
    assert_eq!(lease["name"], "page-lease");
    assert_eq!(lease["project_id"], ALPHA.0);
    assert_eq!(lease["start_date"], result["start_date"]);
    assert_eq!(lease["end_date"], result["end_date"]);
    let held = app.hosts_of(id).await;
    let gpu_hosts: Vec<&str> = facts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["gpu"] == "true")
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(held, gpu_hosts, "the page's lease holds the GPU hosts");

    // The whole page: four rows, the forms and the windows below; a blank or error page would
    // be small in both pixels and bytes.
    let (width, height, len) = browser::png(&screenshot);
    assert!(
        width >= 1400 && height >= 600 && len > 40_000,
        "screenshot is {width}x{height}, {len} bytes"
    );
    eprintln!("calendar test in {:?}", started.elapsed());
}
