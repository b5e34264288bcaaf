//! Dates: the input forms the API accepts and the two output forms upstream Blazar emits.
//!
//! All times are naive UTC. Inputs carry no offset; outputs carry none either.

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::DomainError;

/// Input forms, tried in order. chrono accepts non-padded numbers (`2017-2-1 2:05`), as upstream does.
const INPUT_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%.f",
];

/// Earliest and latest years accepted: before 1970 is a mistake, after 2999 too.
const MIN_YEAR: i32 = 1970;
const MAX_YEAR: i32 = 2999;

/// Whether the literal `"now"` is allowed for this field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    Allowed,
    Forbidden,
}

/// Parses a date the way the API accepts it; `"now"` (where allowed) resolves to `now` truncated
/// to the minute, as upstream does. Seconds are kept; fractions of a second are dropped.
pub fn parse_input(
    field: &str,
    value: &str,
    now: NaiveDateTime,
    allow_now: Now,
) -> Result<NaiveDateTime, DomainError> {
    // The value as given (before trimming), bare, as upstream prints it.
    let invalid = |reason: &str| DomainError::InvalidDate {
        name: field.to_string(),
        value: super::input::echo(value, 40),
        reason: reason.to_string(),
    };
    // Surrounding spaces are a typing accident, not a different date.
    let value = value.trim();
    if value == "now" {
        return match allow_now {
            Now::Allowed => Ok(truncate_to_minute(now)),
            Now::Forbidden => Err(invalid(
                "\"now\" is only accepted for start_date and end_date",
            )),
        };
    }
    if value.len() > 40 {
        return Err(invalid("too long for a date"));
    }
    let looks_zoned = value.ends_with('Z')
        || value.ends_with('z')
        || value
            .rfind(['+', '-'])
            .is_some_and(|i| i > 10 && value[i..].contains(':') && !value[..i].ends_with(' '));
    if looks_zoned {
        return Err(invalid(
            "timezone offsets are not accepted: give the time in UTC without an offset",
        ));
    }
    let parsed = INPUT_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .ok_or_else(|| {
            invalid("expected YYYY-MM-DD HH:MM, optionally with seconds and a T separator")
        })?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&parsed.year()) {
        return Err(invalid(&format!(
            "the year must be between {MIN_YEAR} and {MAX_YEAR}"
        )));
    }
    Ok(parsed.with_nanosecond(0).unwrap_or(parsed))
}

pub fn truncate_to_minute(t: NaiveDateTime) -> NaiveDateTime {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

pub fn truncate_to_second(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Lease start/end, event time, allocation dates: `2017-02-21T20:00:00.000000`.
pub fn format_lease_date(t: NaiveDateTime) -> String {
    let mut s = String::with_capacity(26);
    push_date_time(&mut s, t, 'T');
    s.push('.');
    push_digits(&mut s, t.nanosecond() / 1000 % 1_000_000, 6);
    s
}

/// created_at / updated_at: Python's `isoformat(' ')`, which drops a zero fraction:
/// `2017-02-21 14:50:38`.
pub fn format_timestamp(t: NaiveDateTime) -> String {
    let mut s = String::with_capacity(26);
    push_date_time(&mut s, t, ' ');
    let micros = t.nanosecond() / 1000 % 1_000_000;
    if micros != 0 {
        s.push('.');
        push_digits(&mut s, micros, 6);
    }
    s
}

// Written by hand: these run for every date of every lease in a list, and chrono's `format`
// parses its pattern each time (it showed at the top of a profile of lease listing).
fn push_date_time(s: &mut String, t: NaiveDateTime, sep: char) {
    push_digits(s, t.year().max(0) as u32, 4);
    s.push('-');
    push_digits(s, t.month(), 2);
    s.push('-');
    push_digits(s, t.day(), 2);
    s.push(sep);
    push_digits(s, t.hour(), 2);
    s.push(':');
    push_digits(s, t.minute(), 2);
    s.push(':');
    push_digits(s, t.second(), 2);
}

fn push_digits(s: &mut String, value: u32, width: u32) {
    for i in (0..width).rev() {
        let d = value / 10u32.pow(i) % 10;
        s.push(char::from(b'0' + d as u8));
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap()
    }

    fn now() -> NaiveDateTime {
        at(2017, 2, 21, 14, 50, 38)
    }

    #[test]
    fn accepts_upstream_and_iso_forms() {
        let want = at(2017, 2, 21, 20, 0, 0);
        for input in [
            "2017-02-21 20:00",
            "2017-2-21 20:00",
            "2017-02-21 20:00:00",
            "2017-02-21T20:00",
            "2017-02-21T20:00:00",
            "2017-02-21T20:00:00.000000",
            "2017-02-21  20:00",
            " 2017-02-21 20:00 ",
        ] {
            assert_eq!(
                parse_input("start_date", input, now(), Now::Allowed).unwrap(),
                want,
                "{input}"
            );
        }
        assert_eq!(
            parse_input("start_date", "2017-2-1 2:05", now(), Now::Allowed).unwrap(),
            at(2017, 2, 1, 2, 5, 0)
        );
        assert_eq!(
            parse_input("end_date", "2017-02-21 20:00:07.5", now(), Now::Allowed).unwrap(),
            at(2017, 2, 21, 20, 0, 7)
        );
    }

    #[test]
    fn now_is_truncated_to_the_minute() {
        assert_eq!(
            parse_input("start_date", "now", now(), Now::Allowed).unwrap(),
            at(2017, 2, 21, 14, 50, 0)
        );
        assert!(parse_input("before_end_date", "now", now(), Now::Forbidden).is_err());
    }

    #[test]
    fn rejects_bad_dates_with_the_field_name() {
        for input in [
            "2017-02-30 10:00",
            "2017-13-01 10:00",
            "9999-01-01 00:00",
            "1969-12-31 23:59",
            "2017-02-21 20:00Z",
            "2017-02-21T20:00:00+01:00",
            "2017-02-21T20:00:00-05:00",
            "tomorrow",
            "",
            "2017-02-21 20:00 extra",
            "2017-02-21",
            "Now",
        ] {
            let err = parse_input("end_date", input, now(), Now::Allowed).unwrap_err();
            assert!(err.to_string().contains("end_date"), "{input}: {err}");
        }
    }

    #[test]
    fn invalid_dates_read_as_upstream() {
        let err = parse_input("end_date", "Bogus-date 13:13", now(), Now::Allowed).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "Bogus-date 13:13 is an invalid date. Required format: %Y-%m-%d %H:%M"
            ),
            "{err}"
        );
        let err = parse_input("before_end_date", "now", now(), Now::Forbidden).unwrap_err();
        assert!(
            err.to_string().starts_with("now is an invalid date."),
            "{err}"
        );
    }

    #[test]
    fn hand_formatting_matches_chrono() {
        for t in [
            at(2017, 2, 21, 20, 0, 0),
            at(1970, 1, 1, 0, 0, 0),
            at(2999, 12, 31, 23, 59, 59)
                .with_nanosecond(999_999_000)
                .unwrap(),
            at(2030, 7, 4, 9, 5, 3).with_nanosecond(1_000).unwrap(),
        ] {
            assert_eq!(
                format_lease_date(t),
                t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
            );
            let python = if t.nanosecond() == 0 {
                t.format("%Y-%m-%d %H:%M:%S").to_string()
            } else {
                t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
            };
            assert_eq!(format_timestamp(t), python);
        }
    }

    #[test]
    fn output_formats_match_upstream() {
        let t = at(2017, 2, 21, 20, 0, 0);
        assert_eq!(format_lease_date(t), "2017-02-21T20:00:00.000000");
        assert_eq!(
            format_timestamp(at(2017, 2, 21, 14, 50, 38)),
            "2017-02-21 14:50:38"
        );
        let frac = t.with_nanosecond(123_456_000).unwrap();
        assert_eq!(format_timestamp(frac), "2017-02-21 20:00:00.123456");
    }
}
