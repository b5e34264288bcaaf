//! Hostile input, table-driven: each request gets a 4xx error envelope and changes nothing in the
//! database (every table is dumped before and after each request).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// One bad request: method, path, headers, body, expected status.
struct Case {
    what: String,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn case(
    what: impl Into<String>,
    method: Method,
    path: impl Into<String>,
    body: Option<Value>,
    status: u16,
) -> Case {
    Case {
        what: what.into(),
        method,
        path: path.into(),
        headers: vec![(JSON.0, JSON.1.into())],
        body: body.map(|b| b.to_string().into_bytes()),
        status,
    }
}

fn raw(
    what: &str,
    method: Method,
    path: &str,
    headers: &[(&'static str, &str)],
    body: &[u8],
    status: u16,
) -> Case {
    Case {
        what: what.into(),
        method,
        path: path.into(),
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body: Some(body.to_vec()),
        status,
    }
}

fn good_lease() -> Value {
    lease_body("ok", "2030-02-01 00:00", "2030-02-02 00:00", 1, 1, "")
}

/// The good lease body with one change.
fn lease_with(f: impl FnOnce(&mut Value)) -> Option<Value> {
    let mut b = good_lease();
    f(&mut b);
    Some(b)
}

fn cases(lease: &str, reservation: &str) -> Vec<Case> {
    let l = format!("/v1/leases/{lease}");
    let mut c = vec![
        // Bodies that are not JSON objects.
        raw(
            "malformed JSON",
            Method::POST,
            "/v1/leases",
            &[JSON],
            br#"{"name": "#,
            400,
        ),
        raw(
            "trailing comma",
            Method::POST,
            "/v1/leases",
            &[JSON],
            br#"{"name": "x",}"#,
            400,
        ),
        raw(
            "array body",
            Method::POST,
            "/v1/leases",
            &[JSON],
            b"[]",
            400,
        ),
        raw(
            "string body",
            Method::POST,
            "/v1/leases",
            &[JSON],
            b"\"lease\"",
            400,
        ),
        raw(
            "number body",
            Method::POST,
            "/v1/os-hosts",
            &[JSON],
            b"42",
            400,
        ),
        raw("null body", Method::PUT, &l, &[JSON], b"null", 400),
        raw(
            "boolean body",
            Method::PATCH,
            "/v1/os-hosts/properties/gpu",
            &[JSON],
            b"true",
            400,
        ),
        raw(
            "invalid UTF-8",
            Method::POST,
            "/v1/os-hosts",
            &[JSON],
            b"{\"name\": \"\xff\xfe\xfd\"}",
            400,
        ),
        raw(
            "JSON nested 10,000 deep",
            Method::POST,
            "/v1/leases",
            &[JSON],
            format!("{{\"name\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000)).as_bytes(),
            400,
        ),
        // Content types and negotiation.
        raw(
            "text/plain body",
            Method::POST,
            "/v1/leases",
            &[("content-type", "text/plain")],
            br#"{"name": "x"}"#,
            415,
        ),
        raw(
            "form body",
            Method::POST,
            "/v1/os-hosts",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"name=x",
            415,
        ),
        raw(
            "XML body",
            Method::PUT,
            "/v1/os-hosts/1",
            &[("content-type", "application/xml")],
            b"<host/>",
            415,
        ),
        raw(
            "no content type",
            Method::POST,
            "/v1/leases",
            &[],
            br#"{"name": "x"}"#,
            415,
        ),
        raw(
            "Accept text/html",
            Method::GET,
            "/v1/leases",
            &[("accept", "text/html")],
            b"",
            406,
        ),
        raw(
            "Accept XML only",
            Method::POST,
            "/v1/leases",
            &[JSON, ("accept", "application/xml")],
            good_lease().to_string().as_bytes(),
            406,
        ),
        raw(
            "unsupported API version",
            Method::POST,
            "/v1/leases",
            &[JSON, ("openstack-api-version", "reservation 9.9")],
            good_lease().to_string().as_bytes(),
            406,
        ),
        raw(
            "malformed API version",
            Method::DELETE,
            &l,
            &[("openstack-api-version", "reservation x.y")],
            b"",
            400,
        ),
        raw(
            "identity header of 300 characters",
            Method::POST,
            "/v1/leases",
            &[JSON, ("x-project-id", &"p".repeat(300))],
            good_lease().to_string().as_bytes(),
            400,
        ),
        // Sizes.
        raw(
            "body over the 1 MiB limit",
            Method::POST,
            "/v1/os-hosts",
            &[JSON],
            json!({"name": "x".repeat(1_100_000)})
                .to_string()
                .as_bytes(),
            413,
        ),
        case(
            "10 MB filter",
            Method::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0]["resource_properties"] = json!("x".repeat(10_000_000))
            }),
            413,
        ),
        case(
            "filter nested 10,000 deep",
            Method::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0]["resource_properties"] = json!(format!(
                    "{}{}",
                    "[\"not\", ".repeat(10_000),
                    "]".repeat(10_000)
                ))
            }),
            400,
        ),
        case(
            "filter of 100 KB",
            Method::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0]["resource_properties"] =
                    json!(format!("[\"==\", \"$a\", \"{}\"]", "x".repeat(100_000)))
            }),
            400,
        ),
        case(
            "lease name of 100,000 characters",
            Method::POST,
            "/v1/leases",
            lease_with(|b| b["name"] = json!("n".repeat(100_000))),
            400,
        ),
        case(
            "host name of 100,000 characters",
            Method::POST,
            "/v1/os-hosts",
            Some(json!({"name": "h".repeat(100_000)})),
            400,
        ),
        case(
            "capability value of 100,000 characters",
            Method::PUT,
            "/v1/os-hosts/1",
            Some(json!({"gpu": "v".repeat(100_000)})),
            400,
        ),
        case(
            "33 reservations",
            Method::POST,
            "/v1/leases",
            lease_with(|b| {
                let r = b["reservations"][0].clone();
                b["reservations"] = json!(vec![r; 33]);
            }),
            400,
        ),
        // Control characters.
        case(
            "NUL in a lease name",
            Method::POST,
            "/v1/leases",
            lease_with(|b| b["name"] = json!("a\u{0}b")),
            400,
        ),
        case(
            "ESC in a lease name",
            Method::POST,
            "/v1/leases",
            lease_with(|b| b["name"] = json!("\u{1b}[31mred")),
            400,
        ),
        case(
            "newline in a host name",
            Method::POST,
            "/v1/os-hosts",
            Some(json!({"name": "a\nb"})),
            400,
        ),
        case(
            "control character in a capability name",
            Method::POST,
            "/v1/os-hosts",
            Some(json!({"name": "h9", "g\u{7}pu": "true"})),
            400,
        ),
        case(
            "control character in a capability value",
            Method::PUT,
            "/v1/os-hosts/1",
            Some(json!({"gpu": "tr\u{8}ue"})),
            400,
        ),
        // Capability values: any JSON scalar is taken (as its text), nothing else.
        case(
            "capability value as an array",
            Method::POST,
            "/v1/os-hosts",
            Some(json!({"name": "h9", "gpus": [4]})),
            400,
        ),
        case(
            "capability value as an object",
            Method::POST,
            "/v1/os-hosts",
            Some(json!({"name": "h9", "gpus": {"count": 4}})),
            400,
        ),
        case(
            "capability value null on create",
            Method::POST,
            "/v1/os-hosts",
            Some(json!({"name": "h9", "gpus": null})),
            400,
        ),
        case(
            "capability value as an array on update",
            Method::PUT,
            "/v1/os-hosts/1",
            Some(json!({"gpus": [true]})),
            400,
        ),
        case(
            "capability value as an object in values",
            Method::PUT,
            "/v1/os-hosts/1",
            Some(json!({"values": {"gpus": {}}})),
            400,
        ),
        raw(
            "capability value beyond a double",
            Method::POST,
            "/v1/os-hosts",
            &[JSON],
            br#"{"name": "h9", "gpus": 1e400}"#,
            400,
        ),
        // Unknown ids.
        case(
            "unknown lease",
            Method::GET,
            "/v1/leases/00000000-0000-0000-0000-000000000000",
            None,
            404,
        ),
        case(
            "unknown lease update",
            Method::PUT,
            "/v1/leases/nope",
            Some(json!({"name": "x"})),
            404,
        ),
        case(
            "unknown lease delete",
            Method::DELETE,
            "/v1/leases/nope",
            None,
            404,
        ),
        case(
            "unicode lease id",
            Method::DELETE,
            "/v1/leases/%E2%98%83",
            None,
            404,
        ),
        case(
            "lease id of 5,000 characters",
            Method::GET,
            format!("/v1/leases/{}", "a".repeat(5000)),
            None,
            404,
        ),
        case(
            "unknown property",
            Method::PATCH,
            "/v1/os-hosts/properties/nope",
            Some(json!({"private": true})),
            404,
        ),
        case("unknown route", Method::GET, "/v1/nothing", None, 404),
        case("trailing slash", Method::GET, "/v1/leases/", None, 404),
        case(
            "method not allowed",
            Method::PATCH,
            "/v1/leases",
            Some(json!({})),
            405,
        ),
        case(
            "method not allowed on a host",
            Method::POST,
            "/v1/os-hosts/1",
            Some(json!({})),
            405,
        ),
    ];
    for id in [
        "abc",
        "0",
        "-1",
        "1.5",
        "1e3",
        "99999999999999999999999",
        "%20",
        "1%20OR%201=1",
        "1;DROP%20TABLE%20hosts",
    ] {
        c.push(case(
            format!("host id {id}"),
            Method::GET,
            format!("/v1/os-hosts/{id}"),
            None,
            404,
        ));
        c.push(case(
            format!("host id {id} update"),
            Method::PUT,
            format!("/v1/os-hosts/{id}"),
            Some(json!({"a": "b"})),
            404,
        ));
        c.push(case(
            format!("host id {id} delete"),
            Method::DELETE,
            format!("/v1/os-hosts/{id}"),
            None,
            404,
        ));
        c.push(case(
            format!("host id {id} allocation"),
            Method::GET,
            format!("/v1/os-hosts/{id}/allocation"),
            None,
            404,
        ));
    }
    // Server-owned and unknown fields.
    for f in [
        "id",
        "project_id",
        "user_id",
        "trust_id",
        "status",
        "action",
        "status_reason",
        "degraded",
        "created_at",
        "updated_at",
        "foo",
    ] {
        c.push(case(
            format!("lease field {f}"),
            Method::POST,
            "/v1/leases",
            lease_with(|b| b[f] = json!("x")),
            400,
        ));
        c.push(case(
            format!("lease update field {f}"),
            Method::PUT,
            &l,
            Some(json!({f: "x"})),
            400,
        ));
    }
    for f in [
        "id",
        "lease_id",
        "resource_id",
        "status",
        "missing_resources",
        "resources_changed",
        "created_at",
        "amount",
    ] {
        c.push(case(
            format!("reservation field {f}"),
            Method::POST,
            "/v1/leases",
            lease_with(|b| b["reservations"][0][f] = json!("x")),
            400,
        ));
    }
    c.push(case(
        "reservation update of a foreign reservation",
        Method::PUT,
        &l,
        Some(json!({"reservations": [{"id": "00000000-0000-0000-0000-000000000000", "max": 2}]})),
        400,
    ));
    c.push(case(
        "reservation update with status",
        Method::PUT,
        &l,
        Some(json!({"reservations": [{"id": reservation, "status": "active"}]})),
        400,
    ));
    for f in [
        "id",
        "hypervisor_hostname",
        "status",
        "reservable",
        "trust_id",
        "created_at",
        "updated_at",
    ] {
        c.push(case(
            format!("host field {f}"),
            Method::POST,
            "/v1/os-hosts",
            Some(json!({"name": "h9", f: "x"})),
            400,
        ));
        c.push(case(
            format!("host update field {f}"),
            Method::PUT,
            "/v1/os-hosts/1",
            Some(json!({f: "x"})),
            400,
        ));
    }
    c.push(case(
        "empty host update",
        Method::PUT,
        "/v1/os-hosts/1",
        Some(json!({})),
        400,
    ));
    c.push(case(
        "host renamed",
        Method::PUT,
        "/v1/os-hosts/1",
        Some(json!({"name": "other"})),
        400,
    ));
    c.push(case(
        "duplicate host",
        Method::POST,
        "/v1/os-hosts",
        Some(json!({"name": "c1"})),
        409,
    ));
    c.push(case(
        "reserved host delete",
        Method::DELETE,
        "/v1/os-hosts/1",
        None,
        409,
    ));
    c.push(case(
        "capability in use",
        Method::PUT,
        "/v1/os-hosts/1",
        Some(json!({"gpu": "false"})),
        409,
    ));
    for body in [
        json!({"private": "yes"}),
        json!({}),
        json!({"private": null}),
        json!({"property_name": "x"}),
        json!({"private": 1}),
    ] {
        c.push(case(
            format!("property update {body}"),
            Method::PATCH,
            "/v1/os-hosts/properties/gpu",
            Some(body),
            400,
        ));
    }
    // Dates.
    for (field, v) in [
        ("start_date", json!("tomorrow")),
        ("start_date", json!("2030-13-01 00:00")),
        ("start_date", json!("2030-02-30 10:00")),
        ("end_date", json!("9999-01-01 00:00")),
        ("start_date", json!("1960-01-01 00:00")),
        ("start_date", json!("2030-02-01T00:00:00+02:00")),
        ("end_date", json!("2030-02-02T00:00Z")),
        ("end_date", json!("2030-01-31 00:00")),
        ("end_date", json!("2030-02-01 00:00")),
        ("start_date", json!("2029-12-31 00:00")),
        ("start_date", json!(20300201)),
        ("start_date", Value::Null),
        ("end_date", json!(["2030-02-02 00:00"])),
        ("before_end_date", json!("2030-02-03 00:00")),
        ("before_end_date", json!("now")),
        (
            "start_date",
            json!("2030-02-01 00:00'; DROP TABLE leases;--"),
        ),
    ] {
        c.push(case(
            format!("{field} = {v}"),
            Method::POST,
            "/v1/leases",
            lease_with(|b| b[field] = v.clone()),
            400,
        ));
    }
    c.push(case(
        "update start in the past",
        Method::PUT,
        &l,
        Some(json!({"start_date": "2029-01-01 00:00"})),
        400,
    ));
    c.push(case(
        "update end before start",
        Method::PUT,
        &l,
        Some(json!({"end_date": "2030-01-04 00:00"})),
        400,
    ));
    // Counts.
    for (field, v) in [
        ("min", json!(0)),
        ("min", json!(-1)),
        ("max", json!(1.5)),
        ("max", json!("1.5")),
        ("min", json!(true)),
        ("min", json!([])),
        ("min", json!({})),
        ("max", json!(9_223_372_036_854_775_808u64)),
        ("max", json!(1e30)),
        ("max", json!("9223372036854775808")),
        ("min", json!("1 OR 1=1")),
        ("min", json!(2)),
    ] {
        c.push(case(
            format!("{field} = {v}"),
            Method::POST,
            "/v1/leases",
            lease_with(|b| b["reservations"][0][field] = v.clone()),
            400,
        ));
    }
    // Other reservation fields, SQL included.
    for (field, v, status) in [
        ("resource_type", json!("physical:host' OR '1'='1"), 400),
        ("resource_type", json!("virtual:instance"), 400),
        ("before_end", json!("'; DELETE FROM hosts;--"), 400),
        ("hypervisor_properties", json!("1; DROP TABLE hosts"), 400),
        (
            "resource_properties",
            json!("[\"LIKE\", \"$gpu\", \"%\"]"),
            400,
        ),
        (
            "resource_properties",
            json!("[\"==\", \"$gpu' OR 1=1--\", \"x\"]"),
            409,
        ),
        ("hypervisor_properties", json!({"vcpus": 2}), 400),
    ] {
        c.push(case(
            format!("{field} = {v}"),
            Method::POST,
            "/v1/leases",
            lease_with(|b| b["reservations"][0][field] = v.clone()),
            status,
        ));
    }
    c.push(case(
        "client events",
        Method::POST,
        "/v1/leases",
        lease_with(|b| {
            b["events"] = json!([{"event_type": "start_lease", "event_date": "2030-02-01 00:00"}])
        }),
        400,
    ));
    c.push(case(
        "more hosts than exist",
        Method::POST,
        "/v1/leases",
        lease_with(|b| {
            b["reservations"][0]["min"] = json!(5);
            b["reservations"][0]["max"] = json!(5);
        }),
        409,
    ));
    // Query parameters.
    for q in [
        "/v1/leases?limit=0",
        "/v1/leases?limit=-1",
        "/v1/leases?limit=1;DROP%20TABLE%20leases",
        "/v1/leases?limit=99999999999999999999",
        "/v1/leases?marker=%27%20OR%201=1--",
        "/v1/os-hosts?marker=1%20OR%201=1",
        "/v1/os-hosts?limit=abc",
        "/v1/os-hosts/allocations?marker=x",
    ] {
        c.push(case(format!("query {q}"), Method::GET, q, None, 400));
    }
    c
}

#[tokio::test]
async fn every_bad_input_gets_a_4xx_envelope_and_changes_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({"gpu": "true"})).await;
    app.host("c2", json!({"gpu": "false"})).await;
    let l = app
        .lease(
            "held",
            "2030-01-05 00:00",
            "2030-01-06 00:00",
            1,
            1,
            r#"["==", "$gpu", "true"]"#,
        )
        .await
        .expect(202);
    let lease = l.body["lease"]["id"].as_str().unwrap().to_string();
    let reservation = l.body["lease"]["reservations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = app.dump().await;
    let table = cases(&lease, &reservation);
    for c in &table {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = app
            .raw(c.method.clone(), &c.path, &headers, c.body.clone())
            .await;
        assert_eq!(
            r.status,
            c.status,
            "{}: {} {} -> {}",
            c.what,
            c.method,
            c.path,
            r.text.chars().take(300).collect::<String>()
        );
        assert_envelope(&r, c.status);
        assert!(
            app.dump().await == before,
            "{}: the database changed",
            c.what
        );
    }
    println!(
        "{} bad inputs: each answered 4xx with the envelope, nothing changed",
        table.len()
    );
    assert!(table.len() >= 150, "the table shrank to {}", table.len());
}
