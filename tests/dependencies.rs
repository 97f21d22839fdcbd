//! AWS dependency failures (injected by the counting proxy between the SDK and moto) answer 503
//! with Retry-After and no internal detail, after the SDK's own retries.

use http::Method;
use integration_tests::{TestEnv, dashboard_body};
use serde_json::json;

#[tokio::test]
async fn dynamodb_kms_and_s3_outages_are_503_with_retry_after() {
    let moto = devkit::moto::shared().unwrap();
    let (proxy, control) = devkit::proxy::start(moto).unwrap();
    let env = TestEnv::start_at(|_| {}, Some(&proxy)).await;
    let editor = env.token("acme", "editor");
    let admin = env.token("acme", "admin");
    let (_, key) = env
        .create_api_key(
            &admin,
            &json!({ "name": "k", "scopes": ["dashboards:read"] }),
        )
        .await;
    let connection =
        integration_tests::ga_flow::connect_with_property(&env, &editor, "111111").await;

    let cases = [
        (
            "DynamoDB.Query",
            env.request(Method::GET, "/v1/dashboards").bearer(&editor),
        ),
        (
            "DynamoDB.TransactWriteItems",
            env.request(Method::POST, "/v1/dashboards")
                .bearer(&editor)
                .json(&dashboard_body("x", None)),
        ),
        // The API key record is read on first use (not cached yet in this container).
        (
            "DynamoDB.GetItem",
            env.request(Method::GET, "/v1/dashboards").api_key(&key),
        ),
        (
            "KMS.GenerateDataKey",
            env.request(Method::POST, "/v1/ga/connections/authorize")
                .bearer(&editor),
        ),
        (
            "KMS.Decrypt",
            env.request(Method::POST, "/v1/ga/reports:run")
                .bearer(&editor)
                .json(&json!({
                    "connection_id": connection,
                    "date_ranges": [{ "start_date": "7daysAgo", "end_date": "yesterday" }],
                    "metrics": ["sessions"]
                })),
        ),
        (
            "S3.PUT",
            env.request(Method::POST, "/v1/ga/reports")
                .bearer(&editor)
                .json(&json!({
                    "name": "r",
                    "query": {
                        "connection_id": connection,
                        "date_ranges": [{ "start_date": "7daysAgo", "end_date": "yesterday" }],
                        "metrics": ["sessions"]
                    }
                })),
        ),
    ];
    for (operation, request) in cases {
        control.fail(&[operation]);
        control.take();
        let response = request.send().await;
        let problem = response.problem(503);
        assert!(response.header("retry-after").is_some(), "{operation}");
        let text = problem.to_string();
        assert!(
            !text.contains("InternalServerError") && !text.contains("injected"),
            "{operation} leaked detail: {text}"
        );
        // The SDK retried before giving up.
        assert!(
            control.take().get(operation).copied().unwrap_or(0) >= 2,
            "{operation}"
        );
    }
    control.fail(&[]);
    assert_eq!(
        env.request(Method::GET, "/v1/dashboards")
            .bearer(&editor)
            .send()
            .await
            .status,
        200
    );
}
