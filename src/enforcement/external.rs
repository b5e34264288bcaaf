//! The external enforcement service (upstream's `ExternalServiceFilter`): a JSON POST to its
//! `check-create`, `check-update` and `on-end` endpoints.
//!
//! Callers must not hold the database write turn while these calls run: an answer may take up
//! to the configured timeout.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

/// Upstream's text when the service refuses without a usable message.
pub const GENERIC_DENY_MSG: &str = "External service enforcement filter denied the request.";

/// Which check a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Create,
    Update,
}

/// The service's verdict on a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused; the message is the one the caller sees.
    Deny(String),
}

/// What talks to the external service; tests may put another in its place.
#[async_trait]
pub trait ExternalService: Send + Sync {
    /// Asks whether the lease in `body` may be created or updated. An endpoint that is not
    /// configured allows (as upstream).
    async fn check(&self, which: Check, body: &Value) -> Verdict;
    /// Tells the service a lease has ended. `Err` says why delivery failed (retried).
    async fn on_end(&self, body: &Value) -> Result<(), String>;
    /// Whether an on-end endpoint is configured (else nothing is built or sent).
    fn has_on_end(&self) -> bool;
}

/// The three endpoints, each optional, as upstream derives them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoints {
    pub check_create: Option<String>,
    pub check_update: Option<String>,
    pub on_end: Option<String>,
}

impl Endpoints {
    /// Each endpoint is its own setting if given, else `base` joined with its name with
    /// RFC 3986 resolution, as Python's `urljoin` (a base without a trailing slash loses its
    /// last segment: `http://h/api` gives `http://h/check-create`). Every URL must be http(s)
    /// with a host.
    pub fn resolve(
        base: Option<&str>,
        check_create: Option<&str>,
        check_update: Option<&str>,
        on_end: Option<&str>,
    ) -> Result<Self, String> {
        let base = base.map(parse_url).transpose()?;
        let one = |given: Option<&str>, name: &str| -> Result<Option<String>, String> {
            match (given, &base) {
                (Some(url), _) => Ok(Some(parse_url(url)?.to_string())),
                (None, Some(b)) => b
                    .join(name)
                    .map(|u| Some(u.to_string()))
                    .map_err(|e| format!("cannot join {b} and {name}: {e}")),
                (None, None) => Ok(None),
            }
        };
        let endpoints = Self {
            check_create: one(check_create, "check-create")?,
            check_update: one(check_update, "check-update")?,
            on_end: one(on_end, "on-end")?,
        };
        if endpoints == Self::default() {
            return Err("ExternalService has no endpoints set.".into());
        }
        Ok(endpoints)
    }
}

fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("ExternalService URL is not a URL: {url} ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("ExternalService URL scheme must be http(s): {url}"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("ExternalService URL must have netloc: {url}"));
    }
    Ok(parsed)
}

/// The service over HTTP with reqwest.
pub struct HttpExternalService {
    http: reqwest::Client,
    endpoints: Endpoints,
    token: String,
    timeout: Duration,
}

impl HttpExternalService {
    pub fn new(endpoints: Endpoints, token: String, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .expect("http client");
        Self {
            http,
            endpoints,
            token,
            timeout,
        }
    }

    async fn post(&self, url: &str, body: &Value) -> Result<reqwest::Response, reqwest::Error> {
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if !self.token.is_empty() {
            req = req.header("x-auth-token", &self.token);
        }
        req.send().await
    }

    /// Fail closed: whatever is not a clear 204 or a 403 refuses the request, and says that the
    /// service's answer was not one (its body is logged, not shown: it may leak).
    fn unreachable(&self, url: &str, why: String) -> Verdict {
        tracing::warn!(%url, %why, "the enforcement service gave no usable answer; refusing");
        Verdict::Deny(format!(
            "{GENERIC_DENY_MSG} The enforcement service could not be reached ({why}); the \
             request is refused until it answers."
        ))
    }
}

#[async_trait]
impl ExternalService for HttpExternalService {
    async fn check(&self, which: Check, body: &Value) -> Verdict {
        let url = match which {
            Check::Create => &self.endpoints.check_create,
            Check::Update => &self.endpoints.check_update,
        };
        let Some(url) = url else {
            return Verdict::Allow;
        };
        let resp = match self.post(url, body).await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return self.unreachable(url, format!("no answer within {:?}", self.timeout));
            }
            Err(e) => return self.unreachable(url, format!("{e}")),
        };
        match resp.status().as_u16() {
            204 => Verdict::Allow,
            403 => {
                let text = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from));
                match message {
                    Some(m) => Verdict::Deny(m),
                    None => {
                        tracing::debug!(%url, body = %text, "malformed 403 from the enforcement service");
                        Verdict::Deny(GENERIC_DENY_MSG.into())
                    }
                }
            }
            other => {
                let text = resp.text().await.unwrap_or_default();
                tracing::debug!(%url, status = other, body = %text, "unexpected answer from the enforcement service");
                self.unreachable(url, format!("it answered HTTP {other}, not 204 or 403"))
            }
        }
    }

    async fn on_end(&self, body: &Value) -> Result<(), String> {
        let Some(url) = &self.endpoints.on_end else {
            return Ok(());
        };
        match self.post(url, body).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{url} answered HTTP {}", r.status().as_u16())),
            Err(e) => Err(format!("{url}: {e}")),
        }
    }

    fn has_on_end(&self) -> bool {
        self.endpoints.on_end.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_as_urljoin_does() {
        let e =
            Endpoints::resolve(Some("http://h:1/api/"), None, Some("https://o/u"), None).unwrap();
        assert_eq!(
            e.check_create.as_deref(),
            Some("http://h:1/api/check-create")
        );
        assert_eq!(e.check_update.as_deref(), Some("https://o/u"));
        assert_eq!(e.on_end.as_deref(), Some("http://h:1/api/on-end"));
        let e = Endpoints::resolve(Some("http://h/api"), None, None, None).unwrap();
        assert_eq!(e.check_create.as_deref(), Some("http://h/check-create"));
    }

    #[test]
    fn bad_urls_and_no_endpoint_are_errors() {
        assert!(
            Endpoints::resolve(None, None, None, None)
                .unwrap_err()
                .contains("no endpoints")
        );
        assert!(
            Endpoints::resolve(Some("ftp://h/"), None, None, None)
                .unwrap_err()
                .contains("http(s)")
        );
        assert!(Endpoints::resolve(None, Some("nonsense"), None, None).is_err());
    }
}
