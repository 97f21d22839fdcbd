//! Dashboards and settings in the single table. Every method takes the tenant first: there is no
//! way to read or write outside a tenant's partition.
//!
//! DynamoDB calls per operation (warm): list 1 (Query), get 1 (GetItem), create 1
//! (TransactWriteItems: item + counter) + 1 BatchGetItem when widgets name connections,
//! replace 1 (UpdateItem, conditional on version) + the same BatchGetItem, delete 1
//! (TransactWriteItems), settings read 1 (BatchGetItem), settings write 1 (UpdateItem).

use std::collections::{HashMap, HashSet};

use app_storage::aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
};
use app_storage::{Page, QuerySpec, StorageError, Table, from_item, keys, to_item};
use serde::{Deserialize, Serialize};

use crate::model::{Dashboard, DashboardInput, SettingsValues};

/// The stored form of a dashboard (explicit fields: no serde flatten through DynamoDB types).
#[derive(Debug, Serialize, Deserialize)]
struct DashboardItem {
    pk: String,
    sk: String,
    entity: String,
    id: String,
    content: DashboardInput,
    version: u64,
    created_at: String,
    created_by: String,
    updated_at: String,
    updated_by: String,
}

impl From<DashboardItem> for Dashboard {
    fn from(item: DashboardItem) -> Self {
        Self {
            id: item.id,
            content: item.content,
            version: item.version,
            created_at: item.created_at,
            created_by: item.created_by,
            updated_at: item.updated_at,
            updated_by: item.updated_by,
        }
    }
}

/// Why a write did not happen, beyond storage failures.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("not found")]
    NotFound,
    #[error("version mismatch")]
    VersionMismatch,
    #[error("tenant limit reached")]
    LimitReached,
    #[error("item too large")]
    TooLarge,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Clone)]
pub struct DashboardStore {
    table: Table,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

const COUNTER: &str = "dashboards";

impl DashboardStore {
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    pub async fn list(
        &self,
        tenant: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Dashboard>, StorageError> {
        let scope = format!("{tenant}/dashboards");
        let page: Page<DashboardItem> = self
            .table
            .query_page(
                QuerySpec {
                    index: None,
                    partition: keys::tenant(tenant),
                    sort_prefix: Some(keys::DASHBOARD_PREFIX.into()),
                    limit,
                    // ids are UUIDv7: sort-key order is creation order
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

    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<Dashboard>, StorageError> {
        let item: Option<DashboardItem> = self
            .table
            .get(&keys::tenant(tenant), &keys::dashboard(id))
            .await?;
        Ok(item.map(Into::into))
    }

    pub async fn create(
        &self,
        tenant: &str,
        subject: &str,
        content: DashboardInput,
        limit: u32,
    ) -> Result<Dashboard, WriteError> {
        let id = uuid::Uuid::now_v7().to_string();
        let at = now();
        let item = DashboardItem {
            pk: keys::tenant(tenant),
            sk: keys::dashboard(&id),
            entity: "dashboard".into(),
            id,
            content,
            version: 1,
            created_at: at.clone(),
            created_by: subject.into(),
            updated_at: at,
            updated_by: subject.into(),
        };
        let attributes = to_item(&item)?;
        check_size(&attributes)?;
        let result = self
            .table
            .transact(vec![
                self.table.tx_put_new(attributes)?,
                self.table
                    .tx_counter(&keys::tenant(tenant), COUNTER, 1, Some(limit))?,
            ])
            .await;
        match result {
            Ok(()) => Ok(item.into()),
            Err(e) if e.condition_failed_at(1) => Err(WriteError::LimitReached),
            Err(e) => Err(e.into()),
        }
    }

    /// Full replace, only if the stored version is `expected` (one conditional UpdateItem).
    pub async fn replace(
        &self,
        tenant: &str,
        id: &str,
        subject: &str,
        content: &DashboardInput,
        expected: u64,
    ) -> Result<Dashboard, WriteError> {
        let content_value = to_attribute(content)?;
        if estimated_size(&content_value) > crate::model::MAX_ITEM_BYTES {
            return Err(WriteError::TooLarge);
        }
        let output = self
            .table
            .client()
            .update_item()
            .table_name(self.table.name())
            .set_key(Some(Table::key(
                &keys::tenant(tenant),
                &keys::dashboard(id),
            )))
            .update_expression(
                "SET content = :content, version = :next, updated_at = :at, updated_by = :by",
            )
            .condition_expression("attribute_exists(pk) AND version = :expected")
            .expression_attribute_values(":content", content_value)
            .expression_attribute_values(":next", AttributeValue::N((expected + 1).to_string()))
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
            .expression_attribute_values(":at", AttributeValue::S(now()))
            .expression_attribute_values(":by", AttributeValue::S(subject.into()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match output {
            Ok(output) => {
                let item: DashboardItem = from_item(output.attributes.unwrap_or_default())?;
                Ok(item.into())
            }
            Err(error) => {
                if let Some(failure) = error.as_service_error()
                    && failure.is_conditional_check_failed_exception()
                {
                    // The old item (if any) came back with the failure: no second read needed.
                    let existed = match failure {
                        app_storage::aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(e) => e.item().is_some_and(|i| !i.is_empty()),
                        _ => false,
                    };
                    return Err(if existed {
                        WriteError::VersionMismatch
                    } else {
                        WriteError::NotFound
                    });
                }
                Err(StorageError::Unavailable(format!("update_item: {error}")).into())
            }
        }
    }

    /// Deletes a dashboard (and decrements the tenant's counter) in one transaction.
    pub async fn delete(
        &self,
        tenant: &str,
        id: &str,
        expected: Option<u64>,
    ) -> Result<(), WriteError> {
        let pk = keys::tenant(tenant);
        let sk = keys::dashboard(id);
        let mut delete = app_storage::aws_sdk_dynamodb::types::Delete::builder()
            .table_name(self.table.name())
            .set_key(Some(Table::key(&pk, &sk)))
            .condition_expression("attribute_exists(pk)");
        if let Some(version) = expected {
            delete = delete
                .condition_expression("attribute_exists(pk) AND version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(version.to_string()));
        }
        let delete = delete
            .build()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let result = self
            .table
            .transact(vec![
                app_storage::aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .delete(delete)
                    .build(),
                self.table.tx_counter(&pk, COUNTER, -1, None)?,
            ])
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.condition_failed_at(0) => match expected {
                // With If-Match, tell "gone" from "changed" (failure path only).
                Some(_) if self.get(tenant, id).await?.is_some() => {
                    Err(WriteError::VersionMismatch)
                }
                _ => Err(WriteError::NotFound),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Which of `ids` are GA connections of `tenant` (one BatchGetItem; ids of other tenants
    /// simply are not found in this tenant's partition).
    pub async fn existing_connections(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<HashSet<String>, StorageError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let pk = keys::tenant(tenant);
        let keys_and_attributes = KeysAndAttributes::builder()
            .set_keys(Some(
                ids.iter()
                    .map(|id| Table::key(&pk, &keys::ga_connection(id)))
                    .collect(),
            ))
            .projection_expression("sk")
            .consistent_read(true)
            .build()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let items = self
            .batch_get(HashMap::from([(
                self.table.name().to_string(),
                keys_and_attributes,
            )]))
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|item| match item.get("sk") {
                Some(AttributeValue::S(sk)) => sk
                    .strip_prefix(keys::GA_CONNECTION_PREFIX)
                    .map(str::to_string),
                _ => None,
            })
            .collect())
    }

    async fn batch_get(
        &self,
        request: HashMap<String, KeysAndAttributes>,
    ) -> Result<Vec<app_storage::Item>, StorageError> {
        let mut pending = Some(request);
        let mut found = Vec::new();
        // Unprocessed keys are retried a few times (DynamoDB returns them under throttling).
        for _ in 0..4 {
            let Some(request) = pending.take().filter(|r| !r.is_empty()) else {
                break;
            };
            let output = self
                .table
                .client()
                .batch_get_item()
                .set_request_items(Some(request))
                .send()
                .await
                .map_err(|e| StorageError::Unavailable(format!("batch_get_item: {e}")))?;
            if let Some(mut responses) = output.responses {
                found.extend(responses.remove(self.table.name()).unwrap_or_default());
            }
            pending = output.unprocessed_keys;
        }
        if pending.is_some_and(|p| !p.is_empty()) {
            return Err(StorageError::Unavailable(
                "batch_get_item: unprocessed keys".into(),
            ));
        }
        Ok(found)
    }

    // ---- settings ----

    /// (tenant defaults, the user's preferences), one BatchGetItem.
    pub async fn settings(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<(SettingsValues, SettingsValues), StorageError> {
        let pk = keys::tenant(tenant);
        let user_sk = keys::settings_user(subject);
        let request = KeysAndAttributes::builder()
            .keys(Table::key(&pk, keys::SETTINGS_TENANT))
            .keys(Table::key(&pk, &user_sk))
            .consistent_read(true)
            .build()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let items = self
            .batch_get(HashMap::from([(self.table.name().to_string(), request)]))
            .await?;
        let mut tenant_values = SettingsValues::default();
        let mut user_values = SettingsValues::default();
        for mut item in items {
            let sk = match item.get("sk") {
                Some(AttributeValue::S(sk)) => sk.clone(),
                _ => continue,
            };
            let values: SettingsValues = match item.remove("values") {
                Some(AttributeValue::M(map)) => from_item(map)?,
                _ => SettingsValues::default(),
            };
            if sk == keys::SETTINGS_TENANT {
                tenant_values = values;
            } else if sk == user_sk {
                user_values = values;
            }
        }
        Ok((tenant_values, user_values))
    }

    /// Replaces one settings block. Settings have a single writer class per block and no
    /// read-modify-write: the whole block is written, so there is no update to lose.
    pub async fn put_settings(
        &self,
        tenant: &str,
        sk: &str,
        subject: &str,
        values: &SettingsValues,
    ) -> Result<(), StorageError> {
        self.table
            .client()
            .update_item()
            .table_name(self.table.name())
            .set_key(Some(Table::key(&keys::tenant(tenant), sk)))
            .update_expression(
                "SET #values = :values, updated_at = :at, updated_by = :by ADD version :one",
            )
            .expression_attribute_names("#values", "values")
            .expression_attribute_values(":values", AttributeValue::M(to_item(values)?))
            .expression_attribute_values(":at", AttributeValue::S(now()))
            .expression_attribute_values(":by", AttributeValue::S(subject.into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StorageError::Unavailable(format!("update_item: {e}")))
    }
}

fn to_attribute(content: &DashboardInput) -> Result<AttributeValue, StorageError> {
    Ok(AttributeValue::M(to_item(content)?))
}

fn check_size(item: &app_storage::Item) -> Result<(), WriteError> {
    let size: usize = item.iter().map(|(k, v)| k.len() + estimated_size(v)).sum();
    if size > crate::model::MAX_ITEM_BYTES {
        return Err(WriteError::TooLarge);
    }
    Ok(())
}

/// DynamoDB's item-size accounting, closely enough (names + values, a few bytes of overhead).
fn estimated_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::L(items) => 3 + items.iter().map(|v| 1 + estimated_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + estimated_size(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
        _ => 16,
    }
}
