//! The consumers' side in DynamoDB: each consumer's effects with its dedupe records, and the dead
//! messages stored in the compensations table.
//!
//! A consumer's table (`pk`):
//! - `ORDER#<order_id>` (order-updater) or `COUPON#<order_id>` (coupon-granter): the effect, at
//!   most one per order, naming the payment and event that made it.
//! - `EVENT#<event_id>`: the dedupe record (consumer + event id), written in the same transaction
//!   as the effect, or alone when the order's effect already exists; it expires (TTL
//!   `expires_at`) after [`DEDUPE_TTL_S`], the effect never does.
//!
//! Compensations table (`id`): dead messages are `dead-letter:<consumer>:<message id>` items of
//! `kind = dead_letter`, next to the poller's compensation records.

use anyhow::Context as _;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use serde::Serialize;
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_item};

use super::dynamodb::{Cancelled, Item, classify, is_condition_failure, n, s};
use crate::domain::event::{Consumer, PaymentEvent};
use crate::domain::{PaymentId, Timestamp};
use crate::ports::{Applied, DeadLetter, DeadLetterStatus, DeadLetterStore, Effects, StoreError};

/// One consumer's effects table.
#[derive(Debug, Clone)]
pub struct DynamoEffects {
    client: Client,
    table: String,
    consumer: Consumer,
}

#[derive(Serialize)]
struct DedupeItem<'a> {
    pk: String,
    kind: &'static str,
    consumer: &'static str,
    event_id: &'a str,
    payment_id: &'a PaymentId,
    order_id: &'a str,
    /// `applied`, or `order_already_done` (then `by_payment` made the order's effect).
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    by_payment: Option<&'a PaymentId>,
    recorded_at: Timestamp,
    /// The table's TTL attribute, epoch seconds.
    expires_at: i64,
}

/// How long a dedupe record is kept: longer than a message lives in its queue (14 days) and
/// then in its dead-letter queue (14 days). After that a redelivery still finds the effect,
/// keyed by the order, and changes nothing.
pub const DEDUPE_TTL_S: i64 = 35 * 86_400;

#[derive(Serialize)]
struct EffectItem<'a> {
    pk: String,
    kind: &'static str,
    order_id: &'a str,
    payment_id: &'a PaymentId,
    event_id: &'a str,
    amount_minor: i64,
    currency: &'static str,
    /// order-updater: the order's status; coupon-granter: the coupon's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    coupon_code: Option<String>,
    paid_at: Timestamp,
    recorded_at: Timestamp,
}

fn dedupe_pk(event_id: &str) -> String {
    format!("EVENT#{event_id}")
}

impl DynamoEffects {
    pub fn new(client: Client, table: impl Into<String>, consumer: Consumer) -> Self {
        Self {
            client,
            table: table.into(),
            consumer,
        }
    }

    /// The key of the effect an order gets from this consumer.
    pub fn effect_pk(&self, order_id: &str) -> String {
        match self.consumer {
            Consumer::OrderUpdater => format!("ORDER#{order_id}"),
            Consumer::CouponGranter => format!("COUPON#{order_id}"),
        }
    }

    fn dedupe_item(
        &self,
        event: &PaymentEvent,
        by_payment: Option<&PaymentId>,
        now: Timestamp,
    ) -> anyhow::Result<Item> {
        Ok(to_item(DedupeItem {
            pk: dedupe_pk(&event.event_id),
            kind: "processed_event",
            consumer: self.consumer.as_str(),
            event_id: &event.event_id,
            payment_id: &event.payment_id,
            order_id: event.order_id.as_str(),
            outcome: if by_payment.is_some() {
                "order_already_done"
            } else {
                "applied"
            },
            by_payment,
            recorded_at: now,
            expires_at: now.plus_s(DEDUPE_TTL_S).unix_s(),
        })?)
    }

    fn effect_item(&self, event: &PaymentEvent, now: Timestamp) -> anyhow::Result<Item> {
        let (kind, status, coupon_code) = match self.consumer {
            Consumer::OrderUpdater => ("order", Some("paid"), None),
            // One coupon per order: its code is derived from the order, so even a replayed
            // grant names the same coupon.
            Consumer::CouponGranter => (
                "coupon",
                None,
                Some(format!("PAID-ORDER-{}", event.order_id)),
            ),
        };
        Ok(to_item(EffectItem {
            pk: self.effect_pk(event.order_id.as_str()),
            kind,
            order_id: event.order_id.as_str(),
            payment_id: &event.payment_id,
            event_id: &event.event_id,
            amount_minor: event.amount_minor.get(),
            currency: event.currency.code(),
            status,
            coupon_code,
            paid_at: event.occurred_at,
            recorded_at: now,
        })?)
    }

    fn put_new(&self, item: Item) -> anyhow::Result<Put> {
        Ok(Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()?)
    }

    /// The order's effect exists already: record this event as seen, naming who made it.
    async fn record_only(
        &self,
        event: &PaymentEvent,
        by_payment: PaymentId,
        now: Timestamp,
    ) -> Result<Applied, StoreError> {
        let item = self.dedupe_item(event, Some(&by_payment), now)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(Applied::OrderAlreadyDone { by_payment }),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(Applied::Duplicate)
            }
            Err(err) => Err(StoreError::Unexpected(
                anyhow::Error::new(err).context("record event"),
            )),
        }
    }
}

#[async_trait]
impl Effects for DynamoEffects {
    fn consumer(&self) -> Consumer {
        self.consumer
    }

    async fn apply(&self, event: &PaymentEvent, now: Timestamp) -> Result<Applied, StoreError> {
        let items = vec![
            TransactWriteItem::builder()
                .put(self.put_new(self.dedupe_item(event, None, now)?)?)
                .build(),
            TransactWriteItem::builder()
                .put(self.put_new(self.effect_item(event, now)?)?)
                .build(),
        ];
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(err) = result else {
            return Ok(Applied::Applied);
        };
        match classify(err)? {
            Cancelled::Condition { index: 0, .. } => Ok(Applied::Duplicate),
            Cancelled::Condition {
                index: 1,
                old: Some(old),
            } => {
                let by_payment = match old.get("payment_id") {
                    Some(AttributeValue::S(id)) => PaymentId::parse(id).map_err(|e| {
                        StoreError::Corrupt(anyhow::anyhow!(
                            "{}: its payment id {id:?}: {e}",
                            self.effect_pk(event.order_id.as_str())
                        ))
                    })?,
                    _ => {
                        return Err(StoreError::Corrupt(anyhow::anyhow!(
                            "{} exists but names no payment",
                            self.effect_pk(event.order_id.as_str())
                        )));
                    }
                };
                self.record_only(event, by_payment, now).await
            }
            other => Err(other.unexpected("apply effect")),
        }
    }

    async fn recorded(&self, event_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(dedupe_pk(event_id)))
            .consistent_read(true)
            .projection_expression("pk")
            .send()
            .await
            .context("read dedupe record")?;
        Ok(out.item.is_some())
    }
}

/// Dead messages in the compensations table.
#[derive(Debug, Clone)]
pub struct DynamoDeadLetters {
    client: Client,
    table: String,
}

const DEAD_LETTER_KIND: &str = "dead_letter";

impl DynamoDeadLetters {
    pub fn new(client: Client, compensations_table: impl Into<String>) -> Self {
        Self {
            client,
            table: compensations_table.into(),
        }
    }
}

#[async_trait]
impl DeadLetterStore for DynamoDeadLetters {
    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<bool, StoreError> {
        let mut item: Item = to_item(dead).context("serialize dead letter")?;
        item.insert("kind".into(), s(DEAD_LETTER_KIND));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Known. Redriven or compensated, and dead again: open once more.
                let reopened = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("id", s(&dead.id))
                    .update_expression(
                        "SET #status = :open, #error = :error, receive_count = :receives, \
                         last_seen = :seen REMOVE status_changed_at",
                    )
                    .condition_expression("#status <> :open")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_names("#error", "error")
                    .expression_attribute_values(":open", s("open"))
                    .expression_attribute_values(":error", s(&dead.error))
                    .expression_attribute_values(":receives", n(dead.receive_count))
                    .expression_attribute_values(":seen", n(dead.last_seen.unix_ms()))
                    .send()
                    .await;
                match reopened {
                    Ok(_) => return Ok(true),
                    Err(err) if is_condition_failure(&err) => {}
                    Err(err) => {
                        return Err(StoreError::Unexpected(
                            anyhow::Error::new(err).context("reopen dead letter"),
                        ));
                    }
                }
                // Still open: seen again (the handler retried, or the queue delivered it twice).
                let seen = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("id", s(&dead.id))
                    .update_expression("SET last_seen = :seen")
                    .condition_expression("last_seen < :seen")
                    .expression_attribute_values(":seen", n(dead.last_seen.unix_ms()))
                    .send()
                    .await;
                match seen {
                    Ok(_) => Ok(false),
                    Err(err) if is_condition_failure(&err) => Ok(false),
                    Err(err) => Err(StoreError::Unexpected(
                        anyhow::Error::new(err).context("update dead letter"),
                    )),
                }
            }
            Err(err) => Err(StoreError::Unexpected(
                anyhow::Error::new(err).context("store dead letter"),
            )),
        }
    }

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .context("read dead letter")?;
        match out.item {
            Some(item) if item.get("kind") == Some(&s(DEAD_LETTER_KIND)) => {
                Ok(Some(from_item(item).context("deserialize dead letter")?))
            }
            _ => Ok(None),
        }
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        // The compensations table is small and read by operators only: a filtered scan.
        let items: Vec<Item> = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("kind = :kind")
            .expression_attribute_values(":kind", s(DEAD_LETTER_KIND))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .context("scan dead letters")?;
        let mut all = items
            .into_iter()
            .map(|item| from_item(item).context("deserialize dead letter"))
            .collect::<anyhow::Result<Vec<DeadLetter>>>()?;
        all.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
        Ok(all)
    }

    async fn mark_dead_letter(
        &self,
        id: &str,
        from: DeadLetterStatus,
        to: DeadLetterStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let status = |st: DeadLetterStatus| -> anyhow::Result<AttributeValue> {
            Ok(serde_dynamo::to_attribute_value(st)?)
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET #status = :to, status_changed_at = :at")
            .condition_expression("#status = :from AND kind = :kind")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", status(to)?)
            .expression_attribute_values(":from", status(from)?)
            .expression_attribute_values(":kind", s(DEAD_LETTER_KIND))
            .expression_attribute_values(":at", n(at.unix_ms()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failure(&err) => Ok(false),
            Err(err) => Err(StoreError::Unexpected(
                anyhow::Error::new(err).context("mark dead letter"),
            )),
        }
    }
}
