//! The stage's configuration: one JSON document in one Secrets Manager secret, loaded at cold
//! start, validated, cached, and refreshed after a TTL so that rotation needs no redeploy.
//!
//! Environment variables carry only resource names ([`Resources`]); everything else, secrets
//! included, lives in the secret.
//!
//! Invariants: a config that fails validation is never served; error messages name the field and
//! never echo a value; `Debug` of a [`Secret`] prints nothing.

mod model;

pub use model::{
    AlertingConfig, AnalyticsConfig, AppConfig, GoogleConfig, Limits, OidcConfig, Secret,
    parse_and_validate,
};

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document is not valid; `field` is a JSON path, `reason` never contains a value.
    #[error("config secret is invalid at `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error("config secret `{secret_id}` could not be read: {reason}")]
    Unreachable { secret_id: String, reason: String },
    #[error("environment variable `{0}` is missing")]
    MissingEnv(&'static str),
}

/// Names of the stage's AWS resources, from the function's environment.
#[derive(Clone, Debug)]
pub struct Resources {
    pub stage: String,
    pub config_secret_id: String,
    pub table_name: String,
    pub kms_key_id: Option<String>,
    pub reports_bucket: Option<String>,
}

impl Resources {
    pub fn from_env() -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::MissingEnv(name))
        };
        Ok(Self {
            stage: std::env::var("STAGE").unwrap_or_else(|_| "dev".into()),
            config_secret_id: required("CONFIG_SECRET_ID")?,
            table_name: required("TABLE_NAME")?,
            kms_key_id: std::env::var("KMS_KEY_ID").ok().filter(|v| !v.is_empty()),
            reports_bucket: std::env::var("REPORTS_BUCKET")
                .ok()
                .filter(|v| !v.is_empty()),
        })
    }
}

/// The AWS SDK configuration, loaded once per container. `AWS_ENDPOINT_URL` (moto locally) is
/// honoured by the SDK itself; `endpoint` overrides it.
pub async fn aws_sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

struct Cached {
    config: Arc<AppConfig>,
    fetched_at: Instant,
}

/// The live configuration of this container.
pub struct ConfigHandle {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cached: RwLock<Cached>,
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ConfigHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigHandle")
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

impl ConfigHandle {
    /// Loads and validates the secret. Called at cold start: an error here should stop the
    /// function (the caller logs it and exits) rather than serve without configuration.
    pub async fn load(
        client: aws_sdk_secretsmanager::Client,
        secret_id: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let secret_id = secret_id.into();
        let config = fetch(&client, &secret_id).await?;
        Ok(Self {
            client,
            secret_id,
            cached: RwLock::new(Cached {
                config: Arc::new(config),
                fetched_at: Instant::now(),
            }),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The configuration as last loaded, without refreshing (for synchronous callers).
    pub fn snapshot(&self) -> Arc<AppConfig> {
        match self.cached.read() {
            Ok(cached) => cached.config.clone(),
            Err(poisoned) => poisoned.into_inner().config.clone(),
        }
    }

    fn is_stale(&self) -> bool {
        let cached = match self.cached.read() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        cached.fetched_at.elapsed() >= Duration::from_secs(cached.config.refresh_after_secs)
    }

    /// The current configuration, refreshed first if older than its TTL. One caller refreshes;
    /// concurrent callers keep using the previous value. A failed refresh keeps the last good
    /// configuration (and retries after another TTL).
    pub async fn current(&self) -> Arc<AppConfig> {
        if self.is_stale()
            && let Ok(_guard) = self.refreshing.try_lock()
            && self.is_stale()
        {
            match fetch(&self.client, &self.secret_id).await {
                Ok(config) => self.store(config),
                Err(error) => {
                    tracing::warn!(%error, "config refresh failed; serving the last good config");
                    self.touch();
                }
            }
        }
        self.snapshot()
    }

    fn store(&self, config: AppConfig) {
        let mut cached = match self.cached.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *cached = Cached {
            config: Arc::new(config),
            fetched_at: Instant::now(),
        };
    }

    fn touch(&self) {
        let mut cached = match self.cached.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        cached.fetched_at = Instant::now();
    }
}

async fn fetch(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<AppConfig, ConfigError> {
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| ConfigError::Unreachable {
            secret_id: secret_id.to_string(),
            reason: aws_config_error_reason(&e),
        })?;
    let text = output.secret_string().ok_or_else(|| ConfigError::Invalid {
        field: "$".into(),
        reason: "the secret has no string value".into(),
    })?;
    parse_and_validate(text)
}

/// The SDK error's code/kind only: its Display can be long and is useless to an operator.
fn aws_config_error_reason<E: std::error::Error>(error: &E) -> String {
    let mut reason = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        reason = format!("{reason}: {inner}");
        source = inner.source();
    }
    reason
}
