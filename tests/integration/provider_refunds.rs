//! Refunds at the provider through the provider port, for every provider: a payment created and
//! paid through the local stack, then refunded with the adapter built here from the keys the
//! stack wrote (as the functions build it), against the sandbox's own, independent
//! implementation of that provider's protocol. For each: a part refund, its query, a repeat of
//! the same refund number (the same refund: no second money movement in the sandbox's admin
//! view), an over-refund (rejected), and a refund under `refund_processing` resolved by polling.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shared::clock::SystemClock;
use shared::crypto::{RsaSigner, RsaVerifier};
use shared::domain::{Currency, PaymentId};
use shared::ports::{Clock, PaymentProvider, ProviderError, ProviderRefund, RefundState};
use shared::provider::alipay::{AlipayConfig, AlipayProvider};
use shared::provider::unionpay::{UnionPayConfig, UnionPayProvider, cert_serial_decimal};
use shared::provider::wechatpay::{WechatPayConfig, WechatPayProvider, platform_public_key};
use shared::provider::{SandboxConfig, SandboxProvider};
use tests::{create, key_pem, sandbox, stack, unique, wait_for_payment};

const TIMEOUT: Duration = Duration::from_secs(10);
const PAID_MINOR: i64 = 1010;
const REFUND_MINOR: i64 = 400;
/// Queries a refund may take to settle; the sandbox settles within two.
const QUERIES_MAX: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    Sandbox,
    Alipay,
    WechatPay,
    UnionPay,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Alipay => "alipay",
            Self::WechatPay => "wechatpay",
            Self::UnionPay => "unionpay",
        }
    }

    /// The adapter as the stack's functions are configured. Nothing is created through it, so
    /// no notification comes to its notify URL.
    fn adapter(self) -> Arc<dyn PaymentProvider> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let notify_url = format!("{}/callbacks/{}", stack().api_url, self.name());
        match self {
            Self::Sandbox => {
                let config = SandboxConfig {
                    base_url: stack().sandbox_url.clone(),
                    merchant_id: stack().merchant_id.clone(),
                    merchant_key: RsaSigner::from_pem(&key_pem("merchant_private.pem")).unwrap(),
                    provider_key: RsaVerifier::from_pem(&key_pem("sandbox_public.pem")).unwrap(),
                    notify_url,
                    timeout: TIMEOUT,
                };
                Arc::new(SandboxProvider::new(config, clock).unwrap())
            }
            Self::Alipay => {
                let config = AlipayConfig {
                    gateway_url: format!("{}/gateway.do", stack().sandbox_url),
                    app_id: xtask::ALIPAY_APP_ID.into(),
                    seller_id: None,
                    app_private_key: RsaSigner::from_pem(&key_pem("alipay_app_private.pem"))
                        .unwrap(),
                    alipay_public_key: RsaVerifier::from_pem(&key_pem("alipay_public.pem"))
                        .unwrap(),
                    notify_url,
                    timeout: TIMEOUT,
                };
                Arc::new(AlipayProvider::new(config, clock).unwrap())
            }
            Self::WechatPay => {
                let platform_key = platform_public_key(
                    xtask::WECHATPAY_PLATFORM_PUBLIC_KEY_ID,
                    &key_pem("wechatpay_platform_public.pem"),
                )
                .unwrap();
                let config = WechatPayConfig {
                    base_url: stack().sandbox_url.clone(),
                    mchid: xtask::WECHATPAY_MCHID.into(),
                    appid: xtask::WECHATPAY_APPID.into(),
                    merchant_serial_no: xtask::WECHATPAY_MERCHANT_SERIAL_NO.into(),
                    merchant_key: RsaSigner::from_pem(&key_pem("wechatpay_merchant_private.pem"))
                        .unwrap(),
                    platform_keys: vec![platform_key],
                    api_v3_key: key_pem("wechatpay_apiv3.key").trim().as_bytes().to_vec(),
                    notify_url,
                    timeout: TIMEOUT,
                };
                Arc::new(WechatPayProvider::new(config, clock).unwrap())
            }
            Self::UnionPay => {
                let config = UnionPayConfig {
                    base_url: stack().sandbox_url.clone(),
                    mer_id: xtask::UNIONPAY_MER_ID.into(),
                    sign_key: RsaSigner::from_pem(&key_pem("unionpay_merchant_private.pem"))
                        .unwrap(),
                    sign_cert_serial_decimal: cert_serial_decimal(&key_pem(
                        "unionpay_merchant.pem",
                    ))
                    .unwrap(),
                    root_cert_pem: key_pem("unionpay_ca_root.pem"),
                    intermediate_cert_pem: key_pem("unionpay_ca_intermediate.pem"),
                    expected_signer_cn: shared::config::UNIONPAY_SIGNER_CN.into(),
                    back_url: notify_url,
                    timeout: TIMEOUT,
                };
                Arc::new(UnionPayProvider::new(config, clock).unwrap())
            }
        }
    }
}

/// Creates a payment through the stack with `knobs` on its sandbox trade, pays it, and waits
/// until our side has it paid. UnionPay's sandbox scopes knobs by order id (our payment id),
/// the others by subject.
async fn paid_payment(provider: Provider, knobs: Value) -> PaymentId {
    let order_id = unique(provider.name());
    let subject = format!("refund {order_id}");
    if provider != Provider::UnionPay {
        sandbox::set_faults(&subject, knobs.clone()).await;
    }
    let body = json!({
        "order_id": order_id, "amount_minor": PAID_MINOR, "currency": "CNY",
        "provider": provider.name(), "subject": subject,
    });
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let payment_id = reply.body["payment_id"].as_str().unwrap().to_owned();
    if provider == Provider::UnionPay {
        sandbox::set_faults(&payment_id, knobs).await;
    }
    let pay_url = reply.body["pay_url"].as_str().unwrap();
    assert_eq!(sandbox::pay(pay_url).await.status, 200);
    let payment = wait_for_payment(&payment_id, 10_000, |p| p["status"] != "pending")
        .await
        .body;
    assert_eq!(payment["status"], "paid", "{payment}");
    PaymentId::parse(&payment_id).unwrap()
}

/// 32 letters and digits, as the refund use case mints them.
fn refund_no() -> String {
    format!("{}RFND00", ulid::Ulid::new())
}

/// The refund as the use case would ask for it; `provider_trade_no` is what the adapter's own
/// query reports (for UnionPay the consume's `queryId`, which the refund must name).
async fn asked(
    adapter: &dyn PaymentProvider,
    payment_id: &PaymentId,
    amount_minor: i64,
) -> ProviderRefund {
    let trade = adapter.query(payment_id).await.unwrap().unwrap();
    ProviderRefund {
        payment_id: payment_id.clone(),
        refund_no: refund_no(),
        amount_minor,
        total_minor: PAID_MINOR,
        currency: Currency::Cny,
        reason: "退货 returned".into(),
        provider_trade_no: trade.provider_trade_no,
        requested_at: SystemClock.now(),
    }
}

/// Queries until the refund is no longer processing; returns every answer, the last one first
/// to read.
async fn polled(adapter: &dyn PaymentProvider, refund: &ProviderRefund) -> Vec<RefundState> {
    let mut states = Vec::new();
    for _ in 0..QUERIES_MAX {
        let state = adapter.query_refund(refund).await.unwrap();
        let state = state.unwrap_or_else(|| panic!("the provider has refund {refund:?}"));
        states.push(state.clone());
        if state != RefundState::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    states
}

fn rejected_code(result: Result<RefundState, ProviderError>) -> String {
    match result {
        Err(ProviderError::Rejected { code, .. }) => code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Part refund, query, repeat (one money movement), over-refund, unknown refund number.
async fn refund_query_repeat_and_over_refund(provider: Provider) {
    let payment_id = paid_payment(provider, json!({})).await;
    let adapter = provider.adapter();
    let refund = asked(adapter.as_ref(), &payment_id, REFUND_MINOR).await;
    if provider == Provider::UnionPay {
        let trade = sandbox::trade(payment_id.as_str()).await;
        assert_eq!(
            refund.provider_trade_no.as_deref(),
            trade["trade_no"].as_str(),
            "the refund names the consume's queryId"
        );
    }

    let first = adapter.refund(&refund).await.unwrap();
    assert!(
        matches!(first, RefundState::Succeeded | RefundState::Processing),
        "{first:?}"
    );
    let states = polled(adapter.as_ref(), &refund).await;
    assert_eq!(states.last(), Some(&RefundState::Succeeded), "{states:?}");

    let again = adapter.refund(&refund).await.unwrap();
    assert!(
        matches!(again, RefundState::Succeeded | RefundState::Processing),
        "{again:?}"
    );
    assert_eq!(
        polled(adapter.as_ref(), &refund).await,
        [RefundState::Succeeded]
    );
    let trade = sandbox::trade(payment_id.as_str()).await;
    let refunds = trade["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "one refund: {trade}");
    assert_eq!(
        (
            &refunds[0]["refund_no"],
            &refunds[0]["amount_minor"],
            &refunds[0]["requests"],
            &trade["refunded_minor"],
        ),
        (
            &json!(refund.refund_no),
            &json!(REFUND_MINOR),
            &json!(2),
            &json!(REFUND_MINOR),
        ),
        "the repeat moved no money: {trade}"
    );

    let left = PAID_MINOR - REFUND_MINOR;
    let over = asked(adapter.as_ref(), &payment_id, left + 1).await;
    let code = rejected_code(adapter.refund(&over).await);
    assert!(!code.is_empty());
    assert_eq!(
        adapter.query_refund(&over).await,
        Ok(None),
        "nothing was refunded by the refused request"
    );
    let trade = sandbox::trade(payment_id.as_str()).await;
    assert_eq!(
        (
            trade["refunds"].as_array().map(Vec::len),
            &trade["refunded_minor"]
        ),
        (Some(1), &json!(REFUND_MINOR)),
        "{trade}"
    );
}

/// Under `refund_processing` the refund is PROCESSING first; polling resolves it. The sandbox
/// answers PROCESSING once more to the first query, then SUCCESS.
async fn processing_refund_resolves_by_polling(provider: Provider) {
    let payment_id = paid_payment(provider, json!({ "refund_processing": true })).await;
    let adapter = provider.adapter();
    let refund = asked(adapter.as_ref(), &payment_id, REFUND_MINOR).await;
    assert_eq!(adapter.refund(&refund).await, Ok(RefundState::Processing));
    // Alipay's adapter confirms a `fund_change=N` answer with one refund query of its own.
    let confirming_queries = usize::from(provider == Provider::Alipay);
    if confirming_queries == 0 {
        assert_eq!(
            sandbox::trade(payment_id.as_str()).await["refunded_minor"],
            0,
            "no money moved yet"
        );
    }
    let states = polled(adapter.as_ref(), &refund).await;
    assert_eq!(states.last(), Some(&RefundState::Succeeded), "{states:?}");
    assert_eq!(
        states.len() + confirming_queries,
        2,
        "processing until the first query: {states:?}"
    );
    assert_eq!(
        sandbox::trade(payment_id.as_str()).await["refunded_minor"],
        REFUND_MINOR
    );
}

#[tokio::test]
async fn sandbox_refund_query_repeat_and_over_refund() {
    refund_query_repeat_and_over_refund(Provider::Sandbox).await;
}

#[tokio::test]
async fn sandbox_processing_refund_resolves_by_polling() {
    processing_refund_resolves_by_polling(Provider::Sandbox).await;
}

#[tokio::test]
async fn alipay_refund_query_repeat_and_over_refund() {
    refund_query_repeat_and_over_refund(Provider::Alipay).await;
}

#[tokio::test]
async fn alipay_processing_refund_resolves_by_polling() {
    processing_refund_resolves_by_polling(Provider::Alipay).await;
}

#[tokio::test]
async fn wechatpay_refund_query_repeat_and_over_refund() {
    refund_query_repeat_and_over_refund(Provider::WechatPay).await;
}

#[tokio::test]
async fn wechatpay_processing_refund_resolves_by_polling() {
    processing_refund_resolves_by_polling(Provider::WechatPay).await;
}

#[tokio::test]
async fn unionpay_refund_query_repeat_and_over_refund() {
    refund_query_repeat_and_over_refund(Provider::UnionPay).await;
}

#[tokio::test]
async fn unionpay_processing_refund_resolves_by_polling() {
    processing_refund_resolves_by_polling(Provider::UnionPay).await;
}

#[tokio::test]
async fn a_unionpay_refund_without_the_consumes_query_id_is_rejected() {
    let payment_id = paid_payment(Provider::UnionPay, json!({})).await;
    let adapter = Provider::UnionPay.adapter();
    let mut refund = asked(adapter.as_ref(), &payment_id, REFUND_MINOR).await;
    refund.provider_trade_no = None;
    assert_eq!(
        rejected_code(adapter.refund(&refund).await),
        shared::provider::unionpay::NO_ORIG_QUERY_ID
    );
    assert_eq!(
        sandbox::trade(payment_id.as_str()).await["refunds"],
        json!([])
    );
}
