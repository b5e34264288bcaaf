//! Entity tags of leases and hosts, and the `If-Match` check that writes make inside their
//! transaction (so that two writers holding the same tag cannot both win).
//!
//! A tag is the SHA-256 of every stored field of what GET shows: the lease with its
//! reservations and events (statuses included), or the host with its capabilities. The fields
//! are fed through the models' `Debug` form so that a column added later is covered without
//! anyone remembering to add it here; that form is deterministic for a given build, and a
//! different build giving another tag for the same data only costs a client one re-read.

use super::{leases::LeaseDetail, placement::HostRecord};
use crate::domain::{
    DomainError,
    idempotency::hex_sha256,
    precondition::{Precondition, precondition_failed},
};

/// A strong entity tag, quoted as the `ETag` header carries it.
fn tag(parts: std::fmt::Arguments<'_>) -> String {
    format!("\"{}\"", hex_sha256(parts.to_string().as_bytes()))
}

impl LeaseDetail {
    pub fn etag(&self) -> String {
        tag(format_args!(
            "lease/{:?}/{:?}/{:?}",
            self.lease, self.reservations, self.events
        ))
    }
}

impl HostRecord {
    pub fn etag(&self) -> String {
        tag(format_args!("host/{:?}/{:?}", self.host, self.capabilities))
    }
}

/// Refuses (412) a write whose `If-Match` does not match `current`, the tag read inside the
/// write's transaction.
pub(crate) fn check_if_match(
    if_match: Option<&Precondition>,
    what: &str,
    current: &str,
) -> Result<(), DomainError> {
    match if_match {
        Some(c) if !c.matches_strongly(current) => Err(precondition_failed(what, current)),
        _ => Ok(()),
    }
}
