//! The ga function. Its data routes arrive with their issue; today it serves its health route
//! through the same auth layer and plumbing as every function.

use app_auth::{Access, RouteRule};
use app_platform::Platform;
use axum::Router;
use axum::response::IntoResponse;
use http::Method;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Who may call what (docs/security.md reproduces every function's table).
pub static ROUTES: &[RouteRule] = &[RouteRule::new(Method::GET, "/v1/ga/health", Access::Public)];

#[derive(OpenApi)]
#[openapi(info(title = "GA API", version = "1"))]
struct ApiDoc;

#[utoipa::path(get, path = "/v1/ga/health", tag = "ga",
    responses((status = 200, body = app_web::Health)))]
async fn health() -> impl IntoResponse {
    app_web::health().await
}

fn openapi_router() -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(health))
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
    let (router, _) = openapi_router().split_for_parts();
    router.route_layer(axum::middleware::from_fn_with_state(
        platform.auth_state(ROUTES),
        app_auth::enforce,
    ))
}
