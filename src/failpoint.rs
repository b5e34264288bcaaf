//! Crash injection for tests: `BLAZAR_FAILPOINTS=runner-after-act` makes the process kill itself
//! with SIGKILL when it reaches that point, as `kill -9` would, at the one instant a test needs
//! (here: after Nova acted, before the outcome is recorded). Unset, it costs one load of a static.

use std::sync::OnceLock;

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("BLAZAR_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Kills the process (SIGKILL: no destructor, no flush) if failpoint `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|a| a == name) {
        tracing::error!(failpoint = name, "failpoint reached: killing the process");
        // SAFETY: kill(2) on our own pid; nothing after it runs.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
