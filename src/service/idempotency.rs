//! Idempotent creates: remembering an `Idempotency-Key` with the response it got, in the same
//! write transaction as the lease or host it created, and replaying that response to a retry.
//!
//! The key record and the resource commit together or not at all: a crash can leave neither a
//! lease without its key (a retry would create a second one) nor a key pointing at nothing. Two
//! requests with one key are ordered by the write turn (writers are serialized on both
//! backends): the second finds the first's record when its turn comes and replays it.
//! Only successes are remembered; a refused create (4xx) may be retried with the same key.

use chrono::{NaiveDateTime, TimeDelta};
use entity::idempotency_key;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
};
use serde_json::{Map, Value};

use super::Services;
use crate::auth::Caller;
use crate::domain::{
    DomainError,
    idempotency::{IdempotencyKey, fingerprint},
};

/// What a create needs to be idempotent: the key, the status of its success, and how its
/// response body is rendered (the API's serializer, so that the stored bytes are the ones sent).
pub struct Once<T> {
    pub key: IdempotencyKey,
    pub status: u16,
    pub render: fn(&T) -> String,
}

/// The outcome of a create that may have been a retry.
#[derive(Debug)]
pub enum Created<T> {
    /// Created now.
    New(T),
    /// Created by an earlier request with the same key: its response, to send again.
    Replayed(StoredResponse),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// A keyed create in progress: the record's identity and the body's fingerprint.
pub(crate) struct Claim<T> {
    operation: &'static str,
    project_id: String,
    once: Once<T>,
    fingerprint: String,
}

impl<T> Claim<T> {
    pub fn new(
        operation: &'static str,
        caller: &Caller,
        body: &Map<String, Value>,
        once: Once<T>,
    ) -> Self {
        Self {
            operation,
            project_id: caller.project_id.clone(),
            fingerprint: fingerprint(body),
            once,
        }
    }
}

impl Services {
    /// [`Services::replay`] in a read transaction of its own, opened only for a keyed request
    /// (a request without the header costs nothing more than before).
    pub(crate) async fn replay_early<T>(
        &self,
        claim: Option<&Claim<T>>,
        now: NaiveDateTime,
    ) -> Result<Option<StoredResponse>, DomainError> {
        if claim.is_none() {
            return Ok(None);
        }
        let txn = self.db.read().await?;
        let found = self.replay(&txn, claim, now).await?;
        txn.commit().await?;
        Ok(found)
    }

    /// The oldest record still replayed at `now`.
    fn idempotency_horizon(&self, now: NaiveDateTime) -> NaiveDateTime {
        now - TimeDelta::seconds(self.settings.api.idempotency_key_ttl_seconds as i64)
    }

    /// The response an earlier request with this key got, if there is one that has not expired;
    /// 422 if that request had another body.
    pub(crate) async fn replay<T>(
        &self,
        conn: &impl ConnectionTrait,
        claim: Option<&Claim<T>>,
        now: NaiveDateTime,
    ) -> Result<Option<StoredResponse>, DomainError> {
        let Some(c) = claim else {
            return Ok(None);
        };
        let found = idempotency_key::Entity::find_by_id((
            c.operation.to_string(),
            c.project_id.clone(),
            c.once.key.as_str().to_string(),
        ))
        .one(conn)
        .await?;
        let Some(found) = found.filter(|r| r.created_at > self.idempotency_horizon(now)) else {
            return Ok(None);
        };
        if found.fingerprint != c.fingerprint {
            return Err(DomainError::IdempotencyKeyReused(format!(
                "Idempotency-Key {} was already used for another request (created {}); a retry \
                 must send the same body, a new request a new key",
                c.once.key.as_str(),
                found.resource_id
            )));
        }
        Ok(Some(StoredResponse {
            status: found.status as u16,
            body: found.body,
        }))
    }

    /// Records the key with the response for `created`, in the create's own transaction, and
    /// purges expired records on the way (so the table holds about one TTL of keyed creates).
    pub(crate) async fn remember<T>(
        &self,
        conn: &impl ConnectionTrait,
        claim: Option<&Claim<T>>,
        resource_id: &str,
        created: &T,
        now: NaiveDateTime,
    ) -> Result<(), DomainError> {
        let Some(c) = claim else {
            return Ok(());
        };
        idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::CreatedAt.lte(self.idempotency_horizon(now)))
            .exec(conn)
            .await?;
        idempotency_key::ActiveModel {
            operation: Set(c.operation.to_string()),
            project_id: Set(c.project_id.clone()),
            key: Set(c.once.key.as_str().to_string()),
            fingerprint: Set(c.fingerprint.clone()),
            resource_id: Set(resource_id.to_string()),
            status: Set(c.once.status as i32),
            body: Set((c.once.render)(created)),
            created_at: Set(now),
        }
        .insert(conn)
        .await?;
        Ok(())
    }
}
