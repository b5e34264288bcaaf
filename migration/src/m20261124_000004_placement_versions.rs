//! Version counters of the host inventory and of the bookings, so that each instance knows when
//! its in-memory copy of them (service::placement) is out of date.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PlacementVersions {
    Table,
    Id,
    Hosts,
    Bookings,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PlacementVersions::Table)
                    .col(integer(PlacementVersions::Id).primary_key())
                    .col(big_integer(PlacementVersions::Hosts).default(0))
                    .col(big_integer(PlacementVersions::Bookings).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(PlacementVersions::Table)
                    .columns([
                        PlacementVersions::Id,
                        PlacementVersions::Hosts,
                        PlacementVersions::Bookings,
                    ])
                    .values_panic([1.into(), 0.into(), 0.into()])
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PlacementVersions::Table).to_owned())
            .await
    }
}
