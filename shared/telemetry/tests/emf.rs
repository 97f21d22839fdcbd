//! The EMF recorder writes documents CloudWatch can ingest: `_aws.CloudWatchMetrics` with our
//! namespace, the Stage dimension, and the metric values. (Own process: the recorder is global.)

#[test]
fn metrics_flush_as_embedded_metric_format() {
    app_telemetry::metrics::init("test");
    app_telemetry::metrics::auth_rejected("expired");
    app_telemetry::metrics::auth_rejected("expired");
    let mut out = Vec::new();
    app_telemetry::metrics::flush_to(&mut out);
    let text = String::from_utf8(out).unwrap();
    let documents: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let total = documents
        .iter()
        .find(|d| d.get("AuthRejected").is_some())
        .unwrap_or_else(|| panic!("no AuthRejected in {text}"));
    assert_eq!(total["AuthRejected"], 2);
    assert_eq!(total["Stage"], "test");
    let directive = &total["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "AnalyticsDashboard");
    assert_eq!(directive["Dimensions"][0][0], "Stage");
    let by_reason = documents
        .iter()
        .find(|d| d.get("AuthRejectedByReason").is_some())
        .unwrap();
    assert_eq!(by_reason["Reason"], "expired");
}
