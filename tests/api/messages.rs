//! Upstream Blazar's error texts: every error that upstream answers with a message gets ours
//! beginning with upstream's text, character for character (scripts and python-chi match on
//! them). One row per message: the request, our status and upstream's text (docs/api.md has the
//! same table, with upstream's status where ours differs).

use reqwest::Method;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

use crate::helpers::*;

/// One request and what its error must begin with.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    upstream: String,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    body: Option<Value>,
    status: u16,
    upstream: impl Into<String>,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        body,
        headers: vec![],
        status,
        upstream: upstream.into(),
    }
}

fn with_headers(mut c: Case, headers: &[(&'static str, &'static str)]) -> Case {
    c.headers = headers.to_vec();
    c
}

/// A valid create body with one change.
fn lease_with(patch: impl FnOnce(&mut Value)) -> Option<Value> {
    let mut b = lease_body("m", "2030-01-05 10:00", "2030-01-06 10:00", 1, 1, "");
    patch(&mut b);
    Some(b)
}

async fn check(app: &TestApp, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        let mut headers = c.headers.clone();
        if c.body.is_some() && !headers.iter().any(|(k, _)| *k == "content-type") {
            headers.push(("content-type", "application/json"));
        }
        let r = app
            .raw(
                c.method.clone(),
                &c.path,
                &headers,
                c.body.as_ref().map(|b| b.to_string().into_bytes()),
            )
            .await;
        if r.status != c.status {
            failures.push(format!(
                "{}: status {} (want {}): {}",
                c.what, r.status, c.status, r.text
            ));
            continue;
        }
        assert_envelope(&r, c.status);
        let msg = r.body["error_message"].as_str().unwrap_or("");
        if !msg.starts_with(&c.upstream) {
            failures.push(format!(
                "{}: {msg:?} does not begin with upstream's {:?}",
                c.what, c.upstream
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn errors_begin_with_upstreams_messages() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let h1 = app.host("compute-1", json!({"gpu": "true"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let h2 = app
        .host("compute-2", json!({"gpu": "false", "rack": "a"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A future lease holding compute-1 (through its gpu), and a running one holding compute-2.
    let future = app
        .lease(
            "future",
            "2030-01-05 10:00",
            "2030-01-06 10:00",
            1,
            1,
            r#"["==", "$gpu", "true"]"#,
        )
        .await
        .expect(202)
        .body["lease"]
        .clone();
    let future_id = future["id"].as_str().unwrap().to_string();
    let future_rid = future["reservations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let running = app
        .lease(
            "running",
            "now",
            "2030-01-03 00:00",
            1,
            1,
            r#"["==", "$rack", "a"]"#,
        )
        .await
        .expect(202)
        .body["lease"]
        .clone();
    let running_id = running["id"].as_str().unwrap().to_string();
    let running_rid = running["reservations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.run_due().await;
    assert_eq!(
        app.get(&format!("/v1/leases/{running_id}")).await.body["lease"]["status"],
        "ACTIVE"
    );
    let before = app.snapshot().await;

    let future_path = format!("/v1/leases/{future_id}");
    let running_path = format!("/v1/leases/{running_id}");
    let long_key = "k".repeat(65);
    use Method as M;
    let cases = vec![
        // Lease create (manager/service.py create_lease and the host plugin's _check_params).
        case(
            "no end_date",
            M::POST,
            "/v1/leases",
            lease_with(|b| {
                b.as_object_mut().unwrap().remove("end_date");
            }),
            400,
            "Missing parameter end_date",
        ),
        case(
            "no name",
            M::POST,
            "/v1/leases",
            lease_with(|b| {
                b.as_object_mut().unwrap().remove("name");
            }),
            400,
            "Missing parameter name",
        ),
        case(
            "bad date",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["end_date"] = json!("Bogus-date 13:13")),
            400,
            "Bogus-date 13:13 is an invalid date. Required format: %Y-%m-%d %H:%M",
        ),
        case(
            "before_end_date now",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["before_end_date"] = json!("now")),
            400,
            "now is an invalid date. Required format: %Y-%m-%d %H:%M",
        ),
        case(
            "start in the past",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["start_date"] = json!("2029-12-31 10:00")),
            400,
            "Start date must be later than current date",
        ),
        case(
            "end before start",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["end_date"] = json!("2030-01-05 10:00")),
            400,
            "End date must be later than start date.",
        ),
        case(
            "before_end_date outside the lease",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["before_end_date"] = json!("2030-01-07 10:00")),
            400,
            "Datetime is out of lease limits",
        ),
        case(
            "no resource_type",
            M::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("resource_type");
            }),
            400,
            "Missing parameter resource_type",
        ),
        case(
            "unknown resource_type",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["reservations"][0]["resource_type"] = json!("virtual:instance")),
            400,
            "The virtual:instance resource type is not supported",
        ),
        case(
            "no min",
            M::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0].as_object_mut().unwrap().remove("min");
            }),
            400,
            "Missing parameter min",
        ),
        case(
            "no max",
            M::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0].as_object_mut().unwrap().remove("max");
            }),
            400,
            "Missing parameter max",
        ),
        case(
            "min not an integer",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["reservations"][0]["min"] = json!(1.5)),
            400,
            "Malformed parameter min",
        ),
        case(
            "max zero",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["reservations"][0]["max"] = json!(0)),
            400,
            "Malformed parameter min and max (must be greater than or equal to 1)",
        ),
        case(
            "max below min",
            M::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0]["min"] = json!(2);
                b["reservations"][0]["max"] = json!(1);
            }),
            400,
            "Invalid values for min/max of hosts. Max must be equal to or larger than min.",
        ),
        case(
            "unknown before_end",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["reservations"][0]["before_end"] = json!("reboot")),
            400,
            "Malformed parameter before_end",
        ),
        case(
            "filter not JSON",
            M::POST,
            "/v1/leases",
            lease_with(|b| b["reservations"][0]["resource_properties"] = json!(r#"["==", "$a""#)),
            400,
            r#"Malformed requirements ["==", "$a""#,
        ),
        case(
            "filter of an unknown form",
            M::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0]["resource_properties"] =
                    json!(r#"["and", ["==", "$a", "1"], ["~", "$b", "2"]]"#)
            }),
            400,
            "Malformed requirements ['~', '$b', '2']",
        ),
        case(
            "not enough hosts",
            M::POST,
            "/v1/leases",
            lease_with(|b| {
                b["reservations"][0]["min"] = json!(5);
                b["reservations"][0]["max"] = json!(5);
            }),
            409,
            "Not enough hosts available",
        ),
        // Lease update (update_lease, _check_for_invalid_date_inputs, update_reservation).
        case(
            "update: unknown lease",
            M::PUT,
            "/v1/leases/nope",
            Some(json!({"name": "x"})),
            404,
            "Object with {'lease_id': 'nope'} not found",
        ),
        case(
            "show: unknown lease",
            M::GET,
            "/v1/leases/nope",
            None,
            404,
            "Object with {'lease_id': 'nope'} not found",
        ),
        case(
            "delete: unknown lease",
            M::DELETE,
            "/v1/leases/nope",
            None,
            404,
            "Object with {'lease_id': 'nope'} not found",
        ),
        case(
            "update: new start in the past",
            M::PUT,
            future_path.clone(),
            Some(json!({"start_date": "2029-12-31 10:00"})),
            400,
            "Start date must be later than current date",
        ),
        case(
            "update: end before start",
            M::PUT,
            future_path.clone(),
            Some(json!({"end_date": "2030-01-04 10:00"})),
            400,
            "End date must be later than current and start date",
        ),
        case(
            "update: start of a started lease",
            M::PUT,
            running_path.clone(),
            Some(json!({"start_date": "2030-01-02 00:00"})),
            400,
            "Cannot modify the start date of already started leases",
        ),
        case(
            "update: before_end_date outside",
            M::PUT,
            future_path.clone(),
            Some(json!({"before_end_date": "2030-01-07 10:00"})),
            400,
            "Datetime is out of lease limits",
        ),
        case(
            "update: reservation without id",
            M::PUT,
            future_path.clone(),
            Some(json!({"reservations": [{"max": 2}]})),
            400,
            "Missing parameter reservation ID",
        ),
        case(
            "update: unknown reservation",
            M::PUT,
            future_path.clone(),
            Some(json!({"reservations": [{"id": "nope", "max": 2}]})),
            400,
            "Please enter valid reservation IDs. Invalid reservation IDs are: nope",
        ),
        case(
            "update: another resource_type",
            M::PUT,
            future_path.clone(),
            Some(
                json!({"reservations": [{"id": future_rid, "resource_type": "virtual:instance"}]}),
            ),
            409,
            "resource_type cannot be updated",
        ),
        case(
            "update: max below min",
            M::PUT,
            future_path.clone(),
            Some(json!({"reservations": [{"id": future_rid, "min": 3, "max": 2}]})),
            400,
            "Invalid values for min/max of hosts. Max must be equal to or larger than min.",
        ),
        case(
            "update: a running reservation would lose its host",
            M::PUT,
            running_path.clone(),
            Some(json!({"reservations": [{
                "id": running_rid, "resource_properties": r#"["==", "$rack", "b"]"#
            }]})),
            409,
            "Not enough hosts available",
        ),
        // Hosts (the host plugin, oshosts/v1_0.py, validation.check_exists).
        case(
            "host: no name",
            M::POST,
            "/v1/os-hosts",
            Some(json!({})),
            400,
            "Invalid values for host {}",
        ),
        case(
            "host: long capability key",
            M::POST,
            "/v1/os-hosts",
            Some(json!({"name": "compute-9", long_key.as_str(): "v"})),
            400,
            "Extra capability key too long",
        ),
        case(
            "host: enrolled twice",
            M::POST,
            "/v1/os-hosts",
            Some(json!({"name": "compute-1"})),
            409,
            "Conflict on creating resource provider blazar_compute-1 ",
        ),
        case(
            "host: unknown id",
            M::GET,
            "/v1/os-hosts/999",
            None,
            404,
            "Object with {'host_id': '999'} not found",
        ),
        case(
            "host: update unknown id",
            M::PUT,
            "/v1/os-hosts/999",
            Some(json!({"gpu": "x"})),
            404,
            "Object with {'host_id': '999'} not found",
        ),
        case(
            "host: delete unknown id",
            M::DELETE,
            "/v1/os-hosts/abc",
            None,
            404,
            "Object with {'host_id': 'abc'} not found",
        ),
        case(
            "host: allocation of unknown id",
            M::GET,
            "/v1/os-hosts/999/allocation",
            None,
            404,
            "Object with {'host_id': '999'} not found",
        ),
        case(
            "host: empty update",
            M::PUT,
            format!("/v1/os-hosts/{h2}"),
            Some(json!({})),
            400,
            "No data to update",
        ),
        case(
            "host: capability a reservation filters on",
            M::PUT,
            format!("/v1/os-hosts/{h1}"),
            Some(json!({"gpu": "false"})),
            409,
            format!("Can't add extracapabilities ['gpu'] to Host {h1}"),
        ),
        case(
            "host: delete a reserved host",
            M::DELETE,
            format!("/v1/os-hosts/{h1}"),
            None,
            409,
            format!("Can't delete host {h1}. The host is reserved."),
        ),
        case(
            "property: unknown",
            M::PATCH,
            "/v1/os-hosts/properties/nope",
            Some(json!({"private": true})),
            404,
            "nope does not exist for resource type physical:host.",
        ),
        // The HTTP layer (api/v1/utils.py) and policy.
        with_headers(
            case(
                "body not JSON",
                M::POST,
                "/v1/leases",
                Some(json!({})),
                415,
                "Content type 'text/plain' isn't supported",
            ),
            &[("content-type", "text/plain")],
        ),
        with_headers(
            case(
                "unsupported microversion",
                M::GET,
                "/v1/leases",
                None,
                406,
                "Version 2.0 is not supported by the API. Minimum is 1.0 and maximum is 1.0.",
            ),
            &[("openstack-api-version", "reservation 2.0")],
        ),
        with_headers(
            case(
                "malformed microversion",
                M::GET,
                "/v1/leases",
                None,
                400,
                "API Version String 1.x is of invalid format. Must be of format MajorNum.MinorNum.",
            ),
            &[("openstack-api-version", "reservation 1.x")],
        ),
        with_headers(
            case(
                "policy",
                M::POST,
                "/v1/os-hosts",
                Some(json!({"name": "compute-9"})),
                403,
                "Policy doesn't allow blazar:oshosts:post to be performed",
            ),
            &[
                ("x-project-id", "p1"),
                ("x-user-id", "u1"),
                ("x-roles", "member"),
            ],
        ),
    ];
    check(&app, cases).await;
    assert_eq!(app.snapshot().await, before, "a refusal changed something");

    // A lease in the middle of an operation (set below the API: the server never leaves one so
    // between requests).
    use entity::lease;
    lease::Entity::update_many()
        .col_expr(lease::Column::Status, Expr::value("UPDATING"))
        .filter(lease::Column::Id.eq(future_id.as_str()))
        .exec(app.services.db.conn())
        .await
        .unwrap();
    let busy = vec![
        case(
            "update of a busy lease",
            M::PUT,
            future_path.clone(),
            Some(json!({"end_date": "2030-01-07 10:00"})),
            409,
            "Invalid lease status.",
        ),
        case(
            "delete of a busy lease",
            M::DELETE,
            future_path.clone(),
            None,
            409,
            "Invalid lease status.",
        ),
    ];
    check(&app, busy).await;

    // Once the running lease's end has passed, only its name can change.
    app.clock().advance(chrono::TimeDelta::days(3));
    check(
        &app,
        vec![case(
            "update of an ended lease",
            M::PUT,
            running_path.clone(),
            Some(json!({"end_date": "2030-01-10 00:00"})),
            400,
            "Terminated leases can only be renamed",
        )],
    )
    .await;
}

#[tokio::test]
async fn not_enough_hosts_still_matches_python_chi() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("compute-1", json!({})).await;
    let msg = app
        .lease("big", "2030-01-05 10:00", "2030-01-06 10:00", 2, 2, "")
        .await
        .expect_error(409);
    // python-chi looks for this phrase, case-insensitively, anywhere in the message.
    assert!(
        msg.to_lowercase().contains("not enough hosts available"),
        "{msg}"
    );
    assert!(msg.starts_with("Not enough hosts available: "), "{msg}");
}

#[tokio::test]
async fn scalar_capability_values_are_stored_as_strings() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let host = app
        .post(
            "/v1/os-hosts",
            &json!({"name": "c1", "gpus": 4, "fast": true, "ratio": 4.5, "label": "x"}),
        )
        .await
        .expect(202)
        .body["host"]
        .clone();
    assert_eq!(host["gpus"], "4");
    assert_eq!(host["fast"], "true");
    assert_eq!(host["ratio"], "4.5");
    assert_eq!(host["label"], "x");
    let id = host["id"].as_str().unwrap().to_string();
    let path = format!("/v1/os-hosts/{id}");
    // Read back as stored, not only as echoed.
    let shown = app.get(&path).await.expect(200).body["host"].clone();
    assert_eq!(
        (&shown["gpus"], &shown["fast"], &shown["ratio"]),
        (&json!("4"), &json!("true"), &json!("4.5"))
    );

    // Update: flat or wrapped; null removes the key.
    let updated = app
        .put(&path, &json!({"gpus": 8, "fast": false, "label": null}))
        .await
        .expect(202)
        .body["host"]
        .clone();
    assert_eq!(updated["gpus"], "8");
    assert_eq!(updated["fast"], "false");
    assert!(updated.get("label").is_none(), "{updated}");
    let wrapped = app
        .put(&path, &json!({"values": {"ratio": 0.5}}))
        .await
        .expect(202)
        .body["host"]
        .clone();
    assert_eq!(wrapped["ratio"], "0.5");

    // A filter finds a number stored so, whichever way it is written.
    app.lease(
        "gpu",
        "2030-01-05 10:00",
        "2030-01-06 10:00",
        1,
        1,
        r#"["and", [">=", "$gpus", 8], ["==", "$fast", "false"]]"#,
    )
    .await
    .expect(202);

    // Objects and arrays stay refused, on create and update, and change nothing.
    let before = app.snapshot().await;
    for (method, p, body) in [
        (
            Method::POST,
            "/v1/os-hosts".to_string(),
            json!({"name": "c2", "gpus": [4]}),
        ),
        (
            Method::POST,
            "/v1/os-hosts".to_string(),
            json!({"name": "c2", "gpus": {"n": 4}}),
        ),
        (
            Method::POST,
            "/v1/os-hosts".to_string(),
            json!({"name": "c2", "gpus": null}),
        ),
        (Method::PUT, path.clone(), json!({"gpus": [8]})),
        (
            Method::PUT,
            path.clone(),
            json!({"values": {"gpus": {"n": 8}}}),
        ),
    ] {
        let r = app.send_json(method, &p, &body).await;
        let msg = r.expect_error(400);
        assert!(
            msg.starts_with(
                "Malformed parameter 'gpus': a capability value must be a string, number or boolean"
            ),
            "{body}: {msg}"
        );
    }
    assert_eq!(app.snapshot().await, before);
}
