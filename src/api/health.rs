//! `/healthz` (the process answers) and `/readyz` (the database answers and its schema is current),
//! for load balancers and orchestrators. Neither needs a token.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{
    ApiTags,
    error::{OpResult, ops},
};
use crate::{domain::dates::format_lease_date, service::Services};

#[derive(Debug, Object)]
#[oai(rename = "Health")]
pub struct Health {
    /// `ok`
    pub status: String,
}

#[derive(Debug, Object)]
#[oai(rename = "Readiness")]
pub struct Readiness {
    /// `ready`
    pub status: String,
    /// `sqlite` or `postgres`
    pub database: String,
    /// Applied migrations; all of them, or the server is not ready.
    pub migrations: usize,
    /// In nova mode: how reconciliation with Nova goes.
    #[oai(skip_serializing_if_is_none)]
    pub nova: Option<NovaSync>,
}

/// Reconciliation of Nova's aggregates with the database (docs/nova.md).
#[derive(Debug, Object)]
#[oai(rename = "NovaSync")]
pub struct NovaSync {
    /// Comparisons run since start-up.
    pub reconciliations: u64,
    /// Drift repaired since start-up (each repair is also logged).
    pub repairs: u64,
    /// Hosts made reservable or unreservable by their compute service's health.
    pub health_changes: u64,
    /// When the last comparison ran (`2030-01-01T12:00:00.000000`), if any has.
    #[oai(nullable)]
    pub last_reconcile: Option<String>,
    /// Why the last comparison failed, if it did.
    #[oai(nullable)]
    pub last_error: Option<String>,
}

pub struct HealthApi;

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    #[oai(path = "/healthz", method = "get", operation_id = "getHealth")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Readiness
    ///
    /// 503 when the database cannot be reached or has migrations pending.
    #[oai(path = "/readyz", method = "get", operation_id = "getReadiness")]
    async fn ready(
        &self,
        svc: Data<&Arc<Services>>,
    ) -> OpResult<Json<Readiness>, ops::GetReadiness> {
        let (database, migrations) = svc.readiness().await?;
        Ok(Json(Readiness {
            status: "ready".into(),
            database,
            migrations,
            nova: svc.nova_status().map(|s| NovaSync {
                reconciliations: s.reconciliations,
                repairs: s.repairs,
                health_changes: s.health_changes,
                last_reconcile: s.last_reconcile.map(format_lease_date),
                last_error: s.last_error,
            }),
        }))
    }
}
