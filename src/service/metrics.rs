//! The scrape of `GET /metrics`: the registry's counters plus the gauges read from the database
//! at that moment (a few indexed counts, no write turn taken).

use chrono::NaiveDateTime;
use entity::{allocation, event, host, lease};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};

use super::Services;
use crate::{
    domain::{
        DomainError,
        lease::{EventStatus, LeaseStatus},
    },
    metrics::Gauges,
};

impl Services {
    /// The exposition text of every metric, with gauges as of now.
    pub async fn scrape_metrics(&self) -> Result<String, DomainError> {
        let now = self.clock.now();
        // One snapshot, so that the gauges agree with each other.
        let txn = self.db.read().await?;
        let gauges = read_gauges(&txn, now).await?;
        drop(txn);
        Ok(self.metrics.render(&gauges))
    }
}

async fn read_gauges(conn: &impl ConnectionTrait, now: NaiveDateTime) -> Result<Gauges, DbErr> {
    let counted: Vec<(LeaseStatus, i64)> = lease::Entity::find()
        .select_only()
        .column(lease::Column::Status)
        .column_as(lease::Column::Id.count(), "n")
        .group_by(lease::Column::Status)
        .into_tuple()
        .all(conn)
        .await?;
    let leases_by_status = LeaseStatus::all()
        .map(|s| {
            let n = counted
                .iter()
                .find(|(c, _)| *c == s)
                .map_or(0, |(_, n)| *n as u64);
            (s, n)
        })
        .collect();
    let hosts_enrolled = host::Entity::find().count(conn).await?;
    // Allocations carry their lease's window, so "reserved now" needs no join.
    let hosts_reserved = allocation::Entity::find()
        .select_only()
        .column(allocation::Column::HostId)
        .distinct()
        .filter(allocation::Column::StartDate.lte(now))
        .filter(allocation::Column::EndDate.gt(now))
        .count(conn)
        .await?;
    let events_due = event::Entity::find()
        .filter(event::Column::Status.eq(EventStatus::Undone))
        .filter(event::Column::Time.lte(now))
        .count(conn)
        .await?;
    Ok(Gauges {
        leases_by_status,
        hosts_enrolled,
        hosts_reserved,
        events_due,
    })
}
