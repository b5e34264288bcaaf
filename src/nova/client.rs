//! A small typed client for the parts of Nova's compute API that Blazar uses: hypervisors,
//! aggregates, servers and compute services. It knows HTTP, authentication and retries; what the
//! calls mean for a reservation is `nova::pool`'s business.
//!
//! Every request carries one fixed microversion, [`MICROVERSION`]: 2.53 gives hypervisor search
//! by name with its servers (`hypervisor_hostname_pattern`, `with_servers`), and it is below 2.88,
//! where hypervisors stop showing vcpus, memory_mb and local_gb. Connection errors, timeouts and
//! 5xx answers are retried a few times with backoff; Nova's own error message is carried into
//! [`NovaError`], so that ours can say what Nova said.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::service_account::{LoginError, ServiceAccount};

/// The compute API microversion of every request.
pub const MICROVERSION: &str = "2.53";

/// How requests authenticate and where they go.
pub enum NovaAuth {
    /// A fixed endpoint and token (a Nova behind a noauth filter, in tests).
    Fixed { url: String, token: String },
    /// The service account's token; the endpoint from its catalog unless `url` overrides it.
    Keystone {
        account: Arc<ServiceAccount>,
        url: Option<String>,
        interface: String,
        region: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub first_backoff: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NovaError {
    /// No answer: connection refused, timeout (after the retries).
    #[error("Nova cannot be reached ({method} {path}): {reason}")]
    Unreachable {
        method: String,
        path: String,
        reason: String,
    },
    /// Nova answered with an error status; `message` is Nova's own.
    #[error("Nova answered {status} to {method} {path}: {message}")]
    Status {
        status: u16,
        method: String,
        path: String,
        message: String,
    },
    /// The service account could not get a token, or the catalog has no compute endpoint.
    #[error("{0}")]
    Identity(String),
    /// Nova accepted the work but has not finished it in the time we wait (servers deleting).
    #[error("{0}")]
    StillWaiting(String),
    /// Nova answered 2xx with a body we cannot read.
    #[error("Nova's answer to {method} {path} is not what the API documents: {reason}")]
    BadAnswer {
        method: String,
        path: String,
        reason: String,
    },
}

impl NovaError {
    /// Whether trying again later may succeed (Nova or Keystone down, overloaded, restarting).
    pub fn transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Identity(_) | Self::StillWaiting(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::BadAnswer { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A compute node as `os-hypervisors/detail` shows it (at [`MICROVERSION`]).
#[derive(Debug, Clone, Deserialize)]
pub struct Hypervisor {
    pub id: Value,
    pub hypervisor_hostname: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub hypervisor_type: String,
    #[serde(default)]
    pub hypervisor_version: i64,
    #[serde(default)]
    pub vcpus: i64,
    #[serde(default)]
    pub memory_mb: i64,
    #[serde(default)]
    pub local_gb: i64,
    /// An object from 2.28 on; stored as its JSON text, as upstream stores `str(cpu_info)`.
    #[serde(default)]
    pub cpu_info: Value,
    pub service: HypervisorService,
    /// Present (with `with_servers=true`) only when the node has servers.
    #[serde(default)]
    pub servers: Vec<ServerRef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HypervisorService {
    pub host: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerRef {
    pub uuid: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Aggregate {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub tenant_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ComputeService {
    pub host: String,
    #[serde(default)]
    pub zone: String,
    /// `enabled` or `disabled`.
    #[serde(default)]
    pub status: String,
    /// `up` or `down`.
    #[serde(default)]
    pub state: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InstanceAction {
    pub action: String,
    #[serde(default)]
    pub start_time: String,
}

pub struct NovaClient {
    http: reqwest::Client,
    auth: NovaAuth,
    retry: RetryPolicy,
}

impl NovaClient {
    pub fn new(auth: NovaAuth, timeout: Duration, retry: RetryPolicy) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .expect("http client");
        Self { http, auth, retry }
    }

    /// The endpoint and token to use; a fresh login when `relogin`.
    async fn target(&self, relogin: bool) -> Result<(String, String), NovaError> {
        match &self.auth {
            NovaAuth::Fixed { url, token } => Ok((url.clone(), token.clone())),
            NovaAuth::Keystone {
                account,
                url,
                interface,
                region,
            } => {
                let session = account.session(relogin).await.map_err(|e| match e {
                    LoginError::Unreachable { .. } | LoginError::Refused { .. } => {
                        NovaError::Identity(format!("cannot get a token for Nova: {e}"))
                    }
                })?;
                let endpoint = match url {
                    Some(u) => u.clone(),
                    None => session
                        .endpoint("compute", interface, region.as_deref())
                        .ok_or_else(|| {
                            NovaError::Identity(format!(
                                "the Keystone catalog of the service account has no {interface} \
                                 compute endpoint{}",
                                region
                                    .as_deref()
                                    .map(|r| format!(" in region {r}"))
                                    .unwrap_or_default()
                            ))
                        })?,
                };
                Ok((endpoint, session.token))
            }
        }
    }

    /// One call, retried on connection errors and 5xx, re-authenticated once on 401 (Keystone).
    /// Returns the status and the JSON body (`null` when empty) of a 2xx answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, NovaError> {
        let mut backoff = self.retry.first_backoff;
        let mut relogin = false;
        let mut attempt = 0;
        loop {
            let (base, token) = self.target(relogin).await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .header("x-auth-token", token)
                .header("openstack-api-version", format!("compute {MICROVERSION}"))
                .header("x-openstack-nova-api-version", MICROVERSION)
                .header("accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let failure = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        return if text.trim().is_empty() {
                            Ok(Value::Null)
                        } else {
                            serde_json::from_str(&text).map_err(|e| NovaError::BadAnswer {
                                method: method.to_string(),
                                path: path.to_string(),
                                reason: e.to_string(),
                            })
                        };
                    }
                    if status == 401 && !relogin && matches!(self.auth, NovaAuth::Keystone { .. }) {
                        // Our token was revoked or Keystone's keys rotated: log in again, once.
                        relogin = true;
                        continue;
                    }
                    NovaError::Status {
                        status,
                        method: method.to_string(),
                        path: path.to_string(),
                        message: nova_message(&text),
                    }
                }
                Err(e) => NovaError::Unreachable {
                    method: method.to_string(),
                    path: path.to_string(),
                    reason: error_chain(&e),
                },
            };
            if !failure.transient() || attempt >= self.retry.retries {
                return Err(failure);
            }
            attempt += 1;
            tracing::debug!(error = %failure, attempt, "Nova request failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    fn field<T: serde::de::DeserializeOwned>(
        body: Value,
        key: &str,
        method: &str,
        path: &str,
    ) -> Result<T, NovaError> {
        serde_json::from_value(body.get(key).cloned().unwrap_or(Value::Null)).map_err(|e| {
            NovaError::BadAnswer {
                method: method.to_string(),
                path: path.to_string(),
                reason: format!("{key}: {e}"),
            }
        })
    }

    /// Compute nodes whose hypervisor hostname contains `pattern` (Nova matches substrings),
    /// with their servers; none is an empty list, not an error.
    pub async fn hypervisors_matching(&self, pattern: &str) -> Result<Vec<Hypervisor>, NovaError> {
        let path = format!(
            "/os-hypervisors/detail?hypervisor_hostname_pattern={}&with_servers=true",
            encode(pattern)
        );
        match self.call(Method::GET, &path, None).await {
            Ok(body) => Self::field(body, "hypervisors", "GET", &path),
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub async fn aggregates(&self) -> Result<Vec<Aggregate>, NovaError> {
        let body = self.call(Method::GET, "/os-aggregates", None).await?;
        Self::field(body, "aggregates", "GET", "/os-aggregates")
    }

    /// The aggregate `id`, or `None` if Nova has no such aggregate.
    pub async fn aggregate(&self, id: i64) -> Result<Option<Aggregate>, NovaError> {
        let path = format!("/os-aggregates/{id}");
        match self.call(Method::GET, &path, None).await {
            Ok(body) => Self::field(body, "aggregate", "GET", &path).map(Some),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an aggregate; a name already taken is a 409 error.
    pub async fn create_aggregate(
        &self,
        name: &str,
        availability_zone: Option<&str>,
    ) -> Result<Aggregate, NovaError> {
        let body = json!({"aggregate": {"name": name, "availability_zone": availability_zone}});
        let answer = self
            .call(Method::POST, "/os-aggregates", Some(&body))
            .await?;
        Self::field(answer, "aggregate", "POST", "/os-aggregates")
    }

    async fn aggregate_action(&self, id: i64, body: Value) -> Result<Aggregate, NovaError> {
        let path = format!("/os-aggregates/{id}/action");
        let answer = self.call(Method::POST, &path, Some(&body)).await?;
        Self::field(answer, "aggregate", "POST", &path)
    }

    /// Sets metadata keys (a `None` value deletes the key).
    pub async fn set_metadata(
        &self,
        id: i64,
        metadata: &BTreeMap<String, Option<String>>,
    ) -> Result<Aggregate, NovaError> {
        self.aggregate_action(id, json!({"set_metadata": {"metadata": metadata}}))
            .await
    }

    /// Adds a compute host; Nova answers 409 if it is already a member or in another
    /// availability zone, 404 if it knows no such host.
    pub async fn add_host(&self, id: i64, host: &str) -> Result<Aggregate, NovaError> {
        self.aggregate_action(id, json!({"add_host": {"host": host}}))
            .await
    }

    /// Removes a compute host; Nova answers 404 if it is not a member, 409 if servers on it would
    /// change availability zone.
    pub async fn remove_host(&self, id: i64, host: &str) -> Result<Aggregate, NovaError> {
        self.aggregate_action(id, json!({"remove_host": {"host": host}}))
            .await
    }

    /// Deletes an (empty) aggregate; `false` if it was already gone.
    pub async fn delete_aggregate(&self, id: i64) -> Result<bool, NovaError> {
        match self
            .call(Method::DELETE, &format!("/os-aggregates/{id}"), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The servers on compute host `host`, of every project.
    pub async fn servers_on(&self, host: &str) -> Result<Vec<Server>, NovaError> {
        let path = format!("/servers/detail?all_tenants=1&host={}", encode(host));
        let body = self.call(Method::GET, &path, None).await?;
        Self::field(body, "servers", "GET", &path)
    }

    /// Deletes a server; `false` if it was already gone.
    pub async fn delete_server(&self, id: &str) -> Result<bool, NovaError> {
        match self
            .call(Method::DELETE, &format!("/servers/{}", encode(id)), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Snapshots a server into an image named `name`; returns the image id.
    pub async fn create_image(
        &self,
        server: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<String>, NovaError> {
        let path = format!("/servers/{}/action", encode(server));
        let body = json!({"createImage": {"name": name, "metadata": metadata}});
        let answer = self.call(Method::POST, &path, Some(&body)).await?;
        Ok(answer["image_id"].as_str().map(str::to_string))
    }

    /// What was done to a server (`createImage`, `delete`, ...), newest first.
    pub async fn instance_actions(&self, server: &str) -> Result<Vec<InstanceAction>, NovaError> {
        let path = format!("/servers/{}/os-instance-actions", encode(server));
        let body = self.call(Method::GET, &path, None).await?;
        Self::field(body, "instanceActions", "GET", &path)
    }

    /// Every `nova-compute` service, with its availability zone, status and state.
    pub async fn compute_services(&self) -> Result<Vec<ComputeService>, NovaError> {
        let path = "/os-services?binary=nova-compute";
        let body = self.call(Method::GET, path, None).await?;
        Self::field(body, "services", "GET", path)
    }
}

/// Nova's error bodies look like `{"itemNotFound": {"code": 404, "message": "..."}}`; the text
/// itself when they don't.
fn nova_message(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    parsed
        .as_ref()
        .and_then(Value::as_object)
        .and_then(|o| o.values().find_map(|v| v["message"].as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let t = text.trim();
            if t.is_empty() {
                "(no message)".to_string()
            } else {
                t.chars().take(300).collect()
            }
        })
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nova_messages_are_carried() {
        assert_eq!(
            nova_message(
                r#"{"itemNotFound": {"code": 404, "message": "Aggregate 9 could not be found."}}"#
            ),
            "Aggregate 9 could not be found."
        );
        assert_eq!(
            nova_message("<html>Bad Gateway</html>"),
            "<html>Bad Gateway</html>"
        );
        assert_eq!(nova_message(""), "(no message)");
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let status = |status| NovaError::Status {
            status,
            method: "GET".into(),
            path: "/".into(),
            message: String::new(),
        };
        assert!(status(503).transient());
        assert!(status(500).transient());
        assert!(!status(409).transient());
        assert!(!status(404).transient());
        assert!(
            NovaError::Unreachable {
                method: "GET".into(),
                path: "/".into(),
                reason: "refused".into()
            }
            .transient()
        );
    }

    #[test]
    fn path_values_are_encoded() {
        assert_eq!(encode("compute-a.example_1"), "compute-a.example_1");
        assert_eq!(encode("a b/c&d"), "a%20b%2Fc%26d");
    }
}
