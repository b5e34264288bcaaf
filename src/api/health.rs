//! `/healthz` (the process answers) and `/readyz` (the database answers and its schema is current),
//! for load balancers and orchestrators. Neither needs a token.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{ApiTags, error::ApiResult};
use crate::service::Services;

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
    async fn ready(&self, svc: Data<&Arc<Services>>) -> ApiResult<Json<Readiness>> {
        let (database, migrations) = svc.readiness().await?;
        Ok(Json(Readiness {
            status: "ready".into(),
            database,
            migrations,
        }))
    }
}
