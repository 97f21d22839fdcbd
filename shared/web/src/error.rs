//! The one error type of the HTTP layer and its RFC 9457 rendering. Every typed error of the
//! domain and library crates is mapped into [`ApiError`] in exactly one `From` impl or call site;
//! this file maps `ApiError` to a status.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::middleware::current_request_id;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Authentication missing or failed. Deliberately without detail.
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Also used for another tenant's resource, so ids cannot be probed.
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("payload too large")]
    PayloadTooLarge(String),
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    #[error("unprocessable: {detail}")]
    Unprocessable {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// The GA connection's Google grant is gone; the user must reconnect.
    #[error("connection {connection_id} needs re-authorization")]
    NeedsReauth { connection_id: String },
    #[error("precondition required: {0}")]
    PreconditionRequired(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("bad gateway: {0}")]
    BadGateway(String),
    /// A dependency (DynamoDB, KMS, Secrets Manager, Google) failed; detail stays in the logs.
    #[error("service unavailable")]
    ServiceUnavailable { retry_after_secs: u64 },
    /// A bug. The detail is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn unprocessable(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        Self::Unprocessable { detail, errors }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::unprocessable(vec![FieldError::new(field, message)])
    }

    pub fn unavailable() -> Self {
        Self::ServiceUnavailable {
            retry_after_secs: 2,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::NeedsReauth { .. } => StatusCode::CONFLICT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told. Never includes internal detail for 5xx.
    fn public_detail(&self) -> Option<String> {
        match self {
            Self::BadRequest(d)
            | Self::Forbidden(d)
            | Self::Conflict(d)
            | Self::PayloadTooLarge(d)
            | Self::UnsupportedMediaType(d)
            | Self::PreconditionRequired(d)
            | Self::BadGateway(d) => Some(d.clone()),
            Self::Unprocessable { detail, .. } => Some(detail.clone()),
            Self::NeedsReauth { connection_id } => Some(format!(
                "Google no longer accepts this connection's authorization; reconnect it with POST /v1/ga/connections/authorize (connection {connection_id})"
            )),
            Self::Unauthorized => Some("valid credentials are required".into()),
            Self::NotFound => Some("the resource does not exist".into()),
            Self::PreconditionFailed => {
                Some("the resource changed since it was read (If-Match is stale)".into())
            }
            Self::TooManyRequests { .. } => Some("too many requests, retry later".into()),
            Self::ServiceUnavailable { .. } => {
                Some("a dependency is unavailable, retry later".into())
            }
            Self::MethodNotAllowed | Self::Internal(_) => None,
        }
    }

    /// The problem body's `code` (stable, for clients to branch on).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PreconditionFailed => "precondition_failed",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unprocessable { .. } => "validation_failed",
            Self::PreconditionRequired(_) => "precondition_required",
            Self::NeedsReauth { .. } => "ga_needs_reauth",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::BadGateway(_) => "bad_gateway",
            Self::ServiceUnavailable { .. } => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

/// The RFC 9457 body. `code` and `request_id` (and `errors` for validation) are extension members.
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: &'static str,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub code: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: Option<String>) -> Self {
        Self {
            type_uri: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            code: code.to_string(),
            request_id: current_request_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            errors: Vec::new(),
        }
    }

    pub fn into_response_with(self, status: StatusCode) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut problem = Problem::new(status, self.code(), self.public_detail());
        if let Self::Unprocessable { errors, .. } = &self {
            problem.errors = errors.clone();
        }
        let mut response = problem.into_response_with(status);
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            Self::TooManyRequests { retry_after_secs }
            | Self::ServiceUnavailable { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// Storage failures, when the handler has no more specific meaning for them.
impl From<app_storage::StorageError> for ApiError {
    fn from(error: app_storage::StorageError) -> Self {
        use app_storage::StorageError as E;
        match error {
            E::ConditionFailed | E::TransactionCancelled(_) => {
                Self::Conflict("the resource changed concurrently; retry".into())
            }
            E::InvalidCursor => {
                Self::BadRequest("`cursor` is invalid or belongs to another list".into())
            }
            E::Corrupt(detail) => Self::Internal(detail),
            E::Unavailable(detail) => {
                tracing::warn!(%detail, "dynamodb unavailable");
                Self::unavailable()
            }
        }
    }
}

/// KMS envelope failures: KMS unavailable is retryable (503); an envelope that does not open is a
/// data-integrity problem (500, detail only in the logs).
impl From<app_crypto::CipherError> for ApiError {
    fn from(error: app_crypto::CipherError) -> Self {
        match error {
            app_crypto::CipherError::Kms(detail) => {
                tracing::warn!(%detail, "kms unavailable");
                Self::unavailable()
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Google failures after our retries: rate limits → 503 with Retry-After, outages → 502,
/// a request Google refuses → 422 with Google's message, a revoked grant → 409.
impl From<app_google::GoogleError> for ApiError {
    fn from(error: app_google::GoogleError) -> Self {
        use app_google::GoogleError as G;
        match error {
            G::InvalidGrant | G::Unauthenticated => {
                Self::Conflict("Google refused the authorization; reconnect".into())
            }
            G::RateLimited { retry_after_secs } => Self::ServiceUnavailable { retry_after_secs },
            G::Unavailable(detail) => {
                tracing::warn!(%detail, "google unavailable");
                Self::BadGateway("Google Analytics did not answer; retry later".into())
            }
            G::Rejected { message, .. } => Self::Unprocessable {
                detail: format!("Google Analytics refused the query: {message}"),
                errors: Vec::new(),
            },
            G::Config(detail) => Self::Internal(detail),
        }
    }
}

impl From<app_connections::ConnectionError> for ApiError {
    fn from(error: app_connections::ConnectionError) -> Self {
        use app_connections::ConnectionError as C;
        match error {
            C::NotFound => Self::NotFound,
            C::NeedsReauth { connection_id } => Self::NeedsReauth { connection_id },
            C::Google(e) => e.into(),
            C::Cipher(e) => e.into(),
            C::Storage(e) => e.into(),
        }
    }
}
