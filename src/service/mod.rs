//! The service layer: each operation of the API as one database transaction over the entities.
//!
//! Handlers call exactly one function here. Pure rules live in `domain`; this layer loads what the
//! rules need, applies them with `now` from the clock, and writes the result atomically.

pub mod capacity;
pub mod enforcement;
pub mod error;
pub mod etag;
pub mod facts;
pub mod hosts;
pub mod idempotency;
pub mod lease_reads;
pub mod leases;
pub mod metrics;
pub mod placement;
pub mod pools;

use std::sync::Arc;

use crate::{
    auth::{
        Caller,
        policy::{Credentials, Policy, Target},
    },
    clock::SharedClock,
    config::Settings,
    db::{Db, WriteTxn},
    domain::{lease::Limits, placement::LeaseBookings},
    jobs::{
        driver::ResourceDriver,
        notify::Notifier,
        runner::{LeaseEnd, Work},
    },
};

pub use error::driver_failure;
pub use facts::{HostFactSource, StandaloneFacts};

/// Everything an operation needs: the database, the clock, the settings, the host fact source,
/// the resource driver, the notifier, and the bell that wakes the event runner.
#[derive(Clone)]
pub struct Services {
    pub db: Arc<Db>,
    pub clock: SharedClock,
    pub settings: Arc<Settings>,
    pub facts: Arc<dyn HostFactSource>,
    pub driver: Arc<dyn ResourceDriver>,
    pub notifier: Notifier,
    /// Rung after lease changes, so the runner re-reads when the next event is due.
    pub wake: Arc<crate::jobs::bell::Bell>,
    /// What callers may do.
    pub policy: Arc<Policy>,
    /// The in-memory copy of hosts and bookings that host choice reads.
    pub placement: Arc<placement::PlacementCache>,
    /// This instance's name in event claims (the runner's, and the API's own claims).
    pub instance: String,
    /// Reconciliation's counters, in nova mode.
    pub nova_status: Option<Arc<crate::nova::sync::SyncCounters>>,
    /// Rung when Nova may have drifted from the database (a move after an update failed), so
    /// that reconciliation runs soon instead of at its next interval.
    pub repair: Arc<tokio::sync::Notify>,
    /// Usage enforcement: the filters that may refuse creates and updates, and `on-end`.
    pub enforcement: Arc<crate::enforcement::Enforcement>,
    /// The Prometheus registry (requests, events, write turns, webhooks).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The process's stop signal: `on-end` posts are tracked by it, to be drained at exit.
    pub shutdown: crate::shutdown::Shutdown,
}

/// The runner's handle on lease operations: deleting a lease whose interrupted deletion it
/// finished, and usage enforcement's `on-end`. On the `Arc` because `on-end` runs in a task that
/// keeps the services.
#[async_trait::async_trait]
impl LeaseEnd for Arc<Services> {
    async fn forget_leases(
        &self,
        txn: WriteTxn<'_>,
        gone: Vec<LeaseBookings>,
    ) -> Result<(), sea_orm::DbErr> {
        Services::forget_leases(self, txn, gone).await
    }

    fn announce_end(&self, work: &Work) {
        Services::announce_end(self, work);
    }
}

/// Whether `caller` may do `rule` on something owned by `project`/`user`, under `policy`.
fn allowed(
    policy: &Policy,
    rule: &str,
    caller: &Caller,
    project: Option<&str>,
    user: Option<&str>,
) -> bool {
    policy.allows(
        rule,
        &Credentials {
            project_id: &caller.project_id,
            user_id: &caller.user_id,
            roles: &caller.roles,
        },
        &Target {
            project_id: project,
            user_id: user,
        },
    )
}

impl Services {
    /// Whether `caller` may do `rule` on something owned by `project`/`user`.
    pub fn may(
        &self,
        rule: &str,
        caller: &Caller,
        project: Option<&str>,
        user: Option<&str>,
    ) -> bool {
        allowed(&self.policy, rule, caller, project, user)
    }

    /// Refuses (403) unless `caller` may do `rule` on their own project's behalf.
    pub fn authorize(&self, rule: &str, caller: &Caller) -> Result<(), crate::domain::DomainError> {
        if self.may(
            rule,
            caller,
            Some(&caller.project_id),
            Some(&caller.user_id),
        ) {
            Ok(())
        } else {
            Err(crate::domain::DomainError::PolicyNotAuthorized(
                rule.to_string(),
            ))
        }
    }

    /// Whether `caller` is an administrator (sees every project).
    pub fn is_admin(&self, caller: &Caller) -> bool {
        self.may(
            "admin",
            caller,
            Some(&caller.project_id),
            Some(&caller.user_id),
        )
    }

    /// The settings the plugin description shows, if the caller may see plugins.
    pub fn plugin_settings(
        &self,
        caller: &Caller,
    ) -> Result<&Settings, crate::domain::DomainError> {
        self.authorize("blazar:plugins:get", caller)?;
        Ok(&self.settings)
    }

    /// The database answers and has every migration: its backend and migration count.
    /// Reconciliation with Nova, in nova mode: counters and the last outcome.
    pub fn nova_status(&self) -> Option<crate::nova::sync::SyncStatus> {
        self.nova_status.as_ref().map(|c| c.status())
    }

    pub async fn readiness(&self) -> Result<(String, usize), crate::domain::DomainError> {
        use crate::domain::DomainError;
        self.db
            .conn()
            .ping()
            .await
            .map_err(|e| DomainError::Unavailable(format!("the database does not answer: {e}")))?;
        let current =
            self.db.migrations_current().await.map_err(|e| {
                DomainError::Unavailable(format!("cannot read the migrations: {e}"))
            })?;
        if !current {
            return Err(DomainError::Unavailable(
                "database migrations are pending; run `blazar-server migrate`".into(),
            ));
        }
        let backend = match self.db.backend() {
            sea_orm::DbBackend::Postgres => "postgres",
            sea_orm::DbBackend::Sqlite => "sqlite",
            _ => "other",
        };
        use migration::MigratorTrait;
        Ok((backend.to_string(), migration::Migrator::migrations().len()))
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_reservations: self.settings.api.max_reservations_per_lease,
        }
    }
}
