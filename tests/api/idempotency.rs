//! Idempotent creates (`Idempotency-Key` on POST /v1/leases and /v1/os-hosts): replays byte for
//! byte, 422 on another body, per-project keys, refusals not remembered, real concurrency,
//! replay after a restart, and the purge of expired keys.

use std::sync::Arc;

use chrono::TimeDelta;
use entity::{host, idempotency_key, lease};
use reqwest::Method;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::helpers::*;

const JSON: (&str, &str) = ("content-type", "application/json");

fn window_body(name: &str) -> Value {
    lease_body(name, "2030-01-05 10:00", "2030-01-06 10:00", 1, 1, "")
}

/// POSTs `body` (as these exact bytes) to `path` with the key and extra headers.
async fn post_keyed(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Resp {
    let mut headers = vec![JSON, ("idempotency-key", key)];
    headers.extend_from_slice(extra);
    app.raw(Method::POST, path, &headers, Some(body.to_vec()))
        .await
}

async fn count_leases(app: &TestApp) -> u64 {
    lease::Entity::find()
        .count(app.services.db.conn())
        .await
        .unwrap()
}

async fn count_keys(app: &TestApp) -> u64 {
    idempotency_key::Entity::find()
        .count(app.services.db.conn())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_gets_the_first_response_byte_for_byte_and_creates_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("h1", json!({})).await;
    let soon = lease_body("once", "2030-01-01 13:00", "2030-01-02 13:00", 1, 1, "");
    let body = serde_json::to_vec(&soon).unwrap();
    let first = post_keyed(&app, "/v1/leases", "key-1", &body, &[])
        .await
        .expect(202);
    // The same object with its keys in another order and other spacing is the same request;
    // and the retry comes after the start date has passed, which a fresh create would refuse.
    app.clock().advance(TimeDelta::hours(2));
    let reordered = br#"{ "events": [], "reservations": [{"resource_properties": "", "max": 1,
        "min": 1, "hypervisor_properties": "", "resource_type": "physical:host"}],
        "end_date": "2030-01-02 13:00", "start_date": "2030-01-01 13:00", "name": "once" }"#;
    for retry in [&body[..], &reordered[..]] {
        let again = post_keyed(&app, "/v1/leases", "key-1", retry, &[])
            .await
            .expect(202);
        assert_eq!(
            again.text, first.text,
            "the replay is the first response, byte for byte"
        );
        assert_eq!(again.headers["content-type"], first.headers["content-type"]);
    }
    assert_eq!(count_leases(&app).await, 1);
    assert_eq!(count_keys(&app).await, 1);
    // The lease replayed is the one stored.
    let id = first.body["lease"]["id"].as_str().unwrap();
    let shown = app.get(&format!("/v1/leases/{id}")).await.expect(200);
    assert_eq!(shown.body["lease"], first.body["lease"]);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_changes_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("h1", json!({})).await;
    app.host("h2", json!({})).await;
    let body = serde_json::to_vec(&window_body("first")).unwrap();
    post_keyed(&app, "/v1/leases", "k", &body, &[])
        .await
        .expect(202);
    let before = app.dump().await;
    let other = serde_json::to_vec(&window_body("second")).unwrap();
    let r = post_keyed(&app, "/v1/leases", "k", &other, &[]).await;
    let msg = r.expect_error(422);
    assert!(msg.contains("Idempotency-Key k was already used"), "{msg}");
    assert_eq!(app.dump().await, before, "a refused reuse changes nothing");
    // Hosts too.
    let h = br#"{"name": "h3"}"#;
    post_keyed(&app, "/v1/os-hosts", "hk", h, &[])
        .await
        .expect(202);
    let r = post_keyed(&app, "/v1/os-hosts", "hk", br#"{"name": "h4"}"#, &[]).await;
    assert_eq!(r.body["error_name"], "IdempotencyKeyReused");
    r.expect_error(422);
}

#[tokio::test]
async fn malformed_keys_are_400_and_create_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("h1", json!({})).await;
    let body = serde_json::to_vec(&window_body("bad")).unwrap();
    let long = "k".repeat(256);
    for key in ["", "a b", "\"\"", long.as_str()] {
        let r = post_keyed(&app, "/v1/leases", key, &body, &[]).await;
        assert_eq!(
            r.body["error_name"], "MalformedParameter",
            "{key:?}: {}",
            r.text
        );
        let msg = r.expect_error(400);
        assert!(msg.contains("Idempotency-Key"), "{msg}");
        let r = post_keyed(&app, "/v1/os-hosts", key, br#"{"name": "h9"}"#, &[]).await;
        r.expect_error(400);
    }
    assert_eq!(count_leases(&app).await, 0);
    assert_eq!(count_keys(&app).await, 0);
    // The longest key is fine, and so is a quoted one (the draft's sf-string form).
    let longest = "k".repeat(255);
    post_keyed(&app, "/v1/leases", &longest, &body, &[])
        .await
        .expect(202);
    let other = serde_json::to_vec(&window_body("quoted")).unwrap();
    let r = post_keyed(&app, "/v1/leases", "\"q-1\"", &other, &[]).await;
    assert_eq!(
        r.status, 409,
        "h1 is taken, so the quoted key reached the create: {}",
        r.text
    );
}

#[tokio::test]
async fn without_the_header_nothing_is_remembered() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("h1", json!({})).await;
    app.host("h2", json!({})).await;
    app.post("/v1/leases", &window_body("a")).await.expect(202);
    app.post("/v1/leases", &window_body("a")).await.expect(202);
    assert_eq!(
        count_leases(&app).await,
        2,
        "two requests, two leases, as before"
    );
    assert_eq!(count_keys(&app).await, 0);
}

#[tokio::test]
async fn keys_belong_to_a_project_and_an_operation() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("h1", json!({})).await;
    app.host("h2", json!({})).await;
    let body = serde_json::to_vec(&window_body("p")).unwrap();
    let a = post_keyed(
        &app,
        "/v1/leases",
        "shared",
        &body,
        &[("x-project-id", "p-a")],
    )
    .await
    .expect(202);
    let b = post_keyed(
        &app,
        "/v1/leases",
        "shared",
        &body,
        &[("x-project-id", "p-b")],
    )
    .await
    .expect(202);
    assert_ne!(a.body["lease"]["id"], b.body["lease"]["id"]);
    assert_eq!(count_leases(&app).await, 2);
    // The same key on the hosts' create is another key.
    post_keyed(
        &app,
        "/v1/os-hosts",
        "shared",
        br#"{"name": "h3"}"#,
        &[("x-project-id", "p-a")],
    )
    .await
    .expect(202);
    assert_eq!(count_keys(&app).await, 3);
}

#[tokio::test]
async fn a_refused_create_is_not_remembered() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let body = serde_json::to_vec(&window_body("later")).unwrap();
    let r = post_keyed(&app, "/v1/leases", "retry-me", &body, &[]).await;
    r.expect_error(409);
    assert_eq!(count_keys(&app).await, 0);
    // Once a host exists, the same key with the same body creates the lease.
    app.host("h1", json!({})).await;
    let r = post_keyed(&app, "/v1/leases", "retry-me", &body, &[])
        .await
        .expect(202);
    let again = post_keyed(&app, "/v1/leases", "retry-me", &body, &[])
        .await
        .expect(202);
    assert_eq!(again.text, r.text);
    assert_eq!(count_leases(&app).await, 1);
}

#[tokio::test]
async fn host_enrolment_replays() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let body = br#"{"name": "n1", "vcpus": 4, "gpu": "true"}"#;
    let first = post_keyed(&app, "/v1/os-hosts", "hkey", body, &[])
        .await
        .expect(202);
    let again = post_keyed(&app, "/v1/os-hosts", "hkey", body, &[])
        .await
        .expect(202);
    assert_eq!(again.text, first.text);
    // Without the key, the same body is the conflict it always was.
    app.raw(Method::POST, "/v1/os-hosts", &[JSON], Some(body.to_vec()))
        .await
        .expect_error(409);
    let hosts = host::Entity::find()
        .count(app.services.db.conn())
        .await
        .unwrap();
    assert_eq!(hosts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_creates_with_one_key_create_one_lease() {
    crate::skip_if_no_database!();
    let app = Arc::new(spawn_app().await);
    for i in 1..=4 {
        app.host(&format!("h{i}"), json!({})).await;
    }
    let body = serde_json::to_vec(&window_body("racy")).unwrap();
    let futs: Vec<_> = (0..16)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            async move { post_keyed(&app, "/v1/leases", "one-key", &body, &[]).await }
        })
        .collect();
    let results = join_all(futs).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every answer is the lease: {statuses:?}"
    );
    assert!(
        results.iter().all(|r| r.text == results[0].text),
        "every answer is the same response"
    );
    assert_eq!(count_leases(&app).await, 1, "exactly one lease");
    assert_eq!(count_keys(&app).await, 1);
    assert_eq!(
        app.hosts_of(results[0].body["lease"]["id"].as_str().unwrap())
            .await
            .len(),
        1
    );

    // Enrolments too: one host, every answer the same.
    let futs: Vec<_> =
        (0..16)
            .map(|_| {
                let app = app.clone();
                async move {
                    post_keyed(&app, "/v1/os-hosts", "host-key", br#"{"name": "new"}"#, &[]).await
                }
            })
            .collect();
    let results = join_all(futs).await;
    assert!(
        results
            .iter()
            .all(|r| r.status == 202 && r.text == results[0].text),
        "{:?}",
        results
            .iter()
            .map(|r| (r.status, &r.text))
            .collect::<Vec<_>>()
    );
    let hosts = host::Entity::find()
        .count(app.services.db.conn())
        .await
        .unwrap();
    assert_eq!(hosts, 5);
}

#[tokio::test]
async fn a_key_is_replayed_after_a_restart() {
    crate::skip_if_no_database!();
    // A file of our own on SQLite, so that the database outlives the first app.
    let dir = tempfile::tempdir().unwrap();
    let file = format!("sqlite://{}?mode=rwc", dir.path().join("kept.db").display());
    let first_app = spawn_with(|s| {
        if !on_postgres() {
            s.database.connection = file.clone();
        }
    })
    .await;
    let url = first_app.services.settings.database.connection.clone();
    first_app.host("h1", json!({})).await;
    first_app.host("h2", json!({})).await;
    let body = serde_json::to_vec(&window_body("durable")).unwrap();
    let first = post_keyed(&first_app, "/v1/leases", "survives", &body, &[])
        .await
        .expect(202);
    // On SQLite the first app stops; on PostgreSQL its database goes with it, so it stays up
    // and the second app is another instance on the same database.
    let keep = if on_postgres() {
        Some(first_app)
    } else {
        drop(first_app);
        None
    };
    let second_app = spawn_with(|s| s.database.connection = url.clone()).await;
    let again = post_keyed(&second_app, "/v1/leases", "survives", &body, &[])
        .await
        .expect(202);
    assert_eq!(again.text, first.text);
    assert_eq!(count_leases(&second_app).await, 1);
    drop(keep);
}

#[tokio::test]
async fn expired_keys_are_forgotten_and_purged() {
    crate::skip_if_no_database!();
    let app = spawn_with(|s| s.api.idempotency_key_ttl_seconds = 3600).await;
    for i in 1..=3 {
        app.host(&format!("h{i}"), json!({})).await;
    }
    let body = serde_json::to_vec(&window_body("old")).unwrap();
    post_keyed(&app, "/v1/leases", "old-key", &body, &[])
        .await
        .expect(202);
    // Within the TTL the key is remembered...
    app.clock().advance(TimeDelta::seconds(3599));
    let other = serde_json::to_vec(&window_body("other")).unwrap();
    post_keyed(&app, "/v1/leases", "old-key", &other, &[])
        .await
        .expect_error(422);
    // ...after it, forgotten: the next keyed create purges it.
    app.clock().advance(TimeDelta::seconds(1));
    let newer = serde_json::to_vec(&window_body("newer")).unwrap();
    post_keyed(&app, "/v1/leases", "new-key", &newer, &[])
        .await
        .expect(202);
    let keys: Vec<String> = idempotency_key::Entity::find()
        .all(app.services.db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(keys, vec!["new-key".to_string()], "the expired key is gone");
    // The old key may now be used for another request.
    post_keyed(&app, "/v1/leases", "old-key", &other, &[])
        .await
        .expect(202);
    assert_eq!(count_leases(&app).await, 3);
}
