//! WeChat Pay API v3 end to end: our adapter in the functions against the sandbox playing
//! WeChat Pay from its own, independent code.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{create, get_payment, http, sandbox, stack, unique, wait_for_payment};

/// Creates a payment through WeChat Pay with fault knobs scoped to its subject.
async fn created(knobs: Value) -> (String, String) {
    let order_id = unique("wechatpay");
    let subject = format!("wechatpay {order_id}");
    sandbox::set_faults(&subject, knobs).await;
    let body = json!({
        "order_id": order_id, "amount_minor": 1010, "currency": "CNY", "provider": "wechatpay", "subject": subject,
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
async fn wechatpay_create_pay_notify_paid() {
    let (id, pay_url) = created(json!({})).await;
    assert_eq!(sandbox::trade(&id).await["protocol"], "wechatpay");
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
    assert_eq!(log[0]["acked"], true, "WeChat Pay got 200/204: {log:?}");
}

#[tokio::test]
async fn wechatpay_tampered_amount_is_an_exception() {
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
async fn wechatpay_forged_signature_changes_nothing_and_gets_fail() {
    let (id, pay_url) = created(json!({ "forge": true })).await;
    sandbox::pay(&pay_url).await;
    let log = deliveries(&id).await;
    assert_eq!(log[0]["acked"], false, "{log:?}");
    let status = log[0]["http_status"].as_u64().unwrap_or(0);
    assert!((400..500).contains(&status), "{log:?}");
    let payment = get_payment(&id).await.body;
    assert_eq!(
        (payment["status"].as_str(), payment["version"].as_u64()),
        (Some("pending"), Some(1))
    );
    // The answer itself is WeChat Pay's failure format: a forged signature gets {"code":"FAIL"}.
    let forged = http()
        .post(format!("{}/callbacks/wechatpay", stack().api_url))
        .header("content-type", "application/json")
        .header("wechatpay-timestamp", "1700000000")
        .header("wechatpay-nonce", "N0NCE")
        .header(
            "wechatpay-serial",
            "PUB_KEY_ID_0100000000000000000000000000",
        )
        .header("wechatpay-signature", "Zm9yZ2Vk")
        .body(r#"{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource":{}}"#)
        .send()
        .await
        .unwrap();
    let status = forged.status().as_u16();
    let body: Value = forged.json().await.unwrap_or(Value::Null);
    assert!((400..500).contains(&status), "{status} {body}");
    assert_eq!(body["code"], "FAIL", "{body}");
}
