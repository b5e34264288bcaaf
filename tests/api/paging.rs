//! Paging of the list endpoints (`limit`, `marker`, `*_links`) and the health probes.

use serde_json::{Value, json};

use crate::helpers::*;

/// Follows `next` links from `first`, returning every page's ids.
async fn walk(app: &TestApp, first: &str, key: &str, id: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = first.to_string();
    loop {
        let r = app.get(&url).await.expect(200);
        pages.push(
            r.body[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x[id].as_str().unwrap().to_string())
                .collect(),
        );
        match r.body.get(format!("{key}_links")) {
            None => break,
            Some(links) => {
                assert_eq!(links[0]["rel"], "next");
                let href = links[0]["href"].as_str().unwrap();
                url = href[href.find("/v1/").unwrap()..].to_string();
            }
        }
    }
    pages
}

#[tokio::test]
async fn lists_page_with_limit_and_marker() {
    crate::skip_if_no_database!();
    let app = spawn_with(|s| s.api.max_page_size = 3).await;
    let mut leases: Vec<String> = Vec::new();
    for i in 0..5 {
        app.host(&format!("c{i}"), json!({})).await;
        let r = app.post("/v1/leases", &json!({"name": format!("l{i}"), "start_date": "2030-01-05 00:00", "end_date": "2030-01-06 00:00"})).await.expect(202);
        leases.push(r.body["lease"]["id"].as_str().unwrap().to_string());
    }
    let pages = walk(&app, "/v1/leases?limit=2", "leases", "id").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let mut seen = pages.concat();
    let by_three = walk(&app, "/v1/leases?limit=3", "leases", "id")
        .await
        .concat();
    assert_eq!(
        seen, by_three,
        "pages follow one order (creation time, then id)"
    );
    seen.sort();
    leases.sort();
    assert_eq!(seen, leases, "every lease exactly once");
    // Without a limit the page is max_page_size; a larger limit is clamped to it.
    assert_eq!(
        walk(&app, "/v1/leases", "leases", "id")
            .await
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        [3, 2]
    );
    assert_eq!(
        walk(&app, "/v1/leases?limit=1000", "leases", "id")
            .await
            .len(),
        2
    );
    let hosts = walk(&app, "/v1/os-hosts?limit=2", "hosts", "id").await;
    assert_eq!(hosts.concat(), ["1", "2", "3", "4", "5"]);
    let allocs = walk(
        &app,
        "/v1/os-hosts/allocations?limit=4",
        "allocations",
        "resource_id",
    )
    .await;
    assert_eq!(allocs.concat(), ["1", "2", "3", "4", "5"]);
    // The next link keeps the other query parameters.
    let r = app
        .get(&format!(
            "/v1/os-hosts/allocations?limit=1&lease_id={}",
            leases[0]
        ))
        .await
        .expect(200);
    let href = r.body["allocations_links"][0]["href"].as_str().unwrap();
    assert!(
        href.contains(&format!("lease_id={}", leases[0])) && href.contains("marker=1"),
        "{href}"
    );

    for bad in [
        "/v1/leases?limit=0",
        "/v1/leases?limit=-5",
        "/v1/leases?limit=ten",
        "/v1/leases?marker=nope",
        "/v1/os-hosts?marker=99",
        "/v1/os-hosts?marker=x",
        "/v1/os-hosts/allocations?marker=0",
    ] {
        app.get(bad).await.expect_error(400);
    }
}

#[tokio::test]
async fn health_and_readiness() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    assert_eq!(
        app.get("/healthz").await.expect(200).body,
        json!({"status": "ok"})
    );
    let r: Value = app.get("/readyz").await.expect(200).body;
    assert_eq!(r["status"], "ready");
    assert_eq!(
        r["database"],
        if on_postgres() { "postgres" } else { "sqlite" }
    );
    assert!(r["migrations"].as_u64().unwrap() >= 2);
}
