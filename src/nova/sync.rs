//! Keeping Nova and the database in step: reconciliation and health polling.
//!
//! Reconciliation compares Nova's aggregates with what the leases say (the freepool holds the
//! enrolled, unreserved hosts; each running reservation's aggregate holds its hosts; aggregates of
//! reservations that are gone or over are emptied and deleted) and repairs the drift, such as
//! hosts that a failed end left in a reservation's aggregate, or a host removed from the freepool
//! behind our back. It runs at start-up, every `reconcile_interval_seconds`, and soon after an
//! operation that could not finish its moves. Nova is read before the database: a move that an
//! event makes between the two reads then shows up as the event's outcome, towards which the
//! (idempotent) repairs converge. Every repair is logged and counted.
//!
//! Health polling (upstream's polling monitor) makes a host unreservable while its compute
//! service is down or disabled, and reservable again when it is back.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{
    client::{Aggregate, NovaError},
    pool::{Change, Pools},
};
use crate::{
    domain::pools::{Pool, PoolNames, Repair, plan},
    service::Services,
    shutdown::Shutdown,
};
use chrono::NaiveDateTime;

/// What one reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Repairs that succeeded.
    pub repaired: Vec<Repair>,
    /// Repairs that failed, with why (tried again next time).
    pub failed: Vec<(Repair, String)>,
}

/// Counters and the last outcome, for operators (`/readyz` shows them).
#[derive(Debug, Default)]
pub struct SyncCounters {
    reconciliations: AtomicU64,
    repairs: AtomicU64,
    health_changes: AtomicU64,
    last: Mutex<(Option<NaiveDateTime>, Option<String>)>,
}

/// A snapshot of [`SyncCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    pub reconciliations: u64,
    pub repairs: u64,
    pub health_changes: u64,
    pub last_reconcile: Option<NaiveDateTime>,
    /// Why the last reconciliation (or some of its repairs) failed; `None` when it succeeded.
    pub last_error: Option<String>,
}

impl SyncCounters {
    pub fn status(&self) -> SyncStatus {
        let last = self.last.lock().expect("sync status").clone();
        SyncStatus {
            reconciliations: self.reconciliations.load(Ordering::Relaxed),
            repairs: self.repairs.load(Ordering::Relaxed),
            health_changes: self.health_changes.load(Ordering::Relaxed),
            last_reconcile: last.0,
            last_error: last.1,
        }
    }
}

pub struct NovaSync {
    services: Arc<Services>,
    pools: Arc<Pools>,
    counters: Arc<SyncCounters>,
}

impl NovaSync {
    /// Counts into `services.nova_status` (which must be set in nova mode).
    pub fn new(services: Arc<Services>, pools: Arc<Pools>) -> Self {
        let counters = services.nova_status.clone().unwrap_or_default();
        Self {
            services,
            pools,
            counters,
        }
    }

    pub fn status(&self) -> SyncStatus {
        self.counters.status()
    }

    /// At start-up, the freepool exists (upstream requires an operator to create it): in the
    /// background, so that start-up never waits for Nova.
    pub fn ensure_freepool_soon(self: &Arc<Self>) {
        let sync = self.clone();
        tokio::spawn(async move {
            match sync.pools.freepool().await {
                Ok(a) => {
                    tracing::info!(freepool = %a.name, id = a.id, hosts = a.hosts.len(), "Nova's freepool is ready")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach Nova to check the freepool; reconciliation retries")
                }
            }
        });
    }

    /// Compares Nova with the database once and repairs what differs.
    pub async fn reconcile(&self) -> Result<ReconcileReport, String> {
        let result = self.reconcile_inner().await;
        let mut last = self.counters.last.lock().expect("sync status");
        last.0 = Some(self.services.clock.now());
        last.1 = match &result {
            Ok(r) if r.failed.is_empty() => None,
            Ok(r) => Some(format!("{} repairs failed", r.failed.len())),
            Err(e) => Some(e.clone()),
        };
        result
    }

    async fn reconcile_inner(&self) -> Result<ReconcileReport, String> {
        // Alone: no event or API call moves hosts while we compare and repair.
        let _alone = self.pools.exclusive().await;
        let aggregates = self.pools.all().await.map_err(|e| e.to_string())?;
        let view: Vec<Pool> = aggregates
            .iter()
            .map(|a| Pool {
                id: a.id,
                name: a.name.clone(),
                zone: a.availability_zone.clone(),
                hosts: a.hosts.clone(),
                owner: a.metadata.get(&self.pools.cfg.owner_key).cloned(),
            })
            .collect();
        let names: Vec<String> = aggregates
            .iter()
            .filter(|a| self.pools.is_reservation_pool(a))
            .map(|a| a.name.clone())
            .collect();
        let expected = self
            .services
            .pool_expectation(&names)
            .await
            .map_err(|e| e.to_string())?;
        let repairs = plan(
            &expected,
            &view,
            &PoolNames {
                freepool: self.pools.cfg.freepool.clone(),
                az_prefix: self.pools.cfg.az_prefix.clone(),
            },
        );
        self.counters
            .reconciliations
            .fetch_add(1, Ordering::Relaxed);
        let mut report = ReconcileReport::default();
        for repair in repairs {
            let mut changes = Vec::new();
            match self.repair(&repair, &aggregates, &mut changes).await {
                Ok(()) => {
                    let total = self.counters.repairs.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        ?repair,
                        ?changes,
                        total,
                        "reconciliation repaired drift in Nova"
                    );
                    report.repaired.push(repair);
                }
                Err(e) => {
                    tracing::error!(?repair, ?changes, error = %e, "reconciliation could not repair drift in Nova");
                    report.failed.push((repair, e.to_string()));
                }
            }
        }
        Ok(report)
    }

    async fn repair(
        &self,
        repair: &Repair,
        seen: &[Aggregate],
        changes: &mut Vec<Change>,
    ) -> Result<(), NovaError> {
        let p = &self.pools;
        // The aggregate as it is now (an earlier repair may have changed it).
        let current = |id: i64| async move {
            p.nova
                .aggregate(id)
                .await
                .map(|a| a.or_else(|| seen.iter().find(|s| s.id == id).cloned()))
        };
        match repair {
            Repair::CreateFreepool => p.freepool().await.map(|_| ()),
            Repair::CreatePool {
                reservation,
                project,
            }
            | Repair::SetOwner {
                reservation,
                project,
                ..
            } => p.reservation_pool(reservation, project).await.map(|_| ()),
            Repair::LeavePool {
                pool,
                host,
                enrolled,
            } => {
                let Some(agg) = current(*pool).await? else {
                    return Ok(());
                };
                p.empty(&[host], changes).await?;
                p.move_out(Some(&agg), host, *enrolled, changes).await
            }
            Repair::JoinPool { reservation, host } => {
                let Some(agg) = p.find(reservation).await? else {
                    return Err(NovaError::StillWaiting(format!(
                        "the aggregate of reservation {reservation} is missing"
                    )));
                };
                p.move_in(&agg, host, changes).await
            }
            Repair::JoinFreepool { host } => p.enter_freepool(host).await.map(|_| ()),
            Repair::LeaveFreepool { host } => p.leave_freepool(host).await.map(|_| ()),
            Repair::DeletePool { pool, .. } => match current(*pool).await? {
                Some(agg) if agg.hosts.is_empty() => p.delete(&agg).await,
                Some(agg) => Err(NovaError::StillWaiting(format!(
                    "aggregate {} still holds {:?}",
                    agg.name, agg.hosts
                ))),
                None => Ok(()),
            },
        }
    }

    /// Polls the compute services once and makes hosts reservable iff theirs is up and enabled.
    pub async fn check_health(&self) -> Result<usize, String> {
        let services = self
            .pools
            .nova
            .compute_services()
            .await
            .map_err(|e| e.to_string())?;
        let healthy: BTreeMap<String, bool> = services
            .into_iter()
            .map(|s| (s.host, s.state == "up" && s.status == "enabled"))
            .collect();
        let changes = self
            .services
            .apply_health(&healthy)
            .await
            .map_err(|e| e.to_string())?;
        for c in &changes {
            if c.reservable {
                tracing::warn!(host_id = c.host_id, host = %c.name, "compute service is back: host reservable again");
            } else {
                tracing::warn!(host_id = c.host_id, host = %c.name, "compute service down or disabled: host unreservable");
            }
        }
        self.counters
            .health_changes
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        Ok(changes.len())
    }

    /// Reconciles at start and every `reconcile_interval_seconds` (sooner when rung), polls
    /// health every `health_interval_seconds`, until the stop signal. A poll running then is
    /// cancelled where it waits, as exit did before: it changes only what the next start's
    /// reconciliation repairs, and waiting for Nova would hold exit up to its timeouts.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        tokio::select! {
            _ = self.poll() => {}
            _ = shutdown.triggered() => {}
        }
    }

    async fn poll(&self) {
        let settings = self.services.settings.clone();
        let every = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let reconcile_every = every(settings.nova.reconcile_interval_seconds);
        let health_every = every(settings.physical_host.polling_interval);
        let far = Duration::from_secs(86_400);
        let start = tokio::time::Instant::now();
        let first = |every: Option<Duration>| if every.is_some() { start } else { start + far };
        let mut next_reconcile = first(reconcile_every);
        let mut next_health = first(health_every);
        loop {
            let now = tokio::time::Instant::now();
            if health_every.is_some() && now >= next_health {
                if let Err(e) = self.check_health().await {
                    tracing::warn!(error = %e, "health poll of Nova's compute services failed");
                }
                next_health = tokio::time::Instant::now() + health_every.unwrap_or(far);
            }
            if reconcile_every.is_some() && now >= next_reconcile {
                if let Err(e) = self.reconcile().await {
                    tracing::warn!(error = %e, "reconciliation with Nova failed; retrying later");
                }
                next_reconcile = tokio::time::Instant::now() + reconcile_every.unwrap_or(far);
            }
            let wake = next_health
                .min(next_reconcile)
                .max(tokio::time::Instant::now() + Duration::from_millis(100));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.services.repair.notified() => {
                    // Something could not finish its moves: reconcile soon, after Nova had a
                    // moment (and other failures of the same burst have rung too).
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    next_reconcile = tokio::time::Instant::now();
                }
            }
        }
    }
}
