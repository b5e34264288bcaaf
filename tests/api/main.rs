//! HTTP tests: each test starts the real application on port 0 with its own fresh database and
//! drives it over HTTP, with a manual clock so that dates are exact.

mod concurrency;
mod contract;
mod errors;
#[path = "../support/mod.rs"]
mod helpers;
mod hosts;
mod leases;
mod lifecycle;
mod live;
mod notifications;
mod paging;
mod policy;
