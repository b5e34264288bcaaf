//! Lease show and listings on a SQLite file, through the direct read path (`db::sqlite_reads`):
//! the same rows as `leases::list_leases`/`get_lease` read through sea-orm, in one snapshot.
//!
//! Each function runs on the read path's blocking thread, so it takes owned arguments and
//! decides nothing about who may see what beyond the `visible` test it is given. The HTTP suite
//! runs on SQLite (this path) and on PostgreSQL (sea-orm's), with the same assertions.

use std::str::FromStr;

use entity::{lease, reservation};
use rusqlite::{Row, Transaction, params, types::ValueRef};
use sea_orm::DbErr;

use super::leases::{EventSummary, LeaseDetail, assemble_details};
use crate::db::sqlite_reads::{datetime, datetime_opt, read_error};
use crate::domain::{
    DomainError,
    page::{Page, marker_not_found},
};

const LEASE_COLUMNS: &str = "id, name, user_id, project_id, trust_id, start_date, end_date, \
     status, action, status_reason, degraded, created_at, updated_at";

/// Who may see a lease (its project and user): the policy's answer, decided by the caller.
pub type Visible = Box<dyn Fn(&lease::Model) -> bool + Send>;

/// One page of leases (after `marker`, at most `limit`), of `project` or of every project.
pub fn list(
    txn: &Transaction<'_>,
    project: Option<&str>,
    marker: Option<&str>,
    limit: usize,
    visible: &Visible,
) -> Result<Page<LeaseDetail>, DomainError> {
    let after = match marker {
        Some(m) => {
            let found = find(txn, m)?
                .filter(|(l, _)| visible(l))
                .ok_or_else(|| marker_not_found(m))?;
            Some(found)
        }
        None => None,
    };
    // `created_at >= m` first, as in the sea-orm query: it lets the (created_at, id) index start
    // at the marker. The marker's own stored text is bound, so the comparison is the stored one.
    let mut sql = format!("SELECT {LEASE_COLUMNS} FROM leases WHERE 1 = 1");
    if project.is_some() {
        sql.push_str(" AND project_id = ?1");
    }
    if after.is_some() {
        sql.push_str(" AND created_at >= ?2 AND (created_at > ?2 OR id > ?3)");
    }
    sql.push_str(" ORDER BY created_at, id LIMIT ?4");
    let mut stmt = txn.prepare_cached(&sql).map_err(read_error)?;
    let (created, id) = match &after {
        Some((l, created)) => (Some(created.as_str()), Some(l.id.as_str())),
        None => (None, None),
    };
    // Unused parameters are bound too: rusqlite counts them, SQLite ignores them.
    let mut rows = stmt
        .query(params![project, created, id, (limit + 1) as i64])
        .map_err(read_error)?;
    let mut leases = Vec::with_capacity(limit + 1);
    while let Some(row) = rows.next().map_err(read_error)? {
        leases.push(lease_row(row)?.0);
    }
    let page = Page::from_overfetch(leases, limit, |l| l.id.clone());
    Ok(Page {
        items: details(txn, page.items)?,
        next_marker: page.next_marker,
    })
}

/// The lease `id` with its reservations and events, if it exists and is `visible`.
pub fn show(
    txn: &Transaction<'_>,
    id: &str,
    visible: &Visible,
) -> Result<LeaseDetail, DomainError> {
    let lease = find(txn, id)?
        .map(|(l, _)| l)
        .filter(|l| visible(l))
        .ok_or_else(|| DomainError::LeaseNotFound(id.to_string()))?;
    Ok(details(txn, vec![lease])?.remove(0))
}

/// A lease row and its `created_at` exactly as stored.
fn find(txn: &Transaction<'_>, id: &str) -> Result<Option<(lease::Model, String)>, DbErr> {
    let sql = format!("SELECT {LEASE_COLUMNS} FROM leases WHERE id = ?1");
    let mut stmt = txn.prepare_cached(&sql).map_err(read_error)?;
    let mut rows = stmt.query([id]).map_err(read_error)?;
    match rows.next().map_err(read_error)? {
        Some(row) => lease_row(row).map(Some),
        None => Ok(None),
    }
}

/// The reservations and events of `leases`, two queries for the lot: the ids go in as one JSON
/// array, so the statement is the same (and cached) whatever the page size.
fn details(txn: &Transaction<'_>, leases: Vec<lease::Model>) -> Result<Vec<LeaseDetail>, DbErr> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(&leases.iter().map(|l| &l.id).collect::<Vec<_>>())
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    let mut reservations = Vec::with_capacity(leases.len() + leases.len() / 8);
    let mut stmt = txn
        .prepare_cached(
            "SELECT id, lease_id, position, resource_type, resource_id, status, min, max, \
             hypervisor_properties, resource_properties, before_end, missing_resources, \
             resources_changed, created_at, updated_at FROM reservations \
             WHERE lease_id IN (SELECT value FROM json_each(?1)) ORDER BY lease_id, position",
        )
        .map_err(read_error)?;
    let mut rows = stmt.query([&ids]).map_err(read_error)?;
    while let Some(r) = rows.next().map_err(read_error)? {
        reservations.push(reservation::Model {
            id: get(r, 0)?,
            lease_id: get(r, 1)?,
            position: get(r, 2)?,
            resource_type: get(r, 3)?,
            resource_id: get(r, 4)?,
            status: text_enum(r, 5)?,
            min: get(r, 6)?,
            max: get(r, 7)?,
            hypervisor_properties: get(r, 8)?,
            resource_properties: get(r, 9)?,
            before_end: text_enum(r, 10)?,
            missing_resources: get(r, 11)?,
            resources_changed: get(r, 12)?,
            created_at: datetime(value(r, 13)?)?,
            updated_at: datetime_opt(value(r, 14)?)?,
        });
    }
    let mut events = Vec::with_capacity(leases.len() * 3);
    let mut stmt = txn
        .prepare_cached(
            "SELECT id, lease_id, event_type, time, status, created_at, updated_at FROM events \
             WHERE lease_id IN (SELECT value FROM json_each(?1))",
        )
        .map_err(read_error)?;
    let mut rows = stmt.query([&ids]).map_err(read_error)?;
    while let Some(r) = rows.next().map_err(read_error)? {
        events.push(EventSummary {
            id: get(r, 0)?,
            lease_id: get(r, 1)?,
            event_type: text_enum(r, 2)?,
            time: datetime(value(r, 3)?)?,
            status: text_enum(r, 4)?,
            created_at: datetime(value(r, 5)?)?,
            updated_at: datetime_opt(value(r, 6)?)?,
        });
    }
    Ok(assemble_details(leases, reservations, events))
}

fn lease_row(r: &Row<'_>) -> Result<(lease::Model, String), DbErr> {
    let created = value(r, 11)?;
    let created_text = match created {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        _ => String::new(),
    };
    Ok((
        lease::Model {
            id: get(r, 0)?,
            name: get(r, 1)?,
            user_id: get(r, 2)?,
            project_id: get(r, 3)?,
            trust_id: get(r, 4)?,
            start_date: datetime(value(r, 5)?)?,
            end_date: datetime(value(r, 6)?)?,
            status: text_enum(r, 7)?,
            action: get(r, 8)?,
            status_reason: get(r, 9)?,
            degraded: get(r, 10)?,
            created_at: datetime(created)?,
            updated_at: datetime_opt(value(r, 12)?)?,
        },
        created_text,
    ))
}

fn get<T: rusqlite::types::FromSql>(r: &Row<'_>, i: usize) -> Result<T, DbErr> {
    r.get(i).map_err(read_error)
}

fn value<'r>(r: &'r Row<'_>, i: usize) -> Result<ValueRef<'r>, DbErr> {
    r.get_ref(i).map_err(read_error)
}

/// A column of one of the closed sets of text (statuses, event types), read in place.
fn text_enum<T: FromStr<Err = DbErr>>(r: &Row<'_>, i: usize) -> Result<T, DbErr> {
    value(r, i)?
        .as_str()
        .map_err(|e| DbErr::Custom(format!("database read: column {i}: {e}")))?
        .parse()
}
