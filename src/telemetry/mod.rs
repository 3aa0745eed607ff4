//! Logs (tracing: JSON lines for services, pretty for people), request ids and access lines,
//! and the gateway's Prometheus series.

pub mod access;
pub mod metrics;
pub mod sharded;
pub mod trace;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

pub use access::AccessLog;
pub use metrics::{GatewayMetrics, HttpSeries};

use crate::settings::LogFormat;

/// Where log lines go. `serve` writes to stdout (what log collectors read); `demo` to stderr,
/// so its banner on stdout stays readable and `demo > file` keeps only the banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    Stdout,
    Stderr,
}

/// The installed filter, kept so a configuration reload can change the level.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber once; later calls (tests) are ignored. Lines are written by
/// a background thread, so a request never waits on the output. Pretty lines are coloured only
/// on a terminal. Keep the guard until exit: it flushes what is left.
pub fn init(level: &str, format: LogFormat, output: LogOutput) -> WorkerGuard {
    let (filter, handle) = reload::Layer::new(filter(level));
    let (writer, guard, terminal) = match output {
        LogOutput::Stdout => {
            let (w, g) = tracing_appender::non_blocking(std::io::stdout());
            (w, g, std::io::stdout().is_terminal())
        }
        LogOutput::Stderr => {
            let (w, g) = tracing_appender::non_blocking(std::io::stderr());
            (w, g, std::io::stderr().is_terminal())
        }
    };
    let lines = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(terminal)
            .with_writer(writer)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
    guard
}

/// Why the log level was left as it is.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("RUST_LOG is set and decides the log level")]
    FromEnvironment,
    #[error("no subscriber of this process can be reloaded")]
    NotInstalled,
    #[error("`{level}` is not a log level or filter: {source}")]
    Invalid {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("the log filter cannot be swapped: {0}")]
    Reload(#[from] reload::Error),
}

/// Replaces the log filter with `level` (as `server.log_level` spells it).
pub fn set_level(level: &str) -> Result<(), LevelError> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Err(LevelError::FromEnvironment);
    }
    let handle = FILTER.get().ok_or(LevelError::NotInstalled)?;
    let filter = EnvFilter::try_new(level).map_err(|source| LevelError::Invalid {
        level: level.to_owned(),
        source,
    })?;
    handle.reload(filter)?;
    Ok(())
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
