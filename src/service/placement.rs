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
    /// The hosts each recent filter matched: leases mostly repeat a few filters (one per flavour
    /// of machine), and matching 10,000 hosts again for each create was a seventh of its CPU.
    /// Rebuilt with the index, so it never outlives a change of the hosts.
    matched: HashMap<Filter, Arc<[i64]>>,
}

/// Filters whose matches [`HostIndex`] remembers; past it, it forgets them all and starts again.
const MATCHED_FILTERS: usize = 256;

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
        Self {
            keys,
            rows,
            matched: HashMap::new(),
        }
    }

    /// Reservable hosts that match `filter`, in id order.
    pub fn matching(&mut self, filter: &Filter) -> Arc<[i64]> {
        if let Some(hosts) = self.matched.get(filter) {
            return hosts.clone();
        }
        let hosts: Arc<[i64]> = self.scan(filter).into();
        if self.matched.len() >= MATCHED_FILTERS {
            self.matched.clear();
        }
        self.matched.insert(filter.clone(), hosts.clone());
        hosts
    }

    /// Every host that matches `filter`, reservable or not, in id order (not remembered: plans
    /// and calendars ask for it, creates do not).
    pub fn matching_any(&self, filter: &Filter) -> Vec<i64> {
        self.scan_where(filter, false)
    }

    fn scan(&self, filter: &Filter) -> Vec<i64> {
        self.scan_where(filter, true)
    }

    fn scan_where(&self, filter: &Filter, reservable_only: bool) -> Vec<i64> {
        let compiled = filter.compile(&|k: &str| self.keys.get(k).copied());
        self.rows
            .iter()
            .filter(|row| {
                (row.reservable || !reservable_only)
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
///
/// A host's bookings never overlap one another (each was checked against the others in the
/// database before it was written), so each host's list, kept sorted by start, is sorted by end
/// too, and both questions a create asks of every matching host are binary searches: scanning
/// the lists made a create's cost grow with the number of leases.
#[derive(Debug)]
pub struct World {
    hosts_version: i64,
    bookings_version: i64,
    pub hosts: HostIndex,
    /// The records `hosts` was built from, in id order: what host listings show.
    inventory: Arc<[HostRecord]>,
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
            let first = list.partition_point(|b| b.end <= start);
            list[first..]
                .iter()
                .take_while(|b| b.start < end)
                .any(|b| except != Some(&*b.lease))
        })
    }

    /// The bookings of `host` that end after the copy's horizon, sorted by start (and so by
    /// end: they never overlap).
    pub fn bookings_of(&self, host: i64) -> &[Booking] {
        self.bookings.get(&host).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The host `id` with its capabilities.
    pub fn record(&self, id: i64) -> Option<&HostRecord> {
        self.inventory
            .binary_search_by_key(&id, |r| r.host.id)
            .ok()
            .map(|i| &self.inventory[i])
    }

    /// Current and future bookings of `host`.
    pub fn usage(&self, host: i64, now: NaiveDateTime) -> u64 {
        self.bookings.get(&host).map_or(0, |list| {
            (list.len() - list.partition_point(|b| b.end <= now)) as u64
        })
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
        let versions = versions(conn).await?;
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
        let (hosts, bookings) = load_parts(conn, hosts_stale, bookings_stale, now).await?;
        let mut w = self.world.lock().expect("placement cache");
        match (w.as_mut(), hosts, bookings) {
            (Some(world), hosts, bookings) => {
                if let Some((index, inventory)) = hosts {
                    world.hosts = index;
                    world.inventory = inventory;
                }
                if let Some(b) = bookings {
                    world.bookings = b;
                }
                world.hosts_version = versions.hosts;
                world.bookings_version = versions.bookings;
            }
            (None, Some((hosts, inventory)), Some(bookings)) => {
                *w = Some(World {
                    hosts_version: versions.hosts,
                    bookings_version: versions.bookings,
                    hosts,
                    inventory,
                    bookings,
                });
            }
            (None, _, _) => unreachable!("an empty cache reloads both parts"),
        }
        Ok(())
    }

    /// Brings the copy up to `conn`'s snapshot for a reader (plans, availability, calendars,
    /// which never take the write turn): what is older than the snapshot is loaded, and what is
    /// newer (a writer moved it forward meanwhile) is kept, as [`PlacementCache::inventory`]
    /// does.
    pub async fn refresh_for_read(
        &self,
        conn: &impl ConnectionTrait,
        now: NaiveDateTime,
    ) -> Result<(), DbErr> {
        let versions = versions(conn).await?;
        // Twice at most: a writer may drop the copy while we read (a failed commit).
        for _ in 0..2 {
            let (hosts_old, bookings_old) = {
                let w = self.world.lock().expect("placement cache");
                match w.as_ref() {
                    None => (true, true),
                    Some(w) => (
                        w.hosts_version < versions.hosts,
                        w.bookings_version < versions.bookings,
                    ),
                }
            };
            let (hosts, bookings) = load_parts(conn, hosts_old, bookings_old, now).await?;
            let mut w = self.world.lock().expect("placement cache");
            match (w.as_mut(), hosts, bookings) {
                (Some(world), hosts, bookings) => {
                    if let Some((index, inventory)) = hosts
                        && world.hosts_version < versions.hosts
                    {
                        world.hosts = index;
                        world.inventory = inventory;
                        world.hosts_version = versions.hosts;
                    }
                    if let Some(b) = bookings
                        && world.bookings_version < versions.bookings
                    {
                        world.bookings = b;
                        world.bookings_version = versions.bookings;
                    }
                    return Ok(());
                }
                (None, Some((index, inventory)), Some(bookings)) => {
                    *w = Some(World {
                        hosts_version: versions.hosts,
                        bookings_version: versions.bookings,
                        hosts: index,
                        inventory,
                        bookings,
                    });
                    return Ok(());
                }
                (None, _, _) => continue,
            }
        }
        Err(DbErr::Custom(
            "the placement copy was dropped twice while being read".into(),
        ))
    }

    /// Every host with its capabilities, in id order, as `conn`'s snapshot sees them: from the
    /// copy when it is that version (a listing of 10,000 hosts then reads one row, not 80,000),
    /// else from the database, and the copy takes them.
    ///
    /// Readers may run in any order with writers, so a reader only ever moves the copy forward
    /// (versions only grow): an older snapshot never replaces what a writer has just loaded.
    pub async fn inventory(&self, conn: &impl ConnectionTrait) -> Result<Arc<[HostRecord]>, DbErr> {
        let version = versions(conn).await?.hosts;
        {
            let w = self.world.lock().expect("placement cache");
            if let Some(world) = w.as_ref().filter(|w| w.hosts_version == version) {
                return Ok(world.inventory.clone());
            }
        }
        let inventory: Arc<[HostRecord]> = load_inventory(conn).await?.into();
        let index = HostIndex::build(&inventory);
        let mut w = self.world.lock().expect("placement cache");
        match w.as_mut() {
            Some(world) if world.hosts_version < version => {
                world.hosts = index;
                world.inventory = inventory.clone();
                world.hosts_version = version;
            }
            Some(_) => {}
            // No bookings yet: -1 is never a version, so the first writer loads them.
            None => {
                *w = Some(World {
                    hosts_version: version,
                    bookings_version: -1,
                    hosts: index,
                    inventory: inventory.clone(),
                    bookings: HashMap::new(),
                })
            }
        }
        Ok(inventory)
    }

    /// Reads the (refreshed) copy.
    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut w = self.world.lock().expect("placement cache");
        f(w.as_mut().expect("refresh() comes first"))
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
                let list = world.bookings.entry(host).or_default();
                let at = list.partition_point(|b| b.start < start);
                list.insert(
                    at,
                    Booking {
                        start,
                        end,
                        lease: lease.into(),
                    },
                );
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

type HostsPart = (HostIndex, Arc<[HostRecord]>);

/// The parts of the copy asked for, read from `conn`.
async fn load_parts(
    conn: &impl ConnectionTrait,
    hosts: bool,
    bookings: bool,
    now: NaiveDateTime,
) -> Result<(Option<HostsPart>, Option<HashMap<i64, Vec<Booking>>>), DbErr> {
    let hosts = if hosts {
        let inventory: Arc<[HostRecord]> = load_inventory(conn).await?.into();
        Some((HostIndex::build(&inventory), inventory))
    } else {
        None
    };
    let bookings = if bookings {
        Some(load_bookings(conn, now - BOOKING_HORIZON).await?)
    } else {
        None
    };
    Ok((hosts, bookings))
}

async fn versions(conn: &impl ConnectionTrait) -> Result<placement_version::Model, DbErr> {
    placement_version::Entity::find_by_id(1)
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("placement_versions row".into()))
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
    for list in out.values_mut() {
        list.sort_unstable_by_key(|b| b.start);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2030, 1, day)
            .and_then(|d| d.and_hms_opt(hour, 0, 0))
            .expect("a date")
    }

    /// Host 1 booked by "a" on day 2, "b" on day 4 and "c" on days 6-8 (loaded out of order).
    fn world() -> World {
        let booking = |start, end, lease: &str| Booking {
            start,
            end,
            lease: lease.into(),
        };
        let mut bookings = HashMap::from([(
            1,
            vec![
                booking(at(6, 0), at(8, 0), "c"),
                booking(at(2, 0), at(3, 0), "a"),
                booking(at(4, 0), at(5, 0), "b"),
            ],
        )]);
        for list in bookings.values_mut() {
            list.sort_unstable_by_key(|b| b.start);
        }
        World {
            hosts_version: 0,
            bookings_version: 0,
            hosts: HostIndex::default(),
            inventory: Arc::from([]),
            bookings,
        }
    }

    #[test]
    fn busy_finds_every_overlap_and_only_overlaps() {
        let w = world();
        // Touching windows do not overlap.
        assert!(!w.busy(1, at(1, 0), at(2, 0), None));
        assert!(!w.busy(1, at(3, 0), at(4, 0), None));
        assert!(!w.busy(1, at(8, 0), at(9, 0), None));
        assert!(w.busy(1, at(2, 12), at(2, 13), None));
        assert!(w.busy(1, at(7, 0), at(9, 0), None));
        assert!(w.busy(1, at(1, 0), at(30, 0), None));
        // Another host, or the only overlapping booking is the lease itself.
        assert!(!w.busy(2, at(1, 0), at(30, 0), None));
        assert!(!w.busy(1, at(4, 0), at(5, 0), Some("b")));
        // The lease's own booking is skipped, the next one still counts.
        assert!(w.busy(1, at(4, 0), at(7, 0), Some("b")));
        assert!(w.busy(1, at(1, 0), at(30, 0), Some("a")));
    }

    #[test]
    fn usage_counts_bookings_not_yet_ended() {
        let w = world();
        assert_eq!(w.usage(1, at(1, 0)), 3);
        assert_eq!(w.usage(1, at(3, 0)), 2);
        assert_eq!(w.usage(1, at(7, 0)), 1);
        assert_eq!(w.usage(1, at(8, 0)), 0);
        assert_eq!(w.usage(2, at(1, 0)), 0);
    }
}
