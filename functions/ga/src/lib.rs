//! The GA function: connect Google Analytics 4 through OAuth (PKCE, single-use state), keep the
//! tokens KMS-envelope-encrypted, run GA4 reports and save them (metadata in DynamoDB, gzip body
//! in S3 under the tenant's prefix).

mod reports;
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

pub use reports::ReportStore;

/// Built once per container.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ConfigHandle>,
    pub connections: Connections,
    pub reports: ReportStore,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "GA API", version = "1"),
    tags((name = "ga"), (name = "ga-reports"))
)]
struct ApiDoc;

fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::health))
        .routes(routes!(routes::authorize))
        .routes(routes!(routes::callback))
        .routes(routes!(routes::list_connections))
        .routes(routes!(
            routes::get_connection,
            routes::patch_connection,
            routes::delete_connection
        ))
        .routes(routes!(reports::run_report))
        .routes(routes!(reports::save_report, reports::list_reports))
        .routes(routes!(reports::get_report, reports::delete_report))
}

/// The OpenAPI description of every route of this function.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_router().split_for_parts().1
}

/// The GA state from the platform: KMS, S3 and Google clients built once.
pub fn state(platform: &Platform, google: GoogleClient) -> AppState {
    let kms = aws_sdk_kms::Client::new(&platform.sdk);
    let key_id = platform.resources.kms_key_id.clone().unwrap_or_default();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&platform.sdk)
            // Path-style works against S3 and against moto locally.
            .force_path_style(true)
            .build(),
    );
    AppState {
        config: platform.config.clone(),
        connections: Connections::new(
            platform.table.clone(),
            TokenCipher::new(kms, key_id.clone()),
            google,
        ),
        reports: ReportStore::new(
            platform.table.clone(),
            s3,
            platform
                .resources
                .reports_bucket
                .clone()
                .unwrap_or_default(),
            key_id,
        ),
    }
}

/// The function's router with auth and the shared plumbing applied.
pub fn router(platform: &Platform) -> Router {
    app_web::finish(app(platform), platform.origin_policy())
}

/// Routes + auth, without the shared plumbing (the local server merges several of these).
pub fn app(platform: &Platform) -> Router {
    app_with(platform, GoogleClient::default())
}

/// Like [`app`] with a given Google client (tests use a short retry backoff).
pub fn app_with(platform: &Platform, google: GoogleClient) -> Router {
    let (router, _) = openapi_router().split_for_parts();
    router
        .route_layer(axum::middleware::from_fn_with_state(
            platform.auth_state(ROUTES),
            app_auth::enforce,
        ))
        .with_state(state(platform, google))
}
