//! Per route of the dashboards function, for a warm container: AWS calls per request (counted by
//! a proxy between the SDK and moto) and the handler's own CPU time (CPU time of the thread that
//! runs the whole request on a current-thread runtime: routing, auth, validation, SDK
//! serialisation and signing; not moto's work, not network waits).
//! Run: `cargo bench -p integration-tests --bench route_costs` → a markdown table on stdout.

use std::collections::BTreeMap;

use http::Method;
use integration_tests::{TestEnv, dashboard_body};
use serde_json::json;

const ITERATIONS: usize = 200;

fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

struct Tokens {
    viewer: String,
    editor: String,
    admin: String,
    key: String,
    connection: String,
}

const ROUTES: &[&str] = &[
    "GET /v1/dashboards/health",
    "GET /v1/dashboards (JWT)",
    "GET /v1/dashboards (API key)",
    "POST /v1/dashboards (no widgets)",
    "POST /v1/dashboards (1 widget)",
    "GET /v1/dashboards/{id}",
    "GET /v1/dashboards/{id} (304)",
    "PUT /v1/dashboards/{id}",
    "PATCH /v1/dashboards/{id}",
    "DELETE /v1/dashboards/{id}",
    "POST /v1/dashboards/{id}/duplicate",
    "GET /v1/settings",
    "PUT /v1/settings (user)",
    "GET /v1/api-keys",
    "GET /v1/analytics/overview (cache hit)",
    "GET /v1/analytics/overview (miss: refresh=true)",
    "POST /v1/ga/reports:run",
];

/// Unmeasured preparation: routes on one dashboard get a fresh one (version 1).
async fn setup(route: &str, env: &TestEnv, t: &Tokens) -> Option<String> {
    if !route.contains("{id}") {
        return None;
    }
    let created = env
        .request(Method::POST, "/v1/dashboards")
        .bearer(&t.editor)
        .json(&dashboard_body("target", None))
        .send()
        .await
        .json();
    created["id"].as_str().map(str::to_string)
}

async fn call(route: &str, env: &TestEnv, t: &Tokens, id: Option<&str>) -> u16 {
    let one = format!("/v1/dashboards/{}", id.unwrap_or_default());
    let request = match route {
        "GET /v1/dashboards/health" => env.request(Method::GET, "/v1/dashboards/health"),
        "GET /v1/dashboards (JWT)" => env.request(Method::GET, "/v1/dashboards").bearer(&t.viewer),
        "GET /v1/dashboards (API key)" => {
            env.request(Method::GET, "/v1/dashboards").api_key(&t.key)
        }
        "POST /v1/dashboards (no widgets)" => env
            .request(Method::POST, "/v1/dashboards")
            .bearer(&t.editor)
            .json(&dashboard_body("bench", None)),
        "POST /v1/dashboards (1 widget)" => env
            .request(Method::POST, "/v1/dashboards")
            .bearer(&t.editor)
            .json(&dashboard_body("bench", Some("conn-1"))),
        "GET /v1/dashboards/{id}" => env.request(Method::GET, &one).bearer(&t.viewer),
        "GET /v1/dashboards/{id} (304)" => env
            .request(Method::GET, &one)
            .bearer(&t.viewer)
            .header("if-none-match", "\"v1\""),
        "PUT /v1/dashboards/{id}" => env
            .request(Method::PUT, &one)
            .bearer(&t.editor)
            .header("if-match", "\"v1\"")
            .json(&dashboard_body("renamed", None)),
        "PATCH /v1/dashboards/{id}" => env
            .request(Method::PATCH, &one)
            .bearer(&t.editor)
            .header("if-match", "\"v1\"")
            .json(&json!({ "name": "patched" })),
        "DELETE /v1/dashboards/{id}" => env.request(Method::DELETE, &one).bearer(&t.editor),
        "POST /v1/dashboards/{id}/duplicate" => env
            .request(Method::POST, &format!("{one}/duplicate"))
            .bearer(&t.editor),
        "GET /v1/settings" => env.request(Method::GET, "/v1/settings").bearer(&t.viewer),
        "PUT /v1/settings (user)" => env
            .request(Method::PUT, "/v1/settings")
            .bearer(&t.viewer)
            .json(&json!({ "user": { "timezone": "Europe/Berlin" } })),
        "GET /v1/api-keys" => env.request(Method::GET, "/v1/api-keys").bearer(&t.admin),
        "GET /v1/analytics/overview (cache hit)" => env
            .request(
                Method::GET,
                &format!(
                    "/v1/analytics/overview?connection_id={}&preset=last_28_days",
                    t.connection
                ),
            )
            .bearer(&t.viewer),
        "GET /v1/analytics/overview (miss: refresh=true)" => env
            .request(
                Method::GET,
                &format!(
                    "/v1/analytics/overview?connection_id={}&preset=last_28_days&refresh=true",
                    t.connection
                ),
            )
            .bearer(&t.editor),
        "POST /v1/ga/reports:run" => env
            .request(Method::POST, "/v1/ga/reports:run")
            .bearer(&t.viewer)
            .json(&json!({
                "connection_id": t.connection,
                "date_ranges": [{ "start_date": "28daysAgo", "end_date": "yesterday" }],
                "dimensions": ["date"],
                "metrics": ["sessions"]
            })),
        other => panic!("unknown route {other}"),
    };
    request.send().await.status.as_u16()
}

struct Row {
    route: &'static str,
    calls: BTreeMap<String, usize>,
    cpu_us_median: f64,
    cpu_us_p90: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let moto = devkit::moto::shared().unwrap();
    let (proxy, counts) = devkit::proxy::start(moto).unwrap();
    let env = TestEnv::start_at(
        |c| c["limits"] = json!({ "max_dashboards_per_tenant": 100_000 }),
        Some(&proxy),
    )
    .await;
    env.seed_connection("acme", "conn-1").await;
    let viewer = env.token("acme", "viewer");
    let editor = env.token("acme", "editor");
    let admin = env.token("acme", "admin");
    let (_, key) = env
        .create_api_key(
            &admin,
            &json!({ "name": "bench", "scopes": ["dashboards:read"] }),
        )
        .await;
    // Some data to list, and warm caches (JWKS, API key record, config).
    for i in 0..30 {
        env.request(Method::POST, "/v1/dashboards")
            .bearer(&editor)
            .json(&dashboard_body(&format!("seed {i}"), None))
            .send()
            .await;
    }
    env.request(Method::GET, "/v1/dashboards")
        .api_key(&key)
        .send()
        .await;

    let connection =
        integration_tests::ga_flow::connect_with_property(&env, &editor, "111111").await;
    // Warm the analytics cache for the hit row.
    env.request(
        Method::GET,
        &format!("/v1/analytics/overview?connection_id={connection}&preset=last_28_days"),
    )
    .bearer(&viewer)
    .send()
    .await;
    let tokens = Tokens {
        viewer,
        editor,
        admin,
        key,
        connection,
    };
    let mut rows = Vec::new();
    for route in ROUTES {
        let mut cpu = Vec::with_capacity(ITERATIONS);
        let mut total: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..ITERATIONS {
            let id = setup(route, &env, &tokens).await;
            counts.take();
            let google_before = env.google.calls("runReport") + env.google.calls("token");
            let start = thread_cpu_ns();
            let status = call(route, &env, &tokens, id.as_deref()).await;
            cpu.push((thread_cpu_ns() - start) as f64 / 1000.0);
            assert!(status < 400, "{route} answered {status}");
            for (op, n) in counts.take() {
                *total.entry(op).or_default() += n;
            }
            let google = env.google.calls("runReport") + env.google.calls("token") - google_before;
            if google > 0 {
                *total.entry("Google".to_string()).or_default() += google;
            }
        }
        cpu.sort_by(|a, b| a.total_cmp(b));
        rows.push(Row {
            route,
            calls: total,
            cpu_us_median: cpu[cpu.len() / 2],
            cpu_us_p90: cpu[cpu.len() * 9 / 10],
        });
    }

    println!(
        "| route (warm) | AWS (and Google) calls per request | handler CPU median (µs) | p90 (µs) |"
    );
    println!("|---|---|---|---|");
    for row in rows {
        let calls = if row.calls.is_empty() {
            "none".to_string()
        } else {
            row.calls
                .iter()
                .map(|(op, n)| format!("{op} ×{}", format_ratio(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {} | {} | {:.0} | {:.0} |",
            row.route, calls, row.cpu_us_median, row.cpu_us_p90
        );
    }
}

fn format_ratio(total: usize) -> String {
    let per = total as f64 / ITERATIONS as f64;
    if (per - per.round()).abs() < 1e-9 {
        format!("{}", per as usize)
    } else {
        format!("{per:.2}")
    }
}
