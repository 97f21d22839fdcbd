//! The analytics function: the numbers behind dashboard widgets (overview KPIs with comparison,
//! time series, top-N, and a batch of widget queries) from the tenant's GA4 connections, for users
//! and API keys (`analytics:read`), cached in DynamoDB to spare Google's quota.

mod cache;
pub mod query;
mod routes;

pub use routes::ROUTES;

use std::sync::Arc;

use app_config::ConfigHandle;
use app_connections::Connections;
use app_crypto::TokenCipher;
use app_google::GoogleClient;
use app_platform::Platform;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use cache::{AnalyticsCache, Freshness};

/// Built once per container.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ConfigHandle>,
    pub cache: AnalyticsCache,
}

#[derive(OpenApi)]
#[openapi(info(title = "Analytics API", version = "1"), tags((name = "analytics")))]
struct ApiDoc;

fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::health))
        .routes(routes!(routes::overview))
        .routes(routes!(routes::timeseries))
        .routes(routes!(routes::top))
        .routes(routes!(routes::widgets_batch))
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
    let kms = aws_sdk_kms::Client::new(&platform.sdk);
    let connections = Connections::new(
        platform.table.clone(),
        TokenCipher::new(
            kms,
            platform.resources.kms_key_id.clone().unwrap_or_default(),
        ),
        GoogleClient::default(),
    );
    let state = AppState {
        config: platform.config.clone(),
        cache: AnalyticsCache::new(platform.table.clone(), connections),
    };
    let (router, _) = openapi_router().split_for_parts();
    router
        .route_layer(axum::middleware::from_fn_with_state(
            platform.auth_state(ROUTES),
            app_auth::enforce,
        ))
        .with_state(state)
}
