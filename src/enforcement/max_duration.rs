//! Upstream's `MaxLeaseDurationFilter` as a pure rule: no clock, no settings lookups.

use chrono::NaiveDateTime;

use crate::domain::DomainError;

/// The longest lease and who may exceed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxDuration {
    /// Seconds; -1 is no limit (upstream's default).
    pub max_seconds: i64,
    pub exempt_project_ids: Vec<String>,
}

impl MaxDuration {
    /// Refuses a lease of `project` running from `start` to `end` that is longer than the limit.
    /// As upstream, the duration is whole seconds of `end - start`, and equal to the limit passes.
    pub fn check(
        &self,
        project: Option<&str>,
        start: NaiveDateTime,
        end: NaiveDateTime,
    ) -> Result<(), DomainError> {
        if self.max_seconds == -1 {
            return Ok(());
        }
        if let Some(p) = project
            && self.exempt_project_ids.iter().any(|e| e == p)
        {
            return Ok(());
        }
        let duration = (end - start).num_seconds();
        if duration > self.max_seconds {
            return Err(DomainError::MaxLeaseDuration {
                lease_duration: duration,
                max_duration: self.max_seconds,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeDelta};

    fn t(h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2030, 1, 1)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
    }

    #[test]
    fn longer_than_the_limit_is_refused_with_upstreams_words() {
        let rule = MaxDuration {
            max_seconds: 3600,
            exempt_project_ids: vec!["P1".into()],
        };
        rule.check(Some("P2"), t(1), t(2)).unwrap();
        let err = rule
            .check(Some("P2"), t(1), t(2) + TimeDelta::seconds(1))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Lease duration of 3601 seconds must be less than or equal to the maximum lease \
             duration of 3600 seconds."
        );
        rule.check(Some("P1"), t(1), t(9)).unwrap();
    }

    #[test]
    fn minus_one_is_no_limit() {
        let rule = MaxDuration {
            max_seconds: -1,
            exempt_project_ids: vec![],
        };
        rule.check(Some("P"), t(0), t(23)).unwrap();
    }
}
