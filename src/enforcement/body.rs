//! The JSON the external service receives, in upstream's shapes: `{"context": ..., "lease": ...}`
//! with `"reservations": [{..., "allocations": [host, ...]}]`, dates as Python's `isoformat()`.

use chrono::{NaiveDateTime, Timelike};
use entity::{lease, reservation};
use serde_json::{Map, Value, json};

use crate::{
    domain::lease::{PHYSICAL_HOST, ReservationRequest},
    service::{leases::EventSummary, placement::HostRecord},
};

/// `datetime.isoformat()` of a naive datetime: `2030-01-01T10:00:00`, with `.ffffff` only when
/// there are microseconds (upstream's `ISODateTimeEncoder`).
pub fn iso(t: NaiveDateTime) -> String {
    let micros = t.nanosecond() / 1000;
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

fn iso_opt(t: Option<NaiveDateTime>) -> Value {
    t.map(|t| Value::String(iso(t))).unwrap_or(Value::Null)
}

/// Who acts, as upstream's `format_context`: the lease's user and project, the identity
/// endpoint and the region.
pub fn context(
    user_id: Option<&str>,
    project_id: Option<&str>,
    auth_url: Option<&str>,
    region_name: Option<&str>,
) -> Value {
    json!({
        "user_id": user_id,
        "project_id": project_id,
        "auth_url": auth_url,
        "region_name": region_name,
    })
}

/// A host as upstream's host plugin `get` returns it: its columns and its extra capabilities.
pub fn host(r: &HostRecord) -> Value {
    let h = &r.host;
    let mut v = json!({
        "id": h.id.to_string(),
        "hypervisor_hostname": h.hypervisor_hostname,
        "hypervisor_type": h.hypervisor_type,
        "hypervisor_version": h.hypervisor_version,
        "vcpus": h.vcpus,
        "memory_mb": h.memory_mb,
        "local_gb": h.local_gb,
        "cpu_info": h.cpu_info,
        "service_name": h.service_name,
        "availability_zone": h.availability_zone,
        "status": h.status,
        "reservable": h.reservable,
        "trust_id": h.trust_id,
        "created_at": iso(h.created_at),
        "updated_at": iso_opt(h.updated_at),
    });
    if let Value::Object(m) = &mut v {
        for c in &r.capabilities {
            m.entry(c.name.clone())
                .or_insert_with(|| Value::String(c.value.clone()));
        }
    }
    v
}

fn hosts(allocations: &[HostRecord]) -> Value {
    Value::Array(allocations.iter().map(host).collect())
}

/// A reservation as the create request gives it (upstream sends the request's values).
pub fn requested_reservation(r: &ReservationRequest, allocations: &[HostRecord]) -> Value {
    json!({
        "resource_type": PHYSICAL_HOST,
        "min": r.min,
        "max": r.max,
        "hypervisor_properties": r.hypervisor_properties,
        "resource_properties": r.resource_properties,
        "before_end": r.before_end,
        "allocations": hosts(allocations),
    })
}

/// A stored reservation (or one with an update's new parameters), as upstream's database dict.
pub fn stored_reservation(r: &reservation::Model, allocations: &[HostRecord]) -> Value {
    json!({
        "id": r.id,
        "lease_id": r.lease_id,
        "resource_id": r.resource_id,
        "resource_type": r.resource_type,
        "status": r.status,
        "min": r.min,
        "max": r.max,
        "hypervisor_properties": r.hypervisor_properties,
        "resource_properties": r.resource_properties,
        "before_end": r.before_end,
        "missing_resources": r.missing_resources,
        "resources_changed": r.resources_changed,
        "created_at": iso(r.created_at),
        "updated_at": iso_opt(r.updated_at),
        "allocations": hosts(allocations),
    })
}

/// The lease of a create, as upstream's `lease_values` when it checks: the request's fields,
/// the caller's user and project, and status `CREATING`.
pub fn lease_to_create(
    name: &str,
    start: NaiveDateTime,
    end: NaiveDateTime,
    before_end_date: Option<NaiveDateTime>,
    user_id: &str,
    project_id: &str,
    reservations: Vec<Value>,
) -> Value {
    let mut v = json!({
        "name": name,
        "start_date": iso(start),
        "end_date": iso(end),
        "user_id": user_id,
        "project_id": project_id,
        "status": "CREATING",
        "reservations": reservations,
    });
    if let Some(t) = before_end_date {
        v["before_end_date"] = Value::String(iso(t));
    }
    v
}

/// A stored lease with its reservations (each with its hosts) and, when given, its events: what
/// upstream's `lease_get` returns.
pub fn stored_lease(
    l: &lease::Model,
    reservations: Vec<Value>,
    events: Option<&[EventSummary]>,
) -> Value {
    let mut m = Map::new();
    let fields = json!({
        "id": l.id,
        "name": l.name,
        "user_id": l.user_id,
        "project_id": l.project_id,
        "trust_id": l.trust_id,
        "start_date": iso(l.start_date),
        "end_date": iso(l.end_date),
        "status": l.status,
        "degraded": l.degraded,
        "created_at": iso(l.created_at),
        "updated_at": iso_opt(l.updated_at),
    });
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    m.insert("reservations".into(), Value::Array(reservations));
    if let Some(events) = events {
        m.insert(
            "events".into(),
            events
                .iter()
                .map(|e| {
                    json!({
                        "id": e.id,
                        "lease_id": e.lease_id,
                        "event_type": e.event_type,
                        "time": iso(e.time),
                        "status": e.status,
                        "created_at": iso(e.created_at),
                        "updated_at": iso_opt(e.updated_at),
                    })
                })
                .collect(),
        );
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn dates_are_python_isoformat() {
        let t = NaiveDate::from_ymd_opt(2030, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap();
        assert_eq!(iso(t), "2030-01-02T03:04:05");
        let t = t.with_nanosecond(120_000_000).unwrap();
        assert_eq!(iso(t), "2030-01-02T03:04:05.120000");
    }
}
