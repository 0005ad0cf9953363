//! A consumer's batch: each message applied once, failures reported one by one.
//!
//! - A message that is not an event this code can read (malformed, unknown schema version,
//!   invalid) is a permanent error: it goes to the dead-letter queue at once and is acknowledged,
//!   so it burns no retries.
//! - An event other than `payment.paid` has no effect here: acknowledged.
//! - A paid event is applied through the consumer's dedupe record; duplicates and events of an
//!   order already done are acknowledged.
//! - Corrupt stored data (the order's effect record unreadable) is permanent too.
//! - Any other store error is transient: the message is hidden for a delay that grows with its
//!   receive count and reported failed; after the queue's `maxReceiveCount` receives SQS moves it
//!   to the dead-letter queue itself.

use crate::domain::Timestamp;
use crate::domain::event::{Consumer, PaymentEvent};
use crate::ports::{Applied, ConsumerQueue, Effects, QueueMessage, StoreError};
use crate::telemetry;

/// The retry delays of transient failures: `base * 2^(receives - 1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDelays {
    pub base_s: u32,
    pub max_s: u32,
}

impl Default for RetryDelays {
    fn default() -> Self {
        Self {
            base_s: 10,
            max_s: 900,
        }
    }
}

impl RetryDelays {
    pub fn after(&self, receive_count: u32) -> u32 {
        let doublings = receive_count.saturating_sub(1).min(20);
        self.base_s
            .saturating_mul(1 << doublings)
            .min(self.max_s)
            .max(1)
    }
}

/// How one message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    OrderAlreadyDone,
    /// Not an event this consumer acts on.
    Ignored,
    /// Sent to the dead-letter queue at once.
    DeadLettered(String),
    /// Left for a retry.
    Retry(String),
}

/// What a consumer needs.
pub struct ConsumerDeps<'a> {
    pub effects: &'a dyn Effects,
    pub queue: &'a dyn ConsumerQueue,
    pub retry: RetryDelays,
}

/// Processes a batch; returns the ids of the messages to report as failed.
pub async fn consume(
    deps: &ConsumerDeps<'_>,
    messages: &[QueueMessage],
    now: Timestamp,
) -> Vec<String> {
    let mut failed = Vec::new();
    for message in messages {
        let outcome = consume_one(deps, message, now).await;
        let consumer = deps.effects.consumer();
        match &outcome {
            Outcome::Retry(error) => {
                tracing::warn!(%consumer, message_id = %message.message_id, receive_count = message.receive_count(), %error, "transient failure; retried later");
                failed.push(message.message_id.clone());
            }
            Outcome::DeadLettered(error) => {
                tracing::error!(%consumer, message_id = %message.message_id, %error, "permanent error: sent to the dead-letter queue");
            }
            other => {
                tracing::info!(%consumer, message_id = %message.message_id, outcome = ?other, "message done");
            }
        }
    }
    failed
}

/// One message: what happened to it. Never fails; a failure is an outcome.
pub async fn consume_one(
    deps: &ConsumerDeps<'_>,
    message: &QueueMessage,
    now: Timestamp,
) -> Outcome {
    let event = match PaymentEvent::parse(&message.body) {
        Ok(event) => event,
        Err(error) => return dead_letter(deps, message, error.to_string()).await,
    };
    if !event.is_paid() {
        return Outcome::Ignored;
    }
    match apply(deps.effects, &event, now).await {
        Ok(outcome) => outcome,
        // Data a retry cannot repair: waiting through the retries would only delay the
        // operator's look.
        Err(StoreError::Corrupt(error)) => {
            dead_letter(deps, message, format!("corrupt stored data: {error:#}")).await
        }
        Err(error) => {
            let delay = deps.retry.after(message.receive_count());
            if let Err(e) = deps.queue.delay_retry(message, delay).await {
                tracing::warn!(error = format!("{e:#}"), "could not delay the retry");
            }
            Outcome::Retry(format!("{error:#}"))
        }
    }
}

/// A permanent error: the message goes to the dead-letter queue now (and is acknowledged), or,
/// if even that fails, is left for a retry.
async fn dead_letter(deps: &ConsumerDeps<'_>, message: &QueueMessage, error: String) -> Outcome {
    match deps.queue.dead_letter(message, &error).await {
        Ok(()) => Outcome::DeadLettered(error),
        Err(e) => Outcome::Retry(format!("{error}; and the dead-letter send failed: {e:#}")),
    }
}

/// Applies a paid event's effect (also what `payctl compensate` runs).
pub async fn apply(
    effects: &dyn Effects,
    event: &PaymentEvent,
    now: Timestamp,
) -> Result<Outcome, StoreError> {
    match effects.apply(event, now).await {
        Ok(Applied::Applied) => Ok(Outcome::Applied),
        Ok(Applied::Duplicate) => Ok(Outcome::Duplicate),
        Ok(Applied::OrderAlreadyDone { by_payment }) => {
            if effects.consumer() == Consumer::OrderUpdater && by_payment != event.payment_id {
                telemetry::alarm(
                    "order_paid_twice",
                    &format!(
                        "order {} was paid by payment {by_payment} and again by {}",
                        event.order_id, event.payment_id
                    ),
                );
            }
            Ok(Outcome::OrderAlreadyDone)
        }
        Err(e) => Err(e),
    }
}
