//! Reading request bodies: the one converter from serde's errors to our messages, and the
//! field checks the body types share.
//!
//! Each body type (`domain::lease::LeaseCreate`, `domain::host::HostCreate`, ...) both documents
//! the body (poem-openapi, see `api::body`) and reads it (serde). Its fields are small types whose
//! `Deserialize` does the field's check; a refusal travels through serde as the text of a custom
//! error ([`Refusal`]), and [`parse`] turns it, with the field's path from
//! `serde_path_to_error` (`reservations[0].min`), into the [`DomainError`] upstream names.

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, DeserializeOwned},
};
use serde_json::{Map, Value};
use serde_path_to_error::{Path, Segment};

use super::DomainError;

pub type Object = Map<String, Value>;

/// A request body as the client sent it, to be read as `T` when the service asks: after the
/// policy check and an `Idempotency-Key` replay, as before, so a refusal comes in the same
/// order. The object itself is what a key's fingerprint is taken of.
pub struct Received<T> {
    pub object: Object,
    _as: PhantomData<fn() -> T>,
}

impl<T: Body> Received<T> {
    pub fn new(object: Object) -> Self {
        Self {
            object,
            _as: PhantomData,
        }
    }

    /// The body read as `T`, or the first refusal.
    pub fn parse(&self) -> Result<T, DomainError> {
        parse(&self.object)
    }
}

/// A request body type.
pub trait Body: DeserializeOwned {
    /// The check of the keys, before serde reads any field: its message names the keys the
    /// server owns, which serde's `deny_unknown_fields` cannot tell from unknown ones.
    fn check_keys(_object: &Object) -> Result<(), DomainError> {
        Ok(())
    }
}

/// Reads `object` as `T`: the one place where serde's errors become our messages.
pub fn parse<T: Body>(object: &Object) -> Result<T, DomainError> {
    T::check_keys(object)?;
    serde_path_to_error::deserialize(object).map_err(|e| {
        let path = e.path().clone();
        refused(&path, &e.into_inner().to_string())
    })
}

/// Marks the text of a serde error that carries a [`Refusal`] (JSON after the mark).
const MARK: &str = "\u{1}refusal:";

/// What a field's check refused, without the field's path, which [`parse`] adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Refusal {
    /// MalformedParameter, named by the field: its bare name, then where it is when nested
    /// (`max (reservations[0].max)`), unless `name` is given.
    Malformed {
        name: Option<String>,
        reason: String,
    },
    /// MalformedParameter named by the field's bare name even when nested (upstream's `id`).
    MalformedBare(String),
    /// MissingParameter: `label` (default: the field's name), then where it is when nested.
    /// `field`: the name of an absent field, whose path stops at the body that lacks it.
    Missing {
        label: Option<String>,
        field: Option<String>,
    },
    /// `min`/`max` below one: upstream's text names both.
    BelowOne(i64),
    /// A whole message of one of these kinds.
    Whole { kind: Whole, text: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Whole {
    UnknownField,
    ExtraCapabilityTooLong,
    InvalidHost,
    UnsupportedResourceType,
}

impl Refusal {
    pub fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed {
            name: None,
            reason: reason.into(),
        }
    }

    pub fn malformed_as(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            name: Some(name.into()),
            reason: reason.into(),
        }
    }

    /// Names a refusal that would be named by its path (a host body's keys are read as a whole).
    pub fn named(self, name: &str) -> Self {
        match self {
            Self::Malformed { name: None, reason } => Self::malformed_as(name, reason),
            other => other,
        }
    }

    pub fn missing() -> Self {
        Self::Missing {
            label: None,
            field: None,
        }
    }

    pub fn whole(kind: Whole, text: impl Into<String>) -> Self {
        Self::Whole {
            kind,
            text: text.into(),
        }
    }

    /// As a serde error of any deserializer.
    pub fn raise<E: de::Error>(&self) -> E {
        E::custom(format!(
            "{MARK}{}",
            serde_json::to_string(self).expect("a refusal is plain data")
        ))
    }

    fn into_error(self, path: &Path) -> DomainError {
        match self {
            Self::Malformed {
                name: Some(name),
                reason,
            } => DomainError::malformed(name, reason),
            Self::Malformed { name: None, reason } => {
                DomainError::malformed(param(path, None, None), reason)
            }
            Self::MalformedBare(reason) => DomainError::malformed(last(path), reason),
            Self::Missing { label, field } => {
                DomainError::MissingParameter(param(path, field.as_deref(), label))
            }
            Self::BelowOne(n) => DomainError::malformed(
                "min and max (must be greater than or equal to 1)",
                format!("{path} is {n}"),
            ),
            Self::Whole { kind, text } => match kind {
                Whole::UnknownField => DomainError::UnknownField(text),
                Whole::ExtraCapabilityTooLong => DomainError::ExtraCapabilityTooLong(text),
                Whole::InvalidHost => DomainError::InvalidHost(text),
                Whole::UnsupportedResourceType => DomainError::UnsupportedResourceType(text),
            },
        }
    }
}

/// A serde error at `path` as our message.
fn refused(path: &Path, text: &str) -> DomainError {
    if let Some(refusal) = text
        .strip_prefix(MARK)
        .and_then(|json| serde_json::from_str::<Refusal>(json).ok())
    {
        return refusal.into_error(path);
    }
    // serde's own refusals: the field types and the key checks leave none that a body can
    // cause (a host body is an object, a reservation's keys and shape are checked first), but
    // say where it was all the same.
    DomainError::malformed(path.to_string(), text.to_string())
}

/// The field's bare name: the last key of the path.
fn last(path: &Path) -> String {
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .next_back()
        .unwrap_or_default()
        .to_string()
}

/// How a Missing/Malformed message names a field at `path` (then `field`, when it is absent):
/// upstream's bare name (or `label`) first, then where it is when nested
/// (`min (reservations[0].min)`).
fn param(path: &Path, field: Option<&str>, label: Option<String>) -> String {
    let depth = path.iter().count() + usize::from(field.is_some());
    let at = match field {
        Some(f) if path.iter().count() == 0 => f.to_string(),
        Some(f) => format!("{path}.{f}"),
        None => path.to_string(),
    };
    let label = label.unwrap_or_else(|| field.map_or_else(|| last(path), str::to_string));
    if depth > 1 {
        format!("{label} ({at})")
    } else {
        label
    }
}

/// Reads a field's JSON value (`None`: absent or null) and checks it: the shape every field
/// type's `Deserialize` has.
pub fn checked<'de, D, T>(
    d: D,
    check: impl FnOnce(Option<Value>) -> Result<T, Refusal>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let value = match Value::deserialize(d) {
        Ok(Value::Null) => None,
        Ok(v) => Some(v),
        // serde's derive reports an absent field by handing its name to the field's type in
        // this error, from a deserializer that holds nothing else.
        Err(e) => {
            let text = e.to_string();
            let Some(field) = text
                .strip_prefix("missing field `")
                .and_then(|t| t.strip_suffix('`'))
            else {
                return Err(e);
            };
            return check(None).map_err(|r| match r {
                Refusal::Missing { label, .. } => Refusal::Missing {
                    label,
                    field: Some(field.to_string()),
                }
                .raise(),
                other => other.raise(),
            });
        }
    };
    check(value).map_err(|r| r.raise())
}

/// Declares a field type: a newtype over `$inner` whose `Deserialize` reads the field's JSON value
/// (`None`: absent or null) and checks it with `$check`, which gives `Self` or a [`Refusal`].
macro_rules! field_type {
    ($(#[$attr:meta])* $name:ident($inner:ty), |$value:ident| $check:expr) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::domain::input::checked(d, |$value| $check)
            }
        }
    };
}
pub(crate) use field_type;

/// For a field where null is not "absent" (a lease update's `name`): present means `Some`.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The field names serde's derive gives `T`, in declaration order: it hands them to the
/// deserializer, so the unknown-key message lists exactly what the type reads.
pub fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Capture<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Capture<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("captured"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// A list field (`reservations`): a JSON array of `T`, read element by element so that the
/// path names the element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct List<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Items<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(List(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<List<T>, A::Error> {
                Err(not_a_list("an object"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<List<T>, E> {
                Err(not_a_list("a string"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<List<T>, E> {
                Err(not_a_list("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<List<T>, E> {
                Err(not_a_list("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<List<T>, E> {
                Err(not_a_list("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<List<T>, E> {
                Err(not_a_list("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<List<T>, E> {
                Err(not_a_list("null"))
            }
        }
        fn not_a_list<E: de::Error>(kind: &str) -> E {
            Refusal::malformed(format!("must be a list, not {kind}")).raise()
        }
        d.deserialize_any(Items(PhantomData))
    }
}

/// Rejects any key that is not in `allowed`, naming server-owned keys as such.
pub fn reject_unknown(
    obj: &Object,
    allowed: &[&str],
    server_owned: &[&str],
    what: &str,
) -> Result<(), DomainError> {
    for key in obj.keys() {
        if allowed.contains(&key.as_str()) {
            continue;
        }
        let shown = printable(key, 64);
        return Err(DomainError::UnknownField(
            if server_owned.contains(&key.as_str()) {
                format!("{shown} is set by the server and cannot be given in a {what}")
            } else {
                format!(
                    "Unknown field {shown} in a {what}; allowed fields: {}",
                    allowed.join(", ")
                )
            },
        ));
    }
    Ok(())
}

/// A string field: `Ok(None)` when absent or null, else the refusal's reason.
pub fn string(value: Option<Value>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("must be a string, not {}", json_kind(&other))),
    }
}

/// A required string field: the string, else the refusal `malformed` makes of the reason, or
/// `missing` when absent or null.
pub fn required_string(
    value: Option<Value>,
    malformed: fn(String) -> Refusal,
    missing: Refusal,
) -> Result<String, Refusal> {
    string(value).map_err(malformed)?.ok_or(missing)
}

/// An integer given as a JSON integer or as a string holding one (some clients send `"2"`);
/// the refusal's reason.
pub fn int_value(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("must be an integer, not {n}")),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("must be an integer, not {:?}", printable(s, 40)));
            }
            t.parse::<i64>()
                .map_err(|_| format!("{} is out of range", printable(s, 40)))
        }
        other => Err(format!("must be an integer, not {}", json_kind(other))),
    }
}

/// An integer in `MIN..=MAX` that may also come as a string holding one (`"2"`), as some
/// clients send. `api::body` documents it (integer, or a string of digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IntLike<const MIN: i64, const MAX: i64>(pub i64);

/// Bounds of the integers that may come as strings: a reservation's `min`/`max`, and a host's
/// integer facts (up to 2^53, what a JSON number holds exactly).
pub type Count = IntLike<1, 2147483647>;
pub type FactInt = IntLike<0, 9007199254740992>;

impl<const MIN: i64, const MAX: i64> IntLike<MIN, MAX> {
    /// Checks a present value; named by its path.
    pub fn check(value: &Value) -> Result<Self, Refusal> {
        let n = int_value(value).map_err(Refusal::malformed)?;
        if (MIN..=MAX).contains(&n) {
            return Ok(Self(n));
        }
        Err(if MIN == 1 {
            // A count: upstream's text names both `min` and `max` when one is below one.
            if n < 1 {
                Refusal::BelowOne(n)
            } else {
                Refusal::malformed(format!("must be between 1 and {MAX} (got {n})"))
            }
        } else {
            Refusal::malformed("must be between 0 and 2^53")
        })
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for IntLike<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, |v| match v {
            None => Err(Refusal::missing()),
            Some(v) => Self::check(&v),
        })
    }
}

field_type! {
    /// A boolean field (`private`).
    Flag(bool), |v| match v {
        None => Err(Refusal::missing()),
        Some(Value::Bool(b)) => Ok(Flag(b)),
        Some(other) => Err(Refusal::malformed(format!(
            "must be true or false, not {}",
            json_kind(&other)
        ))),
    }
}

/// Checks a free-text value: length in characters and no control characters; the reason.
pub fn text_rule(value: &str, min: usize, max: usize) -> Result<(), String> {
    let len = value.chars().count();
    if len < min {
        return Err(if min == 1 {
            "must not be empty".to_string()
        } else {
            format!("must be at least {min} characters long")
        });
    }
    if len > max {
        return Err(format!("must be at most {max} characters long (got {len})"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// What kind of JSON value this is, for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value made safe to echo in a message: control characters escaped, length capped.
pub fn printable(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max_chars)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().count() > max_chars {
        out.push('…');
    }
    format!("'{out}'")
}

/// A value printed bare, as upstream prints it (`Bogus-date 13:13 is an invalid date. ...`):
/// as given but for control characters, which are escaped, and capped in length.
pub fn echo(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    for c in s.chars().take(max_chars) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out
}

// Upstream builds some messages with Python's `%s` of a dict or list (`Object with
// {'lease_id': 'x'} not found`, `Can't add extracapabilities ['gpu'] to Host 3`). Clients match
// on those texts, so ours print values the way Python's repr() does.

/// Python's `repr()` of a string: single quotes unless the text holds one and no double quote;
/// control characters escaped; capped at `max_chars` (with `…` inside the quotes).
pub fn py_str(s: &str, max_chars: usize) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars().take(max_chars) {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a JSON value as `json.loads` gives it (`['==', '$gpu', True]`,
/// `{'gpu': 'x'}`). Object keys come in the order serde_json keeps them (sorted), where Python
/// keeps the body's order.
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => py_number(n),
        Value::String(s) => py_str(s, 200),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", py_str(k, 200), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `str()` of a JSON number: integers as digits, floats as Python prints them
/// (`4.5`, `1.0`, `1e+20`, `1e-05`).
pub fn py_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    py_float(n.as_f64().unwrap_or(0.0))
}

/// Python's `repr(float)`: the shortest digits that round-trip (as Rust finds them), written
/// positionally when the exponent is in -4..16 and in scientific notation otherwise.
pub fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "4.5e0", "1e20", "-1.25e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let frac = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{frac}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A body of one count, to read integers through the converter.
    #[derive(Debug, Deserialize)]
    struct Probe {
        #[allow(dead_code)]
        min: Count,
    }
    impl Body for Probe {}

    fn probe(v: Value) -> Result<i64, DomainError> {
        let body = json!({ "min": v });
        parse::<Probe>(body.as_object().unwrap()).map(|p| p.min.0)
    }

    #[test]
    fn integers_may_come_as_strings() {
        assert_eq!(probe(json!(2)).unwrap(), 2);
        assert_eq!(probe(json!("2")).unwrap(), 2);
        assert_eq!(probe(json!(" 3 ")).unwrap(), 3);
        for bad in [
            json!(1.5),
            json!("1.5"),
            json!("x"),
            json!(true),
            json!([1]),
            json!(""),
        ] {
            let e = probe(bad).unwrap_err().to_string();
            assert!(e.contains("min"), "{e}");
        }
        let huge = probe(json!("99999999999999999999")).unwrap_err();
        assert!(huge.to_string().contains("out of range"));
        let huge = probe(json!(18446744073709551615u64)).unwrap_err();
        assert!(huge.to_string().contains("integer"));
        let e = probe(json!(null)).unwrap_err();
        assert_eq!(e.to_string(), "Missing parameter min");
        let e = parse::<Probe>(&Object::new()).unwrap_err();
        assert_eq!(e.to_string(), "Missing parameter min");
    }

    #[test]
    fn fields_come_from_the_type() {
        assert_eq!(fields_of::<Probe>(), ["min"]);
    }

    #[test]
    fn unknown_and_server_owned_fields_are_named() {
        let obj = json!({"name": "x", "project_id": "p"});
        let obj = obj.as_object().unwrap();
        let e = reject_unknown(obj, &["name"], &["project_id"], "lease").unwrap_err();
        assert!(
            e.to_string().contains("'project_id' is set by the server"),
            "{e}"
        );
        let obj = json!({"colour": 1});
        let e = reject_unknown(obj.as_object().unwrap(), &["name"], &[], "lease").unwrap_err();
        assert!(e.to_string().contains("Unknown field 'colour'"), "{e}");
    }

    #[test]
    fn echo_keeps_quotes_and_escapes_controls() {
        assert_eq!(echo(r#"["bogus" 'x'"#, 64), r#"["bogus" 'x'"#);
        assert_eq!(echo("a\nb", 64), "a\\nb");
        assert_eq!(echo("abcdef", 3), "abc…");
    }

    #[test]
    fn python_reprs() {
        assert_eq!(py_str("abc", 64), "'abc'");
        assert_eq!(py_str("it's", 64), "\"it's\"");
        assert_eq!(py_str("a'b\"c", 64), "'a\\'b\"c'");
        assert_eq!(py_str("a\nb\u{7}", 64), "'a\\nb\\x07'");
        assert_eq!(py_str("x".repeat(5).as_str(), 3), "'xxx…'");
        assert_eq!(
            py_repr(&json!(["==", "$gpu", true, null, 4, 4.5, {"k": "v"}])),
            "['==', '$gpu', True, None, 4, 4.5, {'k': 'v'}]"
        );
        for (f, want) in [
            (4.5, "4.5"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (1e20, "1e+20"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.25e-7, "-1.25e-07"),
            (1.5e300, "1.5e+300"),
        ] {
            assert_eq!(py_float(f), want, "{f}");
        }
        assert_eq!(py_number(&serde_json::Number::from(4)), "4");
        assert_eq!(
            py_number(&serde_json::Number::from(u64::MAX)),
            "18446744073709551615"
        );
    }

    #[test]
    fn text_rules() {
        assert!(text_rule("ok", 1, 80).is_ok());
        assert!(text_rule("", 1, 80).is_err());
        assert!(text_rule(&"x".repeat(81), 1, 80).is_err());
        assert!(text_rule("a\u{0}b", 1, 80).is_err());
        assert!(text_rule("ünïcødé", 1, 80).is_ok());
    }
}
