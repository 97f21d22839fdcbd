//! The alarm notifier: retries, then fails the invocation rather than dropping an alarm; reads
//! its webhook URLs from the config secret; never logs them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use alarm_notifier::{Notifier, NotifyError, Targets};
use aws_lambda_events::event::sns::SnsEvent;
use integration_tests::TestEnv;
use integration_tests::webhook::Webhook;

fn alarm_event() -> SnsEvent {
    let text =
        std::fs::read_to_string(devkit::repo_root().join("events/sns-alarm-alarm.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_failing_webhook_is_retried_then_fails_the_invocation() {
    let hook = Webhook::default();
    hook.failing.store(true, Ordering::SeqCst);
    let notifier = Notifier::with_targets(
        Targets {
            slack: Some(hook.start().await),
            generic: None,
        },
        Duration::from_millis(5),
    );
    let error = notifier.handle(alarm_event()).await.unwrap_err();
    assert!(
        matches!(
            error,
            NotifyError::Delivery {
                target: "slack",
                ..
            }
        ),
        "{error}"
    );
    // one attempt + three retries
    assert_eq!(*hook.attempts.lock().unwrap(), 4);

    // A webhook that recovers within the retries delivers once.
    hook.failing.store(false, Ordering::SeqCst);
    assert_eq!(notifier.handle(alarm_event()).await.unwrap(), 1);
    assert_eq!(hook.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unreadable_messages_and_missing_targets_fail_loudly() {
    let hook = Webhook::default();
    let notifier = Notifier::with_targets(
        Targets {
            slack: None,
            generic: Some(hook.start().await),
        },
        Duration::from_millis(5),
    );
    let mut event = alarm_event();
    event.records[0].sns.message = "not json".into();
    assert!(matches!(
        notifier.handle(event).await,
        Err(NotifyError::Unreadable { index: 0, .. })
    ));
    let nowhere = Notifier::with_targets(Targets::default(), Duration::from_millis(5));
    assert!(matches!(
        nowhere.handle(alarm_event()).await,
        Err(NotifyError::NoTarget)
    ));
}

#[tokio::test]
async fn webhook_urls_come_from_the_config_secret() {
    let hook = Webhook::default();
    let url = hook.start().await;
    let env = TestEnv::start_with(|c| {
        c["alerting"] = serde_json::json!({ "generic_webhook_url": url });
    })
    .await;
    let notifier = Notifier::new(env.platform.config.clone());
    assert_eq!(notifier.handle(alarm_event()).await.unwrap(), 1);
    let received = hook.received.lock().unwrap().clone();
    assert_eq!(
        received[0]["alarm_name"],
        "analytics-dashboard-prod-dashboards-errors"
    );
    assert_eq!(received[0]["old_state"], "OK");
    assert!(
        received[0]["condition"]
            .as_str()
            .unwrap()
            .contains("AWS/Lambda Errors (SUM) > 0")
    );
}
