//! Nova mode against a real Nova (tests/support/nova.rs: nova-api, conductor, scheduler with
//! blazar-nova's BlazarFilter, fake-driver computes, placement, glance, started once for this
//! binary): enrolment by name, the aggregate choreography of a lease as BlazarFilter reads it,
//! Nova down and back, a kill -9 between Nova's work and its record, host moves on update,
//! reconciliation, health polling, the real `blazar` CLI, and Keystone's catalog.
//!
//! The tests share one Nova with a fixed set of compute hosts, so they take turns
//! (`nova::exclusive`) and each starts from a clean Nova (`reset`).

#[path = "support/keystone.rs"]
mod keystone;
#[path = "support/nova.rs"]
mod nova;
#[path = "support/process.rs"]
mod process;
#[path = "support/mod.rs"]
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use blazar_server::config::Settings;
use chrono::{NaiveDateTime, TimeDelta};
use entity::{driver_action, event, event_run};
use nova::Nova;
use reqwest::Method;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use support::{TestApp, python_env, spawn_live, spawn_manual, t0};

/// This test's turn on the shared Nova, from a clean slate (no servers, no aggregates).
async fn clean_nova() -> (tokio::sync::MutexGuard<'static, ()>, std::sync::Arc<Nova>) {
    let turn = nova::exclusive().await;
    let nova = nova::shared().await;
    nova.reset().await;
    (turn, nova)
}

/// A figure for the log: straight to the file descriptor, so that CI's log shows it (the test
/// harness would swallow println! of a passing test).
fn report(line: String) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// An admin's action on aggregate `id` straight in Nova (a change behind our server's back).
async fn aggregate_action(nova: &Nova, id: &Value, body: Value) {
    nova.admin(
        Method::POST,
        &format!("/os-aggregates/{id}/action"),
        Some(body),
    )
    .await;
}

/// Settings that point our server at the test Nova (its noauth API).
fn nova_mode(s: &mut Settings, nova: &Nova) {
    s.physical_host.resource_driver = "nova".into();
    s.nova.url = Some(nova.compute_url.clone());
    s.nova.token = Some(nova.admin_token.clone().into());
    s.physical_host.server_deletion_timeout_seconds = 120;
}

/// Our app in nova mode on a manual clock (events run when the test says).
async fn app(nova: &Nova) -> TestApp {
    spawn_manual(|s| nova_mode(s, nova)).await
}

fn at(minutes: i64) -> NaiveDateTime {
    t0() + TimeDelta::minutes(minutes)
}

fn date(minutes: i64) -> String {
    at(minutes).format("%Y-%m-%d %H:%M").to_string()
}

/// Our API as project `project` (noauth headers; admin in every project, as the CLIs are).
async fn post_as(app: &TestApp, project: &str, path: &str, body: &Value) -> support::Resp {
    app.raw(
        Method::POST,
        path,
        &[
            ("content-type", "application/json"),
            ("x-project-id", project),
        ],
        Some(serde_json::to_vec(body).unwrap()),
    )
    .await
}

/// A lease of `project` for `count` hosts matching `filter`, from `start` to `end` minutes
/// after t0; returns (lease id, reservation id).
async fn lease(
    app: &TestApp,
    project: &str,
    count: usize,
    filter: &str,
    (start, end): (i64, i64),
    extra: Value,
) -> (String, String) {
    let mut body = support::lease_body(
        "nova-lease",
        &date(start),
        &date(end),
        count as i64,
        count as i64,
        filter,
    );
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            if k == "before_end" {
                body["reservations"][0]["before_end"] = v;
            } else {
                body[k] = v;
            }
        }
    }
    let r = post_as(app, project, "/v1/leases", &body).await.expect(202);
    (
        r.body["lease"]["id"].as_str().unwrap().to_string(),
        r.body["lease"]["reservations"][0]["id"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

async fn lease_of(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/leases/{id}")).await.expect(200).body["lease"].clone()
}

fn hosts_of(aggregate: &Value) -> Vec<String> {
    let mut h: Vec<String> = aggregate["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    h.sort();
    h
}

async fn freepool(nova: &Nova) -> Vec<String> {
    hosts_of(
        &nova
            .aggregate_by_name("freepool")
            .await
            .expect("the freepool aggregate"),
    )
}

async fn enrol(app: &TestApp, name: &str, extra: Value) -> Value {
    app.host(name, extra).await
}

/// Seconds each run of the lease's events took (event type, outcome, seconds).
async fn event_times(app: &TestApp, lease_id: &str) -> Vec<(String, String, f64)> {
    event_run::Entity::find()
        .filter(event_run::Column::LeaseId.eq(lease_id))
        .order_by_asc(event_run::Column::Id)
        .all(app.services.db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.event_type.to_string(),
                r.outcome.to_string(),
                (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0,
            )
        })
        .collect()
}

/// `POST .../action` requests nova-api logged for aggregate `id`.
async fn actions_on(nova: &Nova, id: &Value) -> usize {
    nova.api_requests(&format!("\"POST /v2.1/os-aggregates/{id}/action\""))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_by_name_takes_nova_facts_and_joins_the_freepool() {
    let (_turn, nova) = clean_nova().await;
    let app = app(&nova).await;
    let [a, b] = [&nova.hosts[0], &nova.hosts[1]];

    let host = enrol(&app, a, json!({"rack": "r1"})).await;
    let (_, hv) = nova
        .request(
            Method::GET,
            &format!("/os-hypervisors/detail?hypervisor_hostname_pattern={a}"),
            None,
            &nova.admin_token,
        )
        .await;
    let hv = &hv["hypervisors"][0];
    for key in [
        "vcpus",
        "memory_mb",
        "local_gb",
        "hypervisor_type",
        "hypervisor_version",
        "hypervisor_hostname",
    ] {
        assert_eq!(host[key], hv[key], "{key}: ours {host} vs Nova's {hv}");
    }
    assert_eq!(host["service_name"], hv["service"]["host"]);
    assert_eq!(
        serde_json::from_str::<Value>(host["cpu_info"].as_str().unwrap()).unwrap(),
        hv["cpu_info"],
        "cpu_info is Nova's, as JSON text"
    );
    assert_eq!(host["availability_zone"], "nova");
    assert_eq!(host["rack"], "r1", "other keys are extra capabilities");
    assert_eq!(freepool(&nova).await, vec![a.clone()]);

    // Refusals change nothing, here or in Nova.
    let before = app.snapshot().await;
    let e = app
        .post("/v1/os-hosts", &json!({"name": "compute-nowhere"}))
        .await
        .expect_error(404);
    assert!(e.contains("compute-nowhere") && e.contains("Nova"), "{e}");
    // Upstream's HostNotFound text first (docs/api.md, "Messages").
    assert!(e.starts_with("Host 'compute-nowhere' not found!"), "{e}");
    let e = app
        .post("/v1/os-hosts", &json!({"name": b, "vcpus": 8}))
        .await
        .expect_error(400);
    assert!(e.contains("'vcpus'") && e.contains("Nova"), "{e}");
    let e = app
        .post("/v1/os-hosts", &json!({"name": a}))
        .await
        .expect_error(409);
    assert!(e.contains("already enrolled"), "{e}");
    // Upstream meets a repeat at Placement: its conflict text comes first.
    assert!(
        e.starts_with(&format!(
            "Conflict on creating resource provider blazar_{a} "
        )),
        "{e}"
    );
    let e = app
        .put(
            &format!("/v1/os-hosts/{}", host["id"].as_str().unwrap()),
            &json!({"memory_mb": 1}),
        )
        .await
        .expect_error(400);
    assert!(e.contains("Nova"), "{e}");
    assert_eq!(app.snapshot().await, before);
    assert_eq!(
        freepool(&nova).await,
        vec![a.clone()],
        "the refused repeat left it in"
    );

    // A host running servers is refused (upstream's HostHavingServers): b is in no Blazar pool,
    // so an ordinary boot lands there.
    let server = nova.boot("ordinary", None).await;
    assert_eq!(server["status"], "ACTIVE", "{server}");
    assert_eq!(server["OS-EXT-SRV-ATTR:host"], b.as_str());
    let e = app
        .post("/v1/os-hosts", &json!({"name": b}))
        .await
        .expect_error(409);
    assert!(e.contains(server["id"].as_str().unwrap()), "{e}");
    // Upstream's HostHavingServers text: Nova's list of servers as Python prints it.
    // (The name is the one Nova's hypervisor listing gives, e.g. instance-00000001.)
    assert!(e.starts_with("Servers [[{'name': '"), "{e}");
    assert!(
        e.contains(&format!(
            "'uuid': '{}'}}]] found for host {b}",
            server["id"].as_str().unwrap()
        )),
        "{e}"
    );
    assert_eq!(freepool(&nova).await, vec![a.clone()]);
    nova.delete_server(server["id"].as_str().unwrap()).await;
    nova.wait_servers_gone(b).await;
    let hb = enrol(&app, b, json!({})).await;
    assert_eq!(freepool(&nova).await, vec![a.clone(), b.clone()]);

    // Deletion: out of the freepool, then gone.
    app.delete(&format!("/v1/os-hosts/{}", hb["id"].as_str().unwrap()))
        .await
        .expect(204);
    assert_eq!(freepool(&nova).await, vec![a.clone()]);
    assert_eq!(
        app.get("/v1/os-hosts").await.body["hosts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_gives_its_project_its_host_through_blazar_filter_and_nobody_else() {
    let (_turn, nova) = clean_nova().await;
    let app = app(&nova).await;
    let [a, b] = [&nova.hosts[0], &nova.hosts[1]];
    enrol(&app, a, json!({"gpu": "true"})).await;
    enrol(&app, b, json!({"gpu": "false"})).await;

    let (lease_id, res) = lease(
        &app,
        "alpha",
        1,
        r#"["==", "$gpu", "true"]"#,
        (1, 120),
        json!({"before_end_date": date(60), "before_end": "snapshot"}),
    )
    .await;
    // At create: the reservation's aggregate, empty, with its zone and owner.
    let agg = nova
        .aggregate_by_name(&res)
        .await
        .expect("aggregate at create");
    assert_eq!(agg["availability_zone"], format!("blazar_{res}"));
    assert_eq!(agg["metadata"]["blazar:owner"], "alpha");
    assert!(hosts_of(&agg).is_empty(), "{agg}");

    app.clock().set(at(1));
    let t = Instant::now();
    assert_eq!(app.run_due().await.done, 1);
    let start_wall = t.elapsed();
    let l = lease_of(&app, &lease_id).await;
    assert_eq!(l["status"], "ACTIVE", "{l}");
    let agg = nova.aggregate_by_name(&res).await.unwrap();
    assert_eq!(hosts_of(&agg), vec![a.clone()]);
    assert_eq!(freepool(&nova).await, vec![b.clone()]);

    // BlazarFilter: the owner with the hint lands on the host; nobody else gets in.
    let mine = nova.boot("alpha", Some(&res)).await;
    assert_eq!(mine["status"], "ACTIVE", "{mine}");
    assert_eq!(mine["OS-EXT-SRV-ATTR:host"], a.as_str());
    for (project, hint) in [("beta", Some(res.as_str())), ("alpha", None)] {
        let refused = nova.boot(project, hint).await;
        assert_eq!(refused["status"], "ERROR", "{project} {hint:?}: {refused}");
        let fault = refused["fault"]["message"].as_str().unwrap_or_default();
        assert!(fault.contains("No valid host"), "{fault}");
    }

    // Before the end: a snapshot of the server, as Nova records it.
    app.clock().set(at(60));
    let t = Instant::now();
    assert_eq!(app.run_due().await.done, 1);
    let snapshot_wall = t.elapsed();
    let server_id = mine["id"].as_str().unwrap();
    let actions = nova
        .admin(
            Method::GET,
            &format!("/servers/{server_id}/os-instance-actions"),
            None,
        )
        .await;
    let snapshots = actions["instanceActions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "createImage")
        .count();
    assert_eq!(snapshots, 1, "{actions}");
    let audit = driver_action::Entity::find()
        .filter(driver_action::Column::LeaseId.eq(&lease_id))
        .filter(driver_action::Column::Action.eq("snapshot"))
        .all(app.services.db.conn())
        .await
        .unwrap();
    let name = format!("reserved_{}", mine["name"].as_str().unwrap());
    assert!(
        audit.len() == 1 && audit[0].detail.contains(&name),
        "{audit:?}"
    );

    // The end: the server is gone, the host is back, the aggregate is deleted.
    app.clock().set(at(120));
    let t = Instant::now();
    assert_eq!(app.run_due().await.done, 1);
    let end_wall = t.elapsed();
    assert_eq!(lease_of(&app, &lease_id).await["status"], "TERMINATED");
    assert!(nova.servers_on(a).await.is_empty());
    assert!(nova.aggregate_by_name(&res).await.is_none());
    assert_eq!(freepool(&nova).await, vec![a.clone(), b.clone()]);
    report(format!(
        "nova timing: 1 host with 1 server: start {:.3} s, snapshot {:.3} s, end {:.3} s",
        start_wall.as_secs_f64(),
        snapshot_wall.as_secs_f64(),
        end_wall.as_secs_f64()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_starts_and_ends_in_one_lease() {
    let (_turn, nova) = clean_nova().await;
    let app = app(&nova).await;
    for h in &nova.hosts {
        enrol(&app, h, json!({})).await;
    }
    let n = nova.hosts.len();
    // Long enough that the before-end warning (an hour before the end) is not due with the start.
    let (lease_id, res) = lease(&app, "alpha", n, "", (1, 180), json!({})).await;
    app.clock().set(at(1));
    let started = Instant::now();
    assert_eq!(app.run_due().await.done, 1);
    let start_wall = started.elapsed();
    let mut all = nova.hosts.clone();
    all.sort();
    assert_eq!(hosts_of(&nova.aggregate_by_name(&res).await.unwrap()), all);
    assert!(freepool(&nova).await.is_empty());
    app.clock().set(at(120));
    assert_eq!(app.run_due().await.done, 1, "the before-end warning");
    app.clock().set(at(180));
    let started = Instant::now();
    assert_eq!(app.run_due().await.done, 1);
    let end_wall = started.elapsed();
    assert_eq!(lease_of(&app, &lease_id).await["status"], "TERMINATED");
    assert_eq!(freepool(&nova).await, all);
    assert!(nova.aggregate_by_name(&res).await.is_none());
    report(format!(
        "nova timing: {n} hosts: start {:.3} s, end {:.3} s",
        start_wall.as_secs_f64(),
        end_wall.as_secs_f64()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_down_at_start_then_back_starts_the_lease_with_one_add_per_host() {
    let (_turn, nova) = clean_nova().await;
    let app = spawn_manual(|s| {
        nova_mode(s, &nova);
        s.nova.retries = 1;
    })
    .await;
    let [a, b] = [&nova.hosts[0], &nova.hosts[1]];
    enrol(&app, a, json!({})).await;
    enrol(&app, b, json!({})).await;

    nova.stop_api().await;
    // Nova cannot create the aggregate: the lease still stands (its hosts are booked).
    let (lease_id, res) = lease(&app, "alpha", 2, "", (1, 180), json!({})).await;
    app.clock().set(at(1));
    let report = app.run_due().await;
    assert_eq!((report.done, report.failed, report.retrying), (0, 0, 1));
    let l = lease_of(&app, &lease_id).await;
    assert_eq!(l["status"], "STARTING", "{l}");
    let reason = l["status_reason"].as_str().unwrap();
    assert!(reason.contains("waiting for Nova"), "{reason}");
    assert!(reason.contains("cannot be reached"), "{reason}");
    // Not before its backoff; then again, still down.
    assert_eq!(app.run_due().await.retrying, 0);
    app.clock().advance(TimeDelta::seconds(5));
    assert_eq!(app.run_due().await.retrying, 1);

    nova.start_api().await;
    app.clock().advance(TimeDelta::seconds(60));
    let report = app.run_due().await;
    assert_eq!(report.done, 1, "{report:?}");
    let l = lease_of(&app, &lease_id).await;
    assert_eq!(l["status"], "ACTIVE", "{l}");
    assert_eq!(l["reservations"][0]["status"], "active");
    let agg = nova.aggregate_by_name(&res).await.unwrap();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(hosts_of(&agg), both);
    // Nova's own log: the aggregate got its owner once and each host once.
    assert_eq!(actions_on(&nova, &agg["id"]).await, 1 + 2);
    let runs: Vec<String> = event_times(&app, &lease_id)
        .await
        .into_iter()
        .map(|(k, o, _)| format!("{k} {o}"))
        .collect();
    assert_eq!(
        runs,
        ["start_lease RETRY", "start_lease RETRY", "start_lease DONE"]
    );

    // A delete while Nova is down is refused and changes nothing.
    nova.stop_api().await;
    let e = app
        .delete(&format!("/v1/leases/{lease_id}"))
        .await
        .expect_error(503);
    assert!(e.contains("Nova"), "{e}");
    let l = lease_of(&app, &lease_id).await;
    assert_eq!(l["status"], "ACTIVE", "{l}");
    assert!(
        l["status_reason"]
            .as_str()
            .unwrap()
            .contains("Delete failed"),
        "{l}"
    );
    nova.start_api().await;
    app.delete(&format!("/v1/leases/{lease_id}"))
        .await
        .expect(204);
    assert!(nova.aggregate_by_name(&res).await.is_none());
    assert_eq!(freepool(&nova).await, both);
    app.get(&format!("/v1/leases/{lease_id}")).await.expect(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_down_past_the_deadline_is_an_error_with_the_reason() {
    let (_turn, nova) = clean_nova().await;
    let app = spawn_manual(|s| {
        nova_mode(s, &nova);
        s.nova.retries = 0;
        s.nova.retry_deadline_seconds = 30;
    })
    .await;
    enrol(&app, &nova.hosts[0], json!({})).await;
    nova.stop_api().await;
    let (lease_id, _) = lease(&app, "alpha", 1, "", (1, 180), json!({})).await;
    app.clock().set(at(1));
    assert_eq!(app.run_due().await.retrying, 1);
    app.clock().advance(TimeDelta::seconds(20));
    assert_eq!(app.run_due().await.retrying, 1, "within the deadline");
    app.clock().advance(TimeDelta::seconds(20));
    let report = app.run_due().await;
    nova.start_api().await;
    assert_eq!(report.failed, 1, "{report:?}");
    let l = lease_of(&app, &lease_id).await;
    assert_eq!(l["status"], "ERROR");
    let reason = l["status_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("start_lease failed: Nova cannot be reached")
            && reason.contains("retried for"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_nova_and_the_record_converges_after_restart() {
    let (_turn, nova) = clean_nova().await;
    let dir = tempfile::tempdir().unwrap();
    let db = process::sqlite_url(&dir.path().join("blazar.db"));
    let log = dir.path().join("server.log");
    let args = [
        "--resource-driver",
        "nova",
        "--nova-url",
        nova.compute_url.as_str(),
        "--nova-token",
        nova.admin_token.as_str(),
    ];
    let server = process::Server::start_with_env(
        &db,
        &log,
        &args,
        &[("BLAZAR_FAILPOINTS", "runner-after-act")],
    )
    .await;
    let http = reqwest::Client::new();
    for h in &nova.hosts[..2] {
        let r = http
            .post(format!("{}/v1/os-hosts", server.base))
            .json(&json!({"name": h}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let body = support::lease_body("killed", "now", "2099-01-01 00:00", 2, 2, "");
    let created: Value = http
        .post(format!("{}/v1/leases", server.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lease_id = created["lease"]["id"].as_str().unwrap().to_string();
    let res = created["lease"]["reservations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The runner starts the lease at once, moves the hosts in Nova, and dies before recording.
    let status = server.wait_exit(Duration::from_secs(60)).await;
    assert!(!status.success(), "killed by its failpoint: {status:?}");
    let agg = nova.aggregate_by_name(&res).await.unwrap();
    let mut both: Vec<String> = nova.hosts[..2].to_vec();
    both.sort();
    assert_eq!(hosts_of(&agg), both, "Nova acted before the kill");
    let adds = actions_on(&nova, &agg["id"]).await;

    let server = process::Server::start(&db, &log, &args).await;
    let started = Instant::now();
    let lease = loop {
        let l: Value = http
            .get(format!("{}/v1/leases/{lease_id}", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if l["lease"]["status"] == "ACTIVE" {
            break l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ACTIVE after the restart: {l}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let start = lease["lease"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "start_lease")
        .unwrap()
        .clone();
    assert_eq!(start["status"], "DONE");
    drop(server);
    let conn = sea_orm::Database::connect(&db).await.unwrap();
    let runs = event_run::Entity::find()
        .filter(event_run::Column::LeaseId.eq(&lease_id))
        .all(&conn)
        .await
        .unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| r.outcome.to_string())
            .collect::<Vec<_>>(),
        ["DONE"],
        "recorded once"
    );
    let ev = event::Entity::find()
        .filter(event::Column::LeaseId.eq(&lease_id))
        .filter(event::Column::EventType.eq("start_lease"))
        .one(&conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.attempts, 2, "run twice: killed once, then taken over");
    assert_eq!(hosts_of(&nova.aggregate_by_name(&res).await.unwrap()), both);
    assert!(freepool(&nova).await.iter().all(|h| !both.contains(h)));
    assert_eq!(
        actions_on(&nova, &agg["id"]).await,
        adds,
        "the second run found the work done: nothing again in Nova"
    );
    let audited = driver_action::Entity::find()
        .filter(driver_action::Column::LeaseId.eq(&lease_id))
        .all(&conn)
        .await
        .unwrap();
    assert!(
        audited.is_empty(),
        "the killed run's actions were never recorded, the second run changed nothing: {audited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_moves_hosts_into_and_out_of_a_running_reservation_at_once() {
    let (_turn, nova) = clean_nova().await;
    let app = app(&nova).await;
    let [a, b] = [&nova.hosts[0], &nova.hosts[1]];
    enrol(&app, a, json!({})).await;
    enrol(&app, b, json!({})).await;
    let (lease_id, res) = lease(&app, "alpha", 1, "", (1, 120), json!({})).await;
    app.clock().set(at(1));
    assert_eq!(app.run_due().await.done, 1);
    let first = hosts_of(&nova.aggregate_by_name(&res).await.unwrap());
    assert_eq!(first.len(), 1);
    let server = nova.boot("alpha", Some(&res)).await;
    assert_eq!(server["status"], "ACTIVE", "{server}");

    let grow = json!({"reservations": [{"id": res, "min": 2, "max": 2}]});
    app.put(&format!("/v1/leases/{lease_id}"), &grow)
        .await
        .expect(202);
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(hosts_of(&nova.aggregate_by_name(&res).await.unwrap()), both);
    assert!(freepool(&nova).await.is_empty());

    let shrink = json!({"reservations": [{"id": res, "min": 1, "max": 1}]});
    app.put(&format!("/v1/leases/{lease_id}"), &shrink)
        .await
        .expect(202);
    let kept = hosts_of(&nova.aggregate_by_name(&res).await.unwrap());
    assert_eq!(kept.len(), 1);
    let gone: Vec<String> = both.iter().filter(|h| !kept.contains(h)).cloned().collect();
    assert_eq!(
        freepool(&nova).await,
        gone,
        "the removed host is back at once"
    );
    assert!(nova.servers_on(&gone[0]).await.is_empty(), "and emptied");
    assert_eq!(app.hosts_of(&lease_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_repairs_what_changed_behind_our_back() {
    let (_turn, nova) = clean_nova().await;
    let app = app(&nova).await;
    let [a, b] = [&nova.hosts[0], &nova.hosts[1]];
    enrol(&app, a, json!({})).await;
    enrol(&app, b, json!({})).await;
    let sync = app.nova_sync.clone().expect("nova mode");
    assert!(
        sync.reconcile().await.unwrap().repaired.is_empty(),
        "in step"
    );

    // An operator takes b out of the freepool; a failed end left a in a dead reservation's
    // aggregate, with a server on it.
    let fp = nova.aggregate_by_name("freepool").await.unwrap();
    aggregate_action(&nova, &fp["id"], json!({"remove_host": {"host": b}})).await;
    let dead = uuid::Uuid::new_v4().to_string();
    let stale = nova
        .admin(
            Method::POST,
            "/os-aggregates",
            Some(
                json!({"aggregate": {"name": dead, "availability_zone": format!("blazar_{dead}")}}),
            ),
        )
        .await;
    let stale_id = stale["aggregate"]["id"].clone();
    aggregate_action(
        &nova,
        &stale_id,
        json!({"set_metadata": {"metadata": {"blazar:owner": "gamma"}}}),
    )
    .await;
    aggregate_action(&nova, &stale_id, json!({"add_host": {"host": a}})).await;
    aggregate_action(&nova, &fp["id"], json!({"remove_host": {"host": a}})).await;
    let leftover = nova.boot("gamma", Some(&dead)).await;
    assert_eq!(leftover["OS-EXT-SRV-ATTR:host"], a.as_str(), "{leftover}");

    let report = sync.reconcile().await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.repaired.len(), 3, "{report:?}");
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(freepool(&nova).await, both);
    assert!(nova.aggregate_by_name(&dead).await.is_none());
    assert!(nova.servers_on(a).await.is_empty());
    assert_eq!(sync.status().repairs, 3);
    assert!(
        sync.reconcile().await.unwrap().repaired.is_empty(),
        "in step again"
    );

    // A running reservation's host pulled out of its aggregate goes back in.
    let (_, res) = lease(&app, "alpha", 1, "", (1, 180), json!({})).await;
    app.clock().set(at(1));
    assert_eq!(app.run_due().await.done, 1);
    let agg = nova.aggregate_by_name(&res).await.unwrap();
    let host = hosts_of(&agg)[0].clone();
    aggregate_action(&nova, &fp["id"], json!({"add_host": {"host": host}})).await;
    aggregate_action(&nova, &agg["id"], json!({"remove_host": {"host": host}})).await;
    let report = sync.reconcile().await.unwrap();
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    assert_eq!(
        hosts_of(&nova.aggregate_by_name(&res).await.unwrap()),
        vec![host.clone()]
    );
    assert!(!freepool(&nova).await.contains(&host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_or_disabled_compute_service_makes_its_host_unreservable() {
    let (_turn, nova) = clean_nova().await;
    let app = app(&nova).await;
    let [a, b] = [&nova.hosts[0], &nova.hosts[1]];
    enrol(&app, a, json!({})).await;
    let hb = enrol(&app, b, json!({})).await;
    let sync = app.nova_sync.clone().unwrap();
    let path = format!("/v1/os-hosts/{}", hb["id"].as_str().unwrap());

    nova.set_service(b, false).await;
    assert_eq!(sync.check_health().await.unwrap(), 1);
    assert_eq!(app.get(&path).await.body["host"]["reservable"], false);
    let e = app
        .lease("two", &date(10), &date(20), 2, 2, "")
        .await
        .expect_error(409);
    assert!(e.contains("Not enough hosts available"), "{e}");

    nova.set_service(b, true).await;
    assert_eq!(sync.check_health().await.unwrap(), 1);
    assert_eq!(app.get(&path).await.body["host"]["reservable"], true);
    app.lease("two", &date(10), &date(20), 2, 2, "")
        .await
        .expect(202);
    assert_eq!(
        sync.check_health().await.unwrap(),
        0,
        "nothing changed since"
    );
}

/// The `blazar` CLI (python-blazarclient, pinned in tests/clients/requirements.txt).
fn blazar(venv: &std::path::Path, endpoint: &str, args: &[&str]) -> Value {
    let out = support::run(
        Command::new(venv.join("bin/blazar"))
            .args(["--os-auth-type", "none", "--os-endpoint", endpoint])
            .args(args)
            .args(["-f", "json"])
            .env_remove("OS_CLOUD"),
    );
    // Some commands print a line ("Created a new host:") before the JSON.
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .find(['{', '['])
        .map(|i| &text[i..])
        .unwrap_or_default();
    serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("blazar {args:?} printed no JSON ({e}): {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blazar_cli_enrols_by_name_and_leases_unchanged_in_nova_mode() {
    let (_turn, nova) = clean_nova().await;
    let packages: Vec<&'static str> = include_str!("clients/requirements.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let venv = tokio::task::spawn_blocking(move || python_env("cli", &packages))
        .await
        .unwrap();
    let app = spawn_live(|s| nova_mode(s, &nova)).await;
    let endpoint = format!("{}/v1", app.base);
    let a = nova.hosts[0].clone();

    let (venv2, ep, host) = (venv.clone(), endpoint.clone(), a.clone());
    let created = tokio::task::spawn_blocking(move || blazar(&venv2, &ep, &["host-create", &host]))
        .await
        .unwrap();
    assert_eq!(created["hypervisor_hostname"], a.as_str(), "{created}");
    assert_eq!(created["vcpus"], 1000, "Nova's fake driver: {created}");
    assert_eq!(freepool(&nova).await, vec![a.clone()]);

    let (venv2, ep) = (venv.clone(), endpoint.clone());
    let lease = tokio::task::spawn_blocking(move || {
        blazar(
            &venv2,
            &ep,
            &[
                "lease-create",
                "--physical-reservation",
                "min=1,max=1,hypervisor_properties=,resource_properties=",
                "--start-date",
                "now",
                "--end-date",
                "2099-01-01 00:00",
                "cli-lease",
            ],
        )
    })
    .await
    .unwrap();
    let id = lease["id"].as_str().unwrap().to_string();
    let res = serde_json::from_str::<Value>(lease["reservations"].as_str().unwrap_or("{}"))
        .ok()
        .and_then(|r| r["id"].as_str().map(str::to_string))
        .unwrap_or_default();
    let started = Instant::now();
    loop {
        let l = lease_of(&app, &id).await;
        if l["status"] == "ACTIVE" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ACTIVE: {l}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = if res.is_empty() {
        lease_of(&app, &id).await["reservations"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        res
    };
    assert_eq!(
        hosts_of(&nova.aggregate_by_name(&res).await.unwrap()),
        vec![a.clone()]
    );

    let (venv2, ep, id2) = (venv.clone(), endpoint.clone(), id.clone());
    tokio::task::spawn_blocking(move || {
        support::run(Command::new(venv2.join("bin/blazar")).args([
            "--os-auth-type",
            "none",
            "--os-endpoint",
            &ep,
            "lease-delete",
            &id2,
        ]))
    })
    .await
    .unwrap();
    assert!(nova.aggregate_by_name(&res).await.is_none());
    assert_eq!(freepool(&nova).await, vec![a.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_mode_finds_nova_in_the_catalog_with_the_service_token() {
    let (_turn, nova) = clean_nova().await;
    let ks = keystone::shared().await;
    let compute = nova
        .start_keystone_api(
            &ks.auth_url,
            "blazar",
            &keystone::password("blazar"),
            "service",
        )
        .await;
    ks.set_endpoint("compute", "nova", &compute).await;
    // The real clock: Keystone's tokens expire in real time.
    let app = spawn_live(|s| {
        s.physical_host.resource_driver = "nova".into();
        s.api.auth_strategy = "keystone".into();
        s.keystone_authtoken.auth_url = Some(ks.auth_url.clone());
        s.keystone_authtoken.username = "blazar".into();
        s.keystone_authtoken.password = Some(keystone::password("blazar").into());
        s.keystone_authtoken.project_name = "service".into();
        s.keystone_authtoken.user_domain_name = "Default".into();
        s.keystone_authtoken.project_domain_name = "Default".into();
    })
    .await;
    let admin = ks
        .password_token("carol", &keystone::password("carol"), "alpha")
        .await;
    let alice = ks
        .password_token("alice", &keystone::password("alice"), "alpha")
        .await;
    let a = nova.hosts[0].clone();
    let noauth_before = nova.api_requests("os-aggregates").await;
    let r = app
        .raw(
            Method::POST,
            "/v1/os-hosts",
            &[
                ("content-type", "application/json"),
                ("x-auth-token", &admin),
            ],
            Some(serde_json::to_vec(&json!({"name": a})).unwrap()),
        )
        .await
        .expect(202);
    assert_eq!(r.body["host"]["vcpus"], 1000, "{}", r.text);
    let body = support::lease_body("ks", "now", "2099-01-01 00:00", 1, 1, "");
    let r = app
        .raw(
            Method::POST,
            "/v1/leases",
            &[
                ("content-type", "application/json"),
                ("x-auth-token", &alice),
            ],
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
        .expect(202);
    let id = r.body["lease"]["id"].as_str().unwrap().to_string();
    let res = r.body["lease"]["reservations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    loop {
        let l = app
            .raw(
                Method::GET,
                &format!("/v1/leases/{id}"),
                &[("x-auth-token", &alice)],
                None,
            )
            .await
            .expect(200);
        if l.body["lease"]["status"] == "ACTIVE" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ACTIVE: {}",
            l.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agg = nova.aggregate_by_name(&res).await.unwrap();
    assert_eq!(hosts_of(&agg), vec![a.clone()]);
    assert_eq!(agg["metadata"]["blazar:owner"], ks.project_id("alpha"));
    assert_eq!(
        nova.api_requests("os-aggregates").await,
        noauth_before + 1,
        "our calls went to the Keystone-authenticated nova-api (only the test's own read here)"
    );
}
