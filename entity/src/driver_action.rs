//! What the standalone resource driver did to a host: assigned, released, before-end action.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "driver_actions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub lease_id: String,
    pub reservation_id: String,
    pub host_id: i64,
    /// `assign`, `release`, `snapshot` or `none`.
    pub action: String,
    pub detail: String,
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
