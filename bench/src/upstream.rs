//! Side by side with upstream Blazar 18: the same load driver (../shared/upstream/bench.py), the
//! same workload and the same machine, against upstream and against blazar-server, one after the
//! other in one run, and the ratio of each figure.
//!
//! Both servers start on a fresh SQLite database. Upstream is installed and started by
//! `upstream.sh` (its README), blazar-server by this harness (`ServerProcess`, as in the main run).
//! One driver for both means neither side is measured by code written for it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

use crate::server::{FreshDb, ServerProcess};

/// The options of `blazar-bench upstream`.
#[derive(clap::Args, Clone)]
pub struct UpstreamArgs {
    /// The directory with upstream.sh and bench.py.
    #[arg(long, default_value = "../shared/upstream")]
    pub upstream_dir: PathBuf,
    /// Sizes to run, as HOSTSxLEASES. Upstream's lease create costs ~0.5 s and grows with the
    /// reservations it holds, so the larger size bounds the lease count for both sides.
    #[arg(long, value_delimiter = ',', default_value = "50x200,1000x200")]
    pub sizes: Vec<String>,
    /// Worker threads of the driver (upstream's threaded server fails with "database is locked"
    /// under concurrency; see its README).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// GET /v1/leases requests in the list phase.
    #[arg(long, default_value_t = 20)]
    pub list_repeat: usize,
    /// Options passed to upstream's runner after `--fresh` (e.g. `--single-threaded`).
    #[arg(long, allow_hyphen_values = true)]
    pub upstream_opt: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The driver's phases, in its order, with our labels.
const PHASES: &[(&str, &str)] = &[
    ("host_create", "host enrol"),
    ("lease_create", "lease create (1 host)"),
    ("lease_show", "lease show"),
    ("lease_list", "lease list (all)"),
    ("lease_update", "lease update (name)"),
    ("lease_delete", "lease delete"),
    ("host_delete", "host delete"),
];

struct Side {
    /// bench.py's JSON result.
    result: Value,
    /// The server's peak RSS (VmHWM) in KiB, read before it stopped.
    peak_rss_kib: u64,
}

pub async fn side_by_side(args: UpstreamArgs) -> Result<(), String> {
    let dir = args
        .upstream_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.upstream_dir.display()))?;
    for f in ["upstream.sh", "bench.py"] {
        if !dir.join(f).exists() {
            return Err(format!("{} has no {f}", dir.display()));
        }
    }
    let mut text = String::new();
    let mut sizes_json = Vec::new();
    for size in &args.sizes {
        let (hosts, leases) = parse_size(size)?;
        let work = std::env::temp_dir().join(format!(
            "blazar-bench-upstream-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        eprintln!("{hosts} hosts / {leases} leases: upstream Blazar 18 ...");
        let size = Size { hosts, leases };
        let upstream = run_upstream(&args, &dir, &work.join("upstream"), size);
        eprintln!("{hosts} hosts / {leases} leases: blazar-server ...");
        let ours = run_ours(&args, &dir, &work.join("ours"), size).await;
        let (upstream, ours) = match (upstream, ours) {
            (Ok(u), Ok(o)) => (u, o),
            (u, o) => {
                eprintln!("kept {} for inspection", work.display());
                return Err([u.err(), o.err()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "));
            }
        };
        let _ = std::fs::remove_dir_all(&work);
        let (t, j) = compare(hosts, leases, &args, &upstream, &ours);
        eprint!("{t}");
        text += &t;
        sizes_json.push(j);
    }
    println!("{text}");
    if let Some(path) = &args.json {
        let doc = json!({
            "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "concurrency": args.concurrency,
            "sizes": sizes_json,
        });
        let out = serde_json::to_string_pretty(&doc).expect("JSON");
        std::fs::write(path, out + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--sizes: {s:?} is not HOSTSxLEASES (e.g. 50x200)");
    let (h, l) = s.trim().split_once('x').ok_or_else(bad)?;
    match (h.parse(), l.parse()) {
        (Ok(h), Ok(l)) if h > 0 && l > 0 => Ok((h, l)),
        _ => Err(bad()),
    }
}

/// One size of the comparison: hosts enrolled and leases created by the driver.
#[derive(Clone, Copy)]
struct Size {
    hosts: usize,
    leases: usize,
}

fn run_upstream(args: &UpstreamArgs, dir: &Path, work: &Path, size: Size) -> Result<Side, String> {
    let port = free_port()?;
    let script = dir.join("upstream.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(port.to_string())
        .arg(work)
        .arg("--fresh")
        .args(&args.upstream_opt)
        .status()
        .map_err(|e| format!("upstream.sh start: {e}"))?;
    if !status.success() {
        let log = std::fs::read_to_string(work.join("upstream.log")).unwrap_or_default();
        return Err(format!("upstream.sh start failed ({status}):\n{log}"));
    }
    let pid = std::fs::read_to_string(work.join("upstream.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let result = drive(args, dir, work, &format!("http://127.0.0.1:{port}"), size);
    let peak_rss_kib = pid.map(peak_rss_of).unwrap_or(0);
    let _ = Command::new("bash")
        .arg(&script)
        .arg("stop")
        .arg(work)
        .status();
    Ok(Side {
        result: result?,
        peak_rss_kib,
    })
}

async fn run_ours(
    args: &UpstreamArgs,
    dir: &Path,
    work: &Path,
    size: Size,
) -> Result<Side, String> {
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let db = FreshDb::create(None, work).await?;
    let server = ServerProcess::start(db.url(), work, "warn")?;
    let result = drive(args, dir, work, &server.base_url, size);
    let peak_rss_kib = server.memory_kib().0;
    if let Err(e) = server.stop() {
        eprintln!("warning: {e}");
    }
    Ok(Side {
        result: result?,
        peak_rss_kib,
    })
}

/// Runs bench.py against `base` and returns its JSON.
fn drive(
    args: &UpstreamArgs,
    dir: &Path,
    work: &Path,
    base: &str,
    size: Size,
) -> Result<Value, String> {
    let out = work.join("bench.json");
    let status = Command::new("python3")
        .arg(dir.join("bench.py"))
        .args(["--base", base])
        .args(["--hosts", &size.hosts.to_string()])
        .args(["--leases", &size.leases.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--list-repeat", &args.list_repeat.to_string()])
        .arg("--json-out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("bench.py: {e}"))?;
    let text = std::fs::read_to_string(&out)
        .map_err(|e| format!("bench.py wrote no result ({status}): {e}"))?;
    // A run with errors still has figures; the errors are shown in the table.
    serde_json::from_str(&text).map_err(|e| format!("bench.py's JSON: {e}"))
}

fn compare(
    hosts: usize,
    leases: usize,
    args: &UpstreamArgs,
    upstream: &Side,
    ours: &Side,
) -> (String, Value) {
    let mut text = format!(
        "\n{hosts} hosts, {leases} leases, concurrency {}, SQLite, the same driver (bench.py) against both:\n\n\
         | operation | upstream p50 / mean ms | errors | blazar-server p50 / mean ms | errors | upstream ÷ ours (p50) | (mean) |\n\
         |---|--:|--:|--:|--:|--:|--:|\n",
        args.concurrency
    );
    let mut rows = Vec::new();
    let op = |side: &Side, key: &str| side.result["ops"][key].clone();
    for (key, label) in PHASES {
        let (u, o) = (op(upstream, key), op(ours, key));
        if u.is_null() || o.is_null() {
            continue;
        }
        let f = |v: &Value, k: &str| v[k].as_f64();
        let ratio = |k: &str| match (f(&u, k), f(&o, k)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let ms = |v: &Value| {
            format!(
                "{} / {}",
                f(v, "p50_ms").map_or("-".into(), |x| format!("{x:.2}")),
                f(v, "mean_ms").map_or("-".into(), |x| format!("{x:.2}"))
            )
        };
        let show = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.1}x"));
        text += &format!(
            "| {label} | {} | {} | {} | {} | {} | {} |\n",
            ms(&u),
            u["errors"],
            ms(&o),
            o["errors"],
            show(ratio("p50_ms")),
            show(ratio("mean_ms"))
        );
        rows.push(json!({
            "op": key,
            "upstream": u,
            "ours": o,
            "ratio_p50": ratio("p50_ms"),
            "ratio_mean": ratio("mean_ms"),
        }));
    }
    let mib = |k: u64| k as f64 / 1024.0;
    text += &format!(
        "\npeak RSS: upstream {:.1} MiB, blazar-server {:.1} MiB; leases seen by a list: upstream {}, ours {}\n",
        mib(upstream.peak_rss_kib),
        mib(ours.peak_rss_kib),
        upstream.result["leases_seen_in_list"],
        ours.result["leases_seen_in_list"]
    );
    let doc = json!({
        "hosts": hosts,
        "leases": leases,
        "ops": rows,
        "upstream_peak_rss_kib": upstream.peak_rss_kib,
        "ours_peak_rss_kib": ours.peak_rss_kib,
    });
    (text, doc)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// VmHWM of a process, in KiB (0 when it cannot be read).
fn peak_rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("50x200"), Ok((50, 200)));
        assert!(parse_size("50").is_err());
        assert!(parse_size("0x5").is_err());
    }
}
