//! Capacity planning over HTTP: `POST /v1/leases/plan`, `GET /v1/os-hosts/availability`,
//! `GET /v1/os-hosts/calendar`, the explanation in create's 409, and a randomized check that
//! plan and availability agree with create and with a minute-by-minute search.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const GPU: &str = r#"["==", "$gpu", "true"]"#;

fn at(day: u32, h: u32, m: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2030, 1, day)
        .unwrap()
        .and_hms_opt(h, m, 0)
        .unwrap()
}

fn text(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn parse(t: &Value) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(t.as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f").unwrap()
}

/// `%`-encodes a query value.
fn q(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn as_member(
    app: &TestApp,
    method: Method,
    path: &str,
    project: &str,
    body: Option<&Value>,
) -> Resp {
    let mut headers = vec![("x-project-id", project), ("x-roles", "member")];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    app.raw(
        method,
        path,
        &headers,
        body.map(|b| serde_json::to_vec(b).unwrap()),
    )
    .await
}

/// Three GPU hosts and one without.
async fn gpu_hosts(app: &TestApp) {
    for i in 1..=3 {
        app.host(&format!("g{i}"), json!({"gpu": "true"})).await;
    }
    app.host("plain", json!({"gpu": "false"})).await;
}

#[tokio::test]
async fn a_plan_says_what_create_would_do_and_why_and_stores_nothing() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    gpu_hosts(&app).await;
    // Another project holds two GPU hosts until Jan 3 12:00.
    let big = as_member(
        &app,
        Method::POST,
        "/v1/leases",
        "other",
        Some(&lease_body(
            "big",
            "2030-01-02 10:00",
            "2030-01-03 12:00",
            2,
            2,
            GPU,
        )),
    )
    .await
    .expect(202);
    let big_id = big.body["lease"]["id"].as_str().unwrap().to_string();
    let before = app.dump().await;

    let two = lease_body("mine", "2030-01-02 12:00", "2030-01-02 18:00", 2, 3, GPU);
    let p = as_member(&app, Method::POST, "/v1/leases/plan", "me", Some(&two))
        .await
        .expect(200);
    let plan = &p.body["plan"];
    assert_eq!(plan["feasible"], false, "{plan}");
    assert_eq!(plan["earliest_start"], "2030-01-03T12:00:00.000000");
    let r = &plan["reservations"][0];
    assert_eq!(
        (
            r["min"].clone(),
            r["max"].clone(),
            r["matching"].clone(),
            r["reservable"].clone(),
            r["free"].clone()
        ),
        (json!(2), json!(3), json!(3), json!(3), json!(1))
    );
    assert!(r.get("hosts").is_none(), "host ids are for admins: {r}");
    assert_eq!(
        r["blocking"],
        json!([{"id": null, "name": null, "start_date": "2030-01-02T10:00:00.000000",
                "end_date": "2030-01-03T12:00:00.000000", "hosts": 2}]),
        "another project's lease, anonymous"
    );
    let why = r["why"].as_str().unwrap();
    assert_eq!(
        why,
        "2 of the 3 hosts matching [\"==\", \"$gpu\", \"true\"] are held by other leases until \
         2030-01-03T12:00:00.000000; 2 are needed; the earliest start that fits is \
         2030-01-03T12:00:00.000000"
    );
    assert_eq!(app.dump().await, before, "a plan stores nothing");

    // Create says the same, after upstream's words, and stores nothing.
    let e = app.post("/v1/leases", &two).await.expect_error(409);
    assert_eq!(e, format!("Not enough hosts available: {why}"));
    assert_eq!(app.dump().await, before);

    // An admin sees the lease and, for a lease that fits, the hosts create takes.
    let fits = lease_body("mine", "2030-01-03 12:00", "2030-01-03 18:00", 2, 3, GPU);
    let p = app.post("/v1/leases/plan", &fits).await.expect(200);
    let plan = &p.body["plan"];
    assert_eq!(plan["feasible"], true, "{plan}");
    assert_eq!(plan["earliest_start"], "2030-01-03T12:00:00.000000");
    let planned = plan["reservations"][0]["hosts"].clone();
    assert_eq!(planned.as_array().unwrap().len(), 3);
    assert_eq!(
        plan["reservations"][0]["blocking"],
        json!([]),
        "touching is free"
    );
    let created = app.post("/v1/leases", &fits).await.expect(202);
    let got = app
        .hosts_of(created.body["lease"]["id"].as_str().unwrap())
        .await;
    assert_eq!(json!(got), planned, "create takes the planned hosts");
    let p = app
        .post(
            "/v1/leases/plan",
            &lease_body("again", "2030-01-02 11:00", "2030-01-02 12:00", 1, 1, GPU),
        )
        .await
        .expect(200);
    assert_eq!(
        p.body["plan"]["reservations"][0]["blocking"][0]["id"],
        json!(big_id),
        "admins see every lease"
    );
    assert_eq!(
        p.body["plan"]["reservations"][0]["blocking"][0]["name"],
        "big"
    );

    // The same 400s as create.
    for (body, needle) in [
        (json!({"name": "x"}), "Missing parameter start_date"),
        (
            lease_body("x", "2030-01-02 12:00", "2030-01-02 11:00", 1, 1, ""),
            "End date must be later than start date",
        ),
        (
            lease_body("x", "2030-01-02 12:00", "2030-01-02 13:00", 1, 1, "[\"==\""),
            "resource_properties",
        ),
    ] {
        let e = app.post("/v1/leases/plan", &body).await.expect_error(400);
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[tokio::test]
async fn a_plan_explains_competing_reservations_and_impossible_ones() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    gpu_hosts(&app).await;
    // Two reservations that each fit alone but not together: 2 GPU + 2 any, 4 hosts, one of
    // which a lease holds until Jan 2 12:00.
    app.lease(
        "hold",
        "2030-01-02 08:00",
        "2030-01-02 12:00",
        1,
        1,
        r#"["==", "$gpu", "false"]"#,
    )
    .await
    .expect(202);
    let mut body = lease_body("two", "2030-01-02 09:00", "2030-01-02 10:00", 2, 2, GPU);
    body["reservations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"resource_type": "physical:host", "min": 2, "max": 2,
                     "hypervisor_properties": "", "resource_properties": ""}));
    let p = app.post("/v1/leases/plan", &body).await.expect(200);
    let plan = &p.body["plan"];
    assert_eq!(plan["feasible"], false, "{plan}");
    assert_eq!(
        plan["earliest_start"], "2030-01-02T12:00:00.000000",
        "together they fit once the held host is back"
    );
    let e = app.post("/v1/leases", &body).await.expect_error(409);
    assert!(
        e.starts_with("Not enough hosts available: reservation 1: "),
        "{e}"
    );
    assert!(
        e.ends_with(
            "the earliest start at which the whole lease fits is 2030-01-02T12:00:00.000000"
        ),
        "{e}"
    );
    // More than there are, ever.
    let p = app
        .post(
            "/v1/leases/plan",
            &lease_body("five", "2030-01-02 09:00", "2030-01-02 10:00", 5, 5, ""),
        )
        .await
        .expect(200);
    let r = &p.body["plan"]["reservations"][0];
    assert_eq!(r["earliest_start"], Value::Null);
    assert!(
        r["why"]
            .as_str()
            .unwrap()
            .ends_with("it cannot fit at any time"),
        "{r}"
    );
    let p = app
        .post(
            "/v1/leases/plan",
            &lease_body(
                "none",
                "2030-01-02 09:00",
                "2030-01-02 10:00",
                1,
                1,
                r#"["==", "$gpu", "maybe"]"#,
            ),
        )
        .await
        .expect(200);
    assert!(
        p.body["plan"]["reservations"][0]["why"]
            .as_str()
            .unwrap()
            .starts_with("No host matches"),
        "{}",
        p.text
    );
}

#[tokio::test]
async fn availability_finds_the_earliest_windows_exactly() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    gpu_hosts(&app).await;
    app.lease("big", "2030-01-02 10:00", "2030-01-03 12:00", 2, 2, GPU)
        .await
        .expect(202);
    let path = |min: u32, duration: &str| {
        format!(
            "/v1/os-hosts/availability?resource_properties={}&min={min}&duration={duration}&after={}",
            q(GPU),
            q("2030-01-02 00:00")
        )
    };
    let r = app.get(&path(2, "PT6H")).await.expect(200);
    assert_eq!(
        r.body,
        json!({"windows": [
            {"start_date": "2030-01-02T00:00:00.000000", "end_date": "2030-01-02T06:00:00.000000",
             "count": 3, "hosts": ["1", "2", "3"]},
            {"start_date": "2030-01-03T12:00:00.000000", "end_date": "2030-01-03T18:00:00.000000",
             "count": 3, "hosts": ["1", "2", "3"]}
        ]})
    );
    // Every window is leasable right away with that many hosts.
    for w in r.body["windows"].as_array().unwrap() {
        let n = w["count"].as_i64().unwrap();
        let body = lease_body(
            "w",
            &text(parse(&w["start_date"])),
            &text(parse(&w["end_date"])),
            n,
            n,
            GPU,
        );
        let id = app.post("/v1/leases", &body).await.expect(202).body["lease"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        app.delete(&format!("/v1/leases/{id}")).await.expect(204);
    }
    // Minutes work as durations; a member sees counts only.
    let r = as_member(&app, Method::GET, &path(1, "360"), "me", None)
        .await
        .expect(200);
    assert_eq!(r.body["windows"][0]["count"], 3);
    assert!(r.body["windows"][0].get("hosts").is_none(), "{}", r.text);
    // max caps the count; limit caps the list.
    let r = app
        .get(&format!("{}&max=1&limit=1", path(1, "PT1H")))
        .await
        .expect(200);
    assert_eq!(
        r.body["windows"],
        json!([{"start_date": "2030-01-02T00:00:00.000000", "end_date": "2030-01-02T01:00:00.000000",
                "count": 1, "hosts": ["1"]}])
    );
    // Bad input: 400, naming the parameter.
    for (query, needle) in [
        ("duration=0", "duration"),
        ("duration=P1M", "duration"),
        ("duration=soon", "duration"),
        ("", "Missing parameter duration"),
        ("duration=60&min=0", "min"),
        (
            "duration=60&min=3&max=2",
            "Max must be equal to or larger than min",
        ),
        ("duration=60&limit=0", "limit"),
        ("duration=60&limit=101", "limit"),
        (
            "duration=60&after=2030-01-05%2000:00&before=2030-01-04%2000:00",
            "before",
        ),
        ("duration=60&before=2032-01-01%2000:00", "before"),
        ("duration=60&after=tomorrow", "after"),
        (
            "duration=600&after=2030-01-02%2000:00&before=2030-01-02%2001:00",
            "duration",
        ),
        (
            "duration=60&resource_properties=%5B%22%3D%3D%22",
            "resource_properties",
        ),
    ] {
        let e = app
            .get(&format!("/v1/os-hosts/availability?{query}"))
            .await
            .expect_error(400);
        assert!(e.contains(needle), "{query}: {e}");
    }
}

#[tokio::test]
async fn the_calendar_shows_hosts_and_bookings_anonymously_to_members() {
    crate::skip_if_no_database!();
    let app = spawn_app().await;
    gpu_hosts(&app).await;
    let theirs = as_member(
        &app,
        Method::POST,
        "/v1/leases",
        "other",
        Some(&lease_body(
            "theirs",
            "2030-01-02 10:00",
            "2030-01-03 12:00",
            1,
            1,
            GPU,
        )),
    )
    .await
    .expect(202);
    as_member(
        &app,
        Method::POST,
        "/v1/leases",
        "me",
        Some(&lease_body(
            "mine",
            "2030-01-02 11:00",
            "2030-01-02 13:00",
            1,
            1,
            GPU,
        )),
    )
    .await
    .expect(202);
    let range = format!(
        "after={}&before={}",
        q("2030-01-01 00:00"),
        q("2030-01-05 00:00")
    );
    let admin = app
        .get(&format!("/v1/os-hosts/calendar?{range}"))
        .await
        .expect(200);
    let cal = &admin.body["calendar"];
    assert_eq!(cal["after"], "2030-01-01T00:00:00.000000");
    let hosts = cal["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 4);
    assert_eq!(
        (hosts[0]["id"].clone(), hosts[0]["label"].clone()),
        (json!("1"), json!("g1"))
    );
    let names: Vec<Vec<Value>> = hosts
        .iter()
        .map(|h| {
            h["bookings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["lease_name"].clone())
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        vec![vec![json!("theirs")], vec![json!("mine")], vec![], vec![]]
    );
    assert_eq!(
        hosts[0]["bookings"][0]["lease_id"],
        theirs.body["lease"]["id"]
    );
    // A member: anonymous rows, their own lease named, the other "reserved" (null).
    let member = as_member(
        &app,
        Method::GET,
        &format!(
            "/v1/os-hosts/calendar?{range}&resource_properties={}",
            q(GPU)
        ),
        "me",
        None,
    )
    .await
    .expect(200);
    let hosts = member.body["calendar"]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3, "the filter narrows the rows");
    assert_eq!(
        hosts
            .iter()
            .map(|h| (h["id"].clone(), h["name"].clone(), h["label"].clone()))
            .collect::<Vec<_>>(),
        vec![
            (Value::Null, Value::Null, json!("host 1")),
            (Value::Null, Value::Null, json!("host 2")),
            (Value::Null, Value::Null, json!("host 3")),
        ]
    );
    assert_eq!(
        hosts[0]["bookings"][0],
        json!({"start_date": "2030-01-02T10:00:00.000000", "end_date": "2030-01-03T12:00:00.000000",
               "lease_id": null, "lease_name": null, "mine": false})
    );
    assert_eq!(hosts[1]["bookings"][0]["lease_name"], "mine");
    assert_eq!(hosts[1]["bookings"][0]["mine"], true);
    // Readers may not: the rules are member rules.
    let r = app
        .raw(
            Method::GET,
            "/v1/os-hosts/calendar",
            &[("x-project-id", "me"), ("x-roles", "reader")],
            None,
        )
        .await;
    r.expect_error(403);
}

/// A small deterministic generator (the test prints its seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The filters the random requests use, and which of the generated hosts each matches.
const FILTERS: [(&str, &str); 4] = [
    ("", ""),
    ("", r#"["==", "$rack", "a"]"#),
    (r#"[">=", "$vcpus", "8"]"#, ""),
    (r#"[">=", "$vcpus", "8"]"#, r#"["==", "$rack", "b"]"#),
];

fn host_matches(filter: usize, rack: &str, vcpus: i64) -> bool {
    match filter {
        0 => true,
        1 => rack == "a",
        2 => vcpus >= 8,
        _ => vcpus >= 8 && rack == "b",
    }
}

/// For 1,000 random requests over a random calendar: a feasible plan means create succeeds with
/// the planned hosts, an infeasible one that it fails; every availability window can be leased
/// at once; and a minute-by-minute search finds no earlier window of that size.
#[tokio::test]
async fn plans_and_windows_agree_with_create_and_with_a_brute_force_search() {
    crate::skip_if_no_database!();
    let seed = 0x5eed_0001u64;
    println!("seed {seed:#x}");
    let mut rng = Rng(seed);
    let app = spawn_app().await;
    let mut hosts: Vec<(i64, &str, i64)> = Vec::new();
    for i in 0..8 {
        let rack = if rng.below(2) == 0 { "a" } else { "b" };
        let vcpus = [4, 8, 16][rng.below(3) as usize];
        let h = app
            .host(
                &format!("r{i}"),
                json!({"rack": rack, "vcpus": vcpus.to_string()}),
            )
            .await;
        hosts.push((h["id"].as_str().unwrap().parse().unwrap(), rack, vcpus));
    }
    let base = at(2, 0, 0);
    let minutes = |m: u64| base + TimeDelta::minutes(m as i64);
    // A random calendar over three days (some creates fail: that is fine).
    for i in 0..40 {
        let start = minutes(rng.below(3 * 24 * 60));
        let end = start + TimeDelta::minutes(30 + rng.below(12 * 60) as i64);
        let f = rng.below(4) as usize;
        let n = 1 + rng.below(3) as i64;
        let mut body = lease_body(
            &format!("cal{i}"),
            &text(start),
            &text(end),
            n,
            n,
            FILTERS[f].1,
        );
        body["reservations"][0]["hypervisor_properties"] = json!(FILTERS[f].0);
        app.post("/v1/leases", &body).await;
    }
    // Every host's bookings, for the brute force.
    let all = app.get("/v1/os-hosts/allocations").await.expect(200);
    let mut bookings: BTreeMap<i64, Vec<(NaiveDateTime, NaiveDateTime)>> = BTreeMap::new();
    for a in all.body["allocations"].as_array().unwrap() {
        let id: i64 = a["resource_id"].as_str().unwrap().parse().unwrap();
        for r in a["reservations"].as_array().unwrap() {
            bookings
                .entry(id)
                .or_default()
                .push((parse(&r["start_date"]), parse(&r["end_date"])));
        }
    }
    let free = |host: i64, s: NaiveDateTime, e: NaiveDateTime| {
        bookings
            .get(&host)
            .is_none_or(|l| l.iter().all(|(bs, be)| *be <= s || *bs >= e))
    };
    let (mut feasible, mut infeasible, mut windows) = (0, 0, 0);
    for i in 0..1000 {
        let f = rng.below(4) as usize;
        let start = minutes(rng.below(3 * 24 * 60));
        let duration = TimeDelta::minutes(30 + rng.below(10 * 60) as i64);
        let min = 1 + rng.below(4) as i64;
        let max = min + rng.below(3) as i64;
        if i % 2 == 0 {
            // Plan, then create on the same state (deleting it again restores the state).
            let mut body = lease_body(
                "p",
                &text(start),
                &text(start + duration),
                min,
                max,
                FILTERS[f].1,
            );
            body["reservations"][0]["hypervisor_properties"] = json!(FILTERS[f].0);
            let plan = app.post("/v1/leases/plan", &body).await.expect(200).body["plan"].clone();
            let created = app.post("/v1/leases", &body).await;
            if plan["feasible"] == true {
                feasible += 1;
                let created = created.expect(202);
                let id = created.body["lease"]["id"].as_str().unwrap().to_string();
                assert_eq!(
                    json!(app.hosts_of(&id).await),
                    plan["reservations"][0]["hosts"],
                    "request {i}: create took other hosts than planned"
                );
                app.delete(&format!("/v1/leases/{id}")).await.expect(204);
            } else {
                infeasible += 1;
                let msg = created.expect_error(409);
                assert_eq!(
                    msg,
                    format!(
                        "Not enough hosts available: {}",
                        plan["reservations"][0]["why"].as_str().unwrap()
                    ),
                    "request {i}"
                );
            }
        } else {
            let mut path = format!(
                "/v1/os-hosts/availability?min={min}&max={max}&duration={}&after={}&before={}&limit=3",
                duration.num_minutes(),
                q(&text(start)),
                q(&text(minutes(4 * 24 * 60)))
            );
            for (k, v) in [
                ("hypervisor_properties", FILTERS[f].0),
                ("resource_properties", FILTERS[f].1),
            ] {
                if !v.is_empty() {
                    path.push_str(&format!("&{k}={}", q(v)));
                }
            }
            let r = app.get(&path).await;
            if minutes(4 * 24 * 60) - start < duration {
                r.expect_error(400);
                continue;
            }
            let found = r.expect(200).body["windows"].clone();
            let matching: Vec<i64> = hosts
                .iter()
                .filter(|(_, rack, vcpus)| host_matches(f, rack, *vcpus))
                .map(|(id, _, _)| *id)
                .collect();
            let count_at = |s: NaiveDateTime| {
                matching
                    .iter()
                    .filter(|h| free(**h, s, s + duration))
                    .count() as i64
            };
            // No earlier window: every minute before the first one has fewer than min free.
            let first = found
                .as_array()
                .unwrap()
                .first()
                .map(|w| parse(&w["start_date"]))
                .unwrap_or(minutes(4 * 24 * 60) - duration + TimeDelta::minutes(1));
            let mut s = start;
            while s < first {
                assert!(
                    count_at(s) < min,
                    "request {i}: {} hosts are free at {s} for {duration}, before the first window {first}",
                    count_at(s)
                );
                s += TimeDelta::minutes(1);
            }
            // Every window can be leased right away with that many hosts.
            for w in found.as_array().unwrap() {
                windows += 1;
                let n = w["count"].as_i64().unwrap();
                assert!(n >= min && n <= max, "request {i}: {w}");
                assert_eq!(
                    count_at(parse(&w["start_date"])).min(n),
                    n,
                    "request {i}: {w}"
                );
                let mut body = lease_body(
                    "w",
                    &text(parse(&w["start_date"])),
                    &text(parse(&w["end_date"])),
                    n,
                    n,
                    FILTERS[f].1,
                );
                body["reservations"][0]["hypervisor_properties"] = json!(FILTERS[f].0);
                let created = app.post("/v1/leases", &body).await.expect(202);
                let id = created.body["lease"]["id"].as_str().unwrap().to_string();
                app.delete(&format!("/v1/leases/{id}")).await.expect(204);
            }
        }
    }
    println!(
        "1000 requests: {feasible} feasible plans created, {infeasible} infeasible refused alike, \
         {windows} windows leased"
    );
    assert!(
        feasible > 50 && infeasible > 50 && windows > 100,
        "the data exercised every path"
    );
}
