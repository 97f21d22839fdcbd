//! Who is calling, and may they call this route.
//!
//! - [`JwtVerifier`]: user bearer tokens from the configured OIDC issuer (RFC 8725 rules).
//! - [`ApiKeyStore`]: machine API keys, stored only as an HMAC.
//! - [`RouteRule`] tables + [`enforce`]: the one place where every route's access is decided.
//!
//! Invariants:
//! - a route missing from its function's table is refused (fail closed);
//! - the tenant of every data access comes from [`Principal`], which only this crate creates from
//!   a verified token or key — never from the path, query or body;
//! - tokens and keys are never logged; each rejection logs one reason code.

mod api_key;
mod jwt;
mod layer;

pub use api_key::{ApiKeyRecord, ApiKeyStore, GeneratedKey, KEY_PREFIX, NewApiKey, parse_key};
pub use jwt::{JwtVerifier, VerifiedClaims};
pub use layer::{AuthState, enforce};

use std::sync::atomic::{AtomicU64, Ordering};

use app_web::ApiError;
use axum::extract::FromRequestParts;
use http::Method;
use http::request::Parts;
use serde::{Deserialize, Serialize};

/// User roles, ordered: a higher role includes every lower one.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "viewer" => Some(Self::Viewer),
            "editor" => Some(Self::Editor),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }
}

/// API key scopes the product knows.
pub const SCOPES: [&str; 3] = ["analytics:read", "reports:read", "dashboards:read"];

/// What a route requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No authentication (health, the OAuth callback). Named explicitly in the table.
    Public,
    /// A user with at least this role.
    Role(Role),
    /// A user with at least this role, or an API key holding this scope.
    RoleOrScope(Role, &'static str),
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Public => f.write_str("public"),
            Self::Role(role) => write!(f, "{}", role.as_str()),
            Self::RoleOrScope(role, scope) => {
                write!(f, "{} or API key `{scope}`", role.as_str())
            }
        }
    }
}

/// One row of a function's route table.
#[derive(Clone, Debug)]
pub struct RouteRule {
    pub method: Method,
    /// The axum route template, e.g. `/v1/dashboards/{id}`.
    pub path: &'static str,
    pub access: Access,
}

impl RouteRule {
    pub const fn new(method: Method, path: &'static str, access: Access) -> Self {
        Self {
            method,
            path,
            access,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    User { role: Option<Role> },
    ApiKey { key_id: String, scopes: Vec<String> },
}

/// The authenticated caller. Only this crate constructs it (from a verified credential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    tenant: String,
    subject: String,
    credential: Credential,
}

impl Principal {
    pub(crate) fn new(tenant: String, subject: String, credential: Credential) -> Self {
        Self {
            tenant,
            subject,
            credential,
        }
    }
    /// The tenant every data access of this request is keyed by.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    /// The user's `sub`, or `apikey:<id>` for a machine.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn credential(&self) -> &Credential {
        &self.credential
    }
    pub fn role(&self) -> Option<Role> {
        match &self.credential {
            Credential::User { role } => *role,
            Credential::ApiKey { .. } => None,
        }
    }
    pub fn has_role(&self, needed: Role) -> bool {
        self.role().is_some_and(|r| r >= needed)
    }
    pub fn is_user(&self) -> bool {
        matches!(self.credential, Credential::User { .. })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Present only when `enforce` authenticated the request.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// Why a request was refused. The code is logged and counted; the client sees only 401/403.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing_credentials")]
    MissingCredentials,
    #[error("ambiguous_credentials")]
    AmbiguousCredentials,
    #[error("malformed_token")]
    Malformed,
    #[error("token_too_large")]
    TooLarge,
    #[error("alg_not_allowed")]
    AlgorithmNotAllowed,
    #[error("crit_unsupported")]
    CritUnsupported,
    #[error("missing_kid")]
    MissingKid,
    #[error("unknown_kid")]
    UnknownKid,
    #[error("key_alg_mismatch")]
    KeyAlgorithmMismatch,
    #[error("bad_signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not_yet_valid")]
    NotYetValid,
    #[error("wrong_issuer")]
    WrongIssuer,
    #[error("wrong_audience")]
    WrongAudience,
    #[error("missing_claim")]
    MissingClaim,
    #[error("invalid_claim")]
    InvalidClaim,
    #[error("missing_tenant")]
    MissingTenant,
    #[error("api_key_invalid")]
    ApiKeyInvalid,
    #[error("api_key_revoked")]
    ApiKeyRevoked,
    #[error("api_key_expired")]
    ApiKeyExpired,
    #[error("insufficient_role")]
    InsufficientRole,
    #[error("insufficient_scope")]
    InsufficientScope,
    #[error("api_key_not_allowed")]
    ApiKeyNotAllowed,
    #[error("route_not_in_table")]
    RouteNotInTable,
    #[error("jwks_unavailable")]
    JwksUnavailable,
    #[error("storage_unavailable")]
    StorageUnavailable,
}

impl Rejection {
    /// 401 when we do not know who is calling; 403 when we do and the answer is no.
    pub fn to_api_error(self) -> ApiError {
        match self {
            Self::MissingTenant => ApiError::Forbidden("the token carries no tenant".into()),
            Self::InsufficientRole => {
                ApiError::Forbidden("your role does not allow this operation".into())
            }
            Self::InsufficientScope => {
                ApiError::Forbidden("the API key lacks the scope this route needs".into())
            }
            Self::ApiKeyNotAllowed => {
                ApiError::Forbidden("this route is not available to API keys".into())
            }
            Self::RouteNotInTable => ApiError::Forbidden("route not available".into()),
            Self::StorageUnavailable => ApiError::unavailable(),
            _ => ApiError::Unauthorized,
        }
    }
}

static REJECTIONS: AtomicU64 = AtomicU64::new(0);

/// Total rejections in this process (the per-reason metric goes to CloudWatch via the log line).
pub fn rejection_count() -> u64 {
    REJECTIONS.load(Ordering::Relaxed)
}

pub(crate) fn record_rejection(reason: Rejection) {
    REJECTIONS.fetch_add(1, Ordering::Relaxed);
    app_telemetry::metrics::auth_rejected(&reason.to_string());
    tracing::warn!(target: "auth", reason = %reason, metric = "AuthRejected", "auth rejected");
}
