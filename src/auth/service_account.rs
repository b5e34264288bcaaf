//! This server's own Keystone login: one token for its service account, renewed before it
//! expires, with the catalog that came with it.
//!
//! Token validation (`auth::keystone`) and the Nova client (`nova`) share one account, as
//! upstream's `[keystone_authtoken]`-style credentials serve both there: one login, one renewal.

use std::{sync::Arc, time::Duration};

use chrono::{NaiveDateTime, TimeDelta};
use serde_json::{Value, json};

use crate::clock::SharedClock;

/// A service token is renewed this long before it expires.
const RENEW_MARGIN: TimeDelta = TimeDelta::seconds(60);

#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The identity endpoint, e.g. `http://keystone:5000/v3`.
    pub url: String,
    pub username: String,
    pub password: secrecy::SecretString,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
}

/// One login: the token, when it expires, and the catalog it came with.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub expires: NaiveDateTime,
    catalog: Arc<Value>,
}

impl Session {
    /// The URL of service `kind` (e.g. `compute`) at `interface`, in `region` if given.
    pub fn endpoint(&self, kind: &str, interface: &str, region: Option<&str>) -> Option<String> {
        self.catalog
            .as_array()?
            .iter()
            .filter(|s| s["type"] == kind)
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .find(|e| {
                e["interface"] == interface
                    && region.is_none_or(|r| e["region_id"] == r || e["region"] == r)
            })
            .and_then(|e| e["url"].as_str())
            .map(|u| u.trim_end_matches('/').to_string())
    }
}

/// Why the account has no token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Keystone could not be reached or answered something unusable.
    #[error("the identity service at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    /// Keystone refused the account's credentials.
    #[error("the service account {user} cannot log in to {url}: HTTP {status}")]
    Refused {
        url: String,
        user: String,
        status: u16,
    },
}

pub struct ServiceAccount {
    cfg: AccountConfig,
    http: reqwest::Client,
    clock: SharedClock,
    session: tokio::sync::Mutex<Option<Session>>,
}

impl ServiceAccount {
    pub fn new(cfg: AccountConfig, clock: SharedClock) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Self {
            cfg: AccountConfig {
                url: cfg.url.trim_end_matches('/').to_string(),
                ..cfg
            },
            http,
            clock,
            session: tokio::sync::Mutex::new(None),
        }
    }

    pub fn url(&self) -> &str {
        &self.cfg.url
    }

    /// The current session; a new login if there is none, it expires soon, or `force` (the
    /// token was refused: revoked, or Keystone restarted with new keys).
    pub async fn session(&self, force: bool) -> Result<Session, LoginError> {
        let mut slot = self.session.lock().await;
        let now = self.clock.now();
        if !force
            && let Some(s) = slot.as_ref()
            && s.expires - RENEW_MARGIN > now
        {
            return Ok(s.clone());
        }
        let fresh = self.login(now).await?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    async fn login(&self, now: NaiveDateTime) -> Result<Session, LoginError> {
        let unreachable = |reason: String| LoginError::Unreachable {
            url: self.cfg.url.clone(),
            reason,
        };
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.cfg.username,
                "domain": {"name": self.cfg.user_domain_name},
                "password": secrecy::ExposeSecret::expose_secret(&self.cfg.password),
            }}},
            "scope": {"project": {
                "name": self.cfg.project_name,
                "domain": {"name": self.cfg.project_domain_name},
            }},
        }});
        let resp = self
            .http
            .post(format!("{}/auth/tokens", self.cfg.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(LoginError::Refused {
                url: self.cfg.url.clone(),
                user: self.cfg.username.clone(),
                status,
            });
        }
        if !resp.status().is_success() {
            return Err(unreachable(format!("HTTP {status}")));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| unreachable("no X-Subject-Token in the login answer".into()))?;
        let mut body: Value = resp.json().await.map_err(|e| unreachable(e.to_string()))?;
        let expires = parse_expiry(&body).unwrap_or(now + TimeDelta::minutes(10));
        Ok(Session {
            token,
            expires,
            catalog: Arc::new(body["token"]["catalog"].take()),
        })
    }
}

/// `token.expires_at` of a Keystone token answer.
pub fn parse_expiry(body: &Value) -> Option<NaiveDateTime> {
    let s = body["token"]["expires_at"].as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.naive_utc())
        .or_else(|| {
            NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f").ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_from_the_catalog_by_type_interface_and_region() {
        let s = Session {
            token: "t".into(),
            expires: NaiveDateTime::default(),
            catalog: Arc::new(json!([
                {"type": "identity", "endpoints": [
                    {"interface": "internal", "region_id": "R1", "url": "http://ks:5000/v3"}]},
                {"type": "compute", "endpoints": [
                    {"interface": "public", "region_id": "R1", "url": "http://public:8774/v2.1"},
                    {"interface": "internal", "region_id": "R1", "url": "http://r1:8774/v2.1/"},
                    {"interface": "internal", "region_id": "R2", "url": "http://r2:8774/v2.1"}]},
            ])),
        };
        assert_eq!(
            s.endpoint("compute", "internal", None).as_deref(),
            Some("http://r1:8774/v2.1")
        );
        assert_eq!(
            s.endpoint("compute", "internal", Some("R2")).as_deref(),
            Some("http://r2:8774/v2.1")
        );
        assert_eq!(
            s.endpoint("compute", "public", None).as_deref(),
            Some("http://public:8774/v2.1")
        );
        assert_eq!(s.endpoint("compute", "admin", None), None);
        assert_eq!(s.endpoint("image", "internal", None), None);
    }
}
