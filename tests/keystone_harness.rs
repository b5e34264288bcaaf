//! Proves the test Keystone (tests/keystone/harness.py, driven by tests/support/keystone.rs) is
//! the real thing our Keystone auth mode will talk to: seeded users get project-scoped tokens,
//! the service account validates them with GET /v3/auth/tokens (project, user, implied roles),
//! revoked, garbage and expired tokens are 404, and clients find our server in the catalog.

#[path = "support/keystone.rs"]
mod keystone;
#[path = "support/mod.rs"]
mod support;

use std::{collections::BTreeSet, process::Command, time::Duration};

use chrono::Utc;
use keystone::{Keystone, password};
use serde_json::Value;
use support::{run, spawn_live};

/// The token our server will hold: the `blazar` service user's, scoped to project `service`.
async fn service_token(ks: &Keystone) -> String {
    ks.password_token("blazar", &password("blazar"), "service")
        .await
}

fn role_names(token: &Value) -> BTreeSet<String> {
    token["token"]["roles"]
        .as_array()
        .unwrap_or_else(|| panic!("no roles in {token}"))
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_user_validates_user_tokens_with_project_user_and_implied_roles() {
    let ks = keystone::shared().await;
    let service = service_token(&ks).await;
    let cases = [
        ("alice", "alpha", set(&["member", "reader"])),
        ("bob", "beta", set(&["member", "reader"])),
        (
            "carol",
            "alpha",
            set(&["admin", "manager", "member", "reader"]),
        ),
        ("dave", "alpha", set(&["reader"])),
        (
            "blazar",
            "service",
            set(&["admin", "manager", "member", "reader"]),
        ),
    ];
    for (user, project, roles) in cases {
        let token = ks.password_token(user, &password(user), project).await;
        let (status, body) = ks.validate(&service, &token).await;
        assert_eq!(status, 200, "validating {user}'s token: {body}");
        let t = &body["token"];
        assert_eq!(t["user"]["id"], ks.user_id(user), "{user}: {body}");
        assert_eq!(t["user"]["name"], user);
        assert_eq!(t["user"]["domain"]["id"], "default");
        assert_eq!(t["project"]["id"], ks.project_id(project), "{user}: {body}");
        assert_eq!(t["project"]["name"], project);
        assert_eq!(t["project"]["domain"]["id"], "default");
        assert_eq!(role_names(&body), roles, "roles of {user} on {project}");
        let expires = chrono::DateTime::parse_from_rfc3339(t["expires_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc);
        assert!(
            expires > Utc::now() + chrono::Duration::minutes(50),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_refuses_wrong_passwords_and_foreign_projects() {
    let ks = keystone::shared().await;
    let wrong = ks.try_password_token("alice", "nope", "alpha").await;
    assert_eq!(wrong.err().map(|e| e.0), Some(401), "wrong password");
    // bob has no role on alpha, so he cannot scope a token to it.
    let foreign = ks
        .try_password_token("bob", &password("bob"), "alpha")
        .await;
    assert_eq!(foreign.err().map(|e| e.0), Some(401), "bob on alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_not_found() {
    let ks = keystone::shared().await;
    let service = service_token(&ks).await;
    let token = ks
        .password_token("alice", &password("alice"), "alpha")
        .await;
    assert_eq!(ks.validate(&service, &token).await.0, 200);
    ks.revoke(&token).await;
    let (status, body) = ks.validate(&service, &token).await;
    assert_eq!(status, 404, "a revoked token: {body}");
    // Revoking one token leaves the user's other tokens alone.
    let other = ks
        .password_token("alice", &password("alice"), "alpha")
        .await;
    assert_eq!(ks.validate(&service, &other).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_token_is_not_found() {
    let ks = keystone::shared().await;
    let service = service_token(&ks).await;
    let real = ks
        .password_token("alice", &password("alice"), "alpha")
        .await;
    // A fernet-looking token with one character changed, and plain junk.
    let mut tampered = real.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    for garbage in [String::from_utf8(tampered).unwrap(), "not-a-token".into()] {
        let (status, body) = ks.validate(&service, &garbage).await;
        assert_eq!(status, 404, "token {garbage}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_not_found() {
    let ks = keystone::shared().await;
    let service = service_token(&ks).await;
    let short = ks
        .short_lived_token("alice", &password("alice"), "alpha", Duration::from_secs(3))
        .await;
    let left = short.expires_at - Utc::now();
    assert!(
        left > chrono::Duration::milliseconds(500) && left <= chrono::Duration::seconds(3),
        "the token expires in {left}"
    );
    let (status, body) = ks.validate(&service, &short.token).await;
    assert_eq!(status, 200, "before expiry: {body}");
    assert_eq!(body["token"]["project"]["id"], ks.project_id("alpha"));
    assert_eq!(role_names(&body), set(&["member", "reader"]));
    // Keystone compares with its own clock, which is ours: a little past expires_at is enough.
    let wait = short.expires_at - Utc::now() + chrono::Duration::milliseconds(300);
    tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
    let (status, body) = ks.validate(&service, &short.token).await;
    assert_eq!(status, 404, "after expiry: {body}");
}

/// One test moves the shared catalog, so nothing else races on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_find_our_server_in_the_catalog() {
    let ks = keystone::shared().await;
    let app = spawn_live(|_| {}).await;
    let url = format!("{}/v1", app.base);
    ks.set_reservation_endpoint("http://127.0.0.1:9/v1").await;
    ks.set_reservation_endpoint(&url).await; // moved, not duplicated

    // A new token's catalog has exactly one reservation service, at our URL on all interfaces.
    let (_, body) = ks
        .try_password_token("alice", &password("alice"), "alpha")
        .await
        .unwrap();
    let reservation: Vec<&Value> = body["token"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "reservation")
        .collect();
    assert_eq!(
        reservation.len(),
        1,
        "catalog: {}",
        body["token"]["catalog"]
    );
    assert_eq!(reservation[0]["name"], "blazar");
    let endpoints: BTreeSet<(String, String)> = reservation[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["region_id"], "RegionOne");
            (
                e["interface"].as_str().unwrap().to_string(),
                e["url"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ["admin", "internal", "public"]
        .iter()
        .map(|i| (i.to_string(), url.clone()))
        .collect();
    assert_eq!(endpoints, expected);

    // The same through python-openstackclient, and through the `blazar` CLI, which finds our
    // (noauth, for now) server from the catalog alone: no --os-endpoint anywhere.
    app.host("ks-host-1", serde_json::json!({"vcpus": 4})).await;
    let venv = ks.venv();
    let (auth, auth_url) = (ks.cli_auth_args("alice", "alpha"), ks.auth_url.clone());
    let want = url.clone();
    tokio::task::spawn_blocking(move || {
        let bin = venv.join("bin");
        let out = run(Command::new(bin.join("openstack"))
            .args(&auth)
            .args(["catalog", "list", "-f", "json"])
            .env_remove("OS_AUTH_TYPE")
            .env_remove("OS_ENDPOINT"));
        let catalog: Value = serde_json::from_slice(&out.stdout).unwrap();
        let entry = catalog
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Type"] == "reservation")
            .unwrap_or_else(|| panic!("no reservation service in {catalog}"));
        assert_eq!(entry["Name"], "blazar");
        let urls: BTreeSet<&str> = entry["Endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls, BTreeSet::from([want.as_str()]), "{catalog}");

        // The script a Keystone-mode test will run (with --expect-project-id): against today's
        // noauth server its whole lease round trip already goes through Keystone and the catalog;
        // only the lease's project (noauth's default) tells the two modes apart.
        let out = run(Command::new(bin.join("python"))
            .arg(keystone::BLAZAR_SCRIPT)
            .args(["--auth-url", &auth_url, "--username", "alice"])
            .args(["--password", &password("alice"), "--project-name", "alpha"]));
        let text = String::from_utf8(out.stdout).unwrap();
        let done: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(done["lease_id"].is_string(), "{done}");
        assert_eq!(done["commands"], 6, "{done}");
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
}
