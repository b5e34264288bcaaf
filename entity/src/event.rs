//! A lease event: start_lease, before_end_lease or end_lease, due at `time`.
use sea_orm::entity::prelude::*;

use crate::sea_orm_active_enums::{EventStatus, EventType};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub lease_id: String,
    pub event_type: EventType,
    pub time: DateTime,
    pub status: EventStatus,
    pub created_at: DateTime,
    pub updated_at: Option<DateTime>,
    /// The runner instance that claimed the event (while IN_PROGRESS).
    pub claimed_by: Option<String>,
    pub claimed_at: Option<DateTime>,
    /// After this, another runner may take the event over (its claimant is presumed dead).
    pub claim_expires_at: Option<DateTime>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// When the event finished (full precision, for lateness measurements).
    pub done_at: Option<DateTime>,
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
