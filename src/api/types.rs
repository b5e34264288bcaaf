//! Two small poem-openapi types the contract's responses need (request bodies: `api::body`).
//!
//! - [`Nullable`]: a field that is always sent, as `null` when empty, and is required and
//!   nullable in the spec (poem-openapi's `Option` is "not required", which the seed contradicts).
//! - [`FastJson`]: a response body serialized straight from its view type with serde.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nullable<T>(pub Option<T>);

impl<T> From<Option<T>> for Nullable<T> {
    fn from(v: Option<T>) -> Self {
        Self(v)
    }
}

impl<T: Type> Type for Nullable<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(v) => v.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }
}

impl<T: ToJSON> ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<Value> {
        Some(match &self.0 {
            Some(v) => v.to_json().unwrap_or(Value::Null),
            None => Value::Null,
        })
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Nullable<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Option::<T>::parse_from_json(value)
            .map(Nullable)
            .map_err(ParseError::propagate)
    }
}

impl<T: serde::Serialize> serde::Serialize for Nullable<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A JSON response body serialized straight from `T` with serde, documented with `T`'s schema.
///
/// poem-openapi's `Json` first builds a `serde_json::Value` tree of the whole body; for a page of
/// a thousand leases that tree cost more than reading them from the database. The view types
/// derive both `Object` (the spec) and `Serialize` (the bytes) from the same fields; the contract
/// tests and schemathesis check that the two agree.
pub struct FastJson<T>(pub T);

/// Where a response body's schema comes from: a poem-openapi type's own, or, for a body written
/// straight from shared data (the host list), the type it is written as (`impl Documented`).
pub trait Documented {
    fn schema_ref() -> MetaSchemaRef;
    fn register(registry: &mut Registry);
}

impl<T: Type> Documented for T {
    fn schema_ref() -> MetaSchemaRef {
        <T as Type>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <T as Type>::register(registry);
    }
}

impl<T: Documented + Send> poem_openapi::payload::Payload for FastJson<T> {
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

impl<T: serde::Serialize + Send> poem::IntoResponse for FastJson<T> {
    fn into_response(self) -> poem::Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => poem::Response::builder()
                .header(
                    poem::http::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )
                .body(body),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a response");
                poem::Response::builder()
                    .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                    .finish()
            }
        }
    }
}

impl<T: Documented + serde::Serialize + Send> poem_openapi::ApiResponse for FastJson<T> {
    fn meta() -> poem_openapi::registry::MetaResponses {
        use poem_openapi::{
            payload::Payload,
            registry::{MetaMediaType, MetaResponse, MetaResponses},
        };
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}
