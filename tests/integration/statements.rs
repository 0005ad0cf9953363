//! Statements end to end: a payment paid through Alipay and one through WeChat Pay on the local
//! stack, then that China-time day's bill fetched with the adapter's own download method from
//! the sandbox, which builds the files from its trades with its own, independent code (a GBK
//! zip for Alipay; a signed download with a SHA-1 for WeChat Pay).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shared::clock::SystemClock;
use shared::crypto::{RsaSigner, RsaVerifier};
use shared::domain::{Currency, Timestamp};
use shared::ports::{Clock, ProviderError};
use shared::provider::alipay::{
    AlipayConfig, AlipayProvider, DownloadStatementError, StatementKind,
};
use shared::provider::wechatpay::{
    self, DownloadTradeBillError, WechatPayConfig, WechatPayProvider, platform_public_key,
};
use tests::{create, key_pem, sandbox, stack, unique, wait_for_payment};

const TIMEOUT: Duration = Duration::from_secs(10);

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The Alipay adapter as the stack's functions are configured, built here in the test.
fn alipay_adapter() -> AlipayProvider {
    let config = AlipayConfig {
        gateway_url: format!("{}/gateway.do", stack().sandbox_url),
        app_id: xtask::ALIPAY_APP_ID.into(),
        seller_id: None,
        app_private_key: RsaSigner::from_pem(&key_pem("alipay_app_private.pem")).unwrap(),
        alipay_public_key: RsaVerifier::from_pem(&key_pem("alipay_public.pem")).unwrap(),
        // Nothing is created through this adapter: no notification comes here.
        notify_url: format!("{}/callbacks/alipay", stack().api_url),
        timeout: TIMEOUT,
    };
    AlipayProvider::new(config, clock()).unwrap()
}

/// The WeChat Pay adapter as the stack's functions are configured, built here in the test.
fn wechatpay_adapter() -> WechatPayProvider {
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
        merchant_key: RsaSigner::from_pem(&key_pem("wechatpay_merchant_private.pem")).unwrap(),
        platform_keys: vec![platform_key],
        api_v3_key: key_pem("wechatpay_apiv3.key").trim().as_bytes().to_vec(),
        notify_url: format!("{}/callbacks/wechatpay", stack().api_url),
        timeout: TIMEOUT,
    };
    WechatPayProvider::new(config, clock()).unwrap()
}

/// Creates a payment through `provider`, pays it at the sandbox and waits until our side has it
/// paid; returns its id and the sandbox's view of the trade.
async fn paid(provider: &str, amount_minor: i64) -> (String, Value) {
    let order_id = unique(provider);
    let body = json!({
        "order_id": order_id, "amount_minor": amount_minor, "currency": "CNY",
        "provider": provider, "subject": format!("statement {order_id}"),
    });
    let reply = create(&body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let payment_id = reply.body["payment_id"].as_str().unwrap().to_owned();
    let pay_url = reply.body["pay_url"].as_str().unwrap();
    assert_eq!(sandbox::pay(pay_url).await.status, 200);
    let payment = wait_for_payment(&payment_id, 10_000, |p| p["status"] != "pending")
        .await
        .body;
    assert_eq!(payment["status"], "paid", "{payment}");
    let trade = sandbox::trade(&payment_id).await;
    (payment_id, trade)
}

/// When the sandbox recorded the payment.
fn paid_at(trade: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(trade["paid_at"].as_str().unwrap()).unwrap()
}

/// `YYYY-MM-DD` in China time (UTC+8, no daylight saving): the bill's day.
fn china_day(at: Timestamp) -> String {
    at.plus_s(8 * 3600).to_rfc3339()[..10].to_owned()
}

#[tokio::test]
async fn alipay_statement_lists_the_paid_payment() {
    let (payment_id, trade) = paid("alipay", 2345).await;
    let day = china_day(paid_at(&trade));
    let lines = alipay_adapter().download_statement(&day).await.unwrap();
    let line = lines
        .iter()
        .find(|l| l.out_trade_no == payment_id)
        .unwrap_or_else(|| panic!("{payment_id} not in the {day} bill: {lines:?}"));
    assert_eq!(line.kind, StatementKind::Paid);
    assert_eq!((line.amount_minor, line.received_minor), (2345, 2345));
    assert_eq!(line.provider_trade_no, trade["trade_no"].as_str().unwrap());
    assert_eq!(line.traded_at, paid_at(&trade));
    assert!(
        lines.iter().all(|l| china_day(l.traded_at) == day),
        "only that day's trades: {lines:?}"
    );

    let not_ready = alipay_adapter().download_statement("2999-01-01").await;
    assert!(
        matches!(
            &not_ready,
            Err(DownloadStatementError::Provider(ProviderError::Rejected { code, .. }))
                if code == "isp.bill_not_exist"
        ),
        "{not_ready:?}"
    );
}

#[tokio::test]
async fn wechatpay_trade_bill_lists_the_paid_payment() {
    let (payment_id, trade) = paid("wechatpay", 4321).await;
    let day = china_day(paid_at(&trade));
    let lines = wechatpay_adapter().download_trade_bill(&day).await.unwrap();
    let line = lines
        .iter()
        .find(|l| l.out_trade_no == payment_id)
        .unwrap_or_else(|| panic!("{payment_id} not in the {day} bill: {lines:?}"));
    assert_eq!(line.kind, wechatpay::StatementKind::Paid);
    assert_eq!(line.amount_minor, 4321);
    assert_eq!(line.currency, Currency::Cny);
    assert_eq!(line.mchid, xtask::WECHATPAY_MCHID);
    assert_eq!(line.provider_trade_no, trade["trade_no"].as_str().unwrap());
    assert_eq!(line.traded_at, paid_at(&trade));
    assert!(
        lines.iter().all(|l| china_day(l.traded_at) == day),
        "only that day's trades: {lines:?}"
    );

    let not_ready = wechatpay_adapter().download_trade_bill("2999-01-01").await;
    assert!(
        matches!(
            &not_ready,
            Err(DownloadTradeBillError::Provider(ProviderError::Rejected { code, .. }))
                if code == "NO_STATEMENT_EXIST"
        ),
        "{not_ready:?}"
    );
}
