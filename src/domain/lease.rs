//! Lease rules: the create and update bodies (the types that document and read them), the date
//! rules, events and statuses.

use chrono::{NaiveDateTime, TimeDelta};
use poem_openapi::Object as Documented;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    DomainError,
    dates::{self, Now},
    filter::Filter,
    input::{self, Body, Count, List, Object, Received, Refusal, Whole, field_type, fields_of},
};

/// The only resource type this server reserves.
pub const PHYSICAL_HOST: &str = "physical:host";
/// What `before_end: "default"` may be configured to mean.
pub const BEFORE_END_CONFIG_ACTIONS: &[&str] = &["", "snapshot"];
pub const MAX_NAME_CHARS: usize = 80;

const LEASE_SERVER_OWNED: &[&str] = &[
    "id",
    "project_id",
    "user_id",
    "trust_id",
    "status",
    "action",
    "status_reason",
    "degraded",
    "created_at",
    "updated_at",
];
const RESERVATION_SERVER_OWNED: &[&str] = &[
    "id",
    "lease_id",
    "resource_id",
    "status",
    "missing_resources",
    "resources_changed",
    "created_at",
    "updated_at",
];

// The statuses and event types are the entity crate's string-backed enums: one definition, whose
// text is what the tables store. The rules about them are here, as functions.
pub use entity::sea_orm_active_enums::{
    BeforeEnd, EventStatus, EventType, LeaseStatus, ReservationStatus, RunOutcome,
};

/// Limits on a lease body that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_reservations: usize,
}

/// A validated `physical:host` reservation request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservationRequest {
    pub min: i32,
    pub max: i32,
    pub hypervisor_properties: String,
    pub resource_properties: String,
    pub before_end: BeforeEnd,
    /// Both filter fields, combined with AND.
    pub filter: Filter,
}

/// A validated lease create request.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    pub name: String,
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub before_end_date: Option<NaiveDateTime>,
    pub reservations: Vec<ReservationRequest>,
}

/// A host reservation requested in a new lease.
// Serialize: poem-openapi's `ToJSON` of a `List` of them goes through serde.
#[derive(Debug, Clone, Documented, Deserialize, Serialize)]
#[oai(rename = "ReservationCreate")]
#[serde(deny_unknown_fields)]
pub struct ReservationCreate {
    /// Must be `physical:host`.
    pub resource_type: ResourceType,
    /// Fewest hosts the lease accepts (>= 1); a string holding an integer is accepted too.
    pub min: Count,
    /// Most hosts the lease wants (>= min); a string holding an integer is accepted too.
    pub max: Count,
    /// Filter on host columns: a string holding JSON such as `["==", "$vcpus", "4"]`, or `""`.
    pub hypervisor_properties: Option<FilterText>,
    /// Filter on extra capabilities, same language, or `""`.
    pub resource_properties: Option<FilterText>,
    /// Action before the end: `""` (none), `default` (the server's configured action, the
    /// default) or `snapshot`.
    pub before_end: Option<BeforeEndChoice>,
}

/// A lease to create. Dates are `YYYY-MM-DD HH:MM` in UTC (seconds and a `T` separator are
/// accepted too); `start_date` may be `now`.
#[derive(Debug, Clone, Documented, Deserialize)]
#[oai(rename = "LeaseCreate")]
#[serde(deny_unknown_fields)]
pub struct LeaseCreate {
    /// 1 to 80 characters, no control characters.
    pub name: LeaseName,
    pub start_date: DateText,
    pub end_date: DateText,
    /// When `before_end_lease` fires (strictly between start and end); default: 60 minutes
    /// before the end (configurable).
    #[oai(nullable)]
    pub before_end_date: Option<DateText>,
    /// At most 32 (configurable).
    #[oai(nullable)]
    pub reservations: Option<List<ReservationCreate>>,
    /// Events are created by the server; only an empty list is accepted.
    #[oai(nullable)]
    pub events: Option<NoEvents>,
}

impl Body for LeaseCreate {
    fn check_keys(object: &Object) -> Result<(), DomainError> {
        check_keys::<Self, ReservationCreate>(object, "lease", "reservation")
    }
}

/// Changes to one reservation of the lease, by id.
// Serialize: poem-openapi's `ToJSON` of a `List` of them goes through serde.
#[derive(Debug, Clone, Documented, Deserialize, Serialize)]
#[oai(rename = "ReservationUpdate")]
#[serde(deny_unknown_fields)]
pub struct ReservationUpdate {
    pub id: ReservationId,
    /// May be given, but must equal the stored value.
    pub resource_type: Option<GivenText>,
    pub min: Option<Count>,
    pub max: Option<Count>,
    pub hypervisor_properties: Option<FilterText>,
    pub resource_properties: Option<FilterText>,
    pub before_end: Option<BeforeEndChoice>,
}

/// Changes to a lease. The start can move only before the lease starts; a terminated lease can
/// only be renamed. Hosts are re-chosen where the new window or parameters need it, keeping the
/// hosts already held where possible; a refused update changes nothing.
#[derive(Debug, Clone, Documented, Deserialize)]
#[oai(rename = "LeaseUpdate")]
#[serde(deny_unknown_fields)]
pub struct LeaseUpdate {
    // A null name is a missing one, not "no change".
    #[serde(default, deserialize_with = "input::present")]
    pub name: Option<LeaseName>,
    pub start_date: Option<DateText>,
    pub end_date: Option<DateText>,
    #[oai(nullable)]
    pub before_end_date: Option<DateText>,
    #[oai(nullable)]
    pub reservations: Option<List<ReservationUpdate>>,
    /// Only an empty list is accepted (upstream's sample sends one).
    #[oai(nullable)]
    pub events: Option<NoEvents>,
}

impl Body for LeaseUpdate {
    fn check_keys(object: &Object) -> Result<(), DomainError> {
        check_keys::<Self, ReservationUpdate>(object, "lease update", "reservation update")
    }
}

/// The keys of a lease body and of each of its reservations, before serde reads a field.
fn check_keys<L: DeserializeOwned, R: DeserializeOwned>(
    object: &Object,
    what: &str,
    reservation_what: &str,
) -> Result<(), DomainError> {
    input::reject_unknown(object, fields_of::<L>(), LEASE_SERVER_OWNED, what)?;
    if let Some(Value::Array(items)) = object.get("reservations") {
        for (index, item) in items.iter().enumerate() {
            // serde's derive would also read a reservation from an array of its values.
            let Value::Object(item) = item else {
                return Err(DomainError::malformed(
                    format!("reservations[{index}]"),
                    format!("must be an object, not {}", input::json_kind(item)),
                ));
            };
            input::reject_unknown(
                item,
                fields_of::<R>(),
                RESERVATION_SERVER_OWNED,
                reservation_what,
            )?;
        }
    }
    Ok(())
}

field_type! {
    /// A lease's name: 1 to [`MAX_NAME_CHARS`] characters, no control characters.
    LeaseName(String), |v| {
        let name = input::required_string(v, Refusal::malformed, Refusal::missing())?;
        input::text_rule(&name, 1, MAX_NAME_CHARS).map_err(Refusal::malformed)?;
        Ok(Self(name))
    }
}

field_type! {
    /// A date as text (`2030-01-02 12:00`, or `now` for a start); `dates::parse_input` reads it,
    /// against `now`.
    DateText(String), |v| input::required_string(v, Refusal::malformed, Refusal::missing()).map(Self)
}

field_type! {
    /// A reservation's resource type at create: `physical:host`, the only one this server
    /// reserves.
    ResourceType(String), |v| match v {
        None => Err(Refusal::missing()),
        Some(Value::String(s)) if s == PHYSICAL_HOST => Ok(Self(s)),
        Some(Value::String(s)) => Err(Refusal::whole(
            Whole::UnsupportedResourceType,
            unsupported(&s),
        )),
        Some(_) => Err(Refusal::malformed("must be a string")),
    }
}

field_type! {
    /// A text field named bare in its message even inside a reservation (an update's
    /// `resource_type`, checked against the stored value later).
    GivenText(String), |v| input::required_string(v, Refusal::MalformedBare, Refusal::missing()).map(Self)
}

field_type! {
    /// The id of the reservation an update changes.
    ReservationId(String), |v| {
        let missing = Refusal::Missing {
            label: Some("reservation ID".into()),
            field: None,
        };
        input::required_string(v, Refusal::MalformedBare, missing).map(Self)
    }
}

field_type! {
    /// A filter's text: JSON in the filter language (`["==", "$vcpus", "4"]`), or `""`; its
    /// syntax is checked by [`parse_filters`].
    FilterText(String), |v| match v {
        Some(Value::String(s)) => Ok(Self(s)),
        other => Err(Refusal::malformed(format!(
            "must be a string holding a JSON filter, not {}",
            other.as_ref().map_or("null", input::json_kind)
        ))),
    }
}

field_type! {
    /// A reservation's `before_end`: `""`, `default` or `snapshot`.
    BeforeEndChoice(BeforeEnd), |v| {
        let refuse = |shown: String| {
            Refusal::malformed(format!(
                "must be one of \"\", \"default\", \"snapshot\", not {shown}"
            ))
        };
        match v {
            Some(Value::String(s)) => s
                .parse()
                .map(Self)
                .map_err(|_| refuse(input::printable(&s, 40))),
            other => Err(refuse(
                other.as_ref().map_or("null", input::json_kind).to_string(),
            )),
        }
    }
}

field_type! {
    /// `events`: created by the server; the client may send only an empty list (as the CLI
    /// does).
    NoEvents(Vec<Value>), |v| match v {
        None => Ok(Self(Vec::new())),
        Some(Value::Array(a)) if a.is_empty() => Ok(Self(a)),
        Some(_) => Err(Refusal::whole(
            Whole::UnknownField,
            "events are created by the server (start_lease, before_end_lease, end_lease); \
             send an empty list or leave the field out",
        )),
    }
}

/// Reads and checks a create body against `now` and the limits.
pub fn check_create(
    body: &Received<LeaseCreate>,
    now: NaiveDateTime,
    limits: Limits,
) -> Result<LeaseRequest, DomainError> {
    // The number of reservations first: a body of a thousand is refused before one is read.
    if let Some(Value::Array(items)) = body.object.get("reservations")
        && items.len() > limits.max_reservations
    {
        return Err(DomainError::malformed(
            "reservations",
            format!(
                "a lease may hold at most {} reservations (got {})",
                limits.max_reservations,
                items.len()
            ),
        ));
    }
    let body = body.parse()?;
    let start = dates::parse_input("start_date", &body.start_date.0, now, Now::Allowed)?;
    let end = dates::parse_input("end_date", &body.end_date.0, now, Now::Allowed)?;
    if start < dates::truncate_to_minute(now) {
        return Err(DomainError::InvalidInput(format!(
            "Start date must be later than current date: start_date {} is before {}",
            dates::format_lease_date(start),
            dates::format_lease_date(dates::truncate_to_minute(now)),
        )));
    }
    check_end_after_start(start, end)?;

    let reservations = body
        .reservations
        .map(|l| l.0)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, r)| reservation_request(i, r))
        .collect::<Result<Vec<_>, _>>()?;

    let before_end_date = before_end_date(body.before_end_date, now)?;
    if let Some(bed) = before_end_date {
        check_before_end_within(bed, start, end)?;
    }
    Ok(LeaseRequest {
        name: body.name.0,
        start,
        end,
        before_end_date,
        reservations,
    })
}

fn before_end_date(
    text: Option<DateText>,
    now: NaiveDateTime,
) -> Result<Option<NaiveDateTime>, DomainError> {
    match text {
        None => Ok(None),
        Some(t) if t.0.is_empty() => Ok(None),
        Some(t) => dates::parse_input("before_end_date", &t.0, now, Now::Forbidden).map(Some),
    }
}

fn check_end_after_start(start: NaiveDateTime, end: NaiveDateTime) -> Result<(), DomainError> {
    if end <= start {
        return Err(DomainError::InvalidInput(format!(
            "End date must be later than start date. end_date {} is not after start_date {}",
            dates::format_lease_date(end),
            dates::format_lease_date(start)
        )));
    }
    Ok(())
}

/// Upstream's update says it in other words than its create: keep each one's text.
const UPDATE_END_RULE: &str = "End date must be later than current and start date";

fn check_before_end_within(
    bed: NaiveDateTime,
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Result<(), DomainError> {
    if bed <= start || bed >= end {
        return Err(DomainError::InvalidInput(format!(
            "Datetime is out of lease limits: before_end_date {} must be strictly between the \
             lease's start {} and end {}",
            dates::format_lease_date(bed),
            dates::format_lease_date(start),
            dates::format_lease_date(end)
        )));
    }
    Ok(())
}

fn field(index: usize, name: &str) -> String {
    format!("reservations[{index}].{name}")
}

fn reservation_request(
    index: usize,
    r: ReservationCreate,
) -> Result<ReservationRequest, DomainError> {
    let (min, max) = (count(r.min), count(r.max));
    check_range(index, min, max)?;
    let hypervisor_properties = r.hypervisor_properties.map(|f| f.0).unwrap_or_default();
    let resource_properties = r.resource_properties.map(|f| f.0).unwrap_or_default();
    let filter = parse_filters(index, &hypervisor_properties, &resource_properties)?;
    Ok(ReservationRequest {
        min,
        max,
        hypervisor_properties,
        resource_properties,
        before_end: r.before_end.map_or(BeforeEnd::Default, |b| b.0),
        filter,
    })
}

/// Upstream's UnsupportedResourceType names the type as given (escaped, capped).
fn unsupported(resource_type: &str) -> String {
    input::printable(resource_type, 40)
        .trim_matches('\'')
        .to_string()
}

/// A count as the reservation rows hold it: [`Count`] is at most `i32::MAX`.
fn count(c: Count) -> i32 {
    c.0 as i32
}

/// `min <= max` for reservation `index` (its position in the body, or in the lease).
pub fn check_range(index: usize, min: i32, max: i32) -> Result<(), DomainError> {
    if min > max {
        return Err(DomainError::InvalidRange(format!(
            "reservations[{index}] asks for min {min} and max {max}."
        )));
    }
    Ok(())
}

pub fn parse_filters(
    index: usize,
    hypervisor_properties: &str,
    resource_properties: &str,
) -> Result<Filter, DomainError> {
    let h = Filter::parse(
        &field(index, "hypervisor_properties"),
        hypervisor_properties,
    )?;
    let r = Filter::parse(&field(index, "resource_properties"), resource_properties)?;
    Ok(h.and(r))
}

/// One reservation's part of an update body: what to change, by reservation id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReservationChange {
    pub id: String,
    pub min: Option<i32>,
    pub max: Option<i32>,
    pub hypervisor_properties: Option<String>,
    pub resource_properties: Option<String>,
    pub before_end: Option<BeforeEnd>,
    /// Checked against the stored value; it cannot change.
    pub resource_type: Option<String>,
}

impl ReservationChange {
    /// Whether this change can alter which hosts the reservation needs.
    pub fn touches_hosts(&self) -> bool {
        self.min.is_some()
            || self.max.is_some()
            || self.hypervisor_properties.is_some()
            || self.resource_properties.is_some()
    }
}

/// A validated (shape only) update body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaseChanges {
    pub name: Option<String>,
    pub start: Option<NaiveDateTime>,
    pub end: Option<NaiveDateTime>,
    pub before_end_date: Option<NaiveDateTime>,
    pub reservations: Vec<ReservationChange>,
}

impl LeaseChanges {
    /// Whether the update asks for anything besides a new name.
    pub fn beyond_name(&self) -> bool {
        self.start.is_some()
            || self.end.is_some()
            || self.before_end_date.is_some()
            || !self.reservations.is_empty()
    }
}

/// Checks an update body against `now`. Rules that depend on the stored lease are in
/// [`plan_dates`].
pub fn check_update(body: LeaseUpdate, now: NaiveDateTime) -> Result<LeaseChanges, DomainError> {
    let date = |name: &str, text: Option<DateText>| {
        text.map(|t| dates::parse_input(name, &t.0, now, Now::Allowed))
            .transpose()
    };
    let start = date("start_date", body.start_date)?;
    let end = date("end_date", body.end_date)?;
    let before_end_date = before_end_date(body.before_end_date, now)?;
    let reservations = body
        .reservations
        .map(|l| l.0)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, r)| reservation_change(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::new();
    for r in &reservations {
        if !seen.insert(r.id.as_str()) {
            return Err(DomainError::InvalidInput(format!(
                "reservation {} appears twice in the update",
                input::printable(&r.id, 40)
            )));
        }
    }
    Ok(LeaseChanges {
        name: body.name.map(|n| n.0),
        start,
        end,
        before_end_date,
        reservations,
    })
}

fn reservation_change(
    index: usize,
    r: ReservationUpdate,
) -> Result<ReservationChange, DomainError> {
    let change = ReservationChange {
        id: r.id.0,
        min: r.min.map(count),
        max: r.max.map(count),
        hypervisor_properties: r.hypervisor_properties.map(|f| f.0),
        resource_properties: r.resource_properties.map(|f| f.0),
        before_end: r.before_end.map(|b| b.0),
        resource_type: r.resource_type.map(|t| t.0),
    };
    // Check the filter syntax now; the combination with stored values is checked by the service.
    parse_filters(
        index,
        change.hypervisor_properties.as_deref().unwrap_or(""),
        change.resource_properties.as_deref().unwrap_or(""),
    )?;
    Ok(change)
}

/// The stored dates and status an update is checked against.
#[derive(Debug, Clone, Copy)]
pub struct CurrentLease {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub status: LeaseStatus,
}

/// The lease's new window after an update, with upstream's date rules (and `end > start` always).
pub fn plan_dates(
    current: &CurrentLease,
    changes: &LeaseChanges,
    now: NaiveDateTime,
) -> Result<(NaiveDateTime, NaiveDateTime), DomainError> {
    let started = current.start <= now || current.status != LeaseStatus::Pending;
    let start = match changes.start {
        Some(s) if s != current.start => {
            if started {
                return Err(DomainError::InvalidInput(
                    "Cannot modify the start date of already started leases".into(),
                ));
            }
            if s < dates::truncate_to_minute(now) {
                return Err(DomainError::InvalidInput(format!(
                    "Start date must be later than current date: start_date {} is in the past",
                    dates::format_lease_date(s)
                )));
            }
            s
        }
        _ => current.start,
    };
    let end = changes.end.unwrap_or(current.end);
    if end <= start {
        return Err(DomainError::InvalidInput(format!(
            "{UPDATE_END_RULE}: end_date {} is not after start_date {}",
            dates::format_lease_date(end),
            dates::format_lease_date(start)
        )));
    }
    if changes.end.is_some() && end < dates::truncate_to_minute(now) {
        return Err(DomainError::InvalidInput(format!(
            "{UPDATE_END_RULE}: end_date {} is in the past",
            dates::format_lease_date(end)
        )));
    }
    if let Some(bed) = changes.before_end_date {
        check_before_end_within(bed, start, end)?;
    }
    Ok((start, end))
}

/// When `before_end_lease` fires for a new lease: the requested date, else `minutes` before the
/// end (not before the start), else never when `minutes` is 0.
pub fn before_end_time(
    start: NaiveDateTime,
    end: NaiveDateTime,
    requested: Option<NaiveDateTime>,
    minutes: i64,
) -> Option<NaiveDateTime> {
    if let Some(t) = requested {
        return Some(t);
    }
    if minutes <= 0 {
        return None;
    }
    Some((end - TimeDelta::minutes(minutes)).max(start))
}

/// Where an existing `before_end_lease` moves when the lease's window changes: the requested date,
/// else the same distance before the new end as before the old one, not before the new start.
pub fn moved_before_end_time(
    old_time: NaiveDateTime,
    old_end: NaiveDateTime,
    new_start: NaiveDateTime,
    new_end: NaiveDateTime,
    requested: Option<NaiveDateTime>,
) -> NaiveDateTime {
    requested.unwrap_or_else(|| (new_end - (old_end - old_time)).max(new_start))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use serde_json::json;

    use super::*;

    fn at(d: u32, h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2030, 3, d)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    }
    fn now() -> NaiveDateTime {
        at(1, 12, 0) + TimeDelta::seconds(30)
    }
    const LIMITS: Limits = Limits {
        max_reservations: 4,
    };
    fn parse_create(
        body: &Object,
        now: NaiveDateTime,
        limits: Limits,
    ) -> Result<LeaseRequest, DomainError> {
        check_create(&Received::new(body.clone()), now, limits)
    }
    fn parse_update(body: &Object, now: NaiveDateTime) -> Result<LeaseChanges, DomainError> {
        check_update(input::parse(body)?, now)
    }
    fn create(v: Value) -> Result<LeaseRequest, DomainError> {
        parse_create(v.as_object().unwrap(), now(), LIMITS)
    }
    fn body() -> Value {
        json!({
            "name": "lease_foo",
            "start_date": "2030-3-2 20:00",
            "end_date": "2030-3-4 20:00",
            "before_end_date": "2030-03-04 19:00",
            "reservations": [{
                "hypervisor_properties": "[\"==\", \"$hypervisor_hostname\", \"compute\"]",
                "max": 1, "min": 1, "resource_type": "physical:host",
                "resource_properties": "", "before_end": "default"
            }],
            "events": []
        })
    }

    #[test]
    fn the_seed_request_is_valid() {
        let r = create(body()).unwrap();
        assert_eq!(r.start, at(2, 20, 0));
        assert_eq!(r.end, at(4, 20, 0));
        assert_eq!(r.before_end_date, Some(at(4, 19, 0)));
        assert_eq!(r.reservations[0].min, 1);
        assert_eq!(r.reservations[0].before_end, BeforeEnd::Default);
    }

    #[test]
    fn now_start_and_string_counts_are_accepted() {
        let mut b = body();
        b["start_date"] = json!("now");
        b["reservations"][0]["min"] = json!("1");
        b["reservations"][0]["max"] = json!("2");
        b["reservations"][0]
            .as_object_mut()
            .unwrap()
            .remove("before_end");
        let r = create(b).unwrap();
        assert_eq!(r.start, at(1, 12, 0));
        assert_eq!((r.reservations[0].min, r.reservations[0].max), (1, 2));
        assert_eq!(
            r.reservations[0].before_end,
            BeforeEnd::Default,
            "absent before_end means default"
        );
    }

    fn err_of(patch: impl FnOnce(&mut Value)) -> String {
        let mut b = body();
        patch(&mut b);
        let e = create(b).unwrap_err();
        format!("{} | {e}", e.name())
    }

    #[test]
    fn each_rule_names_its_field() {
        type Patch = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Patch, &str)> = vec![
            (
                Box::new(|b| {
                    b.as_object_mut().unwrap().remove("name");
                }),
                "Missing parameter name",
            ),
            (
                Box::new(|b| b["name"] = json!("x".repeat(81))),
                "name: must be at most 80",
            ),
            (Box::new(|b| b["name"] = json!(5)), "name: must be a string"),
            (
                Box::new(|b| {
                    b.as_object_mut().unwrap().remove("end_date");
                }),
                "Missing parameter end_date",
            ),
            (
                Box::new(|b| b["start_date"] = json!("2030-02-30 10:00")),
                "InvalidDate | 2030-02-30 10:00 is an invalid date. Required format: %Y-%m-%d %H:%M (start_date",
            ),
            (
                Box::new(|b| b["start_date"] = json!(12)),
                "start_date: must be a string",
            ),
            (
                Box::new(|b| b["start_date"] = json!("2030-03-01 11:00")),
                "Start date must be later than current date",
            ),
            (
                Box::new(|b| b["end_date"] = json!("2030-03-02 20:00")),
                "End date must be later than start date.",
            ),
            (
                Box::new(|b| b["before_end_date"] = json!("2030-03-05 00:00")),
                "Datetime is out of lease limits: before_end_date 2030-03-05T00:00:00.000000 must be strictly between",
            ),
            (
                Box::new(|b| b["before_end_date"] = json!("now")),
                "before_end_date",
            ),
            (
                Box::new(|b| b["reservations"][0]["min"] = json!(0)),
                "Malformed parameter min and max (must be greater than or equal to 1): reservations[0].min is 0",
            ),
            (
                Box::new(|b| b["reservations"][0]["max"] = json!(-1)),
                "Malformed parameter min and max (must be greater than or equal to 1): reservations[0].max is -1",
            ),
            (
                Box::new(|b| b["reservations"][0]["max"] = json!(1.5)),
                "Malformed parameter max (reservations[0].max): must be an integer",
            ),
            (
                Box::new(|b| b["reservations"][0]["max"] = json!("9223372036854775808")),
                "reservations[0].max",
            ),
            (
                Box::new(|b| {
                    b["reservations"][0]["min"] = json!(3);
                    b["reservations"][0]["max"] = json!(2);
                }),
                "InvalidRange",
            ),
            (
                Box::new(|b| {
                    b["reservations"][0].as_object_mut().unwrap().remove("min");
                }),
                "Missing parameter min (reservations[0].min)",
            ),
            (
                Box::new(|b| b["reservations"][0]["resource_type"] = json!("virtual:instance")),
                "UnsupportedResourceType",
            ),
            (
                Box::new(|b| b["reservations"][0]["before_end"] = json!("reboot")),
                "Malformed parameter before_end (reservations[0].before_end): must be one of",
            ),
            (
                Box::new(|b| {
                    b["reservations"][0]["resource_properties"] = json!("[\"~\", \"$a\", \"1\"]")
                }),
                "MalformedRequirements | Malformed requirements ['~', '$a', '1'] (reservations[0].resource_properties: ",
            ),
            (
                Box::new(|b| b["reservations"][0]["amount"] = json!(1)),
                "Unknown field 'amount'",
            ),
            (
                Box::new(|b| b["reservations"][0]["status"] = json!("active")),
                "'status' is set by the server",
            ),
            (
                Box::new(|b| b["reservations"] = json!({})),
                "reservations: must be a list",
            ),
            (
                Box::new(|b| b["reservations"] = json!([1])),
                "reservations[0]: must be an object",
            ),
            (
                Box::new(|b| b["reservations"] = json!([{}, {}, {}, {}, {}])),
                "at most 4 reservations",
            ),
            (
                Box::new(|b| b["project_id"] = json!("other")),
                "'project_id' is set by the server",
            ),
            (
                Box::new(|b| b["id"] = json!("x")),
                "'id' is set by the server",
            ),
            (
                Box::new(|b| b["events"] = json!([{"event_type": "start_lease"}])),
                "events are created by the server",
            ),
        ];
        for (patch, needle) in cases {
            let e = err_of(patch);
            assert!(e.contains(needle), "expected {needle:?} in {e:?}");
        }
    }

    /// The enums are string-backed: this text is what the tables hold (upstream's), so it must
    /// never change; `FromStr` and `Serialize` speak the same text as `Display`.
    #[test]
    fn stored_text_is_upstreams() {
        fn texts<
            T: std::fmt::Display + std::str::FromStr + serde::Serialize + PartialEq + std::fmt::Debug,
        >(
            all: impl Iterator<Item = T>,
        ) -> Vec<String> {
            all.map(|v| {
                let text = v.to_string();
                assert_eq!(json!(v), json!(text));
                assert!(text.parse::<T>().ok() == Some(v), "{text} reads back");
                text
            })
            .collect()
        }
        assert_eq!(
            texts(LeaseStatus::all()),
            [
                "CREATING",
                "PENDING",
                "STARTING",
                "ACTIVE",
                "UPDATING",
                "TERMINATING",
                "TERMINATED",
                "DELETING",
                "ERROR"
            ]
        );
        assert_eq!(
            texts(ReservationStatus::all()),
            ["pending", "active", "deleted", "error"]
        );
        assert_eq!(
            texts(EventStatus::all()),
            ["UNDONE", "IN_PROGRESS", "DONE", "ERROR"]
        );
        assert_eq!(
            texts(EventType::all()),
            ["start_lease", "before_end_lease", "end_lease"]
        );
        assert_eq!(texts(RunOutcome::all()), ["DONE", "ERROR", "RETRY"]);
        assert_eq!(texts(BeforeEnd::all()), ["", "default", "snapshot"]);
        assert!("active".parse::<LeaseStatus>().is_err(), "the case matters");
        assert!("reboot".parse::<BeforeEnd>().is_err());
    }

    #[test]
    fn before_end_time_rules() {
        let (s, e) = (at(2, 0, 0), at(4, 0, 0));
        assert_eq!(before_end_time(s, e, None, 60), Some(at(3, 23, 0)));
        assert_eq!(
            before_end_time(s, e, Some(at(3, 0, 0)), 60),
            Some(at(3, 0, 0))
        );
        assert_eq!(before_end_time(s, e, None, 0), None);
        assert_eq!(
            before_end_time(s, at(2, 0, 30), None, 60),
            Some(s),
            "clamped to the start"
        );
        assert_eq!(
            moved_before_end_time(at(3, 23, 0), e, s, at(6, 0, 0), None),
            at(5, 23, 0)
        );
        assert_eq!(
            moved_before_end_time(at(3, 0, 0), e, s, at(2, 1, 0), None),
            s
        );
    }

    fn current(status: LeaseStatus) -> CurrentLease {
        CurrentLease {
            start: at(2, 0, 0),
            end: at(4, 0, 0),
            status,
        }
    }
    fn changes(v: Value) -> LeaseChanges {
        parse_update(v.as_object().unwrap(), now()).unwrap()
    }

    #[test]
    fn update_date_rules() {
        let pending = current(LeaseStatus::Pending);
        let c = changes(json!({"end_date": "2030-03-05 00:00"}));
        assert_eq!(
            plan_dates(&pending, &c, now()).unwrap(),
            (at(2, 0, 0), at(5, 0, 0))
        );
        let c = changes(json!({"start_date": "2030-03-01 10:00"}));
        assert!(
            plan_dates(&pending, &c, now())
                .unwrap_err()
                .to_string()
                .contains("later than current")
        );
        let c = changes(json!({"end_date": "2030-03-02 00:00"}));
        assert!(
            plan_dates(&pending, &c, now()).is_err(),
            "end == start is refused"
        );

        let mut active = current(LeaseStatus::Active);
        active.start = at(1, 0, 0);
        let c = changes(json!({"start_date": "2030-03-03 00:00"}));
        assert!(
            plan_dates(&active, &c, now())
                .unwrap_err()
                .to_string()
                .contains("already started")
        );
        let c = changes(json!({"start_date": "2030-03-01 00:00", "end_date": "2030-03-09 00:00"}));
        assert!(
            plan_dates(&active, &c, now()).is_ok(),
            "the same start is not a change"
        );

        let c = changes(json!({"before_end_date": "2030-03-04 00:00"}));
        assert!(
            plan_dates(&pending, &c, now()).is_err(),
            "before_end_date must be before the end"
        );
    }

    #[test]
    fn status_gates() {
        use crate::domain::lifecycle::check_updatable;
        let c = changes(json!({"end_date": "2030-03-05 00:00"}));
        let e = check_updatable("L", &current(LeaseStatus::Starting), &c, now()).unwrap_err();
        assert_eq!(e.name(), "InvalidStatus");
        let e = check_updatable("L", &current(LeaseStatus::Terminated), &c, now()).unwrap_err();
        assert!(e.to_string().contains("only be renamed"));
        let rename = changes(json!({"name": "new"}));
        assert!(check_updatable("L", &current(LeaseStatus::Terminated), &rename, now()).is_ok());
    }

    #[test]
    fn update_body_shape() {
        let c = changes(json!({"reservations": [{"id": "r1", "max": "3"}], "events": []}));
        assert_eq!(c.reservations[0].max, Some(3));
        assert!(c.reservations[0].touches_hosts());
        let bad = json!({"reservations": [{"max": 3}]});
        assert!(
            parse_update(bad.as_object().unwrap(), now())
                .unwrap_err()
                .to_string()
                .contains("reservations[0].id")
        );
        let bad = json!({"trust_id": "t"});
        assert!(
            parse_update(bad.as_object().unwrap(), now())
                .unwrap_err()
                .to_string()
                .contains("set by the server")
        );
        let bad = json!({"reservations": [{"id": "a"}, {"id": "a"}]});
        assert!(
            parse_update(bad.as_object().unwrap(), now())
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
