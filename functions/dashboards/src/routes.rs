//! Handlers and the route table. Handlers are small: parse, check, call the store, shape.

use app_auth::{Access, Principal, Role, RouteRule};
use app_web::{ApiError, ApiJson, ApiQuery, FieldError, PageParams};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::model::{
    Dashboard, DashboardInput, DashboardSummary, SettingsUpdate, SettingsValues, SettingsView,
};
use crate::store::WriteError;

/// Who may call what. docs/security.md reproduces this table; a test keeps it equal to the
/// router's OpenAPI document and to template.yaml.
pub static ROUTES: &[RouteRule] = &[
    RouteRule::new(Method::GET, "/v1/dashboards/health", Access::Public),
    RouteRule::new(
        Method::GET,
        "/v1/dashboards",
        Access::RoleOrScope(Role::Viewer, "dashboards:read"),
    ),
    RouteRule::new(Method::POST, "/v1/dashboards", Access::Role(Role::Editor)),
    RouteRule::new(
        Method::GET,
        "/v1/dashboards/{id}",
        Access::RoleOrScope(Role::Viewer, "dashboards:read"),
    ),
    RouteRule::new(
        Method::PUT,
        "/v1/dashboards/{id}",
        Access::Role(Role::Editor),
    ),
    RouteRule::new(
        Method::PATCH,
        "/v1/dashboards/{id}",
        Access::Role(Role::Editor),
    ),
    RouteRule::new(
        Method::DELETE,
        "/v1/dashboards/{id}",
        Access::Role(Role::Editor),
    ),
    RouteRule::new(
        Method::POST,
        "/v1/dashboards/{id}/duplicate",
        Access::Role(Role::Editor),
    ),
    // Any user writes their own preferences; the handler requires admin for the tenant block.
    RouteRule::new(Method::GET, "/v1/settings", Access::Role(Role::Viewer)),
    RouteRule::new(Method::PUT, "/v1/settings", Access::Role(Role::Viewer)),
    RouteRule::new(Method::POST, "/v1/api-keys", Access::Role(Role::Admin)),
    RouteRule::new(Method::GET, "/v1/api-keys", Access::Role(Role::Admin)),
    RouteRule::new(
        Method::DELETE,
        "/v1/api-keys/{id}",
        Access::Role(Role::Admin),
    ),
];

#[utoipa::path(get, path = "/v1/dashboards/health", tag = "dashboards",
    responses((status = 200, body = app_web::Health)))]
pub async fn health() -> impl IntoResponse {
    app_web::health().await
}

// ---- helpers ----

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"v{version}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// `If-Match` → the version it names. Absent → 428; `*` or a foreign tag → 412 (cannot match).
fn required_if_match(headers: &HeaderMap) -> Result<u64, ApiError> {
    let value = headers.get(header::IF_MATCH).ok_or_else(|| {
        ApiError::PreconditionRequired("send If-Match with the ETag you last read".into())
    })?;
    parse_etag(value).ok_or(ApiError::PreconditionFailed)
}

fn optional_if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::IF_MATCH)
        .map(|v| parse_etag(v).ok_or(ApiError::PreconditionFailed))
        .transpose()
}

fn parse_etag(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.strip_prefix("\"v")?.strip_suffix('"')?.parse().ok()
}

/// Dashboard ids are UUIDs; anything else cannot exist (404, not 400, like any missing id).
fn dashboard_id(id: &str) -> Result<&str, ApiError> {
    uuid::Uuid::parse_str(id)
        .ok()
        .filter(|u| u.hyphenated().to_string() == id)
        .map(|_| id)
        .ok_or(ApiError::NotFound)
}

fn write_error(error: WriteError, limit: u32) -> ApiError {
    match error {
        WriteError::NotFound => ApiError::NotFound,
        WriteError::VersionMismatch => ApiError::PreconditionFailed,
        WriteError::LimitReached => ApiError::Conflict(format!(
            "the tenant already has the maximum of {limit} dashboards"
        )),
        WriteError::TooLarge => ApiError::PayloadTooLarge(
            "the dashboard is too large to store; remove widgets or filters".into(),
        ),
        WriteError::Storage(e) => e.into(),
    }
}

fn dashboard_response(status: StatusCode, dashboard: Dashboard) -> Response {
    let mut response = (status, ApiJson(&dashboard)).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(dashboard.version));
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/v1/dashboards/{}", dashboard.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Validates the body and that every widget's connection belongs to the caller's tenant.
async fn check_input(
    state: &AppState,
    tenant: &str,
    input: &DashboardInput,
) -> Result<(), ApiError> {
    let errors = input.validate();
    if !errors.is_empty() {
        return Err(ApiError::unprocessable(errors));
    }
    let wanted = input.connection_ids();
    let found = state.store.existing_connections(tenant, &wanted).await?;
    let errors: Vec<FieldError> = input
        .widgets
        .iter()
        .enumerate()
        .filter(|(_, w)| !found.contains(&w.query.connection_id))
        .map(|(i, _)| {
            FieldError::new(
                format!("widgets[{i}].query.connection_id"),
                "no such GA connection in your tenant",
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(errors))
    }
}

// ---- dashboards ----

#[derive(Serialize, ToSchema)]
pub struct DashboardPage {
    items: Vec<DashboardSummary>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/dashboards", tag = "dashboards", params(PageParams),
    responses((status = 200, body = DashboardPage)))]
pub async fn list_dashboards(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<ApiJson<DashboardPage>, ApiError> {
    let page = state
        .store
        .list(principal.tenant(), params.limit()?, params.cursor())
        .await?;
    Ok(ApiJson(DashboardPage {
        items: page.items.iter().map(DashboardSummary::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(post, path = "/v1/dashboards", tag = "dashboards", request_body = DashboardInput,
    responses((status = 201, body = Dashboard)))]
pub async fn create_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<DashboardInput>,
) -> Result<Response, ApiError> {
    check_input(&state, principal.tenant(), &input).await?;
    let limit = state
        .config
        .current()
        .await
        .limits
        .max_dashboards_per_tenant;
    let dashboard = state
        .store
        .create(principal.tenant(), principal.subject(), input, limit)
        .await
        .map_err(|e| write_error(e, limit))?;
    Ok(dashboard_response(StatusCode::CREATED, dashboard))
}

#[utoipa::path(get, path = "/v1/dashboards/{id}", tag = "dashboards",
    params(("id" = String, Path)),
    responses((status = 200, body = Dashboard), (status = 304), (status = 404)))]
pub async fn get_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = dashboard_id(&id)?;
    let dashboard = state
        .store
        .get(principal.tenant(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let current = etag(dashboard.version);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == current)
        });
    if not_modified {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, current);
        return Ok(response);
    }
    Ok(dashboard_response(StatusCode::OK, dashboard))
}

#[utoipa::path(put, path = "/v1/dashboards/{id}", tag = "dashboards",
    params(("id" = String, Path), ("If-Match" = String, Header)), request_body = DashboardInput,
    responses((status = 200, body = Dashboard), (status = 412), (status = 428)))]
pub async fn replace_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<DashboardInput>,
) -> Result<Response, ApiError> {
    let id = dashboard_id(&id)?;
    let expected = required_if_match(&headers)?;
    check_input(&state, principal.tenant(), &input).await?;
    let dashboard = state
        .store
        .replace(
            principal.tenant(),
            id,
            principal.subject(),
            &input,
            expected,
        )
        .await
        .map_err(|e| write_error(e, 0))?;
    Ok(dashboard_response(StatusCode::OK, dashboard))
}

/// JSON Merge Patch (RFC 7396) over the dashboard's editable fields.
#[utoipa::path(patch, path = "/v1/dashboards/{id}", tag = "dashboards",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = Dashboard), (status = 412), (status = 428)))]
pub async fn patch_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let id = dashboard_id(&id)?;
    let expected = required_if_match(&headers)?;
    if !patch.is_object() {
        return Err(ApiError::field("$", "a merge patch must be a JSON object"));
    }
    let current = state
        .store
        .get(principal.tenant(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if current.version != expected {
        return Err(ApiError::PreconditionFailed);
    }
    let mut document =
        serde_json::to_value(&current.content).map_err(|e| ApiError::Internal(e.to_string()))?;
    json_patch::merge(&mut document, &patch);
    let input: DashboardInput =
        serde_json::from_value(document).map_err(|e| ApiError::Unprocessable {
            detail: format!("the patched dashboard is invalid: {e}"),
            errors: Vec::new(),
        })?;
    check_input(&state, principal.tenant(), &input).await?;
    let dashboard = state
        .store
        .replace(
            principal.tenant(),
            id,
            principal.subject(),
            &input,
            expected,
        )
        .await
        .map_err(|e| write_error(e, 0))?;
    Ok(dashboard_response(StatusCode::OK, dashboard))
}

#[utoipa::path(delete, path = "/v1/dashboards/{id}", tag = "dashboards",
    params(("id" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn delete_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = dashboard_id(&id)?;
    let expected = optional_if_match(&headers)?;
    state
        .store
        .delete(principal.tenant(), id, expected)
        .await
        .map_err(|e| write_error(e, 0))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateRequest {
    /// Defaults to "Copy of <name>".
    name: Option<String>,
}

#[utoipa::path(post, path = "/v1/dashboards/{id}/duplicate", tag = "dashboards",
    params(("id" = String, Path)), request_body(content = Option<DuplicateRequest>),
    responses((status = 201, body = Dashboard), (status = 404)))]
pub async fn duplicate_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = dashboard_id(&id)?;
    let request: Option<DuplicateRequest> = app_web::optional_json(&body)?;
    let source = state
        .store
        .get(principal.tenant(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut content = source.content;
    content.name = match request.and_then(|r| r.name) {
        Some(name) => name,
        None => format!("Copy of {}", content.name)
            .chars()
            .take(crate::model::MAX_NAME)
            .collect(),
    };
    let errors = content.validate();
    if !errors.is_empty() {
        return Err(ApiError::unprocessable(errors));
    }
    let limit = state
        .config
        .current()
        .await
        .limits
        .max_dashboards_per_tenant;
    let dashboard = state
        .store
        .create(principal.tenant(), principal.subject(), content, limit)
        .await
        .map_err(|e| write_error(e, limit))?;
    Ok(dashboard_response(StatusCode::CREATED, dashboard))
}

// ---- settings ----

async fn settings_view(state: &AppState, principal: &Principal) -> Result<SettingsView, ApiError> {
    let (tenant, user) = state
        .store
        .settings(principal.tenant(), principal.subject())
        .await?;
    Ok(SettingsView {
        effective: SettingsValues::product_defaults()
            .overlay(&tenant)
            .overlay(&user),
        tenant,
        user,
    })
}

#[utoipa::path(get, path = "/v1/settings", tag = "settings",
    responses((status = 200, body = SettingsView)))]
pub async fn get_settings(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<ApiJson<SettingsView>, ApiError> {
    Ok(ApiJson(settings_view(&state, &principal).await?))
}

#[utoipa::path(put, path = "/v1/settings", tag = "settings", request_body = SettingsUpdate,
    responses((status = 200, body = SettingsView), (status = 403)))]
pub async fn put_settings(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(update): ApiJson<SettingsUpdate>,
) -> Result<ApiJson<SettingsView>, ApiError> {
    if update.tenant.is_none() && update.user.is_none() {
        return Err(ApiError::field("$", "give `tenant` and/or `user`"));
    }
    if update.tenant.is_some() && !principal.has_role(Role::Admin) {
        return Err(ApiError::Forbidden(
            "only admins change tenant defaults".into(),
        ));
    }
    let mut errors = Vec::new();
    for (at, block) in [("tenant", &update.tenant), ("user", &update.user)] {
        if let Some(values) = block {
            values.validate(at, &mut errors);
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::unprocessable(errors));
    }
    let tenant = principal.tenant();
    if let Some(values) = &update.tenant {
        state
            .store
            .put_settings(
                tenant,
                app_storage::keys::SETTINGS_TENANT,
                principal.subject(),
                values,
            )
            .await?;
    }
    if let Some(values) = &update.user {
        let sk = app_storage::keys::settings_user(principal.subject());
        state
            .store
            .put_settings(tenant, &sk, principal.subject(), values)
            .await?;
    }
    Ok(ApiJson(settings_view(&state, &principal).await?))
}

// ---- API keys ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    name: String,
    /// Subset of `analytics:read`, `reports:read`, `dashboards:read`.
    scopes: Vec<String>,
    /// RFC 3339; optional, must be in the future and within 2 years.
    expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    record: app_auth::ApiKeyRecord,
    /// The key itself. Shown once: only its HMAC is stored.
    key: String,
}

#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<CreateApiKey>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let name = request.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        errors.push(FieldError::new("name", "must be 1–100 characters"));
    }
    if request.scopes.is_empty() {
        errors.push(FieldError::new("scopes", "give at least one scope"));
    }
    if let Some(i) = request
        .scopes
        .iter()
        .position(|s| !app_auth::SCOPES.contains(&s.as_str()))
    {
        errors.push(FieldError::new(
            format!("scopes[{i}]"),
            format!("unknown scope; allowed: {}", app_auth::SCOPES.join(", ")),
        ));
    }
    let now = time::OffsetDateTime::now_utc();
    let valid_until = match &request.expires_at {
        None => None,
        Some(text) => {
            match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            {
                Ok(at) if at > now && at < now + time::Duration::days(731) => Some(at),
                Ok(_) => {
                    errors.push(FieldError::new(
                        "expires_at",
                        "must be in the future and within 2 years",
                    ));
                    None
                }
                Err(_) => {
                    errors.push(FieldError::new(
                        "expires_at",
                        "must be an RFC 3339 timestamp",
                    ));
                    None
                }
            }
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::unprocessable(errors));
    }
    let mut scopes = request.scopes;
    scopes.sort();
    scopes.dedup();
    let config = state.config.current().await;
    let limit = config.limits.max_api_keys_per_tenant;
    let (record, key) = state
        .api_keys
        .create(
            principal.tenant(),
            principal.subject(),
            app_auth::NewApiKey {
                name,
                scopes,
                valid_until,
            },
            &config.api_key_pepper_bytes(),
            limit,
        )
        .await
        .map_err(|e| match e {
            e if e.condition_failed_at(1) => ApiError::Conflict(format!(
                "the tenant already has the maximum of {limit} API keys"
            )),
            e => e.into(),
        })?;
    let location = format!("/v1/api-keys/{}", record.id);
    let mut response = (
        StatusCode::CREATED,
        ApiJson(CreatedApiKey {
            record,
            key: key.expose().to_string(),
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyPage {
    items: Vec<app_auth::ApiKeyRecord>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(PageParams),
    responses((status = 200, body = ApiKeyPage)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<ApiJson<ApiKeyPage>, ApiError> {
    let page = state
        .api_keys
        .list(principal.tenant(), params.limit()?, params.cursor())
        .await?;
    Ok(ApiJson(ApiKeyPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.api_keys.revoke(principal.tenant(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
