//! Usage enforcement, as upstream's `blazar/enforcement`: filters that may refuse a lease create
//! or update (`MaxLeaseDurationFilter`, `ExternalServiceFilter`) and the external service's
//! `on-end` notice.
//!
//! What this module must not do: read the clock, touch the database, or be called while the
//! write turn is held (the service layer gathers what a check needs first; see
//! `service::enforcement`). With no filter enabled every check here is a no-op.

pub mod body;
pub mod external;
pub mod max_duration;

use std::{sync::Arc, time::Duration};

use serde_json::Value;

use crate::{
    config::{ConfigError, Settings},
    domain::DomainError,
    jobs::notify::RetryPolicy,
};
pub use external::{Check, Endpoints, ExternalService, HttpExternalService, Verdict};
pub use max_duration::MaxDuration;

pub const MAX_LEASE_DURATION_FILTER: &str = "MaxLeaseDurationFilter";
pub const EXTERNAL_SERVICE_FILTER: &str = "ExternalServiceFilter";

/// The enforcement settings, checked: what start-up refuses is an error here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcementConfig {
    pub max_duration: Option<MaxDuration>,
    pub external: Option<Endpoints>,
}

impl EnforcementConfig {
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigError> {
        let invalid = |name, message: String| ConfigError::Invalid { name, message };
        let mut max_duration = None;
        let mut external = None;
        for name in &s.enforcement.enabled_filters {
            match name.trim() {
                MAX_LEASE_DURATION_FILTER => {
                    if s.enforcement.max_lease_duration < -1 {
                        return Err(invalid(
                            "max_lease_duration",
                            "must be -1 (no limit) or a number of seconds".into(),
                        ));
                    }
                    max_duration = Some(MaxDuration {
                        max_seconds: s.enforcement.max_lease_duration,
                        exempt_project_ids: s
                            .enforcement
                            .max_lease_duration_exempt_project_ids
                            .clone(),
                    });
                }
                EXTERNAL_SERVICE_FILTER => {
                    let e = Endpoints::resolve(
                        s.enforcement.external_service_base_endpoint.as_deref(),
                        s.enforcement
                            .external_service_check_create_endpoint
                            .as_deref(),
                        s.enforcement
                            .external_service_check_update_endpoint
                            .as_deref(),
                        s.enforcement.external_service_on_end_endpoint.as_deref(),
                    )
                    .map_err(|m| invalid("external_service_base_endpoint", m))?;
                    if !(1..=600).contains(&s.enforcement.external_service_timeout_seconds) {
                        return Err(invalid(
                            "external_service_timeout_seconds",
                            "must be between 1 and 600".into(),
                        ));
                    }
                    external = Some(e);
                }
                "" => {}
                other => {
                    return Err(invalid(
                        "enabled_filters",
                        format!(
                            "{other:?} is not a filter; the filters are \
                             {MAX_LEASE_DURATION_FILTER} and {EXTERNAL_SERVICE_FILTER}"
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            max_duration,
            external,
        })
    }
}

/// The enabled filters, ready to check.
#[derive(Clone, Default)]
pub struct Enforcement {
    max_duration: Option<MaxDuration>,
    external: Option<Arc<dyn ExternalService>>,
    /// `context.auth_url` and `context.region_name` of every body.
    auth_url: Option<String>,
    region_name: Option<String>,
    /// How `on-end` deliveries are retried (the webhooks' policy).
    retry: Option<RetryPolicy>,
}

impl Enforcement {
    /// Builds the filters the settings enable (validated settings: no error left but a bad one).
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigError> {
        let config = EnforcementConfig::from_settings(s)?;
        let external = config.external.map(|e| {
            Arc::new(HttpExternalService::new(
                e,
                secrecy::ExposeSecret::expose_secret(&s.enforcement.external_service_token)
                    .to_string(),
                Duration::from_secs(s.enforcement.external_service_timeout_seconds),
            )) as Arc<dyn ExternalService>
        });
        Ok(Self {
            max_duration: config.max_duration,
            external,
            auth_url: s.keystone_authtoken.auth_url.clone(),
            region_name: s.keystone_authtoken.region_name.clone(),
            retry: Some(RetryPolicy {
                max_attempts: s.notifications.max_attempts,
                first_backoff: Duration::from_millis(s.notifications.backoff_ms),
            }),
        })
    }

    /// Replaces the external service (tests, other transports).
    pub fn with_external(mut self, external: Arc<dyn ExternalService>) -> Self {
        self.external = Some(external);
        self
    }

    /// `MaxLeaseDurationFilter` on a lease of `project` from `start` to `end`.
    pub fn check_duration(
        &self,
        project: Option<&str>,
        start: chrono::NaiveDateTime,
        end: chrono::NaiveDateTime,
    ) -> Result<(), DomainError> {
        match &self.max_duration {
            Some(rule) => rule.check(project, start, end),
            None => Ok(()),
        }
    }

    /// Whether creates and updates go to the external service (and so need their hosts chosen
    /// first).
    pub fn checks_externally(&self) -> bool {
        self.external.is_some()
    }

    /// Whether ended leases are announced to the external service.
    pub fn announces_end(&self) -> bool {
        self.external.as_ref().is_some_and(|e| e.has_on_end())
    }

    /// The `context` part of a body, for a lease of `user`/`project`.
    pub fn context(&self, user_id: Option<&str>, project_id: Option<&str>) -> Value {
        body::context(
            user_id,
            project_id,
            self.auth_url.as_deref(),
            self.region_name.as_deref(),
        )
    }

    /// `ExternalServiceFilter.check_create` / `check_update`: a refusal is 400 with the
    /// service's message.
    pub async fn check(&self, which: Check, body: &Value) -> Result<(), DomainError> {
        let Some(external) = &self.external else {
            return Ok(());
        };
        match external.check(which, body).await {
            Verdict::Allow => Ok(()),
            Verdict::Deny(message) => Err(DomainError::ExternalServiceDenied(message)),
        }
    }

    /// Delivers `on-end`, retrying with backoff; logs, never fails (the lease has ended whatever
    /// the service says).
    pub async fn deliver_on_end(&self, lease_id: &str, body: &Value) {
        let Some(external) = &self.external else {
            return;
        };
        let policy = self.retry.unwrap_or(RetryPolicy {
            max_attempts: 1,
            first_backoff: Duration::ZERO,
        });
        let attempts = policy.max_attempts.max(1);
        let mut backoff = policy.first_backoff;
        for attempt in 1..=attempts {
            match external.on_end(body).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(%lease_id, attempt, error = %e, "on-end delivery failed")
                }
            }
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
        tracing::error!(%lease_id, "on-end given up after {attempts} attempts");
    }
}
