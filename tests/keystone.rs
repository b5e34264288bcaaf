//! The server in keystone mode against a REAL Keystone (tests/support/keystone.rs starts one):
//! project isolation with real tokens, admin-only hosts, 401 for missing/bad/revoked/expired
//! tokens, identity from the token only, and python-blazarclient authenticating through Keystone.

#[path = "support/keystone.rs"]
mod keystone;
#[path = "support/mod.rs"]
mod support;

use std::{process::Command, time::Duration};

use keystone::{Keystone, password};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Resp, TestApp, lease_body, run, spawn_live};

async fn server(ks: &Keystone) -> TestApp {
    let url = ks.auth_url.clone();
    spawn_live(move |s| {
        s.api.auth_strategy = "keystone".into();
        s.keystone_authtoken.auth_url = Some(url);
        s.keystone_authtoken.username = "blazar".into();
        s.keystone_authtoken.password = Some(password("blazar").into());
        s.keystone_authtoken.project_name = "service".into();
    })
    .await
}

async fn as_token(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Resp {
    let mut headers = vec![("x-auth-token", token), ("accept", "application/json")];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    app.raw(
        method,
        path,
        &headers,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

async fn token(ks: &Keystone, user: &str, project: &str) -> String {
    ks.password_token(user, &password(user), project).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_isolated_with_real_tokens() {
    let ks = keystone::shared().await;
    let app = server(&ks).await;
    let (alice, bob, carol, dave) = (
        token(&ks, "alice", "alpha").await,
        token(&ks, "bob", "beta").await,
        token(&ks, "carol", "alpha").await,
        token(&ks, "dave", "alpha").await,
    );
    as_token(
        &app,
        &carol,
        Method::POST,
        "/v1/os-hosts",
        Some(json!({"name": "c1"})),
    )
    .await
    .expect(202);
    // Alice's identity comes from her token, whatever headers she sends.
    let r = app
        .raw(
            Method::POST,
            "/v1/leases",
            &[
                ("x-auth-token", &alice),
                ("content-type", "application/json"),
                ("x-project-id", "beta"),
                ("x-roles", "admin"),
            ],
            Some(
                lease_body("a", "2030-01-05 00:00", "2030-01-06 00:00", 1, 1, "")
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await
        .expect(202);
    let lease = &r.body["lease"];
    assert_eq!(lease["project_id"], ks.project_id("alpha"));
    assert_eq!(lease["user_id"], ks.user_id("alice"));
    let path = format!("/v1/leases/{}", lease["id"].as_str().unwrap());

    // Bob (another project) can neither see, change nor delete it.
    as_token(&app, &bob, Method::GET, &path, None)
        .await
        .expect_error(404);
    as_token(
        &app,
        &bob,
        Method::PUT,
        &path,
        Some(json!({"name": "mine"})),
    )
    .await
    .expect_error(404);
    as_token(&app, &bob, Method::DELETE, &path, None)
        .await
        .expect_error(404);
    let list = as_token(&app, &bob, Method::GET, "/v1/leases", None)
        .await
        .expect(200);
    assert_eq!(list.body["leases"], json!([]));
    // Dave (reader of alpha) reads but cannot change it.
    as_token(&app, &dave, Method::GET, &path, None)
        .await
        .expect(200);
    as_token(&app, &dave, Method::PUT, &path, Some(json!({"name": "x"})))
        .await
        .expect_error(403);
    // Carol (admin) sees everything; alice manages her own.
    let all = as_token(&app, &carol, Method::GET, "/v1/leases", None)
        .await
        .expect(200);
    assert_eq!(all.body["leases"].as_array().unwrap().len(), 1);
    as_token(
        &app,
        &alice,
        Method::PUT,
        &path,
        Some(json!({"name": "renamed"})),
    )
    .await
    .expect(202);
    as_token(&app, &alice, Method::DELETE, &path, None)
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_cannot_manage_hosts() {
    let ks = keystone::shared().await;
    let app = server(&ks).await;
    let alice = token(&ks, "alice", "alpha").await;
    for (method, path, body) in [
        (Method::GET, "/v1/os-hosts", None),
        (Method::POST, "/v1/os-hosts", Some(json!({"name": "c9"}))),
        (Method::GET, "/v1/os-hosts/allocations", None),
        (Method::GET, "/v1/os-hosts/properties", None),
    ] {
        as_token(&app, &alice, method, path, body)
            .await
            .expect_error(403);
    }
    let carol = token(&ks, "carol", "alpha").await;
    as_token(
        &app,
        &carol,
        Method::POST,
        "/v1/os-hosts",
        Some(json!({"name": "c9"})),
    )
    .await
    .expect(202);
    as_token(&app, &carol, Method::GET, "/v1/os-hosts", None)
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bad_revoked_and_expired_tokens_get_401() {
    let ks = keystone::shared().await;
    let app = server(&ks).await;
    let challenge = format!("Keystone uri=\"{}\"", ks.auth_url.trim_end_matches('/'));
    let check = |r: Resp| {
        assert_eq!(
            r.headers
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string()),
            Some(challenge.clone())
        );
        r.expect_error(401)
    };
    check(app.get("/v1/leases").await);
    check(as_token(&app, "garbage-token", Method::GET, "/v1/leases", None).await);
    let revoked = token(&ks, "alice", "alpha").await;
    ks.revoke(&revoked).await;
    let msg = check(as_token(&app, &revoked, Method::GET, "/v1/leases", None).await);
    assert!(msg.contains("invalid, expired or revoked"), "{msg}");
    // A token that worked stops working when it expires (the cache keeps it no longer).
    let short = ks
        .short_lived_token("alice", &password("alice"), "alpha", Duration::from_secs(3))
        .await;
    as_token(&app, &short.token, Method::GET, "/v1/leases", None)
        .await
        .expect(200);
    let wait = (short.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(300)).await;
    check(as_token(&app, &short.token, Method::GET, "/v1/leases", None).await);
    // Versions and probes need no token.
    app.get("/").await.expect(300);
    app.get("/healthz").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blazar_cli_authenticates_through_keystone() {
    let ks = keystone::shared().await;
    let app = server(&ks).await;
    let carol = token(&ks, "carol", "alpha").await;
    as_token(
        &app,
        &carol,
        Method::POST,
        "/v1/os-hosts",
        Some(json!({"name": "cli-host"})),
    )
    .await
    .expect(202);
    // The client finds us in the catalog, as in a real cloud.
    ks.set_reservation_endpoint(&format!("{}/v1", app.base))
        .await;
    let venv = ks.venv();
    let (auth_url, alpha) = (ks.auth_url.clone(), ks.project_id("alpha").to_string());
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new(venv.join("bin/python"))
            .arg(keystone::BLAZAR_SCRIPT)
            .args([
                "--auth-url",
                &auth_url,
                "--username",
                "alice",
                "--password",
                &password("alice"),
            ])
            .args(["--project-name", "alpha", "--expect-project-id", &alpha]))
    })
    .await
    .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(line.trim().lines().last().unwrap()).unwrap();
    assert_eq!(result["project_id"], ks.project_id("alpha"));
    println!("blazar CLI through Keystone: {line}");
}
