//! `Idempotency-Key` (IETF httpapi draft): the key's syntax, and the fingerprint of a request
//! body that tells a retry (same body) from a reuse of the key for another request.

use serde_json::{Map, Value};

use super::DomainError;

/// Longest key accepted; the draft recommends UUIDs (36 characters).
pub const MAX_KEY_LEN: usize = 255;

/// A key as sent: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        // The draft makes the key an sf-string, so clients may send it quoted.
        let key = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DomainError::malformed(
                "Idempotency-Key",
                format!(
                    "must be 1 to {MAX_KEY_LEN} visible ASCII characters (no spaces), such as a \
                     UUID"
                ),
            ));
        }
        Ok(Self(key.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 (hex) of the body in canonical JSON (keys sorted at every level, no spaces): the
/// same object sent with its keys in another order or other spacing is the same request.
pub fn fingerprint(body: &Map<String, Value>) -> String {
    let mut out = String::new();
    canonical_object(body, &mut out);
    hex_sha256(out.as_bytes())
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn canonical_object(map: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        canonical(&map[k], out);
    }
    out.push('}');
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => canonical_object(m, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_syntax() {
        assert_eq!(IdempotencyKey::parse("abc-1").unwrap().as_str(), "abc-1");
        assert_eq!(IdempotencyKey::parse("\"abc\"").unwrap().as_str(), "abc");
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "\"\"", "a b", "é", "a\tb"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn fingerprint_ignores_key_order_not_values() {
        let a = json!({"name": "x", "r": [{"min": 1, "max": 2}]});
        let b: Value =
            serde_json::from_str(r#"{ "r" : [ {"max":2,"min":1} ], "name":"x" }"#).unwrap();
        let c = json!({"name": "x", "r": [{"min": 1, "max": 3}]});
        let f = |v: &Value| fingerprint(v.as_object().unwrap());
        assert_eq!(f(&a), f(&b));
        assert_ne!(f(&a), f(&c));
        assert_eq!(f(&a).len(), 64);
    }
}
