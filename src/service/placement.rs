//! The database side of host choice: the host inventory, who is busy in a window, host usage.
//!
//! The choice itself is `domain::allocation::plan`; this module only loads what it needs, inside
//! the caller's write transaction so that what is read is what is booked.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
};

use chrono::NaiveDateTime;
use entity::{allocation, host, host_capability};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Func},
};

use crate::domain::{allocation::Candidate, filter::Attributes};

/// A host with its capabilities, as filters see it.
#[derive(Debug, Clone)]
pub struct HostRecord {
    pub host: host::Model,
    /// Capabilities sorted by name.
    pub capabilities: Vec<(String, String)>,
}

impl Attributes for HostRecord {
    fn attribute(&self, key: &str) -> Option<Cow<'_, str>> {
        let h = &self.host;
        let text = |s: &str| Some(Cow::Owned(s.to_string()));
        match key {
            "id" => text(&h.id.to_string()),
            "hypervisor_hostname" => Some(Cow::Borrowed(&h.hypervisor_hostname)),
            "hypervisor_type" => Some(Cow::Borrowed(&h.hypervisor_type)),
            "hypervisor_version" => text(&h.hypervisor_version.to_string()),
            "vcpus" => text(&h.vcpus.to_string()),
            "memory_mb" => text(&h.memory_mb.to_string()),
            "local_gb" => text(&h.local_gb.to_string()),
            "cpu_info" => Some(Cow::Borrowed(&h.cpu_info)),
            "service_name" => Some(Cow::Borrowed(&h.service_name)),
            "availability_zone" => Some(Cow::Borrowed(&h.availability_zone)),
            "status" => h.status.as_deref().map(Cow::Borrowed),
            "reservable" => text(if h.reservable { "true" } else { "false" }),
            "trust_id" => h.trust_id.as_deref().map(Cow::Borrowed),
            _ => self
                .capabilities
                .binary_search_by(|(k, _)| k.as_str().cmp(key))
                .ok()
                .map(|i| Cow::Borrowed(self.capabilities[i].1.as_str())),
        }
    }
}

impl Candidate for HostRecord {
    fn host_id(&self) -> i64 {
        self.host.id
    }
    fn reservable(&self) -> bool {
        self.host.reservable
    }
}

/// Every host with its capabilities, in id order.
pub async fn load_inventory(conn: &impl ConnectionTrait) -> Result<Vec<HostRecord>, DbErr> {
    let hosts = host::Entity::find()
        .order_by_asc(host::Column::Id)
        .all(conn)
        .await?;
    let caps = host_capability::Entity::find()
        .order_by_asc(host_capability::Column::HostId)
        .order_by_asc(host_capability::Column::Name)
        .all(conn)
        .await?;
    Ok(attach_capabilities(hosts, caps))
}

/// Joins hosts (in id order) with capabilities (in host id, name order).
pub fn attach_capabilities(
    hosts: Vec<host::Model>,
    caps: Vec<host_capability::Model>,
) -> Vec<HostRecord> {
    let mut by_host: HashMap<i64, Vec<(String, String)>> = HashMap::new();
    for c in caps {
        by_host
            .entry(c.host_id)
            .or_default()
            .push((c.name, c.value));
    }
    hosts
        .into_iter()
        .map(|host| {
            let mut capabilities = by_host.remove(&host.id).unwrap_or_default();
            capabilities.sort();
            HostRecord { host, capabilities }
        })
        .collect()
}

/// Hosts booked by any lease other than `except_lease` for part of `[start, end)`.
/// Windows that only touch (one ends when the other starts) do not overlap.
pub async fn busy_hosts(
    conn: &impl ConnectionTrait,
    start: NaiveDateTime,
    end: NaiveDateTime,
    except_lease: Option<&str>,
) -> Result<HashSet<i64>, DbErr> {
    let mut q = allocation::Entity::find()
        .select_only()
        .column(allocation::Column::HostId)
        .distinct()
        .filter(allocation::Column::StartDate.lt(end))
        .filter(allocation::Column::EndDate.gt(start));
    if let Some(lease) = except_lease {
        q = q.filter(allocation::Column::LeaseId.ne(lease));
    }
    Ok(q.into_tuple::<i64>().all(conn).await?.into_iter().collect())
}

/// Number of current and future bookings of each host that has any.
pub async fn usage(
    conn: &impl ConnectionTrait,
    now: NaiveDateTime,
) -> Result<HashMap<i64, u64>, DbErr> {
    let rows: Vec<(i64, i64)> = allocation::Entity::find()
        .select_only()
        .column(allocation::Column::HostId)
        .column_as(
            Expr::expr(Func::count(Expr::col(allocation::Column::Id))),
            "n",
        )
        .filter(allocation::Column::EndDate.gt(now))
        .group_by(allocation::Column::HostId)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(h, n)| (h, n.max(0) as u64))
        .collect())
}
