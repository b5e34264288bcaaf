//! Settings in layers: built-in defaults < TOML file (`--config`) < environment < command-line flags.
//!
//! The environment and flag layers come from one clap definition in `main.rs` (each flag names its
//! variable), so this module only knows defaults, the TOML file and how to apply a layer.

use std::path::Path;

use serde::Deserialize;

/// Everything the server can be told, with the defaults a fresh clone runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Address to serve on; port 0 picks a free port (tests).
    pub bind: String,
    /// `sqlite://file.db?mode=rwc`, `sqlite:///abs/path.db?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// Largest pool of database connections.
    pub db_max_connections: u32,
    /// Minutes before a lease's end at which `before_end_lease` fires when the lease gives no
    /// `before_end_date` (upstream `[manager] minutes_before_end_lease`); 0 creates no such event.
    pub minutes_before_end_lease: i64,
    /// What a reservation's `before_end: "default"` means (upstream `[physical:host] before_end`):
    /// `""` (nothing) or `"snapshot"`.
    pub default_before_end_action: String,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Most reservations one lease may hold.
    pub max_reservations_per_lease: usize,
    /// Most items in one page of a list (also the page size when no `limit` is given).
    pub max_page_size: usize,
    /// Identity used in noauth mode when a request carries no X-Project-Id / X-User-Id / X-Roles.
    pub default_project_id: String,
    pub default_user_id: String,
    pub default_roles: String,
    /// tracing-subscriber filter, e.g. `info` or `blazar_server=debug,info`.
    pub log_filter: String,
    /// Run the lease lifecycle runner in this process (`--no-runner` turns it off, so that API
    /// and runner instances can scale separately).
    pub runner: bool,
    /// Seconds a runner's claim on an event lasts; after that another runner (or this one after a
    /// restart) takes the event over.
    pub event_claim_seconds: u64,
    /// Name of this instance in event claims and logs; default: hostname-pid.
    pub instance_name: Option<String>,
    /// Webhook URLs that receive a JSON POST for every lease event and lease change.
    pub notify_urls: Vec<String>,
    /// Delivery attempts per notification and URL (with exponential backoff).
    pub notify_max_attempts: u32,
    /// First retry delay of a notification, in milliseconds (doubles each attempt).
    pub notify_backoff_ms: u64,
    /// `noauth` (identity from X-Project-Id/X-User-Id/X-Roles) or `keystone` (X-Auth-Token).
    pub auth: String,
    /// Keystone's v3 endpoint, e.g. `http://keystone:5000/v3` (keystone mode).
    pub keystone_url: Option<String>,
    /// The service account that validates tokens (needs the admin or service role).
    pub keystone_username: String,
    pub keystone_password: Option<String>,
    pub keystone_project_name: String,
    pub keystone_user_domain_name: String,
    pub keystone_project_domain_name: String,
    /// Longest time a validated token is trusted without asking Keystone again.
    pub token_cache_seconds: u64,
    /// Most tokens kept in the cache.
    pub token_cache_size: usize,
    /// oslo.policy-style YAML file overriding the default rules.
    pub policy_file: Option<String>,
    /// What a lease's events do to hosts: `standalone` (record what would be done) or `nova`
    /// (drive a real Nova's aggregates, as upstream's host plugin does).
    pub resource_driver: String,
    /// Nova's compute endpoint (`http://nova:8774/v2.1`); without it, the catalog of the
    /// Keystone service account says where Nova is.
    pub nova_url: Option<String>,
    /// A fixed token for `nova_url` (a Nova behind a test noauth filter); without it, the
    /// Keystone service account's token.
    pub nova_token: Option<String>,
    /// Catalog interface of the compute endpoint (upstream `[nova] endpoint_type`).
    pub nova_endpoint_type: String,
    /// Catalog region of the compute endpoint (upstream `os_region_name`); any region if unset.
    pub nova_region_name: Option<String>,
    /// Seconds one Nova request may take.
    pub nova_timeout_seconds: u64,
    /// Retries of one Nova request after a connection error, a timeout or a 5xx.
    pub nova_retries: u32,
    /// Upstream `[nova] aggregate_freepool_name`: the aggregate of enrolled, unreserved hosts.
    pub aggregate_freepool_name: String,
    /// Upstream `[nova] blazar_owner`: the aggregate metadata key naming the owner project.
    pub blazar_owner: String,
    /// Upstream `[nova] project_id_key`: the value of extra-project keys in aggregate metadata.
    pub project_id_key: String,
    /// Upstream `[physical:host] blazar_az_prefix`: availability zones of reservation aggregates.
    pub blazar_az_prefix: String,
    /// Upstream `[nova] image_prefix`: names of before-end snapshots.
    pub image_prefix: String,
    /// Upstream `[nova] az_aware`: record a host's availability zone at enrolment.
    pub az_aware: bool,
    /// Longest wait for a lease's servers to be deleted at its end, in seconds (upstream: 10 min).
    pub server_deletion_timeout_seconds: u64,
    /// How long an event keeps being retried while Nova is unreachable or failing, in seconds,
    /// before the lease goes to ERROR.
    pub nova_retry_deadline_seconds: u64,
    /// Seconds between comparisons of Nova's aggregates with the database; 0 turns it off.
    pub reconcile_interval_seconds: u64,
    /// Seconds between polls of the compute services' health (upstream
    /// `[physical:host] polling_interval`); 0 turns it off.
    pub health_interval_seconds: u64,
    /// How far ahead plans look for the earliest start that fits, and the longest range an
    /// availability or calendar query may span, in days.
    pub plan_horizon_days: u32,

    // Usage enforcement, named as upstream's `[enforcement]` options (docs/enforcement.md).
    /// Filters run on lease create and update: `MaxLeaseDurationFilter`, `ExternalServiceFilter`.
    pub enabled_filters: Vec<String>,
    /// Longest lease, in seconds; -1 is no limit.
    pub max_lease_duration: i64,
    /// Projects whose leases may be longer than `max_lease_duration`.
    pub max_lease_duration_exempt_project_ids: Vec<String>,
    /// The external service's URL; each endpoint below defaults to it joined with
    /// `check-create`, `check-update` or `on-end` (as upstream's `urljoin`).
    pub external_service_base_endpoint: Option<String>,
    pub external_service_check_create_endpoint: Option<String>,
    pub external_service_check_update_endpoint: Option<String>,
    pub external_service_on_end_endpoint: Option<String>,
    /// Sent as `X-Auth-Token` when not empty.
    pub external_service_token: String,
    /// Longest wait for the external service's answer; past it, the request is refused.
    pub external_service_timeout_seconds: u64,
    /// Serve Prometheus metrics at `GET /metrics` (docs/operations.md).
    pub metrics_enabled: bool,
    /// Serve `/metrics` only on this address, on a listener of its own, and not on `bind`.
    pub metrics_bind: Option<String>,
    /// How long an `Idempotency-Key` of a create is remembered (and its response replayed), in
    /// seconds; older keys are purged.
    pub idempotency_key_ttl_seconds: u64,
    /// At exit, how long webhook deliveries and `on-end` posts queued or in flight are waited
    /// for before they are dropped (docs/lifecycle.md).
    pub shutdown_drain_seconds: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:1234".into(),
            database_url: "sqlite://blazar.db?mode=rwc".into(),
            db_max_connections: 8,
            minutes_before_end_lease: 60,
            default_before_end_action: String::new(),
            max_body_bytes: 1024 * 1024,
            max_reservations_per_lease: 32,
            max_page_size: 1000,
            default_project_id: "default".into(),
            default_user_id: "admin".into(),
            default_roles: "admin".into(),
            // sqlx logs every PostgreSQL notice ("relation exists, skipping") at info.
            log_filter: "info,sqlx=warn".into(),
            runner: true,
            event_claim_seconds: 30,
            instance_name: None,
            notify_urls: Vec::new(),
            notify_max_attempts: 5,
            notify_backoff_ms: 500,
            auth: "noauth".into(),
            keystone_url: None,
            keystone_username: "blazar".into(),
            keystone_password: None,
            keystone_project_name: "service".into(),
            keystone_user_domain_name: "Default".into(),
            keystone_project_domain_name: "Default".into(),
            token_cache_seconds: 300,
            token_cache_size: 10_000,
            policy_file: None,
            resource_driver: "standalone".into(),
            nova_url: None,
            nova_token: None,
            nova_endpoint_type: "internal".into(),
            nova_region_name: None,
            nova_timeout_seconds: 30,
            nova_retries: 3,
            aggregate_freepool_name: "freepool".into(),
            blazar_owner: "blazar:owner".into(),
            project_id_key: "blazar:project".into(),
            blazar_az_prefix: "blazar_".into(),
            image_prefix: "reserved_".into(),
            az_aware: true,
            server_deletion_timeout_seconds: 600,
            nova_retry_deadline_seconds: 600,
            reconcile_interval_seconds: 300,
            health_interval_seconds: 60,
            plan_horizon_days: 365,

            enabled_filters: Vec::new(),
            max_lease_duration: -1,
            max_lease_duration_exempt_project_ids: Vec::new(),
            external_service_base_endpoint: None,
            external_service_check_create_endpoint: None,
            external_service_check_update_endpoint: None,
            external_service_on_end_endpoint: None,
            external_service_token: String::new(),
            external_service_timeout_seconds: 5,
            metrics_enabled: true,
            metrics_bind: None,
            idempotency_key_ttl_seconds: 86_400,
            shutdown_drain_seconds: 5,
        }
    }
}

/// One layer of settings: every field optional; what a layer leaves out keeps the value below.
/// The same type reads the TOML file and (through clap) the environment and the flags.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SettingsLayer {
    /// Address to listen on [default: 127.0.0.1:1234]
    #[arg(long, global = true, env = "BLAZAR_BIND")]
    pub bind: Option<String>,
    /// Database URL [default: sqlite://blazar.db?mode=rwc]
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Largest database connection pool [default: 8]
    #[arg(long, global = true, env = "BLAZAR_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Minutes before the end at which before_end_lease fires by default; 0 = no event [default: 60]
    #[arg(long, global = true, env = "BLAZAR_MINUTES_BEFORE_END_LEASE")]
    pub minutes_before_end_lease: Option<i64>,
    /// What before_end "default" means: "" or "snapshot" [default: ""]
    #[arg(long, global = true, env = "BLAZAR_DEFAULT_BEFORE_END_ACTION")]
    pub default_before_end_action: Option<String>,
    /// Largest request body in bytes [default: 1048576]
    #[arg(long, global = true, env = "BLAZAR_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most reservations per lease [default: 32]
    #[arg(long, global = true, env = "BLAZAR_MAX_RESERVATIONS_PER_LEASE")]
    pub max_reservations_per_lease: Option<usize>,
    /// Most items per page of a list, and the default page size [default: 1000]
    #[arg(long, global = true, env = "BLAZAR_MAX_PAGE_SIZE")]
    pub max_page_size: Option<usize>,
    /// Project of requests without X-Project-Id (noauth) [default: default]
    #[arg(long, global = true, env = "BLAZAR_DEFAULT_PROJECT_ID")]
    pub default_project_id: Option<String>,
    /// User of requests without X-User-Id (noauth) [default: admin]
    #[arg(long, global = true, env = "BLAZAR_DEFAULT_USER_ID")]
    pub default_user_id: Option<String>,
    /// Roles of requests without X-Roles, comma-separated (noauth) [default: admin]
    #[arg(long, global = true, env = "BLAZAR_DEFAULT_ROLES")]
    pub default_roles: Option<String>,
    /// Log filter (RUST_LOG overrides it) [default: info]
    #[arg(long, global = true, env = "BLAZAR_LOG")]
    pub log_filter: Option<String>,
    /// Do not run the lease lifecycle runner in this process
    #[arg(long = "no-runner", global = true, env = "BLAZAR_NO_RUNNER")]
    #[serde(skip)]
    pub no_runner: bool,
    /// TOML only: `runner = false` is the same as --no-runner
    #[arg(skip)]
    pub runner: Option<bool>,
    /// Seconds an event claim lasts before another runner may take it over [default: 30]
    #[arg(long, global = true, env = "BLAZAR_EVENT_CLAIM_SECONDS")]
    pub event_claim_seconds: Option<u64>,
    /// Name of this instance in event claims [default: hostname-pid]
    #[arg(long, global = true, env = "BLAZAR_INSTANCE_NAME")]
    pub instance_name: Option<String>,
    /// Webhook URL for lease notifications (repeatable; comma-separated in the environment)
    #[arg(
        long = "notify-url",
        global = true,
        env = "BLAZAR_NOTIFY_URLS",
        value_delimiter = ','
    )]
    pub notify_urls: Option<Vec<String>>,
    /// Delivery attempts per notification and URL [default: 5]
    #[arg(long, global = true, env = "BLAZAR_NOTIFY_MAX_ATTEMPTS")]
    pub notify_max_attempts: Option<u32>,
    /// First notification retry delay in ms, doubling each attempt [default: 500]
    #[arg(long, global = true, env = "BLAZAR_NOTIFY_BACKOFF_MS")]
    pub notify_backoff_ms: Option<u64>,
    /// Authentication: noauth or keystone [default: noauth]
    #[arg(long, global = true, env = "BLAZAR_AUTH")]
    pub auth: Option<String>,
    /// Keystone v3 endpoint, e.g. http://keystone:5000/v3
    #[arg(long, global = true, env = "BLAZAR_KEYSTONE_URL")]
    pub keystone_url: Option<String>,
    /// Service account that validates tokens [default: blazar]
    #[arg(long, global = true, env = "BLAZAR_KEYSTONE_USERNAME")]
    pub keystone_username: Option<String>,
    /// Password of the service account (prefer the environment or the config file)
    #[arg(
        long,
        global = true,
        env = "BLAZAR_KEYSTONE_PASSWORD",
        hide_env_values = true
    )]
    pub keystone_password: Option<String>,
    /// Project of the service account [default: service]
    #[arg(long, global = true, env = "BLAZAR_KEYSTONE_PROJECT_NAME")]
    pub keystone_project_name: Option<String>,
    /// Domain of the service account [default: Default]
    #[arg(long, global = true, env = "BLAZAR_KEYSTONE_USER_DOMAIN_NAME")]
    pub keystone_user_domain_name: Option<String>,
    /// Domain of the service project [default: Default]
    #[arg(long, global = true, env = "BLAZAR_KEYSTONE_PROJECT_DOMAIN_NAME")]
    pub keystone_project_domain_name: Option<String>,
    /// Seconds a validated token is trusted before asking Keystone again [default: 300]
    #[arg(long, global = true, env = "BLAZAR_TOKEN_CACHE_SECONDS")]
    pub token_cache_seconds: Option<u64>,
    /// Most tokens in the cache [default: 10000]
    #[arg(long, global = true, env = "BLAZAR_TOKEN_CACHE_SIZE")]
    pub token_cache_size: Option<usize>,
    /// Policy file (oslo.policy YAML) overriding the default rules
    #[arg(long, global = true, env = "BLAZAR_POLICY_FILE")]
    pub policy_file: Option<String>,
    /// Resource driver: standalone or nova [default: standalone]
    #[arg(long, global = true, env = "BLAZAR_RESOURCE_DRIVER")]
    pub resource_driver: Option<String>,
    /// Nova compute endpoint, e.g. http://nova:8774/v2.1 [default: from the Keystone catalog]
    #[arg(long, global = true, env = "BLAZAR_NOVA_URL")]
    pub nova_url: Option<String>,
    /// Fixed token for --nova-url [default: the Keystone service account's]
    #[arg(long, global = true, env = "BLAZAR_NOVA_TOKEN", hide_env_values = true)]
    pub nova_token: Option<String>,
    /// Catalog interface of Nova: public, internal or admin [default: internal]
    #[arg(long, global = true, env = "BLAZAR_NOVA_ENDPOINT_TYPE")]
    pub nova_endpoint_type: Option<String>,
    /// Catalog region of Nova [default: any]
    #[arg(long, global = true, env = "BLAZAR_NOVA_REGION_NAME")]
    pub nova_region_name: Option<String>,
    /// Seconds one Nova request may take [default: 30]
    #[arg(long, global = true, env = "BLAZAR_NOVA_TIMEOUT_SECONDS")]
    pub nova_timeout_seconds: Option<u64>,
    /// Retries of a Nova request after a connection error or 5xx [default: 3]
    #[arg(long, global = true, env = "BLAZAR_NOVA_RETRIES")]
    pub nova_retries: Option<u32>,
    /// Aggregate of enrolled, unreserved hosts [default: freepool]
    #[arg(long, global = true, env = "BLAZAR_AGGREGATE_FREEPOOL_NAME")]
    pub aggregate_freepool_name: Option<String>,
    /// Aggregate metadata key of the owner project [default: blazar:owner]
    #[arg(long, global = true, env = "BLAZAR_BLAZAR_OWNER")]
    pub blazar_owner: Option<String>,
    /// Aggregate metadata value of extra projects [default: blazar:project]
    #[arg(long, global = true, env = "BLAZAR_PROJECT_ID_KEY")]
    pub project_id_key: Option<String>,
    /// Availability zone prefix of reservation aggregates [default: blazar_]
    #[arg(long, global = true, env = "BLAZAR_BLAZAR_AZ_PREFIX")]
    pub blazar_az_prefix: Option<String>,
    /// Name prefix of before-end snapshots [default: reserved_]
    #[arg(long, global = true, env = "BLAZAR_IMAGE_PREFIX")]
    pub image_prefix: Option<String>,
    /// Record a host's availability zone at enrolment [default: true]
    #[arg(long, global = true, env = "BLAZAR_AZ_AWARE")]
    pub az_aware: Option<bool>,
    /// Longest wait for a lease's servers to go at its end, in seconds [default: 600]
    #[arg(long, global = true, env = "BLAZAR_SERVER_DELETION_TIMEOUT_SECONDS")]
    pub server_deletion_timeout_seconds: Option<u64>,
    /// Seconds an event is retried while Nova fails, before ERROR [default: 600]
    #[arg(long, global = true, env = "BLAZAR_NOVA_RETRY_DEADLINE_SECONDS")]
    pub nova_retry_deadline_seconds: Option<u64>,
    /// Seconds between reconciliations of Nova's aggregates; 0 = off [default: 300]
    #[arg(long, global = true, env = "BLAZAR_RECONCILE_INTERVAL_SECONDS")]
    pub reconcile_interval_seconds: Option<u64>,
    /// Seconds between health polls of the compute services; 0 = off [default: 60]
    #[arg(long, global = true, env = "BLAZAR_HEALTH_INTERVAL_SECONDS")]
    pub health_interval_seconds: Option<u64>,
    /// Days plans and availability searches look ahead [default: 365]
    #[arg(long, global = true, env = "BLAZAR_PLAN_HORIZON_DAYS")]
    pub plan_horizon_days: Option<u32>,

    // Usage enforcement (upstream `[enforcement]`).
    /// Enforcement filters: MaxLeaseDurationFilter, ExternalServiceFilter [default: none]
    #[arg(
        long,
        global = true,
        env = "BLAZAR_ENABLED_FILTERS",
        value_delimiter = ','
    )]
    pub enabled_filters: Option<Vec<String>>,
    /// Longest lease in seconds; -1 = no limit [default: -1]
    #[arg(
        long,
        global = true,
        env = "BLAZAR_MAX_LEASE_DURATION",
        allow_negative_numbers = true
    )]
    pub max_lease_duration: Option<i64>,
    /// Projects exempt from the longest lease, comma-separated
    #[arg(
        long,
        global = true,
        env = "BLAZAR_MAX_LEASE_DURATION_EXEMPT_PROJECT_IDS",
        value_delimiter = ','
    )]
    pub max_lease_duration_exempt_project_ids: Option<Vec<String>>,
    /// URL of the external enforcement service
    #[arg(long, global = true, env = "BLAZAR_EXTERNAL_SERVICE_BASE_ENDPOINT")]
    pub external_service_base_endpoint: Option<String>,
    /// check-create URL [default: base endpoint + check-create]
    #[arg(
        long,
        global = true,
        env = "BLAZAR_EXTERNAL_SERVICE_CHECK_CREATE_ENDPOINT"
    )]
    pub external_service_check_create_endpoint: Option<String>,
    /// check-update URL [default: base endpoint + check-update]
    #[arg(
        long,
        global = true,
        env = "BLAZAR_EXTERNAL_SERVICE_CHECK_UPDATE_ENDPOINT"
    )]
    pub external_service_check_update_endpoint: Option<String>,
    /// on-end URL [default: base endpoint + on-end]
    #[arg(long, global = true, env = "BLAZAR_EXTERNAL_SERVICE_ON_END_ENDPOINT")]
    pub external_service_on_end_endpoint: Option<String>,
    /// X-Auth-Token sent to the external service
    #[arg(
        long,
        global = true,
        env = "BLAZAR_EXTERNAL_SERVICE_TOKEN",
        hide_env_values = true
    )]
    pub external_service_token: Option<String>,
    /// Seconds to wait for the external service before refusing [default: 5]
    #[arg(long, global = true, env = "BLAZAR_EXTERNAL_SERVICE_TIMEOUT_SECONDS")]
    pub external_service_timeout_seconds: Option<u64>,
    /// Serve Prometheus metrics at GET /metrics [default: true]
    #[arg(long, global = true, env = "BLAZAR_METRICS_ENABLED")]
    pub metrics_enabled: Option<bool>,
    /// Serve /metrics only on this address (a second listener), not on --bind
    #[arg(long, global = true, env = "BLAZAR_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// Seconds an Idempotency-Key of a create is remembered [default: 86400]
    #[arg(long, global = true, env = "BLAZAR_IDEMPOTENCY_KEY_TTL_SECONDS")]
    pub idempotency_key_ttl_seconds: Option<u64>,
    /// Seconds to wait at exit for webhook deliveries and on-end posts [default: 5]
    #[arg(long, global = true, env = "BLAZAR_SHUTDOWN_DRAIN_SECONDS")]
    pub shutdown_drain_seconds: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

impl SettingsLayer {
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

impl Settings {
    /// Applies a layer on top of these settings.
    pub fn apply(&mut self, layer: SettingsLayer) {
        if layer.no_runner {
            self.runner = false;
        } else if let Some(r) = layer.runner {
            self.runner = r;
        }
        macro_rules! take {
            ($($field:ident),*) => {
                $(if let Some(v) = layer.$field { self.$field = v; })*
            };
        }
        // Settings that are unset unless a layer gives them.
        macro_rules! take_some {
            ($($field:ident),*) => {
                $(if let Some(v) = layer.$field { self.$field = Some(v); })*
            };
        }
        take_some!(
            instance_name,
            keystone_url,
            keystone_password,
            policy_file,
            nova_url,
            nova_token,
            nova_region_name,
            metrics_bind,
            external_service_base_endpoint,
            external_service_check_create_endpoint,
            external_service_check_update_endpoint,
            external_service_on_end_endpoint
        );
        take!(
            bind,
            database_url,
            db_max_connections,
            minutes_before_end_lease,
            default_before_end_action,
            max_body_bytes,
            max_reservations_per_lease,
            max_page_size,
            default_project_id,
            default_user_id,
            default_roles,
            log_filter,
            event_claim_seconds,
            notify_urls,
            notify_max_attempts,
            notify_backoff_ms,
            auth,
            keystone_username,
            keystone_project_name,
            keystone_user_domain_name,
            keystone_project_domain_name,
            token_cache_seconds,
            token_cache_size,
            resource_driver,
            nova_endpoint_type,
            nova_timeout_seconds,
            nova_retries,
            aggregate_freepool_name,
            blazar_owner,
            project_id_key,
            blazar_az_prefix,
            image_prefix,
            az_aware,
            server_deletion_timeout_seconds,
            nova_retry_deadline_seconds,
            reconcile_interval_seconds,
            health_interval_seconds,
            plan_horizon_days,
            idempotency_key_ttl_seconds,
            metrics_enabled,
            enabled_filters,
            max_lease_duration,
            max_lease_duration_exempt_project_ids,
            external_service_token,
            external_service_timeout_seconds
        );
        take!(shutdown_drain_seconds);
    }

    /// Checks the values that would otherwise fail later, deep inside a request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0..=525_600).contains(&self.minutes_before_end_lease) {
            return Err(ConfigError::Invalid {
                name: "minutes_before_end_lease",
                message: "must be between 0 and 525600 (one year)".into(),
            });
        }
        if !crate::domain::lease::BEFORE_END_CONFIG_ACTIONS
            .contains(&self.default_before_end_action.as_str())
        {
            return Err(ConfigError::Invalid {
                name: "default_before_end_action",
                message: format!(
                    "must be one of {:?}",
                    crate::domain::lease::BEFORE_END_CONFIG_ACTIONS
                ),
            });
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                name: "max_body_bytes",
                message: "must be at least 1024".into(),
            });
        }
        if !(1..=100_000).contains(&self.max_page_size) {
            return Err(ConfigError::Invalid {
                name: "max_page_size",
                message: "must be between 1 and 100000".into(),
            });
        }
        if self.max_reservations_per_lease == 0 {
            return Err(ConfigError::Invalid {
                name: "max_reservations_per_lease",
                message: "must be at least 1".into(),
            });
        }
        if !(1..=86_400).contains(&self.event_claim_seconds) {
            return Err(ConfigError::Invalid {
                name: "event_claim_seconds",
                message: "must be between 1 and 86400".into(),
            });
        }
        if let Some(bad) = self
            .notify_urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(ConfigError::Invalid {
                name: "notify_urls",
                message: format!("{bad:?} is not an http(s) URL"),
            });
        }
        match self.auth.as_str() {
            "noauth" => {}
            "keystone" => {
                if self.keystone_url.is_none() || self.keystone_password.is_none() {
                    return Err(ConfigError::Invalid {
                        name: "auth",
                        message: "keystone mode needs keystone_url and keystone_password".into(),
                    });
                }
            }
            other => {
                return Err(ConfigError::Invalid {
                    name: "auth",
                    message: format!("{other:?} is not noauth or keystone"),
                });
            }
        }
        if self.token_cache_size == 0 {
            return Err(ConfigError::Invalid {
                name: "token_cache_size",
                message: "must be at least 1".into(),
            });
        }
        self.validate_nova()?;
        if !(1..=3650).contains(&self.plan_horizon_days) {
            return Err(ConfigError::Invalid {
                name: "plan_horizon_days",
                message: "must be between 1 and 3650".into(),
            });
        }
        if !(1..=31_536_000).contains(&self.idempotency_key_ttl_seconds) {
            return Err(ConfigError::Invalid {
                name: "idempotency_key_ttl_seconds",
                message: "must be between 1 and 31536000 (one year)".into(),
            });
        }
        if self.db_max_connections == 0 {
            return Err(ConfigError::Invalid {
                name: "db_max_connections",
                message: "must be at least 1".into(),
            });
        }
        crate::enforcement::EnforcementConfig::from_settings(self)?;
        // Port 0 (tests) picks a free port for each listener, so equal strings are fine there.
        if let Some(addr) = &self.metrics_bind
            && (addr.trim().is_empty() || (*addr == self.bind && !addr.ends_with(":0")))
        {
            return Err(ConfigError::Invalid {
                name: "metrics_bind",
                message: format!("{addr:?} must be an address other than bind"),
            });
        }
        Ok(())
    }
}

impl Settings {
    /// Whether leases drive a real Nova.
    pub fn nova_mode(&self) -> bool {
        self.resource_driver == "nova"
    }

    fn validate_nova(&self) -> Result<(), ConfigError> {
        let invalid = |name, message: String| Err(ConfigError::Invalid { name, message });
        match self.resource_driver.as_str() {
            "standalone" => return Ok(()),
            "nova" => {}
            other => {
                return invalid(
                    "resource_driver",
                    format!("{other:?} is not standalone or nova"),
                );
            }
        }
        if let Some(url) = &self.nova_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("nova_url", format!("{url:?} is not an http(s) URL"));
        }
        let keystone = self.keystone_url.is_some() && self.keystone_password.is_some();
        if self.nova_token.is_some() && self.nova_url.is_none() {
            return invalid("nova_token", "a fixed Nova token needs nova_url too".into());
        }
        if self.nova_token.is_none() && !keystone {
            return invalid(
                "resource_driver",
                "nova needs nova_url and nova_token, or Keystone service credentials \
                 (keystone_url and keystone_password) to find Nova in the catalog"
                    .into(),
            );
        }
        if !["public", "internal", "admin"].contains(&self.nova_endpoint_type.as_str()) {
            return invalid(
                "nova_endpoint_type",
                format!(
                    "{:?} is not public, internal or admin",
                    self.nova_endpoint_type
                ),
            );
        }
        for (name, value) in [
            ("aggregate_freepool_name", &self.aggregate_freepool_name),
            ("blazar_owner", &self.blazar_owner),
            ("project_id_key", &self.project_id_key),
            ("blazar_az_prefix", &self.blazar_az_prefix),
        ] {
            if value.trim().is_empty() || value.len() > 255 {
                return invalid(name, "must be 1 to 255 characters".into());
            }
        }
        if !(1..=600).contains(&self.nova_timeout_seconds) {
            return invalid("nova_timeout_seconds", "must be between 1 and 600".into());
        }
        if self.nova_retries > 10 {
            return invalid("nova_retries", "must be at most 10".into());
        }
        if !(1..=86_400).contains(&self.server_deletion_timeout_seconds) {
            return invalid(
                "server_deletion_timeout_seconds",
                "must be between 1 and 86400".into(),
            );
        }
        if !(1..=604_800).contains(&self.nova_retry_deadline_seconds) {
            return invalid(
                "nova_retry_deadline_seconds",
                "must be between 1 and 604800 (a week)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nova_mode_needs_a_way_to_reach_nova() {
        let mut s = Settings {
            resource_driver: "nova".into(),
            ..Default::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("nova_url and nova_token"), "{err}");
        s.nova_url = Some("http://127.0.0.1:8774/v2.1".into());
        s.nova_token = Some("admin:admin".into());
        s.validate().unwrap();
        s.resource_driver = "ironic".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("resource_driver")
        );
        let s = Settings {
            resource_driver: "nova".into(),
            auth: "keystone".into(),
            keystone_url: Some("http://keystone:5000/v3".into()),
            keystone_password: Some("secret".into()),
            ..Default::default()
        };
        s.validate().unwrap();
    }

    #[test]
    fn layers_override_in_order() {
        let mut s = Settings::default();
        s.apply(
            SettingsLayer::from_toml_str(
                "bind = \"0.0.0.0:9000\"\nminutes_before_end_lease = 30\n",
            )
            .unwrap(),
        );
        s.apply(SettingsLayer {
            bind: Some("127.0.0.1:0".into()),
            ..Default::default()
        });
        assert_eq!(s.bind, "127.0.0.1:0");
        assert_eq!(s.minutes_before_end_lease, 30);
        assert_eq!(s.database_url, Settings::default().database_url);
    }

    #[test]
    fn metrics_settings_from_the_file() {
        let mut s = Settings::default();
        assert!(s.metrics_enabled);
        s.apply(
            SettingsLayer::from_toml_str(
                "metrics_enabled = false\nmetrics_bind = \"127.0.0.1:9465\"\n",
            )
            .unwrap(),
        );
        assert!(!s.metrics_enabled);
        assert_eq!(s.metrics_bind.as_deref(), Some("127.0.0.1:9465"));
        s.validate().unwrap();
        s.metrics_bind = Some(s.bind.clone());
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("metrics_bind"), "{err}");
    }

    #[test]
    fn unknown_toml_keys_are_errors() {
        let err = SettingsLayer::from_toml_str("bnd = 1").unwrap_err();
        assert!(err.contains("bnd"), "{err}");
    }

    #[test]
    fn validation_names_the_setting() {
        let s = Settings {
            default_before_end_action: "reboot".into(),
            ..Default::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("default_before_end_action"), "{err}");
    }

    #[test]
    fn enforcement_settings_come_from_flags_and_the_file_with_upstreams_names() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: SettingsLayer,
        }
        let cli = Cli::try_parse_from([
            "blazar-server",
            "--enabled-filters",
            "MaxLeaseDurationFilter,ExternalServiceFilter",
            "--max-lease-duration",
            "-1",
            "--max-lease-duration-exempt-project-ids",
            "P1,P2",
            "--external-service-base-endpoint",
            "http://es:8080/api/",
            "--external-service-token",
            "T",
        ])
        .unwrap();
        let mut s = Settings::default();
        s.apply(
            SettingsLayer::from_toml_str(
                "max_lease_duration = 3600\nexternal_service_on_end_endpoint = \"http://o/end\"\n",
            )
            .unwrap(),
        );
        assert_eq!(s.max_lease_duration, 3600);
        s.apply(cli.settings);
        assert_eq!(
            s.enabled_filters,
            ["MaxLeaseDurationFilter", "ExternalServiceFilter"]
        );
        assert_eq!(s.max_lease_duration, -1);
        assert_eq!(s.max_lease_duration_exempt_project_ids, ["P1", "P2"]);
        assert_eq!(s.external_service_token, "T");
        assert_eq!(
            s.external_service_on_end_endpoint.as_deref(),
            Some("http://o/end")
        );
        assert_eq!(s.external_service_timeout_seconds, 5);
        s.validate().unwrap();
        s.enabled_filters.push("Nope".into());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("enabled_filters")
        );
    }
}
