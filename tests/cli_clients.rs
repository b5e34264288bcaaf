//! The real CLI clients against the server: `blazar ...` and `openstack reservation ...` from
//! python-blazarclient (pinned in tests/clients/requirements.txt) drive hosts, properties, leases
//! and allocations through tests/clients/cli_test.py, which checks the values they print.
#[path = "support/mod.rs"]
mod support;

use std::{path::PathBuf, process::Command};

use support::{python_env, spawn_live};

/// Every package of the virtualenv, pinned, so CI installs exactly what was tested.
const REQUIREMENTS: &str = include_str!("clients/requirements.txt");

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/cli_test.py")
}

/// Runs one pass of the script (`--blazar URL` or `--openstack URL`) off the async runtime, so the
/// in-process server keeps serving while the CLIs wait for it.
async fn run_pass(venv: PathBuf, flag: &'static str, endpoint: String) -> String {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin/python"))
            .arg(script())
            .args(["--bin", &venv.join("bin").to_string_lossy()])
            .args([flag, &endpoint])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("{stdout}");
    // The script's verdict is its exit status, and its last line must report checks that ran:
    // an early exit with status 0 and nothing checked would otherwise pass.
    let summary = stdout.lines().last().unwrap_or_default();
    let passed: usize = summary
        .split(" passed, ")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        out.status.success() && passed > 0 && summary.contains(" passed, 0 failed"),
        "the {flag} pass failed ({}); summary {summary:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blazar_and_openstack_clis_drive_the_server() {
    let packages: Vec<&'static str> = REQUIREMENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        packages.contains(&"python-blazarclient==4.6.0"),
        "requirements.txt must pin the client documented in docs/clients.md"
    );
    let venv = tokio::task::spawn_blocking(move || python_env("cli", &packages))
        .await
        .unwrap();

    // One server per pass (each pass checks its own hosts and properties), run side by side:
    // the `openstack` command spends ~1 s importing itself on every call.
    let legacy = spawn_live(|_| {}).await;
    let osc = spawn_live(|_| {}).await;
    let (legacy_out, osc_out) = tokio::join!(
        run_pass(venv.clone(), "--blazar", format!("{}/v1", legacy.base)),
        run_pass(venv.clone(), "--openstack", format!("{}/v1", osc.base)),
    );

    // Both front ends really ran: each pass announces itself before its checks.
    assert!(legacy_out.contains("== blazar against"), "{legacy_out}");
    assert!(osc_out.contains("== openstack against"), "{osc_out}");
}
