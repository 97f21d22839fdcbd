//! The route tables, the OpenAPI documents and the routers cannot drift apart: every route is
//! documented, classified, and refuses callers without the access its table declares.

use std::collections::BTreeSet;

use app_auth::{Access, RouteRule};
use http::Method;
use integration_tests::TestEnv;

type RouteSet = BTreeSet<(String, String)>;

fn table_routes(table: &[RouteRule]) -> RouteSet {
    table
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect()
}

fn openapi_routes(doc: &utoipa::openapi::OpenApi) -> RouteSet {
    let json = serde_json::to_value(doc).unwrap();
    let mut routes = RouteSet::new();
    for (path, item) in json["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

pub fn functions() -> [(&'static str, &'static [RouteRule], utoipa::openapi::OpenApi); 3] {
    [
        ("dashboards", dashboards::ROUTES, dashboards::openapi()),
        ("ga", ga::ROUTES, ga::openapi()),
        ("analytics", analytics::ROUTES, analytics::openapi()),
    ]
}

#[test]
fn each_route_table_equals_its_openapi_document() {
    for (name, table, doc) in functions() {
        assert_eq!(table_routes(table), openapi_routes(&doc), "{name}");
        assert_eq!(
            table.len(),
            table_routes(table).len(),
            "{name}: duplicate rows in the route table"
        );
    }
}

#[test]
fn only_health_and_the_oauth_callback_are_public() {
    for (name, table, _) in functions() {
        for rule in table.iter().filter(|r| r.access == Access::Public) {
            assert!(
                rule.path.ends_with("/health") || rule.path == "/v1/ga/oauth/callback",
                "{name}: {} {} is public",
                rule.method,
                rule.path
            );
        }
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "0193c0de-0000-7000-8000-000000000000")
}

#[tokio::test]
async fn every_route_refuses_callers_without_credentials() {
    let env = TestEnv::start().await;
    let served: serde_json::Value = env
        .request(Method::GET, "/v1/openapi.json")
        .send()
        .await
        .json();
    let served_paths = served["paths"].as_object().unwrap();
    for (name, table, _) in functions() {
        for rule in table {
            assert!(
                served_paths.contains_key(rule.path),
                "{name}: {} missing from /v1/openapi.json",
                rule.path
            );
            let response = env
                .request(rule.method.clone(), &concrete(rule.path))
                .send()
                .await;
            match rule.access {
                // The OAuth callback without a state redirects to the frontend with an error.
                Access::Public if rule.path == "/v1/ga/oauth/callback" => {
                    assert_eq!(response.status, 303);
                    assert!(
                        response
                            .header("location")
                            .unwrap()
                            .contains("reason=invalid_state")
                    );
                }
                Access::Public => assert_eq!(response.status, 200, "{} {}", rule.method, rule.path),
                _ => {
                    response.problem(401);
                }
            }
        }
    }
}

#[tokio::test]
async fn a_viewer_reaches_no_route_above_viewer() {
    let env = TestEnv::start().await;
    let viewer = env.token("acme", "viewer");
    for (_, table, _) in functions() {
        for rule in table {
            let needs_more = matches!(
                rule.access,
                Access::Role(role) | Access::RoleOrScope(role, _) if role > app_auth::Role::Viewer
            );
            if needs_more {
                env.request(rule.method.clone(), &concrete(rule.path))
                    .bearer(&viewer)
                    .send()
                    .await
                    .problem(403);
            }
        }
    }
}

/// docs/security.md reproduces the route tables; this keeps it true.
#[test]
fn docs_security_reproduces_every_route_rule() {
    let doc = std::fs::read_to_string(devkit::repo_root().join("docs/security.md")).unwrap();
    for (name, table, _) in functions() {
        for rule in table {
            let row = format!(
                "| {name} | {} | `{}` | {} |",
                rule.method, rule.path, rule.access
            );
            assert!(doc.contains(&row), "docs/security.md lacks the row:\n{row}");
        }
    }
}
