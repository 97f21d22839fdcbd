//! The dashboards function against moto through the real SDK: every route and status, the
//! optimistic-concurrency race, pagination, tenant isolation, limits and validation.

use http::Method;
use integration_tests::{TestEnv, TestResponse, dashboard_body};
use serde_json::{Value, json};

async fn create(env: &TestEnv, token: &str, body: &Value) -> TestResponse {
    env.request(Method::POST, "/v1/dashboards")
        .bearer(token)
        .json(body)
        .send()
        .await
}

fn id_of(response: &TestResponse) -> String {
    response.json()["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn crud_lifecycle_with_etags_and_preconditions() {
    let env = TestEnv::start().await;
    env.seed_connection("acme", "conn-1").await;
    let editor = env.token("acme", "editor");
    let viewer = env.token("acme", "viewer");

    let created = create(&env, &editor, &dashboard_body("Traffic", Some("conn-1"))).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = id_of(&created);
    let path = format!("/v1/dashboards/{id}");
    assert_eq!(created.header("location"), Some(path.as_str()));
    assert_eq!(created.etag(), "\"v1\"");
    let body = created.json();
    assert_eq!(body["created_by"], "acme-editor-user");
    assert_eq!(body["widgets"][0]["query"]["connection_id"], "conn-1");

    // GET, then If-None-Match → 304
    let got = env.request(Method::GET, &path).bearer(&viewer).send().await;
    assert_eq!(got.status, 200);
    assert_eq!(got.etag(), "\"v1\"");
    let not_modified = env
        .request(Method::GET, &path)
        .bearer(&viewer)
        .header("if-none-match", "\"v1\"")
        .send()
        .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());

    // PUT: 428 without If-Match, 412 with a stale one, 200 with the current one
    let replacement = dashboard_body("Traffic (v2)", None);
    env.request(Method::PUT, &path)
        .bearer(&editor)
        .json(&replacement)
        .send()
        .await
        .problem(428);
    env.request(Method::PUT, &path)
        .bearer(&editor)
        .header("if-match", "\"v7\"")
        .json(&replacement)
        .send()
        .await
        .problem(412);
    let replaced = env
        .request(Method::PUT, &path)
        .bearer(&editor)
        .header("if-match", "\"v1\"")
        .json(&replacement)
        .send()
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.etag(), "\"v2\"");
    assert_eq!(replaced.json()["name"], "Traffic (v2)");
    assert_eq!(replaced.json()["widgets"], json!([]));
    assert_eq!(replaced.json()["created_at"], body["created_at"]);

    // PATCH (JSON Merge Patch): same rules
    let patch = json!({ "description": null, "layout": { "columns": 6 } });
    env.request(Method::PATCH, &path)
        .bearer(&editor)
        .raw(Some("application/merge-patch+json"), patch.to_string())
        .send()
        .await
        .problem(428);
    env.request(Method::PATCH, &path)
        .bearer(&editor)
        .header("if-match", "\"v1\"")
        .raw(Some("application/merge-patch+json"), patch.to_string())
        .send()
        .await
        .problem(412);
    let patched = env
        .request(Method::PATCH, &path)
        .bearer(&editor)
        .header("if-match", "\"v2\"")
        .raw(Some("application/merge-patch+json"), patch.to_string())
        .send()
        .await;
    assert_eq!(
        patched.status,
        200,
        "{}",
        String::from_utf8_lossy(&patched.body)
    );
    assert_eq!(patched.json()["layout"]["columns"], 6);
    assert_eq!(patched.json()["description"], "");
    assert_eq!(patched.json()["name"], "Traffic (v2)");
    assert_eq!(patched.etag(), "\"v3\"");
    // a patch that makes the document invalid, or adds unknown fields → 422
    for bad in [
        json!({ "owner": "x" }),
        json!({ "name": "" }),
        json!({ "layout": { "columns": 99 } }),
    ] {
        env.request(Method::PATCH, &path)
            .bearer(&editor)
            .header("if-match", "\"v3\"")
            .raw(Some("application/merge-patch+json"), bad.to_string())
            .send()
            .await
            .problem(422);
    }

    // duplicate
    let copy = env
        .request(Method::POST, &format!("{path}/duplicate"))
        .bearer(&editor)
        .send()
        .await;
    assert_eq!(copy.status, 201);
    assert_ne!(id_of(&copy), id);
    assert_eq!(copy.json()["name"], "Copy of Traffic (v2)");
    let named = env
        .request(Method::POST, &format!("{path}/duplicate"))
        .bearer(&editor)
        .json(&json!({ "name": "Q1" }))
        .send()
        .await;
    assert_eq!(named.json()["name"], "Q1");

    // DELETE: 204, then 404 for everything
    let deleted = env
        .request(Method::DELETE, &path)
        .bearer(&editor)
        .send()
        .await;
    assert_eq!(deleted.status, 204);
    env.request(Method::DELETE, &path)
        .bearer(&editor)
        .send()
        .await
        .problem(404);
    env.request(Method::GET, &path)
        .bearer(&viewer)
        .send()
        .await
        .problem(404);
    env.request(Method::POST, &format!("{path}/duplicate"))
        .bearer(&editor)
        .send()
        .await
        .problem(404);
    // ids that cannot exist are 404 too
    env.request(Method::GET, "/v1/dashboards/not-a-uuid")
        .bearer(&viewer)
        .send()
        .await
        .problem(404);
}

#[tokio::test]
async fn concurrent_puts_with_the_same_etag_one_wins_none_is_lost() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    for round in 0..5 {
        let created = create(&env, &editor, &dashboard_body("race", None)).await;
        let path = format!("/v1/dashboards/{}", id_of(&created));
        let put = |name: String| {
            env.request(Method::PUT, &path)
                .bearer(&editor)
                .header("if-match", "\"v1\"")
                .json(&dashboard_body(&name, None))
                .send()
        };
        // Both requests are in flight at once (joined futures on a multi-thread runtime).
        let (a, b) = tokio::join!(put(format!("A{round}")), put(format!("B{round}")));
        let mut statuses = vec![a.status.as_u16(), b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, vec![200, 412], "round {round}");
        let winner = if a.status == 200 { &a } else { &b };
        let stored = env.request(Method::GET, &path).bearer(&editor).send().await;
        assert_eq!(stored.etag(), "\"v2\"");
        assert_eq!(stored.json()["name"], winner.json()["name"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_writers_make_exactly_one_version_each() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    let created = create(&env, &editor, &dashboard_body("hot", None)).await;
    let path = format!("/v1/dashboards/{}", id_of(&created));
    let attempts = futures::future::join_all((0..8).map(|i| {
        env.request(Method::PUT, &path)
            .bearer(&editor)
            .header("if-match", "\"v1\"")
            .json(&dashboard_body(&format!("writer {i}"), None))
            .send()
    }))
    .await;
    let ok = attempts.iter().filter(|r| r.status == 200).count();
    let conflicts = attempts.iter().filter(|r| r.status == 412).count();
    assert_eq!((ok, conflicts), (1, 7));
}

#[tokio::test]
async fn pagination_walks_every_page_newest_first_and_rejects_bad_cursors() {
    let env = TestEnv::start().await;
    let editor = env.token("acme", "editor");
    let other = env.token("globex", "viewer");
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(id_of(
            &create(&env, &editor, &dashboard_body(&format!("d{i}"), None)).await,
        ));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut first_cursor = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/dashboards?limit=10&cursor={c}"),
            None => "/v1/dashboards?limit=10".to_string(),
        };
        let page = env.request(Method::GET, &path).bearer(&editor).send().await;
        assert_eq!(page.status, 200);
        let body = page.json();
        pages += 1;
        for item in body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
            assert!(item.get("widgets").is_none(), "list rows are summaries");
        }
        cursor = body["next_cursor"].as_str().map(str::to_string);
        if first_cursor.is_none() {
            first_cursor = cursor.clone();
        }
        if cursor.is_none() {
            break;
        }
    }
    assert!(pages >= 3, "{pages} pages");
    created.reverse();
    assert_eq!(seen, created, "every dashboard once, newest first");

    let cursor = first_cursor.unwrap();
    let (payload, tag) = cursor.split_once('.').unwrap();
    let mut flipped = payload.as_bytes().to_vec();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{}.{tag}", String::from_utf8(flipped).unwrap());
    for bad in [tampered.as_str(), "garbage", "a.b"] {
        env.request(Method::GET, &format!("/v1/dashboards?cursor={bad}"))
            .bearer(&editor)
            .send()
            .await
            .problem(400);
    }
    // Another tenant replaying our cursor: 400, not our data.
    env.request(Method::GET, &format!("/v1/dashboards?cursor={cursor}"))
        .bearer(&other)
        .send()
        .await
        .problem(400);
    // limit bounds
    for limit in ["0", "101", "-1"] {
        env.request(Method::GET, &format!("/v1/dashboards?limit={limit}"))
            .bearer(&editor)
            .send()
            .await
            .problem(400);
    }
}

#[tokio::test]
async fn another_tenant_gets_404_on_every_verb_and_changes_nothing() {
    let env = TestEnv::start().await;
    let a_editor = env.token("acme", "editor");
    let b_admin = env.token("globex", "admin");
    let created = create(&env, &a_editor, &dashboard_body("secret plans", None)).await;
    let path = format!("/v1/dashboards/{}", id_of(&created));
    let body = dashboard_body("pwned", None);
    let attempts = [
        env.request(Method::GET, &path).bearer(&b_admin),
        env.request(Method::PUT, &path)
            .bearer(&b_admin)
            .header("if-match", "\"v1\"")
            .json(&body),
        env.request(Method::PATCH, &path)
            .bearer(&b_admin)
            .header("if-match", "\"v1\"")
            .json(&json!({ "name": "pwned" })),
        env.request(Method::DELETE, &path).bearer(&b_admin),
        env.request(Method::POST, &format!("{path}/duplicate"))
            .bearer(&b_admin),
    ];
    for attempt in attempts {
        attempt.send().await.problem(404);
    }
    let list = env
        .request(Method::GET, "/v1/dashboards")
        .bearer(&b_admin)
        .send()
        .await;
    assert_eq!(list.json()["items"], json!([]));
    let still = env
        .request(Method::GET, &path)
        .bearer(&a_editor)
        .send()
        .await;
    assert_eq!(still.json()["name"], "secret plans");
    assert_eq!(still.etag(), "\"v1\"");
}

#[tokio::test]
async fn widgets_are_validated_and_may_only_reference_own_connections() {
    let env = TestEnv::start().await;
    env.seed_connection("acme", "mine").await;
    env.seed_connection("globex", "theirs").await;
    let editor = env.token("acme", "editor");

    let foreign = create(&env, &editor, &dashboard_body("x", Some("theirs"))).await;
    let problem = foreign.problem(422);
    assert_eq!(
        problem["errors"][0]["field"],
        "widgets[0].query.connection_id"
    );
    create(&env, &editor, &dashboard_body("x", Some("nonexistent")))
        .await
        .problem(422);
    assert_eq!(
        create(&env, &editor, &dashboard_body("x", Some("mine")))
            .await
            .status,
        201
    );

    let widget = |i: usize| {
        let mut w = dashboard_body("x", Some("mine"))["widgets"][0].clone();
        w["id"] = json!(format!("w{i}"));
        w
    };
    let too_many = json!({ "name": "x", "widgets": (0..51).map(widget).collect::<Vec<_>>() });
    create(&env, &editor, &too_many).await.problem(422);
    let fifty = json!({ "name": "x", "widgets": (0..50).map(widget).collect::<Vec<_>>() });
    assert_eq!(create(&env, &editor, &fifty).await.status, 201);

    let mut bad_kind = dashboard_body("x", Some("mine"));
    bad_kind["widgets"][0]["kind"] = json!("pie3d");
    create(&env, &editor, &bad_kind).await.problem(422);
    let mut both_ranges = dashboard_body("x", Some("mine"));
    both_ranges["widgets"][0]["query"]["date_range"] =
        json!({ "preset": "last_7_days", "start_date": "2026-01-01", "end_date": "2026-01-31" });
    create(&env, &editor, &both_ranges).await.problem(422);
    let mut backwards = dashboard_body("x", Some("mine"));
    backwards["widgets"][0]["query"]["date_range"] =
        json!({ "start_date": "2026-02-01", "end_date": "2026-01-31" });
    create(&env, &editor, &backwards).await.problem(422);
}

#[tokio::test]
async fn oversized_dashboards_are_refused_before_dynamodb_would() {
    let env = TestEnv::start().await;
    env.seed_connection("acme", "mine").await;
    let editor = env.token("acme", "editor");
    // ~50 widgets × 2 filters × 10 values × 450 chars ≈ 450 KB: under the 1 MiB body limit,
    // over the 400 KB item limit.
    let widgets: Vec<Value> = (0..50)
        .map(|i| {
            let mut w = dashboard_body("x", Some("mine"))["widgets"][0].clone();
            w["id"] = json!(format!("w{i}"));
            w["query"]["filters"] = json!([
                { "dimension": "pagePath", "op": "in_list", "values": vec!["p".repeat(450); 10] },
                { "dimension": "country", "op": "in_list", "values": vec!["c".repeat(450); 10] },
            ]);
            w
        })
        .collect();
    create(
        &env,
        &editor,
        &json!({ "name": "huge", "widgets": widgets }),
    )
    .await
    .problem(413);
}

#[tokio::test]
async fn the_per_tenant_soft_limit_holds_and_frees_up_on_delete() {
    let env =
        TestEnv::start_with(|c| c["limits"] = json!({ "max_dashboards_per_tenant": 3 })).await;
    let editor = env.token("acme", "editor");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(id_of(
            &create(&env, &editor, &dashboard_body(&format!("{i}"), None)).await,
        ));
    }
    let refused = create(&env, &editor, &dashboard_body("one too many", None)).await;
    assert!(
        refused.problem(409)["detail"]
            .as_str()
            .unwrap()
            .contains("maximum of 3")
    );
    // another tenant has its own budget
    let other = env.token("globex", "editor");
    assert_eq!(
        create(&env, &other, &dashboard_body("fine", None))
            .await
            .status,
        201
    );
    // duplicate counts too
    env.request(
        Method::POST,
        &format!("/v1/dashboards/{}/duplicate", ids[0]),
    )
    .bearer(&editor)
    .send()
    .await
    .problem(409);
    let deleted = env
        .request(Method::DELETE, &format!("/v1/dashboards/{}", ids[0]))
        .bearer(&editor)
        .send()
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        create(&env, &editor, &dashboard_body("room again", None))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn settings_layer_defaults_tenant_and_user_with_role_rules() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    let admin = env.token("acme", "admin");
    let other = env.token("globex", "viewer");

    let defaults = env
        .request(Method::GET, "/v1/settings")
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(defaults.status, 200);
    assert_eq!(defaults.json()["effective"]["timezone"], "UTC");
    assert_eq!(
        defaults.json()["effective"]["default_date_range"],
        "last_28_days"
    );

    // a viewer may not change tenant defaults, but may set their own preferences
    env.request(Method::PUT, "/v1/settings")
        .bearer(&viewer)
        .json(&json!({ "tenant": { "currency": "EUR" } }))
        .send()
        .await
        .problem(403);
    let mine = env
        .request(Method::PUT, "/v1/settings")
        .bearer(&viewer)
        .json(&json!({ "user": { "timezone": "Europe/Berlin", "locale": "de-DE" } }))
        .send()
        .await;
    assert_eq!(mine.status, 200);
    let tenant = env
        .request(Method::PUT, "/v1/settings")
        .bearer(&admin)
        .json(&json!({ "tenant": { "currency": "EUR", "timezone": "America/New_York", "week_start": "sunday" } }))
        .send()
        .await;
    assert_eq!(tenant.status, 200);

    let effective = env
        .request(Method::GET, "/v1/settings")
        .bearer(&viewer)
        .send()
        .await
        .json();
    assert_eq!(effective["effective"]["timezone"], "Europe/Berlin"); // user beats tenant
    assert_eq!(effective["effective"]["currency"], "EUR"); // tenant beats product default
    assert_eq!(effective["effective"]["week_start"], "sunday");
    assert_eq!(effective["user"]["locale"], "de-DE");
    // the admin's own view has the tenant values but not the viewer's preferences
    let admins = env
        .request(Method::GET, "/v1/settings")
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(admins["effective"]["timezone"], "America/New_York");
    // another tenant sees none of it
    let theirs = env
        .request(Method::GET, "/v1/settings")
        .bearer(&other)
        .send()
        .await
        .json();
    assert_eq!(theirs["effective"]["currency"], "USD");

    for bad in [
        json!({ "user": { "timezone": "Mars/Olympus" } }),
        json!({ "user": { "currency": "euro" } }),
        json!({ "user": { "week_start": "friday" } }),
        json!({ "user": { "colour": "blue" } }),
        json!({}),
    ] {
        env.request(Method::PUT, "/v1/settings")
            .bearer(&viewer)
            .json(&bad)
            .send()
            .await
            .problem(422);
    }
}
