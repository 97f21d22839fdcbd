//! Connection routes: authorize, the OAuth callback, list/get/select/delete.

use app_auth::{Access, Principal, Role, RouteRule};
use app_config::GoogleConfig;
use app_connections::{ConnectionItem, ConnectionStatus, PendingConnection, TokenPair};
use app_google::{GaProperty, SCOPE_ANALYTICS};
use app_web::{ApiError, ApiJson, ApiQuery, PageParams};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;

/// Who may call what (docs/security.md reproduces every function's table).
pub static ROUTES: &[RouteRule] = &[
    RouteRule::new(Method::GET, "/v1/ga/health", Access::Public),
    RouteRule::new(
        Method::POST,
        "/v1/ga/connections/authorize",
        Access::Role(Role::Editor),
    ),
    // Google redirects the browser here: no bearer; the single-use state authenticates it.
    RouteRule::new(Method::GET, "/v1/ga/oauth/callback", Access::Public),
    RouteRule::new(
        Method::GET,
        "/v1/ga/connections",
        Access::Role(Role::Viewer),
    ),
    RouteRule::new(
        Method::GET,
        "/v1/ga/connections/{id}",
        Access::Role(Role::Viewer),
    ),
    RouteRule::new(
        Method::PATCH,
        "/v1/ga/connections/{id}",
        Access::Role(Role::Editor),
    ),
    RouteRule::new(
        Method::DELETE,
        "/v1/ga/connections/{id}",
        Access::Role(Role::Admin),
    ),
    RouteRule::new(
        Method::POST,
        "/v1/ga/reports:run",
        Access::RoleOrScope(Role::Viewer, "reports:read"),
    ),
    RouteRule::new(Method::POST, "/v1/ga/reports", Access::Role(Role::Editor)),
    RouteRule::new(
        Method::GET,
        "/v1/ga/reports",
        Access::RoleOrScope(Role::Viewer, "reports:read"),
    ),
    RouteRule::new(
        Method::GET,
        "/v1/ga/reports/{id}",
        Access::RoleOrScope(Role::Viewer, "reports:read"),
    ),
    RouteRule::new(
        Method::DELETE,
        "/v1/ga/reports/{id}",
        Access::Role(Role::Editor),
    ),
];

#[utoipa::path(get, path = "/v1/ga/health", tag = "ga",
    responses((status = 200, body = app_web::Health)))]
pub async fn health() -> impl IntoResponse {
    app_web::health().await
}

pub(crate) async fn google_config(state: &AppState) -> Result<GoogleConfig, ApiError> {
    state
        .config
        .current()
        .await
        .google
        .clone()
        .ok_or(ApiError::ServiceUnavailable {
            retry_after_secs: 60,
        })
}

/// Connection ids are UUIDs; anything else cannot exist.
pub(crate) fn plain_id(id: &str) -> Result<&str, ApiError> {
    (id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then_some(id)
        .ok_or(ApiError::NotFound)
}

/// What the API shows of a connection: never a token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionView {
    id: String,
    google_email: String,
    selected_property: Option<String>,
    available_properties: Vec<GaProperty>,
    status: ConnectionStatus,
    scopes: Vec<String>,
    created_at: String,
    created_by: String,
    last_refreshed_at: Option<String>,
}

impl From<ConnectionItem> for ConnectionView {
    fn from(item: ConnectionItem) -> Self {
        Self {
            id: item.id,
            google_email: item.google_email,
            selected_property: item.selected_property,
            available_properties: item.properties,
            status: item.status,
            scopes: item.scopes,
            created_at: item.created_at,
            created_by: item.created_by,
            last_refreshed_at: item.last_refreshed_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuthorizeResponse {
    /// Send the browser here (Google's consent screen).
    authorization_url: String,
    /// The state expires at this time (RFC 3339).
    expires_at: String,
}

#[utoipa::path(post, path = "/v1/ga/connections/authorize", tag = "ga",
    responses((status = 200, body = AuthorizeResponse)))]
pub async fn authorize(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<ApiJson<AuthorizeResponse>, ApiError> {
    let config = google_config(&state).await?;
    let mut random = [0u8; 32];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| ApiError::unavailable())?;
    let oauth_state = URL_SAFE_NO_PAD.encode(random);
    let connection_id = uuid::Uuid::now_v7().to_string();
    let (url, verifier) = state
        .connections
        .google()
        .authorization_url(&config, &oauth_state)?;
    state
        .connections
        .open_state(
            &oauth_state,
            principal.tenant(),
            principal.subject(),
            &connection_id,
            &verifier,
        )
        .await?;
    let expires_at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(
            app_connections::STATE_TTL_SECS,
        ))
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(ApiJson(AuthorizeResponse {
        authorization_url: url,
        expires_at,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    scope: Option<String>,
}

/// 303 to the frontend with the outcome; never an error page, never a token in the URL.
fn back_to_frontend(frontend: &str, query: &str) -> Response {
    let separator = if frontend.contains('?') { '&' } else { '?' };
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{frontend}{separator}{query}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn failed(frontend: &str, reason: &str) -> Response {
    tracing::info!(reason, "ga connect failed");
    back_to_frontend(frontend, &format!("ga=error&reason={reason}"))
}

#[utoipa::path(get, path = "/v1/ga/oauth/callback", tag = "ga", params(CallbackParams),
    responses((status = 303, description = "Redirect to the frontend with `ga=connected&connection_id=` or `ga=error&reason=`")))]
pub async fn callback(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CallbackParams>,
) -> Result<Response, ApiError> {
    let config = google_config(&state).await?;
    let frontend = config.frontend_url.clone();
    // The state is consumed first, whatever else the request says: it is single-use.
    let Some(raw_state) = params.state.as_deref() else {
        return Ok(failed(&frontend, "invalid_state"));
    };
    let Some(pending) = state.connections.consume_state(raw_state).await? else {
        return Ok(failed(&frontend, "invalid_state"));
    };
    if let Some(error) = params.error.as_deref() {
        let reason = if error == "access_denied" {
            "access_denied"
        } else {
            "google_error"
        };
        return Ok(failed(&frontend, reason));
    }
    let Some(code) = params.code.as_deref() else {
        return Ok(failed(&frontend, "invalid_request"));
    };
    match connect(&state, &config, &pending, code, params.scope.as_deref()).await {
        Ok(connection_id) => Ok(back_to_frontend(
            &frontend,
            &format!("ga=connected&connection_id={connection_id}"),
        )),
        Err(reason) => Ok(failed(&frontend, reason)),
    }
}

/// Exchange, check, look up, store. Errors are reason codes for the frontend.
async fn connect(
    state: &AppState,
    config: &GoogleConfig,
    pending: &PendingConnection,
    code: &str,
    granted_in_redirect: Option<&str>,
) -> Result<String, &'static str> {
    let google = state.connections.google();
    let tokens = match google.exchange_code(config, code, &pending.verifier).await {
        Ok(tokens) => tokens,
        Err(app_google::GoogleError::InvalidGrant) => return Err("invalid_grant"),
        Err(_) => return Err("google_unavailable"),
    };
    // The user may grant less than asked (granular consent).
    let mut scopes = tokens.scopes.clone();
    if scopes.is_empty()
        && let Some(granted) = granted_in_redirect
    {
        scopes = granted.split(' ').map(str::to_string).collect();
    }
    if !scopes.iter().any(|s| s == SCOPE_ANALYTICS) {
        if let Err(error) = google.revoke(config, &tokens.access_token).await {
            tracing::warn!(%error, "could not revoke an insufficient grant");
        }
        return Err("insufficient_scope");
    }
    let Some(refresh_token) = tokens.refresh_token.clone() else {
        return Err("no_refresh_token");
    };
    let email = google
        .account_email(config, &tokens.access_token)
        .await
        .map_err(|_| "google_unavailable")?;
    let properties = google
        .properties(config, &tokens.access_token)
        .await
        .map_err(|_| "google_unavailable")?;
    let pair = TokenPair {
        access_token: tokens.access_token.clone(),
        refresh_token,
    };
    let item = state
        .connections
        .create(pending, email, properties, scopes, &pair, tokens.expires_at)
        .await
        .map_err(|error| {
            tracing::error!(%error, "storing the GA connection failed");
            "storage_unavailable"
        })?;
    Ok(item.id)
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionPage {
    items: Vec<ConnectionView>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/ga/connections", tag = "ga", params(PageParams),
    responses((status = 200, body = ConnectionPage)))]
pub async fn list_connections(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<ApiJson<ConnectionPage>, ApiError> {
    let page = state
        .connections
        .list(principal.tenant(), params.limit()?, params.cursor())
        .await?;
    Ok(ApiJson(ConnectionPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/ga/connections/{id}", tag = "ga", params(("id" = String, Path)),
    responses((status = 200, body = ConnectionView), (status = 404)))]
pub async fn get_connection(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<ConnectionView>, ApiError> {
    let item = state
        .connections
        .get(principal.tenant(), plain_id(&id)?)
        .await?;
    Ok(ApiJson(item.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    /// A property id from `available_properties`.
    selected_property: String,
}

#[utoipa::path(patch, path = "/v1/ga/connections/{id}", tag = "ga", params(("id" = String, Path)),
    request_body = ConnectionPatch,
    responses((status = 200, body = ConnectionView), (status = 404), (status = 422)))]
pub async fn patch_connection(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ConnectionPatch>,
) -> Result<ApiJson<ConnectionView>, ApiError> {
    let id = plain_id(&id)?;
    let item = state.connections.get(principal.tenant(), id).await?;
    if !item
        .properties
        .iter()
        .any(|p| p.id == patch.selected_property)
    {
        let allowed: Vec<&str> = item.properties.iter().map(|p| p.id.as_str()).collect();
        return Err(ApiError::field(
            "selected_property",
            format!(
                "not a property this Google account can see; one of: {}",
                allowed.join(", ")
            ),
        ));
    }
    let updated = state
        .connections
        .select_property(principal.tenant(), id, &patch.selected_property)
        .await?;
    Ok(ApiJson(updated.into()))
}

#[derive(Serialize, ToSchema)]
pub struct Disconnected {
    deleted: bool,
    /// Whether Google confirmed the revocation; false means it failed (logged) and the user may
    /// also remove the app at https://myaccount.google.com/permissions.
    revoked_at_google: bool,
}

#[utoipa::path(delete, path = "/v1/ga/connections/{id}", tag = "ga", params(("id" = String, Path)),
    responses((status = 200, body = Disconnected), (status = 404)))]
pub async fn delete_connection(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<Disconnected>, ApiError> {
    let id = plain_id(&id)?;
    let item = state.connections.get(principal.tenant(), id).await?;
    let config = google_config(&state).await?;
    // Revoke first (the tokens must still be readable), then delete locally whatever happened.
    let revoked = match state.connections.tokens(&item).await {
        Ok(tokens) => match state
            .connections
            .google()
            .revoke(&config, &tokens.refresh_token)
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, connection = %id, "revocation at Google failed; deleting locally");
                false
            }
        },
        Err(error) => {
            tracing::warn!(%error, connection = %id, "tokens unreadable; deleting locally");
            false
        }
    };
    state.connections.delete(principal.tenant(), id).await?;
    Ok(ApiJson(Disconnected {
        deleted: true,
        revoked_at_google: revoked,
    }))
}
