//! `payctl dlq list`, `payctl dlq redrive` and `payctl compensate` end to end: the real binary
//! against the local stack that `cargo xtask test` boots (moto's DynamoDB and SQS, the stack's
//! compensations and effects tables). Each test seeds its own dead letters, for its own orders,
//! and redrives only them by id: other tests' records share the compensations table.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher as _, RandomState};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::Message;
use shared::clock::SystemClock;
use shared::domain::event::PaymentEvent;
use shared::domain::{Payment, PaymentId, PaymentStatus, Timestamp};
use shared::ports::{Clock as _, DeadLetter, DeadLetterStatus, DeadLetterStore, dead_letter_id};
use shared::store::DynamoDeadLetters;

type Item = HashMap<String, AttributeValue>;

/// A variable the stack sets: missing means the test was not run under `cargo xtask test`.
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests run against the local stack; use `cargo xtask test`")
    })
}

/// The stack's tables, after checking that every AWS client (these and payctl's) is pointed at
/// the local stack rather than at whatever account the environment would reach.
struct Stack {
    compensations: String,
    orders: String,
    coupons: String,
}

fn stack() -> Stack {
    for name in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        var(name);
    }
    Stack {
        compensations: var("PAYCORE_TABLE_COMPENSATIONSTABLE"),
        orders: var("PAYCORE_TABLE_ORDERSTABLE"),
        coupons: var("PAYCORE_TABLE_COUPONSTABLE"),
    }
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

fn random() -> u128 {
    let half = || u128::from(RandomState::new().hash_one(std::process::id()));
    (half() << 64) | half()
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// A fresh payment id (a ULID), also the unique part of names in this test.
fn new_payment_id() -> PaymentId {
    PaymentId::from_parts(u64::try_from(now().unix_ms()).unwrap(), random())
}

/// The paid event (version 2, from pending) of a fresh payment of a fresh order.
fn paid_event(label: &str) -> PaymentEvent {
    let payment_id = new_payment_id();
    let at = now();
    let payment: Payment = serde_json::from_value(serde_json::json!({
        "payment_id": payment_id.as_str(),
        "order_id": format!("payctl-{label}-{payment_id}"),
        "amount_minor": 4200,
        "currency": "CNY",
        "provider": "sandbox",
        "subject": format!("payctl {label}"),
        "status": "paid",
        "version": 2,
        "expires_at": at.unix_ms() + 900_000,
        "created_at": at.unix_ms(),
        "updated_at": at.unix_ms(),
    }))
    .unwrap();
    PaymentEvent::of_change(&payment, Some(PaymentStatus::Pending))
}

/// An open dead letter of `consumer` holding `event`, stored as the dead-letter handler stores a
/// message the consumer dead-lettered itself (its own attributes added to the event's).
async fn seed_dead_letter(
    store: &DynamoDeadLetters,
    consumer: &str,
    source_queue_url: &str,
    event: &PaymentEvent,
) -> DeadLetter {
    let message_id = format!("m-{}", new_payment_id());
    let at = now();
    let message_attributes: BTreeMap<String, String> = [
        ("event_type", event.event_type.as_str()),
        ("event_id", event.event_id.as_str()),
        ("error", "order platform said no"),
        ("consumer", consumer),
        ("source_message_id", message_id.as_str()),
        ("receive_count", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let dead = DeadLetter {
        id: dead_letter_id(consumer, &message_id),
        consumer: consumer.to_owned(),
        source_queue_url: Some(source_queue_url.to_owned()),
        dead_letter_queue_arn: format!("arn:aws:sqs:us-east-1:123456789012:{consumer}-dead"),
        message_id,
        body: event.to_json(),
        attributes: BTreeMap::from([("ApproximateReceiveCount".to_owned(), "1".to_owned())]),
        message_attributes,
        error: "order platform said no".to_owned(),
        receive_count: 3,
        first_seen: at,
        last_seen: at,
        status: DeadLetterStatus::Open,
        status_changed_at: None,
    };
    assert!(
        store.put_dead_letter(&dead).await.unwrap(),
        "{} was stored already",
        dead.id
    );
    dead
}

async fn status_of(store: &DynamoDeadLetters, id: &str) -> DeadLetterStatus {
    store
        .dead_letter(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} is gone from the compensations table"))
        .status
}

/// A fresh queue standing in for a consumer's source queue.
async fn fresh_queue(sqs: &aws_sdk_sqs::Client, label: &str) -> String {
    sqs.create_queue()
        .queue_name(format!("payctl-{label}-{}", new_payment_id()).to_lowercase())
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// What the queue holds now, with every message attribute; waits up to `wait_s` for a first one.
async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str, wait_s: i32) -> Vec<Message> {
    sqs.receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_s)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs payctl with the test's environment (the stack's endpoint, region and credentials).
async fn payctl(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payctl"))
        .args(args)
        // Only the flags given here say which tables to use.
        .env_remove("COMPENSATIONS_TABLE")
        .env_remove("EFFECTS_TABLES")
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn a_dead_letter_is_listed_redriven_to_its_source_queue_once_and_marked() {
    let stack = stack();
    let config = sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let store =
        DynamoDeadLetters::new(aws_sdk_dynamodb::Client::new(&config), &stack.compensations);
    let queue = fresh_queue(&sqs, "redrive").await;
    let event = paid_event("redrive");
    let dead = seed_dead_letter(&store, "order-updater", &queue, &event).await;
    let table = ["--compensations-table", stack.compensations.as_str()];

    // Listed, as a table line and as JSON.
    let list = payctl(&[&["dlq", "list"][..], &table].concat()).await;
    assert_eq!(list.code, 0, "{}{}", list.stdout, list.stderr);
    let line = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{} ", dead.id)))
        .unwrap_or_else(|| panic!("{} is not listed:\n{}", dead.id, list.stdout));
    assert!(
        line.contains(" order-updater ") && line.contains(" open "),
        "{line}"
    );
    let json = payctl(&[&["dlq", "list", "--json"][..], &table].concat()).await;
    assert_eq!(json.code, 0, "{}{}", json.stdout, json.stderr);
    let listed: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
        .collect();
    let ours: Vec<&serde_json::Value> = listed.iter().filter(|d| d["id"] == *dead.id).collect();
    assert_eq!(ours.len(), 1, "{}", json.stdout);
    assert_eq!(ours[0]["status"], "open");
    assert_eq!(ours[0]["body"], *dead.body);
    assert_eq!(ours[0]["source_queue_url"], *queue);

    // Redriven: back on its source queue, as it was before it died.
    let id = ["--id", dead.id.as_str()];
    let redrive = payctl(&[&["dlq", "redrive"][..], &id, &table].concat()).await;
    assert_eq!(redrive.code, 0, "{}{}", redrive.stdout, redrive.stderr);
    assert_eq!(
        redrive.stdout,
        format!(
            "{}  redriven -> {queue}\nredrive: 1 sent back, 0 failed, 0 left as they were\n",
            dead.id
        )
    );
    let received = receive(&sqs, &queue, 5).await;
    assert_eq!(received.len(), 1, "{received:?}");
    let message = &received[0];
    assert_eq!(message.body(), Some(dead.body.as_str()));
    let attributes: BTreeMap<&str, Option<&str>> = message
        .message_attributes()
        .unwrap_or_else(|| panic!("no message attributes: {message:?}"))
        .iter()
        .map(|(name, value)| (name.as_str(), value.string_value()))
        .collect();
    assert_eq!(
        attributes,
        BTreeMap::from([
            ("event_id", Some(event.event_id.as_str())),
            ("event_type", Some("payment.paid")),
        ]),
        "the consumer's dead-letter attributes are dropped, the event's kept"
    );
    // Nothing else was sent (the first one is in flight, so it is not received again).
    let more = receive(&sqs, &queue, 1).await;
    assert!(more.is_empty(), "{more:?}");
    sqs.delete_message()
        .queue_url(&queue)
        .receipt_handle(message.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_of(&store, &dead.id).await,
        DeadLetterStatus::Redriven
    );

    // Again: it is no longer open, so nothing is sent.
    let again = payctl(&[&["dlq", "redrive"][..], &id, &table].concat()).await;
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(
        again.stdout,
        format!(
            "{}  already redriven: nothing sent\nredrive: 0 sent back, 0 failed, 1 left as they were\n",
            dead.id
        )
    );
    let after = receive(&sqs, &queue, 2).await;
    assert!(after.is_empty(), "a second redrive sent {after:?}");
    assert_eq!(
        status_of(&store, &dead.id).await,
        DeadLetterStatus::Redriven
    );

    // No longer listed as open; listed with --all, redriven.
    let open = payctl(&[&["dlq", "list"][..], &table].concat()).await;
    assert_eq!(open.code, 0, "{}", open.stderr);
    assert!(!open.stdout.contains(&dead.id), "{}", open.stdout);
    let all = payctl(&[&["dlq", "list", "--all"][..], &table].concat()).await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    let line = all
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{} ", dead.id)))
        .unwrap_or_else(|| panic!("{} is not listed with --all:\n{}", dead.id, all.stdout));
    assert!(line.contains(" redriven "), "{line}");

    sqs.delete_queue().queue_url(&queue).send().await.unwrap();
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

fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

/// The `pk` of every item of `table` about `order_id`, sorted.
async fn keys_of_order(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    order_id: &str,
) -> Vec<String> {
    let items: Vec<Item> = client
        .scan()
        .table_name(table)
        .filter_expression("order_id = :order")
        .expression_attribute_values(":order", AttributeValue::S(order_id.to_owned()))
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    let mut keys: Vec<String> = items
        .iter()
        .map(|item| string(item, "pk").unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn compensate_grants_the_coupon_once_and_marks_the_dead_letter() {
    let stack = stack();
    let config = sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let store = DynamoDeadLetters::new(dynamo.clone(), &stack.compensations);
    let queue = fresh_queue(&sqs, "compensate").await;
    let event = paid_event("compensate");
    let order_id = event.order_id.as_str();
    let dead = seed_dead_letter(&store, "coupon-granter", &queue, &event).await;
    let effects = format!(
        "order-updater={},coupon-granter={}",
        stack.orders, stack.coupons
    );
    let args = [
        "compensate",
        dead.id.as_str(),
        "--compensations-table",
        stack.compensations.as_str(),
        "--effects-tables",
        effects.as_str(),
    ];

    let first = payctl(&args).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert_eq!(
        first.stdout,
        format!(
            "{}  compensated: coupon-granter applied the event's effect now\n",
            dead.id
        )
    );
    let coupon = get(&dynamo, &stack.coupons, &format!("COUPON#{order_id}"))
        .await
        .unwrap_or_else(|| panic!("no coupon for {order_id} in {}", stack.coupons));
    assert_eq!(
        string(&coupon, "payment_id"),
        Some(event.payment_id.as_str())
    );
    assert_eq!(string(&coupon, "event_id"), Some(event.event_id.as_str()));
    assert_eq!(
        string(&coupon, "coupon_code"),
        Some(format!("PAID-ORDER-{order_id}").as_str())
    );
    let dedupe = format!("EVENT#{}", event.event_id);
    assert!(
        get(&dynamo, &stack.coupons, &dedupe).await.is_some(),
        "no dedupe record {dedupe}"
    );
    assert_eq!(
        status_of(&store, &dead.id).await,
        DeadLetterStatus::Compensated
    );

    // Again: it is no longer open, so nothing is done.
    let again = payctl(&args).await;
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(
        again.stdout,
        format!("{}  already compensated: nothing done\n", dead.id)
    );
    let mut expected = vec![format!("COUPON#{order_id}"), dedupe];
    expected.sort();
    assert_eq!(
        keys_of_order(&dynamo, &stack.coupons, order_id).await,
        expected
    );
    assert_eq!(
        get(&dynamo, &stack.coupons, &format!("COUPON#{order_id}")).await,
        Some(coupon),
        "the coupon is left as the first compensate made it"
    );
    assert_eq!(
        status_of(&store, &dead.id).await,
        DeadLetterStatus::Compensated
    );
    // Only the dead letter's own consumer acted, and nothing went to its queue.
    assert!(
        keys_of_order(&dynamo, &stack.orders, order_id)
            .await
            .is_empty(),
        "order-updater acted on a coupon-granter dead letter"
    );
    let sent = receive(&sqs, &queue, 1).await;
    assert!(sent.is_empty(), "compensate sent {sent:?}");

    sqs.delete_queue().queue_url(&queue).send().await.unwrap();
}
