//! The error envelope on every error path, framework errors included, and request-body rules.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn framework_errors_use_the_envelope() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    type Case<'a> = (
        Method,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a [u8]>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (Method::GET, "/v1/nothing", vec![], None, 404),
        (Method::GET, "/v1/leases/", vec![], None, 404),
        (Method::GET, "/v2/leases", vec![], None, 404),
        (Method::PATCH, "/v1/leases", vec![], None, 405),
        (Method::DELETE, "/v1/os-hosts", vec![], None, 405),
        (
            Method::GET,
            "/v1/leases",
            vec![("accept", "text/html")],
            None,
            406,
        ),
        (
            Method::GET,
            "/v1/leases",
            vec![("accept", "application/xml, text/*")],
            None,
            406,
        ),
        (
            Method::POST,
            "/v1/leases",
            vec![("content-type", "text/plain")],
            Some(b"{}"),
            415,
        ),
        (
            Method::POST,
            "/v1/leases",
            vec![],
            Some(b"{\"name\": \"x\"}"),
            415,
        ),
        (
            Method::POST,
            "/v1/leases",
            vec![("content-type", "application/json")],
            Some(b"{\"name\": "),
            400,
        ),
        (
            Method::POST,
            "/v1/leases",
            vec![("content-type", "application/json")],
            Some(b"[1, 2]"),
            400,
        ),
        (
            Method::POST,
            "/v1/leases",
            vec![("content-type", "application/json")],
            Some(b"\"text\""),
            400,
        ),
        (
            Method::POST,
            "/v1/leases",
            vec![("content-type", "application/json")],
            Some(b"{\"name\": \"\xff\xfe\"}"),
            400,
        ),
        (
            Method::PUT,
            "/v1/os-hosts/1",
            vec![("content-type", "application/json")],
            Some(b"nul"),
            400,
        ),
        (Method::GET, "/v1/leases/unknown", vec![], None, 404),
        (Method::GET, "/v1/os-hosts/unknown", vec![], None, 404),
        (Method::GET, "/v1/os-hosts/-1", vec![], None, 404),
        (
            Method::GET,
            "/v1/os-hosts/99999999999999999999999",
            vec![],
            None,
            404,
        ),
        (Method::GET, "/v1/os-hosts/1/allocation", vec![], None, 404),
    ];
    for (method, path, headers, body, status) in cases {
        let r = app
            .raw(method.clone(), path, &headers, body.map(|b| b.to_vec()))
            .await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text);
        assert_envelope(&r, status);
    }
}

#[tokio::test]
async fn a_405_says_which_methods_are_allowed() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::PATCH, "/v1/leases", "GET, POST"),
        (Method::POST, "/v1/leases/x", "DELETE, GET, PUT"),
        (Method::DELETE, "/v1/os-hosts/allocations", "GET"),
        (Method::PUT, "/v1/os-hosts/properties/gpu", "PATCH"),
        (Method::DELETE, "/v1/os-hosts/.json", "GET, POST"),
        (Method::DELETE, "/healthz", "GET"),
    ] {
        let r = app.raw(method.clone(), path, &[], None).await;
        assert_eq!(
            r.headers.get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        r.expect_error(405);
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    crate::skip_if_no_database!();
    let app = spawn_with(|s| s.max_body_bytes = 4096).await;
    let big = json!({"name": "x".repeat(5000)}).to_string();
    let r = app
        .raw(
            Method::POST,
            "/v1/os-hosts",
            &[("content-type", "application/json")],
            Some(big.into_bytes()),
        )
        .await;
    assert_envelope(&r, 413);
    assert_eq!(r.status, 413);
    assert_eq!(app.get("/v1/os-hosts").await.body["hosts"], json!([]));
}

#[tokio::test]
async fn an_empty_body_is_an_empty_object() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let msg = app
        .raw(Method::POST, "/v1/leases", &[], Some(Vec::new()))
        .await
        .expect_error(400);
    assert!(msg.contains("Missing parameter name"), "{msg}");
}

#[tokio::test]
async fn json_content_type_with_charset_is_accepted() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.raw(
        Method::POST,
        "/v1/os-hosts",
        &[("content-type", "application/json; charset=UTF-8")],
        Some(br#"{"name": "c1"}"#.to_vec()),
    )
    .await
    .expect(202);
}

#[tokio::test]
async fn sql_fragments_are_just_text() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let evil = "x'); DROP TABLE leases; --";
    let h = app.host(evil, json!({"note": "1' OR '1'='1"})).await;
    assert_eq!(h["hypervisor_hostname"], evil);
    let r = app
        .post(
            "/v1/leases",
            &json!({"name": evil, "start_date": "2030-01-05 00:00", "end_date": "2030-01-06 00:00",
            "reservations": [{"resource_type": "physical:host", "min": 1, "max": 1,
              "resource_properties": "[\"==\", \"$note\", \"1' OR '1'='1\"]"}]}),
        )
        .await
        .expect(202);
    assert_eq!(r.body["lease"]["name"], evil);
    app.get("/v1/os-hosts/allocations?lease_id=1'%20OR%20'1'='1")
        .await
        .expect(200);
    assert_eq!(
        app.get("/v1/leases").await.body["leases"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
