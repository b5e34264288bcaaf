//! PostgreSQL only: a database-level guarantee that no host is booked twice for overlapping
//! windows (an exclusion constraint on host and time range), beneath the service's own checks.
//! SQLite has no such constraint; there the single serialized writer is the guarantee.
use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        // btree_gist lets one GiST index hold host_id equality with range overlap; it is a
        // trusted extension, so a database owner can create it without being superuser.
        db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS btree_gist")
            .await
            .map_err(|e| {
                DbErr::Migration(format!(
                    "the btree_gist extension is needed (CREATE EXTENSION btree_gist): {e}"
                ))
            })?;
        // '[)' ranges: a booking that ends when the next starts does not overlap it.
        db.execute_unprepared(
            "ALTER TABLE allocations ADD CONSTRAINT allocations_no_overlap \
             EXCLUDE USING gist (host_id WITH =, tsrange(start_date, end_date, '[)') WITH &&)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE allocations DROP CONSTRAINT IF EXISTS allocations_no_overlap",
            )
            .await?;
        Ok(())
    }
}
