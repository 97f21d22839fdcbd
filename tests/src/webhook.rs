//! A local webhook receiver for the alarm notifier's tests.

use std::sync::{Arc, Mutex};

use axum::Router;
use serde_json::Value;

/// A local webhook that records what it receives, and can be told to fail.
#[derive(Clone, Default)]
pub struct Webhook {
    pub received: Arc<Mutex<Vec<Value>>>,
    pub attempts: Arc<Mutex<usize>>,
    pub failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Webhook {
    pub async fn start(&self) -> String {
        let state = self.clone();
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let state = state.clone();
                async move {
                    *state.attempts.lock().unwrap() += 1;
                    if state.failing.load(std::sync::atomic::Ordering::SeqCst) {
                        return http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    state.received.lock().unwrap().push(body);
                    http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}
