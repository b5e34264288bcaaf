//! Outgoing notifications: a JSON POST to every configured URL for each lease event and change
//! (upstream emits these on its message bus as `lease.create`, `lease.event.start_lease`, ...).
//!
//! `emit` never blocks: payloads go to a bounded queue that a background task drains, delivering
//! each to each URL with retries and exponential backoff. When the queue is full the payload is
//! dropped with a warning rather than slowing the API or the runner down.
//!
//! Each queued payload and each delivery in flight is tracked by the process's [`Shutdown`]: at
//! exit they are drained for `shutdown_drain_seconds`, then abandoned (docs/lifecycle.md).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use crate::{
    metrics::Metrics,
    shutdown::{Shutdown, Tracked},
};

const QUEUE: usize = 10_000;
const PARALLEL_DELIVERIES: usize = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_backoff: Duration,
}

#[derive(Clone, Default)]
pub struct Notifier {
    tx: Option<mpsc::Sender<(Value, Tracked)>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl Notifier {
    /// A notifier that sends nothing (no URL configured).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the delivery task, counting deliveries in `metrics`; it runs until `shutdown`
    /// abandons what is left. Must be called inside a tokio runtime.
    pub fn start(
        urls: Vec<String>,
        policy: RetryPolicy,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Self {
        if urls.is_empty() {
            return Self {
                tx: None,
                metrics,
                shutdown,
            };
        }
        let (tx, mut rx) = mpsc::channel::<(Value, Tracked)>(QUEUE);
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("http client");
        let urls: Arc<[String]> = urls.into();
        let slots = Arc::new(Semaphore::new(PARALLEL_DELIVERIES));
        let counted = metrics.clone();
        let stop = shutdown.clone();
        // Not stopped by the stop signal: what is queued then is still delivered, until the
        // drain gives up (and the payloads left in the queue drop with it, uncounting them).
        tokio::spawn(stop.clone().unless_abandoned(async move {
            while let Some((payload, queued)) = rx.recv().await {
                let body = Arc::new(payload.to_string());
                for url in urls.iter() {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    // Tracked before the queued payload's guard drops, so the count never
                    // reads zero while this payload still has URLs to go.
                    let in_flight = stop.track();
                    let (client, url, body) = (client.clone(), url.clone(), body.clone());
                    let metrics = counted.clone();
                    tokio::spawn(stop.clone().unless_abandoned(async move {
                        let d = deliver(&client, &url, &body, policy).await;
                        let w = &metrics.webhooks;
                        w.attempt_failures
                            .fetch_add(d.failed_attempts.into(), Ordering::Relaxed);
                        if d.delivered { &w.delivered } else { &w.failed }
                            .fetch_add(1, Ordering::Relaxed);
                        drop((slot, in_flight));
                    }));
                }
                drop(queued);
            }
        }));
        Self {
            tx: Some(tx),
            metrics,
            shutdown,
        }
    }

    /// Queues a notification; never waits.
    pub fn emit(&self, payload: Value) {
        if let Some(tx) = &self.tx
            && let Err(e) = tx.try_send((payload, self.shutdown.track()))
        {
            self.metrics
                .webhooks
                .dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "notification queue full or closed; notification dropped");
        }
    }
}

/// How one notification went at one URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: bool,
    /// Attempts refused or failed before the last (or all of them, when not delivered).
    pub failed_attempts: u32,
}

async fn deliver(client: &reqwest::Client, url: &str, body: &str, policy: RetryPolicy) -> Delivery {
    let mut backoff = policy.first_backoff;
    let mut failed_attempts = 0;
    for attempt in 1..=policy.max_attempts.max(1) {
        let result = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => {
                return Delivery {
                    delivered: true,
                    failed_attempts,
                };
            }
            Ok(resp) => {
                tracing::warn!(%url, attempt, status = resp.status().as_u16(), "notification refused")
            }
            Err(e) => tracing::warn!(%url, attempt, error = %e, "notification failed"),
        }
        failed_attempts += 1;
        if attempt < policy.max_attempts {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
    tracing::error!(%url, "notification given up after {} attempts", policy.max_attempts);
    Delivery {
        delivered: false,
        failed_attempts,
    }
}

/// The notification body for a lease change (`lease.create`, `lease.update`, `lease.delete`) or a
/// lease event (`lease.event.start_lease`, ...).
pub fn lease_payload(
    kind: &str,
    lease: &entity::lease::Model,
    event: Option<&entity::event::Model>,
    now: chrono::NaiveDateTime,
) -> Value {
    use crate::domain::dates::format_lease_date;
    let mut v = serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "event_type": kind,
        "timestamp": format_lease_date(now),
        "lease_id": lease.id,
        "lease_name": lease.name,
        "project_id": lease.project_id,
        "user_id": lease.user_id,
        "start_date": format_lease_date(lease.start_date),
        "end_date": format_lease_date(lease.end_date),
        "status": lease.status,
        "status_reason": lease.status_reason,
    });
    if let Some(e) = event {
        v["event"] = serde_json::json!({
            "id": e.id,
            "event_type": e.event_type,
            "time": format_lease_date(e.time),
            "status": e.status,
        });
    }
    v
}
