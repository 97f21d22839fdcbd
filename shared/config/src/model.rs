//! The configuration document and its validation.

use base64::Engine;
use serde::Deserialize;

use crate::ConfigError;

/// A secret string: `Debug` prints nothing, and it is only read through [`Secret::expose`].
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub oidc: OidcConfig,
    /// HMAC key for API key hashes (base64, at least 32 bytes).
    pub api_key_pepper: Secret,
    /// HMAC key for pagination cursors (base64, at least 32 bytes).
    pub cursor_key: Secret,
    /// Browser origins allowed by CORS, exact match (`https://app.example.com`).
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    #[serde(default)]
    pub google: Option<GoogleConfig>,
    #[serde(default)]
    pub alerting: Option<AlertingConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// Seconds after which the secret is read again (rotation without redeploy).
    #[serde(default = "default_refresh_after_secs")]
    pub refresh_after_secs: u64,
}

fn default_refresh_after_secs() -> u64 {
    300
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: String,
    /// Defaults to discovery from `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// At most one JWKS refetch per this many seconds when an unknown `kid` shows up.
    #[serde(default = "default_refetch")]
    pub jwks_refetch_interval_secs: u64,
}

fn default_tenant_claim() -> String {
    "tenant_id".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_leeway() -> u64 {
    30
}
fn default_refetch() -> u64 {
    60
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    pub client_id: String,
    pub client_secret: Secret,
    /// The exact redirect URI registered with Google (the `/v1/ga/oauth/callback` route).
    pub redirect_uri: String,
    /// Where the browser is sent after the callback.
    pub frontend_url: String,
    #[serde(default = "default_auth_url")]
    pub auth_url: String,
    #[serde(default = "default_token_url")]
    pub token_url: String,
    #[serde(default = "default_revoke_url")]
    pub revoke_url: String,
    #[serde(default = "default_admin_base")]
    pub admin_api_base: String,
    #[serde(default = "default_data_base")]
    pub data_api_base: String,
    #[serde(default = "default_userinfo_url")]
    pub userinfo_url: String,
}

fn default_userinfo_url() -> String {
    "https://openidconnect.googleapis.com/v1/userinfo".into()
}

fn default_auth_url() -> String {
    "https://accounts.google.com/o/oauth2/v2/auth".into()
}
fn default_token_url() -> String {
    "https://oauth2.googleapis.com/token".into()
}
fn default_revoke_url() -> String {
    "https://oauth2.googleapis.com/revoke".into()
}
fn default_admin_base() -> String {
    "https://analyticsadmin.googleapis.com".into()
}
fn default_data_base() -> String {
    "https://analyticsdata.googleapis.com".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    #[serde(default)]
    pub slack_webhook_url: Option<Secret>,
    #[serde(default)]
    pub generic_webhook_url: Option<Secret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_dashboards_per_tenant: u32,
    pub max_api_keys_per_tenant: u32,
}

/// Analytics cache and quota behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// How long a cached result is fresh (ranges that end before today).
    pub cache_fresh_secs: i64,
    /// How long a cached result is fresh when the range includes today.
    pub cache_fresh_today_secs: i64,
    /// How long stale results are kept for low-quota and 429 fallbacks.
    pub cache_keep_secs: i64,
    /// Below this many GA tokens per day remaining, serve stale cache instead of calling Google.
    pub quota_floor: i64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            cache_fresh_secs: 900,
            cache_fresh_today_secs: 300,
            cache_keep_secs: 7 * 24 * 3600,
            quota_floor: 2000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_dashboards_per_tenant: 500,
            max_api_keys_per_tenant: 50,
        }
    }
}

impl AppConfig {
    pub fn api_key_pepper_bytes(&self) -> Vec<u8> {
        decode_key(&self.api_key_pepper).unwrap_or_default()
    }
    pub fn cursor_key_bytes(&self) -> Vec<u8> {
        decode_key(&self.cursor_key).unwrap_or_default()
    }
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.cors_allowed_origins.iter().any(|o| o == origin)
    }
}

fn decode_key(secret: &Secret) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.expose())
        .ok()
}

/// Parses the secret's JSON and validates it. Errors name the JSON path of the bad field and say
/// what is wrong, never what the value was.
pub fn parse_and_validate(text: &str) -> Result<AppConfig, ConfigError> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    let config: AppConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde's messages for these two name keys, not values; every other message may quote
        // the value, so it is replaced by its category.
        let reason = if message.starts_with("unknown field") || message.starts_with("missing field")
        {
            message
                .split(" at line")
                .next()
                .unwrap_or("invalid")
                .split(", expected")
                .next()
                .unwrap_or("invalid")
                .to_string()
        } else if inner.is_syntax() || inner.is_eof() {
            "not valid JSON".to_string()
        } else {
            "wrong type or value".to_string()
        };
        ConfigError::Invalid {
            field: if path.is_empty() || path == "." {
                "$".into()
            } else {
                path
            },
            reason,
        }
    })?;
    validate(&config)?;
    Ok(config)
}

fn invalid(field: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `https://…`, or plain http on loopback (local development only).
fn is_acceptable_url(url: &str) -> bool {
    url.starts_with("https://")
        || url.starts_with("http://127.0.0.1")
        || url.starts_with("http://localhost")
}

fn validate(config: &AppConfig) -> Result<(), ConfigError> {
    let oidc = &config.oidc;
    if !is_acceptable_url(&oidc.issuer) {
        return Err(invalid("oidc.issuer", "must be an https URL"));
    }
    if oidc.audience.trim().is_empty() {
        return Err(invalid("oidc.audience", "must not be empty"));
    }
    if let Some(url) = &oidc.jwks_url
        && !is_acceptable_url(url)
    {
        return Err(invalid("oidc.jwks_url", "must be an https URL"));
    }
    if oidc.algorithms.is_empty() {
        return Err(invalid(
            "oidc.algorithms",
            "must list at least one algorithm",
        ));
    }
    const ASYMMETRIC: [&str; 9] = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ];
    if let Some(i) = oidc
        .algorithms
        .iter()
        .position(|a| !ASYMMETRIC.contains(&a.as_str()))
    {
        return Err(invalid(
            &format!("oidc.algorithms[{i}]"),
            "only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are allowed",
        ));
    }
    if oidc.leeway_secs > 60 {
        return Err(invalid("oidc.leeway_secs", "must be at most 60"));
    }
    if oidc.tenant_claim.is_empty() || oidc.roles_claim.is_empty() {
        return Err(invalid(
            "oidc.tenant_claim",
            "claim names must not be empty",
        ));
    }
    for (field, key) in [
        ("api_key_pepper", &config.api_key_pepper),
        ("cursor_key", &config.cursor_key),
    ] {
        match decode_key(key) {
            Some(bytes) if bytes.len() >= 32 => {}
            Some(_) => return Err(invalid(field, "must decode to at least 32 bytes")),
            None => return Err(invalid(field, "must be standard base64")),
        }
    }
    if let Some(i) = config
        .cors_allowed_origins
        .iter()
        .position(|o| o == "*" || o.ends_with('/') || !o.contains("://"))
    {
        return Err(invalid(
            &format!("cors_allowed_origins[{i}]"),
            "must be an exact origin such as https://app.example.com (no `*`, no path)",
        ));
    }
    if let Some(google) = &config.google {
        for (field, url) in [
            ("google.redirect_uri", &google.redirect_uri),
            ("google.frontend_url", &google.frontend_url),
            ("google.auth_url", &google.auth_url),
            ("google.token_url", &google.token_url),
            ("google.revoke_url", &google.revoke_url),
            ("google.admin_api_base", &google.admin_api_base),
            ("google.data_api_base", &google.data_api_base),
            ("google.userinfo_url", &google.userinfo_url),
        ] {
            if !is_acceptable_url(url) {
                return Err(invalid(field, "must be an https URL"));
            }
        }
    }
    if let Some(alerting) = &config.alerting {
        for (field, url) in [
            ("alerting.slack_webhook_url", &alerting.slack_webhook_url),
            (
                "alerting.generic_webhook_url",
                &alerting.generic_webhook_url,
            ),
        ] {
            if let Some(url) = url
                && !is_acceptable_url(url.expose())
            {
                return Err(invalid(field, "must be an https URL"));
            }
        }
    }
    if config.refresh_after_secs == 0 || config.refresh_after_secs > 3600 {
        return Err(invalid("refresh_after_secs", "must be between 1 and 3600"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEPPER: &str = "c2VjcmV0LXBlcHBlci1vZi1hdC1sZWFzdC0zMi1ieXRlcyE=";

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "oidc": { "issuer": "https://id.example.com", "audience": "dash" },
            "api_key_pepper": PEPPER,
            "cursor_key": PEPPER,
        })
    }

    fn error_of(doc: serde_json::Value) -> (String, String) {
        match parse_and_validate(&doc.to_string()) {
            Err(ConfigError::Invalid { field, reason }) => (field, reason),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_minimal_document_with_defaults() {
        let config = parse_and_validate(&valid().to_string()).unwrap();
        assert_eq!(config.oidc.tenant_claim, "tenant_id");
        assert_eq!(config.oidc.algorithms, vec!["RS256", "ES256"]);
        assert_eq!(config.refresh_after_secs, 300);
        assert_eq!(config.api_key_pepper_bytes().len(), 35);
    }

    #[test]
    fn rejections_name_the_field_and_never_echo_the_value() {
        let mut unknown = valid();
        unknown["oidc"]["isuser"] = "https://typo.example.com".into();
        let mut wrong_type = valid();
        wrong_type["cursor_key"] = serde_json::json!({"nested": "TOPSECRETVALUE"});
        let mut wrong_type2 = valid();
        wrong_type2["oidc"]["leeway_secs"] = "TOPSECRETVALUE".into();
        let mut hs = valid();
        hs["oidc"]["algorithms"] = serde_json::json!(["RS256", "HS256"]);
        let mut short = valid();
        short["api_key_pepper"] = "dG9vc2hvcnQ=".into();
        let mut missing = valid();
        missing.as_object_mut().unwrap().remove("cursor_key");
        let mut star = valid();
        star["cors_allowed_origins"] = serde_json::json!(["*"]);

        let cases = [
            (unknown, "oidc.isuser", "unknown field `isuser`"),
            (wrong_type, "cursor_key", "wrong type or value"),
            (wrong_type2, "oidc.leeway_secs", "wrong type or value"),
            (hs, "oidc.algorithms[1]", "asymmetric"),
            (short, "api_key_pepper", "32 bytes"),
            (missing, "$", "missing field `cursor_key`"),
            (star, "cors_allowed_origins[0]", "exact origin"),
        ];
        for (doc, field, reason) in cases {
            let (got_field, got_reason) = error_of(doc);
            assert_eq!(got_field, field);
            assert!(got_reason.contains(reason), "{got_reason}");
            assert!(!got_reason.contains("TOPSECRETVALUE"));
        }
    }

    #[test]
    fn malformed_json_is_a_clear_error() {
        let err = parse_and_validate("{\"oidc\": ").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn secret_debug_prints_nothing() {
        let config = parse_and_validate(&valid().to_string()).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains(PEPPER));
    }
}
