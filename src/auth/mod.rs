//! Who is calling: noauth headers or a Keystone token, and what they may do (the policy).
//!
//! The request pipeline asks the configured [`Authenticator`] for the caller of every `/v1`
//! request; the service layer asks the [`policy::Policy`] whether the caller may do an operation.

pub mod keystone;
pub mod policy;
pub mod service_account;

use async_trait::async_trait;
use poem::http::HeaderMap;

/// Who is calling: resolved from headers (noauth) or a token (keystone) by the request pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub project_id: String,
    pub user_id: String,
    pub roles: Vec<String>,
}

/// Why a request has no caller. `api::error` gives each its HTTP status, as for every error.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A missing, invalid, expired or revoked token.
    #[error("{0}")]
    Unauthenticated(String),
    /// A malformed identity header.
    #[error("{0}")]
    BadHeader(String),
    /// The identity service cannot be reached.
    #[error("{0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError>;

    /// The `WWW-Authenticate` challenge sent with a 401, if any.
    fn challenge(&self) -> Option<String> {
        None
    }
}

/// Identity from X-Project-Id, X-User-Id and X-Roles, each with a configured default: for local
/// use and behind a proxy that authenticates (as keystonemiddleware's headers upstream).
#[derive(Debug, Clone)]
pub struct NoAuth {
    pub default_project_id: String,
    pub default_user_id: String,
    pub default_roles: Vec<String>,
}

pub fn split_roles(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, AuthError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| {
                    AuthError::BadHeader(format!("the {name} header must be printable ASCII"))
                })?
                .trim();
            if s.len() > 255 {
                return Err(AuthError::BadHeader(format!(
                    "the {name} header is longer than 255 characters"
                )));
            }
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
    }
}

#[async_trait]
impl Authenticator for NoAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        Ok(Caller {
            project_id: header(headers, "x-project-id")?
                .unwrap_or_else(|| self.default_project_id.clone()),
            user_id: header(headers, "x-user-id")?.unwrap_or_else(|| self.default_user_id.clone()),
            roles: header(headers, "x-roles")?
                .map(|r| split_roles(&r))
                .unwrap_or_else(|| self.default_roles.clone()),
        })
    }
}
