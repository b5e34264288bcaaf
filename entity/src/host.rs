//! A compute host enrolled for reservation, with its hardware facts.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "hosts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub hypervisor_hostname: String,
    pub hypervisor_type: String,
    pub hypervisor_version: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub local_gb: i64,
    pub cpu_info: String,
    pub service_name: String,
    pub availability_zone: String,
    pub status: Option<String>,
    pub reservable: bool,
    pub trust_id: Option<String>,
    pub created_at: DateTime,
    pub updated_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::host_capability::Entity")]
    HostCapability,
}

impl Related<super::host_capability::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::HostCapability.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
