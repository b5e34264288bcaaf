//! The Nova resource driver: what upstream's host plugin does in Nova at each step of a lease,
//! through [`Pools`]. Nova's failures become [`DriverError`]s that say whether retrying may help.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDateTime;

use super::{
    client::NovaError,
    pool::{Change, Pools},
};
use crate::jobs::driver::{ActionLog, DriverError, HostRef, ReservationHosts, ResourceDriver};

pub struct NovaDriver {
    pools: Arc<Pools>,
}

impl NovaDriver {
    pub fn new(pools: Arc<Pools>) -> Self {
        Self { pools }
    }

    fn owner(r: &ReservationHosts<'_>) -> Result<String, DriverError> {
        r.lease
            .project_id
            .clone()
            .ok_or_else(|| DriverError::Failed(format!("lease {} has no project", r.lease.id)))
    }
}

/// Nova's error as a driver error: transient ones are worth a retry.
pub fn driver_error(e: NovaError) -> DriverError {
    if e.transient() {
        DriverError::Unavailable(e.to_string())
    } else {
        DriverError::Failed(e.to_string())
    }
}

/// Moves `changes` into the action log, naming each host by our id.
fn log_changes(r: &ReservationHosts<'_>, changes: Vec<Change>, log: &mut ActionLog) {
    for c in changes {
        match r.hosts.iter().find(|h| h.service_name == c.host) {
            Some(h) => log.push(r, h, c.action, c.detail),
            // A host in the aggregate that we did not enrol: logged, not audited by id.
            None => {
                tracing::info!(host = %c.host, action = c.action, detail = %c.detail, "Nova change on a host not enrolled here")
            }
        }
    }
}

impl NovaDriver {
    /// Runs `work` while no reconciliation runs, and logs the changes it made in Nova, also
    /// when it then failed.
    async fn logged(
        &self,
        r: &ReservationHosts<'_>,
        log: &mut ActionLog,
        work: impl AsyncFnOnce(&mut Vec<Change>) -> Result<(), NovaError>,
    ) -> Result<(), DriverError> {
        let _turn = self.pools.shared().await;
        let mut changes = Vec::new();
        let result = work(&mut changes).await;
        log_changes(r, changes, log);
        result.map_err(driver_error)
    }

    async fn do_assign(
        &self,
        r: &ReservationHosts<'_>,
        owner: &str,
        changes: &mut Vec<Change>,
    ) -> Result<(), NovaError> {
        let agg = self
            .pools
            .reservation_pool(&r.reservation.id, owner)
            .await?;
        for h in r.hosts {
            self.pools.move_in(&agg, &h.service_name, changes).await?;
        }
        Ok(())
    }

    async fn do_snapshot(
        &self,
        r: &ReservationHosts<'_>,
        since: NaiveDateTime,
        changes: &mut Vec<Change>,
    ) -> Result<(), NovaError> {
        for h in r.hosts {
            self.pools
                .snapshot(&h.service_name, &r.reservation.id, since, changes)
                .await?;
        }
        Ok(())
    }

    /// Empties `r`'s hosts and returns them to the freepool; with `whole`, also every other
    /// host its aggregate holds, and the aggregate is deleted.
    async fn do_release(
        &self,
        r: &ReservationHosts<'_>,
        whole: bool,
        changes: &mut Vec<Change>,
    ) -> Result<(), NovaError> {
        let agg = self.pools.find(&r.reservation.id).await?;
        // The reservation's hosts, also one that never joined (a start that failed half-way).
        let mut hosts: Vec<&str> = r.hosts.iter().map(|h| h.service_name.as_str()).collect();
        if whole && let Some(a) = &agg {
            for h in &a.hosts {
                if !hosts.contains(&h.as_str()) {
                    hosts.push(h);
                }
            }
        }
        self.pools.empty(&hosts, changes).await?;
        for h in &hosts {
            self.pools.move_out(agg.as_ref(), h, true, changes).await?;
        }
        if whole && let Some(a) = &agg {
            self.pools.delete(a).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ResourceDriver for NovaDriver {
    async fn enrol(&self, host: &HostRef) -> Result<bool, DriverError> {
        let _turn = self.pools.shared().await;
        let changed = self
            .pools
            .enter_freepool(&host.service_name)
            .await
            .map_err(driver_error)?;
        if changed {
            tracing::info!(host = %host.service_name, freepool = %self.pools.cfg.freepool, "host joined the freepool");
        }
        Ok(changed)
    }

    async fn withdraw(&self, host: &HostRef) -> Result<bool, DriverError> {
        let _turn = self.pools.shared().await;
        let servers = self
            .pools
            .nova
            .servers_on(&host.service_name)
            .await
            .map_err(driver_error)?;
        if !servers.is_empty() {
            // Upstream's HostHavingServers text, then ours.
            return Err(DriverError::Conflict(format!(
                "Servers [{}] found for host {}: a host with servers cannot be withdrawn",
                super::facts::servers_repr(
                    servers.iter().map(|s| (s.name.as_str(), s.id.as_str()))
                ),
                host.name
            )));
        }
        let changed = self
            .pools
            .leave_freepool(&host.service_name)
            .await
            .map_err(driver_error)?;
        if changed {
            tracing::info!(host = %host.service_name, freepool = %self.pools.cfg.freepool, "host left the freepool");
        }
        Ok(changed)
    }

    async fn prepare(&self, r: ReservationHosts<'_>) -> Result<(), DriverError> {
        let owner = Self::owner(&r)?;
        let _turn = self.pools.shared().await;
        self.pools
            .reservation_pool(&r.reservation.id, &owner)
            .await
            .map(|_| ())
            .map_err(driver_error)
    }

    async fn discard(&self, r: ReservationHosts<'_>) -> Result<(), DriverError> {
        let mut log = ActionLog::default();
        self.release(r, &mut log).await
    }

    async fn assign(
        &self,
        r: ReservationHosts<'_>,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        let owner = Self::owner(&r)?;
        self.logged(&r, log, async |c| self.do_assign(&r, &owner, c).await)
            .await
    }

    async fn before_end(
        &self,
        r: ReservationHosts<'_>,
        action: &str,
        since: NaiveDateTime,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        match action {
            "" => return Ok(()),
            "snapshot" => {}
            other => {
                return Err(DriverError::Failed(format!(
                    "unknown before-end action {other:?}"
                )));
            }
        }
        self.logged(&r, log, async |c| self.do_snapshot(&r, since, c).await)
            .await
    }

    async fn release(
        &self,
        r: ReservationHosts<'_>,
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        self.logged(&r, log, async |c| self.do_release(&r, true, c).await)
            .await
    }

    async fn remove(
        &self,
        r: ReservationHosts<'_>,
        hosts: &[HostRef],
        log: &mut ActionLog,
    ) -> Result<(), DriverError> {
        let r = ReservationHosts { hosts, ..r };
        self.logged(&r, log, async |c| self.do_release(&r, false, c).await)
            .await
    }
}
