//! Lease operations: list, show, create, update, delete, each in one transaction.
//!
//! Create and update choose hosts and write the lease, its reservations, allocations and events
//! in a single write transaction: a refused request changes nothing, and an accepted one is whole.

use std::{collections::HashMap, sync::Arc};

use chrono::{NaiveDateTime, TimeDelta};
use entity::{allocation, event, lease, reservation};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use uuid::Uuid;

use super::{
    Services,
    etag::check_if_match,
    idempotency::{Claim, Created, Once},
    lease_reads,
};
use crate::auth::Caller;
use crate::db::WriteTxn;
use crate::domain::{
    DomainError,
    dates::truncate_to_second,
    input::Received,
    lease::{self as rules, CurrentLease, EventStatus, EventType, LeaseStatus, ReservationStatus},
    lifecycle,
    page::{Page, PageRequest, marker_not_found},
    placement::{BookingChange, BookingRow, LeaseBookings, create_needs},
    precondition::Precondition,
    update::{self, HostMoves, StoredEvent, StoredLease, UpdatePlan, UpdateScope},
};
use crate::{
    failpoint,
    jobs::{
        driver::{ActionLog, HostRef, ReservationHosts},
        notify::lease_payload,
        runner::{ClaimKeeper, Work, event_state, host_refs, load_work},
    },
};

/// A lease with its reservations (in request order) and events (start, end, before-end).
#[derive(Debug, Clone)]
pub struct LeaseDetail {
    pub lease: lease::Model,
    pub reservations: Vec<reservation::Model>,
    pub events: Vec<EventSummary>,
}

/// What the API shows of an event (the runner's claim columns stay inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub id: String,
    pub lease_id: String,
    pub event_type: EventType,
    pub time: NaiveDateTime,
    pub status: EventStatus,
    pub created_at: NaiveDateTime,
    pub updated_at: Option<NaiveDateTime>,
}

impl From<event::Model> for EventSummary {
    fn from(e: event::Model) -> Self {
        Self {
            id: e.id,
            lease_id: e.lease_id,
            event_type: e.event_type,
            time: e.time,
            status: e.status,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

type EventRow = (
    String,
    String,
    EventType,
    NaiveDateTime,
    EventStatus,
    NaiveDateTime,
    Option<NaiveDateTime>,
);

/// Largest number of ids in one `IN (...)` list.
const IN_CHUNK: usize = 500;

impl Services {
    /// The caller's project's leases; an admin sees every project's, or `project_id`'s.
    pub async fn list_leases(
        &self,
        caller: &Caller,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<LeaseDetail>, DomainError> {
        self.authorize("blazar:leases:get", caller)?;
        let scope = if self.is_admin(caller) {
            project_id
        } else {
            match project_id {
                Some(p) if p != caller.project_id => {
                    return Err(DomainError::PolicyNotAuthorized(
                        "blazar:leases:get (another project's leases)".into(),
                    ));
                }
                _ => Some(caller.project_id.as_str()),
            }
        };
        if let Some(reads) = self.db.sqlite_reads() {
            let (scope, marker, limit) =
                (scope.map(str::to_owned), page.marker.clone(), page.limit);
            let visible = self.lease_visibility(caller);
            return reads
                .read(move |txn| {
                    lease_reads::list(txn, scope.as_deref(), marker.as_deref(), limit, &visible)
                })
                .await;
        }
        let txn = self.db.read().await?;
        let conn = &txn;
        let mut q = lease::Entity::find()
            .order_by_asc(lease::Column::CreatedAt)
            .order_by_asc(lease::Column::Id);
        if let Some(p) = scope {
            q = q.filter(lease::Column::ProjectId.eq(p));
        }
        if let Some(marker) = &page.marker {
            let m = self
                .find_lease(conn, caller, marker)
                .await
                .map_err(|_| marker_not_found(marker))?;
            // `created_at >= m` first: it is what lets the (created_at, id) index start at the
            // marker. The OR alone made both databases walk the index from the first lease, so
            // a deep page cost more the deeper it was.
            q = q.filter(lease::Column::CreatedAt.gte(m.created_at)).filter(
                Condition::any()
                    .add(lease::Column::CreatedAt.gt(m.created_at))
                    .add(lease::Column::Id.gt(m.id)),
            );
        }
        let leases = q.limit(page.limit as u64 + 1).all(conn).await?;
        let page = Page::from_overfetch(leases, page.limit, |l| l.id.clone());
        let items = load_details(conn, page.items).await?;
        txn.commit().await?;
        Ok(Page {
            items,
            next_marker: page.next_marker,
        })
    }

    pub async fn get_lease(&self, caller: &Caller, id: &str) -> Result<LeaseDetail, DomainError> {
        if let Some(reads) = self.db.sqlite_reads() {
            let (id, visible) = (id.to_string(), self.lease_visibility(caller));
            return reads
                .read(move |txn| lease_reads::show(txn, &id, &visible))
                .await;
        }
        let txn = self.db.read().await?;
        let lease = self.find_lease(&txn, caller, id).await?;
        let detail = load_details(&txn, vec![lease]).await?.remove(0);
        txn.commit().await?;
        Ok(detail)
    }

    /// Whether `caller` may see a lease, as a test that can travel to the read path's thread.
    fn lease_visibility(&self, caller: &Caller) -> lease_reads::Visible {
        let (policy, caller) = (self.policy.clone(), caller.clone());
        Box::new(move |l| {
            super::allowed(
                &policy,
                "blazar:leases:get",
                &caller,
                l.project_id.as_deref(),
                l.user_id.as_deref(),
            )
        })
    }

    /// The lease `id` if the caller may see it; another project's lease is "not found", so that
    /// its existence does not leak.
    pub(crate) async fn find_lease(
        &self,
        conn: &impl ConnectionTrait,
        caller: &Caller,
        id: &str,
    ) -> Result<lease::Model, DomainError> {
        let not_found = || DomainError::LeaseNotFound(id.to_string());
        let lease = lease::Entity::find_by_id(id.to_string())
            .one(conn)
            .await?
            .ok_or_else(not_found)?;
        if !self.may(
            "blazar:leases:get",
            caller,
            lease.project_id.as_deref(),
            lease.user_id.as_deref(),
        ) {
            return Err(not_found());
        }
        Ok(lease)
    }

    /// Refuses (412) unless `if_match` matches the lease as GET shows it in `conn`'s snapshot.
    async fn check_lease_tag(
        &self,
        conn: &impl ConnectionTrait,
        if_match: Option<&Precondition>,
        lease: &lease::Model,
    ) -> Result<(), DomainError> {
        if if_match.is_none() {
            return Ok(());
        }
        let shown = load_details(conn, vec![lease.clone()]).await?.remove(0);
        check_if_match(if_match, &format!("Lease {}", lease.id), &shown.etag())
    }

    /// Refuses (403) unless `caller` may do `rule` on this (visible) lease.
    pub(crate) fn authorize_on(
        &self,
        rule: &str,
        caller: &Caller,
        lease: &lease::Model,
    ) -> Result<(), DomainError> {
        if self.may(
            rule,
            caller,
            lease.project_id.as_deref(),
            lease.user_id.as_deref(),
        ) {
            Ok(())
        } else {
            Err(DomainError::PolicyNotAuthorized(rule.to_string()))
        }
    }

    /// Creates a lease; with `once` (an `Idempotency-Key`), a retry of an earlier create gets
    /// that create's response instead (see service::idempotency).
    pub async fn create_lease(
        &self,
        caller: &Caller,
        body: &Received<rules::LeaseCreate>,
        once: Option<Once<LeaseDetail>>,
    ) -> Result<Created<LeaseDetail>, DomainError> {
        self.authorize("blazar:leases:post", caller)?;
        let now = self.clock.now();
        let claim = once.map(|o| Claim::new("createLease", caller, &body.object, o));
        // A retry is answered before its body is checked again: a start that was in the future
        // at the first attempt may be in the past now.
        if let Some(replay) = self.replay_early(claim.as_ref(), now).await? {
            return Ok(Created::Replayed(replay));
        }
        let req = rules::check_create(body, now, self.limits())?;
        // Usage enforcement asks before the write turn (an outside call may take seconds).
        self.enforce_create(caller, &req, now).await?;
        let stamp = truncate_to_second(now);
        let lease_id = Uuid::new_v4().to_string();

        let txn = self.db.write().await?;
        // Again in the write turn: a concurrent request with the same key may have just won.
        if let Some(replay) = self.replay(&*txn, claim.as_ref(), now).await? {
            return Ok(Created::Replayed(replay));
        }
        let mut placement = self.placement.begin();
        let chosen = if req.reservations.is_empty() {
            Vec::new()
        } else {
            let needs = create_needs(&req.reservations);
            let chosen = placement
                .choose(&*txn, now, &needs, (req.start, req.end), None)
                .await;
            match chosen {
                Ok(chosen) => chosen,
                Err(DomainError::NotEnoughHostsAvailable(_)) => {
                    // Nothing was written: let go of the write turn, then say what stands in
                    // the way, as a plan would.
                    drop(txn);
                    let why = self.explain_shortage(caller, &req, now).await?;
                    return Err(DomainError::NotEnoughHostsAvailable(why));
                }
                Err(e) => return Err(e),
            }
        };

        let lease = lease::Model {
            id: lease_id.clone(),
            name: req.name.clone(),
            user_id: Some(caller.user_id.clone()),
            project_id: Some(caller.project_id.clone()),
            trust_id: None,
            start_date: req.start,
            end_date: req.end,
            status: LeaseStatus::Pending,
            action: None,
            status_reason: None,
            degraded: false,
            created_at: stamp,
            updated_at: None,
        };
        let reservations: Vec<reservation::Model> = req
            .reservations
            .iter()
            .enumerate()
            .map(|(i, r)| reservation::Model {
                id: Uuid::new_v4().to_string(),
                lease_id: lease_id.clone(),
                position: i as i32,
                resource_type: rules::PHYSICAL_HOST.into(),
                resource_id: Uuid::new_v4().to_string(),
                status: ReservationStatus::Pending,
                min: r.min,
                max: r.max,
                hypervisor_properties: r.hypervisor_properties.clone(),
                resource_properties: r.resource_properties.clone(),
                before_end: r.before_end,
                missing_resources: false,
                resources_changed: false,
                created_at: stamp,
                updated_at: None,
            })
            .collect();
        let mut events = vec![
            new_event(&lease_id, EventType::StartLease, req.start, stamp),
            new_event(&lease_id, EventType::EndLease, req.end, stamp),
        ];
        if let Some(t) = rules::before_end_time(
            req.start,
            req.end,
            req.before_end_date,
            self.settings.manager.minutes_before_end_lease,
        ) {
            events.push(new_event(&lease_id, EventType::BeforeEndLease, t, stamp));
        }

        lease
            .clone()
            .into_active_model()
            .reset_all()
            .insert(&*txn)
            .await?;
        insert_all::<reservation::Entity, _>(&*txn, &reservations).await?;
        let allocations: Vec<allocation::ActiveModel> = reservations
            .iter()
            .zip(&chosen)
            .flat_map(|(r, hosts)| {
                hosts
                    .iter()
                    .map(|h| new_allocation(*h, &r.id, &lease_id, (req.start, req.end), stamp))
            })
            .collect();
        if !allocations.is_empty() {
            allocation::Entity::insert_many(allocations)
                .exec(&*txn)
                .await?;
        }
        insert_all::<event::Entity, _>(&*txn, &events).await?;
        if !chosen.is_empty() {
            let add = chosen
                .iter()
                .flatten()
                .map(|h| BookingRow {
                    host: *h,
                    start: req.start,
                    end: req.end,
                    lease: lease_id.clone(),
                })
                .collect();
            placement
                .book(
                    &*txn,
                    BookingChange {
                        remove: Vec::new(),
                        add,
                    },
                )
                .await?;
        }
        let detail = LeaseDetail {
            lease,
            reservations,
            events: events.into_iter().map(EventSummary::from).collect(),
        };
        self.remember(&*txn, claim.as_ref(), &lease_id, &detail, now)
            .await?;
        failpoint::hit("create-before-commit");
        placement.commit(txn).await?;
        failpoint::hit("create-after-commit");
        tracing::info!(lease_id = %lease_id, hosts = ?chosen, "lease created");
        self.prepare(&detail.lease, &detail.reservations).await;
        self.changed("lease.create", &detail.lease, now).await;
        Ok(Created::New(detail))
    }

    /// Updates a lease; with `if_match`, only if it is still as the client saw it (checked in
    /// the write transaction, so two updates with one tag cannot both pass).
    pub async fn update_lease(
        &self,
        caller: &Caller,
        id: &str,
        body: &Received<rules::LeaseUpdate>,
        if_match: Option<&Precondition>,
    ) -> Result<LeaseDetail, DomainError> {
        let now = self.clock.now();
        let changes = rules::check_update(body.parse()?, now)?;
        // Usage enforcement asks before the write turn; `checked` is the lease it judged.
        let checked = self.enforce_update(caller, id, &changes, now).await?;
        let stamp = truncate_to_second(now);

        let txn = self.db.write().await?;
        let old = self.find_lease(&*txn, caller, id).await?;
        self.authorize_on("blazar:leases:put", caller, &old)?;
        self.check_lease_tag(&*txn, if_match, &old).await?;
        let mut lease = old.clone().into_active_model();
        if let Some(name) = &changes.name {
            lease.name = Set(name.clone());
        }
        lease.updated_at = Set(Some(stamp));
        let window = match update::plan_window(&old.id, &current_of(&old), &changes, now)? {
            UpdateScope::Rename => {
                lease.update(&*txn).await?;
                let detail = load_details(&*txn, vec![self.find_lease(&*txn, caller, id).await?])
                    .await?
                    .remove(0);
                txn.commit().await?;
                self.changed("lease.update", &detail.lease, now).await;
                return Ok(detail);
            }
            UpdateScope::Window(window) => window,
        };
        if window.moved {
            self.enforcement
                .check_duration(old.project_id.as_deref(), window.start, window.end)?;
        }
        let stored = reservation::Entity::find()
            .filter(reservation::Column::LeaseId.eq(&old.id))
            .order_by_asc(reservation::Column::Position)
            .all(&*txn)
            .await?;
        if let Some(c) = &checked
            && (c.lease != old || c.reservations != stored)
        {
            // The external service judged another version of this lease: refuse rather than
            // store what nobody checked.
            return Err(DomainError::InvalidStatus(format!(
                "Lease {} changed while the enforcement service was asked; retry",
                old.id
            )));
        }
        let held_rows = allocation::Entity::find()
            .filter(allocation::Column::LeaseId.eq(&old.id))
            .order_by_asc(allocation::Column::Id)
            .all(&*txn)
            .await?;
        let mut held: HashMap<String, Vec<i64>> = HashMap::new();
        for a in &held_rows {
            held.entry(a.reservation_id.clone())
                .or_default()
                .push(a.host_id);
        }
        let current = StoredLease {
            lease: &old,
            reservations: &stored,
            held: &held,
        };
        let plan = update::plan_update(current, &changes, window, now)?;

        let mut placement = self.placement.begin();
        let mut moves: Vec<HostMoves> = Vec::new();
        if plan.replans() {
            let needs = plan.needs();
            let chosen = placement
                .choose(&*txn, now, &needs, plan.booking_window(), Some(&old.id))
                .await?;
            for m in plan.host_moves(&chosen) {
                if !m.released.is_empty() {
                    allocation::Entity::delete_many()
                        .filter(allocation::Column::ReservationId.eq(&m.reservation_id))
                        .filter(allocation::Column::HostId.is_in(m.released.clone()))
                        .exec(&*txn)
                        .await?;
                }
                if !m.added.is_empty() {
                    allocation::Entity::insert_many(m.added.iter().map(|h| {
                        new_allocation(*h, &m.reservation_id, &old.id, plan.booking_window(), stamp)
                    }))
                    .exec(&*txn)
                    .await?;
                }
                // A running reservation hands its new hosts over, and takes its removed ones
                // back, at once (after the commit: never inside the write transaction).
                if m.running {
                    moves.push(m);
                }
            }
        }
        if window.moved {
            // Bookings follow the lease; once it has started, only their ends move.
            let mut q = allocation::Entity::update_many()
                .col_expr(allocation::Column::EndDate, Expr::value(window.end))
                .filter(allocation::Column::LeaseId.eq(&old.id));
            if !plan.started {
                q = q.col_expr(allocation::Column::StartDate, Expr::value(window.start));
            }
            q.exec(&*txn).await?;
        }
        if plan.bookings_change() {
            let add = allocation::Entity::find()
                .filter(allocation::Column::LeaseId.eq(&old.id))
                .all(&*txn)
                .await?
                .into_iter()
                .map(|a| BookingRow {
                    host: a.host_id,
                    start: a.start_date,
                    end: a.end_date,
                    lease: a.lease_id,
                })
                .collect();
            placement
                .book(
                    &*txn,
                    BookingChange {
                        remove: vec![LeaseBookings {
                            lease: old.id.clone(),
                            hosts: held_rows.iter().map(|a| a.host_id).collect(),
                        }],
                        add,
                    },
                )
                .await?;
        }
        for next in plan.changed_reservations() {
            let mut m = next.clone().into_active_model().reset_all();
            m.updated_at = Set(Some(stamp));
            m.update(&*txn).await?;
        }

        self.move_events(&*txn, &plan, now, stamp).await?;
        lease.start_date = Set(window.start);
        lease.end_date = Set(window.end);
        lease.update(&*txn).await?;
        let released_refs =
            host_refs(&*txn, moves.iter().flat_map(|m| m.released.iter().copied())).await?;
        let detail = load_details(&*txn, vec![self.find_lease(&*txn, caller, id).await?])
            .await?
            .remove(0);
        placement.commit(txn).await?;
        if !moves.is_empty() {
            self.move_hosts(&old, &moves, released_refs).await?;
        }
        self.changed("lease.update", &detail.lease, now).await;
        Ok(detail)
    }

    /// Hosts that joined or left running reservations, handed over and taken back through the
    /// driver. The update itself has committed: if the driver fails, the lease's
    /// `status_reason` says so and reconciliation finishes the moves.
    async fn move_hosts(
        &self,
        lease: &lease::Model,
        moves: &[HostMoves],
        released: HashMap<i64, HostRef>,
    ) -> Result<(), DomainError> {
        let txn = self.db.read().await?;
        let work = load_work(&txn, &lease.id).await?;
        txn.commit().await?;
        let Some(work) = work else {
            return Ok(());
        };
        let mut log = ActionLog::default();
        let mut failures: Vec<String> = Vec::new();
        for m in moves {
            let Some(r) = work.reservations.iter().find(|r| r.id == m.reservation_id) else {
                continue;
            };
            let rh = work.reservation_hosts(r);
            let gone: Vec<HostRef> = m
                .released
                .iter()
                .filter_map(|h| released.get(h).cloned())
                .collect();
            if !gone.is_empty()
                && let Err(e) = self.driver.remove(rh, &gone, &mut log).await
            {
                failures.push(format!("taking back hosts {:?}: {e}", m.released));
            }
            let joined: Vec<HostRef> = rh
                .hosts
                .iter()
                .filter(|h| m.added.contains(&h.id))
                .cloned()
                .collect();
            if !joined.is_empty()
                && let Err(e) = self
                    .driver
                    .assign(
                        ReservationHosts {
                            hosts: &joined,
                            ..rh
                        },
                        &mut log,
                    )
                    .await
            {
                failures.push(format!("handing over hosts {:?}: {e}", m.added));
            }
        }
        let stamp = truncate_to_second(self.clock.now());
        let txn = self.db.write().await?;
        if !log.is_empty() {
            entity::driver_action::Entity::insert_many(log.rows(stamp))
                .exec(&*txn)
                .await?;
        }
        if !failures.is_empty() {
            let reason = format!(
                "Updated, but Nova did not finish moving the hosts ({}); reconciliation retries",
                failures.join("; ")
            );
            tracing::warn!(lease_id = %lease.id, %reason, "host moves after an update failed");
            lease::Entity::update_many()
                .col_expr(lease::Column::StatusReason, Expr::value(reason))
                .filter(lease::Column::Id.eq(&lease.id))
                .exec(&*txn)
                .await?;
            self.repair.notify_one();
        }
        txn.commit().await?;
        Ok(())
    }

    /// After a committed change: notify subscribers and, if the lease's events may now come
    /// before the runner's planned wake-up, ring it (and, on PostgreSQL, the other instances').
    async fn changed(&self, kind: &str, lease: &lease::Model, now: NaiveDateTime) {
        self.notifier.emit(lease_payload(kind, lease, None, now));
        if kind != "lease.delete" {
            // The lease's start comes before its other events.
            self.wake.ring_for(lease.start_date);
            self.db.announce_change().await;
        }
    }

    /// Moves the lease's events to the new window, as the plan says.
    async fn move_events(
        &self,
        txn: &impl ConnectionTrait,
        plan: &UpdatePlan<'_>,
        now: NaiveDateTime,
        stamp: NaiveDateTime,
    ) -> Result<(), DomainError> {
        let lease_id = &plan.current.lease.id;
        let events = event::Entity::find()
            .filter(event::Column::LeaseId.eq(lease_id))
            .all(txn)
            .await?;
        let stored: Vec<StoredEvent<'_>> = events
            .iter()
            .map(|e| StoredEvent {
                id: &e.id,
                kind: e.event_type,
                time: e.time,
                status: e.status,
            })
            .collect();
        let changes = plan.event_changes(&stored, now);
        for m in changes.moved {
            let mut q = event::Entity::update_many()
                .col_expr(event::Column::Time, Expr::value(m.time))
                .col_expr(event::Column::UpdatedAt, Expr::value(stamp))
                .filter(event::Column::Id.eq(&m.id));
            if m.rearm {
                q = q.col_expr(event::Column::Status, Expr::value(EventStatus::Undone));
            }
            q.exec(txn).await?;
        }
        if let Some(t) = changes.create_before_end {
            insert_all::<event::Entity, _>(
                txn,
                &[new_event(lease_id, EventType::BeforeEndLease, t, stamp)],
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes a lease. One that has not started (or has ended) goes at once, and its empty
    /// Nova aggregates after it. A running one first gives its hosts back: its end event is
    /// claimed (the lease shows DELETING), the driver releases the hosts with no transaction
    /// open, then the rows go. If the driver fails, the lease is as it was and the error says
    /// why; if this process dies half-way, the runner finishes the deletion when the claim
    /// expires. It runs in a task of its own, so that a client hanging up does not stop it.
    /// Deletes a lease; with `if_match`, only if it is still as the client saw it (checked in
    /// the transaction that deletes it, or that claims a running lease's end).
    pub async fn delete_lease(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        if_match: Option<Precondition>,
    ) -> Result<(), DomainError> {
        let (svc, caller, id) = (self.clone(), caller.clone(), id.to_string());
        tokio::spawn(async move { svc.delete_lease_here(&caller, &id, if_match.as_ref()).await })
            .await
            .map_err(|e| DomainError::Internal(format!("lease deletion task: {e}")))?
    }

    async fn delete_lease_here(
        self: Arc<Self>,
        caller: &Caller,
        id: &str,
        if_match: Option<&Precondition>,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        let stamp = truncate_to_second(now);
        let txn = self.db.write().await?;
        let lease = self.find_lease(&*txn, caller, id).await?;
        self.authorize_on("blazar:leases:delete", caller, &lease)?;
        self.check_lease_tag(&*txn, if_match, &lease).await?;
        let status = lease.status;
        lifecycle::check_deletable(&lease.id, status)?;
        let events = event::Entity::find()
            .filter(event::Column::LeaseId.eq(&lease.id))
            .all(&*txn)
            .await?;
        if let Some(busy) = events
            .iter()
            .find(|e| lifecycle::claim_is_live(&event_state(e), now))
        {
            return Err(DomainError::InvalidStatus(format!(
                "Lease {}: its {} event is running; retry when it has finished",
                lease.id, busy.event_type
            )));
        }
        let running = reservation::Entity::find()
            .filter(reservation::Column::LeaseId.eq(&lease.id))
            .filter(reservation::Column::Status.eq(ReservationStatus::Active))
            .count(&*txn)
            .await?;
        let end = events.iter().find(|e| e.event_type == EventType::EndLease);
        let (Some(end), true) = (end, running > 0) else {
            // Nothing runs on the hosts: the rows go now (reservations, events and allocations
            // with them, ON DELETE CASCADE), and the hosts are free as soon as this commits.
            let work = load_work(&*txn, &lease.id).await?;
            let booked = work.as_ref().map(Work::host_ids).unwrap_or_default();
            self.forget_leases(
                txn,
                vec![LeaseBookings {
                    lease: lease.id.clone(),
                    hosts: booked,
                }],
            )
            .await?;
            tracing::info!(lease_id = %lease.id, "lease deleted");
            if let Some(work) = work {
                // As upstream, a lease deleted before its end is announced as ended.
                if status != LeaseStatus::Terminated {
                    self.announce_end(&work);
                }
                self.discard(&work).await;
            }
            self.changed("lease.delete", &lease, now).await;
            return Ok(());
        };

        // A running lease: claim its end, as the runner would, so that nothing else runs it.
        let claimed = event::Entity::update_many()
            .col_expr(event::Column::Status, Expr::value(EventStatus::InProgress))
            .col_expr(
                event::Column::ClaimedBy,
                Expr::value(self.instance.as_str()),
            )
            .col_expr(event::Column::ClaimedAt, Expr::value(now))
            .col_expr(
                event::Column::ClaimExpiresAt,
                Expr::value(
                    now + TimeDelta::seconds(self.settings.runner.event_claim_seconds as i64),
                ),
            )
            .col_expr(event::Column::Attempts, Expr::value(end.attempts + 1))
            // The lease ends now: if this process dies, the runner finds the end due.
            .col_expr(event::Column::Time, Expr::value(now))
            .filter(event::Column::Id.eq(&end.id))
            .filter(event::Column::Attempts.eq(end.attempts))
            .exec(&*txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Err(DomainError::InvalidStatus(format!(
                "Lease {} changed meanwhile; retry",
                lease.id
            )));
        }
        let attempts = end.attempts + 1;
        lease::Entity::update_many()
            .col_expr(lease::Column::Status, Expr::value(LeaseStatus::Deleting))
            .col_expr(
                lease::Column::StatusReason,
                Expr::value("Deleting: the hosts are being returned"),
            )
            .filter(lease::Column::Id.eq(&lease.id))
            .exec(&*txn)
            .await?;
        let work = load_work(&*txn, &lease.id).await?;
        txn.commit().await?;
        let Some(work) = work else {
            return Ok(());
        };

        let keeper = ClaimKeeper::start(
            self.db.clone(),
            self.clock.clone(),
            self.instance.clone(),
            TimeDelta::seconds(self.settings.runner.event_claim_seconds as i64),
            end.id.clone(),
            attempts,
        );
        let mut log = ActionLog::default();
        let mut released = Ok(());
        for r in &work.reservations {
            released = self
                .driver
                .release(work.reservation_hosts(r), &mut log)
                .await;
            if released.is_err() {
                break;
            }
        }
        keeper.stop().await;
        failpoint::hit("delete-after-release");

        let txn = self.db.write().await?;
        let ours = event::Entity::find_by_id(end.id.clone())
            .one(&*txn)
            .await?
            .is_some_and(|e| {
                e.claimed_by.as_deref() == Some(self.instance.as_str()) && e.attempts == attempts
            });
        if !log.is_empty() {
            entity::driver_action::Entity::insert_many(log.rows(stamp))
                .exec(&*txn)
                .await?;
        }
        if !ours {
            txn.commit().await?;
            return Err(DomainError::InvalidStatus(format!(
                "Lease {}: the deletion took too long and the runner took it over; it finishes \
                 there",
                lease.id
            )));
        }
        match released {
            Ok(()) => {
                self.forget_leases(
                    txn,
                    vec![LeaseBookings {
                        lease: lease.id.clone(),
                        hosts: work.host_ids(),
                    }],
                )
                .await?;
                tracing::info!(lease_id = %lease.id, "running lease deleted; its hosts returned");
                self.announce_end(&work);
                self.changed("lease.delete", &lease, now).await;
                Ok(())
            }
            Err(e) => {
                // Nothing is deleted: the lease and its end are as they were.
                event::Entity::update_many()
                    .col_expr(event::Column::Status, Expr::value(EventStatus::Undone))
                    .col_expr(
                        event::Column::ClaimedBy,
                        Expr::value(Option::<String>::None),
                    )
                    .col_expr(
                        event::Column::ClaimExpiresAt,
                        Expr::value(Option::<NaiveDateTime>::None),
                    )
                    .col_expr(event::Column::Time, Expr::value(end.time))
                    .filter(event::Column::Id.eq(&end.id))
                    .exec(&*txn)
                    .await?;
                lease::Entity::update_many()
                    .col_expr(lease::Column::Status, Expr::value(lease.status))
                    .col_expr(
                        lease::Column::StatusReason,
                        Expr::value(format!("Delete failed; the lease is unchanged: {e}")),
                    )
                    .filter(lease::Column::Id.eq(&lease.id))
                    .exec(&*txn)
                    .await?;
                txn.commit().await?;
                // Hosts already returned go back into the reservation's aggregate.
                self.repair.notify_one();
                self.wake.ring();
                Err(super::driver_failure(e))
            }
        }
    }

    /// Deletes the leases `gone` (with their reservations, events and allocations) and their
    /// bookings of the hosts each held from the placement copy, and commits `txn`.
    pub(crate) async fn forget_leases(
        &self,
        txn: WriteTxn<'_>,
        gone: Vec<LeaseBookings>,
    ) -> Result<(), DbErr> {
        let mut placement = self.placement.begin();
        for l in &gone {
            lease::Entity::delete_by_id(l.lease.clone())
                .exec(&*txn)
                .await?;
        }
        let remove: Vec<LeaseBookings> = gone.into_iter().filter(|l| !l.hosts.is_empty()).collect();
        if !remove.is_empty() {
            placement
                .book(
                    &*txn,
                    BookingChange {
                        remove,
                        add: Vec::new(),
                    },
                )
                .await?;
        }
        placement.commit(txn).await
    }

    /// After a lease that never ran (or has ended) is gone: its reservations' leftovers in
    /// Nova go too (empty aggregates), best effort; reconciliation removes what is left.
    async fn discard(&self, work: &Work) {
        for r in &work.reservations {
            if let Err(e) = self.driver.discard(work.reservation_hosts(r)).await {
                tracing::warn!(reservation_id = %r.id, error = %e, "cannot clean up a deleted reservation in Nova; reconciliation will");
                self.repair.notify_one();
            }
        }
    }

    /// After a lease is created: its reservations' Nova aggregates, at once (as upstream). If
    /// Nova cannot be reached, the lease stands (its hosts are booked) and the start creates
    /// them.
    async fn prepare(&self, lease: &lease::Model, reservations: &[reservation::Model]) {
        for r in reservations {
            let rh = ReservationHosts {
                lease,
                reservation: r,
                hosts: &[],
            };
            if let Err(e) = self.driver.prepare(rh).await {
                tracing::warn!(reservation_id = %r.id, error = %e, "cannot prepare the reservation in Nova now; its start will");
            }
        }
    }
}

/// What the update's rules need of the stored lease.
pub(crate) fn current_of(l: &lease::Model) -> CurrentLease {
    CurrentLease {
        start: l.start_date,
        end: l.end_date,
        status: l.status,
    }
}

/// Loads reservations and events for many leases with one query per table (per chunk of ids).
pub(crate) async fn load_details(
    conn: &impl ConnectionTrait,
    leases: Vec<lease::Model>,
) -> Result<Vec<LeaseDetail>, sea_orm::DbErr> {
    let mut reservations = Vec::new();
    let mut events = Vec::new();
    for chunk in leases.chunks(IN_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|l| l.id.as_str()).collect();
        reservations.extend(
            reservation::Entity::find()
                .filter(reservation::Column::LeaseId.is_in(ids.clone()))
                .order_by_asc(reservation::Column::LeaseId)
                .order_by_asc(reservation::Column::Position)
                .all(conn)
                .await?,
        );
        // Only the columns the API shows: each datetime decoded costs a parse.
        let rows: Vec<EventRow> = event::Entity::find()
            .select_only()
            .columns([
                event::Column::Id,
                event::Column::LeaseId,
                event::Column::EventType,
                event::Column::Time,
                event::Column::Status,
                event::Column::CreatedAt,
                event::Column::UpdatedAt,
            ])
            .filter(event::Column::LeaseId.is_in(ids))
            .into_tuple()
            .all(conn)
            .await?;
        events.extend(rows.into_iter().map(
            |(id, lease_id, event_type, time, status, created_at, updated_at)| EventSummary {
                id,
                lease_id,
                event_type,
                time,
                status,
                created_at,
                updated_at,
            },
        ));
    }
    Ok(assemble_details(leases, reservations, events))
}

/// Each lease with its reservations (in the order given: by position) and its events (in
/// upstream's order), from the rows of all of them.
pub(crate) fn assemble_details(
    leases: Vec<lease::Model>,
    reservations: Vec<reservation::Model>,
    events: Vec<EventSummary>,
) -> Vec<LeaseDetail> {
    let mut by_lease: HashMap<String, (Vec<reservation::Model>, Vec<EventSummary>)> =
        HashMap::with_capacity(leases.len());
    for r in reservations {
        by_lease.entry(r.lease_id.clone()).or_default().0.push(r);
    }
    for e in events {
        by_lease.entry(e.lease_id.clone()).or_default().1.push(e);
    }
    leases
        .into_iter()
        .map(|lease| {
            let (reservations, mut events) = by_lease.remove(&lease.id).unwrap_or_default();
            events.sort_by_key(|e| (event_rank(e.event_type), e.time));
            LeaseDetail {
                reservations,
                events,
                lease,
            }
        })
        .collect()
}

/// Upstream lists events in creation order: start, end, then before-end.
fn event_rank(kind: EventType) -> u8 {
    match kind {
        EventType::StartLease => 0,
        EventType::EndLease => 1,
        EventType::BeforeEndLease => 2,
    }
}

fn new_event(
    lease_id: &str,
    kind: EventType,
    time: NaiveDateTime,
    stamp: NaiveDateTime,
) -> event::Model {
    event::Model {
        id: Uuid::new_v4().to_string(),
        lease_id: lease_id.to_string(),
        event_type: kind,
        time,
        status: EventStatus::Undone,
        created_at: stamp,
        updated_at: None,
        claimed_by: None,
        claimed_at: None,
        claim_expires_at: None,
        attempts: 0,
        last_error: None,
        done_at: None,
    }
}

fn new_allocation(
    host: i64,
    reservation_id: &str,
    lease_id: &str,
    (start, end): (NaiveDateTime, NaiveDateTime),
    stamp: NaiveDateTime,
) -> allocation::ActiveModel {
    allocation::ActiveModel {
        host_id: Set(host),
        reservation_id: Set(reservation_id.to_string()),
        lease_id: Set(lease_id.to_string()),
        start_date: Set(start),
        end_date: Set(end),
        created_at: Set(stamp),
        ..Default::default()
    }
}

/// Inserts whole models in one statement.
async fn insert_all<E, M>(conn: &impl ConnectionTrait, models: &[M]) -> Result<(), sea_orm::DbErr>
where
    E: EntityTrait<Model = M>,
    M: Clone + IntoActiveModel<E::ActiveModel>,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    if models.is_empty() {
        return Ok(());
    }
    E::insert_many(
        models
            .iter()
            .map(|m| m.clone().into_active_model().reset_all()),
    )
    .exec(conn)
    .await?;
    Ok(())
}
