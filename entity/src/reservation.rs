//! A reservation: one resource request inside a lease (today always `physical:host`).
use sea_orm::entity::prelude::*;

use crate::sea_orm_active_enums::{BeforeEnd, ReservationStatus};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reservations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub lease_id: String,
    /// Order of the reservation inside its lease, as the client sent them.
    pub position: i32,
    pub resource_type: String,
    /// Id of the resource-specific part (upstream's computehost_reservations row).
    pub resource_id: String,
    pub status: ReservationStatus,
    pub min: i32,
    pub max: i32,
    pub hypervisor_properties: String,
    pub resource_properties: String,
    pub before_end: BeforeEnd,
    pub missing_resources: bool,
    pub resources_changed: bool,
    pub created_at: DateTime,
    pub updated_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::lease::Entity",
        from = "Column::LeaseId",
        to = "super::lease::Column::Id",
        on_delete = "Cascade"
    )]
    Lease,
}

impl Related<super::lease::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Lease.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
