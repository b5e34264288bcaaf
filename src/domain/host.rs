//! Host rules: which body keys are hardware facts, which are extra capabilities, and their limits.
//!
//! With no Nova here, a host's hardware facts (vcpus, memory_mb, ...) come from the create body;
//! every other key is an extra capability, stored and shown as a string (numbers and booleans
//! are accepted and stored as their text, as upstream stores `str()` of them).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    DomainError,
    input::{self, Object},
};

pub const MAX_HOSTNAME_CHARS: usize = 255;
pub const MAX_CAPABILITY_KEY_CHARS: usize = 64;
pub const MAX_CAPABILITY_VALUE_CHARS: usize = 255;
pub const MAX_CAPABILITIES: usize = 256;
const MAX_CPU_INFO_CHARS: usize = 16 * 1024;
const MAX_FACT_TEXT_CHARS: usize = 255;

/// Integer hardware facts.
pub const INT_FACTS: &[&str] = &["vcpus", "memory_mb", "local_gb", "hypervisor_version"];
/// Text hardware facts.
pub const TEXT_FACTS: &[&str] = &[
    "hypervisor_type",
    "cpu_info",
    "service_name",
    "availability_zone",
];
/// Keys that describe the host record itself and can never be set through the API.
pub const SERVER_OWNED: &[&str] = &[
    "id",
    "hypervisor_hostname",
    "status",
    "reservable",
    "trust_id",
    "created_at",
    "updated_at",
];

/// Hardware facts given in a body; `None` means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactsInput {
    pub vcpus: Option<i64>,
    pub memory_mb: Option<i64>,
    pub local_gb: Option<i64>,
    pub hypervisor_version: Option<i64>,
    pub hypervisor_type: Option<String>,
    pub cpu_info: Option<String>,
    pub service_name: Option<String>,
    pub availability_zone: Option<String>,
}

impl FactsInput {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The names of the facts given.
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("vcpus", self.vcpus.is_some()),
            ("memory_mb", self.memory_mb.is_some()),
            ("local_gb", self.local_gb.is_some()),
            ("hypervisor_version", self.hypervisor_version.is_some()),
            ("hypervisor_type", self.hypervisor_type.is_some()),
            ("cpu_info", self.cpu_info.is_some()),
            ("service_name", self.service_name.is_some()),
            ("availability_zone", self.availability_zone.is_some()),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(k, _)| k)
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostRequest {
    pub name: String,
    pub facts: FactsInput,
    pub capabilities: BTreeMap<String, String>,
}

/// A host update: facts to set, capabilities to set (`Some`) or remove (`None`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostChanges {
    pub facts: FactsInput,
    pub capabilities: BTreeMap<String, Option<String>>,
}

pub fn parse_create(body: &Object) -> Result<HostRequest, DomainError> {
    let Some(name) = input::opt_str(body, "name")? else {
        // Upstream's InvalidHost prints what is left of the body once it has taken out the
        // host's name and id.
        let rest: Object = body
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "name" | "id" | "trust_id"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut rest = input::py_repr(&Value::Object(rest));
        if rest.chars().count() > 400 {
            rest = rest.chars().take(400).chain(['…']).collect();
        }
        return Err(DomainError::InvalidHost(format!(
            "{rest}: Missing parameter name (the hypervisor hostname of the host to enrol)"
        )));
    };
    input::check_text("name", name, 1, MAX_HOSTNAME_CHARS)?;
    let mut facts = FactsInput::default();
    let mut capabilities = BTreeMap::new();
    for (key, value) in body {
        if key == "name" {
            continue;
        }
        if take_fact(&mut facts, key, value)? {
            continue;
        }
        check_key(key, "host")?;
        let v = capability_value(key, value)?.ok_or_else(|| {
            DomainError::malformed(
                input::printable(key, 40),
                "a capability value must be a string, number or boolean, not null",
            )
        })?;
        capabilities.insert(key.clone(), v);
    }
    check_count(capabilities.len())?;
    Ok(HostRequest {
        name: name.to_string(),
        facts,
        capabilities,
    })
}

/// Parses an update body: the seed's `{"values": {...}}` or the flat `{"k": "v"}` the CLI sends.
/// A null value removes the capability.
pub fn parse_update(body: &Object) -> Result<HostChanges, DomainError> {
    // `values` is the seed's wrapper, so it cannot also be a capability's name.
    let flat = match body.get("values") {
        None => body,
        Some(Value::Object(values)) if body.len() == 1 => values,
        Some(Value::Object(_)) => {
            return Err(DomainError::malformed(
                "values",
                "must be the only key of the body (or send the capabilities flat)",
            ));
        }
        Some(other) => {
            return Err(DomainError::malformed(
                "values",
                format!(
                    "must be an object of capabilities, not {}",
                    input::json_kind(other)
                ),
            ));
        }
    };
    let mut changes = HostChanges::default();
    for (key, value) in flat {
        if key == "name" {
            return Err(DomainError::UnknownField(
                "'name' (the hypervisor hostname) cannot be changed; enrol the host again instead"
                    .into(),
            ));
        }
        if take_fact(&mut changes.facts, key, value)? {
            continue;
        }
        check_key(key, "host update")?;
        changes
            .capabilities
            .insert(key.clone(), capability_value(key, value)?);
    }
    if changes.facts.is_empty() && changes.capabilities.is_empty() {
        return Err(DomainError::InvalidInput(
            "No data to update: give capabilities as {\"key\": \"value\"} or {\"values\": {...}}"
                .into(),
        ));
    }
    check_count(changes.capabilities.len())?;
    Ok(changes)
}

/// Stores `key` in `facts` when it names a fact; returns whether it did.
fn take_fact(facts: &mut FactsInput, key: &str, value: &Value) -> Result<bool, DomainError> {
    if INT_FACTS.contains(&key) {
        let n = input::int_value(key, value)?;
        if !(0..=(1i64 << 53)).contains(&n) {
            return Err(DomainError::malformed(key, "must be between 0 and 2^53"));
        }
        let slot = match key {
            "vcpus" => &mut facts.vcpus,
            "memory_mb" => &mut facts.memory_mb,
            "local_gb" => &mut facts.local_gb,
            _ => &mut facts.hypervisor_version,
        };
        *slot = Some(n);
        return Ok(true);
    }
    if TEXT_FACTS.contains(&key) {
        let Value::String(s) = value else {
            return Err(DomainError::malformed(
                key,
                format!("must be a string, not {}", input::json_kind(value)),
            ));
        };
        let max = if key == "cpu_info" {
            MAX_CPU_INFO_CHARS
        } else {
            MAX_FACT_TEXT_CHARS
        };
        input::check_text(key, s, 0, max)?;
        let slot = match key {
            "hypervisor_type" => &mut facts.hypervisor_type,
            "cpu_info" => &mut facts.cpu_info,
            "service_name" => &mut facts.service_name,
            _ => &mut facts.availability_zone,
        };
        *slot = Some(s.clone());
        return Ok(true);
    }
    Ok(false)
}

fn check_key(key: &str, what: &str) -> Result<(), DomainError> {
    if SERVER_OWNED.contains(&key) {
        return Err(DomainError::UnknownField(format!(
            "'{key}' is set by the server and cannot be given in a {what}"
        )));
    }
    let len = key.chars().count();
    if len > MAX_CAPABILITY_KEY_CHARS {
        return Err(DomainError::ExtraCapabilityTooLong(format!(
            "{} has {len} characters; at most {MAX_CAPABILITY_KEY_CHARS} are allowed",
            input::printable(key, 40)
        )));
    }
    input::check_text("capability name", key, 1, MAX_CAPABILITY_KEY_CHARS)
}

/// A capability value: a string (as the CLI sends), a number or a boolean (as a REST caller
/// naturally sends `{"gpus": 4}`), stored as text; or null (remove it). Numbers are stored as
/// Python's `str()` writes them (`4`, `4.5`), as upstream does; booleans as JSON writes them
/// (`true`, `false`), not Python's `True`: docs/api.md says why.
fn capability_value(key: &str, value: &Value) -> Result<Option<String>, DomainError> {
    let v = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Number(n) => input::py_number(n),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(DomainError::malformed(
                input::printable(key, 40),
                format!(
                    "a capability value must be a string, number or boolean, not {}",
                    input::json_kind(other)
                ),
            ));
        }
    };
    input::check_text(
        &input::printable(key, 40),
        &v,
        0,
        MAX_CAPABILITY_VALUE_CHARS,
    )?;
    Ok(Some(v))
}

fn check_count(n: usize) -> Result<(), DomainError> {
    if n > MAX_CAPABILITIES {
        return Err(DomainError::InvalidInput(format!(
            "a host may have at most {MAX_CAPABILITIES} extra capabilities (got {n})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Object {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn create_splits_facts_from_capabilities() {
        let r = parse_create(&obj(json!({
            "name": "compute-1", "vcpus": "8", "memory_mb": 4096, "gpu": "true", "rack": "4"
        })))
        .unwrap();
        assert_eq!(r.name, "compute-1");
        assert_eq!(r.facts.vcpus, Some(8));
        assert_eq!(r.facts.memory_mb, Some(4096));
        assert_eq!(r.capabilities["gpu"], "true");
        assert_eq!(r.capabilities["rack"], "4");
    }

    #[test]
    fn create_errors() {
        for (body, needle) in [
            (
                json!({}),
                "Invalid values for host {}: Missing parameter name",
            ),
            (
                json!({"gpu": "x", "id": "3"}),
                "Invalid values for host {'gpu': 'x'}: Missing parameter name",
            ),
            (json!({"name": ""}), "name: must not be empty"),
            (json!({"name": "h", "id": "3"}), "'id' is set by the server"),
            (
                json!({"name": "h", "reservable": false}),
                "'reservable' is set by the server",
            ),
            (
                json!({"name": "h", "vcpus": -1}),
                "vcpus: must be between 0",
            ),
            (
                json!({"name": "h", "vcpus": "many"}),
                "vcpus: must be an integer",
            ),
            (json!({"name": "h", "gpu": null}), "not null"),
            (json!({"name": "h", "gpu": {"a": 1}}), "not an object"),
            (json!({"name": "h", "gpu": [true]}), "not an array"),
            (json!({"name": "h", "gpu": "a\nb"}), "control characters"),
        ] {
            let e = parse_create(&obj(body.clone())).unwrap_err().to_string();
            assert!(e.contains(needle), "{body}: {e}");
        }
        let long_key = "k".repeat(65);
        let e = parse_create(&obj(json!({"name": "h", long_key: "v"}))).unwrap_err();
        assert!(
            e.to_string().starts_with("Extra capability key too long"),
            "{e}"
        );
        assert_eq!(e.name(), "MalformedParameter");
        let e = parse_create(&obj(json!({"gpu": "x"}))).unwrap_err();
        assert_eq!(e.name(), "MissingParameter");
    }

    #[test]
    fn scalar_capability_values_are_stored_as_text() {
        let r = parse_create(&obj(json!({
            "name": "h", "gpus": 4, "fast": true, "slow": false, "ratio": 4.5, "big": 1e20,
            "neg": -3
        })))
        .unwrap();
        for (k, want) in [
            ("gpus", "4"),
            ("fast", "true"),
            ("slow", "false"),
            ("ratio", "4.5"),
            ("big", "1e+20"),
            ("neg", "-3"),
        ] {
            assert_eq!(r.capabilities[k], want, "{k}");
        }
        let u = parse_update(&obj(json!({"gpus": 8, "fast": false, "gone": null}))).unwrap();
        assert_eq!(u.capabilities["gpus"], Some("8".into()));
        assert_eq!(u.capabilities["fast"], Some("false".into()));
        assert_eq!(u.capabilities["gone"], None);
        let u = parse_update(&obj(json!({"values": {"gpus": 2}}))).unwrap();
        assert_eq!(u.capabilities["gpus"], Some("2".into()));
        for bad in [json!({"gpus": [4]}), json!({"gpus": {"n": 4}})] {
            let e = parse_update(&obj(bad.clone())).unwrap_err();
            assert_eq!(e.name(), "MalformedParameter", "{bad}");
        }
    }

    #[test]
    fn update_accepts_both_forms_and_null_removes() {
        let seed = parse_update(&obj(json!({"values": {"banana": "false"}}))).unwrap();
        assert_eq!(seed.capabilities["banana"], Some("false".into()));
        let flat = parse_update(&obj(json!({"banana": "false", "gpu": null}))).unwrap();
        assert_eq!(flat.capabilities["banana"], Some("false".into()));
        assert_eq!(flat.capabilities["gpu"], None);
        let facts = parse_update(&obj(json!({"vcpus": 16}))).unwrap();
        assert_eq!(facts.facts.vcpus, Some(16));
        let e = parse_update(&obj(json!({}))).unwrap_err();
        assert!(e.to_string().contains("No data to update"));
        let e = parse_update(&obj(json!({"values": {}}))).unwrap_err();
        assert!(e.to_string().contains("No data to update"));
        let e = parse_update(&obj(json!({"name": "x"}))).unwrap_err();
        assert!(e.to_string().contains("cannot be changed"));
        let e = parse_update(&obj(json!({"values": "AAA", "vcpus": "0"}))).unwrap_err();
        assert!(e.to_string().contains("values: must be an object"), "{e}");
        let e = parse_update(&obj(json!({"values": {"a": "b"}, "vcpus": "0"}))).unwrap_err();
        assert!(e.to_string().contains("only key"), "{e}");
    }
}
