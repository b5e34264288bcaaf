//! Host facts from Nova: enrolling `{"name": "compute-a"}` looks the compute node up in Nova and
//! stores what its hypervisor says, as upstream's `NovaInventory.get_host_details` does. Facts in
//! the body are refused: Nova owns them.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{client::Hypervisor, driver::driver_error, pool::Pools};
use crate::{
    domain::{
        DomainError,
        host::FactsInput,
        input::{echo, py_str},
    },
    service::{
        driver_failure,
        facts::{HostFactSource, HostFacts},
    },
};

pub struct NovaFacts {
    pools: Arc<Pools>,
    /// Upstream `[nova] az_aware`: record the host's availability zone.
    az_aware: bool,
}

impl NovaFacts {
    pub fn new(pools: Arc<Pools>, az_aware: bool) -> Self {
        Self { pools, az_aware }
    }

    fn refuse_given(given: &FactsInput) -> Result<(), DomainError> {
        let keys = given.given();
        if keys.is_empty() {
            return Ok(());
        }
        Err(DomainError::InvalidInput(format!(
            "{} come{} from Nova in this deployment and cannot be given; enrol a host by its \
             name, with extra capabilities only",
            keys.iter()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", "),
            if keys.len() == 1 { "s" } else { "" }
        )))
    }

    /// The one compute node named `name` (its hypervisor hostname or its service's host).
    async fn hypervisor(&self, name: &str) -> Result<Hypervisor, DomainError> {
        let shown = echo(name, 64);
        let found = self
            .pools
            .nova
            .hypervisors_matching(name)
            .await
            .map_err(|e| driver_failure(driver_error(e)))?;
        let (exact, similar): (Vec<Hypervisor>, Vec<Hypervisor>) = found
            .into_iter()
            .partition(|h| h.hypervisor_hostname == name || h.service.host == name);
        match exact.len() {
            1 => Ok(exact.into_iter().next().expect("one")),
            0 if similar.is_empty() => Err(DomainError::HostNotInNova(format!(
                "Host '{shown}' not found! Nova has no compute node of that name."
            ))),
            0 => Err(DomainError::HostNotInNova(format!(
                "Host '{shown}' not found! Nova has none of that exact name; similar names: {}",
                similar
                    .iter()
                    .map(|h| h.hypervisor_hostname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            n => Err(DomainError::MultipleHostsFound(format!(
                "Multiple Hosts found for pattern '{shown}': {n} compute nodes in Nova ({})",
                exact
                    .iter()
                    .map(|h| format!("{} on {}", h.hypervisor_hostname, h.service.host))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The availability zone of compute host `host`, as its service reports it.
    async fn zone(&self, host: &str) -> Result<String, DomainError> {
        let services = self
            .pools
            .nova
            .compute_services()
            .await
            .map_err(|e| driver_failure(driver_error(e)))?;
        Ok(services
            .into_iter()
            .find(|s| s.host == host)
            .map(|s| s.zone)
            .unwrap_or_default())
    }
}

#[async_trait]
impl HostFactSource for NovaFacts {
    async fn resolve(&self, hostname: &str, given: &FactsInput) -> Result<HostFacts, DomainError> {
        Self::refuse_given(given)?;
        let hv = self.hypervisor(hostname).await?;
        if !hv.servers.is_empty() {
            // Upstream prints Nova's list of servers as Python does.
            return Err(DomainError::HostHavingServers(format!(
                "Servers [{}] found for host {}: a host must have none to be enrolled",
                servers_repr(
                    hv.servers
                        .iter()
                        .map(|s| (s.name.as_str(), s.uuid.as_str()))
                ),
                echo(hostname, 64)
            )));
        }
        let availability_zone = if self.az_aware {
            self.zone(&hv.service.host).await?
        } else {
            String::new()
        };
        let cpu_info = match hv.cpu_info {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Ok(HostFacts {
            hypervisor_hostname: hv.hypervisor_hostname,
            hypervisor_type: hv.hypervisor_type,
            hypervisor_version: hv.hypervisor_version,
            vcpus: hv.vcpus,
            memory_mb: hv.memory_mb,
            local_gb: hv.local_gb,
            cpu_info,
            service_name: hv.service.host,
            availability_zone,
        })
    }

    async fn update(
        &self,
        current: &HostFacts,
        given: &FactsInput,
    ) -> Result<HostFacts, DomainError> {
        Self::refuse_given(given)?;
        Ok(current.clone())
    }
}

/// Nova's servers of a hypervisor as upstream's message prints them: Python's repr() of the
/// list of `{"name", "uuid"}` objects Nova answers.
pub(crate) fn servers_repr<'a>(servers: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let items: Vec<String> = servers
        .map(|(name, uuid)| {
            format!(
                "{{'name': {}, 'uuid': {}}}",
                py_str(name, 64),
                py_str(uuid, 64)
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}
