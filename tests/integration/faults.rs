//! Every sandbox fault knob, against the real stack.

use std::time::Duration;

use serde_json::{Value, json};
use shared::domain::PaymentId;
use shared::ports::ProviderError;
use tests::{
    RequestCounter, create, create_body, get_payment, in_process_deps, sandbox, unique,
    wait_for_payment,
};

/// Sets `knobs` for a fresh order's subject, creates its payment, and returns (reply, payment id).
async fn create_with(prefix: &str, knobs: Value) -> (tests::Reply, String) {
    let order_id = unique(prefix);
    let body = create_body(&order_id, 1000);
    sandbox::set_faults(body["subject"].as_str().unwrap(), knobs).await;
    let reply = create(&body).await;
    let id = reply.body["payment_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (reply, id)
}

async fn pay_and_wait(reply: &tests::Reply, id: &str) -> Value {
    sandbox::pay(reply.body["pay_url"].as_str().unwrap()).await;
    wait_for_payment(id, 10_000, |p| p["status"] != "pending")
        .await
        .body
}

fn deliveries(trade: &Value) -> Vec<Value> {
    trade["deliveries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn dropped_notification_is_recovered_by_the_resend() {
    let (reply, id) = create_with("drop", json!({ "drop_first": 1 })).await;
    let payment = pay_and_wait(&reply, &id).await;
    assert_eq!(payment["status"], "paid");
    let log = deliveries(&sandbox::trade(&id).await);
    assert_eq!(log[0]["acked"], false, "{log:?}");
    assert!(log.iter().any(|d| d["acked"] == true));
}

#[tokio::test]
async fn delayed_notification_arrives_late_and_applies() {
    let (reply, id) = create_with("delay", json!({ "delay_ms": 700 })).await;
    let paid_at = std::time::Instant::now();
    sandbox::pay(reply.body["pay_url"].as_str().unwrap()).await;
    let payment = wait_for_payment(&id, 10_000, |p| p["status"] != "pending").await;
    assert_eq!(payment.body["status"], "paid");
    // Nothing could have applied it before the delivery was released: a load-proof lower bound.
    assert!(
        paid_at.elapsed() >= Duration::from_millis(700),
        "applied after {:?}",
        paid_at.elapsed()
    );
}

#[tokio::test]
async fn duplicated_notifications_apply_once() {
    let (reply, id) = create_with("dupe", json!({ "duplicate": 3 })).await;
    assert_eq!(pay_and_wait(&reply, &id).await["status"], "paid");
    // Wait until all four copies have been answered.
    let mut log = vec![];
    for _ in 0..100 {
        log = deliveries(&sandbox::trade(&id).await);
        if log.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log.iter().all(|d| d["notify_id"] == log[0]["notify_id"]));
    let payment = get_payment(&id).await.body;
    assert_eq!(
        (
            payment["version"].as_u64(),
            payment["history"].as_array().map(Vec::len)
        ),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn reordered_notifications_leave_the_payment_paid() {
    let (reply, id) = create_with("reorder", json!({ "reorder": true })).await;
    assert_eq!(pay_and_wait(&reply, &id).await["status"], "paid");
    let mut notices = 0;
    for _ in 0..100 {
        let log = deliveries(&sandbox::trade(&id).await);
        notices = log
            .iter()
            .filter(|d| d["acked"] == true)
            .map(|d| d["notify_id"].clone())
            .collect::<std::collections::HashSet<_>>()
            .len();
        if notices == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        notices, 2,
        "the late WAIT_PAY was delivered and acknowledged"
    );
    let payment = get_payment(&id).await.body;
    assert_eq!(
        (payment["status"].as_str(), payment["version"].as_u64()),
        (Some("paid"), Some(2))
    );
}

#[tokio::test]
async fn paid_but_never_notified_is_found_by_the_poller() {
    let (reply, id) = create_with("silent", json!({ "never_notify": true })).await;
    sandbox::pay(reply.body["pay_url"].as_str().unwrap()).await;
    let payment = wait_for_payment(&id, 20_000, |p| p["status"] != "pending").await;
    let trade = sandbox::trade(&id).await;
    assert_eq!(trade["status"], "PAID");
    assert!(deliveries(&trade).is_empty());
    let history = payment.body["history"].as_array().unwrap();
    assert_eq!(payment.body["status"], "paid", "{}", payment.text);
    assert_eq!(history.last().unwrap()["source"], "poll");
}

#[tokio::test]
async fn create_5xx_leaves_the_outcome_unknown() {
    let (reply, id) = create_with("c500", json!({ "create": "error" })).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.body["status"], "pending");
    assert!(reply.body["pay_url"].is_null());
    let trade = sandbox::trade(&id).await;
    assert!(
        trade["trade_no"].is_null(),
        "the sandbox created nothing: {trade}"
    );
}

#[tokio::test]
async fn create_timeout_leaves_the_outcome_unknown_though_the_trade_exists() {
    let (reply, id) =
        create_with("ctimeout", json!({ "create": "timeout", "hang_ms": 3000 })).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert!(reply.body["pay_url"].is_null());
    let trade = sandbox::trade(&id).await;
    let trade_no = trade["trade_no"].clone();
    assert!(trade_no.is_string(), "the trade exists: {trade}");
    assert_eq!(get_payment(&id).await.body["version"], 1);

    // The provider answers again: the poller, having seen the trade in its query, asks for it
    // again with the same id and gets its code; still one trade at the provider.
    let subject = format!("test {}", reply.body["order_id"].as_str().unwrap());
    sandbox::set_faults(&subject, json!({})).await;
    let payment = wait_for_payment(&id, 20_000, |p| !p["pay_url"].is_null()).await;
    assert!(payment.body["pay_url"].is_string(), "{}", payment.text);
    assert_eq!(payment.body["status"], "pending");
    let trade = sandbox::trade(&id).await;
    assert_eq!(trade["trade_no"], trade_no, "the same trade: {trade}");
    assert!(trade["create_calls"].as_u64().unwrap() >= 2, "{trade}");
}

#[tokio::test]
async fn query_faults_are_unknown_outcomes() {
    let deps = in_process_deps(&RequestCounter::default()).await;
    let provider = deps
        .providers
        .get(shared::domain::ProviderName::Sandbox)
        .unwrap()
        .clone();
    let (reply, id) = create_with("query", json!({})).await;
    assert_eq!(reply.status, 201);
    let payment_id = PaymentId::parse(&id).unwrap();
    let trade = provider.query(&payment_id).await.unwrap().unwrap();
    assert_eq!(trade.status, shared::ports::NotifiedStatus::Pending);
    assert_eq!(trade.amount_minor, 1000);
    let subject = reply.body["order_id"]
        .as_str()
        .map(|o| format!("test {o}"))
        .unwrap();
    sandbox::set_faults(&subject, json!({ "query": "error" })).await;
    assert!(matches!(
        provider.query(&payment_id).await,
        Err(ProviderError::Unknown(_))
    ));
    sandbox::set_faults(&subject, json!({ "query": "timeout", "hang_ms": 3000 })).await;
    assert!(matches!(
        provider.query(&payment_id).await,
        Err(ProviderError::Unknown(_))
    ));
    let missing = PaymentId::parse("01ZZZZZZZZZZZZZZZZZZZZZZZZ").unwrap();
    assert_eq!(provider.query(&missing).await, Ok(None));
}
