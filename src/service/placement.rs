//! The database side of host choice: the host inventory and the bookings, kept in memory.
//!
//! Choosing hosts reads every host's capabilities and every host's bookings; at 10,000 hosts and
//! 100,000 leases, reading them from the database for each request would dominate its cost. So
//! each instance keeps a copy ([`PlacementCache`]) and a pair of version counters in the
//! database (`placement_versions`) says when it is stale: every transaction that changes hosts
//! or bookings bumps one, and a writer that finds a version it did not write reloads that part.
//! The copy is only a guide: before booking, the chosen hosts are checked in the database, inside
//! the same serialized write transaction ([`verify_free`]). The choice itself is
//! `domain::allocation::plan`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{NaiveDateTime, TimeDelta};
use entity::{allocation, host, host_capability, placement_version};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};

use crate::domain::filter::{AttrValue, Filter};

/// A host with its capabilities, as filters see it.
#[derive(Debug, Clone)]
pub struct HostRecord {
    pub host: host::Model,
    /// Capabilities sorted by name.
    pub capabilities: Vec<(String, String)>,
}

/// The hosts as filters see them: every column and capability as an attribute with an interned
/// key id and its value parsed once, so that matching 10,000 hosts is cheap.
#[derive(Debug, Default)]
pub struct HostIndex {
    keys: HashMap<String, u32>,
    rows: Vec<IndexedHost>,
}

#[derive(Debug)]
struct IndexedHost {
    id: i64,
    reservable: bool,
    /// Sorted by key id.
    attrs: Vec<(u32, AttrValue)>,
}

impl HostIndex {
    pub fn build(hosts: &[HostRecord]) -> Self {
        let mut keys: HashMap<String, u32> = HashMap::new();
        let mut intern = |k: &str| {
            let next = keys.len() as u32;
            *keys.entry(k.to_string()).or_insert(next)
        };
        let rows = hosts
            .iter()
            .map(|r| {
                let h = &r.host;
                let mut attrs: Vec<(u32, AttrValue)> = [
                    ("id", Some(h.id.to_string())),
                    ("hypervisor_hostname", Some(h.hypervisor_hostname.clone())),
                    ("hypervisor_type", Some(h.hypervisor_type.clone())),
                    ("hypervisor_version", Some(h.hypervisor_version.to_string())),
                    ("vcpus", Some(h.vcpus.to_string())),
                    ("memory_mb", Some(h.memory_mb.to_string())),
                    ("local_gb", Some(h.local_gb.to_string())),
                    ("cpu_info", Some(h.cpu_info.clone())),
                    ("service_name", Some(h.service_name.clone())),
                    ("availability_zone", Some(h.availability_zone.clone())),
                    ("status", h.status.clone()),
                    ("reservable", Some(h.reservable.to_string())),
                    ("trust_id", h.trust_id.clone()),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .chain(r.capabilities.iter().cloned())
                .map(|(k, v)| (intern(&k), AttrValue::new(v)))
                .collect();
                attrs.sort_by_key(|(k, _)| *k);
                IndexedHost {
                    id: h.id,
                    reservable: h.reservable,
                    attrs,
                }
            })
            .collect();
        Self { keys, rows }
    }

    /// Reservable hosts that match `filter`, in id order.
    pub fn matching(&self, filter: &Filter) -> Vec<i64> {
        let compiled = filter.compile(&|k: &str| self.keys.get(k).copied());
        self.rows
            .iter()
            .filter(|row| {
                row.reservable
                    && compiled.matches(&|key: u32| {
                        row.attrs
                            .binary_search_by_key(&key, |(k, _)| *k)
                            .ok()
                            .map(|i| &row.attrs[i].1)
                    })
            })
            .map(|row| row.id)
            .collect()
    }
}

/// Every host with its capabilities, in id order.
pub async fn load_inventory(conn: &impl ConnectionTrait) -> Result<Vec<HostRecord>, DbErr> {
    let hosts = host::Entity::find()
        .order_by_asc(host::Column::Id)
        .all(conn)
        .await?;
    let caps = capabilities_of(conn, None).await?;
    Ok(attach_capabilities(hosts, caps))
}

/// (host id, name, value) of the capabilities of `hosts` (of every host when `None`). Only the
/// shown columns: decoding each timestamp costs a date parse, thousands of them in a listing.
pub async fn capabilities_of(
    conn: &impl ConnectionTrait,
    hosts: Option<&[i64]>,
) -> Result<Vec<(i64, String, String)>, DbErr> {
    let mut q = host_capability::Entity::find()
        .select_only()
        .column(host_capability::Column::HostId)
        .column(host_capability::Column::Name)
        .column(host_capability::Column::Value);
    if let Some(ids) = hosts {
        q = q.filter(host_capability::Column::HostId.is_in(ids.iter().copied()));
    }
    q.into_tuple().all(conn).await
}

/// Joins hosts (in id order) with their capabilities.
pub fn attach_capabilities(
    hosts: Vec<host::Model>,
    caps: Vec<(i64, String, String)>,
) -> Vec<HostRecord> {
    let mut by_host: HashMap<i64, Vec<(String, String)>> = HashMap::new();
    for (host, name, value) in caps {
        by_host.entry(host).or_default().push((name, value));
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

/// Bookings that ended this long ago are not kept: no new window can reach back that far (a lease
/// starts at most a minute in the past, and hosts join a running lease from now on).
const BOOKING_HORIZON: TimeDelta = TimeDelta::hours(1);

/// One host booked by one lease over `[start, end)`.
#[derive(Debug, Clone)]
pub struct Booking {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub lease: Arc<str>,
}

/// The in-memory copy of the hosts and their bookings.
#[derive(Debug)]
pub struct World {
    hosts_version: i64,
    bookings_version: i64,
    pub hosts: HostIndex,
    bookings: HashMap<i64, Vec<Booking>>,
}

impl World {
    /// Whether a lease other than `except` books `host` for part of `[start, end)`. Windows that
    /// only touch do not overlap.
    pub fn busy(
        &self,
        host: i64,
        start: NaiveDateTime,
        end: NaiveDateTime,
        except: Option<&str>,
    ) -> bool {
        self.bookings.get(&host).is_some_and(|list| {
            list.iter()
                .any(|b| b.start < end && b.end > start && except != Some(&*b.lease))
        })
    }

    /// Current and future bookings of `host`.
    pub fn usage(&self, host: i64, now: NaiveDateTime) -> u64 {
        self.bookings
            .get(&host)
            .map_or(0, |list| list.iter().filter(|b| b.end > now).count() as u64)
    }
}

/// What a write transaction changed in the bookings, to apply to the copy.
#[derive(Debug, Default)]
pub struct BookingChange {
    /// Leases whose bookings all go away (deleted, or replaced by `add`), with the hosts they
    /// held (so that only those hosts' lists are touched).
    pub remove: Vec<(String, Vec<i64>)>,
    /// New bookings: host, start, end, lease.
    pub add: Vec<(i64, NaiveDateTime, NaiveDateTime, String)>,
}

#[derive(Debug, Default)]
pub struct PlacementCache {
    world: Mutex<Option<World>>,
}

impl PlacementCache {
    /// Brings the copy up to date; call inside a write transaction (writers are serialized, so
    /// nobody changes hosts or bookings until it commits).
    pub async fn refresh(
        &self,
        conn: &impl ConnectionTrait,
        now: NaiveDateTime,
    ) -> Result<(), DbErr> {
        let versions = placement_version::Entity::find_by_id(1)
            .one(conn)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("placement_versions row".into()))?;
        let (hosts_stale, bookings_stale) = {
            let w = self.world.lock().expect("placement cache");
            match w.as_ref() {
                None => (true, true),
                Some(w) => (
                    w.hosts_version != versions.hosts,
                    w.bookings_version != versions.bookings,
                ),
            }
        };
        let hosts = if hosts_stale {
            Some(HostIndex::build(&load_inventory(conn).await?))
        } else {
            None
        };
        let bookings = if bookings_stale {
            Some(load_bookings(conn, now - BOOKING_HORIZON).await?)
        } else {
            None
        };
        let mut w = self.world.lock().expect("placement cache");
        match (w.as_mut(), hosts, bookings) {
            (Some(world), hosts, bookings) => {
                if let Some(h) = hosts {
                    world.hosts = h;
                }
                if let Some(b) = bookings {
                    world.bookings = b;
                }
                world.hosts_version = versions.hosts;
                world.bookings_version = versions.bookings;
            }
            (None, Some(hosts), Some(bookings)) => {
                *w = Some(World {
                    hosts_version: versions.hosts,
                    bookings_version: versions.bookings,
                    hosts,
                    bookings,
                });
            }
            (None, _, _) => unreachable!("an empty cache reloads both parts"),
        }
        Ok(())
    }

    /// Reads the (refreshed) copy.
    pub fn with<R>(&self, f: impl FnOnce(&World) -> R) -> R {
        let w = self.world.lock().expect("placement cache");
        f(w.as_ref().expect("refresh() comes first"))
    }

    /// Records a change of the bookings made by the current transaction: bumps the version in the
    /// database and applies the change to the copy. If the transaction then fails to commit,
    /// call [`PlacementCache::forget`].
    pub async fn record_bookings(
        &self,
        conn: &impl ConnectionTrait,
        change: BookingChange,
    ) -> Result<(), DbErr> {
        bump(conn, placement_version::Column::Bookings).await?;
        let mut w = self.world.lock().expect("placement cache");
        if let Some(world) = w.as_mut() {
            world.bookings_version += 1;
            for (lease, hosts) in &change.remove {
                for host in hosts {
                    if let Some(list) = world.bookings.get_mut(host) {
                        list.retain(|b| *b.lease != **lease);
                    }
                }
            }
            for (host, start, end, lease) in change.add {
                world.bookings.entry(host).or_default().push(Booking {
                    start,
                    end,
                    lease: lease.into(),
                });
            }
        }
        Ok(())
    }

    /// Records a change of the hosts (enrolled, updated, deleted): the next writer reloads them.
    pub async fn record_hosts(&self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        bump(conn, placement_version::Column::Hosts).await?;
        if let Some(world) = self.world.lock().expect("placement cache").as_mut() {
            world.hosts_version = -1;
        }
        Ok(())
    }

    /// Drops the copy (after a failed commit, or when it proved wrong).
    pub fn forget(&self) {
        *self.world.lock().expect("placement cache") = None;
    }
}

async fn bump(conn: &impl ConnectionTrait, column: placement_version::Column) -> Result<(), DbErr> {
    placement_version::Entity::update_many()
        .col_expr(column, Expr::col(column).add(1))
        .filter(placement_version::Column::Id.eq(1))
        .exec(conn)
        .await?;
    Ok(())
}

/// Bookings that end after `since`, per host.
async fn load_bookings(
    conn: &impl ConnectionTrait,
    since: NaiveDateTime,
) -> Result<HashMap<i64, Vec<Booking>>, DbErr> {
    let rows: Vec<(i64, NaiveDateTime, NaiveDateTime, String)> = allocation::Entity::find()
        .select_only()
        .column(allocation::Column::HostId)
        .column(allocation::Column::StartDate)
        .column(allocation::Column::EndDate)
        .column(allocation::Column::LeaseId)
        .filter(allocation::Column::EndDate.gt(since))
        .into_tuple()
        .all(conn)
        .await?;
    let mut leases: HashMap<String, Arc<str>> = HashMap::new();
    let mut out: HashMap<i64, Vec<Booking>> = HashMap::new();
    for (host, start, end, lease) in rows {
        let lease = leases
            .entry(lease)
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone();
        out.entry(host)
            .or_default()
            .push(Booking { start, end, lease });
    }
    Ok(out)
}

/// Of `hosts`, those booked in the database by a lease other than `except_lease` for part of
/// `[start, end)`: the check that makes a booking safe whatever the copy said.
pub async fn verify_free(
    conn: &impl ConnectionTrait,
    hosts: &[i64],
    start: NaiveDateTime,
    end: NaiveDateTime,
    except_lease: Option<&str>,
) -> Result<Vec<i64>, DbErr> {
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = allocation::Entity::find()
        .select_only()
        .column(allocation::Column::HostId)
        .distinct()
        .filter(allocation::Column::HostId.is_in(hosts.iter().copied()))
        .filter(allocation::Column::StartDate.lt(end))
        .filter(allocation::Column::EndDate.gt(start));
    if let Some(lease) = except_lease {
        q = q.filter(allocation::Column::LeaseId.ne(lease));
    }
    q.into_tuple::<i64>().all(conn).await
}
