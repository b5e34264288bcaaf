//! Choosing hosts for a reservation: between `min` and `max` of the matching free hosts.
//!
//! Hosts the reservation already holds are kept first (an update should not shuffle a lease's
//! hosts); then the least-used free hosts are added, ties broken by host id so that the choice
//! is deterministic. Upstream takes hosts in database order and ignores free hosts in odd cases.

use std::collections::{HashMap, HashSet};

use super::filter::{Attributes, Filter};

/// Why a reservation could not get `min` hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    /// Hosts that match the reservation's filters.
    pub matching: usize,
    /// Of those, hosts free for the whole window.
    pub free: usize,
}

/// Picks the hosts for one reservation.
///
/// - `kept`: hosts the reservation holds now and may keep (matching, still free), in order;
/// - `free`: other matching hosts free for the whole window and not taken by a sibling reservation;
/// - `usage`: current and future bookings per host (absent means 0);
/// - `matching`: how many hosts match the filters at all (for the error only).
pub fn choose_hosts(
    kept: &[i64],
    free: &[i64],
    usage: &HashMap<i64, u64>,
    min: usize,
    max: usize,
    matching: usize,
) -> Result<Vec<i64>, Shortage> {
    let available = kept.len() + free.len();
    if available < min {
        return Err(Shortage {
            matching,
            free: available,
        });
    }
    let mut chosen: Vec<i64> = kept.iter().copied().take(max).collect();
    if chosen.len() < max {
        let mut extra: Vec<i64> = free.to_vec();
        extra.sort_unstable_by_key(|h| (usage.get(h).copied().unwrap_or(0), *h));
        chosen.extend(extra.into_iter().take(max - chosen.len()));
    }
    Ok(chosen)
}

/// A host as the planner sees it.
pub trait Candidate: Attributes {
    fn host_id(&self) -> i64;
    fn reservable(&self) -> bool;
}

/// What one reservation of a lease needs.
#[derive(Debug, Clone)]
pub struct Need<'a> {
    pub filter: &'a Filter,
    pub min: usize,
    pub max: usize,
    /// Hosts the reservation holds now (empty for a new one).
    pub held: &'a [i64],
    /// Re-plan this reservation; otherwise it keeps `held` exactly as it is.
    pub replan: bool,
    /// The reservation is running: none of `held` may be given up.
    pub keep_held: bool,
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

/// Chooses hosts for every reservation of a lease at once, so that no two reservations share a
/// host. `busy` holds hosts booked by *other* leases in the window.
pub fn plan<C: Candidate>(
    hosts: &[C],
    busy: &HashSet<i64>,
    usage: &HashMap<i64, u64>,
    needs: &[Need<'_>],
) -> Result<Vec<Vec<i64>>, PlanError> {
    let mut taken: HashSet<i64> = needs
        .iter()
        .filter(|n| !n.replan)
        .flat_map(|n| n.held.iter().copied())
        .collect();
    let all_held: HashSet<i64> = needs.iter().flat_map(|n| n.held.iter().copied()).collect();
    let mut out = Vec::with_capacity(needs.len());
    for (index, need) in needs.iter().enumerate() {
        if !need.replan {
            out.push(need.held.to_vec());
            continue;
        }
        let matching: HashSet<i64> = hosts
            .iter()
            .filter(|h| h.reservable() && need.filter.matches(*h))
            .map(Candidate::host_id)
            .collect();
        let usable = |h: &i64| matching.contains(h) && !busy.contains(h) && !taken.contains(h);
        if need.keep_held {
            if let Some(&host) = need.held.iter().find(|h| !usable(h)) {
                let why = if !matching.contains(&host) {
                    "no longer matches the reservation's filters"
                } else {
                    "is booked by another lease in the new window"
                };
                return Err(PlanError::HeldHostLost { index, host, why });
            }
            if need.held.len() > need.max {
                let host = need.held[need.max];
                return Err(PlanError::HeldHostLost {
                    index,
                    host,
                    why: "would be released because max is lower than the hosts in use",
                });
            }
        }
        let kept: Vec<i64> = need.held.iter().copied().filter(|h| usable(h)).collect();
        let mut free: Vec<i64> = matching
            .iter()
            .copied()
            .filter(|h| usable(h) && !all_held.contains(h))
            .collect();
        free.sort_unstable();
        let chosen = choose_hosts(&kept, &free, usage, need.min, need.max, matching.len())
            .map_err(|shortage| PlanError::Shortage { index, shortage })?;
        taken.extend(chosen.iter().copied());
        out.push(chosen);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    struct H(i64, &'static str, bool);
    impl Attributes for H {
        fn attribute(&self, key: &str) -> Option<Cow<'_, str>> {
            (key == "rack").then_some(Cow::Borrowed(self.1))
        }
    }
    impl Candidate for H {
        fn host_id(&self) -> i64 {
            self.0
        }
        fn reservable(&self) -> bool {
            self.2
        }
    }
    fn hosts() -> Vec<H> {
        vec![
            H(1, "a", true),
            H(2, "a", true),
            H(3, "b", true),
            H(4, "b", false),
            H(5, "b", true),
        ]
    }
    fn need<'a>(filter: &'a Filter, min: usize, max: usize, held: &'a [i64]) -> Need<'a> {
        Need {
            filter,
            min,
            max,
            held,
            replan: true,
            keep_held: false,
        }
    }

    #[test]
    fn sibling_reservations_never_share_hosts() {
        let any = Filter::All;
        let got = plan(
            &hosts(),
            &HashSet::new(),
            &HashMap::new(),
            &[need(&any, 2, 2, &[]), need(&any, 2, 2, &[])],
        )
        .unwrap();
        assert_eq!(
            got,
            vec![vec![1, 2], vec![3, 5]],
            "host 4 is not reservable"
        );
    }

    #[test]
    fn filters_busy_hosts_and_shortage_counts() {
        let b = Filter::parse("f", r#"["==", "$rack", "b"]"#).unwrap();
        let busy = HashSet::from([3]);
        let got = plan(&hosts(), &busy, &HashMap::new(), &[need(&b, 1, 5, &[])]).unwrap();
        assert_eq!(got, vec![vec![5]]);
        let err = plan(&hosts(), &busy, &HashMap::new(), &[need(&b, 2, 2, &[])]).unwrap_err();
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
        let any = Filter::All;
        let mut n = need(&any, 1, 2, &[3]);
        n.keep_held = true;
        assert_eq!(
            plan(&hosts(), &HashSet::new(), &HashMap::new(), &[n.clone()]).unwrap(),
            vec![vec![3, 1]]
        );
        let err = plan(&hosts(), &HashSet::from([3]), &HashMap::new(), &[n]).unwrap_err();
        assert!(matches!(err, PlanError::HeldHostLost { host: 3, .. }));
    }

    #[test]
    fn other_reservations_holds_are_not_stolen() {
        let any = Filter::All;
        let a = need(&any, 1, 3, &[1]);
        let b = Need {
            replan: false,
            ..need(&any, 1, 1, &[2])
        };
        let got = plan(&hosts(), &HashSet::new(), &HashMap::new(), &[a, b]).unwrap();
        assert_eq!(got, vec![vec![1, 3, 5], vec![2]]);
    }

    #[test]
    fn takes_up_to_max_preferring_least_used_then_lowest_id() {
        let usage = HashMap::from([(1, 3), (2, 0), (3, 1), (4, 0)]);
        let got = choose_hosts(&[], &[1, 2, 3, 4], &usage, 1, 3, 4).unwrap();
        assert_eq!(got, vec![2, 4, 3]);
    }

    #[test]
    fn keeps_current_hosts_first() {
        let got = choose_hosts(&[7], &[1, 2], &HashMap::new(), 1, 2, 3).unwrap();
        assert_eq!(got, vec![7, 1]);
        let got = choose_hosts(&[7, 8, 9], &[1], &HashMap::new(), 1, 2, 4).unwrap();
        assert_eq!(got, vec![7, 8]);
    }

    #[test]
    fn takes_what_there_is_between_min_and_max() {
        let got = choose_hosts(&[], &[5, 6], &HashMap::new(), 1, 10, 2).unwrap();
        assert_eq!(got, vec![5, 6]);
    }

    #[test]
    fn reports_matching_and_free_counts_when_short() {
        let err = choose_hosts(&[1], &[2], &HashMap::new(), 3, 3, 8).unwrap_err();
        assert_eq!(
            err,
            Shortage {
                matching: 8,
                free: 2
            }
        );
    }
}
