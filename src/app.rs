//! Building the application: database, services, routes and the request pipeline, bound to a port.
//!
//! `Application::build` binds (port 0 in tests) and reports the bound address before serving, as in
//! zero-to-production; `run` serves until the shutdown future resolves, then stops every task
//! through one [`Shutdown`] and drains deliveries in flight (docs/lifecycle.md, "Shutdown").

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use poem::{
    Endpoint, EndpointExt, Route, Server,
    listener::{Acceptor, Listener, TcpListener},
    middleware::CatchPanic,
};

use crate::{
    api::{
        self,
        pipeline::{AllowedMethods, Pipeline},
    },
    auth::{
        Authenticator, NoAuth,
        keystone::{Keystone, KeystoneConfig},
        policy::{Policy, PolicyError},
        service_account::{AccountConfig, ServiceAccount},
        split_roles,
    },
    clock::SharedClock,
    config::{ConfigError, Settings},
    db::Db,
    enforcement::Enforcement,
    jobs::{
        driver::{ResourceDriver, StandaloneDriver},
        notify::{Notifier, RetryPolicy},
        runner::{LeaseEnd, Runner, RunnerDeps, default_instance_name},
    },
    metrics::Metrics,
    nova::{self, driver::NovaDriver, facts::NovaFacts, sync::NovaSync},
    service::{HostFactSource, Services, StandaloneFacts},
    shutdown::Shutdown,
};
use chrono::TimeDelta;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("database {url}: {source}")]
    Database { url: String, source: sea_orm::DbErr },
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
}

/// The routes of the whole service, wrapped in the request pipeline (which resolves callers
/// with `auth`). `/metrics` is among them when metrics are on and have no address of their own.
pub fn routes(services: Arc<Services>, auth: Arc<dyn Authenticator>) -> impl Endpoint + 'static {
    let api = api::openapi();
    let methods = Arc::new(AllowedMethods::from_spec(&api.spec()));
    let pipeline = pipeline(&services, auth, methods);
    let s = &services.settings;
    let mut route = Route::new();
    if s.metrics.enabled && s.metrics.bind.is_none() {
        route = route.at("/metrics", poem::get(api::metrics::metrics));
    }
    route
        .at("/openapi.json", api.spec_endpoint())
        .at("/openapi.yaml", api.spec_endpoint_yaml())
        .nest("/docs", api.swagger_ui())
        .nest("/calendar", api::calendar::routes())
        .nest("/", api)
        .data(services)
        .with(CatchPanic::new())
        .around(move |ep, req| api::pipeline::handle(ep, req, pipeline.clone()))
}

/// `/metrics` alone, for the listener of `metrics_bind`: the same pipeline (request ids, the
/// error envelope, counted as an unmatched operation), nothing else.
pub fn metrics_routes(
    services: Arc<Services>,
    auth: Arc<dyn Authenticator>,
) -> impl Endpoint + 'static {
    let methods = Arc::new(AllowedMethods::default());
    let pipeline = pipeline(&services, auth, methods);
    Route::new()
        .at("/metrics", poem::get(api::metrics::metrics))
        .data(services)
        .with(CatchPanic::new())
        .around(move |ep, req| api::pipeline::handle(ep, req, pipeline.clone()))
}

fn pipeline(
    services: &Services,
    auth: Arc<dyn Authenticator>,
    methods: Arc<AllowedMethods>,
) -> Arc<Pipeline> {
    Arc::new(Pipeline {
        max_body_bytes: services.settings.api.max_body_bytes,
        auth,
        methods,
        metrics: services.metrics.clone(),
    })
}

/// Connects to the database and applies pending migrations.
pub async fn open_database(settings: &Settings) -> Result<Db, AppError> {
    let db_err = |source| AppError::Database {
        url: redact(&settings.database.connection),
        source,
    };
    let db = Db::connect(
        &settings.database.connection,
        settings.database.max_pool_size,
    )
    .await
    .map_err(db_err)?;
    db.migrate().await.map_err(db_err)?;
    Ok(db)
}

/// Hides a password in a database URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The Keystone service account, when the settings give its credentials: it validates tokens
/// (keystone mode) and finds and authenticates Nova (nova mode without a fixed token).
fn service_account(s: &Settings, clock: SharedClock) -> Option<Arc<ServiceAccount>> {
    let (Some(url), Some(password)) = (
        &s.keystone_authtoken.auth_url,
        &s.keystone_authtoken.password,
    ) else {
        return None;
    };
    Some(Arc::new(ServiceAccount::new(
        AccountConfig {
            url: url.clone(),
            username: s.keystone_authtoken.username.clone(),
            password: password.clone(),
            project_name: s.keystone_authtoken.project_name.clone(),
            user_domain_name: s.keystone_authtoken.user_domain_name.clone(),
            project_domain_name: s.keystone_authtoken.project_domain_name.clone(),
        },
        clock,
    )))
}

/// The authenticator the settings ask for (validated settings: keystone has its account).
fn authenticator(
    s: &Settings,
    account: Option<Arc<ServiceAccount>>,
    clock: SharedClock,
) -> Arc<dyn Authenticator> {
    match (s.api.auth_strategy.as_str(), account) {
        ("keystone", Some(account)) => Arc::new(Keystone::new(
            KeystoneConfig {
                cache_ttl: Duration::from_secs(s.keystone_authtoken.token_cache_time),
                cache_size: s.keystone_authtoken.token_cache_size,
            },
            account,
            clock,
        )),
        _ => Arc::new(NoAuth {
            default_project_id: s.api.default_project_id.clone(),
            default_user_id: s.api.default_user_id.clone(),
            default_roles: split_roles(&s.api.default_roles),
        }),
    }
}

pub struct Application {
    addr: SocketAddr,
    acceptor: poem::listener::TcpAcceptor,
    /// The listener of `metrics_bind`, when metrics have an address of their own.
    metrics: Option<(SocketAddr, poem::listener::TcpAcceptor)>,
    services: Arc<Services>,
    /// Who is calling: only the request pipeline asks, so the services do not carry it.
    auth: Arc<dyn Authenticator>,
    runner: Arc<Runner>,
    nova_sync: Option<Arc<NovaSync>>,
    /// The one stop signal every task of this application selects on.
    shutdown: Shutdown,
}

impl Application {
    /// Opens the database, builds the services (with the resource driver the settings name)
    /// and binds the listener.
    pub async fn build(settings: Settings, clock: SharedClock) -> Result<Self, AppError> {
        Self::build_with_driver(settings, clock, None).await
    }

    /// As [`Application::build`]; `driver`, if given, replaces the one the settings name (tests
    /// inject failures this way).
    pub async fn build_with_driver(
        settings: Settings,
        clock: SharedClock,
        driver: Option<Arc<dyn ResourceDriver>>,
    ) -> Result<Self, AppError> {
        settings.validate()?;
        // TLS for outgoing HTTPS (Keystone, Nova, webhooks): one crypto provider for the process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = Arc::new(match &settings.oslo_policy.policy_file {
            Some(path) => Policy::from_file(std::path::Path::new(path))?,
            None => Policy::defaults(),
        });
        let account = service_account(&settings, clock.clone());
        let auth = authenticator(&settings, account.clone(), clock.clone());
        // One registry for the process, with a slot for each operation of the spec.
        let metrics = Arc::new(Metrics::new(
            AllowedMethods::from_spec(&api::openapi().spec()).operation_ids(),
        ));
        let db = open_database(&settings)
            .await?
            .with_metrics(metrics.clone());
        let shutdown = Shutdown::new();
        let notifier = Notifier::start(
            settings.notifications.urls.clone(),
            RetryPolicy {
                max_attempts: settings.notifications.max_attempts,
                first_backoff: Duration::from_millis(settings.notifications.backoff_ms),
            },
            metrics.clone(),
            shutdown.clone(),
        );
        let enforcement = Arc::new(Enforcement::from_settings(&settings)?);
        let repair = Arc::new(tokio::sync::Notify::new());
        let pools = settings
            .nova_mode()
            .then(|| Arc::new(nova::pools(&settings, account, repair.clone())));
        let (default_driver, facts): (Arc<dyn ResourceDriver>, Arc<dyn HostFactSource>) =
            match &pools {
                Some(p) => (
                    Arc::new(NovaDriver::new(p.clone())),
                    Arc::new(NovaFacts::new(p.clone(), settings.nova.az_aware)),
                ),
                None => (Arc::new(StandaloneDriver), Arc::new(StandaloneFacts)),
            };
        let services = Arc::new(Services {
            db: Arc::new(db),
            clock,
            instance: settings
                .runner
                .instance_name
                .clone()
                .unwrap_or_else(default_instance_name),
            settings: Arc::new(settings.clone()),
            facts,
            driver: driver.unwrap_or(default_driver),
            notifier,
            wake: Default::default(),
            policy,
            placement: Default::default(),
            nova_status: pools.as_ref().map(|_| Default::default()),
            repair,
            enforcement,
            metrics,
            shutdown: shutdown.clone(),
        });
        let nova_sync = pools.map(|p| Arc::new(NovaSync::new(services.clone(), p)));
        if let Some(sync) = &nova_sync {
            sync.ensure_freepool_soon();
        }
        let runner = Arc::new(Runner::new(RunnerDeps {
            db: services.db.clone(),
            clock: services.clock.clone(),
            driver: services.driver.clone(),
            notifier: services.notifier.clone(),
            bell: services.wake.clone(),
            metrics: services.metrics.clone(),
            instance: services.instance.clone(),
            claim_ttl: TimeDelta::seconds(settings.runner.event_claim_seconds as i64),
            retry_deadline: TimeDelta::seconds(settings.nova.retry_deadline_seconds as i64),
            default_before_end: settings.physical_host.before_end.clone(),
            leases: Arc::new(services.clone()) as Arc<dyn LeaseEnd>,
            shutdown: shutdown.clone(),
        }));
        let (addr, acceptor) = bind(&settings.api.bind).await?;
        let metrics = match &settings.metrics.bind {
            Some(b) if settings.metrics.enabled => Some(bind(b).await?),
            _ => None,
        };
        Ok(Self {
            addr,
            acceptor,
            metrics,
            services,
            auth,
            runner,
            nova_sync,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when `metrics_bind` gives it an address of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(a, _)| *a)
    }

    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// The lease event runner (tests drive it with `run_due(now)`).
    pub fn runner(&self) -> Arc<Runner> {
        self.runner.clone()
    }

    /// Reconciliation and health polling, in nova mode (tests call them directly).
    pub fn nova_sync(&self) -> Option<Arc<NovaSync>> {
        self.nova_sync.clone()
    }

    /// Serves (and, unless disabled, runs lease events) until `shutdown` resolves; then stops
    /// in this order: the listeners stop accepting and requests in flight get up to 30 s (the
    /// metrics listener 5 s); the runner finishes the event it is running, Nova polling its poll,
    /// the change listener at once; last, webhook deliveries and `on-end` posts still queued or
    /// in flight get `shutdown_drain_seconds`, and what is left is dropped and counted in a log
    /// line. Producers stop before the drain starts, so that their last notifications are in it.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.addr, runner = self.services.settings.runner.enabled, "serving");
        let stop = self.shutdown.clone();
        let mut tasks = Vec::new();
        if let Some((addr, acceptor)) = self.metrics {
            tracing::info!(%addr, "serving metrics");
            let stop = stop.clone();
            let server = Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                metrics_routes(self.services.clone(), self.auth.clone()),
                async move { stop.triggered().await },
                Some(Duration::from_secs(5)),
            );
            tasks.push(tokio::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            }));
        }
        if self.services.settings.runner.enabled {
            if self.services.db.backend() == sea_orm::DbBackend::Postgres {
                tasks.push(tokio::spawn(self.runner.clone().listen_for_changes()));
            }
            // Background work runs where the runner runs (not on API-only instances).
            if let Some(sync) = &self.nova_sync {
                tasks.push(tokio::spawn(sync.clone().run(stop.clone())));
            }
            tasks.push(tokio::spawn(self.runner.clone().run()));
        }
        let drain =
            Duration::from_secs(self.services.settings.notifications.shutdown_drain_seconds);
        let trigger = stop.clone();
        let result = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(
                routes(self.services, self.auth),
                async move {
                    shutdown.await;
                    trigger.trigger();
                },
                Some(Duration::from_secs(30)),
            )
            .await;
        // The server may also end on its own (an accept error): the tasks stop with it.
        stop.trigger();
        for task in tasks {
            let _ = task.await;
        }
        let pending = stop.pending();
        if pending > 0 {
            tracing::info!(
                pending,
                ?drain,
                "draining webhook deliveries and on-end posts"
            );
        }
        let dropped = stop.drain(drain).await;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                ?drain,
                "webhook deliveries and on-end posts not finished in time were dropped"
            );
        }
        result
    }
}

/// Binds a listener; returns the address it got (port 0 picks one).
async fn bind(bind: &str) -> Result<(SocketAddr, poem::listener::TcpAcceptor), AppError> {
    let bind_err = |source| AppError::Bind {
        bind: bind.to_string(),
        source,
    };
    let acceptor = TcpListener::bind(bind.to_string())
        .into_acceptor()
        .await
        .map_err(bind_err)?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .ok_or_else(|| bind_err(std::io::Error::other("no local address")))?;
    Ok((addr, acceptor))
}

/// The allocator of every Rust allocation in a process that links this crate (the server, its
/// tests, the benchmark). With glibc's, a lease listing spent 24-42% of its CPU in malloc and free
/// (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`) on the heap that holds the placement
/// copy of 10,000 hosts (docs/performance.md). SQLite's own allocations still use glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The runtime the server runs on: one worker thread per core, after capping glibc's malloc
/// arenas (still used by SQLite and other C code).
///
/// glibc gives each thread that meets contention its own arena (up to 8 per core) and rarely
/// returns their free memory; with tokio's workers and sqlx's database threads each filling
/// one with the buffers of large listings, peak RSS at 10,000 hosts grew past what the data
/// needs (docs/performance.md). Two arenas are enough for two kinds of threads that rarely
/// contend; it must be set before those threads start.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_hidden() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            super::redact("sqlite://blazar.db?mode=rwc"),
            "sqlite://blazar.db?mode=rwc"
        );
    }
}
