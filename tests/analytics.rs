//! The analytics function against moto and the Google stand-in: routes, presets, comparison math
//! (checked against the stand-in's documented deterministic data), cache hit/miss/refresh,
//! stale-on-low-quota, 429 passthrough, needs_reauth, API keys, tenant isolation, batches.

use aws_sdk_dynamodb::types::AttributeValue;
use devkit::google::{Switches, daily_value};
use http::Method;
use integration_tests::{TestEnv, ga_flow};
use serde_json::{Value, json};

async fn connected(env: &TestEnv, tenant: &str) -> String {
    ga_flow::connect_with_property(env, &env.token(tenant, "editor"), "111111").await
}

fn days(start: &str, end: &str) -> Vec<i64> {
    let start: jiff::civil::Date = start.parse().unwrap();
    let end: jiff::civil::Date = end.parse().unwrap();
    let epoch = jiff::civil::date(1970, 1, 1);
    let mut out = Vec::new();
    let mut d = start;
    while d <= end {
        out.push(i64::from(
            epoch.until((jiff::Unit::Day, d)).unwrap().get_days(),
        ));
        d = d.tomorrow().unwrap();
    }
    out
}

fn sum(metric: &str, start: &str, end: &str) -> f64 {
    days(start, end)
        .into_iter()
        .map(|d| daily_value(metric, d))
        .sum()
}

fn mean(metric: &str, start: &str, end: &str) -> f64 {
    let d = days(start, end);
    d.iter().map(|d| daily_value(metric, *d)).sum::<f64>() / d.len() as f64
}

fn kpi<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["kpis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test]
async fn overview_comparison_math_matches_hand_computed_values() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let id = connected(&env, "acme").await;
    let response = env
        .request(
            Method::GET,
            &format!("/v1/analytics/overview?connection_id={id}&start_date=2026-01-01&end_date=2026-01-10"),
        )
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let body = response.json();
    assert_eq!(
        body["comparison"],
        json!({ "start_date": "2025-12-22", "end_date": "2025-12-31" })
    );
    // By hand: 2026-01-01 is day 20454 (k = 0): active users Σ(100 + 10k) over k = 0..6,0,1,2 =
    // 1240; the previous 10 days start at k = 4: Σ over 4,5,6,0,…,6 = 1360.
    let users = kpi(&body, "active_users");
    assert_eq!(users["value"], 1240.0);
    assert_eq!(users["previous"], 1360.0);
    assert_eq!(users["change"], -120.0);
    assert!(close(
        users["change_pct"].as_f64().unwrap(),
        -120.0 / 1360.0 * 100.0
    ));
    // Every KPI against the formula: counts summed, rates averaged.
    for (name, metric, rate) in [
        ("sessions", "sessions", false),
        ("page_views", "screenPageViews", false),
        ("bounce_rate", "bounceRate", true),
        ("average_session_duration", "averageSessionDuration", true),
        ("conversions", "keyEvents", false),
    ] {
        let (now, before) = if rate {
            (
                mean(metric, "2026-01-01", "2026-01-10"),
                mean(metric, "2025-12-22", "2025-12-31"),
            )
        } else {
            (
                sum(metric, "2026-01-01", "2026-01-10"),
                sum(metric, "2025-12-22", "2025-12-31"),
            )
        };
        let k = kpi(&body, name);
        assert!(close(k["value"].as_f64().unwrap(), now), "{name}: {k}");
        assert!(
            close(k["previous"].as_f64().unwrap(), before),
            "{name}: {k}"
        );
        assert!(close(k["change"].as_f64().unwrap(), now - before), "{name}");
    }

    // previous_year and none
    let year = env
        .request(Method::GET, &format!("/v1/analytics/overview?connection_id={id}&start_date=2026-01-01&end_date=2026-01-10&compare=previous_year"))
        .bearer(&viewer)
        .send()
        .await
        .json();
    assert_eq!(year["comparison"]["start_date"], "2025-01-01");
    assert!(close(
        kpi(&year, "sessions")["previous"].as_f64().unwrap(),
        sum("sessions", "2025-01-01", "2025-01-10")
    ));
    let none = env
        .request(
            Method::GET,
            &format!("/v1/analytics/overview?connection_id={id}&preset=last_7_days&compare=none"),
        )
        .bearer(&viewer)
        .send()
        .await
        .json();
    assert!(none["comparison"].is_null());
    assert!(kpi(&none, "sessions").get("previous").is_none());
}

#[tokio::test]
async fn every_preset_and_route_answers() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let id = connected(&env, "acme").await;
    for preset in [
        "last_7_days",
        "last_28_days",
        "last_90_days",
        "month_to_date",
        "year_to_date",
    ] {
        for path in [
            format!("/v1/analytics/overview?connection_id={id}&preset={preset}"),
            format!("/v1/analytics/timeseries?connection_id={id}&metric=sessions&preset={preset}"),
            format!(
                "/v1/analytics/top?connection_id={id}&dimension=country&metric=activeUsers&preset={preset}"
            ),
        ] {
            let response = env.request(Method::GET, &path).bearer(&viewer).send().await;
            assert_eq!(
                response.status,
                200,
                "{path}: {}",
                String::from_utf8_lossy(&response.body)
            );
        }
    }
}

#[tokio::test]
async fn timeseries_fills_gaps_and_aggregates_weeks_and_months() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let id = connected(&env, "acme").await;
    let get = |granularity: &str| {
        env.request(
            Method::GET,
            &format!("/v1/analytics/timeseries?connection_id={id}&metric=sessions&start_date=2026-01-26&end_date=2026-02-08&granularity={granularity}"),
        )
        .bearer(&viewer)
        .send()
    };
    let daily = get("day").await.json();
    let points = daily["points"].as_array().unwrap();
    assert_eq!(points.len(), 14);
    assert_eq!(points[0]["date"], "2026-01-26");
    let first_day = days("2026-01-26", "2026-01-26")[0];
    assert_eq!(points[0]["value"], daily_value("sessions", first_day));
    // 2026-01-26 is a Monday: two full ISO weeks.
    let weekly = get("week").await.json();
    let weeks = weekly["points"].as_array().unwrap();
    assert_eq!(weeks.len(), 2);
    assert_eq!(weeks[0]["date"], "2026-01-26");
    assert!(close(
        weeks[0]["value"].as_f64().unwrap(),
        sum("sessions", "2026-01-26", "2026-02-01")
    ));
    let monthly = get("month").await.json();
    let months = monthly["points"].as_array().unwrap();
    assert_eq!(
        months.iter().map(|p| p["date"].clone()).collect::<Vec<_>>(),
        vec![json!("2026-01-01"), json!("2026-02-01")]
    );
    assert!(close(
        months[1]["value"].as_f64().unwrap(),
        sum("sessions", "2026-02-01", "2026-02-08")
    ));
}

#[tokio::test]
async fn top_rows_carry_their_share_of_the_total() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let id = connected(&env, "acme").await;
    let body = env
        .request(Method::GET, &format!("/v1/analytics/top?connection_id={id}&dimension=deviceCategory&metric=sessions&start_date=2026-01-01&end_date=2026-01-07&limit=2"))
        .bearer(&viewer)
        .send()
        .await
        .json();
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // Stand-in shares for 3 values: 3/6, 2/6, 1/6 of the total (rounded per row).
    let total = sum("sessions", "2026-01-01", "2026-01-07");
    assert_eq!(rows[0]["dimension_value"], "desktop");
    assert!(close(
        rows[0]["value"].as_f64().unwrap(),
        (total / 2.0).round()
    ));
    let share = rows[0]["share"].as_f64().unwrap();
    assert!((share - 0.5).abs() < 0.01, "{share}");
}

#[tokio::test]
async fn validation_lists_allowed_values() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let id = connected(&env, "acme").await;
    let before = env.google.calls("runReport");
    for (path, needle) in [
        (
            format!(
                "/v1/analytics/overview?connection_id={id}&start_date=2023-01-01&end_date=2026-01-01"
            ),
            "2 years",
        ),
        (
            format!(
                "/v1/analytics/overview?connection_id={id}&start_date=2026-02-01&end_date=2026-01-01"
            ),
            "before",
        ),
        (
            format!("/v1/analytics/overview?connection_id={id}&preset=forever"),
            "last_28_days",
        ),
        (
            format!(
                "/v1/analytics/timeseries?connection_id={id}&metric=revenuez&preset=last_7_days"
            ),
            "activeUsers",
        ),
        (
            format!(
                "/v1/analytics/top?connection_id={id}&dimension=planet&metric=sessions&preset=last_7_days"
            ),
            "country",
        ),
        (
            format!(
                "/v1/analytics/timeseries?connection_id={id}&metric=sessions&preset=last_7_days&granularity=hour"
            ),
            "month",
        ),
    ] {
        let problem = env
            .request(Method::GET, &path)
            .bearer(&viewer)
            .send()
            .await
            .problem(422);
        assert!(problem.to_string().contains(needle), "{path}: {problem}");
    }
    assert_eq!(env.google.calls("runReport"), before);
}

async fn cache_items(
    env: &TestEnv,
    tenant: &str,
) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    aws_sdk_dynamodb::Client::new(&env.sdk)
        .query()
        .table_name(&env.provisioned.names.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :c)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("T#{tenant}")))
        .expression_attribute_values(":c", AttributeValue::S("CACHE#".into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

/// Makes every cached result stale (fresh_until in the past).
async fn age_cache(env: &TestEnv, tenant: &str) {
    for item in cache_items(env, tenant).await {
        let (AttributeValue::S(pk), AttributeValue::S(sk)) = (&item["pk"], &item["sk"]) else {
            panic!("cache item without string keys");
        };
        env.set_attribute(pk, sk, "fresh_until", AttributeValue::N("0".into()))
            .await;
    }
}

#[tokio::test]
async fn cache_hits_make_no_google_call_and_refresh_needs_an_editor() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let editor = env.token("acme", "editor");
    let id = connected(&env, "acme").await;
    let path = format!(
        "/v1/analytics/overview?connection_id={id}&start_date=2026-01-01&end_date=2026-01-10"
    );
    let calls = || env.google.calls("runReport");

    let before = calls();
    let miss = env.request(Method::GET, &path).bearer(&viewer).send().await;
    assert_eq!(miss.json()["data_freshness"]["source"], "google");
    assert_eq!(miss.header("cache-control"), Some("private, max-age=900"));
    assert_eq!(calls() - before, 1);

    let hit = env.request(Method::GET, &path).bearer(&viewer).send().await;
    assert_eq!(hit.json()["data_freshness"]["source"], "cache");
    assert!(hit.header("age").is_some());
    assert_eq!(hit.json()["kpis"], miss.json()["kpis"]);
    assert_eq!(calls() - before, 1, "a hit makes no Google call");

    env.request(Method::GET, &format!("{path}&refresh=true"))
        .bearer(&viewer)
        .send()
        .await
        .problem(403);
    let refreshed = env
        .request(Method::GET, &format!("{path}&refresh=true"))
        .bearer(&editor)
        .send()
        .await;
    assert_eq!(refreshed.json()["data_freshness"]["source"], "google");
    assert_eq!(calls() - before, 2);

    // A range that includes today is fresh for less time.
    let today = env
        .request(
            Method::GET,
            &format!("/v1/analytics/overview?connection_id={id}&preset=month_to_date"),
        )
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(today.header("cache-control"), Some("private, max-age=300"));
    let before = calls();

    // A stale entry is refetched.
    age_cache(&env, "acme").await;
    let refetched = env
        .request(Method::GET, &path)
        .bearer(&viewer)
        .send()
        .await
        .json();
    assert_eq!(refetched["data_freshness"]["source"], "google");
    assert_eq!(calls() - before, 1);
}

#[tokio::test]
async fn concurrent_identical_misses_share_one_google_call() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let id = connected(&env, "acme").await;
    env.google.set(Switches {
        slow_ms: 300,
        ..Default::default()
    });
    let path = format!(
        "/v1/analytics/top?connection_id={id}&dimension=country&metric=sessions&preset=last_28_days"
    );
    let before = env.google.calls("runReport");
    let (a, b, c) = tokio::join!(
        env.request(Method::GET, &path).bearer(&viewer).send(),
        env.request(Method::GET, &path).bearer(&viewer).send(),
        env.request(Method::GET, &path).bearer(&viewer).send(),
    );
    assert_eq!(
        (a.status.as_u16(), b.status.as_u16(), c.status.as_u16()),
        (200, 200, 200)
    );
    assert_eq!(env.google.calls("runReport") - before, 1);
    assert_eq!(a.json()["rows"], b.json()["rows"]);
}

#[tokio::test]
async fn low_quota_serves_stale_and_429_passes_through_without_cache() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let id = connected(&env, "acme").await;
    let path = format!(
        "/v1/analytics/overview?connection_id={id}&start_date=2026-01-01&end_date=2026-01-10"
    );

    // Google reports the property nearly out of tokens; the result is cached.
    env.google.set(Switches {
        quota_remaining: Some(500),
        ..Default::default()
    });
    assert_eq!(
        env.request(Method::GET, &path)
            .bearer(&viewer)
            .send()
            .await
            .status,
        200
    );
    age_cache(&env, "acme").await;
    let before = env.google.calls("runReport");
    let stale = env
        .request(Method::GET, &path)
        .bearer(&viewer)
        .send()
        .await
        .json();
    assert_eq!(stale["data_freshness"]["stale"], true);
    assert_eq!(stale["data_freshness"]["source"], "cache");
    assert_eq!(
        env.google.calls("runReport"),
        before,
        "low quota: no Google call"
    );

    // A query never cached, Google exhausted: 429 with Retry-After.
    env.google.set(Switches {
        fail_next: [429, 429, 429, 429].into(),
        quota_remaining: Some(100_000),
        ..Default::default()
    });
    let response = env
        .request(Method::GET, &format!("/v1/analytics/timeseries?connection_id={id}&metric=sessions&start_date=2025-06-01&end_date=2025-06-30"))
        .bearer(&viewer)
        .send()
        .await;
    response.problem(429);
    assert!(response.header("retry-after").is_some());
}

#[tokio::test]
async fn needs_reauth_api_keys_and_tenant_isolation() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let admin = env.token("acme", "admin");
    let id = connected(&env, "acme").await;
    let path = format!("/v1/analytics/overview?connection_id={id}&preset=last_7_days");

    let (_, analytics_key) = env
        .create_api_key(
            &admin,
            &json!({ "name": "a", "scopes": ["analytics:read"] }),
        )
        .await;
    let (_, dashboards_key) = env
        .create_api_key(
            &admin,
            &json!({ "name": "d", "scopes": ["dashboards:read"] }),
        )
        .await;
    assert_eq!(
        env.request(Method::GET, &path)
            .api_key(&analytics_key)
            .send()
            .await
            .status,
        200
    );
    env.request(Method::GET, &path)
        .api_key(&dashboards_key)
        .send()
        .await
        .problem(403);
    // API keys cannot force a refresh.
    env.request(Method::GET, &format!("{path}&refresh=true"))
        .api_key(&analytics_key)
        .send()
        .await
        .problem(403);

    // Another tenant naming this connection: 404, and nothing of ours in the answer.
    let other = env.token("globex", "admin");
    env.request(Method::GET, &path)
        .bearer(&other)
        .send()
        .await
        .problem(404);

    // The grant is revoked at Google: 409 pointing to the reconnect flow.
    env.google.set(Switches {
        revoke_all: true,
        ..Default::default()
    });
    env.set_attribute(
        "T#acme",
        &format!("GACONN#{id}"),
        "access_expires_at",
        AttributeValue::N("0".into()),
    )
    .await;
    let problem = env
        .request(
            Method::GET,
            &format!("/v1/analytics/overview?connection_id={id}&preset=last_28_days"),
        )
        .bearer(&viewer)
        .send()
        .await
        .problem(409);
    assert_eq!(problem["code"], "ga_needs_reauth");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("/v1/ga/connections/authorize")
    );
}

#[tokio::test]
async fn widget_batches_dedupe_queries_and_fail_per_widget() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let id = connected(&env, "acme").await;
    let widget = |wid: &str, metrics: Value| {
        json!({
            "id": wid, "kind": "kpi", "title": wid, "position": { "x": 0, "y": 0, "w": 4, "h": 2 },
            "query": { "connection_id": id, "metrics": metrics, "date_range": { "preset": "last_28_days" } }
        })
    };
    let before = env.google.calls("runReport");
    let response = env
        .request(Method::POST, "/v1/analytics/widgets:batch")
        .bearer(&viewer)
        .json(&json!({ "widgets": [
            widget("a", json!(["sessions"])),
            widget("b", json!(["sessions"])),
            widget("c", json!(["activeUsers"])),
            widget("d", json!(["notAMetric"])),
        ] }))
        .send()
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let body = response.json();
    assert_eq!(body["google_queries"], 2);
    assert_eq!(env.google.calls("runReport") - before, 2);
    let widgets = body["widgets"].as_array().unwrap();
    assert_eq!(widgets[0]["status"], "ok");
    assert_eq!(widgets[0]["data"], widgets[1]["data"]);
    assert_eq!(widgets[2]["status"], "ok");
    assert_eq!(widgets[3]["status"], "error");
    assert_eq!(widgets[3]["error"]["status"], 422);

    let too_many: Vec<Value> = (0..21)
        .map(|i| widget(&format!("w{i}"), json!(["sessions"])))
        .collect();
    env.request(Method::POST, "/v1/analytics/widgets:batch")
        .bearer(&viewer)
        .json(&json!({ "widgets": too_many }))
        .send()
        .await
        .problem(422);
}
