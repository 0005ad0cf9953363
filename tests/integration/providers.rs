//! Real provider protocols end to end: our adapter in the functions against the sandbox playing
//! that provider from its own, independent code.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{create, get_payment, sandbox, unique, wait_for_payment};

/// Creates a payment through `provider` with fault knobs scoped to its subject.
async fn created(provider: &str, knobs: Value) -> (String, String) {
    let order_id = unique(provider);
    let subject = format!("{provider} {order_id}");
    sandbox::set_faults(&subject, knobs).await;
    let body = json!({
        "order_id": order_id, "amount_minor": 1010, "currency": "CNY", "provider": provider, "subject": subject,
    });
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    (
        reply.body["payment_id"].as_str().unwrap().to_owned(),
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
async fn alipay_create_pay_notify_paid() {
    let (id, pay_url) = created("alipay", json!({})).await;
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
    assert_eq!(
        log[0]["acked"], true,
        "Alipay got exactly `success`: {log:?}"
    );
}

#[tokio::test]
async fn alipay_tampered_amount_is_an_exception() {
    let (id, pay_url) = created("alipay", json!({ "tamper_amount": true })).await;
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
async fn alipay_forged_signature_changes_nothing_and_gets_fail() {
    let (id, pay_url) = created("alipay", json!({ "forge": true })).await;
    sandbox::pay(&pay_url).await;
    let log = deliveries(&id).await;
    assert_eq!(log[0]["acked"], false, "{log:?}");
    assert_eq!(log[0]["http_status"], 400, "{log:?}");
    let payment = get_payment(&id).await.body;
    assert_eq!(
        (payment["status"].as_str(), payment["version"].as_u64()),
        (Some("pending"), Some(1))
    );
}
