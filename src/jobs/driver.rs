//! Resource drivers: what happens to a reservation's hosts at start, before the end, and at the end.
//!
//! A driver acts inside the caller's write transaction, so that what it records commits together
//! with the event's new status. A driver that reaches outside the database (Nova) must make its
//! actions idempotent: after a crash the event runs again.

use async_trait::async_trait;
use chrono::NaiveDateTime;
use entity::{driver_action, lease, reservation};
use sea_orm::{ActiveValue::Set, DatabaseTransaction, DbErr, EntityTrait};

/// The hosts of one reservation, with the lease they serve.
#[derive(Debug, Clone, Copy)]
pub struct ReservationHosts<'a> {
    pub lease: &'a lease::Model,
    pub reservation: &'a reservation::Model,
    pub hosts: &'a [i64],
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Failed(String),
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

#[async_trait]
pub trait ResourceDriver: Send + Sync {
    /// Hands the hosts to the lease's project (at start, or when a running reservation grows).
    async fn assign(
        &self,
        txn: &DatabaseTransaction,
        r: ReservationHosts<'_>,
        now: NaiveDateTime,
    ) -> Result<(), DriverError>;

    /// Takes the before-end action (`""`: none, `snapshot`) on the hosts.
    async fn before_end(
        &self,
        txn: &DatabaseTransaction,
        r: ReservationHosts<'_>,
        action: &str,
        now: NaiveDateTime,
    ) -> Result<(), DriverError>;

    /// Takes the hosts back from the project (at the end, or when a running lease is deleted).
    async fn release(
        &self,
        txn: &DatabaseTransaction,
        r: ReservationHosts<'_>,
        now: NaiveDateTime,
    ) -> Result<(), DriverError>;
}

/// The driver for a deployment without Nova: it records what it would have done, per host, in
/// `driver_actions`, so that operators can see it.
#[derive(Debug, Default, Clone, Copy)]
pub struct StandaloneDriver;

impl StandaloneDriver {
    async fn record(
        txn: &DatabaseTransaction,
        r: ReservationHosts<'_>,
        action: &str,
        detail: &str,
        now: NaiveDateTime,
    ) -> Result<(), DriverError> {
        if r.hosts.is_empty() {
            return Ok(());
        }
        let rows = r.hosts.iter().map(|h| driver_action::ActiveModel {
            lease_id: Set(r.lease.id.clone()),
            reservation_id: Set(r.reservation.id.clone()),
            host_id: Set(*h),
            action: Set(action.to_string()),
            detail: Set(detail.to_string()),
            created_at: Set(now),
            ..Default::default()
        });
        driver_action::Entity::insert_many(rows).exec(txn).await?;
        Ok(())
    }
}

#[async_trait]
impl ResourceDriver for StandaloneDriver {
    async fn assign(
        &self,
        txn: &DatabaseTransaction,
        r: ReservationHosts<'_>,
        now: NaiveDateTime,
    ) -> Result<(), DriverError> {
        let detail = format!(
            "assigned to project {}",
            r.lease.project_id.as_deref().unwrap_or("-")
        );
        Self::record(txn, r, "assign", &detail, now).await
    }

    async fn before_end(
        &self,
        txn: &DatabaseTransaction,
        r: ReservationHosts<'_>,
        action: &str,
        now: NaiveDateTime,
    ) -> Result<(), DriverError> {
        match action {
            "" => Self::record(txn, r, "none", "no before-end action", now).await,
            "snapshot" => {
                Self::record(
                    txn,
                    r,
                    "snapshot",
                    "snapshot of the servers on the host",
                    now,
                )
                .await
            }
            other => Err(DriverError::Failed(format!(
                "unknown before-end action {other:?}"
            ))),
        }
    }

    async fn release(
        &self,
        txn: &DatabaseTransaction,
        r: ReservationHosts<'_>,
        now: NaiveDateTime,
    ) -> Result<(), DriverError> {
        Self::record(txn, r, "release", "returned to the free pool", now).await
    }
}
