//! The lease lifecycle on a manual clock: every transition, before-end actions, updates and deletes
//! around the events, several due events at once, a failing driver, and crash recovery.

use std::sync::Arc;

use async_trait::async_trait;
use blazar_server::jobs::driver::{
    ActionLog, DriverError, ReservationHosts, ResourceDriver, StandaloneDriver,
};
use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use entity::{
    driver_action, event, event_run, lease,
    sea_orm_active_enums::{EventStatus, LeaseStatus},
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};
use serde_json::{Value, json};

use crate::helpers::*;

fn at(day: u32, h: u32, m: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2030, 1, day)
        .unwrap()
        .and_hms_opt(h, m, 0)
        .unwrap()
}

async fn lease_of(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/leases/{id}")).await.expect(200).body["lease"].clone()
}

fn event_status(lease: &Value, kind: &str) -> String {
    lease["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == kind)
        .map(|e| e["status"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "absent".into())
}

fn all_events_done(lease: &Value) -> bool {
    lease["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["status"] == "DONE")
}

async fn actions(app: &TestApp, lease_id: &str) -> Vec<(i64, String)> {
    driver_action::Entity::find()
        .filter(driver_action::Column::LeaseId.eq(lease_id))
        .order_by_asc(driver_action::Column::Id)
        .all(app.services.db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.host_id, a.action))
        .collect()
}

async fn runs(app: &TestApp, lease_id: &str) -> Vec<(String, String)> {
    event_run::Entity::find()
        .filter(event_run::Column::LeaseId.eq(lease_id))
        .order_by_asc(event_run::Column::Id)
        .all(app.services.db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.event_type.to_string(), r.outcome.to_string()))
        .collect()
}

/// Two hosts and two leases named `names`, from 13:00 to 15:00 on the first day.
async fn two_leases_from_one(app: &TestApp, names: [&str; 2]) -> [String; 2] {
    app.host("c1", json!({})).await;
    app.host("c2", json!({})).await;
    let mut ids = Vec::new();
    for name in names {
        ids.push(
            create(
                app,
                lease_body(name, "2030-01-01 13:00", "2030-01-01 15:00", 1, 1, ""),
            )
            .await,
        );
    }
    ids.try_into().unwrap()
}

async fn create(app: &TestApp, body: Value) -> String {
    app.post("/v1/leases", &body).await.expect(202).body["lease"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_lease_goes_pending_active_terminated_and_frees_its_hosts() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    let id = create(
        &app,
        lease_body("l", "2030-01-01 13:00", "2030-01-02 13:00", 1, 1, ""),
    )
    .await;
    let l = lease_of(&app, &id).await;
    assert_eq!(l["status"], "PENDING");

    app.clock().set(at(1, 12, 59));
    assert_eq!(app.run_due().await.done, 0, "nothing is due yet");

    app.clock().set(at(1, 13, 0));
    assert_eq!(app.run_due().await.done, 1);
    let l = lease_of(&app, &id).await;
    assert_eq!(l["status"], "ACTIVE");
    assert_eq!(l["action"], "START");
    assert_eq!(l["status_reason"], "Lease started: hosts 1 assigned");
    assert_eq!(l["reservations"][0]["status"], "active");
    assert_eq!(event_status(&l, "start_lease"), "DONE");
    assert_eq!(event_status(&l, "end_lease"), "UNDONE");

    app.clock().set(at(2, 12, 0));
    assert_eq!(app.run_due().await.done, 1);
    let l = lease_of(&app, &id).await;
    assert_eq!(l["status"], "ACTIVE", "before-end changes no status");
    assert_eq!(l["action"], "BEFORE_END");
    assert_eq!(
        l["status_reason"],
        "Before-end action none taken on hosts 1"
    );
    assert_eq!(event_status(&l, "before_end_lease"), "DONE");

    app.clock().set(at(2, 13, 0));
    assert_eq!(app.run_due().await.done, 1);
    let l = lease_of(&app, &id).await;
    assert_eq!(l["status"], "TERMINATED");
    assert_eq!(l["action"], "END");
    assert_eq!(l["status_reason"], "Lease ended: hosts 1 released");
    assert_eq!(l["reservations"][0]["status"], "deleted");
    assert!(all_events_done(&l), "{l:#}");
    assert_eq!(
        actions(&app, &id).await,
        vec![
            (1, "assign".into()),
            (1, "none".into()),
            (1, "release".into())
        ]
    );
    assert_eq!(runs(&app, &id).await.len(), 3, "each event ran once");
    // The host is free again: a lease from now on gets it, and the host can be deleted.
    create(
        &app,
        lease_body("next", "2030-01-02 13:00", "2030-01-03 13:00", 1, 1, ""),
    )
    .await;
    assert_eq!(app.run_due().await.done, 1, "the next lease starts");
    assert_eq!(app.run_due().await.done, 0, "nothing runs twice");
}

#[tokio::test]
async fn before_end_actions_per_reservation() {
    crate::skip_if_no_database!();
    let app = spawn_with(|s| s.physical_host.before_end = "snapshot".into()).await;
    for i in 1..=3 {
        app.host(&format!("c{i}"), json!({})).await;
    }
    let mut body = lease_body("b", "2030-01-01 13:00", "2030-01-01 18:00", 1, 1, "");
    let r = body["reservations"][0].clone();
    let with = |v: &str| {
        let mut x = r.clone();
        x["before_end"] = json!(v);
        x
    };
    body["reservations"] = json!([with(""), with("default"), with("snapshot")]);
    body["before_end_date"] = json!("2030-01-01 15:30");
    let id = create(&app, body).await;
    let l = lease_of(&app, &id).await;
    assert_eq!(l["events"][2]["time"], "2030-01-01T15:30:00.000000");
    app.clock().set(at(1, 13, 0));
    app.run_due().await;
    app.clock().set(at(1, 15, 29));
    assert_eq!(app.run_due().await.done, 0);
    app.clock().set(at(1, 15, 30));
    assert_eq!(app.run_due().await.done, 1);
    let l = lease_of(&app, &id).await;
    assert_eq!(
        l["status_reason"],
        "Before-end action none, snapshot taken on hosts 1, 2, 3"
    );
    let acts = actions(&app, &id).await;
    let before_end: Vec<&(i64, String)> = acts.iter().filter(|(_, a)| a != "assign").collect();
    assert_eq!(
        before_end,
        vec![
            &(1, "none".to_string()),
            &(2, "snapshot".to_string()),
            &(3, "snapshot".to_string())
        ],
        "'' does nothing, default means the configured snapshot, snapshot snapshots"
    );
}

#[tokio::test]
async fn updates_move_the_events() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    let id = create(
        &app,
        lease_body("u", "2030-01-01 13:00", "2030-01-02 13:00", 1, 1, ""),
    )
    .await;
    let path = format!("/v1/leases/{id}");
    // Before the start: move start and end.
    app.put(
        &path,
        &json!({"start_date": "2030-01-01 14:00", "end_date": "2030-01-02 14:00"}),
    )
    .await
    .expect(202);
    app.clock().set(at(1, 13, 30));
    assert_eq!(
        app.run_due().await.done,
        0,
        "the old start time has no event any more"
    );
    app.clock().set(at(1, 14, 0));
    assert_eq!(app.run_due().await.done, 1);
    // After the before-end event fired, prolonging re-arms it at the same distance to the end.
    app.clock().set(at(2, 13, 0));
    assert_eq!(app.run_due().await.done, 1);
    assert_eq!(
        event_status(&lease_of(&app, &id).await, "before_end_lease"),
        "DONE"
    );
    let l = app
        .put(&path, &json!({"end_date": "2030-01-03 14:00"}))
        .await
        .expect(202)
        .body["lease"]
        .clone();
    assert_eq!(l["events"][1]["time"], "2030-01-03T14:00:00.000000");
    assert_eq!(l["events"][2]["time"], "2030-01-03T13:00:00.000000");
    assert_eq!(l["events"][2]["status"], "UNDONE");
    assert_eq!(l["status"], "ACTIVE");
    app.clock().set(at(2, 14, 0));
    assert_eq!(
        app.run_due().await.done,
        0,
        "the old end time has no event any more"
    );
    // A rename does not re-arm anything.
    app.put(&path, &json!({"name": "renamed"}))
        .await
        .expect(202);
    app.clock().set(at(3, 14, 0));
    assert_eq!(app.run_due().await.done, 2, "before-end again, then end");
    let l = lease_of(&app, &id).await;
    assert_eq!(l["status"], "TERMINATED");
    assert_eq!(
        runs(&app, &id)
            .await
            .iter()
            .filter(|(t, _)| t == "before_end_lease")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_running_reservation_that_grows_or_shrinks_moves_its_hosts_at_once() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    app.host("c2", json!({})).await;
    let id = create(
        &app,
        lease_body("g", "2030-01-01 13:00", "2030-01-02 13:00", 1, 1, ""),
    )
    .await;
    app.clock().set(at(1, 13, 0));
    app.run_due().await;
    let rid = lease_of(&app, &id).await["reservations"][0]["id"].clone();
    app.put(
        &format!("/v1/leases/{id}"),
        &json!({"reservations": [{"id": rid, "max": 2}]}),
    )
    .await
    .expect(202);
    assert_eq!(
        actions(&app, &id).await,
        vec![(1, "assign".into()), (2, "assign".into())]
    );
    // Shrinking hands its newest host back at once.
    app.put(
        &format!("/v1/leases/{id}"),
        &json!({"reservations": [{"id": rid, "min": 1, "max": 1}]}),
    )
    .await
    .expect(202);
    assert_eq!(
        actions(&app, &id).await,
        vec![
            (1, "assign".into()),
            (2, "assign".into()),
            (2, "release".into())
        ]
    );
    assert_eq!(app.hosts_of(&id).await, vec!["1"]);
    // But it cannot lose a host it keeps to new filters: refused, nothing changed.
    let before = app.dump().await;
    let msg = app
        .put(
            &format!("/v1/leases/{id}"),
            &json!({"reservations": [{"id": rid,
                "hypervisor_properties": "[\"==\", \"$hypervisor_hostname\", \"c2\"]"}]}),
        )
        .await
        .expect_error(409);
    assert!(msg.contains("is active"), "{msg}");
    assert_eq!(app.dump().await, before);
}

#[tokio::test]
async fn deleting_before_during_and_after() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    let before = create(
        &app,
        lease_body("b", "2030-01-01 13:00", "2030-01-01 14:00", 1, 1, ""),
    )
    .await;
    app.delete(&format!("/v1/leases/{before}"))
        .await
        .expect(204);
    app.clock().set(at(1, 15, 0));
    assert_eq!(
        app.run_due().await,
        Default::default(),
        "a deleted lease's events never run"
    );
    assert!(actions(&app, &before).await.is_empty());

    let during = create(
        &app,
        lease_body("d", "2030-01-01 16:00", "2030-01-01 18:00", 1, 1, ""),
    )
    .await;
    app.clock().set(at(1, 16, 0));
    app.run_due().await;
    app.delete(&format!("/v1/leases/{during}"))
        .await
        .expect(204);
    assert_eq!(
        actions(&app, &during).await,
        vec![(1, "assign".into()), (1, "release".into())]
    );
    // The host is free for the rest of the deleted lease's window.
    let after = create(
        &app,
        lease_body("a", "2030-01-01 16:30", "2030-01-01 17:00", 1, 1, ""),
    )
    .await;
    app.clock().set(at(1, 17, 0));
    assert_eq!(app.run_due().await.done, 3);
    assert_eq!(lease_of(&app, &after).await["status"], "TERMINATED");
    app.delete(&format!("/v1/leases/{after}")).await.expect(204);
    assert_eq!(
        actions(&app, &after)
            .await
            .iter()
            .filter(|(_, a)| a == "release")
            .count(),
        1,
        "a terminated lease released its hosts already"
    );
}

#[tokio::test]
async fn several_due_events_run_in_order_after_downtime() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    let a = create(
        &app,
        lease_body("a", "2030-01-01 13:00", "2030-01-01 15:00", 1, 1, ""),
    )
    .await;
    let b = create(
        &app,
        lease_body("b", "2030-01-01 15:00", "2030-01-01 17:00", 1, 1, ""),
    )
    .await;
    // The runner was down all afternoon.
    app.clock().set(at(1, 18, 0));
    let report = app.run_due().await;
    assert_eq!((report.done, report.failed, report.waiting), (6, 0, 0));
    let order: Vec<(String, String)> = event_run::Entity::find()
        .order_by_asc(event_run::Column::Id)
        .all(app.services.db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                if r.lease_id == a { "a" } else { "b" }.to_string(),
                r.event_type.to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("a", "start_lease"),
        ("a", "before_end_lease"),
        ("a", "end_lease"),
        ("b", "start_lease"),
        ("b", "before_end_lease"),
        ("b", "end_lease"),
    ]
    .iter()
    .map(|(l, t)| (l.to_string(), t.to_string()))
    .collect();
    assert_eq!(
        order, want,
        "a ends before b starts on the same host; start, before-end, end"
    );
    for id in [&a, &b] {
        assert_eq!(lease_of(&app, id).await["status"], "TERMINATED");
    }
}

/// The standalone driver, except for `assign`: it fails for leases whose name starts with
/// "fail"; Nova is unreachable for those named "gone...", and for those named "down..." while
/// `nova_down` is set; and with `together`, it waits until that many assigns are in progress at
/// once (failing after 5 s).
#[derive(Default)]
struct TestDriver {
    together: Option<tokio::sync::Barrier>,
    nova_down: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl ResourceDriver for TestDriver {
    async fn assign(
        &self,
        r: ReservationHosts<'_>,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        if r.lease.name.starts_with("fail") {
            return Err(DriverError::Failed(
                "the hypervisor refused the hosts".into(),
            ));
        }
        let name = r.lease.name.as_str();
        if name.starts_with("gone")
            || (name.starts_with("down")
                && self.nova_down.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(DriverError::Unavailable("Nova does not answer".into()));
        }
        if let Some(together) = &self.together {
            tokio::time::timeout(std::time::Duration::from_secs(5), together.wait())
                .await
                .map_err(|_| DriverError::Failed("the other assigns never came".into()))?;
        }
        StandaloneDriver.assign(r, log).await
    }
    async fn before_end(
        &self,
        r: ReservationHosts<'_>,
        action: &str,
        since: NaiveDateTime,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        StandaloneDriver.before_end(r, action, since, log).await
    }
    async fn release(
        &self,
        r: ReservationHosts<'_>,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        StandaloneDriver.release(r, log).await
    }
}

#[tokio::test]
async fn a_failing_action_marks_error_with_a_reason_and_nothing_else() {
    crate::skip_if_no_database!();
    let app = spawn_with_driver(|_| {}, Arc::new(TestDriver::default())).await;
    let [bad, good] = two_leases_from_one(&app, ["fail-1", "good"]).await;
    app.clock().set(at(1, 13, 0));
    let report = app.run_due().await;
    assert_eq!((report.done, report.failed), (1, 1));
    let l = lease_of(&app, &bad).await;
    assert_eq!(l["status"], "ERROR");
    assert_eq!(
        l["status_reason"],
        "start_lease failed: the hypervisor refused the hosts"
    );
    assert_eq!(l["reservations"][0]["status"], "error");
    assert_eq!(event_status(&l, "start_lease"), "ERROR");
    assert!(
        actions(&app, &bad).await.is_empty(),
        "the failed attempt recorded nothing"
    );
    let g = lease_of(&app, &good).await;
    assert_eq!(g["status"], "ACTIVE");
    // The failed lease still ends on time (ERROR -> TERMINATED) and can be deleted.
    app.clock().set(at(1, 15, 0));
    app.run_due().await;
    assert_eq!(lease_of(&app, &bad).await["status"], "TERMINATED");
    assert_eq!(lease_of(&app, &good).await["status"], "TERMINATED");
    app.delete(&format!("/v1/leases/{bad}")).await.expect(204);
}

/// As a server leaves things that claimed event `kind` of lease `id` at `claimed` (moving the
/// event to then, the claim for 30 s) and died: the lease `status`, the event IN_PROGRESS.
async fn died_holding(
    app: &TestApp,
    id: &str,
    kind: &str,
    claimed: NaiveDateTime,
    status: LeaseStatus,
) {
    let db = app.services.db.conn();
    let ev = event::Entity::find()
        .filter(event::Column::LeaseId.eq(id))
        .filter(event::Column::EventType.eq(kind))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let mut e = ev.into_active_model();
    e.status = Set(EventStatus::InProgress);
    e.claimed_by = Set(Some("dead-runner".into()));
    e.claimed_at = Set(Some(claimed));
    e.claim_expires_at = Set(Some(claimed + TimeDelta::seconds(30)));
    e.time = Set(claimed);
    e.attempts = Set(1);
    e.update(db).await.unwrap();
    let mut l = lease::Entity::find_by_id(id.to_string())
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    l.status = Set(status);
    l.update(db).await.unwrap();
}

#[tokio::test]
async fn an_expired_claim_is_taken_over_and_run_once() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    let id = create(
        &app,
        lease_body("c", "2030-01-01 13:00", "2030-01-01 15:00", 1, 1, ""),
    )
    .await;
    // A runner claimed the start event at 13:00 and died: its claim ran until 13:00:30.
    died_holding(
        &app,
        &id,
        "start_lease",
        at(1, 13, 0),
        LeaseStatus::Starting,
    )
    .await;
    app.delete(&format!("/v1/leases/{id}"))
        .await
        .expect_error(409);

    app.clock().set(at(1, 13, 0) + TimeDelta::seconds(10));
    let report = app.run_due().await;
    assert_eq!(
        (report.done, report.waiting),
        (0, 0),
        "a live claim is left alone"
    );
    app.clock().set(at(1, 13, 0) + TimeDelta::seconds(30));
    assert_eq!(
        app.run_due().await.done,
        1,
        "the expired claim is taken over"
    );
    let l = lease_of(&app, &id).await;
    assert_eq!(l["status"], "ACTIVE");
    assert_eq!(event_status(&l, "start_lease"), "DONE");
    assert_eq!(
        runs(&app, &id).await,
        vec![("start_lease".into(), "DONE".into())]
    );
    assert_eq!(actions(&app, &id).await, vec![(1, "assign".into())]);
    assert_eq!(app.run_due().await.done, 0);
}

/// Write transactions begun so far, from `/metrics` (each waits for the write turn once).
async fn write_transactions(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.expect(200).text;
    text.lines()
        .find_map(|l| l.strip_prefix("blazar_db_write_wait_seconds_count "))
        .expect("the write-turn histogram is exported")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn many_leases_starting_together_start_in_one_run() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let n = 40;
    for i in 0..n {
        app.host(&format!("c{i}"), json!({})).await;
    }
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            create(
                &app,
                lease_body(
                    &format!("l{i}"),
                    "2030-01-01 13:00",
                    "2030-01-02 13:00",
                    1,
                    1,
                    "",
                ),
            )
            .await,
        );
    }
    app.clock().set(at(1, 13, 0));
    let writes_before = write_transactions(&app).await;
    let report = app.run_due().await;
    assert_eq!(
        (report.done, report.failed, report.waiting, report.retrying),
        (n, 0, 0, 0)
    );
    let writes = write_transactions(&app).await - writes_before;
    assert!(
        writes <= 4,
        "{writes} write transactions for {n} events: a batch is claimed in one and recorded in one"
    );
    let db = app.services.db.conn();
    for id in &ids {
        let l = lease::Entity::find_by_id(id.clone())
            .one(db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.status, LeaseStatus::Active, "{id}");
        let start = event::Entity::find()
            .filter(event::Column::LeaseId.eq(id))
            .filter(event::Column::EventType.eq("start_lease"))
            .one(db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(start.status, EventStatus::Done, "{id}");
        assert_eq!(
            runs(&app, id).await,
            vec![("start_lease".into(), "DONE".into())],
            "{id}: one run"
        );
        assert_eq!(actions(&app, id).await.len(), 1, "{id}: one assign");
    }
    let hosts: Vec<i64> = driver_action::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.host_id)
        .collect();
    let distinct: std::collections::HashSet<_> = hosts.iter().collect();
    assert_eq!(distinct.len(), n, "each lease its own host");
    assert_eq!(
        app.run_due().await,
        Default::default(),
        "nothing runs twice"
    );
}

#[tokio::test]
async fn a_short_lease_missed_while_down_starts_then_ends_in_one_run() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    let id = create(
        &app,
        lease_body("s", "2030-01-01 13:00", "2030-01-01 13:30", 1, 1, ""),
    )
    .await;
    app.clock().set(at(1, 14, 0));
    let report = app.run_due().await;
    let kinds: Vec<String> = runs(&app, &id).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        (report.done, report.failed, report.waiting),
        (kinds.len(), 0, 0)
    );
    assert_eq!(kinds.first().map(String::as_str), Some("start_lease"));
    assert_eq!(kinds.last().map(String::as_str), Some("end_lease"));
    let l = lease_of(&app, &id).await;
    assert_eq!(l["status"], "TERMINATED");
    assert!(all_events_done(&l), "{l:#}");
    assert_eq!(
        actions(&app, &id)
            .await
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| a != "none")
            .collect::<Vec<_>>(),
        vec!["assign".to_string(), "release".to_string()]
    );
}

#[tokio::test]
async fn leases_starting_together_act_at_once() {
    crate::skip_if_no_database!();
    let app = spawn_with_driver(
        |_| {},
        Arc::new(TestDriver {
            together: Some(tokio::sync::Barrier::new(2)),
            ..Default::default()
        }),
    )
    .await;
    two_leases_from_one(&app, ["p1", "p2"]).await;
    app.clock().set(at(1, 13, 0));
    let report = app.run_due().await;
    assert_eq!(
        (report.done, report.failed),
        (2, 0),
        "one start waited for the other to finish"
    );
}

#[tokio::test]
async fn starts_that_nova_fails_for_now_are_retried_until_the_deadline() {
    crate::skip_if_no_database!();
    let driver = Arc::new(TestDriver::default());
    driver
        .nova_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let app = spawn_with_driver(|_| {}, driver.clone()).await;
    let [down, gone] = two_leases_from_one(&app, ["down", "gone"]).await;
    app.clock().set(at(1, 13, 0));
    let report = app.run_due().await;
    assert_eq!((report.done, report.failed, report.retrying), (0, 0, 2));
    for id in [&down, &gone] {
        let l = lease_of(&app, id).await;
        assert_eq!(l["status"], "STARTING", "{l:#}");
        assert!(
            l["status_reason"]
                .as_str()
                .unwrap()
                .contains("is waiting for Nova"),
            "{l:#}"
        );
        assert_eq!(
            runs(&app, id).await,
            vec![("start_lease".into(), "RETRY".into())]
        );
    }

    driver
        .nova_down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    app.clock().set(at(1, 13, 0) + TimeDelta::seconds(5));
    let report = app.run_due().await;
    assert_eq!((report.done, report.failed, report.retrying), (1, 0, 1));
    assert_eq!(lease_of(&app, &down).await["status"], "ACTIVE");
    assert_eq!(
        runs(&app, &down).await,
        vec![
            ("start_lease".into(), "RETRY".into()),
            ("start_lease".into(), "DONE".into())
        ]
    );

    // Past `nova_retry_deadline_seconds` (600) from the first attempt: an ERROR.
    app.clock().set(at(1, 13, 11));
    let report = app.run_due().await;
    assert_eq!((report.done, report.failed, report.retrying), (0, 1, 0));
    let l = lease_of(&app, &gone).await;
    assert_eq!(l["status"], "ERROR");
    assert_eq!(
        l["status_reason"],
        "start_lease failed: Nova does not answer (retried for 660 s)"
    );
    assert_eq!(event_status(&l, "start_lease"), "ERROR");
}

#[tokio::test]
async fn a_deletion_whose_server_died_is_finished_by_the_runner() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    let id = create(
        &app,
        lease_body("d", "2030-01-01 13:00", "2030-01-01 15:00", 1, 1, ""),
    )
    .await;
    app.clock().set(at(1, 13, 0));
    assert_eq!(app.run_due().await.done, 1);
    // A deletion claimed the end at 13:10 (moving it to then) and its server died before the
    // hosts were returned.
    died_holding(&app, &id, "end_lease", at(1, 13, 10), LeaseStatus::Deleting).await;

    app.clock().set(at(1, 13, 11));
    let report = app.run_due().await;
    assert_eq!((report.done, report.failed, report.waiting), (1, 0, 0));
    app.get(&format!("/v1/leases/{id}")).await.expect(404);
    assert_eq!(
        runs(&app, &id).await,
        vec![
            ("start_lease".into(), "DONE".into()),
            ("end_lease".into(), "DONE".into())
        ],
        "the audit outlives the lease"
    );
    assert_eq!(
        actions(&app, &id).await,
        vec![(1, "assign".into()), (1, "release".into())]
    );
    // Its host is free for the rest of its window, in the placement copy too.
    let next = create(
        &app,
        lease_body("n", "2030-01-01 13:30", "2030-01-01 16:30", 1, 1, ""),
    )
    .await;
    app.clock().set(at(1, 13, 30));
    assert_eq!(app.run_due().await.done, 1);
    assert_eq!(lease_of(&app, &next).await["status"], "ACTIVE");
    assert_eq!(app.run_due().await, Default::default());
}
