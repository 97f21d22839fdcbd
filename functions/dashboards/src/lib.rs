//! The dashboards function: dashboards, settings and API key management.
//!
//! `router` is the whole function; `main.rs` runs it in Lambda, devkit serves it locally.

pub mod model;
mod routes;
pub mod store;

pub use routes::ROUTES;

use std::sync::Arc;

use app_auth::ApiKeyStore;
use app_config::ConfigHandle;
use app_platform::Platform;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::DashboardStore;

/// Built once per container.
#[derive(Clone)]
pub struct AppState {
    pub store: DashboardStore,
    pub api_keys: Arc<ApiKeyStore>,
    pub config: Arc<ConfigHandle>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Dashboards API", version = "1"),
    tags((name = "dashboards"), (name = "settings"), (name = "api-keys"))
)]
struct ApiDoc;

fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::health))
        .routes(routes!(routes::list_dashboards, routes::create_dashboard))
        .routes(routes!(
            routes::get_dashboard,
            routes::replace_dashboard,
            routes::patch_dashboard,
            routes::delete_dashboard
        ))
        .routes(routes!(routes::duplicate_dashboard))
        .routes(routes!(routes::get_settings, routes::put_settings))
        .routes(routes!(routes::create_api_key, routes::list_api_keys))
        .routes(routes!(routes::revoke_api_key))
}

/// The OpenAPI description of every route of this function.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_router().split_for_parts().1
}

/// The function's router with auth and the shared plumbing applied.
pub fn router(platform: &Platform) -> Router {
    app_web::finish(app(platform), platform.origin_policy())
}

/// Routes + auth, without the shared plumbing (the local server merges several of these).
pub fn app(platform: &Platform) -> Router {
    let state = AppState {
        store: DashboardStore::new(platform.table.clone()),
        api_keys: platform.api_keys.clone(),
        config: platform.config.clone(),
    };
    let (router, _) = openapi_router().split_for_parts();
    router
        .route_layer(axum::middleware::from_fn_with_state(
            platform.auth_state(ROUTES),
            app_auth::enforce,
        ))
        .with_state(state)
}
