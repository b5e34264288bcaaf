//! Remembered `Idempotency-Key`s of creates: the response each replays, written in the same
//! transaction as the lease or host it created, so that a crash never splits the two.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Operation,
    ProjectId,
    Key,
    Fingerprint,
    ResourceId,
    Status,
    Body,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(string_len(IdempotencyKeys::Operation, 32))
                    .col(string_len(IdempotencyKeys::ProjectId, 255))
                    .col(string_len(IdempotencyKeys::Key, 255))
                    // SHA-256 (hex) of the request body in canonical form.
                    .col(string_len(IdempotencyKeys::Fingerprint, 64))
                    .col(string_len(IdempotencyKeys::ResourceId, 36))
                    .col(integer(IdempotencyKeys::Status))
                    .col(text(IdempotencyKeys::Body))
                    .col(date_time(IdempotencyKeys::CreatedAt))
                    // One key per project and operation: the primary key is what makes a
                    // second insert of the same key fail even if writers were not serialized.
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Operation)
                            .col(IdempotencyKeys::ProjectId)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        // The purge deletes by age.
        manager
            .create_index(
                Index::create()
                    .name("ix_idempotency_keys_created")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}
