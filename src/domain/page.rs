//! Paging of list endpoints, OpenStack style: `limit` (clamped to the configured maximum, which is
//! also the default) and `marker` (the id of the last item of the previous page).

use super::{DomainError, input::printable};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub marker: Option<String>,
}

/// One page of a list, and the marker of the next page when there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

impl<T> Page<T> {
    /// Cuts `items` (fetched with `limit + 1` rows) to the page and finds the next marker.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_marker = if more { items.last().map(id) } else { None };
        Page { items, next_marker }
    }
}

pub fn page_request(
    limit: Option<i64>,
    marker: Option<String>,
    max: usize,
) -> Result<PageRequest, DomainError> {
    let limit = match limit {
        None => max,
        Some(n) if n < 1 => {
            return Err(DomainError::malformed(
                "limit",
                format!("must be at least 1 (got {n})"),
            ));
        }
        Some(n) => (n as u64).min(max as u64) as usize,
    };
    let marker = marker.filter(|m| !m.is_empty());
    if let Some(m) = &marker
        && m.len() > 255
    {
        return Err(DomainError::malformed("marker", "is longer than any id"));
    }
    Ok(PageRequest { limit, marker })
}

pub fn marker_not_found(marker: &str) -> DomainError {
    DomainError::InvalidInput(format!(
        "marker {} not found: give the id of an item of the previous page",
        printable(marker, 64)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_markers() {
        assert_eq!(page_request(None, None, 1000).unwrap().limit, 1000);
        assert_eq!(
            page_request(Some(5000), None, 1000).unwrap().limit,
            1000,
            "clamped"
        );
        assert_eq!(
            page_request(Some(7), Some("".into()), 1000).unwrap(),
            PageRequest {
                limit: 7,
                marker: None
            }
        );
        assert!(page_request(Some(0), None, 1000).is_err());
        assert!(page_request(Some(-1), None, 1000).is_err());
        let p = Page::from_overfetch(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!((p.items, p.next_marker), (vec![1, 2], Some("2".into())));
        let p = Page::from_overfetch(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(p.next_marker, None);
    }
}
