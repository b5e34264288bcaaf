//! `blazar-bench`: starts blazar-server on a fresh database, loads hosts and leases through the API,
//! measures each operation at several concurrencies, and prints a table (and JSON) with the server's
//! peak RSS. See docs/performance.md.

mod burst;
mod server;
mod targets;
mod upstream;
mod workload;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use server::{FreshDb, ServerProcess, cpu_seconds_of};
use workload::{Api, Dataset, Job, LoadedLease, OpKind, RowResult};

#[derive(Parser)]
#[command(
    name = "blazar-bench",
    about = "Benchmark blazar-server: fresh database, N hosts, M leases, latency per operation"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: run the server in this process (the harness starts it as a child).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        addr_file: PathBuf,
        #[arg(long, default_value = "info")]
        log_filter: String,
    },
    /// Upstream Blazar 18 and blazar-server side by side: the same driver and workload against
    /// each in one run, and the ratios (docs/performance.md).
    Upstream(upstream::UpstreamArgs),
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Hosts to enrol.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Leases to create over the next year (the list project's leases are among them).
    #[arg(long, default_value_t = 1000)]
    leases: usize,
    /// A PostgreSQL server (postgres://user@host:port/db) on which to create a fresh database;
    /// default: a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the database (and the work directory with server.log) after the run.
    #[arg(long)]
    keep: bool,
    /// Directory for the SQLite file and the server log [default: a new one under the temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Operations per measured row.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// A row stops after this many seconds even if `count` is not reached.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Concurrencies to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Concurrency of the loading phase.
    #[arg(long, default_value_t = 8)]
    load_concurrency: usize,
    /// Rows to measure (comma-separated): create_1pct, create_50pct, show, list_page, list_1000,
    /// update, delete, host_list, availability, start_burst [default: all].
    #[arg(long, value_delimiter = ',')]
    ops: Option<Vec<String>>,
    /// Leases of the project listed by the "list 1,000" row (part of --leases).
    #[arg(long, default_value_t = 1000)]
    list_leases: usize,
    /// Leases of the start burst: all start in the same minute, and the row reads how late their
    /// start events ran (at most a quarter of the hosts, so that they are free); 0: none.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    /// Seed of the generated data (same seed, same data set).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The server's log filter (its access log goes to server.log in the work directory).
    #[arg(long, default_value = "info")]
    server_log: String,
    /// Profile the server during each measured row with `perf record` (call graphs from DWARF),
    /// one file per row in this directory: `<op>-c<concurrency>.data`.
    #[arg(long)]
    perf_dir: Option<PathBuf>,
}

/// One line of the table.
struct Row {
    kind: OpKind,
    concurrency: usize,
    count: usize,
    errors: usize,
    first_error: Option<String>,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    max_ms: f64,
    per_sec: f64,
    wall_s: f64,
    server_cpu_ms_per_op: f64,
    client_cpu_ms_per_op: f64,
    note: Option<String>,
    /// The server's peak RSS (VmHWM) right after this row, in KiB: which row raised it.
    server_hwm_kib: u64,
    /// Not measured (e.g. "unpaged": the server ignores `limit`).
    skipped: bool,
}

impl Row {
    fn from_result(
        kind: OpKind,
        concurrency: usize,
        r: &RowResult,
        server_cpu_s: f64,
        client_cpu_s: f64,
    ) -> Self {
        let mut lat = r.latencies_us.clone();
        lat.sort_unstable();
        let n = lat.len();
        // Nearest rank: the smallest latency with at least p% of the calls at or below it.
        let pct = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
            lat[rank.min(n) - 1] as f64 / 1000.0
        };
        let wall_s = r.wall.as_secs_f64();
        let per_op = |s: f64| if n == 0 { 0.0 } else { s * 1000.0 / n as f64 };
        Row {
            kind,
            concurrency,
            count: n,
            errors: r.errors,
            first_error: r.first_error.clone(),
            p50_ms: pct(50.0),
            p99_ms: pct(99.0),
            mean_ms: if n == 0 {
                0.0
            } else {
                lat.iter().sum::<u64>() as f64 / n as f64 / 1000.0
            },
            max_ms: lat.last().copied().unwrap_or(0) as f64 / 1000.0,
            per_sec: if wall_s > 0.0 { n as f64 / wall_s } else { 0.0 },
            wall_s,
            server_cpu_ms_per_op: per_op(server_cpu_s),
            client_cpu_ms_per_op: per_op(client_cpu_s),
            note: None,
            server_hwm_kib: 0,
            skipped: false,
        }
    }

    fn skipped(kind: OpKind, concurrency: usize, note: &str) -> Self {
        Row {
            kind,
            concurrency,
            count: 0,
            errors: 0,
            first_error: None,
            p50_ms: 0.0,
            p99_ms: 0.0,
            mean_ms: 0.0,
            max_ms: 0.0,
            per_sec: 0.0,
            wall_s: 0.0,
            server_cpu_ms_per_op: 0.0,
            client_cpu_ms_per_op: 0.0,
            note: Some(note.into()),
            server_hwm_kib: 0,
            skipped: true,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "op": self.kind.key(),
            "label": self.kind.label(),
            "concurrency": self.concurrency,
            "count": self.count,
            "errors": self.errors,
            "first_error": self.first_error,
            "p50_ms": round3(self.p50_ms),
            "p99_ms": round3(self.p99_ms),
            "mean_ms": round3(self.mean_ms),
            "max_ms": round3(self.max_ms),
            "ops_per_s": round3(self.per_sec),
            "wall_s": round3(self.wall_s),
            "server_cpu_ms_per_op": round3(self.server_cpu_ms_per_op),
            "client_cpu_ms_per_op": round3(self.client_cpu_ms_per_op),
            "note": self.note,
            "skipped": self.skipped,
            "server_peak_rss_kib_after_row": self.server_hwm_kib,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

const HEADER: &str = "| operation                  |  c | count | err |  p50 ms |  p99 ms |  max ms |   ops/s | srv CPU ms/op | note |";
const RULE: &str = "|----------------------------|---:|------:|----:|--------:|--------:|--------:|--------:|--------------:|------|";

fn table_line(r: &Row) -> String {
    let note = r.note.as_deref().unwrap_or("");
    if r.skipped {
        return format!(
            "| {:<26} | {:>2} | {:>5} | {:>3} | {:>7} | {:>7} | {:>7} | {:>7} | {:>13} | {note} |",
            r.kind.label(),
            r.concurrency,
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-"
        );
    }
    format!(
        "| {:<26} | {:>2} | {:>5} | {:>3} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.1} | {:>13.2} | {note} |",
        r.kind.label(),
        r.concurrency,
        r.count,
        r.errors,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.per_sec,
        r.server_cpu_ms_per_op
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Serve {
            database_url,
            addr_file,
            log_filter,
        }) => {
            // The real server's runtime (and allocator settings).
            let rt = blazar_server::app::runtime().expect("a tokio runtime");
            match rt.block_on(server::serve(database_url, addr_file, log_filter)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("blazar-bench serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Cmd::Upstream(args)) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            match rt.block_on(upstream::side_by_side(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("blazar-bench upstream: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            // The load generator is one thread: it stays off the server's cores as far as it can
            // on a small machine, and 8 requests in flight need no more.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            match rt.block_on(bench(cli.run)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("blazar-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn client_cpu() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The `--ops` name of the start burst (not an `OpKind`: it is one measurement, not a row).
const BURST_KEY: &str = "start_burst";

async fn bench(args: RunArgs) -> Result<(), String> {
    let selected: Vec<OpKind> = match &args.ops {
        None => OpKind::MEASURED.to_vec(),
        Some(keys) => {
            let mut out = Vec::new();
            for k in keys.iter().filter(|k| k.trim() != BURST_KEY) {
                match OpKind::MEASURED.iter().find(|o| o.key() == k.trim()) {
                    Some(o) => out.push(*o),
                    None => return Err(format!("unknown op {k:?} in --ops")),
                }
            }
            out
        }
    };
    if args.hosts == 0 || args.leases == 0 {
        return Err("--hosts and --leases must be at least 1".into());
    }
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "blazar-bench-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
    });
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    let db = FreshDb::create(args.database_url.as_deref(), &work_dir).await?;
    let result = bench_on(&args, &selected, &db, &work_dir).await;
    if args.keep {
        eprintln!("kept: {} and {}", db.label(), work_dir.display());
    } else {
        if let Err(e) = db.drop_db().await {
            eprintln!("warning: {e}");
        }
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    result
}

async fn bench_on(
    args: &RunArgs,
    selected: &[OpKind],
    db: &FreshDb,
    work_dir: &std::path::Path,
) -> Result<(), String> {
    let machine = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu_model(),
        "loadavg_at_start": loadavg(),
    });
    let started = Instant::now();
    let server = ServerProcess::start(db.url(), work_dir, &args.server_log)?;
    eprintln!(
        "server pid {} at {} on {} (started in {:.2} s, migrations included)",
        server.pid(),
        server.base_url,
        db.label(),
        started.elapsed().as_secs_f64()
    );
    let outcome = measure(args, selected, db, &server, machine).await;
    let stopped = server.stop();
    let (text, json_doc) = outcome?;
    if let Err(e) = stopped {
        eprintln!("warning: {e}");
    }
    println!("{text}");
    if let Some(path) = &args.json {
        let out = serde_json::to_string_pretty(&json_doc).expect("JSON");
        std::fs::write(path, out + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Loads and measures; returns the printed report and the JSON document.
async fn measure(
    args: &RunArgs,
    selected: &[OpKind],
    db: &FreshDb,
    server: &ServerProcess,
    mut machine: Value,
) -> Result<(String, Value), String> {
    let api = Api::new(server.base_url.clone());
    let now = chrono::Utc::now().naive_utc();
    let data = Arc::new(Dataset::new(
        args.hosts,
        args.leases,
        args.list_leases,
        args.seed,
        now,
    ));
    let no_leases = Arc::new(Vec::new());
    let no_targets = Arc::new(Vec::new());
    let job = |kind, loaded: &Arc<Vec<LoadedLease>>, targets: &Arc<Vec<String>>, slots, offset| {
        Arc::new(Job {
            api: api.clone(),
            kind,
            data: data.clone(),
            loaded: loaded.clone(),
            targets: targets.clone(),
            slots,
            offset,
        })
    };
    let long = Duration::from_secs(7 * 24 * 3600);

    // Loading.
    eprintln!(
        "loading {} hosts ({} gold, {} with a GPU), then {} leases ({} in project {}; windows 1-7 days x {:.3}) at concurrency {}",
        data.hosts,
        data.gold_hosts(),
        data.hosts.div_ceil(2),
        data.leases,
        data.list_leases,
        workload::LIST_PROJECT,
        data.window_scale,
        args.load_concurrency
    );
    let mut load_rows = Vec::new();
    for (kind, n) in [
        (OpKind::LoadHost, data.hosts),
        (OpKind::LoadLease, data.leases),
    ] {
        let (cpu0, ccpu0) = (server.cpu_seconds(), client_cpu());
        let next = Arc::new(AtomicUsize::new(0));
        let ticker = progress(kind, n, next.clone());
        let r = workload::run_counted(
            job(kind, &no_leases, &no_targets, 1, 0),
            n,
            args.load_concurrency,
            long,
            next,
        )
        .await;
        ticker.abort();
        let row = Row::from_result(
            kind,
            args.load_concurrency,
            &r,
            server.cpu_seconds() - cpu0,
            client_cpu() - ccpu0,
        );
        eprintln!(
            "{}: {} in {:.1} s = {:.1}/s, {} errors{}",
            kind.label(),
            row.count,
            row.wall_s,
            row.per_sec,
            row.errors,
            row.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        if kind == OpKind::LoadLease {
            let loaded: Vec<LoadedLease> = r
                .created
                .iter()
                .map(|(j, id)| LoadedLease {
                    id: id.clone(),
                    end: data.lease(*j).2,
                })
                .collect();
            if loaded.is_empty() {
                return Err(format!(
                    "no lease could be loaded: {}",
                    row.first_error.unwrap_or_default()
                ));
            }
            load_rows.push((row, Some(Arc::new(loaded))));
        } else {
            load_rows.push((row, None));
        }
    }
    let loaded = load_rows[1].1.clone().expect("loaded leases");
    if let Some(done) = db.analyze().await? {
        eprintln!("{done}");
    }
    let (hwm_after_load, rss_after_load) = server.memory_kib();
    let db_after_load = db.size_bytes().await;

    // Is the lease list paged? A server without paging answers `?limit=100` with every lease.
    let probe = api
        .call(
            reqwest::Method::GET,
            "/v1/leases?limit=100",
            &workload::Who::Admin,
            None,
        )
        .await?;
    let paged = probe.json()["leases"]
        .as_array()
        .map(|a| a.len() <= 100)
        .unwrap_or(false);
    if !paged {
        eprintln!("the server ignores ?limit=100: the paged list row is reported as unpaged");
    }

    // Measurement.
    let max = Duration::from_secs(args.max_seconds);
    let mut rows: Vec<Row> = Vec::new();
    let mut updates_done = 0;
    let want = |k: OpKind| selected.contains(&k);
    for &c in &args.concurrency {
        let timed = async |kind: OpKind, job: Arc<Job>, count: usize| -> (Row, RowResult) {
            let perf = args.perf_dir.as_ref().and_then(|dir| {
                server::Perf::start(dir, server.pid(), &format!("{}-c{c}", kind.key()))
            });
            let (cpu0, ccpu0) = (server.cpu_seconds(), client_cpu());
            let r = workload::run(job, count, c, max).await;
            let (cpu1, ccpu1) = (server.cpu_seconds(), client_cpu());
            if let Some(p) = perf {
                p.stop();
            }
            let mut row = Row::from_result(kind, c, &r, cpu1 - cpu0, ccpu1 - ccpu0);
            row.server_hwm_kib = server.memory_kib().0;
            eprintln!("{}", table_line(&row));
            (row, r)
        };
        for kind in [
            OpKind::Show,
            OpKind::ListPage,
            OpKind::List1000,
            OpKind::HostList,
            OpKind::Availability,
        ] {
            if !want(kind) {
                continue;
            }
            if kind == OpKind::ListPage && !paged {
                rows.push(Row::skipped(kind, c, "unpaged"));
                continue;
            }
            // What one call of a list row fetches, counted once (untimed) with full parsing.
            let walk = match kind {
                OpKind::List1000 => Some((
                    workload::LIST_1000_URL,
                    workload::Who::Member(workload::LIST_PROJECT.into()),
                    "leases",
                )),
                OpKind::HostList => Some((workload::HOST_LIST_URL, workload::Who::Admin, "hosts")),
                _ => None,
            };
            let walked = match &walk {
                Some((url, who, key)) => Some(api.count_all(url, who, key).await?),
                None => None,
            };
            let j = job(kind, &loaded, &no_targets, 1, 0);
            let (mut row, _) = timed(kind, j, args.count).await;
            if let Some((items, requests)) = walked {
                row.note = Some(format!(
                    "{items} {} in {requests} request{}",
                    walk.map(|w| w.2).unwrap_or(""),
                    if requests == 1 { "" } else { "s" }
                ));
            }
            rows.push(row);
        }
        if want(OpKind::Update) {
            let j = job(OpKind::Update, &loaded, &no_targets, 1, updates_done);
            let (row, r) = timed(OpKind::Update, j, args.count).await;
            updates_done += r.latencies_us.len();
            rows.push(row);
        }
        // Creates: each row's leases are deleted before the next create row, so the database
        // stays at the loaded size (plus at most one row's leases) and the gold pool is free.
        let mut created_1pct: Option<Vec<String>> = None;
        if want(OpKind::Create1) {
            let j = job(OpKind::Create1, &loaded, &no_targets, args.count, 0);
            let (row, r) = timed(OpKind::Create1, j, args.count).await;
            rows.push(row);
            created_1pct = Some(r.created.into_iter().map(|(_, id)| id).collect());
        }
        if want(OpKind::Delete) {
            let targets = match created_1pct.take() {
                Some(ids) => ids,
                None => {
                    // Not measured here, but deletes need leases of their own.
                    let j = job(OpKind::Create1, &loaded, &no_targets, args.count, 0);
                    let r = workload::run(j, args.count, c, long).await;
                    r.created.into_iter().map(|(_, id)| id).collect()
                }
            };
            let n = targets.len();
            let j = job(OpKind::Delete, &loaded, &Arc::new(targets), 1, 0);
            let (row, _) = timed(OpKind::Delete, j, n).await;
            rows.push(row);
        }
        if let Some(ids) = created_1pct {
            cleanup(&job, &loaded, ids).await?;
        }
        if want(OpKind::Create50) {
            let j = job(OpKind::Create50, &loaded, &no_targets, args.count, 0);
            let (row, r) = timed(OpKind::Create50, j, args.count).await;
            rows.push(row);
            cleanup(
                &job,
                &loaded,
                r.created.into_iter().map(|(_, id)| id).collect(),
            )
            .await?;
        }
    }
    // Last, so that its running leases disturb no other row.
    let burst_wanted = args
        .ops
        .as_ref()
        .is_none_or(|ops| ops.iter().any(|k| k.trim() == BURST_KEY));
    let burst_n = args.burst.min(data.hosts / 4);
    let burst = if burst_wanted && burst_n > 0 {
        eprintln!("start burst: {burst_n} leases starting in the same minute ...");
        let b = burst::run(&api, db.url(), burst_n, args.load_concurrency).await?;
        eprint!("{}", b.report());
        Some(b)
    } else {
        None
    };
    let (peak_kib, rss_kib) = server.memory_kib();
    let db_at_end = db.size_bytes().await;
    machine["loadavg_at_end"] = json!(loadavg());

    // Report: rows grouped by operation in the table's order, then by concurrency.
    rows.sort_by_key(|r| {
        (
            OpKind::MEASURED
                .iter()
                .position(|k| *k == r.kind)
                .unwrap_or(99),
            r.concurrency,
        )
    });
    let mut text = String::new();
    let backend = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    text += &format!(
        "\nblazar-bench: {} hosts, {} leases on {backend}; {} ops per row (max {} s); {} cores ({}), load average {} -> {}\n\n",
        data.hosts,
        loaded.len(),
        args.count,
        args.max_seconds,
        machine["cores"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["loadavg_at_start"].as_str().unwrap_or(""),
        machine["loadavg_at_end"].as_str().unwrap_or(""),
    );
    text += "Loading (through the API):\n";
    for (r, _) in &load_rows {
        text += &format!(
            "  {:<20} {:>7} in {:>7.1} s = {:>7.1}/s, concurrency {}, p50 {:.2} ms, p99 {:.2} ms, {} errors, server CPU {:.2} ms each\n",
            r.kind.label(),
            r.count,
            r.wall_s,
            r.per_sec,
            r.concurrency,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.server_cpu_ms_per_op
        );
        if let Some(e) = &r.first_error {
            text += &format!("    first error: {e}\n");
        }
    }
    text += "\n";
    text += HEADER;
    text += "\n";
    text += RULE;
    text += "\n";
    for r in &rows {
        text += &table_line(r);
        text += "\n";
    }
    for r in rows.iter().filter(|r| r.first_error.is_some()) {
        text += &format!(
            "first error of {} (c={}): {}\n",
            r.kind.label(),
            r.concurrency,
            r.first_error.as_deref().unwrap_or("")
        );
    }
    let mib = |k: u64| k as f64 / 1024.0;
    let bytes_mib = |b: Option<u64>| b.map(|b| b as f64 / 1048576.0);
    text += &format!(
        "\nserver peak RSS (VmHWM): {:.1} MiB (after loading: {:.1} MiB; RSS now {:.1} MiB)\n",
        mib(peak_kib),
        mib(hwm_after_load),
        mib(rss_kib)
    );
    if let (Some(a), Some(b)) = (bytes_mib(db_after_load), bytes_mib(db_at_end)) {
        text += &format!("database size: {a:.1} MiB after loading, {b:.1} MiB at the end\n");
    }
    if let Some(b) = &burst {
        text += &b.report();
    }
    let (targets_text, targets_json) = targets::judge(&targets::RunFigures {
        rows: &rows,
        peak_rss_kib: peak_kib,
        burst: burst.as_ref(),
        hosts: data.hosts,
        leases: loaded.len(),
    });
    text += &targets_text;
    let doc = json!({
        "backend": backend,
        "hosts": data.hosts,
        "gold_hosts": data.gold_hosts(),
        "leases_requested": data.leases,
        "leases_loaded": loaded.len(),
        "list_project_leases": data.list_leases,
        "window_scale": data.window_scale,
        "count_per_row": args.count,
        "max_seconds_per_row": args.max_seconds,
        "lease_list_paged": paged,
        "machine": machine,
        "load": load_rows.iter().map(|(r, _)| r.to_json()).collect::<Vec<_>>(),
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "server_peak_rss_kib": peak_kib,
        "server_peak_rss_after_load_kib": hwm_after_load,
        "server_rss_after_load_kib": rss_after_load,
        "server_rss_at_end_kib": rss_kib,
        "db_bytes_after_load": db_after_load,
        "db_bytes_at_end": db_at_end,
        "start_burst": burst.as_ref().map(burst::BurstResult::to_json),
        "targets": targets_json,
    });
    Ok((text, doc))
}

/// Deletes leases a create row made (untimed), so the next rows see the loaded database.
async fn cleanup<F>(job: &F, loaded: &Arc<Vec<LoadedLease>>, ids: Vec<String>) -> Result<(), String>
where
    F: Fn(OpKind, &Arc<Vec<LoadedLease>>, &Arc<Vec<String>>, usize, usize) -> Arc<Job>,
{
    let n = ids.len();
    let r = workload::run(
        job(OpKind::Delete, loaded, &Arc::new(ids), 1, 0),
        n,
        8,
        Duration::from_secs(3600),
    )
    .await;
    match r.first_error {
        Some(e) => Err(format!("cleanup of created leases failed: {e}")),
        None => Ok(()),
    }
}

/// Prints loading progress every 15 s (the full load can take many minutes).
fn progress(kind: OpKind, n: usize, next: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    let start = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let started = next.load(Ordering::Relaxed).min(n);
            let s = start.elapsed().as_secs_f64();
            eprintln!(
                "  {}: {started} of {n} started in {s:.0} s ({:.0}/s)",
                kind.label(),
                started as f64 / s
            );
        }
    })
}
