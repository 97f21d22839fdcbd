//! Turns CloudWatch alarm notifications (via SNS) into messages for the on-call channel: a
//! Slack-compatible incoming webhook and/or a generic JSON webhook (URLs from the config secret).
//!
//! Invariant: a notification is delivered or the invocation fails. Each delivery is retried with
//! exponential backoff and jitter; if it still fails (or the message cannot be read) the handler
//! returns an error, so Lambda retries the async invocation and then sends it to the on-failure
//! destination. Nothing is dropped silently.

use std::sync::Arc;
use std::time::Duration;

use app_config::ConfigHandle;
use aws_lambda_events::event::sns::SnsEvent;
use backon::{ExponentialBuilder, Retryable};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("record {index}: not a CloudWatch alarm notification: {reason}")]
    Unreadable { index: usize, reason: String },
    #[error("delivery to the {target} webhook failed after retries: {reason}")]
    Delivery {
        target: &'static str,
        reason: String,
    },
    #[error("no webhook is configured (alerting.slack_webhook_url / generic_webhook_url)")]
    NoTarget,
}

/// The fields of a CloudWatch alarm notification we use. Metric and composite alarms share the
/// top level; only metric alarms have `Trigger`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Alarm {
    pub alarm_name: String,
    #[serde(default)]
    pub alarm_description: Option<String>,
    #[serde(rename = "AWSAccountId", default)]
    pub aws_account_id: String,
    pub new_state_value: String,
    #[serde(default)]
    pub old_state_value: String,
    #[serde(default)]
    pub new_state_reason: String,
    #[serde(default)]
    pub state_change_time: String,
    #[serde(default)]
    pub alarm_arn: String,
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// Composite alarms only.
    #[serde(default)]
    pub alarm_rule: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Trigger {
    #[serde(default)]
    pub metric_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub comparison_operator: Option<String>,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub statistic: Option<String>,
    #[serde(default)]
    pub extended_statistic: Option<String>,
}

impl Alarm {
    pub fn parse(message: &str) -> Result<Self, String> {
        serde_json::from_str(message).map_err(|e| e.to_string())
    }

    /// `us-east-1` from `arn:aws:cloudwatch:us-east-1:123456789012:alarm:name`.
    pub fn region(&self) -> Option<&str> {
        self.alarm_arn.split(':').nth(3).filter(|r| !r.is_empty())
    }

    pub fn console_url(&self) -> Option<String> {
        let region = self.region()?;
        let name: String = self
            .alarm_name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        Some(format!(
            "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#alarmsV2:alarm/{name}"
        ))
    }

    /// The runbook URL named in the alarm description (`Runbook: https://…`).
    pub fn runbook_url(&self) -> Option<&str> {
        let description = self.alarm_description.as_deref()?;
        let start = description.find("Runbook:")? + "Runbook:".len();
        description[start..]
            .split_whitespace()
            .next()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    }

    /// `Errors > 0` style summary of what was measured.
    pub fn condition(&self) -> String {
        if let Some(rule) = &self.alarm_rule {
            return format!("composite rule: {rule}");
        }
        let Some(trigger) = &self.trigger else {
            return String::new();
        };
        let metric = match (&trigger.namespace, &trigger.metric_name) {
            (Some(ns), Some(name)) => format!("{ns} {name}"),
            (None, Some(name)) => name.clone(),
            _ => "metric math".to_string(),
        };
        let statistic = trigger
            .extended_statistic
            .clone()
            .or_else(|| trigger.statistic.clone())
            .unwrap_or_default();
        let operator = match trigger.comparison_operator.as_deref() {
            Some("GreaterThanThreshold") => ">",
            Some("GreaterThanOrEqualToThreshold") => ">=",
            Some("LessThanThreshold") => "<",
            Some("LessThanOrEqualToThreshold") => "<=",
            Some(other) => other,
            None => "?",
        };
        let threshold = trigger.threshold.map(|t| t.to_string()).unwrap_or_default();
        format!("{metric} ({statistic}) {operator} {threshold}")
            .trim()
            .to_string()
    }
}

fn emoji(state: &str) -> &'static str {
    match state {
        "ALARM" => ":rotating_light:",
        "OK" => ":white_check_mark:",
        _ => ":grey_question:",
    }
}

/// A Slack incoming-webhook message (blocks with a plain-text fallback).
pub fn slack_message(alarm: &Alarm) -> Value {
    let title = format!(
        "{} {}: {} → {}",
        emoji(&alarm.new_state_value),
        alarm.alarm_name,
        alarm.old_state_value,
        alarm.new_state_value
    );
    let mut lines = vec![format!("*Reason:* {}", alarm.new_state_reason)];
    let condition = alarm.condition();
    if !condition.is_empty() {
        lines.push(format!("*Condition:* {condition}"));
    }
    lines.push(format!(
        "*Where:* {} / account {}",
        alarm.region().unwrap_or("unknown region"),
        alarm.aws_account_id
    ));
    let mut links = Vec::new();
    if let Some(url) = alarm.console_url() {
        links.push(format!("<{url}|CloudWatch console>"));
    }
    if let Some(url) = alarm.runbook_url() {
        links.push(format!("<{url}|Runbook>"));
    }
    if !links.is_empty() {
        lines.push(links.join(" · "));
    }
    json!({
        "text": title,
        "blocks": [
            { "type": "header", "text": { "type": "plain_text", "text": title.chars().take(150).collect::<String>() } },
            { "type": "section", "text": { "type": "mrkdwn", "text": lines.join("\n") } }
        ]
    })
}

/// The generic webhook body: the same facts as named fields.
pub fn generic_message(alarm: &Alarm) -> Value {
    json!({
        "source": "cloudwatch-alarm",
        "alarm_name": alarm.alarm_name,
        "old_state": alarm.old_state_value,
        "new_state": alarm.new_state_value,
        "reason": alarm.new_state_reason,
        "condition": alarm.condition(),
        "region": alarm.region(),
        "account": alarm.aws_account_id,
        "changed_at": alarm.state_change_time,
        "console_url": alarm.console_url(),
        "runbook_url": alarm.runbook_url(),
    })
}

/// Where messages go, read from the config secret at each invocation (rotation-safe).
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub slack: Option<String>,
    pub generic: Option<String>,
}

#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    config: Option<Arc<ConfigHandle>>,
    fixed_targets: Option<Targets>,
    backoff: ExponentialBuilder,
}

impl Notifier {
    /// Production: targets from the config secret, 4 attempts from 200 ms with jitter.
    pub fn new(config: Arc<ConfigHandle>) -> Self {
        Self::build(Some(config), None, Duration::from_millis(200))
    }

    /// Fixed targets and a short backoff (tests, local runs).
    pub fn with_targets(targets: Targets, min_delay: Duration) -> Self {
        Self::build(None, Some(targets), min_delay)
    }

    fn build(
        config: Option<Arc<ConfigHandle>>,
        targets: Option<Targets>,
        min_delay: Duration,
    ) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            config,
            fixed_targets: targets,
            backoff: ExponentialBuilder::default()
                .with_min_delay(min_delay)
                .with_max_delay(Duration::from_secs(3))
                .with_max_times(3)
                .with_jitter(),
        }
    }

    async fn targets(&self) -> Targets {
        if let Some(targets) = &self.fixed_targets {
            return targets.clone();
        }
        let Some(config) = &self.config else {
            return Targets::default();
        };
        let config = config.current().await;
        let alerting = config.alerting.as_ref();
        Targets {
            slack: alerting
                .and_then(|a| a.slack_webhook_url.as_ref())
                .map(|s| s.expose().to_string()),
            generic: alerting
                .and_then(|a| a.generic_webhook_url.as_ref())
                .map(|s| s.expose().to_string()),
        }
    }

    /// Handles one SNS event: every record to every configured target, or an error.
    pub async fn handle(&self, event: SnsEvent) -> Result<usize, NotifyError> {
        let targets = self.targets().await;
        if targets.slack.is_none() && targets.generic.is_none() {
            return Err(NotifyError::NoTarget);
        }
        let mut delivered = 0;
        for (index, record) in event.records.iter().enumerate() {
            let alarm = Alarm::parse(&record.sns.message)
                .map_err(|reason| NotifyError::Unreadable { index, reason })?;
            tracing::info!(
                alarm = %alarm.alarm_name,
                from = %alarm.old_state_value,
                to = %alarm.new_state_value,
                "alarm notification"
            );
            if let Some(url) = &targets.slack {
                self.post("slack", url, &slack_message(&alarm)).await?;
                delivered += 1;
            }
            if let Some(url) = &targets.generic {
                self.post("generic", url, &generic_message(&alarm)).await?;
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    async fn post(&self, target: &'static str, url: &str, body: &Value) -> Result<(), NotifyError> {
        let attempt = || async {
            self.http
                .post(url)
                .json(body)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map(|_| ())
                // Webhook URLs are secrets: errors are kept without their URL.
                .map_err(|e| e.without_url().to_string())
        };
        attempt
            .retry(self.backoff)
            .notify(|error, after| {
                tracing::warn!(target, %error, retry_in_ms = after.as_millis() as u64, "webhook delivery failed; retrying");
            })
            .await
            .map_err(|reason| NotifyError::Delivery { target, reason })
    }
}
