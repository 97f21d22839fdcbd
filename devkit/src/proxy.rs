//! A counting HTTP proxy between the AWS SDK and moto: how many AWS calls a request makes, by
//! operation, without touching production code (the SDK's endpoint is simply pointed here).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::DevResult;

#[derive(Clone, Default)]
pub struct CallCounts(Arc<Mutex<BTreeMap<String, usize>>>, Arc<Mutex<Vec<String>>>);

impl CallCounts {
    /// From now on, answer these operations (`DynamoDB.Query`, `KMS.GenerateDataKey`, `S3.PUT`…)
    /// with HTTP 500, as an AWS outage would. An empty list heals.
    pub fn fail(&self, operations: &[&str]) {
        if let Ok(mut failing) = self.1.lock() {
            *failing = operations.iter().map(|s| s.to_string()).collect();
        }
    }

    fn failing(&self, operation: &str) -> bool {
        self.1
            .lock()
            .map(|failing| failing.iter().any(|f| f == operation))
            .unwrap_or(false)
    }

    /// Takes the counts so far and resets them.
    pub fn take(&self) -> BTreeMap<String, usize> {
        self.0
            .lock()
            .map(|mut counts| std::mem::take(&mut *counts))
            .unwrap_or_default()
    }
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    counts: CallCounts,
}

/// `DynamoDB.GetItem`, `KMS.Decrypt`, `SecretsManager.GetSecretValue`, `S3.PUT` …
fn operation(headers: &HeaderMap, method: &Method) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (service, op) = target.split_once('.').unwrap_or(("?", target));
        let service = match service {
            s if s.starts_with("DynamoDB") => "DynamoDB",
            s if s.starts_with("TrentService") => "KMS",
            s if s.starts_with("secretsmanager") => "SecretsManager",
            s => s,
        };
        return format!("{service}.{op}");
    }
    format!("S3.{method}")
}

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = operation(&headers, &method);
    let fail = state.counts.failing(&op);
    if let Ok(mut counts) = state.counts.0.lock() {
        *counts.entry(op).or_default() += 1;
    }
    if fail {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "application/x-amz-json-1.0")],
            r#"{"__type":"InternalServerError","message":"injected by devkit proxy"}"#,
        )
            .into_response();
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = state
        .http
        .request(method, format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(upstream) => {
            let status = upstream.status();
            let headers = upstream.headers().clone();
            let body = upstream.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Starts the proxy on its own thread and runtime (so its CPU time is not the caller's).
pub fn start(upstream: &str) -> DevResult<(String, CallCounts)> {
    let counts = CallCounts::default();
    let state = ProxyState {
        upstream: upstream.trim_end_matches('/').to_string(),
        http: reqwest::Client::new(),
        counts: counts.clone(),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let app = Router::new().fallback(forward).with_state(state);
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok((url, counts))
}
