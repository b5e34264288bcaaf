//! Paging links of list responses: `{"rel": "next", "href": ".../v1/leases?limit=100&marker=<id>"}`.

use poem::Request;
use poem_openapi::Object;

use super::error::ApiResult;
use crate::{
    domain::page::{PageRequest, page_request},
    service::Services,
};

/// A link to another page of a list.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename = "PageLink")]
pub struct PageLink {
    /// `next`
    pub rel: String,
    pub href: String,
}

/// Parses `limit` and `marker` with the configured maximum page size.
pub fn request(
    svc: &Services,
    limit: Option<i64>,
    marker: Option<String>,
) -> ApiResult<PageRequest> {
    Ok(page_request(limit, marker, svc.settings.api.max_page_size)?)
}

/// The `next` link when there is a next page: this request's URL with the new marker.
pub fn next(
    req: &Request,
    page: &PageRequest,
    next_marker: Option<String>,
) -> Option<Vec<PageLink>> {
    let marker = next_marker?;
    let host = req
        .headers()
        .get(poem::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    let mut query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url_pairs(q)
                .filter(|(k, _)| k != "marker" && k != "limit")
                .collect()
        })
        .unwrap_or_default();
    query.push(("limit".into(), page.limit.to_string()));
    query.push(("marker".into(), marker));
    let query: Vec<String> = query
        .into_iter()
        .map(|(k, v)| format!("{}={}", encode(&k), encode(&v)))
        .collect();
    Some(vec![PageLink {
        rel: "next".into(),
        href: format!("http://{host}{}?{}", req.uri().path(), query.join("&")),
    }])
}

fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_round_trip() {
        assert_eq!(decode("a%20b+c%2F"), "a b c/");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
        let pairs: Vec<_> = url_pairs("project_id=p%201&limit=5&detail").collect();
        assert_eq!(
            pairs,
            vec![
                ("project_id".into(), "p 1".into()),
                ("limit".into(), "5".into()),
                ("detail".into(), "".into())
            ]
        );
    }
}
