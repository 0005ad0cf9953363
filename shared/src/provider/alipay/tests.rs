//! The adapter's pure parts: canonical strings, signing, answer verification and parsing,
//! notifications, and cross-checks against the `openssl` command line.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;

use super::answer::{self, AnswerStatus};
use super::wire::{self, GatewayCall};
use super::*;
use crate::clock::ManualClock;
use crate::domain::{AmountMinor, Money, OrderId};
use crate::ports::NotifiedStatus;
use crate::provider::test_callback::payment;
use crate::provider::test_openssl::{TempDir, openssl_ok, openssl_rsa_key, sign_args, verify_args};

const APP_ID: &str = "2021000000000001";
const SELLER_ID: &str = "2088000000000001";
const PAYMENT_ID: &str = "01J0000000000000000000PAY1";
/// 2019-08-15 07:56:22 UTC, 15:56:22 in China.
const T0: Timestamp = Timestamp::from_unix_s(1_565_855_782);

struct Pems {
    private: String,
    public: String,
}

fn generate() -> Pems {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
    let private: Pkcs8V1Der<'_> = key.as_der().expect("pkcs8");
    let public: PublicKeyX509Der<'_> = key.public_key().as_der().expect("spki");
    Pems {
        private: pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref().to_vec())),
        public: pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref().to_vec())),
    }
}

/// Our app's key pair.
fn app_keys() -> &'static Pems {
    static KEYS: OnceLock<Pems> = OnceLock::new();
    KEYS.get_or_init(generate)
}

/// Stands in for Alipay's key pair: it signs answers and notifications.
fn alipay_keys() -> &'static Pems {
    static KEYS: OnceLock<Pems> = OnceLock::new();
    KEYS.get_or_init(generate)
}

/// Somebody else's key pair.
fn stranger_keys() -> &'static Pems {
    static KEYS: OnceLock<Pems> = OnceLock::new();
    KEYS.get_or_init(generate)
}

fn signer(pems: &Pems) -> RsaSigner {
    RsaSigner::from_pem(&pems.private).expect("signer")
}

fn verifier(pems: &Pems) -> RsaVerifier {
    RsaVerifier::from_pem(&pems.public).expect("verifier")
}

fn config(alipay_public: &str, seller_id: Option<&str>) -> AlipayConfig {
    AlipayConfig {
        gateway_url: DEFAULT_GATEWAY_URL.to_owned(),
        app_id: APP_ID.to_owned(),
        seller_id: seller_id.map(str::to_owned),
        app_private_key: signer(app_keys()),
        alipay_public_key: RsaVerifier::from_pem(alipay_public).expect("alipay key"),
        notify_url: "https://pay.example.com/callbacks/alipay".to_owned(),
        timeout: Duration::from_secs(5),
    }
}

fn provider_with(alipay_public: &str, seller_id: Option<&str>) -> AlipayProvider {
    let clock = Arc::new(ManualClock::at(T0));
    AlipayProvider::new(config(alipay_public, seller_id), clock).expect("provider")
}

fn provider() -> AlipayProvider {
    provider_with(&alipay_keys().public, None)
}

fn payment_id() -> PaymentId {
    PaymentId::parse(PAYMENT_ID).expect("payment id")
}

fn form_map(form: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect()
}

// ---- requests ----

#[test]
fn request_sign_content_is_sorted_raw_and_keeps_sign_type() {
    fn check(params: &[(&str, &str)], expected: &str) {
        let got = wire::request_sign_content(params.iter().copied());
        assert_eq!(got, expected, "params {params:?}");
    }
    check(
        &[
            ("b", "2"),
            ("a", "1"),
            ("sign", "xyz"),
            ("sign_type", "RSA2"),
        ],
        "a=1&b=2&sign_type=RSA2",
    );
    // Empty values are left out; values are not url-encoded.
    check(
        &[("notify_url", ""), ("biz_content", r#"{"s":"a b&c=d/语"}"#)],
        r#"biz_content={"s":"a b&c=d/语"}"#,
    );
    // ASCII order: upper case before lower case, `_` (0x5F) between them.
    check(
        &[("b", "1"), ("B", "2"), ("a_b", "3"), ("aB", "4")],
        "B=2&aB=4&a_b=3&b=1",
    );
    check(&[], "");
}

#[test]
fn notify_sign_content_has_two_rules() {
    let params: BTreeMap<String, String> = [
        ("sign", "S"),
        ("sign_type", "RSA2"),
        ("total_amount", "0.10"),
        ("app_id", "1"),
        ("body", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        wire::notify_sign_content(&params, false),
        "app_id=1&body=&total_amount=0.10"
    );
    assert_eq!(
        wire::notify_sign_content(&params, true),
        "app_id=1&body=&sign_type=RSA2&total_amount=0.10"
    );
}

#[test]
fn china_time_is_utc_plus_8() {
    fn check(at: Timestamp, expected: &str) {
        assert_eq!(wire::china_time(at).as_deref(), Some(expected), "at {at}");
    }
    check(Timestamp::from_unix_s(0), "1970-01-01 08:00:00");
    check(T0, "2019-08-15 15:56:22");
    check(
        Timestamp::from_unix_ms(1_565_855_782_999),
        "2019-08-15 15:56:22",
    );
    check(Timestamp::from_unix_s(1_624_550_399), "2021-06-24 23:59:59");
    check(Timestamp::from_unix_s(1_624_552_200), "2021-06-25 00:30:00");
    assert_eq!(wire::china_time(Timestamp::from_unix_ms(i64::MAX)), None);
}

#[test]
fn post_url_carries_the_charset() {
    fn check(gateway: &str, expected: &str) {
        assert_eq!(wire::post_url(gateway), expected);
    }
    check(
        DEFAULT_GATEWAY_URL,
        "https://openapi.alipay.com/gateway.do?charset=utf-8",
    );
    check(
        "http://127.0.0.1:9/gw?x=1",
        "http://127.0.0.1:9/gw?x=1&charset=utf-8",
    );
    check("http://h/gw?charset=utf-8", "http://h/gw?charset=utf-8");
}

fn gateway_call<'a>(biz_content: &'a str, notify_url: Option<&'a str>) -> GatewayCall<'a> {
    GatewayCall {
        app_id: APP_ID,
        method: "alipay.trade.precreate",
        biz_content,
        notify_url,
        timestamp: "2019-08-15 15:56:22",
    }
}

#[test]
fn signed_form_has_the_common_params_and_verifies() {
    let biz = r#"{"out_trade_no":"A1","subject":"语雀 a+b&c=d"}"#;
    let form = gateway_call(biz, Some("https://n.example/cb?a=1")).signed_form(&signer(app_keys()));
    let params = form_map(&form);
    let expected = [
        ("app_id", APP_ID),
        ("method", "alipay.trade.precreate"),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("timestamp", "2019-08-15 15:56:22"),
        ("version", "1.0"),
        ("notify_url", "https://n.example/cb?a=1"),
        ("biz_content", biz),
    ];
    for (key, value) in expected {
        assert_eq!(params.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(params.len(), expected.len() + 1);
    let sign = params.get("sign").expect("sign").clone();
    let signed = |params: &BTreeMap<String, String>| {
        wire::request_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    };
    assert!(verifier(app_keys()).verify_base64(signed(&params).as_bytes(), &sign));
    assert!(!verifier(stranger_keys()).verify_base64(signed(&params).as_bytes(), &sign));
    let mut tampered = params.clone();
    tampered.insert("biz_content".into(), biz.replace("A1", "A2"));
    assert!(!verifier(app_keys()).verify_base64(signed(&tampered).as_bytes(), &sign));
}

#[test]
fn signed_form_leaves_out_a_missing_notify_url() {
    for notify_url in [None, Some("")] {
        let form = gateway_call("{}", notify_url).signed_form(&signer(app_keys()));
        assert!(
            !form_map(&form).contains_key("notify_url"),
            "{notify_url:?}"
        );
    }
}

fn create_request(amount_minor: i64) -> ProviderCreate {
    ProviderCreate {
        payment_id: payment_id(),
        order_id: OrderId::parse("order-1").expect("order id"),
        money: Money {
            amount: AmountMinor::new(amount_minor).expect("amount"),
            currency: Currency::Cny,
        },
        subject: "语雀空间 500人规模".to_owned(),
        expires_at: T0.plus_s(900),
    }
}

#[test]
fn precreate_biz_content_is_yuan_and_china_time() {
    fn check(amount_minor: i64, total_amount: &str) {
        let biz = precreate_biz(&create_request(amount_minor)).expect("biz");
        let biz: serde_json::Value = serde_json::from_str(&biz).expect("json");
        assert_eq!(
            biz,
            serde_json::json!({
                "out_trade_no": PAYMENT_ID,
                "total_amount": total_amount,
                "subject": "语雀空间 500人规模",
                "time_expire": "2019-08-15 16:11:22",
            })
        );
    }
    check(10, "0.10");
    check(1, "0.01");
    check(123_456, "1234.56");
}

#[test]
fn refund_biz_content_and_local_checks() {
    fn check(refund_id: &str, amount: i64, total: i64, expected: Result<&str, &str>) {
        let got = refund_biz(&payment_id(), refund_id, amount, total, "");
        match (got, expected) {
            (Ok(biz), Ok(refund_amount)) => {
                let biz: serde_json::Value = serde_json::from_str(&biz).expect("json");
                assert_eq!(biz["refund_amount"], refund_amount);
                assert_eq!(biz["out_request_no"], refund_id);
                assert_eq!(biz["out_trade_no"], PAYMENT_ID);
                assert!(biz.get("refund_reason").is_none());
            }
            (Err(ProviderError::Rejected { code, .. }), Err(expected)) => {
                assert_eq!(code, expected, "{refund_id} {amount}/{total}");
            }
            (got, expected) => panic!("{refund_id} {amount}/{total}: {got:?} vs {expected:?}"),
        }
    }
    check("R1", 10, 10, Ok("0.10"));
    check("refund_2-b", 1, 100, Ok("0.01"));
    check("R1", 0, 10, Err("INVALID_REFUND_AMOUNT"));
    check("R1", -1, 10, Err("INVALID_REFUND_AMOUNT"));
    check("R1", 11, 10, Err("INVALID_REFUND_AMOUNT"));
    check("", 1, 10, Err("INVALID_REFUND_ID"));
    check("R 1", 1, 10, Err("INVALID_REFUND_ID"));
    check(&"R".repeat(65), 1, 10, Err("INVALID_REFUND_ID"));
    let with_reason = refund_biz(&payment_id(), "R1", 5, 10, "退款 reason").expect("biz");
    let with_reason: serde_json::Value = serde_json::from_str(&with_reason).expect("json");
    assert_eq!(with_reason["refund_reason"], "退款 reason");
}

// ---- answers ----

#[test]
fn raw_member_cuts_the_value_exactly() {
    fn check(body: &str, key: &str, expected: Option<&str>) {
        let got = answer::raw_member(body.as_bytes(), key).map(|b| String::from_utf8_lossy(b));
        assert_eq!(got.as_deref(), expected, "{key} in {body}");
    }
    let key = "a_response";
    check(
        r#"{"a_response":{"x":1},"sign":"s"}"#,
        key,
        Some(r#"{"x":1}"#),
    );
    check(
        r#"{"sign":"s","a_response":{"x":1}}"#,
        key,
        Some(r#"{"x":1}"#),
    );
    check(
        " {\n \"a_response\" :\t{ \"x\" : [1, {\"y\":\"}]\\\"{\"}] } ,\"sign\":\"s\"}",
        key,
        Some("{ \"x\" : [1, {\"y\":\"}]\\\"{\"}] }"),
    );
    check(
        r#"{"a_response":"str\"ing","b":1}"#,
        key,
        Some(r#""str\"ing""#),
    );
    check(r#"{"a_response":-1.5e3}"#, key, Some("-1.5e3"));
    check(r#"{"a_response":null ,"b":true}"#, key, Some("null"));
    check(r#"{"b":{"a_response":1}}"#, key, None);
    check(r#"{"a_response":1,"a_response":2}"#, key, None);
    check(r#"{}"#, key, None);
    check(r#"[{"a_response":1}]"#, key, None);
    check(r#""a_response""#, key, None);
}

fn signed_answer(method_key: &str, content: &str, pems: &Pems) -> String {
    let sign = signer(pems).sign_base64(content.as_bytes());
    format!(r#"{{"{method_key}":{content},"sign":"{sign}"}}"#)
}

#[test]
fn answers_verify_over_the_raw_text() {
    // Spacing, escaped unicode and an escaped slash: re-serialising would change all three.
    let content = r#"{ "code":"10000", "msg":"Success","subject":"\u8bed\u96c0 a\/b" }"#;
    let reserialised = serde_json::from_str::<serde_json::Value>(content)
        .expect("json")
        .to_string();
    assert_ne!(reserialised, content);
    let body = signed_answer("alipay_trade_query_response", content, alipay_keys());
    let got = answer::verified_content(body.as_bytes(), QUERY, &verifier(alipay_keys()));
    assert_eq!(got.ok(), Some(content.as_bytes()));
    let wrong_key = answer::verified_content(body.as_bytes(), QUERY, &verifier(stranger_keys()));
    assert!(matches!(wrong_key, Err(ProviderError::Unknown(_))));
}

#[test]
fn unverifiable_answers_are_unknown() {
    let key = verifier(alipay_keys());
    let content = r#"{"code":"10000","msg":"Success","total_amount":"0.10"}"#;
    let good = signed_answer("alipay_trade_query_response", content, alipay_keys());
    let bodies = [
        ("tampered", good.replace("0.10", "1.10")),
        (
            "unsigned",
            format!(r#"{{"alipay_trade_query_response":{content}}}"#),
        ),
        (
            "bad base64",
            format!(r#"{{"alipay_trade_query_response":{content},"sign":"no!"}}"#),
        ),
        (
            "sign not a string",
            format!(r#"{{"alipay_trade_query_response":{content},"sign":1}}"#),
        ),
        ("other method", good.replace("trade_query", "trade_close")),
        ("not json", good.replace('}', "")),
        ("html", "<html>502</html>".to_owned()),
        (
            "repeated",
            good.replacen(
                '{',
                &format!(r#"{{"alipay_trade_query_response":{content},"#),
                1,
            ),
        ),
    ];
    for (name, body) in bodies {
        let got = answer::verified_content(body.as_bytes(), QUERY, &key);
        assert!(
            matches!(got, Err(ProviderError::Unknown(_))),
            "{name}: {got:?}"
        );
    }
    let error = r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}"#;
    let body = signed_answer("error_response", error, alipay_keys());
    let got = answer::verified_content(body.as_bytes(), QUERY, &key);
    assert_eq!(got.ok(), Some(error.as_bytes()));
}

#[derive(Debug, PartialEq)]
enum Expect {
    Ok,
    Rejected(String),
    Unknown,
}

fn rejected(code: &str) -> Expect {
    Expect::Rejected(code.to_owned())
}

fn expect_of<T>(result: &Result<T, ProviderError>) -> Expect {
    match result {
        Ok(_) => Expect::Ok,
        Err(ProviderError::Rejected { code, .. }) => rejected(code),
        Err(ProviderError::Unknown(_)) => Expect::Unknown,
    }
}

fn status_json(code: &str, sub_code: &str) -> String {
    format!(r#"{{"code":"{code}","msg":"m","sub_code":"{sub_code}","sub_msg":"sm"}}"#)
}

#[test]
fn answer_codes_map_to_outcomes() {
    fn check(code: &str, sub_code: &str, expected: Expect) {
        let status = AnswerStatus::parse(status_json(code, sub_code).as_bytes()).expect("status");
        assert_eq!(expect_of(&status.outcome()), expected, "{code} {sub_code}");
    }
    check("10000", "", Expect::Ok);
    check("20000", "isp.unknow-error", Expect::Unknown);
    check("40004", "ACQ.SYSTEM_ERROR", Expect::Unknown);
    check("40004", "aop.ACQ.SYSTEM_ERROR", Expect::Unknown);
    check(
        "40004",
        "ACQ.TRADE_NOT_EXIST",
        rejected("ACQ.TRADE_NOT_EXIST"),
    );
    check(
        "40004",
        "ACQ.INVALID_PARAMETER",
        rejected("ACQ.INVALID_PARAMETER"),
    );
    check(
        "40002",
        "isv.invalid-signature",
        rejected("isv.invalid-signature"),
    );
    check("40001", "", rejected("40001"));
    check(
        "20001",
        "aop.invalid-auth-token",
        rejected("aop.invalid-auth-token"),
    );
    check(
        "40006",
        "isv.insufficient-isv-permissions",
        rejected("isv.insufficient-isv-permissions"),
    );
    check("50000", "", Expect::Unknown);
    assert!(AnswerStatus::parse(br#"{"code":10000}"#).is_err());
}

fn query_content(out_trade_no: &str, status: &str, amount: &str) -> String {
    format!(
        r#"{{"code":"10000","msg":"Success","out_trade_no":"{out_trade_no}","trade_no":"2019081522001468450512505578","trade_status":"{status}","total_amount":"{amount}","buyer_logon_id":"xud***@126.com"}}"#
    )
}

#[test]
fn query_answers_map_every_status() {
    fn check(status: &str, expected: Option<NotifiedStatus>) {
        let content = query_content(PAYMENT_ID, status, "0.10");
        let got = answer::parse_query(content.as_bytes(), &payment_id());
        match expected {
            Some(expected) => {
                let trade = got.expect("answer").expect("trade");
                assert_eq!(trade.status, expected, "{status}");
                assert_eq!(trade.amount_minor, 10);
                assert_eq!(trade.currency, Currency::Cny);
                assert_eq!(
                    trade.provider_trade_no.as_deref(),
                    Some("2019081522001468450512505578")
                );
            }
            None => assert!(matches!(got, Err(ProviderError::Unknown(_))), "{status}"),
        }
    }
    check("TRADE_SUCCESS", Some(NotifiedStatus::Paid));
    check("TRADE_FINISHED", Some(NotifiedStatus::Paid));
    check("TRADE_CLOSED", Some(NotifiedStatus::Closed));
    check("WAIT_BUYER_PAY", Some(NotifiedStatus::Pending));
    check("TRADE_PENDING", None);
    check("", None);
}

#[test]
fn query_answers_other_cases() {
    let id = payment_id();
    let not_exist = status_json("40004", "ACQ.TRADE_NOT_EXIST");
    assert_eq!(answer::parse_query(not_exist.as_bytes(), &id), Ok(None));
    let cases = [
        (
            "other trade",
            query_content("OTHER1", "TRADE_SUCCESS", "0.10"),
            Expect::Unknown,
        ),
        (
            "inexact amount",
            query_content(PAYMENT_ID, "TRADE_SUCCESS", "0.101"),
            Expect::Unknown,
        ),
        (
            "system error",
            status_json("40004", "ACQ.SYSTEM_ERROR"),
            Expect::Unknown,
        ),
        (
            "unavailable",
            status_json("20000", "isp.unknow-error"),
            Expect::Unknown,
        ),
        (
            "bad params",
            status_json("40004", "ACQ.INVALID_PARAMETER"),
            rejected("ACQ.INVALID_PARAMETER"),
        ),
    ];
    for (name, content, expected) in cases {
        let got = answer::parse_query(content.as_bytes(), &id);
        assert_eq!(expect_of(&got), expected, "{name}");
    }
}

#[test]
fn precreate_answers() {
    let id = payment_id();
    let ok = format!(
        r#"{{"code":"10000","msg":"Success","out_trade_no":"{PAYMENT_ID}","qr_code":"https://qr.alipay.com/bax01"}}"#
    );
    let created = answer::parse_precreate(ok.as_bytes(), &id).expect("created");
    assert_eq!(created.pay_url, "https://qr.alipay.com/bax01");
    assert_eq!(created.provider_trade_no, None);
    let cases = [
        (
            "paid already",
            status_json("40004", "ACQ.TRADE_HAS_SUCCESS"),
            Expect::Unknown,
        ),
        (
            "closed",
            status_json("40004", "ACQ.TRADE_HAS_CLOSE"),
            rejected("ACQ.TRADE_HAS_CLOSE"),
        ),
        (
            "system error",
            status_json("40004", "ACQ.SYSTEM_ERROR"),
            Expect::Unknown,
        ),
        (
            "other trade",
            ok.replace(PAYMENT_ID, "OTHER1"),
            Expect::Unknown,
        ),
        (
            "no qr code",
            ok.replace("https://qr.alipay.com/bax01", ""),
            Expect::Unknown,
        ),
    ];
    for (name, content, expected) in cases {
        let got = answer::parse_precreate(content.as_bytes(), &id);
        assert_eq!(expect_of(&got), expected, "{name}");
    }
}

#[test]
fn close_and_refund_answers() {
    let id = payment_id();
    assert_eq!(
        answer::parse_close(br#"{"code":"10000","msg":"Success"}"#),
        Ok(())
    );
    let not_exist = status_json("40004", "ACQ.TRADE_NOT_EXIST");
    assert_eq!(
        expect_of(&answer::parse_close(not_exist.as_bytes())),
        rejected("ACQ.TRADE_NOT_EXIST")
    );
    let refund = |fund_change: &str, refund_fee: &str| {
        format!(
            r#"{{"code":"10000","msg":"Success","out_trade_no":"{PAYMENT_ID}","trade_no":"T1","fund_change":"{fund_change}","refund_fee":"{refund_fee}"}}"#
        )
    };
    let moved = answer::parse_refund(refund("Y", "0.30").as_bytes(), &id).expect("refund");
    assert_eq!(
        moved,
        AlipayRefund {
            provider_trade_no: Some("T1".into()),
            fund_change: true,
            refunded_total_minor: Some(30),
        }
    );
    let repeat = answer::parse_refund(refund("N", "").as_bytes(), &id).expect("refund");
    assert!(!repeat.fund_change);
    assert_eq!(repeat.refunded_total_minor, None);
    let cases = [
        ("bad refund_fee", refund("Y", "1e2"), Expect::Unknown),
        (
            "system error",
            status_json("40004", "ACQ.SYSTEM_ERROR"),
            Expect::Unknown,
        ),
        (
            "amount differs",
            status_json("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"),
            rejected("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"),
        ),
    ];
    for (name, content, expected) in cases {
        let got = answer::parse_refund(content.as_bytes(), &id);
        assert_eq!(expect_of(&got), expected, "{name}");
    }
}

// ---- notifications ----

fn trade_params() -> BTreeMap<String, String> {
    [
        ("gmt_create", "2019-08-15 15:56:22"),
        ("charset", "utf-8"),
        ("subject", "语雀空间 500人规模"),
        ("buyer_id", "2088102534368455"),
        ("notify_id", "2019081500222155624068450559358070"),
        (
            "fund_bill_list",
            r#"[{"amount":"0.10","fundChannel":"ALIPAYACCOUNT"}]"#,
        ),
        ("notify_type", "trade_status_sync"),
        ("trade_status", "TRADE_SUCCESS"),
        ("sign_type", "RSA2"),
        ("app_id", APP_ID),
        ("seller_id", SELLER_ID),
        ("notify_time", "2019-08-15 15:56:25"),
        ("version", "1.0"),
        ("out_trade_no", PAYMENT_ID),
        ("total_amount", "0.10"),
        ("trade_no", "2019081522001468450512505578"),
        ("buyer_logon_id", "xud***@126.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn encode(params: &BTreeMap<String, String>) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
        .into_bytes()
}

/// Signs `params` the way Alipay does for trade notifications (or, with `keep_sign_type`, for
/// open-platform ones) and form-encodes them with the `sign`.
fn signed_body(params: &BTreeMap<String, String>, pems: &Pems, keep_sign_type: bool) -> Vec<u8> {
    let content = wire::notify_sign_content(params, keep_sign_type);
    let mut params = params.clone();
    params.insert("sign".into(), signer(pems).sign_base64(content.as_bytes()));
    encode(&params)
}

fn verify(provider: &AlipayProvider, body: &[u8]) -> Result<Notification, CallbackRejection> {
    payment(provider.verify_callback(&http::HeaderMap::new(), body, T0))
}

#[test]
fn trade_notification_verifies_and_parses() {
    let body = signed_body(&trade_params(), alipay_keys(), false);
    let notification = verify(&provider(), &body).expect("notification");
    assert_eq!(
        notification,
        Notification {
            notify_id: "2019081500222155624068450559358070".into(),
            payment_id: payment_id(),
            provider_trade_no: Some("2019081522001468450512505578".into()),
            status: NotifiedStatus::Paid,
            amount_minor: 10,
            currency: Currency::Cny,
        }
    );
    // No replay window: the same delivery a day later is still authentic.
    let later =
        payment(provider().verify_callback(&http::HeaderMap::new(), &body, T0.plus_s(86_400)));
    assert_eq!(later, Ok(notification));
}

#[test]
fn notifications_that_keep_sign_type_verify_too() {
    let body = signed_body(&trade_params(), alipay_keys(), true);
    assert!(verify(&provider(), &body).is_ok());
}

/// A trade notification after a full refund: Alipay's only word on a refund by callback.
fn refunded_trade_params() -> BTreeMap<String, String> {
    let mut params = trade_params();
    for (key, value) in [
        ("trade_status", "TRADE_CLOSED"),
        ("refund_fee", "0.10"),
        ("gmt_refund", "2019-08-15 16:20:00.000"),
        ("out_biz_no", "R0123456789abcdef0123456789abcde"),
    ] {
        params.insert(key.to_owned(), value.to_owned());
    }
    params
}

#[test]
fn every_verified_notification_is_a_payment_notification_refund_fields_or_not() {
    let verify = |params: &BTreeMap<String, String>| {
        let body = signed_body(params, alipay_keys(), false);
        provider().verify_callback(&http::HeaderMap::new(), &body, T0)
    };
    let got = verify(&trade_params());
    assert!(
        matches!(&got, Ok(Verified::Payment(n)) if n.status == NotifiedStatus::Paid),
        "{got:?}"
    );
    let got = verify(&refunded_trade_params());
    assert!(
        matches!(&got, Ok(Verified::Payment(n)) if n.status == NotifiedStatus::Closed),
        "{got:?}"
    );
}

#[test]
fn a_refund_notification_with_a_bad_signature_is_a_signature_failure() {
    let body = signed_body(&refunded_trade_params(), stranger_keys(), false);
    let got = provider().verify_callback(&http::HeaderMap::new(), &body, T0);
    assert!(
        matches!(got, Err(CallbackRejection::BadSignature(_))),
        "{got:?}"
    );
}

#[test]
fn bad_signatures_are_refused() {
    let good = signed_body(&trade_params(), alipay_keys(), false);
    let good_params = form_map(std::str::from_utf8(&good).expect("utf-8"));
    let with = |key: &str, value: Option<&str>| {
        let mut params = good_params.clone();
        match value {
            Some(value) => params.insert(key.to_owned(), value.to_owned()),
            None => params.remove(key),
        };
        encode(&params)
    };
    let bodies = [
        ("tampered amount", with("total_amount", Some("100.00"))),
        (
            "tampered id",
            with("out_trade_no", Some("01J0000000000000000000PAY2")),
        ),
        ("added param", with("extra", Some("1"))),
        ("no sign", with("sign", None)),
        ("empty sign", with("sign", Some(""))),
        ("garbage sign", with("sign", Some("not base64!"))),
        ("RSA1", with("sign_type", Some("RSA"))),
        (
            "wrong key",
            signed_body(&trade_params(), stranger_keys(), false),
        ),
    ];
    for (name, body) in bodies {
        let got = verify(&provider(), &body);
        assert!(
            matches!(got, Err(CallbackRejection::BadSignature(_))),
            "{name}: {got:?}"
        );
    }
}

#[test]
fn merchant_is_cross_checked() {
    let alipay = &alipay_keys().public;
    let signed_with = |key: &str, value: Option<&str>| {
        let mut params = trade_params();
        match value {
            Some(value) => params.insert(key.to_owned(), value.to_owned()),
            None => params.remove(key),
        };
        signed_body(&params, alipay_keys(), false)
    };
    let other_app = signed_with("app_id", Some("2021000000000002"));
    assert!(matches!(
        verify(&provider(), &other_app),
        Err(CallbackRejection::WrongMerchant(_))
    ));
    let with_seller = provider_with(alipay, Some(SELLER_ID));
    assert!(verify(&with_seller, &signed_with("version", Some("1.0"))).is_ok());
    for body in [
        signed_with("seller_id", Some("2088000000000002")),
        signed_with("seller_id", None),
    ] {
        assert!(matches!(
            verify(&with_seller, &body),
            Err(CallbackRejection::WrongMerchant(_))
        ));
    }
    // Without a configured seller, the seller is not checked.
    assert!(verify(&provider(), &signed_with("seller_id", None)).is_ok());
}

fn notify_with(key: &str, value: Option<&str>) -> Result<Notification, CallbackRejection> {
    let mut params = trade_params();
    match value {
        Some(value) => params.insert(key.to_owned(), value.to_owned()),
        None => params.remove(key),
    };
    verify(&provider(), &signed_body(&params, alipay_keys(), false))
}

#[test]
fn notification_amounts_parse_exactly() {
    fn check(text: &str, expected: Option<i64>) {
        let got = notify_with("total_amount", Some(text));
        match expected {
            Some(amount) => assert_eq!(got.map(|n| n.amount_minor), Ok(amount), "{text:?}"),
            None => assert!(
                matches!(got, Err(CallbackRejection::Malformed(_))),
                "{text:?}"
            ),
        }
    }
    check("0.10", Some(10));
    check("0.1", Some(10));
    check("1234.56", Some(123_456));
    check("0.101", None);
    check("1e2", None);
    check("-0.01", None);
    check("", None);
    check(" 1.00", None);
}

#[test]
fn notification_statuses_map() {
    fn check(status: &str, expected: Option<NotifiedStatus>) {
        let got = notify_with("trade_status", Some(status));
        match expected {
            Some(expected) => assert_eq!(got.map(|n| n.status), Ok(expected), "{status}"),
            None => assert!(
                matches!(got, Err(CallbackRejection::Malformed(_))),
                "{status}"
            ),
        }
    }
    check("TRADE_SUCCESS", Some(NotifiedStatus::Paid));
    check("TRADE_FINISHED", Some(NotifiedStatus::Paid));
    check("TRADE_CLOSED", Some(NotifiedStatus::Closed));
    check("WAIT_BUYER_PAY", Some(NotifiedStatus::Pending));
    check("trade_success", None);
}

#[test]
fn malformed_notifications_are_refused() {
    let cases = [
        (
            "dashed out_trade_no",
            notify_with("out_trade_no", Some("20190815155618536-564-57")),
        ),
        ("no out_trade_no", notify_with("out_trade_no", None)),
        ("no notify_id", notify_with("notify_id", None)),
        ("no trade_status", notify_with("trade_status", None)),
        ("no app_id", notify_with("app_id", None)),
    ];
    for (name, got) in cases {
        assert!(
            matches!(got, Err(CallbackRejection::Malformed(_))),
            "{name}: {got:?}"
        );
    }
    assert_eq!(
        notify_with("trade_no", None).map(|n| n.provider_trade_no),
        Ok(None)
    );
    let mut body = signed_body(&trade_params(), alipay_keys(), false);
    body.extend_from_slice(b"&total_amount=0.10");
    assert!(matches!(
        verify(&provider(), &body),
        Err(CallbackRejection::Malformed(_))
    ));
    let flood = "a=1&".repeat(notify::MAX_PARAMS + 1);
    assert!(matches!(
        verify(&provider(), flood.as_bytes()),
        Err(CallbackRejection::Malformed(_))
    ));
}

#[test]
fn replies_are_alipays_words() {
    fn check(answer: CallbackAnswer, status: u16, body: &str) {
        let reply = provider().reply(answer, "detail stays in our logs");
        assert_eq!(
            reply,
            CallbackReply {
                status,
                content_type: "text/plain",
                body: body.to_owned(),
            }
        );
    }
    check(CallbackAnswer::Success, 200, "success");
    check(CallbackAnswer::RetryLater, 500, "fail");
    check(CallbackAnswer::Rejected, 400, "fail");
    assert_eq!(provider().name(), ProviderName::Alipay);
}

#[test]
fn debug_output_hides_the_keys() {
    let text = format!("{:?}", provider());
    assert!(text.contains(APP_ID));
    let key_body: String = app_keys()
        .private
        .lines()
        .nth(1)
        .expect("pem line")
        .to_owned();
    assert!(!text.contains(&key_body));
    assert!(!text.contains("PRIVATE"));
}

// ---- cross-checks with openssl ----

/// An RSA-2048 key made by openssl: (private PEM, public PEM).
fn openssl_keys(scratch: &TempDir) -> (String, String) {
    openssl_rsa_key(scratch, "key.pem", "pub.pem");
    (scratch.read("key.pem"), scratch.read("pub.pem"))
}

#[test]
fn openssl_verifies_our_request_signature() {
    let scratch = TempDir::new("alipay-request");
    let (private, _) = openssl_keys(&scratch);
    let key = RsaSigner::from_pem(&private).expect("openssl key");
    let form = gateway_call(r#"{"subject":"语雀 a b"}"#, Some("https://n/cb")).signed_form(&key);
    let params = form_map(&form);
    let content = wire::request_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let sign = base64::engine::general_purpose::STANDARD
        .decode(params.get("sign").expect("sign"))
        .expect("base64");
    std::fs::write(scratch.path("msg.txt"), &content).expect("write");
    std::fs::write(scratch.path("sig.bin"), &sign).expect("write");
    let verify_args = verify_args("pub.pem", "sig.bin", "msg.txt");
    assert!(openssl_ok(&scratch, &verify_args));
    std::fs::write(scratch.path("msg.txt"), content.replace("a b", "a c")).expect("write");
    assert!(!openssl_ok(&scratch, &verify_args));
}

#[test]
fn openssl_signed_notification_verifies_here() {
    let scratch = TempDir::new("alipay-notify");
    let (_, public) = openssl_keys(&scratch);
    let params = trade_params();
    // The content written out by hand, independently of `notify_sign_content`.
    let content = format!(
        "app_id={APP_ID}&buyer_id=2088102534368455&buyer_logon_id=xud***@126.com&charset=utf-8\
         &fund_bill_list=[{{\"amount\":\"0.10\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]\
         &gmt_create=2019-08-15 15:56:22&notify_id=2019081500222155624068450559358070\
         &notify_time=2019-08-15 15:56:25&notify_type=trade_status_sync&out_trade_no={PAYMENT_ID}\
         &seller_id={SELLER_ID}&subject=语雀空间 500人规模&total_amount=0.10\
         &trade_no=2019081522001468450512505578&trade_status=TRADE_SUCCESS&version=1.0"
    );
    assert_eq!(wire::notify_sign_content(&params, false), content);
    std::fs::write(scratch.path("msg.txt"), &content).expect("write");
    assert!(openssl_ok(
        &scratch,
        &sign_args("key.pem", "sig.bin", "msg.txt")
    ));
    let sign = std::fs::read(scratch.path("sig.bin")).expect("sig");
    let mut signed = params.clone();
    signed.insert(
        "sign".into(),
        base64::engine::general_purpose::STANDARD.encode(sign),
    );
    let provider = provider_with(&public, None);
    assert!(verify(&provider, &encode(&signed)).is_ok());
    signed.insert("total_amount".into(), "0.11".into());
    assert!(matches!(
        verify(&provider, &encode(&signed)),
        Err(CallbackRejection::BadSignature(_))
    ));
}

// ---- refund queries ----

#[test]
fn refund_query_is_signed_with_the_trade_and_the_request_number() {
    let biz = wire::refund_query_biz(&payment_id(), "R1");
    let biz_json: serde_json::Value = serde_json::from_str(&biz).expect("json");
    assert_eq!(
        biz_json,
        serde_json::json!({ "out_trade_no": PAYMENT_ID, "out_request_no": "R1" })
    );
    let form = provider()
        .signed_form(REFUND_QUERY, &biz, None)
        .expect("form");
    let params = form_map(&form);
    assert_eq!(
        params.get("method").map(String::as_str),
        Some("alipay.trade.fastpay.refund.query")
    );
    assert_eq!(
        params.get("timestamp").map(String::as_str),
        Some("2019-08-15 15:56:22")
    );
    assert!(!params.contains_key("notify_url"));
    let sign = params.get("sign").expect("sign");
    let content = wire::request_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert!(verifier(app_keys()).verify_base64(content.as_bytes(), sign));
    assert_eq!(
        answer::response_key(REFUND_QUERY),
        "alipay_trade_fastpay_refund_query_response"
    );
}

fn refund_query_content(out_request_no: &str, refund_amount: &str, refund_status: &str) -> String {
    let mut value = serde_json::json!({
        "code": "10000", "msg": "Success", "trade_no": "2019081522001468450512505578",
        "out_trade_no": PAYMENT_ID, "out_request_no": out_request_no, "total_amount": "10.00",
    });
    if !refund_amount.is_empty() {
        value["refund_amount"] = refund_amount.into();
    }
    if !refund_status.is_empty() {
        value["refund_status"] = refund_status.into();
    }
    value.to_string()
}

#[test]
fn refund_query_answers_map_to_refund_states() {
    let id = payment_id();
    let check = |content: String, expected: Option<RefundState>| {
        let got = answer::parse_refund_query(content.as_bytes(), &id, "R1", 300);
        assert_eq!(got, Ok(expected.clone()), "{content}");
    };
    check(
        refund_query_content("R1", "3.00", "REFUND_SUCCESS"),
        Some(RefundState::Succeeded),
    );
    check(
        refund_query_content("R1", "3.00", ""),
        Some(RefundState::Processing),
    );
    // Alipay's "no such refund": a success without refund_amount (with or without echoes).
    check(refund_query_content("R1", "", ""), None);
    check(r#"{"code":"10000","msg":"Success"}"#.to_owned(), None);
    check(status_json("40004", "ACQ.TRADE_NOT_EXIST"), None);
}

#[test]
fn refund_query_answers_about_something_else_are_unknown() {
    let id = payment_id();
    let cases = [
        (
            "other refund",
            refund_query_content("R2", "3.00", "REFUND_SUCCESS"),
            Expect::Unknown,
        ),
        (
            "other trade",
            refund_query_content("R1", "3.00", "REFUND_SUCCESS").replace(PAYMENT_ID, "OTHER1"),
            Expect::Unknown,
        ),
        (
            "other amount",
            refund_query_content("R1", "3.01", "REFUND_SUCCESS"),
            Expect::Unknown,
        ),
        (
            "inexact amount",
            refund_query_content("R1", "3.001", "REFUND_SUCCESS"),
            Expect::Unknown,
        ),
        (
            "unknown status",
            refund_query_content("R1", "3.00", "REFUND_MAYBE"),
            Expect::Unknown,
        ),
        (
            "system error",
            status_json("40004", "ACQ.SYSTEM_ERROR"),
            Expect::Unknown,
        ),
        (
            "unavailable",
            status_json("20000", "isp.unknow-error"),
            Expect::Unknown,
        ),
        (
            "bad params",
            status_json("40002", "isv.invalid-parameter"),
            rejected("isv.invalid-parameter"),
        ),
    ];
    for (name, content, expected) in cases {
        let got = answer::parse_refund_query(content.as_bytes(), &id, "R1", 300);
        assert_eq!(expect_of(&got), expected, "{name}");
    }
}

#[test]
fn refund_answers_for_the_port() {
    let id = payment_id();
    let refund = |fund_change: &str| {
        format!(
            r#"{{"code":"10000","msg":"Success","out_trade_no":"{PAYMENT_ID}","trade_no":"T1","fund_change":"{fund_change}","refund_fee":"3.00"}}"#
        )
    };
    assert!(
        answer::parse_refund(refund("Y").as_bytes(), &id)
            .expect("refund")
            .fund_change
    );
    assert!(
        !answer::parse_refund(refund("N").as_bytes(), &id)
            .expect("refund")
            .fund_change
    );
    for (sub_code, content) in [
        (
            "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
            status_json("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"),
        ),
        (
            "ACQ.REFUND_FEE_ERROR",
            status_json("40004", "ACQ.REFUND_FEE_ERROR"),
        ),
        (
            "ACQ.TRADE_STATUS_ERROR",
            status_json("40004", "ACQ.TRADE_STATUS_ERROR"),
        ),
    ] {
        let got = answer::parse_refund(content.as_bytes(), &id);
        assert_eq!(expect_of(&got), rejected(sub_code));
    }
}
