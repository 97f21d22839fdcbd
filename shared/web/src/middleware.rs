//! The outermost middleware: request id, the one log line per request, security headers, and the
//! last-resort conversion of any non-problem error response into problem+json.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, header};

use crate::error::{PROBLEM_JSON, Problem};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// The id of the request being served: API Gateway's request id in Lambda, else a new UUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request id of the current task, when called inside a request.
pub fn current_request_id() -> Option<RequestId> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// Set by the auth layer on the response so that the request log line names the tenant.
#[derive(Clone, Debug)]
pub struct LoggedTenant(pub String);

static COLD: AtomicBool = AtomicBool::new(true);

/// True for the first request this process serves, false after (and marks it consumed).
pub fn is_cold_start_consumed() -> bool {
    COLD.swap(false, Ordering::Relaxed)
}

fn request_id_of(req: &Request) -> RequestId {
    #[allow(irrefutable_let_patterns)]
    if let Some(lambda_http::request::RequestContext::ApiGatewayV1(ctx)) =
        req.extensions()
            .get::<lambda_http::request::RequestContext>()
        && let Some(id) = &ctx.request_id
    {
        return RequestId(Arc::from(id.as_str()));
    }
    // Locally, accept a caller's id when it is short and plain (it is echoed into logs).
    if let Some(id) = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return RequestId(Arc::from(id));
    }
    RequestId(Arc::from(uuid::Uuid::new_v4().to_string()))
}

pub(crate) async fn request_context(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let cold_start = is_cold_start_consumed();
    let request_id = request_id_of(&req);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let mut response = REQUEST_ID
        .scope(request_id.clone(), async move {
            let response = next.run(req).await;
            ensure_problem_body(response)
        })
        .await;

    let status = response.status().as_u16();
    let tenant = response
        .extensions()
        .get::<LoggedTenant>()
        .map(|t| t.0.clone())
        .unwrap_or_default();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        latency_ms = (latency_ms * 1000.0).round() / 1000.0,
        cold_start,
        tenant = %tenant,
        "request"
    );

    app_telemetry::metrics::request(&route, status, latency_ms);
    add_security_headers(response.headers_mut(), &request_id);
    response
}

fn add_security_headers(headers: &mut http::HeaderMap, request_id: &RequestId) {
    if let Ok(value) = HeaderValue::from_str(&request_id.0) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    let defaults: [(header::HeaderName, &'static str); 5] = [
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        // Responses are per caller; handlers that want caching set their own Cache-Control.
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
}

/// Responses produced outside our handlers (axum rejections, 405, a layer's 413) get the same
/// problem body as ours.
fn ensure_problem_body(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    let (parts, _) = response.into_parts();
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    let mut fresh = Problem::new(status, &code, None).into_response_with(status);
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            fresh.headers_mut().insert(name, value.clone());
        }
    }
    fresh
}
