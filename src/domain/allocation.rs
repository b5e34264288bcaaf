//! Choosing hosts for the reservations of a lease: between `min` and `max` matching free hosts each,
//! never one host for two reservations.
//!
//! Hosts a reservation already holds are kept first (an update should not shuffle a lease's hosts).
//! Then every reservation gets its `min`, the most constrained reservation first, and only then
//! are reservations filled up to `max`, in request order. Among candidates, a host fewer sibling
//! reservations could use comes first (so a generic reservation does not take the only hosts a
//! specific one can use), then the least-used host, then the lowest id, so the choice is
//! deterministic. Upstream takes hosts in database order, reservation by reservation.

use super::ids::{HostMap, HostSet};

/// Why a reservation could not get `min` hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    /// Hosts that match the reservation's filters.
    pub matching: usize,
    /// Of those, hosts free for the whole window (and not needed by a sibling reservation).
    pub free: usize,
}

/// What one reservation of a lease needs.
#[derive(Debug, Clone)]
pub struct Need<'a> {
    /// Reservable hosts that match the reservation's filters, sorted by id.
    pub matching: &'a [i64],
    pub min: usize,
    pub max: usize,
    /// Hosts the reservation holds now (empty for a new one).
    pub held: &'a [i64],
    /// Re-plan this reservation; otherwise it keeps `held` exactly as it is.
    pub replan: bool,
    /// The reservation is running: none of `held` may be lost to its filters or to another
    /// lease (only a lower `max` gives hosts back, the most recently added first).
    pub keep_held: bool,
}

impl Need<'_> {
    /// A reservation of a lease being created: it holds nothing and is planned from scratch.
    /// `matching` starts empty: the caller fills it with what the reservation's filters match.
    pub fn new(min: usize, max: usize) -> Self {
        Self {
            matching: &[],
            min,
            max,
            held: &[],
            replan: true,
            keep_held: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// Reservation `index` cannot get `min` hosts.
    Shortage { index: usize, shortage: Shortage },
    /// Reservation `index` is running and would lose `host` (`why` says how).
    HeldHostLost {
        index: usize,
        host: i64,
        why: &'static str,
    },
}

/// Chooses hosts for every reservation of a lease at once. `busy(host)` says whether *another*
/// lease books the host in the window; `usage(host)` counts its current and future bookings.
pub fn plan(
    busy: impl Fn(i64) -> bool,
    usage: impl Fn(i64) -> u64,
    needs: &[Need<'_>],
) -> Result<Vec<Vec<i64>>, PlanError> {
    let mut taken: HostSet = needs
        .iter()
        .filter(|n| !n.replan)
        .flat_map(|n| n.held.iter().copied())
        .collect();
    let all_held: HostSet = needs.iter().flat_map(|n| n.held.iter().copied()).collect();
    let mut chosen: Vec<Vec<i64>> = Vec::with_capacity(needs.len());
    // Per re-planned reservation: matching hosts, and the free ones it may newly take.
    let mut matching: Vec<usize> = vec![0; needs.len()];
    // Each with its usage, read while its bookings are in the cache from `busy`: at thousands
    // of matching hosts, a second look-up later missed the cache again.
    let mut candidates: Vec<Vec<(i64, u64)>> = vec![Vec::new(); needs.len()];
    for (index, need) in needs.iter().enumerate() {
        if !need.replan {
            chosen.push(need.held.to_vec());
            continue;
        }
        let m = need.matching;
        let matches = |h: &i64| m.binary_search(h).is_ok();
        let usable = |h: &i64| matches(h) && !taken.contains(h) && !busy(*h);
        if need.keep_held
            && let Some(&host) = need.held.iter().find(|h| !usable(h))
        {
            let why = if !matches(&host) {
                "no longer matches the reservation's filters"
            } else {
                "is booked by another lease in the new window"
            };
            return Err(PlanError::HeldHostLost { index, host, why });
        }
        let kept: Vec<i64> = need
            .held
            .iter()
            .copied()
            .filter(|h| usable(h))
            .take(need.max)
            .collect();
        let free: Vec<(i64, u64)> = m
            .iter()
            .copied()
            .filter(|h| !all_held.contains(h) && usable(h))
            .map(|h| (h, usage(h)))
            .collect();
        matching[index] = m.len();
        candidates[index] = free;
        chosen.push(kept);
    }
    taken.extend(chosen.iter().flatten().copied());

    // How many re-planned reservations that still want hosts could use each host. With one
    // reservation it would be the same for every candidate, so it is not worth counting.
    let replanned = needs.iter().filter(|n| n.replan).count();
    let wanting = |chosen: &[Vec<i64>], upto: fn(&Need<'_>) -> usize| -> HostMap<u32> {
        let mut d: HostMap<u32> = HostMap::default();
        if replanned < 2 {
            return d;
        }
        for (i, need) in needs.iter().enumerate() {
            if need.replan && chosen[i].len() < upto(need) {
                for (h, _) in &candidates[i] {
                    *d.entry(*h).or_default() += 1;
                }
            }
        }
        d
    };
    let pick = |i: usize,
                count: usize,
                chosen: &mut Vec<Vec<i64>>,
                taken: &mut HostSet,
                demand: &HostMap<u32>| {
        // Rank once per host, then keep only the best `count` (no full sort of thousands).
        let mut pool: Vec<(u32, u64, i64)> = candidates[i]
            .iter()
            .copied()
            .filter(|(h, _)| !taken.contains(h))
            .map(|(h, used)| (demand.get(&h).copied().unwrap_or(0), used, h))
            .collect();
        if count < pool.len() {
            pool.select_nth_unstable(count);
            pool.truncate(count);
        }
        pool.sort_unstable();
        let got: Vec<i64> = pool.into_iter().map(|(_, _, h)| h).collect();
        taken.extend(got.iter().copied());
        chosen[i].extend(got);
    };

    // Minimums first, the reservation with the fewest candidates first.
    let mut order: Vec<usize> = (0..needs.len()).filter(|i| needs[*i].replan).collect();
    order.sort_by_key(|i| (candidates[*i].len() + chosen[*i].len(), *i));
    for &i in &order {
        let missing = needs[i].min.saturating_sub(chosen[i].len());
        if missing == 0 {
            continue;
        }
        let demand = wanting(&chosen, |n| n.min);
        pick(i, missing, &mut chosen, &mut taken, &demand);
        if chosen[i].len() < needs[i].min {
            return Err(PlanError::Shortage {
                index: i,
                shortage: Shortage {
                    matching: matching[i],
                    free: chosen[i].len(),
                },
            });
        }
    }
    // Then up to the maximums, in request order.
    for i in 0..needs.len() {
        if !needs[i].replan || chosen[i].len() >= needs[i].max {
            continue;
        }
        let demand = wanting(&chosen, |n| n.max);
        let want = needs[i].max - chosen[i].len();
        pick(i, want, &mut chosen, &mut taken, &demand);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Hosts 1-5; host 4 is not reservable; rack a: 1, 2; rack b: 3, 4, 5.
    const ANY: &[i64] = &[1, 2, 3, 5];
    const RACK_A: &[i64] = &[1, 2];
    const RACK_B: &[i64] = &[3, 5];

    fn need<'a>(matching: &'a [i64], min: usize, max: usize, held: &'a [i64]) -> Need<'a> {
        Need {
            matching,
            min,
            max,
            held,
            replan: true,
            keep_held: false,
        }
    }

    #[test]
    fn sibling_reservations_never_share_hosts() {
        let got = plan(
            |_| false,
            |_| 0,
            &[need(ANY, 2, 2, &[]), need(ANY, 2, 2, &[])],
        )
        .unwrap();
        assert_eq!(got, vec![vec![1, 2], vec![3, 5]]);
    }

    #[test]
    fn busy_hosts_and_shortage_counts() {
        let busy = HashSet::from([3]);
        let got = plan(|h| busy.contains(&h), |_| 0, &[need(RACK_B, 1, 5, &[])]).unwrap();
        assert_eq!(got, vec![vec![5]]);
        let err = plan(|h| busy.contains(&h), |_| 0, &[need(RACK_B, 2, 2, &[])]).unwrap_err();
        assert_eq!(
            err,
            PlanError::Shortage {
                index: 0,
                shortage: Shortage {
                    matching: 2,
                    free: 1
                }
            }
        );
    }

    #[test]
    fn a_running_reservation_keeps_its_hosts_or_fails() {
        let mut n = need(ANY, 1, 2, &[3]);
        n.keep_held = true;
        assert_eq!(
            plan(|_| false, |_| 0, &[n.clone()]).unwrap(),
            vec![vec![3, 1]]
        );
        let err = plan(|h| h == 3, |_| 0, &[n.clone()]).unwrap_err();
        assert!(matches!(err, PlanError::HeldHostLost { host: 3, .. }));
        let mut gone = need(RACK_A, 1, 2, &[3]);
        gone.keep_held = true;
        let err = plan(|_| false, |_| 0, &[gone]).unwrap_err();
        assert!(
            matches!(err, PlanError::HeldHostLost { host: 3, why, .. } if why.contains("filters"))
        );
    }

    #[test]
    fn a_running_reservation_shrinks_by_giving_back_its_newest_hosts() {
        let mut n = need(ANY, 1, 1, &[3, 1, 5]);
        n.keep_held = true;
        assert_eq!(plan(|_| false, |_| 0, &[n]).unwrap(), vec![vec![3]]);
    }

    #[test]
    fn other_reservations_holds_are_not_stolen() {
        let a = need(ANY, 1, 3, &[1]);
        let b = Need {
            replan: false,
            ..need(ANY, 1, 1, &[2])
        };
        assert_eq!(
            plan(|_| false, |_| 0, &[a, b]).unwrap(),
            vec![vec![1, 3, 5], vec![2]]
        );
    }

    #[test]
    fn takes_up_to_max_preferring_least_used_then_lowest_id() {
        let usage = HashMap::from([(1, 3), (2, 0), (3, 1), (5, 0)]);
        let got = plan(
            |_| false,
            |h| usage.get(&h).copied().unwrap_or(0),
            &[need(ANY, 1, 3, &[])],
        )
        .unwrap();
        assert_eq!(got, vec![vec![2, 5, 3]]);
        let got = plan(|_| false, |_| 0, &[need(ANY, 1, 10, &[])]).unwrap();
        assert_eq!(
            got,
            vec![vec![1, 2, 3, 5]],
            "between min and max: what there is"
        );
    }

    #[test]
    fn keeps_current_hosts_first() {
        let got = plan(|_| false, |_| 0, &[need(ANY, 1, 2, &[5])]).unwrap();
        assert_eq!(got, vec![vec![5, 1]]);
        let got = plan(|_| false, |_| 0, &[need(ANY, 1, 2, &[5, 3, 2])]).unwrap();
        assert_eq!(got, vec![vec![5, 3]], "over max: the first held hosts stay");
    }

    #[test]
    fn a_specific_reservation_is_served_before_a_generic_one() {
        let got = plan(
            |_| false,
            |_| 0,
            &[need(ANY, 1, 3, &[]), need(RACK_A, 2, 2, &[])],
        )
        .unwrap();
        assert_eq!(got, vec![vec![3, 5], vec![1, 2]]);
    }
}
