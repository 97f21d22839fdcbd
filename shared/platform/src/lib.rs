//! What every HTTP function builds once per container: AWS clients, the live config, the table,
//! and the auth state. `main.rs` of each function is `Platform::from_env` + its router + `serve`.

use std::sync::Arc;

use app_auth::{ApiKeyStore, AuthState, JwtVerifier, RouteRule};
use app_config::{ConfigError, ConfigHandle, Resources};
use app_storage::Table;
use aws_config::SdkConfig;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Shared, immutable after cold start (cloned cheaply: everything inside is `Arc` or a client).
#[derive(Clone)]
pub struct Platform {
    pub resources: Resources,
    pub sdk: SdkConfig,
    pub config: Arc<ConfigHandle>,
    pub table: Table,
    pub jwt: Arc<JwtVerifier>,
    pub api_keys: Arc<ApiKeyStore>,
}

impl Platform {
    /// Cold start in Lambda: resource names from the environment, credentials and endpoint from
    /// the SDK's default chain (`AWS_ENDPOINT_URL` points it at moto locally).
    pub async fn from_env() -> Result<Self, StartupError> {
        let resources = Resources::from_env()?;
        let sdk = app_config::aws_sdk_config(None).await;
        Self::new(resources, sdk).await
    }

    pub async fn new(resources: Resources, sdk: SdkConfig) -> Result<Self, StartupError> {
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let config = Arc::new(ConfigHandle::load(secrets, &resources.config_secret_id).await?);
        let snapshot = config.snapshot();
        let table = Table::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &resources.table_name,
            &snapshot.cursor_key_bytes(),
        );
        Ok(Self {
            api_keys: Arc::new(ApiKeyStore::new(table.clone())),
            jwt: Arc::new(JwtVerifier::new()),
            resources,
            sdk,
            config,
            table,
        })
    }

    pub fn auth_state(&self, routes: &'static [RouteRule]) -> AuthState {
        AuthState {
            config: self.config.clone(),
            jwt: self.jwt.clone(),
            api_keys: self.api_keys.clone(),
            routes,
        }
    }

    /// The CORS policy, reading the live config's allowlist.
    pub fn origin_policy(&self) -> app_web::OriginPolicy {
        let config = self.config.clone();
        Arc::new(move |origin| config.snapshot().origin_allowed(origin))
    }
}

/// The body of every HTTP function's `main`: logs, cold start, then serve the router in Lambda.
/// A configuration that cannot be loaded stops the function with one clear log line.
pub async fn run_function<F>(name: &str, build: F) -> Result<(), lambda_http::Error>
where
    F: FnOnce(Platform) -> axum::Router,
{
    app_telemetry::init();
    let platform = match Platform::from_env().await {
        Ok(platform) => platform,
        Err(error) => {
            tracing::error!(function = name, %error, "cold start failed: configuration unavailable");
            return Err(error.into());
        }
    };
    app_telemetry::metrics::init(&platform.resources.stage);
    app_web::run_lambda(build(platform)).await
}
