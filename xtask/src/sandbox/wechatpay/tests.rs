//! End-to-end tests of the WeChat Pay API v3 play: a sandbox with a `wechatpay` section and a
//! tiny receiver that answers 204. Authorization headers, signed messages and the AES-GCM
//! opening are built here by hand, independently.

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
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::offset;
use tokio::sync::mpsc;

use super::super::test_support::{self, WAIT};
use super::super::{
    KeyPairPem, ProviderSandboxes, SandboxOptions, WechatPayOptions, generate_rsa_2048, keys,
    start, start_with,
};

const MCHID: &str = "1900000001";
const APPID: &str = "wx0000000000000001";
const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0100000000000000000000000000";
const API_V3_KEY: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

struct TestKeys {
    merchant: KeyPairPem,
    platform: KeyPairPem,
    native_merchant: KeyPairPem,
    native_provider: KeyPairPem,
    stranger: KeyPairPem,
}

fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        merchant: generate_rsa_2048().expect("merchant key"),
        platform: generate_rsa_2048().expect("platform key"),
        native_merchant: generate_rsa_2048().expect("native merchant key"),
        native_provider: generate_rsa_2048().expect("native provider key"),
        stranger: generate_rsa_2048().expect("stranger key"),
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The platform's rule: `Wechatpay-Signature` over `ts\nnonce\nbody\n`, serial = PUB_KEY_ID.
fn platform_verifies(headers: &HeaderMap, body: &[u8]) -> bool {
    let mut message = format!(
        "{}\n{}\n",
        header(headers, "wechatpay-timestamp"),
        header(headers, "wechatpay-nonce")
    )
    .into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    let public = keys::parse_public_key(&test_keys().platform.public_spki_pem).expect("public");
    header(headers, "wechatpay-serial") == PUB_KEY_ID
        && keys::verify(&public, &message, header(headers, "wechatpay-signature"))
}

/// Opens `resource` with the APIv3 key.
fn open(resource: &Value) -> Value {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, API_V3_KEY).expect("key"));
    let nonce = resource["nonce"].as_str().expect("nonce");
    assert_eq!(nonce.len(), 12);
    let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes()).expect("nonce");
    let aad = resource["associated_data"].as_str().unwrap_or_default();
    let mut data = STANDARD
        .decode(resource["ciphertext"].as_str().expect("ciphertext"))
        .expect("base64");
    let plain = key
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data)
        .expect("AES-GCM opens");
    serde_json::from_slice(plain).expect("transaction JSON")
}

/// A notification as the receiver got it.
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn verifies(&self) -> bool {
        platform_verifies(&self.headers, &self.body)
    }
    fn envelope(&self) -> Value {
        serde_json::from_slice(&self.body).expect("envelope JSON")
    }
    fn transaction(&self) -> Value {
        open(&self.envelope()["resource"])
    }
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

/// An answer: status, headers, raw body, and whether the platform signature verified.
struct Answer {
    status: u16,
    body: Value,
    verifies: bool,
}

fn native_options(time_scale: u32) -> SandboxOptions {
    let keys = test_keys();
    test_support::native_options(&keys.native_merchant, &keys.native_provider, time_scale)
}

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
    let sandbox = start_with(native_options(100_000), providers)
        .await
        .expect("sandbox start");
    Env::new(sandbox, receiver)
}

fn unix_now() -> i64 {
    super::super::state::unix_now()
}

impl Env {
    /// Signs `METHOD\nURL\nts\nnonce\nbody\n` with `key_pem` into a hand-built Authorization.
    async fn call_as(&self, key_pem: &str, method: &str, url: &str, body: &str) -> Answer {
        let (status, headers, raw) = self.call_raw_as(key_pem, method, url, body).await;
        Answer {
            status,
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            verifies: platform_verifies(&headers, &raw),
        }
    }

    /// [`Env::call_as`] without reading the answer: status, headers and the raw body.
    async fn call_raw_as(
        &self,
        key_pem: &str,
        method: &str,
        url: &str,
        body: &str,
    ) -> (u16, HeaderMap, Bytes) {
        let timestamp = unix_now().to_string();
        let nonce = "593BEC0C930BF1AFEB40B4A08C8FB242";
        let message = format!("{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n");
        let key = keys::parse_private_key(key_pem).expect("merchant key");
        let signature = keys::sign(&key, message.as_bytes()).expect("sign");
        let authorization = format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{MCHID}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{SERIAL}\""
        );
        let mut request = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{url}", self.sandbox.base_url),
            )
            .header("authorization", authorization)
            .header("accept", "application/json");
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("call");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.expect("body"))
    }

    async fn call(&self, method: &str, url: &str, body: &str) -> Answer {
        self.call_as(&test_keys().merchant.private_pkcs8_pem, method, url, body)
            .await
    }

    async fn create(&self, out_trade_no: &str, description: &str, total: i64) -> Answer {
        let body = json!({
            "appid": APPID,
            "mchid": MCHID,
            "description": description,
            "out_trade_no": out_trade_no,
            "time_expire": "2099-01-01T00:00:00+08:00",
            "notify_url": self.notify_url,
            "amount": { "total": total, "currency": "CNY" },
        });
        self.call("POST", "/v3/pay/transactions/native", &body.to_string())
            .await
    }

    async fn query(&self, out_trade_no: &str) -> Answer {
        let url = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={MCHID}");
        self.call("GET", &url, "").await
    }

    async fn create_and_pay(&self, out_trade_no: &str, description: &str, total: i64) {
        let created = self.create(out_trade_no, description, total).await;
        assert_eq!(created.status, 200, "{}", created.body);
        let code_url = created.body["code_url"].as_str().expect("code_url");
        let paid = self.http.post(code_url).send().await.expect("pay");
        assert_eq!(paid.status().as_u16(), 200);
    }
}

#[tokio::test]
async fn create_query_pay_notify_verifies_and_decrypts() {
    let mut env = env().await;
    let created = env.create("W0000001", "order 1", 1234).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.verifies, "answer signature");
    let code_url = created.body["code_url"].as_str().expect("code_url");
    assert!(code_url.starts_with(&format!("{}/pay/", env.sandbox.base_url)));
    let again = env.create("W0000001", "order 1", 1234).await;
    assert_eq!(again.body["code_url"], code_url, "idempotent create");
    let waiting = env.query("W0000001").await;
    assert!(waiting.verifies);
    assert_eq!(waiting.status, 200);
    assert_eq!(waiting.body["trade_state"], "NOTPAY");
    assert_eq!(waiting.body["amount"]["total"], 1234);
    env.create_and_pay("W0000001", "order 1", 1234).await;
    let received = env.expect_notification().await;
    assert!(received.verifies(), "notification signature");
    let envelope = received.envelope();
    assert_eq!(envelope["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(envelope["resource_type"], "encrypt-resource");
    assert_eq!(envelope["resource"]["algorithm"], "AEAD_AES_256_GCM");
    assert_eq!(envelope["resource"]["original_type"], "transaction");
    let tx = received.transaction();
    assert_eq!(tx["mchid"], MCHID);
    assert_eq!(tx["appid"], APPID);
    assert_eq!(tx["out_trade_no"], "W0000001");
    assert_eq!(tx["trade_type"], "NATIVE");
    assert_eq!(tx["trade_state"], "SUCCESS");
    assert_eq!(tx["amount"]["total"], 1234);
    assert_eq!(tx["amount"]["payer_total"], 1234);
    assert_eq!(tx["amount"]["currency"], "CNY");
    assert_eq!(tx["amount"]["payer_currency"], "CNY");
    assert!(
        tx["success_time"]
            .as_str()
            .expect("success_time")
            .ends_with("+08:00")
    );
    let paid = env.query("W0000001").await;
    assert_eq!(paid.body["trade_state"], "SUCCESS");
    assert_eq!(paid.body["transaction_id"], tx["transaction_id"]);
    let url = "/v3/pay/transactions/out-trade-no/W0000001/close";
    let close = env
        .call("POST", url, &json!({ "mchid": MCHID }).to_string())
        .await;
    assert!(close.verifies);
    assert_eq!(
        (close.status, &close.body["code"]),
        (400, &json!("ORDERPAID"))
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.stats().await["acked"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "204 never counted as an ack"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bad_signature_is_401_sign_error() {
    let env = env().await;
    let body = json!({
        "appid": APPID, "mchid": MCHID, "description": "s", "out_trade_no": "W0000002",
        "notify_url": env.notify_url, "amount": { "total": 1 },
    });
    let stranger = &test_keys().stranger.private_pkcs8_pem;
    let forged = env
        .call_as(
            stranger,
            "POST",
            "/v3/pay/transactions/native",
            &body.to_string(),
        )
        .await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.body["code"], "SIGN_ERROR");
    assert!(forged.verifies, "errors are signed too");
    let unsigned = env
        .http
        .post(format!(
            "{}/v3/pay/transactions/native",
            env.sandbox.base_url
        ))
        .body(body.to_string())
        .send()
        .await
        .expect("unsigned");
    assert_eq!(unsigned.status().as_u16(), 401);
    assert_eq!(env.stats().await["trades"], 0);
}

#[tokio::test]
async fn bad_parameters_and_unknown_orders() {
    let env = env().await;
    let missing = env
        .call("POST", "/v3/pay/transactions/native", r#"{"appid":"x"}"#)
        .await;
    assert_eq!(
        (missing.status, &missing.body["code"]),
        (400, &json!("PARAM_ERROR"))
    );
    let unknown = env.query("NOPE0001").await;
    assert!(unknown.verifies);
    assert_eq!(
        (unknown.status, &unknown.body["code"]),
        (404, &json!("ORDER_NOT_EXIST"))
    );
    let created = env.create("W0000003", "s", 5).await;
    assert_eq!(created.status, 200);
    let url = "/v3/pay/transactions/out-trade-no/W0000003/close";
    let closed = env
        .call("POST", url, &json!({ "mchid": MCHID }).to_string())
        .await;
    assert_eq!(closed.status, 204);
    assert!(closed.verifies);
    assert_eq!(env.query("W0000003").await.body["trade_state"], "CLOSED");
}

#[tokio::test]
async fn tamper_amount_adds_a_fen_and_still_verifies() {
    let mut env = env().await;
    env.set_faults(json!({ "tamper_amount": true })).await;
    env.create_and_pay("W0000004", "s", 1000).await;
    let received = env.expect_notification().await;
    assert!(received.verifies());
    assert_eq!(received.transaction()["amount"]["total"], 1001);
}

#[tokio::test]
async fn forge_breaks_the_notification_signature() {
    let mut env = env().await;
    env.set_faults(json!({ "forge": true })).await;
    env.create_and_pay("W0000005", "s", 1000).await;
    let received = env.expect_notification().await;
    assert!(!received.verifies());
    assert_eq!(received.transaction()["amount"]["total"], 1000);
}

#[tokio::test]
async fn without_a_wechatpay_section_v3_is_404() {
    let sandbox = start(native_options(1)).await.expect("sandbox");
    let response = reqwest::Client::new()
        .post(format!("{}/v3/pay/transactions/native", sandbox.base_url))
        .body("{}")
        .send()
        .await
        .expect("v3");
    assert_eq!(response.status().as_u16(), 404);
    for path in [
        "/v3/bill/tradebill?bill_date=2026-01-01",
        "/v3/billdownload/file?token=T",
    ] {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", sandbox.base_url))
            .send()
            .await
            .expect("v3");
        assert_eq!(response.status().as_u16(), 404, "{path}");
    }
}

/// The Beijing day (`YYYY-MM-DD`) a trade was paid, from the admin view.
async fn beijing_day(env: &Env, out_trade_no: &str) -> String {
    let (_, trade) = env
        .admin(Method::GET, &format!("/admin/trades/{out_trade_no}"), None)
        .await;
    let paid_at = trade["paid_at"].as_str().expect("paid_at");
    let paid = OffsetDateTime::parse(paid_at, &Rfc3339)
        .expect("RFC 3339")
        .to_offset(offset!(+8));
    format!(
        "{:04}-{:02}-{:02}",
        paid.year(),
        u8::from(paid.month()),
        paid.day()
    )
}

fn sha1_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bill's per-trade lines as column name -> value maps, and the summary line's values.
fn bill_rows(csv: &str) -> (Vec<std::collections::BTreeMap<String, String>>, Vec<String>) {
    let mut lines = csv.split("\r\n");
    let names: Vec<&str> = lines.next().expect("header").split(',').collect();
    let values = |line: &str| -> Vec<String> {
        let rest = line
            .strip_prefix('`')
            .expect("fields start with a backtick");
        rest.split(",`").map(str::to_owned).collect()
    };
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        if line.starts_with("总交易单数") {
            break;
        }
        let fields = values(line);
        assert_eq!(fields.len(), names.len(), "{line}");
        rows.push(names.iter().map(|n| (*n).to_owned()).zip(fields).collect());
    }
    let summary = values(lines.next().expect("summary values"));
    (rows, summary)
}

#[tokio::test]
async fn trade_bill_download_is_authenticated_and_matches_its_hash() {
    let env = env().await;
    env.create_and_pay("W0000011", "咖啡, `large`", 1010).await;
    let unpaid = env.create("W0000012", "unpaid", 5).await;
    assert_eq!(unpaid.status, 200);
    let day = beijing_day(&env, "W0000011").await;

    let bill = env
        .call(
            "GET",
            &format!("/v3/bill/tradebill?bill_date={day}&bill_type=ALL"),
            "",
        )
        .await;
    assert_eq!(bill.status, 200, "{}", bill.body);
    assert!(bill.verifies, "the address answer is signed");
    assert_eq!(bill.body["hash_type"], "SHA1");
    let download_url = bill.body["download_url"].as_str().expect("download_url");
    let path = download_url
        .strip_prefix(&env.sandbox.base_url)
        .expect("back to the sandbox");
    assert!(path.starts_with("/v3/billdownload/file?token="), "{path}");

    let unsigned = env.http.get(download_url).send().await.expect("unsigned");
    assert_eq!(unsigned.status().as_u16(), 401);
    let stranger = &test_keys().stranger.private_pkcs8_pem;
    let (status, headers, raw) = env.call_raw_as(stranger, "GET", path, "").await;
    assert_eq!(status, 401);
    assert!(platform_verifies(&headers, &raw), "errors are signed");

    let merchant = &test_keys().merchant.private_pkcs8_pem;
    let (status, headers, file) = env.call_raw_as(merchant, "GET", path, "").await;
    assert_eq!(status, 200);
    assert!(
        headers.get("wechatpay-signature").is_none(),
        "the file is not signed"
    );
    assert_eq!(sha1_hex(&file), bill.body["hash_value"]);
    let csv = std::str::from_utf8(&file).expect("UTF-8");
    let (rows, summary) = bill_rows(csv);
    assert_eq!(rows.len(), 1, "{csv}");
    let row = &rows[0];
    assert_eq!(row["商户订单号"], "W0000011");
    assert_eq!(row["订单金额"], "10.10");
    assert_eq!(row["应结订单金额"], "10.10");
    assert_eq!(row["交易状态"], "SUCCESS");
    assert_eq!(row["货币种类"], "CNY");
    assert_eq!(row["商户号"], MCHID);
    assert_eq!(row["公众账号ID"], APPID);
    assert_eq!(row["商品名称"], "咖啡, 'large'");
    assert!(row["交易时间"].starts_with(&day));
    let paid = env.query("W0000011").await;
    assert_eq!(row["微信订单号"], paid.body["transaction_id"]);
    assert_eq!(&summary[..2], ["1", "10.10"]);

    let again = env.call_raw_as(merchant, "GET", path, "").await;
    assert_eq!(again.2, file, "the same bytes while the token lives");
}

#[tokio::test]
async fn trade_bill_refusals() {
    let env = env().await;
    let future = env
        .call("GET", "/v3/bill/tradebill?bill_date=2999-01-01", "")
        .await;
    assert!(future.verifies);
    assert_eq!(
        (future.status, &future.body["code"]),
        (400, &json!("NO_STATEMENT_EXIST"))
    );
    for query in [
        "bill_date=2026-1-01",
        "bill_date=2026-01-01&bill_type=REFUND",
        "bill_date=2026-01-01&tar_type=GZIP",
        "bill_type=ALL",
    ] {
        let refused = env
            .call("GET", &format!("/v3/bill/tradebill?{query}"), "")
            .await;
        assert_eq!(
            (refused.status, &refused.body["code"]),
            (400, &json!("PARAM_ERROR")),
            "{query}"
        );
    }
    let unknown = env
        .call("GET", "/v3/billdownload/file?token=NOPE", "")
        .await;
    assert!(unknown.verifies);
    assert_eq!(unknown.status, 400);
}

#[test]
fn resend_delays_follow_wechatpay_and_are_scaled() {
    use super::notify::resend_delay;
    assert_eq!(resend_delay(0, 1), None);
    assert_eq!(resend_delay(1, 1), Some(Duration::from_secs(15)));
    assert_eq!(resend_delay(10, 1), Some(Duration::from_secs(3600)));
    assert_eq!(resend_delay(15, 1), Some(Duration::from_secs(21_600)));
    assert_eq!(resend_delay(16, 1), None);
    assert_eq!(resend_delay(4, 60), Some(Duration::from_secs(3)));
}

#[test]
fn authorization_header_parses_in_any_field_order() {
    let parsed = super::sign::parse_authorization(
        r#"WECHATPAY2-SHA256-RSA2048 serial_no="S",mchid="1",timestamp="2",signature="c2ln",nonce_str="N""#,
    )
    .expect("parses");
    assert_eq!(parsed.mchid, "1");
    assert_eq!(parsed.signature, "c2ln");
    assert!(super::sign::parse_authorization(r#"WECHATPAY2-SHA256-RSA2048 mchid="1""#).is_none());
    assert!(super::sign::parse_authorization("Bearer x").is_none());
}
