//! A minimal Lambda Runtime API (2018-06-01) for measuring cold starts of the real function
//! binaries: it hands out one event and records when the function asked for it (end of init) and
//! when it answered (end of the first invocation).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::DevResult;

#[derive(Default, Debug, Clone)]
pub struct Timings {
    /// First `GET /next`: the function finished its init.
    pub init_done: Option<Instant>,
    /// `POST /response`: the first invocation finished.
    pub responded: Option<Instant>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

struct EmulatorState {
    event: String,
    served: Mutex<bool>,
    timings: Mutex<Timings>,
}

#[derive(Clone)]
pub struct RuntimeApi {
    pub address: String,
    state: Arc<EmulatorState>,
}

impl RuntimeApi {
    pub async fn start(event: String) -> DevResult<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let state = Arc::new(EmulatorState {
            event,
            served: Mutex::new(false),
            timings: Mutex::new(Timings::default()),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { address, state })
    }

    pub fn timings(&self) -> Timings {
        self.state
            .timings
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }
}

async fn next(State(state): State<Arc<EmulatorState>>) -> Response {
    let first = {
        let mut served = match state.served.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let first = !*served;
        *served = true;
        first
    };
    if !first {
        // Only one invocation per process: park the function until it is stopped.
        std::future::pending::<()>().await;
    }
    if let Ok(mut t) = state.timings.lock() {
        t.init_done.get_or_insert_with(Instant::now);
    }
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() + 30_000)
        .unwrap_or_default();
    for (name, value) in [
        (
            "lambda-runtime-aws-request-id",
            "coldstart-0001".to_string(),
        ),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:coldstart".to_string(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000".to_string(),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    (StatusCode::OK, headers, state.event.clone()).into_response()
}

async fn response(
    State(state): State<Arc<EmulatorState>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    if let Ok(mut t) = state.timings.lock() {
        t.responded.get_or_insert_with(Instant::now);
        t.response_body = Some(String::from_utf8_lossy(&body).to_string());
    }
    StatusCode::ACCEPTED
}

async fn error(State(state): State<Arc<EmulatorState>>, body: Bytes) -> StatusCode {
    if let Ok(mut t) = state.timings.lock() {
        t.error = Some(String::from_utf8_lossy(&body).to_string());
        t.responded.get_or_insert_with(Instant::now);
    }
    StatusCode::ACCEPTED
}

async fn init_error(State(state): State<Arc<EmulatorState>>, body: Bytes) -> StatusCode {
    if let Ok(mut t) = state.timings.lock() {
        t.error = Some(format!("init: {}", String::from_utf8_lossy(&body)));
    }
    StatusCode::ACCEPTED
}
