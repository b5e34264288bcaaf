//! Where the service layer translates the errors of the layers below it (the database, the
//! resource driver) into `DomainError`, once, so that `?` works on them and `domain` never
//! sees a sea-orm type. It chooses no HTTP status: `api::error` does that.

use sea_orm::DbErr;

use crate::{domain::DomainError, jobs::driver::DriverError};

/// PostgreSQL's exclusion constraint on `allocations`: two bookings of one host overlap.
const NO_OVERLAP_CONSTRAINT: &str = "allocations_no_overlap";

impl From<DbErr> for DomainError {
    fn from(err: DbErr) -> Self {
        let text = err.to_string();
        // The constraint caught a double booking the service did not (it cannot happen while
        // writers are serialized, but the answer must still be the one a client can act on).
        if text.contains(NO_OVERLAP_CONSTRAINT) {
            return Self::NotEnoughHostsAvailable(
                "a host was booked by another request at the same time; retry".into(),
            );
        }
        // Anything else is ours to fix: the text goes to the log, the client gets a 500.
        Self::Database(text)
    }
}

/// A driver's failure as the API answers it: 503 (retry later), 409 (the host holds servers)
/// or 502 (Nova refused), each with Nova's words.
pub fn driver_failure(e: DriverError) -> DomainError {
    match e {
        DriverError::Unavailable(m) => DomainError::NovaUnavailable(m),
        DriverError::Conflict(m) => DomainError::HostHavingServers(m),
        DriverError::Failed(m) => DomainError::NovaRefused(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlap_constraint_is_a_conflict_and_other_database_errors_keep_their_text() {
        let overlap = DbErr::Custom(
            "conflicting key value violates exclusion constraint \"allocations_no_overlap\"".into(),
        );
        let DomainError::NotEnoughHostsAvailable(why) = DomainError::from(overlap) else {
            panic!("the exclusion constraint must be NotEnoughHostsAvailable");
        };
        assert_eq!(
            why,
            "a host was booked by another request at the same time; retry"
        );
        let other = DomainError::from(DbErr::Custom("disk full".into()));
        assert!(matches!(&other, DomainError::Database(t) if t.contains("disk full")));
        assert_eq!(other.name(), "DatabaseError");
    }
}
