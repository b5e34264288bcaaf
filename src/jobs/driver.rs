//! Resource drivers: what enrolling or withdrawing a host, and a reservation's life (created,
//! started, near its end, ended, changed), do to the hosts in the system that runs them.
//!
//! A driver never runs inside a database transaction: it may talk to Nova for seconds, and every
//! other write would wait behind it. Callers claim the work first (commit), call the driver with
//! no transaction open, then record the outcome (commit). So every operation must be idempotent:
//! after a crash it runs again and must converge, never act twice. What a driver changed goes to
//! an [`ActionLog`] that the caller stores in `driver_actions` together with the outcome.

use async_trait::async_trait;
use chrono::NaiveDateTime;
use entity::{driver_action, lease, reservation};
use sea_orm::ActiveValue::Set;

/// A host as drivers name it: our id, its hypervisor hostname, and its compute service's host
/// (the name Nova's aggregates use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRef {
    pub id: i64,
    pub name: String,
    pub service_name: String,
}

/// The hosts of one reservation, with the lease they serve.
#[derive(Debug, Clone, Copy)]
pub struct ReservationHosts<'a> {
    pub lease: &'a lease::Model,
    pub reservation: &'a reservation::Model,
    pub hosts: &'a [HostRef],
}

/// One change a driver made to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAction {
    pub lease_id: String,
    pub reservation_id: String,
    pub host_id: i64,
    /// At most 32 characters: `assign`, `join_aggregate`, `delete_server`, ...
    pub action: &'static str,
    pub detail: String,
}

/// What a driver changed, in order, also when it then failed (the audit shows partial work).
#[derive(Debug, Default, Clone)]
pub struct ActionLog {
    actions: Vec<HostAction>,
}

impl ActionLog {
    pub fn push(
        &mut self,
        r: &ReservationHosts<'_>,
        host: &HostRef,
        action: &'static str,
        detail: String,
    ) {
        self.actions.push(HostAction {
            lease_id: r.lease.id.clone(),
            reservation_id: r.reservation.id.clone(),
            host_id: host.id,
            action,
            detail,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn actions(&self) -> &[HostAction] {
        &self.actions
    }

    /// The `driver_actions` rows, stamped `at`.
    pub fn rows(&self, at: NaiveDateTime) -> Vec<driver_action::ActiveModel> {
        self.actions
            .iter()
            .map(|a| driver_action::ActiveModel {
                lease_id: Set(a.lease_id.clone()),
                reservation_id: Set(a.reservation_id.clone()),
                host_id: Set(a.host_id),
                action: Set(a.action.to_string()),
                detail: Set(a.detail.clone()),
                created_at: Set(at),
                ..Default::default()
            })
            .collect()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// Worth retrying later: the system that runs the hosts is unreachable or failing.
    #[error("{0}")]
    Unavailable(String),
    /// Refused because of what the hosts hold now (servers on a host being withdrawn).
    #[error("{0}")]
    Conflict(String),
    /// Refused for good (an unknown host, an answer that makes no sense).
    #[error("{0}")]
    Failed(String),
}

#[async_trait]
pub trait ResourceDriver: Send + Sync {
    /// A host is being enrolled: make it Blazar's (Nova: join the freepool). Returns whether it
    /// changed anything, so that an enrolment whose write fails undoes only its own change.
    async fn enrol(&self, _host: &HostRef) -> Result<bool, DriverError> {
        Ok(false)
    }

    /// A host is being deleted, or its enrolment is undone: give it back (Nova: leave the
    /// freepool). Refuses with [`DriverError::Conflict`] while servers run on it. Returns
    /// whether it changed anything.
    async fn withdraw(&self, _host: &HostRef) -> Result<bool, DriverError> {
        Ok(false)
    }

    /// A reservation was created (Nova: its empty aggregate, owned by the lease's project).
    async fn prepare(&self, _r: ReservationHosts<'_>) -> Result<(), DriverError> {
        Ok(())
    }

    /// A reservation that never started is gone (Nova: delete its empty aggregate).
    async fn discard(&self, _r: ReservationHosts<'_>) -> Result<(), DriverError> {
        Ok(())
    }

    /// Hands the hosts to the lease's project (at start, or when a running reservation grows).
    async fn assign(&self, r: ReservationHosts<'_>, log: &mut ActionLog)
    -> Result<(), DriverError>;

    /// Takes the before-end action (`""`: none, `snapshot`) on the hosts. `since` is when this
    /// event was first attempted: work already done since then is not done again.
    async fn before_end(
        &self,
        r: ReservationHosts<'_>,
        action: &str,
        since: NaiveDateTime,
        log: &mut ActionLog,
    ) -> Result<(), DriverError>;

    /// Takes the hosts back from the project (at the end, or when a running lease is deleted).
    async fn release(
        &self,
        r: ReservationHosts<'_>,
        log: &mut ActionLog,
    ) -> Result<(), DriverError>;

    /// Takes some hosts back from a running reservation that keeps the others (an update).
    async fn remove(
        &self,
        r: ReservationHosts<'_>,
        hosts: &[HostRef],
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        self.release(ReservationHosts { hosts, ..r }, log).await
    }
}

/// The driver for a deployment without Nova: it records what it would have done, per host, so
/// that operators can see it.
#[derive(Debug, Default, Clone, Copy)]
pub struct StandaloneDriver;

impl StandaloneDriver {
    fn record(r: ReservationHosts<'_>, action: &'static str, detail: &str, log: &mut ActionLog) {
        for h in r.hosts {
            log.push(&r, h, action, detail.to_string());
        }
    }
}

#[async_trait]
impl ResourceDriver for StandaloneDriver {
    async fn assign(
        &self,
        r: ReservationHosts<'_>,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        let detail = format!(
            "assigned to project {}",
            r.lease.project_id.as_deref().unwrap_or("-")
        );
        Self::record(r, "assign", &detail, log);
        Ok(())
    }

    async fn before_end(
        &self,
        r: ReservationHosts<'_>,
        action: &str,
        _since: NaiveDateTime,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        match action {
            "" => Self::record(r, "none", "no before-end action", log),
            "snapshot" => Self::record(r, "snapshot", "snapshot of the servers on the host", log),
            other => {
                return Err(DriverError::Failed(format!(
                    "unknown before-end action {other:?}"
                )));
            }
        }
        Ok(())
    }

    async fn release(
        &self,
        r: ReservationHosts<'_>,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        Self::record(r, "release", "returned to the free pool", log);
        Ok(())
    }
}
