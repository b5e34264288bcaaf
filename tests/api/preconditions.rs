//! ETag / If-Match / If-None-Match on leases and hosts: tags that follow every visible change
//! (events' statuses included), 412 with nothing changed on a stale tag, exactly one winner
//! among concurrent writers holding one tag, and 304 on a current copy.

use std::sync::Arc;

use chrono::NaiveDate;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const JSON: (&str, &str) = ("content-type", "application/json");

fn etag(r: &Resp) -> String {
    r.headers
        .get("etag")
        .unwrap_or_else(|| panic!("no ETag on {} {}", r.status, r.text))
        .to_str()
        .unwrap()
        .to_string()
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Resp {
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    app.raw(
        method,
        path,
        &all,
        body.map(|b| serde_json::to_vec(&b).unwrap()),
    )
    .await
}

/// A lease of one host starting an hour after the clock's start.
async fn one_lease(app: &TestApp) -> String {
    app.host("h1", json!({})).await;
    app.lease("l", "2030-01-01 13:00", "2030-01-02 13:00", 1, 1, "")
        .await
        .expect(202)
        .body["lease"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn get_answers_a_strong_etag_and_304_when_it_matches() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let id = one_lease(&app).await;
    let path = format!("/v1/leases/{id}");
    let first = app.get(&path).await.expect(200);
    let tag = etag(&first);
    assert!(
        tag.len() == 66 && tag.starts_with('"') && tag.ends_with('"') && !tag.starts_with("W/"),
        "a strong, quoted SHA-256: {tag}"
    );
    assert_eq!(
        etag(&app.get(&path).await.expect(200)),
        tag,
        "stable while nothing changes"
    );
    let weak = format!("W/{tag}");
    for matching in [
        tag.as_str(),
        "*",
        weak.as_str(),
        &format!("\"nope\", {tag}"),
    ] {
        let r = send(
            &app,
            Method::GET,
            &path,
            &[("if-none-match", matching)],
            None,
        )
        .await;
        assert_eq!(r.status, 304, "{matching}: {}", r.text);
        assert!(r.text.is_empty(), "no body on 304");
        assert_eq!(etag(&r), tag);
    }
    let r = send(
        &app,
        Method::GET,
        &path,
        &[("if-none-match", "\"other\"")],
        None,
    )
    .await;
    assert_eq!(r.expect(200).body, first.body);
    send(
        &app,
        Method::GET,
        &path,
        &[("if-none-match", "not-quoted")],
        None,
    )
    .await
    .expect_error(400);

    // Hosts alike.
    let hpath = "/v1/os-hosts/1";
    let h = app.get(hpath).await.expect(200);
    let htag = etag(&h);
    assert_ne!(htag, tag);
    let r = send(&app, Method::GET, hpath, &[("if-none-match", &htag)], None).await;
    assert_eq!(r.status, 304);
}

#[tokio::test]
async fn the_etag_changes_after_an_update_and_after_the_start_event() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let id = one_lease(&app).await;
    let path = format!("/v1/leases/{id}");
    let e1 = etag(&app.get(&path).await.expect(200));
    let put = app
        .put(&path, &json!({"name": "renamed"}))
        .await
        .expect(202);
    let e2 = etag(&put);
    assert_ne!(e1, e2);
    assert_eq!(
        etag(&app.get(&path).await.expect(200)),
        e2,
        "the 202 carries the new tag"
    );
    // Only the start event's status changes (and the lease's): the tag moves with it.
    app.clock().set(
        NaiveDate::from_ymd_opt(2030, 1, 1)
            .unwrap()
            .and_hms_opt(13, 0, 0)
            .unwrap(),
    );
    app.run_due().await;
    let after = app.get(&path).await.expect(200);
    assert_eq!(after.body["lease"]["status"], "ACTIVE");
    let e3 = etag(&after);
    assert_ne!(e3, e2);
    // A host's tag follows its capabilities.
    let h1 = etag(&app.get("/v1/os-hosts/1").await.expect(200));
    let put = app
        .put("/v1/os-hosts/1", &json!({"gpu": "true"}))
        .await
        .expect(202);
    assert_ne!(etag(&put), h1);
    assert_eq!(
        etag(&app.get("/v1/os-hosts/1").await.expect(200)),
        etag(&put)
    );
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_changes_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let id = one_lease(&app).await;
    let path = format!("/v1/leases/{id}");
    let stale = etag(&app.get(&path).await.expect(200));
    app.put(&path, &json!({"name": "moved on"}))
        .await
        .expect(202);
    let before = app.get(&path).await.expect(200);
    let dump = app.dump().await;

    let r = send(
        &app,
        Method::PUT,
        &path,
        &[("if-match", &stale)],
        Some(json!({"name": "lost update"})),
    )
    .await;
    assert_eq!(r.body["error_name"], "PreconditionFailed");
    let msg = r.expect_error(412);
    assert!(
        msg.contains(&etag(&before)),
        "the message gives the current tag: {msg}"
    );
    let r = send(&app, Method::DELETE, &path, &[("if-match", &stale)], None).await;
    r.expect_error(412);
    // A weak tag never matches If-Match, even when its value is current.
    let weak = format!("W/{}", etag(&before));
    send(
        &app,
        Method::PUT,
        &path,
        &[("if-match", &weak)],
        Some(json!({"name": "weak"})),
    )
    .await
    .expect_error(412);
    send(
        &app,
        Method::PUT,
        &path,
        &[("if-match", "garbage")],
        Some(json!({"name": "x"})),
    )
    .await
    .expect_error(400);
    assert_eq!(app.get(&path).await.expect(200).body, before.body);
    assert_eq!(
        app.dump().await,
        dump,
        "nothing changed below the API either"
    );

    // The current tag, a list holding it, or `*` pass.
    let current = etag(&before);
    let r = send(
        &app,
        Method::PUT,
        &path,
        &[("if-match", &format!("\"x\", {current}"))],
        Some(json!({"name": "ok"})),
    )
    .await;
    let next = etag(&r.expect(202));
    let r = send(
        &app,
        Method::PUT,
        &path,
        &[("if-match", "*")],
        Some(json!({"name": "any"})),
    )
    .await;
    let latest = etag(&r.expect(202));
    send(&app, Method::DELETE, &path, &[("if-match", &next)], None)
        .await
        .expect_error(412);
    let r = send(&app, Method::DELETE, &path, &[("if-match", &latest)], None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.get(&path).await.expect_error(404);
    // `*` needs an existing resource.
    send(&app, Method::DELETE, &path, &[("if-match", "*")], None)
        .await
        .expect_error(404);
}

#[tokio::test]
async fn a_stale_if_match_on_a_host_is_412_and_changes_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("h1", json!({"gpu": "false"})).await;
    let path = "/v1/os-hosts/1";
    let stale = etag(&app.get(path).await.expect(200));
    app.put(path, &json!({"gpu": "true"})).await.expect(202);
    let before = app.get(path).await.expect(200);
    let dump = app.dump().await;
    send(
        &app,
        Method::PUT,
        path,
        &[("if-match", &stale)],
        Some(json!({"gpu": "lost"})),
    )
    .await
    .expect_error(412);
    send(&app, Method::DELETE, path, &[("if-match", &stale)], None)
        .await
        .expect_error(412);
    assert_eq!(app.get(path).await.expect(200).body, before.body);
    assert_eq!(app.dump().await, dump);
    let r = send(
        &app,
        Method::DELETE,
        path,
        &[("if-match", &etag(&before))],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_with_one_if_match_have_exactly_one_winner() {
    crate::skip_if_no_database!();
    let app = Arc::new(spawn_app().await);
    let id = one_lease(&app).await;
    let path = format!("/v1/leases/{id}");
    let tag = etag(&app.get(&path).await.expect(200));
    let futs: Vec<_> = (0..8)
        .map(|i| {
            let (app, path, tag) = (app.clone(), path.clone(), tag.clone());
            async move {
                // Some move the end as well, so that the writers do different amounts of work.
                let body = if i % 2 == 0 {
                    json!({"name": format!("writer-{i}")})
                } else {
                    json!({"name": format!("writer-{i}"), "end_date": format!("2030-01-0{} 13:00", 2 + i % 3)})
                };
                (i, send(&app, Method::PUT, &path, &[("if-match", &tag)], Some(body)).await)
            }
        })
        .collect();
    let results = join_all(futs).await;
    let winners: Vec<&(usize, Resp)> = results.iter().filter(|(_, r)| r.status == 202).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        results.iter().map(|(_, r)| r.status).collect::<Vec<_>>()
    );
    for (_, r) in results.iter().filter(|(_, r)| r.status != 202) {
        assert_eq!(r.status, 412, "{}", r.text);
        assert_eq!(r.body["error_name"], "PreconditionFailed");
    }
    let shown = app.get(&path).await.expect(200);
    let (i, w) = winners[0];
    assert_eq!(shown.body["lease"]["name"], format!("writer-{i}"));
    assert_eq!(etag(&shown), etag(w));

    // Hosts: the same race on a capability.
    let hpath = "/v1/os-hosts/1";
    let htag = etag(&app.get(hpath).await.expect(200));
    let futs: Vec<_> = (0..8)
        .map(|i| {
            let (app, htag) = (app.clone(), htag.clone());
            async move {
                send(
                    &app,
                    Method::PUT,
                    hpath,
                    &[("if-match", &htag)],
                    Some(json!({"writer": format!("w{i}")})),
                )
                .await
            }
        })
        .collect();
    let statuses: Vec<u16> = join_all(futs).await.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        7,
        "{statuses:?}"
    );
}
