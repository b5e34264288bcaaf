//! One finished run of a lease event: the audit trail that shows each event ran exactly once.
use sea_orm::entity::prelude::*;

use crate::sea_orm_active_enums::{EventType, RunOutcome};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_runs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub event_id: String,
    pub lease_id: String,
    pub event_type: EventType,
    /// The runner instance that ran it.
    pub instance: String,
    pub outcome: RunOutcome,
    pub scheduled_at: DateTime,
    pub started_at: DateTime,
    pub finished_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
