//! Usage enforcement (upstream's `[enforcement]`): the longest lease, and an external service
//! that a real HTTP receiver in this process plays (allows, refuses, hangs, fails), checking
//! what it receives and that a refusal changes nothing.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use poem::{
    EndpointExt, IntoResponse, Request, Response, Route, handler,
    http::StatusCode,
    web::{Data, Json, Path},
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const TOO_LONG_2H: &str = "Lease duration of 7200 seconds must be less than or equal to the \
                           maximum lease duration of 3600 seconds.";

/// How the receiver answers checks.
#[derive(Clone)]
enum Mode {
    Allow,
    Deny(Value),
    Status(u16),
    Sleep(Duration),
    /// Renames the lease at this URL (a concurrent change), then allows.
    RenameThenAllow(String),
}

/// What the external service received: (endpoint, X-Auth-Token, body).
struct Receiver {
    mode: Mutex<Mode>,
    got: Mutex<Vec<(String, Option<String>, Value)>>,
    /// on-end requests to refuse (500) before accepting one.
    refuse_on_end: AtomicUsize,
    on_end_attempts: AtomicUsize,
}

impl Receiver {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn of(&self, endpoint: &str) -> Vec<(Option<String>, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _, _)| e == endpoint)
            .map(|(_, t, b)| (t.clone(), b.clone()))
            .collect()
    }
}

#[handler]
async fn service(
    req: &Request,
    Path(endpoint): Path<String>,
    state: Data<&Arc<Receiver>>,
    body: Json<Value>,
) -> Response {
    let token = req.header("x-auth-token").map(str::to_string);
    state
        .got
        .lock()
        .unwrap()
        .push((endpoint.clone(), token, body.0));
    if endpoint == "on-end" {
        state.on_end_attempts.fetch_add(1, Ordering::SeqCst);
        if state
            .refuse_on_end
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    let mode = state.mode.lock().unwrap().clone();
    match mode {
        Mode::Allow => StatusCode::NO_CONTENT.into_response(),
        Mode::Deny(v) => (StatusCode::FORBIDDEN, Json(v)).into_response(),
        Mode::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Mode::Sleep(d) => {
            tokio::time::sleep(d).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Mode::RenameThenAllow(url) => {
            let r = reqwest::Client::new()
                .put(&url)
                .json(&json!({"name": "raced"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

/// Starts the receiver; returns its base endpoint (`http://addr/api/`).
async fn receiver() -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver {
        mode: Mutex::new(Mode::Allow),
        got: Mutex::new(Vec::new()),
        refuse_on_end: AtomicUsize::new(0),
        on_end_attempts: AtomicUsize::new(0),
    });
    let app = Route::new()
        .at("/api/:endpoint", poem::post(service))
        .data(state.clone());
    (format!("{}/api/", serve(app).await), state)
}

fn external(base: String) -> impl FnOnce(&mut blazar_server::config::Settings) {
    move |s| {
        s.enforcement.enabled_filters = vec!["ExternalServiceFilter".into()];
        s.enforcement.external_service_base_endpoint = Some(base);
        s.enforcement.external_service_token = "T0ken".into();
        s.enforcement.external_service_timeout_seconds = 1;
        s.notifications.backoff_ms = 10;
        s.notifications.max_attempts = 3;
    }
}

fn max_duration(s: &mut blazar_server::config::Settings) {
    s.enforcement.enabled_filters = vec!["MaxLeaseDurationFilter".into()];
    s.enforcement.max_lease_duration = 3600;
    s.enforcement.max_lease_duration_exempt_project_ids = vec!["P1".into()];
}

fn as_project(project: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("x-project-id", project),
        ("x-user-id", "u1"),
        ("x-roles", "member"),
        ("content-type", "application/json"),
    ]
}

async fn lease_id(app: &TestApp, start: &str, end: &str) -> String {
    let r = app.lease("l", start, end, 1, 1, "").await.expect(202);
    r.body["lease"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn max_duration_refuses_long_creates_with_upstreams_message_and_exempts_projects() {
    crate::skip_if_no_database!();
    let app = spawn_with(max_duration).await;
    app.host("c1", json!({})).await;
    let before = app.dump().await;
    let r = app
        .lease("long", "2030-01-01 13:00", "2030-01-01 15:00", 1, 1, "")
        .await;
    assert_eq!(r.body["error_name"], "MaxLeaseDurationException");
    let msg = r.expect_error(400);
    assert!(msg.starts_with(TOO_LONG_2H), "{msg}");
    assert_eq!(app.dump().await, before, "a refused create stores nothing");
    // Exactly the limit passes, as upstream (`>` refuses).
    lease_id(&app, "2030-01-01 13:00", "2030-01-01 14:00").await;
    // An exempt project may have longer leases; another may not.
    let body = lease_body("p1", "2030-01-02 13:00", "2030-01-02 20:00", 1, 1, "");
    app.raw(
        Method::POST,
        "/v1/leases",
        &as_project("P1"),
        Some(body.to_string().into_bytes()),
    )
    .await
    .expect(202);
    let r = app
        .raw(
            Method::POST,
            "/v1/leases",
            &as_project("P2"),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert!(
        r.expect_error(400)
            .starts_with("Lease duration of 25200 seconds")
    );
}

#[tokio::test]
async fn max_duration_is_checked_on_every_update_that_moves_a_date() {
    crate::skip_if_no_database!();
    let app = spawn_with(max_duration).await;
    app.host("c1", json!({})).await;
    let id = lease_id(&app, "2030-01-01 13:00", "2030-01-01 14:00").await;
    let path = format!("/v1/leases/{id}");
    let shown = app.get(&path).await.expect(200).text;
    let before = app.dump().await;
    for (what, body) in [
        ("prolong", json!({"end_date": "2030-01-01 15:00"})),
        ("earlier start", json!({"start_date": "2030-01-01 12:30"})),
        (
            "defer and stretch",
            json!({"start_date": "2030-01-01 16:00", "end_date": "2030-01-01 18:00"}),
        ),
    ] {
        let r = app.put(&path, &body).await;
        assert_eq!(r.body["error_name"], "MaxLeaseDurationException", "{what}");
        let msg = r.expect_error(400);
        assert!(msg.starts_with("Lease duration of "), "{what}: {msg}");
        assert!(
            msg.contains(
                "must be less than or equal to the maximum lease duration of 3600 seconds."
            ),
            "{what}: {msg}"
        );
        assert_eq!(app.get(&path).await.expect(200).text, shown, "{what}");
        assert_eq!(app.dump().await, before, "{what}");
    }
    // A defer that keeps the hour, a shorter end, and a rename pass.
    app.put(
        &path,
        &json!({"start_date": "2030-01-01 16:00", "end_date": "2030-01-01 17:00"}),
    )
    .await
    .expect(202);
    app.put(&path, &json!({"end_date": "2030-01-01 16:30"}))
        .await
        .expect(202);
    app.put(&path, &json!({"name": "renamed"}))
        .await
        .expect(202);
}

#[tokio::test]
async fn the_external_service_gets_upstreams_bodies_with_the_hosts_and_the_token() {
    crate::skip_if_no_database!();
    let (base, rx) = receiver().await;
    let app = spawn_with(external(base)).await;
    app.host("c1", json!({"gpu": "a100"})).await;
    app.host("c2", json!({})).await;
    let id = lease_id(&app, "2030-01-01 13:00", "2030-01-01 14:00").await;
    let held = app.hosts_of(&id).await;
    let create = rx.of("check-create");
    assert_eq!(create.len(), 1);
    let (token, body) = &create[0];
    assert_eq!(token.as_deref(), Some("T0ken"));
    assert_eq!(
        body["context"],
        json!({"user_id": "admin", "project_id": "default", "auth_url": null, "region_name": null})
    );
    let lease = &body["lease"];
    assert_eq!(lease["name"], "l");
    assert_eq!(lease["start_date"], "2030-01-01T13:00:00");
    assert_eq!(lease["end_date"], "2030-01-01T14:00:00");
    assert_eq!(lease["project_id"], "default");
    assert_eq!(lease["user_id"], "admin");
    assert_eq!(lease["status"], "CREATING");
    let res = &lease["reservations"][0];
    assert_eq!(res["resource_type"], "physical:host");
    assert_eq!(
        (res["min"].clone(), res["max"].clone()),
        (json!(1), json!(1))
    );
    let allocs = res["allocations"].as_array().unwrap();
    assert_eq!(allocs.len(), 1);
    // No race here: the candidate checked is the host stored.
    assert_eq!(allocs[0]["id"], held[0].as_str());
    assert!(
        allocs[0]["hypervisor_hostname"]
            .as_str()
            .unwrap()
            .starts_with('c')
    );
    assert!(allocs[0]["vcpus"].is_i64());

    // An update carries the current lease (with its hosts) and the lease as it would be.
    let path = format!("/v1/leases/{id}");
    app.put(&path, &json!({"end_date": "2030-01-01 15:00"}))
        .await
        .expect(202);
    let update = rx.of("check-update");
    assert_eq!(update.len(), 1);
    let (token, body) = &update[0];
    assert_eq!(token.as_deref(), Some("T0ken"));
    assert_eq!(body["context"]["project_id"], "default");
    let current = &body["current_lease"];
    assert_eq!(current["id"], id.as_str());
    assert_eq!(current["end_date"], "2030-01-01T14:00:00");
    assert_eq!(current["status"], "PENDING");
    assert_eq!(
        current["reservations"][0]["allocations"][0]["id"],
        held[0].as_str()
    );
    assert_eq!(current["events"].as_array().unwrap().len(), 3);
    let next = &body["lease"];
    assert_eq!(next["id"], id.as_str());
    assert_eq!(next["start_date"], "2030-01-01T13:00:00");
    assert_eq!(next["end_date"], "2030-01-01T15:00:00");
    assert_eq!(
        next["reservations"][0]["allocations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A rename asks nothing (as upstream).
    app.put(&path, &json!({"name": "n2"})).await.expect(202);
    assert_eq!(rx.of("check-update").len(), 1);
}

#[tokio::test]
async fn a_denial_is_400_with_the_services_message_and_changes_nothing() {
    crate::skip_if_no_database!();
    let (base, rx) = receiver().await;
    let app = spawn_with(external(base)).await;
    app.host("c1", json!({})).await;
    rx.set(Mode::Deny(
        json!({"message": "Project default is out of SUs."}),
    ));
    let before = app.dump().await;
    let r = app
        .lease("l", "2030-01-01 13:00", "2030-01-01 14:00", 1, 1, "")
        .await;
    assert_eq!(r.body["error_name"], "ExternalServiceFilterException");
    assert_eq!(r.expect_error(400), "Project default is out of SUs.");
    assert_eq!(
        app.get("/v1/leases").await.expect(200).body["leases"],
        json!([])
    );
    assert_eq!(app.dump().await, before);

    // A 403 without a message gets upstream's generic text.
    rx.set(Mode::Deny(json!({"reason": "no"})));
    let r = app
        .lease("l", "2030-01-01 13:00", "2030-01-01 14:00", 1, 1, "")
        .await;
    assert_eq!(
        r.expect_error(400),
        "External service enforcement filter denied the request."
    );

    // A refused update leaves the lease byte for byte as it was (never ERROR).
    rx.set(Mode::Allow);
    let id = lease_id(&app, "2030-01-01 13:00", "2030-01-01 14:00").await;
    let path = format!("/v1/leases/{id}");
    let shown = app.get(&path).await.expect(200).text;
    let before = app.dump().await;
    rx.set(Mode::Deny(json!({"message": "No prolonging."})));
    let r = app
        .put(&path, &json!({"end_date": "2030-01-01 16:00"}))
        .await;
    assert_eq!(r.expect_error(400), "No prolonging.");
    assert_eq!(app.get(&path).await.expect(200).text, shown);
    assert_eq!(app.dump().await, before);
}

#[tokio::test]
async fn no_answer_in_time_or_another_status_refuses_fail_closed() {
    crate::skip_if_no_database!();
    let (base, rx) = receiver().await;
    let app = spawn_with(external(base)).await;
    app.host("c1", json!({})).await;
    let before = app.dump().await;
    for mode in [
        Mode::Sleep(Duration::from_secs(3)),
        Mode::Status(500),
        Mode::Status(200),
    ] {
        rx.set(mode);
        let started = std::time::Instant::now();
        let r = app
            .lease("l", "2030-01-01 13:00", "2030-01-01 14:00", 1, 1, "")
            .await;
        let msg = r.expect_error(400);
        assert!(
            msg.starts_with("External service enforcement filter denied the request.")
                && msg.contains("could not be reached"),
            "{msg}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "the timeout is 1 s"
        );
        assert_eq!(app.dump().await, before);
    }
    // The same for an update, which leaves the lease as it was.
    rx.set(Mode::Allow);
    let id = lease_id(&app, "2030-01-01 13:00", "2030-01-01 14:00").await;
    let path = format!("/v1/leases/{id}");
    let shown = app.get(&path).await.expect(200).text;
    rx.set(Mode::Sleep(Duration::from_secs(3)));
    let msg = app
        .put(&path, &json!({"end_date": "2030-01-01 15:00"}))
        .await
        .expect_error(400);
    assert!(msg.contains("could not be reached"), "{msg}");
    assert_eq!(app.get(&path).await.expect(200).text, shown);
}

#[tokio::test]
async fn on_end_is_posted_after_the_end_event_and_retried() {
    crate::skip_if_no_database!();
    let (base, rx) = receiver().await;
    let app = spawn_manual(external(base)).await;
    rx.refuse_on_end.store(1, Ordering::SeqCst);
    app.host("c1", json!({})).await;
    let id = lease_id(&app, "2030-01-01 13:00", "2030-01-01 15:00").await;
    let at = |h| {
        chrono::NaiveDate::from_ymd_opt(2030, 1, 1)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
    };
    app.clock().set(at(13));
    assert_eq!(app.run_due().await.done, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.of("on-end").is_empty(), "nothing before the end");
    app.clock().set(at(15));
    // The end is done at once: the receiver's first refusal does not hold it up.
    let report = app.run_due().await;
    assert_eq!((report.done, report.failed), (2, 0));
    let shown = app.get(&format!("/v1/leases/{id}")).await.expect(200).body;
    assert_eq!(shown["lease"]["status"], "TERMINATED");
    let mut got = Vec::new();
    for _ in 0..200 {
        got = rx.of("on-end");
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(got.len(), 2, "refused once, then delivered");
    assert_eq!(rx.on_end_attempts.load(Ordering::SeqCst), 2);
    let (token, body) = &got[1];
    assert_eq!(token.as_deref(), Some("T0ken"));
    assert_eq!(body["context"]["project_id"], "default");
    assert_eq!(body["lease"]["id"], id.as_str());
    assert_eq!(body["lease"]["end_date"], "2030-01-01T15:00:00");
    // The lease as the end event read it, as upstream's end_lease passes it.
    assert_eq!(body["lease"]["status"], "TERMINATING");
    assert_eq!(
        body["lease"]["reservations"][0]["allocations"][0]["hypervisor_hostname"],
        "c1"
    );
    assert_eq!(got[0].1, got[1].1, "a retry sends the same body");
}

#[tokio::test]
async fn unknown_filter_names_are_start_up_errors() {
    crate::skip_if_no_database!();
    let mut s = blazar_server::config::Settings::default();
    s.enforcement.enabled_filters = vec!["MaxLeaseDurationFilter".into(), "QuotaFilter".into()];
    let err = s.validate().unwrap_err().to_string();
    assert!(
        err.contains("enabled_filters") && err.contains("QuotaFilter"),
        "{err}"
    );
    s.enforcement.enabled_filters = vec!["ExternalServiceFilter".into()];
    let err = s.validate().unwrap_err().to_string();
    assert!(err.contains("no endpoints"), "{err}");
}

#[tokio::test]
async fn an_update_whose_lease_changed_while_it_was_checked_is_refused() {
    crate::skip_if_no_database!();
    let (base, rx) = receiver().await;
    let app = spawn_with(external(base)).await;
    app.host("c1", json!({})).await;
    let id = lease_id(&app, "2030-01-01 13:00", "2030-01-01 14:00").await;
    let path = format!("/v1/leases/{id}");
    // While the service judges the prolonging, another request renames the lease.
    rx.set(Mode::RenameThenAllow(format!("{}{path}", app.base)));
    let msg = app
        .put(&path, &json!({"end_date": "2030-01-01 15:00"}))
        .await
        .expect_error(409);
    assert!(
        msg.contains("changed while the enforcement service was asked"),
        "{msg}"
    );
    let shown = app.get(&path).await.expect(200).body;
    assert_eq!(shown["lease"]["name"], "raced");
    assert_eq!(shown["lease"]["end_date"], "2030-01-01T14:00:00.000000");
}

#[tokio::test]
async fn deleting_a_lease_that_has_not_ended_sends_on_end() {
    crate::skip_if_no_database!();
    let (base, rx) = receiver().await;
    let app = spawn_manual(external(base)).await;
    app.host("c1", json!({})).await;
    let id = lease_id(&app, "2030-01-01 13:00", "2030-01-01 14:00").await;
    app.delete(&format!("/v1/leases/{id}")).await.expect(204);
    let mut got = Vec::new();
    for _ in 0..200 {
        got = rx.of("on-end");
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["lease"]["id"], id.as_str());
    assert_eq!(
        got[0].1["lease"]["reservations"][0]["allocations"][0]["hypervisor_hostname"],
        "c1"
    );
}
