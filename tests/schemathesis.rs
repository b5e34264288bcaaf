//! Property-based fuzzing of the API from its own spec: schemathesis (pinned in
//! tests/fuzz/requirements.txt) runs tests/fuzz/run.py against the real app, seeded with hosts
//! and leases, and this test fails on any schemathesis failure (a 5xx, a response that breaks the
//! spec, invalid data accepted, ...) or when the run was too small to mean anything.
//!
//! Budget (defaults below are CI's): `BLAZAR_FUZZ_MAX_TIME` seconds for the whole run (fuzzing
//! and stateful testing repeat until it is spent; 0 = one pass), `BLAZAR_FUZZ_EXAMPLES` test
//! cases per operation and phase in each pass, `BLAZAR_FUZZ_SEED` (fixed by default, so CI draws
//! the same inputs in the same order). See docs/fuzzing.md.
#[path = "support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chrono::NaiveDateTime;
use serde_json::{Value, json};
use support::{TestApp, python_env, spawn_live, tool_dir};

/// Every package of the virtualenv, pinned, so CI installs exactly what was tested.
const REQUIREMENTS: &str = include_str!("fuzz/requirements.txt");

/// CI's budget: 90 s of fuzzing. One pass of 100 examples per operation takes ~30 s here
/// (~1,500 inputs, but only ~20 stateful scenarios); the rest of the time repeats fuzzing and
/// stateful testing with new inputs: ~5,800 inputs and ~200 stateful scenarios in all.
const DEFAULT_MAX_TIME: u32 = 90;
const DEFAULT_EXAMPLES: u32 = 100;
const DEFAULT_SEED: u64 = 20301;
/// Fewest inputs a CI-sized run must try: a first pass alone makes ~1,500.
const MIN_INPUTS_PER_EXAMPLE: u64 = 10;

/// The whole run is killed past this: a hung run must fail, not stall CI.
const WATCHDOG: Duration = Duration::from_secs(15 * 60);

/// Operations that must have succeeded at least once, or the run never got past validation and
/// proves little. (`PUT /v1/os-hosts/{host_id}` is not here: its body is a free map whose random
/// keys almost never pass the capability-name rules, so a 2xx there is luck; see docs/fuzzing.md.)
const MUST_SUCCEED: &[(&str, &str)] = &[
    ("GET /v1/leases", "200"),
    ("POST /v1/leases", "202"),
    ("GET /v1/leases/{lease_id}", "200"),
    ("PUT /v1/leases/{lease_id}", "202"),
    ("DELETE /v1/leases/{lease_id}", "204"),
    ("GET /v1/os-hosts", "200"),
    ("POST /v1/os-hosts", "202"),
    ("GET /v1/os-hosts/{host_id}", "200"),
    ("DELETE /v1/os-hosts/{host_id}", "204"),
    ("GET /v1/os-hosts/{host_id}/allocation", "200"),
    ("GET /v1/os-hosts/allocations", "200"),
    ("PATCH /v1/os-hosts/properties/{property_name}", "200"),
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

/// Hosts with facts and capabilities for the filters in tests/fuzz/schemathesis.toml to match,
/// and leases on them: some in the future, one running now, one with two reservations. Fuzzing
/// deletes what it can, so there are more than a handful of each.
async fn populate(app: &TestApp) {
    for i in 1..=16 {
        app.host(
            &format!("seed-{i}"),
            json!({
                "vcpus": 4 * (i % 4 + 1),
                "memory_mb": 8192 * i,
                "local_gb": 100,
                "gpu": if i % 2 == 0 { "true" } else { "false" },
                "rack": format!("r{}", i % 3),
            }),
        )
        .await;
    }
    let gpu = r#"["==", "$gpu", "true"]"#;
    let windows = [
        ("now", "2031-06-01 00:00"),
        ("2031-01-01 00:00", "2031-01-02 00:00"),
        ("2031-01-01 12:00", "2031-01-03 00:00"),
        ("2031-01-02 00:00", "2031-02-01 00:00"),
        ("2032-01-01 00:00", "2032-02-01 00:00"),
        ("2032-03-01 00:00", "2032-03-02 00:00"),
    ];
    for (n, (start, end)) in windows.iter().enumerate() {
        app.lease(&format!("seed-lease-{n}"), start, end, 1, 2, gpu)
            .await
            .expect(202);
    }
    app.post(
        "/v1/leases",
        &json!({
            "name": "seed-two-reservations",
            "start_date": "2031-03-01 00:00",
            "end_date": "2031-03-05 00:00",
            "before_end_date": "2031-03-04 00:00",
            "reservations": [
                {"resource_type": "physical:host", "min": 1, "max": 1,
                 "hypervisor_properties": r#"[">=", "$vcpus", 8]"#,
                 "resource_properties": r#"["==", "$rack", "r1"]"#, "before_end": "snapshot"},
                {"resource_type": "physical:host", "min": 2, "max": 3,
                 "hypervisor_properties": "", "resource_properties": ""},
            ],
        }),
    )
    .await
    .expect(202);
    app.patch("/v1/os-hosts/properties/rack", &json!({"private": true}))
        .await
        .expect(200);
}

struct Run {
    ok: bool,
    output: String,
    out_dir: PathBuf,
}

/// Runs tests/fuzz/run.py to completion (or the watchdog), its output merged in one text.
fn fuzz(base: &str, examples: u32, seed: u64, max_time: Option<u32>) -> Run {
    let packages: Vec<&str> = REQUIREMENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        packages.iter().any(|p| p.starts_with("schemathesis==")),
        "tests/fuzz/requirements.txt must pin schemathesis"
    );
    let venv = python_env("schemathesis", &packages);
    let out_dir = tool_dir("schemathesis").join("last-run");
    let _ = std::fs::remove_dir_all(&out_dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/run.py");
    let log = out_dir.with_extension("log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(&script)
        .arg(base)
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .arg("--out")
        .arg(&out_dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    if let Some(t) = max_time {
        cmd.args(["--max-time", &t.to_string()]);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WATCHDOG + Duration::from_secs(max_time.unwrap_or(0).into()) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis still running after {:?}; output so far:\n{}",
                started.elapsed(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("fuzzing took {:.0?}", started.elapsed());
    Run {
        ok: status.success(),
        output: std::fs::read_to_string(&log).unwrap(),
        out_dir,
    }
}

/// The `key=value` fields of run.py's last line.
fn summary(output: &str) -> BTreeMap<String, String> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with("fuzz summary: "))
        .unwrap_or_else(|| panic!("run.py printed no summary:\n{output}"));
    line["fuzz summary: ".len()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn date(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("bad date {s:?}: {e}"))
}

/// What schemathesis cannot see: amid its creates, updates and deletes, no host is held by two
/// reservations whose windows overlap. Reads every page of the allocations. Returns the number
/// of current and future bookings, or what overlaps.
async fn double_bookings(client: &reqwest::Client, base: &str) -> Result<usize, String> {
    let mut held = 0;
    let mut url = format!("{base}/v1/os-hosts/allocations");
    loop {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "GET {url}");
        let page: Value = resp.json().await.unwrap();
        for host in page["allocations"]
            .as_array()
            .unwrap_or_else(|| panic!("not a list of allocations: {page}"))
        {
            let mut windows: Vec<(NaiveDateTime, NaiveDateTime, String)> = host["reservations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        date(r["start_date"].as_str().unwrap()),
                        date(r["end_date"].as_str().unwrap()),
                        r["lease_id"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            held += windows.len();
            windows.sort();
            for pair in windows.windows(2) {
                if pair[0].1 > pair[1].0 {
                    return Err(format!(
                        "host {} is booked twice after fuzzing: leases {} and {} overlap: {host}",
                        host["resource_id"], pair[0].2, pair[1].2
                    ));
                }
            }
        }
        // The next page, if any (`allocations_links: [{"rel": "next", "href": ...}]`).
        let next = page
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.ends_with("_links"))
            .filter_map(|(_, links)| links.as_array())
            .flatten()
            .find(|l| l["rel"] == "next")
            .and_then(|l| l["href"].as_str());
        match next {
            Some(href) => url = href.to_string(),
            None => return Ok(held),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_the_served_spec() {
    let examples: u32 = env_or("BLAZAR_FUZZ_EXAMPLES", DEFAULT_EXAMPLES);
    let seed: u64 = env_or("BLAZAR_FUZZ_SEED", DEFAULT_SEED);
    let max_time = match env_or("BLAZAR_FUZZ_MAX_TIME", DEFAULT_MAX_TIME) {
        0 => None,
        t => Some(t),
    };

    let app = spawn_live(|_| {}).await;
    // Every operation of the served spec is fuzzed; none is excluded (`/` and `/versions`
    // answer 300, and their spec says so).
    let spec = app.get("/openapi.json").await.expect(200).body;
    let operations = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        .filter(|k| {
            ["get", "put", "post", "delete", "patch", "head", "options"].contains(&k.as_str())
        })
        .count();
    populate(&app).await;

    // While schemathesis runs, look at the bookings every second: fuzzing deletes most leases
    // by the end, so a look afterwards alone would find little to check.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (client, base) = (app.client.clone(), app.base.clone());
    let watcher = tokio::spawn(async move {
        let (mut looks, mut most_held) = (0, 0);
        loop {
            let held = double_bookings(&client, &base).await?;
            looks += 1;
            most_held = most_held.max(held);
            tokio::select! {
                _ = stopped.changed() => return Ok::<_, String>((looks, most_held)),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    let base = app.base.clone();
    let run = tokio::task::spawn_blocking(move || fuzz(&base, examples, seed, max_time))
        .await
        .unwrap();
    stop.send(true).unwrap();
    let watched = watcher.await.unwrap();
    let output = &run.output;
    // Always shown with --nocapture, and by cargo when the test fails.
    println!("{output}");

    // Everything that is wrong, reported together: a failing run still says whether it got past
    // validation and whether fuzzing left a host double-booked.
    let mut problems: Vec<String> = Vec::new();

    // schemathesis's own verdict: every check passed on every test case and nothing errored.
    // Each failure above comes with the check's name, the response and a curl command.
    if !run.ok {
        problems.push(format!(
            "schemathesis reported failures: see FAILURES above (rerun: BLAZAR_FUZZ_SEED={seed} \
             BLAZAR_FUZZ_EXAMPLES={examples} BLAZAR_FUZZ_MAX_TIME={} cargo test --test \
             schemathesis -- --nocapture; reports in {})",
            max_time.unwrap_or(0),
            run.out_dir.display()
        ));
    }
    let s = summary(output);
    let num = |k: &str| -> u64 {
        s.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {k} in the summary {s:?}"))
    };
    let generated = num("generated");
    let mut check = |ok: bool, problem: String| {
        if !ok {
            problems.push(problem);
        }
    };
    check(
        s["exit"] == "0" && num("failures") == 0 && num("errors") == 0,
        format!("failures or errors in the summary: {s:?}"),
    );
    check(
        s["tested"] == format!("{operations}/{operations}"),
        format!(
            "not every operation of the spec was tested: {}",
            s["tested"]
        ),
    );
    check(
        s["stateful"] == "success",
        format!("stateful phase: {}", s["stateful"]),
    );

    // Enough inputs, of both kinds. The floor is what one pass makes, less room for hypothesis
    // stopping early on operations with few distinct inputs (an id and nothing else).
    let floor = u64::from(examples) * MIN_INPUTS_PER_EXAMPLE;
    check(
        generated >= floor,
        format!("schemathesis tried only {generated} inputs (expected at least {floor})"),
    );
    check(
        num("negative") >= u64::from(examples) && num("positive") >= u64::from(examples),
        format!("too few valid or invalid inputs: {s:?}"),
    );

    // The run got past validation: the main operations succeeded at least once.
    let statuses: Value =
        serde_json::from_str(&std::fs::read_to_string(run.out_dir.join("statuses.json")).unwrap())
            .unwrap();
    for (op, status) in MUST_SUCCEED {
        check(
            statuses[op][status].as_u64().unwrap_or(0) > 0,
            format!(
                "{op} never answered {status}, so the run did not get past validation there: {}",
                statuses[op]
            ),
        );
    }

    let after = double_bookings(&app.client, &app.base).await;
    match watched.and_then(|during| Ok((during, after?))) {
        Ok(((looks, most_held), after)) => {
            println!(
                "bookings: {looks} looks during fuzzing (up to {most_held} at once), {after} \
                 after it; no host booked twice"
            );
            check(
                most_held > 0,
                "no lease held a host while fuzzing ran: the double-booking look saw nothing"
                    .into(),
            );
        }
        Err(e) => check(false, e),
    }

    assert!(
        problems.is_empty(),
        "schemathesis run (seed {seed}, {generated} inputs):\n- {}",
        problems.join("\n- ")
    );
    println!("schemathesis: {generated} inputs, no failure: {s:?}");
}
