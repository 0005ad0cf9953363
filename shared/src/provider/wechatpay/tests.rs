//! The adapter's rules without a network: canonical strings, signing, the platform signature and
//! replay window, AES-GCM resources, every mapped status and error, and cross-checks with the
//! `openssl` command line as an independent implementation.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::keys::{self, ApiV3Key};
use super::wire::{self, Answer, ApiRequest, RefundOrder};
use super::*;
use crate::clock::ManualClock;
use crate::domain::{Currency, Money, OrderId};
use crate::ports::{Notification, NotifiedStatus};
use crate::provider::test_callback::{payment, refund};
use crate::provider::test_openssl::{TempDir, openssl_ok, openssl_rsa_key, sign_args, verify_args};

const MCHID: &str = "1900000109";
const APPID: &str = "wxd678efh567hg6787";
const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2C0B5C8F";
const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const API_V3_KEY: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
const NOW_S: i64 = 1_700_000_000;
const PAYMENT_ID: &str = "01HF7YAT00ABCDEFGHJKMNPQRS";
const RESOURCE_NONCE: &str = "fdasflkja484";

/// PKCS#8 private and SPKI public PEMs.
struct KeyPems {
    private: String,
    public: String,
}

fn generate_pems() -> KeyPems {
    let key = KeyPair::generate(KeySize::Rsa2048).expect("generate");
    let private: Pkcs8V1Der<'_> = key.as_der().expect("pkcs8");
    let public: PublicKeyX509Der<'_> = key.public_key().as_der().expect("spki");
    KeyPems {
        private: pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref().to_vec())),
        public: pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref().to_vec())),
    }
}

/// Merchant, platform and a stranger's key pairs, generated once: RSA key generation is slow.
fn pems() -> &'static [KeyPems; 3] {
    static PEMS: OnceLock<[KeyPems; 3]> = OnceLock::new();
    PEMS.get_or_init(|| [generate_pems(), generate_pems(), generate_pems()])
}

fn merchant() -> &'static KeyPems {
    &pems()[0]
}

fn platform() -> &'static KeyPems {
    &pems()[1]
}

fn stranger() -> &'static KeyPems {
    &pems()[2]
}

fn signer(pems: &KeyPems) -> RsaSigner {
    RsaSigner::from_pem(&pems.private).expect("signer")
}

fn verifier(pems: &KeyPems) -> RsaVerifier {
    RsaVerifier::from_pem(&pems.public).expect("verifier")
}

fn config_with(platform_keys: Vec<(String, RsaVerifier)>, api_v3_key: &[u8]) -> WechatPayConfig {
    WechatPayConfig {
        base_url: "https://api.mch.weixin.qq.com".into(),
        mchid: MCHID.into(),
        appid: APPID.into(),
        merchant_serial_no: MERCHANT_SERIAL.into(),
        merchant_key: signer(merchant()),
        platform_keys,
        api_v3_key: api_v3_key.to_vec(),
        notify_url: "https://pay.example.com/callbacks/wechatpay".into(),
        timeout: Duration::from_secs(5),
    }
}

fn config() -> WechatPayConfig {
    config_with(
        vec![(PLATFORM_SERIAL.into(), verifier(platform()))],
        API_V3_KEY,
    )
}

fn provider_from(config: WechatPayConfig) -> WechatPayProvider {
    let clock = Arc::new(ManualClock::at(Timestamp::from_unix_s(NOW_S)));
    WechatPayProvider::new(config, clock).expect("provider")
}

fn provider() -> WechatPayProvider {
    provider_from(config())
}

fn payment_id() -> PaymentId {
    PaymentId::parse(PAYMENT_ID).expect("id")
}

/// The headers WeChat Pay puts on a signed answer or notification.
fn signed_headers(key: &RsaSigner, serial: &str, timestamp_s: i64, body: &str) -> http::HeaderMap {
    let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    let timestamp = timestamp_s.to_string();
    // Built here rather than with the adapter's own function, so a wrong layout there shows.
    let message = format!("{timestamp}\n{nonce}\n{body}\n");
    let signature = key.sign_base64(message.as_bytes());
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("wechatpay-timestamp", timestamp.as_str()),
        ("wechatpay-nonce", nonce),
        ("wechatpay-serial", serial),
        ("wechatpay-signature", signature.as_str()),
    ] {
        headers.insert(name, value.parse().expect("header value"));
    }
    headers
}

/// What WeChat Pay does to a resource: AES-GCM, then base64 of ciphertext || tag.
fn encrypt(key: &[u8], nonce: &str, associated_data: &str, plaintext: &str) -> String {
    let algorithm = if key.len() == 16 {
        &AES_128_GCM
    } else {
        &AES_256_GCM
    };
    let key = LessSafeKey::new(UnboundKey::new(algorithm, key).expect("key"));
    let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes()).expect("nonce");
    let mut in_out = plaintext.as_bytes().to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut in_out)
        .expect("seal");
    STANDARD.encode(in_out)
}

fn transaction(mchid: &str, appid: &str, trade_state: &str, total: &str) -> String {
    format!(
        r#"{{"mchid":"{mchid}","appid":"{appid}","out_trade_no":"{PAYMENT_ID}","transaction_id":"4200000000002104083200000488","trade_type":"NATIVE","trade_state":"{trade_state}","trade_state_desc":"","success_time":"2023-11-15T06:13:20+08:00","payer":{{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}},"amount":{{"total":{total},"payer_total":{total},"currency":"CNY","payer_currency":"CNY"}}}}"#
    )
}

fn envelope(event_type: &str, algorithm: &str, ciphertext: &str) -> String {
    json!({
        "id": "EV-2018022511223320873",
        "create_time": "2023-11-15T06:13:20+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功",
        "resource": {
            "original_type": "transaction",
            "algorithm": algorithm,
            "ciphertext": ciphertext,
            "associated_data": "transaction",
            "nonce": RESOURCE_NONCE,
        }
    })
    .to_string()
}

fn notification_body(plaintext: &str) -> String {
    let ciphertext = encrypt(API_V3_KEY, RESOURCE_NONCE, "transaction", plaintext);
    envelope("TRANSACTION.SUCCESS", "AEAD_AES_256_GCM", &ciphertext)
}

fn paid_body() -> String {
    notification_body(&transaction(MCHID, APPID, "SUCCESS", "10"))
}

fn verify(
    provider: &WechatPayProvider,
    headers: &http::HeaderMap,
    body: &str,
) -> Result<Notification, CallbackRejection> {
    payment(provider.verify_callback(headers, body.as_bytes(), Timestamp::from_unix_s(NOW_S)))
}

fn bad_signature(result: Result<Notification, CallbackRejection>) -> bool {
    matches!(result, Err(CallbackRejection::BadSignature(_)))
}

// ---- requests ----

#[test]
fn request_messages_are_canonical() {
    let check = |method: http::Method, url: &str, body: &str, expected: &str| {
        let request = ApiRequest {
            method,
            url: url.into(),
            body: body.into(),
        };
        assert_eq!(
            wire::request_message(&request, 1_554_208_460, "593BEC0C930BF1AFEB40B4A08C8FB242"),
            expected
        );
    };
    check(
        http::Method::GET,
        "/v3/pay/transactions/out-trade-no/X1?mchid=1900000109",
        "",
        "GET\n/v3/pay/transactions/out-trade-no/X1?mchid=1900000109\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n",
    );
    check(
        http::Method::POST,
        "/v3/pay/transactions/native",
        "{\"a\":1}",
        "POST\n/v3/pay/transactions/native\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{\"a\":1}\n",
    );
}

#[test]
fn platform_messages_are_canonical() {
    assert_eq!(
        keys::platform_message(
            "1554208460",
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            b"{\"a\":1}"
        ),
        b"1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{\"a\":1}\n"
    );
    assert_eq!(keys::platform_message("1", "n", b""), b"1\nn\n\n");
}

/// Splits `SCHEME k="v",k="v"` into the scheme and the fields.
fn authorization_fields(header: &str) -> (String, Vec<(String, String)>) {
    let (scheme, rest) = header.split_once(' ').expect("scheme");
    let fields = rest
        .split(',')
        .map(|field| {
            let (k, v) = field.split_once('=').expect("k=v");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect();
    (scheme.to_owned(), fields)
}

#[test]
fn authorization_header_is_signed_with_the_merchant_key() {
    let config = config();
    let request = wire::query_request(&config, &payment_id());
    let header = wire::authorization(&config, &request, NOW_S, "NONCE1");
    let (scheme, fields) = authorization_fields(&header);
    assert_eq!(scheme, "WECHATPAY2-SHA256-RSA2048");
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["mchid", "nonce_str", "timestamp", "serial_no", "signature"]
    );
    assert_eq!(fields[0].1, MCHID);
    assert_eq!(fields[1].1, "NONCE1");
    assert_eq!(fields[2].1, NOW_S.to_string());
    assert_eq!(fields[3].1, MERCHANT_SERIAL);
    let message = wire::request_message(&request, NOW_S, "NONCE1");
    assert!(verifier(merchant()).verify_base64(message.as_bytes(), &fields[4].1));
    let tampered = wire::request_message(&request, NOW_S + 1, "NONCE1");
    assert!(!verifier(merchant()).verify_base64(tampered.as_bytes(), &fields[4].1));
    assert!(!verifier(platform()).verify_base64(message.as_bytes(), &fields[4].1));
}

#[test]
fn fresh_nonces_fit_nonce_str() {
    let (a, b) = (fresh_nonce(), fresh_nonce());
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

fn create_input(expires_at: Timestamp) -> ProviderCreate {
    ProviderCreate {
        payment_id: payment_id(),
        order_id: OrderId::parse("order-1").expect("order"),
        money: Money {
            amount: AmountMinor::new(10).expect("amount"),
            currency: Currency::Cny,
        },
        subject: "Image形象店-深圳腾大-QQ公仔".into(),
        expires_at,
    }
}

#[test]
fn create_request_is_a_native_order_in_fen_with_beijing_expiry() {
    let request = wire::create_request(
        &config(),
        &create_input(Timestamp::from_unix_ms(1_624_523_846_999)),
    )
    .expect("request");
    assert_eq!(request.method, http::Method::POST);
    assert_eq!(request.url, "/v3/pay/transactions/native");
    let body: serde_json::Value = serde_json::from_str(&request.body).expect("json");
    assert_eq!(
        body,
        json!({
            "appid": APPID,
            "mchid": MCHID,
            "description": "Image形象店-深圳腾大-QQ公仔",
            "out_trade_no": PAYMENT_ID,
            "time_expire": "2021-06-24T16:37:26+08:00",
            "notify_url": "https://pay.example.com/callbacks/wechatpay",
            "amount": { "total": 10, "currency": "CNY" },
        })
    );
}

#[test]
fn expiry_is_formatted_in_beijing_time() {
    let check = |unix_s: i64, expected: &str| {
        assert_eq!(
            wire::beijing_rfc3339(Timestamp::from_unix_s(unix_s)).as_deref(),
            Some(expected)
        );
    };
    check(1_624_523_846, "2021-06-24T16:37:26+08:00");
    check(1_700_000_000, "2023-11-15T06:13:20+08:00");
    check(0, "1970-01-01T08:00:00+08:00");
}

#[test]
fn query_and_close_requests() {
    let config = config();
    let query = wire::query_request(&config, &payment_id());
    assert_eq!(query.method, http::Method::GET);
    assert_eq!(
        query.url,
        format!("/v3/pay/transactions/out-trade-no/{PAYMENT_ID}?mchid={MCHID}")
    );
    assert_eq!(query.body, "");
    let close = wire::close_request(&config, &payment_id());
    assert_eq!(close.method, http::Method::POST);
    assert_eq!(
        close.url,
        format!("/v3/pay/transactions/out-trade-no/{PAYMENT_ID}/close")
    );
    assert_eq!(close.body, format!(r#"{{"mchid":"{MCHID}"}}"#));
}

fn refund_order<'a>(
    id: &'a PaymentId,
    refund_id: &'a str,
    refund: i64,
    reason: Option<&'a str>,
) -> RefundOrder<'a> {
    RefundOrder {
        payment_id: id,
        refund_id,
        refund: AmountMinor::new(refund).expect("refund"),
        total: AmountMinor::new(100).expect("total"),
        reason,
        notify_url: "https://pay.example.com/callbacks/wechatpay",
    }
}

#[test]
fn refund_requests() {
    let id = payment_id();
    let request =
        wire::refund_request(&refund_order(&id, "R_1-2|*@", 40, Some("退货"))).expect("request");
    assert_eq!(request.method, http::Method::POST);
    assert_eq!(request.url, "/v3/refund/domestic/refunds");
    let body: serde_json::Value = serde_json::from_str(&request.body).expect("json");
    assert_eq!(
        body,
        json!({
            "out_trade_no": PAYMENT_ID,
            "out_refund_no": "R_1-2|*@",
            "reason": "退货",
            "notify_url": "https://pay.example.com/callbacks/wechatpay",
            "amount": { "refund": 40, "total": 100, "currency": "CNY" },
        })
    );
    let long = "退".repeat(100);
    let request = wire::refund_request(&refund_order(&id, "R1", 40, Some(&long))).expect("request");
    let body: serde_json::Value = serde_json::from_str(&request.body).expect("json");
    assert_eq!(body["reason"].as_str().map(|r| r.chars().count()), Some(80));
    let request = wire::refund_request(&refund_order(&id, "R1", 100, None)).expect("request");
    assert!(!request.body.contains("reason"));
}

#[test]
fn refund_requests_we_would_never_send_are_rejected() {
    let id = payment_id();
    let too_long = "R".repeat(65);
    for (refund_id, refund, code) in [
        ("", 1, "INVALID_REFUND_ID"),
        ("a b", 1, "INVALID_REFUND_ID"),
        ("a/b", 1, "INVALID_REFUND_ID"),
        (too_long.as_str(), 1, "INVALID_REFUND_ID"),
        ("R1", 101, "INVALID_REFUND_AMOUNT"),
    ] {
        match wire::refund_request(&refund_order(&id, refund_id, refund, None)) {
            Err(ProviderError::Rejected { code: got, .. }) => assert_eq!(got, code, "{refund_id}"),
            other => panic!("{refund_id:?} {refund}: {other:?}"),
        }
    }
}

// ---- answers ----

#[derive(Clone, Copy, Debug)]
enum Signing {
    Unsigned,
    Valid,
    WrongKey,
    Stale,
}

fn answer_headers(signing: Signing, body: &str) -> http::HeaderMap {
    match signing {
        Signing::Unsigned => http::HeaderMap::new(),
        Signing::Valid => signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, body),
        Signing::WrongKey => signed_headers(&signer(stranger()), PLATFORM_SERIAL, NOW_S, body),
        Signing::Stale => signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S - 300, body),
    }
}

#[test]
fn answers_are_believed_only_when_authentic() {
    let error = r#"{"code":"PARAM_ERROR","message":"bad"}"#;
    // (status, signing, body, Some(authentic) if believed)
    let cases = [
        (200, Signing::Valid, "{}", Some(true)),
        (204, Signing::Valid, "", Some(true)),
        (200, Signing::Unsigned, "{}", None),
        (200, Signing::WrongKey, "{}", None),
        (200, Signing::Stale, "{}", None),
        (204, Signing::Unsigned, "", None),
        (400, Signing::Unsigned, error, Some(false)),
        (400, Signing::Valid, error, Some(true)),
        (400, Signing::WrongKey, error, None),
        (429, Signing::Valid, error, None),
        (500, Signing::Valid, error, None),
        (503, Signing::Unsigned, "", None),
        (302, Signing::Unsigned, "", None),
    ];
    let keys = config().platform_keys;
    for (status, signing, body, expected) in cases {
        let headers = answer_headers(signing, body);
        let got = wire::authenticate(
            &keys,
            status,
            &headers,
            body.as_bytes(),
            Timestamp::from_unix_s(NOW_S),
        );
        match (expected, got) {
            (Some(authentic), Ok(answer)) => {
                assert_eq!(answer.authentic, authentic, "{status} {signing:?}")
            }
            (None, Err(ProviderError::Unknown(_))) => {}
            (expected, got) => panic!("{status} {signing:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        body: body.as_bytes().to_vec(),
        authentic: true,
    }
}

fn error(code: &str) -> String {
    json!({ "code": code, "message": "detail" }).to_string()
}

/// `Ok(())` for success, `Err(Some(code))` for a rejection, `Err(None)` for unknown.
fn outcome<T>(result: Result<T, ProviderError>) -> Result<(), Option<String>> {
    match result {
        Ok(_) => Ok(()),
        Err(ProviderError::Rejected { code, .. }) => Err(Some(code)),
        Err(ProviderError::Unknown(_)) => Err(None),
    }
}

#[test]
fn create_answers() {
    let ok = wire::interpret_create(&answer(
        200,
        r#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#,
    ));
    assert_eq!(
        ok,
        Ok(ProviderCreated {
            pay_url: "weixin://wxpay/bizpayurl?pr=p4lpSuKzz".into(),
            provider_trade_no: None,
        })
    );
    let rejected = |code: &str| Err(Some(code.to_owned()));
    let cases = [
        (200, "{}".to_owned(), Err(None)),
        (200, r#"{"code_url":""}"#.to_owned(), Err(None)),
        (400, error("PARAM_ERROR"), rejected("PARAM_ERROR")),
        (400, error("INVALID_REQUEST"), rejected("INVALID_REQUEST")),
        (401, error("SIGN_ERROR"), rejected("SIGN_ERROR")),
        (403, error("NO_AUTH"), rejected("NO_AUTH")),
        (
            403,
            error("OUT_TRADE_NO_USED"),
            rejected("OUT_TRADE_NO_USED"),
        ),
        (403, error("ORDERPAID"), Err(None)),
        (403, error("FREQUENCY_LIMITED"), Err(None)),
        (400, error("SYSTEM_ERROR"), Err(None)),
        (403, error("BANK_ERROR"), Err(None)),
        (400, "not json".to_owned(), Err(None)),
        (400, r#"{"message":"no code"}"#.to_owned(), Err(None)),
    ];
    for (status, body, expected) in cases {
        assert_eq!(
            outcome(wire::interpret_create(&answer(status, &body))),
            expected,
            "{status} {body}"
        );
    }
}

#[test]
fn close_answers() {
    let cases = [
        (204, String::new(), Ok(())),
        (200, String::new(), Ok(())),
        (400, error("ORDERPAID"), Err(Some("ORDERPAID".to_owned()))),
        (
            404,
            error("ORDER_NOT_EXIST"),
            Err(Some("ORDER_NOT_EXIST".to_owned())),
        ),
        (400, error("SYSTEM_ERROR"), Err(None)),
    ];
    for (status, body, expected) in cases {
        assert_eq!(
            outcome(wire::interpret_close(&answer(status, &body))),
            expected,
            "{status} {body}"
        );
    }
}

fn query(answer: &Answer) -> Result<Option<ProviderTrade>, ProviderError> {
    wire::interpret_query(&config(), &payment_id(), answer)
}

#[test]
fn query_maps_every_trade_state() {
    let cases = [
        ("SUCCESS", Some(NotifiedStatus::Paid)),
        ("REFUND", Some(NotifiedStatus::Paid)),
        ("NOTPAY", Some(NotifiedStatus::Pending)),
        ("USERPAYING", Some(NotifiedStatus::Pending)),
        ("CLOSED", Some(NotifiedStatus::Closed)),
        ("REVOKED", Some(NotifiedStatus::Closed)),
        ("PAYERROR", Some(NotifiedStatus::Closed)),
        ("ACCEPT", None),
        ("success", None),
        ("", None),
    ];
    for (state, expected) in cases {
        let got = query(&answer(200, &transaction(MCHID, APPID, state, "10")));
        match (expected, got) {
            (Some(status), Ok(Some(trade))) => assert_eq!(
                trade,
                ProviderTrade {
                    status,
                    provider_trade_no: Some("4200000000002104083200000488".into()),
                    amount_minor: 10,
                    currency: Currency::Cny,
                },
                "{state}"
            ),
            (None, Err(ProviderError::Unknown(_))) => {}
            (expected, got) => panic!("{state}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn query_of_an_unpaid_order_without_currency_or_transaction_id() {
    let body = format!(
        r#"{{"mchid":"{MCHID}","appid":"{APPID}","out_trade_no":"{PAYMENT_ID}","trade_state":"NOTPAY","trade_state_desc":"订单未支付","amount":{{"total":1,"payer_currency":"CNY"}}}}"#
    );
    assert_eq!(
        query(&answer(200, &body)),
        Ok(Some(ProviderTrade {
            status: NotifiedStatus::Pending,
            provider_trade_no: None,
            amount_minor: 1,
            currency: Currency::Cny,
        }))
    );
}

#[test]
fn query_answers_that_are_not_about_our_order() {
    let not_exist = error("ORDER_NOT_EXIST");
    assert_eq!(query(&answer(404, &not_exist)), Ok(None));
    let unsigned = Answer {
        authentic: false,
        ..answer(404, &not_exist)
    };
    assert!(matches!(query(&unsigned), Err(ProviderError::Unknown(_))));
    let other = PaymentId::parse("OTHER1").expect("id");
    let cases = [
        (
            404,
            error("RESOURCE_NOT_EXISTS"),
            Err(Some("RESOURCE_NOT_EXISTS".to_owned())),
        ),
        (
            200,
            transaction("1900000999", APPID, "SUCCESS", "10"),
            Err(None),
        ),
        (
            200,
            transaction(MCHID, "wxother", "SUCCESS", "10"),
            Err(None),
        ),
        (200, transaction(MCHID, APPID, "SUCCESS", "1.5"), Err(None)),
        (200, "{}".to_owned(), Err(None)),
    ];
    for (status, body, expected) in cases {
        assert_eq!(
            outcome(query(&answer(status, &body))),
            expected,
            "{status} {body}"
        );
    }
    let mismatch = wire::interpret_query(
        &config(),
        &other,
        &answer(200, &transaction(MCHID, APPID, "SUCCESS", "10")),
    );
    assert!(matches!(mismatch, Err(ProviderError::Unknown(_))));
}

#[test]
fn refund_answers() {
    let body = |out_refund_no: &str, status: &str| {
        json!({
            "refund_id": "50000000382019052709732678859",
            "out_refund_no": out_refund_no,
            "transaction_id": "1217752501201407033233368018",
            "out_trade_no": PAYMENT_ID,
            "channel": "ORIGINAL",
            "status": status,
            "amount": { "total": 100, "refund": 40, "payer_total": 100, "payer_refund": 40, "currency": "CNY" },
        })
        .to_string()
    };
    for (status, expected) in [
        ("SUCCESS", RefundStatus::Success),
        ("PROCESSING", RefundStatus::Processing),
        ("CLOSED", RefundStatus::Closed),
        ("ABNORMAL", RefundStatus::Abnormal),
    ] {
        assert_eq!(
            wire::interpret_refund("R1", &answer(200, &body("R1", status))),
            Ok(RefundResult {
                provider_refund_id: "50000000382019052709732678859".into(),
                status: expected,
            })
        );
    }
    let cases = [
        (200, body("R1", "DONE"), Err(None)),
        (200, body("R2", "SUCCESS"), Err(None)),
        (403, error("NOT_ENOUGH"), Err(Some("NOT_ENOUGH".to_owned()))),
        (400, error("SYSTEM_ERROR"), Err(None)),
    ];
    for (status, body, expected) in cases {
        assert_eq!(
            outcome(wire::interpret_refund("R1", &answer(status, &body))),
            expected,
            "{status} {body}"
        );
    }
}

// ---- notifications ----

#[test]
fn paid_notification_is_verified_decrypted_and_parsed() {
    let body = paid_body();
    let headers = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
    assert_eq!(
        verify(&provider(), &headers, &body),
        Ok(Notification {
            notify_id: "EV-2018022511223320873".into(),
            payment_id: payment_id(),
            provider_trade_no: Some("4200000000002104083200000488".into()),
            status: NotifiedStatus::Paid,
            amount_minor: 10,
            currency: Currency::Cny,
        })
    );
}

#[test]
fn notifications_map_every_trade_state() {
    let provider = provider();
    for state in [
        "SUCCESS",
        "REFUND",
        "NOTPAY",
        "USERPAYING",
        "CLOSED",
        "REVOKED",
        "PAYERROR",
        "ACCEPT",
    ] {
        let body = notification_body(&transaction(MCHID, APPID, state, "10"));
        let headers = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
        let got = verify(&provider, &headers, &body).map(|n| n.status);
        match wire::trade_status(state) {
            Some(status) => assert_eq!(got, Ok(status), "{state}"),
            None => assert!(
                matches!(got, Err(CallbackRejection::Malformed(_))),
                "{state}"
            ),
        }
    }
}

#[test]
fn notification_amounts_are_integer_fen() {
    let provider = provider();
    let cases = [
        ("10", Some(10)),
        ("1", Some(1)),
        ("1000000000000", Some(1_000_000_000_000)),
        ("1000000000001", None),
        ("0", None),
        ("-1", None),
        ("1.5", None),
        ("10.0", None),
        ("1e2", None),
        ("\"10\"", None),
        ("null", None),
    ];
    for (total, expected) in cases {
        let body = notification_body(&transaction(MCHID, APPID, "SUCCESS", total));
        let headers = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
        let got = verify(&provider, &headers, &body);
        match expected {
            Some(amount) => assert_eq!(got.map(|n| n.amount_minor), Ok(amount), "{total}"),
            None => assert!(
                matches!(got, Err(CallbackRejection::Malformed(_))),
                "{total}: {got:?}"
            ),
        }
    }
}

#[test]
fn replay_window_edges() {
    let provider = provider();
    let body = paid_body();
    // (signed timestamp offset from now, extra milliseconds on our clock, accepted)
    let cases = [
        (0, 0, true),
        (-299, 0, true),
        (-299, 999, true),
        (299, 0, true),
        (-300, 0, false),
        (300, 0, false),
        (-86_400, 0, false),
    ];
    for (offset_s, extra_ms, accepted) in cases {
        let headers = signed_headers(
            &signer(platform()),
            PLATFORM_SERIAL,
            NOW_S + offset_s,
            &body,
        );
        let now = Timestamp::from_unix_s(NOW_S).plus_ms(extra_ms);
        let got = payment(provider.verify_callback(&headers, body.as_bytes(), now));
        if accepted {
            assert!(got.is_ok(), "{offset_s}: {got:?}");
        } else {
            assert!(
                matches!(
                    got,
                    Err(CallbackRejection::StaleTimestamp { limit_s: 300, .. })
                ),
                "{offset_s}: {got:?}"
            );
        }
    }
}

#[test]
fn tampered_notifications_are_refused() {
    let provider = provider();
    let body = paid_body();
    let headers = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
    let tampered = body.replace("EV-2018022511223320873", "EV-2018022511223320874");
    assert!(bad_signature(verify(&provider, &headers, &tampered)));
    let mut later = headers.clone();
    later.insert(
        "wechatpay-timestamp",
        (NOW_S + 1).to_string().parse().expect("value"),
    );
    assert!(bad_signature(verify(&provider, &later, &body)));
    let mut renonced = headers.clone();
    renonced.insert("wechatpay-nonce", "other".parse().expect("value"));
    assert!(bad_signature(verify(&provider, &renonced, &body)));
    let mut probe = headers.clone();
    probe.insert(
        "wechatpay-signature",
        "WECHATPAY/SIGNTEST/abc".parse().expect("value"),
    );
    assert!(bad_signature(verify(&provider, &probe, &body)));
    for name in [
        "wechatpay-timestamp",
        "wechatpay-nonce",
        "wechatpay-serial",
        "wechatpay-signature",
    ] {
        let mut missing = headers.clone();
        missing.remove(name);
        assert!(bad_signature(verify(&provider, &missing, &body)), "{name}");
    }
    let mut other_type = headers.clone();
    other_type.insert(
        "wechatpay-signature-type",
        "WECHATPAY2-SM2-WITH-SM3".parse().expect("value"),
    );
    assert!(bad_signature(verify(&provider, &other_type, &body)));
    let mut same_type = headers;
    same_type.insert(
        "wechatpay-signature-type",
        "WECHATPAY2-SHA256-RSA2048".parse().expect("value"),
    );
    assert!(verify(&provider, &same_type, &body).is_ok());
}

#[test]
fn wrong_key_or_unknown_serial_is_refused() {
    let provider = provider();
    let body = paid_body();
    let wrong_key = signed_headers(&signer(stranger()), PLATFORM_SERIAL, NOW_S, &body);
    assert!(bad_signature(verify(&provider, &wrong_key, &body)));
    let unknown_serial = signed_headers(&signer(platform()), "0123456789ABCDEF", NOW_S, &body);
    assert!(bad_signature(verify(&provider, &unknown_serial, &body)));
    let lower_case = signed_headers(
        &signer(platform()),
        &PLATFORM_SERIAL.to_lowercase(),
        NOW_S,
        &body,
    );
    assert!(bad_signature(verify(&provider, &lower_case, &body)));
}

#[test]
fn several_platform_keys_at_once() {
    let public_key_id = "PUB_KEY_ID_0114232134912410000000000000000";
    let provider = provider_from(config_with(
        vec![
            (PLATFORM_SERIAL.into(), verifier(platform())),
            platform_public_key(public_key_id, &stranger().public).expect("public key"),
        ],
        API_V3_KEY,
    ));
    let body = paid_body();
    let by_certificate = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
    assert!(verify(&provider, &by_certificate, &body).is_ok());
    let by_public_key = signed_headers(&signer(stranger()), public_key_id, NOW_S, &body);
    assert!(verify(&provider, &by_public_key, &body).is_ok());
    let crossed = signed_headers(&signer(stranger()), PLATFORM_SERIAL, NOW_S, &body);
    assert!(bad_signature(verify(&provider, &crossed, &body)));
}

/// Re-encodes the resource ciphertext after `edit`, and signs the new body properly, so only
/// AES-GCM can notice.
fn with_edited_ciphertext(edit: impl Fn(&mut Vec<u8>)) -> String {
    let ciphertext = encrypt(
        API_V3_KEY,
        RESOURCE_NONCE,
        "transaction",
        &transaction(MCHID, APPID, "SUCCESS", "10"),
    );
    let mut bytes = STANDARD.decode(ciphertext).expect("base64");
    edit(&mut bytes);
    envelope(
        "TRANSACTION.SUCCESS",
        "AEAD_AES_256_GCM",
        &STANDARD.encode(bytes),
    )
}

#[test]
fn resources_that_fail_aes_gcm_are_refused() {
    let provider = provider();
    let flip_last = |b: &mut Vec<u8>| {
        if let Some(last) = b.last_mut() {
            *last ^= 1;
        }
    };
    let flip_first = |b: &mut Vec<u8>| {
        if let Some(first) = b.first_mut() {
            *first ^= 1;
        }
    };
    let truncate = |b: &mut Vec<u8>| b.truncate(10);
    let other_key = envelope(
        "TRANSACTION.SUCCESS",
        "AEAD_AES_256_GCM",
        &encrypt(
            b"vutsrqponmlkjihgfedcba9876543210",
            RESOURCE_NONCE,
            "transaction",
            "{}",
        ),
    );
    let other_aad = notification_body(&transaction(MCHID, APPID, "SUCCESS", "10")).replace(
        "\"associated_data\":\"transaction\"",
        "\"associated_data\":\"transactioN\"",
    );
    for body in [
        with_edited_ciphertext(flip_last),
        with_edited_ciphertext(flip_first),
        with_edited_ciphertext(truncate),
        other_key,
        other_aad,
    ] {
        let headers = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
        let got = verify(&provider, &headers, &body);
        assert!(bad_signature(got.clone()), "{got:?}");
    }
}

#[test]
fn malformed_or_foreign_notifications_are_refused() {
    let provider = provider();
    let ciphertext = encrypt(
        API_V3_KEY,
        RESOURCE_NONCE,
        "transaction",
        &transaction(MCHID, APPID, "SUCCESS", "10"),
    );
    let malformed = [
        envelope("REFUND.SUCCESS", "AEAD_AES_256_GCM", &ciphertext),
        envelope("TRANSACTION.SUCCESS", "AEAD_SM4_GCM", &ciphertext),
        envelope("TRANSACTION.SUCCESS", "AEAD_AES_256_GCM", "not base64!"),
        notification_body("not json"),
        notification_body(
            &transaction(MCHID, APPID, "SUCCESS", "10").replace(PAYMENT_ID, "bad-id"),
        ),
        notification_body(
            &transaction(MCHID, APPID, "SUCCESS", "10")
                .replace("\"CNY\",\"payer", "\"USD\",\"payer"),
        ),
        paid_body().replace(RESOURCE_NONCE, "short"),
        paid_body().replace("EV-2018022511223320873", ""),
        "{}".to_owned(),
    ];
    for body in malformed {
        let headers = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
        let got = verify(&provider, &headers, &body);
        assert!(
            matches!(got, Err(CallbackRejection::Malformed(_))),
            "{body}: {got:?}"
        );
    }
    for plaintext in [
        transaction("1900000999", APPID, "SUCCESS", "10"),
        transaction(MCHID, "wxother", "SUCCESS", "10"),
    ] {
        let body = notification_body(&plaintext);
        let headers = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
        let got = verify(&provider, &headers, &body);
        assert!(
            matches!(got, Err(CallbackRejection::WrongMerchant(_))),
            "{got:?}"
        );
    }
}

#[test]
fn a_16_byte_api_v3_key_means_aes_128_gcm() {
    let key = b"testAPIv3Key0000";
    let provider = provider_from(config_with(
        vec![(PLATFORM_SERIAL.into(), verifier(platform()))],
        key,
    ));
    let plaintext = transaction(MCHID, APPID, "SUCCESS", "10");
    let body = envelope(
        "TRANSACTION.SUCCESS",
        "AEAD_AES_256_GCM",
        &encrypt(key, RESOURCE_NONCE, "transaction", &plaintext),
    );
    let headers = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &body);
    assert!(verify(&provider, &headers, &body).is_ok());
    assert!(bad_signature(verify(
        &provider,
        &signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, &paid_body()),
        &paid_body()
    )));
}

#[test]
fn replies_in_wechat_pay_format() {
    let provider = provider();
    assert_eq!(provider.name(), ProviderName::WechatPay);
    let success = provider.reply(CallbackAnswer::Success, "");
    assert_eq!((success.status, success.body.as_str()), (204, ""));
    for (answer, status) in [
        (CallbackAnswer::Rejected, 400),
        (CallbackAnswer::RetryLater, 500),
    ] {
        let reply = provider.reply(answer, "签名错误 \"x\"");
        assert_eq!(reply.status, status);
        assert_eq!(reply.content_type, "application/json");
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
        assert_eq!(body, json!({ "code": "FAIL", "message": "签名错误 \"x\"" }));
    }
}

// ---- configuration ----

#[test]
fn api_v3_key_lengths() {
    for (len, ok) in [
        (0, false),
        (15, false),
        (16, true),
        (24, false),
        (31, false),
        (32, true),
        (33, false),
    ] {
        assert_eq!(ApiV3Key::new(&vec![7_u8; len]).is_ok(), ok, "{len}");
    }
    let clock = Arc::new(ManualClock::at(Timestamp::from_unix_s(NOW_S)));
    assert!(
        WechatPayProvider::new(
            config_with(
                vec![(PLATFORM_SERIAL.into(), verifier(platform()))],
                &[1; 24]
            ),
            clock
        )
        .is_err()
    );
}

#[test]
fn configurations_that_could_only_fail_later_are_refused() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(Timestamp::from_unix_s(NOW_S)));
    let edits: [fn(&mut WechatPayConfig); 8] = [
        |c| c.mchid = String::new(),
        |c| c.mchid = "19000/0109".into(),
        |c| c.appid = "wx\"1".into(),
        |c| c.merchant_serial_no = "A B".into(),
        |c| c.platform_keys.clear(),
        |c| {
            c.platform_keys
                .push((PLATFORM_SERIAL.into(), verifier(stranger())))
        },
        |c| {
            c.platform_keys
                .push(("serial with spaces".into(), verifier(stranger())))
        },
        |c| c.base_url = "api.mch.weixin.qq.com".into(),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut config = config();
        edit(&mut config);
        assert!(
            WechatPayProvider::new(config, clock.clone()).is_err(),
            "edit {i}"
        );
    }
    assert!(WechatPayProvider::new(config(), clock).is_ok());
}

#[test]
fn debug_output_holds_no_secrets() {
    let provider = provider();
    let text = format!("{provider:?}");
    assert!(text.contains(MCHID) && text.contains(PLATFORM_SERIAL));
    assert!(text.contains("<redacted>"));
    assert!(!text.contains("0123456789abcdefghijklmnopqrstuv"));
    let bytes = format!("{:?}", API_V3_KEY.to_vec());
    assert!(!text.contains(&bytes[1..bytes.len() - 1]));
    assert!(!text.contains("PRIVATE"));
}

#[test]
fn public_key_ids_must_look_like_public_key_ids() {
    for id in ["PUB_KEY_ID_0114232134912410000000000000000", "PUB_KEY_ID_1"] {
        assert!(platform_public_key(id, &platform().public).is_ok(), "{id}");
    }
    for id in [
        "",
        "PUB_KEY_ID_",
        "5157F09EFDC096DE",
        "PUB_KEY_ID_1 2",
        "pub_key_id_1",
    ] {
        assert!(platform_public_key(id, &platform().public).is_err(), "{id}");
    }
    assert!(platform_public_key("PUB_KEY_ID_1", &platform().private).is_err());
}

#[test]
fn certificate_serials_drop_the_der_sign_byte() {
    assert_eq!(keys::serial_hex(&[0x00, 0xD7, 0xCE, 0x01]), "D7CE01");
    assert_eq!(keys::serial_hex(&[0x0A, 0xBC]), "0ABC");
    assert_eq!(keys::serial_hex(&[0x00]), "00");
    assert_eq!(keys::serial_hex(&[]), "");
}

// ---- cross-checks with openssl ----

#[test]
fn adapter_request_signatures_verify_with_openssl() {
    let dir = TempDir::new("wechatpay-sign");
    openssl_rsa_key(&dir, "key.pem", "pub.pem");
    let config = WechatPayConfig {
        merchant_key: RsaSigner::from_pem(&dir.read("key.pem")).expect("signer"),
        ..config()
    };
    let request = wire::create_request(&config, &create_input(Timestamp::from_unix_s(NOW_S + 900)))
        .expect("request");
    let header = wire::authorization(&config, &request, NOW_S, "C380BEC2BFD727A4B6845133519F3AD6");
    let (_, fields) = authorization_fields(&header);
    let signature = STANDARD.decode(&fields[4].1).expect("base64");
    dir.write("sig.bin", &signature);
    dir.write(
        "msg.txt",
        wire::request_message(&request, NOW_S, "C380BEC2BFD727A4B6845133519F3AD6").as_bytes(),
    );
    let verify_args = verify_args("pub.pem", "sig.bin", "msg.txt");
    assert!(openssl_ok(&dir, &verify_args));
    dir.write(
        "msg.txt",
        wire::request_message(&request, NOW_S + 1, "C380BEC2BFD727A4B6845133519F3AD6").as_bytes(),
    );
    assert!(!openssl_ok(&dir, &verify_args));
}

#[test]
fn openssl_signed_notifications_verify_with_a_platform_certificate() {
    let dir = TempDir::new("wechatpay-verify");
    openssl_rsa_key(&dir, "key.pem", "pub.pem");
    // The top bit of 0xD7 makes DER add a sign byte, which the serial must not include.
    assert!(openssl_ok(
        &dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-subj",
            "/CN=Tenpay.com Root CA",
            "-days",
            "1",
            "-set_serial",
            "0xD7CE59D1F522D701",
            "-out",
            "cert.pem",
        ]
    ));
    let certificates = platform_certificates(&dir.read("cert.pem")).expect("certificate");
    let ids: Vec<&str> = certificates.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["D7CE59D1F522D701"]);
    let provider = provider_from(config_with(certificates, API_V3_KEY));
    let body = paid_body();
    let timestamp = NOW_S.to_string();
    dir.write(
        "msg.txt",
        format!("{timestamp}\nEcZ9Cmy4Xyx1i6Rl\n{body}\n").as_bytes(),
    );
    assert!(openssl_ok(
        &dir,
        &sign_args("key.pem", "sig.bin", "msg.txt")
    ));
    let mut headers = http::HeaderMap::new();
    headers.insert("wechatpay-timestamp", timestamp.parse().expect("value"));
    headers.insert(
        "wechatpay-nonce",
        "EcZ9Cmy4Xyx1i6Rl".parse().expect("value"),
    );
    headers.insert(
        "wechatpay-serial",
        "D7CE59D1F522D701".parse().expect("value"),
    );
    headers.insert(
        "wechatpay-signature",
        STANDARD
            .encode(dir.read_bytes("sig.bin"))
            .parse()
            .expect("value"),
    );
    assert_eq!(
        verify(&provider, &headers, &body).map(|n| n.amount_minor),
        Ok(10)
    );
    assert!(bad_signature(verify(
        &provider,
        &headers,
        &body.replace("EV-", "EW-")
    )));
}

#[test]
fn certificate_bundles_and_small_serials() {
    let dir = TempDir::new("wechatpay-bundle");
    openssl_rsa_key(&dir, "key.pem", "pub.pem");
    for (serial, out) in [
        ("0x0ABC", "a.pem"),
        ("0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1", "b.pem"),
    ] {
        assert!(openssl_ok(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "key.pem",
                "-subj",
                "/CN=t",
                "-days",
                "1",
                "-set_serial",
                serial,
                "-out",
                out
            ]
        ));
    }
    let bundle = dir.read("a.pem") + &dir.read("b.pem");
    let ids: Vec<String> = platform_certificates(&bundle)
        .expect("bundle")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["0ABC", PLATFORM_SERIAL]);
    assert!(platform_certificates(&dir.read("pub.pem")).is_err());
    assert!(platform_certificates("").is_err());
}

// ---- trade bill ----

const ALL_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY: &str = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n`2,`0.10,`0.04,`0.00,`0.00060,`0.20,`0.04\n";

/// An ALL-bill line; `amount` is the order total in yuan, `refund` the refund asked for.
fn bill_line(state: &str, amount: &str, refund_no: &str, refund: &str) -> String {
    format!(
        "`2019-06-11 00:00:07,`{APPID},`{MCHID},`0,`,`4200000000002104083200000488,`{PAYMENT_ID},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`{state},`OTHERS,`CNY,`{amount},`0.00,`50000000382019052709732678859,`{refund_no},`{refund},`0.00,`ORIGINAL,`SUCCESS,`公仔,大号,`,`0.00060,`0.60%,`{amount},`{refund},`"
    )
}

fn bill(lines: &[String]) -> String {
    format!(
        "\u{feff}{ALL_HEADER}\r\n{}\r\n{SUMMARY}",
        lines.join("\r\n")
    )
}

#[test]
fn trade_bills_are_parsed_by_column_name() {
    let text = bill(&[
        bill_line("SUCCESS", "0.10", "0", "0.00"),
        bill_line("REFUND", "0.10", "R1", "0.04"),
        bill_line("REVOKED", "12", "0", "0.00"),
    ]);
    let lines = parse_statement(&text).expect("bill");
    let expected = |kind, amount_minor, refund| StatementLine {
        traded_at: Timestamp::from_unix_s(1_560_182_407),
        mchid: MCHID.into(),
        provider_trade_no: "4200000000002104083200000488".into(),
        out_trade_no: PAYMENT_ID.into(),
        kind,
        currency: Currency::Cny,
        amount_minor,
        refund,
    };
    assert_eq!(
        lines,
        [
            expected(StatementKind::Paid, 10, None),
            expected(StatementKind::Refund, 10, Some(("R1".to_owned(), 4))),
            expected(StatementKind::Revoked, 1200, None),
        ]
    );
    assert_eq!(
        parse_statement(&format!("{ALL_HEADER}\n{SUMMARY}")),
        Ok(vec![])
    );
}

#[test]
fn success_bills_have_no_refund_columns() {
    let header = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注";
    let line = format!(
        "`2019-06-11 00:00:07,`{APPID},`{MCHID},`0,`,`4200000000002104083200000488,`{PAYMENT_ID},`o1,`NATIVE,`SUCCESS,`OTHERS,`CNY,`0.10,`0.00,`公仔,`,`0.00060,`0.60%,`0.10,`"
    );
    let lines = parse_statement(&format!("{header}\n{line}\n{SUMMARY}")).expect("bill");
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (
            lines[0].kind,
            lines[0].amount_minor,
            lines[0].refund.clone()
        ),
        (StatementKind::Paid, 10, None)
    );
    let refund = line.replace("`SUCCESS,", "`REFUND,");
    assert!(parse_statement(&format!("{header}\n{refund}\n{SUMMARY}")).is_err());
}

#[test]
fn trade_bill_amounts_are_exact_yuan() {
    for (amount, expected) in [
        ("0.10", Some(10)),
        ("0.1", Some(10)),
        ("12", Some(1200)),
        ("0.101", None),
        ("1e2", None),
        ("-0.01", None),
        ("", None),
        ("0,10", None),
    ] {
        let got = parse_statement(&bill(&[bill_line("SUCCESS", amount, "0", "0.00")]));
        match expected {
            Some(minor) => assert_eq!(got.map(|l| l[0].amount_minor), Ok(minor), "{amount}"),
            None => assert_eq!(got.map_err(|e| e.line), Err(2), "{amount}"),
        }
    }
}

#[test]
fn broken_trade_bills_are_refused_with_their_line() {
    let good = bill_line("SUCCESS", "0.10", "0", "0.00");
    let cases = [
        (String::new(), 1),
        ("交易时间,商户号\n".to_owned(), 1),
        (format!("{ALL_HEADER}\n{good}\n"), 2),
        (
            bill(&[good.clone(), good.replace("`SUCCESS", "`CLOSED")]),
            3,
        ),
        (
            bill(&[good.replace("`2019-06-11 00:00:07", "`2019/06/11 00:00:07")]),
            2,
        ),
        (bill(&[good.replace("`CNY", "`USD")]), 2),
        (bill(&[good.replace(",`0.60%", ",`0.60%,`extra")]), 2),
        (bill(&[good.trim_start_matches('`').to_owned()]), 2),
    ];
    for (text, line) in cases {
        assert_eq!(
            parse_statement(&text).map_err(|e| e.line),
            Err(line),
            "{text}"
        );
    }
}

// ---- refunds through the port ----

#[test]
fn refund_query_requests_are_signed_over_the_url() {
    let request = wire::refund_query_request("R1").expect("request");
    assert_eq!(request.method, http::Method::GET);
    assert_eq!(request.url, "/v3/refund/domestic/refunds/R1");
    assert_eq!(request.body, "");
    assert_eq!(
        wire::request_message(&request, NOW_S, "NONCE1"),
        format!("GET\n/v3/refund/domestic/refunds/R1\n{NOW_S}\nNONCE1\n\n")
    );
    let header = wire::authorization(&config(), &request, NOW_S, "NONCE1");
    let (_, fields) = authorization_fields(&header);
    let message = wire::request_message(&request, NOW_S, "NONCE1");
    assert!(verifier(merchant()).verify_base64(message.as_bytes(), &fields[4].1));
    // `|` cannot ride in a URL path as is: escaped before signing, so signed = sent.
    let escaped = wire::refund_query_request("R_1-2|*@").expect("request");
    assert_eq!(escaped.url, "/v3/refund/domestic/refunds/R_1-2%7C*@");
    for bad in ["", "a b", "a/b", "a?b", &"R".repeat(65)] {
        assert_eq!(
            outcome(wire::refund_query_request(bad)),
            Err(Some("INVALID_REFUND_ID".to_owned())),
            "{bad:?}"
        );
    }
}

fn refund_body(out_refund_no: &str, status: &str) -> String {
    json!({
        "refund_id": "50000000382019052709732678859",
        "out_refund_no": out_refund_no,
        "transaction_id": "1217752501201407033233368018",
        "out_trade_no": PAYMENT_ID,
        "status": status,
        "amount": { "total": 100, "refund": 40, "currency": "CNY" },
    })
    .to_string()
}

#[test]
fn refund_query_answers() {
    for (status, expected) in [
        ("SUCCESS", RefundStatus::Success),
        ("PROCESSING", RefundStatus::Processing),
        ("CLOSED", RefundStatus::Closed),
        ("ABNORMAL", RefundStatus::Abnormal),
    ] {
        let got = wire::interpret_refund_query("R1", &answer(200, &refund_body("R1", status)));
        assert_eq!(
            got.ok().flatten().map(|r| r.status),
            Some(expected),
            "{status}"
        );
    }
    let not_exists = error("RESOURCE_NOT_EXISTS");
    assert_eq!(
        wire::interpret_refund_query("R1", &answer(404, &not_exists)),
        Ok(None)
    );
    let unsigned = Answer {
        authentic: false,
        ..answer(404, &not_exists)
    };
    let cases = [
        ("unsigned not-exists", unsigned, Err(None)),
        (
            "other refund",
            answer(200, &refund_body("R2", "SUCCESS")),
            Err(None),
        ),
        (
            "unknown status",
            answer(200, &refund_body("R1", "DONE")),
            Err(None),
        ),
        ("not json", answer(200, "<html>"), Err(None)),
        (
            "system error",
            answer(400, &error("SYSTEM_ERROR")),
            Err(None),
        ),
        (
            "param error",
            answer(400, &error("PARAM_ERROR")),
            Err(Some("PARAM_ERROR".to_owned())),
        ),
        (
            "other 404",
            answer(404, &error("ORDER_NOT_EXIST")),
            Err(Some("ORDER_NOT_EXIST".to_owned())),
        ),
    ];
    for (name, answer, expected) in cases {
        assert_eq!(
            outcome(wire::interpret_refund_query("R1", &answer)),
            expected,
            "{name}"
        );
    }
}

#[test]
fn refund_statuses_map_to_the_port() {
    assert_eq!(
        refund_state("R1", RefundStatus::Success),
        RefundState::Succeeded
    );
    // ABNORMAL can still be completed at the merchant platform: not final.
    for status in [RefundStatus::Processing, RefundStatus::Abnormal] {
        assert_eq!(
            refund_state("R1", status),
            RefundState::Processing,
            "{status:?}"
        );
    }
    match refund_state("R1", RefundStatus::Closed) {
        RefundState::Failed(why) => assert!(why.contains("R1"), "{why}"),
        other => panic!("CLOSED: {other:?}"),
    }
}

#[test]
fn refund_refusals_stay_rejections() {
    for code in ["INVALID_REQUEST", "NOT_ENOUGH", "PARAM_ERROR"] {
        assert_eq!(
            outcome(wire::interpret_refund("R1", &answer(400, &error(code)))),
            Err(Some(code.to_owned()))
        );
    }
    assert_eq!(
        outcome(wire::interpret_refund(
            "R1",
            &answer(404, &error("RESOURCE_NOT_EXISTS"))
        )),
        Err(Some("RESOURCE_NOT_EXISTS".to_owned()))
    );
}

// ---- refund notifications ----

const REFUND_NO: &str = "R0123456789abcdef0123456789abcde";

fn refund_resource(mchid: &str, refund_status: &str, refund: i64) -> String {
    json!({
        "mchid": mchid,
        "out_trade_no": PAYMENT_ID,
        "transaction_id": "4200000000002104083200000488",
        "out_refund_no": REFUND_NO,
        "refund_id": "50300000000000000000000000001",
        "refund_status": refund_status,
        "success_time": "2023-11-15T06:20:00+08:00",
        "user_received_account": "支付用户零钱",
        "amount": { "total": 100, "refund": refund, "payer_total": 100, "payer_refund": refund },
    })
    .to_string()
}

/// A refund notification as WeChat Pay sends it: the refund sealed with associated data
/// `refund` under `key`.
fn refund_envelope_with(key: &[u8], event_type: &str, plaintext: &str) -> String {
    json!({
        "id": "EV-REFUND-0001",
        "create_time": "2023-11-15T06:20:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "退款成功",
        "resource": {
            "original_type": "refund",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": encrypt(key, RESOURCE_NONCE, "refund", plaintext),
            "associated_data": "refund",
            "nonce": RESOURCE_NONCE,
        }
    })
    .to_string()
}

fn refund_envelope(event_type: &str, plaintext: &str) -> String {
    refund_envelope_with(API_V3_KEY, event_type, plaintext)
}

fn verify_refund(
    provider: &WechatPayProvider,
    headers: &http::HeaderMap,
    body: &str,
) -> Result<RefundNotice, CallbackRejection> {
    refund(provider.verify_callback(headers, body.as_bytes(), Timestamp::from_unix_s(NOW_S)))
}

fn platform_signed(body: &str) -> http::HeaderMap {
    signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S, body)
}

#[test]
fn refund_notifications_are_verified_decrypted_and_map_each_status() {
    let provider = provider();
    let notice = |state| RefundNotice {
        notify_id: "EV-REFUND-0001".into(),
        payment_id: payment_id(),
        refund_no: REFUND_NO.into(),
        state,
        amount_minor: 40,
    };
    for (status, state) in [
        ("SUCCESS", RefundState::Succeeded),
        (
            "CLOSED",
            RefundState::Failed(format!("WeChat Pay closed refund {REFUND_NO}")),
        ),
        ("ABNORMAL", RefundState::Processing),
    ] {
        let body = refund_envelope(
            &format!("REFUND.{status}"),
            &refund_resource(MCHID, status, 40),
        );
        assert_eq!(
            verify_refund(&provider, &platform_signed(&body), &body),
            Ok(notice(state)),
            "{status}"
        );
    }
}

#[test]
fn refund_notifications_that_fail_verification_are_refused_not_passed_on() {
    let provider = provider();
    let plaintext = refund_resource(MCHID, "SUCCESS", 40);
    let body = refund_envelope("REFUND.SUCCESS", &plaintext);
    let refused =
        |headers: &http::HeaderMap, body: &str| match verify_refund(&provider, headers, body) {
            Err(rejection) => rejection,
            other => panic!("{body}: {other:?}"),
        };
    let bad_signature = |r: CallbackRejection| matches!(r, CallbackRejection::BadSignature(_));
    let stranger_signed = signed_headers(&signer(stranger()), PLATFORM_SERIAL, NOW_S, &body);
    assert!(bad_signature(refused(&stranger_signed, &body)));
    let unknown_serial = signed_headers(&signer(platform()), "0123ABCD", NOW_S, &body);
    assert!(bad_signature(refused(&unknown_serial, &body)));
    assert!(bad_signature(refused(&http::HeaderMap::new(), &body)));
    let edited = body.replace("EV-REFUND-0001", "EV-REFUND-0002");
    assert!(bad_signature(refused(&platform_signed(&body), &edited)));
    // Sealed under another APIv3 key, or with its tag or ciphertext altered: not authentic.
    let foreign = refund_envelope_with(
        b"abcdefghijklmnopqrstuv0123456789",
        "REFUND.SUCCESS",
        &plaintext,
    );
    assert!(bad_signature(refused(&platform_signed(&foreign), &foreign)));
    let envelope: serde_json::Value = serde_json::from_str(&body).expect("json");
    let ciphertext = envelope["resource"]["ciphertext"]
        .as_str()
        .expect("ciphertext");
    let mut sealed = STANDARD.decode(ciphertext).expect("base64");
    for position in [0, sealed.len() - 1] {
        sealed[position] ^= 1;
        let tampered = body.replace(ciphertext, &STANDARD.encode(&sealed));
        sealed[position] ^= 1;
        assert!(
            bad_signature(refused(&platform_signed(&tampered), &tampered)),
            "byte {position}"
        );
    }
    for skew_s in [300, -300, 3600] {
        let stale = signed_headers(&signer(platform()), PLATFORM_SERIAL, NOW_S + skew_s, &body);
        assert!(
            matches!(
                refused(&stale, &body),
                CallbackRejection::StaleTimestamp { .. }
            ),
            "{skew_s}"
        );
    }
    let foreign_merchant = refund_envelope(
        "REFUND.SUCCESS",
        &refund_resource("1900000999", "SUCCESS", 40),
    );
    assert!(matches!(
        refused(&platform_signed(&foreign_merchant), &foreign_merchant),
        CallbackRejection::WrongMerchant(_)
    ));
    for malformed in [
        refund_envelope("REFUND.SUCCESS", &refund_resource(MCHID, "CLOSED", 40)),
        refund_envelope("REFUND.CLOSED", &plaintext),
        refund_envelope(
            "REFUND.PROCESSING",
            &refund_resource(MCHID, "PROCESSING", 40),
        ),
        refund_envelope("REFUND.SUCCESS", &refund_resource(MCHID, "SUCCESS", 0)),
        refund_envelope("REFUND.SUCCESS", &plaintext.replace(PAYMENT_ID, "bad-id")),
        refund_envelope("REFUND.SUCCESS", &plaintext.replace(REFUND_NO, "R 1")),
        refund_envelope("REFUND.SUCCESS", "not json"),
        body.replace("AEAD_AES_256_GCM", "AEAD_SM4_GCM"),
        body.replace("EV-REFUND-0001", ""),
    ] {
        assert!(
            matches!(
                refused(&platform_signed(&malformed), &malformed),
                CallbackRejection::Malformed(_)
            ),
            "{malformed}"
        );
    }
}

#[test]
fn each_notification_comes_back_as_what_its_verified_event_type_says() {
    let provider = provider();
    let now = Timestamp::from_unix_s(NOW_S);
    let paid = paid_body();
    let got = provider.verify_callback(&platform_signed(&paid), paid.as_bytes(), now);
    assert!(
        matches!(&got, Ok(Verified::Payment(n)) if n.status == NotifiedStatus::Paid),
        "{got:?}"
    );
    let refunded = refund_envelope("REFUND.SUCCESS", &refund_resource(MCHID, "SUCCESS", 40));
    let got = provider.verify_callback(&platform_signed(&refunded), refunded.as_bytes(), now);
    assert!(
        matches!(&got, Ok(Verified::Refund(r)) if r.state == RefundState::Succeeded),
        "{got:?}"
    );
    // Signed bodies that are neither are refused, never taken for either kind.
    for body in [
        envelope("TRANSACTION.CLOSED", "AEAD_AES_256_GCM", "x"),
        r#"{"event_type":"REFUNDX.SUCCESS"}"#.to_owned(),
        r#"{"event_type":7}"#.to_owned(),
        "not json".to_owned(),
        String::new(),
    ] {
        let got = provider.verify_callback(&platform_signed(&body), body.as_bytes(), now);
        assert!(
            matches!(got, Err(CallbackRejection::Malformed(_))),
            "{body}: {got:?}"
        );
    }
}

#[test]
fn a_refund_notification_with_a_bad_signature_is_a_signature_failure() {
    let provider = provider();
    let body = refund_envelope("REFUND.SUCCESS", &refund_resource(MCHID, "SUCCESS", 40));
    let now = Timestamp::from_unix_s(NOW_S);
    let forged = signed_headers(&signer(stranger()), PLATFORM_SERIAL, NOW_S, &body);
    assert!(matches!(
        provider.verify_callback(&forged, body.as_bytes(), now),
        Err(CallbackRejection::BadSignature(_))
    ));
    // Even one whose resource is unreadable: the signature is checked before anything is read.
    let unreadable = refund_envelope("REFUND.SUCCESS", "not json").replace("\"refund\"", "7");
    let forged = signed_headers(&signer(stranger()), PLATFORM_SERIAL, NOW_S, &unreadable);
    assert!(matches!(
        provider.verify_callback(&forged, unreadable.as_bytes(), now),
        Err(CallbackRejection::BadSignature(_))
    ));
}
