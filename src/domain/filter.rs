//! The host filter language of `hypervisor_properties` and `resource_properties`.
//!
//! Upstream's JSON form, a string holding JSON: `["==", "$vcpus", "2"]`,
//! `["and", [">=", "$memory_mb", "4096"], ["==", "$gpu", "true"]]`, operators `== = != < <= > >=`.
//! We also accept `or`, `not` and `in` (`["in", "$gpu_model", "a100", "h100"]`), numbers and
//! booleans as values, and nesting at any level (upstream drops conditions in a nested `and`).
//! Comparisons are numeric when both sides are numbers (upstream compares strings, so "10" < "9").
//! A key that a host lacks makes that leaf false for that host (so `not` of it is true).

#[cfg(test)]
use std::borrow::Cow;
use std::{cmp::Ordering, collections::BTreeSet};

use serde_json::Value;

use super::{DomainError, input::printable};

/// Longest filter string accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;
/// Deepest nesting of `and`/`or`/`not` accepted.
pub const MAX_FILTER_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

// Eq and Hash: the placement copy remembers which hosts each filter it has seen matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// No condition: every host matches.
    All,
    Cmp {
        op: Op,
        key: String,
        value: String,
    },
    In {
        key: String,
        values: Vec<String>,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

/// What a filter reads from a host: a column or an extra capability, as text. Only the tests'
/// oracle ([`Filter::matches`]) reads hosts this way; placement matches [`Compiled`] filters.
#[cfg(test)]
pub trait Attributes {
    fn attribute(&self, key: &str) -> Option<Cow<'_, str>>;
}

/// A host attribute as filters compare it: its text, and its number when it is one (parsed once).
#[derive(Debug, Clone, PartialEq)]
pub struct AttrValue {
    pub text: String,
    pub num: Option<f64>,
}

impl AttrValue {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let num = as_number(&text);
        Self { text, num }
    }

    fn compare(&self, wanted: &AttrValue) -> Ordering {
        match (self.num, wanted.num) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            _ => self.text.as_str().cmp(wanted.text.as_str()),
        }
    }
}

/// A filter whose keys were resolved once to attribute ids, so that matching thousands of hosts
/// compares integers and pre-parsed numbers instead of names and strings.
#[derive(Debug, Clone)]
pub enum Compiled {
    All,
    /// A key no host has: the leaf is false for every host.
    Never,
    Cmp {
        op: Op,
        key: u32,
        value: AttrValue,
    },
    In {
        key: u32,
        values: Vec<AttrValue>,
    },
    And(Vec<Compiled>),
    Or(Vec<Compiled>),
    Not(Box<Compiled>),
}

impl Compiled {
    /// `get(key)` returns the host's value of attribute `key`, if it has one.
    pub fn matches<'a>(&self, get: &impl Fn(u32) -> Option<&'a AttrValue>) -> bool {
        match self {
            Compiled::All => true,
            Compiled::Never => false,
            Compiled::Cmp { op, key, value } => {
                get(*key).is_some_and(|a| op.holds(a.compare(value)))
            }
            Compiled::In { key, values } => {
                get(*key).is_some_and(|a| values.iter().any(|v| a.compare(v) == Ordering::Equal))
            }
            Compiled::And(parts) => parts.iter().all(|p| p.matches(get)),
            Compiled::Or(parts) => parts.iter().any(|p| p.matches(get)),
            Compiled::Not(inner) => !inner.matches(get),
        }
    }
}

impl Filter {
    /// Parses one filter field. `""` means no condition.
    pub fn parse(field: &str, text: &str) -> Result<Filter, DomainError> {
        // Upstream prints the text itself when it is not JSON, else the part it could not read.
        let err = |reason: String| DomainError::MalformedRequirements {
            name: field.to_string(),
            requirements: super::input::echo(text, 200),
            reason,
        };
        if text.trim().is_empty() {
            return Ok(Filter::All);
        }
        if text.len() > MAX_FILTER_BYTES {
            return Err(err(format!(
                "the filter is {} bytes long; the limit is {MAX_FILTER_BYTES}",
                text.len()
            )));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            if e.to_string().contains("recursion limit") {
                err(format!("nested deeper than {MAX_FILTER_DEPTH} levels"))
            } else {
                err(format!("not valid JSON ({e})"))
            }
        })?;
        parse_node(&value, 0).map_err(|bad| DomainError::MalformedRequirements {
            name: field.to_string(),
            requirements: bad.node,
            reason: bad.why,
        })
    }

    /// Whether `host` matches, read straight from the filter: the oracle that the tests hold
    /// [`Compiled::matches`] and the language's rules to.
    #[cfg(test)]
    pub fn matches(&self, host: &impl Attributes) -> bool {
        match self {
            Filter::All => true,
            Filter::Cmp { op, key, value } => host
                .attribute(key)
                .is_some_and(|actual| op.holds(compare(&actual, value))),
            Filter::In { key, values } => host.attribute(key).is_some_and(|actual| {
                values
                    .iter()
                    .any(|v| compare(&actual, v) == Ordering::Equal)
            }),
            Filter::And(parts) => parts.iter().all(|f| f.matches(host)),
            Filter::Or(parts) => parts.iter().any(|f| f.matches(host)),
            Filter::Not(inner) => !inner.matches(host),
        }
    }

    /// Resolves keys with `id_of` (None: no host has this key).
    pub fn compile(&self, id_of: &impl Fn(&str) -> Option<u32>) -> Compiled {
        let leaf = |key: &str, make: &dyn Fn(u32) -> Compiled| match id_of(key) {
            Some(id) => make(id),
            None => Compiled::Never,
        };
        match self {
            Filter::All => Compiled::All,
            Filter::Cmp { op, key, value } => leaf(key, &|id| Compiled::Cmp {
                op: *op,
                key: id,
                value: AttrValue::new(value.clone()),
            }),
            Filter::In { key, values } => leaf(key, &|id| Compiled::In {
                key: id,
                values: values.iter().map(|v| AttrValue::new(v.clone())).collect(),
            }),
            Filter::And(parts) => Compiled::And(parts.iter().map(|p| p.compile(id_of)).collect()),
            Filter::Or(parts) => Compiled::Or(parts.iter().map(|p| p.compile(id_of)).collect()),
            Filter::Not(inner) => Compiled::Not(Box::new(inner.compile(id_of))),
        }
    }

    /// The keys (without `$`) this filter reads.
    pub fn keys(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.collect_keys(&mut out);
        out
    }

    fn collect_keys<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        match self {
            Filter::All => {}
            Filter::Cmp { key, .. } | Filter::In { key, .. } => {
                out.insert(key.as_str());
            }
            Filter::And(parts) | Filter::Or(parts) => {
                parts.iter().for_each(|p| p.collect_keys(out));
            }
            Filter::Not(inner) => inner.collect_keys(out),
        }
    }

    /// Both filters must hold (how upstream combines the two filter fields).
    pub fn and(self, other: Filter) -> Filter {
        match (self, other) {
            (Filter::All, f) | (f, Filter::All) => f,
            (a, b) => Filter::And(vec![a, b]),
        }
    }
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "==" | "=" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => return None,
        })
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
        }
    }
}

/// Numbers compare as numbers, anything else as text (the oracle's; [`AttrValue`] parses once).
#[cfg(test)]
fn compare(actual: &str, wanted: &str) -> Ordering {
    match (as_number(actual), as_number(wanted)) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        _ => actual.cmp(wanted),
    }
}

fn as_number(s: &str) -> Option<f64> {
    let t = s.trim();
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    let mut parts = body.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let ok = match frac {
        None => digits_ok(int),
        Some(f) => digits_ok(int) && digits_ok(f),
    };
    if ok {
        t.parse().ok().filter(|v: &f64| v.is_finite())
    } else {
        None
    }
}

/// A part of a filter that cannot be read: the part as Python's repr() shows it (what upstream
/// names in its message), and why.
struct Bad {
    node: String,
    why: String,
}

fn parse_node(v: &Value, depth: usize) -> Result<Filter, Bad> {
    parse_condition(v, depth).map_err(|why| match why {
        Inner::Here(why) => {
            let mut node: String = super::input::py_repr(v);
            if node.chars().count() > 200 {
                node = node.chars().take(200).chain(['…']).collect();
            }
            Bad { node, why }
        }
        Inner::Below(bad) => bad,
    })
}

/// Where a condition failed: in itself, or in one of its parts (already described).
enum Inner {
    Here(String),
    Below(Bad),
}

impl From<String> for Inner {
    fn from(why: String) -> Self {
        Inner::Here(why)
    }
}

impl From<&str> for Inner {
    fn from(why: &str) -> Self {
        Inner::Here(why.to_string())
    }
}

fn parse_condition(v: &Value, depth: usize) -> Result<Filter, Inner> {
    if depth > MAX_FILTER_DEPTH {
        return Err(format!("nested deeper than {MAX_FILTER_DEPTH} levels").into());
    }
    let items = v.as_array().ok_or_else(|| {
        format!(
            "expected a list such as [\"==\", \"$key\", \"value\"], found {}",
            super::input::json_kind(v)
        )
    })?;
    let Some(head) = items.first() else {
        return Ok(Filter::All);
    };
    let head = head
        .as_str()
        .ok_or("the first element of a condition must be an operator string")?;
    let rest = &items[1..];
    match head {
        "and" | "or" => {
            if rest.is_empty() {
                return Err(format!("\"{head}\" needs at least one condition").into());
            }
            let parts = rest
                .iter()
                .map(|c| parse_node(c, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Inner::Below)?;
            Ok(if head == "and" {
                Filter::And(parts)
            } else {
                Filter::Or(parts)
            })
        }
        "not" => {
            if rest.len() != 1 {
                return Err("\"not\" takes exactly one condition".into());
            }
            Ok(Filter::Not(Box::new(
                parse_node(&rest[0], depth + 1).map_err(Inner::Below)?,
            )))
        }
        "in" => {
            let key = parse_key(rest.first())?;
            let values: Vec<String> = match &rest[1..] {
                [Value::Array(list)] => list.iter().map(parse_value).collect::<Result<_, _>>()?,
                more => more.iter().map(parse_value).collect::<Result<_, _>>()?,
            };
            if values.is_empty() {
                return Err("\"in\" needs at least one value".into());
            }
            Ok(Filter::In { key, values })
        }
        op => {
            let op = Op::parse(op).ok_or_else(|| {
                format!(
                    "unknown operator {}; use one of == = != < <= > >= in and or not",
                    printable(op, 20)
                )
            })?;
            if rest.len() != 2 {
                return Err(format!(
                    "a comparison has three elements [operator, \"$key\", value], found {}",
                    items.len()
                )
                .into());
            }
            Ok(Filter::Cmp {
                op,
                key: parse_key(rest.first())?,
                value: parse_value(&rest[1])?,
            })
        }
    }
}

fn parse_key(v: Option<&Value>) -> Result<String, String> {
    match v {
        Some(Value::String(s)) if s.len() > 1 && s.starts_with('$') => Ok(s[1..].to_string()),
        Some(Value::String(s)) => Err(format!(
            "a key must start with '$' followed by a name, found {}",
            printable(s, 40)
        )),
        _ => Err("a condition needs a key string such as \"$vcpus\"".into()),
    }
}

fn parse_value(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "a value must be a string, number or boolean, found {}",
            super::input::json_kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct H(HashMap<&'static str, &'static str>);
    impl Attributes for H {
        fn attribute(&self, key: &str) -> Option<Cow<'_, str>> {
            self.0.get(key).map(|v| Cow::Borrowed(*v))
        }
    }
    fn host(pairs: &[(&'static str, &'static str)]) -> H {
        H(pairs.iter().copied().collect())
    }
    fn f(s: &str) -> Filter {
        Filter::parse("resource_properties", s).unwrap()
    }

    #[test]
    fn upstream_forms() {
        let h = host(&[
            ("vcpus", "4"),
            ("hypervisor_hostname", "compute-1"),
            ("gpu", "true"),
        ]);
        assert!(f("").matches(&h));
        assert!(f("[]").matches(&h));
        assert!(f(r#"["==", "$hypervisor_hostname", "compute-1"]"#).matches(&h));
        assert!(f(r#"["=", "$vcpus", "4"]"#).matches(&h));
        assert!(!f(r#"["!=", "$vcpus", "4"]"#).matches(&h));
        assert!(f(r#"["and", [">=", "$vcpus", "2"], ["==", "$gpu", "true"]]"#).matches(&h));
        assert!(!f(r#"["and", [">=", "$vcpus", "8"], ["==", "$gpu", "true"]]"#).matches(&h));
    }

    #[test]
    fn numbers_compare_as_numbers() {
        let h = host(&[("memory_mb", "10")]);
        assert!(f(r#"[">", "$memory_mb", "9"]"#).matches(&h));
        assert!(f(r#"["<", "$memory_mb", 100]"#).matches(&h));
        assert!(f(r#"["==", "$memory_mb", "10.0"]"#).matches(&h));
        let h = host(&[("model", "b10")]);
        assert!(
            f(r#"["<", "$model", "b9"]"#).matches(&h),
            "text compares as text"
        );
    }

    #[test]
    fn nested_and_or_not_in() {
        let h = host(&[("a", "1"), ("b", "2")]);
        assert!(
            !f(r#"["and", ["==", "$a", "1"], ["and", ["==", "$b", "2"], ["==", "$a", "9"]]]"#)
                .matches(&h),
            "a nested and keeps all its conditions"
        );
        assert!(f(r#"["or", ["==", "$a", "9"], ["==", "$b", "2"]]"#).matches(&h));
        assert!(f(r#"["not", ["==", "$a", "9"]]"#).matches(&h));
        assert!(f(r#"["in", "$b", "1", "2"]"#).matches(&h));
        assert!(f(r#"["in", "$b", ["3", 2]]"#).matches(&h));
        assert!(!f(r#"["in", "$b", "3"]"#).matches(&h));
    }

    #[test]
    fn missing_keys_never_match_a_leaf() {
        let h = host(&[("a", "1")]);
        assert!(!f(r#"["==", "$gpu", "true"]"#).matches(&h));
        assert!(!f(r#"["!=", "$gpu", "true"]"#).matches(&h));
        assert!(f(r#"["not", ["==", "$gpu", "true"]]"#).matches(&h));
    }

    #[test]
    fn compiled_filters_agree_with_plain_ones() {
        let h = host(&[("vcpus", "10"), ("rack", "b10"), ("a", "1")]);
        let keys = ["vcpus", "rack", "a"];
        let values: Vec<AttrValue> = keys.iter().map(|k| AttrValue::new(h.0[k])).collect();
        let id_of = |k: &str| keys.iter().position(|x| *x == k).map(|i| i as u32);
        let get = |i: u32| values.get(i as usize);
        for text in [
            r#"[">", "$vcpus", "9"]"#,
            r#"["<", "$rack", "b9"]"#,
            r#"["in", "$a", "2", 1]"#,
            r#"["not", ["==", "$gpu", "true"]]"#,
            r#"["!=", "$gpu", "true"]"#,
            r#"["or", ["==", "$a", "9"], ["and", ["==", "$vcpus", "10.0"], ["!=", "$rack", "x"]]]"#,
            "",
        ] {
            let filter = f(text);
            assert_eq!(
                filter.compile(&id_of).matches(&get),
                filter.matches(&h),
                "{text}"
            );
        }
    }

    #[test]
    fn keys_are_collected() {
        let filter = f(r#"["and", ["==", "$a", "1"], ["not", ["in", "$b", "x"]]]"#);
        assert_eq!(
            filter.keys().into_iter().collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn malformed_filters_say_what_is_wrong() {
        for (text, needle) in [
            ("{", "not valid JSON"),
            ("\"x\"", "expected a list"),
            (r#"["~", "$a", "1"]"#, "unknown operator"),
            (r#"["==", "a", "1"]"#, "must start with '$'"),
            (r#"["==", "$", "1"]"#, "must start with '$'"),
            (r#"["==", "$a"]"#, "three elements"),
            (r#"["==", "$a", null]"#, "must be a string"),
            (r#"["and"]"#, "at least one"),
            (
                r#"["not", ["==", "$a", "1"], ["==", "$a", "1"]]"#,
                "exactly one",
            ),
            (r#"["in", "$a"]"#, "at least one value"),
            (r#"[1, 2, 3]"#, "operator string"),
        ] {
            let err = Filter::parse("hypervisor_properties", text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("hypervisor_properties"), "{err}");
        }
    }

    #[test]
    fn depth_and_size_are_limited() {
        let deep = format!(
            "{}[\"==\", \"$a\", \"1\"]{}",
            "[\"not\", ".repeat(40),
            "]".repeat(40)
        );
        let err = Filter::parse("resource_properties", &deep)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested deeper"), "{err}");
        let very_deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let err = Filter::parse("resource_properties", &very_deep)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested deeper"), "{err}");
        let long = format!("[\"==\", \"$a\", \"{}\"]", "x".repeat(MAX_FILTER_BYTES));
        let err = Filter::parse("resource_properties", &long)
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
    }
}
