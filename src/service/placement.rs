//! The database side of host choice: the placement copy ([`PlacementCache`]) and the one door
//! through which writers use it ([`Placement`]).
//!
//! Choosing hosts reads every host's capabilities and every host's bookings; at 10,000 hosts and
//! 100,000 leases, reading them from the database for each request would dominate its cost. So
//! each instance keeps a copy (a `domain::placement::World`) and a pair of version counters in
//! the database (`placement_versions`) says when it is stale: every transaction that changes
//! hosts or bookings bumps one, and a writer that finds a version it did not write reloads that
//! part. The copy is only a guide: before booking, the chosen hosts are checked in the database,
//! inside the same serialized write transaction ([`verify_free`]).
//!
//! A writer never drives the copy by hand: [`PlacementCache::begin`] gives a [`Placement`] for
//! one write transaction, which chooses (refresh, plan, check, reload once if stale), books
//! (bumps the version, applies the change) and commits the transaction; dropped without a
//! successful commit after it booked, it forgets the copy, which can then describe what never
//! was. Readers use [`PlacementCache::read`] and [`PlacementCache::inventory`].

use std::sync::{Arc, Mutex};

use chrono::NaiveDateTime;
use entity::{allocation, host, host_capability, placement_version};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};

use crate::{
    db::WriteTxn,
    domain::{
        DomainError,
        ids::HostMap,
        placement::{
            BOOKING_HORIZON, Booking, BookingChange, BookingRow, CapabilityRow, HostIndex,
            HostNeed, World, attach_capabilities, bookings_by_host, plan_refusal,
        },
    },
};

// Where the service layer and the API name a host record; the type is the domain's.
pub use crate::domain::placement::HostRecord;

/// Every host with its capabilities, in id order.
pub async fn load_inventory(conn: &impl ConnectionTrait) -> Result<Vec<HostRecord>, DbErr> {
    let hosts = host::Entity::find()
        .order_by_asc(host::Column::Id)
        .all(conn)
        .await?;
    let caps = capabilities_of(conn, None).await?;
    Ok(attach_capabilities(hosts, caps))
}

/// The capabilities of `hosts` (of every host when `None`). Only the shown columns: decoding
/// each timestamp costs a date parse, thousands of them in a listing.
pub async fn capabilities_of(
    conn: &impl ConnectionTrait,
    hosts: Option<&[i64]>,
) -> Result<Vec<CapabilityRow>, DbErr> {
    let mut q = host_capability::Entity::find()
        .select_only()
        .column(host_capability::Column::HostId)
        .column(host_capability::Column::Name)
        .column(host_capability::Column::Value);
    if let Some(ids) = hosts {
        q = q.filter(host_capability::Column::HostId.is_in(ids.iter().copied()));
    }
    let rows: Vec<(i64, String, String)> = q.into_tuple().all(conn).await?;
    Ok(rows
        .into_iter()
        .map(|(host_id, name, value)| CapabilityRow {
            host_id,
            name,
            value,
        })
        .collect())
}

/// The copy with the versions of the database it reflects.
#[derive(Debug)]
struct Copy {
    hosts_version: i64,
    bookings_version: i64,
    world: World,
}

impl Copy {
    fn new(versions: &placement_version::Model, hosts: HostsPart, bookings: Bookings) -> Self {
        Self {
            hosts_version: versions.hosts,
            bookings_version: versions.bookings,
            world: World::new(hosts.index, hosts.inventory, bookings),
        }
    }
}

/// Every host's bookings, as the copy keeps them.
type Bookings = HostMap<Vec<Booking>>;

/// Who brings the copy up to date, which decides what counts as stale.
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// A writer holds the write turn: its snapshot is the newest, so a part of any other
    /// version (older, or -1 after a change of the hosts) is reloaded.
    Write,
    /// Readers may run in any order with writers, so a reader only ever moves the copy forward
    /// (versions only grow): an older snapshot never replaces what a writer has just loaded.
    Read,
}

impl Turn {
    /// Whether a part of the copy at version `have` is reloaded for a snapshot at `want`.
    fn stale(self, have: i64, want: i64) -> bool {
        match self {
            Turn::Write => have != want,
            Turn::Read => have < want,
        }
    }
}

/// This instance's copy of the hosts and their bookings.
#[derive(Debug, Default)]
pub struct PlacementCache {
    copy: Mutex<Option<Copy>>,
}

impl PlacementCache {
    /// The copy for one write transaction: choose, book, commit through it.
    pub fn begin(&self) -> Placement<'_> {
        Placement {
            cache: self,
            booked: false,
        }
    }

    /// Brings the copy up to date and runs `f` on it; inside a write transaction (writers are
    /// serialized, so nobody changes hosts or bookings until it commits).
    async fn refreshed<R>(
        &self,
        conn: &impl ConnectionTrait,
        now: NaiveDateTime,
        f: impl FnOnce(&mut World) -> R,
    ) -> Result<R, DbErr> {
        self.up_to_date(conn, now, Turn::Write, f).await
    }

    /// Brings the copy up to `conn`'s snapshot for a reader (plans, availability, calendars,
    /// enforcement's candidates, which never take the write turn) and runs `f` on it. `f` runs
    /// under the copy's lock (writers wait for it): it should copy out what it needs and
    /// compute outside.
    pub async fn read<R>(
        &self,
        conn: &impl ConnectionTrait,
        now: NaiveDateTime,
        f: impl FnOnce(&mut World) -> R,
    ) -> Result<R, DbErr> {
        self.up_to_date(conn, now, Turn::Read, f).await
    }

    /// Loads the parts of the copy that are stale for `conn`'s snapshot, installs them, and
    /// runs `f` on the copy under the same lock (so that no failed commit drops it in between).
    async fn up_to_date<R>(
        &self,
        conn: &impl ConnectionTrait,
        now: NaiveDateTime,
        turn: Turn,
        f: impl FnOnce(&mut World) -> R,
    ) -> Result<R, DbErr> {
        let versions = versions(conn).await?;
        // Twice at most: a writer may drop the copy while a reader loads (a failed commit).
        for _ in 0..2 {
            let (hosts_stale, bookings_stale) = {
                let c = self.copy.lock().expect("placement cache");
                match c.as_ref() {
                    None => (true, true),
                    Some(c) => (
                        turn.stale(c.hosts_version, versions.hosts),
                        turn.stale(c.bookings_version, versions.bookings),
                    ),
                }
            };
            let parts = load_parts(conn, hosts_stale, bookings_stale, now).await?;
            let mut c = self.copy.lock().expect("placement cache");
            let copy = match (c.as_mut(), parts) {
                (Some(copy), parts) => {
                    // Asked again under the lock: another reader may have moved it meanwhile.
                    if let Some(h) = parts.hosts
                        && turn.stale(copy.hosts_version, versions.hosts)
                    {
                        copy.world.set_hosts(h.index, h.inventory);
                        copy.hosts_version = versions.hosts;
                    }
                    if let Some(b) = parts.bookings
                        && turn.stale(copy.bookings_version, versions.bookings)
                    {
                        copy.world.set_bookings(b);
                        copy.bookings_version = versions.bookings;
                    }
                    copy
                }
                (
                    None,
                    Parts {
                        hosts: Some(hosts),
                        bookings: Some(bookings),
                    },
                ) => c.insert(Copy::new(&versions, hosts, bookings)),
                (None, _) => continue,
            };
            return Ok(f(&mut copy.world));
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
            let c = self.copy.lock().expect("placement cache");
            if let Some(copy) = c.as_ref().filter(|c| c.hosts_version == version) {
                return Ok(copy.world.inventory().clone());
            }
        }
        let inventory: Arc<[HostRecord]> = load_inventory(conn).await?.into();
        let index = HostIndex::build(&inventory);
        let mut c = self.copy.lock().expect("placement cache");
        match c.as_mut() {
            Some(copy) if copy.hosts_version < version => {
                copy.world.set_hosts(index, inventory.clone());
                copy.hosts_version = version;
            }
            Some(_) => {}
            // No bookings yet: -1 is never a version, so the first writer loads them.
            None => {
                *c = Some(Copy {
                    hosts_version: version,
                    bookings_version: -1,
                    world: World::new(index, inventory.clone(), HostMap::default()),
                })
            }
        }
        Ok(inventory)
    }

    /// Drops the copy (after a failed commit, or when it proved wrong).
    fn forget(&self) {
        *self.copy.lock().expect("placement cache") = None;
    }
}

/// One write transaction's use of the placement copy: [`Placement::choose`] hosts,
/// [`Placement::book`] what was written, then [`Placement::commit`] the transaction. If it is
/// dropped after booking without a successful commit (an error, a failed commit), the copy is
/// forgotten and reloaded before its next use: it would describe bookings that never were.
#[must_use = "a booking is kept only through Placement::commit"]
pub struct Placement<'c> {
    cache: &'c PlacementCache,
    /// The copy holds a change of this transaction that is not committed yet.
    booked: bool,
}

impl Placement<'_> {
    /// Chooses hosts for `needs` over `[start, end)` (ignoring lease `except`'s bookings) in the
    /// copy, brought up to date, then checks them in the database. If the copy proved stale
    /// (another instance booked a host it did not know of), reloads it and chooses again.
    pub async fn choose(
        &mut self,
        conn: &impl ConnectionTrait,
        now: NaiveDateTime,
        needs: &[HostNeed<'_>],
        (start, end): (NaiveDateTime, NaiveDateTime),
        except: Option<&str>,
    ) -> Result<Vec<Vec<i64>>, DomainError> {
        for attempt in 0..2 {
            let chosen = self
                .cache
                .refreshed(conn, now, |w| w.plan(needs, start, end, except, now))
                .await?
                .map_err(|e| plan_refusal(e, needs, start, end))?;
            let picked: Vec<i64> = needs
                .iter()
                .zip(&chosen)
                .filter(|(n, _)| n.need.replan)
                .flat_map(|(_, hosts)| hosts.iter().copied())
                .collect();
            let clash = verify_free(conn, &picked, start, end, except).await?;
            if clash.is_empty() {
                return Ok(chosen);
            }
            tracing::warn!(
                ?clash,
                attempt,
                "the placement copy was stale; reloading it"
            );
            self.cache.forget();
        }
        Err(DomainError::Internal(
            "the hosts chosen were booked even after reloading the bookings".into(),
        ))
    }

    /// Records a change of the bookings written in this transaction: bumps the version in the
    /// database and applies the change to the copy.
    pub async fn book(
        &mut self,
        conn: &impl ConnectionTrait,
        change: BookingChange,
    ) -> Result<(), DbErr> {
        bump(conn, placement_version::Column::Bookings).await?;
        self.booked = true;
        let mut c = self.cache.copy.lock().expect("placement cache");
        if let Some(copy) = c.as_mut() {
            copy.bookings_version += 1;
            copy.world.apply(change);
        }
        Ok(())
    }

    /// Records a change of the hosts (enrolled, updated, deleted) written in this transaction:
    /// the next writer reloads them.
    pub async fn hosts_changed(&mut self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        bump(conn, placement_version::Column::Hosts).await?;
        if let Some(copy) = self.cache.copy.lock().expect("placement cache").as_mut() {
            copy.hosts_version = -1;
        }
        Ok(())
    }

    /// Commits the transaction; the copy keeps this transaction's bookings only if that
    /// succeeds.
    pub async fn commit(mut self, txn: WriteTxn<'_>) -> Result<(), DbErr> {
        txn.commit().await?;
        self.booked = false;
        Ok(())
    }
}

impl Drop for Placement<'_> {
    fn drop(&mut self) {
        if self.booked {
            self.cache.forget();
        }
    }
}

/// The hosts part of the copy.
struct HostsPart {
    index: HostIndex,
    inventory: Arc<[HostRecord]>,
}

/// The parts of the copy read from the database; `None` for a part not asked for.
struct Parts {
    hosts: Option<HostsPart>,
    bookings: Option<Bookings>,
}

/// The parts of the copy asked for, read from `conn`.
async fn load_parts(
    conn: &impl ConnectionTrait,
    hosts: bool,
    bookings: bool,
    now: NaiveDateTime,
) -> Result<Parts, DbErr> {
    let hosts = if hosts {
        let inventory: Arc<[HostRecord]> = load_inventory(conn).await?.into();
        Some(HostsPart {
            index: HostIndex::build(&inventory),
            inventory,
        })
    } else {
        None
    };
    let bookings = if bookings {
        Some(load_bookings(conn, now - BOOKING_HORIZON).await?)
    } else {
        None
    };
    Ok(Parts { hosts, bookings })
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
) -> Result<Bookings, DbErr> {
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
    Ok(bookings_by_host(
        rows.into_iter()
            .map(|(host, start, end, lease)| BookingRow {
                host,
                start,
                end,
                lease,
            })
            .collect(),
    ))
}

/// Of `hosts`, those booked in the database by a lease other than `except_lease` for part of
/// `[start, end)`: the check that makes a booking safe whatever the copy said.
async fn verify_free(
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
