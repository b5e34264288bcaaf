//! Request bodies in the spec: [`Body`], the payload of every operation that takes one, and the
//! poem-openapi side of the field types the body types are made of (`domain::lease`,
//! `domain::host`, `domain::input`).
//!
//! A body type derives `Object` (its schema) and `Deserialize` (its reading) over the same fields,
//! and each field type's schema here says what its `Deserialize` accepts, from the same constants
//! (a lease name's `maxLength` is `MAX_NAME_CHARS`). Reading happens in the service, through
//! `Received::parse`, so that a refusal comes after the policy check as before.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::domain::{
    host::{CapabilityValue, HostName, MAX_HOSTNAME_CHARS, Text},
    input::{self, Flag, IntLike, List, Object, Received},
    lease::{
        BeforeEndChoice, DateText, FilterText, GivenText, LeaseName, MAX_NAME_CHARS, NoEvents,
        ReservationId, ResourceType,
    },
};

/// A JSON object body documented with `T`'s schema, read as `T` by the service.
/// `REQUIRED = false` documents a body that may be left out (it then means `{}`).
pub struct Body<T, const REQUIRED: bool = true>(pub Received<T>);

impl<T: Type + input::Body, const REQUIRED: bool> Type for Body<T, REQUIRED> {
    const IS_REQUIRED: bool = REQUIRED;
    type RawValueType = Object;
    type RawElementValueType = Object;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0.object)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0.object))
    }
}

impl<T: Type + input::Body, const REQUIRED: bool> ParseFromJSON for Body<T, REQUIRED> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::Object(object)) => Ok(Self(Received::new(object))),
            None => Ok(Self(Received::new(Map::new()))),
            Some(_) => Err(ParseError::custom("the request body must be a JSON object")),
        }
    }
}

/// `schema` with `patch` applied.
fn patched(schema: MetaSchemaRef, patch: impl FnOnce(&mut MetaSchema)) -> MetaSchemaRef {
    match schema {
        MetaSchemaRef::Inline(mut s) => {
            patch(&mut s);
            MetaSchemaRef::Inline(s)
        }
        reference => reference,
    }
}

fn string() -> MetaSchemaRef {
    String::schema_ref()
}

/// Text of `1..=max` characters with no control characters (what `input::text_rule` checks).
fn text(max: usize) -> MetaSchemaRef {
    patched(string(), |s| {
        s.min_length = Some(1);
        s.max_length = Some(max);
        s.pattern = Some(r"^[^\x00-\x1F\x7F-\x9F]*$".to_string());
    })
}

/// An integer in `MIN..=MAX`, or a string holding one (`"2"`).
fn int_like(min: i64, max: i64) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        one_of: vec![
            MetaSchemaRef::Inline(Box::new(MetaSchema {
                minimum: Some(min as f64),
                maximum: Some(max as f64),
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

/// A capability value: `oneOf` string, number and boolean. An integer is a number in JSON
/// Schema, so a separate `integer` branch would make every integer match two branches and fail
/// `oneOf`. OpenAPI 3.0's `nullable` only counts beside a `type`, so null (removal) goes on one
/// branch, and then matches exactly one, as `oneOf` wants.
fn capability_value(nullable: bool) -> MetaSchemaRef {
    let branch = |ty: &'static str| MetaSchemaRef::Inline(Box::new(MetaSchema::new(ty)));
    let string = MetaSchemaRef::Inline(Box::new(MetaSchema {
        nullable,
        ..MetaSchema::new("string")
    }));
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        one_of: vec![string, branch("number"), branch("boolean")],
        ..MetaSchema::ANY
    }))
}

/// poem-openapi's traits for a field type: its schema, and reading and writing through its
/// serde impls (poem-openapi's own reading of a body type is never used: [`Body`] hands the
/// object to the service).
macro_rules! documented {
    ($([$($generics:tt)*] $ty:ty, $name:expr => $schema:expr $(, register: $register:path)?;)*) => {$(
        impl<$($generics)*> Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                $schema
            }

            $(fn register(registry: &mut Registry) {
                $register(registry);
            })?

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(std::iter::once(self))
            }
        }

        impl<$($generics)*> ParseFromJSON for $ty {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                serde_json::from_value(value.unwrap_or_default())
                    .map_err(|e| ParseError::custom(e.to_string()))
            }
        }

        impl<$($generics)*> ToJSON for $ty {
            fn to_json(&self) -> Option<Value> {
                serde_json::to_value(self).ok()
            }
        }
    )*};
}

documented! {
    [] LeaseName, "lease_name" => text(MAX_NAME_CHARS);
    [] HostName, "host_name" => text(MAX_HOSTNAME_CHARS);
    [] DateText, "date_text" => string();
    [] ResourceType, "resource_type" => string();
    [] GivenText, "given_text" => string();
    [] ReservationId, "reservation_id" => string();
    [] FilterText, "filter_text" => string();
    [] BeforeEndChoice, "before_end" => string();
    [const MAX: usize] Text<MAX>, format!("text_{MAX}") => string();
    [] Flag, "flag" => bool::schema_ref();
    [] NoEvents, "no_events" => patched(Vec::<Value>::schema_ref(), |s| s.max_items = Some(0));
    [const MIN: i64, const MAX: i64] IntLike<MIN, MAX>, format!("int_like_{MIN}_{MAX}")
        => int_like(MIN, MAX);
    [const NULLABLE: bool] CapabilityValue<NULLABLE>,
        if NULLABLE { "nullable_capability_value" } else { "capability_value" }
        => capability_value(NULLABLE);
    // A list is an array of `T`.
    [T: Type + DeserializeOwned + Serialize] List<T>, Vec::<T>::name()
        => Vec::<T>::schema_ref(), register: Vec::<T>::register;
}
