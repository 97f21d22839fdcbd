//! The GA connect flow as a browser runs it: authorize → Google (stand-in, over HTTP) → callback.

use http::Method;

use crate::{FRONTEND_URL, TestEnv};

/// Follows the flow like a browser: authorize → Google (stand-in) → our callback.
/// Returns the callback's Location header.
pub async fn run_flow(env: &TestEnv, editor: &str) -> String {
    let authorize = env
        .request(Method::POST, "/v1/ga/connections/authorize")
        .bearer(editor)
        .send()
        .await;
    assert_eq!(
        authorize.status,
        200,
        "{}",
        String::from_utf8_lossy(&authorize.body)
    );
    let url = authorize.json()["authorization_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("access_type=offline") && url.contains("prompt=consent"));
    assert!(url.contains("include_granted_scopes=true"));
    assert!(url.contains("analytics.readonly"));
    let callback = google_redirect(&url).await;
    callback_location(env, &callback).await
}

/// The stand-in's redirect (path and query of our callback).
pub async fn google_redirect(authorization_url: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = http.get(authorization_url).send().await.unwrap();
    assert_eq!(
        response.status(),
        303,
        "stand-in answered {}",
        response.status()
    );
    let location = response.headers()["location"].to_str().unwrap().to_string();
    location
        .strip_prefix(crate::API_URL)
        .unwrap_or(&location)
        .to_string()
}

pub async fn callback_location(env: &TestEnv, path_and_query: &str) -> String {
    let response = env.request(Method::GET, path_and_query).send().await;
    assert_eq!(
        response.status,
        303,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.header("location").unwrap().to_string()
}

pub fn connection_id(location: &str) -> String {
    assert!(location.starts_with(FRONTEND_URL), "{location}");
    assert!(location.contains("ga=connected"), "{location}");
    location.split("connection_id=").nth(1).unwrap().to_string()
}

pub async fn connect(env: &TestEnv, editor: &str) -> String {
    connection_id(&run_flow(env, editor).await)
}

/// Selects the connection's GA4 property (asserting success).
pub async fn select_property(env: &TestEnv, editor: &str, id: &str, property: &str) {
    let selected = env
        .request(Method::PATCH, &format!("/v1/ga/connections/{id}"))
        .bearer(editor)
        .json(&serde_json::json!({ "selected_property": property }))
        .send()
        .await;
    assert_eq!(
        selected.status,
        200,
        "{}",
        String::from_utf8_lossy(&selected.body)
    );
}

/// A connection with `property` selected (ready for reports and analytics).
pub async fn connect_with_property(env: &TestEnv, editor: &str, property: &str) -> String {
    let id = connect(env, editor).await;
    select_property(env, editor, &id, property).await;
    id
}
