//! The one stop signal of the process, as in mini-redis's `Shutdown`: every long-lived task gets
//! a clone and selects on it; work that must not be lost at exit (webhook deliveries, `on-end`
//! posts) is tracked so that exit can wait for it, for a bounded time.
//!
//! One `watch` channel carries the phase. `Running` turns `Stopping` when the process is asked
//! to stop: loops (the server, the runner, Nova polling, the change listener) finish what they
//! are doing and return. Tracked work carries on until [`Shutdown::drain`] gives up on it and
//! turns the phase `Abandoned`, which ends it where it waits. It never reads the wall clock:
//! the bound is a tokio timer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Stopping,
    Abandoned,
}

/// A cloneable handle on the stop signal and on the count of tracked work.
#[derive(Clone)]
pub struct Shutdown {
    phase: Arc<watch::Sender<Phase>>,
    work: Arc<Pending>,
}

/// Tracked work not finished yet, and a wake-up for whoever waits for it to reach zero.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

/// One piece of tracked work; finished (uncounted) when dropped, however its task ends.
#[must_use = "the work counts as pending only while its guard lives"]
pub struct Tracked {
    work: Arc<Pending>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.work.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.work.idle.notify_waiters();
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            phase: Arc::new(watch::Sender::new(Phase::Running)),
            work: Arc::default(),
        }
    }

    /// Asks every task to stop (idempotent).
    pub fn trigger(&self) {
        self.advance(Phase::Stopping);
    }

    /// Whether stopping was asked (checked between two units of work).
    pub fn is_triggered(&self) -> bool {
        *self.phase.borrow() >= Phase::Stopping
    }

    /// Resolves once stopping was asked (at once if it already was): the branch a loop selects on.
    pub async fn triggered(&self) {
        self.reached(Phase::Stopping).await;
    }

    /// Counts one piece of work that exit should wait for, until the guard drops.
    pub fn track(&self) -> Tracked {
        self.work.count.fetch_add(1, Ordering::AcqRel);
        Tracked {
            work: self.work.clone(),
        }
    }

    /// Tracked work not finished yet.
    pub fn pending(&self) -> usize {
        self.work.count.load(Ordering::Acquire)
    }

    /// Runs `work` until it ends or until [`Shutdown::drain`] gives up on it; `None` if given up.
    /// Takes the handle by value, so that the future can be spawned.
    pub async fn unless_abandoned<T>(self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            out = work => Some(out),
            _ = self.reached(Phase::Abandoned) => None,
        }
    }

    /// Waits up to `bound` for tracked work to finish, then abandons what is left; returns how
    /// many pieces were abandoned.
    pub async fn drain(&self, bound: Duration) -> usize {
        let idle = async {
            loop {
                // Registered before the count is read, so that a last drop in between is seen.
                let woken = self.work.idle.notified();
                if self.pending() == 0 {
                    return;
                }
                woken.await;
            }
        };
        let left = match tokio::time::timeout(bound, idle).await {
            Ok(()) => 0,
            Err(_) => self.pending(),
        };
        self.advance(Phase::Abandoned);
        left
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|p| {
            let later = to > *p;
            if later {
                *p = to;
            }
            later
        });
    }

    async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn triggered_resolves_for_clones_made_before_and_after() {
        let s = Shutdown::new();
        let before = s.clone();
        assert!(!before.is_triggered());
        let waiting = tokio::spawn(async move { before.triggered().await });
        s.trigger();
        waiting.await.unwrap();
        let after = s.clone();
        assert!(after.is_triggered());
        after.triggered().await;
    }

    #[tokio::test]
    async fn drain_waits_for_tracked_work_and_reports_none_dropped() {
        let s = Shutdown::new();
        let guard = s.track();
        let done = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(guard);
        });
        assert_eq!(s.drain(Duration::from_secs(5)).await, 0);
        done.await.unwrap();
        assert_eq!(s.pending(), 0);
    }

    #[tokio::test]
    async fn drain_abandons_work_past_the_bound() {
        let s = Shutdown::new();
        let worker = s.clone();
        let task = tokio::spawn(async move {
            let guard = worker.track();
            let out = worker.unless_abandoned(std::future::pending::<()>()).await;
            drop(guard);
            out
        });
        tokio::task::yield_now().await;
        while s.pending() == 0 {
            tokio::task::yield_now().await;
        }
        let started = tokio::time::Instant::now();
        assert_eq!(s.drain(Duration::from_millis(100)).await, 1);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(task.await.unwrap(), None);
        assert_eq!(s.pending(), 0);
    }
}
