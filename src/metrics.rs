//! Prometheus metrics: a small registry of counters and histograms on atomics, and their text
//! exposition (format 0.0.4) for `GET /metrics` (docs/operations.md lists every metric).
//!
//! Every label set is fixed when the registry is built (operationIds of the spec, status codes
//! 100-599, event types and outcomes), so recording is a few atomic adds: no lock, no allocation,
//! and no label value a client can invent. Gauges that describe the database (leases by status,
//! hosts, due events) are not kept here: the scrape reads them ([`Gauges`]) and hands them in.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::domain::lease::LeaseStatus;

/// Label value of requests that match no operation of the spec (unknown paths, 405s, /docs...).
pub const UNMATCHED: &str = "unmatched";

/// Request latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Event lateness buckets, in seconds: the runner sleeps until an event is due, so most run
/// within a second; the long tail is downtime or Nova retries.
const LATENESS_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Write-turn wait buckets, in seconds: an uncontended turn takes well under a millisecond.
const WRITE_WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Event types as the events table names them.
pub const EVENT_TYPES: &[&str] = &["start_lease", "before_end_lease", "end_lease"];
/// Outcomes of one event run, as `event_runs.outcome` records them.
pub const EVENT_OUTCOMES: &[&str] = &["DONE", "ERROR", "RETRY"];

/// Status codes counted one by one; anything outside (never sent by poem) counts as 599.
const FIRST_STATUS: u16 = 100;
const STATUS_SLOTS: usize = 500;

/// A histogram with fixed bucket bounds; the sum is kept in nanoseconds so that it is one atomic.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last one is +Inf.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation; negative values count as 0.
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        let i = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` is `k="v",` or empty.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

/// Webhook delivery counters (src/jobs/notify.rs).
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Notifications accepted (2xx) by a URL.
    pub delivered: AtomicU64,
    /// Notifications a URL never accepted, after every attempt.
    pub failed: AtomicU64,
    /// Single attempts refused or failed (each retry counts).
    pub attempt_failures: AtomicU64,
    /// Notifications dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// What the scrape reads from the database at that moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Gauges {
    /// Every lease status, with its count (0 included, so that series do not vanish).
    pub leases_by_status: Vec<(LeaseStatus, u64)>,
    pub hosts_enrolled: u64,
    /// Hosts held by a lease whose window contains now.
    pub hosts_reserved: u64,
    /// UNDONE events whose time has come.
    pub events_due: u64,
}

/// The registry: one per process, shared by the request pipeline, the runner, the database's
/// write turn and the notifier.
#[derive(Debug)]
pub struct Metrics {
    /// The spec's operationIds, sorted (requests find their slot by binary search), then
    /// [`UNMATCHED`] last.
    operations: Vec<String>,
    /// `operations.len() * STATUS_SLOTS` counters: operation-major.
    requests: Box<[AtomicU64]>,
    latency: Box<[Histogram]>,
    /// `EVENT_TYPES.len() * EVENT_OUTCOMES.len()` counters.
    events_run: Box<[AtomicU64]>,
    lateness: Box<[Histogram]>,
    pub write_wait: Histogram,
    pub webhooks: WebhookCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Vec::<String>::new())
    }
}

impl Metrics {
    /// A registry for these operationIds (the served spec's).
    pub fn new(operation_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut operations: Vec<String> = operation_ids.into_iter().map(Into::into).collect();
        operations.sort();
        operations.dedup();
        operations.retain(|o| o != UNMATCHED);
        operations.push(UNMATCHED.to_string());
        let n = operations.len();
        Self {
            requests: (0..n * STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..n).map(|_| Histogram::new(LATENCY_BUCKETS)).collect(),
            operations,
            events_run: (0..EVENT_TYPES.len() * EVENT_OUTCOMES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            lateness: EVENT_TYPES
                .iter()
                .map(|_| Histogram::new(LATENESS_BUCKETS))
                .collect(),
            write_wait: Histogram::new(WRITE_WAIT_BUCKETS),
            webhooks: WebhookCounters::default(),
        }
    }

    fn operation_slot(&self, operation_id: Option<&str>) -> usize {
        let unmatched = self.operations.len() - 1;
        operation_id
            .and_then(|op| {
                self.operations[..unmatched]
                    .binary_search_by(|o| o.as_str().cmp(op))
                    .ok()
            })
            .unwrap_or(unmatched)
    }

    /// One request answered: `operation_id` from the spec's routes, `None` when none matched.
    pub fn observe_request(&self, operation_id: Option<&str>, status: u16, took: Duration) {
        let op = self.operation_slot(operation_id);
        let s = (status.clamp(FIRST_STATUS, FIRST_STATUS + STATUS_SLOTS as u16 - 1) - FIRST_STATUS)
            as usize;
        self.requests[op * STATUS_SLOTS + s].fetch_add(1, Ordering::Relaxed);
        self.latency[op].observe_duration(took);
    }

    /// Requests counted for this operation and status (tests and the scrape).
    pub fn requests(&self, operation_id: Option<&str>, status: u16) -> u64 {
        let op = self.operation_slot(operation_id);
        let s = status.saturating_sub(FIRST_STATUS) as usize;
        self.requests
            .get(op * STATUS_SLOTS + s)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// One event run recorded with `outcome` (DONE, ERROR, RETRY), `lateness` after its time.
    pub fn observe_event_run(&self, event_type: &str, outcome: &str, lateness_seconds: f64) {
        let (Some(t), Some(o)) = (
            EVENT_TYPES.iter().position(|e| *e == event_type),
            EVENT_OUTCOMES.iter().position(|e| *e == outcome),
        ) else {
            return;
        };
        self.events_run[t * EVENT_OUTCOMES.len() + o].fetch_add(1, Ordering::Relaxed);
        self.lateness[t].observe(lateness_seconds);
    }

    /// The whole exposition, with the gauges the scrape read.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        header(
            &mut out,
            "blazar_http_requests_total",
            "counter",
            "HTTP requests answered, by operationId of the spec and status code.",
        );
        for (op_i, op) in self.operations.iter().enumerate() {
            let slots = &self.requests[op_i * STATUS_SLOTS..(op_i + 1) * STATUS_SLOTS];
            for (s, c) in slots.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let status = s as u16 + FIRST_STATUS;
                    let _ = writeln!(
                        out,
                        "blazar_http_requests_total{{operation_id=\"{op}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        header(
            &mut out,
            "blazar_http_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its response, by operationId.",
        );
        for (op, h) in self.operations.iter().zip(self.latency.iter()) {
            if h.count() > 0 {
                h.render(
                    &mut out,
                    "blazar_http_request_duration_seconds",
                    &format!("operation_id=\"{op}\","),
                );
            }
        }

        header(
            &mut out,
            "blazar_leases",
            "gauge",
            "Leases in the database, by status.",
        );
        for (status, n) in &g.leases_by_status {
            let _ = writeln!(out, "blazar_leases{{status=\"{status}\"}} {n}");
        }
        gauge(
            &mut out,
            "blazar_hosts_enrolled",
            "Hosts enrolled.",
            g.hosts_enrolled,
        );
        gauge(
            &mut out,
            "blazar_hosts_reserved",
            "Hosts held now by a lease whose window contains the current time.",
            g.hosts_reserved,
        );
        gauge(
            &mut out,
            "blazar_events_due",
            "Lease events waiting (UNDONE) whose time has come.",
            g.events_due,
        );

        header(
            &mut out,
            "blazar_events_run_total",
            "counter",
            "Lease event runs, by event type and outcome (as event_runs records them).",
        );
        for (t, ty) in EVENT_TYPES.iter().enumerate() {
            for (o, outcome) in EVENT_OUTCOMES.iter().enumerate() {
                let n = self.events_run[t * EVENT_OUTCOMES.len() + o].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "blazar_events_run_total{{event_type=\"{ty}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        header(
            &mut out,
            "blazar_event_lateness_seconds",
            "histogram",
            "How long after its due time an event run started, by event type.",
        );
        for (ty, h) in EVENT_TYPES.iter().zip(self.lateness.iter()) {
            h.render(
                &mut out,
                "blazar_event_lateness_seconds",
                &format!("event_type=\"{ty}\","),
            );
        }

        header(
            &mut out,
            "blazar_db_write_wait_seconds",
            "histogram",
            "Time spent waiting for the write turn (one writer at a time) before a write \
             transaction begins.",
        );
        self.write_wait
            .render(&mut out, "blazar_db_write_wait_seconds", "");

        let w = &self.webhooks;
        header(
            &mut out,
            "blazar_webhook_deliveries_total",
            "counter",
            "Webhook notifications per URL, by outcome: delivered (a 2xx) or failed (every \
             attempt refused or failed).",
        );
        for (outcome, c) in [("delivered", &w.delivered), ("failed", &w.failed)] {
            let _ = writeln!(
                out,
                "blazar_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "blazar_webhook_attempt_failures_total",
            "Webhook delivery attempts refused (non-2xx) or failed (no answer), retries included.",
            w.attempt_failures.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "blazar_webhook_dropped_total",
            "Notifications dropped because the delivery queue was full.",
            w.dropped.load(Ordering::Relaxed),
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_on_their_operation_or_unmatched() {
        let m = Metrics::new(["listLeases", "createLease"]);
        m.observe_request(Some("listLeases"), 200, Duration::from_millis(3));
        m.observe_request(Some("listLeases"), 200, Duration::from_millis(30));
        m.observe_request(Some("nope"), 404, Duration::ZERO);
        m.observe_request(None, 404, Duration::ZERO);
        m.observe_request(None, 1000, Duration::ZERO);
        assert_eq!(m.requests(Some("listLeases"), 200), 2);
        assert_eq!(m.requests(Some("createLease"), 200), 0);
        assert_eq!(m.requests(None, 404), 2);
        assert_eq!(m.requests(None, 599), 1);
        let text = m.render(&Gauges::default());
        assert!(text.contains(
            "blazar_http_requests_total{operation_id=\"listLeases\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "blazar_http_request_duration_seconds_bucket{operation_id=\"listLeases\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "blazar_http_request_duration_seconds_bucket{operation_id=\"listLeases\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains(
            "blazar_http_request_duration_seconds_count{operation_id=\"listLeases\"} 2\n"
        ));
        assert!(!text.contains("operation_id=\"nope\""));
    }

    #[test]
    fn histograms_are_cumulative_and_sum_in_seconds() {
        let h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        h.observe(-3.0);
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert_eq!(
            out,
            "x_bucket{le=\"1\"} 2\nx_bucket{le=\"10\"} 3\nx_bucket{le=\"+Inf\"} 4\n\
             x_sum 55.5\nx_count 4\n"
        );
    }

    #[test]
    fn event_labels_are_the_runners_names() {
        use crate::domain::lease::{EventType, RunOutcome};
        let types: Vec<String> = EventType::all().map(|t| t.to_string()).collect();
        assert_eq!(types, EVENT_TYPES);
        let outcomes: Vec<String> = RunOutcome::all().map(|o| o.to_string()).collect();
        assert_eq!(EVENT_OUTCOMES, outcomes);
    }

    #[test]
    fn unknown_event_types_and_outcomes_are_not_counted() {
        let m = Metrics::default();
        m.observe_event_run("start_lease", "DONE", 0.2);
        m.observe_event_run("reboot", "DONE", 0.2);
        m.observe_event_run("end_lease", "MAYBE", 0.2);
        let text = m.render(&Gauges::default());
        assert!(
            text.contains(
                "blazar_events_run_total{event_type=\"start_lease\",outcome=\"DONE\"} 1\n"
            )
        );
        assert!(text.contains("blazar_event_lateness_seconds_count{event_type=\"end_lease\"} 0\n"));
        assert!(!text.contains("reboot"));
        assert!(!text.contains("MAYBE"));
    }
}
