//! Capacity planning: a lease's plan (a dry run that says why), the free windows for a request,
//! and the calendar of bookings. Reads only: nothing here takes the write turn, and every answer
//! comes from the placement copy, filters and rules that create decides with.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDateTime, TimeDelta};
use entity::lease;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::Services;
use crate::auth::Caller;
use crate::domain::{
    DomainError,
    allocation::PlanError,
    capacity::{
        self, AvailabilityRequest, CalendarRequest, RawQuery, Search, Span, Standing, Window,
    },
    dates::format_lease_date,
    filter::Filter,
    input::Received,
    lease::{self as rules, LeaseRequest},
    placement::{HostNeed, World, create_needs},
};

/// At most this many starts are tried when a lease's reservations compete for the same hosts.
const MAX_LEASE_CANDIDATES: usize = 200;
/// Lease ids per query when naming blocking leases.
const IN_CHUNK: usize = 500;

/// What a create would do with a lease body, and why.
#[derive(Debug, Clone)]
pub struct LeasePlan {
    /// Whether a create now would succeed (all reservations together, as create decides).
    pub feasible: bool,
    /// The earliest start, at or after the requested one, at which the whole lease fits.
    pub earliest_start: Option<NaiveDateTime>,
    pub reservations: Vec<ReservationPlan>,
}

#[derive(Debug, Clone)]
pub struct ReservationPlan {
    /// The hosts a create would take now (admins only; empty when the lease does not fit).
    pub hosts: Option<Vec<i64>>,
    pub min: i32,
    pub max: i32,
    pub matching: usize,
    pub reservable: usize,
    pub free: usize,
    pub blocking: Vec<Blocking>,
    pub earliest_start: Option<NaiveDateTime>,
    pub why: String,
    /// Whether this reservation gets its hosts (it may fit while a sibling does not).
    pub fits: bool,
}

/// A lease that holds some of a reservation's matching hosts during the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocking {
    /// Shown for the caller's own project's leases, and to admins.
    pub lease_id: Option<String>,
    pub name: Option<String>,
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    /// How many of the matching hosts it holds.
    pub hosts: usize,
}

/// A free window as the API shows it.
#[derive(Debug, Clone)]
pub struct FreeWindow {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub count: usize,
    /// Admins only.
    pub hosts: Option<Vec<i64>>,
}

/// The bookings of the hosts matching a filter, for the calendar page.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub after: NaiveDateTime,
    pub before: NaiveDateTime,
    pub hosts: Vec<CalendarHost>,
}

#[derive(Debug, Clone)]
pub struct CalendarHost {
    /// Admins see the host; others an anonymous row.
    pub id: Option<i64>,
    pub name: Option<String>,
    pub label: String,
    pub reservable: bool,
    pub bookings: Vec<CalendarBooking>,
}

#[derive(Debug, Clone)]
pub struct CalendarBooking {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub lease_id: Option<String>,
    pub lease_name: Option<String>,
    pub mine: bool,
}

/// One reservation's view of the copy, gathered under its lock.
struct Survey {
    matching: Vec<i64>,
    reservable: usize,
    free: usize,
    /// (lease, start, end) of every booking on a matching host that overlaps the window.
    held: Vec<(String, NaiveDateTime, NaiveDateTime)>,
    earliest_start: Option<NaiveDateTime>,
}

impl Services {
    fn horizon(&self) -> TimeDelta {
        TimeDelta::days(self.settings.api.plan_horizon_days as i64)
    }

    /// A dry run of a lease create: the same body, validation and choice of hosts, and what
    /// stands in the way; nothing is stored.
    pub async fn plan_lease(
        &self,
        caller: &Caller,
        body: &Received<rules::LeaseCreate>,
    ) -> Result<LeasePlan, DomainError> {
        self.authorize("blazar:leases:plan", caller)?;
        let now = self.clock.now();
        let req = rules::check_create(body, now, self.limits())?;
        self.plan(caller, &req, now).await
    }

    /// Why `req` does not fit: the plan's sentences, for create's 409.
    pub(crate) async fn explain_shortage(
        &self,
        caller: &Caller,
        req: &LeaseRequest,
        now: NaiveDateTime,
    ) -> Result<String, DomainError> {
        let plan = self.plan(caller, req, now).await?;
        let many = plan.reservations.len() > 1;
        let mut parts: Vec<String> = plan
            .reservations
            .iter()
            .enumerate()
            .filter(|(_, r)| !many || !r.fits)
            .map(|(i, r)| {
                if many {
                    format!("reservation {i}: {}", r.why)
                } else {
                    r.why.clone()
                }
            })
            .collect();
        if many {
            match plan.earliest_start {
                Some(t) => parts.push(format!(
                    "the earliest start at which the whole lease fits is {}",
                    format_lease_date(t)
                )),
                None => parts.push("the whole lease fits at no start within the horizon".into()),
            }
        }
        Ok(parts.join("; "))
    }

    async fn plan(
        &self,
        caller: &Caller,
        req: &LeaseRequest,
        now: NaiveDateTime,
    ) -> Result<LeasePlan, DomainError> {
        let horizon = self.horizon();
        let txn = self.db.read().await?;
        let (chosen, surveys, earliest) = self
            .placement
            .read(&txn, now, |w| survey_lease(w, req, horizon, now))
            .await?;
        txn.commit().await?;
        let feasible = chosen.is_ok();
        // The reservation the planner could not give its `min` (the others would fit).
        let short = match &chosen {
            Err(PlanError::Shortage { index, .. }) => Some(*index),
            _ => None,
        };
        let chosen = chosen.unwrap_or_else(|_| vec![Vec::new(); req.reservations.len()]);
        let admin = self.is_admin(caller);
        let ids: Vec<&str> = surveys
            .iter()
            .flat_map(|s| s.held.iter().map(|(l, _, _)| l.as_str()))
            .collect();
        let names = self.lease_names(ids).await?;
        let reservations = req
            .reservations
            .iter()
            .zip(surveys)
            .zip(chosen)
            .enumerate()
            .map(|(i, ((r, s), mut hosts))| {
                hosts.sort_unstable();
                let fits = feasible || short.is_some_and(|x| x != i);
                let standing = Standing {
                    filter: capacity::filter_text(&r.hypervisor_properties, &r.resource_properties),
                    min: r.min as usize,
                    matching: s.matching.len(),
                    reservable: s.reservable,
                    free: s.free,
                    held_until: s.held.iter().map(|(_, _, end)| *end).max(),
                    earliest_start: s.earliest_start,
                    fits,
                };
                ReservationPlan {
                    hosts: admin.then_some(hosts),
                    min: r.min,
                    max: r.max,
                    matching: s.matching.len(),
                    reservable: s.reservable,
                    free: s.free,
                    blocking: blocking(&s.held, &names, caller, admin),
                    earliest_start: s.earliest_start,
                    why: capacity::why(&standing, format_lease_date),
                    fits,
                }
            })
            .collect();
        Ok(LeasePlan {
            feasible,
            earliest_start: earliest,
            reservations,
        })
    }

    /// The windows in which the hosts matching a filter are free, earliest first.
    pub async fn find_availability(
        &self,
        caller: &Caller,
        query: &RawQuery<'_>,
    ) -> Result<Vec<FreeWindow>, DomainError> {
        self.authorize("blazar:oshosts:availability", caller)?;
        let now = self.clock.now();
        let AvailabilityRequest { filter, search } =
            capacity::parse_availability(query, now, self.horizon())?;
        let txn = self.db.read().await?;
        // Only the copying happens under the copy's lock (creates wait for it); the sweep runs
        // outside, so that concurrent searches share the cores.
        let spans = self
            .placement
            .read(&txn, now, |w| {
                let matching = w.hosts.matching(&filter.filter);
                spans_in(w, &matching, &search)
            })
            .await?;
        txn.commit().await?;
        let windows = sweep(&spans, &search);
        let admin = self.is_admin(caller);
        Ok(windows
            .into_iter()
            .map(|w| FreeWindow {
                start: w.start,
                end: w.end,
                count: w.hosts.len(),
                hosts: admin.then_some(w.hosts),
            })
            .collect())
    }

    /// The hosts matching a filter with their bookings in a range: hosts and every lease's name
    /// for admins; for others anonymous rows, and names of their own project's leases only.
    pub async fn calendar(
        &self,
        caller: &Caller,
        query: &RawQuery<'_>,
    ) -> Result<Calendar, DomainError> {
        self.authorize("blazar:oshosts:calendar", caller)?;
        let now = self.clock.now();
        let CalendarRequest {
            filter,
            after,
            before,
        } = capacity::parse_calendar(query, now, self.horizon())?;
        let txn = self.db.read().await?;
        type Row = (
            i64,
            String,
            bool,
            Vec<(String, NaiveDateTime, NaiveDateTime)>,
        );
        let rows: Vec<Row> = self
            .placement
            .read(&txn, now, |w| {
                w.hosts
                    .matching_any(&filter.filter)
                    .into_iter()
                    .filter_map(|id| {
                        let record = w.record(id)?;
                        let list = w.bookings_of(id);
                        let first = list.partition_point(|b| b.end <= after);
                        let bookings = list[first..]
                            .iter()
                            .take_while(|b| b.start < before)
                            .map(|b| (b.lease.to_string(), b.start, b.end))
                            .collect();
                        Some((
                            id,
                            record.host.hypervisor_hostname.clone(),
                            record.host.reservable,
                            bookings,
                        ))
                    })
                    .collect()
            })
            .await?;
        txn.commit().await?;
        let admin = self.is_admin(caller);
        let ids: Vec<&str> = rows
            .iter()
            .flat_map(|(_, _, _, b)| b.iter().map(|(l, _, _)| l.as_str()))
            .collect();
        let names = self.lease_names(ids).await?;
        let hosts = rows
            .into_iter()
            .enumerate()
            .map(|(i, (id, name, reservable, bookings))| CalendarHost {
                id: admin.then_some(id),
                label: if admin {
                    name.clone()
                } else {
                    format!("host {}", i + 1)
                },
                name: admin.then_some(name),
                reservable,
                bookings: bookings
                    .into_iter()
                    .map(|(lease_id, start, end)| {
                        let owner = names.get(&lease_id);
                        let mine =
                            owner.is_some_and(|(_, p)| p.as_deref() == Some(&caller.project_id));
                        let shown = admin || mine;
                        CalendarBooking {
                            start,
                            end,
                            lease_name: shown.then(|| owner.map(|(n, _)| n.clone())).flatten(),
                            lease_id: shown.then_some(lease_id),
                            mine,
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(Calendar {
            after,
            before,
            hosts,
        })
    }

    /// Names and projects of leases, by id. (A `Vec`, not an iterator: an iterator of closures
    /// held by this future would keep callers' futures from being provably `Send`.)
    async fn lease_names(
        &self,
        mut ids: Vec<&str>,
    ) -> Result<HashMap<String, (String, Option<String>)>, DomainError> {
        ids.sort_unstable();
        ids.dedup();
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let txn = self.db.read().await?;
        for chunk in ids.chunks(IN_CHUNK) {
            let rows: Vec<(String, String, Option<String>)> = lease::Entity::find()
                .select_only()
                .column(lease::Column::Id)
                .column(lease::Column::Name)
                .column(lease::Column::ProjectId)
                .filter(lease::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&txn)
                .await?;
            for (id, name, project) in rows {
                out.insert(id, (name, project));
            }
        }
        txn.commit().await?;
        Ok(out)
    }
}

/// What a plan reports of a lease.
type LeaseSurvey = (
    Result<Vec<Vec<i64>>, PlanError>,
    Vec<Survey>,
    Option<NaiveDateTime>,
);

/// The plan of `req` in the copy: create's choice, each reservation's survey, and the earliest
/// start of the whole lease. Synchronous, under the copy's lock.
fn survey_lease(
    w: &mut World,
    req: &LeaseRequest,
    horizon: TimeDelta,
    now: NaiveDateTime,
) -> LeaseSurvey {
    let window = (req.start, req.end);
    let specs = create_needs(&req.reservations);
    let chosen = w.plan(&specs, req.start, req.end, None, now);
    let surveys: Vec<Survey> = req
        .reservations
        .iter()
        .map(|r| survey(w, &r.filter, r.min as usize, window, horizon))
        .collect();
    let earliest = match &chosen {
        Ok(_) => Some(req.start),
        Err(_) => earliest_lease_start(w, &specs, &surveys, window, horizon, now),
    };
    (chosen, surveys, earliest)
}

/// The bookings of `hosts` overlapping the search range, as spans for the sweep.
fn spans_in(w: &World, hosts: &[i64], search: &Search) -> Vec<(i64, Vec<Span>)> {
    hosts
        .iter()
        .map(|h| {
            let list = w.bookings_of(*h);
            let first = list.partition_point(|b| b.end <= search.after);
            let spans = list[first..]
                .iter()
                .take_while(|b| b.start < search.before)
                .map(|b| Span {
                    start: b.start,
                    end: b.end,
                })
                .collect();
            (*h, spans)
        })
        .collect()
}

fn sweep(spans: &[(i64, Vec<Span>)], search: &Search) -> Vec<Window> {
    capacity::free_windows(spans.iter().map(|(h, s)| (*h, s.as_slice())), search)
}

/// The free windows among `hosts` (under the copy's lock).
fn windows_of(w: &World, hosts: &[i64], search: &Search) -> Vec<Window> {
    sweep(&spans_in(w, hosts, search), search)
}

/// How one reservation stands in the copy: its matching hosts, how many may be reserved and are
/// free for the window, what holds the others, and when it would fit alone.
fn survey(
    w: &mut World,
    filter: &Filter,
    min: usize,
    (start, end): (NaiveDateTime, NaiveDateTime),
    horizon: TimeDelta,
) -> Survey {
    let reservable_hosts = w.hosts.matching(filter);
    let matching = w.hosts.matching_any(filter);
    let free = reservable_hosts
        .iter()
        .filter(|h| !w.busy(**h, start, end, None))
        .count();
    let mut held = Vec::new();
    for h in &matching {
        let list = w.bookings_of(*h);
        let first = list.partition_point(|b| b.end <= start);
        for b in list[first..].iter().take_while(|b| b.start < end) {
            held.push((b.lease.to_string(), b.start, b.end));
        }
    }
    let earliest_start = windows_of(
        w,
        &reservable_hosts,
        &Search {
            duration: end - start,
            after: start,
            before: start + horizon + (end - start),
            min,
            max: None,
            limit: 1,
        },
    )
    .first()
    .map(|w| w.start);
    Survey {
        matching,
        reservable: reservable_hosts.len(),
        free,
        held,
        earliest_start,
    }
}

/// The earliest start at which every reservation of the lease fits together, as create decides:
/// each alone must fit (their windows), then the planner must place them all.
fn earliest_lease_start(
    w: &mut World,
    specs: &[HostNeed<'_>],
    surveys: &[Survey],
    (start, end): (NaiveDateTime, NaiveDateTime),
    horizon: TimeDelta,
    now: NaiveDateTime,
) -> Option<NaiveDateTime> {
    if surveys.iter().any(|s| s.earliest_start.is_none()) {
        return None;
    }
    let duration = end - start;
    // Candidate starts: every instant at which some reservation's count of free hosts can
    // change, from the latest of the reservations' own earliest starts.
    let from = surveys.iter().filter_map(|s| s.earliest_start).max()?;
    let mut candidates: Vec<NaiveDateTime> = vec![from];
    for spec in specs {
        for h in w.hosts.matching(spec.filter).iter() {
            for b in w.bookings_of(*h) {
                for t in [b.end, b.start - duration] {
                    if t > from && t <= start + horizon {
                        candidates.push(t);
                    }
                }
            }
        }
    }
    candidates.sort_unstable();
    candidates.dedup();
    candidates
        .into_iter()
        .take(MAX_LEASE_CANDIDATES)
        .find(|t| w.plan(specs, *t, *t + duration, None, now).is_ok())
}

/// The leases holding matching hosts in the window, merged per lease; other projects' leases
/// without id or name for non-admins.
fn blocking(
    held: &[(String, NaiveDateTime, NaiveDateTime)],
    names: &HashMap<String, (String, Option<String>)>,
    caller: &Caller,
    admin: bool,
) -> Vec<Blocking> {
    let mut by_lease: BTreeMap<&str, (NaiveDateTime, NaiveDateTime, usize)> = BTreeMap::new();
    for (lease_id, start, end) in held {
        let e = by_lease.entry(lease_id).or_insert((*start, *end, 0));
        e.0 = e.0.min(*start);
        e.1 = e.1.max(*end);
        e.2 += 1;
    }
    let mut out: Vec<Blocking> = by_lease
        .into_iter()
        .map(|(lease_id, (start, end, hosts))| {
            let owner = names.get(lease_id);
            let shown = admin
                || owner.is_some_and(|(_, p)| p.as_deref() == Some(caller.project_id.as_str()));
            Blocking {
                lease_id: shown.then(|| lease_id.to_string()),
                name: shown.then(|| owner.map(|(n, _)| n.clone())).flatten(),
                start,
                end,
                hosts,
            }
        })
        .collect();
    out.sort_by_key(|b| (b.start, b.end));
    out
}
