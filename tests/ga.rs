//! The GA function end to end against the Google stand-in (over HTTP) and moto: the OAuth flow
//! with PKCE and single-use state, encrypted tokens, refresh, reports saved to S3, and attacks.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use devkit::google::Switches;
use http::Method;
use integration_tests::TestEnv;
use integration_tests::ga_flow::{
    callback_location, connect, google_redirect, run_flow, select_property,
};
use serde_json::{Value, json};

fn reason(location: &str) -> String {
    location.split("reason=").nth(1).unwrap_or("").to_string()
}

fn query(connection: &str) -> Value {
    json!({
        "connection_id": connection,
        "date_ranges": [{ "start_date": "2026-01-01", "end_date": "2026-01-07" }],
        "dimensions": ["date"],
        "metrics": ["activeUsers", "bounceRate"],
    })
}

async fn raw_item(
    env: &TestEnv,
    tenant: &str,
    id: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    aws_sdk_dynamodb::Client::new(&env.sdk)
        .get_item()
        .table_name(&env.provisioned.names.table)
        .key("pk", AttributeValue::S(format!("T#{tenant}")))
        .key("sk", AttributeValue::S(format!("GACONN#{id}")))
        .send()
        .await
        .unwrap()
        .item
        .unwrap()
}

async fn set_attribute(env: &TestEnv, tenant: &str, id: &str, name: &str, value: AttributeValue) {
    env.set_attribute(&format!("T#{tenant}"), &format!("GACONN#{id}"), name, value)
        .await;
}

/// Makes the stored access token look expired, so the next use refreshes it.
async fn expire(env: &TestEnv, tenant: &str, id: &str) {
    set_attribute(
        env,
        tenant,
        id,
        "access_expires_at",
        AttributeValue::N("0".into()),
    )
    .await;
}

#[tokio::test]
async fn the_whole_flow_connect_select_run_save_read_delete_disconnect() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    let viewer = env.token("acme", "viewer");
    let admin = env.token("acme", "admin");
    let id = connect(&env, &editor).await;

    // Listed with account and properties, never a token.
    let listed = env
        .request(Method::GET, "/v1/ga/connections")
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(listed.status, 200);
    let text = String::from_utf8_lossy(&listed.body).to_string();
    for token in env.google.issued_tokens() {
        assert!(!text.contains(&token), "a token is listed");
    }
    let connection = &listed.json()["items"][0];
    assert_eq!(connection["id"], id.as_str());
    assert_eq!(connection["google_email"], devkit::google::ACCOUNT_EMAIL);
    assert_eq!(connection["status"], "active");
    assert_eq!(
        connection["available_properties"].as_array().unwrap().len(),
        3
    );
    assert!(connection["selected_property"].is_null());

    // A report needs a selected property; only visible properties can be selected.
    env.request(Method::POST, "/v1/ga/reports:run")
        .bearer(&viewer)
        .json(&query(&id))
        .send()
        .await
        .problem(422);
    env.request(Method::PATCH, &format!("/v1/ga/connections/{id}"))
        .bearer(&editor)
        .json(&json!({ "selected_property": "999999" }))
        .send()
        .await
        .problem(422);
    select_property(&env, &editor, &id, "222222").await;

    // Run: normalised rows with typed numbers and ISO dates, quota included.
    let ran = env
        .request(Method::POST, "/v1/ga/reports:run")
        .bearer(&viewer)
        .json(&query(&id))
        .send()
        .await;
    assert_eq!(ran.status, 200, "{}", String::from_utf8_lossy(&ran.body));
    let result = ran.json();
    assert_eq!(result["row_count"], 7);
    assert_eq!(result["rows"][0]["date"], "2026-01-01");
    // 2026-01-01 is day 20454 since the epoch: k = 20454 mod 7 = 0 → activeUsers 100, bounceRate 0.40
    assert_eq!(result["rows"][0]["activeUsers"], 100);
    assert_eq!(result["rows"][0]["bounceRate"], 0.4);
    assert!(result["property_quota"]["tokensPerDay"]["remaining"].is_number());

    // Save, list, get (checksum verified), delete.
    let saved = env
        .request(Method::POST, "/v1/ga/reports")
        .bearer(&editor)
        .json(&json!({ "name": "First week", "query": query(&id) }))
        .send()
        .await;
    assert_eq!(
        saved.status,
        201,
        "{}",
        String::from_utf8_lossy(&saved.body)
    );
    let report_id = saved.json()["id"].as_str().unwrap().to_string();
    assert_eq!(saved.json()["row_count"], 7);
    assert_eq!(saved.json()["property_id"], "222222");
    let list = env
        .request(Method::GET, "/v1/ga/reports")
        .bearer(&viewer)
        .send()
        .await
        .json();
    assert_eq!(list["items"][0]["id"], report_id.as_str());
    let got = env
        .request(Method::GET, &format!("/v1/ga/reports/{report_id}"))
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["checksum_verified"], true);
    assert_eq!(
        got.json()["result"],
        result.clone().tap_quota_free(&got.json()["result"])
    );
    let deleted = env
        .request(Method::DELETE, &format!("/v1/ga/reports/{report_id}"))
        .bearer(&editor)
        .send()
        .await;
    assert_eq!(deleted.status, 204);
    env.request(Method::GET, &format!("/v1/ga/reports/{report_id}"))
        .bearer(&viewer)
        .send()
        .await
        .problem(404);

    // Disconnect: revoked at Google (the stand-in saw it), then gone here.
    env.request(Method::DELETE, &format!("/v1/ga/connections/{id}"))
        .bearer(&editor)
        .send()
        .await
        .problem(403);
    let disconnected = env
        .request(Method::DELETE, &format!("/v1/ga/connections/{id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(disconnected.status, 200);
    assert_eq!(disconnected.json()["revoked_at_google"], true);
    assert_eq!(env.google.revoked().len(), 1);
    env.request(Method::GET, &format!("/v1/ga/connections/{id}"))
        .bearer(&viewer)
        .send()
        .await
        .problem(404);
}

/// Saved results equal the run's except for the quota, which changes per call.
trait QuotaFree {
    fn tap_quota_free(self, saved: &Value) -> Value;
}
impl QuotaFree for Value {
    fn tap_quota_free(mut self, saved: &Value) -> Value {
        self["property_quota"] = saved["property_quota"].clone();
        self
    }
}

#[tokio::test]
async fn state_is_single_use_bound_and_expiring_and_pkce_is_checked() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");

    // Replay: the same callback twice → the second is refused.
    let authorize = env
        .request(Method::POST, "/v1/ga/connections/authorize")
        .bearer(&editor)
        .send()
        .await
        .json();
    let callback = google_redirect(authorize["authorization_url"].as_str().unwrap()).await;
    let first = callback_location(&env, &callback).await;
    assert!(first.contains("ga=connected"), "{first}");
    let replay = callback_location(&env, &callback).await;
    assert_eq!(reason(&replay), "invalid_state");

    // Forged, missing, and expired states.
    let forged = callback_location(&env, "/v1/ga/oauth/callback?code=abc&state=forged-state").await;
    assert_eq!(reason(&forged), "invalid_state");
    let missing = callback_location(&env, "/v1/ga/oauth/callback?code=abc").await;
    assert_eq!(reason(&missing), "invalid_state");
    let authorize = env
        .request(Method::POST, "/v1/ga/connections/authorize")
        .bearer(&editor)
        .send()
        .await
        .json();
    let callback = google_redirect(authorize["authorization_url"].as_str().unwrap()).await;
    expire_all_states(&env).await;
    assert_eq!(
        reason(&callback_location(&env, &callback).await),
        "invalid_state"
    );

    // PKCE: a code issued for one flow's challenge, presented with another flow's state (and so
    // its verifier), is refused by Google's token endpoint.
    let a = env
        .request(Method::POST, "/v1/ga/connections/authorize")
        .bearer(&editor)
        .send()
        .await
        .json();
    let b = env
        .request(Method::POST, "/v1/ga/connections/authorize")
        .bearer(&editor)
        .send()
        .await
        .json();
    let a_callback = google_redirect(a["authorization_url"].as_str().unwrap()).await;
    let b_callback = google_redirect(b["authorization_url"].as_str().unwrap()).await;
    let a_code = a_callback
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let b_state = b_callback
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let mixed = format!("/v1/ga/oauth/callback?code={a_code}&state={b_state}");
    assert_eq!(
        reason(&callback_location(&env, &mixed).await),
        "invalid_grant"
    );
}

async fn expire_all_states(env: &TestEnv) {
    // Only the state items have sk = STATE; find them through the index-free path: we know the
    // table is this test's own, so a Scan here (test code) is fine.
    let client = aws_sdk_dynamodb::Client::new(&env.sdk);
    let items = client
        .scan()
        .table_name(&env.provisioned.names.table)
        .filter_expression("sk = :s")
        .expression_attribute_values(":s", AttributeValue::S("STATE".into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    for item in items {
        let AttributeValue::S(pk) = &item["pk"] else {
            panic!("state item without a string pk");
        };
        env.set_attribute(pk, "STATE", "expires_at", AttributeValue::N("1".into()))
            .await;
    }
}

#[tokio::test]
async fn google_side_refusals_come_back_as_reason_codes() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    for (switches, expected) in [
        (
            Switches {
                deny: true,
                ..Default::default()
            },
            "access_denied",
        ),
        (
            Switches {
                reduced_scope: true,
                ..Default::default()
            },
            "insufficient_scope",
        ),
        (
            Switches {
                no_refresh_token: true,
                ..Default::default()
            },
            "no_refresh_token",
        ),
    ] {
        env.google.set(switches);
        assert_eq!(reason(&run_flow(&env, &editor).await), expected);
    }
    env.google.set(Switches::default());
    let listed = env
        .request(Method::GET, "/v1/ga/connections")
        .bearer(&editor)
        .send()
        .await
        .json();
    assert_eq!(
        listed["items"],
        json!([]),
        "no connection may be stored for a failed flow"
    );
}

#[tokio::test]
async fn tokens_are_stored_only_as_kms_envelopes_bound_to_their_connection() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    let viewer = env.token("acme", "viewer");
    let a = connect(&env, &editor).await;
    let b = connect(&env, &editor).await;
    select_property(&env, &editor, &b, "111111").await;

    let raw = raw_item(&env, "acme", &a).await;
    let dump = format!("{raw:?}");
    for token in env.google.issued_tokens() {
        assert!(!dump.contains(&token), "plaintext token in the item");
    }
    let AttributeValue::M(envelope) = &raw["token"] else {
        panic!("no envelope")
    };
    assert_eq!(
        envelope["format"],
        AttributeValue::S(app_crypto::FORMAT_V1.into())
    );
    for field in ["key_id", "encrypted_data_key", "nonce", "ciphertext"] {
        assert!(envelope.contains_key(field), "{field}");
    }

    // Copy A's ciphertext onto B: it must not decrypt as B's.
    set_attribute(&env, "acme", &b, "token", raw["token"].clone()).await;
    expire(&env, "acme", &b).await;
    let response = env
        .request(Method::POST, "/v1/ga/reports:run")
        .bearer(&viewer)
        .json(&query(&b))
        .send()
        .await;
    let problem = response.problem(500);
    assert!(
        problem.get("detail").is_none(),
        "no internals in a 500: {problem}"
    );
}

#[tokio::test]
async fn refresh_rotation_needs_reauth_and_concurrent_refreshes() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    let viewer = env.token("acme", "viewer");
    let id = connect(&env, &editor).await;
    select_property(&env, &editor, &id, "111111").await;
    let run = || {
        env.request(Method::POST, "/v1/ga/reports:run")
            .bearer(&viewer)
            .json(&query(&id))
            .send()
    };

    // A fresh token is used as is: no refresh.
    let before = env.google.calls("token");
    assert_eq!(run().await.status, 200);
    assert_eq!(env.google.calls("token"), before);

    // Near expiry: refreshed once, even with two requests at the same time.
    expire(&env, "acme", &id).await;
    let (x, y) = tokio::join!(run(), run());
    assert_eq!((x.status.as_u16(), y.status.as_u16()), (200, 200));
    let version = match &raw_item(&env, "acme", &id).await["token_version"] {
        AttributeValue::N(n) => n.parse::<u64>().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(version >= 2);

    // A rotated refresh token is stored: the old one is revoked by the rotation, yet the next
    // refresh still works.
    env.google.set(Switches {
        rotate_refresh_token: true,
        ..Default::default()
    });
    expire(&env, "acme", &id).await;
    assert_eq!(run().await.status, 200);
    env.google.set(Switches::default());
    expire(&env, "acme", &id).await;
    assert_eq!(run().await.status, 200);

    // Google revokes the grant: invalid_grant → needs_reauth → 409, and it sticks.
    env.google.set(Switches {
        revoke_all: true,
        ..Default::default()
    });
    expire(&env, "acme", &id).await;
    let problem = run().await.problem(409);
    assert_eq!(problem["code"], "ga_needs_reauth");
    let connection = env
        .request(Method::GET, &format!("/v1/ga/connections/{id}"))
        .bearer(&viewer)
        .send()
        .await
        .json();
    assert_eq!(connection["status"], "needs_reauth");
    assert_eq!(run().await.problem(409)["code"], "ga_needs_reauth");
}

#[tokio::test]
async fn google_429_and_5xx_are_retried_then_surfaced() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    let viewer = env.token("acme", "viewer");
    let id = connect(&env, &editor).await;
    select_property(&env, &editor, &id, "111111").await;
    let run = || {
        env.request(Method::POST, "/v1/ga/reports:run")
            .bearer(&viewer)
            .json(&query(&id))
            .send()
    };

    // Transient: one 500 and one 429, then success.
    env.google.set(Switches {
        fail_next: [500, 429].into(),
        ..Default::default()
    });
    let before = env.google.calls("runReport");
    assert_eq!(run().await.status, 200);
    assert_eq!(env.google.calls("runReport") - before, 3);

    // Persistent 429: 4 attempts, then 503 with Retry-After.
    env.google.set(Switches {
        fail_next: [429, 429, 429, 429].into(),
        ..Default::default()
    });
    let before = env.google.calls("runReport");
    let response = run().await;
    response.problem(503);
    assert!(response.header("retry-after").is_some());
    assert_eq!(env.google.calls("runReport") - before, 4);

    // Persistent 5xx: 502.
    env.google.set(Switches {
        fail_next: [500, 500, 500, 500].into(),
        ..Default::default()
    });
    run().await.problem(502);

    // An invalid query Google refuses (unknown metric) is the caller's problem: 422.
    env.google.set(Switches::default());
    let mut bad = query(&id);
    bad["metrics"] = json!(["notAMetric"]);
    env.request(Method::POST, "/v1/ga/reports:run")
        .bearer(&viewer)
        .json(&bad)
        .send()
        .await
        .problem(422);
}

#[tokio::test]
async fn report_queries_are_validated_before_google_is_called() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let editor = env.token("acme", "editor");
    let id = connect(&env, &editor).await;
    select_property(&env, &editor, &id, "111111").await;
    let before = env.google.calls("runReport");
    let ranges =
        |n: usize| vec![json!({ "start_date": "2026-01-01", "end_date": "2026-01-02" }); n];
    let cases = [
        json!({ "connection_id": id, "date_ranges": ranges(5), "metrics": ["sessions"] }),
        json!({ "connection_id": id, "date_ranges": ranges(0), "metrics": ["sessions"] }),
        json!({ "connection_id": id, "date_ranges": ranges(1), "metrics": [] }),
        json!({ "connection_id": id, "date_ranges": ranges(1), "metrics": vec!["sessions"; 11] }),
        json!({ "connection_id": id, "date_ranges": ranges(1), "metrics": ["sessions"], "dimensions": vec!["country"; 10] }),
        json!({ "connection_id": id, "date_ranges": ranges(1), "metrics": ["sessions"], "limit": 10001 }),
        json!({ "connection_id": id, "date_ranges": [{ "start_date": "2026-02-01", "end_date": "2026-01-01" }], "metrics": ["sessions"] }),
        json!({ "connection_id": id, "date_ranges": [{ "start_date": "last week", "end_date": "today" }], "metrics": ["sessions"] }),
        json!({ "connection_id": id, "date_ranges": ranges(1), "metrics": ["drop table"] }),
        json!({ "connection_id": id, "date_ranges": ranges(1), "metrics": ["sessions"], "property": "333333" }),
    ];
    for body in cases {
        env.request(Method::POST, "/v1/ga/reports:run")
            .bearer(&viewer)
            .json(&body)
            .send()
            .await
            .problem(422);
    }
    assert_eq!(
        env.google.calls("runReport"),
        before,
        "nothing reached Google"
    );
}

#[tokio::test]
async fn connections_and_reports_are_tenant_isolated() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    let other = env.token("globex", "admin");
    let id = connect(&env, &editor).await;
    select_property(&env, &editor, &id, "111111").await;
    let saved = env
        .request(Method::POST, "/v1/ga/reports")
        .bearer(&editor)
        .json(&json!({ "name": "mine", "query": query(&id) }))
        .send()
        .await
        .json();
    let report = saved["id"].as_str().unwrap().to_string();

    for call in [
        env.request(Method::GET, &format!("/v1/ga/connections/{id}"))
            .bearer(&other),
        env.request(Method::PATCH, &format!("/v1/ga/connections/{id}"))
            .bearer(&other)
            .json(&json!({ "selected_property": "111111" })),
        env.request(Method::DELETE, &format!("/v1/ga/connections/{id}"))
            .bearer(&other),
        env.request(Method::POST, "/v1/ga/reports:run")
            .bearer(&other)
            .json(&query(&id)),
        env.request(Method::GET, &format!("/v1/ga/reports/{report}"))
            .bearer(&other),
        env.request(Method::DELETE, &format!("/v1/ga/reports/{report}"))
            .bearer(&other),
    ] {
        call.send().await.problem(404);
    }
    let theirs = env
        .request(Method::GET, "/v1/ga/connections")
        .bearer(&other)
        .send()
        .await
        .json();
    assert_eq!(theirs["items"], json!([]));
    let reports = env
        .request(Method::GET, "/v1/ga/reports")
        .bearer(&other)
        .send()
        .await
        .json();
    assert_eq!(reports["items"], json!([]));
    // Still there for the owner.
    let mine = env
        .request(Method::GET, &format!("/v1/ga/reports/{report}"))
        .bearer(&editor)
        .send()
        .await;
    assert_eq!(mine.status, 200);
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The same flow with every hop a real HTTP request over TCP: our API served by `axum::serve`
/// (as `cargo xtask dev` does), the stand-in as Google, reqwest as the browser and the client.
#[tokio::test]
async fn the_connect_flow_over_real_http() {
    let env = TestEnv::start().await;
    let api = devkit::LocalApi::serve(env.router.clone(), 0)
        .await
        .unwrap();
    let editor = env.token("acme", "editor");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize: Value = browser
        .post(format!("{}/v1/ga/connections/authorize", api.url))
        .bearer_auth(&editor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let to_callback = browser
        .get(authorize["authorization_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(to_callback.status(), 303);
    // The configured redirect URI names the dev port; point it at this test's server instead.
    let callback = to_callback.headers()["location"]
        .to_str()
        .unwrap()
        .replace(integration_tests::API_URL, &api.url);
    let landing = browser.get(&callback).send().await.unwrap();
    assert_eq!(landing.status(), 303);
    let location = landing.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.contains("ga=connected&connection_id="),
        "{location}"
    );
    let listed: Value = browser
        .get(format!("{}/v1/ga/connections", api.url))
        .bearer_auth(&editor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

/// Google refuses an access token we still believed valid: one refresh, one retry, success.
#[tokio::test]
async fn a_refused_access_token_is_refreshed_once_and_retried() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    let viewer = env.token("acme", "viewer");
    let id = connect(&env, &editor).await;
    select_property(&env, &editor, &id, "111111").await;
    env.google.expire_access_tokens();
    let refreshes = env.google.calls("token");
    let response = env
        .request(Method::POST, "/v1/ga/reports:run")
        .bearer(&viewer)
        .json(&query(&id))
        .send()
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(env.google.calls("token") - refreshes, 1);
}
