//! Logging setup and alerts. Logs are JSON lines for CloudWatch; an alert is an error line with an
//! `alert` field, which the template's metric filter counts and alarms on.

use std::sync::OnceLock;

/// JSON logs on stderr, filtered by `RUST_LOG` (default `info`). Safe to call twice.
pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .with_target(false)
            .with_writer(std::io::stderr)
            .try_init();
    });
}

/// Raises an alert: something a human must look at.
pub fn alert(kind: &'static str, message: &str) {
    tracing::error!(alert = kind, "{message}");
}
