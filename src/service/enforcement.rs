//! Usage enforcement's side of lease operations: gathers what the filters judge (the lease, its
//! reservations and the hosts they would get) in a read transaction, then asks the filters with
//! no transaction open, before create or update takes the write turn.
//!
//! The hosts sent for a create or a re-planned update are candidates, chosen as the write would
//! choose them from the same placement copy. The write chooses again under the write turn; a
//! concurrent booking in between may make its choice differ (docs/enforcement.md says why that
//! is acceptable). An update checks the exact lease it then changes: if the lease or its
//! reservations changed meanwhile, the update is refused (409) rather than stored unchecked.

use std::{collections::HashMap, sync::Arc};

use chrono::NaiveDateTime;
use entity::{allocation, host, lease, reservation};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use super::{
    Services,
    leases::{current_of, load_details},
    placement::HostRecord,
};
use crate::{
    auth::Caller,
    domain::{
        DomainError,
        allocation::PlanError,
        lease::{LeaseChanges, LeaseRequest},
        placement::{attach_capabilities, create_needs, plan_refusal},
        update::{self, StoredLease, UpdateScope},
    },
    enforcement::{Check, body},
    jobs::runner::Work,
};

/// The lease and reservations an update's check judged.
pub(crate) struct Checked {
    pub lease: lease::Model,
    pub reservations: Vec<reservation::Model>,
}

impl Services {
    /// The longest lease, then (if enabled) the external service's `check-create` with the
    /// hosts the lease would get. Costs nothing more than a comparison when no filter is on.
    pub(crate) async fn enforce_create(
        &self,
        caller: &Caller,
        req: &LeaseRequest,
        now: NaiveDateTime,
    ) -> Result<(), DomainError> {
        let e = &self.enforcement;
        e.check_duration(Some(&caller.project_id), req.start, req.end)?;
        if !e.checks_externally() {
            return Ok(());
        }
        let txn = self.db.read().await?;
        let chosen = if req.reservations.is_empty() {
            Vec::new()
        } else {
            let needs = create_needs(&req.reservations);
            let planned = self
                .placement
                .read(&txn, now, |w| w.plan(&needs, req.start, req.end, None, now))
                .await?;
            match planned {
                Ok(c) => c,
                Err(PlanError::Shortage { .. }) => {
                    // The create would fail the same way: answer as it does.
                    drop(txn);
                    let why = self.explain_shortage(caller, req, now).await?;
                    return Err(DomainError::NotEnoughHostsAvailable(why));
                }
                Err(other) => return Err(plan_refusal(other, &needs, req.start, req.end)),
            }
        };
        let records = host_records(&txn, chosen.iter().flatten().copied()).await?;
        txn.commit().await?;
        let reservations = req
            .reservations
            .iter()
            .zip(&chosen)
            .map(|(r, ids)| body::requested_reservation(r, &pick(&records, ids)))
            .collect();
        let doc = json!({
            "context": e.context(Some(&caller.user_id), Some(&caller.project_id)),
            "lease": body::lease_to_create(
                &req.name,
                req.start,
                req.end,
                req.before_end_date,
                &caller.user_id,
                &caller.project_id,
                reservations,
            ),
        });
        e.check(Check::Create, &doc).await
    }

    /// The external service's `check-update`, for an update that asks more than a new name:
    /// the current lease with its hosts, and the lease as it would be with the hosts it would
    /// have. `None` when there is nothing to ask (no external filter, a rename).
    pub(crate) async fn enforce_update(
        &self,
        caller: &Caller,
        id: &str,
        changes: &LeaseChanges,
        now: NaiveDateTime,
    ) -> Result<Option<Checked>, DomainError> {
        let e = &self.enforcement;
        if !e.checks_externally() || !changes.beyond_name() {
            return Ok(None);
        }
        let txn = self.db.read().await?;
        let old = self.find_lease(&txn, caller, id).await?;
        self.authorize_on("blazar:leases:put", caller, &old)?;
        let window = match update::plan_window(&old.id, &current_of(&old), changes, now)? {
            UpdateScope::Rename => return Ok(None),
            UpdateScope::Window(window) => window,
        };
        if window.moved {
            // Before the service is asked: a lease too long is refused without a call.
            e.check_duration(old.project_id.as_deref(), window.start, window.end)?;
        }
        let detail = load_details(&txn, vec![old.clone()]).await?.remove(0);
        let stored = detail.reservations.clone();
        let mut held: HashMap<String, Vec<i64>> = HashMap::new();
        for (reservation_id, host_id) in allocation::Entity::find()
            .filter(allocation::Column::LeaseId.eq(&old.id))
            .order_by_asc(allocation::Column::HostId)
            .all(&txn)
            .await?
            .into_iter()
            .map(|a| (a.reservation_id, a.host_id))
        {
            held.entry(reservation_id).or_default().push(host_id);
        }
        let current = StoredLease {
            lease: &old,
            reservations: &stored,
            held: &held,
        };
        let plan = update::plan_update(current, changes, window, now)?;
        let next_hosts: Vec<Vec<i64>> = if plan.replans() {
            let needs = plan.needs();
            let (from, end) = plan.booking_window();
            self.placement
                .read(&txn, now, |w| w.plan(&needs, from, end, Some(&old.id), now))
                .await?
                .map_err(|err| plan_refusal(err, &needs, from, end))?
        } else {
            plan.held_hosts()
        };
        let records = host_records(
            &txn,
            held.values()
                .flatten()
                .chain(next_hosts.iter().flatten())
                .copied(),
        )
        .await?;
        txn.commit().await?;

        let empty = Vec::new();
        let current_doc = body::stored_lease(
            &old,
            stored
                .iter()
                .map(|r| {
                    body::stored_reservation(r, &pick(&records, held.get(&r.id).unwrap_or(&empty)))
                })
                .collect(),
            Some(&detail.events),
        );
        let mut next = old.clone();
        if let Some(name) = &changes.name {
            next.name = name.clone();
        }
        next.start_date = window.start;
        next.end_date = window.end;
        let mut next_doc = body::stored_lease(
            &next,
            plan.reservations
                .iter()
                .zip(&next_hosts)
                .map(|(m, ids)| body::stored_reservation(&m.next, &pick(&records, ids)))
                .collect(),
            None,
        );
        if let Some(t) = changes.before_end_date {
            next_doc["before_end_date"] = Value::String(body::iso(t));
        }
        let doc = json!({
            "context": e.context(old.user_id.as_deref(), old.project_id.as_deref()),
            "current_lease": current_doc,
            "lease": next_doc,
        });
        e.check(Check::Update, &doc).await?;
        Ok(Some(Checked {
            lease: old,
            reservations: stored,
        }))
    }

    /// After a lease's end has run (or a lease that had not ended is deleted): `on-end` to the
    /// external service, from a task of its own with the webhooks' retries. It never waits for
    /// the service and never fails the caller; at exit, the post is drained with the webhooks.
    pub(crate) fn announce_end(self: &Arc<Self>, work: &Work) {
        if !self.enforcement.announces_end() {
            return;
        }
        let svc = self.clone();
        let lease = work.lease.clone();
        let reservations = work.reservations.clone();
        let hosts: HashMap<String, Vec<i64>> = work
            .hosts
            .iter()
            .map(|(r, hs)| (r.clone(), hs.iter().map(|h| h.id).collect()))
            .collect();
        let tracked = self.shutdown.track();
        tokio::spawn(self.shutdown.clone().unless_abandoned(async move {
            let records = match svc.end_hosts(&hosts).await {
                Ok(r) => r,
                Err(e) => {
                    // The hosts' details are missing, not the notice: send it with their ids.
                    tracing::warn!(lease_id = %lease.id, error = %e, "cannot read the hosts for on-end");
                    HashMap::new()
                }
            };
            let empty = Vec::new();
            let doc = json!({
                "context": svc.enforcement.context(lease.user_id.as_deref(), lease.project_id.as_deref()),
                "lease": body::stored_lease(
                    &lease,
                    reservations
                        .iter()
                        .map(|r| body::stored_reservation(
                            r,
                            &pick(&records, hosts.get(&r.id).unwrap_or(&empty)),
                        ))
                        .collect(),
                    None,
                ),
            });
            svc.enforcement.deliver_on_end(&lease.id, &doc).await;
            drop(tracked);
        }));
    }

    async fn end_hosts(
        &self,
        hosts: &HashMap<String, Vec<i64>>,
    ) -> Result<HashMap<i64, HostRecord>, DbErr> {
        let txn = self.db.read().await?;
        let records = host_records(&txn, hosts.values().flatten().copied()).await?;
        txn.commit().await?;
        Ok(records)
    }
}

/// The hosts `ids` with their capabilities.
async fn host_records(
    conn: &impl ConnectionTrait,
    ids: impl IntoIterator<Item = i64>,
) -> Result<HashMap<i64, HostRecord>, DbErr> {
    let mut ids: Vec<i64> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        let hosts = host::Entity::find()
            .filter(host::Column::Id.is_in(chunk.iter().copied()))
            .order_by_asc(host::Column::Id)
            .all(conn)
            .await?;
        let caps = super::placement::capabilities_of(conn, Some(chunk)).await?;
        for r in attach_capabilities(hosts, caps) {
            out.insert(r.host.id, r);
        }
    }
    Ok(out)
}

/// The records of `ids`, in that order (a host deleted meanwhile is left out).
fn pick(records: &HashMap<i64, HostRecord>, ids: &[i64]) -> Vec<HostRecord> {
    ids.iter()
        .filter_map(|id| records.get(id).cloned())
        .collect()
}
