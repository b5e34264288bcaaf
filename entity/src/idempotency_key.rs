//! A remembered `Idempotency-Key` of a create, with the response that replays it.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// The operation the key was sent to, e.g. `createLease`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub operation: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub project_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// SHA-256 (hex) of the request body in canonical form: a reuse with another body is refused.
    pub fingerprint: String,
    /// The lease or host the request created (it may have been deleted since).
    pub resource_id: String,
    pub status: i32,
    /// The response body, byte for byte.
    pub body: String,
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
