//! Where a host's hardware facts come from.
//!
//! Without Nova, [`StandaloneFacts`] takes them from the request body, with documented defaults.
//! With Nova, `nova::facts::NovaFacts` asks Nova's hypervisors and refuses facts in the body.

use async_trait::async_trait;

use crate::domain::{DomainError, host::FactsInput};

/// A host's hardware facts, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The host's name: as given (standalone), or Nova's hypervisor hostname.
    pub hypervisor_hostname: String,
    pub hypervisor_type: String,
    pub hypervisor_version: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub local_gb: i64,
    pub cpu_info: String,
    pub service_name: String,
    pub availability_zone: String,
}

#[async_trait]
pub trait HostFactSource: Send + Sync {
    /// Facts for a host being enrolled under `hostname`, given what the body said.
    async fn resolve(&self, hostname: &str, given: &FactsInput) -> Result<HostFacts, DomainError>;

    /// Facts after an update body that mentions some of them.
    async fn update(
        &self,
        current: &HostFacts,
        given: &FactsInput,
    ) -> Result<HostFacts, DomainError>;
}

/// Facts from the request body; anything not given takes the default below.
#[derive(Debug, Default, Clone, Copy)]
pub struct StandaloneFacts;

impl StandaloneFacts {
    /// Defaults for facts the body leaves out: zero counts, no hypervisor type or version, the
    /// host's own name as its compute service, no availability zone.
    fn defaults(hostname: &str) -> HostFacts {
        HostFacts {
            hypervisor_hostname: hostname.to_string(),
            hypervisor_type: String::new(),
            hypervisor_version: 0,
            vcpus: 0,
            memory_mb: 0,
            local_gb: 0,
            cpu_info: String::new(),
            service_name: hostname.to_string(),
            availability_zone: String::new(),
        }
    }

    fn merge(mut facts: HostFacts, given: &FactsInput) -> HostFacts {
        let g = given.clone();
        macro_rules! take {
            ($($f:ident),*) => { $(if let Some(v) = g.$f { facts.$f = v; })* };
        }
        take!(
            hypervisor_type,
            hypervisor_version,
            vcpus,
            memory_mb,
            local_gb,
            cpu_info,
            service_name,
            availability_zone
        );
        facts
    }
}

#[async_trait]
impl HostFactSource for StandaloneFacts {
    async fn resolve(&self, hostname: &str, given: &FactsInput) -> Result<HostFacts, DomainError> {
        Ok(Self::merge(Self::defaults(hostname), given))
    }

    async fn update(
        &self,
        current: &HostFacts,
        given: &FactsInput,
    ) -> Result<HostFacts, DomainError> {
        Ok(Self::merge(current.clone(), given))
    }
}
