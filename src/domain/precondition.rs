//! Conditional requests (RFC 9110 §13): parsing `If-Match` / `If-None-Match` and comparing them
//! with a resource's current entity tag. Pure: the service compares inside its write
//! transaction, so that the check and the write are one atomic step.

use super::DomainError;

/// A parsed `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `*`: any current representation.
    Any,
    /// A list of entity tags as sent (with their quotes, `W/` kept).
    Tags(Vec<String>),
}

/// Longest header accepted: a client has no reason to send a long list.
const MAX_HEADER_LEN: usize = 4096;

impl Precondition {
    /// Parses the header `name`'s value; a malformed one is a 400 that names the header.
    pub fn parse(name: &str, value: &str) -> Result<Self, DomainError> {
        let bad = |why: &str| DomainError::malformed(name, why);
        if value.len() > MAX_HEADER_LEN {
            return Err(bad("longer than 4096 characters"));
        }
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let mut tags = Vec::new();
        for part in value.split(',') {
            let tag = part.trim();
            if tag.is_empty() {
                continue;
            }
            let opaque = tag.strip_prefix("W/").unwrap_or(tag);
            let well_formed = opaque.len() >= 2
                && opaque.starts_with('"')
                && opaque.ends_with('"')
                && opaque[1..opaque.len() - 1]
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80);
            if !well_formed {
                return Err(bad(
                    "expected * or a list of quoted entity tags, e.g. \"3a7f...\"",
                ));
            }
            tags.push(tag.to_string());
        }
        if tags.is_empty() {
            return Err(bad("expected * or a list of quoted entity tags"));
        }
        Ok(Self::Tags(tags))
    }

    /// `If-Match`: strong comparison, so a weak tag never matches (RFC 9110 §13.1.1).
    pub fn matches_strongly(&self, current: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| !t.starts_with("W/") && t == current),
        }
    }

    /// `If-None-Match`: weak comparison, `W/"x"` matches `"x"` (RFC 9110 §13.1.2).
    pub fn matches_weakly(&self, current: &str) -> bool {
        let opaque = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_string();
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| opaque(t) == opaque(current)),
        }
    }
}

/// What a write with `If-Match` gets when the resource has changed since the client read it.
pub fn precondition_failed(what: &str, current: &str) -> DomainError {
    DomainError::PreconditionFailed(format!(
        "{what} has changed since the If-Match entity tag was read; its current ETag is \
         {current}: read it again, then retry"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_star_lists_and_weak_tags() {
        assert_eq!(
            Precondition::parse("If-Match", " * ").unwrap(),
            Precondition::Any
        );
        assert_eq!(
            Precondition::parse("If-Match", r#""a", W/"b""#).unwrap(),
            Precondition::Tags(vec![r#""a""#.into(), r#"W/"b""#.into()])
        );
        for bad in ["", "abc", r#""a"#, r#""a b""#, r#"W/x"#, ",", r#""a"x"#] {
            assert!(Precondition::parse("If-Match", bad).is_err(), "{bad:?}");
        }
        assert!(Precondition::parse("If-Match", &"\"a\",".repeat(2000)).is_err());
    }

    #[test]
    fn if_match_is_strong_and_if_none_match_weak() {
        let c = Precondition::parse("If-Match", r#"W/"x", "y""#).unwrap();
        assert!(!c.matches_strongly(r#""x""#));
        assert!(c.matches_strongly(r#""y""#));
        assert!(c.matches_weakly(r#""x""#));
        assert!(!c.matches_weakly(r#""z""#));
        assert!(Precondition::Any.matches_strongly(r#""z""#));
    }
}
