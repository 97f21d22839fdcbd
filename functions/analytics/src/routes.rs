//! Handlers and the route table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use app_auth::{Access, Principal, Role, RouteRule};
use app_web::{ApiError, ApiJson, ApiQuery, FieldError};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, header};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::AppState;
use crate::cache::{Fetched, Freshness};
use crate::query::{
    DateParams, Range, check_dimension, check_metric, dimension_value, ga_request, is_rate,
    metric_value, today,
};

const READ: Access = Access::RoleOrScope(Role::Viewer, "analytics:read");

/// Who may call what (docs/security.md reproduces every function's table). `refresh=true`
/// additionally needs an editor (checked in the handlers).
pub static ROUTES: &[RouteRule] = &[
    RouteRule::new(Method::GET, "/v1/analytics/health", Access::Public),
    RouteRule::new(Method::GET, "/v1/analytics/overview", READ),
    RouteRule::new(Method::GET, "/v1/analytics/timeseries", READ),
    RouteRule::new(Method::GET, "/v1/analytics/top", READ),
    RouteRule::new(Method::POST, "/v1/analytics/widgets:batch", READ),
];

pub const MAX_BATCH: usize = 20;
/// Google's limit of concurrent requests per property.
pub const GA_CONCURRENCY: usize = 10;

#[utoipa::path(get, path = "/v1/analytics/health", tag = "analytics",
    responses((status = 200, body = app_web::Health)))]
pub async fn health() -> impl IntoResponse {
    app_web::health().await
}

fn check_refresh(principal: &Principal, refresh: Option<bool>) -> Result<bool, ApiError> {
    let refresh = refresh.unwrap_or(false);
    if refresh && !principal.has_role(Role::Editor) {
        return Err(ApiError::Forbidden(
            "`refresh=true` needs the editor role".into(),
        ));
    }
    Ok(refresh)
}

/// The `preset` / `start_date` + `end_date` query parameters every GET route takes.
fn resolve_range(
    preset: &Option<String>,
    start_date: &Option<String>,
    end_date: &Option<String>,
) -> Result<Range, ApiError> {
    DateParams {
        preset: preset.clone(),
        start_date: start_date.clone(),
        end_date: end_date.clone(),
    }
    .resolve(today())
}

/// The response with `Cache-Control`/`Age` from the data's freshness.
fn with_cache_headers(body: Value, freshness: &Freshness) -> Response {
    let mut response = ApiJson(body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("private, max-age={}", freshness.fresh_for_secs))
    {
        headers.insert(header::CACHE_CONTROL, v);
    }
    headers.insert(
        header::AGE,
        HeaderValue::from(freshness.age_secs.max(0) as u64),
    );
    response
}

fn range_json(range: &Range) -> Value {
    json!({ "start_date": range.start.to_string(), "end_date": range.end.to_string() })
}

async fn fetch(
    state: &AppState,
    principal: &Principal,
    connection_id: &str,
    request: &Value,
    ranges: &[Range],
    refresh: bool,
) -> Result<Fetched, ApiError> {
    if connection_id.len() != 36 {
        return Err(ApiError::NotFound);
    }
    let config = state.config.current().await;
    let today = today();
    let includes_today = ranges.iter().any(|r| r.includes(today));
    state
        .cache
        .fetch(
            &config,
            principal.tenant(),
            connection_id,
            request,
            includes_today,
            refresh,
        )
        .await
}

// ---------------------------------------------------------------- overview

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OverviewParams {
    connection_id: String,
    preset: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    /// `previous_period` (default), `previous_year` or `none`.
    compare: Option<String>,
    refresh: Option<bool>,
}

/// (API name, GA metric); `conversions` is GA4's `keyEvents`.
const KPIS: &[(&str, &str)] = &[
    ("active_users", "activeUsers"),
    ("sessions", "sessions"),
    ("page_views", "screenPageViews"),
    ("bounce_rate", "bounceRate"),
    ("average_session_duration", "averageSessionDuration"),
    ("conversions", "keyEvents"),
];

#[utoipa::path(get, path = "/v1/analytics/overview", tag = "analytics", params(OverviewParams),
    responses((status = 200, description = "KPIs for the range and the comparison range")))]
pub async fn overview(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<OverviewParams>,
) -> Result<Response, ApiError> {
    let refresh = check_refresh(&principal, params.refresh)?;
    let range = resolve_range(&params.preset, &params.start_date, &params.end_date)?;
    let comparison = match params.compare.as_deref().unwrap_or("previous_period") {
        "previous_period" => range.previous_period(),
        "previous_year" => range.previous_year(),
        "none" => None,
        _ => {
            return Err(ApiError::field(
                "compare",
                "one of previous_period, previous_year, none",
            ));
        }
    };
    let mut ranges = vec![range];
    ranges.extend(comparison);
    let metrics: Vec<&str> = KPIS.iter().map(|(_, m)| *m).collect();
    let request = ga_request(&ranges, &[], &metrics);
    let fetched = fetch(
        &state,
        &principal,
        &params.connection_id,
        &request,
        &ranges,
        refresh,
    )
    .await?;

    // With two ranges GA adds a `dateRange` dimension (date_range_0, date_range_1).
    let mut by_range: HashMap<String, Vec<f64>> = HashMap::new();
    for row in fetched.response["rows"].as_array().into_iter().flatten() {
        let key = if ranges.len() > 1 {
            dimension_value(row, 0).to_string()
        } else {
            "date_range_0".to_string()
        };
        by_range.insert(
            key,
            (0..metrics.len()).map(|i| metric_value(row, i)).collect(),
        );
    }
    let current = by_range
        .get("date_range_0")
        .cloned()
        .unwrap_or_else(|| vec![0.0; metrics.len()]);
    let previous = comparison.map(|_| {
        by_range
            .get("date_range_1")
            .cloned()
            .unwrap_or_else(|| vec![0.0; metrics.len()])
    });
    let kpis: Vec<Value> = KPIS
        .iter()
        .enumerate()
        .filter(|(i, (name, _))| {
            // Conversions only when the property has any.
            *name != "conversions"
                || current[*i] != 0.0
                || previous.as_ref().is_some_and(|p| p[*i] != 0.0)
        })
        .map(|(i, (name, metric))| {
            let value = current[i];
            let mut kpi = json!({ "name": name, "metric": metric, "value": value });
            if let Some(previous) = &previous {
                let before = previous[i];
                kpi["previous"] = json!(before);
                kpi["change"] = json!(value - before);
                kpi["change_pct"] = if before == 0.0 {
                    Value::Null
                } else {
                    json!((value - before) / before * 100.0)
                };
            }
            kpi
        })
        .collect();
    let body = json!({
        "connection_id": params.connection_id,
        "property_id": fetched.property_id,
        "range": range_json(&range),
        "comparison": comparison.map(|c| range_json(&c)),
        "kpis": kpis,
        "data_freshness": fetched.freshness,
    });
    Ok(with_cache_headers(body, &fetched.freshness))
}

// ---------------------------------------------------------------- timeseries

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TimeseriesParams {
    connection_id: String,
    metric: String,
    preset: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    /// `day` (default), `week` (weeks start on Monday) or `month`.
    granularity: Option<String>,
    refresh: Option<bool>,
}

#[utoipa::path(get, path = "/v1/analytics/timeseries", tag = "analytics", params(TimeseriesParams),
    responses((status = 200, description = "points with ISO dates, gaps filled with zero")))]
pub async fn timeseries(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<TimeseriesParams>,
) -> Result<Response, ApiError> {
    let refresh = check_refresh(&principal, params.refresh)?;
    check_metric("metric", &params.metric).map_err(|e| ApiError::unprocessable(vec![e]))?;
    let granularity = params.granularity.as_deref().unwrap_or("day");
    if !["day", "week", "month"].contains(&granularity) {
        return Err(ApiError::field("granularity", "one of day, week, month"));
    }
    let range = resolve_range(&params.preset, &params.start_date, &params.end_date)?;
    let request = ga_request(&[range], &["date"], &[params.metric.as_str()]);
    let fetched = fetch(
        &state,
        &principal,
        &params.connection_id,
        &request,
        &[range],
        refresh,
    )
    .await?;

    let mut daily: BTreeMap<jiff::civil::Date, f64> = BTreeMap::new();
    let mut day = range.start;
    while day <= range.end {
        daily.insert(day, 0.0); // gaps are zero
        day = match day.tomorrow() {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    for row in fetched.response["rows"].as_array().into_iter().flatten() {
        let raw = dimension_value(row, 0);
        if raw.len() == 8
            && let Ok(date) = format!("{}-{}-{}", &raw[0..4], &raw[4..6], &raw[6..8]).parse()
            && let Some(slot) = daily.get_mut(&date)
        {
            *slot = metric_value(row, 0);
        }
    }
    let bucket_of = |d: jiff::civil::Date| -> jiff::civil::Date {
        match granularity {
            "week" => d
                .checked_sub(jiff::Span::new().days(i64::from(d.weekday().to_monday_zero_offset())))
                .unwrap_or(d),
            "month" => d.first_of_month(),
            _ => d,
        }
    };
    let mut buckets: BTreeMap<jiff::civil::Date, (f64, usize)> = BTreeMap::new();
    for (day, value) in daily {
        let entry = buckets.entry(bucket_of(day)).or_insert((0.0, 0));
        entry.0 += value;
        entry.1 += 1;
    }
    let rate = is_rate(&params.metric);
    let points: Vec<Value> = buckets
        .into_iter()
        .map(|(date, (sum, n))| {
            let value = if rate { sum / n.max(1) as f64 } else { sum };
            json!({ "date": date.to_string(), "value": value })
        })
        .collect();
    let body = json!({
        "connection_id": params.connection_id,
        "property_id": fetched.property_id,
        "metric": params.metric,
        "granularity": granularity,
        "range": range_json(&range),
        "time_zone": fetched.response["metadata"]["timeZone"],
        "points": points,
        "data_freshness": fetched.freshness,
    });
    Ok(with_cache_headers(body, &fetched.freshness))
}

// ---------------------------------------------------------------- top

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TopParams {
    connection_id: String,
    dimension: String,
    metric: String,
    preset: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    /// 1–100, default 10.
    limit: Option<u32>,
    refresh: Option<bool>,
}

#[utoipa::path(get, path = "/v1/analytics/top", tag = "analytics", params(TopParams),
    responses((status = 200, description = "top-N rows with share of total")))]
pub async fn top(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<TopParams>,
) -> Result<Response, ApiError> {
    let refresh = check_refresh(&principal, params.refresh)?;
    let mut errors = Vec::new();
    errors.extend(check_metric("metric", &params.metric).err());
    errors.extend(check_dimension("dimension", &params.dimension).err());
    let limit = params.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        errors.push(FieldError::new("limit", "must be 1–100"));
    }
    if !errors.is_empty() {
        return Err(ApiError::unprocessable(errors));
    }
    let range = resolve_range(&params.preset, &params.start_date, &params.end_date)?;
    let mut request = ga_request(
        &[range],
        &[params.dimension.as_str()],
        &[params.metric.as_str()],
    );
    request["orderBys"] = json!([{ "metric": { "metricName": params.metric }, "desc": true }]);
    request["limit"] = json!(limit);
    request["metricAggregations"] = json!(["TOTAL"]);
    let fetched = fetch(
        &state,
        &principal,
        &params.connection_id,
        &request,
        &[range],
        refresh,
    )
    .await?;

    let rows: Vec<(String, f64)> = fetched.response["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| (dimension_value(row, 0).to_string(), metric_value(row, 0)))
        .collect();
    let total = fetched.response["totals"][0]["metricValues"][0]["value"]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| rows.iter().map(|(_, v)| v).sum());
    let rate = is_rate(&params.metric);
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(value, metric)| {
            let share = if rate || total == 0.0 {
                Value::Null
            } else {
                json!(metric / total)
            };
            json!({ "dimension_value": value, "value": metric, "share": share })
        })
        .collect();
    let body = json!({
        "connection_id": params.connection_id,
        "property_id": fetched.property_id,
        "dimension": params.dimension,
        "metric": params.metric,
        "range": range_json(&range),
        "total": total,
        "rows": items,
        "data_freshness": fetched.freshness,
    });
    Ok(with_cache_headers(body, &fetched.freshness))
}

// ---------------------------------------------------------------- widgets:batch

/// The stored widget shape of the dashboards function; only `id` and `query` are read here.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WidgetRef {
    id: String,
    #[schema(value_type = Object)]
    query: WidgetQuery,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WidgetQuery {
    connection_id: String,
    metrics: Vec<String>,
    #[serde(default)]
    dimensions: Vec<String>,
    date_range: DateParams,
    #[serde(default)]
    filters: Vec<WidgetFilter>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WidgetFilter {
    dimension: String,
    op: String,
    values: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to 20 widgets, in the shape the dashboards function stores.
    widgets: Vec<WidgetRef>,
    #[serde(default)]
    refresh: Option<bool>,
}

/// A widget's GA request, or the validation errors that stop it.
fn widget_request(query: &WidgetQuery) -> Result<(Value, Range), ApiError> {
    let mut errors = Vec::new();
    if query.metrics.is_empty() || query.metrics.len() > 10 {
        errors.push(FieldError::new("query.metrics", "1–10 metrics"));
    }
    for (i, m) in query.metrics.iter().enumerate() {
        errors.extend(check_metric(&format!("query.metrics[{i}]"), m).err());
    }
    for (i, d) in query.dimensions.iter().enumerate() {
        if d != "date" {
            errors.extend(check_dimension(&format!("query.dimensions[{i}]"), d).err());
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::unprocessable(errors));
    }
    // Widgets store presets as `{ "preset": … }` and explicit ranges as dates.
    let range = query.date_range.resolve(today())?;
    let dims: Vec<&str> = query.dimensions.iter().map(String::as_str).collect();
    let metrics: Vec<&str> = query.metrics.iter().map(String::as_str).collect();
    let mut request = ga_request(&[range], &dims, &metrics);
    if !query.filters.is_empty() {
        let filters: Vec<(&str, &str, &[String])> = query
            .filters
            .iter()
            .map(|f| (f.dimension.as_str(), f.op.as_str(), f.values.as_slice()))
            .collect();
        request["dimensionFilter"] = app_google::dimension_filter(&filters);
    }
    if let Some(limit) = query.limit {
        request["limit"] = json!(limit.clamp(1, 10_000));
    }
    Ok((request, range))
}

fn problem_json(error: ApiError) -> Value {
    let status = error.status().as_u16();
    let detail = match &error {
        ApiError::Unprocessable { detail, .. } => Some(detail.clone()),
        ApiError::NeedsReauth { connection_id } => {
            Some(format!("connection {connection_id} needs re-authorization"))
        }
        ApiError::NotFound => Some("no such connection".into()),
        _ => None,
    };
    if status >= 500 {
        tracing::warn!(%error, "widget failed");
    }
    json!({ "status": status, "code": error.code(), "detail": detail })
}

#[utoipa::path(post, path = "/v1/analytics/widgets:batch", tag = "analytics", request_body = BatchRequest,
    responses((status = 200, description = "one result per widget, each ok or failed on its own")))]
pub async fn widgets_batch(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(batch): ApiJson<BatchRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    if batch.widgets.is_empty() || batch.widgets.len() > MAX_BATCH {
        return Err(ApiError::field("widgets", "1–20 widgets"));
    }
    let refresh = check_refresh(&principal, batch.refresh)?;
    // Distinct GA queries run once each, at most GA_CONCURRENCY at a time.
    let limiter = Arc::new(tokio::sync::Semaphore::new(GA_CONCURRENCY));
    let mut distinct: HashMap<String, usize> = HashMap::new();
    let mut jobs = Vec::new();
    let mut plan: Vec<(String, Result<usize, ApiError>)> = Vec::new();
    for widget in &batch.widgets {
        match widget_request(&widget.query) {
            Ok((request, range)) => {
                let key = format!("{}|{}", widget.query.connection_id, request);
                let index = *distinct.entry(key).or_insert_with(|| {
                    jobs.push((widget.query.connection_id.clone(), request, range));
                    jobs.len() - 1
                });
                plan.push((widget.id.clone(), Ok(index)));
            }
            Err(error) => plan.push((widget.id.clone(), Err(error))),
        }
    }
    let results = futures::future::join_all(jobs.iter().map(|(connection, request, range)| {
        let limiter = limiter.clone();
        let state = &state;
        let principal = &principal;
        async move {
            let _permit = limiter
                .acquire()
                .await
                .map_err(|_| ApiError::unavailable())?;
            fetch(
                state,
                principal,
                connection,
                request,
                std::slice::from_ref(range),
                refresh,
            )
            .await
        }
    }))
    .await;
    // Each distinct query is rendered once; widgets sharing it get a copy.
    let rendered: Vec<Value> = results
        .into_iter()
        .map(|result| match result {
            Ok(fetched) => json!({
                "status": "ok",
                "data": app_google::normalise_report(&fetched.response),
                "data_freshness": fetched.freshness,
            }),
            Err(error) => json!({ "status": "error", "error": problem_json(error) }),
        })
        .collect();
    let widgets: Vec<Value> = plan
        .into_iter()
        .map(|(id, outcome)| {
            let mut widget = match outcome {
                Ok(index) => rendered[index].clone(),
                Err(error) => json!({ "status": "error", "error": problem_json(error) }),
            };
            widget["id"] = json!(id);
            widget
        })
        .collect();
    Ok(ApiJson(
        json!({ "widgets": widgets, "google_queries": jobs.len() }),
    ))
}
