//! The initial schema: leases, reservations, events, hosts, capabilities, properties, allocations.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Leases {
    Table,
    Id,
    Name,
    UserId,
    ProjectId,
    TrustId,
    StartDate,
    EndDate,
    Status,
    Action,
    StatusReason,
    Degraded,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    Id,
    LeaseId,
    Position,
    ResourceType,
    ResourceId,
    Status,
    Min,
    Max,
    HypervisorProperties,
    ResourceProperties,
    BeforeEnd,
    MissingResources,
    ResourcesChanged,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    LeaseId,
    EventType,
    Time,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Hosts {
    Table,
    Id,
    HypervisorHostname,
    HypervisorType,
    HypervisorVersion,
    Vcpus,
    MemoryMb,
    LocalGb,
    CpuInfo,
    ServiceName,
    AvailabilityZone,
    Status,
    Reservable,
    TrustId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum HostCapabilities {
    Table,
    Id,
    HostId,
    Name,
    Value,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ResourceProperties {
    Table,
    Id,
    ResourceType,
    PropertyName,
    Private,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Allocations {
    Table,
    Id,
    HostId,
    ReservationId,
    LeaseId,
    StartDate,
    EndDate,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Leases::Table)
                    .col(string_len(Leases::Id, 36).primary_key())
                    .col(string_len(Leases::Name, 80))
                    .col(string_len_null(Leases::UserId, 255))
                    .col(string_len_null(Leases::ProjectId, 255))
                    .col(string_len_null(Leases::TrustId, 255))
                    .col(date_time(Leases::StartDate))
                    .col(date_time(Leases::EndDate))
                    .col(string_len(Leases::Status, 32))
                    .col(string_len_null(Leases::Action, 32))
                    .col(text_null(Leases::StatusReason))
                    .col(boolean(Leases::Degraded).default(false))
                    .col(date_time(Leases::CreatedAt))
                    .col(date_time_null(Leases::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_leases_project_created")
                    .table(Leases::Table)
                    .col(Leases::ProjectId)
                    .col(Leases::CreatedAt)
                    .col(Leases::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_leases_created")
                    .table(Leases::Table)
                    .col(Leases::CreatedAt)
                    .col(Leases::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Reservations::Table)
                    .col(string_len(Reservations::Id, 36).primary_key())
                    .col(string_len(Reservations::LeaseId, 36))
                    .col(integer(Reservations::Position))
                    .col(string_len(Reservations::ResourceType, 66))
                    .col(string_len(Reservations::ResourceId, 36))
                    .col(string_len(Reservations::Status, 13))
                    .col(integer(Reservations::Min))
                    .col(integer(Reservations::Max))
                    .col(text(Reservations::HypervisorProperties))
                    .col(text(Reservations::ResourceProperties))
                    .col(string_len(Reservations::BeforeEnd, 36))
                    .col(boolean(Reservations::MissingResources).default(false))
                    .col(boolean(Reservations::ResourcesChanged).default(false))
                    .col(date_time(Reservations::CreatedAt))
                    .col(date_time_null(Reservations::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_reservations_lease")
                            .from(Reservations::Table, Reservations::LeaseId)
                            .to(Leases::Table, Leases::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_reservations_lease")
                    .table(Reservations::Table)
                    .col(Reservations::LeaseId)
                    .col(Reservations::Position)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(string_len(Events::Id, 36).primary_key())
                    .col(string_len(Events::LeaseId, 36))
                    .col(string_len(Events::EventType, 66))
                    .col(date_time(Events::Time))
                    .col(string_len(Events::Status, 13))
                    .col(date_time(Events::CreatedAt))
                    .col(date_time_null(Events::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_events_lease")
                            .from(Events::Table, Events::LeaseId)
                            .to(Leases::Table, Leases::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_events_lease")
                    .table(Events::Table)
                    .col(Events::LeaseId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_events_status_time")
                    .table(Events::Table)
                    .col(Events::Status)
                    .col(Events::Time)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Hosts::Table)
                    .col(big_pk_auto(Hosts::Id))
                    .col(string_len_uniq(Hosts::HypervisorHostname, 255))
                    .col(string_len(Hosts::HypervisorType, 255))
                    .col(big_integer(Hosts::HypervisorVersion))
                    .col(big_integer(Hosts::Vcpus))
                    .col(big_integer(Hosts::MemoryMb))
                    .col(big_integer(Hosts::LocalGb))
                    .col(text(Hosts::CpuInfo))
                    .col(string_len(Hosts::ServiceName, 255))
                    .col(string_len(Hosts::AvailabilityZone, 255))
                    .col(string_len_null(Hosts::Status, 13))
                    .col(boolean(Hosts::Reservable).default(true))
                    .col(string_len_null(Hosts::TrustId, 36))
                    .col(date_time(Hosts::CreatedAt))
                    .col(date_time_null(Hosts::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(HostCapabilities::Table)
                    .col(big_pk_auto(HostCapabilities::Id))
                    .col(big_integer(HostCapabilities::HostId))
                    .col(string_len(HostCapabilities::Name, 64))
                    .col(text(HostCapabilities::Value))
                    .col(date_time(HostCapabilities::CreatedAt))
                    .col(date_time_null(HostCapabilities::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_host_capabilities_host")
                            .from(HostCapabilities::Table, HostCapabilities::HostId)
                            .to(Hosts::Table, Hosts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_host_capabilities_host_name")
                    .table(HostCapabilities::Table)
                    .col(HostCapabilities::HostId)
                    .col(HostCapabilities::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_host_capabilities_name")
                    .table(HostCapabilities::Table)
                    .col(HostCapabilities::Name)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ResourceProperties::Table)
                    .col(string_len(ResourceProperties::Id, 36).primary_key())
                    .col(string_len(ResourceProperties::ResourceType, 255))
                    .col(string_len(ResourceProperties::PropertyName, 255))
                    .col(boolean(ResourceProperties::Private).default(false))
                    .col(date_time(ResourceProperties::CreatedAt))
                    .col(date_time_null(ResourceProperties::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_resource_properties_type_name")
                    .table(ResourceProperties::Table)
                    .col(ResourceProperties::ResourceType)
                    .col(ResourceProperties::PropertyName)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Allocations::Table)
                    .col(big_pk_auto(Allocations::Id))
                    .col(big_integer(Allocations::HostId))
                    .col(string_len(Allocations::ReservationId, 36))
                    .col(string_len(Allocations::LeaseId, 36))
                    .col(date_time(Allocations::StartDate))
                    .col(date_time(Allocations::EndDate))
                    .col(date_time(Allocations::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_allocations_host")
                            .from(Allocations::Table, Allocations::HostId)
                            .to(Hosts::Table, Hosts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_allocations_reservation")
                            .from(Allocations::Table, Allocations::ReservationId)
                            .to(Reservations::Table, Reservations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_allocations_lease")
                            .from(Allocations::Table, Allocations::LeaseId)
                            .to(Leases::Table, Leases::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The free-host test asks "does this host have a booking that ends after my start?":
        // (host_id, end_date) answers it with one index seek per host.
        manager
            .create_index(
                Index::create()
                    .name("ix_allocations_host_end")
                    .table(Allocations::Table)
                    .col(Allocations::HostId)
                    .col(Allocations::EndDate)
                    .col(Allocations::StartDate)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_allocations_reservation")
                    .table(Allocations::Table)
                    .col(Allocations::ReservationId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_allocations_lease")
                    .table(Allocations::Table)
                    .col(Allocations::LeaseId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_allocations_end_start")
                    .table(Allocations::Table)
                    .col(Allocations::EndDate)
                    .col(Allocations::StartDate)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Allocations::Table.into_iden(),
            ResourceProperties::Table.into_iden(),
            HostCapabilities::Table.into_iden(),
            Hosts::Table.into_iden(),
            Events::Table.into_iden(),
            Reservations::Table.into_iden(),
            Leases::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
