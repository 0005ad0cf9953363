//! The outbox, its consumers, the dead letters and the check-back: through the real stack (the
//! payments table's stream read by the stack's event source mappings, the relay, the consumer and
//! dead-letter binaries, moto's SQS with its redrive policy), and the stores and the check-back
//! on moto in-process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::json;
use shared::app::check_back::{CheckBackDeps, run_check_back};
use shared::app::consume::{ConsumerDeps, RetryDelays, consume};
use shared::app::dead_letters::{DeadLetterSource, store_dead_letters};
use shared::app::redrive::{RedriveOutcome, redrive};
use shared::clock::ManualClock;
use shared::domain::event::{Consumer, PaymentEvent};
use shared::domain::idempotency::IdempotencyRecord;
use shared::domain::payment::Transition;
use shared::domain::{HistoryEntry, Payment, PaymentId, PaymentStatus, Timestamp};
use shared::ports::{
    Applied, DeadLetter, DeadLetterStatus, DeadLetterStore, Effects, NewPayment, PaymentStore,
    QueueMessage, StoreError,
};
use shared::queue::{SqsConsumerQueue, SqsEventBus, SqsSender};
use shared::store::{DynamoDeadLetters, DynamoEffects, DynamoStore};
use tests::{
    create, create_body, dynamo, fresh_table_set, sandbox, scan_all, sqs, stack, unique,
    wait_for_payment,
};

type Item = HashMap<String, AttributeValue>;

fn string(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        Some(AttributeValue::N(n)) => Some(n.clone()),
        _ => None,
    }
}

async fn get(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Option<Item> {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every stored dead letter of the stack.
async fn dead_letters() -> Vec<DeadLetter> {
    DynamoDeadLetters::new(dynamo(None).await, &stack().compensations_table)
        .dead_letters()
        .await
        .unwrap()
}

async fn dead_letter_with_body(body: &str, timeout: Duration) -> Option<DeadLetter> {
    eventually(timeout, || async {
        dead_letters().await.into_iter().find(|d| d.body == body)
    })
    .await
}

/// A payment of `order_id` as it is once paid (version 2), and its paid event.
fn paid(payment_id: &str, order_id: &str, at: Timestamp) -> (Payment, PaymentEvent) {
    let payment: Payment = serde_json::from_value(json!({
        "payment_id": payment_id,
        "order_id": order_id,
        "amount_minor": 4200,
        "currency": "CNY",
        "provider": "sandbox",
        "subject": format!("outbox {order_id}"),
        "status": "paid",
        "version": 2,
        "expires_at": at.plus_s(900).unix_ms(),
        "created_at": at.unix_ms(),
        "updated_at": at.unix_ms(),
    }))
    .unwrap();
    let event = PaymentEvent::of_change(&payment, Some(PaymentStatus::Pending));
    (payment, event)
}

fn new_payment_id() -> String {
    ulid::Ulid::new().to_string()
}

#[tokio::test]
async fn paid_payments_with_duplicated_notifications_get_one_order_update_and_one_coupon_each() {
    let client = dynamo(None).await;
    let mut paid = Vec::new();
    for i in 0..4 {
        let order_id = unique(&format!("outbox{i}"));
        let body = create_body(&order_id, 1000 + i);
        // Every notification is delivered three more times.
        sandbox::set_faults(body["subject"].as_str().unwrap(), json!({ "duplicate": 3 })).await;
        let created = create(&body).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let payment_id = created.body["payment_id"].as_str().unwrap().to_owned();
        sandbox::pay(created.body["pay_url"].as_str().unwrap()).await;
        paid.push((order_id, payment_id));
    }
    for (order_id, payment_id) in &paid {
        let reply = wait_for_payment(payment_id, 10_000, |p| p["status"] == "paid").await;
        assert_eq!(reply.body["status"], "paid", "{}", reply.text);
        let event_id = format!("{payment_id}:v2");
        for (table, effect) in [
            (&stack().orders_table, format!("ORDER#{order_id}")),
            (&stack().coupons_table, format!("COUPON#{order_id}")),
        ] {
            let item = eventually(Duration::from_secs(20), || get(&client, table, &effect))
                .await
                .unwrap_or_else(|| panic!("{effect} never appeared in {table}"));
            assert_eq!(
                string(&item, "payment_id").as_deref(),
                Some(payment_id.as_str())
            );
            assert_eq!(
                string(&item, "event_id").as_deref(),
                Some(event_id.as_str())
            );
            // One effect and one dedupe record for this order, whatever was delivered.
            let of_order: Vec<Item> = scan_all(&client, table)
                .await
                .into_iter()
                .filter(|i| string(i, "order_id").as_deref() == Some(order_id.as_str()))
                .collect();
            assert_eq!(of_order.len(), 2, "{table}: {of_order:?}");
            let dedupe = get(&client, table, &format!("EVENT#{event_id}")).await;
            assert_eq!(
                dedupe.and_then(|d| string(&d, "outcome")).as_deref(),
                Some("applied")
            );
        }
    }
    // The relay delivered them (the check-back never had to republish), and the check-back, at
    // its first look, finds their effects and takes them out of its index.
    for (_, payment_id) in &paid {
        let cleared = eventually(Duration::from_secs(40), || async {
            let item = client
                .get_item()
                .table_name(&stack().payments_table)
                .key("pk", AttributeValue::S(format!("PAY#{payment_id}")))
                .key("sk", AttributeValue::S("PAYMENT".into()))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .unwrap();
            (!item.contains_key("effects_check_at")).then_some(item)
        })
        .await
        .unwrap_or_else(|| panic!("{payment_id} is still in the effects index"));
        assert_eq!(
            cleared.get("effects_republished"),
            Some(&AttributeValue::N("0".into())),
            "{payment_id} needed the check-back: {cleared:?}"
        );
    }
    // Nothing of theirs died.
    let dead = dead_letters().await;
    for (_, payment_id) in &paid {
        assert!(
            !dead.iter().any(|d| d.body.contains(payment_id.as_str())),
            "{payment_id} has a dead letter"
        );
    }
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_on_its_first_failure_and_fails_only_its_message() {
    let client = dynamo(None).await;
    let order_id = unique("permanent");
    let (_, event) = paid(
        &new_payment_id(),
        &order_id,
        Timestamp::from_unix_s(1_800_000_000),
    );
    let malformed = format!(r#"{{"schema_version":1,"event_id":42,"order":"{order_id}"}}"#);
    let future = format!(r#"{{"schema_version":99,"order":"{order_id}"}}"#);
    let queue = sqs().await;
    let mut batch = queue
        .send_message_batch()
        .queue_url(&stack().order_updater_queue);
    for (id, body) in [
        ("good", event.to_json()),
        ("malformed", malformed.clone()),
        ("future", future.clone()),
    ] {
        batch = batch.entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(id)
                .message_body(body)
                .build()
                .unwrap(),
        );
    }
    let sent = batch.send().await.unwrap();
    assert!(sent.failed().is_empty());

    // The good one is applied (its neighbours' failures do not hold it back) ...
    let order_pk = format!("ORDER#{order_id}");
    let order = eventually(Duration::from_secs(20), || {
        get(&client, &stack().orders_table, &order_pk)
    })
    .await
    .expect("the valid event was applied");
    assert_eq!(string(&order, "event_id"), Some(event.event_id.clone()));
    // ... and each bad one reached the dead-letter queue on its first receive, then the table.
    for (body, why) in [
        (&malformed, "malformed event"),
        (&future, "unknown event schema version 99"),
    ] {
        let dead = dead_letter_with_body(body, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{body} was not dead-lettered"));
        assert_eq!(dead.consumer, "order-updater");
        assert_eq!(dead.receive_count, 1, "{dead:?}");
        assert!(dead.error.contains(why), "{dead:?}");
        assert_eq!(dead.status, DeadLetterStatus::Open);
        assert_eq!(
            dead.source_queue_url.as_deref(),
            Some(stack().order_updater_queue.as_str())
        );
    }
}

#[tokio::test]
async fn corrupt_order_data_is_dead_lettered_at_once_and_a_redrive_after_repair_applies_once() {
    let client = dynamo(None).await;
    let order_id = unique("corrupt");
    let effect_pk = format!("ORDER#{order_id}");
    // The order platform holds a corrupt record for this order (no payment): applying fails,
    // and no retry can fix it until someone repairs the record, so it is not retried.
    client
        .put_item()
        .table_name(&stack().orders_table)
        .item("pk", AttributeValue::S(effect_pk.clone()))
        .item("order_id", AttributeValue::S(order_id.clone()))
        .send()
        .await
        .unwrap();
    let (_, event) = paid(
        &new_payment_id(),
        &order_id,
        Timestamp::from_unix_s(1_800_000_000),
    );
    sqs()
        .await
        .send_message()
        .queue_url(&stack().order_updater_queue)
        .message_body(event.to_json())
        .send()
        .await
        .unwrap();

    let dead = dead_letter_with_body(&event.to_json(), Duration::from_secs(20))
        .await
        .expect("the message reached the dead-letter table");
    assert_eq!(dead.consumer, "order-updater");
    assert_eq!(dead.receive_count, 1, "{dead:?}");
    assert!(dead.error.contains("corrupt stored data"), "{dead:?}");
    assert_eq!(
        get(
            &client,
            &stack().orders_table,
            &format!("EVENT#{}", event.event_id)
        )
        .await,
        None,
        "nothing was applied"
    );

    // Repaired, then redriven: processed exactly once.
    client
        .delete_item()
        .table_name(&stack().orders_table)
        .key("pk", AttributeValue::S(effect_pk.clone()))
        .send()
        .await
        .unwrap();
    let store = DynamoDeadLetters::new(client.clone(), &stack().compensations_table);
    let sender = SqsSender::new(sqs().await);
    let now = Timestamp::from_unix_ms(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    let ids = [dead.id.clone()];
    let first = redrive(&store, &sender, Some(&ids), now).await.unwrap();
    assert_eq!(
        first,
        vec![(
            dead.id.clone(),
            RedriveOutcome::Redriven {
                queue_url: stack().order_updater_queue.clone()
            }
        )]
    );
    let order = eventually(Duration::from_secs(20), || async {
        get(&client, &stack().orders_table, &effect_pk)
            .await
            .filter(|o| o.contains_key("payment_id"))
    })
    .await
    .expect("the redriven message was applied");
    assert_eq!(string(&order, "event_id"), Some(event.event_id.clone()));
    let stored = store.dead_letter(&dead.id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeadLetterStatus::Redriven);
    // A second redrive sends nothing: the record is no longer open.
    let second = redrive(&store, &sender, Some(&ids), now).await.unwrap();
    assert_eq!(
        second,
        vec![(
            dead.id.clone(),
            RedriveOutcome::NotOpen(DeadLetterStatus::Redriven)
        )]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let of_order: Vec<Item> = scan_all(&client, &stack().orders_table)
        .await
        .into_iter()
        .filter(|i| string(i, "order_id").as_deref() == Some(order_id.as_str()))
        .collect();
    assert_eq!(
        of_order.len(),
        2,
        "one effect, one dedupe record: {of_order:?}"
    );
}

/// Inserts `payment` as pending and moves it to paid at `at`, as a callback would.
async fn insert_paid(store: &DynamoStore, payment: &Payment, at: Timestamp) {
    let mut pending = payment.clone();
    pending.status = PaymentStatus::Pending;
    pending.version = 1;
    let new = NewPayment {
        payment: pending,
        history: HistoryEntry::created(payment.created_at),
        claim: IdempotencyRecord::claim(
            format!("order:{}", payment.order_id),
            "hash".into(),
            at.plus_s(30),
            at.plus_s(3600),
            payment.payment_id.to_string(),
        ),
        replaces: None,
    };
    store
        .insert_payment(&new, payment.created_at)
        .await
        .unwrap();
    let transition = Transition::new(
        payment.payment_id.clone(),
        (PaymentStatus::Pending, PaymentStatus::Paid),
        1,
        at,
        "callback",
    );
    store.apply_transition(&transition).await.unwrap();
}

async fn fresh_queue(client: &aws_sdk_sqs::Client, name: &str) -> String {
    client
        .create_queue()
        .queue_name(format!("{name}-{}", ulid::Ulid::new()).to_lowercase())
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

async fn drain(client: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            return bodies;
        }
        bodies.extend(
            out.messages()
                .iter()
                .filter_map(|m| m.body().map(str::to_owned)),
        );
        for m in out.messages() {
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn on_moto_the_check_back_republishes_only_the_event_whose_effects_are_missing() {
    let client = dynamo(None).await;
    let tables = fresh_table_set(&client).await;
    let after_s = 600;
    let store = DynamoStore::new(client.clone(), &tables.payments, &tables.idempotency)
        .with_check_back_after(after_s);
    let orders = Arc::new(DynamoEffects::new(
        client.clone(),
        &tables.orders,
        Consumer::OrderUpdater,
    ));
    let coupons = Arc::new(DynamoEffects::new(
        client.clone(),
        &tables.coupons,
        Consumer::CouponGranter,
    ));
    let t0 = Timestamp::from_unix_s(1_800_000_000);
    let (complete, complete_event) = paid(&new_payment_id(), &unique("complete"), t0);
    let (half, half_event) = paid(&new_payment_id(), &unique("half"), t0);
    insert_paid(&store, &complete, t0).await;
    insert_paid(&store, &half, t0).await;

    // The stores' own semantics on moto: once per event, once per order.
    assert_eq!(
        orders.apply(&complete_event, t0).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(
        orders.apply(&complete_event, t0).await.unwrap(),
        Applied::Duplicate
    );
    let mut second = complete_event.clone();
    second.payment_id = PaymentId::parse(&new_payment_id()).unwrap();
    second.event_id = format!("{}:v2", second.payment_id);
    assert_eq!(
        orders.apply(&second, t0).await.unwrap(),
        Applied::OrderAlreadyDone {
            by_payment: complete.payment_id.clone()
        }
    );
    assert!(orders.recorded(&second.event_id).await.unwrap());
    assert_eq!(
        coupons.apply(&complete_event, t0).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(
        orders.apply(&half_event, t0).await.unwrap(),
        Applied::Applied
    );
    assert!(!coupons.recorded(&half_event.event_id).await.unwrap());

    let queues = sqs().await;
    let order_queue = fresh_queue(&queues, "checkback-orders").await;
    let coupon_queue = fresh_queue(&queues, "checkback-coupons").await;
    let bus = SqsEventBus::new(
        queues.clone(),
        vec![
            (Consumer::OrderUpdater, order_queue.clone()),
            (Consumer::CouponGranter, coupon_queue.clone()),
        ],
    );
    let effects: Vec<Arc<dyn Effects>> = vec![orders, coupons];
    let clock = ManualClock::at(t0);
    let deps = CheckBackDeps {
        store: &store,
        effects: &effects,
        bus: &bus,
        after_s,
        page: 25,
        concurrency: 4,
        clock: &clock,
        stop_at: None,
    };
    clock.set(t0.plus_s(after_s - 1));
    let early = run_check_back(&deps).await;
    assert_eq!(early.checked, 0);
    clock.set(t0.plus_s(after_s));
    let summary = run_check_back(&deps).await;
    assert_eq!(
        (
            summary.checked,
            summary.complete,
            summary.republished,
            summary.failed
        ),
        (2, 1, 1, 0)
    );
    assert!(drain(&queues, &order_queue).await.is_empty());
    let republished = drain(&queues, &coupon_queue).await;
    assert_eq!(republished.len(), 1);
    assert_eq!(PaymentEvent::parse(&republished[0]).unwrap(), half_event);
    // The complete payment left the index; the other is due again one period later.
    let far = t0.plus_s(100 * after_s);
    let mut due = Vec::new();
    for shard in 0..shared::ports::DUE_SHARDS {
        due.extend(store.effect_checks_due(shard, far, 25).await.unwrap());
    }
    assert_eq!(due, vec![half.payment_id.clone()]);
}

/// A consumer's store that is down: every effect fails, transiently.
struct DownEffects;

#[async_trait::async_trait]
impl Effects for DownEffects {
    fn consumer(&self) -> Consumer {
        Consumer::OrderUpdater
    }

    async fn apply(&self, _: &PaymentEvent, _: Timestamp) -> Result<Applied, StoreError> {
        Err(StoreError::Unexpected(anyhow::anyhow!("throttled")))
    }

    async fn recorded(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// An SQS message as Lambda's event hands it over.
fn queue_message(m: &aws_sdk_sqs::types::Message, source_arn: &str) -> QueueMessage {
    QueueMessage {
        message_id: m.message_id().unwrap_or_default().to_owned(),
        receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
        body: m.body().unwrap_or_default().to_owned(),
        attributes: m
            .attributes()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
            .collect(),
        message_attributes: m
            .message_attributes()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
            .collect(),
        source_arn: source_arn.to_owned(),
    }
}

async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone()
}

async fn receive(client: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

#[tokio::test]
async fn on_moto_a_message_that_keeps_failing_is_moved_by_the_redrive_policy_after_max_receive_count()
 {
    const MAX_RECEIVES: u32 = 3;
    let queues = sqs().await;
    let dlq = fresh_queue(&queues, "poison-dlq").await;
    let dlq_arn = queue_arn(&queues, &dlq).await;
    let source = queues
        .create_queue()
        .queue_name(format!("poison-{}", ulid::Ulid::new()).to_lowercase())
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES.to_string() })
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let source_arn = queue_arn(&queues, &source).await;
    let (_, event) = paid(
        &new_payment_id(),
        &unique("poison"),
        Timestamp::from_unix_s(1_800_000_000),
    );
    queues
        .send_message()
        .queue_url(&source)
        .message_body(event.to_json())
        .send()
        .await
        .unwrap();

    // The consumer's own code against the real queue, with the mapping's part played here:
    // receive, consume, delete only what did not fail.
    let effects = DownEffects;
    let queue = SqsConsumerQueue::new(queues.clone(), Consumer::OrderUpdater, &source, &dlq);
    let deps = ConsumerDeps {
        effects: &effects,
        queue: &queue,
        retry: RetryDelays {
            base_s: 1,
            max_s: 1,
        },
    };
    let now = Timestamp::from_unix_s(1_800_000_000);
    let mut receives = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        for m in receive(&queues, &source).await {
            let message = queue_message(&m, &source_arn);
            receives.push(message.receive_count());
            let failed = consume(&deps, std::slice::from_ref(&message), now).await;
            assert_eq!(failed.len(), 1, "a transient failure is reported");
            assert_eq!(failed[0], message.message_id);
        }
        if let Some(dead) = receive(&queues, &dlq).await.into_iter().next() {
            break dead;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto never moved the message to the dead-letter queue (receives: {receives:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Each failure hid it for the consumer's delay (1 s) instead of the queue's 30 s, and SQS,
    // not the consumer, gave up after maxReceiveCount receives.
    assert_eq!(receives, (1..=MAX_RECEIVES).collect::<Vec<_>>());
    assert_eq!(dead.body(), Some(event.to_json().as_str()));

    // The dead-letter handler's part, on a fresh compensations table.
    let client = dynamo(None).await;
    let tables = fresh_table_set(&client).await;
    let store = DynamoDeadLetters::new(client, &tables.compensations);
    let sources = [DeadLetterSource {
        consumer: "order-updater".into(),
        dead_letter_queue_arn: dlq_arn.clone(),
        source_queue_url: Some(source.clone()),
    }];
    let message = queue_message(&dead, &dlq_arn);
    assert!(
        store_dead_letters(&store, &sources, std::slice::from_ref(&message), now)
            .await
            .is_empty()
    );
    let stored = store.dead_letters().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].error.contains("redrive policy"),
        "{:?}",
        stored[0]
    );
    assert_eq!(stored[0].receive_count, MAX_RECEIVES, "{:?}", stored[0]);
    assert_eq!(stored[0].source_queue_url.as_deref(), Some(source.as_str()));
    // Delivered twice to the handler: stored once. Redriven and dead again: open again.
    assert!(!store.put_dead_letter(&stored[0]).await.unwrap());
    assert!(
        store
            .mark_dead_letter(
                &stored[0].id,
                DeadLetterStatus::Open,
                DeadLetterStatus::Redriven,
                now
            )
            .await
            .unwrap()
    );
    assert!(store.put_dead_letter(&stored[0]).await.unwrap());
    assert_eq!(
        store
            .dead_letter(&stored[0].id)
            .await
            .unwrap()
            .unwrap()
            .status,
        DeadLetterStatus::Open
    );
}

#[tokio::test]
async fn dedupe_records_expire_by_ttl_and_a_late_redelivery_still_changes_nothing() {
    let client = dynamo(None).await;
    let tables = fresh_table_set(&client).await;
    let orders_ttl = tables
        .ttl
        .iter()
        .find(|t| t.table == tables.orders)
        .expect("the orders table has TTL")
        .clone();
    assert_eq!(orders_ttl.attribute, "expires_at");
    let with_ttl: Vec<(&str, &str)> = tables
        .ttl
        .iter()
        .map(|t| (t.table.as_str(), t.attribute.as_str()))
        .collect();
    assert!(with_ttl.contains(&(tables.idempotency.as_str(), "expiration")));
    assert!(with_ttl.contains(&(tables.coupons.as_str(), "expires_at")));
    assert!(!with_ttl.iter().any(|(t, _)| *t == tables.payments));
    let orders = DynamoEffects::new(client.clone(), &tables.orders, Consumer::OrderUpdater);
    let now_s = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    // Applied 40 days ago: its dedupe record has expired (35 days), its effect never does.
    let then = Timestamp::from_unix_s(now_s - 40 * 86_400);
    let (_, event) = paid(&new_payment_id(), &unique("ttl"), then);
    assert_eq!(orders.apply(&event, then).await.unwrap(), Applied::Applied);
    let dedupe_pk = format!("EVENT#{}", event.event_id);
    let dedupe = get(&client, &tables.orders, &dedupe_pk).await.unwrap();
    assert_eq!(
        string(&dedupe, "expires_at"),
        Some((then.unix_s() + 35 * 86_400).to_string())
    );

    // The local stack's TTL sweeper (moto expires nothing by itself).
    let now = u64::try_from(now_s).unwrap();
    assert_eq!(
        xtask::ttl::sweep(&client, &orders_ttl, now).await.unwrap(),
        1
    );
    assert_eq!(get(&client, &tables.orders, &dedupe_pk).await, None);
    let effect_pk = format!("ORDER#{}", event.order_id);
    let effect = get(&client, &tables.orders, &effect_pk).await.unwrap();

    // A redelivery after that finds the order's effect: nothing changes, nothing alarms.
    assert_eq!(
        orders
            .apply(&event, Timestamp::from_unix_s(now_s))
            .await
            .unwrap(),
        Applied::OrderAlreadyDone {
            by_payment: event.payment_id.clone()
        }
    );
    assert_eq!(get(&client, &tables.orders, &effect_pk).await, Some(effect));
    assert!(orders.recorded(&event.event_id).await.unwrap());
    assert_eq!(
        xtask::ttl::sweep(&client, &orders_ttl, now).await.unwrap(),
        0
    );
}
