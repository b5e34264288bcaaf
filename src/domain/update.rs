//! The update planner: what a lease update changes, decided without the database.
//!
//! An update runs in two pure steps around the checks that need the service layer. First
//! [`plan_window`]: may this lease be updated at all, and what is its new window (the service
//! then checks the longest lease allowed, and that the lease is still the one usage enforcement
//! judged). Then [`plan_update`]: each reservation with the changes applied, which of them need
//! their hosts chosen again and from when, which events move, are armed again or are created.
//! After the hosts are chosen, [`UpdatePlan::host_moves`] says which hosts join and leave each
//! reservation. `service/leases.rs::update_lease` executes the plan in its write transaction;
//! `service/enforcement.rs` asks the same plan for usage enforcement's `check-update`.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use entity::{lease, reservation};

use super::{
    DomainError,
    allocation::Need,
    dates::truncate_to_minute,
    filter::Filter,
    input::echo,
    lease::{
        self as rules, CurrentLease, EventStatus, EventType, LeaseChanges, ReservationStatus,
        moved_before_end_time,
    },
    lifecycle::check_updatable,
    placement::HostNeed,
};

/// The lease's window after an update, and how it relates to the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewWindow {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    /// Either date changes: bookings and events follow, and the lease's length is checked.
    pub moved: bool,
    /// The window reaches outside the stored one: every reservation's hosts are chosen again.
    pub grew: bool,
}

/// What the update does, before anything is loaded beyond the lease itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateScope {
    /// Only the name changes.
    Rename,
    /// The window (and maybe reservations) change.
    Window(NewWindow),
}

/// Refuses an update that the lease's status or upstream's date rules forbid, and says what the
/// update touches.
pub fn plan_window(
    lease_id: &str,
    current: &CurrentLease,
    changes: &LeaseChanges,
    now: NaiveDateTime,
) -> Result<UpdateScope, DomainError> {
    check_updatable(lease_id, current, changes, now)?;
    if !changes.beyond_name() {
        return Ok(UpdateScope::Rename);
    }
    let (start, end) = rules::plan_dates(current, changes, now)?;
    Ok(UpdateScope::Window(NewWindow {
        start,
        end,
        moved: start != current.start || end != current.end,
        grew: start < current.start || end > current.end,
    }))
}

/// The stored lease an update changes.
#[derive(Debug, Clone, Copy)]
pub struct StoredLease<'a> {
    pub lease: &'a lease::Model,
    /// In request order.
    pub reservations: &'a [reservation::Model],
    /// The hosts each reservation holds now, by reservation id.
    pub held: &'a HashMap<String, Vec<i64>>,
}

/// A stored reservation with the update's parameters applied.
#[derive(Debug, Clone)]
pub struct MergedReservation {
    pub next: reservation::Model,
    pub filter: Filter,
    /// Its hosts are chosen again (its host parameters changed, or the window grew).
    pub replan: bool,
}

/// What an update does, once the window is known.
#[derive(Debug, Clone)]
pub struct UpdatePlan<'a> {
    pub current: StoredLease<'a>,
    pub window: NewWindow,
    /// Each stored reservation as it will be, in the stored order.
    pub reservations: Vec<MergedReservation>,
    /// When chosen hosts join the lease: a host joining a lease that has started joins it from
    /// now, not from its start.
    pub join_from: NaiveDateTime,
    /// The lease has started: only the ends of its bookings move.
    pub started: bool,
    /// The before-end date the body asked for.
    pub requested_before_end: Option<NaiveDateTime>,
}

/// Each reservation with the changes applied, which of them are re-planned, and from when.
/// Refuses reservation ids that are not the lease's and invalid values.
pub fn plan_update<'a>(
    current: StoredLease<'a>,
    changes: &LeaseChanges,
    window: NewWindow,
    now: NaiveDateTime,
) -> Result<UpdatePlan<'a>, DomainError> {
    let old = current.lease;
    Ok(UpdatePlan {
        reservations: merge_reservations(current.reservations, changes, window.grew)?,
        join_from: join_from(old.start_date, window.start, now),
        started: old.start_date <= now,
        requested_before_end: changes.before_end_date,
        current,
        window,
    })
}

/// Each stored reservation with the update's changes applied (in the stored order); `grew` (the
/// window widened) re-plans them all. Refuses ids that are not the lease's and invalid values.
fn merge_reservations(
    stored: &[reservation::Model],
    changes: &LeaseChanges,
    grew: bool,
) -> Result<Vec<MergedReservation>, DomainError> {
    let known: HashSet<&str> = stored.iter().map(|r| r.id.as_str()).collect();
    let unknown: Vec<String> = changes
        .reservations
        .iter()
        .filter(|c| !known.contains(c.id.as_str()))
        .map(|c| echo(&c.id, 40))
        .collect();
    if !unknown.is_empty() {
        // Upstream's text, ids joined by a bare comma as it does.
        return Err(DomainError::InvalidInput(format!(
            "Please enter valid reservation IDs. Invalid reservation IDs are: {}",
            unknown.join(",")
        )));
    }

    let mut merged = Vec::with_capacity(stored.len());
    for (i, r) in stored.iter().enumerate() {
        let change = changes.reservations.iter().find(|c| c.id == r.id);
        if let Some(t) = change.and_then(|c| c.resource_type.as_deref())
            && t != r.resource_type
        {
            return Err(DomainError::CantUpdateParameter(format!(
                "resource_type cannot be updated (reservation {} is {})",
                r.id, r.resource_type
            )));
        }
        let mut next = r.clone();
        if let Some(c) = change {
            next.min = c.min.unwrap_or(r.min);
            next.max = c.max.unwrap_or(r.max);
            if let Some(h) = &c.hypervisor_properties {
                next.hypervisor_properties = h.clone();
            }
            if let Some(p) = &c.resource_properties {
                next.resource_properties = p.clone();
            }
            if let Some(b) = c.before_end {
                next.before_end = b;
            }
        }
        rules::check_range(i, next.min, next.max)?;
        let filter =
            rules::parse_filters(i, &next.hypervisor_properties, &next.resource_properties)?;
        // A change that names host parameters re-plans only if a value differs: sending the
        // stored values again keeps the hosts as they are.
        let hosts_changed = change.is_some_and(|c| c.touches_hosts())
            && (next.min != r.min
                || next.max != r.max
                || next.hypervisor_properties != r.hypervisor_properties
                || next.resource_properties != r.resource_properties);
        merged.push(MergedReservation {
            next,
            filter,
            replan: hosts_changed || grew,
        });
    }
    Ok(merged)
}

/// When hosts chosen in an update join the lease: a host joining a lease that has started joins
/// it from now, not from its start.
fn join_from(old_start: NaiveDateTime, start: NaiveDateTime, now: NaiveDateTime) -> NaiveDateTime {
    if old_start <= now {
        start.max(truncate_to_minute(now))
    } else {
        start
    }
}

/// Hosts that join (`added`) and leave (`released`) one re-planned reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMoves {
    pub reservation_id: String,
    pub added: Vec<i64>,
    pub released: Vec<i64>,
    /// The reservation is running: its hosts are handed over and taken back in Nova at once.
    pub running: bool,
}

/// Where one event of the lease moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMove {
    pub id: String,
    pub time: NaiveDateTime,
    /// A before-end event that already fired and now falls in the future runs again.
    pub rearm: bool,
}

/// What the plan needs of a stored event.
#[derive(Debug, Clone, Copy)]
pub struct StoredEvent<'a> {
    pub id: &'a str,
    pub kind: EventType,
    pub time: NaiveDateTime,
    pub status: EventStatus,
}

/// What happens to the lease's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventChanges {
    pub moved: Vec<EventMove>,
    /// A before-end event to create (the body asked for one and the lease has none).
    pub create_before_end: Option<NaiveDateTime>,
}

impl UpdatePlan<'_> {
    /// Whether any reservation's hosts are chosen again.
    pub fn replans(&self) -> bool {
        self.reservations.iter().any(|r| r.replan)
    }

    /// Whether the lease's bookings change (hosts chosen again, or the window moved).
    pub fn bookings_change(&self) -> bool {
        self.replans() || self.window.moved
    }

    /// The window in which chosen hosts are booked.
    pub fn booking_window(&self) -> (NaiveDateTime, NaiveDateTime) {
        (self.join_from, self.window.end)
    }

    /// The hosts reservation `id` holds now.
    pub fn held(&self, id: &str) -> &[i64] {
        self.current.held.get(id).map_or(&[][..], Vec::as_slice)
    }

    /// What host choice needs for each reservation (running ones keep their hosts).
    pub fn needs(&self) -> Vec<HostNeed<'_>> {
        self.reservations
            .iter()
            .map(|m| HostNeed {
                filter: &m.filter,
                need: Need {
                    matching: &[],
                    min: m.next.min as usize,
                    max: m.next.max as usize,
                    held: self.held(&m.next.id),
                    replan: m.replan,
                    keep_held: m.next.status == ReservationStatus::Active,
                },
            })
            .collect()
    }

    /// The hosts each reservation holds now, in the stored order: its hosts after an update
    /// that chooses none again.
    pub fn held_hosts(&self) -> Vec<Vec<i64>> {
        self.reservations
            .iter()
            .map(|m| self.held(&m.next.id).to_vec())
            .collect()
    }

    /// The hosts that join and leave each re-planned reservation, given the hosts `chosen` for
    /// [`UpdatePlan::needs`]; reservations whose hosts stay are left out.
    pub fn host_moves(&self, chosen: &[Vec<i64>]) -> Vec<HostMoves> {
        self.reservations
            .iter()
            .zip(chosen)
            .filter(|(m, _)| m.replan)
            .map(|(m, hosts)| {
                let before = self.held(&m.next.id);
                HostMoves {
                    reservation_id: m.next.id.clone(),
                    added: hosts
                        .iter()
                        .copied()
                        .filter(|h| !before.contains(h))
                        .collect(),
                    released: before
                        .iter()
                        .copied()
                        .filter(|h| !hosts.contains(h))
                        .collect(),
                    running: m.next.status == ReservationStatus::Active,
                }
            })
            .filter(|m| !(m.added.is_empty() && m.released.is_empty()))
            .collect()
    }

    /// The reservations whose stored row changes.
    pub fn changed_reservations(&self) -> impl Iterator<Item = &reservation::Model> {
        self.reservations
            .iter()
            .zip(self.current.reservations)
            .filter(|(m, stored)| m.next != **stored)
            .map(|(m, _)| &m.next)
    }

    /// Where the lease's `events` move in the new window, and whether a before-end event is
    /// created.
    pub fn event_changes(&self, events: &[StoredEvent<'_>], now: NaiveDateTime) -> EventChanges {
        let NewWindow { start, end, .. } = self.window;
        let mut has_before_end = false;
        let mut moved = Vec::new();
        for e in events {
            let time = match e.kind {
                EventType::StartLease => start,
                EventType::EndLease => end,
                EventType::BeforeEndLease => {
                    has_before_end = true;
                    moved_before_end_time(
                        e.time,
                        self.current.lease.end_date,
                        start,
                        end,
                        self.requested_before_end,
                    )
                }
            };
            if time == e.time {
                continue;
            }
            moved.push(EventMove {
                id: e.id.to_string(),
                time,
                rearm: e.kind == EventType::BeforeEndLease
                    && e.status == EventStatus::Done
                    && time > now,
            });
        }
        EventChanges {
            moved,
            create_before_end: self.requested_before_end.filter(|_| !has_before_end),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::domain::lease::{BeforeEnd, LeaseStatus, ReservationChange};

    fn at(d: u32, h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2030, 3, d)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .expect("a date")
    }

    fn lease(start: NaiveDateTime, end: NaiveDateTime, status: LeaseStatus) -> lease::Model {
        lease::Model {
            id: "L".into(),
            name: "l".into(),
            user_id: None,
            project_id: None,
            trust_id: None,
            start_date: start,
            end_date: end,
            status,
            action: None,
            status_reason: None,
            degraded: false,
            created_at: at(1, 0),
            updated_at: None,
        }
    }

    fn reservation(id: &str, status: ReservationStatus) -> reservation::Model {
        reservation::Model {
            id: id.into(),
            lease_id: "L".into(),
            position: 0,
            resource_type: rules::PHYSICAL_HOST.into(),
            resource_id: format!("{id}-resource"),
            status,
            min: 1,
            max: 2,
            hypervisor_properties: String::new(),
            resource_properties: String::new(),
            before_end: BeforeEnd::Default,
            missing_resources: false,
            resources_changed: false,
            created_at: at(1, 0),
            updated_at: None,
        }
    }

    fn stored_lease<'a>(
        lease: &'a lease::Model,
        reservations: &'a [reservation::Model],
        held: &'a HashMap<String, Vec<i64>>,
    ) -> StoredLease<'a> {
        StoredLease {
            lease,
            reservations,
            held,
        }
    }

    fn current(l: &lease::Model) -> CurrentLease {
        CurrentLease {
            start: l.start_date,
            end: l.end_date,
            status: l.status,
        }
    }

    fn window(l: &lease::Model, changes: &LeaseChanges, now: NaiveDateTime) -> NewWindow {
        match plan_window(&l.id, &current(l), changes, now).expect("allowed") {
            UpdateScope::Window(w) => w,
            UpdateScope::Rename => panic!("more than a rename"),
        }
    }

    #[test]
    fn a_rename_touches_nothing_else() {
        let l = lease(at(10, 0), at(12, 0), LeaseStatus::Pending);
        let rename = LeaseChanges {
            name: Some("n".into()),
            ..Default::default()
        };
        assert_eq!(
            plan_window(&l.id, &current(&l), &rename, at(2, 0)).ok(),
            Some(UpdateScope::Rename)
        );
        let busy = lease(at(10, 0), at(12, 0), LeaseStatus::Starting);
        assert!(plan_window(&busy.id, &current(&busy), &rename, at(2, 0)).is_err());
    }

    #[test]
    fn a_shorter_window_keeps_the_hosts_a_longer_one_chooses_again() {
        let l = lease(at(10, 0), at(12, 0), LeaseStatus::Pending);
        let stored = [reservation("r", ReservationStatus::Pending)];
        let held = HashMap::from([("r".to_string(), vec![7])]);
        let cur = stored_lease(&l, &stored, &held);
        let now = at(2, 0);
        for (end, grew) in [(at(11, 0), false), (at(13, 0), true)] {
            let changes = LeaseChanges {
                end: Some(end),
                ..Default::default()
            };
            let w = window(&l, &changes, now);
            assert!(w.moved);
            assert_eq!(w.grew, grew);
            let plan = plan_update(cur, &changes, w, now).expect("a plan");
            assert_eq!(plan.replans(), grew);
            assert!(plan.bookings_change());
            assert_eq!(plan.booking_window(), (at(10, 0), end));
            assert_eq!(plan.held_hosts(), vec![vec![7]]);
            assert_eq!(plan.changed_reservations().count(), 0);
            let needs = plan.needs();
            assert_eq!(needs[0].need.held, &[7]);
            assert!(!needs[0].need.keep_held);
        }
    }

    #[test]
    fn only_changed_host_parameters_choose_again() {
        let l = lease(at(10, 0), at(12, 0), LeaseStatus::Pending);
        let stored = [
            reservation("a", ReservationStatus::Pending),
            reservation("b", ReservationStatus::Pending),
        ];
        let held = HashMap::new();
        let cur = stored_lease(&l, &stored, &held);
        let now = at(2, 0);
        let changes = LeaseChanges {
            start: Some(at(10, 0)),
            reservations: vec![
                // The stored values again: no new hosts.
                ReservationChange {
                    id: "a".into(),
                    min: Some(1),
                    before_end: Some(BeforeEnd::Snapshot),
                    ..Default::default()
                },
                ReservationChange {
                    id: "b".into(),
                    max: Some(3),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let w = window(&l, &changes, now);
        assert!(!w.moved);
        let plan = plan_update(cur, &changes, w, now).expect("a plan");
        let replan: Vec<bool> = plan.reservations.iter().map(|m| m.replan).collect();
        assert_eq!(replan, [false, true]);
        let changed: Vec<&str> = plan.changed_reservations().map(|r| r.id.as_str()).collect();
        assert_eq!(changed, ["a", "b"], "a's before_end changed, b's max");
    }

    #[test]
    fn unknown_ids_and_resource_types_are_refused() {
        let l = lease(at(10, 0), at(12, 0), LeaseStatus::Pending);
        let stored = [reservation("a", ReservationStatus::Pending)];
        let held = HashMap::new();
        let cur = stored_lease(&l, &stored, &held);
        let now = at(2, 0);
        let unknown = LeaseChanges {
            reservations: vec![ReservationChange {
                id: "x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = plan_update(cur, &unknown, window(&l, &unknown, now), now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Please enter valid reservation IDs. Invalid reservation IDs are: x"
        );
        let retype = LeaseChanges {
            reservations: vec![ReservationChange {
                id: "a".into(),
                resource_type: Some("virtual:instance".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = plan_update(cur, &retype, window(&l, &retype, now), now).unwrap_err();
        assert_eq!(e.name(), "CantUpdateParameter");
    }

    #[test]
    fn a_running_lease_takes_new_hosts_from_now_and_moves_them_at_once() {
        let l = lease(at(1, 0), at(12, 0), LeaseStatus::Active);
        let stored = [reservation("r", ReservationStatus::Active)];
        let held = HashMap::from([("r".to_string(), vec![1, 2])]);
        let cur = stored_lease(&l, &stored, &held);
        let now = at(5, 0) + chrono::TimeDelta::seconds(30);
        let changes = LeaseChanges {
            reservations: vec![ReservationChange {
                id: "r".into(),
                max: Some(3),
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = plan_update(cur, &changes, window(&l, &changes, now), now).expect("a plan");
        assert!(plan.started);
        assert_eq!(plan.booking_window(), (at(5, 0), at(12, 0)));
        assert!(plan.needs()[0].need.keep_held);
        assert_eq!(
            plan.host_moves(&[vec![1, 3]]),
            [HostMoves {
                reservation_id: "r".into(),
                added: vec![3],
                released: vec![2],
                running: true,
            }]
        );
        assert!(plan.host_moves(&[vec![1, 2]]).is_empty());
    }

    #[test]
    fn events_follow_the_window_and_a_fired_before_end_is_armed_again() {
        let l = lease(at(10, 0), at(20, 0), LeaseStatus::Active);
        let held = HashMap::new();
        let cur = stored_lease(&l, &[], &held);
        let now = at(12, 0);
        let changes = LeaseChanges {
            end: Some(at(22, 0)),
            ..Default::default()
        };
        let plan = plan_update(cur, &changes, window(&l, &changes, now), now).expect("a plan");
        let events = [
            StoredEvent {
                id: "s",
                kind: EventType::StartLease,
                time: at(10, 0),
                status: EventStatus::Done,
            },
            StoredEvent {
                id: "b",
                kind: EventType::BeforeEndLease,
                time: at(11, 0),
                status: EventStatus::Done,
            },
            StoredEvent {
                id: "e",
                kind: EventType::EndLease,
                time: at(20, 0),
                status: EventStatus::Undone,
            },
        ];
        let c = plan.event_changes(&events, now);
        assert_eq!(
            c.moved,
            [
                EventMove {
                    id: "b".into(),
                    time: at(13, 0),
                    rearm: true
                },
                EventMove {
                    id: "e".into(),
                    time: at(22, 0),
                    rearm: false
                },
            ]
        );
        assert_eq!(c.create_before_end, None);

        let asked = LeaseChanges {
            before_end_date: Some(at(21, 0)),
            ..changes
        };
        let plan = plan_update(cur, &asked, window(&l, &asked, now), now).expect("a plan");
        let c = plan.event_changes(&events[..1], now);
        assert_eq!(c.create_before_end, Some(at(21, 0)));
    }
}
