//! Logging: `tracing` to stdout (the Functions host logs stdout at Information), filtered by
//! `RUST_LOG` (default `info`), as text or JSON lines (`FLUXTRAIL_LOG_FORMAT=json`).
//!
//! Invariant: nothing logs secrets, signatures, headers or query strings; request logs carry
//! method, path and status only.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
