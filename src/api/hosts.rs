//! `/v1/os-hosts`: hosts, their allocations and resource properties (types and handlers).

use std::{collections::BTreeMap, sync::Arc};

use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::ToJSON,
};

use super::{
    ApiTags,
    body::Body,
    conditional::{self, Rendered},
    error::{OpResult, ops},
    paging::{self, PageLink},
    types::{Documented, FastJson, Nullable},
};
use crate::{
    auth::Caller,
    domain::{
        dates::{format_lease_date, format_timestamp},
        host::{HostCreate, HostUpdate, PropertyUpdate},
    },
    service::{
        Services,
        hosts::{AllocationQuery, HostAllocations, HostPage},
        idempotency::{Created, Once},
        placement::HostRecord,
    },
};

/// An enrolled host. Its extra capabilities appear as further keys with string values.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Host")]
pub struct HostView {
    /// An integer, as a string.
    pub id: String,
    pub hypervisor_hostname: String,
    pub hypervisor_type: String,
    pub hypervisor_version: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub local_gb: i64,
    pub cpu_info: String,
    pub service_name: String,
    pub availability_zone: String,
    #[oai(nullable)]
    pub status: Nullable<String>,
    /// Whether leases may get this host.
    pub reservable: bool,
    #[oai(nullable)]
    pub trust_id: Nullable<String>,
    pub created_at: String,
    #[oai(nullable)]
    pub updated_at: Nullable<String>,
    #[oai(flatten)]
    #[serde(flatten)]
    pub capabilities: BTreeMap<String, String>,
}

impl From<HostRecord> for HostView {
    fn from(r: HostRecord) -> Self {
        let h = r.host;
        HostView {
            id: h.id.to_string(),
            hypervisor_hostname: h.hypervisor_hostname,
            hypervisor_type: h.hypervisor_type,
            hypervisor_version: h.hypervisor_version,
            vcpus: h.vcpus,
            memory_mb: h.memory_mb,
            local_gb: h.local_gb,
            cpu_info: h.cpu_info,
            service_name: h.service_name,
            availability_zone: h.availability_zone,
            status: h.status.into(),
            reservable: h.reservable,
            trust_id: h.trust_id.into(),
            created_at: format_timestamp(h.created_at),
            updated_at: h.updated_at.map(format_timestamp).into(),
            capabilities: r
                .capabilities
                .into_iter()
                .map(|c| (c.name, c.value))
                .collect(),
        }
    }
}

/// A host's JSON written straight from the shared inventory record, field for field as
/// [`HostView`] serializes (a unit test holds the two together): the list pages use it, so that
/// a page of 1,000 hosts clones no string.
struct HostOut<'a>(&'a HostRecord);

impl serde::Serialize for HostOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let h = &self.0.host;
        let mut m = s.serialize_map(Some(15 + self.0.capabilities.len()))?;
        m.serialize_entry("id", &format_args!("{}", h.id))?;
        m.serialize_entry("hypervisor_hostname", &h.hypervisor_hostname)?;
        m.serialize_entry("hypervisor_type", &h.hypervisor_type)?;
        m.serialize_entry("hypervisor_version", &h.hypervisor_version)?;
        m.serialize_entry("vcpus", &h.vcpus)?;
        m.serialize_entry("memory_mb", &h.memory_mb)?;
        m.serialize_entry("local_gb", &h.local_gb)?;
        m.serialize_entry("cpu_info", &h.cpu_info)?;
        m.serialize_entry("service_name", &h.service_name)?;
        m.serialize_entry("availability_zone", &h.availability_zone)?;
        m.serialize_entry("status", &h.status)?;
        m.serialize_entry("reservable", &h.reservable)?;
        m.serialize_entry("trust_id", &h.trust_id)?;
        m.serialize_entry("created_at", &format_timestamp(h.created_at))?;
        m.serialize_entry("updated_at", &h.updated_at.map(format_timestamp))?;
        for c in &self.0.capabilities {
            m.serialize_entry(&c.name, &c.value)?;
        }
        m.end()
    }
}

/// A page of the host list as it is written: the hosts serialized from the shared inventory.
/// It is documented as [`HostList`], whose schema it borrows (the contract tests and schemathesis
/// check the bytes against it).
pub struct HostListOut {
    hosts: HostPage,
    hosts_links: Option<Vec<PageLink>>,
}

impl serde::Serialize for HostListOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let hosts = self.hosts.hosts();
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("hosts", &HostsOut(hosts))?;
        if let Some(links) = &self.hosts_links {
            m.serialize_entry("hosts_links", links)?;
        }
        m.end()
    }
}

/// The hosts of a page as a JSON array, each written by [`HostOut`].
struct HostsOut<'a>(&'a [HostRecord]);

impl serde::Serialize for HostsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(HostOut))
    }
}

impl Documented for HostListOut {
    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        HostList::schema_ref()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        HostList::register(registry);
    }
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "HostResponse")]
pub struct HostEnvelope {
    pub host: HostView,
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "HostList")]
pub struct HostList {
    pub hosts: Vec<HostView>,
    /// A `next` link when the list goes on (see `limit` and `marker`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts_links: Option<Vec<PageLink>>,
}

#[derive(ApiResponse)]
pub enum HostCreated {
    /// The host, as stored (or, for a retry with the same `Idempotency-Key`, the first
    /// response again, byte for byte).
    #[oai(status = 202)]
    Accepted(Rendered<HostEnvelope>),
}

#[derive(ApiResponse)]
pub enum HostAccepted {
    /// The host, as stored, with its new entity tag.
    #[oai(status = 202)]
    Accepted(
        Json<HostEnvelope>,
        /// The host's entity tag after the update.
        #[oai(header = "ETag")]
        String,
    ),
}

// Built once and turned into the response at once: the size of the 304 variant does not
// matter, and poem-openapi has no payload for a Box.
#[allow(clippy::large_enum_variant)]
#[derive(ApiResponse)]
pub enum HostShown {
    /// The host.
    #[oai(status = 200)]
    Ok(
        Json<HostEnvelope>,
        /// Changes whenever anything shown changes (capabilities included); send it as
        /// `If-Match` to update or delete only this version, or as `If-None-Match` to re-read.
        #[oai(header = "ETag")]
        String,
    ),
    /// `If-None-Match` matched: the host is unchanged.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

/// The create's response body: what is sent, and what a retry with the same key gets (the
/// bytes poem-openapi's `Json` would send).
fn created_body(r: &HostRecord) -> String {
    HostEnvelope {
        host: r.clone().into(),
    }
    .to_json_string()
}

#[derive(ApiResponse)]
pub enum HostDeleted {
    #[oai(status = 204)]
    NoContent,
}

/// A reservation holding a host, with its lease's window.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "AllocatedReservation")]
pub struct AllocatedReservationView {
    pub id: String,
    pub lease_id: String,
    pub start_date: String,
    pub end_date: String,
}

/// A host and the reservations that hold it.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Allocation")]
pub struct AllocationView {
    /// The host id.
    pub resource_id: String,
    pub reservations: Vec<AllocatedReservationView>,
}

impl From<HostAllocations> for AllocationView {
    fn from(a: HostAllocations) -> Self {
        AllocationView {
            resource_id: a.host_id.to_string(),
            reservations: a
                .reservations
                .into_iter()
                .map(|r| AllocatedReservationView {
                    id: r.reservation_id,
                    lease_id: r.lease_id,
                    start_date: format_lease_date(r.start_date),
                    end_date: format_lease_date(r.end_date),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "AllocationList")]
pub struct AllocationList {
    pub allocations: Vec<AllocationView>,
    /// A `next` link when the list goes on (see `limit` and `marker`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocations_links: Option<Vec<PageLink>>,
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "AllocationResponse")]
pub struct AllocationEnvelope {
    pub allocation: AllocationView,
}

/// A resource property (an extra-capability name). `private` and `values` come with `detail`.
#[derive(Debug, Object)]
#[oai(rename = "ResourcePropertySummary")]
pub struct PropertySummary {
    pub property: String,
    #[oai(skip_serializing_if_is_none)]
    pub private: Option<bool>,
    /// The distinct values hosts have for it.
    #[oai(skip_serializing_if_is_none)]
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Object)]
#[oai(rename = "ResourcePropertyList")]
pub struct PropertyList {
    pub resource_properties: Vec<PropertySummary>,
}

#[derive(Debug, Object)]
#[oai(rename = "ResourceProperty")]
pub struct PropertyView {
    pub id: String,
    pub resource_type: String,
    pub property_name: String,
    pub private: bool,
    pub created_at: String,
    #[oai(nullable)]
    pub updated_at: Nullable<String>,
}

#[derive(Debug, Object)]
#[oai(rename = "ResourcePropertyResponse")]
pub struct PropertyEnvelope {
    pub resource_property: PropertyView,
}

/// Upstream treats any non-empty value as true (even `false`); we read it as a boolean.
fn flag(v: Option<String>) -> bool {
    v.is_some_and(|s| {
        !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "0" | "no" | "off"
        )
    })
}

pub struct HostsApi;

#[OpenApi(tag = "ApiTags::Hosts")]
impl HostsApi {
    /// List hosts
    #[oai(path = "/v1/os-hosts", method = "get", operation_id = "listHosts")]
    async fn list_hosts(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        req: &Request,
        /// Page size (at most, and by default, the server's max_page_size: 1000).
        #[oai(validator(minimum(value = "1")))]
        limit: Query<Option<i64>>,
        /// Id of the last host of the previous page.
        marker: Query<Option<String>>,
    ) -> OpResult<FastJson<HostListOut>, ops::ListHosts> {
        let page = paging::request(&svc, limit.0, marker.0)?;
        let hosts = svc.list_hosts(&caller, &page).await?;
        let hosts_links = paging::next(req, &page, hosts.next_marker.clone());
        Ok(FastJson(HostListOut { hosts, hosts_links }))
    }

    /// Enrol a host
    #[oai(path = "/v1/os-hosts", method = "post", operation_id = "createHost")]
    async fn create_host(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        body: Json<Body<HostCreate>>,
        /// Makes the enrolment safe to retry: the same key with the same body (same project)
        /// within 24 hours (configurable) gets the first response again and enrols nothing;
        /// with another body it is 422. 1 to 255 visible ASCII characters, e.g. a UUID.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> OpResult<HostCreated, ops::CreateHost> {
        let once = conditional::idempotency_key(idempotency_key.0)?.map(|key| Once {
            key,
            status: 202,
            render: created_body,
        });
        let body = match svc.create_host(&caller, &body.0.0, once).await? {
            Created::New(host) => created_body(&host),
            Created::Replayed(first) => first.body,
        };
        Ok(HostCreated::Accepted(Rendered::new(body)))
    }

    /// List host allocations
    ///
    /// Every host with the reservations that hold it: by default those of leases that have not
    /// ended; with `lease_id` or `reservation_id`, those of that lease or reservation.
    #[oai(
        path = "/v1/os-hosts/allocations",
        method = "get",
        operation_id = "listHostAllocations",
        tag = "ApiTags::Allocations"
    )]
    // Each query parameter is an argument in poem-openapi.
    #[allow(clippy::too_many_arguments)]
    async fn list_allocations(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        lease_id: Query<Option<String>>,
        reservation_id: Query<Option<String>>,
        req: &Request,
        /// Page size (at most, and by default, the server's max_page_size: 1000).
        #[oai(validator(minimum(value = "1")))]
        limit: Query<Option<i64>>,
        /// Id of the last host of the previous page.
        marker: Query<Option<String>>,
    ) -> OpResult<FastJson<AllocationList>, ops::ListHostAllocations> {
        let query = AllocationQuery {
            lease_id: lease_id.0,
            reservation_id: reservation_id.0,
        };
        let page = paging::request(&svc, limit.0, marker.0)?;
        let all = svc.list_allocations(&caller, &query, &page).await?;
        Ok(FastJson(AllocationList {
            allocations_links: paging::next(req, &page, all.next_marker),
            allocations: all.items.into_iter().map(AllocationView::from).collect(),
        }))
    }

    /// List resource properties
    #[oai(
        path = "/v1/os-hosts/properties",
        method = "get",
        operation_id = "listHostProperties"
    )]
    async fn list_properties(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        /// `True` adds `private` and the distinct `values` of each property.
        detail: Query<Option<String>>,
        /// `True` includes private properties (admins only).
        all: Query<Option<String>>,
    ) -> OpResult<Json<PropertyList>, ops::ListHostProperties> {
        let detail = flag(detail.0);
        let props = svc.list_properties(&caller, detail, flag(all.0)).await?;
        Ok(Json(PropertyList {
            resource_properties: props
                .into_iter()
                .map(|p| PropertySummary {
                    property: p.name,
                    private: detail.then_some(p.private),
                    values: detail.then_some(p.values),
                })
                .collect(),
        }))
    }

    /// Update a resource property
    #[oai(
        path = "/v1/os-hosts/properties/:property_name",
        method = "patch",
        operation_id = "updateHostProperty"
    )]
    async fn update_property(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        property_name: Path<String>,
        body: Json<Body<PropertyUpdate>>,
    ) -> OpResult<Json<PropertyEnvelope>, ops::UpdateHostProperty> {
        let p = svc
            .update_property(&caller, &property_name, &body.0.0)
            .await?;
        Ok(Json(PropertyEnvelope {
            resource_property: PropertyView {
                id: p.id,
                resource_type: p.resource_type,
                property_name: p.property_name,
                private: p.private,
                created_at: format_timestamp(p.created_at),
                updated_at: p.updated_at.map(format_timestamp).into(),
            },
        }))
    }

    /// Show a host
    #[oai(
        path = "/v1/os-hosts/:host_id",
        method = "get",
        operation_id = "getHost"
    )]
    async fn get_host(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        host_id: Path<String>,
        /// Entity tags of copies the client has: if one matches, the answer is 304.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> OpResult<HostShown, ops::GetHost> {
        let host = svc.get_host(&caller, &host_id).await?;
        let etag = host.etag();
        if conditional::not_modified(if_none_match.0, &etag)? {
            return Ok(HostShown::NotModified(etag));
        }
        Ok(HostShown::Ok(
            Json(HostEnvelope { host: host.into() }),
            etag,
        ))
    }

    /// Update a host's capabilities
    #[oai(
        path = "/v1/os-hosts/:host_id",
        method = "put",
        operation_id = "updateHost"
    )]
    async fn update_host(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        host_id: Path<String>,
        body: Json<Body<HostUpdate>>,
        /// Update only if the host's entity tag is one of these (`*`: any); else 412 and
        /// nothing changes.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> OpResult<HostAccepted, ops::UpdateHost> {
        let if_match = conditional::condition("If-Match", if_match.0)?;
        let host = svc
            .update_host(&caller, &host_id, &body.0.0, if_match.as_ref())
            .await?;
        let etag = host.etag();
        Ok(HostAccepted::Accepted(
            Json(HostEnvelope { host: host.into() }),
            etag,
        ))
    }

    /// Delete a host
    ///
    /// Refused (409) while a current or future lease holds it.
    #[oai(
        path = "/v1/os-hosts/:host_id",
        method = "delete",
        operation_id = "deleteHost"
    )]
    async fn delete_host(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        host_id: Path<String>,
        /// Delete only if the host's entity tag is one of these (`*`: any); else 412 and
        /// nothing changes.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> OpResult<HostDeleted, ops::DeleteHost> {
        let if_match = conditional::condition("If-Match", if_match.0)?;
        svc.delete_host(&caller, &host_id, if_match).await?;
        Ok(HostDeleted::NoContent)
    }

    /// Show a host's allocation
    #[oai(
        path = "/v1/os-hosts/:host_id/allocation",
        method = "get",
        operation_id = "getHostAllocation",
        tag = "ApiTags::Allocations"
    )]
    async fn get_allocation(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        host_id: Path<String>,
        lease_id: Query<Option<String>>,
        reservation_id: Query<Option<String>>,
    ) -> OpResult<Json<AllocationEnvelope>, ops::GetHostAllocation> {
        let query = AllocationQuery {
            lease_id: lease_id.0,
            reservation_id: reservation_id.0,
        };
        let a = svc.get_allocation(&caller, &host_id, &query).await?;
        Ok(Json(AllocationEnvelope {
            allocation: a.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, status: Option<&str>, caps: &[(&str, &str)]) -> HostRecord {
        let t = chrono::NaiveDate::from_ymd_opt(2030, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 678_000)
            .unwrap();
        HostRecord {
            host: entity::host::Model {
                id,
                hypervisor_hostname: format!("h\"{id}\u{e9}"),
                hypervisor_type: "QEMU".into(),
                hypervisor_version: 2_012_000,
                vcpus: 8,
                memory_mb: 16_384,
                local_gb: 100,
                cpu_info: "{\"arch\": \"x86_64\"}".into(),
                service_name: "svc".into(),
                availability_zone: "nova".into(),
                status: status.map(Into::into),
                reservable: id % 2 == 0,
                trust_id: None,
                created_at: t,
                updated_at: status.map(|_| t),
            },
            capabilities: caps
                .iter()
                .map(|(k, v)| crate::domain::placement::Capability {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    /// The list's bytes and the single host's come from two writers: they must agree exactly,
    /// key order included.
    #[test]
    fn the_list_writes_each_host_as_host_view_does() {
        let records = vec![
            record(1, None, &[]),
            record(2, Some("ERROR"), &[("gpu", "true"), ("rack", "r\n7")]),
        ];
        let inventory: Arc<[HostRecord]> = records.clone().into();
        for with_links in [false, true] {
            let out = HostListOut {
                hosts: HostPage {
                    inventory: inventory.clone(),
                    range: 0..2,
                    next_marker: None,
                },
                hosts_links: with_links.then(Vec::new),
            };
            let view = HostList {
                hosts: records.iter().cloned().map(HostView::from).collect(),
                hosts_links: with_links.then(Vec::new),
            };
            assert_eq!(
                serde_json::to_string(&out).unwrap(),
                serde_json::to_string(&view).unwrap()
            );
        }
    }
}
