//! Browser test of Swagger UI at /docs: Debian's Chromium driven by playwright-core
//! (tests/browser/swagger_ui.mjs) against the real app; installs both itself when missing.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/mod.rs"]
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use browser::{CHROMIUM, ensure_chromium, ensure_node_modules, png, run_limited};

use serde_json::json;

/// The script's own steps time out after 30 s each; this catches a hung browser or node.
const SCRIPT_LIMIT: Duration = Duration::from_secs(4 * 60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_lists_every_operation_and_executes_list_leases() {
    let logs = support::tool_dir("browser");
    let node_dir = tokio::task::spawn_blocking({
        let logs = logs.clone();
        move || {
            ensure_chromium(&logs);
            ensure_node_modules(&logs, &["swagger_ui.mjs"])
        }
    })
    .await
    .unwrap();

    // A real lease in the database, so that "Execute" shows one in the body.
    let app = support::spawn_live(|_| {}).await;
    app.host("compute-1", json!({ "vcpus": 16 })).await;
    let end = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let lease = app
        .lease("swagger-ui-lease", "now", &end, 1, 1, "")
        .await
        .expect(202)
        .body["lease"]
        .clone();
    let lease_id = lease["id"].as_str().expect("lease id").to_string();

    let screenshot = logs.join("swagger.png");
    let detail = logs.join("swagger-list-leases.png");
    // Screenshots from an earlier run must not pass for this run's.
    for old in [&screenshot, &detail, &logs.join("swagger.failed.png")] {
        let _ = std::fs::remove_file(old);
    }

    let started = Instant::now();
    let base = app.base.clone();
    let shot = screenshot.clone();
    // Blocking: the in-process server keeps serving on the runtime's workers meanwhile.
    let done = tokio::task::spawn_blocking(move || {
        run_limited(
            Command::new("node")
                .arg(node_dir.join("swagger_ui.mjs"))
                .arg(&base)
                .arg(&shot)
                .arg(&lease_id)
                .env("CHROMIUM", CHROMIUM),
            SCRIPT_LIMIT,
            &logs,
            "swagger_ui",
        )
    })
    .await
    .unwrap();
    eprintln!(
        "swagger_ui.mjs in {:?}\n{}{}",
        started.elapsed(),
        done.stdout,
        done.stderr
    );
    assert!(
        done.success,
        "the browser check failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        done.stdout, done.stderr
    );
    assert!(
        done.stdout.contains("PASS swagger-ui"),
        "the script exited 0 without its PASS line:\n{}",
        done.stdout
    );

    // The full page: 17 operations plus an open response are far taller than the 900 px
    // viewport; a blank or error page would be small in both pixels and bytes.
    let (width, height, len) = png(&screenshot);
    assert!(
        width >= 1280 && height > 3000 && len > 200_000,
        "full-page screenshot is {width}x{height}, {len} bytes"
    );
    // GET /v1/leases from its summary to the live response: the lease JSON alone is ~600 px.
    let (width, height, len) = png(&detail);
    assert!(
        width > 1000 && height > 800 && len > 50_000,
        "GET /v1/leases screenshot is {width}x{height}, {len} bytes"
    );
}
