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
    let app = spawn_with(|s| s.api.max_body_bytes = 4096).await;
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

/// A client that writes its whole body before reading (Python's http.client and urllib do) reads
/// the 413 envelope instead of a broken pipe: the server drains the rest before answering.
#[tokio::test]
async fn a_client_that_writes_the_whole_body_first_reads_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let body = vec![b' '; 10 * 1024 * 1024];
    for chunked in [false, true] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let framing = if chunked {
            "transfer-encoding: chunked".to_string()
        } else {
            format!("content-length: {}", body.len())
        };
        let head = format!(
            "POST /v1/os-hosts HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             connection: close\r\n{framing}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        if chunked {
            for part in body.chunks(64 * 1024) {
                s.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .await
                    .unwrap();
                s.write_all(part).await.unwrap();
                s.write_all(b"\r\n").await.unwrap();
            }
            s.write_all(b"0\r\n\r\n").await.unwrap();
        } else {
            s.write_all(&body)
                .await
                .unwrap_or_else(|e| panic!("writing the whole body failed: {e}"));
        }
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "chunked={chunked}: {answer}"
        );
        assert!(
            answer.contains(r#""error_name":"RequestEntityTooLarge""#),
            "chunked={chunked}: {answer}"
        );
    }

    // The client the issue names, as a user runs it.
    let url = format!("{}/v1/os-hosts", app.base);
    let script = r#"
import json, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], data=b" " * (10 * 1024 * 1024), method="POST",
                             headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req)
    print("accepted")
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["error_name"])
"#;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", script, &url])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "413 RequestEntityTooLarge",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// Only a body of no bytes is `{}`: whitespace alone is not JSON (schemathesis sends `"\n"` to
/// an optional body and rightly expects a refusal).
#[tokio::test]
async fn a_body_of_whitespace_is_not_json() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    for body in [&b"\n"[..], b"   ", b"\r\n\t"] {
        let msg = app
            .raw(
                Method::POST,
                "/v1/leases",
                &[("content-type", "application/json")],
                Some(body.to_vec()),
            )
            .await
            .expect_error(400);
        assert!(msg.contains("The request body is not valid JSON"), "{msg}");
    }
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
