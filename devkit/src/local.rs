//! Every HTTP function's routes on one local URL, with the same paths as API Gateway.
//!
//! Choice (docs/architecture.md): the routers are merged under `axum::serve` rather than run
//! through `cargo lambda watch`, because each function's `app()` is the exact router Lambda runs;
//! only the API Gateway event conversion (covered by the `events/` tests) is skipped.

use app_platform::Platform;
use axum::Router;
use axum::routing::get;

/// The OpenAPI document of every function, merged.
pub fn merged_openapi() -> utoipa::openapi::OpenApi {
    let mut doc = dashboards::openapi();
    doc.merge(ga::openapi());
    doc.merge(analytics::openapi());
    doc.info.title = "Analytics dashboard API".into();
    doc
}

/// All functions' routes plus `GET /v1/openapi.json`, with the shared plumbing applied once.
pub fn local_router(platform: &Platform) -> Router {
    let openapi = serde_json::to_value(merged_openapi()).unwrap_or_default();
    let app = dashboards::app(platform)
        .merge(ga::app(platform))
        .merge(analytics::app(platform))
        .route(
            "/v1/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi) }
            }),
        );
    app_web::finish(app, platform.origin_policy())
}

/// A running local API.
pub struct LocalApi {
    pub url: String,
}

impl LocalApi {
    /// Serves `router` on `127.0.0.1:port` (0: any free port) in the background.
    pub async fn serve(router: Router, port: u16) -> crate::DevResult<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { url })
    }
}
