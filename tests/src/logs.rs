//! Capturing what the production JSON subscriber (with its redaction layer) writes.

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// An in-memory log sink.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Everything logged since the last call.
    pub fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }

    /// The reason codes of the auth rejections logged since the last call.
    pub fn reasons(&self) -> Vec<String> {
        self.take()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "auth rejected")
            .map(|l| l["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// Installs `app_telemetry::json_subscriber` for this thread (use a current-thread runtime).
pub fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let sink = capture.clone();
    let guard =
        tracing::subscriber::set_default(app_telemetry::json_subscriber(move || sink.clone()));
    (capture, guard)
}
