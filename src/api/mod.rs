//! The v1 contract: poem-openapi types and thin handlers, one file per resource.
//!
//! poem-openapi is the single source of the spec served at /openapi.json (see docs/architecture.md
//! for why not utoipa). Every operation has a stable operationId and exactly one 2xx response.

pub mod body;
pub mod calendar;
pub mod capacity;
pub mod conditional;
pub mod error;
pub mod health;
pub mod hosts;
pub mod leases;
pub mod metrics;
pub mod paging;
pub mod pipeline;
pub mod plugins;
pub mod types;
pub mod versions;

use poem_openapi::{OpenApiService, Tags};

#[derive(Tags)]
pub enum ApiTags {
    /// Leases: reserved hosts for a time window
    Leases,
    /// Hosts enrolled for reservation, and their capabilities
    Hosts,
    /// Which reservations hold which hosts
    Allocations,
    /// Resource plugins and their reservation parameters
    Plugins,
    /// API versions
    Versions,
    /// Liveness and readiness probes
    Health,
}

pub type Apis = (
    leases::LeasesApi,
    capacity::CapacityApi,
    hosts::HostsApi,
    plugins::PluginsApi,
    versions::VersionsApi,
    health::HealthApi,
);

const DESCRIPTION: &str = "\
OpenStack Blazar's reservation API v1 for compute hosts (`physical:host`).

* Every path also answers with a `.json` suffix (`/v1/leases.json`, `/v1/os-hosts/3.json`).
* Request bodies are JSON: send `Content-Type: application/json` or use the `.json` suffix.
* Errors carry `{\"error_code\", \"error_message\", \"error_name\"}` and an `X-Openstack-Request-Id`.
* Dates are UTC without offset: send `YYYY-MM-DD HH:MM`; leases show `YYYY-MM-DDTHH:MM:SS.ffffff`.
* Identity (noauth mode): `X-Project-Id`, `X-User-Id`, `X-Roles` headers, with defaults.";

/// The OpenAPI service for all v1 operations. Handlers find the services in the request data,
/// so the spec can be built (and printed) without a database.
pub fn openapi() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            leases::LeasesApi,
            capacity::CapacityApi,
            hosts::HostsApi,
            plugins::PluginsApi,
            versions::VersionsApi,
            health::HealthApi,
        ),
        "Blazar reservation API",
        "1.0",
    )
    .description(DESCRIPTION)
}
