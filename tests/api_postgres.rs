//! The HTTP suite of tests/api/ again, each test on a fresh PostgreSQL database on the server named
//! by BLAZAR_TEST_DATABASE_URL (.ci/run sets it). Without it, each test says it is skipped.

#[path = "api/capacity.rs"]
mod capacity;
#[path = "api/concurrency.rs"]
mod concurrency;
#[path = "api/contract.rs"]
mod contract;
#[path = "api/enforcement.rs"]
mod enforcement;
#[path = "api/errors.rs"]
mod errors;
#[path = "support/mod.rs"]
mod helpers;
#[path = "api/hostile.rs"]
mod hostile;
#[path = "api/hosts.rs"]
mod hosts;
#[path = "api/idempotency.rs"]
mod idempotency;
#[path = "api/leases.rs"]
mod leases;
#[path = "api/lifecycle.rs"]
mod lifecycle;
#[path = "api/live.rs"]
mod live;
#[path = "api/messages.rs"]
mod messages;
#[path = "api/notifications.rs"]
mod notifications;
#[path = "api/paging.rs"]
mod paging;
#[path = "api/policy.rs"]
mod policy;
#[path = "api/preconditions.rs"]
mod preconditions;
#[path = "api/shutdown.rs"]
mod shutdown;
