//! Lambda entrypoint: load config once, handle SNS alarm events.

use std::sync::Arc;

use aws_lambda_events::event::sns::SnsEvent;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    app_telemetry::init();
    let secret_id = std::env::var("CONFIG_SECRET_ID").map_err(|_| "CONFIG_SECRET_ID is not set")?;
    let sdk = app_config::aws_sdk_config(None).await;
    let config =
        match app_config::ConfigHandle::load(aws_sdk_secretsmanager::Client::new(&sdk), secret_id)
            .await
        {
            Ok(config) => Arc::new(config),
            Err(error) => {
                tracing::error!(%error, "cold start failed: configuration unavailable");
                return Err(error.into());
            }
        };
    let notifier = alarm_notifier::Notifier::new(config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SnsEvent>| {
        let notifier = notifier.clone();
        async move {
            notifier
                .handle(event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
