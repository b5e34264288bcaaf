//! The lease event runner: runs every due event once, on time, and survives crashes.
//!
//! The loop sleeps until the next due event or claim expiry (or until a lease changes), then
//! `run_due(now)`. Each event runs in two transactions: a claim (UNDONE -> IN_PROGRESS, with the
//! claiming instance and an expiry), then act + outcome (DONE or ERROR) + an `event_runs` audit row.
//! A claim that expires (its runner died) is taken over and the event runs again; because the
//! driver acts inside the outcome transaction, a killed attempt leaves nothing behind.
//!
//! Order: due events run by time; at equal times before-end and end events run before starts
//! (a lease ending frees hosts for one starting), and within a lease start, then before-end, then
//! end: an event whose predecessor has not finished waits for it.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{NaiveDateTime, TimeDelta};
use entity::{allocation, event, event_run, lease, reservation};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use tokio::sync::{Notify, watch};

use super::{
    driver::{DriverError, ReservationHosts},
    notify::lease_payload,
};
use crate::{
    domain::{
        dates::truncate_to_second,
        lease::{EventStatus, EventType, LeaseStatus, ReservationStatus},
    },
    service::Services,
};

/// Longest sleep between two looks at the events table (other instances may have written).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Pause before retrying events that are due but waiting on another runner's claim.
const BLOCKED_RETRY: Duration = Duration::from_millis(250);
/// Due events read per query.
const BATCH: u64 = 200;

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

    fn awake(&self) {
        self.planned.store(AWAKE, Ordering::SeqCst);
    }

    fn sleeping_until(&self, t: NaiveDateTime) {
        self.planned
            .store(t.and_utc().timestamp_millis(), Ordering::SeqCst);
    }
}

/// What one `run_due` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub done: usize,
    pub failed: usize,
    /// Due events left for later: waiting on a predecessor or on another runner's claim.
    pub waiting: usize,
}

enum Outcome {
    Done,
    Failed,
    /// Not runnable now (predecessor unfinished, lease busy, claimed elsewhere, or gone).
    Skipped,
}

pub struct Runner {
    services: Arc<Services>,
    instance: String,
    claim_ttl: TimeDelta,
    stopping: AtomicBool,
}

impl Runner {
    pub fn new(services: Arc<Services>) -> Self {
        let instance = services
            .settings
            .instance_name
            .clone()
            .unwrap_or_else(default_instance_name);
        let claim_ttl = TimeDelta::seconds(services.settings.event_claim_seconds as i64);
        Self {
            services,
            instance,
            claim_ttl,
            stopping: AtomicBool::new(false),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs every event due at `now`, in order, until none can make progress.
    pub async fn run_due(&self, now: NaiveDateTime) -> Result<RunReport, DbErr> {
        let mut report = RunReport::default();
        let mut skipped: HashSet<String> = HashSet::new();
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                break;
            }
            let mut due = self.due_events(now, BATCH + skipped.len() as u64).await?;
            due.retain(|e| !skipped.contains(&e.id));
            if due.is_empty() {
                break;
            }
            due.sort_by_key(|e| (e.time, cross_lease_rank(&e.event_type), e.id.clone()));
            let mut progressed = false;
            for e in due {
                if self.stopping.load(Ordering::Relaxed) {
                    break;
                }
                match self.run_event(&e.id, now).await? {
                    Outcome::Done => {
                        report.done += 1;
                        progressed = true;
                    }
                    Outcome::Failed => {
                        report.failed += 1;
                        progressed = true;
                    }
                    Outcome::Skipped => {
                        skipped.insert(e.id);
                    }
                }
            }
            if progressed {
                // Events skipped for an unfinished predecessor may be runnable now.
                skipped.clear();
            } else {
                break;
            }
        }
        report.waiting = skipped.len();
        Ok(report)
    }

    /// Events that may run at `now`: waiting ones whose time has come, and ones claimed by a
    /// runner whose claim has expired. Two queries, each a range of the (status, time) index:
    /// one query with an OR would make SQLite read the whole events table.
    async fn due_events(&self, now: NaiveDateTime, limit: u64) -> Result<Vec<event::Model>, DbErr> {
        let conn = self.services.db.conn();
        let mut due = event::Entity::find()
            .filter(event::Column::Status.eq(EventStatus::Undone.as_str()))
            .filter(event::Column::Time.lte(now))
            .order_by_asc(event::Column::Time)
            .order_by_asc(event::Column::Id)
            .limit(limit)
            .all(conn)
            .await?;
        due.extend(
            event::Entity::find()
                .filter(event::Column::Status.eq(EventStatus::InProgress.as_str()))
                .filter(event::Column::ClaimExpiresAt.lte(now))
                .filter(event::Column::Time.lte(now))
                .limit(limit)
                .all(conn)
                .await?,
        );
        Ok(due)
    }

    /// When something may next be due: the earliest waiting event or expiring claim.
    pub async fn next_wakeup(&self) -> Result<Option<NaiveDateTime>, DbErr> {
        let conn = self.services.db.conn();
        let undone = event::Entity::find()
            .filter(event::Column::Status.eq(EventStatus::Undone.as_str()))
            .order_by_asc(event::Column::Time)
            .one(conn)
            .await?
            .map(|e| e.time);
        let claim = event::Entity::find()
            .filter(event::Column::Status.eq(EventStatus::InProgress.as_str()))
            .filter(event::Column::ClaimExpiresAt.is_not_null())
            .order_by_asc(event::Column::ClaimExpiresAt)
            .one(conn)
            .await?
            .and_then(|e| e.claim_expires_at);
        Ok(match (undone, claim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// The background loop, until `shutdown` turns true. Events missed while the server was down
    /// run at once.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(instance = %self.instance, "lease runner started");
        let bell = &self.services.wake;
        loop {
            // Rings from now on wake the next sleep at once (a permit is kept).
            bell.awake();
            let now = self.services.clock.now();
            let pause = match self.run_due(now).await {
                Ok(report) => {
                    if report.done + report.failed > 0 {
                        tracing::debug!(?report, "events run");
                    }
                    match self.next_wakeup().await {
                        Ok(Some(t)) => {
                            let wait = (t - self.services.clock.now())
                                .to_std()
                                .unwrap_or(Duration::ZERO);
                            if wait.is_zero() { BLOCKED_RETRY } else { wait }
                        }
                        Ok(None) => MAX_IDLE,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the next event time");
                            Duration::from_secs(1)
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "running due events failed; retrying");
                    Duration::from_secs(1)
                }
            };
            let pause = pause.min(MAX_IDLE);
            bell.sleeping_until(
                self.services.clock.now() + TimeDelta::from_std(pause).unwrap_or(TimeDelta::zero()),
            );
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = bell.notify.notified() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                self.stopping.store(true, Ordering::Relaxed);
                break;
            }
        }
        tracing::info!(instance = %self.instance, "lease runner stopped");
    }

    /// Claims, runs and records one event.
    async fn run_event(&self, event_id: &str, now: NaiveDateTime) -> Result<Outcome, DbErr> {
        let Some((ev, kind)) = self.claim(event_id, now).await? else {
            return Ok(Outcome::Skipped);
        };
        let started = self.services.clock.now();
        let txn = self.services.db.write().await?;
        // Still ours? (If we were too slow, our claim expired and someone else took over.)
        let Some(current) = event::Entity::find_by_id(ev.id.clone()).one(&*txn).await? else {
            return Ok(Outcome::Skipped);
        };
        if current.status != EventStatus::InProgress.as_str()
            || current.claimed_by.as_deref() != Some(self.instance.as_str())
        {
            return Ok(Outcome::Skipped);
        }
        let Some(lease) = lease::Entity::find_by_id(ev.lease_id.clone())
            .one(&*txn)
            .await?
        else {
            return Ok(Outcome::Skipped);
        };
        let reservations = reservation::Entity::find()
            .filter(reservation::Column::LeaseId.eq(&lease.id))
            .order_by_asc(reservation::Column::Position)
            .all(&*txn)
            .await?;
        let mut hosts: HashMap<String, Vec<i64>> = HashMap::new();
        for a in allocation::Entity::find()
            .filter(allocation::Column::LeaseId.eq(&lease.id))
            .order_by_asc(allocation::Column::HostId)
            .all(&*txn)
            .await?
        {
            hosts.entry(a.reservation_id).or_default().push(a.host_id);
        }
        let stamp = truncate_to_second(started);
        let acted = self
            .act(&txn, kind, &lease, &reservations, &hosts, started)
            .await;
        let (outcome, reason) = match &acted {
            Ok(summary) => (EventStatus::Done, summary.clone()),
            Err(DriverError::Database(e)) => return Err(DbErr::Custom(e.to_string())),
            Err(DriverError::Failed(why)) => (
                EventStatus::Error,
                format!("{} failed: {why}", kind.as_str()),
            ),
        };
        let finished = self.services.clock.now();

        // Reservations follow the event.
        let new_res_status = match (outcome, kind) {
            (EventStatus::Done, EventType::StartLease) => Some(ReservationStatus::Active),
            (EventStatus::Done, EventType::EndLease) => Some(ReservationStatus::Deleted),
            (EventStatus::Done, _) => None,
            _ => Some(ReservationStatus::Error),
        };
        if let Some(s) = new_res_status
            && !reservations.is_empty()
        {
            reservation::Entity::update_many()
                .col_expr(reservation::Column::Status, Expr::value(s.as_str()))
                .col_expr(reservation::Column::UpdatedAt, Expr::value(stamp))
                .filter(reservation::Column::LeaseId.eq(&lease.id))
                .exec(&*txn)
                .await?;
        }
        let mut e = current.into_active_model();
        e.status = Set(outcome.as_str().into());
        e.claim_expires_at = Set(None);
        e.done_at = Set(Some(finished));
        e.updated_at = Set(Some(stamp));
        if outcome == EventStatus::Error {
            e.last_error = Set(Some(reason.clone()));
        }
        let ev_done = e.update(&*txn).await?;

        let new_status = match (outcome, kind) {
            (EventStatus::Error, _) => Some(LeaseStatus::Error),
            (_, EventType::StartLease) => Some(LeaseStatus::Active),
            (_, EventType::EndLease) => Some(LeaseStatus::Terminated),
            _ => None,
        };
        let mut l = lease.clone().into_active_model();
        if let Some(s) = new_status {
            l.status = Set(s.as_str().into());
        }
        l.action = Set(Some(action_name(kind).into()));
        l.status_reason = Set(Some(reason));
        l.updated_at = Set(Some(stamp));
        let lease_after = l.update(&*txn).await?;

        event_run::ActiveModel {
            event_id: Set(ev.id.clone()),
            lease_id: Set(lease.id.clone()),
            event_type: Set(ev.event_type.clone()),
            instance: Set(self.instance.clone()),
            outcome: Set(outcome.as_str().into()),
            scheduled_at: Set(ev.time),
            started_at: Set(started),
            finished_at: Set(finished),
            ..Default::default()
        }
        .insert(&*txn)
        .await?;
        txn.commit().await?;

        let lateness_ms = (finished - ev.time).num_milliseconds();
        tracing::info!(
            lease_id = %lease.id,
            event = kind.as_str(),
            outcome = outcome.as_str(),
            lateness_ms,
            "lease event run"
        );
        self.services.notifier.emit(lease_payload(
            &format!("lease.event.{}", kind.as_str()),
            &lease_after,
            Some(&ev_done),
            finished,
        ));
        Ok(if outcome == EventStatus::Done {
            Outcome::Done
        } else {
            Outcome::Failed
        })
    }

    /// The claim transaction: UNDONE (or IN_PROGRESS with an expired claim) -> IN_PROGRESS, if the
    /// lease is ready for it. Returns the event as it was before the claim.
    async fn claim(
        &self,
        event_id: &str,
        now: NaiveDateTime,
    ) -> Result<Option<(event::Model, EventType)>, DbErr> {
        let txn = self.services.db.write().await?;
        let Some(ev) = event::Entity::find_by_id(event_id.to_string())
            .one(&*txn)
            .await?
        else {
            return Ok(None);
        };
        let expired = ev.status == EventStatus::InProgress.as_str()
            && ev.claim_expires_at.is_some_and(|t| t <= now);
        if ev.time > now || !(ev.status == EventStatus::Undone.as_str() || expired) {
            return Ok(None);
        }
        let Some(lease) = lease::Entity::find_by_id(ev.lease_id.clone())
            .one(&*txn)
            .await?
        else {
            return Ok(None);
        };
        let Some(kind) = EventType::parse(&ev.event_type) else {
            return Ok(None);
        };
        let siblings = event::Entity::find()
            .filter(event::Column::LeaseId.eq(&lease.id))
            .all(&*txn)
            .await?;
        let finished = |t: EventType| {
            siblings
                .iter()
                .filter(|s| s.event_type == t.as_str())
                .all(|s| {
                    s.status == EventStatus::Done.as_str()
                        || s.status == EventStatus::Error.as_str()
                })
        };
        let ready = match kind {
            EventType::StartLease => true,
            EventType::BeforeEndLease => finished(EventType::StartLease),
            EventType::EndLease => {
                finished(EventType::StartLease) && finished(EventType::BeforeEndLease)
            }
        };
        if !ready {
            return Ok(None);
        }
        let status = LeaseStatus::parse(&lease.status).unwrap_or(LeaseStatus::Error);
        let (allowed, during): (&[LeaseStatus], Option<LeaseStatus>) = match kind {
            EventType::StartLease => (&[LeaseStatus::Pending], Some(LeaseStatus::Starting)),
            EventType::BeforeEndLease => (&[LeaseStatus::Active, LeaseStatus::Error], None),
            EventType::EndLease => (
                &[LeaseStatus::Active, LeaseStatus::Error],
                Some(LeaseStatus::Terminating),
            ),
        };
        // A crashed attempt left the lease in this event's transitional status: take it over.
        let resuming = expired && during == Some(status);
        if !allowed.contains(&status) && !resuming {
            return Ok(None);
        }
        let claimed = event::Entity::update_many()
            .col_expr(
                event::Column::Status,
                Expr::value(EventStatus::InProgress.as_str()),
            )
            .col_expr(event::Column::ClaimedBy, Expr::value(self.instance.clone()))
            .col_expr(event::Column::ClaimedAt, Expr::value(now))
            .col_expr(
                event::Column::ClaimExpiresAt,
                Expr::value(now + self.claim_ttl),
            )
            .col_expr(event::Column::Attempts, Expr::value(ev.attempts + 1))
            .filter(event::Column::Id.eq(&ev.id))
            .filter(event::Column::Status.eq(&ev.status))
            .filter(event::Column::Attempts.eq(ev.attempts))
            .exec(&*txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(None);
        }
        if let Some(s) = during {
            lease::Entity::update_many()
                .col_expr(lease::Column::Status, Expr::value(s.as_str()))
                .filter(lease::Column::Id.eq(&lease.id))
                .exec(&*txn)
                .await?;
        }
        txn.commit().await?;
        if expired {
            tracing::warn!(
                event_id = %ev.id,
                previous = ev.claimed_by.as_deref().unwrap_or("-"),
                "took over an event whose claim expired"
            );
        }
        Ok(Some((ev, kind)))
    }

    /// Acts through the driver on every reservation; returns a summary for `status_reason`.
    async fn act(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        kind: EventType,
        lease: &lease::Model,
        reservations: &[reservation::Model],
        hosts: &HashMap<String, Vec<i64>>,
        now: NaiveDateTime,
    ) -> Result<String, DriverError> {
        let driver = &self.services.driver;
        let none = Vec::new();
        let mut touched: Vec<i64> = Vec::new();
        let mut actions: Vec<String> = Vec::new();
        for r in reservations {
            let held = hosts.get(&r.id).unwrap_or(&none);
            let rh = ReservationHosts {
                lease,
                reservation: r,
                hosts: held,
            };
            match kind {
                EventType::StartLease => driver.assign(txn, rh, now).await?,
                EventType::EndLease => driver.release(txn, rh, now).await?,
                EventType::BeforeEndLease => {
                    let action = if r.before_end == "default" {
                        self.services.settings.default_before_end_action.as_str()
                    } else {
                        r.before_end.as_str()
                    };
                    driver.before_end(txn, rh, action, now).await?;
                    actions.push(if action.is_empty() { "none" } else { action }.to_string());
                }
            }
            touched.extend(held);
        }
        let list = if touched.is_empty() {
            "no hosts".to_string()
        } else {
            format!(
                "hosts {}",
                touched
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Ok(match kind {
            EventType::StartLease => format!("Lease started: {list} assigned"),
            EventType::EndLease => format!("Lease ended: {list} released"),
            EventType::BeforeEndLease => {
                actions.sort();
                actions.dedup();
                let actions = if actions.is_empty() {
                    "none".to_string()
                } else {
                    actions.join(", ")
                };
                format!("Before-end action {actions} taken on {list}")
            }
        })
    }

    /// On PostgreSQL: rings this instance's bell whenever another instance announces a lease
    /// change, so that an event created elsewhere runs here on time. Reconnects after errors.
    pub async fn listen_for_changes(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        use sea_orm::sqlx::postgres::PgListener;
        let pool = self
            .services
            .db
            .conn()
            .get_postgres_connection_pool()
            .clone();
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(crate::db::PG_CHANGES_CHANNEL).await {
                    Ok(()) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for lease changes");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for lease changes");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    n = listener.recv() => match n {
                        Ok(_) => self.services.wake.ring(),
                        Err(e) => {
                            tracing::warn!(error = %e, "lease change listener lost; reconnecting");
                            break;
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            }
            // Changes announced while disconnected: look at the table again.
            self.services.wake.ring();
        }
    }

    /// Asks the loop to stop between events.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

/// At equal times, leases ending go before leases starting (they free hosts for them).
fn cross_lease_rank(kind: &str) -> u8 {
    match EventType::parse(kind) {
        Some(EventType::BeforeEndLease) => 0,
        Some(EventType::EndLease) => 1,
        Some(EventType::StartLease) => 2,
        None => 3,
    }
}

fn action_name(kind: EventType) -> &'static str {
    match kind {
        EventType::StartLease => "START",
        EventType::BeforeEndLease => "BEFORE_END",
        EventType::EndLease => "END",
    }
}

fn default_instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "blazar".into());
    format!("{host}-{}", std::process::id())
}
