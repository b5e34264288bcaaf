//! Lease lifecycle: event claims (for crash recovery and several runners), an audit of event runs,
//! and the records of what the resource driver did.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    ClaimedBy,
    ClaimedAt,
    ClaimExpiresAt,
    Attempts,
    LastError,
    DoneAt,
}

#[derive(DeriveIden)]
enum EventRuns {
    Table,
    Id,
    EventId,
    LeaseId,
    EventType,
    Instance,
    Outcome,
    ScheduledAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum DriverActions {
    Table,
    Id,
    LeaseId,
    ReservationId,
    HostId,
    Action,
    Detail,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for col in [
            string_len_null(Events::ClaimedBy, 64),
            date_time_null(Events::ClaimedAt),
            date_time_null(Events::ClaimExpiresAt),
            integer(Events::Attempts).default(0).to_owned(),
            text_null(Events::LastError),
            date_time_null(Events::DoneAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Events::Table)
                        .add_column(col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(EventRuns::Table)
                    .col(big_pk_auto(EventRuns::Id))
                    .col(string_len(EventRuns::EventId, 36))
                    .col(string_len(EventRuns::LeaseId, 36))
                    .col(string_len(EventRuns::EventType, 66))
                    .col(string_len(EventRuns::Instance, 64))
                    .col(string_len(EventRuns::Outcome, 13))
                    .col(date_time(EventRuns::ScheduledAt))
                    .col(date_time(EventRuns::StartedAt))
                    .col(date_time(EventRuns::FinishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_event_runs_event")
                    .table(EventRuns::Table)
                    .col(EventRuns::EventId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DriverActions::Table)
                    .col(big_pk_auto(DriverActions::Id))
                    .col(string_len(DriverActions::LeaseId, 36))
                    .col(string_len(DriverActions::ReservationId, 36))
                    .col(big_integer(DriverActions::HostId))
                    .col(string_len(DriverActions::Action, 32))
                    .col(text(DriverActions::Detail))
                    .col(date_time(DriverActions::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_driver_actions_lease")
                    .table(DriverActions::Table)
                    .col(DriverActions::LeaseId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DriverActions::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(EventRuns::Table).to_owned())
            .await?;
        for col in [
            Events::DoneAt,
            Events::LastError,
            Events::Attempts,
            Events::ClaimExpiresAt,
            Events::ClaimedAt,
            Events::ClaimedBy,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Events::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
