//! What the harness sends: the data set (hosts, leases over a year), the measured operations, and
//! the worker pool that runs an operation N times at a given concurrency and times each call.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{NaiveDateTime, TimeDelta};
use serde_json::{Value, json};

/// Minutes in the year that the loaded leases (and the measured ones) are spread over.
pub const YEAR_MINUTES: i64 = 365 * 24 * 60;

/// The project whose 1,000 leases the "list 1,000" row reads as a member (not as admin, who
/// would see every lease).
pub const LIST_PROJECT: &str = "bench-list";

/// First requests of the list rows (the rest follow the `next` links).
pub const LIST_1000_URL: &str = "/v1/leases?limit=1000";
pub const HOST_LIST_URL: &str = "/v1/os-hosts";

/// Filters of the measured creates: `tier=gold` is on 1% of hosts, `gpu=true` on 50%.
pub const FILTER_1PCT: &str = r#"["==", "$tier", "gold"]"#;
pub const FILTER_50PCT: &str = r#"["==", "$gpu", "true"]"#;
/// Background leases stay off the gold pool, so that the 1% creates (1 host at 100 hosts) find it
/// free and measure the placement cost rather than a 409.
const FILTER_BG: &str = r#"["!=", "$tier", "gold"]"#;
const FILTER_BG_GPU: &str = r#"["and", ["==", "$gpu", "true"], ["!=", "$tier", "gold"]]"#;

/// SplitMix64: a tiny, seedable generator, so runs are repeatable without a `rand` dependency.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct Rng(u64);

impl Rng {
    /// One independent stream per (seed, purpose, index), so concurrent workers need no shared state.
    pub fn for_item(seed: u64, purpose: u64, i: usize) -> Self {
        Rng(mix(seed ^ mix(purpose) ^ mix(i as u64 ^ 0x5555)))
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub fn fmt_date(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// Who makes a request (noauth headers). `Admin` sends none: the server's default is admin.
#[derive(Clone, Debug)]
pub enum Who {
    Admin,
    Member(String),
}

/// A thin HTTP client over the API.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    pub base: String,
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// `HTTP 409: {...}`, cut short: the first error of a row is shown in the report.
    pub fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text: String = text.chars().take(300).collect();
        format!("HTTP {}: {}", self.status, text)
    }
}

impl Api {
    pub fn new(base: String) -> Self {
        // reqwest is built with rustls but no provider (the server's features): install one, or
        // building a client panics. It is never used: the server speaks plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .expect("an HTTP client");
        Api { client, base }
    }

    /// One request, the whole body read (the latency a client sees includes the transfer).
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        who: &Who,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{}", self.base, url)
        };
        let mut req = self.client.request(method, url);
        if let Who::Member(project) = who {
            req = req
                .header("X-Project-Id", project)
                .header("X-User-Id", "bench-user")
                .header("X-Roles", "member,reader");
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?;
        Ok(Reply {
            status,
            body: body.to_vec(),
        })
    }

    /// Walks a list as [`Api::get_all_pages`] does, parsing each page: (items, requests). Run
    /// once before a list row, so the table says what one call of that row fetches.
    pub async fn count_all(
        &self,
        first: &str,
        who: &Who,
        key: &str,
    ) -> Result<(usize, usize), String> {
        let mut url = first.to_string();
        let (mut items, mut pages) = (0, 0);
        loop {
            let reply = self.call(reqwest::Method::GET, &url, who, None).await?;
            pages += 1;
            if !reply.ok() {
                return Err(reply.describe());
            }
            items += reply.json()[key].as_array().map(Vec::len).unwrap_or(0);
            match next_href(&reply.body) {
                Some(next) if pages < 10_000 => url = next,
                _ => return Ok((items, pages)),
            }
        }
    }

    /// GETs a list and follows its `next` links; returns the number of requests made.
    pub async fn get_all_pages(&self, first: &str, who: &Who) -> Result<usize, String> {
        let mut url = first.to_string();
        let mut pages = 0;
        loop {
            let reply = self.call(reqwest::Method::GET, &url, who, None).await?;
            pages += 1;
            if !reply.ok() {
                return Err(reply.describe());
            }
            match next_href(&reply.body) {
                Some(next) if pages < 10_000 => url = next,
                _ => return Ok(pages),
            }
        }
    }
}

/// The `next` link of a list body, found without parsing the whole (possibly megabytes of) JSON:
/// the server writes compact JSON, and a link object `{"href":"...","rel":"next"}` (keys in
/// either order) holds no braces.
pub fn next_href(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.rfind(r#""rel":"next""#)?;
    let open = text[..at].rfind('{')?;
    let close = at + text[at..].find('}')?;
    let link = &text[open..close];
    let h = link.find(r#""href":""#)? + r#""href":""#.len();
    let end = link[h..].find('"')?;
    Some(link[h..h + end].replace("\\/", "/"))
}

/// The data set: N hosts with capabilities and M leases over the year after `base`.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub hosts: usize,
    pub leases: usize,
    pub list_leases: usize,
    pub seed: u64,
    /// Tomorrow (now + 24 h, to the minute): no loaded lease starts while the harness runs.
    pub base: NaiveDateTime,
    /// Window lengths are 1-7 days times this factor (< 1 when M/N is so high that 1-7 days would
    /// not fit: it keeps the non-gold hosts at most 40% booked on average).
    pub window_scale: f64,
}

impl Dataset {
    pub fn new(
        hosts: usize,
        leases: usize,
        list_leases: usize,
        seed: u64,
        now: NaiveDateTime,
    ) -> Self {
        let base = to_minute(now + TimeDelta::days(1));
        // Demand in host-days (5% of leases take 2 hosts; mean window 4 days) against 40% of the
        // non-gold capacity: at 50%, dense sets (100 hosts, 100,000 leases) saw a few 409s.
        let gold = hosts.div_ceil(100);
        let capacity = (hosts - gold.min(hosts)) as f64 * 365.0 * 0.4;
        let demand = leases as f64 * 1.05 * 4.0;
        let window_scale = if demand > 0.0 {
            (capacity / demand).min(1.0)
        } else {
            1.0
        };
        Dataset {
            hosts,
            leases,
            list_leases: list_leases.min(leases),
            seed,
            base,
            window_scale,
        }
    }

    pub fn gold_hosts(&self) -> usize {
        (0..self.hosts).filter(|i| i % 100 == 0).count()
    }

    /// Host `i`: 1% gold tier, 50% with a GPU, 40 hosts a rack, vcpus 8..64.
    pub fn host_body(&self, i: usize) -> Value {
        let vcpus = [8, 16, 32, 48, 64][i % 5];
        let tier = if i.is_multiple_of(100) {
            "gold"
        } else if i.is_multiple_of(3) {
            "silver"
        } else {
            "bronze"
        };
        json!({
            "name": format!("bench-host-{i:06}"),
            "vcpus": vcpus,
            "memory_mb": vcpus * 4096,
            "local_gb": 480,
            "tier": tier,
            "gpu": if i.is_multiple_of(2) { "true" } else { "false" },
            "rack": format!("rack-{:04}", i / 40),
        })
    }

    /// Whether loaded lease `j` belongs to the list project: spread evenly through the load.
    pub fn in_list_project(&self, j: usize) -> bool {
        if self.list_leases == 0 {
            return false;
        }
        let stride = (self.leases / self.list_leases).max(1);
        j.is_multiple_of(stride) && j / stride < self.list_leases
    }

    /// Loaded lease `j`: owner, body and end date. 95% take one host, 5% two; 30% need a GPU.
    pub fn lease(&self, j: usize) -> (Who, Value, NaiveDateTime) {
        let mut rng = Rng::for_item(self.seed, 1, j);
        let days_minutes = 1440 + rng.below(6 * 1440 + 1) as i64; // 1..7 days
        let len = ((days_minutes as f64 * self.window_scale) as i64).max(10);
        let start_offset = rng.below((YEAR_MINUTES - len).max(1) as u64) as i64;
        let start = self.base + TimeDelta::minutes(start_offset);
        let end = start + TimeDelta::minutes(len);
        let count = if rng.chance(5) { 2 } else { 1 };
        let filter = if rng.chance(30) {
            FILTER_BG_GPU
        } else {
            FILTER_BG
        };
        let who = if self.in_list_project(j) {
            Who::Member(LIST_PROJECT.into())
        } else {
            Who::Member(format!("bench-p{:02}", j % 20))
        };
        let body = json!({
            "name": format!("bench-lease-{j}"),
            "start_date": fmt_date(start),
            "end_date": fmt_date(end),
            "reservations": [{
                "resource_type": "physical:host",
                "min": count,
                "max": count,
                "hypervisor_properties": "",
                "resource_properties": filter,
            }],
        });
        (who, body, end)
    }
}

/// Truncates to the minute (the API's date format has no seconds).
fn to_minute(t: NaiveDateTime) -> NaiveDateTime {
    use chrono::Timelike;
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .unwrap_or(t)
}

/// A loaded lease: its id and current end (for the update row's prolongations).
#[derive(Clone, Debug)]
pub struct LoadedLease {
    pub id: String,
    pub end: NaiveDateTime,
}

/// The measured operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Create1,
    Create50,
    Show,
    ListPage,
    List1000,
    Update,
    Delete,
    HostList,
    /// Free windows of 4 hosts for a day among the 50% (GPU) hosts, as a member.
    Availability,
    /// Loading: enrol host `i` / create loaded lease `j`.
    LoadHost,
    LoadLease,
}

impl OpKind {
    pub const MEASURED: [OpKind; 9] = [
        OpKind::Create1,
        OpKind::Create50,
        OpKind::Show,
        OpKind::ListPage,
        OpKind::List1000,
        OpKind::Update,
        OpKind::Delete,
        OpKind::HostList,
        OpKind::Availability,
    ];

    /// The name accepted by `--ops`.
    pub fn key(self) -> &'static str {
        match self {
            OpKind::Create1 => "create_1pct",
            OpKind::Create50 => "create_50pct",
            OpKind::Show => "show",
            OpKind::ListPage => "list_page",
            OpKind::List1000 => "list_1000",
            OpKind::Update => "update",
            OpKind::Delete => "delete",
            OpKind::HostList => "host_list",
            OpKind::Availability => "availability",
            OpKind::LoadHost => "load_hosts",
            OpKind::LoadLease => "load_leases",
        }
    }

    /// The label in the table.
    pub fn label(self) -> &'static str {
        match self {
            OpKind::Create1 => "lease create, filter 1%",
            OpKind::Create50 => "lease create, filter 50%",
            OpKind::Show => "lease show",
            OpKind::ListPage => "lease list, page of 100",
            OpKind::List1000 => "lease list, 1,000 (member)",
            OpKind::Update => "lease update (+1 day)",
            OpKind::Delete => "lease delete",
            OpKind::HostList => "host list (all hosts)",
            OpKind::Availability => "availability, filter 50%, 4 hosts x 1 day",
            OpKind::LoadHost => "load: host enrol",
            OpKind::LoadLease => "load: lease create",
        }
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
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

/// Everything one row's workers need.
pub struct Job {
    pub api: Api,
    pub kind: OpKind,
    pub data: Arc<Dataset>,
    pub loaded: Arc<Vec<LoadedLease>>,
    /// Delete: the leases to delete, one per operation.
    pub targets: Arc<Vec<String>>,
    /// Creates: how many windows the year is cut into (one per operation, so that even the
    /// single gold host at 100 hosts takes every 1% create without a conflict).
    pub slots: usize,
    /// Update: index of the first loaded lease to prolong (the c=8 row continues where c=1 ended).
    pub offset: usize,
}

/// What one operation produced: the id of a created lease, or an error.
pub type Outcome = Result<Option<String>, String>;

impl Job {
    /// Operation number `i` of this row.
    async fn perform(&self, i: usize) -> Outcome {
        use reqwest::Method;
        let api = &self.api;
        let admin = Who::Admin;
        match self.kind {
            OpKind::LoadHost => {
                let r = api
                    .call(
                        Method::POST,
                        "/v1/os-hosts",
                        &admin,
                        Some(&self.data.host_body(i)),
                    )
                    .await?;
                if r.ok() { Ok(None) } else { Err(r.describe()) }
            }
            OpKind::LoadLease => {
                let (who, body, _) = self.data.lease(i);
                let r = api
                    .call(Method::POST, "/v1/leases", &who, Some(&body))
                    .await?;
                created_id(&r)
            }
            OpKind::Create1 | OpKind::Create50 => {
                let filter = if self.kind == OpKind::Create1 {
                    FILTER_1PCT
                } else {
                    FILTER_50PCT
                };
                let slot = (YEAR_MINUTES / self.slots.max(1) as i64).max(10);
                let len = (slot * 8 / 10).clamp(10, 1440);
                let start = self.data.base + TimeDelta::minutes(slot * i as i64);
                let body = json!({
                    "name": format!("bench-measure-{i}"),
                    "start_date": fmt_date(start),
                    "end_date": fmt_date(start + TimeDelta::minutes(len)),
                    "reservations": [{
                        "resource_type": "physical:host",
                        "min": 1,
                        "max": 1,
                        "hypervisor_properties": "",
                        "resource_properties": filter,
                    }],
                });
                let who = Who::Member("bench-measure".into());
                let r = api
                    .call(Method::POST, "/v1/leases", &who, Some(&body))
                    .await?;
                created_id(&r)
            }
            OpKind::Show => {
                let mut rng = Rng::for_item(self.data.seed, 2, i);
                let lease = &self.loaded[rng.below(self.loaded.len() as u64) as usize];
                let r = api
                    .call(
                        Method::GET,
                        &format!("/v1/leases/{}", lease.id),
                        &admin,
                        None,
                    )
                    .await?;
                if r.ok() { Ok(None) } else { Err(r.describe()) }
            }
            OpKind::ListPage => {
                // A page after a random marker: deep pages must cost what the first one does.
                let mut rng = Rng::for_item(self.data.seed, 3, i);
                let lease = &self.loaded[rng.below(self.loaded.len() as u64) as usize];
                let url = format!("/v1/leases?limit=100&marker={}", lease.id);
                let r = api.call(Method::GET, &url, &admin, None).await?;
                if r.ok() { Ok(None) } else { Err(r.describe()) }
            }
            OpKind::List1000 => {
                let who = Who::Member(LIST_PROJECT.into());
                api.get_all_pages(LIST_1000_URL, &who).await?;
                Ok(None)
            }
            OpKind::HostList => {
                api.get_all_pages(HOST_LIST_URL, &admin).await?;
                Ok(None)
            }
            OpKind::Availability => {
                // A different `after` each time, over the loaded year.
                let after = self.data.base + TimeDelta::minutes((i as i64 * 797) % YEAR_MINUTES);
                let url = format!(
                    "/v1/os-hosts/availability?resource_properties={}&min=4&duration=PT24H&after={}&limit=5",
                    encode(FILTER_50PCT),
                    encode(&fmt_date(after))
                );
                let r = api
                    .call(
                        Method::GET,
                        &url,
                        &Who::Member("bench-measure".into()),
                        None,
                    )
                    .await?;
                if r.ok() { Ok(None) } else { Err(r.describe()) }
            }
            OpKind::Update => {
                let n = self.loaded.len();
                let k = self.offset + i;
                // Every lease is prolonged at most once per pass; later passes add a day more.
                let lease = &self.loaded[k % n];
                // A day, shrunk like the windows in dense sets: a whole day more on a lease of a
                // few hours finds no free host there, and the row would measure 409s.
                let step = ((1440.0 * self.data.window_scale) as i64).max(10);
                let end = lease.end + TimeDelta::minutes(step * (1 + (k / n) as i64));
                let body = json!({"end_date": fmt_date(end)});
                let r = api
                    .call(
                        Method::PUT,
                        &format!("/v1/leases/{}", lease.id),
                        &admin,
                        Some(&body),
                    )
                    .await?;
                if r.ok() { Ok(None) } else { Err(r.describe()) }
            }
            OpKind::Delete => {
                let id = &self.targets[i];
                let r = api
                    .call(Method::DELETE, &format!("/v1/leases/{id}"), &admin, None)
                    .await?;
                if r.ok() { Ok(None) } else { Err(r.describe()) }
            }
        }
    }
}

fn created_id(r: &Reply) -> Outcome {
    if !r.ok() {
        return Err(r.describe());
    }
    match r.json()["lease"]["id"].as_str() {
        Some(id) => Ok(Some(id.to_string())),
        None => Err(format!("no lease id in {}", r.describe())),
    }
}

/// The raw result of a row: per-operation latencies and outcomes, and the wall time.
pub struct RowResult {
    pub latencies_us: Vec<u64>,
    pub errors: usize,
    pub first_error: Option<String>,
    /// (operation index, created id) of successful creates.
    pub created: Vec<(usize, String)>,
    pub wall: Duration,
}

/// Runs operations 0..count of `job` with `concurrency` workers, stopping early at `deadline`.
pub async fn run(job: Arc<Job>, count: usize, concurrency: usize, max: Duration) -> RowResult {
    run_counted(job, count, concurrency, max, Arc::new(AtomicUsize::new(0))).await
}

/// As [`run`]; `next` is the index of the next operation to start (a progress reader's view).
pub async fn run_counted(
    job: Arc<Job>,
    count: usize,
    concurrency: usize,
    max: Duration,
    next: Arc<AtomicUsize>,
) -> RowResult {
    let started = Instant::now();
    let deadline = started + max;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let job = job.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                let outcome = job.perform(i).await;
                lat.push(t0.elapsed().as_micros() as u64);
                outcomes.push((i, outcome));
            }
            (lat, outcomes)
        });
    }
    let mut result = RowResult {
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
        created: Vec::new(),
        wall: Duration::ZERO,
    };
    let mut failures: Vec<(usize, String)> = Vec::new();
    while let Some(done) = workers.join_next().await {
        let (lat, outcomes) = done.expect("a worker panicked");
        result.latencies_us.extend(lat);
        for (i, o) in outcomes {
            match o {
                Ok(Some(id)) => result.created.push((i, id)),
                Ok(None) => {}
                Err(e) => failures.push((i, e)),
            }
        }
    }
    result.wall = started.elapsed();
    result.errors = failures.len();
    failures.sort_by_key(|(i, _)| *i);
    result.first_error = failures.into_iter().next().map(|(_, e)| e);
    result.created.sort_by_key(|(i, _)| *i);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found() {
        let body = br#"{"leases":[],"leases_links":[{"rel":"next","href":"http://h/v1/leases?limit=2&marker=x"}]}"#;
        assert_eq!(
            next_href(body).as_deref(),
            Some("http://h/v1/leases?limit=2&marker=x")
        );
        assert_eq!(next_href(br#"{"leases":[]}"#), None);
    }

    #[test]
    fn shares_are_as_documented() {
        let now = chrono::NaiveDate::from_ymd_opt(2030, 1, 1)
            .unwrap()
            .and_hms_opt(12, 34, 56)
            .unwrap();
        let d = Dataset::new(10_000, 100_000, 1000, 1, now);
        let gold = (0..d.hosts)
            .filter(|&i| d.host_body(i)["tier"] == "gold")
            .count();
        let gpu = (0..d.hosts)
            .filter(|&i| d.host_body(i)["gpu"] == "true")
            .count();
        assert_eq!((gold, gpu), (100, 5000));
        assert_eq!(d.window_scale, 1.0);
        assert_eq!(
            (0..d.leases).filter(|&j| d.in_list_project(j)).count(),
            1000
        );
        let (_, body, end) = d.lease(7);
        assert!(end > d.base && end <= d.base + TimeDelta::minutes(YEAR_MINUTES));
        assert!(body["start_date"].as_str().unwrap() >= fmt_date(d.base).as_str());
        // 100 hosts and 100,000 leases cannot hold 1-7 day windows: they shrink.
        assert!(Dataset::new(100, 100_000, 1000, 1, now).window_scale < 0.04);
    }
}
