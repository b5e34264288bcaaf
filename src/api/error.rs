//! The one place where errors become HTTP: statuses for domain errors, and the error envelope
//! `{"error_code": 409, "error_message": "...", "error_name": "NotEnoughHostsAvailable"}` that every
//! 4xx and 5xx carries, including the framework's own (404 route, 405, bad JSON, 415, 413).

use std::fmt;

use poem::{
    Response,
    http::{StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::{ToJSON, Type},
};

use crate::domain::DomainError;

/// The error envelope.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Error")]
pub struct ErrorBody {
    /// The HTTP status, repeated.
    pub error_code: u16,
    /// What went wrong, for a person to read.
    pub error_message: String,
    /// Blazar's name for the error, e.g. `NotEnoughHostsAvailable`, `InvalidDate`, `LeaseNotFound`.
    pub error_name: String,
}

/// An error response of any operation.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// `WWW-Authenticate` of a 401.
    pub challenge: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, name: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error_code: status.as_u16(),
                error_message: message.into(),
                error_name: name.to_string(),
            },
            challenge: None,
        }
    }

    /// The envelope for a status alone (framework errors), with a name derived from the status.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let name = match status.as_u16() {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            406 => "NotAcceptable",
            409 => "Conflict",
            412 => "PreconditionFailed",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "UnprocessableEntity",
            503 => "ServiceUnavailable",
            s if s >= 500 => "InternalServerError",
            _ => "Error",
        };
        Self::new(status, name, message)
    }

    pub fn into_http_response(self) -> Response {
        let body = self.body.to_json_string();
        let mut resp = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = &self.challenge {
            resp = resp.header(header::WWW_AUTHENTICATE, c.as_str());
        }
        resp.body(body)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.body.error_message)
    }
}

impl std::error::Error for ApiError {}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        self.clone().into_http_response()
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        use DomainError as E;
        let status = match &err {
            E::MissingParameter(_)
            | E::MalformedParameter { .. }
            | E::ExtraCapabilityTooLong(_)
            | E::InvalidHost(_)
            | E::UnknownField(_)
            | E::InvalidDate { .. }
            | E::InvalidInput(_)
            | E::MalformedRequirements { .. }
            | E::InvalidRange(_)
            | E::UnsupportedResourceType(_) => StatusCode::BAD_REQUEST,
            E::PolicyNotAuthorized(_) => StatusCode::FORBIDDEN,
            E::LeaseNotFound(_)
            | E::HostNotFound(_)
            | E::PropertyNotFound(_)
            | E::HostNotInNova(_) => StatusCode::NOT_FOUND,
            E::NotEnoughHostsAvailable(_)
            | E::InvalidStatus(_)
            | E::CantUpdateParameter(_)
            | E::CantDeleteHost(_)
            | E::HostAlreadyExists(_)
            | E::CapabilityInUse(_)
            | E::MultipleHostsFound(_)
            | E::HostHavingServers(_) => StatusCode::CONFLICT,
            E::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            E::Unavailable(_) | E::NovaUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::NovaRefused(_) => StatusCode::BAD_GATEWAY,
            E::Database(_) | E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // Upstream answers both enforcement refusals with 400.
            E::MaxLeaseDuration { .. } | E::ExternalServiceDenied(_) => StatusCode::BAD_REQUEST,
        };
        // Nova's own words say what to do (wait, fix the host in Nova); nothing of ours leaks.
        if let E::NovaUnavailable(_) | E::NovaRefused(_) = &err {
            tracing::warn!(error = %err, "Nova failed a request");
            return Self::new(status, err.name(), err.to_string());
        }
        if status.is_server_error() {
            // The details stay in the log (with the request id); the client gets a generic text.
            tracing::error!(error = %err, "request failed");
            return Self::new(
                status,
                err.name(),
                "The server could not complete the request; the error is logged with this \
                 request's X-Openstack-Request-Id",
            );
        }
        Self::new(status, err.name(), err.to_string())
    }
}

/// The statuses any operation may answer with besides its success, all with the envelope.
const ERROR_STATUSES: &[(u16, &str)] = &[
    (
        400,
        "The request is malformed or breaks a rule; the message names the field",
    ),
    (401, "Authentication is required or the token is invalid"),
    (403, "The caller may not do this"),
    (404, "No such resource (or route)"),
    (405, "The method is not allowed on this path"),
    (406, "The Accept header excludes application/json"),
    (
        409,
        "The request conflicts with the current state (hosts taken, lease busy, ...)",
    ),
    (
        412,
        "If-Match no longer matches the lease or host (PUT, DELETE); nothing changed",
    ),
    (413, "The request body is larger than the configured limit"),
    (
        415,
        "The body is not sent as application/json (and the URL has no .json suffix)",
    ),
    (
        422,
        "The Idempotency-Key was already used with another request body (POST of a lease or host)",
    ),
    (
        500,
        "An unexpected server error; it is logged with the request id",
    ),
    (
        502,
        "Nova refused what the request needed; the message is Nova's",
    ),
    (
        503,
        "The service is not ready, or Nova cannot be reached (the message says which)",
    ),
];

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: ERROR_STATUSES
                .iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(*status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json",
                        schema: ErrorBody::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
