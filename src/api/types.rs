//! Two small poem-openapi types the contract needs.
//!
//! - [`Nullable`]: a field that is always sent, as `null` when empty, and is required and
//!   nullable in the spec (poem-openapi's `Option` is "not required", which the seed contradicts).
//! - [`RawBody`]: a request body documented with a typed schema `S` but handed to the handler as
//!   raw JSON, so that the domain layer can say exactly which field is wrong and why.

use std::{borrow::Cow, marker::PhantomData};

use poem_openapi::{
    registry::{MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::{Map, Value};

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

/// A JSON object body whose documented schema is `S`; validated by the domain layer.
/// `REQUIRED = false` documents a body that may be left out (it then means `{}`).
pub struct RawBody<S, const REQUIRED: bool = true> {
    pub object: Map<String, Value>,
    _schema: PhantomData<fn() -> S>,
}

impl<S: Type, const REQUIRED: bool> Type for RawBody<S, REQUIRED> {
    const IS_REQUIRED: bool = REQUIRED;
    type RawValueType = Map<String, Value>;
    type RawElementValueType = Map<String, Value>;

    fn name() -> Cow<'static, str> {
        S::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        S::schema_ref()
    }

    fn register(registry: &mut Registry) {
        S::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.object)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.object))
    }
}

impl<S: Type, const REQUIRED: bool> ParseFromJSON for RawBody<S, REQUIRED> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::Object(object)) => Ok(Self {
                object,
                _schema: PhantomData,
            }),
            None => Ok(Self {
                object: Map::new(),
                _schema: PhantomData,
            }),
            Some(_) => Err(ParseError::custom("the request body must be a JSON object")),
        }
    }
}

/// Documentation type for an integer in `MIN..=MAX` that may also come as a string holding one
/// (`"2"`), as some clients send. Request bodies are parsed by the domain layer; this type only
/// makes the spec say what the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntLike<const MIN: i64, const MAX: i64>(pub i64);

impl<const MIN: i64, const MAX: i64> Type for IntLike<MIN, MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = i64;
    type RawElementValueType = i64;

    fn name() -> Cow<'static, str> {
        format!("int_like_{MIN}_{MAX}").into()
    }

    fn schema_ref() -> MetaSchemaRef {
        use poem_openapi::registry::MetaSchema;
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            one_of: vec![
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    minimum: Some(MIN as f64),
                    maximum: Some(MAX as f64),
                    ..MetaSchema::new_with_format("integer", "int64")
                })),
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    pattern: Some("^ *[0-9]+ *$".to_string()),
                    ..MetaSchema::new("string")
                })),
            ],
            ..MetaSchema::ANY
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<const MIN: i64, const MAX: i64> ParseFromJSON for IntLike<MIN, MAX> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match &value {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .map(Self)
        .ok_or_else(|| ParseError::custom("expected an integer"))
    }
}

impl<const MIN: i64, const MAX: i64> ToJSON for IntLike<MIN, MAX> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(self.0))
    }
}

/// Bounds of the integers that may come as strings.
pub type Count = IntLike<1, 2147483647>;
pub type FactInt = IntLike<0, 9007199254740992>;

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

impl<T: Type> poem_openapi::payload::Payload for FastJson<T> {
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

impl<T: Type + serde::Serialize + Send> poem_openapi::ApiResponse for FastJson<T> {
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
