//! UnionPay refunds end to end: txnType 04 on `backTransReq.do`, answered accepted, and its
//! result through `queryTrans.do` by the refund's own orderId and txnTime, and its `backUrl`
//! notification once it succeeds. Requests are signed and answers and notifications verified
//! by hand (hex SHA-256 of the sorted content, SHA256withRSA over that).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::sandbox::test_support;
use crate::sandbox::{
    KeyPairPem, ProviderSandboxes, UnionPayOptions, generate_rsa_2048, keys, start_with,
};

const MER_ID: &str = "777290058110049";
const CERT_ID: &str = "69903319370";
const CONSUME_TIME: &str = "20260101120000";
const REFUND_TIME: &str = "20260102130000";
const SIGNER_CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nU2FuZGJveCBzaWduZXI=\n-----END CERTIFICATE-----\n";

type Fields = BTreeMap<String, String>;

struct TestKeys {
    merchant: KeyPairPem,
    signer: KeyPairPem,
    native_merchant: KeyPairPem,
    native_provider: KeyPairPem,
}

fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        merchant: generate_rsa_2048().expect("merchant key"),
        signer: generate_rsa_2048().expect("signer key"),
        native_merchant: generate_rsa_2048().expect("native merchant key"),
        native_provider: generate_rsa_2048().expect("native provider key"),
    })
}

/// Takes every notification as a form, acknowledged with 200.
async fn receive(State(tx): State<mpsc::UnboundedSender<Fields>>, body: Bytes) -> StatusCode {
    let text = String::from_utf8_lossy(&body);
    let url = reqwest::Url::parse(&format!("http://x/?{text}")).expect("form");
    let _ = tx.send(url.query_pairs().into_owned().collect());
    StatusCode::OK
}

type Env = test_support::Env<Fields>;

async fn env() -> Env {
    let keys = test_keys();
    let receiver = test_support::receiver(|tx| {
        Router::new()
            .route("/notify", routing::post(receive))
            .with_state(tx)
    })
    .await;
    let unionpay = UnionPayOptions {
        mer_id: MER_ID.into(),
        merchant_cert_id: CERT_ID.into(),
        merchant_public_key_pem: keys.merchant.public_spki_pem.clone(),
        signer_private_key_pem: keys.signer.private_pkcs8_pem.clone(),
        signer_cert_pem: SIGNER_CERT_PEM.into(),
    };
    let providers = ProviderSandboxes {
        unionpay: Some(unionpay),
        ..ProviderSandboxes::default()
    };
    let options =
        test_support::native_options(&keys.native_merchant, &keys.native_provider, 100_000);
    let sandbox = start_with(options, providers).await.expect("sandbox start");
    Env::new(sandbox, receiver)
}

fn digest_hex(fields: &Fields) -> String {
    let content = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "signature")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    digest(&SHA256, content.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn request(txn_type: &str, order_id: &str, txn_time: &str, extra: &[(&str, &str)]) -> Fields {
    let mut fields: Fields = [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("certId", CERT_ID),
        ("merId", MER_ID),
        ("accessType", "0"),
        ("bizType", "000000"),
        ("txnType", txn_type),
        ("txnSubType", if txn_type == "01" { "07" } else { "00" }),
        ("orderId", order_id),
        ("txnTime", txn_time),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let key = keys::parse_private_key(&test_keys().merchant.private_pkcs8_pem).expect("key");
    let signature = keys::sign(&key, digest_hex(&fields).as_bytes()).expect("sign");
    fields.insert("signature".into(), signature);
    fields
}

/// Posts a signed form; a 200 answer must verify with the signer key.
async fn post(env: &Env, path: &str, fields: &Fields) -> (u16, Fields) {
    let mut url = reqwest::Url::parse("http://x/").expect("url");
    url.query_pairs_mut().extend_pairs(fields.iter());
    let body = url.query().unwrap_or_default().to_owned();
    let response = env
        .http
        .post(env.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    let text = response.text().await.expect("text");
    if status != 200 {
        return (status, Fields::new());
    }
    let answer: Fields = text
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let public = keys::parse_public_key(&test_keys().signer.public_spki_pem).expect("public");
    let signature = answer.get("signature").map_or("", String::as_str);
    assert!(
        keys::verify(&public, digest_hex(&answer).as_bytes(), signature),
        "answer verifies: {answer:?}"
    );
    (status, answer)
}

/// Consumes and pays `order_id`; returns the consume's `queryId`.
async fn paid(env: &Env, order_id: &str, amount: &str) -> String {
    let consume = request(
        "01",
        order_id,
        CONSUME_TIME,
        &[
            ("channelType", "08"),
            ("txnAmt", amount),
            ("currencyCode", "156"),
            ("backUrl", &env.notify_url),
        ],
    );
    let (_, answer) = post(env, "/gateway/api/backTransReq.do", &consume).await;
    assert_eq!(answer["respCode"], "00", "{answer:?}");
    let pay = env.http.post(&answer["qrCode"]).send().await.expect("pay");
    assert_eq!(pay.status(), 200);
    query(env, order_id, CONSUME_TIME).await["queryId"].clone()
}

async fn refund_as(
    env: &Env,
    order_id: &str,
    txn_time: &str,
    orig: &str,
    amount: &str,
) -> (u16, Fields) {
    let fields = request(
        "04",
        order_id,
        txn_time,
        &[
            ("channelType", "08"),
            ("txnAmt", amount),
            ("origQryId", orig),
            ("backUrl", &env.notify_url),
        ],
    );
    post(env, "/gateway/api/backTransReq.do", &fields).await
}

async fn refund(env: &Env, order_id: &str, orig: &str, amount: &str) -> Fields {
    refund_as(env, order_id, REFUND_TIME, orig, amount).await.1
}

async fn query(env: &Env, order_id: &str, txn_time: &str) -> Fields {
    let fields = request("00", order_id, txn_time, &[]);
    post(env, "/gateway/api/queryTrans.do", &fields).await.1
}

async fn admin_trade(env: &Env, order_id: &str) -> Value {
    let path = format!("/admin/trades/{order_id}");
    env.admin(Method::GET, &path, None).await.1
}

fn get<'a>(fields: &'a Fields, key: &str) -> &'a str {
    fields.get(key).map_or("", String::as_str)
}

#[tokio::test]
async fn refund_is_accepted_then_the_query_tells_the_result() {
    let env = env().await;
    let orig = paid(&env, "ORDER0000001", "1000").await;
    let accepted = refund(&env, "REFUND000001", &orig, "300").await;
    assert_eq!(
        (
            get(&accepted, "respCode"),
            get(&accepted, "orderId"),
            get(&accepted, "origQryId")
        ),
        ("00", "REFUND000001", orig.as_str()),
        "{accepted:?}"
    );
    let refund_query_id = get(&accepted, "queryId").to_owned();
    assert_eq!(refund_query_id.len(), 21);
    let again = refund(&env, "REFUND000001", &orig, "300").await;
    assert_eq!(
        (get(&again, "respCode"), get(&again, "queryId")),
        ("00", refund_query_id.as_str())
    );
    let trade = admin_trade(&env, "ORDER0000001").await;
    assert_eq!(
        (
            &trade["refunded_minor"],
            &trade["refunds"][0]["requests"],
            &trade["refunds"][0]["txn_time"]
        ),
        (&json!(300), &json!(2), &json!(REFUND_TIME)),
        "{trade}"
    );

    let found = query(&env, "REFUND000001", REFUND_TIME).await;
    assert_eq!(
        (
            get(&found, "respCode"),
            get(&found, "origRespCode"),
            get(&found, "txnAmt"),
            get(&found, "queryId"),
        ),
        ("00", "00", "300", refund_query_id.as_str()),
        "{found:?}"
    );
    let wrong_time = query(&env, "REFUND000001", CONSUME_TIME).await;
    assert_eq!(
        get(&wrong_time, "respCode"),
        "34",
        "a query names orderId and txnTime"
    );
    assert_eq!(
        get(&query(&env, "REFUND000009", REFUND_TIME).await, "respCode"),
        "34"
    );
    assert_eq!(
        get(
            &query(&env, "ORDER0000001", CONSUME_TIME).await,
            "origRespCode"
        ),
        "00",
        "the consume still queries as paid"
    );
}

#[tokio::test]
async fn refusals_are_failure_resp_codes() {
    let env = env().await;
    let orig = paid(&env, "ORDER0000001", "1000").await;
    assert_eq!(
        get(
            &refund(&env, "REFUND000001", &orig, "600").await,
            "respCode"
        ),
        "00"
    );
    let cases = [
        ("over", "REFUND000002", orig.as_str(), "401", "33"),
        ("other amount", "REFUND000001", orig.as_str(), "500", "12"),
        (
            "a consume's orderId",
            "ORDER0000001",
            orig.as_str(),
            "1",
            "12",
        ),
        (
            "unknown consume",
            "REFUND000003",
            "000000000000000000009",
            "1",
            "35",
        ),
        ("zero", "REFUND000004", orig.as_str(), "0", "30"),
    ];
    for (name, order_id, orig_query_id, amount, code) in cases {
        let answer = refund(&env, order_id, orig_query_id, amount).await;
        assert_eq!(get(&answer, "respCode"), code, "{name}: {answer:?}");
    }
    let (_, other_time) = refund_as(&env, "REFUND000001", CONSUME_TIME, &orig, "600").await;
    assert_eq!(
        get(&other_time, "respCode"),
        "12",
        "same orderId, another txnTime"
    );

    let unpaid = request(
        "01",
        "ORDER0000002",
        CONSUME_TIME,
        &[
            ("txnAmt", "1000"),
            ("currencyCode", "156"),
            ("backUrl", &env.notify_url),
        ],
    );
    let (_, created) = post(&env, "/gateway/api/backTransReq.do", &unpaid).await;
    let unpaid_query_id = admin_trade(&env, "ORDER0000002").await["trade_no"]
        .as_str()
        .expect("trade_no")
        .to_owned();
    assert_eq!(get(&created, "respCode"), "00");
    let answer = refund(&env, "REFUND000005", &unpaid_query_id, "1").await;
    assert_eq!(get(&answer, "respCode"), "35", "unpaid: {answer:?}");
    assert_eq!(
        admin_trade(&env, "ORDER0000001").await["refunded_minor"],
        600
    );
}

#[tokio::test]
async fn refund_knobs() {
    let env = env().await;
    let broken = paid(&env, "BROKEN000001", "1000").await;
    let slow = paid(&env, "SLOW00000001", "1000").await;
    let processing = paid(&env, "PROCESSING01", "1000").await;
    env.set_faults(json!({ "scope": "BROKEN", "refund": "error" }))
        .await;
    env.set_faults(json!({ "scope": "SLOW", "refund": "timeout", "hang_ms": 2000 }))
        .await;
    env.set_faults(json!({ "scope": "PROCESSING", "refund_processing": true }))
        .await;

    assert_eq!(
        refund_as(&env, "REFUND000001", REFUND_TIME, &broken, "100")
            .await
            .0,
        500
    );
    assert_eq!(
        admin_trade(&env, "BROKEN000001").await["refunds"],
        json!([])
    );
    let hanging = refund(&env, "REFUND000002", &slow, "100");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), hanging)
            .await
            .is_err()
    );
    assert_eq!(
        admin_trade(&env, "SLOW00000001").await["refunded_minor"],
        100
    );

    assert_eq!(
        get(
            &refund(&env, "REFUND000003", &processing, "100").await,
            "respCode"
        ),
        "00"
    );
    assert_eq!(
        get(
            &query(&env, "REFUND000003", REFUND_TIME).await,
            "origRespCode"
        ),
        "05"
    );
    assert_eq!(
        get(
            &query(&env, "REFUND000003", REFUND_TIME).await,
            "origRespCode"
        ),
        "00"
    );
    env.sandbox.shutdown().await;
}

/// Whether the signer signed the notification's fields (as answers are signed).
fn signer_signed(fields: &Fields) -> bool {
    let public = keys::parse_public_key(&test_keys().signer.public_spki_pem).expect("public");
    let signature = fields.get("signature").map_or("", String::as_str);
    keys::verify(&public, digest_hex(fields).as_bytes(), signature)
}

/// A refund carrying `reqReserved`, as the adapter sends it.
async fn refund_reserving(env: &Env, order_id: &str, orig: &str, amount: &str) -> Fields {
    let fields = request(
        "04",
        order_id,
        REFUND_TIME,
        &[
            ("channelType", "08"),
            ("txnAmt", amount),
            ("origQryId", orig),
            ("backUrl", &env.notify_url),
            ("reqReserved", "01J0000000000000000000PAY1"),
        ],
    );
    post(env, "/gateway/api/backTransReq.do", &fields).await.1
}

#[tokio::test]
async fn a_refund_that_succeeds_notifies_its_back_url_echoing_req_reserved() {
    let mut env = env().await;
    let orig = paid(&env, "ORDER0000001", "1000").await;
    let consume = env.expect_notification().await;
    assert_eq!(get(&consume, "txnType"), "01");
    let accepted = refund_reserving(&env, "REFUND000001", &orig, "300").await;
    assert_eq!(get(&accepted, "respCode"), "00", "{accepted:?}");
    assert_eq!(
        get(&accepted, "reqReserved"),
        "01J0000000000000000000PAY1",
        "echoed in the answer too"
    );
    let notice = env.expect_notification().await;
    assert!(signer_signed(&notice), "{notice:?}");
    for (key, value) in [
        ("txnType", "04"),
        ("txnSubType", "00"),
        ("merId", MER_ID),
        ("orderId", "REFUND000001"),
        ("txnTime", REFUND_TIME),
        ("txnAmt", "300"),
        ("currencyCode", "156"),
        ("origQryId", orig.as_str()),
        ("queryId", get(&accepted, "queryId")),
        ("reqReserved", "01J0000000000000000000PAY1"),
        ("respCode", "00"),
        ("version", "5.1.0"),
        ("signMethod", "01"),
        ("signPubKeyCert", SIGNER_CERT_PEM),
    ] {
        assert_eq!(get(&notice, key), value, "{key}: {notice:?}");
    }
    // The same refund again: the same answer, no money and no notification.
    let again = refund_reserving(&env, "REFUND000001", &orig, "300").await;
    assert_eq!(get(&again, "queryId"), get(&accepted, "queryId"));
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none()
    );
    let trade = admin_trade(&env, "ORDER0000001").await;
    let log: Vec<&Value> = trade["deliveries"]
        .as_array()
        .expect("log")
        .iter()
        .filter(|d| !d["refund_no"].is_null())
        .collect();
    assert_eq!(log.len(), 1, "{trade}");
    assert_eq!(
        (&log[0]["notify_id"], &log[0]["refund_no"], &log[0]["acked"]),
        (
            &json!(get(&accepted, "queryId")),
            &json!("REFUND000001"),
            &json!(true)
        )
    );
    assert_eq!(
        trade["refunds"][0]["req_reserved"],
        "01J0000000000000000000PAY1"
    );
}

#[tokio::test]
async fn a_processing_refund_notifies_once_it_succeeds() {
    let mut env = env().await;
    let orig = paid(&env, "PROCESSING01", "1000").await;
    env.expect_notification().await;
    env.set_faults(json!({ "scope": "PROCESSING", "refund_processing": true }))
        .await;
    let accepted = refund(&env, "REFUND000001", &orig, "100").await;
    assert_eq!(get(&accepted, "respCode"), "00");
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing while processing"
    );
    let found = query(&env, "REFUND000001", REFUND_TIME).await;
    assert_eq!(get(&found, "origRespCode"), "05");
    let notice = env.expect_notification().await;
    assert!(signer_signed(&notice));
    assert_eq!(
        (
            get(&notice, "txnType"),
            get(&notice, "orderId"),
            get(&notice, "respCode")
        ),
        ("04", "REFUND000001", "00")
    );
    assert!(
        !notice.contains_key("reqReserved"),
        "nothing to echo when the request had none"
    );
}

#[tokio::test]
async fn refund_notifications_follow_the_delivery_knobs() {
    let mut env = env().await;
    let forged = paid(&env, "FORGED000001", "1000").await;
    let silent = paid(&env, "SILENT000001", "1000").await;
    let doubled = paid(&env, "DOUBLED00001", "1000").await;
    for _ in 0..3 {
        env.expect_notification().await;
    }
    env.set_faults(json!({ "scope": "FORGED", "forge": true }))
        .await;
    env.set_faults(json!({ "scope": "SILENT", "never_notify": true }))
        .await;
    env.set_faults(json!({ "scope": "DOUBLED", "duplicate": 1 }))
        .await;

    refund(&env, "REFUND000001", &forged, "100").await;
    assert!(!signer_signed(&env.expect_notification().await));
    refund(&env, "REFUND000002", &silent, "100").await;
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none()
    );
    refund(&env, "REFUND000003", &doubled, "100").await;
    let first = env.expect_notification().await;
    let second = env.expect_notification().await;
    assert_eq!(first.get("queryId"), second.get("queryId"));
    assert!(signer_signed(&first) && signer_signed(&second));
}
