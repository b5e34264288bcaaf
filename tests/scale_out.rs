//! Several instances on one PostgreSQL database: 200 leases whose events fall due together are
//! run by two instances, every event exactly once (counted in `event_runs`), and when one instance
//! is killed (SIGKILL) mid-run the other finishes its work. Also times that run on SQLite with one
//! instance and on PostgreSQL with one and two. Needs BLAZAR_TEST_DATABASE_URL (.ci/run sets it);
//! without it the test says it is skipped.

#[path = "support/process.rs"]
mod process;

use std::{
    collections::HashMap,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use chrono::{NaiveDateTime, TimeDelta, Utc};
use entity::{driver_action, event, event_run};
use process::{Server, sqlite_url};
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter,
};
use serde_json::json;

const LEASES: usize = 200;
const WITH_HOSTS: usize = 20;
/// start + before-end + end per lease.
const EVENTS: usize = LEASES * 3;

fn wall_now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

fn fmt(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A fresh PostgreSQL database; returns its URL.
async fn fresh_pg(admin_url: &str, tag: &str) -> String {
    let name = format!("blazar_scale_{tag}_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

async fn drop_pg(admin_url: &str, url: &str) {
    let name = url.rsplit_once('/').unwrap().1;
    if let Ok(admin) = Database::connect(admin_url).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// Enrols the hosts and creates the leases (spread over the instances); returns start and end.
async fn load(bases: &[&str]) -> (NaiveDateTime, NaiveDateTime) {
    let client = reqwest::Client::new();
    for i in 0..WITH_HOSTS {
        let r = client
            .post(format!("{}/v1/os-hosts", bases[i % bases.len()]))
            .json(&json!({"name": format!("c{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let t0 = (wall_now() + TimeDelta::seconds(8))
        .and_utc()
        .with_timezone(&Utc)
        .naive_utc();
    let t0 = t0 - TimeDelta::nanoseconds(t0.and_utc().timestamp_subsec_nanos() as i64);
    let end = t0 + TimeDelta::seconds(12);
    for i in 0..LEASES {
        let mut body =
            json!({"name": format!("e{i}"), "start_date": fmt(t0), "end_date": fmt(end)});
        if i < WITH_HOSTS {
            body["reservations"] = json!([{"resource_type": "physical:host", "min": 1, "max": 1,
                "hypervisor_properties": "", "resource_properties": ""}]);
        }
        let r = client
            .post(format!("{}/v1/leases", bases[i % bases.len()]))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    assert!(wall_now() < t0, "loading took too long for the schedule");
    (t0, end)
}

async fn done(conn: &DatabaseConnection) -> usize {
    event::Entity::find()
        .filter(event::Column::Status.eq("DONE"))
        .count(conn)
        .await
        .unwrap() as usize
}

/// Waits until `target` events are DONE; returns how long after `from` that happened.
async fn wait_done(conn: &DatabaseConnection, target: usize, from: NaiveDateTime) -> Duration {
    let started = Instant::now();
    loop {
        if done(conn).await >= target {
            return (wall_now() - from).to_std().unwrap_or_default();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "events not finished: {}/{target}",
            done(conn).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event DONE, exactly one DONE run each, one driver action per host and event.
async fn assert_exactly_once(conn: &DatabaseConnection) -> HashMap<String, usize> {
    let events = event::Entity::find().all(conn).await.unwrap();
    assert_eq!(events.len(), EVENTS);
    assert!(events.iter().all(|e| e.status.to_string() == "DONE"));
    let runs = event_run::Entity::find().all(conn).await.unwrap();
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    let mut per_instance: HashMap<String, usize> = HashMap::new();
    for r in &runs {
        assert_eq!(r.outcome.to_string(), "DONE");
        *per_event.entry(&r.event_id).or_default() += 1;
        *per_instance.entry(r.instance.clone()).or_default() += 1;
    }
    assert_eq!(per_event.len(), EVENTS);
    assert!(per_event.values().all(|n| *n == 1), "an event ran twice");
    let actions = driver_action::Entity::find().all(conn).await.unwrap();
    let mut per_action: HashMap<(String, i64, String), usize> = HashMap::new();
    for a in actions {
        *per_action
            .entry((a.lease_id, a.host_id, a.action))
            .or_default() += 1;
    }
    assert_eq!(per_action.len(), WITH_HOSTS * 3);
    assert!(
        per_action.values().all(|n| *n == 1),
        "a driver action was repeated"
    );
    per_instance
}

/// One timed run: `instances` servers on `url`, no kill.
async fn timed_run(label: &str, url: &str, instances: usize, log: &Path) -> String {
    let mut servers = Vec::new();
    for i in 0..instances {
        servers.push(Server::start(url, log, &["--instance-name", &format!("{label}-{i}")]).await);
    }
    let bases: Vec<&str> = servers.iter().map(|s| s.base.as_str()).collect();
    let (t0, end) = load(&bases).await;
    let conn = Database::connect(url).await.unwrap();
    let start_wave = wait_done(&conn, LEASES * 2, t0).await;
    let end_wave = wait_done(&conn, EVENTS, end).await;
    let per_instance = assert_exactly_once(&conn).await;
    drop(servers);
    format!(
        "{label}: {} start+before-end events done {:.2} s after they fell due, {} end events {:.2} s after; runs per instance {:?}",
        LEASES * 2,
        start_wave.as_secs_f64(),
        LEASES,
        end_wave.as_secs_f64(),
        per_instance
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_events_and_survive_a_kill() {
    let Ok(admin) = std::env::var("BLAZAR_TEST_DATABASE_URL") else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED scale_out: BLAZAR_TEST_DATABASE_URL is not set (.ci/run sets it; e.g. \
             postgres://postgres@127.0.0.1:5432/test)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("servers.log");
    let mut report = Vec::new();

    // Timings, one setup after the other so that they do not compete for the CPU.
    report.push(timed_run("sqlite x1", &sqlite_url(&dir.path().join("t.db")), 1, &log).await);
    for n in [1, 2] {
        let url = fresh_pg(&admin, &format!("t{n}")).await;
        report.push(timed_run(&format!("postgres x{n}"), &url, n, &log).await);
        drop_pg(&admin, &url).await;
    }

    // Two instances; one is killed in the middle of the start wave; the other finishes.
    let url = fresh_pg(&admin, "kill").await;
    let a = Server::start(&url, &log, &["--instance-name", "a"]).await;
    let b = Server::start(&url, &log, &["--instance-name", "b"]).await;
    let (t0, end) = load(&[&a.base, &b.base]).await;
    let conn = Database::connect(&url).await.unwrap();
    while done(&conn).await < 40 || wall_now() < t0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.kill9();
    let at_kill = done(&conn).await;
    assert!(at_kill < LEASES * 2, "the kill came after the wave");
    let start_wave = wait_done(&conn, LEASES * 2, t0).await;
    let end_wave = wait_done(&conn, EVENTS, end).await;
    let per_instance = assert_exactly_once(&conn).await;
    assert!(
        per_instance.get("b").copied().unwrap_or(0) > 0,
        "{per_instance:?}"
    );
    let retried = event::Entity::find()
        .filter(event::Column::Attempts.gt(1))
        .count(&conn)
        .await
        .unwrap();
    report.push(format!(
        "postgres x2, instance a killed with {at_kill}/{} events done: all {EVENTS} DONE exactly once; \
         start wave done {:.2} s after it fell due (incl. the 2 s claim expiry), end wave {:.2} s; \
         {retried} events taken over; runs per instance {per_instance:?}",
        LEASES * 2,
        start_wave.as_secs_f64(),
        end_wave.as_secs_f64(),
    ));
    drop(b);
    drop(conn);
    drop_pg(&admin, &url).await;
    for line in &report {
        println!("{line}");
    }
}
