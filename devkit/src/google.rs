//! A stand-in for the parts of Google this product calls, with Google's shapes (dev/test only).
//!
//! | endpoint | behaviour |
//! |---|---|
//! | `GET /o/oauth2/v2/auth` | auto-consent: 302 to `redirect_uri?code=&state=&scope=`; `deny` switch → `?error=access_denied&state=` |
//! | `POST /token` | `authorization_code` (single-use code, PKCE S256 verifier and redirect URI checked) and `refresh_token` (`invalid_grant` for revoked/unknown) |
//! | `POST /revoke` | revokes a refresh token (and its grant) |
//! | `GET /v1/userinfo` | `{sub, email}` of the signed-in account |
//! | `GET /v1beta/accountSummaries` | two accounts, three GA4 properties |
//! | `POST /v1beta/properties/{id}:runReport` | deterministic rows for any dates/dimensions/metrics, `propertyQuota` |
//! | `POST /__admin/switches` | inject failures: `{"fail_next":[429,500], "slow_ms":0, "deny":false, "reduced_scope":false, "no_refresh_token":false, "rotate_refresh_token":false, "revoke_all":false, "quota_remaining":200000}` |
//! | `GET /__admin/calls` | calls per endpoint and the revoked tokens |
//!
//! Deterministic data (hand-checkable): for a day `d` (days since 1970-01-01), `k = d mod 7`:
//! activeUsers = 100+10k, sessions = 150+12k, screenPageViews = 400+30k, newUsers = 40+4k,
//! eventCount = 1000+50k, keyEvents/conversions = 5 + d mod 3, totalRevenue = 250+25k,
//! bounceRate = 0.40+0.01k, engagementRate = 0.60+0.01k, averageSessionDuration = 120+5k.
//! A breakdown by a non-date dimension with n values gives value i (0-based) the share
//! (n−i)/(n(n+1)/2) of counts (rounded); rates are unchanged. Without a `date` dimension, counts
//! are summed over the range and rates averaged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::DevResult;

pub const CLIENT_ID: &str = "local-client.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "local-client-secret";
pub const ACCOUNT_EMAIL: &str = "analyst@example.com";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Switches {
    /// Statuses to answer to the next token/API calls, in order (e.g. `[429, 429, 500]`).
    pub fail_next: VecDeque<u16>,
    pub slow_ms: u64,
    pub deny: bool,
    pub reduced_scope: bool,
    pub no_refresh_token: bool,
    pub rotate_refresh_token: bool,
    pub revoke_all: bool,
    pub quota_remaining: Option<i64>,
}

struct PendingCode {
    challenge: String,
    redirect_uri: String,
    scopes: String,
}

#[derive(Default)]
struct StandIn {
    codes: HashMap<String, PendingCode>,
    refresh_tokens: HashMap<String, bool>,  // token → revoked
    access_tokens: HashMap<String, String>, // token → refresh token it came from
    switches: Switches,
    quota_remaining: i64,
    calls: BTreeMap<String, usize>,
    revoked: Vec<String>,
    issued: Vec<String>,
    serial: u64,
}

type Shared = Arc<Mutex<StandIn>>;

#[derive(Clone)]
pub struct GoogleStandIn {
    pub url: String,
    state: Shared,
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, StandIn> {
    match state.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl GoogleStandIn {
    /// Serves on `127.0.0.1:port` (0: any free port) until the runtime ends.
    pub async fn start(port: u16) -> DevResult<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let state: Shared = Arc::new(Mutex::new(StandIn {
            quota_remaining: 200_000,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/o/oauth2/v2/auth", get(authorize))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .route("/v1/userinfo", get(userinfo))
            .route("/v1beta/accountSummaries", get(account_summaries))
            .route("/v1beta/properties/{call}", post(run_report))
            .route("/__admin/switches", post(set_switches))
            .route("/__admin/calls", get(calls))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, state })
    }

    /// The `google` block of the config secret pointing at this stand-in.
    pub fn config(&self, api_url: &str, frontend_url: &str) -> Value {
        json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": format!("{api_url}/v1/ga/oauth/callback"),
            "frontend_url": frontend_url,
            "auth_url": format!("{}/o/oauth2/v2/auth", self.url),
            "token_url": format!("{}/token", self.url),
            "revoke_url": format!("{}/revoke", self.url),
            "admin_api_base": self.url,
            "data_api_base": self.url,
            "userinfo_url": format!("{}/v1/userinfo", self.url),
        })
    }

    pub fn set(&self, switches: Switches) {
        let mut state = lock(&self.state);
        if let Some(q) = switches.quota_remaining {
            state.quota_remaining = q;
        }
        if switches.revoke_all {
            let tokens: Vec<String> = state.refresh_tokens.keys().cloned().collect();
            for t in tokens {
                state.refresh_tokens.insert(t.clone(), true);
            }
        }
        state.switches = switches;
    }

    pub fn calls(&self, endpoint: &str) -> usize {
        lock(&self.state).calls.get(endpoint).copied().unwrap_or(0)
    }

    pub fn revoked(&self) -> Vec<String> {
        lock(&self.state).revoked.clone()
    }

    /// Every code and token issued so far (tests look for them where they must not be).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// Expires every access token (the next API call with one gets 401).
    pub fn expire_access_tokens(&self) {
        lock(&self.state).access_tokens.clear();
    }
}

fn count(state: &Shared, endpoint: &str) -> (Option<u16>, u64) {
    let mut s = lock(state);
    *s.calls.entry(endpoint.to_string()).or_default() += 1;
    let fail = s.switches.fail_next.pop_front();
    (fail, s.switches.slow_ms)
}

async fn injected(fail: Option<u16>, slow_ms: u64) -> Option<Response> {
    if slow_ms > 0 {
        tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    }
    let status = StatusCode::from_u16(fail?).ok()?;
    let body = match status.as_u16() {
        429 => {
            json!({"error": {"code": 429, "message": "Exhausted property tokens per day.", "status": "RESOURCE_EXHAUSTED"}})
        }
        _ => {
            json!({"error": {"code": status.as_u16(), "message": "Internal error encountered.", "status": "INTERNAL"}})
        }
    };
    Some((status, Json(body)).into_response())
}

fn next_id(state: &mut StandIn, prefix: &str) -> String {
    state.serial += 1;
    let id = format!(
        "{prefix}{}{:08x}",
        uuid::Uuid::new_v4().simple(),
        state.serial
    );
    state.issued.push(id.clone());
    id
}

#[derive(Deserialize)]
struct AuthQuery {
    client_id: String,
    redirect_uri: String,
    response_type: String,
    scope: String,
    state: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn authorize(State(state): State<Shared>, Query(q): Query<AuthQuery>) -> Response {
    let mut s = lock(&state);
    *s.calls.entry("authorize".into()).or_default() += 1;
    if q.client_id != CLIENT_ID || q.response_type != "code" {
        return (StatusCode::BAD_REQUEST, "invalid_client or response_type").into_response();
    }
    let separator = if q.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let encode = |v: &str| -> String { url_encode(v) };
    if s.switches.deny {
        return Redirect::to(&format!(
            "{}{separator}error=access_denied&state={}",
            q.redirect_uri,
            encode(&q.state)
        ))
        .into_response();
    }
    let (Some(challenge), Some("S256")) = (q.code_challenge, q.code_challenge_method.as_deref())
    else {
        return (StatusCode::BAD_REQUEST, "PKCE S256 required").into_response();
    };
    let scopes = if s.switches.reduced_scope {
        "openid email https://www.googleapis.com/auth/userinfo.email".to_string()
    } else {
        q.scope.clone()
    };
    let code = next_id(&mut s, "4/0A");
    s.codes.insert(
        code.clone(),
        PendingCode {
            challenge,
            redirect_uri: q.redirect_uri.clone(),
            scopes: scopes.clone(),
        },
    );
    Redirect::to(&format!(
        "{}{separator}code={}&state={}&scope={}",
        q.redirect_uri,
        encode(&code),
        encode(&q.state),
        encode(&scopes)
    ))
    .into_response()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn basic_client_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let from_form = form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    let from_header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|pair| pair == format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    from_form || from_header
}

async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (fail, slow) = count(&state, "token");
    if let Some(response) = injected(fail, slow).await {
        return response;
    }
    if !basic_client_ok(&headers, &form) {
        return oauth_error("invalid_client", "The OAuth client was not found.");
    }
    let mut s = lock(&state);
    let issue_access = |s: &mut StandIn, refresh: &str| {
        let access = next_id(s, "ya29.a0");
        s.access_tokens.insert(access.clone(), refresh.to_string());
        access
    };
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(pending) = form.get("code").and_then(|c| s.codes.remove(c)) else {
                return oauth_error("invalid_grant", "Malformed auth code.");
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed =
                URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
            if computed != pending.challenge {
                return oauth_error("invalid_grant", "Invalid code verifier.");
            }
            if form.get("redirect_uri") != Some(&pending.redirect_uri) {
                return oauth_error("redirect_uri_mismatch", "Bad Request");
            }
            let refresh = next_id(&mut s, "1//0g");
            s.refresh_tokens.insert(refresh.clone(), false);
            let access = issue_access(&mut s, &refresh);
            let mut body = json!({
                "access_token": access,
                "expires_in": 3599,
                "scope": pending.scopes,
                "token_type": "Bearer",
            });
            if !s.switches.no_refresh_token {
                body["refresh_token"] = json!(refresh);
            }
            Json(body).into_response()
        }
        Some("refresh_token") => {
            let refresh = form.get("refresh_token").cloned().unwrap_or_default();
            if s.refresh_tokens.get(&refresh) != Some(&false) {
                return oauth_error("invalid_grant", "Token has been expired or revoked.");
            }
            // With rotation the old refresh token dies and the new access token belongs to the
            // new grant token.
            let (grant, rotated) = if s.switches.rotate_refresh_token {
                let rotated = next_id(&mut s, "1//0g");
                s.refresh_tokens.insert(refresh, true);
                s.refresh_tokens.insert(rotated.clone(), false);
                (rotated.clone(), Some(rotated))
            } else {
                (refresh, None)
            };
            let access = issue_access(&mut s, &grant);
            let mut body = json!({
                "access_token": access,
                "expires_in": 3599,
                "scope": "https://www.googleapis.com/auth/analytics.readonly openid email",
                "token_type": "Bearer",
            });
            if let Some(rotated) = rotated {
                body["refresh_token"] = json!(rotated);
            }
            Json(body).into_response()
        }
        _ => oauth_error("unsupported_grant_type", "Invalid grant_type."),
    }
}

async fn revoke(
    State(state): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (fail, slow) = count(&state, "revoke");
    if let Some(response) = injected(fail, slow).await {
        return response;
    }
    let mut s = lock(&state);
    let token = form.get("token").cloned().unwrap_or_default();
    let refresh = s
        .access_tokens
        .get(&token)
        .cloned()
        .unwrap_or(token.clone());
    if s.refresh_tokens.contains_key(&refresh) {
        s.refresh_tokens.insert(refresh.clone(), true);
        s.access_tokens.retain(|_, r| *r != refresh);
        s.revoked.push(refresh);
        StatusCode::OK.into_response()
    } else {
        oauth_error("invalid_token", "Token expired or revoked")
    }
}

/// The bearer token must be a live access token whose grant is not revoked.
fn authorized(state: &Shared, headers: &HeaderMap) -> bool {
    let s = lock(state);
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| s.access_tokens.get(t))
        .is_some_and(|refresh| s.refresh_tokens.get(refresh) == Some(&false))
}

fn unauthenticated() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})),
    )
        .into_response()
}

async fn userinfo(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let (fail, slow) = count(&state, "userinfo");
    if let Some(response) = injected(fail, slow).await {
        return response;
    }
    if !authorized(&state, &headers) {
        return unauthenticated();
    }
    Json(json!({ "sub": "109876543210", "email": ACCOUNT_EMAIL, "email_verified": true }))
        .into_response()
}

async fn account_summaries(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let (fail, slow) = count(&state, "accountSummaries");
    if let Some(response) = injected(fail, slow).await {
        return response;
    }
    if !authorized(&state, &headers) {
        return unauthenticated();
    }
    Json(json!({
        "accountSummaries": [
            {
                "name": "accountSummaries/1000", "account": "accounts/1000", "displayName": "Example Inc.",
                "propertySummaries": [
                    { "property": "properties/111111", "displayName": "www.example.com", "propertyType": "PROPERTY_TYPE_ORDINARY", "parent": "accounts/1000" },
                    { "property": "properties/222222", "displayName": "app.example.com", "propertyType": "PROPERTY_TYPE_ORDINARY", "parent": "accounts/1000" }
                ]
            },
            {
                "name": "accountSummaries/2000", "account": "accounts/2000", "displayName": "Example Labs",
                "propertySummaries": [
                    { "property": "properties/333333", "displayName": "labs.example.com", "propertyType": "PROPERTY_TYPE_ORDINARY", "parent": "accounts/2000" }
                ]
            }
        ]
    }))
    .into_response()
}

async fn set_switches(State(state): State<Shared>, Json(switches): Json<Switches>) -> StatusCode {
    GoogleStandIn {
        url: String::new(),
        state,
    }
    .set(switches);
    StatusCode::NO_CONTENT
}

async fn calls(State(state): State<Shared>) -> Json<Value> {
    let s = lock(&state);
    Json(json!({ "calls": s.calls, "revoked": s.revoked.len() }))
}

// ---------------------------------------------------------------- runReport

const DIMENSION_VALUES: &[(&str, &[&str])] = &[
    (
        "country",
        &[
            "United States",
            "Germany",
            "France",
            "United Kingdom",
            "Japan",
        ],
    ),
    ("deviceCategory", &["desktop", "mobile", "tablet"]),
    ("pagePath", &["/", "/pricing", "/blog", "/docs", "/signup"]),
    (
        "sessionSource",
        &["google", "(direct)", "newsletter", "linkedin"],
    ),
    (
        "sessionDefaultChannelGroup",
        &["Organic Search", "Direct", "Email", "Referral"],
    ),
    ("city", &["New York", "Berlin", "Paris", "London"]),
    ("browser", &["Chrome", "Safari", "Firefox"]),
];

/// (metric, GA type, is a rate)
const METRICS: &[(&str, &str, bool)] = &[
    ("activeUsers", "TYPE_INTEGER", false),
    ("sessions", "TYPE_INTEGER", false),
    ("screenPageViews", "TYPE_INTEGER", false),
    ("newUsers", "TYPE_INTEGER", false),
    ("eventCount", "TYPE_INTEGER", false),
    ("keyEvents", "TYPE_INTEGER", false),
    ("conversions", "TYPE_INTEGER", false),
    ("totalRevenue", "TYPE_CURRENCY", false),
    ("bounceRate", "TYPE_FLOAT", true),
    ("engagementRate", "TYPE_FLOAT", true),
    ("averageSessionDuration", "TYPE_SECONDS", true),
];

/// The metric's value on day `d` (days since the epoch).
pub fn daily_value(metric: &str, d: i64) -> f64 {
    let k = d.rem_euclid(7) as f64;
    match metric {
        "activeUsers" => 100.0 + 10.0 * k,
        "sessions" => 150.0 + 12.0 * k,
        "screenPageViews" => 400.0 + 30.0 * k,
        "newUsers" => 40.0 + 4.0 * k,
        "eventCount" => 1000.0 + 50.0 * k,
        "keyEvents" | "conversions" => 5.0 + d.rem_euclid(3) as f64,
        "totalRevenue" => 250.0 + 25.0 * k,
        "bounceRate" => 0.40 + 0.01 * k,
        "engagementRate" => 0.60 + 0.01 * k,
        "averageSessionDuration" => 120.0 + 5.0 * k,
        _ => 0.0,
    }
}

fn parse_ga_date(value: &str, today: jiff::civil::Date) -> Option<jiff::civil::Date> {
    match value {
        "today" => Some(today),
        "yesterday" => today.checked_sub(jiff::Span::new().days(1)).ok(),
        other => {
            if let Some(n) = other.strip_suffix("daysAgo") {
                let n: i64 = n.parse().ok()?;
                today.checked_sub(jiff::Span::new().days(n)).ok()
            } else {
                other.parse().ok()
            }
        }
    }
}

fn day_number(date: jiff::civil::Date) -> i64 {
    let epoch = jiff::civil::date(1970, 1, 1);
    epoch
        .until((jiff::Unit::Day, date))
        .map(|span| i64::from(span.get_days()))
        .unwrap_or_default()
}

fn invalid_argument(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}})),
    )
        .into_response()
}

async fn run_report(
    State(state): State<Shared>,
    Path(call): Path<String>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let (fail, slow) = count(&state, "runReport");
    if let Some(response) = injected(fail, slow).await {
        return response;
    }
    let Some(property) = call.strip_suffix(":runReport") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !authorized(&state, &headers) {
        return unauthenticated();
    }
    let quota_remaining = {
        let mut s = lock(&state);
        s.quota_remaining -= 10;
        s.quota_remaining
    };
    let today = jiff::Zoned::now().date();
    let names = |field: &str| -> Vec<String> {
        request[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let dimensions = names("dimensions");
    let metrics = names("metrics");
    for metric in &metrics {
        if !METRICS.iter().any(|(m, _, _)| m == metric) {
            return invalid_argument(&format!(
                "Field {metric} is not a valid metric. For a list of valid dimensions and metrics, see https://developers.google.com/analytics/devguides/reporting/data/v1/api-schema"
            ));
        }
    }
    let mut breakdowns: Vec<(String, Vec<&str>)> = Vec::new();
    for dimension in &dimensions {
        if dimension == "date" {
            continue;
        }
        match DIMENSION_VALUES.iter().find(|(d, _)| d == dimension) {
            Some((_, values)) => breakdowns.push((dimension.clone(), values.to_vec())),
            None => {
                return invalid_argument(&format!("Field {dimension} is not a valid dimension."));
            }
        }
    }
    let ranges = request["dateRanges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if ranges.is_empty() {
        return invalid_argument("dateRanges is required");
    }
    let by_date = dimensions.iter().any(|d| d == "date");
    let multi_range = ranges.len() > 1;

    // Rows: (dimension values in request order (+ dateRange), metric values)
    let mut rows: Vec<(Vec<String>, Vec<f64>)> = Vec::new();
    for (r, range) in ranges.iter().enumerate() {
        let (Some(start), Some(end)) = (
            range["startDate"]
                .as_str()
                .and_then(|v| parse_ga_date(v, today)),
            range["endDate"]
                .as_str()
                .and_then(|v| parse_ga_date(v, today)),
        ) else {
            return invalid_argument("Invalid date range");
        };
        if end < start {
            return invalid_argument("endDate must be after startDate");
        }
        let days: Vec<jiff::civil::Date> = {
            let mut out = Vec::new();
            let mut d = start;
            while d <= end && out.len() < 3660 {
                out.push(d);
                d = match d.tomorrow() {
                    Ok(next) => next,
                    Err(_) => break,
                };
            }
            out
        };
        // every combination of non-date breakdown values
        let mut combos: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
        for (_, values) in &breakdowns {
            let n = values.len();
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    (0..n).map(move |i| {
                        let mut c = c.clone();
                        c.push((i, n));
                        c
                    })
                })
                .collect();
        }
        let day_groups: Vec<Vec<jiff::civil::Date>> = if by_date {
            days.iter().map(|d| vec![*d]).collect()
        } else {
            vec![days.clone()]
        };
        for group in &day_groups {
            for combo in &combos {
                let share: f64 = combo
                    .iter()
                    .map(|(i, n)| (n - i) as f64 / (n * (n + 1) / 2) as f64)
                    .product();
                let values: Vec<f64> = metrics
                    .iter()
                    .map(|metric| {
                        let rate = METRICS.iter().any(|(m, _, r)| m == metric && *r);
                        let per_day: Vec<f64> = group
                            .iter()
                            .map(|d| daily_value(metric, day_number(*d)))
                            .collect();
                        if rate {
                            per_day.iter().sum::<f64>() / per_day.len().max(1) as f64
                        } else {
                            (per_day.iter().sum::<f64>() * share).round()
                        }
                    })
                    .collect();
                let mut dims = Vec::new();
                let mut combo_iter = combo.iter();
                for dimension in &dimensions {
                    if dimension == "date" {
                        dims.push(group[0].strftime("%Y%m%d").to_string());
                    } else if let (Some((i, _)), Some((_, values))) = (
                        combo_iter.next(),
                        breakdowns.iter().find(|(d, _)| d == dimension),
                    ) {
                        dims.push(values[*i].to_string());
                    }
                }
                if multi_range {
                    dims.push(format!("date_range_{r}"));
                }
                rows.push((dims, values));
            }
        }
    }
    // default order: dimensions ascending; `orderBys` on a metric desc is honoured
    if let Some(metric) = request["orderBys"][0]["metric"]["metricName"].as_str()
        && let Some(index) = metrics.iter().position(|m| m == metric)
    {
        let desc = request["orderBys"][0]["desc"].as_bool().unwrap_or(false);
        rows.sort_by(|a, b| {
            let ord = a.1[index].total_cmp(&b.1[index]);
            if desc { ord.reverse() } else { ord }
        });
    } else {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let row_count = rows.len();
    let totals: Vec<f64> = (0..metrics.len())
        .map(|i| {
            let rate = METRICS.iter().any(|(m, _, r)| *m == metrics[i] && *r);
            let sum: f64 = rows.iter().map(|r| r.1[i]).sum();
            if rate {
                sum / row_count.max(1) as f64
            } else {
                sum
            }
        })
        .collect();
    let offset = request["offset"].as_u64().unwrap_or(0) as usize;
    let limit = request["limit"].as_u64().unwrap_or(10_000) as usize;
    let mut dimension_headers: Vec<Value> =
        dimensions.iter().map(|d| json!({ "name": d })).collect();
    if multi_range {
        dimension_headers.push(json!({ "name": "dateRange" }));
    }
    let mut body = json!({
        "dimensionHeaders": dimension_headers,
        "metricHeaders": metrics.iter().map(|m| {
            let kind = METRICS.iter().find(|(n, _, _)| n == m).map(|(_, t, _)| *t).unwrap_or("TYPE_INTEGER");
            json!({ "name": m, "type": kind })
        }).collect::<Vec<_>>(),
        "rows": rows.into_iter().skip(offset).take(limit).map(|(dims, values)| json!({
            "dimensionValues": dims.into_iter().map(|v| json!({ "value": v })).collect::<Vec<_>>(),
            "metricValues": values.into_iter().map(|v| json!({ "value": format_metric(v) })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "rowCount": row_count,
        "metadata": { "currencyCode": "USD", "timeZone": "America/Los_Angeles" },
        "kind": "analyticsData#runReport",
        "propertyId": property,
    });
    let wants_totals = request["metricAggregations"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "TOTAL"));
    if wants_totals {
        body["totals"] = json!([{
            "dimensionValues": dimensions.iter().map(|_| json!({ "value": "RESERVED_TOTAL" })).collect::<Vec<_>>(),
            "metricValues": totals.iter().map(|v| json!({ "value": format_metric(*v) })).collect::<Vec<_>>(),
        }]);
    }
    if request["returnPropertyQuota"].as_bool() == Some(true) {
        body["propertyQuota"] = json!({
            "tokensPerDay": { "consumed": 10, "remaining": quota_remaining },
            "tokensPerHour": { "consumed": 10, "remaining": 39990 },
            "concurrentRequests": { "consumed": 0, "remaining": 10 },
            "serverErrorsPerProjectPerHour": { "consumed": 0, "remaining": 10 },
            "potentiallyThresholdedRequestsPerHour": { "consumed": 0, "remaining": 120 },
            "tokensPerProjectPerHour": { "consumed": 10, "remaining": 13990 }
        });
    }
    Json(body).into_response()
}

fn format_metric(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}
