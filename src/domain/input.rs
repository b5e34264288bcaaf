//! Reading request bodies field by field, with errors that name the field.
//!
//! Bodies arrive as raw JSON (see `api::body`) so that every mistake gets a message saying which
//! field is wrong and why, instead of a generic deserializer error.

use serde_json::{Map, Value};

use super::DomainError;

pub type Object = Map<String, Value>;

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

/// A string field; `None` when absent or null.
pub fn opt_str<'a>(obj: &'a Object, name: &str) -> Result<Option<&'a str>, DomainError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(DomainError::malformed(
            name,
            format!("must be a string, not {}", json_kind(other)),
        )),
    }
}

/// A required string field.
pub fn req_str<'a>(obj: &'a Object, name: &str) -> Result<&'a str, DomainError> {
    opt_str(obj, name)?.ok_or_else(|| DomainError::MissingParameter(name.into()))
}

/// An integer given as a JSON integer or as a string holding one (some clients send `"2"`).
pub fn int_value(name: &str, value: &Value) -> Result<i64, DomainError> {
    let bad = |why: String| DomainError::malformed(name, why);
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| bad(format!("must be an integer, not {n}"))),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!(
                    "must be an integer, not {:?}",
                    printable(s, 40)
                )));
            }
            t.parse::<i64>()
                .map_err(|_| bad(format!("{} is out of range", printable(s, 40))))
        }
        other => Err(bad(format!("must be an integer, not {}", json_kind(other)))),
    }
}

pub fn opt_int(obj: &Object, name: &str) -> Result<Option<i64>, DomainError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => int_value(name, v).map(Some),
    }
}

pub fn opt_bool(obj: &Object, name: &str) -> Result<Option<bool>, DomainError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(DomainError::malformed(
            name,
            format!("must be true or false, not {}", json_kind(other)),
        )),
    }
}

/// Checks a free-text value: length in characters and no control characters.
pub fn check_text(name: &str, value: &str, min: usize, max: usize) -> Result<(), DomainError> {
    let len = value.chars().count();
    if len < min {
        return Err(DomainError::malformed(
            name,
            if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {min} characters long")
            },
        ));
    }
    if len > max {
        return Err(DomainError::malformed(
            name,
            format!("must be at most {max} characters long (got {len})"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::malformed(
            name,
            "must not contain control characters",
        ));
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn integers_may_come_as_strings() {
        assert_eq!(int_value("min", &json!(2)).unwrap(), 2);
        assert_eq!(int_value("min", &json!("2")).unwrap(), 2);
        assert_eq!(int_value("min", &json!(" 3 ")).unwrap(), 3);
        for bad in [
            json!(1.5),
            json!("1.5"),
            json!("x"),
            json!(true),
            json!([1]),
            json!(""),
        ] {
            let e = int_value("min", &bad).unwrap_err().to_string();
            assert!(e.contains("min"), "{e}");
        }
        let huge = int_value("max", &json!("99999999999999999999")).unwrap_err();
        assert!(huge.to_string().contains("out of range"));
        let huge = int_value("max", &json!(18446744073709551615u64)).unwrap_err();
        assert!(huge.to_string().contains("integer"));
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
    fn text_rules() {
        assert!(check_text("name", "ok", 1, 80).is_ok());
        assert!(check_text("name", "", 1, 80).is_err());
        assert!(check_text("name", &"x".repeat(81), 1, 80).is_err());
        assert!(check_text("name", "a\u{0}b", 1, 80).is_err());
        assert!(check_text("name", "ünïcødé", 1, 80).is_ok());
    }
}
