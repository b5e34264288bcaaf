//! Proves the test Nova (tests/nova/harness.py, driven by tests/support/nova.rs) is the real
//! thing our Nova driver will talk to: fake-driver hypervisors with the facts Blazar records,
//! blazar-nova's BlazarFilter deciding where servers land (freepool, reservation aggregates,
//! owners, hints), servers listed per host and deleted, services disabled and enabled, the API
//! going down and coming back, Nova's own request log, and a Keystone-authenticated API. The
//! tests share one Nova and take turns ([`nova::exclusive`]).

#[path = "support/keystone.rs"]
mod keystone;
#[path = "support/nova.rs"]
mod nova;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;

use nova::Nova;
use reqwest::Method;
use serde_json::{Value, json};

fn names(values: &[Value], key: &str) -> BTreeSet<String> {
    values
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn create_aggregate(nova: &Nova, name: &str, az: Option<&str>) -> Value {
    nova.admin(
        Method::POST,
        "/os-aggregates",
        Some(json!({"aggregate": {"name": name, "availability_zone": az}})),
    )
    .await["aggregate"]
        .clone()
}

async fn action(nova: &Nova, aggregate: &Value, body: Value) -> (u16, Value) {
    nova.request(
        Method::POST,
        &format!("/os-aggregates/{}/action", aggregate["id"]),
        Some(body),
        &nova.admin_token,
    )
    .await
}

#[track_caller]
fn assert_no_valid_host(server: &Value, what: &str) {
    assert_eq!(server["status"], "ERROR", "{what}: {server}");
    let fault = server["fault"]["message"].as_str().unwrap_or_default();
    assert!(fault.contains("No valid host"), "{what}: fault {fault:?}");
}

#[track_caller]
fn assert_active_on(server: &Value, host: &str, what: &str) {
    assert_eq!(server["status"], "ACTIVE", "{what}: {server}");
    assert_eq!(server["OS-EXT-SRV-ATTR:host"], host, "{what}: {server}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypervisors_services_placement_and_glance_are_real() {
    let nova = nova::shared().await;
    let _turn = nova::exclusive().await;
    nova.reset().await;
    let hosts: BTreeSet<String> = nova.hosts.iter().cloned().collect();
    assert_eq!(hosts.len(), nova.hosts.len());
    assert!(nova.hosts.iter().all(|h| h.starts_with("compute-")));

    // What Blazar records at enrolment, below microversion 2.88.
    let body = nova
        .request_at(
            "2.53",
            Method::GET,
            "/os-hypervisors/detail",
            None,
            &nova.admin_token,
        )
        .await
        .1;
    let hypervisors = body["hypervisors"].as_array().unwrap();
    assert_eq!(names(hypervisors, "hypervisor_hostname"), hosts, "{body}");
    for h in hypervisors {
        assert_eq!(h["vcpus"], 1000, "{h}");
        assert_eq!(h["memory_mb"], 800000, "{h}");
        assert_eq!(h["local_gb"], 600000, "{h}");
        assert_eq!(h["hypervisor_type"], "fake", "{h}");
        assert_eq!(h["state"], "up", "{h}");
        assert_eq!(h["status"], "enabled", "{h}");
        assert_eq!(h["service"]["host"], h["hypervisor_hostname"], "{h}");
        assert!(h["cpu_info"].is_object(), "an object from 2.28: {h}");
        assert!(
            h["id"].as_str().is_some_and(|id| id.len() == 36),
            "UUID ids from 2.53: {h}"
        );
    }
    // ... and gone from 2.88 on.
    let body = nova
        .request_at(
            "2.88",
            Method::GET,
            "/os-hypervisors/detail",
            None,
            &nova.admin_token,
        )
        .await
        .1;
    for h in body["hypervisors"].as_array().unwrap() {
        for key in ["vcpus", "memory_mb", "local_gb"] {
            assert!(h.get(key).is_none(), "{key} at 2.88: {h}");
        }
    }
    // Below 2.53 (upstream Blazar's novaclient asks for 2.0): integer ids, cpu_info a string,
    // and the by-name search Blazar uses.
    let (status, body) = nova
        .request_at(
            "2.1",
            Method::GET,
            "/os-hypervisors/detail",
            None,
            &nova.admin_token,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for h in body["hypervisors"].as_array().unwrap() {
        assert!(h["id"].is_i64(), "{h}");
        assert!(h["cpu_info"].is_string(), "{h}");
    }
    let (status, body) = nova
        .request_at(
            "2.1",
            Method::GET,
            &format!("/os-hypervisors/{}/search", nova.hosts[0]),
            None,
            &nova.admin_token,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["hypervisors"][0]["hypervisor_hostname"],
        nova.hosts[0].as_str(),
        "{body}"
    );

    // Every compute is a nova-compute service, up; placement has its resource provider.
    let services = nova
        .admin(Method::GET, "/os-services?binary=nova-compute", None)
        .await;
    let services = services["services"].as_array().unwrap();
    assert_eq!(names(services, "host"), hosts);
    assert!(services.iter().all(|s| s["state"] == "up"));
    let (status, body) = nova
        .placement(Method::GET, "/resource_providers", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let providers = body["resource_providers"].as_array().unwrap();
    assert_eq!(names(providers, "name"), hosts, "{body}");
    let uuid = providers[0]["uuid"].as_str().unwrap();
    let (_, inventories) = nova
        .placement(
            Method::GET,
            &format!("/resource_providers/{uuid}/inventories"),
            None,
        )
        .await;
    assert_eq!(
        inventories["inventories"]["VCPU"]["total"], 1000,
        "{inventories}"
    );

    // The image and flavor to boot with.
    let images = nova.images().await;
    let image = images
        .iter()
        .find(|i| i["id"] == nova.image_id.as_str())
        .unwrap_or_else(|| panic!("{} not in {images:?}", nova.image_id));
    assert_eq!(image["status"], "active");
    assert_eq!(image["visibility"], "community");
    let flavor = nova
        .admin(Method::GET, &format!("/flavors/{}", nova.flavor_id), None)
        .await;
    assert_eq!(flavor["flavor"]["vcpus"], 1, "{flavor}");

    // Isolation: the run's own database and vhost names carry its tag.
    assert_eq!(nova.databases.len(), 4);
    for (role, db) in &nova.databases {
        assert_eq!(db, &format!("nova_{}_{role}", nova.tag));
    }
    assert_eq!(nova.vhost, format!("nova_{}", nova.tag));
}

/// The host-reservation choreography of upstream Blazar, by hand, with the scheduler's
/// BlazarFilter deciding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blazar_filter_honours_freepool_reservations_owners_and_hints() {
    let nova = nova::shared().await;
    let _turn = nova::exclusive().await;
    nova.reset().await;
    let reserved = nova.hosts[0].clone();

    // Enrolment: every host in the freepool. Nothing without a reservation may land there.
    let freepool = create_aggregate(&nova, "freepool", None).await;
    for host in &nova.hosts {
        let (status, body) = action(&nova, &freepool, json!({"add_host": {"host": host}})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = action(&nova, &freepool, json!({"add_host": {"host": reserved}})).await;
    assert_eq!(status, 409, "adding a host twice");
    assert_no_valid_host(
        &nova.boot("proj1", None).await,
        "no hint, every host in freepool",
    );

    // Lease start: a reservation aggregate (AZ blazar_<id>, owner proj1) takes one host.
    let reservation = uuid::Uuid::new_v4().to_string();
    let aggregate =
        create_aggregate(&nova, &reservation, Some(&format!("blazar_{reservation}"))).await;
    let agg_actions = format!("\"POST /v2.1/os-aggregates/{}/action\"", aggregate["id"]);
    let before = nova.api_requests(&agg_actions).await;
    let (status, body) = action(
        &nova,
        &aggregate,
        json!({"set_metadata": {"metadata": {"blazar:owner": "proj1"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = action(&nova, &freepool, json!({"remove_host": {"host": reserved}})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = action(&nova, &aggregate, json!({"add_host": {"host": reserved}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["aggregate"]["hosts"], json!([reserved]));
    assert_eq!(
        nova.aggregate_by_name(&reservation).await.unwrap()["metadata"]["blazar:owner"],
        "proj1"
    );
    // Nova's own request log saw exactly the two actions on that aggregate, both 200.
    assert_eq!(nova.api_requests(&agg_actions).await - before, 2);
    assert!(
        nova.api_requests(&format!("{agg_actions} status: 200"))
            .await
            >= 2,
        "{}",
        nova.log_tail("nova-api", 10)
    );

    let owner = nova.boot("proj1", Some(&reservation)).await;
    assert_active_on(&owner, &reserved, "owner with the hint");
    assert_eq!(
        owner["OS-EXT-AZ:availability_zone"],
        format!("blazar_{reservation}")
    );
    assert_no_valid_host(
        &nova.boot("proj3", Some(&reservation)).await,
        "another project with the hint",
    );
    assert_no_valid_host(
        &nova.boot("proj1", None).await,
        "the owner without the hint",
    );
    // Blazar's add_project: a metadata key named after the project lets it in.
    let (status, _) = action(
        &nova,
        &aggregate,
        json!({"set_metadata": {"metadata": {"proj2": "blazar:project"}}}),
    )
    .await;
    assert_eq!(status, 200);
    let extra = nova.boot("proj2", Some(&reservation)).await;
    assert_active_on(&extra, &reserved, "an added project with the hint");

    // A host in no pool takes servers without a hint.
    if let Some(free) = nova.hosts.get(1) {
        let (status, _) = action(&nova, &freepool, json!({"remove_host": {"host": free}})).await;
        assert_eq!(status, 200);
        let plain = nova.boot("proj1", None).await;
        assert_active_on(&plain, free, "no hint, a host in no pool");
        nova.delete_server(plain["id"].as_str().unwrap()).await;
        nova.wait_servers_gone(free).await;
        let (status, _) = action(&nova, &freepool, json!({"add_host": {"host": free}})).await;
        assert_eq!(status, 200);
    }

    // Lease end: the servers on the host are listed (all projects) and deleted; only then may
    // the host leave the AZ aggregate.
    let on_host = nova.servers_on(&reserved).await;
    assert_eq!(
        names(&on_host, "id"),
        BTreeSet::from([
            owner["id"].as_str().unwrap().to_string(),
            extra["id"].as_str().unwrap().to_string()
        ])
    );
    let (status, body) = action(
        &nova,
        &aggregate,
        json!({"remove_host": {"host": reserved}}),
    )
    .await;
    assert_eq!(
        status, 409,
        "removing a host with servers from its AZ: {body}"
    );
    for server in &on_host {
        nova.delete_server(server["id"].as_str().unwrap()).await;
    }
    nova.wait_servers_gone(&reserved).await;
    let (status, body) = action(
        &nova,
        &aggregate,
        json!({"remove_host": {"host": reserved}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = action(&nova, &freepool, json!({"add_host": {"host": reserved}})).await;
    assert_eq!(status, 200);
    let (status, _) = nova
        .request(
            Method::DELETE,
            &format!("/os-aggregates/{}", aggregate["id"]),
            None,
            &nova.admin_token,
        )
        .await;
    assert_eq!(status, 200);
    assert!(nova.aggregate_by_name(&reservation).await.is_none());
    // The refused boots are in cell0, on no host.
    let servers = nova.servers().await;
    assert_eq!(
        servers.len(),
        3,
        "the three NoValidHost servers: {servers:?}"
    );
    assert!(servers.iter().all(|s| s["status"] == "ERROR"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_disabled_and_enabled() {
    let nova = nova::shared().await;
    let _turn = nova::exclusive().await;
    nova.reset().await;
    let host = nova.hosts[0].clone();
    let service = nova.set_service(&host, false).await;
    assert_eq!(service["status"], "disabled", "{service}");
    let state = nova.service_state(&host).await;
    assert_eq!(state["status"], "disabled");
    assert_eq!(state["disabled_reason"], "disabled by a test");
    assert_eq!(state["state"], "up");
    // What Blazar's polling monitor reads: the hypervisor is disabled too.
    let body = nova
        .admin(Method::GET, "/os-hypervisors/detail", None)
        .await;
    let hypervisor = body["hypervisors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hypervisor_hostname"] == host.as_str())
        .unwrap()
        .clone();
    assert_eq!(hypervisor["status"], "disabled", "{hypervisor}");
    // The scheduler skips it (no aggregates: every host takes ordinary servers).
    if nova.hosts.len() > 1 {
        for _ in 0..2 {
            let server = nova.boot("proj1", None).await;
            assert_eq!(server["status"], "ACTIVE", "{server}");
            assert_ne!(server["OS-EXT-SRV-ATTR:host"], host.as_str(), "{server}");
        }
    } else {
        assert_no_valid_host(&nova.boot("proj1", None).await, "the only host disabled");
    }
    let service = nova.set_service(&host, true).await;
    assert_eq!(service["status"], "enabled", "{service}");
    assert_eq!(nova.service_state(&host).await["status"], "enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_goes_down_and_comes_back_with_its_state() {
    let nova = nova::shared().await;
    let _turn = nova::exclusive().await;
    nova.reset().await;
    create_aggregate(&nova, "survives-restart", None).await;
    let before = nova.api_requests("\"GET /v2.1/os-aggregates\"").await;

    nova.stop_api().await;
    let refused = nova
        .try_request(
            nova::MICROVERSION,
            Method::GET,
            "/os-aggregates",
            None,
            &nova.admin_token,
        )
        .await
        .expect_err("the API is stopped");
    assert!(refused.is_connect(), "{refused:?}");

    nova.start_api().await;
    assert!(nova.aggregate_by_name("survives-restart").await.is_some());
    // The restarted API appends to the same request log.
    assert_eq!(
        nova.api_requests("\"GET /v2.1/os-aggregates\"").await,
        before + 1
    );
    let server = nova.boot("proj1", None).await;
    assert_eq!(server["status"], "ACTIVE", "{server}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_leaves_no_servers_no_aggregates_and_every_service_enabled() {
    let nova = nova::shared().await;
    let _turn = nova::exclusive().await;
    nova.reset().await;
    let host = nova.hosts[0].clone();
    let aggregate = create_aggregate(&nova, "reset-me", Some("blazar_reset-me")).await;
    let (status, _) = action(&nova, &aggregate, json!({"add_host": {"host": host}})).await;
    assert_eq!(status, 200);
    action(
        &nova,
        &aggregate,
        json!({"set_metadata": {"metadata": {"blazar:owner": "proj1"}}}),
    )
    .await;
    let placed = nova.boot("proj1", Some("reset-me")).await;
    assert_active_on(&placed, &host, "owner with the hint");
    assert_no_valid_host(
        &nova.boot("proj9", Some("reset-me")).await,
        "a stranger with the hint",
    );
    create_aggregate(&nova, "empty-one", None).await;
    if let Some(other) = nova.hosts.get(1) {
        nova.set_service(other, false).await;
    }

    nova.reset().await;
    assert!(nova.servers().await.is_empty());
    assert!(nova.aggregates().await.is_empty());
    for host in &nova.hosts {
        assert_eq!(nova.service_state(host).await["status"], "enabled");
        assert!(nova.servers_on(host).await.is_empty());
    }
}

/// The second nova-api, behind a real Keystone: the service account's token lists
/// hypervisors, a garbage token is 401, a member is 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_authenticated_api_takes_real_tokens() {
    let (nova, ks) = tokio::join!(nova::shared(), keystone::shared());
    let _turn = nova::exclusive().await;
    let url = nova
        .start_keystone_api(
            &ks.auth_url,
            "blazar",
            &keystone::password("blazar"),
            "service",
        )
        .await;
    assert_ne!(url, nova.compute_url);
    let get = |token: String| {
        let url = url.clone();
        async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let resp = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("{url}/os-hypervisors/detail"))
                .header("x-auth-token", token)
                .header("openstack-api-version", "compute 2.53")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let token = ks
        .password_token("blazar", &keystone::password("blazar"), "service")
        .await;
    let (status, body) = get(token).await;
    assert_eq!(
        status,
        200,
        "{body}\n{}",
        nova.log_tail("nova-api-keystone", 30)
    );
    let listed: BTreeSet<String> = names(
        body["hypervisors"].as_array().unwrap(),
        "hypervisor_hostname",
    );
    assert_eq!(listed, nova.hosts.iter().cloned().collect::<BTreeSet<_>>());
    let (status, body) = get("not-a-token".into()).await;
    assert_eq!(status, 401, "garbage token: {body}");
    let member = ks
        .password_token("alice", &keystone::password("alice"), "alpha")
        .await;
    let (status, body) = get(member).await;
    assert_eq!(status, 403, "a member listing hypervisors: {body}");
}
