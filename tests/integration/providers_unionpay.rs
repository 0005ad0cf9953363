//! UnionPay (ACP 5.1.0) end to end: our adapter in the functions against the sandbox playing
//! UnionPay's gateway from its own, independent code, certificates made by the `openssl` CLI.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{create, get_payment, http, sandbox, stack, unique, wait_for_payment};

/// Creates a payment through UnionPay, then scopes fault knobs to it. The consume has no
/// subject field, so the sandbox scopes UnionPay trades by orderId (our payment id); the
/// knobs are read at pay and delivery time, after this.
async fn created(knobs: Value) -> (String, String) {
    let order_id = unique("unionpay");
    let body = json!({
        "order_id": order_id, "amount_minor": 1010, "currency": "CNY", "provider": "unionpay",
        "subject": format!("unionpay {order_id}"),
    });
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let payment_id = reply.body["payment_id"].as_str().unwrap().to_owned();
    sandbox::set_faults(&payment_id, knobs).await;
    (
        payment_id,
        reply.body["pay_url"].as_str().unwrap().to_owned(),
    )
}

/// The sandbox's delivery log for a trade, once it has at least one entry.
async fn deliveries(payment_id: &str) -> Vec<Value> {
    for _ in 0..100 {
        let log = sandbox::trade(payment_id).await["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !log.is_empty() {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    vec![]
}

#[tokio::test]
async fn unionpay_consume_pay_notify_paid() {
    let (id, pay_url) = created(json!({})).await;
    assert_eq!(sandbox::trade(&id).await["protocol"], "unionpay");
    assert_eq!(sandbox::pay(&pay_url).await.status, 200);
    let payment = wait_for_payment(&id, 10_000, |p| p["status"] != "pending")
        .await
        .body;
    assert_eq!(
        (payment["status"].as_str(), payment["version"].as_u64()),
        (Some("paid"), Some(2)),
        "{payment}"
    );
    let log = deliveries(&id).await;
    assert_eq!(log[0]["acked"], true, "UnionPay got HTTP 200: {log:?}");
}

#[tokio::test]
async fn unionpay_tampered_amount_is_an_exception() {
    let (id, pay_url) = created(json!({ "tamper_amount": true })).await;
    sandbox::pay(&pay_url).await;
    let payment = wait_for_payment(&id, 10_000, |p| p["status"] != "pending")
        .await
        .body;
    assert_eq!(payment["status"], "exception", "{payment}");
    assert!(
        payment["status_reason"]
            .as_str()
            .unwrap_or("")
            .contains("1011"),
        "{payment}"
    );
}

#[tokio::test]
async fn unionpay_forged_signature_changes_nothing_and_is_not_acknowledged() {
    let (id, pay_url) = created(json!({ "forge": true })).await;
    sandbox::pay(&pay_url).await;
    let log = deliveries(&id).await;
    assert_eq!(log[0]["acked"], false, "{log:?}");
    let status = log[0]["http_status"].as_u64().unwrap_or(0);
    assert!(status != 200 && status != 0, "{log:?}");
    let payment = get_payment(&id).await.body;
    assert_eq!(
        (payment["status"].as_str(), payment["version"].as_u64()),
        (Some("pending"), Some(1))
    );
    // A notification signed by nobody we trust is refused with a non-200 answer.
    let forged = http()
        .post(format!("{}/callbacks/unionpay", stack().api_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("version=5.1.0&signMethod=01&txnType=01&merId=777290058110048&orderId=X&respCode=00&signPubKeyCert=x&signature=Zm9yZ2Vk")
        .send()
        .await
        .unwrap();
    assert_ne!(forged.status().as_u16(), 200);
}
