//! Alipay refunds end to end: `alipay.trade.refund` and `alipay.trade.fastpay.refund.query`
//! against a sandbox with an `alipay` section. Requests are signed and answers verified by hand.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};

use crate::sandbox::alipay::encode_form;
use crate::sandbox::test_support;
use crate::sandbox::{AlipayOptions, KeyPairPem, generate_rsa_2048, keys, start_with_alipay};

const APP_ID: &str = "2021000000000009";

struct TestKeys {
    merchant: KeyPairPem,
    provider: KeyPairPem,
    app: KeyPairPem,
    alipay: KeyPairPem,
}

fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        merchant: generate_rsa_2048().expect("merchant key"),
        provider: generate_rsa_2048().expect("provider key"),
        app: generate_rsa_2048().expect("app key"),
        alipay: generate_rsa_2048().expect("alipay key"),
    })
}

type Env = test_support::Env<()>;

async fn env() -> Env {
    let keys = test_keys();
    let receiver =
        test_support::receiver(|_tx| Router::new().route("/notify", post(|| async { "success" })))
            .await;
    let alipay = AlipayOptions {
        app_id: APP_ID.into(),
        app_public_key_pem: keys.app.public_spki_pem.clone(),
        alipay_private_key_pem: keys.alipay.private_pkcs8_pem.clone(),
        seller_id: None,
    };
    let options = test_support::native_options(&keys.merchant, &keys.provider, 100_000);
    let sandbox = start_with_alipay(options, Some(alipay))
        .await
        .expect("sandbox start");
    Env::new(sandbox, receiver)
}

/// `sign` over the sorted `k=v` of every other non-empty parameter (`sign_type` included).
fn signed_form(method: &str, biz: &Value) -> Vec<(String, String)> {
    let mut params: BTreeMap<String, String> = [
        ("app_id", APP_ID),
        ("method", method),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("timestamp", "2026-01-02 03:04:05"),
        ("version", "1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    params.insert("biz_content".into(), biz.to_string());
    let content = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let key = keys::parse_private_key(&test_keys().app.private_pkcs8_pem).expect("app key");
    let sign = keys::sign(&key, content.as_bytes()).expect("sign");
    params.insert("sign".into(), sign);
    params.into_iter().collect()
}

/// The HTTP status and the `<method>_response` value, asserted to verify over its raw text.
async fn gateway(env: &Env, method: &str, biz: Value) -> (u16, Value) {
    let response = env
        .http
        .post(env.url("/gateway.do"))
        .header(
            "content-type",
            "application/x-www-form-urlencoded;charset=utf-8",
        )
        .body(encode_form(&signed_form(method, &biz)))
        .send()
        .await
        .expect("gateway");
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    if status != 200 {
        return (status, Value::Null);
    }
    let prefix = format!("{{\"{}_response\":", method.replace('.', "_"));
    let rest = body.strip_prefix(&prefix).expect("response key first");
    let (value, tail) = rest.rsplit_once(",\"sign\":\"").expect("sign last");
    let signature = tail.strip_suffix("\"}").expect("closing");
    let public = keys::parse_public_key(&test_keys().alipay.public_spki_pem).expect("public");
    assert!(
        keys::verify(&public, value.as_bytes(), signature),
        "answer verifies: {body}"
    );
    (status, serde_json::from_str(value).expect("value"))
}

async fn precreate(env: &Env, out_trade_no: &str, subject: &str, amount: &str) -> Value {
    let biz = json!({ "out_trade_no": out_trade_no, "total_amount": amount, "subject": subject });
    let (_, created) = gateway(env, "alipay.trade.precreate", biz).await;
    assert_eq!(created["code"], "10000", "{created}");
    created
}

async fn paid(env: &Env, out_trade_no: &str, subject: &str, amount: &str) {
    let created = precreate(env, out_trade_no, subject, amount).await;
    let pay_url = created["qr_code"].as_str().expect("qr_code");
    assert_eq!(
        env.http.post(pay_url).send().await.expect("pay").status(),
        200
    );
}

async fn refund(env: &Env, out_trade_no: &str, request_no: &str, amount: &str) -> Value {
    let biz = json!({
        "out_trade_no": out_trade_no, "out_request_no": request_no, "refund_amount": amount,
        "refund_reason": "退货",
    });
    gateway(env, "alipay.trade.refund", biz).await.1
}

async fn query(env: &Env, out_trade_no: &str, request_no: &str) -> Value {
    let biz = json!({ "out_trade_no": out_trade_no, "out_request_no": request_no });
    gateway(env, "alipay.trade.fastpay.refund.query", biz)
        .await
        .1
}

async fn admin_trade(env: &Env, out_trade_no: &str) -> Value {
    let path = format!("/admin/trades/{out_trade_no}");
    env.admin(Method::GET, &path, None).await.1
}

fn sub_code(value: &Value) -> (&str, &str) {
    (
        value["code"].as_str().unwrap_or_default(),
        value["sub_code"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn refund_moves_money_once_and_the_query_confirms_it() {
    let env = env().await;
    paid(&env, "A1", "s", "10.00").await;
    let first = refund(&env, "A1", "R1", "3.00").await;
    assert_eq!(
        (
            sub_code(&first),
            &first["fund_change"],
            &first["refund_fee"]
        ),
        (("10000", ""), &json!("Y"), &json!("3.00")),
        "{first}"
    );
    assert_eq!(first["out_trade_no"], "A1");
    let again = refund(&env, "A1", "R1", "3.00").await;
    assert_eq!(
        (
            sub_code(&again),
            &again["fund_change"],
            &again["refund_fee"]
        ),
        (("10000", ""), &json!("N"), &json!("3.00")),
        "a repeat moves nothing: {again}"
    );
    let trade = admin_trade(&env, "A1").await;
    assert_eq!(
        (&trade["refunded_minor"], &trade["refunds"][0]["requests"]),
        (&json!(300), &json!(2)),
        "{trade}"
    );

    let found = query(&env, "A1", "R1").await;
    assert_eq!(
        (
            sub_code(&found),
            &found["refund_status"],
            &found["refund_amount"],
            &found["total_amount"],
            &found["out_request_no"],
        ),
        (
            ("10000", ""),
            &json!("REFUND_SUCCESS"),
            &json!("3.00"),
            &json!("10.00"),
            &json!("R1"),
        ),
        "{found}"
    );
    let missing = query(&env, "A1", "R9").await;
    assert_eq!(sub_code(&missing), ("10000", ""));
    assert!(missing.get("refund_amount").is_none(), "{missing}");
    assert_eq!(
        sub_code(&query(&env, "A9", "R1").await),
        ("40004", "ACQ.TRADE_NOT_EXIST")
    );
}

#[tokio::test]
async fn refunds_beyond_the_paid_amount_other_terms_and_unpaid_are_refused() {
    let env = env().await;
    paid(&env, "A1", "s", "10.00").await;
    assert_eq!(refund(&env, "A1", "R1", "6.00").await["fund_change"], "Y");
    let over = refund(&env, "A1", "R2", "4.01").await;
    assert_eq!(sub_code(&over), ("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"));
    let other = refund(&env, "A1", "R1", "5.00").await;
    assert_eq!(sub_code(&other), ("40004", "ACQ.REFUND_FEE_ERROR"));
    assert_eq!(
        refund(&env, "A1", "R2", "4.00").await["refund_fee"],
        "10.00"
    );

    precreate(&env, "A2", "s", "10.00").await;
    let unpaid = refund(&env, "A2", "R1", "1.00").await;
    assert_eq!(sub_code(&unpaid), ("40004", "ACQ.TRADE_STATUS_ERROR"));
    let unknown = refund(&env, "A9", "R1", "1.00").await;
    assert_eq!(sub_code(&unknown), ("40004", "ACQ.TRADE_NOT_EXIST"));
    for bad in ["0", "1.001", "-1.00", ""] {
        let answer = refund(&env, "A1", "R3", bad).await;
        assert_eq!(
            sub_code(&answer),
            ("40002", "isv.invalid-parameter"),
            "{bad:?}"
        );
    }
    assert_eq!(admin_trade(&env, "A1").await["refunded_minor"], 1000);
}

#[tokio::test]
async fn refund_knobs() {
    let env = env().await;
    paid(&env, "A1", "broken refund", "10.00").await;
    paid(&env, "A2", "slow refund", "10.00").await;
    paid(&env, "A3", "processing refund", "10.00").await;
    env.set_faults(json!({ "scope": "broken", "refund": "error" }))
        .await;
    env.set_faults(json!({ "scope": "slow", "refund": "timeout", "hang_ms": 2000 }))
        .await;
    env.set_faults(json!({ "scope": "processing", "refund_processing": true }))
        .await;

    let biz = json!({ "out_trade_no": "A1", "out_request_no": "R1", "refund_amount": "1.00" });
    assert_eq!(gateway(&env, "alipay.trade.refund", biz).await.0, 500);
    assert_eq!(admin_trade(&env, "A1").await["refunds"], json!([]));

    let slow = refund(&env, "A2", "R1", "1.00");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .is_err()
    );
    assert_eq!(admin_trade(&env, "A2").await["refunded_minor"], 100);

    let processing = refund(&env, "A3", "R1", "1.00").await;
    assert_eq!(
        (sub_code(&processing), &processing["fund_change"]),
        (("10000", ""), &json!("N"))
    );
    let first = query(&env, "A3", "R1").await;
    assert_eq!(first["refund_amount"], "1.00", "{first}");
    assert!(
        first.get("refund_status").is_none(),
        "still processing: {first}"
    );
    assert_eq!(
        query(&env, "A3", "R1").await["refund_status"],
        "REFUND_SUCCESS"
    );
    env.sandbox.shutdown().await;
}
