//! Settings in sections named as upstream's `blazar.conf`, in layers: built-in defaults < TOML
//! file (`--config`) < environment < command-line flags.
//!
//! Each section has one `Default` (`section!` writes each default beside its field), which is
//! the built-in layer, what the TOML file leaves out (`#[serde(default)]`) and what `--help`
//! shows. The environment and flag layers come from one clap definition, [`SettingsLayer`],
//! which [`complete_flags`] gives its variables (`BLAZAR_<SECTION>__<KEY>`) and defaults. The
//! flat keys and variables of earlier releases still work for one release through [`RENAMED`],
//! each with a warning naming its new key. Secrets are [`SecretString`]s, which never print.

use std::path::Path;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything the server can be told, by section (docs/configuration.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub api: ApiSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub manager: ManagerSettings,
    /// Upstream's section is `[physical:host]`; TOML needs quotes for it, so both are read.
    #[serde(alias = "physical:host")]
    pub physical_host: PhysicalHostSettings,
    pub keystone_authtoken: KeystoneSettings,
    pub oslo_policy: PolicySettings,
    pub nova: NovaSettings,
    pub enforcement: EnforcementSettings,
    pub notifications: NotificationSettings,
    pub runner: RunnerSettings,
    pub metrics: MetricsSettings,
}

/// Declares a section: the struct, read from TOML with `deny_unknown_fields` and with its
/// `Default` for what the file leaves out, and that `Default`, written beside each field.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty = $default:expr,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $($field: $default,)*
                }
            }
        }
    };
}

section! {
    /// `[api]`: our HTTP front (upstream's `[DEFAULT] auth_strategy` lives here too).
    pub struct ApiSettings {
        /// Address to serve on; port 0 picks a free port (tests).
        pub bind: String = "127.0.0.1:1234".into(),
        /// `noauth` (identity from X-Project-Id/X-User-Id/X-Roles) or `keystone` (X-Auth-Token).
        /// Upstream defaults to keystone; a fresh clone has no Keystone to ask.
        pub auth_strategy: String = "noauth".into(),
        /// Identity used in noauth mode when a request carries no X-Project-Id / X-User-Id /
        /// X-Roles (the roles comma-separated).
        pub default_project_id: String = "default".into(),
        pub default_user_id: String = "admin".into(),
        pub default_roles: String = "admin".into(),
        /// Largest request body accepted, in bytes; larger bodies get 413.
        pub max_body_bytes: usize = 1024 * 1024,
        /// Most reservations one lease may hold.
        pub max_reservations_per_lease: usize = 32,
        /// Most items in one page of a list (also the page size when no `limit` is given).
        pub max_page_size: usize = 1000,
        /// How far ahead plans look for the earliest start that fits, and the longest range an
        /// availability or calendar query may span, in days.
        pub plan_horizon_days: u32 = 365,
        /// How long an `Idempotency-Key` of a create is remembered (and its response replayed),
        /// in seconds; older keys are purged.
        pub idempotency_key_ttl_seconds: u64 = 86_400,
    }
}

section! {
    /// `[database]`, named as oslo.db's options.
    pub struct DatabaseSettings {
        /// `sqlite://file.db?mode=rwc`, `sqlite:///abs/path.db?mode=rwc` or `postgres://...`.
        pub connection: String = "sqlite://blazar.db?mode=rwc".into(),
        /// Largest pool of database connections.
        pub max_pool_size: u32 = 8,
    }
}

section! {
    /// `[log]`.
    pub struct LogSettings {
        /// tracing-subscriber filter, e.g. `info` or `blazar_server=debug,info`; RUST_LOG wins.
        /// sqlx logs every PostgreSQL notice ("relation exists, skipping") at info.
        pub filter: String = "info,sqlx=warn".into(),
    }
}

section! {
    /// `[manager]`, upstream's.
    pub struct ManagerSettings {
        /// Minutes before a lease's end at which `before_end_lease` fires when the lease gives
        /// no `before_end_date`; 0 creates no such event.
        pub minutes_before_end_lease: i64 = 60,
    }
}

section! {
    /// `[physical:host]`, upstream's host plugin, and how our plugin acts on hosts.
    pub struct PhysicalHostSettings {
        /// What a reservation's `before_end: "default"` means: `""` (nothing) or `"snapshot"`.
        pub before_end: String = String::new(),
        /// Availability zone prefix of reservation aggregates.
        pub blazar_az_prefix: String = "blazar_".into(),
        /// Seconds between polls of the compute services' health; 0 turns it off.
        pub polling_interval: u64 = 60,
        /// What a lease's events do to hosts: `standalone` (record what would be done) or
        /// `nova` (drive a real Nova's aggregates, as upstream's host plugin does).
        pub resource_driver: String = "standalone".into(),
        /// Longest wait for a lease's servers to be deleted at its end, in seconds (upstream's
        /// constant: 10 minutes).
        pub server_deletion_timeout_seconds: u64 = 600,
    }
}

section! {
    /// `[keystone_authtoken]`: the service account that validates tokens and finds Nova.
    pub struct KeystoneSettings {
        /// Keystone's v3 endpoint, e.g. `http://keystone:5000/v3`.
        pub auth_url: Option<String> = None,
        /// The account needs the admin or service role.
        pub username: String = "blazar".into(),
        #[serde(skip_serializing)]
        pub password: Option<SecretString> = None,
        pub project_name: String = "service".into(),
        pub user_domain_name: String = "Default".into(),
        pub project_domain_name: String = "Default".into(),
        /// Catalog region of the services this account finds (upstream `[DEFAULT]
        /// os_region_name`); any region if unset.
        pub region_name: Option<String> = None,
        /// Longest time a validated token is trusted without asking Keystone again, in seconds.
        pub token_cache_time: u64 = 300,
        /// Most tokens kept in the cache.
        pub token_cache_size: usize = 10_000,
    }
}

section! {
    /// `[oslo_policy]`.
    pub struct PolicySettings {
        /// oslo.policy-style YAML file overriding the default rules.
        pub policy_file: Option<String> = None,
    }
}

section! {
    /// `[nova]`, upstream's options where we have them, and our client's.
    pub struct NovaSettings {
        /// Nova's compute endpoint (`http://nova:8774/v2.1`); without it, the catalog of the
        /// Keystone service account says where Nova is.
        pub url: Option<String> = None,
        /// A fixed token for `url` (a Nova behind a test noauth filter); without it, the
        /// Keystone service account's token.
        #[serde(skip_serializing)]
        pub token: Option<SecretString> = None,
        /// Catalog interface of the compute endpoint.
        pub endpoint_type: String = "internal".into(),
        /// Seconds one Nova request may take.
        pub timeout_seconds: u64 = 30,
        /// Retries of one Nova request after a connection error, a timeout or a 5xx.
        pub retries: u32 = 3,
        /// How long an event keeps being retried while Nova is unreachable or failing, in
        /// seconds, before the lease goes to ERROR.
        pub retry_deadline_seconds: u64 = 600,
        /// The aggregate of enrolled, unreserved hosts.
        pub aggregate_freepool_name: String = "freepool".into(),
        /// The aggregate metadata key naming the owner project.
        pub blazar_owner: String = "blazar:owner".into(),
        /// The value of extra-project keys in aggregate metadata.
        pub project_id_key: String = "blazar:project".into(),
        /// Names of before-end snapshots.
        pub image_prefix: String = "reserved_".into(),
        /// Record a host's availability zone at enrolment.
        pub az_aware: bool = true,
        /// Seconds between comparisons of Nova's aggregates with the database; 0 turns it off.
        pub reconcile_interval_seconds: u64 = 300,
    }
}

section! {
    /// `[enforcement]`, upstream's usage enforcement options (docs/enforcement.md).
    pub struct EnforcementSettings {
        /// Filters run on lease create and update: `MaxLeaseDurationFilter`,
        /// `ExternalServiceFilter`.
        pub enabled_filters: Vec<String> = Vec::new(),
        /// Longest lease, in seconds; -1 is no limit.
        pub max_lease_duration: i64 = -1,
        /// Projects whose leases may be longer than `max_lease_duration`.
        pub max_lease_duration_exempt_project_ids: Vec<String> = Vec::new(),
        /// The external service's URL; each endpoint below defaults to it joined with
        /// `check-create`, `check-update` or `on-end` (as upstream's `urljoin`).
        pub external_service_base_endpoint: Option<String> = None,
        pub external_service_check_create_endpoint: Option<String> = None,
        pub external_service_check_update_endpoint: Option<String> = None,
        pub external_service_on_end_endpoint: Option<String> = None,
        /// Sent as `X-Auth-Token` when not empty.
        #[serde(skip_serializing)]
        pub external_service_token: SecretString = SecretString::default(),
        /// Ours: longest wait for the external service's answer; past it, the request is
        /// refused.
        pub external_service_timeout_seconds: u64 = 5,
    }
}

section! {
    /// `[notifications]`: our webhooks (upstream's section names oslo.messaging's publisher).
    pub struct NotificationSettings {
        /// Webhook URLs that receive a JSON POST for every lease event and lease change.
        pub urls: Vec<String> = Vec::new(),
        /// Delivery attempts per notification and URL (with exponential backoff).
        pub max_attempts: u32 = 5,
        /// First retry delay of a notification, in milliseconds (doubles each attempt).
        pub backoff_ms: u64 = 500,
        /// At exit, how long webhook deliveries and enforcement's `on-end` posts queued or in
        /// flight are waited for before they are dropped (docs/lifecycle.md).
        pub shutdown_drain_seconds: u64 = 5,
    }
}

section! {
    /// `[runner]`: the lease event runner of this process.
    pub struct RunnerSettings {
        /// Run lease events in this process (`--no-runner` turns it off, so that API and
        /// runner instances can scale separately).
        pub enabled: bool = true,
        /// Seconds a runner's claim on an event lasts; after that another runner (or this one
        /// after a restart) takes the event over.
        pub event_claim_seconds: u64 = 30,
        /// Name of this instance in event claims and logs; default: hostname-pid.
        pub instance_name: Option<String> = None,
    }
}

section! {
    /// `[metrics]`: Prometheus metrics (docs/operations.md).
    pub struct MetricsSettings {
        /// Serve `GET /metrics`.
        pub enabled: bool = true,
        /// Serve `/metrics` only on this address, on a listener of its own, and not on
        /// `[api] bind`.
        pub bind: Option<String> = None,
    }
}

/// A flat key of earlier releases (also the id of its flag in [`SettingsLayer`]) and where it
/// lives now.
pub struct Renamed {
    pub old_key: &'static str,
    pub section: &'static str,
    pub key: &'static str,
}

const fn renamed(old_key: &'static str, section: &'static str, key: &'static str) -> Renamed {
    Renamed {
        old_key,
        section,
        key,
    }
}

/// A key that kept its name and moved into a section.
const fn moved(section: &'static str, key: &'static str) -> Renamed {
    renamed(key, section, key)
}

/// The old flat names and their sectioned keys: deprecated, read for one release.
#[rustfmt::skip] // One row a line: a table, read down its columns.
pub const RENAMED: &[Renamed] = &[
    moved("api", "bind"),
    renamed("auth", "api", "auth_strategy"),
    moved("api", "default_project_id"),
    moved("api", "default_user_id"),
    moved("api", "default_roles"),
    moved("api", "max_body_bytes"),
    moved("api", "max_reservations_per_lease"),
    moved("api", "max_page_size"),
    moved("api", "plan_horizon_days"),
    moved("api", "idempotency_key_ttl_seconds"),
    renamed("database_url", "database", "connection"),
    renamed("db_max_connections", "database", "max_pool_size"),
    renamed("log_filter", "log", "filter"),
    moved("manager", "minutes_before_end_lease"),
    renamed("default_before_end_action", "physical_host", "before_end"),
    moved("physical_host", "blazar_az_prefix"),
    renamed("health_interval_seconds", "physical_host", "polling_interval"),
    moved("physical_host", "resource_driver"),
    moved("physical_host", "server_deletion_timeout_seconds"),
    renamed("keystone_url", "keystone_authtoken", "auth_url"),
    renamed("keystone_username", "keystone_authtoken", "username"),
    renamed("keystone_password", "keystone_authtoken", "password"),
    renamed("keystone_project_name", "keystone_authtoken", "project_name"),
    renamed("keystone_user_domain_name", "keystone_authtoken", "user_domain_name"),
    renamed("keystone_project_domain_name", "keystone_authtoken", "project_domain_name"),
    renamed("nova_region_name", "keystone_authtoken", "region_name"),
    renamed("token_cache_seconds", "keystone_authtoken", "token_cache_time"),
    moved("keystone_authtoken", "token_cache_size"),
    moved("oslo_policy", "policy_file"),
    renamed("nova_url", "nova", "url"),
    renamed("nova_token", "nova", "token"),
    renamed("nova_endpoint_type", "nova", "endpoint_type"),
    renamed("nova_timeout_seconds", "nova", "timeout_seconds"),
    renamed("nova_retries", "nova", "retries"),
    renamed("nova_retry_deadline_seconds", "nova", "retry_deadline_seconds"),
    moved("nova", "aggregate_freepool_name"),
    moved("nova", "blazar_owner"),
    moved("nova", "project_id_key"),
    moved("nova", "image_prefix"),
    moved("nova", "az_aware"),
    moved("nova", "reconcile_interval_seconds"),
    moved("enforcement", "enabled_filters"),
    moved("enforcement", "max_lease_duration"),
    moved("enforcement", "max_lease_duration_exempt_project_ids"),
    moved("enforcement", "external_service_base_endpoint"),
    moved("enforcement", "external_service_check_create_endpoint"),
    moved("enforcement", "external_service_check_update_endpoint"),
    moved("enforcement", "external_service_on_end_endpoint"),
    moved("enforcement", "external_service_token"),
    moved("enforcement", "external_service_timeout_seconds"),
    renamed("notify_urls", "notifications", "urls"),
    renamed("notify_max_attempts", "notifications", "max_attempts"),
    renamed("notify_backoff_ms", "notifications", "backoff_ms"),
    moved("notifications", "shutdown_drain_seconds"),
    renamed("runner", "runner", "enabled"),
    moved("runner", "event_claim_seconds"),
    moved("runner", "instance_name"),
    renamed("metrics_enabled", "metrics", "enabled"),
    renamed("metrics_bind", "metrics", "bind"),
];

/// The old variables that were not `BLAZAR_` and the old key in capitals. `BLAZAR_NO_RUNNER`
/// was a switch meaning `[runner] enabled = false`; see [`legacy_env_args`].
const OLD_ENV_EXCEPTIONS: [(&str, &str); 3] = [
    ("database_url", "DATABASE_URL"),
    ("log_filter", "BLAZAR_LOG"),
    ("runner", OLD_NO_RUNNER_ENV),
];

const OLD_NO_RUNNER_ENV: &str = "BLAZAR_NO_RUNNER";

impl Renamed {
    /// The variable of earlier releases.
    pub fn old_env(&self) -> String {
        match OLD_ENV_EXCEPTIONS
            .iter()
            .find(|(key, _)| *key == self.old_key)
        {
            Some((_, env)) => env.to_string(),
            None => format!("BLAZAR_{}", self.old_key.to_uppercase()),
        }
    }

    /// The variable of the sectioned key: `BLAZAR_<SECTION>__<KEY>`.
    pub fn env(&self) -> String {
        format!("BLAZAR_{}__{}", self.section, self.key).to_uppercase()
    }
}

fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(s.into())
}

/// The environment and flag layer: every field optional; what it leaves out keeps the value
/// below. Field names are the flat keys of [`RENAMED`]; the help's `[default: ...]` is added from
/// `Settings::default()` and the variables by [`complete_flags`].
#[derive(Debug, Default, Clone, clap::Args)]
pub struct SettingsLayer {
    /// Address to listen on
    #[arg(long, global = true)]
    pub bind: Option<String>,
    /// Database URL (oslo.db's [database] connection)
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Largest database connection pool
    #[arg(long, global = true)]
    pub db_max_connections: Option<u32>,
    /// Minutes before the end at which before_end_lease fires by default; 0 = no event
    #[arg(long, global = true)]
    pub minutes_before_end_lease: Option<i64>,
    /// What before_end "default" means: "" or "snapshot"
    #[arg(long, global = true)]
    pub default_before_end_action: Option<String>,
    /// Largest request body in bytes
    #[arg(long, global = true)]
    pub max_body_bytes: Option<usize>,
    /// Most reservations per lease
    #[arg(long, global = true)]
    pub max_reservations_per_lease: Option<usize>,
    /// Most items per page of a list, and the default page size
    #[arg(long, global = true)]
    pub max_page_size: Option<usize>,
    /// Project of requests without X-Project-Id (noauth)
    #[arg(long, global = true)]
    pub default_project_id: Option<String>,
    /// User of requests without X-User-Id (noauth)
    #[arg(long, global = true)]
    pub default_user_id: Option<String>,
    /// Roles of requests without X-Roles, comma-separated (noauth)
    #[arg(long, global = true)]
    pub default_roles: Option<String>,
    /// Log filter (RUST_LOG overrides it)
    #[arg(long, global = true)]
    pub log_filter: Option<String>,
    /// Do not run the lease lifecycle runner in this process
    #[arg(long = "no-runner", global = true)]
    pub no_runner: bool,
    /// Run the lease lifecycle runner in this process (--no-runner is the same as false)
    #[arg(long = "runner-enabled", global = true, value_name = "BOOL")]
    pub runner: Option<bool>,
    /// Seconds an event claim lasts before another runner may take it over
    #[arg(long, global = true)]
    pub event_claim_seconds: Option<u64>,
    /// Name of this instance in event claims [default: hostname-pid]
    #[arg(long, global = true)]
    pub instance_name: Option<String>,
    /// Webhook URL for lease notifications (repeatable; comma-separated in the environment)
    #[arg(long = "notify-url", global = true, value_delimiter = ',')]
    pub notify_urls: Option<Vec<String>>,
    /// Delivery attempts per notification and URL
    #[arg(long, global = true)]
    pub notify_max_attempts: Option<u32>,
    /// First notification retry delay in ms, doubling each attempt
    #[arg(long, global = true)]
    pub notify_backoff_ms: Option<u64>,
    /// Authentication: noauth or keystone (upstream auth_strategy)
    #[arg(long, global = true)]
    pub auth: Option<String>,
    /// Keystone v3 endpoint, e.g. http://keystone:5000/v3
    #[arg(long, global = true)]
    pub keystone_url: Option<String>,
    /// Service account that validates tokens
    #[arg(long, global = true)]
    pub keystone_username: Option<String>,
    /// Password of the service account (prefer the environment or the config file)
    #[arg(long, global = true, value_parser = secret)]
    pub keystone_password: Option<SecretString>,
    /// Project of the service account
    #[arg(long, global = true)]
    pub keystone_project_name: Option<String>,
    /// Domain of the service account
    #[arg(long, global = true)]
    pub keystone_user_domain_name: Option<String>,
    /// Domain of the service project
    #[arg(long, global = true)]
    pub keystone_project_domain_name: Option<String>,
    /// Seconds a validated token is trusted before asking Keystone again
    #[arg(long, global = true)]
    pub token_cache_seconds: Option<u64>,
    /// Most tokens in the cache
    #[arg(long, global = true)]
    pub token_cache_size: Option<usize>,
    /// Policy file (oslo.policy YAML) overriding the default rules
    #[arg(long, global = true)]
    pub policy_file: Option<String>,
    /// Resource driver: standalone or nova
    #[arg(long, global = true)]
    pub resource_driver: Option<String>,
    /// Nova compute endpoint, e.g. http://nova:8774/v2.1 [default: from the Keystone catalog]
    #[arg(long, global = true)]
    pub nova_url: Option<String>,
    /// Fixed token for --nova-url [default: the Keystone service account's]
    #[arg(long, global = true, value_parser = secret)]
    pub nova_token: Option<SecretString>,
    /// Catalog interface of Nova: public, internal or admin
    #[arg(long, global = true)]
    pub nova_endpoint_type: Option<String>,
    /// Catalog region of Nova and of the enforcement context [default: any]
    #[arg(long, global = true)]
    pub nova_region_name: Option<String>,
    /// Seconds one Nova request may take
    #[arg(long, global = true)]
    pub nova_timeout_seconds: Option<u64>,
    /// Retries of a Nova request after a connection error or 5xx
    #[arg(long, global = true)]
    pub nova_retries: Option<u32>,
    /// Aggregate of enrolled, unreserved hosts
    #[arg(long, global = true)]
    pub aggregate_freepool_name: Option<String>,
    /// Aggregate metadata key of the owner project
    #[arg(long, global = true)]
    pub blazar_owner: Option<String>,
    /// Aggregate metadata value of extra projects
    #[arg(long, global = true)]
    pub project_id_key: Option<String>,
    /// Availability zone prefix of reservation aggregates
    #[arg(long, global = true)]
    pub blazar_az_prefix: Option<String>,
    /// Name prefix of before-end snapshots
    #[arg(long, global = true)]
    pub image_prefix: Option<String>,
    /// Record a host's availability zone at enrolment
    #[arg(long, global = true)]
    pub az_aware: Option<bool>,
    /// Longest wait for a lease's servers to go at its end, in seconds
    #[arg(long, global = true)]
    pub server_deletion_timeout_seconds: Option<u64>,
    /// Seconds an event is retried while Nova fails, before ERROR
    #[arg(long, global = true)]
    pub nova_retry_deadline_seconds: Option<u64>,
    /// Seconds between reconciliations of Nova's aggregates; 0 = off
    #[arg(long, global = true)]
    pub reconcile_interval_seconds: Option<u64>,
    /// Seconds between health polls of the compute services; 0 = off
    #[arg(long, global = true)]
    pub health_interval_seconds: Option<u64>,
    /// Days plans and availability searches look ahead
    #[arg(long, global = true)]
    pub plan_horizon_days: Option<u32>,

    // Usage enforcement (upstream `[enforcement]`).
    /// Enforcement filters: MaxLeaseDurationFilter, ExternalServiceFilter [default: none]
    #[arg(long, global = true, value_delimiter = ',')]
    pub enabled_filters: Option<Vec<String>>,
    /// Longest lease in seconds; -1 = no limit
    #[arg(long, global = true, allow_negative_numbers = true)]
    pub max_lease_duration: Option<i64>,
    /// Projects exempt from the longest lease, comma-separated
    #[arg(long, global = true, value_delimiter = ',')]
    pub max_lease_duration_exempt_project_ids: Option<Vec<String>>,
    /// URL of the external enforcement service
    #[arg(long, global = true)]
    pub external_service_base_endpoint: Option<String>,
    /// check-create URL [default: base endpoint + check-create]
    #[arg(long, global = true)]
    pub external_service_check_create_endpoint: Option<String>,
    /// check-update URL [default: base endpoint + check-update]
    #[arg(long, global = true)]
    pub external_service_check_update_endpoint: Option<String>,
    /// on-end URL [default: base endpoint + on-end]
    #[arg(long, global = true)]
    pub external_service_on_end_endpoint: Option<String>,
    /// X-Auth-Token sent to the external service
    #[arg(long, global = true, value_parser = secret)]
    pub external_service_token: Option<SecretString>,
    /// Seconds to wait for the external service before refusing
    #[arg(long, global = true)]
    pub external_service_timeout_seconds: Option<u64>,
    /// Serve Prometheus metrics at GET /metrics
    #[arg(long, global = true)]
    pub metrics_enabled: Option<bool>,
    /// Serve /metrics only on this address (a second listener), not on --bind
    #[arg(long, global = true)]
    pub metrics_bind: Option<String>,
    /// Seconds an Idempotency-Key of a create is remembered
    #[arg(long, global = true)]
    pub idempotency_key_ttl_seconds: Option<u64>,
    /// Seconds to wait at exit for webhook deliveries and on-end posts
    #[arg(long, global = true)]
    pub shutdown_drain_seconds: Option<u64>,
}

/// The flags whose values are secrets: their variables' values are hidden in the help.
const SECRET_FLAGS: [&str; 3] = ["keystone_password", "nova_token", "external_service_token"];

/// Completes the flags of [`SettingsLayer`] in `cmd` from the two sources written once: each
/// flag reads its variable, `BLAZAR_<SECTION>__<KEY>` ([`Renamed::env`]), and its help ends
/// with its default from `Settings::default()`.
pub fn complete_flags(mut cmd: clap::Command) -> clap::Command {
    let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
    for r in RENAMED {
        let shown = match &defaults[r.section][r.key] {
            serde_json::Value::String(s) if s.is_empty() => Some("\"\"".to_string()),
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(a) if a.is_empty() => None,
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        };
        cmd = cmd.mut_arg(r.old_key, |a| {
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            let a = match shown {
                Some(shown) => a.help(format!("{help} [default: {shown}]")),
                None => a,
            };
            a.env(r.env())
                .hide_env_values(SECRET_FLAGS.contains(&r.old_key))
        });
    }
    cmd
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
    #[error("invalid environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

impl Settings {
    /// The defaults with the TOML file on top. Old flat keys are moved to their sections, each
    /// with a line in `warnings`.
    pub fn from_toml_file(path: &Path, warnings: &mut Vec<String>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, warnings).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn from_toml_str(text: &str, warnings: &mut Vec<String>) -> Result<Self, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let old: Vec<&Renamed> = RENAMED
            .iter()
            .filter(|r| table.get(r.old_key).is_some_and(|v| !v.is_table()))
            .collect();
        if old.is_empty() {
            // Parsed from the text, so that errors point at their line.
            return toml::from_str(text).map_err(|e| e.to_string());
        }
        for r in old {
            let Some(value) = table.remove(r.old_key) else {
                continue;
            };
            let section = table
                .entry(r.section)
                .or_insert_with(|| toml::Table::new().into());
            let Some(section) = section.as_table_mut() else {
                return Err(format!("{} must be a table", r.section));
            };
            if section.contains_key(r.key) {
                warnings.push(format!(
                    "config file: `{}` is deprecated and ignored: [{}] {} is set too",
                    r.old_key, r.section, r.key
                ));
            } else {
                warnings.push(format!(
                    "config file: `{}` is deprecated: use [{}] {}",
                    r.old_key, r.section, r.key
                ));
                section.insert(r.key.to_string(), value);
            }
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())
    }

    /// Applies the environment and flag layer on top of these settings.
    pub fn apply(&mut self, layer: SettingsLayer) {
        if layer.no_runner {
            self.runner.enabled = false;
        } else if let Some(r) = layer.runner {
            self.runner.enabled = r;
        }
        // `take!(field => section.key)`: the layer's field, when given, replaces the setting.
        macro_rules! take {
            ($($field:ident => $section:ident . $key:ident),* $(,)?) => {
                $(if let Some(v) = layer.$field { self.$section.$key = v; })*
            };
        }
        // Settings that are unset unless a layer gives them.
        macro_rules! take_some {
            ($($field:ident => $section:ident . $key:ident),* $(,)?) => {
                $(if let Some(v) = layer.$field { self.$section.$key = Some(v); })*
            };
        }
        take_some!(
            instance_name => runner.instance_name,
            keystone_url => keystone_authtoken.auth_url,
            keystone_password => keystone_authtoken.password,
            nova_region_name => keystone_authtoken.region_name,
            policy_file => oslo_policy.policy_file,
            nova_url => nova.url,
            nova_token => nova.token,
            metrics_bind => metrics.bind,
            external_service_base_endpoint => enforcement.external_service_base_endpoint,
            external_service_check_create_endpoint => enforcement.external_service_check_create_endpoint,
            external_service_check_update_endpoint => enforcement.external_service_check_update_endpoint,
            external_service_on_end_endpoint => enforcement.external_service_on_end_endpoint,
        );
        take!(
            bind => api.bind,
            auth => api.auth_strategy,
            default_project_id => api.default_project_id,
            default_user_id => api.default_user_id,
            default_roles => api.default_roles,
            max_body_bytes => api.max_body_bytes,
            max_reservations_per_lease => api.max_reservations_per_lease,
            max_page_size => api.max_page_size,
            plan_horizon_days => api.plan_horizon_days,
            idempotency_key_ttl_seconds => api.idempotency_key_ttl_seconds,
            database_url => database.connection,
            db_max_connections => database.max_pool_size,
            log_filter => log.filter,
            minutes_before_end_lease => manager.minutes_before_end_lease,
            default_before_end_action => physical_host.before_end,
            blazar_az_prefix => physical_host.blazar_az_prefix,
            health_interval_seconds => physical_host.polling_interval,
            resource_driver => physical_host.resource_driver,
            server_deletion_timeout_seconds => physical_host.server_deletion_timeout_seconds,
            keystone_username => keystone_authtoken.username,
            keystone_project_name => keystone_authtoken.project_name,
            keystone_user_domain_name => keystone_authtoken.user_domain_name,
            keystone_project_domain_name => keystone_authtoken.project_domain_name,
            token_cache_seconds => keystone_authtoken.token_cache_time,
            token_cache_size => keystone_authtoken.token_cache_size,
            nova_endpoint_type => nova.endpoint_type,
            nova_timeout_seconds => nova.timeout_seconds,
            nova_retries => nova.retries,
            nova_retry_deadline_seconds => nova.retry_deadline_seconds,
            aggregate_freepool_name => nova.aggregate_freepool_name,
            blazar_owner => nova.blazar_owner,
            project_id_key => nova.project_id_key,
            image_prefix => nova.image_prefix,
            az_aware => nova.az_aware,
            reconcile_interval_seconds => nova.reconcile_interval_seconds,
            enabled_filters => enforcement.enabled_filters,
            max_lease_duration => enforcement.max_lease_duration,
            max_lease_duration_exempt_project_ids => enforcement.max_lease_duration_exempt_project_ids,
            external_service_token => enforcement.external_service_token,
            external_service_timeout_seconds => enforcement.external_service_timeout_seconds,
            notify_urls => notifications.urls,
            notify_max_attempts => notifications.max_attempts,
            notify_backoff_ms => notifications.backoff_ms,
            shutdown_drain_seconds => notifications.shutdown_drain_seconds,
            event_claim_seconds => runner.event_claim_seconds,
            metrics_enabled => metrics.enabled,
        );
    }
}

/// The deprecated variables that are set, as the flags they stood for (their names have not
/// changed), each with a line in `warnings`. `env` reads one variable (`std::env::var` outside
/// tests). Parsed with [`SettingsLayer`] and applied below the current environment and flags,
/// they keep their old meaning: a new variable or a flag wins over an old variable.
pub fn legacy_env_args(
    cmd: &clap::Command,
    env: impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let mut args = Vec::new();
    for r in RENAMED {
        let old_env = r.old_env();
        let Some(value) = env(&old_env) else {
            continue;
        };
        // The old switch said the opposite of the new key.
        let meaning = if old_env == OLD_NO_RUNNER_ENV {
            "=false"
        } else {
            ""
        };
        warnings.push(format!(
            "environment variable {} is deprecated: use {}{meaning} ([{}] {})",
            old_env,
            r.env(),
            r.section,
            r.key
        ));
        if old_env == OLD_NO_RUNNER_ENV {
            // As clap read the switch: anything but a false word turns the runner off.
            let off = !matches!(
                value.to_ascii_lowercase().as_str(),
                "" | "0" | "n" | "no" | "f" | "false" | "off"
            );
            if off {
                args.push("--no-runner".to_string());
            }
            continue;
        }
        let long = cmd
            .get_arguments()
            .find(|a| a.get_id() == r.old_key)
            .and_then(|a| a.get_long())
            .unwrap_or(r.old_key);
        args.push(format!("--{long}={value}"));
    }
    args
}

/// `Ok` when `value` is in `range`, else an error naming the setting and the range (`note`
/// says what the bound is, e.g. "(one year)").
fn between<T: PartialOrd + std::fmt::Display>(
    name: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    note: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let (lo, hi) = range.into_inner();
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(" {note}")
    };
    Err(ConfigError::Invalid {
        name,
        message: format!("must be between {lo} and {hi}{note}"),
    })
}

impl Settings {
    /// Checks the values that would otherwise fail later, deep inside a request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, message: String| Err(ConfigError::Invalid { name, message });
        between(
            "[manager] minutes_before_end_lease",
            self.manager.minutes_before_end_lease,
            0..=525_600,
            "(one year)",
        )?;
        let before_end = crate::domain::lease::BEFORE_END_CONFIG_ACTIONS;
        if !before_end.contains(&self.physical_host.before_end.as_str()) {
            return invalid(
                "[physical_host] before_end",
                format!("must be one of {before_end:?}"),
            );
        }
        let api = &self.api;
        if api.max_body_bytes < 1024 {
            return invalid("[api] max_body_bytes", "must be at least 1024".into());
        }
        between("[api] max_page_size", api.max_page_size, 1..=100_000, "")?;
        if api.max_reservations_per_lease == 0 {
            return invalid(
                "[api] max_reservations_per_lease",
                "must be at least 1".into(),
            );
        }
        between(
            "[runner] event_claim_seconds",
            self.runner.event_claim_seconds,
            1..=86_400,
            "",
        )?;
        if let Some(bad) = self
            .notifications
            .urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return invalid(
                "[notifications] urls",
                format!("{bad:?} is not an http(s) URL"),
            );
        }
        match api.auth_strategy.as_str() {
            "noauth" => {}
            "keystone" if self.keystone_account() => {}
            "keystone" => {
                return invalid(
                    "[api] auth_strategy",
                    "keystone mode needs [keystone_authtoken] auth_url and password".into(),
                );
            }
            other => {
                return invalid(
                    "[api] auth_strategy",
                    format!("{other:?} is not noauth or keystone"),
                );
            }
        }
        if self.keystone_authtoken.token_cache_size == 0 {
            return invalid(
                "[keystone_authtoken] token_cache_size",
                "must be at least 1".into(),
            );
        }
        self.validate_nova()?;
        between(
            "[api] plan_horizon_days",
            api.plan_horizon_days,
            1..=3650,
            "",
        )?;
        between(
            "[api] idempotency_key_ttl_seconds",
            api.idempotency_key_ttl_seconds,
            1..=31_536_000,
            "(one year)",
        )?;
        if self.database.max_pool_size == 0 {
            return invalid("[database] max_pool_size", "must be at least 1".into());
        }
        crate::enforcement::EnforcementConfig::from_settings(self)?;
        // Port 0 (tests) picks a free port for each listener, so equal strings are fine there.
        if let Some(addr) = &self.metrics.bind
            && (addr.trim().is_empty() || (*addr == api.bind && !addr.ends_with(":0")))
        {
            return invalid(
                "[metrics] bind",
                format!("{addr:?} must be an address other than [api] bind"),
            );
        }
        Ok(())
    }

    /// Whether leases drive a real Nova.
    pub fn nova_mode(&self) -> bool {
        self.physical_host.resource_driver == "nova"
    }

    /// Whether the Keystone service account has what it needs to log in.
    fn keystone_account(&self) -> bool {
        let k = &self.keystone_authtoken;
        k.auth_url.is_some() && k.password.is_some()
    }

    fn validate_nova(&self) -> Result<(), ConfigError> {
        let invalid = |name, message: String| Err(ConfigError::Invalid { name, message });
        match self.physical_host.resource_driver.as_str() {
            "standalone" => return Ok(()),
            "nova" => {}
            other => {
                return invalid(
                    "[physical_host] resource_driver",
                    format!("{other:?} is not standalone or nova"),
                );
            }
        }
        let nova = &self.nova;
        if let Some(url) = &nova.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("[nova] url", format!("{url:?} is not an http(s) URL"));
        }
        if nova.token.is_some() && nova.url.is_none() {
            return invalid(
                "[nova] token",
                "a fixed Nova token needs [nova] url too".into(),
            );
        }
        if nova.token.is_none() && !self.keystone_account() {
            return invalid(
                "[physical_host] resource_driver",
                "nova needs [nova] url and token, or Keystone service credentials \
                 ([keystone_authtoken] auth_url and password) to find Nova in the catalog"
                    .into(),
            );
        }
        if !["public", "internal", "admin"].contains(&nova.endpoint_type.as_str()) {
            return invalid(
                "[nova] endpoint_type",
                format!("{:?} is not public, internal or admin", nova.endpoint_type),
            );
        }
        for (name, value) in [
            (
                "[nova] aggregate_freepool_name",
                &nova.aggregate_freepool_name,
            ),
            ("[nova] blazar_owner", &nova.blazar_owner),
            ("[nova] project_id_key", &nova.project_id_key),
            (
                "[physical_host] blazar_az_prefix",
                &self.physical_host.blazar_az_prefix,
            ),
        ] {
            if value.trim().is_empty() || value.len() > 255 {
                return invalid(name, "must be 1 to 255 characters".into());
            }
        }
        between("[nova] timeout_seconds", nova.timeout_seconds, 1..=600, "")?;
        if nova.retries > 10 {
            return invalid("[nova] retries", "must be at most 10".into());
        }
        between(
            "[physical_host] server_deletion_timeout_seconds",
            self.physical_host.server_deletion_timeout_seconds,
            1..=86_400,
            "",
        )?;
        between(
            "[nova] retry_deadline_seconds",
            nova.retry_deadline_seconds,
            1..=604_800,
            "(a week)",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};
    use secrecy::ExposeSecret;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: SettingsLayer,
    }

    fn from_toml(text: &str) -> Settings {
        Settings::from_toml_str(text, &mut Vec::new()).unwrap()
    }

    #[test]
    fn nova_mode_needs_a_way_to_reach_nova() {
        let mut s = Settings::default();
        s.physical_host.resource_driver = "nova".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("[nova] url and token"), "{err}");
        s.nova.url = Some("http://127.0.0.1:8774/v2.1".into());
        s.nova.token = Some("admin:admin".into());
        s.validate().unwrap();
        s.physical_host.resource_driver = "ironic".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("resource_driver")
        );
        let mut s = Settings::default();
        s.physical_host.resource_driver = "nova".into();
        s.api.auth_strategy = "keystone".into();
        s.keystone_authtoken.auth_url = Some("http://keystone:5000/v3".into());
        s.keystone_authtoken.password = Some("secret".into());
        s.validate().unwrap();
    }

    #[test]
    fn layers_override_in_order() {
        let mut s =
            from_toml("[api]\nbind = \"0.0.0.0:9000\"\n[manager]\nminutes_before_end_lease = 30\n");
        s.apply(SettingsLayer {
            bind: Some("127.0.0.1:0".into()),
            ..Default::default()
        });
        assert_eq!(s.api.bind, "127.0.0.1:0");
        assert_eq!(s.manager.minutes_before_end_lease, 30);
        assert_eq!(
            s.database.connection,
            Settings::default().database.connection
        );
    }

    #[test]
    fn metrics_settings_from_the_file() {
        assert!(Settings::default().metrics.enabled);
        let mut s = from_toml("[metrics]\nenabled = false\nbind = \"127.0.0.1:9465\"\n");
        assert!(!s.metrics.enabled);
        assert_eq!(s.metrics.bind.as_deref(), Some("127.0.0.1:9465"));
        s.validate().unwrap();
        s.metrics.bind = Some(s.api.bind.clone());
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("[metrics] bind"), "{err}");
    }

    #[test]
    fn unknown_toml_keys_are_errors() {
        for text in ["bnd = 1", "[api]\nbnd = 1", "bind = \"x\"\nbnd = 1"] {
            let err = Settings::from_toml_str(text, &mut Vec::new()).unwrap_err();
            assert!(err.contains("bnd"), "{err}");
        }
        let err = Settings::from_toml_str("[apy]\nbind = \"x\"", &mut Vec::new()).unwrap_err();
        assert!(err.contains("apy"), "{err}");
    }

    #[test]
    fn validation_names_the_setting() {
        let mut s = Settings::default();
        s.physical_host.before_end = "reboot".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("[physical_host] before_end"), "{err}");
    }

    #[test]
    fn upstreams_section_name_physical_host_is_read_too() {
        let s = from_toml("[\"physical:host\"]\nbefore_end = \"snapshot\"\n");
        assert_eq!(s.physical_host.before_end, "snapshot");
    }

    #[test]
    fn enforcement_settings_come_from_flags_and_the_file_with_upstreams_names() {
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
        let mut s = from_toml(
            "[enforcement]\nmax_lease_duration = 3600\n\
             external_service_on_end_endpoint = \"http://o/end\"\n",
        );
        assert_eq!(s.enforcement.max_lease_duration, 3600);
        s.apply(cli.settings);
        let e = &s.enforcement;
        assert_eq!(
            e.enabled_filters,
            ["MaxLeaseDurationFilter", "ExternalServiceFilter"]
        );
        assert_eq!(e.max_lease_duration, -1);
        assert_eq!(e.max_lease_duration_exempt_project_ids, ["P1", "P2"]);
        assert_eq!(e.external_service_token.expose_secret(), "T");
        assert_eq!(
            e.external_service_on_end_endpoint.as_deref(),
            Some("http://o/end")
        );
        assert_eq!(e.external_service_timeout_seconds, 5);
        s.validate().unwrap();
        s.enforcement.enabled_filters.push("Nope".into());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("enabled_filters")
        );
    }

    /// Every field but the secrets is in `Debug`; the secrets are compared exposed.
    fn assert_same(a: &Settings, b: &Settings) {
        assert_eq!(format!("{a:#?}"), format!("{b:#?}"));
        let k = |s: &Settings| {
            s.keystone_authtoken
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
        };
        let n = |s: &Settings| s.nova.token.as_ref().map(|p| p.expose_secret().to_string());
        let e = |s: &Settings| {
            s.enforcement
                .external_service_token
                .expose_secret()
                .to_string()
        };
        assert_eq!((k(a), n(a), e(a)), (k(b), n(b), e(b)));
    }

    const FLAT: &str = r#"
bind = "0.0.0.0:9000"
database_url = "postgres://blazar@db/blazar"
db_max_connections = 4
minutes_before_end_lease = 30
default_before_end_action = "snapshot"
max_body_bytes = 4096
max_reservations_per_lease = 4
max_page_size = 50
default_project_id = "p"
default_user_id = "u"
default_roles = "member"
log_filter = "debug"
runner = false
event_claim_seconds = 10
instance_name = "api-1"
notify_urls = ["http://hook/a"]
notify_max_attempts = 2
notify_backoff_ms = 10
auth = "keystone"
keystone_url = "http://keystone:5000/v3"
keystone_username = "svc"
keystone_password = "pw"
keystone_project_name = "services"
keystone_user_domain_name = "D1"
keystone_project_domain_name = "D2"
token_cache_seconds = 60
token_cache_size = 10
policy_file = "/etc/blazar/policy.yaml"
resource_driver = "nova"
nova_url = "http://nova:8774/v2.1"
nova_token = "nt"
nova_endpoint_type = "public"
nova_region_name = "R1"
nova_timeout_seconds = 5
nova_retries = 1
aggregate_freepool_name = "fp"
blazar_owner = "o"
project_id_key = "k"
blazar_az_prefix = "az_"
image_prefix = "img_"
az_aware = false
server_deletion_timeout_seconds = 60
nova_retry_deadline_seconds = 60
reconcile_interval_seconds = 0
health_interval_seconds = 0
plan_horizon_days = 30
external_service_timeout_seconds = 2
max_lease_duration = 3600
external_service_on_end_endpoint = "http://es/oe"
enabled_filters = ["MaxLeaseDurationFilter"]
external_service_check_update_endpoint = "http://es/cu"
max_lease_duration_exempt_project_ids = ["P1"]
external_service_token = "et"
external_service_check_create_endpoint = "http://es/cc"
external_service_base_endpoint = "http://es/"
metrics_enabled = false
metrics_bind = "127.0.0.1:9465"
idempotency_key_ttl_seconds = 60
shutdown_drain_seconds = 1
"#;

    const SECTIONED: &str = r#"
[api]
bind = "0.0.0.0:9000"
auth_strategy = "keystone"
default_project_id = "p"
default_user_id = "u"
default_roles = "member"
max_body_bytes = 4096
max_reservations_per_lease = 4
max_page_size = 50
plan_horizon_days = 30
idempotency_key_ttl_seconds = 60

[database]
connection = "postgres://blazar@db/blazar"
max_pool_size = 4

[log]
filter = "debug"

[manager]
minutes_before_end_lease = 30

["physical:host"]
before_end = "snapshot"
blazar_az_prefix = "az_"
polling_interval = 0
resource_driver = "nova"
server_deletion_timeout_seconds = 60

[keystone_authtoken]
auth_url = "http://keystone:5000/v3"
username = "svc"
password = "pw"
project_name = "services"
user_domain_name = "D1"
project_domain_name = "D2"
region_name = "R1"
token_cache_time = 60
token_cache_size = 10

[oslo_policy]
policy_file = "/etc/blazar/policy.yaml"

[nova]
url = "http://nova:8774/v2.1"
token = "nt"
endpoint_type = "public"
timeout_seconds = 5
retries = 1
retry_deadline_seconds = 60
aggregate_freepool_name = "fp"
blazar_owner = "o"
project_id_key = "k"
image_prefix = "img_"
az_aware = false
reconcile_interval_seconds = 0

[enforcement]
enabled_filters = ["MaxLeaseDurationFilter"]
max_lease_duration = 3600
max_lease_duration_exempt_project_ids = ["P1"]
external_service_base_endpoint = "http://es/"
external_service_check_create_endpoint = "http://es/cc"
external_service_check_update_endpoint = "http://es/cu"
external_service_on_end_endpoint = "http://es/oe"
external_service_token = "et"
external_service_timeout_seconds = 2

[notifications]
urls = ["http://hook/a"]
max_attempts = 2
backoff_ms = 10
shutdown_drain_seconds = 1

[runner]
enabled = false
event_claim_seconds = 10
instance_name = "api-1"

[metrics]
enabled = false
bind = "127.0.0.1:9465"
"#;

    #[test]
    fn an_old_flat_file_gives_the_same_settings_as_the_sectioned_one() {
        let mut warnings = Vec::new();
        let flat = Settings::from_toml_str(FLAT, &mut warnings).unwrap();
        assert_eq!(warnings.len(), RENAMED.len(), "one warning per old key");
        assert!(
            warnings.iter().any(|w| w.contains(
                "`default_before_end_action` is deprecated: use [physical_host] before_end"
            )),
            "{warnings:?}"
        );
        let mut none = Vec::new();
        let sectioned = Settings::from_toml_str(SECTIONED, &mut none).unwrap();
        assert!(none.is_empty(), "{none:?}");
        assert_same(&flat, &sectioned);
        // Every setting differs from its default, so no renaming was missed.
        assert_ne!(
            format!("{:?}", sectioned.api),
            format!("{:?}", ApiSettings::default())
        );
        sectioned.validate().unwrap();
    }

    #[test]
    fn a_sectioned_key_wins_over_its_old_flat_name() {
        let mut warnings = Vec::new();
        let s = Settings::from_toml_str("bind = \"a:1\"\n[api]\nbind = \"b:2\"\n", &mut warnings)
            .unwrap();
        assert_eq!(s.api.bind, "b:2");
        assert!(warnings[0].contains("ignored"), "{warnings:?}");
    }

    #[test]
    fn secrets_never_print() {
        let s = from_toml(SECTIONED);
        let shown = format!("{s:?} {s:#?}");
        for secret in ["\"pw\"", "\"nt\"", "\"et\""] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("REDACTED"));
        let cli = Cli::try_parse_from(["blazar-server", "--keystone-password", "hunter2"]).unwrap();
        assert!(!format!("{:?}", cli.settings).contains("hunter2"));
    }

    #[test]
    fn each_variable_is_blazar_section_double_underscore_key() {
        let cmd = complete_flags(Cli::command());
        assert_eq!(
            RENAMED
                .iter()
                .find(|r| r.old_key == "default_before_end_action")
                .unwrap()
                .env(),
            "BLAZAR_PHYSICAL_HOST__BEFORE_END"
        );
        for r in RENAMED {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == r.old_key)
                .unwrap_or_else(|| panic!("no flag for {}", r.old_key));
            let env = arg.get_env().map(|e| e.to_string_lossy().to_string());
            assert_eq!(env, Some(r.env()), "{}", r.old_key);
            let hidden = arg.is_hide_env_values_set();
            assert_eq!(hidden, SECRET_FLAGS.contains(&r.old_key), "{}", r.old_key);
        }
        let layer_flags = cmd
            .get_arguments()
            .filter(|a| a.get_id() != "no_runner")
            .count();
        assert_eq!(
            layer_flags,
            RENAMED.len(),
            "every flag has a row in RENAMED"
        );
    }

    #[test]
    fn old_variables_still_work_below_the_new_ones_and_the_flags() {
        let cmd = Cli::command();
        let old = |name: &str| match name {
            "BLAZAR_BIND" => Some("0.0.0.0:1".to_string()),
            "DATABASE_URL" => Some("sqlite://old.db".to_string()),
            "BLAZAR_NOTIFY_URLS" => Some("http://a/,http://b/".to_string()),
            "BLAZAR_NO_RUNNER" => Some("true".to_string()),
            "BLAZAR_KEYSTONE_PASSWORD" => Some("pw".to_string()),
            _ => None,
        };
        let mut warnings = Vec::new();
        let args = legacy_env_args(&cmd, old, &mut warnings);
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("DATABASE_URL is deprecated: use BLAZAR_DATABASE__CONNECTION")),
            "{warnings:?}"
        );
        let legacy = Cli::try_parse_from(std::iter::once("blazar-server".to_string()).chain(args))
            .unwrap()
            .settings;
        let mut s = Settings::default();
        s.apply(legacy);
        assert_eq!(s.api.bind, "0.0.0.0:1");
        assert_eq!(s.database.connection, "sqlite://old.db");
        assert_eq!(s.notifications.urls, ["http://a/", "http://b/"]);
        assert!(!s.runner.enabled);
        assert_eq!(
            s.keystone_authtoken
                .password
                .as_ref()
                .map(|p| p.expose_secret()),
            Some("pw")
        );
        // The current layer (new variables and flags) is applied after, so it wins.
        s.apply(
            Cli::try_parse_from(["blazar-server", "--bind", "127.0.0.1:0"])
                .unwrap()
                .settings,
        );
        assert_eq!(s.api.bind, "127.0.0.1:0");
    }

    #[test]
    fn the_help_shows_the_defaults_from_the_one_default() {
        let cmd = complete_flags(Cli::command());
        let help = |id: &str| {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_help().unwrap().to_string()
        };
        assert!(
            help("bind").ends_with("[default: 127.0.0.1:1234]"),
            "{}",
            help("bind")
        );
        assert!(help("default_before_end_action").ends_with("[default: \"\"]"));
        assert!(help("runner").ends_with("[default: true]"));
        assert!(!help("keystone_password").contains("default"));
        let m = cmd
            .try_get_matches_from(["blazar-server", "--max-page-size", "7"])
            .unwrap();
        assert_eq!(
            SettingsLayer::from_arg_matches(&m).unwrap().max_page_size,
            Some(7)
        );
    }
}
