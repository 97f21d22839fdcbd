//! Machine API keys: `adk_<key id: 32 hex>_<secret: 43 base64url>`.
//!
//! Only HMAC-SHA256(pepper, key) is stored; the plaintext is returned once, at creation. The key id
//! in the key is the item's partition key, so verification is one `GetItem`, never a scan.
//! Verified records are cached per container for [`CACHE_TTL`]: a revoked key stops working at
//! once in the container that revoked it and within that TTL everywhere else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use app_storage::{Page, QuerySpec, StorageError, Table, to_item};
use aws_lc_rs::{hmac, rand};
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Credential, Principal, Rejection};

pub const KEY_PREFIX: &str = "adk_";
const KEY_ID_HEX_LEN: usize = 32;
const SECRET_LEN: usize = 43;
/// How long a verified key record is trusted without reading DynamoDB again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// `last_used_at` is written at most this often per key.
pub const LAST_USED_GRANULARITY: Duration = Duration::from_secs(300);
const CACHE_MAX_ENTRIES: usize = 10_000;

/// Splits a presented key into (key id, whole key) after checking its shape.
pub fn parse_key(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (key_id, secret) = rest.split_at_checked(KEY_ID_HEX_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let id_ok = key_id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let secret_ok = secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(key_id)
}

fn partition(key_id: &str) -> String {
    format!("APIKEY#{key_id}")
}
const SORT: &str = "APIKEY";

fn tenant_list_partition(tenant: &str) -> String {
    format!("T#{tenant}#APIKEYS")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ApiKeyItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    key_id: String,
    tenant: String,
    name: String,
    scopes: Vec<String>,
    /// base64 HMAC-SHA256(pepper, key)
    hash: String,
    created_at: String,
    created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used_at: Option<String>,
}

/// What the API shows about a key (never the key or its hash).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub created_by: String,
    pub valid_until: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<ApiKeyItem> for ApiKeyRecord {
    fn from(item: ApiKeyItem) -> Self {
        Self {
            id: item.key_id,
            name: item.name,
            scopes: item.scopes,
            created_at: item.created_at,
            created_by: item.created_by,
            valid_until: item.valid_until,
            revoked_at: item.revoked_at,
            last_used_at: item.last_used_at,
        }
    }
}

/// A validated request to create a key.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub valid_until: Option<OffsetDateTime>,
}

/// The plaintext key, returned once. `Debug` hides it.
pub struct GeneratedKey(String);

impl GeneratedKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GeneratedKey([redacted])")
    }
}

#[derive(Clone)]
struct CacheEntry {
    item: ApiKeyItem,
    fetched: Instant,
}

pub struct ApiKeyStore {
    table: Table,
    cache: Mutex<HashMap<String, CacheEntry>>,
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StorageError> {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes).map_err(|_| StorageError::Unavailable("random source".into()))?;
    Ok(bytes)
}

fn mac(pepper: &[u8], key: &str) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, pepper), key.as_bytes())
}

impl ApiKeyStore {
    pub fn new(table: Table) -> Self {
        Self {
            table,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Creates a key (transaction with the tenant's key counter, so the limit holds).
    pub async fn create(
        &self,
        tenant: &str,
        created_by: &str,
        new: NewApiKey,
        pepper: &[u8],
        limit: u32,
    ) -> Result<(ApiKeyRecord, GeneratedKey), StorageError> {
        let id_bytes: [u8; 16] = random_bytes()?;
        let key_id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let secret: [u8; 32] = random_bytes()?;
        let plaintext = format!("{KEY_PREFIX}{key_id}_{}", URL_SAFE_NO_PAD.encode(secret));
        let created_at = now_rfc3339();
        let item = ApiKeyItem {
            pk: partition(&key_id),
            sk: SORT.into(),
            gsi1pk: tenant_list_partition(tenant),
            gsi1sk: format!("{created_at}#{key_id}"),
            key_id: key_id.clone(),
            tenant: tenant.into(),
            name: new.name,
            scopes: new.scopes,
            hash: STANDARD.encode(mac(pepper, &plaintext).as_ref()),
            created_at,
            created_by: created_by.into(),
            valid_until: new.valid_until.and_then(|t| t.format(&Rfc3339).ok()),
            revoked_at: None,
            last_used_at: None,
        };
        let tenant_pk = format!("T#{tenant}");
        self.table
            .transact(vec![
                self.table.tx_put_new(to_item(&item)?)?,
                self.table
                    .tx_counter(&tenant_pk, "api_keys", 1, Some(limit))?,
            ])
            .await?;
        Ok((item.into(), GeneratedKey(plaintext)))
    }

    pub async fn list(
        &self,
        tenant: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<ApiKeyRecord>, StorageError> {
        let scope = format!("{tenant}/api-keys");
        let page: Page<ApiKeyItem> = self
            .table
            .query_page(
                QuerySpec {
                    index: Some(app_storage::GSI1),
                    partition: tenant_list_partition(tenant),
                    sort_prefix: None,
                    limit,
                    newest_first: true,
                    scope: &scope,
                },
                cursor,
            )
            .await?;
        Ok(Page {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Revokes a key of `tenant`. `Ok(false)` when there is no such active key in that tenant
    /// (another tenant's key looks exactly like a missing one).
    pub async fn revoke(&self, tenant: &str, key_id: &str) -> Result<bool, StorageError> {
        if key_id.len() != KEY_ID_HEX_LEN || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(self.table.name())
            .set_key(Some(Table::key(&partition(key_id), SORT)))
            .update_expression("SET revoked_at = :now")
            .condition_expression(
                "attribute_exists(pk) AND tenant = :tenant AND attribute_not_exists(revoked_at)",
            )
            .expression_attribute_values(":now", AttributeValue::S(now_rfc3339()))
            .expression_attribute_values(":tenant", AttributeValue::S(tenant.into()))
            .build()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let result = self
            .table
            .transact(vec![
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .update(update)
                    .build(),
                self.table
                    .tx_counter(&format!("T#{tenant}"), "api_keys", -1, None)?,
            ])
            .await;
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(key_id);
        }
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.condition_failed_at(0) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Verifies a presented key and returns the machine principal.
    pub async fn authenticate(
        &self,
        presented: &str,
        pepper: &[u8],
    ) -> Result<Principal, Rejection> {
        let key_id = parse_key(presented).ok_or(Rejection::ApiKeyInvalid)?;
        let item = self.load(key_id).await?.ok_or(Rejection::ApiKeyInvalid)?;
        let stored = STANDARD
            .decode(&item.hash)
            .map_err(|_| Rejection::ApiKeyInvalid)?;
        // Constant-time comparison.
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, pepper),
            presented.as_bytes(),
            &stored,
        )
        .map_err(|_| Rejection::ApiKeyInvalid)?;
        if item.revoked_at.is_some() {
            return Err(Rejection::ApiKeyRevoked);
        }
        let now = OffsetDateTime::now_utc();
        if let Some(until) = &item.valid_until {
            let until =
                OffsetDateTime::parse(until, &Rfc3339).map_err(|_| Rejection::ApiKeyInvalid)?;
            if until <= now {
                return Err(Rejection::ApiKeyExpired);
            }
        }
        self.touch(&item, now).await;
        Ok(Principal::new(
            item.tenant.clone(),
            format!("apikey:{}", item.key_id),
            Credential::ApiKey {
                key_id: item.key_id.clone(),
                scopes: item.scopes.clone(),
            },
        ))
    }

    async fn load(&self, key_id: &str) -> Result<Option<ApiKeyItem>, Rejection> {
        if let Ok(cache) = self.cache.lock()
            && let Some(entry) = cache.get(key_id)
            && entry.fetched.elapsed() < CACHE_TTL
        {
            return Ok(Some(entry.item.clone()));
        }
        let item: Option<ApiKeyItem> = self
            .table
            .get(&partition(key_id), SORT)
            .await
            .map_err(|_| Rejection::StorageUnavailable)?;
        if let (Some(item), Ok(mut cache)) = (&item, self.cache.lock()) {
            if cache.len() >= CACHE_MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(
                key_id.to_string(),
                CacheEntry {
                    item: item.clone(),
                    fetched: Instant::now(),
                },
            );
        }
        Ok(item)
    }

    /// Records use at most once per [`LAST_USED_GRANULARITY`]; the condition keeps concurrent
    /// containers from all writing. Failure is logged and ignored: it must not fail the request.
    async fn touch(&self, item: &ApiKeyItem, now: OffsetDateTime) {
        let threshold = now - LAST_USED_GRANULARITY;
        let fresh = item
            .last_used_at
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .is_some_and(|t| t > threshold);
        if fresh {
            return;
        }
        let (Ok(now_s), Ok(threshold_s)) = (now.format(&Rfc3339), threshold.format(&Rfc3339))
        else {
            return;
        };
        let result = self
            .table
            .client()
            .update_item()
            .table_name(self.table.name())
            .set_key(Some(Table::key(&partition(&item.key_id), SORT)))
            .update_expression("SET last_used_at = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(last_used_at) OR last_used_at < :threshold)",
            )
            .expression_attribute_values(":now", AttributeValue::S(now_s.clone()))
            .expression_attribute_values(":threshold", AttributeValue::S(threshold_s))
            .send()
            .await;
        if let Err(error) = result {
            let conditional = error
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception());
            if !conditional {
                tracing::warn!(target: "auth", "could not record API key use");
            }
        }
        if let Ok(mut cache) = self.cache.lock()
            && let Some(entry) = cache.get_mut(&item.key_id)
        {
            entry.item.last_used_at = Some(now_s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_keys() {
        let good = format!(
            "adk_{}_{}",
            "0123456789abcdef0123456789abcdef",
            "A".repeat(43)
        );
        assert_eq!(parse_key(&good), Some("0123456789abcdef0123456789abcdef"));
        let bad = [
            String::new(),
            "adk_".into(),
            format!(
                "adk_{}_{}",
                "0123456789abcdef0123456789abcdeF",
                "A".repeat(43)
            ),
            format!(
                "adk_{}_{}",
                "0123456789abcdef0123456789abcdef",
                "A".repeat(42)
            ),
            format!(
                "adk_{}-{}",
                "0123456789abcdef0123456789abcdef",
                "A".repeat(43)
            ),
            format!(
                "xyz_{}_{}",
                "0123456789abcdef0123456789abcdef",
                "A".repeat(43)
            ),
            format!(
                "adk_{}_{}",
                "0123456789abcdef0123456789abcdef",
                "A=".repeat(22)
            ),
        ];
        for key in bad {
            assert_eq!(parse_key(&key), None, "{key}");
        }
    }
}
