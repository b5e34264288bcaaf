//! Lease behaviour over HTTP: create/show/list/update/delete, validation, host choice, events.

use chrono::TimeDelta;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

async fn hosts(app: &TestApp, n: usize) {
    for i in 1..=n {
        app.host(
            &format!("compute-{i}"),
            json!({"vcpus": (i * 2).to_string(), "rack": if i % 2 == 0 { "even" } else { "odd" }}),
        )
        .await;
    }
}

fn id_of(r: &Resp) -> String {
    r.body["lease"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_show_list_update_delete_round_trip() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 2).await;
    let created = app
        .lease(
            "round-trip",
            "2030-01-05 10:00",
            "2030-01-06 10:00",
            1,
            2,
            "",
        )
        .await
        .expect(202);
    let id = id_of(&created);
    assert_eq!(app.hosts_of(&id).await, vec!["1", "2"]);
    let shown = app.get(&format!("/v1/leases/{id}")).await.expect(200);
    assert_eq!(shown.body["lease"]["name"], "round-trip");
    assert_eq!(
        app.get("/v1/leases").await.body["leases"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let updated = app
        .put(
            &format!("/v1/leases/{id}"),
            &json!({"name": "renamed", "end_date": "2030-01-07 10:00"}),
        )
        .await
        .expect(202);
    assert_eq!(updated.body["lease"]["name"], "renamed");
    assert_eq!(
        updated.body["lease"]["end_date"],
        "2030-01-07T10:00:00.000000"
    );
    let alloc = app.get("/v1/os-hosts/1/allocation").await.expect(200);
    assert_eq!(
        alloc.body["allocation"]["reservations"][0]["end_date"],
        "2030-01-07T10:00:00.000000"
    );
    app.delete(&format!("/v1/leases/{id}")).await.expect(204);
    assert!(
        app.get("/v1/leases").await.body["leases"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(app.hosts_of(&id).await.is_empty());
}

#[tokio::test]
async fn identity_headers_are_stored_on_the_lease_and_defaults_apply() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let body = lease_body("mine", "2030-01-05 10:00", "2030-01-06 10:00", 1, 1, "");
    hosts(&app, 2).await;
    let r = app
        .raw(
            Method::POST,
            "/v1/leases",
            &[
                ("content-type", "application/json"),
                ("x-project-id", "p-1"),
                ("x-user-id", "u-1"),
                ("x-roles", "member"),
            ],
            Some(body.to_string().into_bytes()),
        )
        .await
        .expect(202);
    assert_eq!(r.body["lease"]["project_id"], "p-1");
    assert_eq!(r.body["lease"]["user_id"], "u-1");
    let r = app.post("/v1/leases", &body).await.expect(202);
    assert_eq!(r.body["lease"]["project_id"], "default");
    assert_eq!(r.body["lease"]["user_id"], "admin");
}

#[tokio::test]
async fn start_now_is_truncated_to_the_minute() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.clock().advance(TimeDelta::seconds(42));
    let r = app
        .post(
            "/v1/leases",
            &json!({"name": "now", "start_date": "now", "end_date": "2030-01-01 14:00"}),
        )
        .await
        .expect(202);
    assert_eq!(r.body["lease"]["start_date"], "2030-01-01T12:00:00.000000");
    assert_eq!(
        r.body["lease"]["reservations"],
        json!([]),
        "a lease may reserve nothing"
    );
    // before_end_lease: 60 minutes before the end by default.
    assert_eq!(
        r.body["lease"]["events"][2]["time"],
        "2030-01-01T13:00:00.000000"
    );
}

#[tokio::test]
async fn before_end_event_rules() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    // A lease shorter than the default 60 minutes gets its before-end event at its start.
    let r = app
        .post("/v1/leases", &json!({"name": "short", "start_date": "2030-01-02 10:00", "end_date": "2030-01-02 10:30"}))
        .await
        .expect(202);
    assert_eq!(
        r.body["lease"]["events"][2]["time"],
        "2030-01-02T10:00:00.000000"
    );
    // null and "" before_end_date mean the default.
    for v in [Value::Null, json!("")] {
        let r = app
            .post("/v1/leases", &json!({"name": "d", "start_date": "2030-01-02 10:00", "end_date": "2030-01-03 10:00", "before_end_date": v}))
            .await
            .expect(202);
        assert_eq!(
            r.body["lease"]["events"][2]["time"],
            "2030-01-03T09:00:00.000000"
        );
    }
    let app = spawn_with(|s| s.manager.minutes_before_end_lease = 0).await;
    let r = app
        .post("/v1/leases", &json!({"name": "none", "start_date": "2030-01-02 10:00", "end_date": "2030-01-03 10:00"}))
        .await
        .expect(202);
    let types: Vec<&str> = r.body["lease"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["start_lease", "end_lease"],
        "0 minutes: no before-end event"
    );
    // ... unless one is asked for, even later by an update.
    let id = id_of(&r);
    let u = app
        .put(
            &format!("/v1/leases/{id}"),
            &json!({"before_end_date": "2030-01-03 08:00"}),
        )
        .await
        .expect(202);
    assert_eq!(
        u.body["lease"]["events"][2]["event_type"],
        "before_end_lease"
    );
    assert_eq!(
        u.body["lease"]["events"][2]["time"],
        "2030-01-03T08:00:00.000000"
    );
}

/// Each bad create gets a 400 naming the problem, and changes nothing.
#[tokio::test]
async fn create_validation_rules() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 2).await;
    let before = app.snapshot().await;
    let good = || lease_body("ok", "2030-01-05 10:00", "2030-01-06 10:00", 1, 1, "");
    type Patch = fn(&mut Value);
    let cases: &[(Patch, &str)] = &[
        (
            |b| {
                b.as_object_mut().unwrap().remove("name");
            },
            "Missing parameter name",
        ),
        (|b| b["name"] = json!(""), "name: must not be empty"),
        (
            |b| b["name"] = json!("x".repeat(100_000)),
            "name: must be at most 80",
        ),
        (|b| b["name"] = json!("tab\there"), "control characters"),
        (
            |b| {
                b.as_object_mut().unwrap().remove("start_date");
            },
            "Missing parameter start_date",
        ),
        (|b| b["start_date"] = json!("2030-01-05"), "start_date"),
        (
            |b| b["start_date"] = json!("2030-02-30 10:00"),
            "start_date",
        ),
        (
            |b| b["end_date"] = json!("9999-01-01 00:00"),
            "between 1970 and 2999",
        ),
        (
            |b| b["start_date"] = json!("1969-01-01 00:00"),
            "between 1970 and 2999",
        ),
        (
            |b| b["end_date"] = json!("2030-01-06 10:00+02:00"),
            "timezone offsets",
        ),
        (
            |b| b["start_date"] = json!(20300105),
            "start_date: must be a string",
        ),
        (
            |b| b["start_date"] = json!("2030-01-01 11:00"),
            "Start date must be later than current date",
        ),
        (
            |b| b["end_date"] = json!("2030-01-05 09:00"),
            "End date must be later than start date",
        ),
        (
            |b| b["end_date"] = json!("2030-01-05 10:00"),
            "End date must be later than start date",
        ),
        (
            |b| b["before_end_date"] = json!("2030-01-06 10:00"),
            "strictly between",
        ),
        (
            |b| b["before_end_date"] = json!("2030-01-05 09:00"),
            "strictly between",
        ),
        (
            |b| b["reservations"][0]["min"] = json!(0),
            "(must be greater than or equal to 1): reservations[0].min is 0",
        ),
        (
            |b| b["reservations"][0]["min"] = json!(-3),
            "(must be greater than or equal to 1): reservations[0].min is -3",
        ),
        (
            |b| b["reservations"][0]["max"] = json!(2.5),
            "max (reservations[0].max): must be an integer",
        ),
        (
            |b| b["reservations"][0]["max"] = json!("two"),
            "max (reservations[0].max): must be an integer",
        ),
        (
            |b| b["reservations"][0]["max"] = json!(9_223_372_036_854_775_807i64),
            "max (reservations[0].max): must be between 1",
        ),
        (
            |b| b["reservations"][0]["max"] = json!(18_446_744_073_709_551_615u64),
            "max (reservations[0].max): must be an integer",
        ),
        (
            |b| {
                b["reservations"][0]["min"] = json!(2);
                b["reservations"][0]["max"] = json!(1);
            },
            "reservations[0] asks for min 2 and max 1",
        ),
        (
            |b| b["reservations"][0]["resource_type"] = json!("virtual:floatingip"),
            "virtual:floatingip resource type is not supported",
        ),
        (
            |b| {
                b["reservations"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("resource_type");
            },
            "Missing parameter resource_type (reservations[0].resource_type)",
        ),
        (
            |b| b["reservations"][0]["before_end"] = json!("shutdown"),
            "before_end (reservations[0].before_end): must be one of",
        ),
        (
            |b| b["reservations"][0]["resource_properties"] = json!("[\"==\", \"$gpu\""),
            "not valid JSON",
        ),
        (
            |b| b["reservations"][0]["resource_properties"] = json!("[\"like\", \"$gpu\", \"x\"]"),
            "unknown operator",
        ),
        (
            |b| b["reservations"][0]["hypervisor_properties"] = json!("[\"==\", \"vcpus\", \"2\"]"),
            "must start with '$'",
        ),
        (
            |b| b["reservations"][0]["hypervisor_properties"] = json!(7),
            "hypervisor_properties (reservations[0].hypervisor_properties): must be a string",
        ),
        (
            |b| b["reservations"] = json!("all"),
            "reservations: must be a list",
        ),
        (
            |b| b["reservations"][0]["id"] = json!("mine"),
            "'id' is set by the server",
        ),
        (
            |b| b["project_id"] = json!("someone-else"),
            "'project_id' is set by the server",
        ),
        (
            |b| b["user_id"] = json!("someone-else"),
            "'user_id' is set by the server",
        ),
        (
            |b| b["trust_id"] = json!("t"),
            "'trust_id' is set by the server",
        ),
        (
            |b| b["status"] = json!("ACTIVE"),
            "'status' is set by the server",
        ),
        (
            |b| b["created_at"] = json!("2020-01-01 00:00:00"),
            "'created_at' is set by the server",
        ),
        (
            |b| b["id"] = json!("00000000-0000-0000-0000-000000000000"),
            "'id' is set by the server",
        ),
        (|b| b["colour"] = json!("blue"), "Unknown field 'colour'"),
        (
            |b| {
                b["events"] =
                    json!([{"event_type": "start_lease", "event_date": "2030-01-05 10:00"}])
            },
            "events are created by the server",
        ),
    ];
    for (patch, needle) in cases {
        let mut body = good();
        patch(&mut body);
        let msg = app.post("/v1/leases", &body).await.expect_error(400);
        assert!(
            msg.contains(needle),
            "expected {needle:?} in {msg:?} for {body}"
        );
    }
    let too_many: Vec<Value> = (0..33).map(|_| good()["reservations"][0].clone()).collect();
    let mut body = good();
    body["reservations"] = json!(too_many);
    let msg = app.post("/v1/leases", &body).await.expect_error(400);
    assert!(msg.contains("at most 32 reservations"), "{msg}");
    assert_eq!(
        app.snapshot().await,
        before,
        "refused creates change nothing"
    );
}

#[tokio::test]
async fn counts_may_be_strings_as_some_clients_send_them() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 3).await;
    let mut body = lease_body("s", "2030-01-05 10:00", "2030-01-06 10:00", 1, 1, "");
    body["reservations"][0]["min"] = json!("2");
    body["reservations"][0]["max"] = json!("3");
    let r = app.post("/v1/leases", &body).await.expect(202);
    assert_eq!(
        (
            r.body["lease"]["reservations"][0]["min"].clone(),
            r.body["lease"]["reservations"][0]["max"].clone()
        ),
        (json!(2), json!(3))
    );
    assert_eq!(app.hosts_of(&id_of(&r)).await.len(), 3);
}

#[tokio::test]
async fn not_enough_hosts_is_409_with_counts_and_stores_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 4).await;
    app.lease(
        "first",
        "2030-01-05 10:00",
        "2030-01-06 10:00",
        1,
        1,
        r#"["==", "$rack", "even"]"#,
    )
    .await
    .expect(202);
    let before = app.snapshot().await;
    let r = app
        .lease(
            "second",
            "2030-01-05 12:00",
            "2030-01-05 13:00",
            2,
            2,
            r#"["==", "$rack", "even"]"#,
        )
        .await;
    assert_eq!(r.body["error_name"], "NotEnoughHostsAvailable");
    let msg = r.expect_error(409);
    assert_eq!(
        msg,
        "Not enough hosts available: 1 of the 2 hosts matching [\"==\", \"$rack\", \"even\"] is \
         held by other leases until 2030-01-06T10:00:00.000000; 2 are needed; the earliest start \
         that fits is 2030-01-06T10:00:00.000000"
    );
    assert_eq!(app.snapshot().await, before);
    // Touching windows do not overlap: the host is free from the first lease's end.
    app.lease(
        "after",
        "2030-01-06 10:00",
        "2030-01-07 10:00",
        2,
        2,
        r#"["==", "$rack", "even"]"#,
    )
    .await
    .expect(202);
}

#[tokio::test]
async fn filters_compare_numbers_as_numbers_and_combine() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    // vcpus 2, 4, ..., 20; rack odd/even.
    hosts(&app, 10).await;
    let cases = [
        (
            r#"[">", "$vcpus", "9"]"#,
            "",
            vec!["5", "6", "7", "8", "9", "10"],
        ),
        (
            r#"["and", [">=", "$vcpus", 4], ["<", "$vcpus", "10"]]"#,
            "",
            vec!["2", "3", "4"],
        ),
        (
            r#"["or", ["==", "$vcpus", "2"], ["==", "$vcpus", "20"]]"#,
            "",
            vec!["1", "10"],
        ),
        (
            "",
            r#"["in", "$rack", "even"]"#,
            vec!["2", "4", "6", "8", "10"],
        ),
        (
            r#"["<=", "$vcpus", "6"]"#,
            r#"["not", ["==", "$rack", "odd"]]"#,
            vec!["2"],
        ),
        (
            r#"["==", "$hypervisor_hostname", "compute-7"]"#,
            "",
            vec!["7"],
        ),
    ];
    for (i, (hyp, res, want)) in cases.into_iter().enumerate() {
        let start = format!("2030-02-{:02} 00:00", i + 1);
        let end = format!("2030-02-{:02} 12:00", i + 1);
        let body = json!({
            "name": format!("f{i}"), "start_date": start, "end_date": end,
            "reservations": [{"resource_type": "physical:host", "min": 1, "max": 10,
                              "hypervisor_properties": hyp, "resource_properties": res}]
        });
        let r = app.post("/v1/leases", &body).await.expect(202);
        assert_eq!(app.hosts_of(&id_of(&r)).await, want, "{hyp} {res}");
    }
    // A capability no host has matches nothing: 409, not 500.
    let r = app
        .lease(
            "nogpu",
            "2030-03-01 00:00",
            "2030-03-02 00:00",
            1,
            1,
            r#"["==", "$gpu", "true"]"#,
        )
        .await;
    let msg = r.expect_error(409);
    assert!(
        msg.starts_with("Not enough hosts available: No host matches [\"==\", \"$gpu\""),
        "{msg}"
    );
}

#[tokio::test]
async fn host_choice_prefers_least_used_hosts_then_lowest_id() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 3).await;
    // Book host 1 twice and host 2 once in other windows.
    app.lease("b0", "2030-03-01 00:00", "2030-03-01 12:00", 2, 2, "")
        .await
        .expect(202);
    app.lease(
        "b1",
        "2030-03-02 00:00",
        "2030-03-02 12:00",
        1,
        1,
        r#"["==", "$hypervisor_hostname", "compute-1"]"#,
    )
    .await
    .expect(202);
    // usage now: host1 = 2, host2 = 1, host3 = 0
    let r = app
        .lease("pick", "2030-04-01 00:00", "2030-04-02 00:00", 2, 2, "")
        .await
        .expect(202);
    assert_eq!(app.hosts_of(&id_of(&r)).await, vec!["2", "3"]);
}

#[tokio::test]
async fn several_reservations_in_one_lease_get_distinct_hosts() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 4).await;
    let body = json!({
        "name": "two", "start_date": "2030-01-05 10:00", "end_date": "2030-01-06 10:00",
        "reservations": [
            {"resource_type": "physical:host", "min": 1, "max": 3, "hypervisor_properties": "", "resource_properties": ""},
            {"resource_type": "physical:host", "min": 1, "max": 1, "hypervisor_properties": "", "resource_properties": r#"["==", "$rack", "odd"]"#}
        ]
    });
    let r = app.post("/v1/leases", &body).await.expect(202);
    let lease = &r.body["lease"];
    let mut seen = Vec::new();
    for res in lease["reservations"].as_array().unwrap() {
        let rid = res["id"].as_str().unwrap();
        let a = app
            .get(&format!("/v1/os-hosts/allocations?reservation_id={rid}"))
            .await
            .expect(200);
        for h in a.body["allocations"].as_array().unwrap() {
            if !h["reservations"].as_array().unwrap().is_empty() {
                seen.push(h["resource_id"].as_str().unwrap().to_string());
            }
        }
    }
    seen.sort();
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(seen, dedup, "no host in two reservations");
    assert_eq!(seen.len(), 4, "3 + 1 hosts");
}

#[tokio::test]
async fn update_rules_and_refusals_change_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 3).await;
    let a = app
        .lease("a", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "")
        .await
        .expect(202);
    let a_id = id_of(&a);
    let b = app
        .lease("b", "2030-01-06 00:00", "2030-01-07 00:00", 3, 3, "")
        .await
        .expect(202);
    let b_id = id_of(&b);
    let rid = a.body["lease"]["reservations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/leases/{a_id}");
    let before = app.snapshot().await;
    for (body, status, needle) in [
        (json!({"end_date": "2030-01-06 12:00"}), 409, "NotEnough"),
        (
            json!({"start_date": "2030-01-01 11:00"}),
            400,
            "Start date must be later than current date",
        ),
        (
            json!({"end_date": "2030-01-04 00:00"}),
            400,
            "End date must be later than current and start date",
        ),
        (
            json!({"end_date": "2030-01-05 00:00"}),
            400,
            "End date must be later than current and start date",
        ),
        (
            json!({"before_end_date": "2030-01-07 00:00"}),
            400,
            "strictly between",
        ),
        (
            json!({"reservations": [{"id": "nope", "max": 2}]}),
            400,
            "Invalid reservation IDs are: nope",
        ),
        (
            json!({"reservations": [{"max": 2}]}),
            400,
            "Missing parameter reservation ID (reservations[0].id)",
        ),
        (
            json!({"reservations": [{"id": rid, "min": 3, "max": 2}]}),
            400,
            "InvalidRange",
        ),
        (
            json!({"reservations": [{"id": rid, "max": 0}]}),
            400,
            "(must be greater than or equal to 1): reservations[0].max is 0",
        ),
        (
            json!({"reservations": [{"id": rid, "resource_type": "virtual:instance"}]}),
            409,
            "resource_type cannot be updated",
        ),
        (
            json!({"reservations": [{"id": rid, "min": 4, "max": 4}]}),
            409,
            "NotEnough",
        ),
        (
            json!({"reservations": [{"id": rid, "resource_properties": "[\"==\", \"$rack\""}]}),
            400,
            "not valid JSON",
        ),
        (
            json!({"project_id": "other"}),
            400,
            "'project_id' is set by the server",
        ),
        (json!({"name": ""}), 400, "must not be empty"),
        (
            json!({"events": [{"event_type": "end_lease"}]}),
            400,
            "events are created by the server",
        ),
        (json!({"trust_id": "x"}), 400, "set by the server"),
    ] {
        let r = app.put(&path, &body).await;
        let text = r.text.clone();
        let name = r.body["error_name"].as_str().unwrap_or("").to_string();
        let msg = r.expect_error(status);
        assert!(
            msg.contains(needle) || name.contains(needle),
            "{body}: expected {needle:?} in {text}"
        );
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "refused updates change nothing"
    );
    let shown = app.get(&path).await.body;
    assert_eq!(shown["lease"]["status"], "PENDING", "never left in ERROR");

    // Accepted updates: more hosts, a later start, a new name; lease b keeps its hosts.
    app.delete(&format!("/v1/leases/{b_id}")).await.expect(204);
    let r = app
        .put(
            &path,
            &json!({"start_date": "2030-01-05 06:00", "reservations": [{"id": rid, "max": 3}]}),
        )
        .await
        .expect(202);
    assert_eq!(r.body["lease"]["start_date"], "2030-01-05T06:00:00.000000");
    assert_eq!(
        r.body["lease"]["events"][0]["time"],
        "2030-01-05T06:00:00.000000"
    );
    assert_eq!(app.hosts_of(&a_id).await, vec!["1", "2", "3"]);
    let r = app
        .put(&path, &json!({"reservations": [{"id": rid, "max": 1}]}))
        .await
        .expect(202);
    assert_eq!(r.body["lease"]["reservations"][0]["max"], 1);
    assert_eq!(
        app.hosts_of(&a_id).await,
        vec!["1"],
        "shrinking max keeps the first host"
    );
}

#[tokio::test]
async fn updates_keep_hosts_and_detect_conflicts_when_prolonging() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 2).await;
    let a = app
        .lease("a", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "")
        .await
        .expect(202);
    let a_id = id_of(&a);
    let first = app.hosts_of(&a_id).await;
    assert_eq!(first, vec!["1"]);
    // Another lease takes a's host right after a's end.
    app.lease(
        "b",
        "2030-01-06 00:00",
        "2030-01-07 00:00",
        1,
        1,
        r#"["==", "$hypervisor_hostname", "compute-1"]"#,
    )
    .await
    .expect(202);
    // Prolonging a (not started) moves it to the host that is free for the longer window.
    app.put(
        &format!("/v1/leases/{a_id}"),
        &json!({"end_date": "2030-01-06 06:00"}),
    )
    .await
    .expect(202);
    let after = app.hosts_of(&a_id).await;
    assert_eq!(after, vec!["2"]);
    // With no host free for the longer window, prolonging is refused.
    app.lease(
        "c",
        "2030-01-06 06:00",
        "2030-01-07 00:00",
        1,
        1,
        r#"["==", "$hypervisor_hostname", "compute-2"]"#,
    )
    .await
    .expect(202);
    let msg = app
        .put(
            &format!("/v1/leases/{a_id}"),
            &json!({"end_date": "2030-01-06 12:00"}),
        )
        .await
        .expect_error(409);
    assert!(msg.contains("Not enough hosts"), "{msg}");
    // Shrinking never moves hosts.
    app.put(
        &format!("/v1/leases/{a_id}"),
        &json!({"end_date": "2030-01-05 12:00"}),
    )
    .await
    .expect(202);
    assert_eq!(app.hosts_of(&a_id).await, after);
}

#[tokio::test]
async fn started_and_terminated_leases() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 1).await;
    let a = app
        .lease("a", "2030-01-01 13:00", "2030-01-01 15:00", 1, 1, "")
        .await
        .expect(202);
    let id = id_of(&a);
    let path = format!("/v1/leases/{id}");
    app.clock().advance(TimeDelta::hours(2)); // 14:00, inside the lease
    let msg = app
        .put(
            &path,
            &json!({"start_date": "2030-01-01 16:00", "end_date": "2030-01-01 18:00"}),
        )
        .await
        .expect_error(400);
    assert!(msg.contains("already started"), "{msg}");
    app.put(&path, &json!({"end_date": "2030-01-01 16:00"}))
        .await
        .expect(202);
    app.clock().advance(TimeDelta::hours(3)); // 17:00, after the end
    let msg = app
        .put(&path, &json!({"end_date": "2030-01-01 19:00"}))
        .await
        .expect_error(400);
    assert!(
        msg.contains("Terminated leases can only be renamed"),
        "{msg}"
    );
    let r = app.put(&path, &json!({"name": "old"})).await.expect(202);
    assert_eq!(r.body["lease"]["name"], "old");
}

#[tokio::test]
async fn delete_frees_the_hosts_at_once() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    hosts(&app, 1).await;
    let a = app
        .lease("a", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "")
        .await
        .expect(202);
    app.lease("b", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "")
        .await
        .expect_error(409);
    app.delete(&format!("/v1/leases/{}", id_of(&a)))
        .await
        .expect(204);
    app.lease("b", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "")
        .await
        .expect(202);
    app.delete(&format!("/v1/leases/{}", id_of(&a)))
        .await
        .expect_error(404);
}

#[tokio::test]
async fn names_may_repeat_and_unknown_ids_are_404() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.post(
        "/v1/leases",
        &json!({"name": "same", "start_date": "2030-01-05 00:00", "end_date": "2030-01-06 00:00"}),
    )
    .await
    .expect(202);
    app.post(
        "/v1/leases",
        &json!({"name": "same", "start_date": "2030-01-05 00:00", "end_date": "2030-01-06 00:00"}),
    )
    .await
    .expect(202);
    for path in [
        "/v1/leases/nope",
        "/v1/leases/00000000-0000-0000-0000-000000000000",
        "/v1/leases/'%20OR%201=1--",
    ] {
        app.get(path).await.expect_error(404);
        app.put(path, &json!({"name": "x"})).await.expect_error(404);
        app.delete(path).await.expect_error(404);
    }
}
