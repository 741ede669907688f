//! Logging: JSON lines in production, readable text in development, filtered by `RUST_LOG`
//! (default `info`). Request spans carry method, route template, request id and tenant id
//! (see keel-http's `request_context`); secrets and PII are kept out by construction
//! (`#[instrument(skip_all)]`, redacted `Debug` on secrets, route templates instead of paths).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber once. Later calls are ignored (tests spawn many apps).
/// Commands other than `serve` log to stderr (`to_stderr`), keeping stdout for their output.
pub fn init(format: LogFormat, to_stderr: bool) {
    let default = if to_stderr { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_writer(writer))
            .try_init(),
    };
    // A subscriber already installed (a second app in one test process) is not an error.
    drop(result);
}
