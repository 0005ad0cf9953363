//! Every real provider protocol end to end: our adapter inside the functions against the sandbox
//! playing that provider from its own, independent code. The same three checks for each:
//! paid, tampered amount -> `exception`, forged signature -> unchanged and not acknowledged.

use std::time::Duration;

use serde_json::{Value, json};
use tests::{create, get_payment, http, sandbox, stack, unique, wait_for_payment};

#[derive(Clone, Copy)]
struct Provider {
    name: &'static str,
    /// UnionPay's consume carries no subject, so its sandbox scopes knobs by order id (our
    /// payment id); the others scope by subject.
    scoped_by_payment_id: bool,
}

const ALIPAY: Provider = Provider {
    name: "alipay",
    scoped_by_payment_id: false,
};
const WECHATPAY: Provider = Provider {
    name: "wechatpay",
    scoped_by_payment_id: false,
};
const UNIONPAY: Provider = Provider {
    name: "unionpay",
    scoped_by_payment_id: true,
};

/// Creates a payment through `provider` with fault knobs scoped to it; returns (id, pay_url).
async fn created(provider: Provider, knobs: Value) -> (String, String) {
    let order_id = unique(provider.name);
    let subject = format!("{} {order_id}", provider.name);
    if !provider.scoped_by_payment_id {
        sandbox::set_faults(&subject, knobs.clone()).await;
    }
    let body = json!({
        "order_id": order_id, "amount_minor": 1010, "currency": "CNY", "provider": provider.name, "subject": subject,
    });
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let payment_id = reply.body["payment_id"].as_str().unwrap().to_owned();
    if provider.scoped_by_payment_id {
        sandbox::set_faults(&payment_id, knobs).await;
    }
    assert_eq!(sandbox::trade(&payment_id).await["protocol"], provider.name);
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

async fn paid(provider: Provider) {
    let (id, pay_url) = created(provider, json!({})).await;
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
        "{} acknowledged the first delivery: {log:?}",
        provider.name
    );
}

async fn tampered(provider: Provider) {
    let (id, pay_url) = created(provider, json!({ "tamper_amount": true })).await;
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

async fn forged(provider: Provider) {
    let (id, pay_url) = created(provider, json!({ "forge": true })).await;
    sandbox::pay(&pay_url).await;
    let log = deliveries(&id).await;
    assert_eq!(log[0]["acked"], false, "{log:?}");
    let status = log[0]["http_status"].as_u64().unwrap_or(0);
    assert!(
        (400..500).contains(&status),
        "refused in the provider's failure format: {log:?}"
    );
    // The refused callback changed nothing; the poller may since have found the payment paid by
    // asking the provider, which is the right outcome of a notification we could not trust.
    let payment = get_payment(&id).await.body;
    assert_eq!(
        refused_callback_changed_nothing(&payment),
        Ok(()),
        "{payment}"
    );
}

#[tokio::test]
async fn alipay_paid() {
    paid(ALIPAY).await;
}

#[tokio::test]
async fn alipay_tampered_amount_is_an_exception() {
    tampered(ALIPAY).await;
}

#[tokio::test]
async fn alipay_forged_signature_changes_nothing() {
    forged(ALIPAY).await;
}

#[tokio::test]
async fn wechatpay_paid() {
    paid(WECHATPAY).await;
}

#[tokio::test]
async fn wechatpay_tampered_amount_is_an_exception() {
    tampered(WECHATPAY).await;
}

#[tokio::test]
async fn wechatpay_forged_signature_changes_nothing() {
    forged(WECHATPAY).await;
}

#[tokio::test]
async fn unionpay_paid() {
    paid(UNIONPAY).await;
}

#[tokio::test]
async fn unionpay_tampered_amount_is_an_exception() {
    tampered(UNIONPAY).await;
}

#[tokio::test]
async fn unionpay_forged_signature_changes_nothing() {
    forged(UNIONPAY).await;
}

/// The failure answers themselves, in each provider's format.
#[tokio::test]
async fn forged_callbacks_get_each_providers_failure_answer() {
    let post = |path: &str, content_type: &str, body: &str| {
        http()
            .post(format!("{}/callbacks/{path}", stack().api_url))
            .header("content-type", content_type.to_owned())
            .body(body.to_owned())
    };
    let alipay = post(
        "alipay",
        "application/x-www-form-urlencoded",
        "notify_id=1&out_trade_no=X&sign=Zm9yZ2Vk&sign_type=RSA2",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(alipay.status().as_u16(), 400);
    assert_eq!(
        alipay.text().await.unwrap(),
        "fail",
        "Alipay reads only the body"
    );

    let wechat = post(
        "wechatpay",
        "application/json",
        r#"{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource":{}}"#,
    )
    .header("wechatpay-timestamp", "1700000000")
    .header("wechatpay-nonce", "N0NCE")
    .header(
        "wechatpay-serial",
        "PUB_KEY_ID_0100000000000000000000000000",
    )
    .header("wechatpay-signature", "Zm9yZ2Vk")
    .send()
    .await
    .unwrap();
    assert_eq!(wechat.status().as_u16(), 400);
    assert_eq!(wechat.json::<Value>().await.unwrap()["code"], "FAIL");

    let body = "version=5.1.0&signMethod=01&txnType=01&merId=777290058110048&orderId=X&respCode=00&signPubKeyCert=x&signature=Zm9yZ2Vk";
    let unionpay = post("unionpay", "application/x-www-form-urlencoded", body)
        .send()
        .await
        .unwrap();
    assert_eq!(unionpay.status().as_u16(), 400);
}

/// Nothing but the poller moved the payment: pending at version 1, or one `poll` transition.
fn refused_callback_changed_nothing(payment: &Value) -> Result<(), String> {
    let history = payment["history"].as_array().cloned().unwrap_or_default();
    let sources: Vec<&str> = history
        .iter()
        .filter_map(|h| h["source"].as_str())
        .collect();
    match (payment["status"].as_str(), sources.as_slice()) {
        (Some("pending"), ["create"]) | (Some("paid"), ["create", "poll"]) => Ok(()),
        (status, sources) => Err(format!("{status:?} after {sources:?}")),
    }
}
