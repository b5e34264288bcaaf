//! The request pipeline around every route: request ids, the `.json` suffix, content negotiation,
//! the request body rules, the caller's identity, the error envelope and one access-log line.
//!
//! It runs outside routing so that framework errors (404 route, 405, bad JSON, 413, 415) get the
//! same envelope and `X-Openstack-Request-Id` as errors raised by handlers.

use std::{sync::Arc, time::Instant};

use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
};
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use super::error::{ApiError, Refusal};
use crate::{auth::Authenticator, metrics::Metrics};

pub const REQUEST_ID_HEADER: &str = "x-openstack-request-id";
const API_VERSION_HEADER: &str = "openstack-api-version";
const API_VERSION: &str = "reservation 1.0";

/// What the pipeline needs: the body limit, who authenticates callers, which methods each
/// path allows (for the `Allow` header of a 405, and each request's operationId), and the
/// metrics every answered request is counted in.
#[derive(Clone)]
pub struct Pipeline {
    pub max_body_bytes: usize,
    pub auth: Arc<dyn Authenticator>,
    pub methods: Arc<AllowedMethods>,
    pub metrics: Arc<Metrics>,
}

/// The methods of each path template of the spec (`/v1/leases/{lease_id}` -> GET, PUT, DELETE),
/// and the operationId of each method (for the request metrics).
#[derive(Debug, Default)]
pub struct AllowedMethods {
    routes: Vec<SpecRoute>,
}

#[derive(Debug)]
struct SpecRoute {
    template: Vec<String>,
    /// Upper-case methods, sorted.
    methods: Vec<String>,
    /// (method, operationId), for the methods that name one.
    operations: Vec<(String, String)>,
}

impl AllowedMethods {
    /// From the served spec's `paths`.
    pub fn from_spec(spec: &str) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let mut routes = Vec::new();
        if let Some(paths) = spec["paths"].as_object() {
            for (path, ops) in paths {
                let ops = ops.as_object().cloned().unwrap_or_default();
                let mut methods: Vec<String> = ops.keys().map(|m| m.to_ascii_uppercase()).collect();
                methods.sort();
                let operations = ops
                    .iter()
                    .filter_map(|(m, op)| {
                        let id = op["operationId"].as_str()?;
                        Some((m.to_ascii_uppercase(), id.to_string()))
                    })
                    .collect();
                routes.push(SpecRoute {
                    template: split(path),
                    methods,
                    operations,
                });
            }
        }
        Self { routes }
    }

    /// The spec route a request path falls on: a literal segment beats a `{param}` one
    /// (`/v1/os-hosts/allocations`). Compares segments in place: this runs for every request.
    fn route(&self, path: &str) -> Option<&SpecRoute> {
        let matches = |tpl: &[String]| {
            let mut segs = path.split('/').filter(|s| !s.is_empty());
            tpl.iter().all(|t| {
                segs.next()
                    .is_some_and(|s| t == s || (t.starts_with('{') && t.ends_with('}')))
            }) && segs.next().is_none()
        };
        self.routes
            .iter()
            .filter(|r| matches(&r.template))
            .min_by_key(|r| r.template.iter().filter(|t| t.starts_with('{')).count())
    }

    /// The `Allow` value for a request path, if a route matches it.
    pub fn allow(&self, path: &str) -> Option<String> {
        self.route(path).map(|r| r.methods.join(", "))
    }

    /// The operationId that serves `method` on `path`, if the spec has one.
    pub fn operation(&self, method: &Method, path: &str) -> Option<&str> {
        self.route(path)?
            .operations
            .iter()
            .find(|(m, _)| m == method.as_str())
            .map(|(_, id)| id.as_str())
    }

    /// Every operationId of the spec.
    pub fn operation_ids(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .flat_map(|r| r.operations.iter().map(|(_, id)| id.as_str()))
    }
}

fn split(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs one request through the pipeline and the routes in `ep`.
pub async fn handle<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    pipeline: Arc<Pipeline>,
) -> poem::Result<Response> {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("request", request_id = %request_id);
    let mut routed_path = path.clone();
    let mut resp = async {
        match pipeline.prepare(&mut req).await {
            Err(e) => e.into_http_response(),
            Ok(()) => {
                routed_path = req.uri().path().to_string();
                match ep.call(req).await {
                    Ok(r) => envelope_bare_errors(r.into_response()).await,
                    Err(err) => error_response(err),
                }
            }
        }
    }
    .instrument(span.clone())
    .await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = pipeline.methods.allow(&routed_path)
        && let Ok(v) = HeaderValue::from_str(&allow)
    {
        resp.headers_mut().insert(header::ALLOW, v);
    }

    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    headers.insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    headers.insert(
        header::VARY,
        HeaderValue::from_static("OpenStack-API-Version"),
    );
    let status = resp.status().as_u16();
    let took = started.elapsed();
    // By the path as routed (`.json` stripped), so `/v1/leases.json` counts as listLeases.
    pipeline.metrics.observe_request(
        pipeline.methods.operation(&method, &routed_path),
        status,
        took,
    );
    let latency_ms = took.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        tracing::info!(
            target: "blazar_server::access",
            %method,
            path = %path,
            status,
            latency_ms = format_args!("{latency_ms:.2}"),
            "request"
        )
    });
    Ok(resp)
}

/// A client's `req-<uuid>` id is kept (as upstream does); anything else gets a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.strip_prefix("req-")
                .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok() && u.len() == 36)
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4()))
}

fn is_api_path(path: &str) -> bool {
    path == "/" || path == "/versions" || path == "/v1" || path.starts_with("/v1/")
}

impl Pipeline {
    async fn prepare(&self, req: &mut Request) -> Result<(), ApiError> {
        let path = req.uri().path().to_string();
        if !is_api_path(&path) {
            return Ok(());
        }
        let suffix = strip_json_suffix(req, &path)?;
        check_api_version(req.headers())?;
        if !suffix {
            check_accept(req.headers())?;
        }
        if path == "/v1" || path.starts_with("/v1/") {
            let caller = self
                .auth
                .authenticate(req.headers())
                .await
                .map_err(|e| ApiError::from(e).challenged(self.auth.challenge()))?;
            req.extensions_mut().insert(caller);
        }
        if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
            self.check_body(req, suffix).await?;
        }
        Ok(())
    }

    /// Body rules: at most `max_body_bytes`; JSON by Content-Type or `.json` suffix (415 otherwise);
    /// well-formed (400); an object (400). An empty body counts as `{}`, as upstream.
    async fn check_body(&self, req: &mut Request, suffix: bool) -> Result<(), Refusal> {
        let too_large = || {
            Refusal::TooLarge(format!(
                "The request body is larger than the limit of {} bytes",
                self.max_body_bytes
            ))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // A client that waits for `100 Continue` has sent nothing yet, so there is nothing to
        // drain; one that declares more than the drain bound would be cut off anyway.
        let drain_after_refusal = !req.headers().contains_key(header::EXPECT)
            && declared.is_none_or(|len| len <= DRAIN_MAX_BYTES);
        let mut body = req.take_body().into_async_read();
        if declared.is_some_and(|len| len > self.max_body_bytes as u64) {
            if drain_after_refusal {
                drain(body).await;
            }
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        (&mut body)
            .take(self.max_body_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| {
                Refusal::UnreadableBody(format!("Could not read the request body: {e}"))
            })?;
        if bytes.len() > self.max_body_bytes {
            if drain_after_refusal {
                drain(body).await;
            }
            return Err(too_large());
        }
        let bytes = bytes::Bytes::from(bytes);
        // Only a body of no bytes at all means `{}`, as upstream reads `Content-Length: 0`;
        // whitespace alone is not JSON (upstream fails to parse it too).
        let bytes = if bytes.is_empty() {
            bytes::Bytes::from_static(b"{}")
        } else {
            if !suffix {
                let ct = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                if !ct.as_deref().is_some_and(is_json_media_type) {
                    return Err(Refusal::UnsupportedMediaType(format!(
                        "Content type {} isn't supported: send the body as application/json \
                         or add .json to the URL",
                        ct.map(|c| format!("'{}'", c.chars().take(80).collect::<String>()))
                            .unwrap_or_else(|| "(none)".into())
                    )));
                }
            }
            let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                Refusal::MalformedBody(format!("The request body is not valid JSON: {e}"))
            })?;
            if !value.is_object() {
                return Err(Refusal::MalformedBody(format!(
                    "The request body must be a JSON object, not {}",
                    crate::domain::input::json_kind(&value)
                )));
            }
            bytes
        };
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        req.set_body(bytes);
        Ok(())
    }
}

/// After a 413, at most this much more of the body is read and thrown away, for at most
/// `DRAIN_MAX_TIME`, before the answer goes out. Clients that write their whole body before
/// reading (Python's http.client and urllib) otherwise get "Broken pipe" or a reset instead of
/// the envelope, because closing a socket with unread data resets the connection.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards the rest of a refused body, within the bounds above.
async fn drain(body: impl tokio::io::AsyncRead + Unpin) {
    let mut rest = body.take(DRAIN_MAX_BYTES);
    let _ = tokio::time::timeout(
        DRAIN_MAX_TIME,
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
}

fn is_json_media_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `/v1/leases.json` -> `/v1/leases`; `/v1/os-hosts/.json` -> `/v1/os-hosts` (upstream's form).
fn strip_json_suffix(req: &mut Request, path: &str) -> Result<bool, Refusal> {
    let Some(stem) = path.strip_suffix(".json") else {
        return Ok(false);
    };
    if !path.starts_with("/v1/") {
        return Ok(false);
    }
    let stem = match stem.strip_suffix('/') {
        Some(s) if s.len() > "/v1".len() => s,
        _ => stem,
    };
    let new = match req.uri().query() {
        Some(q) => format!("{stem}?{q}"),
        None => stem.to_string(),
    };
    *req.uri_mut() = new
        .parse::<Uri>()
        .map_err(|_| Refusal::MalformedUrl("The request URL is malformed".into()))?;
    Ok(true)
}

/// `OpenStack-API-Version: reservation 1.0` (or `latest`) is the only version there is.
fn check_api_version(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(v) = headers.get(API_VERSION_HEADER) else {
        return Ok(());
    };
    let raw = v.to_str().unwrap_or("").trim();
    if !raw.to_ascii_lowercase().starts_with("reservation") {
        // The header may name other services' versions; none for us means the default.
        return Ok(());
    }
    // As given (upstream's messages print it so), after the ASCII service name.
    let version = raw["reservation".len()..].trim();
    let version = &version.chars().take(40).collect::<String>();
    if version.eq_ignore_ascii_case("latest") || version == "1.0" {
        return Ok(());
    }
    let well_formed = version
        .split_once('.')
        .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
    if well_formed {
        // Upstream's text.
        Err(Refusal::UnsupportedVersion(format!(
            "Version {version} is not supported by the API. Minimum is 1.0 and maximum is 1.0."
        )))
    } else {
        // Upstream's text, then which header.
        Err(Refusal::MalformedVersion(format!(
            "API Version String {version} is of invalid format. Must be of format \
             MajorNum.MinorNum. (OpenStack-API-Version: reservation {version})"
        )))
    }
}

/// No Accept header is fine (upstream fails on it); one that excludes JSON gets 406.
fn check_accept(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(());
    };
    let accept = String::from_utf8_lossy(accept.as_bytes()).to_ascii_lowercase();
    if accept.trim().is_empty() {
        return Ok(());
    }
    let ok = accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && matches!(range, "application/json" | "application/*" | "*/*")
    });
    if ok {
        Ok(())
    } else {
        Err(Refusal::NotAcceptable(format!(
            "Only application/json responses are available; the Accept header asks for '{}'",
            accept.chars().take(100).collect::<String>()
        )))
    }
}

/// Turns a framework error into the envelope.
fn error_response(err: poem::Error) -> Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.clone().into_http_response();
    }
    let status = err.status();
    let message = match status {
        StatusCode::NOT_FOUND => "The resource could not be found".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "The method is not allowed for this resource".to_string(),
        s if s.is_server_error() => {
            tracing::error!(error = %err, "request failed");
            "The server could not complete the request; the error is logged with this request's \
             X-Openstack-Request-Id"
                .to_string()
        }
        _ => err.to_string(),
    };
    ApiError::from_status(status, message).into_http_response()
}

/// Error responses produced without the envelope (a caught panic, a static file error) get it.
async fn envelope_bare_errors(resp: Response) -> Response {
    let status = resp.status();
    if status.as_u16() < 400 {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    if is_json {
        return resp;
    }
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), "request failed");
    }
    let text = resp.into_body().into_string().await.unwrap_or_default();
    let message = if status.is_server_error() || text.trim().is_empty() {
        status.canonical_reason().unwrap_or("Error").to_string()
    } else {
        text.chars().take(500).collect()
    };
    ApiError::from_status(status, message).into_http_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn accept_rules() {
        assert!(check_accept(&headers(&[])).is_ok());
        assert!(check_accept(&headers(&[("accept", "*/*")])).is_ok());
        assert!(check_accept(&headers(&[("accept", "application/json")])).is_ok());
        assert!(check_accept(&headers(&[("accept", "text/html, application/*;q=0.5")])).is_ok());
        assert!(check_accept(&headers(&[("accept", "text/html")])).is_err());
        assert!(check_accept(&headers(&[("accept", "application/json;q=0")])).is_err());
    }

    #[test]
    fn api_version_rules() {
        assert!(check_api_version(&headers(&[])).is_ok());
        assert!(
            check_api_version(&headers(&[("openstack-api-version", "reservation 1.0")])).is_ok()
        );
        assert!(
            check_api_version(&headers(&[("openstack-api-version", "reservation latest")])).is_ok()
        );
        let e = check_api_version(&headers(&[("openstack-api-version", "reservation 2.0")]))
            .unwrap_err();
        assert_eq!(ApiError::from(e).status, StatusCode::NOT_ACCEPTABLE);
        let e =
            check_api_version(&headers(&[("openstack-api-version", "reservation x")])).unwrap_err();
        assert_eq!(ApiError::from(e).status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn request_ids() {
        let given = "req-6f9c1a3e-2b4d-4e5f-8a7b-9c0d1e2f3a4b";
        let h = headers(&[(
            "x-openstack-request-id",
            "req-6f9c1a3e-2b4d-4e5f-8a7b-9c0d1e2f3a4b",
        )]);
        assert_eq!(request_id(&h), given);
        let h = headers(&[("x-openstack-request-id", "req-not-a-uuid")]);
        assert_ne!(request_id(&h), "req-not-a-uuid");
        assert!(request_id(&HeaderMap::new()).starts_with("req-"));
    }

    #[test]
    fn allowed_methods_come_from_the_spec() {
        let spec = r#"{"paths": {"/v1/leases": {"get": {}, "post": {}},
            "/v1/os-hosts/{host_id}": {"get": {}, "put": {}, "delete": {}},
            "/v1/os-hosts/allocations": {"get": {}}}}"#;
        let m = AllowedMethods::from_spec(spec);
        assert_eq!(m.allow("/v1/leases").as_deref(), Some("GET, POST"));
        assert_eq!(
            m.allow("/v1/os-hosts/7").as_deref(),
            Some("DELETE, GET, PUT")
        );
        assert_eq!(m.allow("/v1/os-hosts/allocations").as_deref(), Some("GET"));
        assert_eq!(m.allow("/v1/nothing"), None);
    }

    #[test]
    fn operation_ids_come_from_the_spec() {
        let spec = r#"{"paths": {"/v1/leases": {"get": {"operationId": "listLeases"}},
            "/v1/os-hosts/{host_id}": {"get": {"operationId": "getHost"}},
            "/v1/os-hosts/allocations": {"get": {"operationId": "listAllocations"}}}}"#;
        let m = AllowedMethods::from_spec(spec);
        assert_eq!(m.operation(&Method::GET, "/v1/leases"), Some("listLeases"));
        assert_eq!(m.operation(&Method::GET, "/v1/leases/"), Some("listLeases"));
        assert_eq!(m.operation(&Method::POST, "/v1/leases"), None);
        assert_eq!(m.operation(&Method::GET, "/v1/os-hosts/7"), Some("getHost"));
        assert_eq!(
            m.operation(&Method::GET, "/v1/os-hosts/allocations"),
            Some("listAllocations")
        );
        assert_eq!(m.operation(&Method::GET, "/v1/os-hosts/7/x"), None);
        assert_eq!(m.operation(&Method::GET, "/v1"), None);
        let mut ids: Vec<&str> = m.operation_ids().collect();
        ids.sort();
        assert_eq!(ids, ["getHost", "listAllocations", "listLeases"]);
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("Application/JSON"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
    }
}
