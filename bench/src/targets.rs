//! Issue 16's performance targets, each judged against the figures of this run: the table the
//! benchmark prints last, so a run says by itself which targets hold.
//!
//! The targets are stated for 10,000 hosts and 100,000 leases on this 2-core machine. A run of
//! another size still prints them (with a line saying so), because the growth curve is read
//! against the same thresholds.

use serde_json::{Value, json};

use crate::{Row, burst::BurstResult, workload::OpKind};

/// Which figure of a row a target reads.
#[derive(Clone, Copy)]
enum Stat {
    P50,
    P99,
    PerSec,
}

/// Where a target's figure comes from.
#[derive(Clone, Copy)]
enum Source {
    Row(OpKind, usize, Stat),
    PeakRssMib,
    /// The start burst: seconds from the events' time until the last one is DONE.
    BurstAllDoneS,
    /// The start burst: p99 of each event's lateness (DONE time minus its time), ms.
    BurstLatenessP99Ms,
}

struct Target {
    label: &'static str,
    source: Source,
    /// `true`: the figure must be at most `limit`; `false`: at least.
    at_most: bool,
    limit: f64,
    unit: &'static str,
}

const fn row(kind: OpKind, c: usize, stat: Stat) -> Source {
    Source::Row(kind, c, stat)
}

const TARGETS: &[Target] = &[
    Target {
        label: "lease list, page of 100, c=1 p50",
        source: row(OpKind::ListPage, 1, Stat::P50),
        at_most: true,
        limit: 1.0,
        unit: "ms",
    },
    Target {
        label: "lease list, page of 100, c=1 p99",
        source: row(OpKind::ListPage, 1, Stat::P99),
        at_most: true,
        limit: 2.0,
        unit: "ms",
    },
    Target {
        label: "lease list, one project's 1,000, c=1 p50",
        source: row(OpKind::List1000, 1, Stat::P50),
        at_most: true,
        limit: 10.0,
        unit: "ms",
    },
    Target {
        label: "host list, all hosts, c=1 p50",
        source: row(OpKind::HostList, 1, Stat::P50),
        at_most: true,
        limit: 15.0,
        unit: "ms",
    },
    Target {
        label: "lease show, c=1 p50",
        source: row(OpKind::Show, 1, Stat::P50),
        at_most: true,
        limit: 0.3,
        unit: "ms",
    },
    Target {
        label: "lease create, filter 1%, c=1 p50",
        source: row(OpKind::Create1, 1, Stat::P50),
        at_most: true,
        limit: 1.0,
        unit: "ms",
    },
    Target {
        label: "lease create, filter 50%, c=1 p50",
        source: row(OpKind::Create50, 1, Stat::P50),
        at_most: true,
        limit: 1.0,
        unit: "ms",
    },
    Target {
        label: "lease create, filter 1%, c=8 throughput",
        source: row(OpKind::Create1, 8, Stat::PerSec),
        at_most: false,
        limit: 2500.0,
        unit: "/s",
    },
    Target {
        label: "lease create, filter 1%, c=8 p99",
        source: row(OpKind::Create1, 8, Stat::P99),
        at_most: true,
        limit: 5.0,
        unit: "ms",
    },
    Target {
        label: "lease update (+1 day), c=1 p50",
        source: row(OpKind::Update, 1, Stat::P50),
        at_most: true,
        limit: 1.5,
        unit: "ms",
    },
    Target {
        label: "peak RSS of the server",
        source: Source::PeakRssMib,
        at_most: true,
        limit: 100.0,
        unit: "MiB",
    },
    Target {
        label: "start burst: all DONE after their time",
        source: Source::BurstAllDoneS,
        at_most: true,
        limit: 1.0,
        unit: "s",
    },
    Target {
        label: "start burst: event lateness p99",
        source: Source::BurstLatenessP99Ms,
        at_most: true,
        limit: 50.0,
        unit: "ms",
    },
];

/// The size the targets are stated for.
pub const TARGET_HOSTS: usize = 10_000;
pub const TARGET_LEASES: usize = 100_000;

/// The figures a run gives the judge.
pub struct RunFigures<'a> {
    pub rows: &'a [Row],
    pub peak_rss_kib: u64,
    pub burst: Option<&'a BurstResult>,
    pub hosts: usize,
    pub leases: usize,
}

impl RunFigures<'_> {
    /// A target's figure, `None` when this run did not measure it (or the row failed).
    fn value(&self, source: Source) -> Option<f64> {
        match source {
            Source::Row(kind, c, stat) => {
                let r = self
                    .rows
                    .iter()
                    .find(|r| r.kind == kind && r.concurrency == c && !r.skipped)?;
                if r.count == 0 || r.errors > 0 {
                    return None;
                }
                Some(match stat {
                    Stat::P50 => r.p50_ms,
                    Stat::P99 => r.p99_ms,
                    Stat::PerSec => r.per_sec,
                })
            }
            Source::PeakRssMib => Some(self.peak_rss_kib as f64 / 1024.0),
            Source::BurstAllDoneS => self
                .burst
                .filter(|b| b.all_done())
                .map(|b| b.last_done_after_s),
            Source::BurstLatenessP99Ms => self
                .burst
                .filter(|b| b.all_done())
                .map(|b| b.lateness_p99_ms),
        }
    }
}

/// The targets table (text) and the same as JSON.
pub fn judge(run: &RunFigures) -> (String, Value) {
    let mut text = String::from("\nIssue 16 targets");
    if (run.hosts, run.leases) != (TARGET_HOSTS, TARGET_LEASES) {
        text += &format!(
            " (stated for {TARGET_HOSTS} hosts and {TARGET_LEASES} leases; this run has {} and {})",
            run.hosts, run.leases
        );
    }
    text += ":\n\n| target | limit | measured | holds |\n|---|--:|--:|---|\n";
    let mut out = Vec::new();
    let (mut held, mut measured) = (0, 0);
    for t in TARGETS {
        let v = run.value(t.source);
        let holds = v.map(|v| {
            if t.at_most {
                v <= t.limit
            } else {
                v >= t.limit
            }
        });
        let limit = format!(
            "{} {} {}",
            if t.at_most { "≤" } else { "≥" },
            t.limit,
            t.unit
        );
        let shown = v.map_or_else(
            || "not measured".to_string(),
            |v| format!("{v:.2} {}", t.unit),
        );
        let verdict = match holds {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        if let Some(h) = holds {
            measured += 1;
            held += usize::from(h);
        }
        text += &format!("| {} | {limit} | {shown} | {verdict} |\n", t.label);
        out.push(json!({
            "target": t.label,
            "limit": t.limit,
            "at_most": t.at_most,
            "unit": t.unit,
            "measured": v,
            "holds": holds,
        }));
    }
    text += &format!("\n{held} of {measured} measured targets hold.\n");
    (text, Value::Array(out))
}
