//! Logging set-up shared by every function, with a redaction layer in front of every writer.
//!
//! Invariant: no bearer token, JWT, API key, Google token, client secret or cookie value reaches
//! a log line. Code never logs those values on purpose; [`RedactingWriter`] is the second fence
//! for the day somebody logs a header map or an error that echoes one.

use std::io::{self, Write};
use std::sync::{LazyLock, Once};

use regex::Regex;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, fmt};

/// Patterns that look like credentials, replaced before a line is written.
static SECRET_PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    let rules: [(&str, &'static str); 6] = [
        // `Authorization: Bearer abc`, `bearer=abc`, in any case.
        (
            r"(?i)\b(bearer|basic)(\s+|=)[A-Za-z0-9._~+/=-]+",
            "$1$2[REDACTED]",
        ),
        // Any JWS compact serialisation (header.payload.signature), even without "Bearer".
        (
            r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
            "[REDACTED_JWT]",
        ),
        // This product's API keys (see app-auth's key format).
        (r"adk_[A-Za-z0-9_-]{8,}", "[REDACTED_API_KEY]"),
        // Google OAuth access and refresh tokens.
        (r"ya29\.[A-Za-z0-9._-]+", "[REDACTED_GOOGLE_TOKEN]"),
        (r"1//[A-Za-z0-9._-]{8,}", "[REDACTED_GOOGLE_TOKEN]"),
        // key=value or "key":"value" pairs whose key names a secret.
        (
            r#"(?i)("?(?:authorization|cookie|set-cookie|x-api-key|api_key|apikey|access_token|refresh_token|id_token|client_secret|password|secret|token|code_verifier|pepper)"?\s*[:=]\s*"?)[^",\s}]+"#,
            "$1[REDACTED]",
        ),
    ];
    rules
        .into_iter()
        .filter_map(|(pattern, replacement)| {
            Regex::new(pattern).ok().map(|regex| (regex, replacement))
        })
        .collect()
});

/// Returns `line` with everything that looks like a credential replaced.
pub fn redact(line: &str) -> String {
    let mut out = std::borrow::Cow::Borrowed(line);
    for (regex, replacement) in SECRET_PATTERNS.iter() {
        if regex.is_match(&out) {
            out = std::borrow::Cow::Owned(regex.replace_all(&out, *replacement).into_owned());
        }
    }
    out.into_owned()
}

/// A `MakeWriter` that redacts each formatted event before handing it to the inner writer.
#[derive(Clone, Debug)]
pub struct RedactingMakeWriter<M> {
    inner: M,
}

impl<M> RedactingMakeWriter<M> {
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

/// Buffers one event and writes it redacted when dropped (tracing formats an event into one
/// writer and drops it after the event).
pub struct RedactingWriter<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let redacted = redact(&text);
        self.buffer.clear();
        self.inner.write_all(redacted.as_bytes())?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a, M> MakeWriter<'a> for RedactingMakeWriter<M>
where
    M: MakeWriter<'a>,
{
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer(),
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Where the process runs, which decides the log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (CloudWatch Logs Insights can query the fields).
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

impl LogFormat {
    /// JSON inside Lambda, human-readable elsewhere; `LOG_FORMAT=json|pretty` overrides.
    pub fn detect() -> Self {
        match std::env::var("LOG_FORMAT").ok().as_deref() {
            Some("json") => Self::Json,
            Some("pretty") => Self::Pretty,
            _ if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() => Self::Json,
            _ => Self::Pretty,
        }
    }
}

/// The production JSON subscriber writing to `make_writer` through the redaction layer.
/// `init` installs it globally in Lambda; tests install it per thread to capture output.
pub fn json_subscriber<W>(make_writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .without_time() // CloudWatch stamps each line
        .with_env_filter(EnvFilter::new("info"))
        .with_writer(RedactingMakeWriter::new(make_writer))
        .finish()
}

static INIT: Once = Once::new();

/// Installs the global subscriber once per process (later calls do nothing). Level from
/// `RUST_LOG`/`AWS_LAMBDA_LOG_LEVEL`, default `info`.
pub fn init() {
    INIT.call_once(|| {
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| {
                std::env::var("AWS_LAMBDA_LOG_LEVEL")
                    .map_err(|_| ())
                    .and_then(|level| EnvFilter::try_new(level.to_lowercase()).map_err(|_| ()))
            })
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let writer = RedactingMakeWriter::new(io::stdout);
        let result = match LogFormat::detect() {
            LogFormat::Json => fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .without_time() // CloudWatch stamps each line
                .with_env_filter(filter)
                .with_writer(writer)
                .try_init(),
            LogFormat::Pretty => fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_target(false)
                .try_init(),
        };
        // A subscriber installed by a test harness first is fine.
        let _ = result;
    });
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_every_kind_of_credential() {
        let cases = [
            ("authorization: Bearer abc.def-ghi", "abc.def-ghi"),
            (
                "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl seen",
                "eyJhbGciOiJSUzI1NiJ9",
            ),
            ("key adk_0123456789abcdef_SECRETSECRET", "SECRETSECRET"),
            ("google ya29.a0AfH6SMBx-secret", "a0AfH6SMBx"),
            ("refresh 1//0gSECRETREFRESH", "0gSECRETREFRESH"),
            (r#"{"client_secret":"s3cr3t-value"}"#, "s3cr3t-value"),
            ("cookie=session=abcdef", "abcdef"),
            (r#""x-api-key": "k-123456789""#, "k-123456789"),
        ];
        for (line, secret) in cases {
            let out = redact(line);
            assert!(
                !out.contains(secret),
                "{line:?} still holds its secret: {out:?}"
            );
            assert!(out.contains("REDACTED"), "{out:?}");
        }
    }

    #[test]
    fn leaves_ordinary_lines_alone() {
        let line = r#"{"route":"/v1/dashboards","status":200,"latency_ms":3}"#;
        assert_eq!(redact(line), line);
    }
}

/// Application metrics in CloudWatch Embedded Metric Format (namespace `AnalyticsDashboard`,
/// dimension `Stage` on every metric), through the `metrics` facade. Without [`metrics::init`]
/// (local runs, tests) every call is a no-op.
pub mod metrics {
    use std::sync::OnceLock;

    pub const NAMESPACE: &str = "AnalyticsDashboard";

    static COLLECTOR: OnceLock<&'static metrics_cloudwatch_embedded::Collector> = OnceLock::new();

    /// Installs the EMF recorder once per process (Lambda cold start).
    pub fn init(stage: &str) {
        if COLLECTOR.get().is_some() {
            return;
        }
        match metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .with_dimension("Stage", stage.to_string())
            .init()
        {
            Ok(collector) => {
                ::metrics::describe_histogram!(
                    "Latency",
                    ::metrics::Unit::Milliseconds,
                    "request latency"
                );
                let _ = COLLECTOR.set(collector);
            }
            Err(error) => tracing::warn!(%error, "metrics recorder not installed"),
        }
    }

    /// Writes the metrics recorded since the last flush as one EMF document.
    pub fn flush_to(writer: impl std::io::Write) {
        if let Some(collector) = COLLECTOR.get()
            && let Err(error) = collector.flush(writer)
        {
            tracing::warn!(%error, "metrics flush failed");
        }
    }

    /// End of a request: latency and status class per route, then flush (one document per
    /// invocation, the shape Lambda + CloudWatch expect).
    pub fn request(route: &str, status: u16, latency_ms: f64) {
        if COLLECTOR.get().is_none() {
            return;
        }
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        ::metrics::histogram!("Latency", "Route" => route.to_string()).record(latency_ms);
        ::metrics::counter!("Requests", "Route" => route.to_string(), "StatusClass" => class)
            .increment(1);
        flush_to(std::io::stdout());
    }

    /// One refused request: the total (alarmed on) and the count by reason.
    pub fn auth_rejected(reason: &str) {
        ::metrics::counter!("AuthRejected").increment(1);
        ::metrics::counter!("AuthRejectedByReason", "Reason" => reason.to_string()).increment(1);
    }

    /// Any named counter of the product (GA refresh failures, cache hits…).
    pub fn count(name: &'static str) {
        ::metrics::counter!(name).increment(1);
    }

    /// A gauge such as the lowest GA quota remaining seen.
    pub fn gauge(name: &'static str, value: f64) {
        ::metrics::gauge!(name).set(value);
    }
}
