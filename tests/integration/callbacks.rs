//! Callbacks through the real binaries: tampered amount, forged signature, stale timestamp,
//! unknown payment, duplicates.

use serde_json::{Value, json};
use tests::{
    create, create_body, get_payment, http, key_pem, sandbox, stack, unique, wait_for_payment,
};

/// A created payment with its pay URL.
async fn created(prefix: &str, amount_minor: i64) -> (String, String, String) {
    let order_id = unique(prefix);
    let mut body = create_body(&order_id, amount_minor);
    body["subject"] = json!(format!("{order_id} subject"));
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    (
        order_id,
        reply.body["payment_id"].as_str().unwrap().to_owned(),
        reply.body["pay_url"].as_str().unwrap().to_owned(),
    )
}

/// Sends a notification signed by the sandbox key at `timestamp`, as the provider would.
async fn notify(body: &Value, timestamp: i64) -> (u16, Value) {
    let text = body.to_string();
    let nonce = "n0nce42";
    let signature = xtask::sandbox::sign_provider_message(
        &key_pem("sandbox_private.pem"),
        timestamp,
        nonce,
        text.as_bytes(),
    )
    .unwrap();
    let response = http()
        .post(format!("{}/callbacks/sandbox", stack().api_url))
        .header("content-type", "application/json")
        .header("x-sandbox-timestamp", timestamp.to_string())
        .header("x-sandbox-nonce", nonce)
        .header("x-sandbox-signature", signature)
        .body(text)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn now_s() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn paid_notice(payment_id: &str, amount_minor: i64) -> Value {
    json!({
        "notify_id": unique("N"),
        "merchant_id": stack().merchant_id,
        "out_trade_no": payment_id,
        "trade_no": "SBXMANUAL",
        "status": "PAID",
        "amount_minor": amount_minor,
        "currency": "CNY",
        "paid_at": "2026-01-01T00:00:00Z",
    })
}

#[tokio::test]
async fn tampered_amount_moves_to_exception_and_answers_success() {
    let (order_id, payment_id, pay_url) = created("tamper", 500).await;
    sandbox::set_faults(&format!("{order_id} "), json!({ "tamper_amount": true })).await;
    sandbox::pay(&pay_url).await;
    let reply = wait_for_payment(&payment_id, 10_000, |p| p["status"] != "pending").await;
    assert_eq!(reply.body["status"], "exception", "{}", reply.text);
    assert!(
        reply.body["status_reason"]
            .as_str()
            .unwrap()
            .contains("501"),
        "{}",
        reply.text
    );
    // The provider was told success, so it stops resending.
    let trade = sandbox::trade(&payment_id).await;
    assert_eq!(trade["deliveries"][0]["acked"], true, "{trade}");
}

#[tokio::test]
async fn forged_signature_changes_nothing_and_gets_the_failure_answer() {
    let (order_id, payment_id, pay_url) = created("forge", 700).await;
    sandbox::set_faults(&format!("{order_id} "), json!({ "forge": true })).await;
    sandbox::pay(&pay_url).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let trade = loop {
        let trade = sandbox::trade(&payment_id).await;
        if !trade["deliveries"].as_array().unwrap().is_empty()
            || tokio::time::Instant::now() > deadline
        {
            break trade;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let first = &trade["deliveries"][0];
    assert_eq!(first["acked"], false, "{trade}");
    assert_eq!(first["http_status"], 400, "{trade}");
    // The forged notification moved nothing; only the poller, asking the provider itself, may
    // have recorded the payment since.
    let payment = get_payment(&payment_id).await;
    let history = payment.body["history"].as_array().unwrap();
    assert!(
        history.iter().all(|h| h["source"] != "callback"),
        "{}",
        payment.text
    );
}

#[tokio::test]
async fn stale_timestamp_is_rejected() {
    let (_, payment_id, _) = created("stale", 300).await;
    let (status, body) = notify(&paid_notice(&payment_id, 300), now_s() - 300).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "FAIL");
    assert_eq!(get_payment(&payment_id).await.body["version"], 1);
    // Just inside the window it is accepted.
    let (status, body) = notify(&paid_notice(&payment_id, 300), now_s() - 290).await;
    assert_eq!((status, &body["code"]), (200, &json!("SUCCESS")));
    assert_eq!(get_payment(&payment_id).await.body["status"], "paid");
}

#[tokio::test]
async fn unknown_payment_gets_the_failure_answer() {
    let (status, body) = notify(&paid_notice("01ZZZZZZZZZZZZZZZZZZZZZZZZ", 100), now_s()).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "FAIL");
}

#[tokio::test]
async fn repeated_notification_changes_nothing_and_succeeds() {
    let (_, payment_id, _) = created("dup", 900).await;
    let notice = paid_notice(&payment_id, 900);
    for _ in 0..3 {
        let (status, body) = notify(&notice, now_s()).await;
        assert_eq!((status, &body["code"]), (200, &json!("SUCCESS")));
    }
    let payment = get_payment(&payment_id).await;
    assert_eq!(payment.body["status"], "paid");
    assert_eq!(payment.body["version"], 2);
    assert_eq!(payment.body["history"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn wrong_merchant_and_garbage_are_refused() {
    let (_, payment_id, _) = created("merchant", 100).await;
    let mut notice = paid_notice(&payment_id, 100);
    notice["merchant_id"] = json!("M999");
    let (status, _) = notify(&notice, now_s()).await;
    assert_eq!(status, 400);
    let garbage = tests::post_raw(
        "/callbacks/sandbox",
        Some("application/json"),
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.body["code"], "FAIL");
    let unknown_provider = tests::post_raw(
        "/callbacks/paypal",
        Some("application/json"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(unknown_provider.status, 404);
    assert_eq!(get_payment(&payment_id).await.body["version"], 1);
}
