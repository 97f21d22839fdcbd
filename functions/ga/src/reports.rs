//! GA4 reports: validate a query against the Data API's documented limits, run it on the
//! connection's property, normalise the answer; save results (gzip JSON in S3 under
//! `reports/<tenant>/`, metadata with a SHA-256 in DynamoDB).
//!
//! Write order: the body goes to S3 first, the metadata item second (conditional put), so a crash
//! in between leaves an unlisted object, never a listed report without a body. Delete order is
//! the reverse (metadata first) for the same reason.

use std::io::{Read, Write};

use app_auth::Principal;
use app_storage::{Page, QuerySpec, StorageError, Table, keys, to_item};
use app_web::{ApiError, ApiJson, ApiQuery, FieldError, PageParams};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::routes::{google_config, plain_id};

pub const MAX_DATE_RANGES: usize = 4;
pub const MAX_DIMENSIONS: usize = 9;
pub const MAX_METRICS: usize = 10;
pub const MAX_LIMIT: u32 = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    pub connection_id: String,
    /// 1–4 ranges; dates `YYYY-MM-DD`, `today`, `yesterday` or `NdaysAgo`.
    pub date_ranges: Vec<DateRangeInput>,
    #[serde(default)]
    pub dimensions: Vec<String>,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub filters: Vec<FilterInput>,
    #[serde(default)]
    pub order_by: Option<OrderByInput>,
    /// 1–10,000 (default 10,000).
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub offset: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateRangeInput {
    pub start_date: String,
    pub end_date: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    pub dimension: String,
    /// `exact`, `contains`, `begins_with`, `in_list`, `not_exact`
    pub op: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderByInput {
    /// A metric or dimension of the query.
    pub field: String,
    #[serde(default)]
    pub desc: bool,
}

fn is_ga_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 100
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn is_ga_date(value: &str) -> bool {
    match value {
        "today" | "yesterday" => true,
        v if v.ends_with("daysAgo") => v.strip_suffix("daysAgo").is_some_and(|n| {
            !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit())
        }),
        v => v.len() == 10 && v.parse::<jiff::civil::Date>().is_ok(),
    }
}

impl ReportQuery {
    /// The Data API's documented limits, checked before calling Google.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !(1..=MAX_DATE_RANGES).contains(&self.date_ranges.len()) {
            errors.push(FieldError::new("date_ranges", "1–4 date ranges"));
        }
        for (i, range) in self.date_ranges.iter().enumerate() {
            if !is_ga_date(&range.start_date) || !is_ga_date(&range.end_date) {
                errors.push(FieldError::new(
                    format!("date_ranges[{i}]"),
                    "dates are YYYY-MM-DD, today, yesterday or NdaysAgo",
                ));
            } else if let (Ok(start), Ok(end)) = (
                range.start_date.parse::<jiff::civil::Date>(),
                range.end_date.parse::<jiff::civil::Date>(),
            ) && end < start
            {
                errors.push(FieldError::new(
                    format!("date_ranges[{i}]"),
                    "end_date is before start_date",
                ));
            }
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            errors.push(FieldError::new("dimensions", "at most 9 dimensions"));
        }
        if self.metrics.is_empty() || self.metrics.len() > MAX_METRICS {
            errors.push(FieldError::new("metrics", "1–10 metrics"));
        }
        for (kind, names) in [("dimensions", &self.dimensions), ("metrics", &self.metrics)] {
            if let Some(j) = names.iter().position(|n| !is_ga_name(n)) {
                errors.push(FieldError::new(
                    format!("{kind}[{j}]"),
                    "not a GA4 API name",
                ));
            }
        }
        if self.filters.len() > 10 {
            errors.push(FieldError::new("filters", "at most 10 filters"));
        }
        for (j, filter) in self.filters.iter().enumerate() {
            let ok_op = ["exact", "contains", "begins_with", "in_list", "not_exact"]
                .contains(&filter.op.as_str());
            if !is_ga_name(&filter.dimension) || !ok_op {
                errors.push(FieldError::new(format!("filters[{j}]"), "dimension must be a GA4 name; op one of exact, contains, begins_with, in_list, not_exact"));
            }
            let single = filter.op != "in_list";
            if filter.values.is_empty()
                || filter.values.len() > 100
                || (single && filter.values.len() != 1)
            {
                errors.push(FieldError::new(
                    format!("filters[{j}].values"),
                    "one value (in_list: 1–100)",
                ));
            }
        }
        if let Some(order) = &self.order_by
            && !self.metrics.contains(&order.field)
            && !self.dimensions.contains(&order.field)
        {
            errors.push(FieldError::new(
                "order_by.field",
                "must be one of the query's metrics or dimensions",
            ));
        }
        if let Some(limit) = self.limit
            && !(1..=MAX_LIMIT).contains(&limit)
        {
            errors.push(FieldError::new("limit", "must be 1–10000"));
        }
        errors
    }

    /// The Data API `runReport` body.
    pub fn to_ga_request(&self) -> Value {
        let mut request = json!({
            "dateRanges": self.date_ranges.iter().map(|r| json!({ "startDate": r.start_date, "endDate": r.end_date })).collect::<Vec<_>>(),
            "dimensions": self.dimensions.iter().map(|d| json!({ "name": d })).collect::<Vec<_>>(),
            "metrics": self.metrics.iter().map(|m| json!({ "name": m })).collect::<Vec<_>>(),
            "limit": self.limit.unwrap_or(MAX_LIMIT),
            "offset": self.offset.unwrap_or(0),
            "returnPropertyQuota": true,
        });
        if !self.filters.is_empty() {
            let filters: Vec<(&str, &str, &[String])> = self
                .filters
                .iter()
                .map(|f| (f.dimension.as_str(), f.op.as_str(), f.values.as_slice()))
                .collect();
            request["dimensionFilter"] = app_google::dimension_filter(&filters);
        }
        if let Some(order) = &self.order_by {
            request["orderBys"] = if self.metrics.contains(&order.field) {
                json!([{ "metric": { "metricName": order.field }, "desc": order.desc }])
            } else {
                json!([{ "dimension": { "dimensionName": order.field }, "desc": order.desc }])
            };
        }
        request
    }
}

/// Runs the query on the connection's selected property; returns the normalised result.
async fn execute(
    state: &AppState,
    principal: &Principal,
    query: &ReportQuery,
) -> Result<(Value, String), ApiError> {
    let errors = query.validate();
    if !errors.is_empty() {
        return Err(ApiError::unprocessable(errors));
    }
    let config = google_config(state).await?;
    let connection = state
        .connections
        .get(principal.tenant(), plain_id(&query.connection_id)?)
        .await?;
    let property = connection.selected_property.clone().ok_or_else(|| {
        ApiError::field(
            "connection_id",
            "select a property first (PATCH /v1/ga/connections/{id})",
        )
    })?;
    let response = state
        .connections
        .run_report(&config, &connection, &property, &query.to_ga_request())
        .await?;
    if let Some(remaining) = response["propertyQuota"]["tokensPerDay"]["remaining"].as_f64() {
        app_telemetry::metrics::gauge("GaQuotaTokensPerDayRemaining", remaining);
    }
    Ok((app_google::normalise_report(&response), property))
}

#[utoipa::path(post, path = "/v1/ga/reports:run", tag = "ga-reports", request_body = ReportQuery,
    responses((status = 200, description = "normalised rows, row_count, metadata, property_quota")))]
pub async fn run_report(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(query): ApiJson<ReportQuery>,
) -> Result<ApiJson<Value>, ApiError> {
    let (result, _) = execute(&state, &principal, &query).await?;
    Ok(ApiJson(result))
}

// ---------------------------------------------------------------- saved reports

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportMetadata {
    pub id: String,
    pub name: String,
    pub query: ReportQuery,
    pub connection_id: String,
    pub property_id: String,
    pub created_by: String,
    pub created_at: String,
    pub row_count: u64,
    /// Compressed size in S3.
    pub size_bytes: u64,
    /// SHA-256 (hex) of the uncompressed JSON body.
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReportItem {
    pk: String,
    sk: String,
    entity: String,
    s3_key: String,
    #[serde(flatten)]
    metadata: ReportMetadata,
}

#[derive(Clone)]
pub struct ReportStore {
    table: Table,
    s3: aws_sdk_s3::Client,
    bucket: String,
    kms_key_id: String,
}

fn report_sk(id: &str) -> String {
    format!("REPORT#{id}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn s3_unavailable<E: std::fmt::Display>(error: E) -> ApiError {
    tracing::warn!(error = %error, "s3 unavailable");
    ApiError::unavailable()
}

impl ReportStore {
    pub fn new(table: Table, s3: aws_sdk_s3::Client, bucket: String, kms_key_id: String) -> Self {
        Self {
            table,
            s3,
            bucket,
            kms_key_id,
        }
    }

    async fn save(
        &self,
        tenant: &str,
        metadata: ReportMetadata,
        body: &[u8],
    ) -> Result<ReportMetadata, ApiError> {
        let s3_key = format!("reports/{tenant}/{}.json.gz", metadata.id);
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&s3_key)
            .body(body.to_vec().into())
            .content_type("application/json")
            .content_encoding("gzip")
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .ssekms_key_id(&self.kms_key_id)
            .send()
            .await
            .map_err(|e| s3_unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let item = ReportItem {
            pk: keys::tenant(tenant),
            sk: report_sk(&metadata.id),
            entity: "report".into(),
            s3_key,
            metadata,
        };
        self.table.put_new(to_item(&item)?).await?;
        Ok(item.metadata)
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<(ReportItem, Vec<u8>), ApiError> {
        let item: ReportItem = self
            .table
            .get(&keys::tenant(tenant), &report_sk(id))
            .await?
            .ok_or(ApiError::NotFound)?;
        let object = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&item.s3_key)
            .send()
            .await
            .map_err(|e| s3_unavailable(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(s3_unavailable)?
            .into_bytes()
            .to_vec();
        Ok((item, bytes))
    }

    async fn list(
        &self,
        tenant: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<ReportMetadata>, StorageError> {
        let scope = format!("{tenant}/reports");
        let page: Page<ReportItem> = self
            .table
            .query_page(
                QuerySpec {
                    index: None,
                    partition: keys::tenant(tenant),
                    sort_prefix: Some("REPORT#".into()),
                    limit,
                    newest_first: true,
                    scope: &scope,
                },
                cursor,
            )
            .await?;
        Ok(Page {
            items: page.items.into_iter().map(|i| i.metadata).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<(), ApiError> {
        let item: ReportItem = match self
            .table
            .delete_existing(&keys::tenant(tenant), &report_sk(id))
            .await
        {
            Ok(item) => item,
            Err(StorageError::ConditionFailed) => return Err(ApiError::NotFound),
            Err(e) => return Err(e.into()),
        };
        if let Err(error) = self
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&item.s3_key)
            .send()
            .await
        {
            // The report is gone from the list; the orphaned body is only storage.
            tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(error), "report body not deleted");
        }
        Ok(())
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveReport {
    name: String,
    query: ReportQuery,
}

#[utoipa::path(post, path = "/v1/ga/reports", tag = "ga-reports", request_body = SaveReport,
    responses((status = 201, body = ReportMetadata)))]
pub async fn save_report(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<SaveReport>,
) -> Result<Response, ApiError> {
    let name = request.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::field("name", "must be 1–200 characters"));
    }
    let (result, property) = execute(&state, &principal, &request.query).await?;
    let json = serde_json::to_vec(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&json)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let gz = encoder
        .finish()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let metadata = ReportMetadata {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        connection_id: request.query.connection_id.clone(),
        query: request.query,
        property_id: property,
        created_by: principal.subject().to_string(),
        created_at: app_connections::now_rfc3339(),
        row_count: result["row_count"].as_u64().unwrap_or(0),
        size_bytes: gz.len() as u64,
        sha256: sha256_hex(&json),
    };
    let saved = state
        .reports
        .save(principal.tenant(), metadata, &gz)
        .await?;
    let mut response = (StatusCode::CREATED, ApiJson(&saved)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/ga/reports/{}", saved.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
pub struct ReportPage {
    items: Vec<ReportMetadata>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/ga/reports", tag = "ga-reports", params(PageParams),
    responses((status = 200, body = ReportPage)))]
pub async fn list_reports(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<ApiJson<ReportPage>, ApiError> {
    let page = state
        .reports
        .list(principal.tenant(), params.limit()?, params.cursor())
        .await?;
    Ok(ApiJson(ReportPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/ga/reports/{id}", tag = "ga-reports", params(("id" = String, Path)),
    responses((status = 200, description = "metadata and the saved result"), (status = 404)))]
pub async fn get_report(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let (item, gz) = state
        .reports
        .get(principal.tenant(), plain_id(&id)?)
        .await?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut json)
        .map_err(|e| ApiError::Internal(format!("report body does not decompress: {e}")))?;
    if sha256_hex(&json) != item.metadata.sha256 {
        return Err(ApiError::Internal(format!(
            "report {id}: checksum mismatch"
        )));
    }
    let result: Value =
        serde_json::from_slice(&json).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(ApiJson(
        json!({ "report": item.metadata, "checksum_verified": true, "result": result }),
    ))
}

#[utoipa::path(delete, path = "/v1/ga/reports/{id}", tag = "ga-reports", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete_report(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .reports
        .delete(principal.tenant(), plain_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
