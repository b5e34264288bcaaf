//! Database migrations for blazar-server: one module per schema change, each with an honest `down()`.
//!
//! The server applies them at start-up (`Migrator::up`); `blazar-server migrate` runs them alone.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
mod m20261124_000002_lifecycle;
mod m20261124_000003_pg_no_overlap;
mod m20261124_000004_placement_versions;
mod m20261201_000005_idempotency_keys;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261124_000002_lifecycle::Migration),
            Box::new(m20261124_000003_pg_no_overlap::Migration),
            Box::new(m20261124_000004_placement_versions::Migration),
            Box::new(m20261201_000005_idempotency_keys::Migration),
        ]
    }
}
