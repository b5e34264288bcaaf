//! A lease: a project's claim on resources for a time window.
use sea_orm::entity::prelude::*;

use crate::sea_orm_active_enums::LeaseStatus;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub user_id: Option<String>,
    pub project_id: Option<String>,
    pub trust_id: Option<String>,
    pub start_date: DateTime,
    pub end_date: DateTime,
    pub status: LeaseStatus,
    pub action: Option<String>,
    pub status_reason: Option<String>,
    pub degraded: bool,
    pub created_at: DateTime,
    pub updated_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::reservation::Entity")]
    Reservation,
    #[sea_orm(has_many = "super::event::Entity")]
    Event,
}

impl Related<super::reservation::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Reservation.def()
    }
}

impl Related<super::event::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Event.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
