//! GA connections: the stored connection (tokens KMS-envelope-encrypted), the single-use OAuth
//! state, and [`Connections::access_token`], which refreshes an access token close to expiry
//! without two containers clobbering each other. Used by the `ga` and `analytics` functions.
//!
//! Invariants: plaintext tokens exist only inside [`TokenPair`]/[`SecretToken`] values in
//! memory; items hold only [`Envelope`]s whose encryption context is
//! `{tenant_id, connection_id, purpose}`; a token write is conditional on `token_version`.

use app_config::GoogleConfig;
use app_crypto::{CipherError, Context, Envelope, TokenCipher};
use app_google::{GaProperty, GoogleClient, GoogleError, SecretToken};
use app_storage::aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use app_storage::{Page, QuerySpec, StorageError, Table, from_item, keys, to_item};
use serde::{Deserialize, Serialize};

pub const PURPOSE_TOKEN: &str = "ga-oauth-token";
pub const PURPOSE_STATE: &str = "ga-oauth-state";
/// Access tokens this close to expiry are refreshed before use.
pub const REFRESH_MARGIN_SECS: i64 = 300;
/// OAuth `state` lifetime.
pub const STATE_TTL_SECS: i64 = 600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    NeedsReauth,
    Revoked,
}

/// The stored item. `token` is the envelope of a JSON [`TokenPair`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionItem {
    pk: String,
    sk: String,
    entity: String,
    pub id: String,
    pub tenant: String,
    pub google_email: String,
    pub properties: Vec<GaProperty>,
    #[serde(default)]
    pub selected_property: Option<String>,
    pub status: ConnectionStatus,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub created_by: String,
    #[serde(default)]
    pub last_refreshed_at: Option<String>,
    pub access_expires_at: i64,
    pub token_version: u64,
    pub token: Envelope,
}

/// What is encrypted inside `token`.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenPair {
    pub access_token: SecretToken,
    pub refresh_token: SecretToken,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenPair([redacted])")
    }
}

/// The single-use OAuth state item, keyed by a hash of the state (the state itself is a bearer
/// secret while the flow is open).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StateItem {
    pk: String,
    sk: String,
    tenant: String,
    subject: String,
    connection_id: String,
    verifier: Envelope,
    /// TTL attribute (epoch seconds); also checked on read because TTL deletion is lazy.
    expires_at: i64,
}

/// A consumed, valid OAuth state.
#[derive(Debug)]
pub struct PendingConnection {
    pub tenant: String,
    pub subject: String,
    pub connection_id: String,
    pub verifier: SecretToken,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection not found")]
    NotFound,
    /// Google refused the refresh token: the user must reconnect.
    #[error("connection needs re-authorization")]
    NeedsReauth { connection_id: String },
    #[error(transparent)]
    Google(#[from] GoogleError),
    #[error(transparent)]
    Cipher(#[from] CipherError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub fn now_epoch() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn state_key(state: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, state.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("OAUTHSTATE#{hex}")
}

#[derive(Clone)]
pub struct Connections {
    table: Table,
    cipher: TokenCipher,
    google: GoogleClient,
}

impl Connections {
    pub fn new(table: Table, cipher: TokenCipher, google: GoogleClient) -> Self {
        Self {
            table,
            cipher,
            google,
        }
    }

    pub fn google(&self) -> &GoogleClient {
        &self.google
    }

    fn token_context<'a>(tenant: &'a str, connection_id: &'a str) -> Context<'a> {
        Context {
            tenant_id: tenant,
            connection_id,
            purpose: PURPOSE_TOKEN,
        }
    }

    // ---- OAuth state ----

    /// Stores the state (hashed) with the PKCE verifier (encrypted), valid for 10 minutes.
    pub async fn open_state(
        &self,
        state: &str,
        tenant: &str,
        subject: &str,
        connection_id: &str,
        verifier: &SecretToken,
    ) -> Result<(), ConnectionError> {
        let context = Context {
            tenant_id: tenant,
            connection_id,
            purpose: PURPOSE_STATE,
        };
        let sealed = self
            .cipher
            .seal(context, verifier.expose().as_bytes())
            .await?;
        let item = StateItem {
            pk: state_key(state),
            sk: "STATE".into(),
            tenant: tenant.into(),
            subject: subject.into(),
            connection_id: connection_id.into(),
            verifier: sealed,
            expires_at: now_epoch() + STATE_TTL_SECS,
        };
        self.table.put_new(to_item(&item)?).await?;
        Ok(())
    }

    /// Deletes the state and returns it if it existed and has not expired. Single use: the
    /// conditional delete succeeds for exactly one caller.
    pub async fn consume_state(
        &self,
        state: &str,
    ) -> Result<Option<PendingConnection>, ConnectionError> {
        if state.is_empty() || state.len() > 256 {
            return Ok(None);
        }
        let item: StateItem = match self.table.delete_existing(&state_key(state), "STATE").await {
            Ok(item) => item,
            Err(StorageError::ConditionFailed) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if item.expires_at <= now_epoch() {
            return Ok(None);
        }
        let context = Context {
            tenant_id: &item.tenant,
            connection_id: &item.connection_id,
            purpose: PURPOSE_STATE,
        };
        let verifier = self.cipher.open(context, &item.verifier).await?;
        let verifier = String::from_utf8(verifier.as_bytes().to_vec())
            .map_err(|_| ConnectionError::Cipher(CipherError::Rejected))?;
        Ok(Some(PendingConnection {
            tenant: item.tenant,
            subject: item.subject,
            connection_id: item.connection_id,
            verifier: SecretToken::new(verifier),
        }))
    }

    // ---- connections ----

    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        pending: &PendingConnection,
        google_email: String,
        properties: Vec<GaProperty>,
        scopes: Vec<String>,
        tokens: &TokenPair,
        access_expires_at: i64,
    ) -> Result<ConnectionItem, ConnectionError> {
        let plaintext =
            serde_json::to_vec(tokens).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let token = self
            .cipher
            .seal(
                Self::token_context(&pending.tenant, &pending.connection_id),
                &plaintext,
            )
            .await?;
        let selected_property = match properties.as_slice() {
            [only] => Some(only.id.clone()),
            _ => None,
        };
        let now = now_rfc3339();
        let item = ConnectionItem {
            pk: keys::tenant(&pending.tenant),
            sk: keys::ga_connection(&pending.connection_id),
            entity: "ga_connection".into(),
            id: pending.connection_id.clone(),
            tenant: pending.tenant.clone(),
            google_email,
            properties,
            selected_property,
            status: ConnectionStatus::Active,
            scopes,
            created_at: now.clone(),
            created_by: pending.subject.clone(),
            last_refreshed_at: Some(now),
            access_expires_at,
            token_version: 1,
            token,
        };
        self.table.put_new(to_item(&item)?).await?;
        Ok(item)
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<ConnectionItem, ConnectionError> {
        self.table
            .get(&keys::tenant(tenant), &keys::ga_connection(id))
            .await?
            .ok_or(ConnectionError::NotFound)
    }

    pub async fn list(
        &self,
        tenant: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<ConnectionItem>, StorageError> {
        let scope = format!("{tenant}/ga-connections");
        self.table
            .query_page(
                QuerySpec {
                    index: None,
                    partition: keys::tenant(tenant),
                    sort_prefix: Some(keys::GA_CONNECTION_PREFIX.into()),
                    limit,
                    newest_first: true,
                    scope: &scope,
                },
                cursor,
            )
            .await
    }

    /// Sets the selected property (the caller checked it is one the account can see).
    pub async fn select_property(
        &self,
        tenant: &str,
        id: &str,
        property: &str,
    ) -> Result<ConnectionItem, ConnectionError> {
        let output = self
            .table
            .client()
            .update_item()
            .table_name(self.table.name())
            .set_key(Some(Table::key(
                &keys::tenant(tenant),
                &keys::ga_connection(id),
            )))
            .update_expression("SET selected_property = :p")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":p", AttributeValue::S(property.into()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match output {
            Ok(output) => Ok(from_item(output.attributes.unwrap_or_default())?),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(ConnectionError::NotFound)
            }
            Err(e) => Err(StorageError::Unavailable(format!("update_item: {e}")).into()),
        }
    }

    /// Decrypts the stored tokens (in memory only).
    pub async fn tokens(&self, item: &ConnectionItem) -> Result<TokenPair, ConnectionError> {
        let plaintext = self
            .cipher
            .open(Self::token_context(&item.tenant, &item.id), &item.token)
            .await?;
        serde_json::from_slice(plaintext.as_bytes())
            .map_err(|_| ConnectionError::Cipher(CipherError::Rejected))
    }

    /// Deletes the connection (and with it the token ciphertext); returns the old item.
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<ConnectionItem, ConnectionError> {
        match self
            .table
            .delete_existing(&keys::tenant(tenant), &keys::ga_connection(id))
            .await
        {
            Ok(item) => Ok(item),
            Err(StorageError::ConditionFailed) => Err(ConnectionError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    async fn set_status(
        &self,
        item: &ConnectionItem,
        status: ConnectionStatus,
    ) -> Result<(), StorageError> {
        let status = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.table
            .client()
            .update_item()
            .table_name(self.table.name())
            .set_key(Some(Table::key(&item.pk, &item.sk)))
            .update_expression("SET #s = :s")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", AttributeValue::S(status))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StorageError::Unavailable(format!("update_item: {e}")))
    }

    /// A usable access token for the connection: the stored one if it is valid for more than
    /// [`REFRESH_MARGIN_SECS`], else a refreshed one (stored encrypted, conditionally on
    /// `token_version`; if another container refreshed first, its token is used).
    pub async fn access_token(
        &self,
        config: &GoogleConfig,
        item: &ConnectionItem,
    ) -> Result<SecretToken, ConnectionError> {
        self.token_for(config, item, false).await
    }

    /// `runReport` with the connection's token. If Google refuses a token we believed valid
    /// (revoked access token, clock skew), refresh once and retry; a refused refresh means the
    /// grant is gone (needs_reauth).
    pub async fn run_report(
        &self,
        config: &GoogleConfig,
        item: &ConnectionItem,
        property: &str,
        request: &serde_json::Value,
    ) -> Result<serde_json::Value, ConnectionError> {
        let token = self.token_for(config, item, false).await?;
        match self
            .google
            .run_report(config, &token, property, request)
            .await
        {
            Err(GoogleError::Unauthenticated) => {
                tracing::info!(connection = %item.id, "access token refused by Google; refreshing once");
                let token = self.token_for(config, item, true).await?;
                self.google
                    .run_report(config, &token, property, request)
                    .await
                    .map_err(|e| match e {
                        GoogleError::Unauthenticated => ConnectionError::NeedsReauth {
                            connection_id: item.id.clone(),
                        },
                        other => other.into(),
                    })
            }
            other => other.map_err(Into::into),
        }
    }

    async fn token_for(
        &self,
        config: &GoogleConfig,
        item: &ConnectionItem,
        force_refresh: bool,
    ) -> Result<SecretToken, ConnectionError> {
        match item.status {
            ConnectionStatus::Active => {}
            ConnectionStatus::NeedsReauth => {
                return Err(ConnectionError::NeedsReauth {
                    connection_id: item.id.clone(),
                });
            }
            ConnectionStatus::Revoked => return Err(ConnectionError::NotFound),
        }
        let tokens = self.tokens(item).await?;
        if !force_refresh && item.access_expires_at - now_epoch() > REFRESH_MARGIN_SECS {
            return Ok(tokens.access_token);
        }
        let fresh = match self.google.refresh(config, &tokens.refresh_token).await {
            Ok(fresh) => fresh,
            Err(GoogleError::InvalidGrant) => {
                app_telemetry::metrics::count("GaTokenRefreshFailed");
                tracing::warn!(connection = %item.id, tenant = %item.tenant, "refresh token refused (invalid_grant): needs_reauth");
                self.set_status(item, ConnectionStatus::NeedsReauth).await?;
                return Err(ConnectionError::NeedsReauth {
                    connection_id: item.id.clone(),
                });
            }
            Err(other) => {
                app_telemetry::metrics::count("GaTokenRefreshFailed");
                return Err(other.into());
            }
        };
        let pair = TokenPair {
            access_token: fresh.access_token.clone(),
            // Google may rotate the refresh token; keep the new one if it did.
            refresh_token: fresh.refresh_token.clone().unwrap_or(tokens.refresh_token),
        };
        let plaintext =
            serde_json::to_vec(&pair).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let envelope = self
            .cipher
            .seal(Self::token_context(&item.tenant, &item.id), &plaintext)
            .await?;
        let result = self
            .table
            .client()
            .update_item()
            .table_name(self.table.name())
            .set_key(Some(Table::key(&item.pk, &item.sk)))
            .update_expression(
                "SET #t = :token, token_version = :next, access_expires_at = :exp, last_refreshed_at = :now",
            )
            .condition_expression("token_version = :expected")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":token", AttributeValue::M(to_item(&envelope)?))
            .expression_attribute_values(":next", AttributeValue::N((item.token_version + 1).to_string()))
            .expression_attribute_values(":expected", AttributeValue::N(item.token_version.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(fresh.expires_at.to_string()))
            .expression_attribute_values(":now", AttributeValue::S(now_rfc3339()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(fresh.access_token),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Someone refreshed concurrently and stored first: use theirs, keep ours unused.
                let current = self.get(&item.tenant, &item.id).await?;
                Ok(self.tokens(&current).await?.access_token)
            }
            Err(e) => Err(StorageError::Unavailable(format!("update_item: {e}")).into()),
        }
    }
}
