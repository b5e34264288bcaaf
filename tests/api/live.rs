//! The lifecycle on the real clock: a lease starting now and ending two minutes later, and the
//! measured lateness of events (run with `--nocapture` to see the figures).

use std::time::{Duration, Instant};

use chrono::{DurationRound, NaiveDateTime, TimeDelta, Utc};
use entity::event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::*;

fn wall_now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

async fn poll_until(app: &TestApp, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let l = app.get(&format!("/v1/leases/{id}")).await.expect(200).body["lease"].clone();
        if ok(&l) {
            return l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(200),
            "timed out waiting for {what}: {l}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event_of<'a>(l: &'a Value, kind: &str) -> &'a Value {
    l["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == kind)
        .unwrap()
}

/// How late each event of a lease finished, in milliseconds.
async fn lateness_ms(app: &TestApp, lease_id: &str) -> Vec<(String, i64)> {
    event::Entity::find()
        .filter(event::Column::LeaseId.eq(lease_id))
        .all(app.services.db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.event_type.to_string(),
                (e.done_at.expect("done") - e.time).num_milliseconds(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_starting_now_runs_on_time_on_a_real_clock() {
    crate::skip_if_no_database!();
    let app = spawn_live(|s| s.manager.minutes_before_end_lease = 1).await;
    app.host("c1", json!({})).await;
    let start = wall_now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let end = start + TimeDelta::minutes(2);
    let created = app
        .post(
            "/v1/leases",
            &lease_body(
                "live",
                "now",
                &end.format("%Y-%m-%d %H:%M").to_string(),
                1,
                1,
                "",
            ),
        )
        .await
        .expect(202);
    let made = Instant::now();
    let id = created.body["lease"]["id"].as_str().unwrap().to_string();

    let l = poll_until(&app, &id, "ACTIVE", |l| l["status"] == "ACTIVE").await;
    assert!(
        made.elapsed() < Duration::from_secs(1),
        "ACTIVE after {:?}",
        made.elapsed()
    );
    assert_eq!(event_of(&l, "start_lease")["status"], "DONE");

    let before_end = end - TimeDelta::minutes(1);
    let l = poll_until(&app, &id, "before-end", |l| {
        event_of(l, "before_end_lease")["status"] == "DONE"
    })
    .await;
    let late = wall_now() - before_end;
    assert!(
        late < TimeDelta::seconds(1),
        "before-end seen {late} after its time"
    );
    assert_eq!(l["action"], "BEFORE_END", "{l:#}");

    let l = poll_until(&app, &id, "TERMINATED", |l| l["status"] == "TERMINATED").await;
    let late = wall_now() - end;
    assert!(
        late < TimeDelta::seconds(1),
        "TERMINATED seen {late} after the end"
    );
    assert!(
        l["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "DONE")
    );
    for (kind, ms) in lateness_ms(&app, &id).await {
        if kind != "start_lease" {
            // The start was due when the lease was created ("now" is truncated to the minute).
            assert!((0..1000).contains(&ms), "{kind} ran {ms} ms after its time");
        }
        println!("live lease: {kind} finished {ms} ms after its time");
    }
    // Its host is free again.
    let next_end = (wall_now() + TimeDelta::minutes(5))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    app.post(
        "/v1/leases",
        &lease_body("next", "now", &next_end, 1, 1, ""),
    )
    .await
    .expect(202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_lateness_is_measured() {
    crate::skip_if_no_database!();
    let app = spawn_live(|s| s.manager.minutes_before_end_lease = 0).await;
    // 40 leases whose starts fall on 20 distinct seconds from 3 s from now.
    let first = (wall_now() + TimeDelta::seconds(3))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let start = first + TimeDelta::seconds(i / 2);
        let end = start + TimeDelta::hours(1);
        let r = app
            .post(
                "/v1/leases",
                &json!({"name": format!("m{i}"),
                "start_date": start.format("%Y-%m-%d %H:%M:%S").to_string(),
                "end_date": end.format("%Y-%m-%d %H:%M:%S").to_string()}),
            )
            .await
            .expect(202);
        ids.push(r.body["lease"]["id"].as_str().unwrap().to_string());
    }
    let last = ids.last().unwrap().clone();
    poll_until(&app, &last, "the last start", |l| l["status"] == "ACTIVE").await;
    let mut late: Vec<i64> = Vec::new();
    for id in &ids {
        for (kind, ms) in lateness_ms_if_done(&app, id).await {
            if kind == "start_lease" {
                late.push(ms);
            }
        }
    }
    assert_eq!(late.len(), 40);
    late.sort_unstable();
    let p = |q: f64| late[((late.len() as f64 * q).ceil() as usize).clamp(1, late.len()) - 1];
    println!(
        "event lateness over {} start events: min {} ms, p50 {} ms, p99 {} ms, max {} ms",
        late.len(),
        late[0],
        p(0.50),
        p(0.99),
        late[late.len() - 1]
    );
    assert!(late.iter().all(|ms| (0..1000).contains(ms)), "{late:?}");
}

async fn lateness_ms_if_done(app: &TestApp, lease_id: &str) -> Vec<(String, i64)> {
    event::Entity::find()
        .filter(event::Column::LeaseId.eq(lease_id))
        .all(app.services.db.conn())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| {
            e.done_at
                .map(|d| (e.event_type.to_string(), (d - e.time).num_milliseconds()))
        })
        .collect()
}
