//! The placement index: the hosts as filters see them, every host's bookings, and the questions
//! host choice asks of them (which hosts match, which are busy in a window, how used each is).
//!
//! Pure and in memory: the service layer (`service/placement.rs`) keeps one [`World`] per
//! instance as a copy of the database, loads it and says when it is stale; everything here only
//! reads and changes that value. The choice itself is [`crate::domain::allocation::plan`].

use std::{collections::HashMap, sync::Arc};

use super::ids::HostMap;

use chrono::{NaiveDateTime, TimeDelta};
use entity::host;

use super::{
    DomainError,
    allocation::{Need, PlanError, plan},
    dates::format_lease_date,
    filter::{AttrValue, Filter},
    lease::ReservationRequest,
};

/// A host with its capabilities, as filters (and host listings) see it.
#[derive(Debug, Clone)]
pub struct HostRecord {
    pub host: host::Model,
    /// Each capability, sorted by name.
    pub capabilities: Vec<Capability>,
}

/// One extra capability of a host (`gpu = "true"`), as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Capability {
    pub name: String,
    pub value: String,
}

/// One capability row of one host, as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityRow {
    pub host_id: i64,
    pub name: String,
    pub value: String,
}

/// Joins hosts (in id order) with their capabilities.
pub fn attach_capabilities(hosts: Vec<host::Model>, caps: Vec<CapabilityRow>) -> Vec<HostRecord> {
    let mut by_host: HashMap<i64, Vec<Capability>> = HashMap::new();
    for c in caps {
        by_host.entry(c.host_id).or_default().push(Capability {
            name: c.name,
            value: c.value,
        });
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
                .chain(
                    r.capabilities
                        .iter()
                        .map(|c| (c.name.clone(), c.value.clone())),
                )
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

/// Bookings that ended this long ago are not kept: no new window can reach back that far (a lease
/// starts at most a minute in the past, and hosts join a running lease from now on).
pub const BOOKING_HORIZON: TimeDelta = TimeDelta::hours(1);

/// One host booked by one lease over `[start, end)`.
#[derive(Debug, Clone)]
pub struct Booking {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub lease: Arc<str>,
}

/// One allocation row: `host` booked by `lease` over `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRow {
    pub host: i64,
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub lease: String,
}

/// The bookings lease `lease` held on `hosts` before a change.
#[derive(Debug)]
pub struct LeaseBookings {
    pub lease: String,
    pub hosts: Vec<i64>,
}

/// Every host's bookings, each list sorted by start (the form [`World`] keeps them in). The
/// lease ids are shared between the bookings of one lease.
pub fn bookings_by_host(rows: Vec<BookingRow>) -> HostMap<Vec<Booking>> {
    let mut leases: HashMap<String, Arc<str>> = HashMap::new();
    let mut out: HostMap<Vec<Booking>> = HostMap::default();
    for BookingRow {
        host,
        start,
        end,
        lease,
    } in rows
    {
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
    out
}

/// What a write transaction changed in the bookings, to apply to the copy.
#[derive(Debug, Default)]
pub struct BookingChange {
    /// Leases whose bookings all go away (deleted, or replaced by `add`), with the hosts they
    /// held (so that only those hosts' lists are touched).
    pub remove: Vec<LeaseBookings>,
    /// New bookings.
    pub add: Vec<BookingRow>,
}

/// One reservation's filter and what host choice needs for it.
#[derive(Debug, Clone)]
pub struct HostNeed<'a> {
    pub filter: &'a Filter,
    /// Its `matching` is filled from the index when the hosts are chosen.
    pub need: Need<'a>,
}

/// What host choice needs for the reservations of a lease being created.
pub fn create_needs(reservations: &[ReservationRequest]) -> Vec<HostNeed<'_>> {
    reservations
        .iter()
        .map(|r| HostNeed {
            filter: &r.filter,
            need: Need::new(r.min as usize, r.max as usize),
        })
        .collect()
}

/// The hosts and their bookings.
///
/// A host's bookings never overlap one another (each was checked against the others in the
/// database before it was written), so each host's list, kept sorted by start, is sorted by end
/// too, and both questions a create asks of every matching host are binary searches: scanning
/// the lists made a create's cost grow with the number of leases.
#[derive(Debug, Default)]
pub struct World {
    pub hosts: HostIndex,
    /// The records `hosts` was built from, in id order: what host listings show.
    inventory: Arc<[HostRecord]>,
    bookings: HostMap<Vec<Booking>>,
}

impl World {
    pub fn new(
        hosts: HostIndex,
        inventory: Arc<[HostRecord]>,
        bookings: HostMap<Vec<Booking>>,
    ) -> Self {
        Self {
            hosts,
            inventory,
            bookings,
        }
    }

    /// Replaces the hosts (their index and the records it was built from).
    pub fn set_hosts(&mut self, hosts: HostIndex, inventory: Arc<[HostRecord]>) {
        self.hosts = hosts;
        self.inventory = inventory;
    }

    /// Replaces every booking (from [`bookings_by_host`]).
    pub fn set_bookings(&mut self, bookings: HostMap<Vec<Booking>>) {
        self.bookings = bookings;
    }

    /// Every host with its capabilities, in id order.
    pub fn inventory(&self) -> &Arc<[HostRecord]> {
        &self.inventory
    }

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

    /// Applies a change of the bookings (the database holds it, in the transaction that made it).
    pub fn apply(&mut self, change: BookingChange) {
        for gone in &change.remove {
            for host in &gone.hosts {
                if let Some(list) = self.bookings.get_mut(host) {
                    list.retain(|b| *b.lease != *gone.lease);
                }
            }
        }
        for BookingRow {
            host,
            start,
            end,
            lease,
        } in change.add
        {
            let list = self.bookings.entry(host).or_default();
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

    /// Chooses hosts for `needs` over `[start, end)`, ignoring the bookings of lease `except`:
    /// what create and update decide, and what a plan reports. Each need's `matching` is the
    /// hosts its filter matches in the index.
    pub fn plan(
        &mut self,
        needs: &[HostNeed<'_>],
        start: NaiveDateTime,
        end: NaiveDateTime,
        except: Option<&str>,
        now: NaiveDateTime,
    ) -> Result<Vec<Vec<i64>>, PlanError> {
        let matching: Vec<Arc<[i64]>> = needs
            .iter()
            .map(|n| {
                if n.need.replan {
                    self.hosts.matching(n.filter)
                } else {
                    Arc::from([])
                }
            })
            .collect();
        let w = &*self;
        let needs: Vec<Need<'_>> = needs
            .iter()
            .zip(&matching)
            .map(|(n, m)| Need {
                matching: m,
                ..n.need.clone()
            })
            .collect();
        plan(
            |h| w.busy(h, start, end, except),
            |h| w.usage(h, now),
            &needs,
        )
    }
}

/// The refusal a failed choice of hosts for `needs` over `[start, end)` becomes.
pub fn plan_refusal(
    e: PlanError,
    needs: &[HostNeed<'_>],
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> DomainError {
    match e {
        PlanError::Shortage { index, shortage } => DomainError::NotEnoughHostsAvailable(format!(
            "reservation {index} asks for {} to {} hosts; {} match its filters and {} of them \
             are free from {} to {}",
            needs[index].need.min,
            needs[index].need.max,
            shortage.matching,
            shortage.free,
            format_lease_date(start),
            format_lease_date(end)
        )),
        // Upstream answers this case (an active reservation would lose a host) with its
        // NotEnoughHostsAvailable text; the name and status stay ours.
        PlanError::HeldHostLost { index, host, why } => DomainError::CantUpdateParameter(format!(
            "Not enough hosts available: reservation {index} is active and its host {host} \
             {why}; the update is refused"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2030, 1, day)
            .and_then(|d| d.and_hms_opt(hour, 0, 0))
            .expect("a date")
    }

    fn row(host: i64, start: NaiveDateTime, end: NaiveDateTime, lease: &str) -> BookingRow {
        BookingRow {
            host,
            start,
            end,
            lease: lease.into(),
        }
    }

    /// Host 1 booked by "a" on day 2, "b" on day 4 and "c" on days 6-8 (loaded out of order).
    fn world() -> World {
        let bookings = bookings_by_host(vec![
            row(1, at(6, 0), at(8, 0), "c"),
            row(1, at(2, 0), at(3, 0), "a"),
            row(1, at(4, 0), at(5, 0), "b"),
        ]);
        World::new(HostIndex::default(), Arc::from([]), bookings)
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

    #[test]
    fn a_change_replaces_a_leases_bookings_and_keeps_the_lists_sorted() {
        let mut w = world();
        w.apply(BookingChange {
            remove: vec![LeaseBookings {
                lease: "b".into(),
                hosts: vec![1],
            }],
            add: vec![
                row(1, at(3, 0), at(6, 0), "b"),
                row(2, at(1, 0), at(2, 0), "d"),
            ],
        });
        let starts: Vec<NaiveDateTime> = w.bookings_of(1).iter().map(|b| b.start).collect();
        assert_eq!(starts, [at(2, 0), at(3, 0), at(6, 0)]);
        assert!(!w.busy(1, at(5, 12), at(5, 13), Some("b")));
        assert!(w.busy(1, at(5, 12), at(5, 13), None));
        assert_eq!(w.usage(2, at(1, 0)), 1);
    }
}
