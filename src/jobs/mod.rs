//! Lease lifecycle: the event runner, the resource drivers it acts through, and notifications.
//!
//! - [`runner`]: sleeps until the next due event (woken early when a lease changes), claims each
//!   due event, acts, and records the outcome; claims expire so that a crashed runner's events are
//!   taken over.
//! - [`bell`]: rung by lease changes, so that the sleeping runner looks again in time.
//! - [`driver`]: what "start", "before end" and "end" do to hosts. The standalone driver records
//!   its actions in the database; a Nova driver can implement the same trait.
//! - [`notify`]: outgoing JSON webhooks, retried with backoff, never blocking the caller.

pub mod bell;
pub mod driver;
pub mod notify;
pub mod runner;
