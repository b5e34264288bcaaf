//! Host rules: the create and update bodies (the types that document and read them), which
//! body keys are hardware facts, which are extra capabilities, and their limits.
//!
//! With no Nova here, a host's hardware facts (vcpus, memory_mb, ...) come from the create body;
//! every other key is an extra capability, stored and shown as a string (numbers and booleans
//! are accepted and stored as their text, as upstream stores `str()` of them).

use std::collections::BTreeMap;

use poem_openapi::Object as Documented;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{
    DomainError,
    input::{self, Body, FactInt, Flag, Object, Refusal, Whole, checked, field_type, fields_of},
};

pub const MAX_HOSTNAME_CHARS: usize = 255;
pub const MAX_CAPABILITY_KEY_CHARS: usize = 64;
pub const MAX_CAPABILITY_VALUE_CHARS: usize = 255;
pub const MAX_CAPABILITIES: usize = 256;
const MAX_CPU_INFO_CHARS: usize = 16 * 1024;
const MAX_FACT_TEXT_CHARS: usize = 255;

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
/// Keys of a resource property that the server owns.
const PROPERTY_SERVER_OWNED: &[&str] = &[
    "id",
    "resource_type",
    "property_name",
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

/// A host to enrol. `name` is its hypervisor hostname; the hardware facts are optional (with no
/// Nova here they come from this body; defaults: 0, `""`, service_name = name); every other key
/// is an extra capability: a string, a number or a boolean, stored and shown as a string
/// (`4` as `"4"`, `4.5` as `"4.5"`, `true` as `"true"`).
#[derive(Debug, Clone, Documented)]
#[oai(rename = "HostCreate")]
pub struct HostCreate {
    /// 1 to 255 characters, no control characters.
    pub name: HostName,
    #[oai(flatten)]
    pub facts: HostFacts,
    #[oai(flatten)]
    pub extra_capabilities: BTreeMap<String, CapabilityValue>,
}

impl Body for HostCreate {}

/// Capabilities to set, flat (`{"gpu": "true"}`, as the CLI sends) or wrapped
/// (`{"values": {"gpu": "true"}}`, as the seed shows). A value is a string, a number or a
/// boolean, stored as a string; a null value removes the capability.
/// Hardware facts (vcpus, memory_mb, ...) may be updated too.
#[derive(Debug, Clone, Default, Documented)]
#[oai(rename = "HostUpdate")]
pub struct HostUpdate {
    /// The seed's form: the capabilities to set, alone in the body.
    // Reading a body moves them into `capabilities` (and facts into `facts`), so this is `None`.
    pub values: Option<BTreeMap<String, CapabilityValue<true>>>,
    #[oai(flatten)]
    pub facts: HostFacts,
    #[oai(flatten)]
    pub capabilities: BTreeMap<String, CapabilityValue<true>>,
}

impl Body for HostUpdate {}

/// The hardware facts a host body may give.
#[derive(Debug, Clone, Default, PartialEq, Documented)]
#[oai(rename = "HostFacts")]
pub struct HostFacts {
    pub vcpus: Option<FactInt>,
    pub memory_mb: Option<FactInt>,
    pub local_gb: Option<FactInt>,
    pub hypervisor_type: Option<FactText>,
    pub hypervisor_version: Option<FactInt>,
    pub cpu_info: Option<CpuInfo>,
    pub service_name: Option<FactText>,
    pub availability_zone: Option<FactText>,
}

impl HostFacts {
    /// Stores `key` when it names a fact; returns whether it did.
    fn take(&mut self, key: &str, value: &Value) -> Result<bool, Refusal> {
        // The body is read as a whole, so a refusal is named here rather than by its path.
        let named = |r: Refusal| r.named(key);
        let int = || FactInt::check(value).map_err(named);
        let text = || FactText::check(value).map_err(named);
        match key {
            "vcpus" => self.vcpus = Some(int()?),
            "memory_mb" => self.memory_mb = Some(int()?),
            "local_gb" => self.local_gb = Some(int()?),
            "hypervisor_version" => self.hypervisor_version = Some(int()?),
            "hypervisor_type" => self.hypervisor_type = Some(text()?),
            "cpu_info" => self.cpu_info = Some(CpuInfo::check(value).map_err(named)?),
            "service_name" => self.service_name = Some(text()?),
            "availability_zone" => self.availability_zone = Some(text()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl From<HostFacts> for FactsInput {
    fn from(f: HostFacts) -> Self {
        FactsInput {
            vcpus: f.vcpus.map(|n| n.0),
            memory_mb: f.memory_mb.map(|n| n.0),
            local_gb: f.local_gb.map(|n| n.0),
            hypervisor_version: f.hypervisor_version.map(|n| n.0),
            hypervisor_type: f.hypervisor_type.map(|t| t.0),
            cpu_info: f.cpu_info.map(|t| t.0),
            service_name: f.service_name.map(|t| t.0),
            availability_zone: f.availability_zone.map(|t| t.0),
        }
    }
}

field_type! {
    /// A host's hypervisor hostname: 1 to [`MAX_HOSTNAME_CHARS`] characters, no control
    /// characters.
    HostName(String), |v| HostName::check(&v.ok_or_else(Refusal::missing)?)
}

impl HostName {
    fn check(value: &Value) -> Result<Self, Refusal> {
        let Value::String(name) = value else {
            return Err(Refusal::malformed_as(
                "name",
                format!("must be a string, not {}", input::json_kind(value)),
            ));
        };
        input::text_rule(name, 1, MAX_HOSTNAME_CHARS)
            .map_err(|reason| Refusal::malformed_as("name", reason))?;
        Ok(Self(name.clone()))
    }
}

/// A text hardware fact of at most `MAX` characters, no control characters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Text<const MAX: usize>(pub String);

pub type FactText = Text<MAX_FACT_TEXT_CHARS>;
pub type CpuInfo = Text<MAX_CPU_INFO_CHARS>;

impl<const MAX: usize> Text<MAX> {
    /// Checks a present value; named by its path.
    fn check(value: &Value) -> Result<Self, Refusal> {
        let Value::String(s) = value else {
            return Err(Refusal::malformed(format!(
                "must be a string, not {}",
                input::json_kind(value)
            )));
        };
        input::text_rule(s, 0, MAX).map_err(Refusal::malformed)?;
        Ok(Self(s.clone()))
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, |v| Self::check(&v.ok_or_else(Refusal::missing)?))
    }
}

/// An extra capability's value in a request: a string, a number (integers included) or a
/// boolean, held as the text stored; with `NULLABLE` also `null` (remove it, `None`). Numbers
/// are stored as Python's `str()` writes them (`4`, `4.5`), as upstream does; booleans as JSON
/// writes them (`true`, `false`), not Python's `True`: docs/api.md says why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct CapabilityValue<const NULLABLE: bool = false>(pub Option<String>);

impl<const NULLABLE: bool> CapabilityValue<NULLABLE> {
    fn check(key: &str, value: &Value) -> Result<Self, Refusal> {
        let refuse = |kind: &str| {
            Refusal::malformed_as(
                input::printable(key, 40),
                format!("a capability value must be a string, number or boolean, not {kind}"),
            )
        };
        let v = match value {
            Value::Null if NULLABLE => return Ok(Self(None)),
            Value::String(s) => s.clone(),
            Value::Number(n) => input::py_number(n),
            Value::Bool(b) => b.to_string(),
            other => return Err(refuse(input::json_kind(other))),
        };
        input::text_rule(&v, 0, MAX_CAPABILITY_VALUE_CHARS)
            .map_err(|reason| Refusal::malformed_as(input::printable(key, 40), reason))?;
        Ok(Self(Some(v)))
    }
}

impl<'de, const NULLABLE: bool> Deserialize<'de> for CapabilityValue<NULLABLE> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, |v| Self::check("value", &v.unwrap_or(Value::Null)))
    }
}

// A host body's keys are its capabilities' names, so the bodies are read as a whole, key by key
// (in the body's order, which serde_json keeps sorted), rather than field by field.
impl<'de> Deserialize<'de> for HostCreate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let body = Object::deserialize(d)?;
        read_create(&body).map_err(|r| r.raise())
    }
}

impl<'de> Deserialize<'de> for HostUpdate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let body = Object::deserialize(d)?;
        read_update(&body).map_err(|r| r.raise())
    }
}

fn read_create(body: &Object) -> Result<HostCreate, Refusal> {
    let name = match body.get("name") {
        None | Some(Value::Null) => return Err(without_name(body)),
        Some(v) => HostName::check(v)?,
    };
    let mut facts = HostFacts::default();
    let mut extra_capabilities = BTreeMap::new();
    for (key, value) in body {
        if key == "name" || facts.take(key, value)? {
            continue;
        }
        check_key(key, "host")?;
        extra_capabilities.insert(key.clone(), CapabilityValue::check(key, value)?);
    }
    Ok(HostCreate {
        name,
        facts,
        extra_capabilities,
    })
}

/// Upstream's InvalidHost prints what is left of the body once it has taken out the host's name
/// and id.
fn without_name(body: &Object) -> Refusal {
    let rest: Object = body
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "name" | "id" | "trust_id"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut rest = input::py_repr(&Value::Object(rest));
    if rest.chars().count() > 400 {
        rest = rest.chars().take(400).chain(['…']).collect();
    }
    Refusal::whole(
        Whole::InvalidHost,
        format!("{rest}: Missing parameter name (the hypervisor hostname of the host to enrol)"),
    )
}

/// The seed's `{"values": {...}}` or the flat `{"k": "v"}` the CLI sends.
fn read_update(body: &Object) -> Result<HostUpdate, Refusal> {
    // `values` is the seed's wrapper, so it cannot also be a capability's name.
    let flat = match body.get("values") {
        None => body,
        Some(Value::Object(values)) if body.len() == 1 => values,
        Some(Value::Object(_)) => {
            return Err(Refusal::malformed_as(
                "values",
                "must be the only key of the body (or send the capabilities flat)",
            ));
        }
        Some(other) => {
            return Err(Refusal::malformed_as(
                "values",
                format!(
                    "must be an object of capabilities, not {}",
                    input::json_kind(other)
                ),
            ));
        }
    };
    let mut update = HostUpdate::default();
    for (key, value) in flat {
        if key == "name" {
            return Err(Refusal::whole(
                Whole::UnknownField,
                "'name' (the hypervisor hostname) cannot be changed; enrol the host again instead",
            ));
        }
        if update.facts.take(key, value)? {
            continue;
        }
        check_key(key, "host update")?;
        update
            .capabilities
            .insert(key.clone(), CapabilityValue::check(key, value)?);
    }
    Ok(update)
}

fn check_key(key: &str, what: &str) -> Result<(), Refusal> {
    if SERVER_OWNED.contains(&key) {
        return Err(Refusal::whole(
            Whole::UnknownField,
            format!("'{key}' is set by the server and cannot be given in a {what}"),
        ));
    }
    let len = key.chars().count();
    if len > MAX_CAPABILITY_KEY_CHARS {
        return Err(Refusal::whole(
            Whole::ExtraCapabilityTooLong,
            format!(
                "{} has {len} characters; at most {MAX_CAPABILITY_KEY_CHARS} are allowed",
                input::printable(key, 40)
            ),
        ));
    }
    input::text_rule(key, 1, MAX_CAPABILITY_KEY_CHARS)
        .map_err(|reason| Refusal::malformed_as("capability name", reason))
}

/// Checks an enrolment body.
pub fn check_create(body: HostCreate) -> Result<HostRequest, DomainError> {
    check_count(body.extra_capabilities.len())?;
    Ok(HostRequest {
        name: body.name.0,
        facts: body.facts.into(),
        // A create's values are never null (the body's reading refuses it).
        capabilities: body
            .extra_capabilities
            .into_iter()
            .filter_map(|(k, v)| v.0.map(|v| (k, v)))
            .collect(),
    })
}

/// Checks an update body. A null value removes the capability.
pub fn check_update(body: HostUpdate) -> Result<HostChanges, DomainError> {
    let changes = HostChanges {
        facts: body.facts.into(),
        capabilities: body
            .capabilities
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    };
    if changes.facts.is_empty() && changes.capabilities.is_empty() {
        return Err(DomainError::InvalidInput(
            "No data to update: give capabilities as {\"key\": \"value\"} or {\"values\": {...}}"
                .into(),
        ));
    }
    check_count(changes.capabilities.len())?;
    Ok(changes)
}

fn check_count(n: usize) -> Result<(), DomainError> {
    if n > MAX_CAPABILITIES {
        return Err(DomainError::InvalidInput(format!(
            "a host may have at most {MAX_CAPABILITIES} extra capabilities (got {n})"
        )));
    }
    Ok(())
}

/// `private: true` hides a property from non-admin listings.
#[derive(Debug, Clone, Documented, Deserialize)]
#[oai(rename = "ResourcePropertyUpdate")]
#[serde(deny_unknown_fields)]
pub struct PropertyUpdate {
    pub private: Flag,
}

impl Body for PropertyUpdate {
    fn check_keys(object: &Object) -> Result<(), DomainError> {
        input::reject_unknown(
            object,
            fields_of::<Self>(),
            PROPERTY_SERVER_OWNED,
            "resource property update",
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_create(body: &Object) -> Result<HostRequest, DomainError> {
        input::parse(body).and_then(check_create)
    }
    fn parse_update(body: &Object) -> Result<HostChanges, DomainError> {
        input::parse(body).and_then(check_update)
    }

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
