//! Concurrent requests competing for the same hosts: never a double booking, never a half lease.

use std::collections::HashMap;

use futures_util_free::join_all;
use serde_json::json;

use crate::helpers::*;

/// Joins futures without a futures-util dependency: spawn each on the runtime.
mod futures_util_free {
    pub async fn join_all<F, T>(futs: Vec<F>) -> Vec<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_double_book() {
    let app = std::sync::Arc::new(spawn_app().await);
    for i in 1..=4 {
        app.host(&format!("c{i}"), json!({})).await;
    }
    // 32 leases of one host each, all overlapping 2030-01-05 12:00..13:00.
    let futs: Vec<_> = (0..32)
        .map(|i| {
            let app = app.clone();
            async move {
                let start = format!("2030-01-05 {:02}:00", 10 + i % 3);
                let end = format!("2030-01-05 {:02}:00", 13 + i % 2);
                app.lease(&format!("l{i}"), &start, &end, 1, 1, "").await
            }
        })
        .collect();
    let results = join_all(futs).await;
    let ok = results.iter().filter(|r| r.status == 202).count();
    let conflicts = results.iter().filter(|r| r.status == 409).count();
    assert_eq!(ok, 4, "exactly as many as there are hosts");
    assert_eq!(
        conflicts,
        28,
        "the rest are refused: {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status == 409) {
        assert_eq!(r.body["error_name"], "NotEnoughHostsAvailable");
    }
    // Each host holds at most one lease, and every stored lease has its host.
    let all = app.get("/v1/os-hosts/allocations").await.expect(200);
    let mut per_lease: HashMap<String, usize> = HashMap::new();
    for a in all.body["allocations"].as_array().unwrap() {
        let held = a["reservations"].as_array().unwrap();
        assert_eq!(
            held.len(),
            1,
            "host {} booked {} times",
            a["resource_id"],
            held.len()
        );
        *per_lease
            .entry(held[0]["lease_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let leases = app.get("/v1/leases").await.expect(200);
    assert_eq!(
        leases.body["leases"].as_array().unwrap().len(),
        4,
        "no half-created leases"
    );
    assert_eq!(per_lease.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_in_separate_windows_all_succeed() {
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
