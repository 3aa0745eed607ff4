//! Logs (tracing: JSON lines for services, pretty for people), request ids and access lines,
//! and the gateway's Prometheus series.

pub mod access;
pub mod metrics;
pub mod trace;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

pub use access::AccessLog;
pub use metrics::GatewayMetrics;

use crate::settings::LogFormat;

/// Installs the global subscriber once; later calls (tests) are ignored. Lines are written by
/// a background thread, so a request never waits on stdout. Keep the guard until exit: it
/// flushes what is left.
pub fn init(level: &str, format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    guard
}

/// An error and its causes, `: `-joined, for logs and readiness reasons.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
