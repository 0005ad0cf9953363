//! The outbox relay: the payments table's stream in, events out.
//!
//! Every transition raises the payment item's version in the transaction that makes it, so a
//! stream record whose version rose (or a new payment) is exactly one event, never one without
//! its change. Records are published in stream order; at the first that cannot be sent the
//! batch stops and names it, and the event source retries from there (records before it are
//! done). A record that keeps failing goes, after the mapping's retries, to its on-failure
//! destination; the check-back republishes paid events whose effects never showed up.
//!
//! A payment record that cannot be read (a status this code does not know, during a rolling
//! deploy, say) fails the same way on every retry, and retrying from it would hold back every
//! good record after it until the event source gave up on all of them. So it is skipped with an
//! alarm: if it was a paid payment, the check-back brings its event back.

use crate::domain::event::{Consumer, PaymentEvent};
use crate::ports::EventBus;
use crate::queue::PaymentChange;
use crate::telemetry;

/// The event a change publishes, if it is a transition (or a creation).
pub fn event_of(change: &PaymentChange) -> Option<PaymentEvent> {
    let after = change.after.as_ref()?;
    match change.before {
        Some((_, version)) if version >= after.version => None,
        before => Some(PaymentEvent::of_change(after, before.map(|(s, _)| s))),
    }
}

/// What a relay batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelaySummary {
    pub records: usize,
    pub published: usize,
    /// Records skipped because they do not read as payments (each raised an alarm).
    pub unreadable: usize,
    /// The sequence number to retry from, if the batch stopped.
    pub failed_at: Option<String>,
}

/// Publishes the events of `changes` (each a record, or an unreadable record's sequence number
/// and error) in order to every consumer.
pub async fn relay(
    bus: &dyn EventBus,
    changes: Vec<Result<PaymentChange, (String, anyhow::Error)>>,
) -> RelaySummary {
    let mut summary = RelaySummary {
        records: changes.len(),
        ..RelaySummary::default()
    };
    // The events to publish, and the record each came from.
    let mut events: Vec<PaymentEvent> = Vec::new();
    let mut sequence_numbers: Vec<String> = Vec::new();
    for change in changes {
        match change {
            Ok(change) => {
                if let Some(event) = event_of(&change) {
                    events.push(event);
                    sequence_numbers.push(change.sequence_number);
                }
            }
            Err((sequence_number, error)) => {
                summary.unreadable += 1;
                telemetry::alarm(
                    "outbox_unreadable_record",
                    &format!(
                        "payments stream record {sequence_number} skipped: it does not read as \
                         a payment: {error:#}"
                    ),
                );
            }
        }
    }
    match bus.publish(&events, &Consumer::ALL).await {
        Ok(()) => summary.published = events.len(),
        Err(e) => {
            tracing::warn!(
                error = format!("{:#}", e.error),
                sent = e.sent,
                "relay: publish failed; the batch retries from the first unsent record"
            );
            summary.published = e.sent;
            summary.failed_at = sequence_numbers.get(e.sent).cloned();
        }
    }
    summary
}
