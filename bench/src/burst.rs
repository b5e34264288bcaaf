//! The start burst: N leases that all start in the same second, and how late their start events
//! ran. The runner's own audit rows (`event_runs`) give each event's due time and the moment it
//! finished, so the figures are exact and need no polling of the API while the runner works.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{NaiveDateTime, TimeDelta, Timelike};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::workload::{Api, Who, fmt_date};

/// Every burst lease's name starts with this, so the audit rows are found by a join on the name.
const NAME_PREFIX: &str = "bench-burst-";

/// What the burst measured.
pub struct BurstResult {
    /// Leases asked for, and created.
    pub leases: usize,
    pub created: usize,
    /// Start events DONE when the wait ended.
    pub done: usize,
    pub due_at: NaiveDateTime,
    /// Seconds the creates took (they all finish before `due_at`).
    pub create_s: f64,
    /// From `due_at` until the last start event was DONE.
    pub last_done_after_s: f64,
    /// Each event's lateness: its `finished_at` minus its due time.
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
}

impl BurstResult {
    pub fn all_done(&self) -> bool {
        self.created == self.leases && self.done == self.created
    }

    pub fn report(&self) -> String {
        format!(
            "start burst: {} leases due at {} (created in {:.1} s beforehand); {} of {} start events DONE; \
             the last {:.3} s after their time; lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            self.leases,
            self.due_at,
            self.create_s,
            self.done,
            self.created,
            self.last_done_after_s,
            self.lateness_p50_ms,
            self.lateness_p99_ms,
            self.lateness_max_ms
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "leases": self.leases,
            "created": self.created,
            "done": self.done,
            "due_at": self.due_at.to_string(),
            "create_s": self.create_s,
            "last_done_after_s": self.last_done_after_s,
            "lateness_p50_ms": self.lateness_p50_ms,
            "lateness_p99_ms": self.lateness_p99_ms,
            "lateness_max_ms": self.lateness_max_ms,
        })
    }
}

/// Creates `n` one-host leases that start at the same minute (far enough ahead for the creates
/// to finish first), waits for their start events, and reads how late each ran.
pub async fn run(
    api: &Api,
    db_url: &str,
    n: usize,
    concurrency: usize,
) -> Result<BurstResult, String> {
    // Lease dates have minute precision: the burst is due at the first whole minute that leaves
    // 20 s plus a generous 5 ms per create (the creates must all be done before it).
    let now = chrono::Utc::now().naive_utc();
    let lead = TimeDelta::seconds(20) + TimeDelta::milliseconds(5 * n as i64);
    let due_at = ceil_minute(now + lead);
    let body = move |i: usize| {
        json!({
            "name": format!("{NAME_PREFIX}{i}"),
            "start_date": fmt_date(due_at),
            "end_date": fmt_date(due_at + TimeDelta::hours(2)),
            "reservations": [{
                "resource_type": "physical:host", "min": 1, "max": 1,
                "hypervisor_properties": "", "resource_properties": "",
            }],
            "events": [],
        })
    };
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (api, next) = (api.clone(), next.clone());
        workers.spawn(async move {
            let (mut created, mut first_error) = (0usize, None::<String>);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match api
                    .call(
                        reqwest::Method::POST,
                        "/v1/leases",
                        &Who::Admin,
                        Some(&body(i)),
                    )
                    .await
                {
                    Ok(r) if r.ok() => created += 1,
                    Ok(r) => {
                        first_error.get_or_insert(r.describe());
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            (created, first_error)
        });
    }
    let (mut created, mut first_error) = (0, None);
    while let Some(done) = workers.join_next().await {
        let (c, e) = done.map_err(|e| format!("a burst worker failed: {e}"))?;
        created += c;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let create_s = started.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        return Err(format!(
            "start burst: {} of {n} creates failed; first: {e}",
            n - created
        ));
    }
    if chrono::Utc::now().naive_utc() >= due_at {
        return Err(format!(
            "start burst: the {n} creates took {create_s:.1} s and ended after their start ({due_at})"
        ));
    }

    // Wait for the due time, then read the audit rows until all are there (or 60 s passed).
    let conn = Database::connect(db_url)
        .await
        .map_err(|e| format!("start burst: connect: {e}"))?;
    let until_due = (due_at - chrono::Utc::now().naive_utc())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(until_due).await;
    let wait_end = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = done_runs(&conn).await?;
        if runs.len() >= created || Instant::now() >= wait_end {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = conn.close().await;

    let mut lateness: Vec<f64> = runs
        .iter()
        .map(|(scheduled, finished)| {
            (*finished - *scheduled).num_microseconds().unwrap_or(0) as f64 / 1000.0
        })
        .collect();
    lateness.sort_by(f64::total_cmp);
    let last = runs.iter().map(|(_, f)| *f).max();
    Ok(BurstResult {
        leases: n,
        created,
        done: runs.len(),
        due_at,
        create_s,
        last_done_after_s: last
            .map(|l| (l - due_at).num_microseconds().unwrap_or(0) as f64 / 1e6)
            .unwrap_or(0.0),
        lateness_p50_ms: nearest_rank(&lateness, 50.0),
        lateness_p99_ms: nearest_rank(&lateness, 99.0),
        lateness_max_ms: lateness.last().copied().unwrap_or(0.0),
    })
}

/// (due time, finished) of the burst's start events that ran DONE.
async fn done_runs(
    conn: &impl ConnectionTrait,
) -> Result<Vec<(NaiveDateTime, NaiveDateTime)>, String> {
    let sql = format!(
        "SELECT r.scheduled_at AS scheduled_at, r.finished_at AS finished_at \
         FROM event_runs r JOIN leases l ON l.id = r.lease_id \
         WHERE l.name LIKE '{NAME_PREFIX}%' AND r.event_type = 'start_lease' AND r.outcome = 'DONE'"
    );
    let rows = conn
        .query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .map_err(|e| format!("start burst: reading event_runs: {e}"))?;
    rows.iter()
        .map(|row| {
            let s: NaiveDateTime = row.try_get("", "scheduled_at").map_err(|e| e.to_string())?;
            let f: NaiveDateTime = row.try_get("", "finished_at").map_err(|e| e.to_string())?;
            Ok((s, f))
        })
        .collect()
}

fn ceil_minute(t: NaiveDateTime) -> NaiveDateTime {
    let floor = t
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("a valid time");
    if floor == t {
        t
    } else {
        floor + TimeDelta::minutes(1)
    }
}

/// Nearest rank, as the latency rows use.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_due_on_a_whole_minute_not_before_the_lead() {
        let t = chrono::NaiveDate::from_ymd_opt(2030, 1, 1)
            .unwrap()
            .and_hms_milli_opt(12, 34, 56, 789)
            .unwrap();
        assert_eq!(ceil_minute(t).to_string(), "2030-01-01 12:35:00");
        let whole = t.with_second(0).unwrap().with_nanosecond(0).unwrap();
        assert_eq!(ceil_minute(whole), whole);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
    }
}
