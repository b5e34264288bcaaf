//! What a browser test needs around its Node script: Debian's Chromium (installed with apt-get
//! when missing), playwright-core from tests/browser/package-lock.json (`npm ci` under
//! target/tmp), commands run with a time limit in their own process group, and PNG checks.
//! The same approach as tests/browser.rs. Include with
//! `#[path = "support/browser.rs"] mod browser;` next to `mod support`.
#![allow(dead_code)]

use std::{
    fs::File,
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::support;

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// apt on a fresh machine downloads ~100 MB; generous, but a hung mirror still ends the test.
const APT_LIMIT: Duration = Duration::from_secs(20 * 60);
const NPM_LIMIT: Duration = Duration::from_secs(5 * 60);

pub struct Finished {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command with a time limit, in its own process group so that a timeout also ends what
/// it started (node starts Chromium). Output goes to files in `logs`, read back afterwards.
pub fn run_limited(cmd: &mut Command, limit: Duration, logs: &Path, name: &str) -> Finished {
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
pub fn ensure_chromium(logs: &Path) {
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

/// target/tmp/browser-node/ with `scripts` (and package.json, package-lock.json) copied from
/// tests/browser/ and `npm ci`'s node_modules; reinstalled when package-lock.json (or node's
/// version) differs from the one installed there. The source tree stays free of node_modules.
pub fn ensure_node_modules(logs: &Path, scripts: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let dir = support::tool_dir("browser-node");
    let lock = File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    for f in ["package.json", "package-lock.json"].iter().chain(scripts) {
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
pub fn png(path: &Path) -> (u32, u32, usize) {
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
