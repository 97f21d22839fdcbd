//! HTTP plumbing shared by every function: the one error type (RFC 9457 problem+json), request
//! ids, the per-request log line, security headers, CORS, body limits and JSON extraction.
//!
//! Invariants:
//! - every 4xx/5xx response leaving a router built with [`finish`] is `application/problem+json`
//!   and carries the request id;
//! - every response carries the security headers;
//! - handlers never see a body over [`MAX_BODY_BYTES`].

mod error;
mod json;
mod middleware;

pub use error::{ApiError, FieldError, Problem};
pub use json::{ApiJson, ApiQuery, PageParams, optional_json};
pub use middleware::{
    LoggedTenant, REQUEST_ID_HEADER, RequestId, current_request_id, is_cold_start_consumed,
};

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Largest request body accepted (API Gateway's own limit is 10 MB; ours is tighter).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Decides whether a browser origin may call the API (the allowlist comes from config, which can
/// change at runtime, hence a function rather than a list).
pub type OriginPolicy = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Wraps a function's router with everything every route needs. Layers run outside-in:
/// request context (id, log line, headers, problem bodies) → CORS → body limit → routes.
/// (`Router::layer` wraps each route, so the request-context layer still sees `MatchedPath`.)
pub fn finish(router: Router, origins: OriginPolicy) -> Router {
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(cors_layer(origins))
        .layer(axum::middleware::from_fn(middleware::request_context))
}

/// CORS for browser callers: only allowlisted origins, no credentials (the API authenticates
/// with bearer tokens, never cookies), so `*` never meets credentials.
pub fn cors_layer(origins: OriginPolicy) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().map(|o| origins(o)).unwrap_or(false)
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            http::header::IF_MATCH,
            http::header::IF_NONE_MATCH,
            HeaderName::from_static("x-api-key"),
        ])
        .expose_headers([
            http::header::ETAG,
            http::header::LOCATION,
            http::header::RETRY_AFTER,
            HeaderName::from_static(REQUEST_ID_HEADER),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The body of every `GET /v1/<group>/health`: no auth, reveals nothing but liveness.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

pub async fn health() -> ApiJson<Health> {
    ApiJson(Health { status: "ok" })
}

/// Runs a router as a Lambda function behind API Gateway (REST, v1 events).
pub async fn run_lambda(router: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(router).await
}
