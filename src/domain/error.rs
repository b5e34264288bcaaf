//! Domain errors: what went wrong, in Blazar's words. `api::error` maps each to an HTTP status.

use thiserror::Error;

use super::input::py_str;

// Each message begins with upstream Blazar's text for the same error, character for character
// (scripts and python-chi match on them); what we add comes after it. docs/api.md has the table.
#[derive(Debug, Error)]
pub enum DomainError {
    /// A required field is absent: upstream's name for it, then where it is when nested
    /// (`min (reservations[0].min)`).
    #[error("Missing parameter {0}")]
    MissingParameter(String),
    /// A field is present but its value is unusable.
    #[error("Malformed parameter {name}: {reason}")]
    MalformedParameter { name: String, reason: String },
    /// Upstream's ExtraCapabilityTooLong (a 400 named MalformedParameter here, as before).
    #[error("Extra capability key too long: {0}")]
    ExtraCapabilityTooLong(String),
    /// Upstream's InvalidHost: a host to enrol without a name; the text is the rest of the body as
    /// Python prints it, then what is missing (a 400 named MissingParameter here, as before).
    #[error("Invalid values for host {0}")]
    InvalidHost(String),
    /// A field that the server owns (id, project_id, status, ...) or does not know.
    #[error("{0}")]
    UnknownField(String),
    /// `value` as given (escaped, capped), printed bare as upstream does.
    #[error("{value} is an invalid date. Required format: %Y-%m-%d %H:%M ({name}: {reason})")]
    InvalidDate {
        name: String,
        value: String,
        reason: String,
    },
    /// A rule about the request as a whole (dates out of order, start in the past, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// `requirements`: the filter text when it is not JSON, else the failing part as Python's
    /// repr() shows it (upstream's `%s` of the parsed list).
    #[error("Malformed requirements {requirements} ({name}: {reason})")]
    MalformedRequirements {
        name: String,
        requirements: String,
        reason: String,
    },
    /// The text says which reservation and its numbers, as a second sentence.
    #[error("Invalid values for min/max of hosts. Max must be equal to or larger than min. {0}")]
    InvalidRange(String),
    #[error("The {0} resource type is not supported; this server reserves physical:host")]
    UnsupportedResourceType(String),

    /// The policy does not allow the caller this operation (the rule's name).
    #[error("Policy doesn't allow {0} to be performed")]
    PolicyNotAuthorized(String),

    /// Upstream's `check_exists` text, with the id as the path gave it.
    #[error("Object with {{'lease_id': {}}} not found", py_str(.0, 64))]
    LeaseNotFound(String),
    #[error("Object with {{'host_id': {}}} not found", py_str(.0, 64))]
    HostNotFound(String),
    /// Upstream's BlazarDBInvalidResourceProperty text (upstream hides it behind a 500 "A
    /// database error occurred"; we answer 404 with the text it logs).
    #[error("{0} does not exist for resource type physical:host.")]
    PropertyNotFound(String),

    /// Upstream's text first (clients match on it), then what stands in the way.
    #[error("Not enough hosts available: {0}")]
    NotEnoughHostsAvailable(String),
    /// The operation is not allowed in the lease's current status (then why, as a sentence).
    #[error("Invalid lease status. {0}")]
    InvalidStatus(String),
    #[error("{0}")]
    CantUpdateParameter(String),
    #[error("{0}")]
    CantDeleteHost(String),
    /// The whole text (it begins with upstream's Placement conflict).
    #[error("{0}")]
    HostAlreadyExists(String),
    #[error("{0}")]
    CapabilityInUse(String),
    /// Nova has no compute host of that name (the message names it and what Nova knows).
    #[error("{0}")]
    HostNotInNova(String),
    /// Several compute hosts answer to that name.
    #[error("{0}")]
    MultipleHostsFound(String),
    /// A host has servers, so it cannot be enrolled or withdrawn (upstream's HostHavingServers).
    #[error("{0}")]
    HostHavingServers(String),
    /// Nova cannot be reached or fails for now: 503, with Nova's message.
    #[error("{0}")]
    NovaUnavailable(String),
    /// Nova refused what was asked: 502, with Nova's message.
    #[error("{0}")]
    NovaRefused(String),

    /// Usage enforcement (upstream `MaxLeaseDurationException`): the lease is too long.
    #[error(
        "Lease duration of {lease_duration} seconds must be less than or equal to the maximum \
         lease duration of {max_duration} seconds."
    )]
    MaxLeaseDuration {
        lease_duration: i64,
        max_duration: i64,
    },
    /// Usage enforcement: the external service refused, or gave no usable answer (fail closed).
    #[error("{0}")]
    ExternalServiceDenied(String),
    /// An `Idempotency-Key` already used with another request body: 422.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// `If-Match` no longer matches the resource: 412, and nothing changed.
    #[error("{0}")]
    PreconditionFailed(String),

    /// The database failed (`service::error` translates its errors): the text is logged, never
    /// shown.
    #[error("database error: {0}")]
    Database(String),
    /// The service cannot serve now (database down, migrations pending): 503.
    #[error("{0}")]
    Unavailable(String),
    /// Something that should be impossible; logged, shown as a generic 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    /// Blazar's name for this error, sent as `error_name` in the envelope.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MissingParameter(_) => "MissingParameter",
            Self::MalformedParameter { .. } => "MalformedParameter",
            Self::ExtraCapabilityTooLong(_) => "MalformedParameter",
            Self::InvalidHost(_) => "MissingParameter",
            Self::UnknownField(_) => "UnknownParameter",
            Self::InvalidDate { .. } => "InvalidDate",
            Self::InvalidInput(_) => "InvalidInput",
            Self::MalformedRequirements { .. } => "MalformedRequirements",
            Self::InvalidRange(_) => "InvalidRange",
            Self::UnsupportedResourceType(_) => "UnsupportedResourceType",
            Self::PolicyNotAuthorized(_) => "PolicyNotAuthorized",
            Self::LeaseNotFound(_) => "LeaseNotFound",
            Self::HostNotFound(_) => "HostNotFound",
            Self::PropertyNotFound(_) => "ResourcePropertyNotFound",
            Self::NotEnoughHostsAvailable(_) => "NotEnoughHostsAvailable",
            Self::InvalidStatus(_) => "InvalidStatus",
            Self::CantUpdateParameter(_) => "CantUpdateParameter",
            Self::CantDeleteHost(_) => "CantDeleteHost",
            Self::HostAlreadyExists(_) => "HostAlreadyExists",
            Self::CapabilityInUse(_) => "CantUpdateExtraCapability",
            Self::HostNotInNova(_) => "HostNotFound",
            Self::MultipleHostsFound(_) => "MultipleHostsFound",
            Self::HostHavingServers(_) => "HostHavingServers",
            Self::NovaUnavailable(_) => "NovaUnavailable",
            Self::NovaRefused(_) => "NovaError",
            Self::MaxLeaseDuration { .. } => "MaxLeaseDurationException",
            Self::ExternalServiceDenied(_) => "ExternalServiceFilterException",
            Self::IdempotencyKeyReused(_) => "IdempotencyKeyReused",
            Self::PreconditionFailed(_) => "PreconditionFailed",
            Self::Database(_) => "DatabaseError",
            Self::Unavailable(_) => "ServiceUnavailable",
            Self::Internal(_) => "InternalError",
        }
    }

    pub fn malformed(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::MalformedParameter {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
