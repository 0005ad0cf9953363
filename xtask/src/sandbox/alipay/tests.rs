//! End-to-end tests of the Alipay gateway: a sandbox with an `alipay` section and a tiny form
//! receiver that answers `success`. Signing strings are built here by hand, independently.

use std::collections::BTreeMap;
use std::io::{Cursor, Read as _};
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Form, Router};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::offset;

use super::super::test_support::{self, Rejecting, WAIT};
use super::super::{
    AlipayOptions, KeyPairPem, SandboxOptions, generate_rsa_2048, keys, start, start_with_alipay,
};

const APP_ID: &str = "2021000000000001";
const SELLER_ID: &str = "2088000000000002";

struct TestKeys {
    merchant: KeyPairPem,
    provider: KeyPairPem,
    app: KeyPairPem,
    alipay: KeyPairPem,
    stranger: KeyPairPem,
}

fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        merchant: generate_rsa_2048().expect("merchant key"),
        provider: generate_rsa_2048().expect("provider key"),
        app: generate_rsa_2048().expect("app key"),
        alipay: generate_rsa_2048().expect("alipay key"),
        stranger: generate_rsa_2048().expect("stranger key"),
    })
}

/// `k=v&...`, sorted by key, empty values and `excluded` keys dropped.
fn signing_string(params: &BTreeMap<String, String>, excluded: &[&str]) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if v.is_empty() || excluded.contains(&k.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&format!("{k}={v}"));
    }
    out
}

fn alipay_verifies(message: &str, signature: &str) -> bool {
    let public = keys::parse_public_key(&test_keys().alipay.public_spki_pem).expect("public");
    keys::verify(&public, message.as_bytes(), signature)
}

/// Percent-encodes everything but the unreserved characters.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A notification as the receiver got it.
struct Received {
    content_type: String,
    params: BTreeMap<String, String>,
}

impl Received {
    /// Alipay's rule: `sign` over everything but `sign` and `sign_type`.
    fn verifies(&self) -> bool {
        let message = signing_string(&self.params, &["sign", "sign_type"]);
        alipay_verifies(&message, self.get("sign"))
    }
    fn get(&self, key: &str) -> &str {
        self.params.get(key).map_or("", String::as_str)
    }
}

/// Answers `success`, except `fail` for the first `reject_left` requests.
async fn receive(
    State(st): State<Rejecting<Received>>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> &'static str {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let rejected = st.take(Received {
        content_type,
        params: pairs.into_iter().collect(),
    });
    if rejected { "fail" } else { "success" }
}

type Env = test_support::Env<Received>;

async fn env_with(reject_first: usize) -> Env {
    let keys = test_keys();
    let receiver = test_support::receiver(|tx| {
        Router::new()
            .route("/notify", post(receive))
            .with_state(Rejecting::new(tx, reject_first))
    })
    .await;
    let alipay = AlipayOptions {
        app_id: APP_ID.into(),
        app_public_key_pem: keys.app.public_spki_pem.clone(),
        alipay_private_key_pem: keys.alipay.private_pkcs8_pem.clone(),
        seller_id: Some(SELLER_ID.into()),
    };
    let sandbox = start_with_alipay(native_options(100_000), Some(alipay))
        .await
        .expect("sandbox start");
    Env::new(sandbox, receiver)
}

fn native_options(time_scale: u32) -> SandboxOptions {
    let keys = test_keys();
    test_support::native_options(&keys.merchant, &keys.provider, time_scale)
}

async fn env() -> Env {
    env_with(0).await
}

/// A gateway answer: HTTP status, the parsed response value, and whether `sign` verified over
/// the raw response text.
struct Answer {
    status: u16,
    value: Value,
    verifies: bool,
}

/// Splits `{"<key>":<value>,"sign":"<b64>"}` by hand and verifies the raw value text.
fn parse_answer(status: u16, body: &str, response_key: &str) -> Answer {
    let prefix = format!("{{\"{response_key}\":");
    let rest = body.strip_prefix(&prefix).unwrap_or_default();
    let (value_text, tail) = rest.rsplit_once(",\"sign\":\"").unwrap_or_default();
    let signature = tail.strip_suffix("\"}").unwrap_or_default();
    Answer {
        status,
        value: serde_json::from_str(value_text).unwrap_or(Value::Null),
        verifies: alipay_verifies(value_text, signature),
    }
}

impl Env {
    /// Signs the public parameters + biz_content with `key_pem` and posts them as a form.
    async fn gateway_as(&self, key_pem: &str, app_id: &str, method: &str, biz: &Value) -> Answer {
        let mut params: BTreeMap<String, String> = [
            ("app_id", app_id),
            ("method", method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("timestamp", "2026-01-02 03:04:05"),
            ("version", "1.0"),
            ("notify_url", self.notify_url.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        params.insert("biz_content".into(), biz.to_string());
        let key = keys::parse_private_key(key_pem).expect("app key");
        let message = signing_string(&params, &["sign"]);
        params.insert(
            "sign".into(),
            keys::sign(&key, message.as_bytes()).expect("sign"),
        );
        let body: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
            .collect();
        let response = self
            .http
            .post(format!("{}/gateway.do", self.sandbox.base_url))
            .header(
                "content-type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(body.join("&"))
            .send()
            .await
            .expect("gateway");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let response_key = format!("{}_response", method.replace('.', "_"));
        parse_answer(status, &text, &response_key)
    }

    async fn gateway(&self, method: &str, biz: Value) -> Answer {
        self.gateway_as(&test_keys().app.private_pkcs8_pem, APP_ID, method, &biz)
            .await
    }

    async fn precreate(&self, out_trade_no: &str, subject: &str, amount: &str) -> Answer {
        let biz = json!({
            "out_trade_no": out_trade_no,
            "total_amount": amount,
            "subject": subject,
            "time_expire": "2099-01-01 00:00:00",
        });
        self.gateway("alipay.trade.precreate", biz).await
    }

    async fn query(&self, out_trade_no: &str) -> Answer {
        let biz = json!({ "out_trade_no": out_trade_no });
        self.gateway("alipay.trade.query", biz).await
    }

    /// Precreates and pays; returns the precreate response value.
    async fn precreate_and_pay(&self, out_trade_no: &str, subject: &str, amount: &str) -> Value {
        let created = self.precreate(out_trade_no, subject, amount).await;
        assert_eq!(created.value["code"], "10000", "{}", created.value);
        let qr_code = created.value["qr_code"].as_str().expect("qr_code");
        let paid = self.http.post(qr_code).send().await.expect("pay");
        assert_eq!(paid.status().as_u16(), 200);
        created.value
    }
}

#[tokio::test]
async fn precreate_pay_notify_verifies() {
    let mut env = env().await;
    let created = env.precreate("A1", "order 1", "12.34").await;
    assert!(created.verifies, "answer signature over the raw text");
    assert_eq!(created.status, 200);
    assert_eq!(created.value["msg"], "Success");
    assert_eq!(created.value["out_trade_no"], "A1");
    let qr_code = created.value["qr_code"].as_str().expect("qr_code");
    assert!(qr_code.starts_with(&format!("{}/pay/", env.sandbox.base_url)));
    let waiting = env.query("A1").await;
    assert!(waiting.verifies);
    assert_eq!(waiting.value["trade_status"], "WAIT_BUYER_PAY");
    assert_eq!(waiting.value["total_amount"], "12.34");
    env.precreate_and_pay("A1", "order 1", "12.34").await;
    let received = env.expect_notification().await;
    assert!(received.verifies(), "{:?}", received.params);
    assert!(
        received
            .content_type
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(received.get("sign_type"), "RSA2");
    assert_eq!(received.get("notify_type"), "trade_status_sync");
    assert_eq!(received.get("trade_status"), "TRADE_SUCCESS");
    assert_eq!(received.get("total_amount"), "12.34");
    assert_eq!(received.get("receipt_amount"), "12.34");
    assert_eq!(received.get("app_id"), APP_ID);
    assert_eq!(received.get("seller_id"), SELLER_ID);
    assert_eq!(received.get("out_trade_no"), "A1");
    assert_eq!(received.get("trade_no"), waiting.value["trade_no"]);
    let paid = env.query("A1").await;
    assert_eq!(paid.value["trade_status"], "TRADE_SUCCESS");
    let closed = env
        .gateway("alipay.trade.close", json!({ "out_trade_no": "A1" }))
        .await;
    assert!(closed.verifies);
    assert_eq!(closed.value["code"], "40004");
    assert_eq!(closed.value["sub_code"], "ACQ.TRADE_STATUS_ERROR");
    assert_eq!(env.stats().await["acked"], 1);
}

#[tokio::test]
async fn bad_signature_and_unknown_app_get_signed_40002() {
    let env = env().await;
    let biz = json!({ "out_trade_no": "A1", "total_amount": "1.00", "subject": "s" });
    let method = "alipay.trade.precreate";
    let stranger = &test_keys().stranger.private_pkcs8_pem;
    let forged = env.gateway_as(stranger, APP_ID, method, &biz).await;
    assert!(forged.verifies);
    assert_eq!(forged.value["code"], "40002");
    assert_eq!(forged.value["sub_code"], "isv.invalid-signature");
    let app = &test_keys().app.private_pkcs8_pem;
    let unknown = env.gateway_as(app, "2021999", method, &biz).await;
    assert!(unknown.verifies);
    assert_eq!(unknown.value["code"], "40002");
    assert_eq!(unknown.value["sub_code"], "isv.invalid-app-id");
    assert_eq!(env.stats().await["trades"], 0);
}

#[tokio::test]
async fn tamper_amount_adds_a_fen_and_still_verifies() {
    let mut env = env().await;
    env.set_faults(json!({ "tamper_amount": true })).await;
    env.precreate_and_pay("A1", "s", "10.00").await;
    let received = env.expect_notification().await;
    assert!(received.verifies());
    assert_eq!(received.get("total_amount"), "10.01");
}

#[tokio::test]
async fn forge_breaks_the_notification_signature() {
    let mut env = env().await;
    env.set_faults(json!({ "forge": true })).await;
    env.precreate_and_pay("A1", "s", "10.00").await;
    let received = env.expect_notification().await;
    assert!(!received.verifies());
    assert_eq!(received.get("total_amount"), "10.00");
}

#[tokio::test]
async fn query_unknown_is_acq_trade_not_exist() {
    let env = env().await;
    let answer = env.query("NOPE").await;
    assert!(answer.verifies);
    assert_eq!(answer.value["code"], "40004");
    assert_eq!(answer.value["sub_code"], "ACQ.TRADE_NOT_EXIST");
}

#[tokio::test]
async fn not_success_is_resent_on_the_schedule() {
    let mut env = env_with(2).await;
    env.precreate_and_pay("A1", "s", "0.01").await;
    let first = env.expect_notification().await;
    let _second = env.expect_notification().await;
    let third = env.expect_notification().await;
    assert_eq!(first.get("notify_id"), third.get("notify_id"));
    assert!(third.verifies());
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.stats().await["acked"] != 1 {
        assert!(tokio::time::Instant::now() < deadline, "never acked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.stats().await["rejected"], 2);
}

#[tokio::test]
async fn create_error_is_500_and_close_works() {
    let env = env().await;
    env.set_faults(json!({ "scope": "bad", "create": "error" }))
        .await;
    let failed = env.precreate("A1", "bad order", "1.00").await;
    assert_eq!(failed.status, 500);
    let created = env.precreate("A2", "good order", "1.00").await;
    assert_eq!(created.value["code"], "10000");
    let closed = env
        .gateway("alipay.trade.close", json!({ "out_trade_no": "A2" }))
        .await;
    assert!(closed.verifies);
    assert_eq!(closed.value["code"], "10000");
    assert_eq!(env.query("A2").await.value["trade_status"], "TRADE_CLOSED");
}

#[tokio::test]
async fn without_an_alipay_section_the_gateway_is_404() {
    let sandbox = start(native_options(1)).await.expect("sandbox");
    let response = reqwest::Client::new()
        .post(format!("{}/gateway.do", sandbox.base_url))
        .body("method=alipay.trade.query")
        .send()
        .await
        .expect("gateway");
    assert_eq!(response.status().as_u16(), 404);
    let bill = reqwest::Client::new()
        .get(format!(
            "{}/alipay/bills/2026-01-02.99999999999",
            sandbox.base_url
        ))
        .send()
        .await
        .expect("bill");
    assert_eq!(bill.status().as_u16(), 404);
}

const BILL_URL_QUERY: &str = "alipay.data.dataservice.bill.downloadurl.query";

/// The China-time day (`yyyy-MM-dd`) a trade was paid, from the admin view.
async fn china_day(env: &Env, out_trade_no: &str) -> String {
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

/// Strict GBK, as Alipay writes both names and contents.
fn gbk(bytes: &[u8]) -> String {
    encoding_rs::GBK
        .decode_without_bom_handling_and_without_replacement(bytes)
        .expect("valid GBK")
        .into_owned()
}

/// The entries of a zip: (name, content), both decoded from GBK.
fn unzip(bytes: &[u8]) -> Vec<(String, String)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a zip");
    let names: Vec<Vec<u8>> = archive.file_names_raw().map(<[u8]>::to_vec).collect();
    names
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            assert!(
                std::str::from_utf8(raw).is_err(),
                "names are GBK, not UTF-8"
            );
            let mut content = Vec::new();
            archive
                .by_index(index)
                .expect("entry")
                .read_to_end(&mut content)
                .expect("inflate");
            (gbk(raw), gbk(&content))
        })
        .collect()
}

/// The data rows of the detail CSV as column name -> value maps (values trimmed of padding).
fn detail_rows(csv: &str) -> Vec<BTreeMap<String, String>> {
    let lines: Vec<&str> = csv.split("\r\n").collect();
    let header_at = lines
        .iter()
        .position(|l| !l.starts_with('#'))
        .expect("a column header");
    let names: Vec<&str> = lines[header_at].split(',').collect();
    assert!(names.contains(&"商户订单号") && names.contains(&"订单金额（元）"));
    lines[header_at + 1..]
        .iter()
        .take_while(|l| !l.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), names.len(), "{line}");
            names
                .iter()
                .zip(fields)
                .map(|(n, v)| ((*n).to_owned(), v.trim().to_owned()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn trade_bill_zip_holds_the_days_paid_trades_in_gbk() {
    let env = env().await;
    env.precreate_and_pay("A1", "咖啡, large", "12.34").await;
    env.precreate_and_pay("A2", "tea", "0.05").await;
    let unpaid = env.precreate("A3", "unpaid", "1.00").await;
    assert_eq!(unpaid.value["code"], "10000");
    let day = china_day(&env, "A1").await;
    let same_day = china_day(&env, "A2").await == day;

    let answer = env
        .gateway(
            BILL_URL_QUERY,
            json!({ "bill_type": "trade", "bill_date": day }),
        )
        .await;
    assert!(answer.verifies, "answer signature over the raw text");
    assert_eq!(answer.value["code"], "10000", "{}", answer.value);
    let url = answer.value["bill_download_url"]
        .as_str()
        .expect("bill_download_url");
    assert!(url.starts_with(&env.url("/alipay/bills/")), "{url}");
    let response = env.http.get(url).send().await.expect("download");
    assert_eq!(response.status().as_u16(), 200);
    let entries = unzip(&response.bytes().await.expect("zip"));

    let compact = day.replace('-', "");
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let detail_name = format!("{SELLER_ID}_{compact}_业务明细.csv");
    let summary_name = format!("{SELLER_ID}_{compact}_业务明细(汇总).csv");
    assert_eq!(names, [detail_name.as_str(), summary_name.as_str()]);
    let detail = &entries[0].1;
    assert!(detail.starts_with("#支付宝业务明细查询\r\n"), "{detail}");
    let rows = detail_rows(detail);
    assert_eq!(rows.len(), if same_day { 2 } else { 1 }, "{detail}");
    let a1 = rows
        .iter()
        .find(|r| r["商户订单号"] == "A1")
        .expect("the paid trade");
    assert_eq!(a1["业务类型"], "交易");
    assert_eq!(a1["订单金额（元）"], "12.34");
    assert_eq!(a1["商家实收（元）"], "12.34");
    assert_eq!(a1["商品名称"], "咖啡  large", "commas would split the row");
    assert!(a1["支付宝交易号"].starts_with("SBX"));
    assert!(a1["完成时间"].starts_with(&day));
    assert!(rows.iter().all(|r| r["商户订单号"] != "A3"), "unpaid");
    let total = if same_day { "12.39" } else { "12.34" };
    assert!(
        detail.contains(&format!("#交易合计：{}笔，商家实收共{total}元", rows.len())),
        "{detail}"
    );
    assert!(
        entries[1].1.contains(&format!(",{total},{total},")),
        "{}",
        entries[1].1
    );
}

#[tokio::test]
async fn trade_bill_refusals() {
    let env = env().await;
    let future = env
        .gateway(
            BILL_URL_QUERY,
            json!({ "bill_type": "trade", "bill_date": "2999-01-01" }),
        )
        .await;
    assert!(future.verifies);
    assert_eq!(
        (&future.value["code"], &future.value["sub_code"]),
        (&json!("40004"), &json!("isp.bill_not_exist"))
    );
    for biz in [
        json!({ "bill_type": "trade", "bill_date": "2026-1-01" }),
        json!({ "bill_type": "signcustomer", "bill_date": "2026-01-01" }),
    ] {
        let refused = env.gateway(BILL_URL_QUERY, biz).await;
        assert!(refused.verifies);
        assert_eq!(refused.value["code"], "40002", "{}", refused.value);
    }
    let month = env
        .gateway(
            BILL_URL_QUERY,
            json!({ "bill_type": "trade", "bill_date": "2026-01" }),
        )
        .await;
    assert_eq!(month.value["code"], "10000", "monthly bills too");
    for token in ["2026-01-01.1", "2026-01-01", "nope.99999999999"] {
        let response = env
            .http
            .get(env.url(&format!("/alipay/bills/{token}")))
            .send()
            .await
            .expect("download");
        assert_eq!(response.status().as_u16(), 404, "{token}");
    }
}

#[test]
fn resend_delays_follow_alipay_and_are_scaled() {
    use super::notify::resend_delay;
    assert_eq!(resend_delay(0, 1), None);
    assert_eq!(resend_delay(1, 1), Some(Duration::from_secs(240)));
    assert_eq!(resend_delay(7, 1), Some(Duration::from_secs(54_000)));
    assert_eq!(resend_delay(8, 1), None);
    assert_eq!(resend_delay(1, 1000), Some(Duration::from_millis(240)));
}

#[test]
fn signing_content_keeps_sign_type_for_requests_only() {
    let params: Vec<(String, String)> = [
        ("b", "2"),
        ("sign_type", "RSA2"),
        ("a", "1"),
        ("e", ""),
        ("sign", "x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        super::sign::content(&params, &["sign"]),
        "a=1&b=2&sign_type=RSA2"
    );
    assert_eq!(
        super::sign::content(&params, &["sign", "sign_type"]),
        "a=1&b=2"
    );
}
