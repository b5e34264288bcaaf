//! The service layer: each operation of the API as one database transaction over the entities.
//!
//! Handlers call exactly one function here. Pure rules live in `domain`; this layer loads what the
//! rules need, applies them with `now` from the clock, and writes the result atomically.

pub mod facts;
pub mod hosts;
pub mod leases;
pub mod placement;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::{
    clock::SharedClock,
    config::Settings,
    db::Db,
    domain::lease::Limits,
    jobs::{driver::ResourceDriver, notify::Notifier},
};

pub use facts::{HostFactSource, StandaloneFacts};

/// Who is calling: resolved from headers (noauth) or a token (keystone) by the request pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub project_id: String,
    pub user_id: String,
    pub roles: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
}

/// Everything an operation needs: the database, the clock, the settings, the host fact source,
/// the resource driver, the notifier, and the bell that wakes the event runner.
#[derive(Clone)]
pub struct Services {
    pub db: Arc<Db>,
    pub clock: SharedClock,
    pub settings: Arc<Settings>,
    pub facts: Arc<dyn HostFactSource>,
    pub driver: Arc<dyn ResourceDriver>,
    pub notifier: Notifier,
    /// Rung after every lease change, so the runner re-reads when the next event is due.
    pub wake: Arc<Notify>,
}

impl Services {
    pub fn limits(&self) -> Limits {
        Limits {
            max_reservations: self.settings.max_reservations_per_lease,
        }
    }
}
