//! The outbox on the in-memory store: relay, consumers, dead letters and the check-back, with
//! fakes for the queues that record what was sent and fail where the test says.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::check_back::{ALARM_AFTER_REPUBLISHES, CheckBackDeps, run_check_back};
use super::consume::{ConsumerDeps, Outcome, RetryDelays, consume, consume_one};
use super::dead_letters::{DeadLetterSource, parse_sources, store_dead_letters};
use super::relay::{event_of, relay};
use crate::clock::ManualClock;
use crate::domain::event::{Consumer, PaymentEvent};
use crate::domain::idempotency::IdempotencyRecord;
use crate::domain::payment::Transition;
use crate::domain::{HistoryEntry, OrderId, Payment, PaymentId, PaymentStatus, Timestamp};
use crate::ports::{
    Applied, Clock, ConsumerQueue, DeadLetterStatus, DeadLetterStore, Effects, EventBus,
    NewPayment, PaymentStore, PublishError, QueueMessage, StoreError,
};
use crate::queue::PaymentChange;
use crate::store::{MemoryDeadLetters, MemoryEffects, MemoryStore};

const T0: Timestamp = Timestamp::from_unix_s(1_800_000_000);
const AFTER_S: i64 = 600;

/// Publishes into a list; fails at the `fail_at`-th event it is asked to send (counting from 0
/// over its whole life) while `failures` lasts.
#[derive(Default)]
struct RecordingBus {
    sent: Mutex<Vec<(Consumer, PaymentEvent)>>,
    asked: AtomicUsize,
    fail_at: Mutex<Option<usize>>,
}

impl RecordingBus {
    fn sent_to(&self, consumer: Consumer) -> Vec<PaymentEvent> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| *c == consumer)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, events: &[PaymentEvent], to: &[Consumer]) -> Result<(), PublishError> {
        // A real send suspends: concurrent runs interleave here.
        tokio::task::yield_now().await;
        for (i, event) in events.iter().enumerate() {
            let n = self.asked.fetch_add(1, Ordering::SeqCst);
            if *self.fail_at.lock().unwrap() == Some(n) {
                return Err(PublishError {
                    sent: i,
                    error: anyhow::anyhow!("queue unreachable"),
                });
            }
            for consumer in to {
                self.sent.lock().unwrap().push((*consumer, event.clone()));
            }
        }
        Ok(())
    }
}

/// A consumer's queue that records dead letters and retry delays.
#[derive(Default)]
struct RecordingQueue {
    dead: Mutex<Vec<(QueueMessage, String)>>,
    delays: Mutex<Vec<u32>>,
}

#[async_trait]
impl ConsumerQueue for RecordingQueue {
    async fn dead_letter(&self, message: &QueueMessage, error: &str) -> anyhow::Result<()> {
        self.dead
            .lock()
            .unwrap()
            .push((message.clone(), error.to_owned()));
        Ok(())
    }

    async fn delay_retry(&self, _message: &QueueMessage, seconds: u32) -> anyhow::Result<()> {
        self.delays.lock().unwrap().push(seconds);
        Ok(())
    }
}

/// Effects whose store fails for one order (transient), and otherwise the memory effects.
struct FlakyEffects {
    inner: MemoryEffects,
    failing_order: Mutex<Option<OrderId>>,
}

#[async_trait]
impl Effects for FlakyEffects {
    fn consumer(&self) -> Consumer {
        self.inner.consumer()
    }

    async fn apply(&self, event: &PaymentEvent, now: Timestamp) -> Result<Applied, StoreError> {
        if self.failing_order.lock().unwrap().as_ref() == Some(&event.order_id) {
            return Err(StoreError::Unexpected(anyhow::anyhow!("throttled")));
        }
        self.inner.apply(event, now).await
    }

    async fn recorded(&self, event_id: &str) -> Result<bool, StoreError> {
        self.inner.recorded(event_id).await
    }
}

fn pending_payment(id: &str, order: &str) -> Payment {
    serde_json::from_value(serde_json::json!({
        "payment_id": id,
        "order_id": order,
        "amount_minor": 990,
        "currency": "CNY",
        "provider": "sandbox",
        "subject": "outbox test",
        "status": "pending",
        "version": 1,
        "expires_at": T0.plus_s(900).unix_ms(),
        "created_at": T0.unix_ms(),
        "updated_at": T0.unix_ms(),
    }))
    .unwrap()
}

/// Creates a payment and pays it at `T0 + 10 s`; returns the stream change of the payment and
/// the event the relay makes of it.
async fn pay(store: &MemoryStore, id: &str, order: &str) -> (PaymentChange, PaymentEvent) {
    let payment = pending_payment(id, order);
    let new = NewPayment {
        payment: payment.clone(),
        history: HistoryEntry::created(T0),
        claim: IdempotencyRecord::claim(
            format!("order:{order}"),
            "hash".into(),
            T0.plus_s(30),
            T0.plus_s(3600),
            id.to_owned(),
        ),
        replaces: None,
    };
    store.insert_payment(&new, T0).await.unwrap();
    let transition = Transition::new(
        payment.payment_id.clone(),
        (PaymentStatus::Pending, PaymentStatus::Paid),
        1,
        T0.plus_s(10),
        "callback",
    );
    store.apply_transition(&transition).await.unwrap();
    let after = store
        .payment(&payment.payment_id)
        .await
        .unwrap()
        .unwrap()
        .payment;
    let change = PaymentChange {
        sequence_number: format!("seq-{id}"),
        after: Some(after),
        before: Some((PaymentStatus::Pending, 1)),
    };
    let event = event_of(&change).unwrap();
    (change, event)
}

fn message(id: &str, body: &str, receive_count: u32) -> QueueMessage {
    QueueMessage {
        message_id: id.to_owned(),
        receipt_handle: format!("rh-{id}-{receive_count}"),
        body: body.to_owned(),
        attributes: BTreeMap::from([
            (
                "ApproximateReceiveCount".to_owned(),
                receive_count.to_string(),
            ),
            ("SentTimestamp".to_owned(), T0.unix_ms().to_string()),
        ]),
        message_attributes: BTreeMap::new(),
        source_arn: "arn:aws:sqs:us-east-1:000000000000:order-updater".into(),
    }
}

fn consumer_deps<'a>(effects: &'a dyn Effects, queue: &'a RecordingQueue) -> ConsumerDeps<'a> {
    ConsumerDeps {
        effects,
        queue,
        retry: RetryDelays {
            base_s: 10,
            max_s: 900,
        },
    }
}

#[tokio::test]
async fn the_relay_publishes_transitions_only_and_retries_from_the_first_unsent() {
    let store = MemoryStore::new().with_check_back_after(AFTER_S);
    let (paid_a, event_a) = pay(&store, "PAYA", "order-a").await;
    let (paid_b, event_b) = pay(&store, "PAYB", "order-b").await;
    // A write that did not change the version (a check recorded, a pay_url stored) and an item
    // that is not a payment publish nothing.
    let mut unversioned = paid_a.clone();
    unversioned.sequence_number = "seq-unversioned".into();
    unversioned.before = Some((PaymentStatus::Paid, 2));
    let other_item = PaymentChange {
        sequence_number: "seq-history".into(),
        after: None,
        before: None,
    };
    assert_eq!(event_of(&unversioned), None);
    assert_eq!(event_a.event_id, "PAYA:v2");
    assert_eq!(event_a.event_type, "payment.paid");

    let bus = RecordingBus::default();
    // The queue fails at the second event: the batch names paid_b's record, so the event
    // source retries from there; paid_a's event is out.
    *bus.fail_at.lock().unwrap() = Some(1);
    let batch = vec![
        Ok(paid_a.clone()),
        Ok(unversioned.clone()),
        Ok(other_item.clone()),
        Ok(paid_b.clone()),
    ];
    let summary = relay(&bus, batch).await;
    assert_eq!(summary.failed_at.as_deref(), Some("seq-PAYB"));
    assert_eq!(summary.published, 1);
    assert_eq!(bus.sent_to(Consumer::OrderUpdater), vec![event_a.clone()]);
    assert_eq!(bus.sent_to(Consumer::CouponGranter), vec![event_a.clone()]);

    // The retry (from paid_b on) goes through.
    let summary = relay(&bus, vec![Ok(other_item), Ok(paid_b)]).await;
    assert_eq!(summary.failed_at, None);
    assert_eq!(
        bus.sent_to(Consumer::CouponGranter),
        vec![event_a, event_b.clone()]
    );

    // An unreadable record fails the same way on every retry: it is skipped (with an alarm),
    // and the good records around it are published.
    let bus = RecordingBus::default();
    let (paid_c, event_c) = pay(&store, "PAYC", "order-c").await;
    let (paid_d, event_d) = pay(&store, "PAYD", "order-d").await;
    let summary = relay(
        &bus,
        vec![
            Ok(paid_c),
            Err(("seq-bad".into(), anyhow::anyhow!("not a payment"))),
            Ok(paid_d),
        ],
    )
    .await;
    assert_eq!(summary.failed_at, None);
    assert_eq!((summary.published, summary.unreadable), (2, 1));
    assert_eq!(bus.sent_to(Consumer::OrderUpdater), vec![event_c, event_d]);
}

#[tokio::test]
async fn duplicates_reordering_and_a_crash_before_the_ack_apply_each_effect_once() {
    let store = MemoryStore::new();
    let (_, paid) = pay(&store, "PAYD", "order-d").await;
    let created = PaymentEvent::of_change(&pending_payment("PAYD", "order-d"), None);
    for consumer in Consumer::ALL {
        let effects = MemoryEffects::new(consumer);
        let queue = RecordingQueue::default();
        let deps = consumer_deps(&effects, &queue);
        // Out of order: the paid event before the creation; then the paid event again (a
        // duplicate delivery), then again after a crash between the effect and the ack (the
        // same message comes back with a higher receive count).
        let paid_body = paid.to_json();
        let batch = [
            message("m1", &paid_body, 1),
            message("m0", &created.to_json(), 1),
            message("m2", &paid_body, 1),
        ];
        assert!(consume(&deps, &batch, T0).await.is_empty());
        assert_eq!(
            consume_one(&deps, &message("m1", &paid_body, 2), T0).await,
            Outcome::Duplicate
        );
        assert_eq!(
            effects.effects(),
            [(OrderId::parse("order-d").unwrap(), paid.payment_id.clone())].into()
        );
        assert_eq!(effects.recorded_count(), 1);
        assert!(queue.dead.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn at_most_one_coupon_per_order_even_when_a_second_payment_is_paid() {
    let store = MemoryStore::new();
    let (_, first) = pay(&store, "PAYE1", "order-e").await;
    // Stands for a second paid payment of the same order (an anomaly the order-updater alarms on).
    let mut second = first.clone();
    second.payment_id = PaymentId::parse("PAYE2").unwrap();
    second.event_id = "PAYE2:v2".into();
    second.attempt = 2;
    let coupons = MemoryEffects::new(Consumer::CouponGranter);
    let queue = RecordingQueue::default();
    let deps = consumer_deps(&coupons, &queue);
    let batch = [
        message("m1", &first.to_json(), 1),
        message("m2", &second.to_json(), 1),
    ];
    assert!(consume(&deps, &batch, T0).await.is_empty());
    assert_eq!(
        consume_one(&deps, &message("m3", &second.to_json(), 1), T0).await,
        Outcome::Duplicate
    );
    assert_eq!(
        coupons.effects(),
        [(first.order_id.clone(), first.payment_id.clone())].into()
    );
    // Both events are recorded, so the check-back will not chase the second.
    assert!(coupons.recorded(&second.event_id).await.unwrap());
}

#[tokio::test]
async fn permanent_errors_go_to_the_dead_letter_queue_at_once_and_fail_nothing_else() {
    let store = MemoryStore::new();
    let (_, paid) = pay(&store, "PAYF", "order-f").await;
    let mut future: serde_json::Value = serde_json::from_str(&paid.to_json()).unwrap();
    future["schema_version"] = 2.into();
    let effects = MemoryEffects::new(Consumer::OrderUpdater);
    let queue = RecordingQueue::default();
    let deps = consumer_deps(&effects, &queue);
    let batch = [
        message("bad-json", "{not json", 1),
        message("good", &paid.to_json(), 1),
        message("bad-schema", &future.to_string(), 1),
    ];
    // Nothing reported failed: the bad ones are dead-lettered (and acknowledged) on their first
    // receive, the good one is applied.
    assert!(consume(&deps, &batch, T0).await.is_empty());
    let dead = queue.dead.lock().unwrap();
    let dead_ids: Vec<&str> = dead.iter().map(|(m, _)| m.message_id.as_str()).collect();
    assert_eq!(dead_ids, ["bad-json", "bad-schema"]);
    assert!(
        dead[1].1.contains("unknown event schema version 2"),
        "{}",
        dead[1].1
    );
    assert_eq!(effects.recorded_count(), 1);
    assert!(queue.delays.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_transient_failure_fails_only_its_message_with_a_growing_delay() {
    let store = MemoryStore::new();
    let (_, ok) = pay(&store, "PAYG1", "order-g1").await;
    let (_, stuck) = pay(&store, "PAYG2", "order-g2").await;
    let effects = FlakyEffects {
        inner: MemoryEffects::new(Consumer::OrderUpdater),
        failing_order: Mutex::new(Some(stuck.order_id.clone())),
    };
    let queue = RecordingQueue::default();
    let deps = consumer_deps(&effects, &queue);
    for receive in 1..=4 {
        let batch = [
            message("ok", &ok.to_json(), receive),
            message("stuck", &stuck.to_json(), receive),
        ];
        assert_eq!(consume(&deps, &batch, T0).await, ["stuck"]);
    }
    assert_eq!(*queue.delays.lock().unwrap(), [10, 20, 40, 80]);
    assert!(
        queue.dead.lock().unwrap().is_empty(),
        "retries are the queue's to count"
    );
    // Once the store recovers, the message applies, once.
    *effects.failing_order.lock().unwrap() = None;
    assert!(
        consume(&deps, &[message("stuck", &stuck.to_json(), 5)], T0)
            .await
            .is_empty()
    );
    assert_eq!(effects.inner.effects().len(), 2);
    assert_eq!(RetryDelays::default().after(30), 900);
}

#[tokio::test]
async fn the_check_back_republishes_missing_effects_and_nothing_else() {
    let store = MemoryStore::new().with_check_back_after(AFTER_S);
    let orders: Arc<MemoryEffects> = Arc::new(MemoryEffects::new(Consumer::OrderUpdater));
    let coupons: Arc<MemoryEffects> = Arc::new(MemoryEffects::new(Consumer::CouponGranter));
    let effects: Vec<Arc<dyn Effects>> = vec![orders.clone(), coupons.clone()];
    // done: both effects recorded. half: the coupon is missing. lost: its event never reached
    // anyone (the relay gave up). pending: never paid.
    let (_, done) = pay(&store, "PAYDONE", "order-done").await;
    let (_, half) = pay(&store, "PAYHALF", "order-half").await;
    let (_, lost) = pay(&store, "PAYLOST", "order-lost").await;
    let pending = pending_payment("PAYPEND", "order-pend");
    store
        .insert_payment(
            &NewPayment {
                payment: pending,
                history: HistoryEntry::created(T0),
                claim: IdempotencyRecord::claim(
                    "order:order-pend".into(),
                    "hash".into(),
                    T0.plus_s(30),
                    T0.plus_s(3600),
                    "PAYPEND".into(),
                ),
                replaces: None,
            },
            T0,
        )
        .await
        .unwrap();
    for e in [&done, &half] {
        orders.apply(e, T0).await.unwrap();
    }
    coupons.apply(&done, T0).await.unwrap();

    let bus = RecordingBus::default();
    let clock = ManualClock::at(T0);
    let deps = CheckBackDeps {
        store: &store,
        effects: &effects,
        bus: &bus,
        after_s: AFTER_S,
        page: 25,
        concurrency: 4,
        clock: &clock,
        stop_at: None,
    };
    // Before the check is due, nothing happens.
    clock.set(T0.plus_s(AFTER_S));
    let early = run_check_back(&deps).await;
    assert_eq!(early.checked, 0);
    let due = T0.plus_s(10 + AFTER_S);
    clock.set(due);
    let summary = run_check_back(&deps).await;
    assert_eq!(
        (summary.checked, summary.complete, summary.republished),
        (3, 1, 2)
    );
    assert_eq!(bus.sent_to(Consumer::OrderUpdater), vec![lost.clone()]);
    let mut to_coupons = bus.sent_to(Consumer::CouponGranter);
    to_coupons.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    assert_eq!(to_coupons, vec![half.clone(), lost.clone()]);
    // The republished event is the relay's event, byte for byte.
    assert_eq!(
        bus.sent_to(Consumer::OrderUpdater)[0].to_json(),
        lost.to_json()
    );

    // The consumers apply them; the next due run finds everything and empties the index.
    for e in [&half, &lost] {
        coupons.apply(e, due).await.unwrap();
    }
    orders.apply(&lost, due).await.unwrap();
    clock.set(due.plus_s(AFTER_S));
    let again = run_check_back(&deps).await;
    assert_eq!(
        (again.checked, again.complete, again.republished),
        (2, 2, 0)
    );
    clock.set(due.plus_s(100 * AFTER_S));
    let later = run_check_back(&deps).await;
    assert_eq!(later.checked, 0);
    assert_eq!(bus.sent.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn the_check_back_keeps_chasing_with_an_alarm_and_overlapping_runs_publish_once() {
    let store = MemoryStore::new().with_check_back_after(AFTER_S);
    let effects: Vec<Arc<dyn Effects>> = vec![Arc::new(MemoryEffects::new(Consumer::OrderUpdater))];
    let (_, lost) = pay(&store, "PAYX", "order-x").await;
    let bus = RecordingBus::default();
    let clock = ManualClock::at(T0);
    let deps = CheckBackDeps {
        store: &store,
        effects: &effects,
        bus: &bus,
        after_s: AFTER_S,
        page: 25,
        concurrency: 4,
        clock: &clock,
        stop_at: None,
    };
    let mut now = T0.plus_s(10 + AFTER_S);
    for round in 1..=ALARM_AFTER_REPUBLISHES + 1 {
        // Two runs at once: one claim wins.
        clock.set(now);
        let (a, b) = tokio::join!(run_check_back(&deps), run_check_back(&deps));
        assert_eq!(a.republished + b.republished, 1, "round {round}");
        now = now.plus_s(AFTER_S);
    }
    let payment = store
        .payment(&lost.payment_id)
        .await
        .unwrap()
        .unwrap()
        .payment;
    assert_eq!(payment.effects_republished, ALARM_AFTER_REPUBLISHES + 1);
    assert_eq!(
        bus.sent_to(Consumer::OrderUpdater).len(),
        usize::try_from(ALARM_AFTER_REPUBLISHES + 1).unwrap()
    );
}

/// A clock one second further on at every reading.
struct Ticking(ManualClock);

impl Clock for Ticking {
    fn now(&self) -> Timestamp {
        let now = self.0.now();
        self.0.advance_ms(1000);
        now
    }
}

#[tokio::test]
async fn a_check_back_run_starts_no_check_past_its_stop_and_the_next_run_takes_the_rest() {
    let store = MemoryStore::new().with_check_back_after(AFTER_S);
    let effects: Vec<Arc<dyn Effects>> = vec![Arc::new(MemoryEffects::new(Consumer::OrderUpdater))];
    for i in 0..5 {
        pay(&store, &format!("PAY{i}"), &format!("order-{i}")).await;
    }
    let bus = RecordingBus::default();
    let due = T0.plus_s(10 + AFTER_S);
    // One check at a time. The run reads the clock as it starts (due) and each check once
    // before it starts (due + 1 s, + 2 s, ...): three start before the stop at due + 3.5 s.
    let clock = Ticking(ManualClock::at(due));
    let mut deps = CheckBackDeps {
        store: &store,
        effects: &effects,
        bus: &bus,
        after_s: AFTER_S,
        page: 25,
        concurrency: 1,
        clock: &clock,
        stop_at: Some(due.plus_ms(3500)),
    };
    let first = run_check_back(&deps).await;
    assert_eq!((first.checked, first.republished, first.left), (3, 3, 2));
    deps.stop_at = None;
    clock.0.set(due);
    let second = run_check_back(&deps).await;
    assert_eq!((second.checked, second.republished, second.left), (2, 2, 0));
    let mut sent: Vec<PaymentId> = bus
        .sent_to(Consumer::OrderUpdater)
        .into_iter()
        .map(|e| e.payment_id)
        .collect();
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 5, "every payment published once: {sent:?}");
}

#[tokio::test]
async fn dead_letters_are_stored_whole_once_and_name_their_source() {
    let sources = parse_sources(
        "order-updater|arn:dlq-orders|http://q/orders,outbox-relay|arn:relay-failures|",
    )
    .unwrap();
    assert_eq!(
        sources[1],
        DeadLetterSource {
            consumer: "outbox-relay".into(),
            dead_letter_queue_arn: "arn:relay-failures".into(),
            source_queue_url: None,
        }
    );
    assert!(parse_sources("order-updater|arn").is_err());
    let store = MemoryDeadLetters::default();
    // Moved by the queue's redrive policy after 5 receives: SQS keeps the id and the count,
    // and this receive from the dead-letter queue is the sixth.
    let mut redriven = message("m-redriven", "{\"schema_version\":1}", 6);
    redriven.source_arn = "arn:dlq-orders".into();
    // Dead-lettered by the consumer itself: it says why, and which message it was.
    let mut permanent = message("m-new-id", "{not json", 1);
    permanent.source_arn = "arn:dlq-orders".into();
    permanent.message_attributes = BTreeMap::from([
        ("error".into(), "malformed event: ...".into()),
        ("consumer".into(), "order-updater".into()),
        ("source_message_id".into(), "m-original".into()),
        ("receive_count".into(), "1".into()),
    ]);
    let now = T0.plus_s(60);
    let failed = store_dead_letters(&store, &sources, &[redriven.clone(), permanent], now).await;
    assert!(failed.is_empty());
    // The same message delivered again is stored once.
    assert!(
        store_dead_letters(&store, &sources, &[redriven], now.plus_s(5))
            .await
            .is_empty()
    );
    let all = store.dead_letters().await.unwrap();
    assert_eq!(all.len(), 2);
    let by_policy = store
        .dead_letter("dead-letter:order-updater:m-redriven")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_policy.receive_count, 5);
    assert!(
        by_policy.error.contains("redrive policy"),
        "{}",
        by_policy.error
    );
    assert_eq!(
        by_policy.source_queue_url.as_deref(),
        Some("http://q/orders")
    );
    assert_eq!(by_policy.first_seen, T0);
    assert_eq!(by_policy.last_seen, now.plus_s(5));
    assert_eq!(by_policy.status, DeadLetterStatus::Open);
    let by_consumer = store
        .dead_letter("dead-letter:order-updater:m-original")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_consumer.error, "malformed event: ...");
    assert_eq!(by_consumer.body, "{not json");
    assert_eq!(by_consumer.receive_count, 1);

    // Redriven, then dead again (SQS keeps the message id): open once more, not swallowed.
    assert!(
        store
            .mark_dead_letter(
                &by_policy.id,
                DeadLetterStatus::Open,
                DeadLetterStatus::Redriven,
                now
            )
            .await
            .unwrap()
    );
    let mut again = message("m-redriven", "{\"schema_version\":1}", 8);
    again.source_arn = "arn:dlq-orders".into();
    assert!(
        store_dead_letters(&store, &sources, &[again], now.plus_s(60))
            .await
            .is_empty()
    );
    let reopened = store.dead_letter(&by_policy.id).await.unwrap().unwrap();
    assert_eq!(reopened.status, DeadLetterStatus::Open);
    assert_eq!(reopened.receive_count, 7);
    assert_eq!(reopened.first_seen, T0);
}

/// Delivers `events` to a consumer as queue messages, each `copies` times.
async fn deliver(deps: &ConsumerDeps<'_>, events: &[PaymentEvent], copies: u32) {
    for (i, event) in events.iter().enumerate() {
        for copy in 1..=copies {
            let m = message(&format!("m-{i}-{}", event.event_id), &event.to_json(), copy);
            assert!(consume(deps, std::slice::from_ref(&m), T0).await.is_empty());
        }
    }
}

#[tokio::test]
async fn a_relay_that_gives_up_and_consumers_that_crash_still_end_with_one_effect_per_order() {
    let store = MemoryStore::new().with_check_back_after(AFTER_S);
    let mut changes = Vec::new();
    let mut events = Vec::new();
    for (id, order) in [
        ("PAYR1", "order-r1"),
        ("PAYR2", "order-r2"),
        ("PAYR3", "order-r3"),
    ] {
        let (change, event) = pay(&store, id, order).await;
        changes.push(Ok(change));
        events.push(event);
    }
    // The transactions are written; the relay sends the first event, fails on the second, and
    // its event source gives up on the rest (no retry here).
    let bus = RecordingBus::default();
    *bus.fail_at.lock().unwrap() = Some(1);
    let summary = relay(&bus, changes).await;
    assert_eq!(summary.failed_at.as_deref(), Some("seq-PAYR2"));

    let orders = Arc::new(MemoryEffects::new(Consumer::OrderUpdater));
    let coupons = Arc::new(MemoryEffects::new(Consumer::CouponGranter));
    let queue = RecordingQueue::default();
    // Each delivery arrives twice, and each consumer "crashes" after its effect and before the
    // acknowledgement (the same message comes back with a higher receive count).
    for effects in [&orders, &coupons] {
        let deps = consumer_deps(effects.as_ref(), &queue);
        deliver(&deps, &bus.sent_to(effects.consumer()), 3).await;
    }
    assert_eq!(orders.effects().len(), 1);

    // The check-back finds the two payments whose effects never came and publishes them again;
    // they arrive in reverse order, with a stray copy of the first event.
    let effects: Vec<Arc<dyn Effects>> = vec![orders.clone(), coupons.clone()];
    let republish = RecordingBus::default();
    let clock = ManualClock::at(T0);
    let deps = CheckBackDeps {
        store: &store,
        effects: &effects,
        bus: &republish,
        after_s: AFTER_S,
        page: 25,
        concurrency: 4,
        clock: &clock,
        stop_at: None,
    };
    let due = T0.plus_s(10 + AFTER_S);
    clock.set(due);
    let run = run_check_back(&deps).await;
    assert_eq!((run.complete, run.republished), (1, 2));
    for effects in [&orders, &coupons] {
        let consumer_deps = consumer_deps(effects.as_ref(), &queue);
        let mut again = republish.sent_to(effects.consumer());
        again.reverse();
        again.push(events[0].clone());
        deliver(&consumer_deps, &again, 2).await;
    }

    for effects in [&orders, &coupons] {
        let expected: std::collections::HashMap<OrderId, PaymentId> = events
            .iter()
            .map(|e| (e.order_id.clone(), e.payment_id.clone()))
            .collect();
        assert_eq!(effects.effects(), expected, "{}", effects.consumer());
        assert_eq!(effects.recorded_count(), 3);
    }
    clock.set(due.plus_s(AFTER_S));
    let settled = run_check_back(&deps).await;
    assert_eq!((settled.complete, settled.republished), (2, 0));
    assert!(queue.dead.lock().unwrap().is_empty());
}
