//! Reconciliation rules: what Nova's aggregates should hold, given what the database says, and
//! the repairs that make them so. Pure: `nova::sync` gathers both sides and carries the repairs
//! out.
//!
//! Hosts of leases in a transitional status (an event or a deletion running, or waiting to be
//! retried) are left alone: their event will finish the move, and a half-done move is not drift.

use std::collections::{BTreeMap, BTreeSet};

/// What the database says, for the hosts and reservations whose state is settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Enrolled hosts (compute service names) that no busy lease holds.
    pub hosts: BTreeSet<String>,
    /// Enrolled hosts that a busy lease holds: left alone.
    pub unsettled: BTreeSet<String>,
    /// Reservations running now (started, not ended), by id.
    pub running: BTreeMap<String, Running>,
    /// Reservations that exist and have not started (id -> project): their aggregate may exist
    /// and stays, empty.
    pub pending: BTreeMap<String, String>,
    /// Reservations of busy leases: their aggregates are left alone.
    pub busy: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Running {
    pub project: String,
    pub hosts: BTreeSet<String>,
}

/// One of Nova's aggregates, as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: i64,
    pub name: String,
    pub zone: Option<String>,
    pub hosts: Vec<String>,
    /// Its `blazar:owner` metadata.
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PoolNames {
    pub freepool: String,
    pub az_prefix: String,
}

/// A change that brings Nova in line with the database, in the order they must run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Repair {
    /// The freepool is missing.
    CreateFreepool,
    /// A running reservation's aggregate is missing.
    CreatePool {
        reservation: String,
        project: String,
    },
    /// A reservation aggregate is owned by the wrong project (or nobody).
    SetOwner {
        pool: i64,
        reservation: String,
        project: String,
    },
    /// A host in an aggregate it should not be in: emptied of servers, into the freepool (if
    /// enrolled), out of the aggregate.
    LeavePool {
        pool: i64,
        host: String,
        enrolled: bool,
    },
    /// A host a running reservation holds, missing from its aggregate.
    JoinPool { reservation: String, host: String },
    /// An enrolled, unreserved host missing from the freepool.
    JoinFreepool { host: String },
    /// A reserved host still in the freepool.
    LeaveFreepool { host: String },
    /// A reservation aggregate whose reservation is gone or over, once its hosts have left.
    DeletePool { pool: i64, name: String },
}

/// The repairs that make `pools` (all of Nova's aggregates) what `expected` says, sorted in the
/// order to run them: a host leaves a stale aggregate before it joins another, since Nova
/// refuses a host in two availability zones.
pub fn plan(expected: &Expected, pools: &[Pool], names: &PoolNames) -> Vec<Repair> {
    let mut repairs = Vec::new();
    let freepool = pools.iter().find(|p| p.name == names.freepool);
    if freepool.is_none() {
        repairs.push(Repair::CreateFreepool);
    }
    let in_freepool = |h: &str| freepool.is_some_and(|f| f.hosts.iter().any(|x| x == h));
    let reservation_pools: Vec<&Pool> = pools
        .iter()
        .filter(|p| {
            p.name != names.freepool
                && p.zone
                    .as_deref()
                    .is_some_and(|z| z.starts_with(&names.az_prefix))
        })
        .collect();

    // Where each settled host should be.
    let holder: BTreeMap<&str, &str> = expected
        .running
        .iter()
        .flat_map(|(r, run)| run.hosts.iter().map(move |h| (h.as_str(), r.as_str())))
        .collect();
    for (reservation, run) in &expected.running {
        if !reservation_pools.iter().any(|p| &p.name == reservation) {
            repairs.push(Repair::CreatePool {
                reservation: reservation.clone(),
                project: run.project.clone(),
            });
        }
    }
    for pool in &reservation_pools {
        if expected.busy.contains(&pool.name) {
            continue;
        }
        let owner = expected
            .running
            .get(&pool.name)
            .map(|r| &r.project)
            .or_else(|| expected.pending.get(&pool.name));
        if let Some(project) = owner
            && pool.owner.as_ref() != Some(project)
        {
            repairs.push(Repair::SetOwner {
                pool: pool.id,
                reservation: pool.name.clone(),
                project: project.clone(),
            });
        }
        let mut all_leave = true;
        for h in &pool.hosts {
            if expected.unsettled.contains(h) {
                all_leave = false;
                continue;
            }
            let belongs = holder.get(h.as_str()) == Some(&pool.name.as_str());
            if belongs {
                all_leave = false;
            } else {
                repairs.push(Repair::LeavePool {
                    pool: pool.id,
                    host: h.clone(),
                    enrolled: expected.hosts.contains(h),
                });
            }
        }
        let live =
            expected.running.contains_key(&pool.name) || expected.pending.contains_key(&pool.name);
        if !live && all_leave {
            repairs.push(Repair::DeletePool {
                pool: pool.id,
                name: pool.name.clone(),
            });
        }
    }
    for h in &expected.hosts {
        match holder.get(h.as_str()) {
            Some(reservation) => {
                let member = reservation_pools
                    .iter()
                    .any(|p| &p.name == reservation && p.hosts.contains(h));
                if !member {
                    // Joining moves it out of the freepool too.
                    repairs.push(Repair::JoinPool {
                        reservation: reservation.to_string(),
                        host: h.clone(),
                    });
                } else if in_freepool(h) {
                    repairs.push(Repair::LeaveFreepool { host: h.clone() });
                }
            }
            None => {
                let leaving = repairs
                    .iter()
                    .any(|r| matches!(r, Repair::LeavePool { host, .. } if host == h));
                // Leaving a stale aggregate puts an enrolled host into the freepool already.
                if !in_freepool(h) && !leaving {
                    repairs.push(Repair::JoinFreepool { host: h.clone() });
                }
            }
        }
    }
    repairs.sort();
    repairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> PoolNames {
        PoolNames {
            freepool: "freepool".into(),
            az_prefix: "blazar_".into(),
        }
    }

    fn pool(id: i64, name: &str, zone: Option<&str>, hosts: &[&str], owner: Option<&str>) -> Pool {
        Pool {
            id,
            name: name.into(),
            zone: zone.map(str::to_string),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            owner: owner.map(str::to_string),
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn running(project: &str, hosts: &[&str]) -> Running {
        Running {
            project: project.into(),
            hosts: set(hosts),
        }
    }

    #[test]
    fn nothing_to_do_when_nova_matches() {
        let expected = Expected {
            hosts: set(&["a", "b"]),
            running: BTreeMap::from([("r1".into(), running("p", &["a"]))]),
            ..Default::default()
        };
        let pools = [
            pool(1, "freepool", None, &["b"], None),
            pool(2, "r1", Some("blazar_r1"), &["a"], Some("p")),
        ];
        assert_eq!(plan(&expected, &pools, &names()), vec![]);
    }

    #[test]
    fn a_host_removed_from_the_freepool_behind_our_back_goes_back() {
        let expected = Expected {
            hosts: set(&["a", "b"]),
            ..Default::default()
        };
        let pools = [pool(1, "freepool", None, &["a"], None)];
        assert_eq!(
            plan(&expected, &pools, &names()),
            vec![Repair::JoinFreepool { host: "b".into() }]
        );
        assert_eq!(
            plan(&expected, &[], &names()),
            vec![
                Repair::CreateFreepool,
                Repair::JoinFreepool { host: "a".into() },
                Repair::JoinFreepool { host: "b".into() },
            ]
        );
    }

    #[test]
    fn hosts_left_behind_by_a_failed_end_return_and_the_aggregate_goes() {
        let expected = Expected {
            hosts: set(&["a"]),
            ..Default::default()
        };
        let pools = [
            pool(1, "freepool", None, &[], None),
            pool(
                7,
                "r-old",
                Some("blazar_r-old"),
                &["a", "stranger"],
                Some("p"),
            ),
        ];
        assert_eq!(
            plan(&expected, &pools, &names()),
            vec![
                Repair::LeavePool {
                    pool: 7,
                    host: "a".into(),
                    enrolled: true
                },
                Repair::LeavePool {
                    pool: 7,
                    host: "stranger".into(),
                    enrolled: false
                },
                Repair::DeletePool {
                    pool: 7,
                    name: "r-old".into()
                },
            ]
        );
    }

    #[test]
    fn a_running_reservation_gets_its_aggregate_owner_and_hosts() {
        let expected = Expected {
            hosts: set(&["a", "b"]),
            running: BTreeMap::from([("r1".into(), running("p", &["a", "b"]))]),
            ..Default::default()
        };
        let pools = [
            pool(1, "freepool", None, &["a", "b"], None),
            pool(2, "r1", Some("blazar_r1"), &["b"], None),
        ];
        assert_eq!(
            plan(&expected, &pools, &names()),
            vec![
                Repair::SetOwner {
                    pool: 2,
                    reservation: "r1".into(),
                    project: "p".into()
                },
                Repair::JoinPool {
                    reservation: "r1".into(),
                    host: "a".into()
                },
                Repair::LeaveFreepool { host: "b".into() },
            ]
        );
        let missing = plan(&expected, &[pool(1, "freepool", None, &[], None)], &names());
        assert_eq!(
            missing,
            vec![
                Repair::CreatePool {
                    reservation: "r1".into(),
                    project: "p".into()
                },
                Repair::JoinPool {
                    reservation: "r1".into(),
                    host: "a".into()
                },
                Repair::JoinPool {
                    reservation: "r1".into(),
                    host: "b".into()
                },
            ]
        );
    }

    #[test]
    fn a_host_leaves_a_stale_aggregate_before_it_joins_its_new_one() {
        let expected = Expected {
            hosts: set(&["a"]),
            running: BTreeMap::from([("r2".into(), running("q", &["a"]))]),
            ..Default::default()
        };
        let pools = [
            pool(1, "freepool", None, &[], None),
            pool(2, "r1", Some("blazar_r1"), &["a"], Some("p")),
            pool(3, "r2", Some("blazar_r2"), &[], Some("q")),
        ];
        assert_eq!(
            plan(&expected, &pools, &names()),
            vec![
                Repair::LeavePool {
                    pool: 2,
                    host: "a".into(),
                    enrolled: true
                },
                Repair::JoinPool {
                    reservation: "r2".into(),
                    host: "a".into()
                },
                Repair::DeletePool {
                    pool: 2,
                    name: "r1".into()
                },
            ]
        );
    }

    #[test]
    fn busy_leases_pending_reservations_and_foreign_aggregates_are_left_alone() {
        let expected = Expected {
            hosts: set(&["b"]),
            unsettled: set(&["a"]),
            pending: BTreeMap::from([("r3".into(), "p".into())]),
            busy: set(&["r1"]),
            ..Default::default()
        };
        let pools = [
            pool(1, "freepool", None, &["b"], None),
            // A start half done: the host is in its aggregate and still in the freepool.
            pool(2, "r1", Some("blazar_r1"), &["a"], Some("p")),
            pool(3, "r3", Some("blazar_r3"), &[], Some("p")),
            // Not Blazar's (no blazar_ zone): an operator's aggregate.
            pool(4, "gpu-racks", Some("az1"), &["b"], None),
        ];
        assert_eq!(plan(&expected, &pools, &names()), vec![]);
    }
}
