//! The SQS adapters: the event bus the relay and the check-back publish through, and what a
//! consumer does with a message besides acknowledging it. Also the conversion of Lambda's SQS
//! and DynamoDB stream events into the ports' shapes.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use crate::domain::event::{Consumer, PaymentEvent};
use crate::domain::{Payment, PaymentStatus};
use crate::ports::{
    ConsumerQueue, DEAD_LETTER_ATTRIBUTES, EventBus, MessageSender, PublishError, QueueMessage,
};

/// SQS allows at most this many entries per `SendMessageBatch`.
const SQS_BATCH: usize = 10;

fn string_attribute(value: &str) -> anyhow::Result<MessageAttributeValue> {
    Ok(MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()?)
}

/// Publishes to one standard queue per consumer.
#[derive(Debug, Clone)]
pub struct SqsEventBus {
    client: Client,
    queues: Vec<(Consumer, String)>,
}

impl SqsEventBus {
    /// `queues`: each consumer's queue URL.
    pub fn new(client: Client, queues: Vec<(Consumer, String)>) -> Self {
        Self { client, queues }
    }

    /// Sends `events` (at most [`SQS_BATCH`]) to one queue; the index of the first event that
    /// did not get there, if any, with why.
    async fn send_batch(
        &self,
        queue_url: &str,
        events: &[PaymentEvent],
    ) -> Option<(usize, anyhow::Error)> {
        let entries: anyhow::Result<Vec<_>> = events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                Ok(SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(event.to_json())
                    .message_attributes("event_type", string_attribute(&event.event_type)?)
                    .message_attributes("event_id", string_attribute(&event.event_id)?)
                    .build()?)
            })
            .collect();
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => return Some((0, e)),
        };
        match self
            .client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out
                .failed()
                .iter()
                .filter_map(|f| Some((f.id().parse::<usize>().ok()?, f)))
                .min_by_key(|(i, _)| *i)
                .map(|(i, f)| {
                    (
                        i,
                        anyhow!(
                            "{queue_url}: {} {}",
                            f.code(),
                            f.message().unwrap_or_default()
                        ),
                    )
                }),
            Err(e) => Some((0, sdk_error(e).context(queue_url.to_owned()))),
        }
    }
}

/// An AWS SDK error with its whole chain of causes (the SDK's own `Display` shows only the top).
pub(crate) fn sdk_error(error: impl std::error::Error + Send + Sync + 'static) -> anyhow::Error {
    anyhow!(
        "{}",
        aws_smithy_types::error::display::DisplayErrorContext(error)
    )
}

#[async_trait]
impl EventBus for SqsEventBus {
    async fn publish(&self, events: &[PaymentEvent], to: &[Consumer]) -> Result<(), PublishError> {
        for (chunk_index, chunk) in events.chunks(SQS_BATCH).enumerate() {
            let start = chunk_index * SQS_BATCH;
            let mut first_failure: Option<(usize, anyhow::Error)> = None;
            for (consumer, url) in self.queues.iter().filter(|(c, _)| to.contains(c)) {
                if let Some((i, error)) = self.send_batch(url, chunk).await {
                    let error = error.context(format!("publishing to {consumer}"));
                    if first_failure.as_ref().is_none_or(|(j, _)| i < *j) {
                        first_failure = Some((i, error));
                    }
                }
            }
            if let Some((i, error)) = first_failure {
                return Err(PublishError {
                    sent: start + i,
                    error,
                });
            }
        }
        Ok(())
    }
}

/// Sends plain messages (a redrive of stored dead letters).
#[derive(Debug, Clone)]
pub struct SqsSender {
    client: Client,
}

impl SqsSender {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl MessageSender for SqsSender {
    async fn send(
        &self,
        queue_url: &str,
        body: &str,
        message_attributes: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let mut request = self
            .client
            .send_message()
            .queue_url(queue_url)
            .message_body(body);
        for (name, value) in message_attributes {
            request = request.message_attributes(name, string_attribute(value)?);
        }
        request
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("sending to {queue_url}"))?;
        Ok(())
    }
}

/// A consumer's own queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsConsumerQueue {
    client: Client,
    consumer: Consumer,
    queue_url: String,
    dead_letter_url: String,
}

impl SqsConsumerQueue {
    pub fn new(
        client: Client,
        consumer: Consumer,
        queue_url: impl Into<String>,
        dead_letter_url: impl Into<String>,
    ) -> Self {
        Self {
            client,
            consumer,
            queue_url: queue_url.into(),
            dead_letter_url: dead_letter_url.into(),
        }
    }
}

#[async_trait]
impl ConsumerQueue for SqsConsumerQueue {
    async fn dead_letter(&self, message: &QueueMessage, error: &str) -> anyhow::Result<()> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.dead_letter_url)
            .message_body(&message.body);
        for (name, value) in &message.message_attributes {
            if !DEAD_LETTER_ATTRIBUTES.contains(&name.as_str()) {
                request = request.message_attributes(name, string_attribute(value)?);
            }
        }
        // SQS bounds an attribute value at 256 KiB with the body; an error is a line.
        let error: String = error.chars().take(1000).collect();
        request
            .message_attributes("error", string_attribute(&error)?)
            .message_attributes("consumer", string_attribute(self.consumer.as_str())?)
            .message_attributes("source_message_id", string_attribute(&message.message_id)?)
            .message_attributes(
                "receive_count",
                string_attribute(&message.receive_count().to_string())?,
            )
            .send()
            .await
            .map_err(sdk_error)
            .context("sending to the dead-letter queue")?;
        Ok(())
    }

    async fn delay_retry(&self, message: &QueueMessage, seconds: u32) -> anyhow::Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&message.receipt_handle)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(sdk_error)
            .context("changing the message's visibility")?;
        Ok(())
    }
}

/// Lambda's SQS event as the ports' messages.
pub fn messages(event: aws_lambda_events::event::sqs::SqsEvent) -> Vec<QueueMessage> {
    event
        .records
        .into_iter()
        .map(|m| QueueMessage {
            message_id: m.message_id.unwrap_or_default(),
            receipt_handle: m.receipt_handle.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
            attributes: m.attributes.into_iter().collect(),
            message_attributes: m
                .message_attributes
                .into_iter()
                .filter_map(|(name, value)| Some((name, value.string_value?)))
                .collect::<BTreeMap<_, _>>(),
            source_arn: m.event_source_arn.unwrap_or_default(),
        })
        .collect()
}

/// One record of the payments table's stream, as the relay needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentChange {
    /// The record's sequence number: what a partial batch failure names.
    pub sequence_number: String,
    /// The payment after the write; `None` for other items (history, refunds, orders) and
    /// removals.
    pub after: Option<Payment>,
    /// Its status and version before the write; `None` for an insert.
    pub before: Option<(PaymentStatus, u32)>,
}

fn is_payment(item: &serde_dynamo::Item) -> bool {
    matches!(item.get("kind"), Some(serde_dynamo::AttributeValue::S(k)) if k == "payment")
}

/// Lambda's DynamoDB stream event as payment changes. A payment image that does not read as a
/// payment is an error for that record, returned with its sequence number.
pub fn payment_changes(
    event: aws_lambda_events::event::dynamodb::Event,
) -> Vec<Result<PaymentChange, (String, anyhow::Error)>> {
    event
        .records
        .into_iter()
        .map(|record| {
            let change = record.change;
            let sequence_number = change.sequence_number.unwrap_or_default();
            if record.event_name == "REMOVE" || !is_payment(&change.new_image) {
                return Ok(PaymentChange {
                    sequence_number,
                    after: None,
                    before: None,
                });
            }
            let read = || -> anyhow::Result<(Payment, Option<(PaymentStatus, u32)>)> {
                let after: Payment =
                    serde_dynamo::from_item(change.new_image).context("new image")?;
                // Of the payment before, only its status and version matter.
                #[derive(serde::Deserialize)]
                struct Before {
                    status: PaymentStatus,
                    version: u32,
                }
                let before = if is_payment(&change.old_image) {
                    let old: Before =
                        serde_dynamo::from_item(change.old_image).context("old image")?;
                    Some((old.status, old.version))
                } else {
                    None
                };
                Ok((after, before))
            };
            match read() {
                Ok((after, before)) => Ok(PaymentChange {
                    sequence_number,
                    after: Some(after),
                    before,
                }),
                Err(e) => Err((sequence_number, e)),
            }
        })
        .collect()
}

/// Lambda's partial batch answer for SQS: the failed message ids.
pub fn sqs_batch_response(failed: Vec<String>) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id);
    }
    response
}

/// Lambda's partial batch answer for a stream: the record to retry from, if any.
pub fn stream_batch_response(
    failed_at: Option<String>,
) -> aws_lambda_events::event::streams::DynamoDbEventResponse {
    let mut response = aws_lambda_events::event::streams::DynamoDbEventResponse::default();
    if let Some(sequence_number) = failed_at {
        let mut failure = aws_lambda_events::event::streams::DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(sequence_number);
        response.batch_item_failures.push(failure);
    }
    response
}
