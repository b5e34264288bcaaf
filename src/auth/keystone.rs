//! Keystone v3 token validation, as keystonemiddleware does it for upstream Blazar.
//!
//! Every request carries `X-Auth-Token`. The server validates it with `GET /v3/auth/tokens`
//! (`X-Subject-Token`), authenticated with its own service account, and takes the project, user
//! and roles from the answer only. Valid tokens are cached until they expire or for
//! `token_cache_seconds`, whichever is sooner (so a revoked token is refused at the latest that
//! long after its revocation), in a bounded cache.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{NaiveDateTime, TimeDelta};
use poem::http::HeaderMap;
use serde_json::Value;

use super::Caller;
use super::{
    AuthError, Authenticator,
    service_account::{ServiceAccount, parse_expiry},
};
use crate::clock::SharedClock;

/// Longest token accepted (Fernet tokens are ~200 bytes; PKI tokens were a few KB).
const MAX_TOKEN_BYTES: usize = 8192;

#[derive(Debug, Clone)]
pub struct KeystoneConfig {
    pub cache_ttl: Duration,
    pub cache_size: usize,
}

struct Cached {
    caller: Caller,
    until: NaiveDateTime,
}

pub struct Keystone {
    cfg: KeystoneConfig,
    account: Arc<ServiceAccount>,
    http: reqwest::Client,
    clock: SharedClock,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Keystone {
    /// Validates tokens with `account`'s own token.
    pub fn new(cfg: KeystoneConfig, account: Arc<ServiceAccount>, clock: SharedClock) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Self {
            cfg,
            account,
            http,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> AuthError {
        tracing::error!(keystone = %self.account.url(), error = %what, "identity service unavailable");
        AuthError::Unavailable(
            "The identity service cannot validate tokens right now; retry later".into(),
        )
    }

    /// This server's own token, for validating others'.
    async fn service_token(&self, force: bool) -> Result<String, AuthError> {
        self.account
            .session(force)
            .await
            .map(|s| s.token)
            .map_err(|e| self.unavailable(e))
    }

    async fn validate(&self, token: &str) -> Result<(Caller, NaiveDateTime), AuthError> {
        for attempt in 0..2 {
            let service = self.service_token(attempt > 0).await?;
            let resp = self
                .http
                .get(format!("{}/auth/tokens", self.account.url()))
                .header("x-auth-token", service)
                .header("x-subject-token", token)
                .send()
                .await
                .map_err(|e| self.unavailable(e))?;
            match resp.status().as_u16() {
                200 => {
                    let body: Value = resp.json().await.map_err(|e| self.unavailable(e))?;
                    return caller_of(&body);
                }
                // Our own token expired or was revoked: log in again, once.
                401 if attempt == 0 => continue,
                404 | 401 => {
                    return Err(AuthError::Unauthenticated(
                        "The token is invalid, expired or revoked".into(),
                    ));
                }
                other => return Err(self.unavailable(format!("token validation: HTTP {other}"))),
            }
        }
        Err(self.unavailable("the service account's token is refused"))
    }

    fn remember(&self, token: &str, caller: &Caller, expires: NaiveDateTime) {
        let now = self.clock.now();
        let ttl = TimeDelta::from_std(self.cfg.cache_ttl).unwrap_or(TimeDelta::minutes(5));
        let until = expires.min(now + ttl);
        let mut cache = self.cache.lock().expect("token cache");
        if cache.len() >= self.cfg.cache_size {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= self.cfg.cache_size {
                // Still full of live tokens: forget them all rather than grow without bound.
                cache.clear();
            }
        }
        cache.insert(
            token.to_string(),
            Cached {
                caller: caller.clone(),
                until,
            },
        );
    }
}

#[async_trait]
impl Authenticator for Keystone {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let token = headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AuthError::Unauthenticated(
                    "Authentication required: send a Keystone token in X-Auth-Token".into(),
                )
            })?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Unauthenticated(
                "The token is invalid, expired or revoked".into(),
            ));
        }
        let now = self.clock.now();
        if let Some(hit) = self.cache.lock().expect("token cache").get(token)
            && hit.until > now
        {
            return Ok(hit.caller.clone());
        }
        let (caller, expires) = self.validate(token).await?;
        if expires <= now {
            return Err(AuthError::Unauthenticated("The token has expired".into()));
        }
        self.remember(token, &caller, expires);
        Ok(caller)
    }

    fn challenge(&self) -> Option<String> {
        Some(format!("Keystone uri=\"{}\"", self.account.url()))
    }
}

/// The caller described by a validation answer: project-scoped tokens only.
fn caller_of(body: &Value) -> Result<(Caller, NaiveDateTime), AuthError> {
    let t = &body["token"];
    let project = t["project"]["id"]
        .as_str()
        .ok_or_else(|| AuthError::Unauthenticated("The token is not scoped to a project".into()))?;
    let user = t["user"]["id"]
        .as_str()
        .ok_or_else(|| AuthError::Unauthenticated("The token names no user".into()))?;
    let roles = t["roles"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let expires = parse_expiry(body)
        .ok_or_else(|| AuthError::Unauthenticated("The token has no expiry".into()))?;
    Ok((
        Caller {
            project_id: project.to_string(),
            user_id: user.to_string(),
            roles,
        },
        expires,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn callers_come_from_project_scoped_tokens_only() {
        let body = json!({"token": {
            "expires_at": "2030-01-01T12:00:00.000000Z",
            "project": {"id": "p1", "name": "alpha"},
            "user": {"id": "u1", "name": "alice"},
            "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}],
        }});
        let (c, exp) = caller_of(&body).unwrap();
        assert_eq!(c.project_id, "p1");
        assert_eq!(c.user_id, "u1");
        assert_eq!(c.roles, vec!["member", "reader"]);
        assert_eq!(exp.to_string(), "2030-01-01 12:00:00");
        let unscoped = json!({"token": {"expires_at": "2030-01-01T12:00:00Z", "user": {"id": "u"}, "roles": []}});
        assert!(caller_of(&unscoped).is_err());
    }
}
