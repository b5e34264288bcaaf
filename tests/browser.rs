//! Browser test of Swagger UI at /docs: Debian's Chromium driven by playwright-core
//! (tests/browser/swagger_ui.mjs) against the real app; installs both itself when missing.

#[path = "support/mod.rs"]
mod support;

use std::{
    fs::File,
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Sources of the Node side, copied next to the node_modules they need (under target/tmp), so the
/// source tree stays free of node_modules.
const NODE_FILES: [&str; 3] = ["package.json", "package-lock.json", "swagger_ui.mjs"];
/// apt on a fresh machine downloads ~100 MB; generous, but a hung mirror still ends the test.
const APT_LIMIT: Duration = Duration::from_secs(20 * 60);
const NPM_LIMIT: Duration = Duration::from_secs(5 * 60);
/// The script's own steps time out after 30 s each; this catches a hung browser or node.
const SCRIPT_LIMIT: Duration = Duration::from_secs(4 * 60);

struct Finished {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs a command with a time limit, in its own process group so that a timeout also ends what
/// it started (node starts Chromium). Output goes to files in `logs`, read back afterwards.
fn run_limited(cmd: &mut Command, limit: Duration, logs: &Path, name: &str) -> Finished {
    let shown = format!("{cmd:?}");
    let out_path = logs.join(format!("{name}.stdout"));
    let err_path = logs.join(format!("{name}.stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            // The group id is the child's pid (process_group(0)): this ends only what we started.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |p: &Path| {
        let mut s = String::new();
        File::open(p).unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    let Some(status) = status else {
        panic!(
            "{shown} did not finish within {limit:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        );
    };
    Finished {
        success: status.success(),
        stdout,
        stderr,
    }
}

#[track_caller]
fn must(cmd: &mut Command, limit: Duration, logs: &Path, name: &str) -> Finished {
    let shown = format!("{cmd:?}");
    let f = run_limited(cmd, limit, logs, name);
    assert!(
        f.success,
        "{shown} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        f.stdout, f.stderr
    );
    f
}

/// Debian's chromium, installed with apt-get when /usr/bin/chromium is missing (a fresh CI
/// machine). Playwright's own browser download does not work here, hence the system browser.
fn ensure_chromium(logs: &Path) {
    let lock = File::create(logs.join("apt.lock")).unwrap();
    lock.lock().unwrap(); // another test process installing waits here
    if Path::new(CHROMIUM).exists() {
        return;
    }
    let uid = support::run(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "{CHROMIUM} is missing and this test can install it only as root: \
         run `apt-get install -y chromium` first"
    );
    let started = Instant::now();
    // Wait for the dpkg lock instead of failing when another apt-get is running on the machine.
    let apt = |args: &[&str], name: &str| {
        must(
            Command::new("apt-get")
                .args(["-o", "DPkg::Lock::Timeout=600"])
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            APT_LIMIT,
            logs,
            name,
        );
    };
    apt(&["update"], "apt-update");
    apt(&["install", "-y", "chromium"], "apt-install");
    assert!(
        Path::new(CHROMIUM).exists(),
        "apt-get installed chromium but {CHROMIUM} is missing"
    );
    eprintln!("installed chromium with apt-get in {:?}", started.elapsed());
}

/// A directory under target/tmp with the Node sources and `npm ci`'s node_modules; reinstalled
/// when package-lock.json (or node's version) differs from the one installed there.
fn ensure_node_modules(logs: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let dir = support::tool_dir("browser-node");
    let lock = File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    for f in NODE_FILES {
        std::fs::copy(src.join(f), dir.join(f))
            .unwrap_or_else(|e| panic!("cannot copy tests/browser/{f}: {e}"));
    }
    let node = support::run(Command::new("node").arg("--version"));
    let wanted = format!(
        "{}{}",
        String::from_utf8_lossy(&node.stdout),
        std::fs::read_to_string(src.join("package-lock.json")).unwrap()
    );
    let marker = dir.join(".installed");
    let installed = dir
        .join("node_modules/playwright-core/package.json")
        .exists();
    if installed && std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    let started = Instant::now();
    let _ = std::fs::remove_file(&marker);
    // `npm ci` installs exactly the lock file's versions (and removes a stale node_modules).
    must(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
        NPM_LIMIT,
        logs,
        "npm-ci",
    );
    std::fs::write(&marker, wanted).unwrap();
    eprintln!("npm ci in {:?}", started.elapsed());
    dir
}

/// Width, height (from the IHDR chunk, checking the signature on the way) and size of a PNG file.
fn png(path: &Path) -> (u32, u32, usize) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&bytes[16..20]), be(&bytes[20..24]), bytes.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_lists_every_operation_and_executes_list_leases() {
    let logs = support::tool_dir("browser");
    let node_dir = tokio::task::spawn_blocking({
        let logs = logs.clone();
        move || {
            ensure_chromium(&logs);
            ensure_node_modules(&logs)
        }
    })
    .await
    .unwrap();

    // A real lease in the database, so that "Execute" shows one in the body.
    let app = support::spawn_live(|_| {}).await;
    app.host("compute-1", json!({ "vcpus": 16 })).await;
    let end = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let lease = app
        .lease("swagger-ui-lease", "now", &end, 1, 1, "")
        .await
        .expect(202)
        .body["lease"]
        .clone();
    let lease_id = lease["id"].as_str().expect("lease id").to_string();

    let screenshot = logs.join("swagger.png");
    let detail = logs.join("swagger-list-leases.png");
    // Screenshots from an earlier run must not pass for this run's.
    for old in [&screenshot, &detail, &logs.join("swagger.failed.png")] {
        let _ = std::fs::remove_file(old);
    }

    let started = Instant::now();
    let base = app.base.clone();
    let shot = screenshot.clone();
    // Blocking: the in-process server keeps serving on the runtime's workers meanwhile.
    let done = tokio::task::spawn_blocking(move || {
        run_limited(
            Command::new("node")
                .arg(node_dir.join("swagger_ui.mjs"))
                .arg(&base)
                .arg(&shot)
                .arg(&lease_id)
                .env("CHROMIUM", CHROMIUM),
            SCRIPT_LIMIT,
            &logs,
            "swagger_ui",
        )
    })
    .await
    .unwrap();
    eprintln!(
        "swagger_ui.mjs in {:?}\n{}{}",
        started.elapsed(),
        done.stdout,
        done.stderr
    );
    assert!(
        done.success,
        "the browser check failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        done.stdout, done.stderr
    );
    assert!(
        done.stdout.contains("PASS swagger-ui"),
        "the script exited 0 without its PASS line:\n{}",
        done.stdout
    );

    // The full page: 17 operations plus an open response are far taller than the 900 px
    // viewport; a blank or error page would be small in both pixels and bytes.
    let (width, height, len) = png(&screenshot);
    assert!(
        width >= 1280 && height > 3000 && len > 200_000,
        "full-page screenshot is {width}x{height}, {len} bytes"
    );
    // GET /v1/leases from its summary to the live response: the lease JSON alone is ~600 px.
    let (width, height, len) = png(&detail);
    assert!(
        width > 1000 && height > 800 && len > 50_000,
        "GET /v1/leases screenshot is {width}x{height}, {len} bytes"
    );
}
