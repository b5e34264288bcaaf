//! The runner's wake-up bell: lease changes ring it so that the sleeping runner re-reads the
//! events table when the next event may have come earlier than it planned.
//!
//! It holds no state but the runner's planned wake-up, so that both the service layer (which
//! rings) and the runner (which sleeps on it) can use it without depending on each other.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::NaiveDateTime;
use tokio::sync::Notify;

/// Rings the runner when a lease change may have brought an event earlier than the runner's
/// planned wake-up. Creating a lease in the future, the common case, then costs the runner
/// nothing; while the runner is awake every ring counts.
#[derive(Debug)]
pub struct Bell {
    notify: Notify,
    /// When the runner plans to wake (ms since the epoch), or `AWAKE`.
    planned: AtomicI64,
}

const AWAKE: i64 = i64::MIN;

impl Default for Bell {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            planned: AtomicI64::new(AWAKE),
        }
    }
}

impl Bell {
    /// A change brought an event due at `earliest`.
    pub fn ring_for(&self, earliest: NaiveDateTime) {
        let planned = self.planned.load(Ordering::SeqCst);
        if planned == AWAKE || earliest.and_utc().timestamp_millis() < planned {
            self.notify.notify_one();
        }
    }

    /// Something changed that the runner must look at.
    pub fn ring(&self) {
        self.notify.notify_one();
    }

    /// The runner is awake: every ring counts until it sleeps again.
    pub(super) fn awake(&self) {
        self.planned.store(AWAKE, Ordering::SeqCst);
    }

    /// The runner sleeps until `t` unless rung for something earlier.
    pub(super) fn sleeping_until(&self, t: NaiveDateTime) {
        self.planned
            .store(t.and_utc().timestamp_millis(), Ordering::SeqCst);
    }

    /// Resolves at the next ring (or at once, if a ring came while the runner was awake).
    pub(super) async fn rung(&self) {
        self.notify.notified().await
    }
}
