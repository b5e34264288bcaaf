//! Host operations: enrolment, capabilities, deletion, allocations and resource properties.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Range,
    sync::Arc,
};

use chrono::NaiveDateTime;
use entity::{allocation, host, host_capability, reservation, resource_property};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    JoinType, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::{
    Services,
    etag::check_if_match,
    facts::HostFacts,
    idempotency::{Claim, Created, Once},
    placement::{self, HostRecord},
};
use crate::auth::Caller;
use crate::domain::{
    DomainError,
    dates::{format_lease_date, truncate_to_second},
    host as rules,
    input::{self, Received},
    lease::{PHYSICAL_HOST, parse_filters},
    page::{Page, PageRequest, marker_not_found},
    placement::{Capability, attach_capabilities},
    precondition::Precondition,
};
use crate::jobs::driver::HostRef;

/// One host's bookings, as `GET /v1/os-hosts/allocations` shows them.
#[derive(Debug, Clone)]
pub struct HostAllocations {
    pub host_id: i64,
    pub reservations: Vec<allocation::Model>,
}

/// Which allocations to show.
#[derive(Debug, Clone, Default)]
pub struct AllocationQuery {
    pub lease_id: Option<String>,
    pub reservation_id: Option<String>,
}

/// A resource property with, for the detailed listing, the values hosts have for it.
#[derive(Debug, Clone)]
pub struct PropertyInfo {
    pub name: String,
    pub private: bool,
    pub values: Vec<String>,
}

/// A page of the host list: a window on the shared inventory, so that no host is copied (a page
/// of 1,000 hosts used to clone ~30,000 strings only to serialize and drop them).
pub struct HostPage {
    pub inventory: Arc<[HostRecord]>,
    pub range: Range<usize>,
    pub next_marker: Option<String>,
}

impl HostPage {
    pub fn hosts(&self) -> &[HostRecord] {
        &self.inventory[self.range.clone()]
    }
}

impl Services {
    pub async fn list_hosts(
        &self,
        caller: &Caller,
        page: &PageRequest,
    ) -> Result<HostPage, DomainError> {
        self.authorize("blazar:oshosts:get", caller)?;
        let txn = self.db.read().await?;
        let inventory = self.placement.inventory(&txn).await?;
        txn.commit().await?;
        let start = match &page.marker {
            None => 0,
            Some(marker) => {
                let id = parse_host_id(marker).map_err(|_| marker_not_found(marker))?;
                inventory
                    .binary_search_by_key(&id, |r| r.host.id)
                    .map_err(|_| marker_not_found(marker))?
                    + 1
            }
        };
        let end = (start + page.limit).min(inventory.len());
        let next_marker = (end < inventory.len()).then(|| inventory[end - 1].host.id.to_string());
        Ok(HostPage {
            inventory,
            range: start..end,
            next_marker,
        })
    }

    pub async fn get_host(&self, caller: &Caller, id: &str) -> Result<HostRecord, DomainError> {
        self.authorize("blazar:oshosts:get", caller)?;
        let txn = self.db.read().await?;
        let host = load_host(&txn, id).await?;
        txn.commit().await?;
        Ok(host)
    }

    /// Enrols a host: its facts (from Nova, or the body), then the driver makes it Blazar's
    /// (Nova: the freepool), then the row is written; if the write fails, the driver's change is
    /// undone. It runs in a task of its own, so that a client hanging up does not stop it
    /// half-way.
    ///
    /// With `once` (an `Idempotency-Key`), a retry of an earlier enrolment gets that
    /// enrolment's response instead (see service::idempotency).
    pub async fn create_host(
        self: &Arc<Self>,
        caller: &Caller,
        body: &Received<rules::HostCreate>,
        once: Option<Once<HostRecord>>,
    ) -> Result<Created<HostRecord>, DomainError> {
        self.authorize("blazar:oshosts:post", caller)?;
        let claim = once.map(|o| Claim::new("createHost", caller, &body.object, o));
        let req = rules::check_create(body.parse()?)?;
        let svc = self.clone();
        tokio::spawn(async move { svc.enrol_host(req, claim).await })
            .await
            .map_err(|e| DomainError::Internal(format!("host enrolment task: {e}")))?
    }

    async fn enrol_host(
        &self,
        req: rules::HostRequest,
        claim: Option<Claim<HostRecord>>,
    ) -> Result<Created<HostRecord>, DomainError> {
        let claim = claim.as_ref();
        // A retry is answered before Nova is asked anything.
        if let Some(replay) = self.replay_early(claim, self.clock.now()).await? {
            return Ok(Created::Replayed(replay));
        }
        let facts = self.facts.resolve(&req.name, &req.facts).await?;
        // A host enrolled already is refused before Nova is touched: undoing a repeated
        // enrolment must not take the first one's host out of the freepool. The key is looked
        // up again in the same snapshot: a concurrent request with it may have enrolled the
        // host meanwhile, and this one is then its retry, not a conflict.
        let txn = self.db.read().await?;
        if let Some(replay) = self.replay(&txn, claim, self.clock.now()).await? {
            return Ok(Created::Replayed(replay));
        }
        let taken = find_by_name(&txn, &facts.hypervisor_hostname).await?;
        txn.commit().await?;
        if let Some(existing) = taken {
            return Err(already_enrolled(&existing));
        }
        let href = HostRef {
            id: 0,
            name: facts.hypervisor_hostname.clone(),
            service_name: facts.service_name.clone(),
        };
        let joined = self
            .driver
            .enrol(&href)
            .await
            .map_err(super::driver_failure)?;
        match self.insert_host(&req, &facts, claim).await {
            Ok(created) => Ok(created),
            Err(e) => {
                if joined
                    && !matches!(e, DomainError::HostAlreadyExists(_))
                    && let Err(undo) = self.driver.withdraw(&href).await
                {
                    tracing::error!(host = %href.name, error = %undo, "cannot undo a failed enrolment in Nova; reconciliation will");
                    self.repair.notify_one();
                }
                Err(e)
            }
        }
    }

    async fn insert_host(
        &self,
        req: &rules::HostRequest,
        facts: &HostFacts,
        claim: Option<&Claim<HostRecord>>,
    ) -> Result<Created<HostRecord>, DomainError> {
        let now = self.clock.now();
        let stamp = truncate_to_second(now);
        let txn = self.db.write().await?;
        // In the write turn: the authoritative look-up, after any concurrent create committed.
        if let Some(replay) = self.replay(&*txn, claim, now).await? {
            return Ok(Created::Replayed(replay));
        }
        if let Some(existing) = find_by_name(&*txn, &facts.hypervisor_hostname).await? {
            return Err(already_enrolled(&existing));
        }
        let mut model = host::ActiveModel {
            hypervisor_hostname: Set(facts.hypervisor_hostname.clone()),
            status: Set(None),
            reservable: Set(true),
            trust_id: Set(None),
            created_at: Set(stamp),
            updated_at: Set(None),
            ..Default::default()
        };
        set_facts(&mut model, facts);
        let host = model.insert(&*txn).await?;
        let caps: Vec<host_capability::ActiveModel> = req
            .capabilities
            .iter()
            .map(|(k, v)| new_capability(host.id, k, v, stamp))
            .collect();
        if !caps.is_empty() {
            host_capability::Entity::insert_many(caps)
                .exec(&*txn)
                .await?;
        }
        ensure_properties(&*txn, req.capabilities.keys(), stamp).await?;
        let mut placement = self.placement.begin();
        placement.hosts_changed(&*txn).await?;
        let record = HostRecord {
            host,
            capabilities: req
                .capabilities
                .iter()
                .map(|(name, value)| Capability {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        self.remember(&*txn, claim, &record.host.id.to_string(), &record, now)
            .await?;
        placement.commit(txn).await?;
        tracing::info!(host_id = record.host.id, name = %record.host.hypervisor_hostname, "host enrolled");
        Ok(Created::New(record))
    }

    /// Updates a host; with `if_match`, only if it is still as the client saw it (checked in
    /// the write transaction).
    pub async fn update_host(
        &self,
        caller: &Caller,
        id: &str,
        body: &Received<rules::HostUpdate>,
        if_match: Option<&Precondition>,
    ) -> Result<HostRecord, DomainError> {
        self.authorize("blazar:oshosts:put", caller)?;
        let changes = rules::check_update(body.parse()?)?;
        let now = self.clock.now();
        let stamp = truncate_to_second(now);

        let txn = self.db.write().await?;
        let record = load_host(&*txn, id).await?;
        check_if_match(if_match, &host_what(&record), &record.etag())?;
        let host_id = record.host.id;
        let current_facts = facts_of(&record.host);
        let new_facts = if changes.facts.is_empty() {
            current_facts.clone()
        } else {
            self.facts.update(&current_facts, &changes.facts).await?
        };
        let current: BTreeMap<&str, &str> = record
            .capabilities
            .iter()
            .map(|c| (c.name.as_str(), c.value.as_str()))
            .collect();
        let mut changed: BTreeSet<String> = changed_facts(&current_facts, &new_facts);
        for (k, v) in &changes.capabilities {
            if current.get(k.as_str()).copied() != v.as_deref()
                && (v.is_some() || current.contains_key(k.as_str()))
            {
                changed.insert(k.clone());
            }
        }
        if changed.is_empty() {
            txn.commit().await?;
            return Ok(record);
        }
        check_keys_not_in_use(&*txn, host_id, &changed, now).await?;

        let mut model = record.host.clone().into_active_model();
        set_facts(&mut model, &new_facts);
        model.updated_at = Set(Some(stamp));
        model.update(&*txn).await?;
        for (k, v) in &changes.capabilities {
            if !changed.contains(k) {
                continue;
            }
            let existing = host_capability::Entity::find()
                .filter(host_capability::Column::HostId.eq(host_id))
                .filter(host_capability::Column::Name.eq(k))
                .one(&*txn)
                .await?;
            match (existing, v) {
                (Some(row), Some(value)) => {
                    let mut m = row.into_active_model();
                    m.value = Set(value.clone());
                    m.updated_at = Set(Some(stamp));
                    m.update(&*txn).await?;
                }
                (Some(row), None) => {
                    host_capability::Entity::delete_by_id(row.id)
                        .exec(&*txn)
                        .await?;
                }
                (None, Some(value)) => {
                    new_capability(host_id, k, value, stamp)
                        .insert(&*txn)
                        .await?;
                }
                (None, None) => {}
            }
        }
        let added: Vec<&String> = changes
            .capabilities
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k)
            .collect();
        ensure_properties(&*txn, added.into_iter(), stamp).await?;
        let mut placement = self.placement.begin();
        placement.hosts_changed(&*txn).await?;
        let updated = load_host(&*txn, id).await?;
        placement.commit(txn).await?;
        Ok(updated)
    }

    /// Deletes a host that no lease holds: the driver gives it back first (Nova: it leaves the
    /// freepool; refused while servers run on it), then the row goes; if that fails, the host
    /// rejoins.
    ///
    /// With `if_match`, only if the host is still as the client saw it: checked before Nova is
    /// asked (so a stale request touches nothing) and again in the transaction that deletes.
    pub async fn delete_host(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        if_match: Option<Precondition>,
    ) -> Result<(), DomainError> {
        self.authorize("blazar:oshosts:delete", caller)?;
        let (svc, id) = (self.clone(), id.to_string());
        tokio::spawn(async move { svc.withdraw_host(&id, if_match.as_ref()).await })
            .await
            .map_err(|e| DomainError::Internal(format!("host deletion task: {e}")))?
    }

    async fn withdraw_host(
        &self,
        id: &str,
        if_match: Option<&Precondition>,
    ) -> Result<(), DomainError> {
        let txn = self.db.read().await?;
        let record = load_host(&txn, id).await?;
        check_if_match(if_match, &host_what(&record), &record.etag())?;
        check_unreserved(&txn, &record.host, self.clock.now()).await?;
        txn.commit().await?;
        let href = HostRef {
            id: record.host.id,
            name: record.host.hypervisor_hostname.clone(),
            service_name: record.host.service_name.clone(),
        };
        let left = self
            .driver
            .withdraw(&href)
            .await
            .map_err(super::driver_failure)?;
        let deleted = async {
            let txn = self.db.write().await?;
            let record = load_host(&*txn, id).await?;
            check_if_match(if_match, &host_what(&record), &record.etag())?;
            // A lease may have booked the host while Nova was asked.
            check_unreserved(&*txn, &record.host, self.clock.now()).await?;
            host::Entity::delete_by_id(record.host.id)
                .exec(&*txn)
                .await?;
            let mut placement = self.placement.begin();
            placement.hosts_changed(&*txn).await?;
            placement.commit(txn).await?;
            Ok::<_, DomainError>(())
        }
        .await;
        if let Err(e) = deleted {
            if left && let Err(undo) = self.driver.enrol(&href).await {
                tracing::error!(host = %href.name, error = %undo, "cannot undo a failed deletion in Nova; reconciliation will");
                self.repair.notify_one();
            }
            return Err(e);
        }
        tracing::info!(host_id = href.id, name = %href.name, "host deleted");
        Ok(())
    }

    pub async fn list_allocations(
        &self,
        caller: &Caller,
        query: &AllocationQuery,
        page: &PageRequest,
    ) -> Result<Page<HostAllocations>, DomainError> {
        self.authorize("blazar:oshosts:get_allocations", caller)?;
        let txn = self.db.read().await?;
        let conn = &txn;
        let hosts = host_page(conn, page).await?;
        let ids: Vec<i64> = hosts.items.iter().map(|h| h.id).collect();
        let mut by_host = allocations_by_host(conn, &ids, query, self.clock.now()).await?;
        txn.commit().await?;
        Ok(Page {
            items: ids
                .into_iter()
                .map(|host_id| HostAllocations {
                    host_id,
                    reservations: by_host.remove(&host_id).unwrap_or_default(),
                })
                .collect(),
            next_marker: hosts.next_marker,
        })
    }

    pub async fn get_allocation(
        &self,
        caller: &Caller,
        id: &str,
        query: &AllocationQuery,
    ) -> Result<HostAllocations, DomainError> {
        self.authorize("blazar:oshosts:get", caller)?;
        self.authorize("blazar:oshosts:get_allocations", caller)?;
        let txn = self.db.read().await?;
        let conn = &txn;
        let host_id = parse_host_id(id)?;
        host::Entity::find_by_id(host_id)
            .one(conn)
            .await?
            .ok_or_else(|| host_not_found(id))?;
        let mut by_host = allocations_by_host(conn, &[host_id], query, self.clock.now()).await?;
        txn.commit().await?;
        Ok(HostAllocations {
            host_id,
            reservations: by_host.remove(&host_id).unwrap_or_default(),
        })
    }

    pub async fn list_properties(
        &self,
        caller: &Caller,
        detail: bool,
        all: bool,
    ) -> Result<Vec<PropertyInfo>, DomainError> {
        self.authorize("blazar:oshosts:get_resource_properties", caller)?;
        // Private properties are listed only to admins, and only when asked for.
        let include_private = all && self.is_admin(caller);
        let txn = self.db.read().await?;
        let conn = &txn;
        let mut q = resource_property::Entity::find()
            .filter(resource_property::Column::ResourceType.eq(PHYSICAL_HOST))
            .order_by_asc(resource_property::Column::PropertyName);
        if !include_private {
            q = q.filter(resource_property::Column::Private.eq(false));
        }
        let props = q.all(conn).await?;
        // As upstream, a property shows only while some host has it.
        let rows: Vec<(String, String)> = host_capability::Entity::find()
            .select_only()
            .column(host_capability::Column::Name)
            .column(host_capability::Column::Value)
            .distinct()
            .into_tuple()
            .all(conn)
            .await?;
        let mut values: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (k, v) in rows {
            values.entry(k).or_default().insert(v);
        }
        let props: Vec<_> = props
            .into_iter()
            .filter(|p| values.contains_key(&p.property_name))
            .collect();
        txn.commit().await?;
        Ok(props
            .into_iter()
            .map(|p| PropertyInfo {
                values: if detail {
                    values
                        .remove(&p.property_name)
                        .map(|s| s.into_iter().collect())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
                name: p.property_name,
                private: p.private,
            })
            .collect())
    }

    pub async fn update_property(
        &self,
        caller: &Caller,
        name: &str,
        body: &Received<rules::PropertyUpdate>,
    ) -> Result<resource_property::Model, DomainError> {
        self.authorize("blazar:oshosts:update_resource_properties", caller)?;
        let private = body.parse()?.private.0;
        let stamp = truncate_to_second(self.clock.now());
        let txn = self.db.write().await?;
        let prop = resource_property::Entity::find()
            .filter(resource_property::Column::ResourceType.eq(PHYSICAL_HOST))
            .filter(resource_property::Column::PropertyName.eq(name))
            .one(&*txn)
            .await?
            .ok_or_else(|| DomainError::PropertyNotFound(input::echo(name, 64)))?;
        let mut m = prop.into_active_model();
        m.private = Set(private);
        m.updated_at = Set(Some(stamp));
        let updated = m.update(&*txn).await?;
        txn.commit().await?;
        Ok(updated)
    }
}

async fn find_by_name(
    conn: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<host::Model>, DomainError> {
    Ok(host::Entity::find()
        .filter(host::Column::HypervisorHostname.eq(name))
        .one(conn)
        .await?)
}

/// Upstream meets a second enrolment at Placement, whose provider `blazar_<name>` exists: its
/// text (trailing space included) comes first.
fn already_enrolled(existing: &host::Model) -> DomainError {
    let name = input::echo(&existing.hypervisor_hostname, 64);
    DomainError::HostAlreadyExists(format!(
        "Conflict on creating resource provider blazar_{name} : host {name} is already enrolled \
         (id {})",
        existing.id
    ))
}

/// Refuses (409) to delete a host that a current or future lease holds.
async fn check_unreserved(
    conn: &impl ConnectionTrait,
    host: &host::Model,
    now: NaiveDateTime,
) -> Result<(), DomainError> {
    let booked = allocation::Entity::find()
        .filter(allocation::Column::HostId.eq(host.id))
        .filter(allocation::Column::EndDate.gt(now))
        .order_by_asc(allocation::Column::StartDate)
        .all(conn)
        .await?;
    if booked.is_empty() {
        return Ok(());
    }
    let leases: BTreeSet<&str> = booked.iter().map(|a| a.lease_id.as_str()).collect();
    let until = booked.iter().map(|a| a.end_date).max().unwrap_or(now);
    Err(DomainError::CantDeleteHost(format!(
        "Can't delete host {}. The host is reserved. It is held by lease(s) {} until {}.",
        host.id,
        leases.into_iter().collect::<Vec<_>>().join(", "),
        format_lease_date(until)
    )))
}

/// The host as a 412's message names it.
fn host_what(r: &HostRecord) -> String {
    format!("Host {}", r.host.id)
}

fn host_not_found(id: &str) -> DomainError {
    DomainError::HostNotFound(id.to_string())
}

/// One page of hosts in id order; the marker must name a host.
async fn host_page(
    conn: &impl ConnectionTrait,
    page: &PageRequest,
) -> Result<Page<host::Model>, DomainError> {
    let mut q = host::Entity::find().order_by_asc(host::Column::Id);
    if let Some(marker) = &page.marker {
        let id = parse_host_id(marker).map_err(|_| marker_not_found(marker))?;
        host::Entity::find_by_id(id)
            .one(conn)
            .await?
            .ok_or_else(|| marker_not_found(marker))?;
        q = q.filter(host::Column::Id.gt(id));
    }
    let hosts = q.limit(page.limit as u64 + 1).all(conn).await?;
    Ok(Page::from_overfetch(hosts, page.limit, |h| {
        h.id.to_string()
    }))
}

/// Host ids are integers; anything else names no host.
fn parse_host_id(id: &str) -> Result<i64, DomainError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| host_not_found(id))
}

async fn load_host(conn: &impl ConnectionTrait, id: &str) -> Result<HostRecord, DomainError> {
    let host_id = parse_host_id(id)?;
    let host = host::Entity::find_by_id(host_id)
        .one(conn)
        .await?
        .ok_or_else(|| host_not_found(id))?;
    let caps = placement::capabilities_of(conn, Some(&[host_id])).await?;
    Ok(attach_capabilities(vec![host], caps).remove(0))
}

fn facts_of(h: &host::Model) -> HostFacts {
    HostFacts {
        hypervisor_hostname: h.hypervisor_hostname.clone(),
        hypervisor_type: h.hypervisor_type.clone(),
        hypervisor_version: h.hypervisor_version,
        vcpus: h.vcpus,
        memory_mb: h.memory_mb,
        local_gb: h.local_gb,
        cpu_info: h.cpu_info.clone(),
        service_name: h.service_name.clone(),
        availability_zone: h.availability_zone.clone(),
    }
}

fn set_facts(m: &mut host::ActiveModel, f: &HostFacts) {
    m.hypervisor_type = Set(f.hypervisor_type.clone());
    m.hypervisor_version = Set(f.hypervisor_version);
    m.vcpus = Set(f.vcpus);
    m.memory_mb = Set(f.memory_mb);
    m.local_gb = Set(f.local_gb);
    m.cpu_info = Set(f.cpu_info.clone());
    m.service_name = Set(f.service_name.clone());
    m.availability_zone = Set(f.availability_zone.clone());
}

/// Names of the facts that differ.
fn changed_facts(a: &HostFacts, b: &HostFacts) -> BTreeSet<String> {
    let pairs: [(&str, bool); 8] = [
        ("hypervisor_type", a.hypervisor_type != b.hypervisor_type),
        (
            "hypervisor_version",
            a.hypervisor_version != b.hypervisor_version,
        ),
        ("vcpus", a.vcpus != b.vcpus),
        ("memory_mb", a.memory_mb != b.memory_mb),
        ("local_gb", a.local_gb != b.local_gb),
        ("cpu_info", a.cpu_info != b.cpu_info),
        ("service_name", a.service_name != b.service_name),
        (
            "availability_zone",
            a.availability_zone != b.availability_zone,
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(k, _)| k.to_string())
        .collect()
}

/// Refuses to change keys that a current or future reservation holding this host filters on:
/// the host was chosen because of those values.
async fn check_keys_not_in_use(
    conn: &impl ConnectionTrait,
    host_id: i64,
    changed: &BTreeSet<String>,
    now: NaiveDateTime,
) -> Result<(), DomainError> {
    let holders: Vec<reservation::Model> = reservation::Entity::find()
        .join(
            JoinType::InnerJoin,
            reservation::Entity::belongs_to(allocation::Entity)
                .from(reservation::Column::Id)
                .to(allocation::Column::ReservationId)
                .into(),
        )
        .filter(allocation::Column::HostId.eq(host_id))
        .filter(allocation::Column::EndDate.gt(now))
        .distinct()
        .all(conn)
        .await?;
    let mut conflicts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &holders {
        let Ok(filter) = parse_filters(0, &r.hypervisor_properties, &r.resource_properties) else {
            continue;
        };
        for key in filter.keys() {
            if changed.contains(key) {
                conflicts
                    .entry(key.to_string())
                    .or_default()
                    .insert(r.lease_id.clone());
            }
        }
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    let detail: Vec<String> = conflicts
        .iter()
        .map(|(k, leases)| {
            format!(
                "{k} (used by lease {})",
                leases.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    // Upstream's text prints the keys as a Python list.
    let keys: Vec<String> = conflicts.keys().map(|k| input::py_str(k, 64)).collect();
    Err(DomainError::CapabilityInUse(format!(
        "Can't add extracapabilities [{}] to Host {host_id}: {} filter on them and hold this \
         host; nothing was changed",
        keys.join(", "),
        detail.join("; ")
    )))
}

fn new_capability(
    host_id: i64,
    name: &str,
    value: &str,
    stamp: NaiveDateTime,
) -> host_capability::ActiveModel {
    host_capability::ActiveModel {
        host_id: Set(host_id),
        name: Set(name.to_string()),
        value: Set(value.to_string()),
        created_at: Set(stamp),
        updated_at: Set(None),
        ..Default::default()
    }
}

/// Adds a resource property row for each capability name not yet in the catalogue.
async fn ensure_properties<'a>(
    conn: &impl ConnectionTrait,
    names: impl Iterator<Item = &'a String>,
    stamp: NaiveDateTime,
) -> Result<(), sea_orm::DbErr> {
    let names: BTreeSet<&String> = names.collect();
    if names.is_empty() {
        return Ok(());
    }
    let known: BTreeSet<String> = resource_property::Entity::find()
        .select_only()
        .column(resource_property::Column::PropertyName)
        .filter(resource_property::Column::ResourceType.eq(PHYSICAL_HOST))
        .filter(resource_property::Column::PropertyName.is_in(names.iter().map(|s| s.as_str())))
        .into_tuple()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    let new: Vec<resource_property::ActiveModel> = names
        .into_iter()
        .filter(|n| !known.contains(n.as_str()))
        .map(|n| resource_property::ActiveModel {
            id: Set(Uuid::new_v4().to_string()),
            resource_type: Set(PHYSICAL_HOST.into()),
            property_name: Set(n.clone()),
            private: Set(false),
            created_at: Set(stamp),
            updated_at: Set(None),
        })
        .collect();
    if !new.is_empty() {
        resource_property::Entity::insert_many(new)
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// Allocations per host: those of `query`'s lease or reservation when given, else those of leases
/// that have not ended.
async fn allocations_by_host(
    conn: &impl ConnectionTrait,
    hosts: &[i64],
    query: &AllocationQuery,
    now: NaiveDateTime,
) -> Result<HashMap<i64, Vec<allocation::Model>>, DomainError> {
    let mut q = allocation::Entity::find()
        .filter(allocation::Column::HostId.is_in(hosts.iter().copied()))
        .order_by_asc(allocation::Column::HostId)
        .order_by_asc(allocation::Column::StartDate);
    match (&query.lease_id, &query.reservation_id) {
        (None, None) => q = q.filter(allocation::Column::EndDate.gte(now)),
        (lease_id, reservation_id) => {
            if let Some(l) = lease_id {
                q = q.filter(allocation::Column::LeaseId.eq(l));
            }
            if let Some(r) = reservation_id {
                q = q.filter(allocation::Column::ReservationId.eq(r));
            }
        }
    }
    let mut out: HashMap<i64, Vec<allocation::Model>> = HashMap::new();
    for a in q.all(conn).await? {
        out.entry(a.host_id).or_default().push(a);
    }
    Ok(out)
}
