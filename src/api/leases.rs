//! `/v1/leases`: the lease contract (as poem-openapi types) and its handlers.

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};

use super::{
    ApiTags,
    body::Body,
    conditional::{self, Rendered},
    error::{OpResult, ops},
    paging::{self, PageLink},
    types::{FastJson, Nullable},
};
use crate::{
    auth::Caller,
    domain::{
        dates::{format_lease_date, format_timestamp},
        lease::{LeaseCreate, LeaseUpdate},
    },
    service::{
        Services,
        idempotency::{Created, Once},
        leases::LeaseDetail,
    },
};

/// A reservation of hosts inside a lease.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Reservation")]
pub struct ReservationView {
    pub id: String,
    pub lease_id: String,
    /// Id of the host-reservation record (a UUID).
    pub resource_id: String,
    /// Always `physical:host` on this server.
    pub resource_type: String,
    /// `pending`, `active`, `deleted` or `error`.
    pub status: String,
    pub min: i32,
    pub max: i32,
    /// JSON filter on host columns, exactly as sent (often `""`).
    pub hypervisor_properties: String,
    /// JSON filter on extra capabilities, exactly as sent (often `""`).
    pub resource_properties: String,
    /// Action before the lease ends: `""`, `default` or `snapshot`.
    pub before_end: String,
    pub missing_resources: bool,
    pub resources_changed: bool,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub created_at: String,
    #[oai(nullable)]
    pub updated_at: Nullable<String>,
}

/// A lease event.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Event")]
pub struct EventView {
    pub id: String,
    pub lease_id: String,
    /// `start_lease`, `before_end_lease` or `end_lease`.
    pub event_type: String,
    /// When it is due: `YYYY-MM-DDTHH:MM:SS.ffffff` (UTC).
    pub time: String,
    /// `UNDONE`, `IN_PROGRESS`, `DONE` or `ERROR`.
    pub status: String,
    pub created_at: String,
    #[oai(nullable)]
    pub updated_at: Nullable<String>,
}

/// A lease: reserved resources for a time window.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "Lease")]
pub struct LeaseView {
    pub id: String,
    pub name: String,
    #[oai(nullable)]
    pub user_id: Nullable<String>,
    #[oai(nullable)]
    pub project_id: Nullable<String>,
    /// Keystone trust of the lease; this server creates none, so it is null.
    #[oai(nullable)]
    pub trust_id: Nullable<String>,
    /// `YYYY-MM-DDTHH:MM:SS.ffffff` (UTC).
    pub start_date: String,
    /// `YYYY-MM-DDTHH:MM:SS.ffffff` (UTC).
    pub end_date: String,
    /// `PENDING`, `STARTING`, `ACTIVE`, `TERMINATING`, `TERMINATED`, `ERROR` (or, briefly,
    /// `UPDATING`/`DELETING`).
    #[oai(nullable)]
    pub status: Nullable<String>,
    /// The last lifecycle action taken, null until there is one.
    #[oai(nullable)]
    pub action: Nullable<String>,
    /// Why the lease is in its status (set on errors), else null.
    #[oai(nullable)]
    pub status_reason: Nullable<String>,
    pub degraded: bool,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub created_at: String,
    #[oai(nullable)]
    pub updated_at: Nullable<String>,
    pub reservations: Vec<ReservationView>,
    pub events: Vec<EventView>,
}

impl From<LeaseDetail> for LeaseView {
    fn from(d: LeaseDetail) -> Self {
        let l = d.lease;
        LeaseView {
            id: l.id,
            name: l.name,
            user_id: l.user_id.into(),
            project_id: l.project_id.into(),
            trust_id: l.trust_id.into(),
            start_date: format_lease_date(l.start_date),
            end_date: format_lease_date(l.end_date),
            status: Some(l.status.to_string()).into(),
            action: l.action.into(),
            status_reason: l.status_reason.into(),
            degraded: l.degraded,
            created_at: format_timestamp(l.created_at),
            updated_at: l.updated_at.map(format_timestamp).into(),
            reservations: d
                .reservations
                .into_iter()
                .map(|r| ReservationView {
                    id: r.id,
                    lease_id: r.lease_id,
                    resource_id: r.resource_id,
                    resource_type: r.resource_type,
                    status: r.status.to_string(),
                    min: r.min,
                    max: r.max,
                    hypervisor_properties: r.hypervisor_properties,
                    resource_properties: r.resource_properties,
                    before_end: r.before_end.to_string(),
                    missing_resources: r.missing_resources,
                    resources_changed: r.resources_changed,
                    created_at: format_timestamp(r.created_at),
                    updated_at: r.updated_at.map(format_timestamp).into(),
                })
                .collect(),
            events: d
                .events
                .into_iter()
                .map(|e| EventView {
                    id: e.id,
                    lease_id: e.lease_id,
                    event_type: e.event_type.to_string(),
                    time: format_lease_date(e.time),
                    status: e.status.to_string(),
                    created_at: format_timestamp(e.created_at),
                    updated_at: e.updated_at.map(format_timestamp).into(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "LeaseResponse")]
pub struct LeaseEnvelope {
    pub lease: LeaseView,
}

#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "LeaseList")]
pub struct LeaseList {
    pub leases: Vec<LeaseView>,
    /// A `next` link when the list goes on (see `limit` and `marker`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases_links: Option<Vec<PageLink>>,
}

#[derive(ApiResponse)]
pub enum LeaseCreated {
    /// The lease, as stored (or, for a retry with the same `Idempotency-Key`, the first
    /// response again, byte for byte).
    #[oai(status = 202)]
    Accepted(Rendered<LeaseEnvelope>),
}

#[derive(ApiResponse)]
pub enum LeaseAccepted {
    /// The lease, as stored, with its new entity tag.
    #[oai(status = 202)]
    Accepted(
        FastJson<LeaseEnvelope>,
        /// The lease's entity tag after the update.
        #[oai(header = "ETag")]
        String,
    ),
}

// Built once and turned into the response at once: the size of the 304 variant does not
// matter, and poem-openapi has no payload for a Box.
#[allow(clippy::large_enum_variant)]
#[derive(ApiResponse)]
pub enum LeaseShown {
    /// The lease.
    #[oai(status = 200)]
    Ok(
        FastJson<LeaseEnvelope>,
        /// Changes whenever anything shown changes (events' statuses included); send it as
        /// `If-Match` to update or delete only this version, or as `If-None-Match` to re-read.
        #[oai(header = "ETag")]
        String,
    ),
    /// `If-None-Match` matched: the lease is unchanged.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

/// The create's response body: what is sent, and what a retry with the same key gets.
fn created_body(d: &LeaseDetail) -> String {
    serde_json::to_string(&LeaseEnvelope {
        lease: d.clone().into(),
    })
    .expect("a lease view has string keys only, so it always serializes")
}

#[derive(ApiResponse)]
pub enum LeaseDeleted {
    /// The lease is gone and its hosts are free.
    #[oai(status = 204)]
    NoContent,
}

pub struct LeasesApi;

#[OpenApi(tag = "ApiTags::Leases")]
impl LeasesApi {
    /// List leases
    #[oai(path = "/v1/leases", method = "get", operation_id = "listLeases")]
    async fn list_leases(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        req: &Request,
        /// Admins only: the leases of this project (default: every project's).
        project_id: Query<Option<String>>,
        /// Page size (at most, and by default, the server's max_page_size: 1000).
        #[oai(validator(minimum(value = "1")))]
        limit: Query<Option<i64>>,
        /// Id of the last lease of the previous page.
        marker: Query<Option<String>>,
    ) -> OpResult<FastJson<LeaseList>, ops::ListLeases> {
        let page = paging::request(&svc, limit.0, marker.0)?;
        let leases = svc
            .list_leases(&caller, project_id.0.as_deref(), &page)
            .await?;
        Ok(FastJson(LeaseList {
            leases_links: paging::next(req, &page, leases.next_marker),
            leases: leases.items.into_iter().map(LeaseView::from).collect(),
        }))
    }

    /// Create a lease
    ///
    /// Chooses between `min` and `max` free hosts matching each reservation's filters for the
    /// whole window, or answers 409 and stores nothing.
    #[oai(path = "/v1/leases", method = "post", operation_id = "createLease")]
    async fn create_lease(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        body: Json<Body<LeaseCreate>>,
        /// Makes the create safe to retry: the same key with the same body (same project)
        /// within 24 hours (configurable) gets the first response again and creates nothing;
        /// with another body it is 422. 1 to 255 visible ASCII characters, e.g. a UUID.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> OpResult<LeaseCreated, ops::CreateLease> {
        let once = conditional::idempotency_key(idempotency_key.0)?.map(|key| Once {
            key,
            status: 202,
            render: created_body,
        });
        let body = match svc.create_lease(&caller, &body.0.0, once).await? {
            Created::New(lease) => created_body(&lease),
            Created::Replayed(first) => first.body,
        };
        Ok(LeaseCreated::Accepted(Rendered::new(body)))
    }

    /// Show a lease
    #[oai(
        path = "/v1/leases/:lease_id",
        method = "get",
        operation_id = "getLease"
    )]
    async fn get_lease(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        lease_id: Path<String>,
        /// Entity tags of copies the client has: if one matches, the answer is 304.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> OpResult<LeaseShown, ops::GetLease> {
        let lease = svc.get_lease(&caller, &lease_id).await?;
        let etag = lease.etag();
        if conditional::not_modified(if_none_match.0, &etag)? {
            return Ok(LeaseShown::NotModified(etag));
        }
        Ok(LeaseShown::Ok(
            FastJson(LeaseEnvelope {
                lease: lease.into(),
            }),
            etag,
        ))
    }

    /// Update a lease
    #[oai(
        path = "/v1/leases/:lease_id",
        method = "put",
        operation_id = "updateLease"
    )]
    async fn update_lease(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        lease_id: Path<String>,
        /// An empty body changes nothing.
        body: Json<Body<LeaseUpdate, false>>,
        /// Update only if the lease's entity tag is one of these (`*`: any); else 412 and
        /// nothing changes.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> OpResult<LeaseAccepted, ops::UpdateLease> {
        let if_match = conditional::condition("If-Match", if_match.0)?;
        let lease = svc
            .update_lease(&caller, &lease_id, &body.0.0, if_match.as_ref())
            .await?;
        let etag = lease.etag();
        Ok(LeaseAccepted::Accepted(
            FastJson(LeaseEnvelope {
                lease: lease.into(),
            }),
            etag,
        ))
    }

    /// Delete a lease
    ///
    /// Frees its hosts at once.
    #[oai(
        path = "/v1/leases/:lease_id",
        method = "delete",
        operation_id = "deleteLease"
    )]
    async fn delete_lease(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
        lease_id: Path<String>,
        /// Delete only if the lease's entity tag is one of these (`*`: any); else 412 and
        /// nothing changes.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> OpResult<LeaseDeleted, ops::DeleteLease> {
        let if_match = conditional::condition("If-Match", if_match.0)?;
        svc.delete_lease(&caller, &lease_id, if_match).await?;
        Ok(LeaseDeleted::NoContent)
    }
}
