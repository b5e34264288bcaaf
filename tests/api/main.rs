//! HTTP tests: each test starts the real application on port 0 with its own fresh database and
//! drives it over HTTP, with a manual clock so that dates are exact. tests/api_postgres.rs runs
//! the same modules on PostgreSQL: add a new module to both files.

mod capacity;
mod concurrency;
mod contract;
mod enforcement;
mod errors;
#[path = "../support/mod.rs"]
mod helpers;
mod hostile;
mod hosts;
mod idempotency;
mod leases;
mod lifecycle;
mod live;
mod messages;
mod notifications;
mod paging;
mod policy;
mod preconditions;
mod shutdown;
