//! WeChat Pay refunds end to end: `POST /v3/refund/domestic/refunds` and the query by
//! `out_refund_no`, with hand-built Authorization headers and every answer's platform signature
//! checked; and the `REFUND.SUCCESS` notification, opened here by hand.

use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::sandbox::state::unix_now;
use crate::sandbox::test_support;
use crate::sandbox::{
    KeyPairPem, ProviderSandboxes, WechatPayOptions, generate_rsa_2048, keys, start_with,
};

const MCHID: &str = "1900000009";
const APPID: &str = "wx0000000000000009";
const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E9";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0100000000000000000000000009";

struct TestKeys {
    merchant: KeyPairPem,
    platform: KeyPairPem,
    native_merchant: KeyPairPem,
    native_provider: KeyPairPem,
}

fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        merchant: generate_rsa_2048().expect("merchant key"),
        platform: generate_rsa_2048().expect("platform key"),
        native_merchant: generate_rsa_2048().expect("native merchant key"),
        native_provider: generate_rsa_2048().expect("native provider key"),
    })
}

const API_V3_KEY: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// A notification as the receiver got it.
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

async fn receive(
    State(tx): State<mpsc::UnboundedSender<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let _ = tx.send(Received { headers, body });
    StatusCode::NO_CONTENT
}

type Env = test_support::Env<Received>;

async fn env() -> Env {
    let keys = test_keys();
    let receiver =
        test_support::receiver(|tx| Router::new().route("/notify", post(receive)).with_state(tx))
            .await;
    let wechatpay = WechatPayOptions {
        mchid: MCHID.into(),
        appid: APPID.into(),
        merchant_serial_no: SERIAL.into(),
        merchant_public_key_pem: keys.merchant.public_spki_pem.clone(),
        platform_private_key_pem: keys.platform.private_pkcs8_pem.clone(),
        platform_public_key_id: PUB_KEY_ID.into(),
        api_v3_key: API_V3_KEY.to_vec(),
    };
    let providers = ProviderSandboxes {
        wechatpay: Some(wechatpay),
        ..ProviderSandboxes::default()
    };
    let options =
        test_support::native_options(&keys.native_merchant, &keys.native_provider, 100_000);
    let sandbox = start_with(options, providers).await.expect("sandbox start");
    Env::new(sandbox, receiver)
}

/// A signed v3 call; asserts the answer's platform signature (`ts\nnonce\nbody\n`).
async fn call(env: &Env, method: &str, url: &str, body: &str) -> (u16, Value) {
    let timestamp = unix_now().to_string();
    let nonce = "0F1E2D3C4B5A69788796A5B4C3D2E1F0";
    let message = format!("{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n");
    let key = keys::parse_private_key(&test_keys().merchant.private_pkcs8_pem).expect("key");
    let signature = keys::sign(&key, message.as_bytes()).expect("sign");
    let authorization = format!(
        "WECHATPAY2-SHA256-RSA2048 mchid=\"{MCHID}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{SERIAL}\",signature=\"{signature}\""
    );
    let mut request = env
        .http
        .request(method.parse().expect("method"), env.url(url))
        .header("authorization", authorization);
    if !body.is_empty() {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.expect("call");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let raw = response.bytes().await.expect("body");
    if status < 500 {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mut signed = format!(
            "{}\n{}\n",
            header("wechatpay-timestamp"),
            header("wechatpay-nonce")
        )
        .into_bytes();
        signed.extend_from_slice(&raw);
        signed.push(b'\n');
        let public = keys::parse_public_key(&test_keys().platform.public_spki_pem).expect("pk");
        assert!(
            header("wechatpay-serial") == PUB_KEY_ID
                && keys::verify(&public, &signed, &header("wechatpay-signature")),
            "{status} answer on {url} is signed"
        );
    }
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

async fn create(env: &Env, out_trade_no: &str, description: &str, total: i64) -> Value {
    let body = json!({
        "appid": APPID, "mchid": MCHID, "description": description,
        "out_trade_no": out_trade_no, "notify_url": env.notify_url,
        "amount": { "total": total, "currency": "CNY" },
    });
    let (status, created) = call(
        env,
        "POST",
        "/v3/pay/transactions/native",
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    created
}

async fn paid(env: &Env, out_trade_no: &str, description: &str, total: i64) {
    let created = create(env, out_trade_no, description, total).await;
    let code_url = created["code_url"].as_str().expect("code_url");
    assert_eq!(
        env.http.post(code_url).send().await.expect("pay").status(),
        200
    );
}

fn refund_body(out_trade_no: &str, out_refund_no: &str, refund: i64, total: i64) -> String {
    json!({
        "out_trade_no": out_trade_no, "out_refund_no": out_refund_no, "reason": "退货",
        "amount": { "refund": refund, "total": total, "currency": "CNY" },
    })
    .to_string()
}

async fn refund(env: &Env, out_trade_no: &str, no: &str, refund: i64, total: i64) -> (u16, Value) {
    let body = refund_body(out_trade_no, no, refund, total);
    call(env, "POST", "/v3/refund/domestic/refunds", &body).await
}

async fn query(env: &Env, out_refund_no: &str) -> (u16, Value) {
    let url = format!("/v3/refund/domestic/refunds/{out_refund_no}");
    call(env, "GET", &url, "").await
}

async fn admin_trade(env: &Env, out_trade_no: &str) -> Value {
    let path = format!("/admin/trades/{out_trade_no}");
    env.admin(Method::GET, &path, None).await.1
}

#[tokio::test]
async fn refund_repeat_and_query() {
    let env = env().await;
    paid(&env, "W0000001", "s", 1000).await;
    let (status, first) = refund(&env, "W0000001", "R1", 300, 1000).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (
            &first["status"],
            &first["out_refund_no"],
            &first["out_trade_no"]
        ),
        (&json!("SUCCESS"), &json!("R1"), &json!("W0000001"))
    );
    assert_eq!(
        (
            &first["amount"]["refund"],
            &first["amount"]["total"],
            &first["amount"]["currency"]
        ),
        (&json!(300), &json!(1000), &json!("CNY"))
    );
    let refund_id = first["refund_id"].as_str().expect("refund_id").to_owned();
    assert!(refund_id.len() == 29 && refund_id.bytes().all(|b| b.is_ascii_digit()));
    assert!(
        first["success_time"]
            .as_str()
            .is_some_and(|t| t.ends_with("+08:00"))
    );

    let (status, again) = refund(&env, "W0000001", "R1", 300, 1000).await;
    assert_eq!((status, &again["refund_id"]), (200, &json!(refund_id)));
    let trade = admin_trade(&env, "W0000001").await;
    assert_eq!(
        (&trade["refunded_minor"], &trade["refunds"][0]["requests"]),
        (&json!(300), &json!(2)),
        "{trade}"
    );

    let (status, found) = query(&env, "R1").await;
    assert_eq!(
        (status, &found["status"], &found["refund_id"]),
        (200, &json!("SUCCESS"), &json!(refund_id))
    );
    let (status, missing) = query(&env, "R9").await;
    assert_eq!(
        (status, &missing["code"]),
        (404, &json!("RESOURCE_NOT_EXISTS"))
    );
}

#[tokio::test]
async fn refusals_in_wechat_pay_style() {
    let env = env().await;
    paid(&env, "W0000001", "s", 1000).await;
    paid(&env, "W0000002", "s", 1000).await;
    assert_eq!(refund(&env, "W0000001", "R1", 600, 1000).await.0, 200);
    let cases = [
        (
            "over",
            refund_body("W0000001", "R2", 401, 1000),
            400,
            "INVALID_REQUEST",
        ),
        (
            "other amount",
            refund_body("W0000001", "R1", 500, 1000),
            400,
            "INVALID_REQUEST",
        ),
        (
            "other order",
            refund_body("W0000002", "R1", 600, 1000),
            400,
            "INVALID_REQUEST",
        ),
        (
            "wrong total",
            refund_body("W0000002", "R2", 100, 999),
            400,
            "INVALID_REQUEST",
        ),
        (
            "unknown",
            refund_body("W0000009", "R3", 100, 1000),
            404,
            "RESOURCE_NOT_EXISTS",
        ),
        (
            "zero",
            refund_body("W0000002", "R4", 0, 1000),
            400,
            "PARAM_ERROR",
        ),
        (
            "above total",
            refund_body("W0000002", "R4", 1001, 1000),
            400,
            "PARAM_ERROR",
        ),
        (
            "bad number",
            refund_body("W0000002", "R 4", 1, 1000),
            400,
            "PARAM_ERROR",
        ),
    ];
    for (name, body, status, code) in cases {
        let (got, answer) = call(&env, "POST", "/v3/refund/domestic/refunds", &body).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{name}: {answer}"
        );
    }
    create(&env, "W0000003", "s", 1000).await;
    let (status, unpaid) = refund(&env, "W0000003", "R5", 100, 1000).await;
    assert_eq!((status, &unpaid["code"]), (400, &json!("INVALID_REQUEST")));
    assert_eq!(refund(&env, "W0000001", "R2", 400, 1000).await.0, 200);
    assert_eq!(admin_trade(&env, "W0000001").await["refunded_minor"], 1000);
    assert_eq!(admin_trade(&env, "W0000002").await["refunds"], json!([]));
}

#[tokio::test]
async fn refund_knobs() {
    let env = env().await;
    paid(&env, "W0000001", "broken refund", 1000).await;
    paid(&env, "W0000002", "slow refund", 1000).await;
    paid(&env, "W0000003", "processing refund", 1000).await;
    env.set_faults(json!({ "scope": "broken", "refund": "error" }))
        .await;
    env.set_faults(json!({ "scope": "slow", "refund": "timeout", "hang_ms": 2000 }))
        .await;
    env.set_faults(json!({ "scope": "processing", "refund_processing": true }))
        .await;

    assert_eq!(refund(&env, "W0000001", "R1", 100, 1000).await.0, 500);
    assert_eq!(admin_trade(&env, "W0000001").await["refunds"], json!([]));
    let slow = refund(&env, "W0000002", "R2", 100, 1000);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .is_err()
    );
    assert_eq!(admin_trade(&env, "W0000002").await["refunded_minor"], 100);

    let (_, processing) = refund(&env, "W0000003", "R3", 100, 1000).await;
    assert_eq!(processing["status"], "PROCESSING");
    assert!(processing.get("success_time").is_none());
    assert_eq!(query(&env, "R3").await.1["status"], "PROCESSING");
    assert_eq!(query(&env, "R3").await.1["status"], "SUCCESS");
    env.sandbox.shutdown().await;
}

/// Whether the platform signed `ts\nnonce\nbody\n` with the PUB_KEY_ID key.
fn platform_signed(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut signed = format!(
        "{}\n{}\n",
        header("wechatpay-timestamp"),
        header("wechatpay-nonce")
    )
    .into_bytes();
    signed.extend_from_slice(body);
    signed.push(b'\n');
    let public = keys::parse_public_key(&test_keys().platform.public_spki_pem).expect("pk");
    header("wechatpay-serial") == PUB_KEY_ID
        && keys::verify(&public, &signed, &header("wechatpay-signature"))
}

/// The envelope and its resource, opened with the APIv3 key and its associated data.
fn opened(received: &Received) -> (Value, Value) {
    let envelope: Value = serde_json::from_slice(&received.body).expect("envelope");
    let resource = &envelope["resource"];
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, API_V3_KEY).expect("key"));
    let nonce = resource["nonce"].as_str().expect("nonce");
    let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes()).expect("12-byte nonce");
    let aad = resource["associated_data"]
        .as_str()
        .expect("associated_data");
    let mut data = STANDARD
        .decode(resource["ciphertext"].as_str().expect("ciphertext"))
        .expect("base64");
    let plain = key
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data)
        .expect("AES-GCM opens");
    let plain = serde_json::from_slice(plain).expect("resource JSON");
    (envelope, plain)
}

/// The next notification that is a refund's (the payment's comes first).
async fn next_refund_notification(env: &mut Env) -> Received {
    for _ in 0..4 {
        let received = env.expect_notification().await;
        let envelope: Value = serde_json::from_slice(&received.body).expect("envelope");
        if envelope["event_type"] != "TRANSACTION.SUCCESS" {
            return received;
        }
    }
    panic!("no refund notification")
}

#[tokio::test]
async fn a_successful_refund_sends_refund_success_sealed_and_signed() {
    let mut env = env().await;
    paid(&env, "W0000001", "s", 1000).await;
    let (status, answer) = refund(&env, "W0000001", "R1", 300, 1000).await;
    assert_eq!((status, &answer["status"]), (200, &json!("SUCCESS")));
    let received = next_refund_notification(&mut env).await;
    assert!(platform_signed(&received.headers, &received.body));
    let (envelope, resource) = opened(&received);
    assert_eq!(
        (
            &envelope["event_type"],
            &envelope["resource_type"],
            &envelope["resource"]["algorithm"],
            &envelope["resource"]["original_type"],
            &envelope["resource"]["associated_data"],
        ),
        (
            &json!("REFUND.SUCCESS"),
            &json!("encrypt-resource"),
            &json!("AEAD_AES_256_GCM"),
            &json!("refund"),
            &json!("refund"),
        )
    );
    assert_eq!(
        (
            &resource["mchid"],
            &resource["out_trade_no"],
            &resource["transaction_id"],
            &resource["out_refund_no"],
            &resource["refund_id"],
            &resource["refund_status"],
        ),
        (
            &json!(MCHID),
            &json!("W0000001"),
            &answer["transaction_id"],
            &json!("R1"),
            &answer["refund_id"],
            &json!("SUCCESS"),
        )
    );
    assert_eq!(
        resource["amount"],
        json!({ "total": 1000, "refund": 300, "payer_total": 1000, "payer_refund": 300 })
    );
    assert!(
        resource["success_time"]
            .as_str()
            .is_some_and(|t| t.ends_with("+08:00"))
    );

    // A repeat of the same refund moves no money and sends nothing more.
    assert_eq!(refund(&env, "W0000001", "R1", 300, 1000).await.0, 200);
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none()
    );
    let trade = admin_trade(&env, "W0000001").await;
    let refund_log: Vec<&Value> = trade["deliveries"]
        .as_array()
        .expect("log")
        .iter()
        .filter(|d| !d["refund_no"].is_null())
        .collect();
    assert_eq!(refund_log.len(), 1, "{trade}");
    assert_eq!(
        (
            &refund_log[0]["refund_no"],
            &refund_log[0]["notify_id"],
            &refund_log[0]["http_status"],
            &refund_log[0]["acked"]
        ),
        (&json!("R1"), &envelope["id"], &json!(204), &json!(true)),
        "{trade}"
    );
}

#[tokio::test]
async fn a_processing_refund_notifies_when_it_succeeds_at_the_requests_notify_url() {
    let mut env = env().await;
    paid(&env, "W0000001", "processing refund", 1000).await;
    let _payment = env.expect_notification().await;
    env.set_faults(json!({ "scope": "processing", "refund_processing": true }))
        .await;
    let mut body: Value =
        serde_json::from_str(&refund_body("W0000001", "R1", 100, 1000)).expect("json");
    body["notify_url"] = json!(format!("{}?refunds", env.notify_url));
    let (status, processing) = call(
        &env,
        "POST",
        "/v3/refund/domestic/refunds",
        &body.to_string(),
    )
    .await;
    assert_eq!((status, &processing["status"]), (200, &json!("PROCESSING")));
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none(),
        "no notification while processing"
    );
    assert_eq!(query(&env, "R1").await.1["status"], "PROCESSING");
    let received = env.expect_notification().await;
    let (envelope, refund) = opened(&received);
    assert_eq!(
        (&envelope["event_type"], &refund["refund_status"]),
        (&json!("REFUND.SUCCESS"), &json!("SUCCESS"))
    );
    let trade = admin_trade(&env, "W0000001").await;
    assert_eq!(
        trade["refunds"][0]["notify_url"],
        json!(format!("{}?refunds", env.notify_url)),
        "the request's notify_url"
    );
}

#[tokio::test]
async fn refund_notifications_follow_the_delivery_knobs() {
    let mut env = env().await;
    paid(&env, "W0000001", "forged refund", 1000).await;
    paid(&env, "W0000002", "silent refund", 1000).await;
    paid(&env, "W0000003", "tampered refund", 1000).await;
    for _ in 0..3 {
        env.expect_notification().await;
    }
    env.set_faults(json!({ "scope": "forged", "forge": true, "drop_first": 1 }))
        .await;
    env.set_faults(json!({ "scope": "silent", "never_notify": true }))
        .await;
    env.set_faults(json!({ "scope": "tampered", "tamper_amount": true }))
        .await;

    assert_eq!(refund(&env, "W0000001", "R1", 100, 1000).await.0, 200);
    let forged = env.expect_notification().await;
    assert!(!platform_signed(&forged.headers, &forged.body));
    let log = admin_trade(&env, "W0000001").await["deliveries"].clone();
    let refund_attempts: Vec<(Value, Value)> = log
        .as_array()
        .expect("log")
        .iter()
        .filter(|d| !d["refund_no"].is_null())
        .map(|d| (d["attempt"].clone(), d["http_status"].clone()))
        .collect();
    assert_eq!(
        refund_attempts.first(),
        Some(&(json!(1), Value::Null)),
        "the first attempt is lost: {log}"
    );

    assert_eq!(refund(&env, "W0000002", "R2", 100, 1000).await.0, 200);
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none(),
        "never_notify"
    );

    assert_eq!(refund(&env, "W0000003", "R3", 100, 1000).await.0, 200);
    let tampered = env.expect_notification().await;
    assert!(platform_signed(&tampered.headers, &tampered.body));
    assert_eq!(opened(&tampered).1["amount"]["refund"], 101);
}
