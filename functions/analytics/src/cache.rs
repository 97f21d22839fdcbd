//! GA results cached in DynamoDB, keyed by tenant, connection and a canonical hash of the query.
//!
//! One `BatchGetItem` reads the connection, the cached result and the last quota reading together,
//! so a cache hit costs one DynamoDB call and no KMS or Google call. A miss decrypts the token
//! (KMS), calls Google once — concurrent identical misses in this container share that call — and
//! writes the result and the quota reading back in one `BatchWriteItem`.
//! Low quota (under `analytics.quota_floor` tokens/day) or a Google 429 serves the stale cached
//! result if there is one (`stale: true`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use app_config::AppConfig;
use app_connections::{ConnectionError, ConnectionItem, ConnectionStatus, Connections};
use app_google::GoogleError;
use app_storage::aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, PutRequest, WriteRequest,
};
use app_storage::{Table, keys};
use app_web::ApiError;
use futures::future::{BoxFuture, FutureExt, Shared};
use serde::Serialize;
use serde_json::Value;

/// Where a result came from and how old it is (the `data_freshness` field).
#[derive(Clone, Debug, Serialize)]
pub struct Freshness {
    pub source: &'static str,
    /// RFC 3339
    pub fetched_at: String,
    pub age_secs: i64,
    /// Seconds it stays fresh (0 when stale).
    pub fresh_for_secs: i64,
    pub stale: bool,
}

#[derive(Clone, Debug)]
pub struct Fetched {
    pub response: Value,
    pub property_id: String,
    pub freshness: Freshness,
}

/// Shared by every waiter on the same cache key (hence the `Clone` error type).
type Flight = Shared<BoxFuture<'static, Result<Value, ConnectionError>>>;

#[derive(Clone)]
pub struct AnalyticsCache {
    table: Table,
    connections: Connections,
    in_flight: Arc<Mutex<HashMap<String, Flight>>>,
}

fn now() -> i64 {
    app_connections::now_epoch()
}

fn rfc3339(epoch: i64) -> String {
    jiff::Timestamp::from_second(epoch)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn string<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// The query's cache key: serde_json maps are sorted, so the serialisation is canonical.
fn query_hash(request: &Value) -> String {
    let canonical = request.to_string();
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes())
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl AnalyticsCache {
    pub fn new(table: Table, connections: Connections) -> Self {
        Self {
            table,
            connections,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The GA response for `request` on the connection's selected property.
    pub async fn fetch(
        &self,
        config: &AppConfig,
        tenant: &str,
        connection_id: &str,
        request: &Value,
        includes_today: bool,
        refresh: bool,
    ) -> Result<Fetched, ApiError> {
        let google = config.google.clone().ok_or(ApiError::ServiceUnavailable {
            retry_after_secs: 60,
        })?;
        let pk = keys::tenant(tenant);
        let connection_sk = keys::ga_connection(connection_id);
        let cache_sk = format!("CACHE#{connection_id}#{}", query_hash(request));
        let quota_sk = format!("QUOTA#{connection_id}");
        let items = self
            .read(&pk, &[&connection_sk, &cache_sk, &quota_sk])
            .await?;

        let connection_raw = items
            .get(&connection_sk)
            .cloned()
            .ok_or(ApiError::NotFound)?;
        let connection: ConnectionItem = app_storage::from_item(connection_raw)?;
        match connection.status {
            ConnectionStatus::Active => {}
            ConnectionStatus::NeedsReauth => {
                return Err(ApiError::NeedsReauth {
                    connection_id: connection.id,
                });
            }
            ConnectionStatus::Revoked => return Err(ApiError::NotFound),
        }
        let property = connection.selected_property.clone().ok_or_else(|| {
            ApiError::field(
                "connection_id",
                "the connection has no selected property (PATCH /v1/ga/connections/{id})",
            )
        })?;
        let cached = items
            .get(&cache_sk)
            .filter(|item| string(item, "property") == Some(property.as_str()))
            .and_then(|item| {
                let response: Value = serde_json::from_str(string(item, "response")?).ok()?;
                Some((
                    response,
                    number(item, "fetched_at")?,
                    number(item, "fresh_until")?,
                ))
            });
        let quota_low = items
            .get(&quota_sk)
            .filter(|item| string(item, "property") == Some(property.as_str()))
            .and_then(|item| number(item, "remaining"))
            .is_some_and(|remaining| remaining < config.analytics.quota_floor);

        let now = now();
        let from_cache =
            |(response, fetched_at, fresh_until): (Value, i64, i64), stale: bool| Fetched {
                response,
                property_id: property.clone(),
                freshness: Freshness {
                    source: "cache",
                    fetched_at: rfc3339(fetched_at),
                    age_secs: (now - fetched_at).max(0),
                    fresh_for_secs: if stale { 0 } else { (fresh_until - now).max(0) },
                    stale,
                },
            };
        if let Some(hit) = &cached
            && !refresh
            && now < hit.2
        {
            app_telemetry::metrics::count("AnalyticsCacheHit");
            return Ok(from_cache(hit.clone(), false));
        }
        if quota_low && let Some(stale) = cached.clone() {
            app_telemetry::metrics::count("AnalyticsStaleOnLowQuota");
            tracing::warn!(
                tenant,
                connection = connection_id,
                "GA quota low: serving stale cache"
            );
            return Ok(from_cache(stale, true));
        }
        app_telemetry::metrics::count("AnalyticsCacheMiss");

        let flight = self.flight(
            &cache_sk,
            google,
            connection,
            property.clone(),
            request.clone(),
        );
        let response = match flight.await {
            Ok(response) => response,
            // Quota exhausted at Google: stale data if we have it, else the 429 itself (the GA
            // function answers 503 here; analytics passes Google's 429 through, per its issue).
            Err(ConnectionError::Google(GoogleError::RateLimited { retry_after_secs })) => {
                if let Some(stale) = cached {
                    return Ok(from_cache(stale, true));
                }
                return Err(ApiError::TooManyRequests { retry_after_secs });
            }
            Err(other) => return Err(other.into()),
        };
        let fresh_secs = if includes_today {
            config.analytics.cache_fresh_today_secs
        } else {
            config.analytics.cache_fresh_secs
        };
        self.store(
            &pk,
            &cache_sk,
            &quota_sk,
            &property,
            &response,
            now,
            fresh_secs,
            config.analytics.cache_keep_secs,
        )
        .await;
        Ok(Fetched {
            response,
            property_id: property,
            freshness: Freshness {
                source: "google",
                fetched_at: rfc3339(now),
                age_secs: 0,
                fresh_for_secs: fresh_secs,
                stale: false,
            },
        })
    }

    /// One Google call per cache key at a time in this container; later callers await it.
    fn flight(
        &self,
        key: &str,
        google: app_config::GoogleConfig,
        connection: ConnectionItem,
        property: String,
        request: Value,
    ) -> Flight {
        let mut in_flight = match self.in_flight.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(flight) = in_flight.get(key) {
            return flight.clone();
        }
        let connections = self.connections.clone();
        let registry = self.in_flight.clone();
        let owned_key = key.to_string();
        let flight = async move {
            let result = connections
                .run_report(&google, &connection, &property, &request)
                .await;
            if let Ok(mut map) = registry.lock() {
                map.remove(&owned_key);
            }
            result
        }
        .boxed()
        .shared();
        in_flight.insert(key.to_string(), flight.clone());
        flight
    }

    async fn read(
        &self,
        pk: &str,
        sort_keys: &[&str],
    ) -> Result<HashMap<String, HashMap<String, AttributeValue>>, ApiError> {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(
                sort_keys.iter().map(|sk| Table::key(pk, sk)).collect(),
            ))
            .consistent_read(true)
            .build()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let output = self
            .table
            .client()
            .batch_get_item()
            .request_items(self.table.name(), request)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "dynamodb unavailable");
                ApiError::unavailable()
            })?;
        let mut found = HashMap::new();
        for item in output
            .responses
            .and_then(|mut r| r.remove(self.table.name()))
            .unwrap_or_default()
        {
            if let Some(sk) = string(&item, "sk") {
                found.insert(sk.to_string(), item);
            }
        }
        Ok(found)
    }

    /// Caching is best effort: a failed write is logged, the answer is still served.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        pk: &str,
        cache_sk: &str,
        quota_sk: &str,
        property: &str,
        response: &Value,
        now: i64,
        fresh_secs: i64,
        keep_secs: i64,
    ) {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let n = |v: i64| AttributeValue::N(v.to_string());
        let mut writes = vec![HashMap::from([
            ("pk".to_string(), s(pk)),
            ("sk".to_string(), s(cache_sk)),
            ("entity".to_string(), s("analytics_cache")),
            ("property".to_string(), s(property)),
            ("response".to_string(), s(&response.to_string())),
            ("fetched_at".to_string(), n(now)),
            ("fresh_until".to_string(), n(now + fresh_secs)),
            (app_storage::attr::TTL.to_string(), n(now + keep_secs)),
        ])];
        if let Some(remaining) = response["propertyQuota"]["tokensPerDay"]["remaining"].as_i64() {
            app_telemetry::metrics::gauge("GaQuotaTokensPerDayRemaining", remaining as f64);
            writes.push(HashMap::from([
                ("pk".to_string(), s(pk)),
                ("sk".to_string(), s(quota_sk)),
                ("entity".to_string(), s("ga_quota")),
                ("property".to_string(), s(property)),
                ("remaining".to_string(), n(remaining)),
                ("updated_at".to_string(), n(now)),
                (app_storage::attr::TTL.to_string(), n(now + 2 * 24 * 3600)),
            ]));
        }
        let requests: Vec<WriteRequest> = writes
            .into_iter()
            .filter_map(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .ok()
                    .map(|put| WriteRequest::builder().put_request(put).build())
            })
            .collect();
        if let Err(error) = self
            .table
            .client()
            .batch_write_item()
            .request_items(self.table.name(), requests)
            .send()
            .await
        {
            tracing::warn!(%error, "analytics cache write failed");
        }
    }
}
