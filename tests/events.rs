//! Every file in `events/` goes through the real handlers, so the fixtures never go stale:
//! API Gateway REST proxy events through each function's own router (as lambda_http converts
//! them in AWS), SNS alarm notifications through the alarm notifier.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use http::Method;
use integration_tests::webhook::Webhook;
use integration_tests::{TestEnv, dashboard_body};
use serde_json::Value;
use tower::ServiceExt;

/// (file, function, expected status). Every file in events/ must be listed here or in SNS_EVENTS.
const API_EVENTS: &[(&str, &str, u16)] = &[
    ("dashboards-health.json", "dashboards", 200),
    ("ga-health.json", "ga", 200),
    ("analytics-health.json", "analytics", 200),
    ("dashboards-list.json", "dashboards", 200),
    ("dashboards-list-unauthenticated.json", "dashboards", 401),
    ("dashboards-create.json", "dashboards", 201),
    ("dashboards-create-invalid-json.json", "dashboards", 400),
    ("dashboards-get.json", "dashboards", 200),
    ("dashboards-replace.json", "dashboards", 200),
    ("dashboards-patch.json", "dashboards", 200),
    ("dashboards-delete.json", "dashboards", 204),
    ("dashboards-duplicate.json", "dashboards", 201),
    ("settings-get.json", "dashboards", 200),
    ("settings-put.json", "dashboards", 200),
    ("api-keys-create.json", "dashboards", 201),
    ("api-keys-list.json", "dashboards", 200),
    ("api-keys-revoke.json", "dashboards", 204),
    ("ga-connections-authorize.json", "ga", 200),
    ("ga-oauth-callback-unknown-state.json", "ga", 303),
    ("ga-connections-list.json", "ga", 200),
    ("ga-connections-get.json", "ga", 200),
    ("ga-connections-patch.json", "ga", 200),
    ("ga-connections-delete.json", "ga", 200),
    ("ga-reports-run.json", "ga", 200),
    ("ga-reports-save.json", "ga", 201),
    ("ga-reports-list.json", "ga", 200),
    ("ga-reports-get.json", "ga", 200),
    ("ga-reports-delete.json", "ga", 204),
    ("analytics-overview.json", "analytics", 200),
    ("analytics-timeseries.json", "analytics", 200),
    ("analytics-top.json", "analytics", 200),
    ("analytics-widgets-batch.json", "analytics", 200),
];

const SNS_EVENTS: &[(&str, &str)] = &[
    ("sns-alarm-alarm.json", "ALARM"),
    ("sns-alarm-ok.json", "OK"),
    ("sns-alarm-insufficient-data.json", "INSUFFICIENT_DATA"),
    ("sns-alarm-composite.json", "ALARM"),
];

fn events_dir() -> PathBuf {
    devkit::repo_root().join("events")
}

fn read_event(name: &str) -> String {
    std::fs::read_to_string(events_dir().join(name)).unwrap()
}

#[test]
fn every_event_file_is_exercised() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    let listed: BTreeSet<String> = API_EVENTS
        .iter()
        .map(|(f, _, _)| f.to_string())
        .chain(SNS_EVENTS.iter().map(|(f, _)| f.to_string()))
        .collect();
    assert_eq!(on_disk, listed);
}

async fn create_dashboard(env: &TestEnv, editor: &str) -> String {
    env.request(Method::POST, "/v1/dashboards")
        .bearer(editor)
        .json(&dashboard_body("fixture target", None))
        .send()
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn api_gateway_events_run_through_each_function_router() {
    // As in template.yaml: API Gateway REST puts the stage in the path unless told not to.
    // SAFETY: set before any request conversion in this test binary reads it.
    unsafe { std::env::set_var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true") };
    let env = TestEnv::start().await;
    let routers: [(&str, Router); 3] = [
        ("dashboards", dashboards::router(&env.platform)),
        ("ga", ga::router(&env.platform)),
        ("analytics", analytics::router(&env.platform)),
    ];
    let tokens = [
        ("{{VIEWER_TOKEN}}", env.token("acme", "viewer")),
        ("{{EDITOR_TOKEN}}", env.token("acme", "editor")),
        ("{{ADMIN_TOKEN}}", env.token("acme", "admin")),
    ];
    for (file, function, expected) in API_EVENTS {
        let mut text = read_event(file);
        for (placeholder, token) in &tokens {
            text = text.replace(placeholder, token);
        }
        if text.contains("{{DASHBOARD_ID}}") {
            let id = create_dashboard(&env, &tokens[1].1).await;
            text = text.replace("{{DASHBOARD_ID}}", &id);
        }
        if text.contains("{{CONNECTION_ID}}") || text.contains("{{REPORT_ID}}") {
            let connection =
                integration_tests::ga_flow::connect_with_property(&env, &tokens[1].1, "111111")
                    .await;
            if text.contains("{{REPORT_ID}}") {
                let saved = env
                    .request(Method::POST, "/v1/ga/reports")
                    .bearer(&tokens[1].1)
                    .json(&serde_json::json!({ "name": "fixture", "query": {
                        "connection_id": connection,
                        "date_ranges": [{ "start_date": "7daysAgo", "end_date": "yesterday" }],
                        "metrics": ["sessions"]
                    }}))
                    .send()
                    .await
                    .json();
                text = text.replace("{{REPORT_ID}}", saved["id"].as_str().unwrap());
            }
            text = text.replace("{{CONNECTION_ID}}", &connection);
        }
        if text.contains("{{API_KEY_ID}}") {
            let (key_id, _) = env
                .create_api_key(
                    &tokens[2].1,
                    &serde_json::json!({ "name": "fixture", "scopes": ["analytics:read"] }),
                )
                .await;
            text = text.replace("{{API_KEY_ID}}", &key_id);
        }
        let event: Value = serde_json::from_str(&text).unwrap();
        let request_id = event["requestContext"]["requestId"]
            .as_str()
            .unwrap()
            .to_string();
        let request = lambda_http::request::from_str(&text)
            .unwrap_or_else(|e| panic!("{file} is not a REST proxy event: {e}"));
        let router = routers
            .iter()
            .find(|(name, _)| name == function)
            .map(|(_, r)| r.clone())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            status,
            *expected,
            "{file}: {}",
            String::from_utf8_lossy(&body)
        );
        // API Gateway's request id is the request id.
        assert_eq!(
            headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            Some(request_id.as_str()),
            "{file}"
        );
        if status >= 400 {
            let problem: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(problem["request_id"], request_id.as_str(), "{file}");
        }
    }
}

#[tokio::test]
async fn sns_alarm_events_become_on_call_messages() {
    let slack = Webhook::default();
    let generic = Webhook::default();
    let notifier = alarm_notifier::Notifier::with_targets(
        alarm_notifier::Targets {
            slack: Some(slack.start().await),
            generic: Some(generic.start().await),
        },
        Duration::from_millis(5),
    );
    for (file, state) in SNS_EVENTS {
        let event: aws_lambda_events::event::sns::SnsEvent =
            serde_json::from_str(&read_event(file)).unwrap();
        assert_eq!(notifier.handle(event).await.unwrap(), 2, "{file}");
        let slack_message = slack.received.lock().unwrap().pop().unwrap();
        let generic_message = generic.received.lock().unwrap().pop().unwrap();
        assert_eq!(generic_message["new_state"], *state, "{file}");
        let text = slack_message["text"].as_str().unwrap();
        assert!(text.contains(&format!("→ {state}")), "{file}: {text}");
        assert!(
            generic_message["runbook_url"]
                .as_str()
                .unwrap()
                .contains("/docs/runbooks/"),
            "{file}"
        );
        assert!(
            generic_message["console_url"]
                .as_str()
                .unwrap()
                .starts_with("https://eu-central-1.console.aws.amazon.com/cloudwatch/"),
            "{file}"
        );
        assert_eq!(generic_message["region"], "eu-central-1");
    }
}
