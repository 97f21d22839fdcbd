//! Lambda entrypoint: build the platform once, serve the router.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    app_platform::run_function("ga", |platform| ga::router(&platform)).await
}
