//! The host calendar page at `/calendar` (docs/calendar.md): its HTML, script and style, embedded
//! in the binary. Plain poem handlers, not poem-openapi: the page is no part of the v1 contract and
//! must not appear in the spec. It only serves files; the page itself calls the API from the
//! browser, with the caller's own identity, so nothing here reads the database or checks policy.

use poem::{
    Request, Response, Route, get, handler,
    http::{StatusCode, header},
};

/// One embedded file and its validator. The names are not versioned, so browsers must
/// revalidate (`no-cache`); the ETag, a hash of the content fixed at compile time, makes that a
/// 304 until the binary changes.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
}

macro_rules! asset {
    ($file:literal, $content_type:literal) => {{
        const BODY: &str = include_str!(concat!("../../assets/calendar/", $file));
        const HASH: [u8; 18] = etag(BODY);
        const ETAG: &str = match std::str::from_utf8(&HASH) {
            Ok(s) => s,
            Err(_) => panic!("an ETag is ASCII"),
        };
        Asset {
            body: BODY,
            content_type: $content_type,
            etag: ETAG,
        }
    }};
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
const SCRIPT: Asset = asset!("calendar.js", "text/javascript; charset=utf-8");
const STYLE: Asset = asset!("calendar.css", "text/css; charset=utf-8");

/// The page loads its own script and style and talks to its own origin only; no inline code,
/// no framing.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// `"` + 16 hex digits of the content's FNV-1a hash + `"`.
const fn etag(body: &str) -> [u8; 18] {
    let bytes = body.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    let mut out = [b'"'; 18];
    let mut d = 0;
    while d < 16 {
        let nibble = ((hash >> (60 - 4 * d)) & 0xf) as u8;
        out[1 + d] = if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        };
        d += 1;
    }
    out
}

fn serve(req: &Request, asset: &Asset) -> Response {
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let resp = Response::builder()
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::ETAG, asset.etag)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if fresh {
        return resp.status(StatusCode::NOT_MODIFIED).finish();
    }
    resp.content_type(asset.content_type).body(asset.body)
}

#[handler]
fn page(req: &Request) -> Response {
    let mut resp = serve(req, &INDEX);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(PAGE_POLICY),
    );
    resp
}

#[handler]
fn script(req: &Request) -> Response {
    serve(req, &SCRIPT)
}

#[handler]
fn style(req: &Request) -> Response {
    serve(req, &STYLE)
}

/// `/` (the page), `/calendar.js` and `/calendar.css`, to be nested at `/calendar`.
pub fn routes() -> Route {
    Route::new()
        .at("/", get(page))
        .at("/calendar.js", get(script))
        .at("/calendar.css", get(style))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_differ_between_files() {
        for a in [&INDEX, &SCRIPT, &STYLE] {
            assert_eq!(a.etag.len(), 18);
            assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
            assert!(a.etag[1..17].bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(INDEX.etag, SCRIPT.etag);
        assert_ne!(SCRIPT.etag, STYLE.etag);
        // FNV-1a of "" is its offset basis.
        assert_eq!(&etag(""), b"\"cbf29ce484222325\"");
    }
}
