//! The database side of keeping Nova in step: what the leases say Nova's aggregates should hold
//! (for reconciliation), and hosts made reservable or not by their compute service's health.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use entity::{allocation, event, host, lease, reservation};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr};

use super::Services;
use crate::domain::{
    DomainError,
    dates::truncate_to_second,
    lease::{EventStatus, EventType, LeaseStatus},
    lifecycle,
    pools::{Expected, Running},
};

/// Largest number of ids in one `IN (...)` list.
const IN_CHUNK: usize = 500;

/// One host whose reservability changed with its compute service's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub host_id: i64,
    pub name: String,
    pub reservable: bool,
}

impl Services {
    /// What the database says Nova should hold: every enrolled host, the reservations running
    /// now with their hosts, and, of the reservations named in `pool_names` (Nova's
    /// reservation aggregates), those that exist and have not started. Hosts and reservations of
    /// leases in a transitional status are reported as unsettled and busy.
    pub async fn pool_expectation(&self, pool_names: &[String]) -> Result<Expected, DomainError> {
        let txn = self.db.read().await?;
        let hosts: HashMap<i64, String> = host::Entity::find()
            .select_only()
            .column(host::Column::Id)
            .column(host::Column::ServiceName)
            .into_tuple::<(i64, String)>()
            .all(&txn)
            .await?
            .into_iter()
            .collect();
        let live = [
            LeaseStatus::Creating,
            LeaseStatus::Starting,
            LeaseStatus::Updating,
            LeaseStatus::Terminating,
            LeaseStatus::Deleting,
            LeaseStatus::Active,
            LeaseStatus::Error,
        ];
        let leases: Vec<(String, LeaseStatus, Option<String>)> = lease::Entity::find()
            .select_only()
            .column(lease::Column::Id)
            .column(lease::Column::Status)
            .column(lease::Column::ProjectId)
            .filter(lease::Column::Status.is_in(live))
            .into_tuple()
            .all(&txn)
            .await?;
        let mut expected = Expected::default();
        let mut unsettled: BTreeSet<i64> = BTreeSet::new();
        for chunk in leases.chunks(IN_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _, _)| id.as_str()).collect();
            let mut started: HashMap<String, bool> = HashMap::new();
            let mut ended: HashMap<String, bool> = HashMap::new();
            for (lease_id, kind, status) in event::Entity::find()
                .select_only()
                .column(event::Column::LeaseId)
                .column(event::Column::EventType)
                .column(event::Column::Status)
                .filter(event::Column::LeaseId.is_in(ids.clone()))
                .into_tuple::<(String, EventType, EventStatus)>()
                .all(&txn)
                .await?
            {
                let finished = matches!(status, EventStatus::Done | EventStatus::Error);
                match kind {
                    EventType::StartLease => {
                        started.insert(lease_id, status == EventStatus::Done);
                    }
                    EventType::EndLease => {
                        ended.insert(lease_id, finished);
                    }
                    EventType::BeforeEndLease => {}
                }
            }
            let mut by_lease: HashMap<String, Vec<(String, i64)>> = HashMap::new();
            for (lease_id, reservation_id, host_id) in allocation::Entity::find()
                .select_only()
                .column(allocation::Column::LeaseId)
                .column(allocation::Column::ReservationId)
                .column(allocation::Column::HostId)
                .filter(allocation::Column::LeaseId.is_in(ids.clone()))
                .into_tuple::<(String, String, i64)>()
                .all(&txn)
                .await?
            {
                by_lease
                    .entry(lease_id)
                    .or_default()
                    .push((reservation_id, host_id));
            }
            let reservations: Vec<(String, String)> = reservation::Entity::find()
                .select_only()
                .column(reservation::Column::Id)
                .column(reservation::Column::LeaseId)
                .filter(reservation::Column::LeaseId.is_in(ids))
                .into_tuple()
                .all(&txn)
                .await?;
            for (id, status, project) in chunk {
                let busy = lifecycle::is_transitional(*status);
                let held = by_lease.remove(id).unwrap_or_default();
                if busy {
                    unsettled.extend(held.iter().map(|(_, h)| *h));
                    expected.busy.extend(
                        reservations
                            .iter()
                            .filter(|(_, l)| l == id)
                            .map(|(r, _)| r.clone()),
                    );
                    continue;
                }
                let running = started.get(id) == Some(&true) && ended.get(id) != Some(&true);
                if !running {
                    continue;
                }
                for (r, _) in reservations.iter().filter(|(_, l)| l == id) {
                    expected.running.insert(
                        r.clone(),
                        Running {
                            project: project.clone().unwrap_or_default(),
                            hosts: BTreeSet::new(),
                        },
                    );
                }
                for (r, h) in held {
                    if let (Some(run), Some(name)) = (expected.running.get_mut(&r), hosts.get(&h)) {
                        run.hosts.insert(name.clone());
                    }
                }
            }
        }
        for chunk in pool_names.chunks(IN_CHUNK) {
            let rows: Vec<(String, LeaseStatus, Option<String>)> = reservation::Entity::find()
                .select_only()
                .column(reservation::Column::Id)
                .column(lease::Column::Status)
                .column(lease::Column::ProjectId)
                .inner_join(lease::Entity)
                .filter(reservation::Column::Id.is_in(chunk.iter().map(String::as_str)))
                .into_tuple()
                .all(&txn)
                .await?;
            for (id, status, project) in rows {
                if status == LeaseStatus::Pending {
                    expected.pending.insert(id, project.unwrap_or_default());
                }
            }
        }
        txn.commit().await?;
        for (id, name) in hosts {
            if unsettled.contains(&id) {
                expected.unsettled.insert(name);
            } else {
                expected.hosts.insert(name);
            }
        }
        Ok(expected)
    }

    /// Makes each enrolled host reservable iff its compute service is healthy (up and enabled;
    /// a service Nova no longer lists is not), as upstream's polling monitor does. Returns the
    /// hosts that changed.
    pub async fn apply_health(
        &self,
        healthy: &BTreeMap<String, bool>,
    ) -> Result<Vec<HealthChange>, DomainError> {
        let stamp = truncate_to_second(self.clock.now());
        let txn = self.db.write().await?;
        let hosts: Vec<(i64, String, String, bool)> = host::Entity::find()
            .select_only()
            .column(host::Column::Id)
            .column(host::Column::HypervisorHostname)
            .column(host::Column::ServiceName)
            .column(host::Column::Reservable)
            .into_tuple()
            .all(&*txn)
            .await?;
        let mut changes = Vec::new();
        for (id, name, service, reservable) in hosts {
            let want = healthy.get(&service).copied().unwrap_or(false);
            if want == reservable {
                continue;
            }
            host::Entity::update_many()
                .col_expr(host::Column::Reservable, Expr::value(want))
                .col_expr(host::Column::UpdatedAt, Expr::value(stamp))
                .filter(host::Column::Id.eq(id))
                .exec(&*txn)
                .await?;
            changes.push(HealthChange {
                host_id: id,
                name,
                reservable: want,
            });
        }
        let mut placement = self.placement.begin();
        if !changes.is_empty() {
            placement.hosts_changed(&*txn).await?;
        }
        placement.commit(txn).await?;
        Ok(changes)
    }
}
