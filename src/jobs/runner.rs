//! The lease event runner: runs every due event once, on time, and survives crashes and outages
//! of Nova.
//!
//! The loop sleeps until the next due event or claim expiry (or until a lease changes), then
//! `run_due(now)`. Due events run in batches, each as claim, act, record: one claim transaction
//! for the whole batch (each event UNDONE -> IN_PROGRESS, with the claiming instance and an
//! expiry), then the drivers act with no transaction open (a Nova call must not hold the write
//! turn), several events at once, then one outcome transaction for the batch (each event DONE or
//! ERROR, the driver's actions, an `event_runs` audit row). Two commits per batch instead of two
//! per event: 1,000 leases starting together are not 2,000 fsyncs, nor 1,000 Nova calls in a row.
//! A batch holds at most one event per lease and per host, so what must run before what (a
//! lease's start before its end, a lease's end before the next one starts on its host) still does:
//! the later event waits for the next batch. A claim that expires (its runner died) is taken over
//! and the event runs again; drivers are idempotent, so it converges. When Nova is unreachable or
//! fails, the event waits IN_PROGRESS with no claimant and runs again after a backoff, until
//! `nova_retry_deadline_seconds` have passed; then it is an ERROR.
//!
//! The rules (which event may run when, what it does to the statuses, the order of events due
//! together, the retry backoff) are `domain::lifecycle`'s; this module asks them and does the I/O.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use super::{
    bell::Bell,
    driver::{ActionLog, DriverError, HostRef, ReservationHosts, ResourceDriver},
    notify::{Notifier, lease_payload},
};
use crate::{
    clock::SharedClock,
    db::{Db, WriteTxn},
    domain::{
        dates::{format_lease_date, truncate_to_second},
        lease::{BeforeEnd, EventStatus, EventType, RunOutcome},
        lifecycle::{self, EventState},
        placement::LeaseBookings,
    },
    failpoint,
    metrics::Metrics,
    shutdown::Shutdown,
};
use chrono::{NaiveDateTime, TimeDelta};
use entity::{allocation, driver_action, event, event_run, host, lease, reservation};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use tokio::{sync::Semaphore, task::JoinSet};

/// Longest sleep between two looks at the events table (other instances may have written).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Pause before retrying events that are due but waiting on another runner's claim.
const BLOCKED_RETRY: Duration = Duration::from_millis(250);
/// Due events read per query.
const BATCH: u64 = 200;
/// Due events looked at per batch: claimed in one transaction, recorded in one. Large enough
/// that a burst costs few commits (each an fsync on SQLite), small enough that a batch's
/// outcomes are not held back long by its slowest act.
const CLAIM_BATCH: usize = 64;
/// Acts of a batch running at once: each may be seconds of Nova calls, and Nova's API is shared
/// with everyone else's requests.
const ACTS_AT_ONCE: usize = 16;

/// What one `run_due` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub done: usize,
    pub failed: usize,
    /// Due events left for later: waiting on a predecessor or on another runner's claim.
    pub waiting: usize,
    /// Events that Nova (or another outside system) failed for now, scheduled to run again.
    pub retrying: usize,
}

enum Outcome {
    Done,
    Failed,
    /// Failed for now; the next attempt is scheduled.
    Retrying,
    /// Not runnable now (predecessor unfinished, lease busy, claimed elsewhere, or gone).
    Skipped,
}

/// An event this runner has claimed.
struct Claimed {
    /// The event as it was before the claim.
    ev: event::Model,
    kind: EventType,
    /// The claim's attempt number: the outcome is recorded only while the claim is still this one.
    attempts: i32,
    /// The end of a lease whose deletion was interrupted: after the release, the lease goes.
    deleting: bool,
    /// When an earlier attempt of this event began (one that Nova failed for now, or a claim
    /// whose runner died): the act counts from then, not from this attempt.
    earlier: Option<NaiveDateTime>,
}

/// A claimed event with what it acts on.
struct Job {
    claimed: Claimed,
    work: Work,
}

/// What a batch's claim transaction made of one due event.
enum Claim {
    Ours(Box<Job>),
    /// Not runnable now (as [`Outcome::Skipped`]).
    NotNow,
    /// Its lease or one of its hosts is in the batch already: it waits for the next batch,
    /// which is claimed once this one is recorded, so that it still runs after that event.
    NextBatch,
}

/// What a batch's claims act on: the leases and hosts taken.
#[derive(Default)]
struct Held {
    leases: HashSet<String>,
    hosts: HashSet<i64>,
}

/// A job whose driver has acted, waiting for its batch's outcome transaction.
struct Acted {
    job: Job,
    /// When this attempt began acting.
    started: NaiveDateTime,
    result: Result<String, DriverError>,
    log: ActionLog,
}

/// An event run to DONE or ERROR, as written.
struct Ran {
    run: RunOutcome,
    lease_after: lease::Model,
    event_after: event::Model,
    finished: NaiveDateTime,
}

/// What the outcome transaction wrote for one event; metrics, log lines and notifications
/// follow once it is committed.
enum Recorded {
    /// Nothing: the claim was taken over while the event ran, or the event or its lease went.
    Nothing,
    Ran(Box<Ran>),
    /// Failed for now: the event runs again at `next`.
    Retry {
        next: NaiveDateTime,
        why: String,
    },
    /// An interrupted deletion finished: the lease's rows go with the batch's commit.
    Deleted {
        lease: Box<lease::Model>,
        finished: NaiveDateTime,
    },
}

/// What an event acts on, read in its claim's transaction.
pub(crate) struct Work {
    pub lease: lease::Model,
    /// In request order.
    pub reservations: Vec<reservation::Model>,
    /// Each reservation's hosts, by reservation id, in host id order.
    pub hosts: HashMap<String, Vec<HostRef>>,
}

impl Work {
    pub fn hosts_of(&self, reservation_id: &str) -> &[HostRef] {
        self.hosts
            .get(reservation_id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn reservation_hosts<'a>(&'a self, r: &'a reservation::Model) -> ReservationHosts<'a> {
        ReservationHosts {
            lease: &self.lease,
            reservation: r,
            hosts: self.hosts_of(&r.id),
        }
    }

    /// Every host id the lease holds, in reservation then host order.
    pub fn host_ids(&self) -> Vec<i64> {
        self.reservations
            .iter()
            .flat_map(|r| self.hosts_of(&r.id).iter().map(|h| h.id))
            .collect()
    }
}

/// The lease `lease_id` with its reservations and their hosts, if it exists.
pub(crate) async fn load_work(
    conn: &impl ConnectionTrait,
    lease_id: &str,
) -> Result<Option<Work>, DbErr> {
    let Some(lease) = lease::Entity::find_by_id(lease_id.to_string())
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    work_of(conn, lease).await.map(Some)
}

/// What acts on `lease`: its reservations and their hosts.
async fn work_of(conn: &impl ConnectionTrait, lease: lease::Model) -> Result<Work, DbErr> {
    let lease_id = lease.id.as_str();
    let reservations = reservation::Entity::find()
        .filter(reservation::Column::LeaseId.eq(lease_id))
        .order_by_asc(reservation::Column::Position)
        .all(conn)
        .await?;
    let allocations: Vec<(String, i64)> = allocation::Entity::find()
        .select_only()
        .column(allocation::Column::ReservationId)
        .column(allocation::Column::HostId)
        .filter(allocation::Column::LeaseId.eq(lease_id))
        .order_by_asc(allocation::Column::HostId)
        .into_tuple()
        .all(conn)
        .await?;
    let names = host_refs(conn, allocations.iter().map(|(_, h)| *h)).await?;
    let mut hosts: HashMap<String, Vec<HostRef>> = HashMap::new();
    for (reservation_id, id) in allocations {
        let host = names.get(&id).cloned().unwrap_or(HostRef {
            id,
            name: String::new(),
            service_name: String::new(),
        });
        hosts.entry(reservation_id).or_default().push(host);
    }
    Ok(Work {
        lease,
        reservations,
        hosts,
    })
}

/// The hosts `ids` as drivers name them.
pub(crate) async fn host_refs(
    conn: &impl ConnectionTrait,
    ids: impl IntoIterator<Item = i64>,
) -> Result<HashMap<i64, HostRef>, DbErr> {
    let ids: Vec<i64> = ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(host::Entity::find()
        .select_only()
        .column(host::Column::Id)
        .column(host::Column::HypervisorHostname)
        .column(host::Column::ServiceName)
        .filter(host::Column::Id.is_in(ids))
        .into_tuple::<(i64, String, String)>()
        .all(conn)
        .await?
        .into_iter()
        .map(|(id, name, service_name)| {
            (
                id,
                HostRef {
                    id,
                    name,
                    service_name,
                },
            )
        })
        .collect())
}

/// Keeps an event's claim alive while its work runs (a lease's servers may take minutes to be
/// deleted), so that no other runner takes the event over from a live runner.
pub(crate) struct ClaimKeeper {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ClaimKeeper {
    /// Renews the claim of `instance` on attempt `attempts` of `event_id` by `ttl` every third
    /// of `ttl`, until stopped or until the claim is no longer that one.
    pub fn start(
        db: Arc<Db>,
        clock: SharedClock,
        instance: String,
        ttl: TimeDelta,
        event_id: String,
        attempts: i32,
    ) -> Self {
        let every = (ttl / 3).to_std().unwrap_or(Duration::from_secs(1));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = &mut stopped => return,
                }
                let renewed = async {
                    let txn = db.write().await?;
                    let r = event::Entity::update_many()
                        .col_expr(
                            event::Column::ClaimExpiresAt,
                            Expr::value(clock.now() + ttl),
                        )
                        .filter(event::Column::Id.eq(&event_id))
                        .filter(event::Column::Status.eq(EventStatus::InProgress))
                        .filter(event::Column::ClaimedBy.eq(instance.as_str()))
                        .filter(event::Column::Attempts.eq(attempts))
                        .exec(&*txn)
                        .await?;
                    txn.commit().await?;
                    Ok::<_, DbErr>(r.rows_affected)
                }
                .await;
                match renewed {
                    Ok(1) => {}
                    Ok(_) => return,
                    Err(e) => tracing::warn!(%event_id, error = %e, "cannot renew an event claim"),
                }
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// What a lease's end or deletion needs from the lease operations. The service layer implements
/// it; the runner holds it as a narrow handle, so that `jobs` does not depend on `service` (which
/// depends on `jobs` for drivers, notifications and [`Work`]).
#[async_trait::async_trait]
pub(crate) trait LeaseEnd: Send + Sync {
    /// Deletes the leases `gone` (with their reservations, events and allocations) in `txn`,
    /// and the bookings of the hosts each held from the placement copy, and commits `txn` (if
    /// that fails, the copy is reloaded before its next use).
    async fn forget_leases(&self, txn: WriteTxn<'_>, gone: Vec<LeaseBookings>)
    -> Result<(), DbErr>;

    /// After a lease's end has run (or a lease has gone): usage enforcement's `on-end`, from a
    /// task of its own; never waits and never fails.
    fn announce_end(&self, work: &Work);
}

/// What the runner reads and acts through: given by `app.rs`, not the service layer's
/// `Services`, so that the runner depends only on what it uses.
pub(crate) struct RunnerDeps {
    pub db: Arc<Db>,
    pub clock: SharedClock,
    pub driver: Arc<dyn ResourceDriver>,
    pub notifier: Notifier,
    /// Rung by lease changes (and by other instances' changes, on PostgreSQL).
    pub bell: Arc<Bell>,
    pub metrics: Arc<Metrics>,
    /// This instance's name in event claims.
    pub instance: String,
    /// How long a claim lasts unless renewed (`event_claim_seconds`).
    pub claim_ttl: TimeDelta,
    /// How long an event that Nova fails for now is retried (`nova_retry_deadline_seconds`).
    pub retry_deadline: TimeDelta,
    /// What a reservation's `default` before-end action means (`default_before_end_action`).
    pub default_before_end: String,
    pub leases: Arc<dyn LeaseEnd>,
    /// The process's stop signal: the loop and `run_due` stop between two batches once it is
    /// triggered.
    pub shutdown: Shutdown,
}

pub struct Runner {
    deps: RunnerDeps,
}

impl Runner {
    pub(crate) fn new(deps: RunnerDeps) -> Self {
        Self { deps }
    }

    /// Runs every event due at `now`, in order, until none can make progress.
    pub async fn run_due(&self, now: NaiveDateTime) -> Result<RunReport, DbErr> {
        let mut report = RunReport::default();
        let mut skipped: HashSet<String> = HashSet::new();
        loop {
            if self.deps.shutdown.is_triggered() {
                break;
            }
            let mut due = self.due_events(now, BATCH + skipped.len() as u64).await?;
            due.retain(|e| !skipped.contains(&e.id));
            if due.is_empty() {
                break;
            }
            due.sort_by(|a, b| {
                lifecycle::run_order(a.time, a.event_type, &a.id).cmp(&lifecycle::run_order(
                    b.time,
                    b.event_type,
                    &b.id,
                ))
            });
            let mut due = VecDeque::from(due);
            let mut progressed = false;
            while !due.is_empty() {
                if self.deps.shutdown.is_triggered() {
                    break;
                }
                let (jobs, not_now) = self.claim_batch(&mut due, now).await?;
                skipped.extend(not_now);
                for (event_id, outcome) in self.run_batch(jobs).await? {
                    match outcome {
                        Outcome::Done => {
                            report.done += 1;
                            progressed = true;
                        }
                        Outcome::Failed => {
                            report.failed += 1;
                            progressed = true;
                        }
                        Outcome::Retrying => {
                            // Its next attempt is in the future: not due again in this pass.
                            report.retrying += 1;
                        }
                        Outcome::Skipped => {
                            skipped.insert(event_id);
                        }
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
    /// runner whose claim has expired (or waiting for their next attempt). Two queries, each a
    /// range of the (status, time) index: one query with an OR would make SQLite read the whole
    /// events table.
    async fn due_events(&self, now: NaiveDateTime, limit: u64) -> Result<Vec<event::Model>, DbErr> {
        let conn = self.deps.db.conn();
        let mut due = event::Entity::find()
            .filter(event::Column::Status.eq(EventStatus::Undone))
            .filter(event::Column::Time.lte(now))
            .order_by_asc(event::Column::Time)
            .order_by_asc(event::Column::Id)
            .limit(limit)
            .all(conn)
            .await?;
        due.extend(
            event::Entity::find()
                .filter(event::Column::Status.eq(EventStatus::InProgress))
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
        let conn = self.deps.db.conn();
        let undone = event::Entity::find()
            .filter(event::Column::Status.eq(EventStatus::Undone))
            .order_by_asc(event::Column::Time)
            .one(conn)
            .await?
            .map(|e| e.time);
        let claim = event::Entity::find()
            .filter(event::Column::Status.eq(EventStatus::InProgress))
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

    /// The background loop, until the stop signal: the batch running then finishes (its acts
    /// and its outcomes), the next is not claimed. Events missed while the server was down run
    /// at once.
    pub async fn run(self: Arc<Self>) {
        tracing::info!(instance = %self.deps.instance.as_str(), "lease runner started");
        let bell = &self.deps.bell;
        loop {
            // Rings from now on wake the next sleep at once (a permit is kept).
            bell.awake();
            let now = self.deps.clock.now();
            let pause = match self.run_due(now).await {
                Ok(report) => {
                    if report.done + report.failed + report.retrying > 0 {
                        tracing::debug!(?report, "events run");
                    }
                    match self.next_wakeup().await {
                        Ok(Some(t)) => {
                            let wait = (t - self.deps.clock.now())
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
                self.deps.clock.now() + TimeDelta::from_std(pause).unwrap_or(TimeDelta::zero()),
            );
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = bell.rung() => {}
                _ = self.deps.shutdown.triggered() => {}
            }
            if self.deps.shutdown.is_triggered() {
                break;
            }
        }
        tracing::info!(instance = %self.deps.instance.as_str(), "lease runner stopped");
    }

    /// The claim transaction of a batch: takes up to [`CLAIM_BATCH`] events from the front of
    /// `due` (in run order) and claims, in one commit, those that may run now. Returns the jobs
    /// claimed and the events not runnable now; events that must follow one of the batch go
    /// back to the front of `due`.
    async fn claim_batch(
        &self,
        due: &mut VecDeque<event::Model>,
        now: NaiveDateTime,
    ) -> Result<(Vec<Job>, Vec<String>), DbErr> {
        let txn = self.deps.db.write().await?;
        let mut held = Held::default();
        let mut jobs = Vec::new();
        let mut not_now = Vec::new();
        let mut next_batch = Vec::new();
        for _ in 0..CLAIM_BATCH {
            let Some(e) = due.pop_front() else {
                break;
            };
            match self.claim(&txn, &e, now, &mut held).await? {
                Claim::Ours(job) => jobs.push(*job),
                Claim::NotNow => not_now.push(e.id),
                Claim::NextBatch => next_batch.push(e),
            }
        }
        txn.commit().await?;
        for e in next_batch.into_iter().rev() {
            due.push_front(e);
        }
        for job in &jobs {
            let ev = &job.claimed.ev;
            if ev.status != EventStatus::InProgress {
                continue;
            }
            match &ev.claimed_by {
                Some(previous) => tracing::warn!(
                    event_id = %ev.id,
                    %previous,
                    "took over an event whose claim expired"
                ),
                None => {
                    tracing::info!(event_id = %ev.id, attempt = ev.attempts + 1, "retrying an event")
                }
            }
        }
        Ok((jobs, not_now))
    }

    /// Acts on a batch's jobs through the driver, [`ACTS_AT_ONCE`] at a time, each in a task
    /// of its own with its claim kept alive and no transaction open; then records every outcome
    /// in one transaction, and announces them once it is committed. Returns each event's
    /// outcome, in the batch's order.
    async fn run_batch(&self, jobs: Vec<Job>) -> Result<Vec<(String, Outcome)>, DbErr> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let actor = Arc::new(Actor {
            db: self.deps.db.clone(),
            clock: self.deps.clock.clone(),
            driver: self.deps.driver.clone(),
            instance: self.deps.instance.clone(),
            claim_ttl: self.deps.claim_ttl,
            default_before_end: self.deps.default_before_end.clone(),
        });
        let turns = Arc::new(Semaphore::new(ACTS_AT_ONCE));
        let mut acts = JoinSet::new();
        for (i, job) in jobs.into_iter().enumerate() {
            let actor = actor.clone();
            let turns = turns.clone();
            acts.spawn(async move { (i, actor.act_on(job, &turns).await) });
        }
        let mut acted = Vec::with_capacity(acts.len());
        while let Some(joined) = acts.join_next().await {
            match joined {
                Ok(a) => acted.push(a),
                // A driver that panics takes the runner down, as it did when acts ran inline.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(DbErr::Custom(format!("an event's act was cancelled: {e}"))),
            }
        }
        acted.sort_by_key(|(i, _)| *i);
        let (acted, keepers): (Vec<Acted>, Vec<ClaimKeeper>) =
            acted.into_iter().map(|(_, a)| a).unzip();
        // Every act has finished: nothing holds the claims any longer than the outcome
        // transaction (which checks that each is still ours).
        for keeper in keepers {
            keeper.stop().await;
        }
        let records = self.record_batch(&acted).await?;
        Ok(acted
            .iter()
            .zip(records)
            .map(|(a, r)| (a.job.claimed.ev.id.clone(), self.announce(a, r)))
            .collect())
    }

    /// The outcome transaction of a batch: each event's outcome as [`Self::record`] writes it,
    /// and the rows of leases whose deletion finished, in one commit. An error rolls the whole
    /// batch back: its claims expire and are taken over, as after a crash.
    async fn record_batch(&self, acted: &[Acted]) -> Result<Vec<Recorded>, DbErr> {
        let txn = self.deps.db.write().await?;
        let mut records = Vec::with_capacity(acted.len());
        let mut gone = Vec::new();
        for a in acted {
            let r = self.record(&txn, a).await?;
            if matches!(r, Recorded::Deleted { .. }) {
                gone.push(LeaseBookings {
                    lease: a.job.work.lease.id.clone(),
                    hosts: a.job.work.host_ids(),
                });
            }
            records.push(r);
        }
        if gone.is_empty() {
            txn.commit().await?;
        } else {
            // A deletion finishes whole: its audit row and the removal of its rows commit
            // together (this commits `txn`).
            self.deps.leases.forget_leases(txn, gone).await?;
        }
        Ok(records)
    }

    /// After the outcome transaction committed: metrics (they agree with `event_runs`), the log
    /// line, the notification, and usage enforcement's `on-end`.
    fn announce(&self, a: &Acted, r: Recorded) -> Outcome {
        let c = &a.job.claimed;
        let kind = c.kind;
        match r {
            Recorded::Nothing => Outcome::Skipped,
            Recorded::Ran(ran) => {
                self.count_run(c, ran.run, a.started);
                tracing::info!(
                    lease_id = %ran.lease_after.id,
                    event = %kind,
                    outcome = %ran.run,
                    lateness_ms = (ran.finished - c.ev.time).num_milliseconds(),
                    took_ms = (ran.finished - a.started).num_milliseconds(),
                    "lease event run"
                );
                self.deps.notifier.emit(lease_payload(
                    &format!("lease.event.{kind}"),
                    &ran.lease_after,
                    Some(&ran.event_after),
                    ran.finished,
                ));
                if ran.run != RunOutcome::Done {
                    return Outcome::Failed;
                }
                if kind == EventType::EndLease {
                    // Usage enforcement's on-end: after the commit, in a task of its own.
                    self.deps.leases.announce_end(&a.job.work);
                }
                Outcome::Done
            }
            Recorded::Retry { next, why } => {
                self.count_run(c, RunOutcome::Retry, a.started);
                tracing::warn!(
                    lease_id = %c.ev.lease_id,
                    event = %kind,
                    attempt = c.attempts,
                    next = %format_lease_date(next),
                    error = %why,
                    "lease event failed for now; it will be retried"
                );
                Outcome::Retrying
            }
            Recorded::Deleted { lease, finished } => {
                self.count_run(c, RunOutcome::Done, a.started);
                tracing::info!(lease_id = %lease.id, "lease deleted (its interrupted deletion finished)");
                self.deps
                    .notifier
                    .emit(lease_payload("lease.delete", &lease, None, finished));
                self.deps.leases.announce_end(&a.job.work);
                Outcome::Done
            }
        }
    }

    /// One event's outcome, in the batch's outcome transaction `txn`: what the driver did, and
    /// DONE, ERROR, or a retry later.
    async fn record(&self, txn: &WriteTxn<'_>, a: &Acted) -> Result<Recorded, DbErr> {
        let (c, work, started) = (&a.job.claimed, &a.job.work, a.started);
        let kind = c.kind;
        let stamp = truncate_to_second(started);
        // Still ours? (If we were too slow, our claim expired and someone else took over.)
        let Some(current) = event::Entity::find_by_id(c.ev.id.clone())
            .one(&**txn)
            .await?
        else {
            return Ok(Recorded::Nothing);
        };
        if current.status != EventStatus::InProgress
            || current.claimed_by.as_deref() != Some(self.deps.instance.as_str())
            || current.attempts != c.attempts
        {
            tracing::warn!(
                event_id = %c.ev.id,
                actions = a.log.actions().len(),
                "the claim on this event was taken over while it ran; the other runner records it"
            );
            return Ok(Recorded::Nothing);
        }
        let Some(lease) = lease::Entity::find_by_id(work.lease.id.clone())
            .one(&**txn)
            .await?
        else {
            return Ok(Recorded::Nothing);
        };
        if !a.log.is_empty() {
            driver_action::Entity::insert_many(a.log.rows(started))
                .exec(&**txn)
                .await?;
        }
        let finished = self.deps.clock.now();
        let (outcome, reason) = match &a.result {
            Ok(summary) => (EventStatus::Done, summary.clone()),
            Err(DriverError::Unavailable(why)) => {
                let first = first_retry(&**txn, &c.ev.id).await?.unwrap_or(started);
                if lifecycle::retries(first, finished, self.deps.retry_deadline) {
                    return self
                        .record_retry(txn, c, current, lease, why, started, finished)
                        .await;
                }
                (
                    EventStatus::Error,
                    format!(
                        "{kind} failed: {why} (retried for {} s)",
                        (finished - first).num_seconds()
                    ),
                )
            }
            Err(e) => (EventStatus::Error, format!("{kind} failed: {e}")),
        };

        if c.deleting && outcome == EventStatus::Done {
            // The interrupted deletion of a running lease: its hosts are back; now it goes.
            self.audit(txn, c, &lease.id, RunOutcome::Done, started, finished)
                .await?;
            return Ok(Recorded::Deleted {
                lease: Box::new(lease),
                finished,
            });
        }

        let transition = lifecycle::after_run(kind, outcome == EventStatus::Done);
        // Reservations follow the event.
        if let Some(s) = transition.reservations
            && !work.reservations.is_empty()
        {
            reservation::Entity::update_many()
                .col_expr(reservation::Column::Status, Expr::value(s))
                .col_expr(reservation::Column::UpdatedAt, Expr::value(stamp))
                .filter(reservation::Column::LeaseId.eq(&lease.id))
                .exec(&**txn)
                .await?;
        }
        let mut e = current.into_active_model();
        e.status = Set(outcome);
        e.claim_expires_at = Set(None);
        e.done_at = Set(Some(finished));
        e.updated_at = Set(Some(stamp));
        if outcome == EventStatus::Error {
            e.last_error = Set(Some(reason.clone()));
        }
        let event_after = e.update(&**txn).await?;

        let mut l = lease.into_active_model();
        if let Some(s) = transition.lease {
            l.status = Set(s);
        }
        l.action = Set(Some(transition.action.into()));
        l.status_reason = Set(Some(reason));
        l.updated_at = Set(Some(stamp));
        let lease_after = l.update(&**txn).await?;
        let run = if outcome == EventStatus::Done {
            RunOutcome::Done
        } else {
            RunOutcome::Error
        };
        self.audit(txn, c, &lease_after.id, run, started, finished)
            .await?;
        Ok(Recorded::Ran(Box::new(Ran {
            run,
            lease_after,
            event_after,
            finished,
        })))
    }

    /// Nova failed for now: the event keeps its place (IN_PROGRESS, the lease in its
    /// transitional status) with no claimant, and runs again when the backoff expires.
    #[allow(clippy::too_many_arguments)]
    async fn record_retry(
        &self,
        txn: &WriteTxn<'_>,
        c: &Claimed,
        current: event::Model,
        lease: lease::Model,
        why: &str,
        started: NaiveDateTime,
        finished: NaiveDateTime,
    ) -> Result<Recorded, DbErr> {
        let stamp = truncate_to_second(started);
        let next = finished + lifecycle::retry_backoff(c.attempts);
        let mut e = current.into_active_model();
        e.claimed_by = Set(None);
        e.claim_expires_at = Set(Some(next));
        e.last_error = Set(Some(why.to_string()));
        e.updated_at = Set(Some(stamp));
        e.update(&**txn).await?;
        let mut l = lease.into_active_model();
        l.status_reason = Set(Some(format!(
            "{} is waiting for Nova (attempt {} failed; next at {}): {why}",
            c.kind,
            c.attempts,
            format_lease_date(next)
        )));
        l.updated_at = Set(Some(stamp));
        l.update(&**txn).await?;
        self.audit(txn, c, &c.ev.lease_id, RunOutcome::Retry, started, finished)
            .await?;
        Ok(Recorded::Retry {
            next,
            why: why.to_string(),
        })
    }

    /// Counts a run once its audit row is committed (metrics agree with `event_runs`); its
    /// lateness is from the event's due time to the start of this attempt.
    fn count_run(&self, c: &Claimed, outcome: RunOutcome, started: NaiveDateTime) {
        let lateness = (started - c.ev.time).num_milliseconds() as f64 / 1000.0;
        self.deps
            .metrics
            .observe_event_run(&c.kind.to_string(), &outcome.to_string(), lateness);
    }

    async fn audit(
        &self,
        txn: &WriteTxn<'_>,
        c: &Claimed,
        lease_id: &str,
        outcome: RunOutcome,
        started: NaiveDateTime,
        finished: NaiveDateTime,
    ) -> Result<(), DbErr> {
        event_run::ActiveModel {
            event_id: Set(c.ev.id.clone()),
            lease_id: Set(lease_id.to_string()),
            event_type: Set(c.ev.event_type),
            instance: Set(self.deps.instance.as_str().to_string()),
            outcome: Set(outcome),
            scheduled_at: Set(c.ev.time),
            started_at: Set(started),
            finished_at: Set(finished),
            ..Default::default()
        }
        .insert(&**txn)
        .await?;
        Ok(())
    }

    /// One event's claim, in the batch's claim transaction `txn`: UNDONE (or IN_PROGRESS with an
    /// expired claim, or waiting for its next attempt) -> IN_PROGRESS, if the lease is ready for
    /// it and neither the lease nor its hosts are `held` by the batch already; with what the
    /// event acts on, read in the same transaction.
    async fn claim(
        &self,
        txn: &WriteTxn<'_>,
        due: &event::Model,
        now: NaiveDateTime,
        held: &mut Held,
    ) -> Result<Claim, DbErr> {
        if held.leases.contains(&due.lease_id) {
            // A later event of a lease the batch acts on (`ready` would refuse it anyway: its
            // predecessor reads IN_PROGRESS).
            return Ok(Claim::NextBatch);
        }
        let Some(ev) = event::Entity::find_by_id(due.id.clone())
            .one(&**txn)
            .await?
        else {
            return Ok(Claim::NotNow);
        };
        let Some(how) = lifecycle::claimable(&event_state(&ev), now) else {
            return Ok(Claim::NotNow);
        };
        let Some(lease) = lease::Entity::find_by_id(ev.lease_id.clone())
            .one(&**txn)
            .await?
        else {
            return Ok(Claim::NotNow);
        };
        let kind = ev.event_type;
        let status = lease.status;
        let deleting = lifecycle::finishes_deletion(kind, status, how);
        if !deleting {
            let siblings: Vec<(EventType, EventStatus)> = event::Entity::find()
                .select_only()
                .column(event::Column::EventType)
                .column(event::Column::Status)
                .filter(event::Column::LeaseId.eq(&lease.id))
                .into_tuple()
                .all(&**txn)
                .await?;
            if !lifecycle::ready(kind, status, how, &siblings) {
                return Ok(Claim::NotNow);
            }
        }
        let mut work = work_of(&**txn, lease).await?;
        let hosts = work.host_ids();
        if hosts.iter().any(|h| held.hosts.contains(h)) {
            // Another lease's event on these hosts comes first (a lease ends, the next starts on
            // its host): acting at once, the start could reach Nova before the release.
            return Ok(Claim::NextBatch);
        }
        let claimed = event::Entity::update_many()
            .col_expr(event::Column::Status, Expr::value(EventStatus::InProgress))
            .col_expr(
                event::Column::ClaimedBy,
                Expr::value(self.deps.instance.as_str()),
            )
            .col_expr(event::Column::ClaimedAt, Expr::value(now))
            .col_expr(
                event::Column::ClaimExpiresAt,
                Expr::value(now + self.deps.claim_ttl),
            )
            .col_expr(event::Column::Attempts, Expr::value(ev.attempts + 1))
            .filter(event::Column::Id.eq(&ev.id))
            .filter(event::Column::Status.eq(ev.status))
            .filter(event::Column::Attempts.eq(ev.attempts))
            .exec(&**txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(Claim::NotNow);
        }
        if let Some(s) = lifecycle::status_on_claim(kind, deleting) {
            lease::Entity::update_many()
                .col_expr(lease::Column::Status, Expr::value(s))
                .filter(lease::Column::Id.eq(&work.lease.id))
                .exec(&**txn)
                .await?;
            work.lease.status = s;
        }
        // An event taken up again (its runner died, or Nova failed it for now) keeps the time
        // its first attempt began: work done since then (snapshots) is not done again.
        let earlier = if ev.status == EventStatus::InProgress {
            [first_retry(&**txn, &ev.id).await?, ev.claimed_at]
                .into_iter()
                .flatten()
                .min()
        } else {
            None
        };
        held.leases.insert(ev.lease_id.clone());
        held.hosts.extend(hosts);
        Ok(Claim::Ours(Box::new(Job {
            claimed: Claimed {
                attempts: ev.attempts + 1,
                ev,
                kind,
                deleting,
                earlier,
            },
            work,
        })))
    }

    /// On PostgreSQL: rings this instance's bell whenever another instance announces a lease
    /// change, so that an event created elsewhere runs here on time. Reconnects after errors.
    /// Ends at the stop signal, wherever it waits (connecting, reconnecting or listening):
    /// nothing it does needs finishing.
    pub async fn listen_for_changes(self: Arc<Self>) {
        let shutdown = self.deps.shutdown.clone();
        tokio::select! {
            _ = self.listen() => {}
            _ = shutdown.triggered() => {}
        }
    }

    async fn listen(&self) {
        use sea_orm::sqlx::postgres::PgListener;
        let pool = self.deps.db.conn().get_postgres_connection_pool().clone();
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
                match listener.recv().await {
                    Ok(_) => self.deps.bell.ring(),
                    Err(e) => {
                        tracing::warn!(error = %e, "lease change listener lost; reconnecting");
                        break;
                    }
                }
            }
            // Changes announced while disconnected: look at the table again.
            self.deps.bell.ring();
        }
    }
}

/// What an act needs, owned: the acts of a batch run as tasks of their own.
struct Actor {
    db: Arc<Db>,
    clock: SharedClock,
    driver: Arc<dyn ResourceDriver>,
    instance: String,
    claim_ttl: TimeDelta,
    default_before_end: String,
}

impl Actor {
    /// Keeps the job's claim alive, waits for one of the `turns`, and acts; the claim is still
    /// kept (its keeper is returned) until the batch's outcome is recorded.
    async fn act_on(&self, job: Job, turns: &Semaphore) -> (Acted, ClaimKeeper) {
        // From before its turn: a job waiting behind slow acts is not taken over.
        let keeper = ClaimKeeper::start(
            self.db.clone(),
            self.clock.clone(),
            self.instance.clone(),
            self.claim_ttl,
            job.claimed.ev.id.clone(),
            job.claimed.attempts,
        );
        // Never closed.
        let _turn = turns.acquire().await;
        let started = self.clock.now();
        let since = job.claimed.earlier.map_or(started, |t| t.min(started));
        let mut log = ActionLog::default();
        let result = self.act(job.claimed.kind, &job.work, since, &mut log).await;
        // Tests kill the process here: the driver has acted, nothing is recorded.
        failpoint::hit("runner-after-act");
        (
            Acted {
                job,
                started,
                result,
                log,
            },
            keeper,
        )
    }

    /// Acts through the driver on every reservation; returns a summary for `status_reason`.
    async fn act(
        &self,
        kind: EventType,
        work: &Work,
        since: NaiveDateTime,
        log: &mut ActionLog,
    ) -> Result<String, DriverError> {
        let driver = &self.driver;
        let mut actions: Vec<String> = Vec::new();
        for r in &work.reservations {
            let rh = work.reservation_hosts(r);
            match kind {
                EventType::StartLease => driver.assign(rh, log).await?,
                EventType::EndLease => driver.release(rh, log).await?,
                EventType::BeforeEndLease => {
                    // "default" means what the operator configured (upstream's
                    // `[physical:host] before_end`), checked at start-up to be "" or "snapshot".
                    let action = match r.before_end {
                        BeforeEnd::Default => self.default_before_end.clone(),
                        stored => stored.to_string(),
                    };
                    driver.before_end(rh, &action, since, log).await?;
                    actions.push(action);
                }
            }
        }
        Ok(lifecycle::run_summary(kind, &work.host_ids(), &actions))
    }
}

/// When the first attempt of this event that failed for now started.
async fn first_retry(
    conn: &impl ConnectionTrait,
    event_id: &str,
) -> Result<Option<NaiveDateTime>, DbErr> {
    event_run::Entity::find()
        .select_only()
        .column(event_run::Column::StartedAt)
        .filter(event_run::Column::EventId.eq(event_id))
        .filter(event_run::Column::Outcome.eq(RunOutcome::Retry))
        .order_by_asc(event_run::Column::StartedAt)
        .into_tuple::<NaiveDateTime>()
        .one(conn)
        .await
}

/// What the lifecycle rules see of an event row.
pub(crate) fn event_state(e: &event::Model) -> EventState {
    EventState {
        status: e.status,
        time: e.time,
        claimed_by_anyone: e.claimed_by.is_some(),
        claim_expires_at: e.claim_expires_at,
    }
}

/// This instance's name in claims: hostname-pid.
pub fn default_instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "blazar".into());
    format!("{host}-{}", std::process::id())
}
