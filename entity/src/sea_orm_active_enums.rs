//! The closed sets of text the tables store: statuses, event types, run outcomes, before-end actions.
//!
//! Each enum is string-backed (`rs_type = "String"`) with the column's own width, so the rows hold
//! exactly the text upstream Blazar stores ('PENDING', 'start_lease', '' ...) and no migration is
//! needed. The rules about these values (which status allows what) live in the main crate's
//! `domain`, not here. `Display`, `FromStr` and `Serialize` speak the stored text.
use std::{fmt, str::FromStr};

use sea_orm::entity::prelude::*;

/// Lease statuses, as upstream's `blazar/status.py` (`leases.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
pub enum LeaseStatus {
    #[sea_orm(string_value = "CREATING")]
    Creating,
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "STARTING")]
    Starting,
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    #[sea_orm(string_value = "UPDATING")]
    Updating,
    #[sea_orm(string_value = "TERMINATING")]
    Terminating,
    #[sea_orm(string_value = "TERMINATED")]
    Terminated,
    #[sea_orm(string_value = "DELETING")]
    Deleting,
    #[sea_orm(string_value = "ERROR")]
    Error,
}

/// Reservation statuses, lowercase as upstream stores them (`reservations.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(13))")]
pub enum ReservationStatus {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "active")]
    Active,
    #[sea_orm(string_value = "deleted")]
    Deleted,
    #[sea_orm(string_value = "error")]
    Error,
}

/// Event statuses (`events.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(13))")]
pub enum EventStatus {
    #[sea_orm(string_value = "UNDONE")]
    Undone,
    #[sea_orm(string_value = "IN_PROGRESS")]
    InProgress,
    #[sea_orm(string_value = "DONE")]
    Done,
    #[sea_orm(string_value = "ERROR")]
    Error,
}

/// The three lease events (`events.event_type`, `event_runs.event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(66))")]
pub enum EventType {
    #[sea_orm(string_value = "start_lease")]
    StartLease,
    #[sea_orm(string_value = "before_end_lease")]
    BeforeEndLease,
    #[sea_orm(string_value = "end_lease")]
    EndLease,
}

/// How one run of an event ended (`event_runs.outcome`): done, failed for good, or tried again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(13))")]
pub enum RunOutcome {
    #[sea_orm(string_value = "DONE")]
    Done,
    #[sea_orm(string_value = "ERROR")]
    Error,
    #[sea_orm(string_value = "RETRY")]
    Retry,
}

/// What a reservation does before its lease ends (`reservations.before_end`): nothing (`""`),
/// what the server is configured to do (`"default"`), or snapshot the servers on its hosts.
/// The order is the one `GET /v1/os-hosts/plugins` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(36))")]
pub enum BeforeEnd {
    #[sea_orm(string_value = "")]
    Nothing,
    #[sea_orm(string_value = "default")]
    Default,
    #[sea_orm(string_value = "snapshot")]
    Snapshot,
}

/// `Display`, `FromStr` and `Serialize` as the stored text, so that a message, a label, a JSON
/// payload or a parser never spells a value a second time; and `all()`. Callers need no sea-orm
/// trait in scope.
macro_rules! stored_text {
    ($($name:ident),*) => {$(
        impl $name {
            /// Every value, in declaration order.
            pub fn all() -> impl Iterator<Item = Self> {
                <Self as sea_orm::Iterable>::iter()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_value())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_value())
            }
        }

        impl FromStr for $name {
            type Err = DbErr;

            fn from_str(s: &str) -> Result<Self, DbErr> {
                Self::try_from_value(&s.to_owned())
            }
        }
    )*};
}

stored_text!(
    LeaseStatus,
    ReservationStatus,
    EventStatus,
    EventType,
    RunOutcome,
    BeforeEnd
);
