//! UnionPay's settlement file end to end: a payment created and paid through the stack with
//! provider `unionpay`, then the day's (China time) file fetched through the adapter from the
//! sandbox's file transfer host: signed, zlib over ZIP over GBK fixed-width records.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shared::clock::SystemClock;
use shared::crypto::RsaSigner;
use shared::domain::Timestamp;
use shared::provider::unionpay::statement::{StatementKind, StatementLine};
use shared::provider::unionpay::{
    UnionPayConfig, UnionPayProvider, cert_serial_decimal, china_time,
};
use tests::{create, key_pem, sandbox, stack, unique, wait_for_payment};

/// The adapter as the functions build it, from the keys the stack wrote. The file URL is the
/// one `xtask/src/stack.rs` gives the functions (`UnionPayFileUrl`).
fn adapter() -> UnionPayProvider {
    let sign_cert = key_pem("unionpay_merchant.pem");
    let config = UnionPayConfig {
        base_url: stack().sandbox_url.clone(),
        mer_id: xtask::UNIONPAY_MER_ID.into(),
        sign_key: RsaSigner::from_pem(&key_pem("unionpay_merchant_private.pem")).unwrap(),
        sign_cert_serial_decimal: cert_serial_decimal(&sign_cert).unwrap(),
        root_cert_pem: key_pem("unionpay_ca_root.pem"),
        intermediate_cert_pem: key_pem("unionpay_ca_intermediate.pem"),
        expected_signer_cn: shared::config::UNIONPAY_SIGNER_CN.into(),
        // Nothing is created through this adapter, so nothing is notified here.
        back_url: "http://127.0.0.1:9/callbacks/unionpay".into(),
        timeout: Duration::from_secs(5),
    };
    UnionPayProvider::new(config, Arc::new(SystemClock))
        .unwrap()
        .with_file_url(Some(format!("{}/unionpay/file/", stack().sandbox_url)))
        .unwrap()
}

/// Today in China time, `yyyy-MM-dd`.
fn china_today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let text = china_time(Timestamp::from_unix_ms(
        i64::try_from(now.as_millis()).unwrap(),
    ))
    .unwrap();
    format!("{}-{}-{}", &text[..4], &text[4..6], &text[6..8])
}

#[tokio::test]
async fn a_paid_unionpay_payment_is_in_the_days_settlement_file() {
    let before = china_today();
    let order_id = unique("stmt-unionpay");
    let body = json!({
        "order_id": order_id, "amount_minor": 2345, "currency": "CNY", "provider": "unionpay",
        "subject": format!("statement {order_id}"),
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
    let after = china_today();

    // Paid just around midnight China time, the trade is in one of the two days' files.
    let mut days = vec![before.clone()];
    if after != before {
        days.push(after);
    }
    let adapter = adapter();
    let mut lines: Vec<StatementLine> = Vec::new();
    for day in &days {
        lines.extend(adapter.download_statement(day).await.unwrap());
    }
    let ours: Vec<&StatementLine> = lines
        .iter()
        .filter(|line| line.out_trade_no == payment_id)
        .collect();
    assert_eq!(ours.len(), 1, "{lines:#?}");
    let trade_no = sandbox::trade(&payment_id).await["trade_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = ours[0];
    assert_eq!(
        (
            line.kind,
            line.amount_minor,
            line.settle_minor,
            line.provider_trade_no.as_str(),
            line.mer_id.as_str(),
        ),
        (
            StatementKind::Paid,
            2345,
            2345,
            trade_no.as_str(),
            xtask::UNIONPAY_MER_ID
        )
    );
    // The record's txnTime is the consume's, which the adapter derives from the payment id.
    let created_ms = ulid::Ulid::from_string(&payment_id).unwrap().timestamp_ms();
    assert_eq!(
        line.traded_at,
        Timestamp::from_unix_s(i64::try_from(created_ms / 1000).unwrap())
    );
    assert!(!line.sub_mer_abbr.is_empty(), "GBK text decoded: {line:?}");
}
