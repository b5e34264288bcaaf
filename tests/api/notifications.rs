//! Webhook notifications: one JSON POST per lease change and lease event, retried with backoff.

use std::{sync::atomic::Ordering, time::Duration};

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn every_lease_change_and_event_is_posted() {
    crate::skip_if_no_database!();
    let (url, inbox) = webhook_receiver(0).await;
    let app = spawn_with(|s| {
        s.notifications.urls = vec![url];
        s.notifications.backoff_ms = 10;
    })
    .await;
    app.host("c1", json!({})).await;
    let l = app
        .lease("n", "2030-01-01 13:00", "2030-01-01 15:00", 1, 1, "")
        .await
        .expect(202);
    let id = l.body["lease"]["id"].as_str().unwrap().to_string();
    app.put(&format!("/v1/leases/{id}"), &json!({"name": "n2"}))
        .await
        .expect(202);
    app.clock().set(
        chrono::NaiveDate::from_ymd_opt(2030, 1, 1)
            .unwrap()
            .and_hms_opt(15, 0, 0)
            .unwrap(),
    );
    assert_eq!(app.run_due().await.done, 3);
    app.delete(&format!("/v1/leases/{id}")).await.expect(204);
    let mut got = wait_for(&inbox, 6).await;
    // Deliveries run in parallel; order by the lifecycle for the comparison.
    let rank = |v: &Value| match v["event_type"].as_str().unwrap() {
        "lease.create" => 0,
        "lease.update" => 1,
        "lease.event.start_lease" => 2,
        "lease.event.before_end_lease" => 3,
        "lease.event.end_lease" => 4,
        "lease.delete" => 5,
        _ => 9,
    };
    got.sort_by_key(rank);
    let kinds: Vec<&str> = got
        .iter()
        .map(|v| v["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "lease.create",
            "lease.update",
            "lease.event.start_lease",
            "lease.event.before_end_lease",
            "lease.event.end_lease",
            "lease.delete"
        ]
    );
    for v in &got {
        assert_eq!(v["lease_id"], id.as_str());
        assert_eq!(v["project_id"], "default");
        assert_eq!(v["start_date"], "2030-01-01T13:00:00.000000");
        assert_eq!(v["end_date"], "2030-01-01T15:00:00.000000");
        assert!(v["id"].is_string() && v["timestamp"].is_string());
    }
    let end = &got[4];
    assert_eq!(end["event"]["event_type"], "end_lease");
    assert_eq!(end["event"]["time"], "2030-01-01T15:00:00.000000");
    assert_eq!(end["event"]["status"], "DONE");
    assert_eq!(end["status"], "TERMINATED");
    assert_eq!(got[1]["lease_name"], "n2");
}

#[tokio::test]
async fn deliveries_are_retried_with_backoff() {
    crate::skip_if_no_database!();
    let (url, inbox) = webhook_receiver(3).await;
    let app = spawn_with(|s| {
        s.notifications.urls = vec![url];
        s.notifications.backoff_ms = 10;
        s.notifications.max_attempts = 5;
    })
    .await;
    app.post(
        "/v1/leases",
        &json!({"name": "r", "start_date": "2030-01-02 00:00", "end_date": "2030-01-03 00:00"}),
    )
    .await
    .expect(202);
    let got = wait_for(&inbox, 1).await;
    assert_eq!(got[0]["event_type"], "lease.create");
    assert_eq!(
        inbox.attempts.load(Ordering::SeqCst),
        4,
        "three refusals, then delivered"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_never_blocks_the_api() {
    crate::skip_if_no_database!();
    // Nothing listens on port 9 of the loopback address.
    let app = spawn_with(|s| {
        s.notifications.urls = vec!["http://127.0.0.1:9/hook".into()];
        s.notifications.backoff_ms = 10_000;
    })
    .await;
    let started = std::time::Instant::now();
    for i in 0..5 {
        app.post("/v1/leases", &json!({"name": format!("u{i}"), "start_date": "2030-01-02 00:00", "end_date": "2030-01-03 00:00"}))
            .await
            .expect(202);
    }
    // Five requests while deliveries sleep in a 10 s backoff: the API does not wait for them.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
