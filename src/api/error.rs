//! The one place where errors become HTTP: statuses for domain and identity errors, the error
//! envelope `{"error_code": 409, "error_message": "...", "error_name": "NotEnoughHostsAvailable"}`
//! that every 4xx and 5xx carries, including the framework's own (404 route, 405, bad JSON, 415,
//! 413), and the error answers each operation declares in the spec (`ops`).

use std::{fmt, marker::PhantomData};

use poem::{
    Response,
    http::{StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::{ToJSON, Type},
};

use crate::{auth::AuthError, domain::DomainError};

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

/// An error response: of an operation (as `OpError`), of the pipeline, or of the framework.
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

    /// With the authenticator's `WWW-Authenticate` challenge, if this is a 401.
    pub fn challenged(mut self, challenge: Option<String>) -> Self {
        if self.status == StatusCode::UNAUTHORIZED {
            self.challenge = challenge;
        }
        self
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

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let status = match &err {
            AuthError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AuthError::BadHeader(_) => StatusCode::BAD_REQUEST,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::from_status(status, err.to_string())
    }
}

/// Why the request pipeline refuses a request before any operation sees it; each carries the
/// message the client reads.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The URL left after stripping `.json` does not parse.
    #[error("{0}")]
    MalformedUrl(String),
    /// `OpenStack-API-Version` names a version this server lacks.
    #[error("{0}")]
    UnsupportedVersion(String),
    /// `OpenStack-API-Version` is not `MajorNum.MinorNum`.
    #[error("{0}")]
    MalformedVersion(String),
    /// `Accept` excludes application/json.
    #[error("{0}")]
    NotAcceptable(String),
    /// The body is over the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The body could not be read from the connection.
    #[error("{0}")]
    UnreadableBody(String),
    /// The body is not declared as JSON (and the URL has no `.json` suffix).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is not JSON, or not a JSON object.
    #[error("{0}")]
    MalformedBody(String),
}

impl From<Refusal> for ApiError {
    fn from(err: Refusal) -> Self {
        use Refusal as R;
        let message = err.to_string();
        match err {
            R::MalformedUrl(_) | R::UnreadableBody(_) => {
                Self::from_status(StatusCode::BAD_REQUEST, message)
            }
            R::MalformedVersion(_) => {
                Self::new(StatusCode::BAD_REQUEST, "MalformedVersion", message)
            }
            R::MalformedBody(_) => {
                Self::new(StatusCode::BAD_REQUEST, "MalformedRequestBody", message)
            }
            R::UnsupportedVersion(_) => {
                Self::new(StatusCode::NOT_ACCEPTABLE, "UnsupportedVersion", message)
            }
            R::NotAcceptable(_) => Self::from_status(StatusCode::NOT_ACCEPTABLE, message),
            R::TooLarge(_) => Self::from_status(StatusCode::PAYLOAD_TOO_LARGE, message),
            R::UnsupportedMediaType(_) => {
                Self::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
            }
        }
    }
}

/// One error answer an operation documents: the status and what it means there.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
}

/// The error answers of one operation (a marker type of `ops`).
pub trait ErrorSet: Send + Sync + 'static {
    /// What can be answered around the operation: by the pipeline, the policy, a failure.
    const AROUND: &'static [Answer];
    /// The operation's own answers; one with the status of an `AROUND` answer replaces it.
    const OWN: &'static [Answer];

    /// All of them, by status, as the spec lists them.
    fn answers() -> Vec<Answer> {
        let mut all: Vec<Answer> = Self::AROUND
            .iter()
            .filter(|a| Self::OWN.iter().all(|own| own.status != a.status))
            .chain(Self::OWN)
            .copied()
            .collect();
        all.sort_by_key(|a| a.status);
        all
    }
}

/// An error answer of the operation whose answers are `S`. It is any `ApiError` at run time (the
/// statuses are chosen above, not here); `S` only says what the spec documents.
pub struct OpError<S>(pub ApiError, PhantomData<fn() -> S>);

/// What a handler returns: its success, or an error answer documented by `S`.
pub type OpResult<T, S> = Result<T, OpError<S>>;

impl<S> fmt::Debug for OpError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<S> From<ApiError> for OpError<S> {
    fn from(err: ApiError) -> Self {
        Self(err, PhantomData)
    }
}

impl<S> From<DomainError> for OpError<S> {
    fn from(err: DomainError) -> Self {
        Self(err.into(), PhantomData)
    }
}

/// Into poem as the plain `ApiError`, so the pipeline finds it by one type whatever the operation.
impl<S> From<OpError<S>> for poem::Error {
    fn from(err: OpError<S>) -> Self {
        err.0.into()
    }
}

impl<S: ErrorSet> ApiResponse for OpError<S> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: S::answers()
                .into_iter()
                .map(|answer| MetaResponse {
                    description: answer.description,
                    status: Some(answer.status),
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

/// Which operation answers which error statuses: one marker type per operation, named as its
/// operationId. docs/api.md ("Error answers of each operation") explains the table.
///
/// Every `/v1` request passes the pipeline, which can answer 400 (a malformed identity or
/// `OpenStack-API-Version` header), 401 and 503 (Keystone), 406 (`Accept`, version), and for a
/// body (POST, PUT, PATCH) 400, 413 and 415; every `/v1` operation checks the policy (403) and
/// reads the database (500). 405 and the 404 of an unknown path are answered before any
/// operation is chosen, so no operation lists them.
pub mod ops {
    use super::{Answer, ErrorSet};

    const BAD_REQUEST: Answer = Answer {
        status: 400,
        description: "A parameter, header or the body is malformed or breaks a rule; the \
                      message names it",
    };
    const UNAUTHORIZED: Answer = Answer {
        status: 401,
        description: "Keystone mode: the token is missing, invalid, expired or revoked",
    };
    const FORBIDDEN: Answer = Answer {
        status: 403,
        description: "The policy does not allow the caller this operation",
    };
    const NOT_FOUND: Answer = Answer {
        status: 404,
        description: "The lease, host or resource property the path names does not exist",
    };
    const NOT_IN_NOVA: Answer = Answer {
        status: 404,
        description: "Nova mode: Nova has no compute node of that name",
    };
    const NOT_ACCEPTABLE: Answer = Answer {
        status: 406,
        description: "The Accept header excludes application/json, or OpenStack-API-Version \
                      asks for a version other than 1.0",
    };
    const CONFLICT: Answer = Answer {
        status: 409,
        description: "The request conflicts with the current state (hosts taken, lease busy, \
                      ...); nothing changed",
    };
    const PRECONDITION_FAILED: Answer = Answer {
        status: 412,
        description: "If-Match no longer matches; nothing changed",
    };
    const TOO_LARGE: Answer = Answer {
        status: 413,
        description: "The request body is larger than the configured limit",
    };
    const UNSUPPORTED_MEDIA_TYPE: Answer = Answer {
        status: 415,
        description: "The body is not sent as application/json (and the URL has no .json suffix)",
    };
    const KEY_REUSED: Answer = Answer {
        status: 422,
        description: "The Idempotency-Key was already used with another request body",
    };
    const INTERNAL: Answer = Answer {
        status: 500,
        description: "An unexpected server error; it is logged with the request id",
    };
    const NOVA_REFUSED: Answer = Answer {
        status: 502,
        description: "Nova mode: Nova refused what the request needed; the message is Nova's",
    };
    const IDENTITY_UNAVAILABLE: Answer = Answer {
        status: 503,
        description: "Keystone mode: the identity service cannot be reached",
    };
    const NOVA_UNAVAILABLE: Answer = Answer {
        status: 503,
        description: "Nova or (Keystone mode) the identity service cannot be reached; the \
                      message says which",
    };
    const NOT_READY: Answer = Answer {
        status: 503,
        description: "The database cannot be reached or has migrations pending",
    };

    /// Every `/v1` request without a body.
    const V1: &[Answer] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_ACCEPTABLE,
        INTERNAL,
        IDENTITY_UNAVAILABLE,
    ];
    /// Every `/v1` request with a body.
    const V1_BODY: &[Answer] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_ACCEPTABLE,
        TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        INTERNAL,
        IDENTITY_UNAVAILABLE,
    ];
    /// `/` and `/versions`: the pipeline checks `Accept` and `OpenStack-API-Version` there too,
    /// but not identity, and nothing there can fail.
    const VERSIONS: &[Answer] = &[BAD_REQUEST, NOT_ACCEPTABLE];
    /// The probes: outside the API paths, so no pipeline rule, identity or policy applies.
    const PROBE: &[Answer] = &[];

    /// Declares each operation's marker type: what is answered around it, then its own answers.
    macro_rules! operations {
        ($($(#[$doc:meta])* $name:ident: $around:ident $(+ $own:ident)*;)*) => {$(
            $(#[$doc])*
            pub enum $name {}
            impl ErrorSet for $name {
                const AROUND: &'static [Answer] = $around;
                const OWN: &'static [Answer] = &[$($own),*];
            }
        )*};
    }

    operations! {
        /// `GET /v1/leases`: a bad `limit` or `marker` is a 400.
        ListLeases: V1;
        /// `POST /v1/leases`: 409 when too few hosts are free (nothing is stored); Nova is
        /// called after the commit, and its failures are not the request's.
        CreateLease: V1_BODY + CONFLICT + KEY_REUSED;
        /// `GET /v1/leases/{lease_id}`.
        GetLease: V1 + NOT_FOUND;
        /// `PUT /v1/leases/{lease_id}`: 409 for the lease's status, a parameter that cannot
        /// change or too few hosts; hosts move in Nova after the commit, as for a create.
        UpdateLease: V1_BODY + NOT_FOUND + CONFLICT + PRECONDITION_FAILED;
        /// `DELETE /v1/leases/{lease_id}`: a running lease gives its hosts back through Nova
        /// first, so Nova's failures are the request's (409: the hosts still have servers).
        DeleteLease: V1 + NOT_FOUND + CONFLICT + PRECONDITION_FAILED + NOVA_REFUSED
            + NOVA_UNAVAILABLE;
        /// `POST /v1/leases/plan`: a dry run; a shortage is in the plan, not a 409.
        PlanLease: V1_BODY;
        /// `GET /v1/os-hosts/availability`.
        FindAvailability: V1;
        /// `GET /v1/os-hosts/calendar`.
        GetCalendar: V1;
        /// `GET /v1/os-hosts`.
        ListHosts: V1;
        /// `POST /v1/os-hosts`: in Nova mode the host is looked up and enrolled in Nova first.
        CreateHost: V1_BODY + NOT_IN_NOVA + CONFLICT + KEY_REUSED + NOVA_REFUSED
            + NOVA_UNAVAILABLE;
        /// `GET /v1/os-hosts/allocations`.
        ListHostAllocations: V1;
        /// `GET /v1/os-hosts/properties`.
        ListHostProperties: V1;
        /// `PATCH /v1/os-hosts/properties/{property_name}`.
        UpdateHostProperty: V1_BODY + NOT_FOUND;
        /// `GET /v1/os-hosts/{host_id}`.
        GetHost: V1 + NOT_FOUND;
        /// `PUT /v1/os-hosts/{host_id}`: 409 when a reservation holding the host filters on a
        /// key that changes; Nova is not called (in Nova mode its facts cannot be given: 400).
        UpdateHost: V1_BODY + NOT_FOUND + CONFLICT + PRECONDITION_FAILED;
        /// `DELETE /v1/os-hosts/{host_id}`: 409 while a lease holds it or (Nova mode) it has
        /// servers; in Nova mode it is withdrawn from Nova first.
        DeleteHost: V1 + NOT_FOUND + CONFLICT + PRECONDITION_FAILED + NOVA_REFUSED
            + NOVA_UNAVAILABLE;
        /// `GET /v1/os-hosts/{host_id}/allocation`.
        GetHostAllocation: V1 + NOT_FOUND;
        /// `GET /v1/plugins`.
        ListPlugins: V1;
        /// `GET /`.
        ListVersions: VERSIONS;
        /// `GET /versions`.
        ListVersionsAlias: VERSIONS;
        /// `GET /readyz`: every failure of the check is a 503.
        GetReadiness: PROBE + NOT_READY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_errors_get_their_status_here_and_only_a_401_its_challenge() {
        let challenge = || Some("Keystone uri=\"http://ks:5000/v3\"".to_string());
        let e =
            ApiError::from(AuthError::Unauthenticated("no token".into())).challenged(challenge());
        assert_eq!(
            (e.status, e.body.error_name.as_str()),
            (StatusCode::UNAUTHORIZED, "Unauthorized")
        );
        assert_eq!(e.challenge, challenge());
        let e = ApiError::from(AuthError::BadHeader("bad".into())).challenged(challenge());
        assert_eq!(
            (e.status, e.body.error_name.as_str()),
            (StatusCode::BAD_REQUEST, "BadRequest")
        );
        assert_eq!(e.challenge, None);
        let e = ApiError::from(AuthError::Unavailable("down".into())).challenged(challenge());
        assert_eq!(
            (e.status, e.body.error_name.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        );
        assert_eq!(e.challenge, None);
    }

    /// The rules the per-operation sets follow, read back from the served spec.
    #[test]
    fn each_operation_documents_the_answers_it_can_give() {
        let spec: serde_json::Value =
            serde_json::from_str(&crate::api::openapi().spec()).expect("the spec is JSON");
        let mut seen = 0;
        for (path, ops) in spec["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                let id = op["operationId"].as_str().expect("operationId");
                let has = |s: &str| op["responses"].get(s).is_some();
                let v1 = path.starts_with("/v1/");
                let body = op.get("requestBody").is_some();
                let guarded = v1
                    && ["put", "delete"].contains(&method.as_str())
                    && (path.starts_with("/v1/leases/") || path.starts_with("/v1/os-hosts/{"));
                let create =
                    method == "post" && ["/v1/leases", "/v1/os-hosts"].contains(&path.as_str());
                for s in ["401", "403", "500", "503"] {
                    assert_eq!(
                        has(s),
                        v1 || (id == "getReadiness" && s == "503"),
                        "{id} {s}"
                    );
                }
                assert_eq!(
                    has("400") && has("406"),
                    v1 || path == "/" || path == "/versions",
                    "{id}"
                );
                assert_eq!(
                    has("413") && has("415"),
                    body,
                    "{id}: 413/415 only with a body"
                );
                assert_eq!(!(has("413") || has("415")), !body, "{id}");
                assert_eq!(has("422"), create, "{id}: 422 only for POST lease/host");
                assert_eq!(
                    has("412"),
                    guarded,
                    "{id}: 412 only for PUT/DELETE lease/host"
                );
                assert!(!has("405"), "{id}: a 405 is no operation's answer");
                if has("502") {
                    assert!(
                        ["createHost", "deleteHost", "deleteLease"].contains(&id),
                        "{id}"
                    );
                }
                seen += 1;
            }
        }
        assert!(seen >= 20, "only {seen} operations");
    }
}
