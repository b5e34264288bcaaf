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
        if let Some(name) = layer.instance_name {
            self.instance_name = Some(name);
        }
        if let Some(v) = layer.keystone_url {
            self.keystone_url = Some(v);
        }
        if let Some(v) = layer.keystone_password {
            self.keystone_password = Some(v);
        }
        if let Some(v) = layer.policy_file {
            self.policy_file = Some(v);
        }
        macro_rules! take {
            ($($field:ident),*) => {
                $(if let Some(v) = layer.$field { self.$field = v; })*
            };
        }
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
            token_cache_size
        );
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
        if self.db_max_connections == 0 {
            return Err(ConfigError::Invalid {
                name: "db_max_connections",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
