//! Logging setup, alerts and alarm metrics. Logs are JSON lines for CloudWatch; an alert is an
//! error line with an `alert` field, which the template's metric filter counts and alarms on. An
//! alarm is an alert plus one CloudWatch Embedded Metric Format (EMF) line on stdout, which
//! Lambda's log agent turns into a metric with no metric filter needed.

use std::io::{self, Write};
use std::sync::OnceLock;

use metrique::emf::Emf;
use metrique::unit::Count;
use metrique::unit_of_work::metrics;
use metrique::writer::IoStreamError;
use metrique::writer::format::Format;
use metrique::{CloseValue, RootEntry};

/// CloudWatch namespace of the alarm metric.
const ALARM_NAMESPACE: &str = "Payments";
/// The dimension naming the alarm's kind. It must match the PascalCase name of
/// [`AlarmMetric::kind`].
const ALARM_KIND_DIMENSION: &str = "Kind";

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

/// The log half of [`alarm`]: an error line with an `alert` field.
fn alert(kind: &'static str, message: &str) {
    tracing::error!(alert = kind, "{message}");
}

/// Raises an alarm: an alert (see [`alert`]) plus one EMF line on stdout that CloudWatch turns
/// into a data point of the metric `Alarms` (unit Count, value 1) in the namespace `Payments`,
/// published under two dimension sets: `Kind = kind`, and no dimensions.
///
/// One metric with a `Kind` dimension, rather than one metric per kind, so that a new kind adds no
/// metric name: a CloudWatch alarm on `Alarms` with `Kind` watches one kind, and one on the
/// dimensionless `Alarms` watches every kind, including kinds added later.
///
/// The line is written and flushed under the stdout lock before this returns, so a Lambda that
/// returns right after still ships it: no background queue holds it when the sandbox freezes. Its
/// `_aws.Timestamp` is the system clock at the call. A failed write (stdout closed, a broken pipe)
/// is logged as a warning on stderr and otherwise ignored: an alarm never panics and never fails
/// its caller, whose alert line is already written.
pub fn alarm(kind: &'static str, message: &str) {
    alert(kind, message);
    let written = {
        let mut stdout = io::stdout().lock();
        emit_alarm_metric(kind, &mut stdout)
    };
    if let Err(error) = written {
        tracing::warn!(alarm = kind, %error, "alarm metric not written");
    }
}

/// One alarm as a metrique entry: `kind` becomes the `Kind` string property (the dimension's
/// value) and `alarms` the `Alarms` metric.
#[metrics(rename_all = "PascalCase")]
struct AlarmMetric {
    kind: &'static str,
    #[metrics(unit = Count)]
    alarms: u64,
}

/// Writes one alarm's EMF line, newline included, to `out` and flushes it. Generic over the
/// writer so that tests can capture the line.
fn emit_alarm_metric(kind: &'static str, out: &mut impl Write) -> Result<(), IoStreamError> {
    debug_assert!(
        !kind.is_empty(),
        "CloudWatch rejects an empty dimension value"
    );
    // The format is built per alarm: that costs a few small allocations, and alarms are rare. In
    // return there is no global sink that every Lambda's `main` must attach (metrique's
    // `ServiceMetrics::sink()` panics when none is), and no lock shared between callers.
    let mut emf = Emf::all_validations(
        ALARM_NAMESPACE.to_owned(),
        vec![vec![ALARM_KIND_DIMENSION.to_owned()], Vec::new()],
    );
    // Without a `#[metrics(timestamp)]` field, EMF stamps the line with `SystemTime::now()`.
    let entry = RootEntry::new(AlarmMetric { kind, alarms: 1 }.close());
    emf.format(&entry, out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::{SystemTime, UNIX_EPOCH};

    use metrique::writer::IoStreamError;
    use serde_json::{Value, json};

    use super::emit_alarm_metric;

    fn now_ms() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis()
    }

    /// Emits one alarm into memory; checks it is one line stamped with the clock at the call,
    /// and that the rest of the line is `expected`.
    fn check(kind: &'static str, expected: &Value) {
        let before_ms = now_ms();
        let mut out = Vec::new();
        emit_alarm_metric(kind, &mut out).expect("writing to memory succeeds");
        let after_ms = now_ms();

        let text = String::from_utf8(out).expect("EMF is UTF-8");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        assert!(text.ends_with('\n'), "newline-terminated: {text}");
        let mut line: Value = serde_json::from_str(&text).expect("EMF line is JSON");

        let timestamp = line["_aws"]
            .as_object_mut()
            .and_then(|aws| aws.remove("Timestamp"))
            .and_then(|timestamp| timestamp.as_u64())
            .map(u128::from);
        assert!(
            timestamp.is_some_and(|ms| (before_ms..=after_ms).contains(&ms)),
            "Timestamp {timestamp:?} not in {before_ms}..={after_ms}: {text}"
        );
        assert_eq!(&line, expected);
    }

    #[test]
    fn alarm_metric_is_emf_counting_one_alarm_of_its_kind() {
        for kind in ["callback_amount_mismatch", "callback_unknown_payment"] {
            check(
                kind,
                &json!({
                    "_aws": {
                        "CloudWatchMetrics": [{
                            "Namespace": "Payments",
                            "Dimensions": [["Kind"], []],
                            "Metrics": [{ "Name": "Alarms", "Unit": "Count" }],
                        }],
                    },
                    "Kind": kind,
                    "Alarms": 1,
                }),
            );
        }
    }

    /// Stands for a stdout whose reader is gone.
    struct BrokenPipe;

    impl io::Write for BrokenPipe {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn alarm_metric_reports_a_closed_output_instead_of_panicking() {
        let written = emit_alarm_metric("callback_amount_mismatch", &mut BrokenPipe);
        assert!(
            matches!(&written, Err(IoStreamError::Io(error)) if error.kind() == io::ErrorKind::BrokenPipe),
            "{written:?}"
        );
    }
}
