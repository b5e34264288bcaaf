//! Reading request bodies field by field, with errors that name the field.
//!
//! Bodies arrive as raw JSON (`api::types::RawBody`) so that every mistake gets a message saying
//! which field is wrong and why, instead of a generic deserializer error.

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
        assert!(check_text("name", "ok", 1, 80).is_ok());
        assert!(check_text("name", "", 1, 80).is_err());
        assert!(check_text("name", &"x".repeat(81), 1, 80).is_err());
        assert!(check_text("name", "a\u{0}b", 1, 80).is_err());
        assert!(check_text("name", "ünïcødé", 1, 80).is_ok());
    }
}
