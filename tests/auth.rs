//! Attack tests for the auth crate, against the dev OIDC issuer over real HTTP (JWKS fetch
//! included) and API keys stored in DynamoDB (moto). Each case also checks the logged reason code,
//! so a rejection for the wrong reason fails the test.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;
use integration_tests::{TestEnv, dashboard_body};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn now() -> i64 {
    devkit::issuer::now()
}

/// Valid claims for tenant `acme`, role viewer.
fn claims(env: &TestEnv) -> Value {
    json!({
        "iss": env.issuer.issuer(),
        "aud": env.issuer.audience(),
        "sub": "user-1",
        "iat": now(),
        "nbf": now(),
        "exp": now() + 600,
        "tenant_id": "acme",
        "roles": ["viewer"],
    })
}

fn with(mut claims: Value, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    edit(claims.as_object_mut().unwrap());
    claims
}

async fn status_with_token(env: &TestEnv, token: &str) -> (u16, Option<String>) {
    let response = env
        .request(Method::GET, "/v1/dashboards")
        .bearer(token)
        .send()
        .await;
    if response.status.as_u16() >= 400 {
        response.problem(response.status.as_u16());
    }
    (
        response.status.as_u16(),
        response.header("www-authenticate").map(str::to_string),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn forged_and_invalid_tokens_are_rejected_for_the_right_reason() {
    let (logs, _guard) = integration_tests::logs::capture();
    let env = TestEnv::start().await;
    let kid = env.issuer.current_kid();
    let valid = env.issuer.sign(&claims(&env));
    let header = |alg: &str| json!({ "alg": alg, "typ": "JWT", "kid": kid });
    let signed_with = |header: Header, claims: &Value| env.issuer.sign_with_header(&header, claims);
    let rs256 = || {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.clone());
        h
    };

    // HS256 signed with the issuer's RSA public key (classic alg confusion).
    let hs_confusion = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        let secret = EncodingKey::from_secret(env.issuer.public_key_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&h, &claims(&env), &secret).unwrap()
    };
    // A valid token's header and payload with another token's signature.
    let bad_signature = {
        let other = env.issuer.sign(&with(claims(&env), |c| {
            c.insert("sub".into(), json!("someone-else"));
        }));
        let (head, _) = valid.rsplit_once('.').unwrap();
        format!("{head}.{}", other.rsplit('.').next().unwrap())
    };
    let attacker_key_with_jku = {
        // The attacker hosts their own JWKS and points `jku` at it; we never follow it.
        devkit::issuer::sign_with_unpublished_key(&claims(&env), "attacker-kid").unwrap()
    };
    let jku_with_real_kid = {
        let mut h = rs256();
        h.jku = Some("http://127.0.0.1:9/evil-jwks.json".into());
        h.x5u = Some("http://127.0.0.1:9/evil.pem".into());
        // Signed by the real key: jku is ignored and the token verifies normally.
        signed_with(h, &claims(&env))
    };
    let crit = {
        let mut h = rs256();
        h.crit = Some(vec!["exp".into()]);
        signed_with(h, &claims(&env))
    };
    let es256_header_rsa_kid = format!(
        "{}.{}.{}",
        b64(&header("ES256")),
        b64(&claims(&env)),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    let oversized = env.issuer.sign(&with(claims(&env), |c| {
        c.insert("padding".into(), json!("x".repeat(9 * 1024)));
    }));

    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("control: valid token", valid.clone(), 200, None),
        ("jku/x5u ignored, real key", jku_with_real_kid, 200, None),
        (
            "within leeway (expired 10 s ago)",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("exp".into(), json!(now() - 10));
            })),
            200,
            None,
        ),
        (
            "alg none",
            format!("{}.{}.", b64(&header("none")), b64(&claims(&env))),
            401,
            Some("alg_not_allowed"),
        ),
        (
            "alg NoNe",
            format!("{}.{}.", b64(&header("NoNe")), b64(&claims(&env))),
            401,
            Some("alg_not_allowed"),
        ),
        (
            "HS256 with the RSA public key",
            hs_confusion,
            401,
            Some("alg_not_allowed"),
        ),
        (
            "ES256 header on an RSA key",
            es256_header_rsa_kid,
            401,
            Some("key_alg_mismatch"),
        ),
        ("bad signature", bad_signature, 401, Some("bad_signature")),
        (
            "expired",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("exp".into(), json!(now() - 120));
            })),
            401,
            Some("expired"),
        ),
        (
            "nbf in the future",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("nbf".into(), json!(now() + 300));
            })),
            401,
            Some("not_yet_valid"),
        ),
        (
            "wrong iss",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("iss".into(), json!("https://evil.example"));
            })),
            401,
            Some("wrong_issuer"),
        ),
        (
            "wrong aud",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("aud".into(), json!("another-api"));
            })),
            401,
            Some("wrong_audience"),
        ),
        (
            "missing aud",
            env.issuer.sign(&with(claims(&env), |c| {
                c.remove("aud");
            })),
            401,
            Some("missing_claim"),
        ),
        (
            "missing sub",
            env.issuer.sign(&with(claims(&env), |c| {
                c.remove("sub");
            })),
            401,
            Some("missing_claim"),
        ),
        (
            "exp as a string",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("exp".into(), json!((now() + 600).to_string()));
            })),
            401,
            Some("invalid_claim"),
        ),
        (
            "sub as a number",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("sub".into(), json!(42));
            })),
            401,
            Some("invalid_claim"),
        ),
        ("unknown crit", crit, 401, Some("crit_unsupported")),
        (
            "attacker key via jku, unknown kid",
            attacker_key_with_jku,
            401,
            Some("unknown_kid"),
        ),
        ("oversized token", oversized, 401, Some("token_too_large")),
        ("not a JWT", "abc.def".into(), 401, Some("malformed_token")),
        (
            "tenant claim of the wrong type",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("tenant_id".into(), json!(7));
            })),
            401,
            Some("invalid_claim"),
        ),
        (
            "missing tenant claim",
            env.issuer.sign(&with(claims(&env), |c| {
                c.remove("tenant_id");
            })),
            403,
            Some("missing_tenant"),
        ),
        (
            "no known role",
            env.issuer.sign(&with(claims(&env), |c| {
                c.insert("roles".into(), json!(["guest"]));
            })),
            403,
            Some("insufficient_role"),
        ),
    ];
    logs.take();
    for (what, token, status, reason) in cases {
        let (got, www_authenticate) = status_with_token(&env, &token).await;
        assert_eq!(got, status, "{what}");
        if status == 401 {
            assert_eq!(
                www_authenticate.as_deref(),
                Some(r#"Bearer error="invalid_token""#),
                "{what}"
            );
        }
        let reasons = logs.reasons();
        match reason {
            Some(reason) => assert_eq!(reasons, vec![reason.to_string()], "{what}"),
            None => assert!(reasons.is_empty(), "{what}: {reasons:?}"),
        }
    }
    // The Authorization header shapes: missing, wrong scheme, both credentials at once.
    for (what, request, reason) in [
        (
            "no credentials",
            env.request(Method::GET, "/v1/dashboards"),
            "missing_credentials",
        ),
        (
            "basic auth",
            env.request(Method::GET, "/v1/dashboards")
                .header("authorization", "Basic dXNlcjpwYXNz"),
            "malformed_token",
        ),
        (
            "token and key together",
            env.request(Method::GET, "/v1/dashboards")
                .bearer(&valid)
                .api_key("adk_x"),
            "ambiguous_credentials",
        ),
    ] {
        request.send().await.problem(401);
        assert_eq!(logs.reasons(), vec![reason.to_string()], "{what}");
    }
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_interval_and_rotation_is_picked_up() {
    let env = TestEnv::start_with(|c| c["oidc"]["jwks_refetch_interval_secs"] = json!(1)).await;
    let first = env.issuer.sign(&claims(&env));
    assert_eq!(status_with_token(&env, &first).await.0, 200);
    assert_eq!(env.issuer.jwks_fetches(), 1);

    // An unknown kid right after a fetch: no refetch (rate limit), 401.
    let ghost = devkit::issuer::sign_with_unpublished_key(&claims(&env), "ghost").unwrap();
    assert_eq!(status_with_token(&env, &ghost).await.0, 401);
    assert_eq!(env.issuer.jwks_fetches(), 1);
    // After the interval: exactly one refetch, still 401; a second try does not refetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_with_token(&env, &ghost).await.0, 401);
    assert_eq!(status_with_token(&env, &ghost).await.0, 401);
    assert_eq!(env.issuer.jwks_fetches(), 2);

    // Rotation at the issuer: the new kid is accepted after one refetch; the old key is gone.
    env.issuer.rotate().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = env.issuer.sign(&claims(&env));
    assert_eq!(status_with_token(&env, &rotated).await.0, 200);
    assert_eq!(env.issuer.jwks_fetches(), 3);
    assert_eq!(status_with_token(&env, &first).await.0, 401);
}

#[tokio::test]
async fn a_jwks_outage_does_not_take_down_requests_with_cached_keys() {
    let env = TestEnv::start_with(|c| c["oidc"]["jwks_refetch_interval_secs"] = json!(1)).await;
    let token = env.issuer.sign(&claims(&env));
    assert_eq!(status_with_token(&env, &token).await.0, 200);
    env.issuer.set_jwks_down(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // An unknown kid makes it try (and fail) to refetch; cached keys stay in service.
    let ghost = devkit::issuer::sign_with_unpublished_key(&claims(&env), "ghost").unwrap();
    assert_eq!(status_with_token(&env, &ghost).await.0, 401);
    assert_eq!(env.issuer.jwks_fetches(), 2);
    assert_eq!(status_with_token(&env, &token).await.0, 200);
}

#[tokio::test]
async fn discovery_is_used_when_no_jwks_url_is_configured() {
    let env = TestEnv::start_with(|c| {
        c["oidc"].as_object_mut().unwrap().remove("jwks_url");
    })
    .await;
    let token = env.issuer.sign(&claims(&env));
    assert_eq!(status_with_token(&env, &token).await.0, 200);
    assert_eq!(env.issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn roles_and_tenants_are_enforced_per_route() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let editor = env.token("acme", "editor");
    let other_admin = env.token("globex", "admin");
    // viewer on an editor route
    env.request(Method::POST, "/v1/dashboards")
        .bearer(&viewer)
        .json(&dashboard_body("x", None))
        .send()
        .await
        .problem(403);
    // editor on an admin route
    env.request(Method::GET, "/v1/api-keys")
        .bearer(&editor)
        .send()
        .await
        .problem(403);
    // tenant isolation: another tenant's object is a 404, even for an admin
    let created = env
        .request(Method::POST, "/v1/dashboards")
        .bearer(&editor)
        .json(&dashboard_body("mine", None))
        .send()
        .await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_string();
    env.request(Method::GET, &format!("/v1/dashboards/{id}"))
        .bearer(&other_admin)
        .send()
        .await
        .problem(404);
    let own = env
        .request(Method::GET, &format!("/v1/dashboards/{id}"))
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(own.status, 200);
}

#[tokio::test]
async fn api_keys_authenticate_by_id_and_hmac_with_scopes_expiry_and_revocation() {
    let env = TestEnv::start().await;
    let admin = env.token("acme", "admin");
    let editor = env.token("acme", "editor");
    let globex_admin = env.token("globex", "admin");

    let dashboard = env
        .request(Method::POST, "/v1/dashboards")
        .bearer(&editor)
        .json(&dashboard_body("for machines", None))
        .send()
        .await
        .json();
    let dashboard_path = format!("/v1/dashboards/{}", dashboard["id"].as_str().unwrap());

    let (key_id, key) = env
        .create_api_key(
            &admin,
            &json!({ "name": "reader", "scopes": ["dashboards:read"] }),
        )
        .await;
    let (_, analytics_key) = env
        .create_api_key(
            &admin,
            &json!({ "name": "analytics", "scopes": ["analytics:read"] }),
        )
        .await;
    let (_, globex_key) = env
        .create_api_key(
            &globex_admin,
            &json!({ "name": "globex", "scopes": ["dashboards:read"] }),
        )
        .await;
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, expiring_key) = env
        .create_api_key(
            &admin,
            &json!({ "name": "short", "scopes": ["dashboards:read"], "expires_at": soon }),
        )
        .await;

    let get = |path: &str, key: &str| env.request(Method::GET, path).api_key(key).send();
    assert_eq!(get("/v1/dashboards", &key).await.status, 200);
    assert_eq!(get(&dashboard_path, &key).await.status, 200);
    // wrong key: right shape, right id, wrong secret
    let wrong = format!("{}{}", &key[..key.len() - 5], "AAAAA");
    get("/v1/dashboards", &wrong).await.problem(401);
    get("/v1/dashboards", "adk_not-a-key").await.problem(401);
    // key without the scope
    get("/v1/dashboards", &analytics_key).await.problem(403);
    // key of another tenant: its own tenant's view, never ours
    get(&dashboard_path, &globex_key).await.problem(404);
    assert_eq!(
        get("/v1/dashboards", &globex_key).await.json()["items"],
        json!([])
    );
    // a key on a user-only route
    env.request(Method::POST, "/v1/dashboards")
        .api_key(&key)
        .json(&dashboard_body("x", None))
        .send()
        .await
        .problem(403);
    // expired key
    tokio::time::sleep(Duration::from_millis(2100)).await;
    get("/v1/dashboards", &expiring_key).await.problem(401);

    // listing shows no secret, and last_used_at is recorded
    let listed = env
        .request(Method::GET, "/v1/api-keys")
        .bearer(&admin)
        .send()
        .await;
    let text = String::from_utf8_lossy(&listed.body).to_string();
    assert!(!text.contains(&key[4..]) && !text.contains("hash"));
    let items = listed.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    let reader = items.iter().find(|k| k["id"] == key_id.as_str()).unwrap();
    assert!(reader["last_used_at"].is_string(), "{reader}");

    // the stored item holds only the HMAC
    let raw = aws_sdk_dynamodb::Client::new(&env.sdk)
        .get_item()
        .table_name(&env.provisioned.names.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("APIKEY#{key_id}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("APIKEY".into()),
        )
        .send()
        .await
        .unwrap();
    let raw = format!("{:?}", raw.item().unwrap());
    assert!(
        !raw.contains(&key[key.len() - 43..]),
        "plaintext key stored"
    );

    // revocation: another tenant cannot revoke it; the owner can, once; it stops working at once
    env.request(Method::DELETE, &format!("/v1/api-keys/{key_id}"))
        .bearer(&globex_admin)
        .send()
        .await
        .problem(404);
    let revoked = env
        .request(Method::DELETE, &format!("/v1/api-keys/{key_id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(revoked.status, 204);
    get("/v1/dashboards", &key).await.problem(401);
    env.request(Method::DELETE, &format!("/v1/api-keys/{key_id}"))
        .bearer(&admin)
        .send()
        .await
        .problem(404);
}

#[tokio::test]
async fn api_key_creation_is_validated() {
    let env = TestEnv::start().await;
    let admin = env.token("acme", "admin");
    for body in [
        json!({ "name": "", "scopes": ["dashboards:read"] }),
        json!({ "name": "x", "scopes": [] }),
        json!({ "name": "x", "scopes": ["admin:*"] }),
        json!({ "name": "x", "scopes": ["dashboards:read"], "expires_at": "2001-01-01T00:00:00Z" }),
        json!({ "name": "x", "scopes": ["dashboards:read"], "expires_at": "tomorrow" }),
        json!({ "name": "x", "scopes": ["dashboards:read"], "tenant": "globex" }),
    ] {
        env.request(Method::POST, "/v1/api-keys")
            .bearer(&admin)
            .json(&body)
            .send()
            .await
            .problem(422);
    }
}
