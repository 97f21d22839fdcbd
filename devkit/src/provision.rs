//! Creates in moto what template.yaml defines for a stage: the table (keys, GSI1, TTL, PITR),
//! the KMS key and alias, the reports bucket and the config secret.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification,
};

use crate::DevResult;

/// Names of one stage's resources. Tests use a unique suffix so runs never share state.
#[derive(Clone, Debug)]
pub struct LocalNames {
    pub stage: String,
    pub table: String,
    pub secret: String,
    pub bucket: String,
    pub kms_alias: String,
}

impl LocalNames {
    pub fn for_stage(stage: &str) -> Self {
        Self {
            stage: stage.to_string(),
            table: format!("analytics-dashboard-{stage}"),
            secret: format!("analytics-dashboard/{stage}/config"),
            bucket: format!("analytics-dashboard-{stage}-reports"),
            kms_alias: format!("alias/analytics-dashboard-{stage}"),
        }
    }
}

/// What provisioning created that the functions' environment needs.
#[derive(Clone, Debug)]
pub struct Provisioned {
    pub names: LocalNames,
    pub kms_key_id: String,
}

impl Provisioned {
    pub fn resources(&self) -> app_config::Resources {
        app_config::Resources {
            stage: self.names.stage.clone(),
            config_secret_id: self.names.secret.clone(),
            table_name: self.names.table.clone(),
            kms_key_id: Some(self.kms_key_id.clone()),
            reports_bucket: Some(self.names.bucket.clone()),
        }
    }
}

fn attribute(name: &str) -> DevResult<AttributeDefinition> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()?)
}

fn key(name: &str, key_type: KeyType) -> DevResult<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()?)
}

pub async fn provision(
    sdk: &SdkConfig,
    names: &LocalNames,
    config_json: &serde_json::Value,
) -> DevResult<Provisioned> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    dynamodb
        .create_table()
        .table_name(&names.table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .attribute_definitions(attribute("gsi1pk")?)
        .attribute_definitions(attribute("gsi1sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(app_storage::GSI1)
                .key_schema(key("gsi1pk", KeyType::Hash)?)
                .key_schema(key("gsi1sk", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await?;
    dynamodb
        .update_time_to_live()
        .table_name(&names.table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(app_storage::attr::TTL)
                .enabled(true)
                .build()?,
        )
        .send()
        .await?;
    dynamodb
        .update_continuous_backups()
        .table_name(&names.table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()?,
        )
        .send()
        .await?;

    let kms = aws_sdk_kms::Client::new(sdk);
    let key = kms
        .create_key()
        .description(format!("analytics-dashboard {} data key", names.stage))
        .send()
        .await?;
    let kms_key_id = key
        .key_metadata()
        .map(|m| m.key_id().to_string())
        .ok_or("KMS CreateKey returned no key id")?;
    kms.create_alias()
        .alias_name(&names.kms_alias)
        .target_key_id(&kms_key_id)
        .send()
        .await?;

    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(&names.bucket).send().await?;

    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    secrets
        .create_secret()
        .name(&names.secret)
        .secret_string(config_json.to_string())
        .send()
        .await?;
    Ok(Provisioned {
        names: names.clone(),
        kms_key_id,
    })
}

/// Replaces the config secret's value (rotation).
pub async fn put_config(
    sdk: &SdkConfig,
    secret: &str,
    config_json: &serde_json::Value,
) -> DevResult<()> {
    aws_sdk_secretsmanager::Client::new(sdk)
        .put_secret_value()
        .secret_id(secret)
        .secret_string(config_json.to_string())
        .send()
        .await?;
    Ok(())
}

/// An SDK config pointed at moto with dummy credentials (never real AWS).
pub async fn moto_sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
        .load()
        .await
}

/// A config secret for local runs: the given issuer, random keys, loopback CORS.
pub fn local_config(issuer: &str, audience: &str, jwks_url: &str) -> serde_json::Value {
    use base64::Engine;
    let random_key = || {
        let mut bytes = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    serde_json::json!({
        "oidc": {
            "issuer": issuer,
            "audience": audience,
            "jwks_url": jwks_url,
        },
        "api_key_pepper": random_key(),
        "cursor_key": random_key(),
        "cors_allowed_origins": ["http://localhost:5173", "http://127.0.0.1:5173"],
    })
}
