//! The contract: the seed examples replayed (same keys, same types), the served spec against the
//! committed one, SDK-friendliness of the spec, the `.json` suffix, versions and plugins.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/seed/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Keys whose value the seed shows as a string but which are null on this server (no Keystone
/// trusts are created: see docs/api.md).
const NULL_INSTEAD_OF_STRING: &[&str] = &["trust_id"];

/// Every key of `seed` is in `ours` with the seed's JSON type (a seed `null` allows a string).
#[track_caller]
fn assert_same_shape(path: &str, seed: &Value, ours: &Value) {
    match (seed, ours) {
        (Value::Object(s), Value::Object(o)) => {
            for (k, sv) in s {
                let ov = o
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} is missing in {ours}"));
                assert_same_shape(&format!("{path}.{k}"), sv, ov);
            }
        }
        (Value::Array(s), Value::Array(o)) => {
            assert_eq!(s.is_empty(), o.is_empty(), "{path}: {ours}");
            for (i, ov) in o.iter().enumerate() {
                assert_same_shape(&format!("{path}[{i}]"), &s[i.min(s.len() - 1)], ov);
            }
        }
        (Value::Null, Value::Null | Value::String(_)) => {}
        (Value::String(_), Value::String(_)) => {}
        (Value::String(_), Value::Null)
            if NULL_INSTEAD_OF_STRING.iter().any(|k| path.ends_with(k)) => {}
        (Value::Number(s), Value::Number(o)) => {
            assert_eq!(s.is_i64(), o.is_i64(), "{path}: integer vs float")
        }
        (Value::Bool(_), Value::Bool(_)) => {}
        (s, o) => panic!("{path}: seed has {s}, we have {o}"),
    }
}

fn is_lease_date(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.6f").is_ok() && s.len() == 26
}

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok() && s.len() == 19
}

/// Moves the seed's 2017 dates into the test clock's future.
fn to_2030(v: &Value) -> Value {
    serde_json::from_str(&v.to_string().replace("2017-", "2030-")).unwrap()
}

#[tokio::test]
async fn seed_lease_examples_replay_with_the_same_shapes() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("compute", json!({})).await;

    // 2.2 create
    let created = app
        .post("/v1/leases", &to_2030(&fixture("lease-create-request")))
        .await
        .expect(202);
    assert_same_shape("create", &fixture("lease-create-response"), &created.body);
    let lease = &created.body["lease"];
    assert_eq!(lease["name"], "lease_foo");
    assert_eq!(lease["start_date"], "2030-02-21T20:00:00.000000");
    assert_eq!(lease["end_date"], "2030-02-24T20:00:00.000000");
    assert_eq!(lease["status"], "PENDING");
    assert_eq!(lease["action"], Value::Null);
    assert_eq!(lease["status_reason"], Value::Null);
    assert!(
        is_timestamp(&lease["created_at"]),
        "{}",
        lease["created_at"]
    );
    assert_eq!(lease["updated_at"], Value::Null);
    let r = &lease["reservations"][0];
    assert_eq!(r["status"], "pending");
    assert_eq!(r["resource_type"], "physical:host");
    assert_eq!(r["before_end"], "default");
    assert_eq!(
        r["hypervisor_properties"],
        "[\"==\", \"$hypervisor_hostname\", \"compute\"]"
    );
    assert_eq!((r["min"].as_i64(), r["max"].as_i64()), (Some(1), Some(1)));
    let events: Vec<(&str, &str, &str)> = lease["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap(),
                e["time"].as_str().unwrap(),
                e["status"].as_str().unwrap(),
            )
        })
        .collect();
    // Upstream uses the requested before_end_date (the seed's example shows a stale time).
    assert_eq!(
        events,
        vec![
            ("start_lease", "2030-02-21T20:00:00.000000", "UNDONE"),
            ("end_lease", "2030-02-24T20:00:00.000000", "UNDONE"),
            ("before_end_lease", "2030-02-24T19:00:00.000000", "UNDONE"),
        ]
    );
    let id = lease["id"].as_str().unwrap().to_string();

    // 2.3 show and 2.1 list
    let shown = app.get(&format!("/v1/leases/{id}")).await.expect(200);
    assert_same_shape("show", &fixture("lease-show-response"), &shown.body);
    assert_eq!(
        shown.body, created.body,
        "show returns what create returned"
    );
    let listed = app.get("/v1/leases").await.expect(200);
    assert_same_shape("list", &fixture("lease-list-response"), &listed.body);
    assert_eq!(listed.body["leases"][0], shown.body["lease"]);

    // 2.4 update (the seed's request, with our reservation id)
    app.clock().advance(chrono::TimeDelta::minutes(6));
    let mut update = to_2030(&fixture("lease-update-request"));
    update["reservations"][0]["id"] = r["id"].clone();
    let updated = app
        .put(&format!("/v1/leases/{id}"), &update)
        .await
        .expect(202);
    assert_same_shape("update", &fixture("lease-update-response"), &updated.body);
    let u = &updated.body["lease"];
    assert_eq!(u["name"], "lease_new_foo");
    assert_eq!(u["end_date"], "2030-03-12T12:00:00.000000");
    assert_eq!(u["reservations"][0]["max"], 3);
    assert!(is_timestamp(&u["updated_at"]));
    assert_eq!(u["events"][1]["time"], "2030-03-12T12:00:00.000000");
    assert_eq!(
        u["events"][2]["time"], "2030-03-12T11:00:00.000000",
        "before_end keeps its distance to the end"
    );
    assert!(
        u["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| is_lease_date(&e["time"]))
    );

    // 2.5 delete
    let deleted = app.delete(&format!("/v1/leases/{id}")).await.expect(204);
    assert!(deleted.text.is_empty());
    app.get(&format!("/v1/leases/{id}")).await.expect_error(404);
}

#[tokio::test]
async fn seed_host_examples_replay_with_the_same_shapes() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let created = app
        .post("/v1/os-hosts", &fixture("host-create-request"))
        .await
        .expect(202);
    assert_same_shape("create", &fixture("host-create-response"), &created.body);
    let host = &created.body["host"];
    assert_eq!(host["hypervisor_hostname"], "compute");
    assert_eq!(host["status"], Value::Null);
    assert!(
        host["id"].as_str().unwrap().parse::<i64>().is_ok(),
        "ids are integer strings"
    );
    let id = host["id"].as_str().unwrap().to_string();

    let shown = app.get(&format!("/v1/os-hosts/{id}")).await.expect(200);
    assert_same_shape("show", &fixture("host-show-response"), &shown.body);
    let listed = app.get("/v1/os-hosts").await.expect(200);
    assert_same_shape("list", &fixture("host-list-response"), &listed.body);

    // 3.4: the seed's {"values": {...}} body; the response is wrapped in "host" (see docs/api.md).
    let updated = app
        .put(
            &format!("/v1/os-hosts/{id}"),
            &fixture("host-update-request"),
        )
        .await
        .expect(202);
    assert_same_shape(
        "update",
        &fixture("host-update-response"),
        &updated.body["host"],
    );
    assert_eq!(updated.body["host"]["banana"], "false");

    let deleted = app.delete(&format!("/v1/os-hosts/{id}")).await.expect(204);
    assert!(deleted.text.is_empty());
    app.get(&format!("/v1/os-hosts/{id}"))
        .await
        .expect_error(404);
}

#[tokio::test]
async fn the_served_spec_is_the_committed_spec() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    for (path, file) in [
        ("/openapi.json", "openapi/blazar-v1.json"),
        ("/openapi.yaml", "openapi/blazar-v1.yaml"),
    ] {
        let served = app.get(path).await.expect(200).text;
        let committed =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(
            served.trim_end() == committed.trim_end(),
            "{file} differs from the served spec; regenerate it with \
             `cargo run -- openapi > openapi/blazar-v1.json` and \
             `cargo run -- openapi --format yaml > openapi/blazar-v1.yaml`"
        );
    }
}

#[tokio::test]
async fn every_operation_has_an_operation_id_and_one_success_response() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let spec = app.get("/openapi.json").await.expect(200).body;
    assert_eq!(spec["openapi"], "3.0.0");
    let mut ids = BTreeSet::new();
    let mut count = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            count += 1;
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            let successes = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|s| s.starts_with('2'))
                .count();
            let expected = usize::from(path != "/" && path != "/versions");
            assert_eq!(successes, expected, "{method} {path} 2xx responses");
        }
    }
    let want: BTreeSet<String> = [
        "listLeases",
        "createLease",
        "getLease",
        "updateLease",
        "deleteLease",
        "planLease",
        "findAvailability",
        "getCalendar",
        "listHosts",
        "createHost",
        "getHost",
        "updateHost",
        "deleteHost",
        "listHostAllocations",
        "getHostAllocation",
        "listHostProperties",
        "updateHostProperty",
        "listPlugins",
        "listVersions",
        "listVersionsAlias",
        "getHealth",
        "getReadiness",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(ids, want);
    assert_eq!(count, want.len());
}

#[tokio::test]
async fn every_route_answers_with_a_json_suffix() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let host = app.host("compute-1", json!({"gpu": "true"})).await;
    let hid = host["id"].as_str().unwrap();
    let lease = app
        .lease("l", "2030-01-02 00:00", "2030-01-03 00:00", 1, 1, "")
        .await
        .expect(202);
    let lid = lease.body["lease"]["id"].as_str().unwrap();
    for (plain, suffixed) in [
        ("/v1/leases".to_string(), "/v1/leases.json".to_string()),
        (
            format!("/v1/leases/{lid}"),
            format!("/v1/leases/{lid}.json"),
        ),
        ("/v1/os-hosts".into(), "/v1/os-hosts.json".into()),
        ("/v1/os-hosts".into(), "/v1/os-hosts/.json".into()),
        (
            format!("/v1/os-hosts/{hid}"),
            format!("/v1/os-hosts/{hid}.json"),
        ),
        (
            "/v1/os-hosts/allocations".into(),
            "/v1/os-hosts/allocations.json".into(),
        ),
        (
            format!("/v1/os-hosts/{hid}/allocation"),
            format!("/v1/os-hosts/{hid}/allocation.json"),
        ),
        (
            "/v1/os-hosts/properties?detail=True".into(),
            "/v1/os-hosts/properties.json?detail=True".into(),
        ),
        ("/v1/plugins".into(), "/v1/plugins.json".into()),
    ] {
        let a = app.get(&plain).await.expect(200);
        // The suffix overrides Accept, as upstream.
        let b = app
            .raw(Method::GET, &suffixed, &[("accept", "text/html")], None)
            .await
            .expect(200);
        assert_eq!(a.body, b.body, "{suffixed}");
    }
    // A body on a .json URL is JSON whatever its Content-Type says.
    let r = app
        .raw(
            Method::PUT,
            &format!("/v1/leases/{lid}.json"),
            &[("content-type", "text/plain")],
            Some(br#"{"name": "renamed"}"#.to_vec()),
        )
        .await
        .expect(202);
    assert_eq!(r.body["lease"]["name"], "renamed");
    let r = app
        .raw(
            Method::POST,
            "/v1/os-hosts.json",
            &[],
            Some(br#"{"name": "compute-2"}"#.to_vec()),
        )
        .await
        .expect(202);
    assert_eq!(r.body["host"]["hypervisor_hostname"], "compute-2");
    app.delete(&format!("/v1/leases/{lid}.json"))
        .await
        .expect(204);
}

#[tokio::test]
async fn versions_document_as_upstream() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    for path in ["/", "/versions"] {
        let r = app.get(path).await.expect(300);
        let v = &r.body["versions"][0];
        assert_eq!(v["id"], "v1.0");
        assert_eq!(v["status"], "CURRENT");
        assert_eq!(
            (v["min_version"].as_str(), v["max_version"].as_str()),
            (Some("1.0"), Some("1.0"))
        );
        assert_eq!(v["links"][0]["rel"], "self");
        assert!(v["links"][0]["href"].as_str().unwrap().ends_with("/v1"));
    }
}

#[tokio::test]
async fn plugins_are_discoverable() {
    crate::skip_if_no_database!();
    let app = spawn_with(|s| s.physical_host.before_end = "snapshot".into()).await;
    let r = app.get("/v1/plugins").await.expect(200);
    let p = &r.body["plugins"][0];
    assert_eq!(p["resource_type"], "physical:host");
    assert_eq!(p["before_end_actions"], json!(["", "default", "snapshot"]));
    assert_eq!(p["default_before_end_action"], "snapshot");
    let names: Vec<&str> = p["reservation_parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "min",
            "max",
            "hypervisor_properties",
            "resource_properties",
            "before_end"
        ]
    );
}

#[tokio::test]
async fn swagger_ui_and_specs_are_served() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let ui = app
        .raw(Method::GET, "/docs", &[("accept", "text/html")], None)
        .await
        .expect(200);
    assert!(
        ui.text.contains("swagger"),
        "{}",
        &ui.text[..200.min(ui.text.len())]
    );
    let yaml = app.get("/openapi.yaml").await.expect(200);
    assert!(yaml.text.contains("operationId: createLease"));
}

#[tokio::test]
async fn responses_carry_request_id_and_api_version_headers() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let r = app.get("/v1/leases").await.expect(200);
    assert!(
        r.headers["x-openstack-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req-")
    );
    assert_eq!(r.headers["openstack-api-version"], "reservation 1.0");
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let mine = "req-0b0e8a52-4a5e-4a9e-9f0e-2d6c2b1f3c4d";
    let r = app
        .raw(
            Method::GET,
            "/v1/leases",
            &[("x-openstack-request-id", mine)],
            None,
        )
        .await
        .expect(200);
    assert_eq!(r.headers["x-openstack-request-id"], mine);
    // No Accept header at all is fine (upstream fails on it).
    let r = app
        .raw(Method::GET, "/v1/leases", &[], None)
        .await
        .expect(200);
    assert!(r.body["leases"].is_array());
    let r = app
        .raw(
            Method::GET,
            "/v1/leases",
            &[("openstack-api-version", "reservation 1.0")],
            None,
        )
        .await;
    r.expect(200);
    app.raw(
        Method::GET,
        "/v1/leases",
        &[("openstack-api-version", "reservation 1.5")],
        None,
    )
    .await
    .expect_error(406);
    app.raw(
        Method::GET,
        "/v1/leases",
        &[("openstack-api-version", "reservation one")],
        None,
    )
    .await
    .expect_error(400);
}
