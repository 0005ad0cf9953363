//! What an operator does with a stored dead message (`payctl dlq` and `payctl compensate`): send
//! it back to the queue it died on, or re-run its effect directly. Either way the dead letter
//! moves out of `open` once, with one conditional write, so a second run changes nothing.
//!
//! A dead letter with no source queue (consumer `outbox-relay`: the stream mapping's failure
//! records) has no message to send back and no effect to re-run: the check-back republishes
//! those payments' events.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::app::consume::{self, Outcome};
use crate::domain::Timestamp;
use crate::domain::event::{Consumer, EventError, PaymentEvent};
use crate::ports::{
    DEAD_LETTER_ATTRIBUTES, DeadLetter, DeadLetterStatus, DeadLetterStore, Effects, MessageSender,
    StoreError,
};

/// Why a dead letter with no source queue is left alone.
pub const NO_SOURCE_QUEUE: &str = "it has no source queue to go back to and no consumer effect to \
    re-run (the outbox relay's stream failure records have none: the check-back republishes their \
    payments' events)";

/// The stored dead letters: the open ones, or all of them, oldest first.
pub async fn list(store: &dyn DeadLetterStore, all: bool) -> Result<Vec<DeadLetter>, StoreError> {
    let mut dead = store.dead_letters().await?;
    if !all {
        dead.retain(|d| d.status == DeadLetterStatus::Open);
    }
    Ok(dead)
}

/// What a redrive did with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveOutcome {
    /// Sent back to its source queue and marked redriven.
    Redriven { queue_url: String },
    /// Sent back, but it had left `open` meanwhile (a concurrent redrive or compensate): its
    /// status is left as that made it, and the consumers dedupe the extra copy.
    SentNotMarked { queue_url: String },
    /// Open, with no source queue ([`NO_SOURCE_QUEUE`]); passed over when redriving every open
    /// one. Nothing sent.
    Skipped,
    /// Asked for by id, but it has no source queue ([`NO_SOURCE_QUEUE`]). Nothing sent.
    NoSourceQueue,
    /// No dead letter has this id.
    Unknown,
    /// Redriven or compensated already. Nothing sent.
    NotOpen(DeadLetterStatus),
    /// Reading it failed. Nothing sent.
    ReadFailed(String),
    /// The send failed: it stays open.
    SendFailed(String),
    /// Sent, but marking it failed: it stays open, and a later redrive sends it again (the
    /// consumers dedupe).
    MarkFailed(String),
}

impl RedriveOutcome {
    /// Whether the operator asked for something that did not happen.
    pub fn is_failure(&self) -> bool {
        match self {
            Self::Redriven { .. }
            | Self::SentNotMarked { .. }
            | Self::Skipped
            | Self::NotOpen(_) => false,
            Self::NoSourceQueue
            | Self::Unknown
            | Self::ReadFailed(_)
            | Self::SendFailed(_)
            | Self::MarkFailed(_) => true,
        }
    }
}

/// Sends dead letters back to their source queues: every open one when `ids` is `None`,
/// otherwise those named (each id gets an outcome, whatever it names). A failure is an outcome
/// of its message; the others go on. Only listing every open one can fail the whole run.
///
/// Each message is sent first and marked `open -> redriven` after: a crash between the two
/// leaves it open, so the next redrive sends it once more, and the consumers dedupe by event id.
/// Marking first would lose it instead, shown as redriven but never sent.
pub async fn redrive(
    store: &dyn DeadLetterStore,
    sender: &dyn MessageSender,
    ids: Option<&[String]>,
    now: Timestamp,
) -> Result<Vec<(String, RedriveOutcome)>, StoreError> {
    let mut outcomes = Vec::new();
    match ids {
        None => {
            for dead in list(store, false).await? {
                let outcome = match dead.source_queue_url.as_deref() {
                    None => RedriveOutcome::Skipped,
                    Some(queue_url) => send_back(store, sender, &dead, queue_url, now).await,
                };
                outcomes.push((dead.id, outcome));
            }
        }
        Some(ids) => {
            for id in ids {
                outcomes.push((id.clone(), redrive_one(store, sender, id, now).await));
            }
        }
    }
    Ok(outcomes)
}

async fn redrive_one(
    store: &dyn DeadLetterStore,
    sender: &dyn MessageSender,
    id: &str,
    now: Timestamp,
) -> RedriveOutcome {
    let dead = match store.dead_letter(id).await {
        Ok(Some(dead)) => dead,
        Ok(None) => return RedriveOutcome::Unknown,
        Err(e) => return RedriveOutcome::ReadFailed(format!("{e:#}")),
    };
    if dead.status != DeadLetterStatus::Open {
        return RedriveOutcome::NotOpen(dead.status);
    }
    match dead.source_queue_url.as_deref() {
        None => RedriveOutcome::NoSourceQueue,
        Some(queue_url) => send_back(store, sender, &dead, queue_url, now).await,
    }
}

/// Sends an open dead letter to `queue_url`, then marks it redriven.
async fn send_back(
    store: &dyn DeadLetterStore,
    sender: &dyn MessageSender,
    dead: &DeadLetter,
    queue_url: &str,
    now: Timestamp,
) -> RedriveOutcome {
    if let Err(e) = sender
        .send(queue_url, &dead.body, &original_attributes(dead))
        .await
    {
        return RedriveOutcome::SendFailed(format!("{e:#}"));
    }
    let queue_url = queue_url.to_owned();
    match store
        .mark_dead_letter(
            &dead.id,
            DeadLetterStatus::Open,
            DeadLetterStatus::Redriven,
            now,
        )
        .await
    {
        Ok(true) => RedriveOutcome::Redriven { queue_url },
        Ok(false) => RedriveOutcome::SentNotMarked { queue_url },
        Err(e) => RedriveOutcome::MarkFailed(format!("{e:#}")),
    }
}

/// The message attributes the message had before it died: those a consumer adds when it
/// dead-letters a message itself are dropped, so a second death records afresh.
fn original_attributes(dead: &DeadLetter) -> BTreeMap<String, String> {
    dead.message_attributes
        .iter()
        .filter(|(name, _)| !DEAD_LETTER_ATTRIBUTES.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// What a compensate did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompensateOutcome {
    /// The effect is made (now, or it had been already: see the consumer's outcome) and the
    /// dead letter is marked compensated. `Ignored`: not a paid event, so there was no effect.
    Compensated { consumer: Consumer, effect: Outcome },
    /// The effect is made, but the dead letter left `open` meanwhile (a concurrent redrive or
    /// compensate): its status is left as that made it.
    EffectDoneNotMarked { consumer: Consumer, effect: Outcome },
    /// Redriven or compensated already: nothing done.
    NotOpen(DeadLetterStatus),
}

/// Why a compensate did nothing (or, for `MarkFailed`, did not record what it did).
#[derive(Debug, thiserror::Error)]
pub enum CompensateError {
    #[error("no dead letter has id {0:?}")]
    Unknown(String),
    #[error("{NO_SOURCE_QUEUE}")]
    NoSourceQueue,
    #[error("its body is not an event this code can read: {0}")]
    UnreadableBody(#[from] EventError),
    #[error("its consumer {0:?} has no effects here")]
    UnknownConsumer(String),
    #[error("the effect failed (it stays open; compensate again): {0}")]
    ApplyFailed(String),
    #[error(
        "the effect is made, but marking it compensated failed (it stays open; compensating again \
         changes nothing but the mark): {0}"
    )]
    MarkFailed(StoreError),
    #[error("reading it failed: {0}")]
    ReadFailed(StoreError),
}

/// Re-runs a dead letter's effect directly, through its consumer's dedupe record, then marks it
/// `open -> compensated`. The effect is idempotent (an event applied already, or an order done
/// by another payment, changes nothing), so a crash before the mark is repaired by running it
/// again. `effects`: one per consumer.
pub async fn compensate(
    store: &dyn DeadLetterStore,
    effects: &[Arc<dyn Effects>],
    id: &str,
    now: Timestamp,
) -> Result<CompensateOutcome, CompensateError> {
    let dead = store
        .dead_letter(id)
        .await
        .map_err(CompensateError::ReadFailed)?
        .ok_or_else(|| CompensateError::Unknown(id.to_owned()))?;
    if dead.status != DeadLetterStatus::Open {
        return Ok(CompensateOutcome::NotOpen(dead.status));
    }
    if dead.source_queue_url.is_none() {
        return Err(CompensateError::NoSourceQueue);
    }
    let event = PaymentEvent::parse(&dead.body)?;
    let consumer_effects = effects
        .iter()
        .find(|e| e.consumer().as_str() == dead.consumer)
        .ok_or_else(|| CompensateError::UnknownConsumer(dead.consumer.clone()))?;
    let consumer = consumer_effects.consumer();
    let effect = if event.is_paid() {
        consume::apply(consumer_effects.as_ref(), &event, now)
            .await
            .map_err(|e| CompensateError::ApplyFailed(format!("{e:#}")))?
    } else {
        Outcome::Ignored
    };
    let marked = store
        .mark_dead_letter(
            id,
            DeadLetterStatus::Open,
            DeadLetterStatus::Compensated,
            now,
        )
        .await
        .map_err(CompensateError::MarkFailed)?;
    Ok(if marked {
        CompensateOutcome::Compensated { consumer, effect }
    } else {
        CompensateOutcome::EffectDoneNotMarked { consumer, effect }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::{Payment, PaymentStatus};
    use crate::store::{MemoryDeadLetters, MemoryEffects};

    const ORDER_QUEUE: &str = "https://sqs.local/123456789012/order-updater";
    const COUPON_QUEUE: &str = "https://sqs.local/123456789012/coupon-granter";

    fn now() -> Timestamp {
        Timestamp::from_unix_ms(1_700_000_000_000)
    }

    /// The event of payment `n` (of order `order-<n>`) reaching `status`.
    fn event(n: u32, status: &str) -> PaymentEvent {
        let payment: Payment = serde_json::from_value(serde_json::json!({
            "payment_id": format!("01J{n:023}"),
            "order_id": format!("order-{n}"),
            "amount_minor": 1234,
            "currency": "CNY",
            "provider": "sandbox",
            "subject": "s",
            "status": status,
            "version": 2,
            "expires_at": 1_000_000,
            "created_at": 1_000,
            "updated_at": 2_000,
        }))
        .expect("payment");
        PaymentEvent::of_change(&payment, Some(PaymentStatus::Pending))
    }

    /// An open dead letter of `consumer` (`outbox-relay`: no source queue) with `body`, its
    /// message attributes as a consumer that dead-lettered it itself left them.
    fn dead(consumer: &str, message_id: &str, body: &str) -> DeadLetter {
        let source_queue_url = match consumer {
            "order-updater" => Some(ORDER_QUEUE.to_owned()),
            "coupon-granter" => Some(COUPON_QUEUE.to_owned()),
            _ => None,
        };
        let attributes = [
            ("event_type", "payment.paid"),
            ("event_id", "e-1"),
            ("error", "boom"),
            ("consumer", consumer),
            ("source_message_id", message_id),
            ("receive_count", "5"),
        ];
        DeadLetter {
            id: crate::ports::dead_letter_id(consumer, message_id),
            consumer: consumer.to_owned(),
            source_queue_url,
            dead_letter_queue_arn: format!("arn:aws:sqs:ap-east-1:123456789012:{consumer}-dlq"),
            message_id: message_id.to_owned(),
            body: body.to_owned(),
            attributes: BTreeMap::new(),
            message_attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            error: "boom".to_owned(),
            receive_count: 5,
            first_seen: now().plus_s(-60),
            last_seen: now().plus_s(-30),
            status: DeadLetterStatus::Open,
            status_changed_at: None,
        }
    }

    async fn store_with(dead_letters: &[DeadLetter]) -> MemoryDeadLetters {
        let store = MemoryDeadLetters::default();
        for d in dead_letters {
            assert!(store.put_dead_letter(d).await.expect("put"), "{}", d.id);
        }
        store
    }

    async fn status(store: &MemoryDeadLetters, id: &str) -> DeadLetterStatus {
        store
            .dead_letter(id)
            .await
            .expect("read")
            .expect("stored")
            .status
    }

    /// One message sent: queue URL, body, message attributes.
    type Sent = (String, String, BTreeMap<String, String>);

    /// Records what it sends; fails every send to `failing_queue`.
    #[derive(Default)]
    struct Sender {
        failing_queue: Option<&'static str>,
        sent: Mutex<Vec<Sent>>,
    }

    impl Sender {
        fn sent(&self) -> Vec<Sent> {
            self.sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
    }

    #[async_trait]
    impl MessageSender for Sender {
        async fn send(
            &self,
            queue_url: &str,
            body: &str,
            message_attributes: &BTreeMap<String, String>,
        ) -> anyhow::Result<()> {
            if self.failing_queue == Some(queue_url) {
                anyhow::bail!("queue unavailable");
            }
            self.sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((
                    queue_url.to_owned(),
                    body.to_owned(),
                    message_attributes.clone(),
                ));
            Ok(())
        }
    }

    #[tokio::test]
    async fn redrive_sends_each_open_one_once_with_its_original_attributes() {
        let order = dead("order-updater", "m-1", "body-1");
        let coupon = dead("coupon-granter", "m-2", "body-2");
        let relay = dead("outbox-relay", "shard-1", "stream records");
        let store = store_with(&[order.clone(), coupon.clone(), relay.clone()]).await;
        let sender = Sender::default();

        let outcomes = redrive(&store, &sender, None, now())
            .await
            .expect("redrive");
        // Oldest first, then by id: all three were first seen at once.
        assert_eq!(
            outcomes,
            vec![
                (
                    coupon.id.clone(),
                    RedriveOutcome::Redriven {
                        queue_url: COUPON_QUEUE.into()
                    }
                ),
                (
                    order.id.clone(),
                    RedriveOutcome::Redriven {
                        queue_url: ORDER_QUEUE.into()
                    }
                ),
                (relay.id.clone(), RedriveOutcome::Skipped),
            ]
        );
        assert!(
            outcomes.iter().all(|(_, o)| !o.is_failure()),
            "{outcomes:?}"
        );

        let original: BTreeMap<String, String> =
            [("event_id", "e-1"), ("event_type", "payment.paid")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(
            sender.sent(),
            vec![
                (
                    COUPON_QUEUE.to_owned(),
                    "body-2".to_owned(),
                    original.clone()
                ),
                (ORDER_QUEUE.to_owned(), "body-1".to_owned(), original),
            ]
        );
        assert_eq!(status(&store, &order.id).await, DeadLetterStatus::Redriven);
        assert_eq!(status(&store, &coupon.id).await, DeadLetterStatus::Redriven);
        assert_eq!(status(&store, &relay.id).await, DeadLetterStatus::Open);
        let marked = store
            .dead_letter(&order.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(marked.status_changed_at, Some(now()));

        let again = redrive(&store, &sender, None, now())
            .await
            .expect("second redrive");
        assert_eq!(again, vec![(relay.id.clone(), RedriveOutcome::Skipped)]);
        assert_eq!(sender.sent().len(), 2, "a second redrive sends nothing");
    }

    #[tokio::test]
    async fn a_failed_send_leaves_it_open_and_the_others_go_on() {
        let order = dead("order-updater", "m-1", "body-1");
        let coupon = dead("coupon-granter", "m-2", "body-2");
        let store = store_with(&[order.clone(), coupon.clone()]).await;
        let sender = Sender {
            failing_queue: Some(ORDER_QUEUE),
            ..Sender::default()
        };

        let outcomes = redrive(&store, &sender, None, now())
            .await
            .expect("redrive");
        let failed: Vec<&(String, RedriveOutcome)> =
            outcomes.iter().filter(|(_, o)| o.is_failure()).collect();
        assert!(
            matches!(failed.as_slice(), [(id, RedriveOutcome::SendFailed(e))] if *id == order.id && e.contains("queue unavailable")),
            "{outcomes:?}"
        );
        assert_eq!(status(&store, &order.id).await, DeadLetterStatus::Open);
        assert_eq!(status(&store, &coupon.id).await, DeadLetterStatus::Redriven);
        assert_eq!(sender.sent().len(), 1);
    }

    #[tokio::test]
    async fn redrive_by_id_sends_only_those_and_names_every_id_it_cannot() {
        let order = dead("order-updater", "m-1", "body-1");
        let coupon = dead("coupon-granter", "m-2", "body-2");
        let relay = dead("outbox-relay", "shard-1", "stream records");
        let done = dead("order-updater", "m-3", "body-3");
        let store = store_with(&[order.clone(), coupon.clone(), relay.clone(), done.clone()]).await;
        store
            .mark_dead_letter(
                &done.id,
                DeadLetterStatus::Open,
                DeadLetterStatus::Compensated,
                now(),
            )
            .await
            .expect("mark");
        let sender = Sender::default();

        let ids = [
            coupon.id.clone(),
            "dead-letter:order-updater:nope".to_owned(),
            relay.id.clone(),
            done.id.clone(),
        ];
        let outcomes = redrive(&store, &sender, Some(&ids), now())
            .await
            .expect("redrive");
        assert_eq!(
            outcomes,
            vec![
                (
                    coupon.id.clone(),
                    RedriveOutcome::Redriven {
                        queue_url: COUPON_QUEUE.into()
                    }
                ),
                (ids[1].clone(), RedriveOutcome::Unknown),
                (relay.id.clone(), RedriveOutcome::NoSourceQueue),
                (
                    done.id.clone(),
                    RedriveOutcome::NotOpen(DeadLetterStatus::Compensated)
                ),
            ]
        );
        let failures: Vec<bool> = outcomes.iter().map(|(_, o)| o.is_failure()).collect();
        assert_eq!(failures, vec![false, true, true, false]);
        assert_eq!(sender.sent().len(), 1);
        assert_eq!(sender.sent()[0].0, COUPON_QUEUE);
        assert_eq!(
            status(&store, &order.id).await,
            DeadLetterStatus::Open,
            "not asked for"
        );
        assert_eq!(status(&store, &relay.id).await, DeadLetterStatus::Open);
    }

    #[tokio::test]
    async fn list_shows_open_ones_unless_asked_for_all() {
        let order = dead("order-updater", "m-1", "body-1");
        let coupon = dead("coupon-granter", "m-2", "body-2");
        let store = store_with(&[order.clone(), coupon.clone()]).await;
        store
            .mark_dead_letter(
                &coupon.id,
                DeadLetterStatus::Open,
                DeadLetterStatus::Redriven,
                now(),
            )
            .await
            .expect("mark");
        let ids = |dead: Vec<DeadLetter>| dead.into_iter().map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(
            ids(list(&store, false).await.expect("list")),
            vec![order.id.clone()]
        );
        let mut all = ids(list(&store, true).await.expect("list all"));
        all.sort();
        let mut expected = vec![order.id, coupon.id];
        expected.sort();
        assert_eq!(all, expected);
    }

    fn effects() -> (
        Arc<MemoryEffects>,
        Arc<MemoryEffects>,
        Vec<Arc<dyn Effects>>,
    ) {
        let orders = Arc::new(MemoryEffects::new(Consumer::OrderUpdater));
        let coupons = Arc::new(MemoryEffects::new(Consumer::CouponGranter));
        let all: Vec<Arc<dyn Effects>> = vec![orders.clone(), coupons.clone()];
        (orders, coupons, all)
    }

    #[tokio::test]
    async fn compensate_applies_the_effect_once_even_when_run_twice() {
        let paid = event(1, "paid");
        let dead_coupon = dead("coupon-granter", "m-1", &paid.to_json());
        let store = store_with(std::slice::from_ref(&dead_coupon)).await;
        let (orders, coupons, all) = effects();

        let first = compensate(&store, &all, &dead_coupon.id, now())
            .await
            .expect("compensate");
        assert_eq!(
            first,
            CompensateOutcome::Compensated {
                consumer: Consumer::CouponGranter,
                effect: Outcome::Applied
            }
        );
        assert_eq!(
            status(&store, &dead_coupon.id).await,
            DeadLetterStatus::Compensated
        );
        let second = compensate(&store, &all, &dead_coupon.id, now())
            .await
            .expect("again");
        assert_eq!(
            second,
            CompensateOutcome::NotOpen(DeadLetterStatus::Compensated)
        );
        assert_eq!(coupons.recorded_count(), 1);
        assert_eq!(
            coupons.effects().get(&paid.order_id),
            Some(&paid.payment_id),
            "the coupon is granted for the order"
        );
        assert_eq!(orders.recorded_count(), 0, "only its own consumer's effect");
    }

    #[tokio::test]
    async fn compensate_counts_an_effect_made_already_as_done() {
        let paid = event(1, "paid");
        let dead_order = dead("order-updater", "m-1", &paid.to_json());
        let store = store_with(std::slice::from_ref(&dead_order)).await;
        let (orders, _, all) = effects();
        orders
            .apply(&paid, now())
            .await
            .expect("applied by a redelivery");

        let outcome = compensate(&store, &all, &dead_order.id, now())
            .await
            .expect("compensate");
        assert_eq!(
            outcome,
            CompensateOutcome::Compensated {
                consumer: Consumer::OrderUpdater,
                effect: Outcome::Duplicate
            }
        );
        assert_eq!(orders.recorded_count(), 1);
        assert_eq!(
            status(&store, &dead_order.id).await,
            DeadLetterStatus::Compensated
        );
    }

    #[tokio::test]
    async fn compensate_of_an_event_with_no_effect_marks_it_done() {
        let closed = event(1, "closed");
        let dead_order = dead("order-updater", "m-1", &closed.to_json());
        let store = store_with(std::slice::from_ref(&dead_order)).await;
        let (orders, _, all) = effects();

        let outcome = compensate(&store, &all, &dead_order.id, now())
            .await
            .expect("compensate");
        assert_eq!(
            outcome,
            CompensateOutcome::Compensated {
                consumer: Consumer::OrderUpdater,
                effect: Outcome::Ignored
            }
        );
        assert_eq!(orders.recorded_count(), 0);
        assert_eq!(
            status(&store, &dead_order.id).await,
            DeadLetterStatus::Compensated
        );
    }

    #[tokio::test]
    async fn compensate_refuses_what_it_cannot_run_and_changes_nothing() {
        let malformed = dead("order-updater", "m-1", "{not json");
        let relay = dead("outbox-relay", "shard-1", &event(2, "paid").to_json());
        // A consumer this code has no effects for, with a queue of its own.
        let mut stranger = dead("ledger", "m-3", &event(3, "paid").to_json());
        stranger.source_queue_url = Some("https://sqs.local/123456789012/ledger".into());
        let redriven = dead("coupon-granter", "m-4", &event(4, "paid").to_json());
        let store = store_with(&[
            malformed.clone(),
            relay.clone(),
            stranger.clone(),
            redriven.clone(),
        ])
        .await;
        store
            .mark_dead_letter(
                &redriven.id,
                DeadLetterStatus::Open,
                DeadLetterStatus::Redriven,
                now(),
            )
            .await
            .expect("mark");
        let (orders, coupons, all) = effects();

        let err = compensate(&store, &all, &malformed.id, now())
            .await
            .expect_err("malformed");
        assert!(
            matches!(
                err,
                CompensateError::UnreadableBody(EventError::Malformed(_))
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not an event"), "{err}");
        let err = compensate(&store, &all, &relay.id, now())
            .await
            .expect_err("relay");
        assert!(matches!(err, CompensateError::NoSourceQueue), "{err}");
        assert!(err.to_string().contains("check-back"), "{err}");
        let err = compensate(&store, &all, &stranger.id, now())
            .await
            .expect_err("stranger");
        assert!(
            matches!(&err, CompensateError::UnknownConsumer(c) if c == "ledger"),
            "{err}"
        );
        let err = compensate(&store, &all, "dead-letter:x:y", now())
            .await
            .expect_err("unknown");
        assert!(
            matches!(&err, CompensateError::Unknown(id) if id == "dead-letter:x:y"),
            "{err}"
        );
        let outcome = compensate(&store, &all, &redriven.id, now())
            .await
            .expect("redriven");
        assert_eq!(
            outcome,
            CompensateOutcome::NotOpen(DeadLetterStatus::Redriven)
        );

        for id in [&malformed.id, &relay.id, &stranger.id] {
            assert_eq!(status(&store, id).await, DeadLetterStatus::Open, "{id}");
        }
        assert_eq!(orders.recorded_count() + coupons.recorded_count(), 0);
    }
}
