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
pub struct RawBody<S> {
    pub object: Map<String, Value>,
    _schema: PhantomData<fn() -> S>,
}

impl<S> RawBody<S> {
    pub fn into_inner(self) -> Map<String, Value> {
        self.object
    }
}

impl<S: Type> Type for RawBody<S> {
    const IS_REQUIRED: bool = true;
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

impl<S: Type> ParseFromJSON for RawBody<S> {
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
