//! Concurrent requests competing for the same hosts: never a double booking, never a half lease.

use std::collections::{HashMap, HashSet};

use entity::{allocation, event, lease, reservation};
use sea_orm::EntityTrait;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_double_book() {
    crate::skip_if_no_database!();
    let app = std::sync::Arc::new(spawn_app().await);
    for i in 1..=8 {
        app.host(&format!("c{i}"), json!({})).await;
    }
    // 64 leases of one host each, all overlapping 2030-01-05 13:00..14:00.
    let futs: Vec<_> = (0..64)
        .map(|i| {
            let app = app.clone();
            async move {
                let start = format!("2030-01-05 {:02}:00", 10 + i % 4);
                let end = format!("2030-01-05 {:02}:00", 14 + i % 3);
                app.lease(&format!("l{i}"), &start, &end, 1, 1, "").await
            }
        })
        .collect();
    let results = join_all(futs).await;
    let ok = results.iter().filter(|r| r.status == 202).count();
    let conflicts = results.iter().filter(|r| r.status == 409).count();
    println!("64 concurrent creates for 8 hosts: {ok} created, {conflicts} refused with 409");
    assert_eq!(ok, 8, "exactly as many as there are hosts");
    assert_eq!(
        conflicts,
        56,
        "the rest are refused: {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status == 409) {
        assert_eq!(r.body["error_name"], "NotEnoughHostsAvailable");
    }
    // In the database: each host holds at most one lease, every lease is whole, no orphan rows.
    let db = app.services.db.conn();
    let allocs = allocation::Entity::find().all(db).await.unwrap();
    let leases = lease::Entity::find().all(db).await.unwrap();
    let reservations = reservation::Entity::find().all(db).await.unwrap();
    let events = event::Entity::find().all(db).await.unwrap();
    let mut per_host: HashMap<i64, usize> = HashMap::new();
    for a in &allocs {
        *per_host.entry(a.host_id).or_default() += 1;
    }
    assert_eq!(per_host.len(), 8);
    assert!(
        per_host.values().all(|n| *n == 1),
        "a host booked twice: {per_host:?}"
    );
    let lease_ids: HashSet<&str> = leases.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(leases.len(), 8, "no half-created leases");
    assert_eq!(reservations.len(), 8);
    assert_eq!(events.len(), 24);
    assert!(
        reservations
            .iter()
            .all(|r| lease_ids.contains(r.lease_id.as_str()))
    );
    assert!(
        events
            .iter()
            .all(|e| lease_ids.contains(e.lease_id.as_str()))
    );
    assert!(
        allocs
            .iter()
            .all(|a| lease_ids.contains(a.lease_id.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_in_separate_windows_all_succeed() {
    crate::skip_if_no_database!();
    let app = std::sync::Arc::new(spawn_app().await);
    app.host("c1", json!({})).await;
    let futs: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            async move {
                let start = format!("2030-02-{:02} 00:00", i + 1);
                let end = format!("2030-02-{:02} 00:00", i + 2);
                app.lease(&format!("l{i}"), &start, &end, 1, 1, "")
                    .await
                    .status
            }
        })
        .collect();
    assert!(join_all(futs).await.iter().all(|s| *s == 202));
}

/// Two instances on one database: each one's copy of hosts and bookings follows the other's
/// writes, so neither double-books nor misses a host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_sees_the_first_ones_bookings() {
    crate::skip_if_no_database!();
    let a = spawn_app().await;
    let url = a.services.settings.database.connection.clone();
    let b = spawn_with(move |s| s.database.connection = url).await;
    a.host("c1", json!({})).await;
    // b learns of the host a enrolled, and books it.
    b.lease("via-b", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "")
        .await
        .expect(202);
    // a learns of b's booking: the host is taken for that window.
    let r = a
        .lease("via-a", "2030-01-05 12:00", "2030-01-06 12:00", 1, 1, "")
        .await;
    assert_eq!(
        r.body["error_name"], "NotEnoughHostsAvailable",
        "{}",
        r.text
    );
    // And when b's lease goes, a can book the host.
    let id = b.get("/v1/leases").await.body["leases"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    b.delete(&format!("/v1/leases/{id}")).await.expect(204);
    a.lease("via-a", "2030-01-05 12:00", "2030-01-06 12:00", 1, 1, "")
        .await
        .expect(202);
    b.host("c2", json!({})).await;
    a.lease("via-a-2", "2030-01-05 12:00", "2030-01-06 12:00", 1, 1, "")
        .await
        .expect(202);
}
