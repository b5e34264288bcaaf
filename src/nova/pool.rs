//! Nova's host aggregates as Blazar uses them (upstream's `ReservationPool`): the freepool of
//! enrolled, unreserved hosts, and one aggregate per reservation, named by its id, with
//! availability zone `blazar_<id>` and metadata `blazar:owner = <project>`, so that Nova's
//! `BlazarFilter` lets that project (with the scheduler hint `reservation=<id>`) and nobody else
//! boot on its hosts.
//!
//! Every operation checks Nova's state before it changes it and treats "already so" as done (a
//! host already in an aggregate, a host already gone, a missing aggregate at the end), so that an
//! operation re-run after a crash converges without acting twice. Hosts move in an order that
//! keeps each inside some Blazar pool at every instant (join the new aggregate, then leave the
//! old one; upstream does the reverse): a host in no pool would accept anyone's servers.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::NaiveDateTime;
use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::client::{Aggregate, NovaClient, NovaError, Server};

/// Names and limits, from upstream's `[nova]` and `[physical:host]` options.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub freepool: String,
    pub owner_key: String,
    pub az_prefix: String,
    pub image_prefix: String,
    /// Longest wait for deleted servers to be gone.
    pub deletion_timeout: Duration,
    /// First pause between two looks at servers being deleted; it doubles up to 2 s (most
    /// servers go in well under a second; upstream looks every 5 s).
    pub deletion_poll: Duration,
}

/// One change made in Nova, for the audit (`driver_actions`) and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The compute host it concerns.
    pub host: String,
    pub action: &'static str,
    pub detail: String,
}

pub struct Pools {
    pub nova: NovaClient,
    pub cfg: PoolConfig,
    /// Aggregate ids by name: names are what Blazar knows, ids what Nova's calls take. An id
    /// that Nova no longer knows is looked up by name again.
    ids: Mutex<HashMap<String, i64>>,
    /// Event and API work on hosts hold it shared; reconciliation holds it alone, so that it
    /// never compares a half-done move with the database.
    moves: RwLock<()>,
    /// Rung when a move finds drift it cannot fix itself (a host still in another
    /// reservation's aggregate): reconciliation runs soon.
    repair: Arc<Notify>,
}

impl Pools {
    pub fn new(nova: NovaClient, cfg: PoolConfig, repair: Arc<Notify>) -> Self {
        Self {
            nova,
            cfg,
            ids: Mutex::new(HashMap::new()),
            moves: RwLock::new(()),
            repair,
        }
    }

    pub async fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.moves.read().await
    }

    pub async fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.moves.write().await
    }

    /// The availability zone of a reservation's aggregate.
    pub fn zone_of(&self, reservation_id: &str) -> String {
        format!("{}{reservation_id}", self.cfg.az_prefix)
    }

    /// Whether an aggregate is one of Blazar's reservation aggregates.
    pub fn is_reservation_pool(&self, a: &Aggregate) -> bool {
        a.availability_zone
            .as_deref()
            .is_some_and(|z| z.starts_with(&self.cfg.az_prefix))
            && a.name != self.cfg.freepool
    }

    fn remember(&self, a: &Aggregate) {
        self.ids
            .lock()
            .expect("aggregate ids")
            .insert(a.name.clone(), a.id);
    }

    fn forget(&self, name: &str) {
        self.ids.lock().expect("aggregate ids").remove(name);
    }

    /// Every aggregate (and their ids remembered).
    pub async fn all(&self) -> Result<Vec<Aggregate>, NovaError> {
        let all = self.nova.aggregates().await?;
        let mut ids = self.ids.lock().expect("aggregate ids");
        ids.clear();
        for a in &all {
            ids.insert(a.name.clone(), a.id);
        }
        Ok(all)
    }

    /// The aggregate named `name`, fresh from Nova, or `None`.
    pub async fn find(&self, name: &str) -> Result<Option<Aggregate>, NovaError> {
        let known = self.ids.lock().expect("aggregate ids").get(name).copied();
        if let Some(id) = known {
            match self.nova.aggregate(id).await? {
                Some(a) if a.name == name => return Ok(Some(a)),
                _ => self.forget(name),
            }
        }
        Ok(self.all().await?.into_iter().find(|a| a.name == name))
    }

    /// Creates aggregate `name` unless it exists; a 409 (created meanwhile, or by an earlier
    /// attempt whose answer was lost) means it exists.
    async fn find_or_create(&self, name: &str, zone: Option<&str>) -> Result<Aggregate, NovaError> {
        if let Some(a) = self.find(name).await? {
            return Ok(a);
        }
        match self.nova.create_aggregate(name, zone).await {
            Ok(a) => {
                tracing::info!(aggregate = %name, id = a.id, zone = ?zone, "Nova aggregate created");
                self.remember(&a);
                Ok(a)
            }
            Err(e) if e.status() == Some(409) => self.find(name).await?.ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// The freepool, created if missing (upstream requires an operator to create it).
    pub async fn freepool(&self) -> Result<Aggregate, NovaError> {
        self.find_or_create(&self.cfg.freepool, None).await
    }

    /// The reservation's aggregate, created if missing, with its owner set.
    pub async fn reservation_pool(
        &self,
        reservation_id: &str,
        project_id: &str,
    ) -> Result<Aggregate, NovaError> {
        let zone = self.zone_of(reservation_id);
        let a = self.find_or_create(reservation_id, Some(&zone)).await?;
        if a.metadata.get(&self.cfg.owner_key).map(String::as_str) == Some(project_id) {
            return Ok(a);
        }
        let meta = BTreeMap::from([(self.cfg.owner_key.clone(), Some(project_id.to_string()))]);
        self.nova.set_metadata(a.id, &meta).await
    }

    /// Adds `host` to `agg` unless it is a member; returns whether it changed anything. A 409
    /// while not a member means the host is still in another availability zone (a reservation
    /// that has not let it go): worth waiting for, and reconciliation is asked to look.
    async fn join(&self, agg: &Aggregate, host: &str) -> Result<bool, NovaError> {
        if agg.hosts.iter().any(|h| h == host) {
            return Ok(false);
        }
        match self.nova.add_host(agg.id, host).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(409) => {
                let now = self.nova.aggregate(agg.id).await?;
                if now.is_some_and(|a| a.hosts.iter().any(|h| h == host)) {
                    Ok(false)
                } else {
                    self.repair.notify_one();
                    Err(NovaError::StillWaiting(format!(
                        "host {host} cannot join aggregate {}: {e}",
                        agg.name
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Removes `host` from `agg` if it is a member; a 404 (not a member) is done.
    async fn leave(&self, agg: &Aggregate, host: &str) -> Result<bool, NovaError> {
        if !agg.hosts.iter().any(|h| h == host) {
            return Ok(false);
        }
        match self.nova.remove_host(agg.id, host).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Enrolment: the host joins the freepool.
    pub async fn enter_freepool(&self, host: &str) -> Result<bool, NovaError> {
        let fp = self.freepool().await?;
        self.join(&fp, host).await
    }

    /// Withdrawal: the host leaves the freepool.
    pub async fn leave_freepool(&self, host: &str) -> Result<bool, NovaError> {
        let fp = self.freepool().await?;
        self.leave(&fp, host).await
    }

    /// Deletes every server on `hosts` (of any project) and waits, bounded, until they are gone:
    /// Nova refuses to move a host between availability zones while it runs servers.
    pub async fn empty(&self, hosts: &[&str], changes: &mut Vec<Change>) -> Result<(), NovaError> {
        let mut found = false;
        for host in hosts {
            for s in self.nova.servers_on(host).await? {
                // A server deleted by an earlier attempt may still be going away: wait for it too.
                found = true;
                if self.nova.delete_server(&s.id).await? {
                    changes.push(Change {
                        host: host.to_string(),
                        action: "delete_server",
                        detail: format!(
                            "deleted server {} ({}) of project {}",
                            s.id, s.name, s.tenant_id
                        ),
                    });
                }
            }
        }
        if found {
            self.wait_gone(hosts).await?;
        }
        Ok(())
    }

    async fn wait_gone(&self, hosts: &[&str]) -> Result<(), NovaError> {
        let started = Instant::now();
        let mut pause = self.cfg.deletion_poll;
        loop {
            let mut left: Vec<Server> = Vec::new();
            for host in hosts {
                left.extend(self.nova.servers_on(host).await?);
            }
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= self.cfg.deletion_timeout {
                return Err(NovaError::StillWaiting(format!(
                    "servers {} are still being deleted after {} s",
                    left.iter()
                        .map(|s| format!("{} ({})", s.id, s.status))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.cfg.deletion_timeout.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Start (or a host joining a running reservation): the host is emptied of servers left
    /// from before (upstream's preemptibles), joins the reservation's aggregate, then leaves
    /// the freepool.
    pub async fn move_in(
        &self,
        agg: &Aggregate,
        host: &str,
        changes: &mut Vec<Change>,
    ) -> Result<(), NovaError> {
        if agg.hosts.iter().any(|h| h == host) {
            // Joined already (an earlier attempt); it may still be in the freepool.
            if self.leave_freepool(host).await? {
                changes.push(self.change(host, "leave_freepool", &self.cfg.freepool));
            }
            return Ok(());
        }
        self.empty(&[host], changes).await?;
        if self.join(agg, host).await? {
            changes.push(self.change(host, "join_aggregate", &agg.name));
        }
        if self.leave_freepool(host).await? {
            changes.push(self.change(host, "leave_freepool", &self.cfg.freepool));
        }
        Ok(())
    }

    /// End (or a host leaving a running reservation): the host, already emptied, joins the
    /// freepool (unless it is not Blazar's: `into_freepool` false), then leaves the
    /// reservation's aggregate.
    pub async fn move_out(
        &self,
        agg: Option<&Aggregate>,
        host: &str,
        into_freepool: bool,
        changes: &mut Vec<Change>,
    ) -> Result<(), NovaError> {
        if into_freepool && self.enter_freepool(host).await? {
            changes.push(self.change(host, "join_freepool", &self.cfg.freepool));
        }
        if let Some(agg) = agg
            && self.leave(agg, host).await?
        {
            changes.push(self.change(host, "leave_aggregate", &agg.name));
        }
        Ok(())
    }

    /// Deletes an aggregate whose hosts have left; gone already is done.
    pub async fn delete(&self, agg: &Aggregate) -> Result<(), NovaError> {
        if self.nova.delete_aggregate(agg.id).await? {
            tracing::info!(aggregate = %agg.name, id = agg.id, "Nova aggregate deleted");
        }
        self.forget(&agg.name);
        Ok(())
    }

    /// Snapshots every server on `host` that has not been snapshotted since `since` (an
    /// earlier attempt of the same event).
    pub async fn snapshot(
        &self,
        host: &str,
        reservation_id: &str,
        since: NaiveDateTime,
        changes: &mut Vec<Change>,
    ) -> Result<(), NovaError> {
        for s in self.nova.servers_on(host).await? {
            let done = self
                .nova
                .instance_actions(&s.id)
                .await?
                .iter()
                .any(|a| a.action == "createImage" && started_since(&a.start_time, since));
            if done {
                continue;
            }
            let name = format!("{}{}", self.cfg.image_prefix, s.name);
            let meta = BTreeMap::from([("blazar_reservation".to_string(), reservation_id.into())]);
            let image = self.nova.create_image(&s.id, &name, &meta).await?;
            changes.push(Change {
                host: host.to_string(),
                action: "snapshot",
                detail: format!(
                    "image {name} ({}) of server {} ({})",
                    image.as_deref().unwrap_or("id not shown"),
                    s.id,
                    s.name
                ),
            });
        }
        Ok(())
    }

    fn change(&self, host: &str, action: &'static str, aggregate: &str) -> Change {
        let detail = match action {
            "join_aggregate" | "join_freepool" => format!("added to aggregate {aggregate}"),
            _ => format!("removed from aggregate {aggregate}"),
        };
        Change {
            host: host.to_string(),
            action,
            detail,
        }
    }
}

/// Whether Nova's `start_time` (`2030-01-01T12:00:00.000000`) is at or after `since`.
fn started_since(start_time: &str, since: NaiveDateTime) -> bool {
    let t = start_time.trim_end_matches('Z');
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S"))
        .is_ok_and(|t| t >= since - chrono::TimeDelta::seconds(1))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn nova_action_times_compare_with_a_second_of_slack() {
        let since = NaiveDate::from_ymd_opt(2030, 1, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        assert!(started_since("2030-01-01T12:00:05.000000", since));
        assert!(started_since("2030-01-01T11:59:59.500000", since));
        assert!(!started_since("2030-01-01T11:59:00.000000", since));
        assert!(!started_since("garbage", since));
    }
}
