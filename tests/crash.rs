//! kill -9 tests with the real `blazar-server` binary: killed in a burst of lease creates and in
//! the middle of running events, restarted on the same database. Every acknowledged lease must be
//! there whole, no host booked twice, and every event DONE exactly once.

#[path = "support/process.rs"]
mod process;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{NaiveDateTime, TimeDelta, Utc};
use entity::{
    allocation, driver_action, event, event_run, lease, reservation,
    sea_orm_active_enums::EventType,
};
use process::{Server, sqlite_url};
use sea_orm::{Database, DatabaseConnection, EntityTrait};
use serde_json::{Value, json};

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn wall_now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

fn fmt(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

async fn open(db: &Path) -> DatabaseConnection {
    Database::connect(sqlite_url(db)).await.unwrap()
}

/// No host is booked twice for overlapping windows.
fn assert_no_double_booking(allocs: &[allocation::Model]) {
    let mut by_host: HashMap<i64, Vec<(NaiveDateTime, NaiveDateTime, String)>> = HashMap::new();
    for a in allocs {
        by_host
            .entry(a.host_id)
            .or_default()
            .push((a.start_date, a.end_date, a.lease_id.clone()));
    }
    for (host, mut windows) in by_host {
        windows.sort();
        for w in windows.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "host {host} booked twice: {:?} and {:?}",
                w[0],
                w[1]
            );
        }
    }
}

fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("blazar.db");
    let log = dir.path().join("server.log");
    (dir, db, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_burst_of_creates_nothing_is_half_written() {
    let (_dir, db, log) = scratch();
    let server = Server::start(&sqlite_url(&db), &log, &[]).await;
    let client = reqwest::Client::new();
    for i in 0..10 {
        let (s, _) = post(
            &client,
            format!("{}/v1/os-hosts", server.base),
            json!({"name": format!("c{i}")}),
        )
        .await;
        assert_eq!(s, 202);
    }
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let base = wall_now() + TimeDelta::hours(1);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (client, url, acked) = (
            client.clone(),
            format!("{}/v1/leases", server.base),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                // Overlapping windows of 1 to 6 hours within two days, 1-2 hosts each.
                let k = (t * 200 + i) as i64;
                let start = base + TimeDelta::minutes((k * 37) % 2880);
                let end = start + TimeDelta::minutes(60 + (k * 53) % 300);
                let body = json!({"name": format!("b{k}"), "start_date": fmt(start), "end_date": fmt(end),
                    "reservations": [{"resource_type": "physical:host", "min": 1, "max": 1 + k % 2,
                                      "hypervisor_properties": "", "resource_properties": ""}]});
                let Ok(r) = client.post(&url).json(&body).send().await else { return };
                if r.status().as_u16() == 202 {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if let Some(id) = v["lease"]["id"].as_str() {
                        acked.lock().unwrap().push(id.to_string());
                    }
                }
            }
        }));
    }
    // Kill once a fair number of creates went through, while the others are in flight.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 60 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "creates too slow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let server = Server::start(&sqlite_url(&db), &log, &[]).await;

    let conn = open(&db).await;
    let leases: HashMap<String, lease::Model> = lease::Entity::find()
        .all(&conn)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect();
    for id in &acked {
        assert!(leases.contains_key(id), "acknowledged lease {id} was lost");
    }
    let reservations = reservation::Entity::find().all(&conn).await.unwrap();
    let events = event::Entity::find().all(&conn).await.unwrap();
    let allocs = allocation::Entity::find().all(&conn).await.unwrap();
    let mut res_per_lease: HashMap<&str, usize> = HashMap::new();
    for r in &reservations {
        assert!(
            leases.contains_key(&r.lease_id),
            "orphan reservation {}",
            r.id
        );
        *res_per_lease.entry(&r.lease_id).or_default() += 1;
        let n = allocs.iter().filter(|a| a.reservation_id == r.id).count() as i32;
        assert!(
            (r.min..=r.max).contains(&n),
            "reservation {} holds {n} hosts",
            r.id
        );
    }
    let mut events_per_lease: HashMap<&str, HashSet<EventType>> = HashMap::new();
    for e in &events {
        assert!(leases.contains_key(&e.lease_id), "orphan event {}", e.id);
        events_per_lease
            .entry(&e.lease_id)
            .or_default()
            .insert(e.event_type);
    }
    for id in leases.keys() {
        assert_eq!(
            res_per_lease.get(id.as_str()),
            Some(&1),
            "lease {id} is incomplete"
        );
        let kinds = events_per_lease
            .get(id.as_str())
            .cloned()
            .unwrap_or_default();
        assert_eq!(kinds.len(), 3, "lease {id} has events {kinds:?}");
    }
    assert_no_double_booking(&allocs);
    println!(
        "burst: {} acknowledged before the kill, {} leases stored, all whole, no double booking",
        acked.len(),
        leases.len()
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_running_events_every_event_runs_exactly_once() {
    let (_dir, db, log) = scratch();
    let server = Server::start(&sqlite_url(&db), &log, &[]).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        post(
            &client,
            format!("{}/v1/os-hosts", server.base),
            json!({"name": format!("c{i}")}),
        )
        .await;
    }
    // 200 leases (20 with a host) whose events all fall due together: start and before-end at
    // T0, end at T0 + 10 s.
    let t0 = wall_now() + TimeDelta::seconds(8);
    let t0 = t0 - TimeDelta::nanoseconds(t0.and_utc().timestamp_subsec_nanos() as i64);
    let end = t0 + TimeDelta::seconds(10);
    for i in 0..200 {
        let mut body =
            json!({"name": format!("e{i}"), "start_date": fmt(t0), "end_date": fmt(end)});
        if i < 20 {
            body["reservations"] = json!([{"resource_type": "physical:host", "min": 1, "max": 1,
                "hypervisor_properties": "", "resource_properties": ""}]);
        }
        let (s, v) = post(&client, format!("{}/v1/leases", server.base), body).await;
        assert_eq!(s, 202, "{v}");
    }
    assert!(
        wall_now() < t0,
        "creating the leases took too long for the test's schedule"
    );
    let conn = open(&db).await;
    let total_events = event::Entity::find().all(&conn).await.unwrap().len();
    assert_eq!(total_events, 600);

    // Kill each server once some, but not all, of a wave of events has run.
    let mut server = server;
    for (wave, at, before, due) in [("start", t0, 0, 400), ("end", end, 400, 600)] {
        loop {
            let done = done_events(&conn).await;
            if done >= before + 10 && wall_now() >= at {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill9();
        let done = done_events(&conn).await;
        println!(
            "{wave} wave: killed with {}/{} of its events done",
            done - before,
            due - before
        );
        assert!(
            done < due,
            "the kill came after the whole {wave} wave ran; the test proves nothing"
        );
        server = Server::start(&sqlite_url(&db), &log, &[]).await;
    }
    // The last server finishes the work, taking over the dead runners' claims.
    let started = Instant::now();
    while done_events(&conn).await < 600 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "events not finished: {}",
            done_events(&conn).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);

    let events = event::Entity::find().all(&conn).await.unwrap();
    assert!(events.iter().all(|e| e.status.to_string() == "DONE"));
    let runs = event_run::Entity::find().all(&conn).await.unwrap();
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for r in &runs {
        assert_eq!(r.outcome.to_string(), "DONE");
        *per_event.entry(&r.event_id).or_default() += 1;
    }
    assert_eq!(per_event.len(), 600);
    assert!(per_event.values().all(|n| *n == 1), "an event ran twice");
    let actions = driver_action::Entity::find().all(&conn).await.unwrap();
    let mut per_action: HashMap<(String, i64, String), usize> = HashMap::new();
    for a in &actions {
        *per_action
            .entry((a.lease_id.clone(), a.host_id, a.action.clone()))
            .or_default() += 1;
    }
    assert_eq!(
        per_action.len(),
        60,
        "assign, before-end and release for each of 20 hosts"
    );
    assert!(
        per_action.values().all(|n| *n == 1),
        "a driver action was repeated"
    );
    let leases = lease::Entity::find().all(&conn).await.unwrap();
    assert!(leases.iter().all(|l| l.status.to_string() == "TERMINATED"));
    let retried = events.iter().filter(|e| e.attempts > 1).count();
    println!("all 600 events DONE exactly once; {retried} were taken over after a kill");
}

async fn done_events(conn: &DatabaseConnection) -> usize {
    use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
    event::Entity::find()
        .filter(event::Column::Status.eq("DONE"))
        .count(conn)
        .await
        .unwrap() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_stops_the_runner_between_events() {
    use std::io::{Read, Write};
    let (_dir, db, log) = scratch();
    let server = Server::start(&sqlite_url(&db), &log, &[]).await;
    let client = reqwest::Client::new();
    let t0 = wall_now() + TimeDelta::seconds(6);
    let t0 = t0 - TimeDelta::nanoseconds(t0.and_utc().timestamp_subsec_nanos() as i64);
    for i in 0..300 {
        let body = json!({"name": format!("s{i}"), "start_date": fmt(t0), "end_date": fmt(t0 + TimeDelta::hours(1))});
        let (s, v) = post(&client, format!("{}/v1/leases", server.base), body).await;
        assert_eq!(s, 202, "{v}");
    }
    assert!(
        wall_now() < t0,
        "creating the leases took too long for the test's schedule"
    );
    let conn = open(&db).await;
    // A request in flight: its headers are sent, half of its body is not yet.
    let body = br#"{"name": "late-host", "gpu": "true"}"#;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v1/os-hosts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..10]).unwrap();
    // SIGTERM while the runner is in the middle of a wave of events.
    while done_events(&conn).await < 20 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.signal_term();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[10..]).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 202"),
        "the request in flight was not finished: {answer}"
    );
    let status = server.wait_exit(Duration::from_secs(35)).await;
    assert!(status.success(), "exit status {status}");
    let events = event::Entity::find().all(&conn).await.unwrap();
    let in_progress = events
        .iter()
        .filter(|e| e.status.to_string() == "IN_PROGRESS")
        .count();
    let done = events
        .iter()
        .filter(|e| e.status.to_string() == "DONE")
        .count();
    // Start and before-end (due at t0) of each lease; the ends are an hour away.
    let due = 600;
    println!("SIGTERM: exited with {done}/{due} due events done, {in_progress} in progress");
    assert_eq!(
        in_progress, 0,
        "the runner stopped in the middle of an event"
    );
    assert!(done < due, "the runner finished the wave before the signal");
    // A restart finishes the rest.
    let server = Server::start(&sqlite_url(&db), &log, &[]).await;
    let started = Instant::now();
    while done_events(&conn).await < due {
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hosts: Value = client
        .get(format!("{}/v1/os-hosts", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hosts["hosts"][0]["hypervisor_hostname"], "late-host");
}

/// kill -9 just before and just after a keyed create commits: the lease and its
/// `Idempotency-Key` are there together or not at all, and a retry after the restart never
/// makes a second lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_around_a_keyed_create_a_retry_never_duplicates() {
    use sea_orm::PaginatorTrait;
    for (failpoint, committed) in [("create-before-commit", 0), ("create-after-commit", 1)] {
        let (_dir, db, log) = scratch();
        let server = Server::start_with_env(
            &sqlite_url(&db),
            &log,
            &[],
            &[("BLAZAR_FAILPOINTS", failpoint)],
        )
        .await;
        let client = reqwest::Client::new();
        let (s, _) = post(
            &client,
            format!("{}/v1/os-hosts", server.base),
            json!({"name": "k1"}),
        )
        .await;
        assert_eq!(s, 202);
        let start = wall_now() + TimeDelta::hours(1);
        let body = json!({"name": "keyed", "start_date": fmt(start),
            "end_date": fmt(start + TimeDelta::hours(2)),
            "reservations": [{"resource_type": "physical:host", "min": 1, "max": 1,
                              "hypervisor_properties": "", "resource_properties": ""}]});
        let keyed = |base: &str| {
            client
                .post(format!("{base}/v1/leases"))
                .header("idempotency-key", "crash-key")
                .json(&body)
                .send()
        };
        assert!(
            keyed(&server.base).await.is_err(),
            "{failpoint}: the process dies before answering"
        );
        server.wait_exit(Duration::from_secs(10)).await;

        let conn = open(&db).await;
        let leases = lease::Entity::find().count(&conn).await.unwrap();
        let keys = entity::idempotency_key::Entity::find()
            .count(&conn)
            .await
            .unwrap();
        assert_eq!(
            (leases, keys),
            (committed, committed),
            "{failpoint}: the lease and its key commit together"
        );

        let server = Server::start(&sqlite_url(&db), &log, &[]).await;
        let first = keyed(&server.base).await.unwrap();
        assert_eq!(first.status().as_u16(), 202, "{failpoint}");
        let first = first.text().await.unwrap();
        let again = keyed(&server.base).await.unwrap().text().await.unwrap();
        assert_eq!(again, first, "{failpoint}: the retry replays");
        assert_eq!(
            lease::Entity::find().count(&conn).await.unwrap(),
            1,
            "{failpoint}: one lease"
        );
        server.terminate();
    }
}
