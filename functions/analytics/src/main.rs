//! Lambda entrypoint: build the platform once, serve the router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    app_platform::run_function("analytics", |platform| analytics::router(&platform)).await
}
