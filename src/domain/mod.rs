//! Pure domain rules: input dates, the request body types and their checks, the filter language,
//! host choice, statuses, events.
//!
//! Nothing here touches the database or reads the clock: callers pass `now` in. That keeps every
//! rule unit-testable and lets the service layer decide where the transaction boundaries are.

pub mod allocation;
pub mod capacity;
pub mod dates;
pub mod error;
pub mod filter;
pub mod host;
pub mod idempotency;
pub mod ids;
pub mod input;
pub mod lease;
pub mod lifecycle;
pub mod page;
pub mod placement;
pub mod pools;
pub mod precondition;
pub mod update;

pub use error::DomainError;
