//! Refund notifications end to end, for each provider that sends them: a payment created and paid
//! through the stack, then refunded through `POST /payments/{id}/refunds` while the sandbox keeps
//! the refund `PROCESSING` (`refund_processing`), so the refund is `pending` until the provider
//! tells otherwise. The sandbox resolves it at the poller's first query and then sends that
//! protocol's refund notification (the native `"event":"REFUND"`, WeChat Pay's `REFUND.SUCCESS`,
//! UnionPay's txnType 04 to the refund's `backUrl`, with the payment id echoed in
//! `reqReserved`) to our callback route. Either the notification or the poller's next query
//! settles the refund; in both cases the notification must be verified and acknowledged with
//! the provider's success answer, never refused.

use std::time::Duration;

use serde_json::{Value, json};
use shared::domain::{PaymentId, RefundId};
use tests::{Reply, create, http, sandbox, stack, unique, wait_for_payment};

const PAID_MINOR: i64 = 1010;
const REFUND_MINOR: i64 = 400;
/// How long the refund may take to settle: the poller's first check comes about a (time-scaled)
/// minute after the refund, the notification right after it.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct Provider {
    name: &'static str,
    /// The sandbox's name for the trade's protocol.
    protocol: &'static str,
    /// UnionPay's consume carries no subject, so its sandbox scopes knobs by order id (our
    /// payment id); the others scope by subject.
    scoped_by_payment_id: bool,
    /// The HTTP status of our success answer in that provider's format.
    success_status: u64,
}

const SANDBOX: Provider = Provider {
    name: "sandbox",
    protocol: "native",
    scoped_by_payment_id: false,
    success_status: 200,
};
const WECHATPAY: Provider = Provider {
    name: "wechatpay",
    protocol: "wechatpay",
    scoped_by_payment_id: false,
    success_status: 204,
};
const UNIONPAY: Provider = Provider {
    name: "unionpay",
    protocol: "unionpay",
    scoped_by_payment_id: true,
    success_status: 200,
};

/// Creates and pays a payment through `provider` with `refund_processing` on its sandbox trade;
/// returns its id once our side has it paid.
async fn paid_payment(provider: Provider) -> String {
    let order_id = unique(provider.name);
    let subject = format!("refund-notify {order_id}");
    let knobs = json!({ "refund_processing": true });
    if !provider.scoped_by_payment_id {
        sandbox::set_faults(&subject, knobs.clone()).await;
    }
    let body = json!({
        "order_id": order_id, "amount_minor": PAID_MINOR, "currency": "CNY",
        "provider": provider.name, "subject": subject,
    });
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let payment_id = reply.body["payment_id"].as_str().unwrap().to_owned();
    if provider.scoped_by_payment_id {
        sandbox::set_faults(&payment_id, knobs).await;
    }
    assert_eq!(
        sandbox::trade(&payment_id).await["protocol"],
        provider.protocol
    );
    let pay_url = reply.body["pay_url"].as_str().unwrap();
    assert_eq!(sandbox::pay(pay_url).await.status, 200);
    let payment = wait_for_payment(&payment_id, 10_000, |p| p["status"] != "pending").await;
    assert_eq!(payment.body["status"], "paid", "{}", payment.text);
    payment_id
}

async fn post_refund(payment_id: &str, body: &Value) -> Reply {
    let url = format!("{}/payments/{payment_id}/refunds", stack().api_url);
    Reply::from(http().post(url).json(body).send().await.unwrap()).await
}

async fn refunds(payment_id: &str) -> Vec<Value> {
    let url = format!("{}/payments/{payment_id}/refunds", stack().api_url);
    let reply = Reply::from(http().get(url).send().await.unwrap()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["refunds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The delivery log entries of the trade's refund notifications for `refund_no`.
async fn refund_deliveries(payment_id: &str, refund_no: &str) -> Vec<Value> {
    let trade = sandbox::trade(payment_id).await;
    trade["deliveries"]
        .as_array()
        .map(|log| {
            log.iter()
                .filter(|d| d["refund_no"] == refund_no)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Polls until `done` holds for the value `read` returns, or the timeout passes; returns the
/// last value read.
async fn eventually<T, F, Fut>(mut read: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let value = read().await;
        if done(&value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn refund_is_notified_and_settled(provider: Provider) {
    let payment_id = paid_payment(provider).await;
    let refund_id = "rn1";
    let created = post_refund(
        &payment_id,
        &json!({ "refund_id": refund_id, "amount_minor": REFUND_MINOR, "reason": "returned" }),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        created.body["status"], "pending",
        "the provider is processing it: {}",
        created.text
    );

    let settled = eventually(
        || refunds(&payment_id),
        |list| list.first().is_some_and(|r| r["status"] != "pending"),
    )
    .await;
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!(
        (&settled[0]["status"], &settled[0]["amount_minor"]),
        (&json!("succeeded"), &json!(REFUND_MINOR)),
        "{settled:?}"
    );
    let payment =
        wait_for_payment(&payment_id, 10_000, |p| p["status"] == "partially_refunded").await;
    assert_eq!(
        payment.body["status"], "partially_refunded",
        "{}",
        payment.text
    );

    // The refund notification went out (the sandbox sends it when the refund succeeds) and was
    // verified and acknowledged, whether it or the poller's query settled the refund.
    let refund_no = shared::app::refunds::refund_no(
        &PaymentId::parse(&payment_id).unwrap(),
        &RefundId::parse(refund_id).unwrap(),
    );
    let log = eventually(
        || refund_deliveries(&payment_id, &refund_no),
        |log| log.iter().any(|d| d["acked"] == true),
    )
    .await;
    assert!(
        log.iter().any(|d| d["acked"] == true),
        "{}: a refund notification for {refund_no} was acknowledged: {log:?}",
        provider.name
    );
    for delivery in &log {
        assert_eq!(
            (&delivery["acked"], delivery["http_status"].as_u64()),
            (&json!(true), Some(provider.success_status)),
            "{}: every refund notification was answered with success: {log:?}",
            provider.name
        );
    }
    let trade = sandbox::trade(&payment_id).await;
    assert_eq!(
        (&trade["refunded_minor"], &trade["refunds"][0]["status"]),
        (&json!(REFUND_MINOR), &json!("SUCCESS")),
        "{trade}"
    );
}

#[tokio::test]
async fn sandbox_refund_notification_is_verified_and_acknowledged() {
    refund_is_notified_and_settled(SANDBOX).await;
}

#[tokio::test]
async fn wechatpay_refund_notification_is_verified_and_acknowledged() {
    refund_is_notified_and_settled(WECHATPAY).await;
}

#[tokio::test]
async fn unionpay_refund_notification_is_verified_and_acknowledged() {
    refund_is_notified_and_settled(UNIONPAY).await;
}
