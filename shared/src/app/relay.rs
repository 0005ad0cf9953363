//! The outbox relay: the payments table's stream in, events out.
//!
//! Every transition raises the payment item's version in the transaction that makes it, so a
//! stream record whose version rose (or a new payment) is exactly one event, never one without
//! its change. Records are published in stream order; at the first that cannot be sent the
//! batch stops and names it, and the event source retries from there (records before it are
//! done). A record that keeps failing goes, after the mapping's retries, to its on-failure
//! destination; the check-back republishes paid events whose effects never showed up.

use crate::domain::event::{Consumer, PaymentEvent};
use crate::ports::EventBus;
use crate::queue::PaymentChange;

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
    // Records up to the first unreadable one; that one fails the batch from there.
    let mut pending: Vec<(String, PaymentEvent)> = Vec::new();
    let mut unreadable = None;
    for change in changes {
        match change {
            Ok(change) => {
                if let Some(event) = event_of(&change) {
                    pending.push((change.sequence_number, event));
                }
            }
            Err((sequence_number, error)) => {
                tracing::error!(%sequence_number, error = format!("{error:#}"), "relay: unreadable payment record");
                unreadable = Some(sequence_number);
                break;
            }
        }
    }
    let events: Vec<PaymentEvent> = pending.iter().map(|(_, e)| e.clone()).collect();
    match bus.publish(&events, &Consumer::ALL).await {
        Ok(()) => {
            summary.published = events.len();
            summary.failed_at = unreadable;
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{:#}", e.error),
                sent = e.sent,
                "relay: publish failed; the batch retries from the first unsent record"
            );
            summary.published = e.sent;
            summary.failed_at = pending
                .get(e.sent)
                .map(|(seq, _)| seq.clone())
                .or(unreadable);
        }
    }
    summary
}
