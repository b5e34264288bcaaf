//! The lease lifecycle as rules: which events may run when, what each event does to the lease's
//! and its reservations' statuses, which statuses allow an update or a deletion, and the order
//! of events due together.
//!
//! The runner (`jobs/runner.rs`) and the lease operations (`service/leases.rs`) ask these
//! functions and do only the I/O: nothing here reads the database or the clock (`now` comes in).

use chrono::{NaiveDateTime, TimeDelta};

use super::{
    DomainError,
    lease::{CurrentLease, EventStatus, EventType, LeaseChanges, LeaseStatus, ReservationStatus},
};

/// Longest pause between two attempts of an event that Nova failed.
pub const MAX_RETRY_BACKOFF: TimeDelta = TimeDelta::seconds(30);

/// Transitional statuses: an operation or event is running on the lease.
pub fn is_transitional(status: LeaseStatus) -> bool {
    matches!(
        status,
        LeaseStatus::Creating
            | LeaseStatus::Starting
            | LeaseStatus::Updating
            | LeaseStatus::Terminating
            | LeaseStatus::Deleting
    )
}

/// Refuses an update the lease's status does not allow: none while an operation runs on it, and
/// only a rename once it has ended.
pub fn check_updatable(
    lease_id: &str,
    current: &CurrentLease,
    changes: &LeaseChanges,
    now: NaiveDateTime,
) -> Result<(), DomainError> {
    if is_transitional(current.status) {
        return Err(busy(lease_id, current.status));
    }
    if changes.beyond_name() && (current.status == LeaseStatus::Terminated || current.end < now) {
        return Err(DomainError::InvalidInput(
            "Terminated leases can only be renamed".into(),
        ));
    }
    Ok(())
}

/// Refuses a deletion while an operation runs on the lease.
pub fn check_deletable(lease_id: &str, status: LeaseStatus) -> Result<(), DomainError> {
    if is_transitional(status) {
        return Err(busy(lease_id, status));
    }
    Ok(())
}

fn busy(lease_id: &str, status: LeaseStatus) -> DomainError {
    DomainError::InvalidStatus(format!(
        "Lease {lease_id} is {status}; retry when that operation has finished"
    ))
}

/// What the claim of an event sees of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventState {
    pub status: EventStatus,
    pub time: NaiveDateTime,
    pub claimed_by_anyone: bool,
    pub claim_expires_at: Option<NaiveDateTime>,
}

/// Why an event may be claimed at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimable {
    /// Waiting (UNDONE) and due.
    Due,
    /// IN_PROGRESS, but its claim has expired (its runner died) or its next attempt has come.
    Expired,
}

/// Whether the event may be claimed at `now`, and why; `None` if it is not due or runs elsewhere.
pub fn claimable(e: &EventState, now: NaiveDateTime) -> Option<Claimable> {
    if e.time > now {
        return None;
    }
    match e.status {
        EventStatus::Undone => Some(Claimable::Due),
        EventStatus::InProgress if e.claim_expires_at.is_some_and(|t| t <= now) => {
            Some(Claimable::Expired)
        }
        _ => None,
    }
}

/// Whether a runner (or a deletion) is working on the event right now: its claim is held and
/// has not expired. A lease with such an event is not deleted.
pub fn claim_is_live(e: &EventState, now: NaiveDateTime) -> bool {
    e.status == EventStatus::InProgress
        && e.claimed_by_anyone
        && e.claim_expires_at.is_some_and(|t| t > now)
}

/// The lease's status while `kind` runs, if it has one.
pub fn transitional_status(kind: EventType) -> Option<LeaseStatus> {
    match kind {
        EventType::StartLease => Some(LeaseStatus::Starting),
        EventType::BeforeEndLease => None,
        EventType::EndLease => Some(LeaseStatus::Terminating),
    }
}

/// A deletion of a running lease claims its end event; if that deletion was interrupted (the
/// API process died), the end's claim expires and the runner finishes the deletion.
pub fn finishes_deletion(kind: EventType, status: LeaseStatus, how: Claimable) -> bool {
    kind == EventType::EndLease && status == LeaseStatus::Deleting && how == Claimable::Expired
}

/// Whether the lease is ready for event `kind`: its predecessors in the lease (start, then
/// before-end, then end) have finished, and its status is one the event runs from, or the
/// event's own transitional status when an attempt died or failed for now and the event is
/// taken up again. `siblings` are the lease's events (type and status), this one included.
pub fn ready(
    kind: EventType,
    status: LeaseStatus,
    how: Claimable,
    siblings: &[(EventType, EventStatus)],
) -> bool {
    let finished = |t: EventType| {
        siblings
            .iter()
            .filter(|(k, _)| *k == t)
            .all(|(_, s)| matches!(s, EventStatus::Done | EventStatus::Error))
    };
    let predecessors_done = match kind {
        EventType::StartLease => true,
        EventType::BeforeEndLease => finished(EventType::StartLease),
        EventType::EndLease => {
            finished(EventType::StartLease) && finished(EventType::BeforeEndLease)
        }
    };
    if !predecessors_done {
        return false;
    }
    let runs_from: &[LeaseStatus] = match kind {
        EventType::StartLease => &[LeaseStatus::Pending],
        EventType::BeforeEndLease | EventType::EndLease => {
            &[LeaseStatus::Active, LeaseStatus::Error]
        }
    };
    let resuming = how == Claimable::Expired && transitional_status(kind) == Some(status);
    runs_from.contains(&status) || resuming
}

/// The lease status a claim writes: the event's transitional status, except when the claim
/// finishes an interrupted deletion (the lease stays DELETING).
pub fn status_on_claim(kind: EventType, deleting: bool) -> Option<LeaseStatus> {
    transitional_status(kind).filter(|_| !deleting)
}

/// What an event's outcome does to its lease and reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The event's final status: DONE or ERROR.
    pub event: EventStatus,
    /// The lease's new status, if it changes.
    pub lease: Option<LeaseStatus>,
    /// Every reservation's new status, if they change.
    pub reservations: Option<ReservationStatus>,
    /// The lease's `action` column (upstream's START, BEFORE_END, END).
    pub action: &'static str,
}

/// What event `kind` does to the statuses when it succeeded (`done`) or failed for good.
pub fn after_run(kind: EventType, done: bool) -> Transition {
    let (lease, reservations) = match (done, kind) {
        (false, _) => (Some(LeaseStatus::Error), Some(ReservationStatus::Error)),
        (true, EventType::StartLease) => {
            (Some(LeaseStatus::Active), Some(ReservationStatus::Active))
        }
        (true, EventType::EndLease) => (
            Some(LeaseStatus::Terminated),
            Some(ReservationStatus::Deleted),
        ),
        (true, EventType::BeforeEndLease) => (None, None),
    };
    Transition {
        event: if done {
            EventStatus::Done
        } else {
            EventStatus::Error
        },
        lease,
        reservations,
        action: action_name(kind),
    }
}

/// The lease's `action` column while or after `kind` runs.
pub fn action_name(kind: EventType) -> &'static str {
    match kind {
        EventType::StartLease => "START",
        EventType::BeforeEndLease => "BEFORE_END",
        EventType::EndLease => "END",
    }
}

/// How long to wait before attempt `attempts + 1` of an event that failed for now: 1 s, then
/// doubling, at most [`MAX_RETRY_BACKOFF`].
pub fn retry_backoff(attempts: i32) -> TimeDelta {
    let exp = attempts.clamp(1, 16) - 1;
    TimeDelta::seconds(1i64 << exp).min(MAX_RETRY_BACKOFF)
}

/// Whether an event that Nova failed for now, first attempted at `first`, is tried again
/// (`true`) or is an ERROR now that `finished` has come (`deadline` is
/// `nova_retry_deadline_seconds`).
pub fn retries(first: NaiveDateTime, finished: NaiveDateTime, deadline: TimeDelta) -> bool {
    finished - first < deadline
}

/// The order of due events: by time; at equal times leases ending go before leases starting
/// (they free hosts for them); then by id, so that the order is the same on every instance.
pub fn run_order(time: NaiveDateTime, kind: EventType, id: &str) -> (NaiveDateTime, u8, &str) {
    let rank = match kind {
        EventType::BeforeEndLease => 0,
        EventType::EndLease => 1,
        EventType::StartLease => 2,
    };
    (time, rank, id)
}

/// The lease's `status_reason` after event `kind` acted on the hosts `touched` (in reservation
/// then host order); `actions` are the before-end actions taken (`""` for none).
pub fn run_summary(kind: EventType, touched: &[i64], actions: &[String]) -> String {
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
    match kind {
        EventType::StartLease => format!("Lease started: {list} assigned"),
        EventType::EndLease => format!("Lease ended: {list} released"),
        EventType::BeforeEndLease => {
            let mut names: Vec<&str> = actions
                .iter()
                .map(|a| if a.is_empty() { "none" } else { a.as_str() })
                .collect();
            names.sort_unstable();
            names.dedup();
            let names = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            format!("Before-end action {names} taken on {list}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2030, 1, 1)
            .and_then(|d| d.and_hms_opt(12, minute, 0))
            .expect("a date")
    }

    const KINDS: [EventType; 3] = [
        EventType::StartLease,
        EventType::BeforeEndLease,
        EventType::EndLease,
    ];

    fn all_done() -> Vec<(EventType, EventStatus)> {
        KINDS.iter().map(|k| (*k, EventStatus::Done)).collect()
    }

    /// Each event × each lease status: may it be claimed (fresh, and taken up again after an
    /// expired claim), with every predecessor finished?
    #[test]
    fn which_statuses_each_event_runs_from() {
        use LeaseStatus::*;
        let siblings = all_done();
        for status in LeaseStatus::all() {
            for kind in KINDS {
                let fresh = ready(kind, status, Claimable::Due, &siblings);
                let resumed = ready(kind, status, Claimable::Expired, &siblings);
                let (want_fresh, want_resumed) = match (kind, status) {
                    (EventType::StartLease, Pending) => (true, true),
                    (EventType::StartLease, Starting) => (false, true),
                    (EventType::EndLease, Terminating) => (false, true),
                    (EventType::BeforeEndLease | EventType::EndLease, Active | Error) => {
                        (true, true)
                    }
                    _ => (false, false),
                };
                assert_eq!(fresh, want_fresh, "{kind} from {status}, fresh");
                assert_eq!(resumed, want_resumed, "{kind} from {status}, resumed");
            }
        }
    }

    #[test]
    fn an_event_waits_for_its_predecessors() {
        use EventStatus::*;
        use EventType::*;
        let lease = |s, b| vec![(StartLease, s), (BeforeEndLease, b), (EndLease, Undone)];
        // A lease without a before-end event ends once it has started.
        let no_before_end = vec![(StartLease, Done), (EndLease, Undone)];
        // (event, lease status, the lease's events, ready)
        #[rustfmt::skip]
        let table = [
            (StartLease, LeaseStatus::Pending, lease(Undone, Undone), true),
            (BeforeEndLease, LeaseStatus::Active, lease(Undone, Undone), false),
            (BeforeEndLease, LeaseStatus::Active, lease(InProgress, Undone), false),
            (BeforeEndLease, LeaseStatus::Active, lease(Done, Undone), true),
            (BeforeEndLease, LeaseStatus::Error, lease(Error, Undone), true),
            (EndLease, LeaseStatus::Active, lease(Done, InProgress), false),
            (EndLease, LeaseStatus::Active, lease(Done, Error), true),
            (EndLease, LeaseStatus::Active, no_before_end, true),
        ];
        for (kind, status, siblings, want) in table {
            assert_eq!(
                ready(kind, status, Claimable::Due, &siblings),
                want,
                "{kind} from {status} with {siblings:?}"
            );
        }
    }

    /// Each event × success or failure → the lease's, the reservations' and the event's status.
    #[test]
    fn what_each_outcome_does_to_the_statuses() {
        use EventStatus as E;
        use EventType::*;
        use LeaseStatus as L;
        use ReservationStatus as R;
        // One row per event and outcome: a table reads best as one.
        #[rustfmt::skip]
        let table = [
            (StartLease, true, E::Done, Some(L::Active), Some(R::Active), "START"),
            (BeforeEndLease, true, E::Done, None, None, "BEFORE_END"),
            (EndLease, true, E::Done, Some(L::Terminated), Some(R::Deleted), "END"),
            (StartLease, false, E::Error, Some(L::Error), Some(R::Error), "START"),
            (BeforeEndLease, false, E::Error, Some(L::Error), Some(R::Error), "BEFORE_END"),
            (EndLease, false, E::Error, Some(L::Error), Some(R::Error), "END"),
        ];
        for (kind, done, event, lease, reservations, action) in table {
            assert_eq!(
                after_run(kind, done),
                Transition {
                    event,
                    lease,
                    reservations,
                    action
                },
                "{kind} done={done}"
            );
        }
    }

    #[test]
    fn a_claim_sets_the_transitional_status_unless_it_finishes_a_deletion() {
        assert_eq!(
            status_on_claim(EventType::StartLease, false),
            Some(LeaseStatus::Starting)
        );
        assert_eq!(status_on_claim(EventType::BeforeEndLease, false), None);
        assert_eq!(
            status_on_claim(EventType::EndLease, false),
            Some(LeaseStatus::Terminating)
        );
        assert_eq!(status_on_claim(EventType::EndLease, true), None);
        for kind in KINDS {
            for status in LeaseStatus::all() {
                for how in [Claimable::Due, Claimable::Expired] {
                    let want = kind == EventType::EndLease
                        && status == LeaseStatus::Deleting
                        && how == Claimable::Expired;
                    assert_eq!(
                        finishes_deletion(kind, status, how),
                        want,
                        "{kind} {status} {how:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn which_events_may_be_claimed_now() {
        let now = at(30);
        let e = |status, time, claim_expires_at| EventState {
            status,
            time,
            claimed_by_anyone: true,
            claim_expires_at,
        };
        assert_eq!(
            claimable(&e(EventStatus::Undone, at(30), None), now),
            Some(Claimable::Due)
        );
        assert_eq!(claimable(&e(EventStatus::Undone, at(31), None), now), None);
        assert_eq!(
            claimable(&e(EventStatus::InProgress, at(1), Some(at(30))), now),
            Some(Claimable::Expired)
        );
        assert_eq!(
            claimable(&e(EventStatus::InProgress, at(1), Some(at(31))), now),
            None
        );
        assert_eq!(
            claimable(&e(EventStatus::InProgress, at(1), None), now),
            None
        );
        assert_eq!(claimable(&e(EventStatus::Done, at(1), None), now), None);
        assert_eq!(claimable(&e(EventStatus::Error, at(1), None), now), None);
        assert!(claim_is_live(
            &e(EventStatus::InProgress, at(1), Some(at(31))),
            now
        ));
        assert!(!claim_is_live(
            &e(EventStatus::InProgress, at(1), Some(at(30))),
            now
        ));
        let waiting = EventState {
            claimed_by_anyone: false,
            ..e(EventStatus::InProgress, at(1), Some(at(31)))
        };
        assert!(
            !claim_is_live(&waiting, now),
            "waiting for its next attempt, nobody runs it"
        );
    }

    #[test]
    fn which_statuses_allow_update_and_delete() {
        let changes = LeaseChanges {
            end: Some(at(50)),
            ..Default::default()
        };
        let rename = LeaseChanges {
            name: Some("n".into()),
            ..Default::default()
        };
        for status in LeaseStatus::all() {
            let current = CurrentLease {
                start: at(0),
                end: at(40),
                status,
            };
            let text = |r: Result<(), DomainError>| r.map_err(|e| e.to_string());
            let update = text(check_updatable("l", &current, &changes, at(10)));
            let renamed = text(check_updatable("l", &current, &rename, at(10)));
            let delete = text(check_deletable("l", status));
            if is_transitional(status) {
                let refusal = Err(format!(
                    "Invalid lease status. Lease l is {status}; retry when that operation has \
                     finished"
                ));
                for r in [&update, &renamed, &delete] {
                    assert_eq!(r, &refusal);
                }
            } else {
                assert_eq!(delete, Ok(()));
                assert_eq!(renamed, Ok(()));
                assert_eq!(
                    update.is_ok(),
                    status != LeaseStatus::Terminated,
                    "{status}"
                );
            }
        }
        // An ended lease can only be renamed, whatever its status says.
        let ended = CurrentLease {
            start: at(0),
            end: at(5),
            status: LeaseStatus::Active,
        };
        assert!(check_updatable("l", &ended, &changes, at(10)).is_err());
        assert!(check_updatable("l", &ended, &rename, at(10)).is_ok());
    }

    #[test]
    fn due_events_run_by_time_then_ends_before_starts() {
        let mut due = [
            (at(5), EventType::StartLease, "a"),
            (at(5), EventType::EndLease, "b"),
            (at(4), EventType::StartLease, "c"),
            (at(5), EventType::BeforeEndLease, "d"),
            (at(5), EventType::StartLease, "0"),
        ];
        due.sort_by_key(|(t, k, id)| run_order(*t, *k, id));
        let ids: Vec<&str> = due.iter().map(|(_, _, id)| *id).collect();
        assert_eq!(ids, ["c", "d", "b", "0", "a"]);
    }

    #[test]
    fn retries_back_off_and_stop_at_the_deadline() {
        let backoff: Vec<i64> = (0..8).map(|a| retry_backoff(a).num_seconds()).collect();
        assert_eq!(backoff, [1, 1, 2, 4, 8, 16, 30, 30]);
        assert!(retries(at(0), at(1), TimeDelta::minutes(2)));
        assert!(!retries(at(0), at(2), TimeDelta::minutes(2)));
    }

    #[test]
    fn summaries_name_the_hosts_and_actions() {
        assert_eq!(
            run_summary(EventType::StartLease, &[3, 1], &[]),
            "Lease started: hosts 3, 1 assigned"
        );
        assert_eq!(
            run_summary(EventType::EndLease, &[], &[]),
            "Lease ended: no hosts released"
        );
        let actions = [
            "snapshot".to_string(),
            String::new(),
            "snapshot".to_string(),
        ];
        assert_eq!(
            run_summary(EventType::BeforeEndLease, &[2], &actions),
            "Before-end action none, snapshot taken on hosts 2"
        );
        assert_eq!(
            run_summary(EventType::BeforeEndLease, &[], &[]),
            "Before-end action none taken on no hosts"
        );
    }
}
