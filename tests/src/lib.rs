//! Test harness: a fresh stage per test (own table, secret, bucket, key) in one moto per test
//! binary, a dev OIDC issuer per test, and the merged local router called in-process.

use app_platform::Platform;
use aws_config::SdkConfig;
use axum::Router;
use axum::body::Body;
use devkit::provision::Provisioned;
use devkit::{DevIssuer, LocalNames};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

pub use devkit;

pub mod ga_flow;
pub mod logs;
pub mod webhook;

/// The redirect URI and frontend the tests configure (in-process calls never resolve them).
pub const API_URL: &str = "http://localhost:3000";
pub const FRONTEND_URL: &str = "https://app.example.com/settings/integrations";

pub struct TestEnv {
    pub issuer: DevIssuer,
    pub google: devkit::google::GoogleStandIn,
    pub sdk: SdkConfig,
    pub platform: Platform,
    pub router: Router,
    pub provisioned: Provisioned,
    pub config: Value,
}

impl TestEnv {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// `edit` adjusts the config secret before provisioning.
    pub async fn start_with(edit: impl FnOnce(&mut Value)) -> Self {
        Self::start_at(edit, None).await
    }

    /// Like `start_with`, with the AWS endpoint overridden (e.g. a counting proxy to moto).
    pub async fn start_at(edit: impl FnOnce(&mut Value), aws_endpoint: Option<&str>) -> Self {
        let moto = devkit::moto::shared().expect("moto_server must start");
        let endpoint = aws_endpoint.unwrap_or(moto);
        let issuer = DevIssuer::start(0, devkit::issuer::DEFAULT_AUDIENCE)
            .await
            .unwrap();
        let google = devkit::google::GoogleStandIn::start(0).await.unwrap();
        let mut config =
            devkit::provision::local_config(issuer.issuer(), issuer.audience(), &issuer.jwks_url());
        config["google"] = google.config(API_URL, FRONTEND_URL);
        edit(&mut config);
        let sdk = devkit::provision::moto_sdk_config(endpoint).await;
        let stage = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let provisioned = devkit::provision(&sdk, &LocalNames::for_stage(&stage), &config)
            .await
            .unwrap();
        let platform = Platform::new(provisioned.resources(), sdk.clone())
            .await
            .unwrap();
        let router = devkit::local_router(&platform);
        Self {
            issuer,
            google,
            sdk,
            platform,
            router,
            provisioned,
            config,
        }
    }

    /// A user token of `tenant` with one role.
    pub fn token(&self, tenant: &str, role: &str) -> String {
        self.issuer
            .token(&format!("{tenant}-{role}-user"), tenant, &[role])
    }

    pub fn request(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            env: self,
            builder: Request::builder().method(method).uri(path),
            body: Body::empty(),
        }
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        TestResponse {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    /// Creates an API key as `admin`; returns (key id, plaintext key).
    pub async fn create_api_key(&self, admin: &str, body: &Value) -> (String, String) {
        let response = self
            .request(Method::POST, "/v1/api-keys")
            .bearer(admin)
            .json(body)
            .send()
            .await;
        assert_eq!(
            response.status,
            201,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let body = response.json();
        (
            body["id"].as_str().unwrap().to_string(),
            body["key"].as_str().unwrap().to_string(),
        )
    }

    /// Sets one attribute of a raw item, bypassing the API (to age caches, expire tokens…).
    pub async fn set_attribute(
        &self,
        pk: &str,
        sk: &str,
        name: &str,
        value: aws_sdk_dynamodb::types::AttributeValue,
    ) {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        aws_sdk_dynamodb::Client::new(&self.sdk)
            .update_item()
            .table_name(&self.provisioned.names.table)
            .key("pk", A::S(pk.to_string()))
            .key("sk", A::S(sk.to_string()))
            .update_expression("SET #a = :v")
            .expression_attribute_names("#a", name)
            .expression_attribute_values(":v", value)
            .send()
            .await
            .unwrap();
    }

    /// Writes a GA connection item the way the GA function stores it (enough for references).
    pub async fn seed_connection(&self, tenant: &str, id: &str) {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        aws_sdk_dynamodb::Client::new(&self.sdk)
            .put_item()
            .table_name(&self.provisioned.names.table)
            .item("pk", A::S(app_storage::keys::tenant(tenant)))
            .item("sk", A::S(app_storage::keys::ga_connection(id)))
            .item("entity", A::S("ga_connection".into()))
            .send()
            .await
            .unwrap();
    }
}

pub struct Call<'a> {
    env: &'a TestEnv,
    builder: http::request::Builder,
    body: Body,
}

impl Call<'_> {
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub fn api_key(self, key: &str) -> Self {
        self.header("x-api-key", key)
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }
    pub fn json(mut self, value: &Value) -> Self {
        self.builder = self.builder.header("content-type", "application/json");
        self.body = Body::from(value.to_string());
        self
    }
    pub fn raw(mut self, content_type: Option<&str>, body: impl Into<Body>) -> Self {
        if let Some(ct) = content_type {
            self.builder = self.builder.header("content-type", ct);
        }
        self.body = body.into();
        self
    }
    pub async fn send(self) -> TestResponse {
        let request = self.builder.body(self.body).unwrap();
        self.env.send(request).await
    }
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts an RFC 9457 body with this status and a request id, and returns it.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "status {status}"
        );
        let body = self.json();
        assert_eq!(body["status"], status);
        assert!(body["title"].is_string());
        let request_id = body["request_id"].as_str().unwrap_or_default();
        assert!(!request_id.is_empty(), "problem without request id");
        assert_eq!(self.header("x-request-id"), Some(request_id));
        body
    }
    pub fn etag(&self) -> String {
        self.header("etag").expect("ETag").to_string()
    }
}

/// Standard attributes of a valid dashboard body.
pub fn dashboard_body(name: &str, connection: Option<&str>) -> Value {
    let widgets = match connection {
        Some(connection) => serde_json::json!([{
            "id": "users",
            "kind": "kpi",
            "title": "Active users",
            "position": { "x": 0, "y": 0, "w": 4, "h": 2 },
            "query": {
                "connection_id": connection,
                "metrics": ["activeUsers"],
                "date_range": { "preset": "last_28_days" }
            }
        }]),
        None => serde_json::json!([]),
    };
    serde_json::json!({ "name": name, "description": "test", "widgets": widgets })
}

pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap()
}
