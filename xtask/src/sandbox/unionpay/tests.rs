//! End-to-end tests of the UnionPay play: a sandbox with a `unionpay` section and a tiny
//! receiver that answers 200. Requests are signed and answers checked by hand here: the
//! content `k=v&...`, its SHA-256 in hex, SHA256withRSA over that hex.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::super::test_support;
use super::super::{
    KeyPairPem, ProviderSandboxes, SandboxOptions, UnionPayOptions, generate_rsa_2048, keys,
    start_with,
};
use super::notify::resend_delay;

const MER_ID: &str = "777290058110048";
const CERT_ID: &str = "69903319369";

type Fields = BTreeMap<String, String>;

struct TestKeys {
    merchant: KeyPairPem,
    signer: KeyPairPem,
    stranger: KeyPairPem,
    native_merchant: KeyPairPem,
    native_provider: KeyPairPem,
}

fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        merchant: generate_rsa_2048().expect("merchant key"),
        signer: generate_rsa_2048().expect("signer key"),
        stranger: generate_rsa_2048().expect("stranger key"),
        native_merchant: generate_rsa_2048().expect("native merchant key"),
        native_provider: generate_rsa_2048().expect("native provider key"),
    })
}

/// The sandbox sends it as is; only its form matters here.
const SIGNER_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nU2FuZGJveCBzaWduZXIgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";

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

fn sign_with(fields: &mut Fields, key_pem: &str) {
    let key = keys::parse_private_key(key_pem).expect("key");
    let signature = keys::sign(&key, digest_hex(fields).as_bytes()).expect("sign");
    fields.insert("signature".into(), signature);
}

/// UnionPay's signature verifies with the signer key, and `signPubKeyCert` is the signer cert.
fn signer_verifies(fields: &Fields) -> bool {
    let public = keys::parse_public_key(&test_keys().signer.public_spki_pem).expect("public");
    fields.get("signPubKeyCert").map(String::as_str) == Some(SIGNER_CERT_PEM)
        && keys::verify(
            &public,
            digest_hex(fields).as_bytes(),
            fields.get("signature").map_or("", String::as_str),
        )
}

/// Raw `k=v&...` (the answer format; no value here holds `&`).
fn parse_raw(text: &str) -> Fields {
    text.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("k=v");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A URL-encoded form, decoded by reqwest's URL parser.
fn parse_form(body: &[u8]) -> Fields {
    let text = std::str::from_utf8(body).expect("UTF-8");
    reqwest::Url::parse(&format!("http://x/?{text}"))
        .expect("form")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn form(fields: &Fields) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("url");
    url.query_pairs_mut().extend_pairs(fields.iter());
    url.query().unwrap_or_default().to_owned()
}

/// Decodes the form as it arrives; answers 200.
async fn receive(State(tx): State<mpsc::UnboundedSender<Fields>>, body: Bytes) -> StatusCode {
    let _ = tx.send(parse_form(&body));
    StatusCode::OK
}

type Env = test_support::Env<Fields>;

fn native_options() -> SandboxOptions {
    let keys = test_keys();
    test_support::native_options(&keys.native_merchant, &keys.native_provider, 100_000)
}

async fn env() -> Env {
    let keys = test_keys();
    let receiver =
        test_support::receiver(|tx| Router::new().route("/notify", post(receive)).with_state(tx))
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
    let sandbox = start_with(native_options(), providers)
        .await
        .expect("sandbox start");
    Env::new(sandbox, receiver)
}

fn common(txn_type: &str, txn_sub_type: &str, order_id: &str) -> Fields {
    [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("certId", CERT_ID),
        ("merId", MER_ID),
        ("accessType", "0"),
        ("bizType", "000000"),
        ("txnType", txn_type),
        ("txnSubType", txn_sub_type),
        ("orderId", order_id),
        ("txnTime", "20260101120000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl Env {
    async fn post(&self, path: &str, fields: &Fields) -> (u16, Fields) {
        let response = self
            .http
            .post(format!("{}{path}", self.sandbox.base_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields))
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let text = response.text().await.expect("text");
        (
            status,
            if status == 200 {
                parse_raw(&text)
            } else {
                Fields::new()
            },
        )
    }

    fn consume(&self, order_id: &str, amount: i64) -> Fields {
        let mut fields = common("01", "07", order_id);
        for (k, v) in [
            ("channelType", "08".to_owned()),
            ("txnAmt", amount.to_string()),
            ("currencyCode", "156".to_owned()),
            ("backUrl", self.notify_url.clone()),
            ("payTimeout", "20990101000000".to_owned()),
        ] {
            fields.insert(k.into(), v);
        }
        sign_with(&mut fields, &test_keys().merchant.private_pkcs8_pem);
        fields
    }

    async fn create(&self, order_id: &str, amount: i64) -> Fields {
        let (status, answer) = self
            .post(
                "/gateway/api/backTransReq.do",
                &self.consume(order_id, amount),
            )
            .await;
        assert_eq!(status, 200);
        answer
    }

    async fn query(&self, order_id: &str) -> Fields {
        let mut fields = common("00", "00", order_id);
        sign_with(&mut fields, &test_keys().merchant.private_pkcs8_pem);
        let (status, answer) = self.post("/gateway/api/queryTrans.do", &fields).await;
        assert_eq!(status, 200);
        answer
    }

    async fn create_and_pay(&self, order_id: &str, amount: i64) {
        let answer = self.create(order_id, amount).await;
        assert_eq!(answer["respCode"], "00", "{answer:?}");
        let paid = self.http.post(&answer["qrCode"]).send().await.expect("pay");
        assert_eq!(paid.status().as_u16(), 200);
    }
}

#[tokio::test]
async fn consume_query_pay_notify_all_signed() {
    let mut env = env().await;
    let answer = env.create("ORDER00000001", 1010).await;
    assert!(signer_verifies(&answer), "{answer:?}");
    assert_eq!(
        (
            answer["respCode"].as_str(),
            answer["orderId"].as_str(),
            answer["merId"].as_str()
        ),
        ("00", "ORDER00000001", MER_ID)
    );
    assert!(answer["qrCode"].starts_with(&env.sandbox.base_url));

    let query = env.query("ORDER00000001").await;
    assert!(signer_verifies(&query));
    assert_eq!(
        (query["respCode"].as_str(), query["origRespCode"].as_str()),
        ("00", "05")
    );

    let paid = env.http.post(&answer["qrCode"]).send().await.expect("pay");
    assert_eq!(paid.status().as_u16(), 200);
    let notice = env.expect_notification().await;
    assert!(signer_verifies(&notice), "{notice:?}");
    for (key, value) in [
        ("merId", MER_ID),
        ("orderId", "ORDER00000001"),
        ("txnTime", "20260101120000"),
        ("txnAmt", "1010"),
        ("currencyCode", "156"),
        ("respCode", "00"),
        ("txnType", "01"),
        ("version", "5.1.0"),
        ("signMethod", "01"),
    ] {
        assert_eq!(notice.get(key).map(String::as_str), Some(value), "{key}");
    }
    let query = env.query("ORDER00000001").await;
    assert_eq!(query["origRespCode"], "00");
    assert_eq!(query["txnAmt"], "1010");
    assert_eq!(query["queryId"], notice["queryId"]);
    let trade: Value = env
        .http
        .get(format!(
            "{}/admin/trades/ORDER00000001",
            env.sandbox.base_url
        ))
        .send()
        .await
        .expect("trade")
        .json()
        .await
        .expect("trade JSON");
    assert_eq!(trade["protocol"], "unionpay");
}

#[tokio::test]
async fn bad_signature_wrong_cert_and_unknown_orders_are_refused() {
    let env = env().await;
    let mut forged = env.consume("ORDER00000002", 100);
    sign_with(&mut forged, &test_keys().stranger.private_pkcs8_pem);
    let (status, answer) = env.post("/gateway/api/backTransReq.do", &forged).await;
    assert_eq!(status, 200);
    assert_eq!(answer["respCode"], "11", "{answer:?}");
    assert!(signer_verifies(&answer));

    let mut wrong_cert = env.consume("ORDER00000002", 100);
    wrong_cert.insert("certId".into(), "1".into());
    sign_with(&mut wrong_cert, &test_keys().merchant.private_pkcs8_pem);
    let (_, answer) = env.post("/gateway/api/backTransReq.do", &wrong_cert).await;
    assert_eq!(answer["respCode"], "11", "{answer:?}");

    let query = env.query("ORDER00000002").await;
    assert_eq!(query["respCode"], "34", "nothing was created: {query:?}");

    let mut unsigned = env.consume("ORDER00000002", 100);
    unsigned.insert("txnAmt".into(), "101".into());
    let (_, answer) = env.post("/gateway/api/backTransReq.do", &unsigned).await;
    assert_eq!(
        answer["respCode"], "11",
        "a changed field breaks the signature"
    );
}

#[tokio::test]
async fn tamper_amount_adds_a_fen_and_still_verifies() {
    let mut env = env().await;
    env.set_faults(json!({ "scope": "ORDER00000003", "tamper_amount": true }))
        .await;
    env.create_and_pay("ORDER00000003", 1010).await;
    let notice = env.expect_notification().await;
    assert!(signer_verifies(&notice));
    assert_eq!(notice["txnAmt"], "1011");
}

#[tokio::test]
async fn forge_breaks_the_notification_signature() {
    let mut env = env().await;
    env.set_faults(json!({ "scope": "ORDER00000004", "forge": true }))
        .await;
    env.create_and_pay("ORDER00000004", 1010).await;
    let notice = env.expect_notification().await;
    assert_eq!(notice["txnAmt"], "1010");
    assert!(!signer_verifies(&notice));
}

#[tokio::test]
async fn without_a_unionpay_section_the_gateway_is_404() {
    let sandbox = start_with(native_options(), ProviderSandboxes::default())
        .await
        .expect("sandbox start");
    let response = reqwest::Client::new()
        .post(format!("{}/gateway/api/backTransReq.do", sandbox.base_url))
        .body("version=5.1.0")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 404);
}

#[test]
fn resend_delays_double_from_a_minute_and_are_scaled() {
    let secs: Vec<u64> = (1..=6)
        .filter_map(|n| resend_delay(n, 1))
        .map(|d| d.as_secs())
        .collect();
    assert_eq!(secs, [60, 120, 240, 480, 960]);
    assert_eq!(resend_delay(1, 60), Some(Duration::from_secs(1)));
    assert_eq!(resend_delay(0, 1), None);
}

// ---- the file transfer ----

/// ZM field widths in GBK bytes, each field followed by one space.
const ZM_WIDTHS: [usize; 40] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21,
    15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1,
];

/// Field `index` of a ZM record, cut by byte offsets and decoded from GBK.
fn zm_field(record: &[u8], index: usize) -> String {
    let start: usize = ZM_WIDTHS[..index].iter().map(|w| w + 1).sum();
    let bytes = &record[start..start + ZM_WIDTHS[index]];
    encoding_rs::GBK
        .decode_without_bom_handling_and_without_replacement(bytes)
        .expect("GBK")
        .trim_end()
        .to_owned()
}

/// `fileContent` -> (entry name, ZM records): base64, zlib, then the ZIP archive.
fn unpack_file(content: &str) -> (String, Vec<Vec<u8>>) {
    use std::io::Read as _;
    let deflated = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, content)
        .expect("base64");
    let mut archive = Vec::new();
    flate2::read::ZlibDecoder::new(deflated.as_slice())
        .read_to_end(&mut archive)
        .expect("zlib");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).expect("zip");
    assert_eq!(zip.len(), 1);
    let mut entry = zip.by_index(0).expect("entry");
    let name = entry.name().expect("name").into_owned();
    let mut zm = Vec::new();
    entry.read_to_end(&mut zm).expect("entry bytes");
    let records = zm
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        .filter(|line| !line.is_empty())
        .collect();
    (name, records)
}

/// `MMDD` of today in China time, `days_back` days ago.
fn china_mmdd(days_back: i64) -> String {
    let day = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8))
        - time::Duration::days(days_back);
    format!("{:02}{:02}", u8::from(day.month()), day.day())
}

fn file_request(settle_date: &str) -> Fields {
    [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("certId", CERT_ID),
        ("merId", MER_ID),
        ("accessType", "0"),
        ("bizType", "000000"),
        ("txnType", "76"),
        ("txnSubType", "01"),
        ("fileType", "00"),
        ("settleDate", settle_date),
        ("txnTime", "20260101120000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test]
async fn file_transfer_refuses_a_bad_signature() {
    let env = env().await;
    let mut forged = file_request(&china_mmdd(0));
    sign_with(&mut forged, &test_keys().stranger.private_pkcs8_pem);
    let (status, answer) = env.post("/unionpay/file/", &forged).await;
    assert_eq!(status, 200);
    assert_eq!(answer["respCode"], "11", "{answer:?}");
    assert!(signer_verifies(&answer));
    assert!(!answer.contains_key("fileContent"));

    let mut bad_date = file_request("0230");
    sign_with(&mut bad_date, &test_keys().merchant.private_pkcs8_pem);
    let (_, answer) = env.post("/unionpay/file/", &bad_date).await;
    assert_eq!(answer["respCode"], "30", "{answer:?}");
}

#[tokio::test]
async fn the_file_lists_the_days_paid_consumes() {
    let mut env = env().await;
    env.create_and_pay("ORDER00000010", 1010).await;
    let notice = env.expect_notification().await;
    assert_eq!(env.create("ORDER00000011", 2020).await["respCode"], "00");

    let today = china_mmdd(0);
    let mut request = file_request(&today);
    sign_with(&mut request, &test_keys().merchant.private_pkcs8_pem);
    let (status, answer) = env.post("/unionpay/file/", &request).await;
    assert_eq!(status, 200);
    assert!(signer_verifies(&answer), "{answer:?}");
    assert_eq!(
        (answer["respCode"].as_str(), answer["settleDate"].as_str()),
        ("00", today.as_str())
    );
    assert_eq!(
        notice["settleDate"], today,
        "the notification's settle date"
    );
    assert!(answer["fileName"].ends_with(".zip"), "{answer:?}");

    let (name, records) = unpack_file(&answer["fileContent"]);
    assert!(
        name.starts_with("INN") && name.ends_with(&format!("88ZM_{MER_ID}")),
        "{name}"
    );
    assert_eq!(records.len(), 1, "only the paid consume");
    let record = &records[0];
    for (index, expected) in [
        (6, "000000001010"),
        (9, notice["queryId"].as_str()),
        (11, "ORDER00000010"),
        (16, "C000000001010"),
        (19, "01"),
        (27, MER_ID),
        (30, "沙箱测试商户"),
    ] {
        assert_eq!(zm_field(record, index), expected, "field {index}");
    }
    assert_eq!(zm_field(record, 4), notice["txnTime"][4..]);

    let mut yesterday = file_request(&china_mmdd(1));
    sign_with(&mut yesterday, &test_keys().merchant.private_pkcs8_pem);
    let (_, answer) = env.post("/unionpay/file/", &yesterday).await;
    assert_eq!(answer["respCode"], "00");
    assert_eq!(unpack_file(&answer["fileContent"]).1.len(), 0);
}
