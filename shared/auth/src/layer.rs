//! The middleware that authenticates every request and applies its route's rule.

use std::sync::Arc;

use app_config::ConfigHandle;
use app_web::LoggedTenant;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;

use crate::{
    Access, ApiKeyStore, Credential, JwtVerifier, Principal, Rejection, RouteRule, record_rejection,
};

/// Built once per container and shared by every request.
#[derive(Clone)]
pub struct AuthState {
    pub config: Arc<ConfigHandle>,
    pub jwt: Arc<JwtVerifier>,
    pub api_keys: Arc<ApiKeyStore>,
    pub routes: &'static [RouteRule],
}

fn rule_for<'a>(routes: &'a [RouteRule], method: &Method, path: &str) -> Option<&'a RouteRule> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    routes
        .iter()
        .find(|rule| rule.method == *method && rule.path == path)
}

/// Apply with `Router::route_layer` so that only matched routes reach it.
pub async fn enforce(State(auth): State<AuthState>, mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(rule) = rule_for(auth.routes, req.method(), &path) else {
        // Fail closed: a route nobody classified is nobody's.
        tracing::error!(target: "auth", route = %path, "route missing from the route table");
        return reject(Rejection::RouteNotInTable);
    };
    if rule.access == Access::Public {
        return next.run(req).await;
    }
    let principal = match authenticate(&auth, req.headers(), rule.access).await {
        Ok(principal) => principal,
        Err(rejection) => return reject(rejection),
    };
    let tenant = principal.tenant().to_string();
    req.extensions_mut().insert(principal);
    let mut response = next.run(req).await;
    response.extensions_mut().insert(LoggedTenant(tenant));
    response
}

fn reject(rejection: Rejection) -> Response {
    record_rejection(rejection);
    rejection.to_api_error().into_response()
}

async fn authenticate(
    auth: &AuthState,
    headers: &http::HeaderMap,
    access: Access,
) -> Result<Principal, Rejection> {
    let api_key = headers.get("x-api-key");
    let bearer = headers.get(http::header::AUTHORIZATION);
    let config = auth.config.current().await;
    let principal = match (bearer, api_key) {
        (Some(_), Some(_)) => return Err(Rejection::AmbiguousCredentials),
        (None, None) => return Err(Rejection::MissingCredentials),
        (None, Some(key)) => {
            let key = key.to_str().map_err(|_| Rejection::ApiKeyInvalid)?;
            if let Access::Role(_) = access {
                // Check the key anyway so that a wrong key is a 401, not a hint.
                auth.api_keys
                    .authenticate(key, &config.api_key_pepper_bytes())
                    .await?;
                return Err(Rejection::ApiKeyNotAllowed);
            }
            auth.api_keys
                .authenticate(key, &config.api_key_pepper_bytes())
                .await?
        }
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| Rejection::Malformed)?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or(Rejection::Malformed)?;
            let claims = auth.jwt.verify(token, &config.oidc).await?;
            let tenant = claims.tenant.ok_or(Rejection::MissingTenant)?;
            Principal::new(
                tenant,
                claims.subject,
                Credential::User { role: claims.role },
            )
        }
    };
    match (access, principal.credential()) {
        (Access::Public, _) => {}
        (Access::Role(role) | Access::RoleOrScope(role, _), Credential::User { .. }) => {
            if !principal.has_role(role) {
                return Err(Rejection::InsufficientRole);
            }
        }
        (Access::RoleOrScope(_, scope), Credential::ApiKey { scopes, .. }) => {
            if !scopes.iter().any(|s| s == scope) {
                return Err(Rejection::InsufficientScope);
            }
        }
        (Access::Role(_), Credential::ApiKey { .. }) => return Err(Rejection::ApiKeyNotAllowed),
    }
    Ok(principal)
}
