//! Nova, the system that runs the hosts: its compute API ([`client`]), the aggregate choreography
//! that Nova's `BlazarFilter` understands ([`pool`]), and what leases and enrolment do through it
//! ([`driver`], [`facts`]). Reconciliation and health polling ([`sync`]) keep Nova and the database
//! in step when something failed half-way or changed behind our back.
//!
//! Nothing here runs inside a database transaction.

pub mod client;
pub mod driver;
pub mod facts;
pub mod pool;
pub mod sync;

use std::{sync::Arc, time::Duration};

use crate::{auth::service_account::ServiceAccount, config::Settings};
use client::{NovaAuth, NovaClient, RetryPolicy};
use pool::{PoolConfig, Pools};

/// How requests reach Nova: a fixed URL and token, or the service account (catalog, or its
/// token with a fixed URL).
pub fn client(settings: &Settings, account: Option<Arc<ServiceAccount>>) -> NovaClient {
    let auth = match (&settings.nova.url, &settings.nova.token, account) {
        (Some(url), Some(token), _) => NovaAuth::Fixed {
            url: url.trim_end_matches('/').to_string(),
            token: secrecy::ExposeSecret::expose_secret(token).to_string(),
        },
        (url, _, Some(account)) => NovaAuth::Keystone {
            account,
            url: url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
            interface: settings.nova.endpoint_type.clone(),
            region: settings.keystone_authtoken.region_name.clone(),
        },
        // Settings::validate refuses Nova mode without a way to authenticate.
        (url, _, None) => NovaAuth::Fixed {
            url: url.clone().unwrap_or_default(),
            token: String::new(),
        },
    };
    NovaClient::new(
        auth,
        Duration::from_secs(settings.nova.timeout_seconds),
        RetryPolicy {
            retries: settings.nova.retries,
            first_backoff: Duration::from_millis(250),
        },
    )
}

/// The aggregates as configured; `repair` is rung when a move finds drift.
pub fn pools(
    settings: &Settings,
    account: Option<Arc<ServiceAccount>>,
    repair: Arc<tokio::sync::Notify>,
) -> Pools {
    Pools::new(
        client(settings, account),
        PoolConfig {
            freepool: settings.nova.aggregate_freepool_name.clone(),
            owner_key: settings.nova.blazar_owner.clone(),
            az_prefix: settings.physical_host.blazar_az_prefix.clone(),
            image_prefix: settings.nova.image_prefix.clone(),
            deletion_timeout: Duration::from_secs(
                settings.physical_host.server_deletion_timeout_seconds,
            ),
            deletion_poll: Duration::from_millis(200),
        },
        repair,
    )
}
