//! The dead-letter handler: every dead message stored whole in the compensations table (the place
//! of record for `payctl dlq`), and an alarm per message newly stored.

use crate::domain::Timestamp;
use crate::ports::{DeadLetter, DeadLetterStatus, DeadLetterStore, QueueMessage, dead_letter_id};
use crate::telemetry;

/// Where a dead-letter queue's messages came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSource {
    /// The consumer (or `outbox-relay`) that gave up.
    pub consumer: String,
    pub dead_letter_queue_arn: String,
    /// Where a redrive sends them; `None` when there is nowhere to send them back.
    pub source_queue_url: Option<String>,
}

/// Parses `consumer|dlq arn|source queue url` entries, comma-separated (an empty URL: none).
pub fn parse_sources(text: &str) -> anyhow::Result<Vec<DeadLetterSource>> {
    text.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let mut parts = entry.trim().splitn(3, '|');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(consumer), Some(arn), Some(url))
                    if !consumer.is_empty() && !arn.is_empty() =>
                {
                    Ok(DeadLetterSource {
                        consumer: consumer.to_owned(),
                        dead_letter_queue_arn: arn.to_owned(),
                        source_queue_url: (!url.is_empty()).then(|| url.to_owned()),
                    })
                }
                _ => anyhow::bail!(
                    "{entry:?}: expected consumer|dead-letter queue ARN|source queue URL"
                ),
            }
        })
        .collect()
}

/// The dead message as it is stored.
pub fn dead_letter(
    sources: &[DeadLetterSource],
    message: &QueueMessage,
    now: Timestamp,
) -> DeadLetter {
    let source = sources
        .iter()
        .find(|s| s.dead_letter_queue_arn == message.source_arn);
    let attribute = |name: &str| message.message_attributes.get(name).cloned();
    let consumer = attribute("consumer")
        .or_else(|| source.map(|s| s.consumer.clone()))
        .unwrap_or_else(|| "unknown".to_owned());
    // A consumer that dead-letters a message itself names it; SQS's own redrive keeps its id.
    let original_id = attribute("source_message_id").unwrap_or_else(|| message.message_id.clone());
    // Moved by the redrive policy, a message keeps counting receives: this handler's receive
    // from the dead-letter queue is one more than its consumers had.
    let receive_count = attribute("receive_count")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| message.receive_count().saturating_sub(1).max(1));
    let error = attribute("error").unwrap_or_else(|| match source {
        Some(s) if s.source_queue_url.is_none() => {
            "the event source mapping gave up on these stream records".to_owned()
        }
        _ => format!("retries exhausted: moved by the queue's redrive policy (received {receive_count} times)"),
    });
    DeadLetter {
        id: dead_letter_id(&consumer, &original_id),
        consumer,
        source_queue_url: source.and_then(|s| s.source_queue_url.clone()),
        dead_letter_queue_arn: message.source_arn.clone(),
        message_id: original_id,
        body: message.body.clone(),
        attributes: message.attributes.clone(),
        message_attributes: message.message_attributes.clone(),
        error,
        receive_count,
        first_seen: message.timestamp("SentTimestamp").unwrap_or(now),
        last_seen: now,
        status: DeadLetterStatus::Open,
        status_changed_at: None,
    }
}

/// Stores a batch of dead messages; returns the ids of the messages that could not be stored.
pub async fn store_dead_letters(
    store: &dyn DeadLetterStore,
    sources: &[DeadLetterSource],
    messages: &[QueueMessage],
    now: Timestamp,
) -> Vec<String> {
    let mut failed = Vec::new();
    for message in messages {
        let dead = dead_letter(sources, message, now);
        match store.put_dead_letter(&dead).await {
            Ok(true) => telemetry::alarm(
                "dead_letter",
                &format!(
                    "{} gave up on message {} ({}): {}",
                    dead.consumer, dead.message_id, dead.id, dead.error
                ),
            ),
            Ok(false) => tracing::info!(id = %dead.id, "dead letter seen again"),
            Err(e) => {
                tracing::warn!(id = %dead.id, error = format!("{e:#}"), "dead letter not stored; retried");
                failed.push(message.message_id.clone());
            }
        }
    }
    failed
}
