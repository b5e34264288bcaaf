//! `GET /metrics`: the Prometheus text exposition (docs/operations.md). A plain poem handler,
//! not poem-openapi: like the calendar page it is no part of the v1 contract and stays out of
//! the spec. It is served off `/v1`, so the pipeline never asks who is calling.

use std::sync::Arc;

use poem::{Response, handler, http::header, web::Data};

use super::error::ApiError;
use crate::service::Services;

/// The content type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[handler]
pub async fn metrics(services: Data<&Arc<Services>>) -> poem::Result<Response> {
    let text = services.scrape_metrics().await.map_err(ApiError::from)?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::CACHE_CONTROL, "no-store")
        .body(text))
}
