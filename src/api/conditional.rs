//! HTTP semantics of retries and lost updates: the `Idempotency-Key`, `If-Match` and
//! `If-None-Match` headers parsed at the edge, and a response body rendered once, so that a
//! create's first answer and its replays are the same bytes.

use poem_openapi::{
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

use super::error::ApiResult;
use crate::domain::{idempotency::IdempotencyKey, precondition::Precondition};

/// The `Idempotency-Key` header, if sent: a malformed key is 400.
pub fn idempotency_key(header: Option<String>) -> ApiResult<Option<IdempotencyKey>> {
    Ok(header.as_deref().map(IdempotencyKey::parse).transpose()?)
}

/// An `If-Match` or `If-None-Match` header, if sent: a malformed one is 400.
pub fn condition(name: &str, header: Option<String>) -> ApiResult<Option<Precondition>> {
    Ok(header
        .as_deref()
        .map(|v| Precondition::parse(name, v))
        .transpose()?)
}

/// Whether a GET's `If-None-Match` matches the current tag (the answer is then 304).
pub fn not_modified(if_none_match: Option<String>, etag: &str) -> ApiResult<bool> {
    Ok(condition("If-None-Match", if_none_match)?.is_some_and(|c| c.matches_weakly(etag)))
}

/// A JSON body already serialized (a create's response, stored for replays), documented with
/// `T`'s schema.
pub struct Rendered<T> {
    body: String,
    _schema: std::marker::PhantomData<fn() -> T>,
}

impl<T> Rendered<T> {
    pub fn new(body: String) -> Self {
        Self {
            body,
            _schema: std::marker::PhantomData,
        }
    }
}

impl<T: Type> Payload for Rendered<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        content_type.starts_with("application/json")
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + Send> poem::IntoResponse for Rendered<T> {
    fn into_response(self) -> poem::Response {
        poem::Response::builder()
            .header(poem::http::header::CONTENT_TYPE, Self::CONTENT_TYPE)
            .body(self.body)
    }
}
