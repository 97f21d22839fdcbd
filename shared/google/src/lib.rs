//! Google: OAuth 2.0 (authorization code + PKCE, refresh, revoke) through the `oauth2` crate, and
//! the GA4 Admin/Data API calls this product makes. Every URL comes from config (`GoogleConfig`),
//! so production talks to Google and development to the stand-in in `devkit`.
//!
//! Transient failures (HTTP 429, 5xx, timeouts) are retried with exponential backoff and jitter
//! (`backon`); what is left is a typed [`GoogleError`] that the functions map to HTTP statuses.
//! Tokens are [`SecretToken`]s: never printed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use app_config::GoogleConfig;
use backon::{ExponentialBuilder, Retryable};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardErrorResponse,
    TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SCOPE_ANALYTICS: &str = "https://www.googleapis.com/auth/analytics.readonly";
pub const SCOPES: [&str; 3] = [SCOPE_ANALYTICS, "openid", "email"];

#[derive(Clone, Debug, thiserror::Error)]
pub enum GoogleError {
    /// The refresh token (or code) is revoked, expired or unknown: the user must reconnect.
    #[error("invalid_grant")]
    InvalidGrant,
    /// Google kept answering 429 (`RESOURCE_EXHAUSTED`) after our retries.
    #[error("rate limited by google")]
    RateLimited { retry_after_secs: u64 },
    /// Google kept failing (5xx, timeouts, connection errors) after our retries.
    #[error("google unavailable: {0}")]
    Unavailable(String),
    /// Google refused the access token on an API call (HTTP 401): refresh and retry once.
    #[error("access token refused")]
    Unauthenticated,
    /// Google refused the request itself (4xx other than 429): a bug or an invalid query.
    #[error("google rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// Misconfiguration (bad URL in config).
    #[error("google client misconfigured: {0}")]
    Config(String),
}

/// An OAuth token. `Debug`/`Display` print nothing; read it with [`SecretToken::expose`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretToken(String);

impl SecretToken {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken([redacted])")
    }
}

/// What the token endpoint gave us.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: SecretToken,
    /// Google sends it on the first exchange (with `access_type=offline`, `prompt=consent`) and
    /// sometimes a rotated one on refresh.
    pub refresh_token: Option<SecretToken>,
    /// Epoch seconds.
    pub expires_at: i64,
    pub scopes: Vec<String>,
}

/// A GA4 property the Google account can see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GaProperty {
    /// Numeric id, as in `properties/<id>`.
    pub id: String,
    pub display_name: String,
    pub account: String,
    pub account_display_name: String,
}

/// An HTTP error of the transport closure, so the retry can tell transient from final.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    transient: bool,
    message: String,
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

type HttpFuture =
    Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, TransportError>> + Send>>;

#[derive(Clone)]
pub struct GoogleClient {
    http: reqwest::Client,
    backoff: ExponentialBuilder,
}

impl Default for GoogleClient {
    fn default() -> Self {
        Self::new(Duration::from_millis(200))
    }
}

impl GoogleClient {
    /// `min_backoff` is the first retry delay (tests use a few ms). 3 retries, jittered.
    pub fn new(min_backoff: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                // Never follow redirects from an API: an answer that redirects is an error.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            backoff: ExponentialBuilder::default()
                .with_min_delay(min_backoff)
                .with_max_delay(Duration::from_secs(4))
                .with_max_times(3)
                .with_jitter(),
        }
    }

    fn oauth(
        config: &GoogleConfig,
    ) -> Result<
        BasicClient<
            oauth2::EndpointSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointSet,
        >,
        GoogleError,
    > {
        let bad = |e: oauth2::url::ParseError| GoogleError::Config(e.to_string());
        Ok(BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(config.client_secret.expose().to_string()))
            .set_auth_uri(AuthUrl::new(config.auth_url.clone()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(config.token_url.clone()).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(config.redirect_uri.clone()).map_err(bad)?))
    }

    /// The `oauth2` transport: our reqwest client, no redirects; 429/5xx marked transient.
    fn transport(&self) -> impl Fn(oauth2::HttpRequest) -> HttpFuture + use<> {
        let http = self.http.clone();
        move |request: oauth2::HttpRequest| {
            let http = http.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let response = http
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| TransportError {
                        transient: true,
                        message: e.without_url().to_string(),
                    })?;
                let status = response.status();
                if status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    return Err(TransportError {
                        transient: true,
                        message: format!("status {status}"),
                    });
                }
                let headers = response.headers().clone();
                let bytes = response.bytes().await.map_err(|e| TransportError {
                    transient: true,
                    message: e.without_url().to_string(),
                })?;
                let mut out = http::Response::builder().status(status);
                for (name, value) in &headers {
                    out = out.header(name, value);
                }
                out.body(bytes.to_vec()).map_err(|e| TransportError {
                    transient: false,
                    message: e.to_string(),
                })
            }) as HttpFuture
        }
    }

    /// The URL to send the browser to. `state` is ours; the PKCE verifier is returned to be kept
    /// server-side.
    pub fn authorization_url(
        &self,
        config: &GoogleConfig,
        state: &str,
    ) -> Result<(String, SecretToken), GoogleError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_string();
        let (url, _) = Self::oauth(config)?
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(SCOPES.iter().map(|s| Scope::new((*s).to_string())))
            .set_pkce_challenge(challenge)
            .add_extra_param("access_type", "offline")
            .add_extra_param("prompt", "consent")
            .add_extra_param("include_granted_scopes", "true")
            .url();
        Ok((url.to_string(), SecretToken(verifier.secret().clone())))
    }

    fn token_error<RE: std::error::Error + 'static>(
        error: RequestTokenError<RE, StandardErrorResponse<BasicErrorResponseType>>,
    ) -> GoogleError {
        match error {
            RequestTokenError::ServerResponse(response) => match response.error() {
                BasicErrorResponseType::InvalidGrant => GoogleError::InvalidGrant,
                other => GoogleError::Rejected {
                    status: 400,
                    message: other.to_string(),
                },
            },
            RequestTokenError::Request(e) => GoogleError::Unavailable(e.to_string()),
            RequestTokenError::Parse(e, _) => {
                GoogleError::Unavailable(format!("token response: {e}"))
            }
            RequestTokenError::Other(e) => GoogleError::Unavailable(e),
        }
    }

    fn is_transient<RE: std::error::Error + 'static>(
        error: &RequestTokenError<RE, StandardErrorResponse<BasicErrorResponseType>>,
    ) -> bool {
        matches!(error, RequestTokenError::Request(_))
    }

    fn token_set(response: &oauth2::basic::BasicTokenResponse) -> TokenSet {
        TokenSet {
            access_token: SecretToken(response.access_token().secret().clone()),
            refresh_token: response
                .refresh_token()
                .map(|t| SecretToken(t.secret().clone())),
            expires_at: now_epoch()
                + response
                    .expires_in()
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(3600),
            scopes: response
                .scopes()
                .map(|s| s.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        }
    }

    /// Runs a token-endpoint request with retries on transport failures (429/5xx/timeouts).
    async fn token_request<F, Fut>(&self, attempt: F) -> Result<TokenSet, GoogleError>
    where
        F: FnMut() -> Fut,
        Fut: Future<
            Output = Result<
                oauth2::basic::BasicTokenResponse,
                RequestTokenError<TransportError, StandardErrorResponse<BasicErrorResponseType>>,
            >,
        >,
    {
        let response = attempt
            .retry(self.backoff)
            .when(Self::is_transient)
            .await
            .map_err(Self::token_error)?;
        Ok(Self::token_set(&response))
    }

    /// Exchanges the authorization code, sending the PKCE verifier.
    pub async fn exchange_code(
        &self,
        config: &GoogleConfig,
        code: &str,
        verifier: &SecretToken,
    ) -> Result<TokenSet, GoogleError> {
        let client = Self::oauth(config)?;
        let transport = self.transport();
        let attempt = || async {
            client
                .exchange_code(AuthorizationCode::new(code.to_string()))
                .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_string()))
                .request_async(&transport)
                .await
        };
        self.token_request(attempt).await
    }

    /// A fresh access token (and possibly a rotated refresh token).
    pub async fn refresh(
        &self,
        config: &GoogleConfig,
        refresh_token: &SecretToken,
    ) -> Result<TokenSet, GoogleError> {
        let client = Self::oauth(config)?;
        let transport = self.transport();
        let token = RefreshToken::new(refresh_token.expose().to_string());
        let attempt = || async {
            client
                .exchange_refresh_token(&token)
                .request_async(&transport)
                .await
        };
        self.token_request(attempt).await
    }

    /// Revokes a token at Google (revoking the refresh token ends the whole grant): RFC 7009,
    /// `POST revoke_url` with the form field `token`. Sent directly rather than through
    /// `oauth2`, which refuses non-HTTPS revocation URLs and so could not reach the local
    /// stand-in; retried like every other call.
    pub async fn revoke(
        &self,
        config: &GoogleConfig,
        token: &SecretToken,
    ) -> Result<(), GoogleError> {
        let attempt = || async {
            let response = self
                .http
                .post(&config.revoke_url)
                .form(&[("token", token.expose())])
                .send()
                .await
                .map_err(|e| GoogleError::Unavailable(e.without_url().to_string()))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else if status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                Err(GoogleError::Unavailable(format!("status {status}")))
            } else {
                Err(GoogleError::Rejected {
                    status: status.as_u16(),
                    message: "revocation refused".into(),
                })
            }
        };
        attempt
            .retry(self.backoff)
            .when(|e| matches!(e, GoogleError::Unavailable(_)))
            .await
    }

    /// GET/POST a Google API with the access token, retrying transient failures.
    async fn call_api(
        &self,
        method: http::Method,
        url: &str,
        access_token: &SecretToken,
        body: Option<&Value>,
    ) -> Result<Value, GoogleError> {
        let attempt = || async {
            let mut request = self
                .http
                .request(method.clone(), url)
                .bearer_auth(access_token.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| GoogleError::Unavailable(e.without_url().to_string()))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(30);
            let text = response
                .text()
                .await
                .map_err(|e| GoogleError::Unavailable(e.without_url().to_string()))?;
            if status.is_success() {
                return serde_json::from_str(&text)
                    .map_err(|e| GoogleError::Unavailable(format!("response body: {e}")));
            }
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| status.to_string());
            Err(match status.as_u16() {
                429 => GoogleError::RateLimited {
                    retry_after_secs: retry_after,
                },
                401 => GoogleError::Unauthenticated,
                s if s >= 500 => GoogleError::Unavailable(format!("status {s}: {message}")),
                s => GoogleError::Rejected { status: s, message },
            })
        };
        attempt
            .retry(self.backoff)
            .when(|e| matches!(e, GoogleError::RateLimited { .. } | GoogleError::Unavailable(_)))
            .notify(|error, after| {
                tracing::warn!(%error, retry_in_ms = after.as_millis() as u64, "google call failed; retrying");
            })
            .await
    }

    /// The Google account's email (OpenID Connect userinfo).
    pub async fn account_email(
        &self,
        config: &GoogleConfig,
        access_token: &SecretToken,
    ) -> Result<String, GoogleError> {
        let info = self
            .call_api(http::Method::GET, &config.userinfo_url, access_token, None)
            .await?;
        info["email"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| GoogleError::Unavailable("userinfo without email".into()))
    }

    /// The GA4 properties the account can see (Admin API `accountSummaries`, all pages).
    pub async fn properties(
        &self,
        config: &GoogleConfig,
        access_token: &SecretToken,
    ) -> Result<Vec<GaProperty>, GoogleError> {
        let mut properties = Vec::new();
        let mut page_token: Option<String> = None;
        for _ in 0..20 {
            let mut url = format!(
                "{}/v1beta/accountSummaries?pageSize=200",
                config.admin_api_base.trim_end_matches('/')
            );
            if let Some(token) = &page_token {
                url.push_str("&pageToken=");
                url.push_str(token);
            }
            let page = self
                .call_api(http::Method::GET, &url, access_token, None)
                .await?;
            for account in page["accountSummaries"].as_array().into_iter().flatten() {
                for property in account["propertySummaries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let Some(id) = property["property"]
                        .as_str()
                        .and_then(|p| p.strip_prefix("properties/"))
                    else {
                        continue;
                    };
                    properties.push(GaProperty {
                        id: id.to_string(),
                        display_name: property["displayName"].as_str().unwrap_or_default().into(),
                        account: account["account"].as_str().unwrap_or_default().into(),
                        account_display_name: account["displayName"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                    });
                }
            }
            page_token = page["nextPageToken"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if page_token.is_none() {
                break;
            }
        }
        Ok(properties)
    }

    /// Data API `properties/{id}:runReport` with `returnPropertyQuota`.
    pub async fn run_report(
        &self,
        config: &GoogleConfig,
        access_token: &SecretToken,
        property_id: &str,
        request: &Value,
    ) -> Result<Value, GoogleError> {
        let url = format!(
            "{}/v1beta/properties/{property_id}:runReport",
            config.data_api_base.trim_end_matches('/')
        );
        self.call_api(http::Method::POST, &url, access_token, Some(request))
            .await
    }
}

/// A Data API `FilterExpression` that ANDs simple dimension filters:
/// (dimension, op, values) with op `exact`, `contains`, `begins_with`, `in_list`, `not_exact`.
pub fn dimension_filter(filters: &[(&str, &str, &[String])]) -> Value {
    let expressions: Vec<Value> = filters
        .iter()
        .map(|(dimension, op, values)| {
            let first = values.first().cloned().unwrap_or_default();
            let string = |match_type: &str| serde_json::json!({ "filter": { "fieldName": dimension, "stringFilter": { "matchType": match_type, "value": first } } });
            match *op {
                "contains" => string("CONTAINS"),
                "begins_with" => string("BEGINS_WITH"),
                "in_list" => serde_json::json!({ "filter": { "fieldName": dimension, "inListFilter": { "values": values } } }),
                "not_exact" => serde_json::json!({ "notExpression": string("EXACT") }),
                _ => string("EXACT"),
            }
        })
        .collect();
    serde_json::json!({ "andGroup": { "expressions": expressions } })
}

/// Google's answer, normalised: one object per row, typed numbers, ISO dates.
pub fn normalise_report(response: &Value) -> Value {
    let dimension_names: Vec<String> = response["dimensionHeaders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["name"].as_str().map(str::to_string))
        .collect();
    let metric_headers: Vec<(String, String)> = response["metricHeaders"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_string(),
                h["type"].as_str().unwrap_or("TYPE_FLOAT").to_string(),
            )
        })
        .collect();
    let rows: Vec<Value> = response["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let mut out = serde_json::Map::new();
            for (name, value) in dimension_names
                .iter()
                .zip(row["dimensionValues"].as_array().into_iter().flatten())
            {
                let raw = value["value"].as_str().unwrap_or_default();
                let normalised = if name == "date" && raw.len() == 8 {
                    format!("{}-{}-{}", &raw[0..4], &raw[4..6], &raw[6..8])
                } else {
                    raw.to_string()
                };
                out.insert(name.clone(), Value::String(normalised));
            }
            for ((name, kind), value) in metric_headers
                .iter()
                .zip(row["metricValues"].as_array().into_iter().flatten())
            {
                let raw = value["value"].as_str().unwrap_or_default();
                let number = if kind == "TYPE_INTEGER" {
                    raw.parse::<i64>().map(Value::from).unwrap_or(Value::Null)
                } else {
                    raw.parse::<f64>().map(Value::from).unwrap_or(Value::Null)
                };
                out.insert(name.clone(), number);
            }
            Value::Object(out)
        })
        .collect();
    let metadata = &response["metadata"];
    serde_json::json!({
        "dimensions": dimension_names,
        "metrics": metric_headers.iter().map(|(n, t)| serde_json::json!({ "name": n, "type": t })).collect::<Vec<_>>(),
        "rows": rows,
        "row_count": response["rowCount"].as_u64().unwrap_or(0),
        "metadata": {
            "sampled": metadata["samplingMetadatas"].as_array().is_some_and(|s| !s.is_empty()),
            "subject_to_thresholding": metadata["subjectToThresholding"].as_bool().unwrap_or(false),
            "data_loss_from_other_row": metadata["dataLossFromOtherRow"].as_bool().unwrap_or(false),
            "currency_code": metadata["currencyCode"],
            "time_zone": metadata["timeZone"],
        },
        "property_quota": response.get("propertyQuota").cloned().unwrap_or(Value::Null),
    })
}
