//! sea-orm entities for blazar-server's tables: the generated shape of each row, no logic.
//!
//! Times are naive UTC (`DateTime` is `chrono::NaiveDateTime`), as in upstream Blazar.

pub mod allocation;
pub mod driver_action;
pub mod event;
pub mod event_run;
pub mod host;
pub mod host_capability;
pub mod idempotency_key;
pub mod lease;
pub mod placement_version;
pub mod reservation;
pub mod resource_property;
pub mod sea_orm_active_enums;

pub mod prelude {
    pub use super::allocation::Entity as Allocation;
    pub use super::driver_action::Entity as DriverAction;
    pub use super::event::Entity as Event;
    pub use super::event_run::Entity as EventRun;
    pub use super::host::Entity as Host;
    pub use super::host_capability::Entity as HostCapability;
    pub use super::idempotency_key::Entity as IdempotencyKey;
    pub use super::lease::Entity as Lease;
    pub use super::reservation::Entity as Reservation;
    pub use super::resource_property::Entity as ResourceProperty;
}
