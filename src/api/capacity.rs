//! Capacity planning (extensions to the v1 contract, docs/capacity.md): `POST /v1/leases/plan`,
//! `GET /v1/os-hosts/availability` and `GET /v1/os-hosts/calendar`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Query, payload::Json};

use super::{
    ApiTags,
    body::Body,
    error::{OpResult, ops},
    types::{FastJson, Nullable},
};
use crate::{
    auth::Caller,
    domain::{capacity::RawQuery, dates::format_lease_date, lease::LeaseCreate},
    service::{
        Services,
        capacity::{Blocking, Calendar, FreeWindow, LeasePlan, ReservationPlan},
    },
};

/// A lease that holds some of a reservation's matching hosts during the window.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "BlockingLease")]
pub struct BlockingView {
    /// The lease's id: for the caller's own project's leases, and for admins; otherwise null.
    #[oai(nullable)]
    pub id: Nullable<String>,
    /// Its name, under the same rule.
    #[oai(nullable)]
    pub name: Nullable<String>,
    pub start_date: String,
    pub end_date: String,
    /// How many of the reservation's matching hosts it holds.
    pub hosts: u64,
}

/// What a create would do with one reservation of the lease.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "ReservationPlan")]
pub struct ReservationPlanView {
    /// The host ids a create would take now (admins only; empty when the lease does not fit).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    pub min: i32,
    pub max: i32,
    /// Hosts that pass both filters.
    pub matching: u64,
    /// Of those, the ones not disabled or unreservable.
    pub reservable: u64,
    /// Of those, the ones free for the whole window.
    pub free: u64,
    /// The leases holding matching hosts in the window.
    pub blocking: Vec<BlockingView>,
    /// The earliest start, at or after the requested one, at which this reservation alone fits
    /// for the same duration (within the horizon, `plan_horizon_days`), or null.
    #[oai(nullable)]
    pub earliest_start: Nullable<String>,
    /// Why it fits or not, in a sentence.
    pub why: String,
}

/// A lease create body's outcome, without storing anything.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Plan")]
pub struct PlanView {
    /// Whether a create now would succeed (all reservations together, as create decides).
    pub feasible: bool,
    /// The earliest start at which the whole lease fits for the same duration, or null.
    #[oai(nullable)]
    pub earliest_start: Nullable<String>,
    /// One per reservation, in request order.
    pub reservations: Vec<ReservationPlanView>,
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "PlanEnvelope")]
pub struct PlanEnvelope {
    pub plan: PlanView,
}

/// A window in which enough matching hosts are free.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "FreeWindow")]
pub struct WindowView {
    pub start_date: String,
    pub end_date: String,
    /// The most hosts free for the whole window (at least `min`, at most `max`).
    pub count: u64,
    /// Their ids (admins only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Availability")]
pub struct AvailabilityView {
    /// Earliest first.
    pub windows: Vec<WindowView>,
}

/// A booking on the calendar.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "CalendarBooking")]
pub struct CalendarBookingView {
    pub start_date: String,
    pub end_date: String,
    /// For the caller's own project's leases, and for admins; otherwise null ("reserved").
    #[oai(nullable)]
    pub lease_id: Nullable<String>,
    #[oai(nullable)]
    pub lease_name: Nullable<String>,
    /// Whether the lease is the caller's project's.
    pub mine: bool,
}

/// A host row of the calendar.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "CalendarHost")]
pub struct CalendarHostView {
    /// The host's id (admins only; null for others).
    #[oai(nullable)]
    pub id: Nullable<String>,
    /// Its hypervisor hostname (admins only).
    #[oai(nullable)]
    pub name: Nullable<String>,
    /// What to show: the name, or `host N` for non-admins.
    pub label: String,
    pub reservable: bool,
    /// Bookings overlapping the range, by start.
    pub bookings: Vec<CalendarBookingView>,
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Calendar")]
pub struct CalendarView {
    pub after: String,
    pub before: String,
    /// Hosts matching the filters, reservable or not, in id order.
    pub hosts: Vec<CalendarHostView>,
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "CalendarEnvelope")]
pub struct CalendarEnvelope {
    pub calendar: CalendarView,
}

fn date(t: Option<chrono::NaiveDateTime>) -> Nullable<String> {
    Nullable(t.map(format_lease_date))
}

fn ids(hosts: Option<Vec<i64>>) -> Option<Vec<String>> {
    hosts.map(|h| h.into_iter().map(|i| i.to_string()).collect())
}

impl From<Blocking> for BlockingView {
    fn from(b: Blocking) -> Self {
        Self {
            id: Nullable(b.lease_id),
            name: Nullable(b.name),
            start_date: format_lease_date(b.start),
            end_date: format_lease_date(b.end),
            hosts: b.hosts as u64,
        }
    }
}

impl From<ReservationPlan> for ReservationPlanView {
    fn from(r: ReservationPlan) -> Self {
        Self {
            hosts: ids(r.hosts),
            min: r.min,
            max: r.max,
            matching: r.matching as u64,
            reservable: r.reservable as u64,
            free: r.free as u64,
            blocking: r.blocking.into_iter().map(BlockingView::from).collect(),
            earliest_start: date(r.earliest_start),
            why: r.why,
        }
    }
}

impl From<LeasePlan> for PlanView {
    fn from(p: LeasePlan) -> Self {
        Self {
            feasible: p.feasible,
            earliest_start: date(p.earliest_start),
            reservations: p
                .reservations
                .into_iter()
                .map(ReservationPlanView::from)
                .collect(),
        }
    }
}

impl From<FreeWindow> for WindowView {
    fn from(w: FreeWindow) -> Self {
        Self {
            start_date: format_lease_date(w.start),
            end_date: format_lease_date(w.end),
            count: w.count as u64,
            hosts: ids(w.hosts),
        }
    }
}

impl From<Calendar> for CalendarView {
    fn from(c: Calendar) -> Self {
        Self {
            after: format_lease_date(c.after),
            before: format_lease_date(c.before),
            hosts: c
                .hosts
                .into_iter()
                .map(|h| CalendarHostView {
                    id: Nullable(h.id.map(|i| i.to_string())),
                    name: Nullable(h.name),
                    label: h.label,
                    reservable: h.reservable,
                    bookings: h
                        .bookings
                        .into_iter()
                        .map(|b| CalendarBookingView {
                            start_date: format_lease_date(b.start),
                            end_date: format_lease_date(b.end),
                            lease_id: Nullable(b.lease_id),
                            lease_name: Nullable(b.lease_name),
                            mine: b.mine,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

pub struct CapacityApi;

#[OpenApi]
impl CapacityApi {
    /// Plan a lease
    ///
    /// A dry run of `createLease` with the same body and the same 400s: which hosts a create
    /// would take now, and for each reservation what matches, what is free, which leases hold
    /// the rest, the earliest start that fits, and why. Stores nothing.
    #[oai(
        path = "/v1/leases/plan",
        method = "post",
        operation_id = "planLease",
        tag = "ApiTags::Leases"
    )]
    async fn plan_lease(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        body: Json<Body<LeaseCreate>>,
    ) -> OpResult<FastJson<PlanEnvelope>, ops::PlanLease> {
        let plan = svc.plan_lease(&caller, &body.0.0).await?;
        Ok(FastJson(PlanEnvelope { plan: plan.into() }))
    }

    /// Find free windows
    ///
    /// The windows of `duration` in which at least `min` hosts matching the filters are free,
    /// earliest first; each starts at the earliest instant of its stretch of time. Exact: a
    /// create for a window succeeds with that many hosts, and no earlier window exists.
    #[oai(
        path = "/v1/os-hosts/availability",
        method = "get",
        operation_id = "findAvailability",
        tag = "ApiTags::Hosts"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn find_availability(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        /// Filter on host columns, e.g. `[">=", "$vcpus", "16"]`.
        hypervisor_properties: Query<Option<String>>,
        /// Filter on extra capabilities, e.g. `["==", "$gpu", "true"]`.
        resource_properties: Query<Option<String>>,
        /// Fewest hosts (default 1).
        min: Query<Option<i64>>,
        /// Most hosts a window reports.
        max: Query<Option<i64>>,
        /// Minutes (`240`) or ISO 8601 (`PT4H`, `P2D`).
        duration: Query<Option<String>>,
        /// Earliest start (default now): `2030-01-02 12:00`, with seconds, or ISO 8601.
        after: Query<Option<String>>,
        /// Latest end (default after + 30 days).
        before: Query<Option<String>>,
        /// Most windows (default 5, at most 100).
        limit: Query<Option<i64>>,
    ) -> OpResult<FastJson<AvailabilityView>, ops::FindAvailability> {
        let windows = svc
            .find_availability(
                &caller,
                &RawQuery {
                    hypervisor_properties: hypervisor_properties.0.as_deref(),
                    resource_properties: resource_properties.0.as_deref(),
                    min: min.0,
                    max: max.0,
                    duration: duration.0.as_deref(),
                    after: after.0.as_deref(),
                    before: before.0.as_deref(),
                    limit: limit.0,
                },
            )
            .await?;
        Ok(FastJson(AvailabilityView {
            windows: windows.into_iter().map(WindowView::from).collect(),
        }))
    }

    /// Show the calendar
    ///
    /// The hosts matching the filters with their bookings in `[after, before)`, for the calendar
    /// page (`/calendar`). Admins see every host and lease; others anonymous host rows, with the
    /// names of their own project's leases only.
    #[oai(
        path = "/v1/os-hosts/calendar",
        method = "get",
        operation_id = "getCalendar",
        tag = "ApiTags::Hosts"
    )]
    async fn calendar(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        /// Filter on host columns.
        hypervisor_properties: Query<Option<String>>,
        /// Filter on extra capabilities.
        resource_properties: Query<Option<String>>,
        /// Start of the range (default now).
        after: Query<Option<String>>,
        /// End of the range (default after + 7 days).
        before: Query<Option<String>>,
    ) -> OpResult<FastJson<CalendarEnvelope>, ops::GetCalendar> {
        let calendar = svc
            .calendar(
                &caller,
                &RawQuery {
                    hypervisor_properties: hypervisor_properties.0.as_deref(),
                    resource_properties: resource_properties.0.as_deref(),
                    after: after.0.as_deref(),
                    before: before.0.as_deref(),
                    ..Default::default()
                },
            )
            .await?;
        Ok(FastJson(CalendarEnvelope {
            calendar: calendar.into(),
        }))
    }
}
