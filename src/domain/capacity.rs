//! Capacity rules: when hosts are free, for how many, and why a request does not fit. Pure: the
//! service layer hands in each host's bookings, as create's host choice sees them.
//!
//! A host is free for `[s, s + d)` when none of its bookings overlaps it; windows that only touch
//! do not overlap (as for create). So in a gap `[free_from, free_until)` between two bookings a
//! window of duration `d` can start anywhere in `[free_from, free_until - d]`. Sweeping those
//! start ranges of every host in time order counts, for every instant, the hosts free for a window
//! starting then: exact, not sampled, and `O(b log b)` in the bookings of the hosts asked about.

use chrono::{NaiveDateTime, TimeDelta};

use super::{
    DomainError,
    dates::{self, Now},
    filter::Filter,
};

/// Most windows one availability answer holds.
pub const MAX_WINDOWS: i64 = 100;

/// An availability or calendar query as it came, every part optional.
#[derive(Debug, Clone, Default)]
pub struct RawQuery<'a> {
    pub hypervisor_properties: Option<&'a str>,
    pub resource_properties: Option<&'a str>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub duration: Option<&'a str>,
    pub after: Option<&'a str>,
    pub before: Option<&'a str>,
    pub limit: Option<i64>,
}

/// Both filters, as a reservation combines them, and their text for sentences.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFilter {
    pub filter: Filter,
    /// The filters as sent, joined with " and " (`""` when none).
    pub text: String,
}

impl HostFilter {
    pub fn parse(
        hypervisor_properties: &str,
        resource_properties: &str,
    ) -> Result<Self, DomainError> {
        let h = Filter::parse("hypervisor_properties", hypervisor_properties)?;
        let r = Filter::parse("resource_properties", resource_properties)?;
        Ok(Self {
            filter: h.and(r),
            text: filter_text(hypervisor_properties, resource_properties),
        })
    }
}

/// The filters of a reservation as one text: `A`, `B`, or `A and B`.
pub fn filter_text(hypervisor_properties: &str, resource_properties: &str) -> String {
    [hypervisor_properties.trim(), resource_properties.trim()]
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// A validated availability query.
#[derive(Debug, Clone)]
pub struct AvailabilityRequest {
    pub filter: HostFilter,
    pub search: Search,
}

/// Validates an availability query against `now`: `duration` is required; `min` defaults to 1,
/// `after` to now, `before` to after + 30 days, `limit` to 5; windows never start before the
/// current minute (a lease cannot), and the range is at most `horizon` long.
pub fn parse_availability(
    q: &RawQuery<'_>,
    now: NaiveDateTime,
    horizon: TimeDelta,
) -> Result<AvailabilityRequest, DomainError> {
    let filter = HostFilter::parse(
        q.hypervisor_properties.unwrap_or(""),
        q.resource_properties.unwrap_or(""),
    )?;
    let duration = parse_duration(
        "duration",
        q.duration
            .ok_or_else(|| DomainError::MissingParameter("duration".into()))?,
    )?;
    let min = q.min.unwrap_or(1);
    if min < 1 || min > i32::MAX as i64 {
        return Err(DomainError::malformed("min", "must be at least 1"));
    }
    if let Some(max) = q.max
        && max < min
    {
        return Err(DomainError::InvalidRange(format!(
            "The query asks for min {min} and max {max}."
        )));
    }
    let limit = q.limit.unwrap_or(5);
    if !(1..=MAX_WINDOWS).contains(&limit) {
        return Err(DomainError::malformed(
            "limit",
            format!("must be between 1 and {MAX_WINDOWS}"),
        ));
    }
    let (after, before) = parse_range(q, now, TimeDelta::days(30), horizon)?;
    if after + duration > before {
        return Err(DomainError::InvalidInput(format!(
            "before: the range from {} to {} is shorter than the duration",
            dates::format_lease_date(after),
            dates::format_lease_date(before)
        )));
    }
    Ok(AvailabilityRequest {
        filter,
        search: Search {
            duration,
            after,
            before,
            min: min as usize,
            max: q.max.map(|m| m as usize),
            limit: limit as usize,
        },
    })
}

/// `after` (default now; never before the current minute) and `before` (default `after +
/// default_span`), with `before` later than `after` and the range at most `horizon`.
pub fn parse_range(
    q: &RawQuery<'_>,
    now: NaiveDateTime,
    default_span: TimeDelta,
    horizon: TimeDelta,
) -> Result<(NaiveDateTime, NaiveDateTime), DomainError> {
    let floor = dates::truncate_to_minute(now);
    let after = match q.after {
        Some(a) => dates::parse_input("after", a, now, Now::Allowed)?.max(floor),
        None => floor,
    };
    let before = parse_before(q, now, after, default_span, horizon)?;
    Ok((after, before))
}

/// `before` (default `after + default_span`): later than `after`, at most `horizon` after it.
fn parse_before(
    q: &RawQuery<'_>,
    now: NaiveDateTime,
    after: NaiveDateTime,
    default_span: TimeDelta,
    horizon: TimeDelta,
) -> Result<NaiveDateTime, DomainError> {
    let before = match q.before {
        Some(b) => dates::parse_input("before", b, now, Now::Allowed)?,
        None => after + default_span,
    };
    if before <= after {
        return Err(DomainError::InvalidInput(format!(
            "before ({}) must be later than after ({})",
            dates::format_lease_date(before),
            dates::format_lease_date(after)
        )));
    }
    if before - after > horizon {
        return Err(DomainError::malformed(
            "before",
            format!("the range may span at most {} days", horizon.num_days()),
        ));
    }
    Ok(before)
}

/// A validated calendar query: the hosts matching `filter`, bookings within `[after, before)`.
#[derive(Debug, Clone)]
pub struct CalendarRequest {
    pub filter: HostFilter,
    pub after: NaiveDateTime,
    pub before: NaiveDateTime,
}

/// Validates a calendar query: `after` defaults to now, `before` to after + 7 days. Unlike
/// availability, `after` may lie in the past (to look back).
pub fn parse_calendar(
    q: &RawQuery<'_>,
    now: NaiveDateTime,
    horizon: TimeDelta,
) -> Result<CalendarRequest, DomainError> {
    let filter = HostFilter::parse(
        q.hypervisor_properties.unwrap_or(""),
        q.resource_properties.unwrap_or(""),
    )?;
    let after = match q.after {
        Some(a) => dates::parse_input("after", a, now, Now::Allowed)?,
        None => dates::truncate_to_minute(now),
    };
    let before = parse_before(q, now, after, TimeDelta::days(7), horizon)?;
    Ok(CalendarRequest {
        filter,
        after,
        before,
    })
}

/// A booking of a host, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

/// A window of `duration` in which `hosts` are all free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    /// The hosts free for the whole window, in id order.
    pub hosts: Vec<i64>,
}

/// What to search for.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    pub duration: TimeDelta,
    /// Windows start at or after this.
    pub after: NaiveDateTime,
    /// Windows end at or before this.
    pub before: NaiveDateTime,
    /// Fewest hosts a window needs.
    pub min: usize,
    /// Most hosts a window reports (the lowest ids).
    pub max: Option<usize>,
    pub limit: usize,
}

/// The windows in which at least `min` of `hosts` are free, earliest first, at most `limit`.
///
/// Each window starts at the earliest instant of a stretch of time in which windows of that
/// many hosts can start (a later start in the same stretch is the same opportunity, later), and
/// holds every host free for it then (capped at `max`). `hosts` gives each host's bookings sorted
/// by start, non-overlapping (as the placement copy keeps them); only those overlapping
/// `[after, before)` matter.
pub fn free_windows<'a>(
    hosts: impl IntoIterator<Item = (i64, &'a [Span])>,
    q: &Search,
) -> Vec<Window> {
    if q.min == 0
        || q.limit == 0
        || q.duration <= TimeDelta::zero()
        || q.after + q.duration > q.before
    {
        return Vec::new();
    }
    // Per host, the closed ranges of starts at which it is free for the whole window.
    let mut ranges: Vec<(i64, Vec<(NaiveDateTime, NaiveDateTime)>)> = Vec::new();
    // Sweep points: (time, OPEN or CLOSE, host); OPEN sorts first at the same instant, since
    // the ranges are closed.
    let mut points: Vec<(NaiveDateTime, u8, i64)> = Vec::new();
    for (host, bookings) in hosts {
        let mut mine = Vec::new();
        let first = bookings.partition_point(|b| b.end <= q.after);
        let mut free_from = q.after;
        for b in &bookings[first..] {
            if b.start >= q.before {
                break;
            }
            push_range(&mut mine, free_from, b.start, q);
            free_from = free_from.max(b.end);
        }
        push_range(&mut mine, free_from, q.before, q);
        for &(lo, hi) in &mine {
            points.push((lo, OPEN, host));
            points.push((hi, CLOSE, host));
        }
        if !mine.is_empty() {
            ranges.push((host, mine));
        }
    }
    points.sort_unstable();
    let mut out = Vec::new();
    let mut open = 0usize;
    let mut in_run = false;
    for &(t, kind, _) in &points {
        if kind == OPEN {
            open += 1;
            if !in_run && open >= q.min {
                in_run = true;
                out.push(window_at(&ranges, t, q));
                if out.len() == q.limit {
                    break;
                }
            }
        } else {
            open -= 1;
            if open < q.min {
                in_run = false;
            }
        }
    }
    out
}

const OPEN: u8 = 0;
const CLOSE: u8 = 1;

/// Adds the starts `[free_from, free_until - duration]` (within the search) if there are any.
fn push_range(
    out: &mut Vec<(NaiveDateTime, NaiveDateTime)>,
    free_from: NaiveDateTime,
    free_until: NaiveDateTime,
    q: &Search,
) {
    let lo = free_from.max(q.after);
    let hi = free_until.min(q.before) - q.duration;
    if hi >= lo {
        out.push((lo, hi));
    }
}

fn window_at(
    ranges: &[(i64, Vec<(NaiveDateTime, NaiveDateTime)>)],
    t: NaiveDateTime,
    q: &Search,
) -> Window {
    let mut hosts: Vec<i64> = ranges
        .iter()
        .filter(|(_, r)| {
            let i = r.partition_point(|(_, hi)| *hi < t);
            i < r.len() && r[i].0 <= t
        })
        .map(|(h, _)| *h)
        .collect();
    hosts.sort_unstable();
    if let Some(max) = q.max {
        hosts.truncate(max);
    }
    Window {
        start: t,
        end: t + q.duration,
        hosts,
    }
}

/// A duration: whole minutes (`240`), or ISO 8601 in weeks, days, hours, minutes and seconds
/// (`PT4H`, `P2D`, `P1DT12H`, `PT90M`). Months and years are refused: their length depends on
/// the date.
pub fn parse_duration(name: &str, text: &str) -> Result<TimeDelta, DomainError> {
    let bad = |reason: &str| DomainError::malformed(name, reason);
    let t = text.trim();
    let d = if let Ok(minutes) = t.parse::<i64>() {
        TimeDelta::try_minutes(minutes).ok_or_else(|| bad("is too large"))?
    } else {
        parse_iso_duration(t).ok_or_else(|| {
            bad("must be minutes (an integer) or ISO 8601 such as PT4H, P2D or P1DT12H")
        })?
    };
    if d <= TimeDelta::zero() {
        return Err(bad("must be longer than zero"));
    }
    Ok(d)
}

fn parse_iso_duration(t: &str) -> Option<TimeDelta> {
    let rest = t.strip_prefix(['P', 'p'])?;
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, tm)) if !tm.is_empty() => (d, Some(tm)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut total = TimeDelta::zero();
    let mut any = false;
    let mut add = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut number = String::new();
        let mut last_unit = None::<usize>;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let at = units
                .iter()
                .position(|(u, _)| *u == c.to_ascii_uppercase())?;
            // Units in order, each once, each after a number.
            if number.is_empty() || last_unit.is_some_and(|l| at <= l) {
                return None;
            }
            let n: i64 = number.parse().ok()?;
            total = total.checked_add(&TimeDelta::try_seconds(n.checked_mul(units[at].1)?)?)?;
            number.clear();
            last_unit = Some(at);
            any = true;
        }
        number.is_empty().then_some(())
    };
    add(date, &[('W', 7 * 86_400), ('D', 86_400)])?;
    if let Some(time) = time {
        add(time, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    any.then_some(total)
}

/// How a reservation request stands against the hosts, for the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The filters as sent, for the sentence (`""` when none).
    pub filter: String,
    pub min: usize,
    /// Hosts that pass both filters.
    pub matching: usize,
    /// Of those, the ones that may be reserved (not disabled or unreservable).
    pub reservable: usize,
    /// Of those, the ones free for the whole window.
    pub free: usize,
    /// When the last booking that holds a matching host in the window ends.
    pub held_until: Option<NaiveDateTime>,
    /// The earliest start at which the same duration fits, if found within the horizon.
    pub earliest_start: Option<NaiveDateTime>,
    /// Whether this reservation gets its hosts (with its siblings).
    pub fits: bool,
}

/// One sentence: why a reservation gets its hosts or not, with what would make it fit.
pub fn why(s: &Standing, format: impl Fn(NaiveDateTime) -> String) -> String {
    let hosts = if s.filter.is_empty() {
        "hosts".to_string()
    } else {
        format!("hosts matching {}", s.filter)
    };
    let needed = format!("{} {} needed", s.min, if s.min == 1 { "is" } else { "are" });
    if s.fits {
        return format!(
            "{} of the {} {hosts} are free for the whole window; {needed}",
            s.free, s.matching
        );
    }
    if s.matching == 0 {
        return format!("No host matches {}; {needed}", describe_filter(&s.filter));
    }
    let mut parts = Vec::new();
    let held = s.reservable - s.free;
    if held > 0 {
        parts.push(format!(
            "{held} of the {} {hosts} {} held by other leases{}",
            s.matching,
            if held == 1 { "is" } else { "are" },
            s.held_until
                .map(|t| format!(" until {}", format(t)))
                .unwrap_or_default()
        ));
    }
    let unreservable = s.matching - s.reservable;
    if unreservable > 0 {
        parts.push(format!(
            "{unreservable} of the {} {hosts} {} not reservable (disabled or down)",
            s.matching,
            if unreservable == 1 { "is" } else { "are" }
        ));
    }
    if s.free >= s.min {
        parts.push(format!(
            "{} of them {} free, but sibling reservations of the same lease need them",
            s.free,
            if s.free == 1 { "is" } else { "are" }
        ));
    } else if parts.is_empty() {
        parts.push(format!("only {} {hosts} exist", s.matching));
    }
    let mut sentence = format!("{}; {needed}", parts.join("; "));
    match s.earliest_start {
        Some(t) => sentence.push_str(&format!("; the earliest start that fits is {}", format(t))),
        None if s.reservable < s.min => sentence.push_str("; it cannot fit at any time"),
        None => {}
    }
    sentence
}

fn describe_filter(filter: &str) -> String {
    if filter.is_empty() {
        "(no filter)".to_string()
    } else {
        filter.to_string()
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn t(h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2030, 1, 1)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    }

    fn span(a: (u32, u32), b: (u32, u32)) -> Span {
        Span {
            start: t(a.0, a.1),
            end: t(b.0, b.1),
        }
    }

    fn search(minutes: i64, min: usize) -> Search {
        Search {
            duration: TimeDelta::minutes(minutes),
            after: t(8, 0),
            before: t(20, 0),
            min,
            max: None,
            limit: 5,
        }
    }

    #[test]
    fn windows_start_where_enough_hosts_free_up_and_touching_is_free() {
        // Host 1 busy 9-12, host 2 busy 8-10 and 13-14.
        let h1 = [span((9, 0), (12, 0))];
        let h2 = [span((8, 0), (10, 0)), span((13, 0), (14, 0))];
        let hosts = || [(1, &h1[..]), (2, &h2[..])];
        // One host for an hour: at once (host 1 is free 8-9), then not before 10:00 (an hour
        // from 8:01 would overlap host 1's 9:00), when host 2 is free until 13:00.
        let w = free_windows(hosts(), &search(60, 1));
        let got: Vec<_> = w.iter().map(|w| (w.start, w.hosts.clone())).collect();
        assert_eq!(got, vec![(t(8, 0), vec![1]), (t(10, 0), vec![2])]);
        // Two hosts for an hour: 12:00 (host 1 frees up; host 2 is free 10-13, touching 13:00).
        let w = free_windows(hosts(), &search(60, 2));
        assert_eq!((w[0].start, w[0].end), (t(12, 0), t(13, 0)));
        assert_eq!(w[0].hosts, vec![1, 2]);
        // Then again from 14:00.
        assert_eq!(w[1].start, t(14, 0));
        assert_eq!(w.len(), 2);
        // Two hosts for two hours: only from 14:00.
        let w = free_windows(hosts(), &search(120, 2));
        assert_eq!(
            w.iter().map(|w| w.start).collect::<Vec<_>>(),
            vec![t(14, 0)]
        );
        // Three hosts: never.
        assert!(free_windows(hosts(), &search(60, 3)).is_empty());
    }

    #[test]
    fn the_search_bounds_and_max_are_kept() {
        let h1 = [span((7, 0), (8, 30))];
        let w = free_windows([(1, &h1[..]), (2, &[][..])], &search(60, 1));
        assert_eq!(w[0].start, t(8, 0));
        assert_eq!(w[0].hosts, vec![2], "host 1 is busy until 8:30");
        let mut q = search(60, 1);
        q.max = Some(1);
        q.after = t(9, 0);
        let w = free_windows([(1, &h1[..]), (2, &[][..])], &q);
        assert_eq!(w[0].hosts, vec![1], "capped at max, lowest ids");
        // A window must end by `before`.
        let mut q = search(60, 1);
        q.before = t(8, 59);
        assert!(free_windows([(1, &[][..])], &q).is_empty());
    }

    /// A brute force on a minute grid agrees with the sweep.
    #[test]
    fn the_sweep_agrees_with_a_minute_by_minute_search() {
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..200 {
            let hosts: Vec<Vec<Span>> = (0..4)
                .map(|_| {
                    let mut at = t(6, 0) + TimeDelta::minutes(next(120) as i64);
                    let mut list = Vec::new();
                    for _ in 0..next(4) {
                        let start = at + TimeDelta::minutes(next(180) as i64);
                        let end = start + TimeDelta::minutes(1 + next(240) as i64);
                        list.push(Span { start, end });
                        at = end;
                    }
                    list
                })
                .collect();
            let q = search(1 + next(300) as i64, 1 + next(4) as usize);
            let got = free_windows(
                hosts.iter().enumerate().map(|(i, l)| (i as i64, &l[..])),
                &q,
            );
            let free_at = |s: NaiveDateTime| -> Vec<i64> {
                hosts
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.iter().all(|b| b.end <= s || b.start >= s + q.duration))
                    .map(|(i, _)| i as i64)
                    .collect()
            };
            let mut want = Vec::new();
            let mut s = q.after;
            let mut in_run = false;
            while s + q.duration <= q.before && want.len() < q.limit {
                let free = free_at(s);
                if free.len() >= q.min && !in_run {
                    want.push((s, free));
                }
                in_run = free_at(s).len() >= q.min;
                s += TimeDelta::minutes(1);
            }
            let got: Vec<(NaiveDateTime, Vec<i64>)> =
                got.into_iter().map(|w| (w.start, w.hosts)).collect();
            assert_eq!(got, want, "{hosts:?} {q:?}");
        }
    }

    #[test]
    fn durations_in_minutes_or_iso_8601() {
        let m = |s: &str| parse_duration("duration", s).map(|d| d.num_minutes());
        assert_eq!(m("240").unwrap(), 240);
        assert_eq!(m("PT4H").unwrap(), 240);
        assert_eq!(m("P2D").unwrap(), 2880);
        assert_eq!(m("P1DT12H").unwrap(), 2160);
        assert_eq!(m("PT90M").unwrap(), 90);
        assert_eq!(m("P1W").unwrap(), 10080);
        for bad in [
            "0", "-5", "P", "PT", "P1M", "P1Y", "PT4", "4H", "PT4H4H", "PT1M1H", "",
        ] {
            let e = parse_duration("duration", bad).unwrap_err().to_string();
            assert!(e.contains("duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_sentence_says_what_holds_the_hosts_and_when_it_fits() {
        let fmt = |t: NaiveDateTime| t.format("%Y-%m-%d %H:%M").to_string();
        let s = Standing {
            filter: r#"["==","$gpu","true"]"#.into(),
            min: 4,
            matching: 3,
            reservable: 3,
            free: 1,
            held_until: Some(t(12, 0)),
            earliest_start: None,
            fits: false,
        };
        assert_eq!(
            why(&s, fmt),
            "2 of the 3 hosts matching [\"==\",\"$gpu\",\"true\"] are held by other leases until \
             2030-01-01 12:00; 4 are needed; it cannot fit at any time"
        );
        let s = Standing {
            min: 2,
            earliest_start: Some(t(12, 0)),
            ..s
        };
        assert!(
            why(&s, fmt)
                .ends_with("2 are needed; the earliest start that fits is 2030-01-01 12:00")
        );
        let none = Standing {
            matching: 0,
            reservable: 0,
            free: 0,
            ..s.clone()
        };
        assert!(why(&none, fmt).starts_with("No host matches [\"==\""));
        let fits = Standing {
            fits: true,
            free: 3,
            ..s
        };
        assert_eq!(
            why(&fits, fmt),
            "3 of the 3 hosts matching [\"==\",\"$gpu\",\"true\"] are free for the whole window; 2 are needed"
        );
    }
}
