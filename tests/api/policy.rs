//! Project isolation and admin-only hosts in noauth mode (identity from headers), and policy files.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

fn who(project: &'static str, roles: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("x-project-id", project),
        ("x-user-id", project),
        ("x-roles", roles),
        ("content-type", "application/json"),
    ]
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    as_: [(&str, &str); 4],
    body: Option<Value>,
) -> Resp {
    app.raw(method, path, &as_, body.map(|b| b.to_string().into_bytes()))
        .await
}

#[tokio::test]
async fn projects_cannot_see_change_or_delete_each_others_leases() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({})).await;
    let alice = who("alpha", "member,reader");
    let bob = who("beta", "member,reader");
    let body = lease_body("a", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "");
    let r = call(&app, Method::POST, "/v1/leases", alice, Some(body))
        .await
        .expect(202);
    let id = r.body["lease"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["lease"]["project_id"], "alpha");
    let path = format!("/v1/leases/{id}");

    // Bob: not found, whatever he tries; his list is empty.
    call(&app, Method::GET, &path, bob, None)
        .await
        .expect_error(404);
    call(&app, Method::PUT, &path, bob, Some(json!({"name": "mine"})))
        .await
        .expect_error(404);
    call(&app, Method::DELETE, &path, bob, None)
        .await
        .expect_error(404);
    let list = call(&app, Method::GET, "/v1/leases", bob, None)
        .await
        .expect(200);
    assert_eq!(list.body["leases"], json!([]));
    call(&app, Method::GET, "/v1/leases?project_id=alpha", bob, None)
        .await
        .expect_error(403);
    // Moving a lease between projects is refused for everyone (the body is checked before the
    // lease is looked up, so the answer says nothing about alice's lease).
    call(
        &app,
        Method::PUT,
        &path,
        bob,
        Some(json!({"project_id": "beta"})),
    )
    .await
    .expect_error(400);
    call(
        &app,
        Method::PUT,
        &path,
        alice,
        Some(json!({"project_id": "beta"})),
    )
    .await
    .expect_error(400);

    // Alice sees and changes hers.
    let list = call(&app, Method::GET, "/v1/leases", alice, None)
        .await
        .expect(200);
    assert_eq!(list.body["leases"].as_array().unwrap().len(), 1);
    call(
        &app,
        Method::PUT,
        &path,
        alice,
        Some(json!({"name": "renamed"})),
    )
    .await
    .expect(202);

    // A reader of alpha reads but does not write.
    let dave = who("alpha", "reader");
    call(&app, Method::GET, &path, dave, None).await.expect(200);
    let r = call(&app, Method::PUT, &path, dave, Some(json!({"name": "x"}))).await;
    assert_eq!(r.body["error_name"], "PolicyNotAuthorized");
    r.expect_error(403);
    call(&app, Method::DELETE, &path, dave, None)
        .await
        .expect_error(403);
    call(
        &app,
        Method::POST,
        "/v1/leases",
        dave,
        Some(lease_body(
            "d",
            "2030-02-05 00:00",
            "2030-02-06 00:00",
            1,
            1,
            "",
        )),
    )
    .await
    .expect_error(403);

    // The admin sees every project's leases, or one project's.
    let admin = who("ops", "admin");
    let all = call(&app, Method::GET, "/v1/leases", admin, None)
        .await
        .expect(200);
    assert_eq!(all.body["leases"].as_array().unwrap().len(), 1);
    let none = call(&app, Method::GET, "/v1/leases?project_id=beta", admin, None)
        .await
        .expect(200);
    assert_eq!(none.body["leases"], json!([]));
    call(&app, Method::GET, &path, admin, None)
        .await
        .expect(200);

    call(&app, Method::DELETE, &path, alice, None)
        .await
        .expect(204);
}

#[tokio::test]
async fn members_cannot_manage_hosts() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    app.host("c1", json!({"gpu": "true"})).await;
    let alice = who("alpha", "member,reader");
    for (method, path, body) in [
        (Method::GET, "/v1/os-hosts", None),
        (Method::POST, "/v1/os-hosts", Some(json!({"name": "c2"}))),
        (Method::GET, "/v1/os-hosts/1", None),
        (Method::PUT, "/v1/os-hosts/1", Some(json!({"gpu": "false"}))),
        (Method::DELETE, "/v1/os-hosts/1", None),
        (Method::GET, "/v1/os-hosts/allocations", None),
        (Method::GET, "/v1/os-hosts/1/allocation", None),
        (Method::GET, "/v1/os-hosts/properties", None),
        (
            Method::PATCH,
            "/v1/os-hosts/properties/gpu",
            Some(json!({"private": true})),
        ),
    ] {
        let r = call(&app, method.clone(), path, alice, body).await;
        assert_eq!(
            r.body["error_name"], "PolicyNotAuthorized",
            "{method} {path}"
        );
        r.expect_error(403);
    }
    // Nothing changed, and the admin can do it all.
    let admin = who("ops", "admin");
    let h = call(&app, Method::GET, "/v1/os-hosts/1", admin, None)
        .await
        .expect(200);
    assert_eq!(h.body["host"]["gpu"], "true");
    call(
        &app,
        Method::POST,
        "/v1/os-hosts",
        admin,
        Some(json!({"name": "c2"})),
    )
    .await
    .expect(202);
    call(&app, Method::DELETE, "/v1/os-hosts/2", admin, None)
        .await
        .expect(204);
    // Plugins are open to every caller.
    call(&app, Method::GET, "/v1/plugins", alice, None)
        .await
        .expect(200);
}

#[tokio::test]
async fn a_policy_file_overrides_the_defaults() {
    crate::skip_if_no_database!();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        "# operators may enrol hosts\n\"blazar:oshosts:post\": \"role:operator or rule:admin\"\n\"blazar:oshosts:get\": \"role:operator or rule:admin\"\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let app = spawn_with(|s| s.oslo_policy.policy_file = Some(path)).await;
    let op = who("ops", "operator");
    call(
        &app,
        Method::POST,
        "/v1/os-hosts",
        op,
        Some(json!({"name": "c1"})),
    )
    .await
    .expect(202);
    call(&app, Method::DELETE, "/v1/os-hosts/1", op, None)
        .await
        .expect_error(403);
}

#[tokio::test]
async fn a_bad_policy_file_stops_the_server_with_a_clear_message() {
    crate::skip_if_no_database!();
    use blazar_server::{app::Application, clock::SystemClock, config::Settings};
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "\"blazar:leases:get\": \"role:reader and (\"\n",
            "blazar:leases:get",
        ),
        ("\"blazar:leases:get\": \"rule:nowhere\"\n", "rule:nowhere"),
        ("- just\n- a list\n", "mapping"),
    ] {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, text).unwrap();
        let mut settings = Settings::default();
        settings.api.bind = "127.0.0.1:0".into();
        settings.database.connection =
            format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
        settings.oslo_policy.policy_file = Some(file.display().to_string());
        let err = Application::build(settings, std::sync::Arc::new(SystemClock))
            .await
            .err()
            .expect("a bad policy file must stop the server")
            .to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}
