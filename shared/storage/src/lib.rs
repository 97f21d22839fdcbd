//! The DynamoDB single table (key design: docs/data-model.md) behind a narrow API.
//!
//! Invariants:
//! - nothing here scans: reads are `GetItem` or `Query` on one partition;
//! - every write states its condition (`put_new`, `put_versioned`, `delete_existing`, transactions);
//! - cursors handed to clients are sealed with an HMAC over (last key, scope), so a tampered cursor
//!   or one minted for another tenant or list fails with [`StorageError::InvalidCursor`].

mod cursor;

pub use cursor::CursorSealer;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use aws_sdk_dynamodb;

pub type Item = HashMap<String, AttributeValue>;

/// Attribute names shared by every item kind.
pub mod attr {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const GSI1_PK: &str = "gsi1pk";
    pub const GSI1_SK: &str = "gsi1sk";
    pub const VERSION: &str = "version";
    /// Epoch seconds; DynamoDB deletes the item some time after (reads must still check it).
    pub const TTL: &str = "expires_at";
}

pub const GSI1: &str = "gsi1";

#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageError {
    /// A conditional write found the item in another state (exists / missing / other version).
    #[error("condition failed")]
    ConditionFailed,
    /// A transaction was cancelled; one reason code per item (`None` where the item was fine).
    #[error("transaction cancelled: {0:?}")]
    TransactionCancelled(Vec<Option<String>>),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
    /// DynamoDB throttled, timed out or failed: retryable, answered 503.
    #[error("dynamodb unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    /// For a cancelled transaction: did the item at `index` fail its condition?
    pub fn condition_failed_at(&self, index: usize) -> bool {
        matches!(self, Self::TransactionCancelled(reasons)
            if reasons.get(index).and_then(|r| r.as_deref()) == Some("ConditionalCheckFailed"))
    }
}

fn unavailable<E, R>(error: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let code = error
        .as_service_error()
        .and_then(|e| e.code().map(str::to_string))
        .unwrap_or_else(|| format!("{error}"));
    StorageError::Unavailable(code)
}

fn is_condition_failure<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// One page of a query.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// What to query: one partition (of the table or of GSI1), optionally one sort-key prefix.
#[derive(Debug, Clone)]
pub struct QuerySpec<'a> {
    pub index: Option<&'static str>,
    pub partition: String,
    pub sort_prefix: Option<String>,
    pub limit: i32,
    pub newest_first: bool,
    /// Binds cursors to one tenant and one list, e.g. `"t1/dashboards"`.
    pub scope: &'a str,
}

#[derive(Clone, Debug)]
pub struct Table {
    client: Client,
    name: String,
    cursors: CursorSealer,
}

impl Table {
    pub fn new(client: Client, name: impl Into<String>, cursor_key: &[u8]) -> Self {
        Self {
            client,
            name: name.into(),
            cursors: CursorSealer::new(cursor_key),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn key(pk: &str, sk: &str) -> Item {
        HashMap::from([
            (attr::PK.to_string(), AttributeValue::S(pk.to_string())),
            (attr::SK.to_string(), AttributeValue::S(sk.to_string())),
        ])
    }

    /// Strongly consistent `GetItem`, so a read after a write sees it.
    pub async fn get<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<T>, StorageError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.map(from_item).transpose()
    }

    /// Writes an item that must not exist yet.
    pub async fn put_new(&self, item: Item) -> Result<(), StorageError> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                if is_condition_failure(&e) {
                    StorageError::ConditionFailed
                } else {
                    unavailable(e)
                }
            })
    }

    /// Replaces an item only if its stored `version` is `expected` (optimistic concurrency).
    pub async fn put_versioned(&self, item: Item, expected: u64) -> Result<(), StorageError> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_exists(pk) AND #v = :expected")
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                if is_condition_failure(&e) {
                    StorageError::ConditionFailed
                } else {
                    unavailable(e)
                }
            })
    }

    /// Writes an item unconditionally (only for items with no concurrent writers to lose, such
    /// as a user's own preferences, whose last write wins by design).
    pub async fn put(&self, item: Item) -> Result<(), StorageError> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Deletes an item that must exist; returns it.
    pub async fn delete_existing<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<T, StorageError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .condition_expression("attribute_exists(pk)")
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| {
                if is_condition_failure(&e) {
                    StorageError::ConditionFailed
                } else {
                    unavailable(e)
                }
            })?;
        output
            .attributes
            .map(from_item)
            .transpose()?
            .ok_or_else(|| StorageError::Corrupt("delete returned no item".into()))
    }

    /// `TransactWriteItems`: all or nothing.
    pub async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StorageError> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
                    StorageError::TransactionCancelled(
                        c.cancellation_reasons()
                            .iter()
                            .map(|r| r.code().filter(|c| *c != "None").map(str::to_string))
                            .collect(),
                    )
                } else {
                    unavailable(e)
                }
            })
    }

    /// One page of a partition, resuming from a sealed cursor.
    pub async fn query_page<T: DeserializeOwned>(
        &self,
        spec: QuerySpec<'_>,
        cursor: Option<&str>,
    ) -> Result<Page<T>, StorageError> {
        let (pk_attr, sk_attr) = match spec.index {
            Some(_) => (attr::GSI1_PK, attr::GSI1_SK),
            None => (attr::PK, attr::SK),
        };
        let start_key = cursor
            .map(|c| self.cursors.open(c, spec.scope))
            .transpose()?;
        let mut request = self
            .client
            .query()
            .table_name(&self.name)
            .set_index_name(spec.index.map(str::to_string))
            .expression_attribute_names("#pk", pk_attr)
            .expression_attribute_values(":pk", AttributeValue::S(spec.partition.clone()))
            .scan_index_forward(!spec.newest_first)
            .limit(spec.limit)
            .set_exclusive_start_key(start_key);
        request = match &spec.sort_prefix {
            Some(prefix) => request
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", sk_attr)
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.clone())),
            None => request.key_condition_expression("#pk = :pk"),
        };
        let output = request.send().await.map_err(unavailable)?;
        let items = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<T>, _>>()?;
        let next_cursor = output
            .last_evaluated_key
            .map(|key| self.cursors.seal(&key, spec.scope))
            .transpose()?;
        Ok(Page { items, next_cursor })
    }
}

/// Building blocks for [`Table::transact`].
impl Table {
    /// A `Put` of an item that must not exist yet.
    pub fn tx_put_new(&self, item: Item) -> Result<TransactWriteItem, StorageError> {
        let put = aws_sdk_dynamodb::types::Put::builder()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A `Delete` of an item that must exist.
    pub fn tx_delete_existing(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<TransactWriteItem, StorageError> {
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Adds `delta` to counter attribute `name` of item (`pk`, `COUNTERS`). With `limit`, the
    /// transaction fails (at this item) when the counter is already at the limit; a decrement
    /// never takes it below zero.
    pub fn tx_counter(
        &self,
        pk: &str,
        name: &str,
        delta: i64,
        limit: Option<u32>,
    ) -> Result<TransactWriteItem, StorageError> {
        let mut update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, COUNTERS_SK)))
            .update_expression("ADD #c :delta")
            .expression_attribute_names("#c", name)
            .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()));
        if delta > 0 {
            if let Some(limit) = limit {
                update = update
                    .condition_expression("attribute_not_exists(#c) OR #c < :limit")
                    .expression_attribute_values(":limit", AttributeValue::N(limit.to_string()));
            }
        } else {
            update = update
                .condition_expression("#c >= :min")
                .expression_attribute_values(":min", AttributeValue::N((-delta).to_string()));
        }
        let update = update
            .build()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// Sort key of a tenant's counters item (soft limits).
pub const COUNTERS_SK: &str = "COUNTERS";

/// Serialises a value into an item (serde_dynamo: native DynamoDB types, not a JSON blob).
pub fn to_item<T: Serialize>(value: &T) -> Result<Item, StorageError> {
    serde_dynamo::to_item(value).map_err(|e| StorageError::Corrupt(e.to_string()))
}

pub fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StorageError> {
    serde_dynamo::from_item(item).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Seconds since the epoch, for TTL attributes.
pub fn epoch_seconds(at: time::OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

/// Key formats shared by more than one function (docs/data-model.md is the full list).
pub mod keys {
    /// Partition of everything a tenant owns.
    pub fn tenant(tenant: &str) -> String {
        format!("T#{tenant}")
    }
    pub const DASHBOARD_PREFIX: &str = "DASH#";
    pub fn dashboard(id: &str) -> String {
        format!("{DASHBOARD_PREFIX}{id}")
    }
    pub const GA_CONNECTION_PREFIX: &str = "GACONN#";
    pub fn ga_connection(id: &str) -> String {
        format!("{GA_CONNECTION_PREFIX}{id}")
    }
    pub const SETTINGS_TENANT: &str = "SETTINGS#TENANT";
    pub fn settings_user(subject: &str) -> String {
        format!("SETTINGS#USER#{subject}")
    }
}
