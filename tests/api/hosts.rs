//! Hosts over HTTP: enrolment, facts and capabilities, updates, deletion, allocations, properties.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn enrol_with_facts_and_capabilities() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    let h = app
        .host("compute-1", json!({"vcpus": "8", "memory_mb": 16384, "local_gb": 100, "hypervisor_type": "QEMU",
                                  "hypervisor_version": 2005000, "cpu_info": "{'arch': 'x86_64'}", "gpu": "true", "rack": "4"}))
        .await;
    assert_eq!(h["id"], "1");
    assert_eq!(h["vcpus"], 8);
    assert_eq!(h["memory_mb"], 16384);
    assert_eq!(h["hypervisor_type"], "QEMU");
    assert_eq!(h["cpu_info"], "{'arch': 'x86_64'}");
    assert_eq!(h["gpu"], "true");
    assert_eq!(h["rack"], "4", "capabilities are strings");
    assert_eq!(h["reservable"], true);
    assert_eq!(
        h["service_name"], "compute-1",
        "default service_name is the host name"
    );
    // Defaults for facts not given.
    let d = app.host("bare", json!({})).await;
    assert_eq!(
        (
            d["vcpus"].clone(),
            d["memory_mb"].clone(),
            d["local_gb"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );
    assert_eq!(d["hypervisor_type"], "");
    assert_eq!(d["id"], "2");
    let list = app.get("/v1/os-hosts").await.expect(200);
    let names: Vec<&str> = list.body["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hypervisor_hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["compute-1", "bare"]);
}

#[tokio::test]
async fn enrolment_errors_change_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("compute-1", json!({})).await;
    let before = app.snapshot().await;
    for (body, status, needle) in [
        (json!({"name": "compute-1"}), 409, "already enrolled"),
        (json!({}), 400, "Missing parameter name"),
        (json!({"name": 5}), 400, "name: must be a string"),
        (
            json!({"name": "h", "id": "9"}),
            400,
            "'id' is set by the server",
        ),
        (
            json!({"name": "h", "hypervisor_hostname": "x"}),
            400,
            "set by the server",
        ),
        (
            json!({"name": "h", "reservable": "false"}),
            400,
            "'reservable' is set by the server",
        ),
        (
            json!({"name": "h", "vcpus": "lots"}),
            400,
            "vcpus: must be an integer",
        ),
        (
            json!({"name": "h", "memory_mb": -1}),
            400,
            "memory_mb: must be between 0",
        ),
        (json!({"name": "h", "gpu": ["a"]}), 400, "not an array"),
        (
            json!({"name": "h", "gpu": "x".repeat(300)}),
            400,
            "at most 255",
        ),
        (json!({"name": "h", "k".repeat(65): "v"}), 400, "too long"),
        (json!({"name": "h\u{1}"}), 400, "control characters"),
    ] {
        let msg = app.post("/v1/os-hosts", &body).await.expect_error(status);
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn update_flat_and_wrapped_and_null_removes() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("compute-1", json!({"gpu": "true", "rack": "r1"}))
        .await;
    let r = app
        .put("/v1/os-hosts/1", &json!({"gpu": "false", "colour": "red"}))
        .await
        .expect(202);
    assert_eq!(r.body["host"]["gpu"], "false");
    assert_eq!(r.body["host"]["colour"], "red");
    assert!(r.body["host"]["updated_at"].is_string());
    let r = app
        .put("/v1/os-hosts/1", &json!({"values": {"rack": "r2"}}))
        .await
        .expect(202);
    assert_eq!(r.body["host"]["rack"], "r2");
    let r = app
        .put("/v1/os-hosts/1", &json!({"colour": null}))
        .await
        .expect(202);
    assert!(
        r.body["host"].get("colour").is_none(),
        "null removes: {}",
        r.text
    );
    // The CLI's `k=` sends an empty string, which is kept.
    let r = app
        .put("/v1/os-hosts/1", &json!({"rack": ""}))
        .await
        .expect(202);
    assert_eq!(r.body["host"]["rack"], "");
    let r = app
        .put("/v1/os-hosts/1", &json!({"vcpus": 32}))
        .await
        .expect(202);
    assert_eq!(r.body["host"]["vcpus"], 32);
    let shown = app.get("/v1/os-hosts/1").await.expect(200);
    assert_eq!(shown.body["host"], r.body["host"]);
    for (body, needle) in [
        (json!({}), "No data to update"),
        (json!({"values": {}}), "No data to update"),
        (json!({"id": "2"}), "'id' is set by the server"),
        (json!({"name": "other"}), "cannot be changed"),
        (json!({"gpu": {"nested": true}}), "not an object"),
    ] {
        let msg = app.put("/v1/os-hosts/1", &body).await.expect_error(400);
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    app.put("/v1/os-hosts/99", &json!({"a": "b"}))
        .await
        .expect_error(404);
    app.put("/v1/os-hosts/x", &json!({"a": "b"}))
        .await
        .expect_error(404);
}

#[tokio::test]
async fn capabilities_used_by_a_reservation_cannot_change() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host(
        "compute-1",
        json!({"gpu": "true", "rack": "r1", "vcpus": 8}),
    )
    .await;
    app.lease(
        "gpu",
        "2030-01-05 00:00",
        "2030-01-06 00:00",
        1,
        1,
        r#"["==", "$gpu", "true"]"#,
    )
    .await
    .expect(202);
    let mut body = lease_body("cpu", "2030-02-05 00:00", "2030-02-06 00:00", 1, 1, "");
    body["reservations"][0]["hypervisor_properties"] = json!(r#"[">=", "$vcpus", "4"]"#);
    app.post("/v1/leases", &body).await.expect(202);
    let before = app.snapshot().await;
    for body in [
        json!({"gpu": "false"}),
        json!({"gpu": null}),
        json!({"gpu": "false", "rack": "r9"}),
        json!({"vcpus": 2}),
    ] {
        let r = app.put("/v1/os-hosts/1", &body).await;
        assert_eq!(
            r.body["error_name"], "CantUpdateExtraCapability",
            "{}",
            r.text
        );
        r.expect_error(409);
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused update changes nothing"
    );
    // Setting the same value, or other keys, is fine.
    app.put("/v1/os-hosts/1", &json!({"gpu": "true"}))
        .await
        .expect(202);
    app.put("/v1/os-hosts/1", &json!({"rack": "r2"}))
        .await
        .expect(202);
}

#[tokio::test]
async fn delete_refused_while_reserved() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("compute-1", json!({})).await;
    app.host("compute-2", json!({})).await;
    let l = app
        .lease("l", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "")
        .await
        .expect(202);
    let msg = app.delete("/v1/os-hosts/1").await.expect_error(409);
    assert!(
        msg.starts_with("Can't delete host 1. The host is reserved."),
        "{msg}"
    );
    assert!(msg.contains("held by lease(s)"), "{msg}");
    app.get("/v1/os-hosts/1").await.expect(200);
    app.delete("/v1/os-hosts/2").await.expect(204);
    app.delete("/v1/os-hosts/2").await.expect_error(404);
    app.delete(&format!(
        "/v1/leases/{}",
        l.body["lease"]["id"].as_str().unwrap()
    ))
    .await
    .expect(204);
    app.delete("/v1/os-hosts/1").await.expect(204);
    assert_eq!(app.get("/v1/os-hosts").await.body["hosts"], json!([]));
    // Ids are never reused.
    assert_eq!(app.host("compute-3", json!({})).await["id"], "3");
}

#[tokio::test]
async fn allocations_list_and_show() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    for i in 1..=3 {
        app.host(&format!("c{i}"), json!({})).await;
    }
    let l = app
        .lease("l", "2030-01-05 00:00", "2030-01-06 00:00", 2, 2, "")
        .await
        .expect(202);
    let lid = l.body["lease"]["id"].as_str().unwrap();
    let rid = l.body["lease"]["reservations"][0]["id"].as_str().unwrap();
    let all = app.get("/v1/os-hosts/allocations").await.expect(200);
    let allocs = all.body["allocations"].as_array().unwrap();
    assert_eq!(
        allocs.len(),
        3,
        "every host is listed, even unallocated ones"
    );
    assert_eq!(allocs[0]["resource_id"], "1");
    assert_eq!(
        allocs[0]["reservations"],
        json!([{"id": rid, "lease_id": lid, "start_date": "2030-01-05T00:00:00.000000", "end_date": "2030-01-06T00:00:00.000000"}])
    );
    assert_eq!(allocs[2]["reservations"], json!([]));
    let one = app.get("/v1/os-hosts/2/allocation").await.expect(200);
    assert_eq!(one.body["allocation"]["resource_id"], "2");
    assert_eq!(one.body["allocation"]["reservations"][0]["lease_id"], lid);
    app.get("/v1/os-hosts/9/allocation").await.expect_error(404);
    // Filters, and leases that have ended drop out of the default listing.
    let none = app
        .get("/v1/os-hosts/allocations?lease_id=other")
        .await
        .expect(200);
    assert!(
        none.body["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["reservations"] == json!([]))
    );
    app.clock().set(
        chrono::NaiveDate::from_ymd_opt(2030, 1, 7)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
    );
    let later = app.get("/v1/os-hosts/allocations").await.expect(200);
    assert!(
        later.body["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["reservations"] == json!([]))
    );
    let by_lease = app
        .get(&format!("/v1/os-hosts/allocations?lease_id={lid}"))
        .await
        .expect(200);
    let held = by_lease.body["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["reservations"] != json!([]))
        .count();
    assert_eq!(held, 2, "a lease filter shows past allocations too");
}

#[tokio::test]
async fn resource_properties_list_detail_private() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({"gpu": "true", "rack": "r1"})).await;
    app.host("c2", json!({"gpu": "false"})).await;
    let r = app.get("/v1/os-hosts/properties").await.expect(200);
    assert_eq!(
        r.body,
        json!({"resource_properties": [{"property": "gpu"}, {"property": "rack"}]})
    );
    let r = app
        .get("/v1/os-hosts/properties?detail=True")
        .await
        .expect(200);
    assert_eq!(
        r.body["resource_properties"][0],
        json!({"property": "gpu", "private": false, "values": ["false", "true"]})
    );
    let r = app
        .get("/v1/os-hosts/properties?detail=False")
        .await
        .expect(200);
    assert_eq!(
        r.body["resource_properties"][0],
        json!({"property": "gpu"}),
        "detail=False means no detail"
    );
    let p = app
        .patch("/v1/os-hosts/properties/gpu", &json!({"private": true}))
        .await
        .expect(200);
    let rp = &p.body["resource_property"];
    assert_eq!(rp["property_name"], "gpu");
    assert_eq!(rp["private"], true);
    assert_eq!(rp["resource_type"], "physical:host");
    assert!(rp["id"].is_string() && rp["created_at"].is_string() && rp["updated_at"].is_string());
    let r = app.get("/v1/os-hosts/properties").await.expect(200);
    assert_eq!(
        r.body,
        json!({"resource_properties": [{"property": "rack"}]}),
        "private ones are hidden"
    );
    let r = app
        .get("/v1/os-hosts/properties?all=True&detail=True")
        .await
        .expect(200);
    assert_eq!(
        r.body["resource_properties"][0]["private"], true,
        "and shown to admins with all"
    );
    // Properties are admin-only (upstream's default policy).
    app.raw(
        Method::GET,
        "/v1/os-hosts/properties?all=True",
        &[("x-roles", "member")],
        None,
    )
    .await
    .expect_error(403);
    for (path, body, status) in [
        (
            "/v1/os-hosts/properties/nope",
            json!({"private": true}),
            404,
        ),
        (
            "/v1/os-hosts/properties/gpu",
            json!({"private": "yes"}),
            400,
        ),
        ("/v1/os-hosts/properties/gpu", json!({}), 400),
        (
            "/v1/os-hosts/properties/gpu",
            json!({"property_name": "x"}),
            400,
        ),
    ] {
        app.patch(path, &body).await.expect_error(status);
    }
    // A property no host has any more is not listed (as upstream).
    app.put("/v1/os-hosts/1", &json!({"rack": null}))
        .await
        .expect(202);
    let r = app
        .get("/v1/os-hosts/properties?all=True")
        .await
        .expect(200);
    assert_eq!(
        r.body,
        json!({"resource_properties": [{"property": "gpu"}]})
    );
}
