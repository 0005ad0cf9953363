//! End-to-end tests: a sandbox and a tiny merchant callback receiver, both on 127.0.0.1:0.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};

use super::faults::{FaultTable, Faults};
use super::state::{HEADER_MERCHANT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, unix_now};
use super::test_support::{self, Rejecting, WAIT};
use super::{KeyPairPem, generate_rsa_2048, keys, notify, start};

const MERCHANT: &str = "M100";

struct TestKeys {
    merchant: KeyPairPem,
    provider: KeyPairPem,
}

fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        merchant: generate_rsa_2048().expect("merchant key"),
        provider: generate_rsa_2048().expect("provider key"),
    })
}

/// Verifies provider headers over `body` with the provider public key.
fn provider_verifies(headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let Ok(timestamp) = get(HEADER_TIMESTAMP).parse::<i64>() else {
        return false;
    };
    let public =
        keys::parse_public_key(&test_keys().provider.public_spki_pem).expect("provider public key");
    let message = keys::provider_message(timestamp, get(HEADER_NONCE), body);
    keys::verify(&public, &message, get(HEADER_SIGNATURE))
}

/// A notification as the merchant endpoint received it.
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("notification JSON")
    }
    fn verifies(&self) -> bool {
        provider_verifies(&self.headers, &self.body)
    }
}

/// Acks with `{"code":"SUCCESS"}` except for the first `reject_left` requests (500).
async fn receive(
    State(st): State<Rejecting<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    if st.take(Received { headers, body }) {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "code": "FAIL" })),
        )
    } else {
        (StatusCode::OK, axum::Json(json!({ "code": "SUCCESS" })))
    }
}

type Env = test_support::Env<Received>;

async fn env() -> Env {
    env_with(1000, 0).await
}

async fn env_with(time_scale: u32, reject_first: usize) -> Env {
    let keys = test_keys();
    let receiver = test_support::receiver(|tx| {
        Router::new()
            .route("/notify", post(receive))
            .with_state(Rejecting::new(tx, reject_first))
    })
    .await;
    let options = test_support::native_options(&keys.merchant, &keys.provider, time_scale);
    let sandbox = start(options).await.expect("sandbox start");
    Env::new(sandbox, receiver)
}

/// How a merchant request is signed (tests vary one field at a time).
struct Signer {
    key_pem: String,
    merchant: String,
    timestamp: i64,
}

impl Default for Signer {
    fn default() -> Self {
        Self {
            key_pem: test_keys().merchant.private_pkcs8_pem.clone(),
            merchant: MERCHANT.into(),
            timestamp: unix_now(),
        }
    }
}

impl Env {
    /// A signed `/v1` call; asserts the answer carries a valid provider signature.
    async fn call_as(
        &self,
        signer: Signer,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let nonce = ulid::Ulid::new().to_string();
        let timestamp = signer.timestamp.to_string();
        let message = keys::merchant_message(method.as_str(), path, &timestamp, &nonce, body);
        let key = keys::parse_private_key(&signer.key_pem).expect("merchant key");
        let signature = keys::sign(&key, &message).expect("sign");
        let response = self
            .http
            .request(method, self.url(path))
            .header(HEADER_MERCHANT, signer.merchant)
            .header(HEADER_TIMESTAMP, timestamp)
            .header(HEADER_NONCE, nonce)
            .header(HEADER_SIGNATURE, signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        assert!(
            provider_verifies(&headers, &bytes),
            "unsigned {status} answer on {path}"
        );
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body
            .map(|b| serde_json::to_vec(b).expect("encode"))
            .unwrap_or_default();
        self.call_as(Signer::default(), method, path, &body).await
    }

    fn create_body(&self, out_trade_no: &str, subject: &str, amount_minor: i64) -> Value {
        json!({
            "merchant_id": MERCHANT,
            "out_trade_no": out_trade_no,
            "amount_minor": amount_minor,
            "currency": "CNY",
            "subject": subject,
            "notify_url": self.notify_url,
            "expires_at": unix_now() + 900,
        })
    }

    async fn create(&self, out_trade_no: &str, subject: &str, amount_minor: i64) -> (u16, Value) {
        let body = self.create_body(out_trade_no, subject, amount_minor);
        self.call(Method::POST, "/v1/trades", Some(&body)).await
    }

    async fn query(&self, out_trade_no: &str) -> (u16, Value) {
        self.call(Method::GET, &format!("/v1/trades/{out_trade_no}"), None)
            .await
    }

    /// Creates and pays a trade; returns the create answer.
    async fn create_and_pay(&self, out_trade_no: &str, subject: &str, amount_minor: i64) -> Value {
        let (status, created) = self.create(out_trade_no, subject, amount_minor).await;
        assert_eq!(status, 200, "{created}");
        let (status, paid) = self.pay(&created).await;
        assert_eq!((status, &paid["status"]), (200, &json!("PAID")));
        created
    }

    async fn pay(&self, created: &Value) -> (u16, Value) {
        let pay_url = created["pay_url"].as_str().expect("pay_url");
        let response = self.http.post(pay_url).send().await.expect("pay");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Polls the stats until `done` holds (or fails after `WAIT`).
    async fn stats_until(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never settled: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn create_pay_notify_verifies() {
    let mut env = env().await;
    let (status, created) = env.create("T1", "order 1", 1234).await;
    assert_eq!(status, 200, "{created}");
    let trade_no = created["trade_no"].as_str().expect("trade_no").to_owned();
    assert!(trade_no.starts_with("SBX"));
    assert_eq!(created["status"], "WAIT_PAY");
    assert_eq!(
        created["pay_url"],
        format!("{}/pay/{trade_no}", env.sandbox.base_url)
    );
    let (status, queried) = env.query("T1").await;
    assert_eq!((status, &queried["status"]), (200, &json!("WAIT_PAY")));
    assert!(queried.get("paid_at").is_none());

    assert_eq!(env.pay(&created).await, (200, json!({ "status": "PAID" })));
    assert_eq!(env.pay(&created).await.0, 200, "paying twice is a no-op");
    let received = env.expect_notification().await;
    assert!(received.verifies());
    let n = received.json();
    assert_eq!(n["status"], "PAID");
    assert_eq!(
        (&n["out_trade_no"], &n["trade_no"], &n["merchant_id"]),
        (&json!("T1"), &json!(trade_no), &json!(MERCHANT))
    );
    assert_eq!(
        (&n["amount_minor"], &n["currency"]),
        (&json!(1234), &json!("CNY"))
    );
    let paid_at = n["paid_at"].as_str().expect("paid_at");
    time::OffsetDateTime::parse(paid_at, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    assert!(n["notify_id"].as_str().is_some_and(|id| !id.is_empty()));

    let (_, queried) = env.query("T1").await;
    assert_eq!(
        (&queried["status"], &queried["paid_at"]),
        (&json!("PAID"), &json!(paid_at))
    );
    let stats = env.stats_until(|s| s["acked"] == 1).await;
    assert_eq!(
        stats,
        json!({ "trades": 1, "deliveries": 1, "acked": 1, "rejected": 0, "failed_connections": 0, "notifications": 1 })
    );
    let (_, trade) = env.admin(Method::GET, "/admin/trades/T1", None).await;
    assert_eq!(
        trade["deliveries"],
        json!([{ "notify_id": n["notify_id"], "attempt": 1, "http_status": 200, "acked": true }])
    );
    assert!(
        env.next_notification(Duration::from_millis(100))
            .await
            .is_none(),
        "paid twice, notified once"
    );
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_merchant_signatures_get_401() {
    let env = env().await;
    let body = serde_json::to_vec(&env.create_body("T1", "s", 100)).expect("encode");
    let provider_key = test_keys().provider.private_pkcs8_pem.clone();
    let cases = [
        Signer {
            key_pem: provider_key,
            ..Signer::default()
        },
        Signer {
            merchant: "M999".into(),
            ..Signer::default()
        },
        Signer {
            timestamp: unix_now() - 300,
            ..Signer::default()
        },
        Signer {
            timestamp: unix_now() + 400,
            ..Signer::default()
        },
    ];
    for signer in cases {
        let (status, answer) = env.call_as(signer, Method::POST, "/v1/trades", &body).await;
        assert_eq!(
            (status, &answer["code"]),
            (401, &json!("SIGN_ERROR")),
            "{answer}"
        );
    }
    let unsigned = env
        .http
        .get(env.url("/v1/trades/T1"))
        .send()
        .await
        .expect("request");
    assert_eq!(unsigned.status(), 401);
    assert_eq!(env.stats().await["trades"], 0);
}

#[tokio::test]
async fn create_is_idempotent_on_out_trade_no() {
    let env = env().await;
    let (_, first) = env.create("T1", "s", 100).await;
    let (status, again) = env.create("T1", "s", 100).await;
    assert_eq!((status, &again), (200, &first));
    let (status, answer) = env.create("T1", "s", 101).await;
    assert_eq!(
        (status, &answer["code"]),
        (409, &json!("OUT_TRADE_NO_USED"))
    );
    let mut other_currency = env.create_body("T1", "s", 100);
    other_currency["currency"] = json!("USD");
    let (status, _) = env
        .call(Method::POST, "/v1/trades", Some(&other_currency))
        .await;
    assert_eq!(status, 409);
    assert_eq!(env.stats().await["trades"], 1);
}

#[tokio::test]
async fn bad_json_is_400() {
    let env = env().await;
    let (status, answer) = env
        .call_as(Signer::default(), Method::POST, "/v1/trades", b"{not json")
        .await;
    assert_eq!((status, &answer["code"]), (400, &json!("INVALID_REQUEST")));
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/trades",
            Some(&json!({ "out_trade_no": "T1" })),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/trades",
            Some(&env.create_body("T1", "s", -5)),
        )
        .await;
    assert_eq!(status, 400);
    let response = env
        .http
        .put(env.url("/admin/faults"))
        .body("[1,")
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 400);
    let (status, _) = env
        .admin(
            Method::PUT,
            "/admin/faults",
            Some(json!({ "drop_frist": 1 })),
        )
        .await;
    assert_eq!(status, 400, "unknown knobs are refused");
}

#[tokio::test]
async fn drop_first_is_recovered_by_the_resend() {
    let mut env = env().await;
    env.set_faults(json!({ "scope": "", "drop_first": 1 }))
        .await;
    env.create_and_pay("T1", "s", 100).await;
    assert!(env.expect_notification().await.verifies());
    let stats = env.stats_until(|s| s["acked"] == 1).await;
    assert_eq!(
        (&stats["deliveries"], &stats["failed_connections"]),
        (&json!(2), &json!(1))
    );
    let (_, trade) = env.admin(Method::GET, "/admin/trades/T1", None).await;
    let log = trade["deliveries"].as_array().expect("log");
    assert_eq!(
        (
            log[0]["attempt"].clone(),
            log[0]["http_status"].clone(),
            log[0]["acked"].clone()
        ),
        (json!(1), Value::Null, json!(false))
    );
    assert_eq!(
        (log[1]["attempt"].clone(), log[1]["acked"].clone()),
        (json!(2), json!(true))
    );
    assert_eq!(log[0]["notify_id"], log[1]["notify_id"]);
}

#[tokio::test]
async fn rejected_ack_is_resent() {
    let mut env = env_with(1000, 1).await;
    env.create_and_pay("T1", "s", 100).await;
    let first = env.expect_notification().await.json();
    let second = env.expect_notification().await.json();
    assert_eq!(first, second, "a resend is the same notification");
    let stats = env.stats_until(|s| s["acked"] == 1).await;
    assert_eq!(
        (
            &stats["rejected"],
            &stats["deliveries"],
            &stats["notifications"]
        ),
        (&json!(1), &json!(2), &json!(1))
    );
}

#[tokio::test]
async fn resends_follow_the_schedule_then_give_up() {
    let env = env_with(100_000, usize::MAX).await;
    env.create_and_pay("T1", "s", 100).await;
    env.stats_until(|s| s["rejected"] == 10).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stats = env.stats().await;
    assert_eq!(
        (&stats["deliveries"], &stats["acked"]),
        (&json!(10), &json!(0)),
        "1 attempt + 9 resends"
    );
}

#[tokio::test]
async fn duplicate_sends_extra_copies_with_one_notify_id() {
    let mut env = env().await;
    env.set_faults(json!({ "duplicate": 2 })).await;
    env.create_and_pay("T1", "s", 100).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let received = env.expect_notification().await;
        assert!(received.verifies());
        ids.push(received.json()["notify_id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let stats = env.stats_until(|s| s["deliveries"] == 3).await;
    assert_eq!(
        (&stats["acked"], &stats["notifications"]),
        (&json!(3), &json!(1))
    );
    assert!(
        env.next_notification(Duration::from_millis(100))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn tamper_amount_changes_the_amount_and_still_verifies() {
    let mut env = env().await;
    env.set_faults(json!({ "scope": "", "tamper_amount": true }))
        .await;
    env.create_and_pay("T1", "s", 1000).await;
    let received = env.expect_notification().await;
    assert!(received.verifies());
    assert_eq!(received.json()["amount_minor"], 1001);
}

#[tokio::test]
async fn forge_breaks_the_signature() {
    let mut env = env().await;
    env.set_faults(json!({ "forge": true })).await;
    env.create_and_pay("T1", "s", 1000).await;
    let received = env.expect_notification().await;
    assert!(!received.verifies());
    let signature = received.headers[HEADER_SIGNATURE].to_str().expect("ascii");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .expect("still base64");
    assert_eq!(raw.len(), 256);
    assert_eq!(received.json()["amount_minor"], 1000);
}

#[tokio::test]
async fn never_notify_sends_nothing() {
    let mut env = env().await;
    env.set_faults(json!({ "never_notify": true })).await;
    env.create_and_pay("T1", "s", 100).await;
    assert!(
        env.next_notification(Duration::from_millis(200))
            .await
            .is_none()
    );
    assert_eq!(env.query("T1").await.1["status"], "PAID");
    let stats = env.stats().await;
    assert_eq!(
        (&stats["deliveries"], &stats["notifications"]),
        (&json!(0), &json!(0))
    );
}

#[tokio::test]
async fn delay_holds_the_first_delivery() {
    let mut env = env().await;
    env.set_faults(json!({ "delay_ms": 150 })).await;
    env.create_and_pay("T1", "s", 100).await;
    assert!(
        env.next_notification(Duration::from_millis(50))
            .await
            .is_none()
    );
    assert!(env.expect_notification().await.verifies());
}

#[tokio::test]
async fn reorder_sends_wait_pay_after_paid() {
    let mut env = env().await;
    env.set_faults(json!({ "reorder": true })).await;
    env.create_and_pay("T1", "s", 100).await;
    let paid = env.expect_notification().await;
    let early = env.expect_notification().await;
    assert!(paid.verifies() && early.verifies());
    let (paid, early) = (paid.json(), early.json());
    assert_eq!(
        (&paid["status"], &early["status"]),
        (&json!("PAID"), &json!("WAIT_PAY"))
    );
    assert_ne!(paid["notify_id"], early["notify_id"]);
    assert_eq!(early["paid_at"], Value::Null);
    env.stats_until(|s| s["acked"] == 2 && s["notifications"] == 2)
        .await;
}

#[tokio::test]
async fn create_error_answers_500_and_creates_nothing() {
    let env = env().await;
    env.set_faults(json!({ "create": "error" })).await;
    let (status, answer) = env.create("T1", "s", 100).await;
    assert_eq!((status, &answer["code"]), (500, &json!("SYSTEM_ERROR")));
    assert_eq!(env.query("T1").await.0, 404);
    assert_eq!(env.stats().await["trades"], 0);
}

#[tokio::test]
async fn create_timeout_creates_but_answers_late() {
    let env = env().await;
    env.set_faults(json!({ "create": "timeout", "hang_ms": 2000 }))
        .await;
    let body = env.create_body("T1", "s", 100);
    let call = env.call(Method::POST, "/v1/trades", Some(&body));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err(),
        "answer hangs"
    );
    env.stats_until(|s| s["trades"] == 1).await;
    assert_eq!(env.query("T1").await.1["status"], "WAIT_PAY");
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn query_faults_follow_the_trade_subject() {
    let env = env().await;
    env.create("T1", "flaky order", 100).await;
    env.create("T2", "good order", 100).await;
    env.set_faults(json!({ "scope": "flaky", "query": "error" }))
        .await;
    assert_eq!(
        env.query("T1").await,
        (
            500,
            json!({ "code": "SYSTEM_ERROR", "message": "injected fault" })
        )
    );
    assert_eq!(env.query("T2").await.0, 200);
    let (status, _) = env.admin(Method::DELETE, "/admin/faults", None).await;
    assert_eq!(status, 200);
    assert_eq!(env.query("T1").await.0, 200);
}

#[tokio::test]
async fn query_unknown_is_404() {
    let env = env().await;
    let (status, answer) = env.query("nope").await;
    assert_eq!((status, &answer["code"]), (404, &json!("TRADE_NOT_EXIST")));
    assert_eq!(
        env.admin(Method::GET, "/admin/trades/nope", None).await.0,
        404
    );
}

#[tokio::test]
async fn close_then_pay_is_409_and_paid_cannot_close() {
    let env = env().await;
    let (_, created) = env.create("T1", "s", 100).await;
    let (status, closed) = env.call(Method::POST, "/v1/trades/T1/close", None).await;
    assert_eq!((status, &closed["status"]), (200, &json!("CLOSED")));
    assert_eq!(
        env.call(Method::POST, "/v1/trades/T1/close", None).await.0,
        200,
        "closing twice"
    );
    assert_eq!(env.pay(&created).await.0, 409);
    assert_eq!(env.query("T1").await.1["status"], "CLOSED");

    env.create_and_pay("T2", "s", 100).await;
    let (status, answer) = env.call(Method::POST, "/v1/trades/T2/close", None).await;
    assert_eq!(
        (status, &answer["code"]),
        (409, &json!("TRADE_ALREADY_PAID"))
    );
}

#[test]
fn longest_scope_wins() {
    let mut table = FaultTable::default();
    table.set(
        String::new(),
        Faults {
            never_notify: Some(true),
            ..Faults::default()
        },
    );
    table.set("vip".into(), Faults::default());
    table.set(
        "vip-gold".into(),
        Faults {
            forge: Some(true),
            ..Faults::default()
        },
    );
    assert!(table.for_subject("basic").never_notify());
    assert_eq!(table.for_subject("vip-silver"), Faults::default());
    assert!(table.for_subject("vip-gold 1").forge());
    table.clear();
    assert_eq!(table.for_subject("basic"), Faults::default());
}

#[test]
fn provider_signature_round_trips() {
    let keys = test_keys();
    let signature = super::sign_provider_message(
        &keys.provider.private_pkcs8_pem,
        1_700_000_000,
        "abc",
        b"{}",
    )
    .expect("sign");
    let public = keys::parse_public_key(&keys.provider.public_spki_pem).expect("public");
    assert!(keys::verify(
        &public,
        &keys::provider_message(1_700_000_000, "abc", b"{}"),
        &signature
    ));
    assert!(!keys::verify(
        &public,
        &keys::provider_message(1_700_000_001, "abc", b"{}"),
        &signature
    ));
    assert!(!keys::verify(
        &public,
        &keys::provider_message(1_700_000_000, "abc", b"{}"),
        &keys::forge(&signature)
    ));
}

#[test]
fn resend_delays_are_scaled() {
    assert_eq!(
        notify::resend_delay(0, 1),
        None,
        "the first attempt does not wait"
    );
    assert_eq!(
        notify::resend_delay(1, 1000),
        Some(Duration::from_millis(15))
    );
    assert_eq!(notify::resend_delay(9, 1), Some(Duration::from_secs(7200)));
    assert_eq!(notify::resend_delay(10, 1), None);
}

impl Env {
    async fn refund(&self, out_trade_no: &str, out_refund_no: &str, amount: i64) -> (u16, Value) {
        let body = json!({ "out_refund_no": out_refund_no, "amount_minor": amount, "reason": "r" });
        let path = format!("/v1/trades/{out_trade_no}/refunds");
        self.call(Method::POST, &path, Some(&body)).await
    }

    async fn query_refund(&self, out_trade_no: &str, out_refund_no: &str) -> (u16, Value) {
        let path = format!("/v1/trades/{out_trade_no}/refunds/{out_refund_no}");
        self.call(Method::GET, &path, None).await
    }

    async fn admin_trade(&self, out_trade_no: &str) -> Value {
        let path = format!("/admin/trades/{out_trade_no}");
        self.admin(Method::GET, &path, None).await.1
    }
}

#[tokio::test]
async fn refunds_are_idempotent_and_bounded_by_the_paid_amount() {
    let env = env().await;
    env.create_and_pay("T1", "s", 1000).await;
    let (status, first) = env.refund("T1", "R1", 300).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (
            &first["status"],
            &first["amount_minor"],
            &first["refunded_minor"],
            &first["out_trade_no"]
        ),
        (&json!("SUCCESS"), &json!(300), &json!(300), &json!("T1"))
    );
    assert!(
        first["refund_no"]
            .as_str()
            .is_some_and(|n| n.starts_with("SBXR"))
    );

    let (status, again) = env.refund("T1", "R1", 300).await;
    assert_eq!((status, &again["refund_no"]), (200, &first["refund_no"]));
    let trade = env.admin_trade("T1").await;
    assert_eq!(
        trade["refunds"].as_array().map(Vec::len),
        Some(1),
        "{trade}"
    );
    assert_eq!(
        (&trade["refunds"][0]["requests"], &trade["refunded_minor"]),
        (&json!(2), &json!(300)),
        "a repeat moves no money: {trade}"
    );

    let (status, other) = env.refund("T1", "R1", 400).await;
    assert_eq!(
        (status, &other["code"]),
        (409, &json!("OUT_REFUND_NO_USED"))
    );
    let (status, over) = env.refund("T1", "R2", 701).await;
    assert_eq!(
        (status, &over["code"]),
        (409, &json!("REFUND_AMOUNT_EXCEEDED"))
    );
    assert_eq!(env.refund("T1", "R2", 700).await.0, 200);
    let (status, over) = env.refund("T1", "R3", 1).await;
    assert_eq!(
        (status, &over["code"]),
        (409, &json!("REFUND_AMOUNT_EXCEEDED"))
    );
    assert_eq!(env.admin_trade("T1").await["refunded_minor"], 1000);

    let (status, queried) = env.query_refund("T1", "R2").await;
    assert_eq!(
        (status, &queried["status"], &queried["amount_minor"]),
        (200, &json!("SUCCESS"), &json!(700))
    );
    for (trade, refund) in [("T1", "R9"), ("T9", "R1")] {
        let (status, missing) = env.query_refund(trade, refund).await;
        assert_eq!(
            (status, &missing["code"]),
            (404, &json!("REFUND_NOT_EXIST")),
            "{trade} {refund}"
        );
    }
}

#[tokio::test]
async fn refunds_of_unpaid_unknown_or_malformed_are_refused() {
    let env = env().await;
    env.create("T1", "s", 1000).await;
    let (status, unpaid) = env.refund("T1", "R1", 100).await;
    assert_eq!((status, &unpaid["code"]), (409, &json!("TRADE_NOT_PAID")));
    env.call(Method::POST, "/v1/trades/T1/close", None).await;
    assert_eq!(
        env.refund("T1", "R1", 100).await.1["code"],
        "TRADE_NOT_PAID"
    );
    let (status, unknown) = env.refund("T9", "R1", 100).await;
    assert_eq!((status, &unknown["code"]), (404, &json!("TRADE_NOT_EXIST")));
    env.create_and_pay("T2", "s", 1000).await;
    for (refund_no, amount) in [("R1", 0), ("R1", -5), ("", 10), ("R 1", 10)] {
        let (status, bad) = env.refund("T2", refund_no, amount).await;
        assert_eq!(
            (status, &bad["code"]),
            (400, &json!("INVALID_REQUEST")),
            "{refund_no:?} {amount}"
        );
    }
    assert_eq!(env.admin_trade("T2").await["refunds"], json!([]));
}

#[tokio::test]
async fn refund_knobs_error_timeout_and_processing() {
    let env = env().await;
    env.create_and_pay("T1", "broken refund", 1000).await;
    env.create_and_pay("T2", "slow refund", 1000).await;
    env.create_and_pay("T3", "processing refund", 1000).await;
    env.set_faults(json!({ "scope": "broken", "refund": "error" }))
        .await;
    env.set_faults(json!({ "scope": "slow", "refund": "timeout", "hang_ms": 2000 }))
        .await;
    env.set_faults(json!({ "scope": "processing", "refund_processing": true }))
        .await;

    let (status, broken) = env.refund("T1", "R1", 100).await;
    assert_eq!((status, &broken["code"]), (500, &json!("SYSTEM_ERROR")));
    assert_eq!(
        env.admin_trade("T1").await["refunds"],
        json!([]),
        "an error refunds nothing"
    );

    let slow = env.refund("T2", "R1", 100);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .is_err(),
        "answer hangs"
    );
    assert_eq!(
        env.admin_trade("T2").await["refunds"][0]["status"],
        "SUCCESS",
        "done, answer late"
    );

    let (_, processing) = env.refund("T3", "R1", 100).await;
    assert_eq!(processing["status"], "PROCESSING", "{processing}");
    assert_eq!(env.admin_trade("T3").await["refunded_minor"], 0);
    assert_eq!(env.admin_trade("T3").await["committed_minor"], 100);
    assert_eq!(env.query_refund("T3", "R1").await.1["status"], "PROCESSING");
    assert_eq!(env.query_refund("T3", "R1").await.1["status"], "SUCCESS");
    assert_eq!(env.refund("T3", "R1", 100).await.1["status"], "SUCCESS");
    assert_eq!(env.admin_trade("T3").await["refunded_minor"], 100);
    env.sandbox.shutdown().await;
}

/// The next refund notification the receiver gets (payment notifications are skipped).
async fn next_refund_notification(env: &mut Env) -> Received {
    for _ in 0..4 {
        let received = env.expect_notification().await;
        if received.json()["event"] == "REFUND" {
            return received;
        }
    }
    panic!("no refund notification")
}

fn refund_deliveries(trade: &Value) -> Vec<Value> {
    trade["deliveries"]
        .as_array()
        .map(|log| {
            log.iter()
                .filter(|d| !d["refund_no"].is_null())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_successful_refund_sends_a_signed_refund_notification() {
    let mut env = env().await;
    let created = env.create_and_pay("T1", "s", 1000).await;
    let (status, answer) = env.refund("T1", "R1", 300).await;
    assert_eq!((status, &answer["status"]), (200, &json!("SUCCESS")));
    let received = next_refund_notification(&mut env).await;
    assert!(received.verifies(), "signed like a payment notification");
    let notice = received.json();
    assert_eq!(
        (
            &notice["event"],
            &notice["merchant_id"],
            &notice["out_trade_no"],
            &notice["trade_no"],
            &notice["out_refund_no"],
            &notice["refund_no"],
            &notice["refund_status"],
            &notice["amount_minor"],
        ),
        (
            &json!("REFUND"),
            &json!(MERCHANT),
            &json!("T1"),
            &created["trade_no"],
            &json!("R1"),
            &answer["refund_no"],
            &json!("SUCCESS"),
            &json!(300),
        ),
        "{notice}"
    );
    assert!(
        notice["notify_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );

    let (status, _) = env.refund("T1", "R1", 300).await;
    assert_eq!(status, 200);
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none(),
        "a repeat sends nothing"
    );
    let log = refund_deliveries(&env.admin_trade("T1").await);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            &log[0]["notify_id"],
            &log[0]["refund_no"],
            &log[0]["http_status"],
            &log[0]["acked"]
        ),
        (
            &notice["notify_id"],
            &json!("R1"),
            &json!(200),
            &json!(true)
        )
    );
    env.stats_until(|s| s["notifications"] == 2 && s["acked"] == 2)
        .await;
}

#[tokio::test]
async fn a_processing_refund_notifies_when_it_succeeds() {
    let mut env = env().await;
    env.create_and_pay("T1", "processing refund", 1000).await;
    env.expect_notification().await;
    env.set_faults(json!({ "scope": "processing", "refund_processing": true }))
        .await;
    let (_, processing) = env.refund("T1", "R1", 100).await;
    assert_eq!(processing["status"], "PROCESSING");
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing while processing"
    );
    assert_eq!(env.query_refund("T1", "R1").await.1["status"], "PROCESSING");
    let received = env.expect_notification().await;
    assert_eq!(
        (&received.json()["event"], &received.json()["refund_status"]),
        (&json!("REFUND"), &json!("SUCCESS"))
    );
    assert_eq!(env.query_refund("T1", "R1").await.1["status"], "SUCCESS");
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none(),
        "once"
    );
}

#[tokio::test]
async fn refund_notifications_follow_the_delivery_knobs() {
    let mut env = env_with(1000, 1).await;
    env.create_and_pay("T0", "plain", 1000).await;
    // The receiver rejects its first request: the payment's, which the resend recovers.
    env.expect_notification().await;
    env.expect_notification().await;
    env.create_and_pay("T1", "forged refund", 1000).await;
    env.create_and_pay("T2", "silent refund", 1000).await;
    env.create_and_pay("T3", "tampered refund", 1000).await;
    env.create_and_pay("T4", "dropped refund", 1000).await;
    for _ in 0..4 {
        env.expect_notification().await;
    }
    env.set_faults(json!({ "scope": "forged", "forge": true }))
        .await;
    env.set_faults(json!({ "scope": "silent", "never_notify": true }))
        .await;
    env.set_faults(json!({ "scope": "tampered", "tamper_amount": true }))
        .await;
    env.set_faults(json!({ "scope": "dropped", "drop_first": 2, "duplicate": 1 }))
        .await;

    env.refund("T1", "R1", 100).await;
    let forged = env.expect_notification().await;
    assert!(!forged.verifies());
    assert_eq!(forged.json()["event"], "REFUND");

    env.refund("T2", "R2", 100).await;
    assert!(
        env.next_notification(Duration::from_millis(300))
            .await
            .is_none(),
        "never_notify"
    );
    assert_eq!(
        refund_deliveries(&env.admin_trade("T2").await),
        Vec::<Value>::new()
    );

    env.refund("T3", "R3", 100).await;
    let tampered = env.expect_notification().await;
    assert!(tampered.verifies());
    assert_eq!(tampered.json()["amount_minor"], 101);

    env.refund("T4", "R4", 100).await;
    let one = env.expect_notification().await;
    let two = env.expect_notification().await;
    assert_eq!(one.json(), two.json(), "duplicate copies");
    let log = refund_deliveries(&env.admin_trade("T4").await);
    let attempts: Vec<(u64, bool)> = log
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().unwrap_or(0),
                d["http_status"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [(1, true), (2, true), (3, false), (3, false)],
        "two lost to drop_first, then two copies: {log:?}"
    );
}
