//! Tests of the UnionPay adapter. Certificates and the independent signatures come from the
//! `openssl` command line (see `test_pki`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::sign::{self, Fields, SignerTrust, TrustError, VerifyError};
use super::test_pki::{self, COMPANY, MERCHANT_SERIAL, pki};
use super::wire::{self, Merchant, ReversalKind};
use super::*;
use crate::clock::ManualClock;
use crate::crypto::{RsaSigner, RsaVerifier};
use crate::domain::{AmountMinor, Currency, Money, OrderId};
use crate::ports::{Notification, NotifiedStatus, RefundNotice};
use crate::provider::test_callback::{payment, refund};
use crate::provider::test_openssl::{TempDir, openssl, openssl_output, sign_args, verify_args};

const MER_ID: &str = "777290058167151";
const BACK_URL: &str = "https://pay.example.com/callbacks/unionpay";
/// 2022-09-02T22:54:48Z, which is 2022-09-03 06:54:48 in China.
const T0_MS: i64 = 1_662_159_288_000;

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn crlf(pem: &str) -> String {
    pem.replace("\r\n", "\n").replace('\n', "\r\n")
}

fn trust() -> SignerTrust {
    let pki = pki();
    SignerTrust::new(&pki.root_pem, &pki.intermediate_pem, COMPANY).expect("trust")
}

/// A moment at which every test certificate is valid.
fn valid_now() -> Timestamp {
    let (from_s, _) = test_pki::validity_s(&pki().signer_pem);
    Timestamp::from_unix_s(from_s + 60)
}

fn merchant() -> Merchant<'static> {
    Merchant {
        mer_id: MER_ID,
        cert_id: MERCHANT_SERIAL,
        back_url: BACK_URL,
    }
}

fn payment_id() -> PaymentId {
    PaymentId::from_parts(T0_MS as u64, 7)
}

/// A consume notification as UnionPay sends it, signed with `key_pem` and carrying `cert_pem`.
fn signed_notification(changes: &[(&str, &str)], key_pem: &str, cert_pem: &str) -> Fields {
    let id = payment_id();
    let mut notice = fields(&[
        ("accessType", "0"),
        ("bizType", "000000"),
        ("currencyCode", "156"),
        ("encoding", "UTF-8"),
        ("merId", MER_ID),
        ("orderId", id.as_str()),
        ("queryId", "512209110416475616528"),
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        ("settleAmt", "10"),
        ("signMethod", "01"),
        ("signPubKeyCert", &crlf(cert_pem)),
        ("txnAmt", "10"),
        ("txnSubType", "07"),
        ("txnTime", "20220903065448"),
        ("txnType", "01"),
        ("version", "5.1.0"),
    ]);
    notice.extend(fields(changes));
    sign::sign(&mut notice, &RsaSigner::from_pem(key_pem).expect("key"));
    notice
}

fn form(fields: &Fields) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter())
        .finish()
        .into_bytes()
}

/// UnionPay's own answer encoding: `k=v&...`, not URL-encoded.
fn raw_answer(fields: &Fields) -> Vec<u8> {
    let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&").into_bytes()
}

fn provider(now: Timestamp) -> UnionPayProvider {
    let pki = pki();
    let config = UnionPayConfig {
        base_url: "http://127.0.0.1:9".into(),
        mer_id: MER_ID.into(),
        sign_key: RsaSigner::from_pem(&pki.merchant_key_pem).expect("key"),
        sign_cert_serial_decimal: cert_serial_decimal(&pki.merchant_cert_pem).expect("serial"),
        root_cert_pem: pki.root_pem.clone(),
        intermediate_cert_pem: pki.intermediate_pem.clone(),
        expected_signer_cn: COMPANY.into(),
        back_url: BACK_URL.into(),
        timeout: Duration::from_secs(1),
    };
    UnionPayProvider::new(config, Arc::new(ManualClock::at(now))).expect("provider")
}

// ---- signing ----

#[test]
fn signed_content_sorts_keys_drops_signature_and_keeps_raw_values() {
    let check = |pairs: &[(&str, &str)], expected: &str| {
        assert_eq!(sign::signed_content(&fields(pairs)), expected, "{pairs:?}");
    };
    check(&[("b", "2"), ("a", "1"), ("signature", "x")], "a=1&b=2");
    check(&[("alpha", "1"), ("Zeta", "2")], "Zeta=2&alpha=1");
    check(&[("a", ""), ("b", "1")], "a=&b=1");
    check(
        &[("backUrl", "https://x/y?a=1&b=2"), ("msg", "成功 +/=")],
        "backUrl=https://x/y?a=1&b=2&msg=成功 +/=",
    );
    check(
        &[("cert", "-----BEGIN\r\nAB+/\r\n")],
        "cert=-----BEGIN\r\nAB+/\r\n",
    );
    check(&[("signature", "x")], "");
}

#[test]
fn sign_verify_round_trip_tamper_and_wrong_key() {
    let pki = pki();
    let key = RsaSigner::from_pem(&pki.merchant_key_pem).expect("key");
    let public = RsaVerifier::from_pem(&pki.merchant_public_pem).expect("public");
    let mut request = fields(&[("merId", MER_ID), ("txnAmt", "10")]);
    sign::sign(&mut request, &key);
    assert!(sign::signature_verifies(&request, &public));

    let mut tampered = request.clone();
    tampered.insert("txnAmt".into(), "100".into());
    assert!(!sign::signature_verifies(&tampered, &public));
    let mut added = request.clone();
    added.insert("extra".into(), String::new());
    assert!(
        !sign::signature_verifies(&added, &public),
        "an empty field is signed too"
    );
    let mut unsigned = request.clone();
    unsigned.remove("signature");
    assert!(!sign::signature_verifies(&unsigned, &public));
    let other = RsaVerifier::from_pem(&pki.signer_public_pem).expect("other");
    assert!(!sign::signature_verifies(&request, &other));
}

/// The content's SHA-256 hex, as `openssl dgst -sha256 -r` computes it.
fn openssl_digest_hex(dir: &TempDir, content: &str) -> String {
    std::fs::write(dir.path("content.txt"), content).expect("write");
    let out = openssl(&dir.0, &["dgst", "-sha256", "-r", "content.txt"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().next().expect("digest").to_owned()
}

#[test]
fn adapter_signatures_verify_with_openssl() {
    let pki = pki();
    let dir = TempDir::new("unionpay-sign");
    let mut request = wire::create_fields(
        &merchant(),
        &payment_id(),
        10,
        Currency::Cny,
        Timestamp::from_unix_ms(T0_MS).plus_s(900),
    )
    .expect("fields");
    sign::sign(
        &mut request,
        &RsaSigner::from_pem(&pki.merchant_key_pem).expect("key"),
    );
    let content = sign::signed_content(&request);
    // The double hash: what is signed is the hex text of the content's SHA-256.
    let digest = openssl_digest_hex(&dir, &content);
    assert_eq!(digest, sign::signed_digest(&request));
    let signature = STANDARD.decode(&request["signature"]).expect("base64");
    std::fs::write(dir.path("sig.bin"), signature).expect("write");
    std::fs::write(dir.path("pub.pem"), &pki.merchant_public_pem).expect("write");
    std::fs::write(dir.path("msg.txt"), &digest).expect("write");
    let verify = verify_args("pub.pem", "sig.bin", "msg.txt");
    let out = openssl(&dir.0, &verify);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));

    std::fs::write(dir.path("msg.txt"), content.as_bytes()).expect("write");
    let status = openssl_output(&dir, &verify);
    assert!(
        !status.status.success(),
        "the content itself is not what is signed"
    );
}

/// Signs `fields` the UnionPay way with openssl alone: digest the content, sign the hex.
fn openssl_sign(fields: &mut Fields, key_pem: &str) {
    let dir = TempDir::new("unionpay-osign");
    let digest = openssl_digest_hex(&dir, &sign::signed_content(fields));
    std::fs::write(dir.path("digest.txt"), digest).expect("write");
    std::fs::write(dir.path("key.pem"), key_pem).expect("write");
    openssl(&dir, &sign_args("key.pem", "sig.bin", "digest.txt"));
    let signature = std::fs::read(dir.path("sig.bin")).expect("read");
    fields.insert("signature".into(), STANDARD.encode(signature));
}

#[test]
fn openssl_signatures_verify_in_the_adapter() {
    let pki = pki();
    let mut notice = signed_notification(&[], &pki.signer_key_pem, &pki.signer_pem);
    openssl_sign(&mut notice, &pki.signer_key_pem);
    let now = valid_now();
    assert_eq!(trust().verify(&notice, now), Ok(()));
    let notification =
        payment(provider(now).verify_callback(&http::HeaderMap::new(), &form(&notice), now))
            .expect("openssl-signed notification");
    assert_eq!(notification.amount_minor, 10);

    notice.insert("txnAmt".into(), "11".into());
    assert_eq!(trust().verify(&notice, now), Err(VerifyError::BadSignature));
}

#[test]
fn cert_id_is_the_decimal_serial() {
    assert_eq!(
        cert_serial_decimal(&pki().merchant_cert_pem),
        Ok(MERCHANT_SERIAL.to_owned())
    );
    assert_eq!(
        cert_serial_decimal(&crlf(&pki().signer_pem)),
        Ok("69678957876".to_owned())
    );
    assert!(cert_serial_decimal("not a certificate").is_err());
    assert!(cert_serial_decimal(&pki().merchant_key_pem).is_err());
}

// ---- certificate trust ----

#[test]
fn trust_requires_the_intermediate_to_come_from_the_root() {
    let pki = pki();
    assert!(SignerTrust::new(&pki.root_pem, &pki.intermediate_pem, COMPANY).is_ok());
    assert_eq!(
        SignerTrust::new(&pki.intermediate_pem, &pki.root_pem, COMPANY).err(),
        Some(TrustError::IntermediateNotFromRoot)
    );
    assert_eq!(
        SignerTrust::new(&pki.root_pem, &pki.signer_pem, COMPANY).err(),
        Some(TrustError::IntermediateNotFromRoot)
    );
    assert!(matches!(
        SignerTrust::new("garbage", &pki.intermediate_pem, COMPANY),
        Err(TrustError::Unreadable { .. })
    ));
}

#[test]
fn signer_certificates_must_chain_and_name_unionpay() {
    let pki = pki();
    let trust = trust();
    let now = valid_now();
    let check = |cert: &str, expected: Result<(), VerifyError>| {
        assert_eq!(trust.signer_key(cert, now).map(|_| ()), expected);
    };
    check(&pki.signer_pem, Ok(()));
    check(&crlf(&pki.signer_pem), Ok(()));
    check(
        &pki.other_company_pem,
        Err(VerifyError::WrongSigner(COMPANY.into())),
    );
    check(
        &pki.root_issued_pem,
        Err(VerifyError::NotIssuedByIntermediate),
    );
    check(&pki.root_pem, Err(VerifyError::NotIssuedByIntermediate));
    check(
        &pki.intermediate_pem,
        Err(VerifyError::NotIssuedByIntermediate),
    );
    assert!(matches!(
        trust.signer_key(
            "-----BEGIN CERTIFICATE-----\r\nAAAA\r\n-----END CERTIFICATE-----",
            now
        ),
        Err(VerifyError::UnreadableCert(_))
    ));
    assert!(matches!(
        trust.signer_key(&pki.signer_key_pem, now),
        Err(VerifyError::UnreadableCert(_))
    ));
    let other_cn = SignerTrust::new(&pki.root_pem, &pki.intermediate_pem, "Some Other Company");
    assert!(
        other_cn
            .expect("trust")
            .signer_key(&pki.other_company_pem, now)
            .is_ok()
    );
}

#[test]
fn validity_is_checked_at_the_clock_edges() {
    let pki = pki();
    let trust = trust();
    let (root_from, root_until) = test_pki::validity_s(&pki.root_pem);
    let (int_from, int_until) = test_pki::validity_s(&pki.intermediate_pem);
    let (leaf_from, leaf_until) = test_pki::validity_s(&pki.signer_pem);
    let from = root_from.max(int_from).max(leaf_from);
    let until = root_until.min(int_until).min(leaf_until);
    let check = |cert: &str, at_s: i64, valid: bool| {
        let got = trust
            .signer_key(cert, Timestamp::from_unix_s(at_s))
            .map(|_| ());
        let expected = if valid {
            Ok(())
        } else {
            Err(VerifyError::OutsideValidity(at_s))
        };
        assert_eq!(got, expected, "at {at_s}");
    };
    check(&pki.signer_pem, from - 1, false);
    check(&pki.signer_pem, from, true);
    check(&pki.signer_pem, until, true);
    check(&pki.signer_pem, until + 1, false);
    // A leaf that predates the intermediate becomes valid only with it.
    let (early_from, _) = test_pki::validity_s(&pki.early_pem);
    assert!(early_from < int_from);
    check(&pki.early_pem, int_from - 1, false);
    check(&pki.early_pem, int_from, true);
    // A leaf that outlives the root is no longer trusted once the root has expired.
    let (_, long_until) = test_pki::validity_s(&pki.long_lived_pem);
    let chain_until = root_until.min(int_until);
    assert!(long_until > chain_until);
    check(&pki.long_lived_pem, chain_until, true);
    check(&pki.long_lived_pem, chain_until + 1, false);
}

#[test]
fn verify_checks_method_certificate_and_signature() {
    let pki = pki();
    let trust = trust();
    let now = valid_now();
    let good = signed_notification(&[], &pki.signer_key_pem, &pki.signer_pem);
    assert_eq!(trust.verify(&good, now), Ok(()));

    let check = |mut fields: Fields, edit: &dyn Fn(&mut Fields), expected: VerifyError| {
        edit(&mut fields);
        assert_eq!(trust.verify(&fields, now), Err(expected));
    };
    let unsupported = |m: &str, v: &str| VerifyError::UnsupportedMethod {
        sign_method: m.into(),
        version: v.into(),
    };
    check(
        good.clone(),
        &|f| {
            f.insert("signMethod".into(), "11".into());
        },
        unsupported("11", "5.1.0"),
    );
    check(
        good.clone(),
        &|f| {
            f.insert("version".into(), "5.0.0".into());
        },
        unsupported("01", "5.0.0"),
    );
    check(
        good.clone(),
        &|f| {
            f.remove("signPubKeyCert");
        },
        VerifyError::MissingCert,
    );
    check(
        good.clone(),
        &|f| {
            f.remove("signature");
        },
        VerifyError::BadSignature,
    );
    check(
        good.clone(),
        &|f| {
            f.insert("signature".into(), "not base64!".into());
        },
        VerifyError::BadSignature,
    );
    // The certificate is signed content: swapping CRLF for LF breaks the signature.
    check(
        good.clone(),
        &|f| {
            let lf = f["signPubKeyCert"].replace("\r\n", "\n");
            f.insert("signPubKeyCert".into(), lf);
        },
        VerifyError::BadSignature,
    );
    // A valid signature by a key whose certificate does not chain is refused.
    let rogue = signed_notification(&[], &pki.root_issued_key_pem, &pki.root_issued_pem);
    check(rogue, &|_| {}, VerifyError::NotIssuedByIntermediate);
    let other = signed_notification(&[], &pki.other_company_key_pem, &pki.other_company_pem);
    check(other, &|_| {}, VerifyError::WrongSigner(COMPANY.into()));
    // Signed by one key, carrying another (valid) certificate.
    let mismatched = signed_notification(&[], &pki.long_lived_key_pem, &pki.signer_pem);
    check(mismatched, &|_| {}, VerifyError::BadSignature);
}

// ---- message formats ----

#[test]
fn answers_are_split_like_unionpays_sdk() {
    let check = |text: &str, expected: Option<&[(&str, &str)]>| {
        let got = wire::parse_answer(text.as_bytes()).ok();
        assert_eq!(got, expected.map(fields), "{text:?}");
    };
    check("a=1&b=2", Some(&[("a", "1"), ("b", "2")]));
    check("sig=ab+/cd==&x=", Some(&[("sig", "ab+/cd=="), ("x", "")]));
    check(
        "c=-----BEGIN\r\nA+B\r\n-----",
        Some(&[("c", "-----BEGIN\r\nA+B\r\n-----")]),
    );
    check("r={x=1&y=2}&s=3", Some(&[("r", "{x=1&y=2}"), ("s", "3")]));
    check(
        "r=[{x=1}&{y=2}]&s=3",
        Some(&[("r", "[{x=1}&{y=2}]"), ("s", "3")]),
    );
    check(
        "m=成功[0000000]&n=%41",
        Some(&[("m", "成功[0000000]"), ("n", "%41")]),
    );
    check("", None);
    check("a", None);
    check("=1", None);
    check("a=1&", None);
    check("a=1&&b=2", None);
    check("a=1&a=2", None);
    check("a b=1", None);
    check("a%20=1", None);
    assert!(wire::parse_answer(b"a=\xff").is_err());
    let many: Vec<String> = (0..=wire::FIELDS_MAX).map(|i| format!("k{i}=v")).collect();
    assert!(wire::parse_answer(many.join("&").as_bytes()).is_err());
    let few: Vec<String> = (0..wire::FIELDS_MAX).map(|i| format!("k{i}=v")).collect();
    assert!(wire::parse_answer(few.join("&").as_bytes()).is_ok());
    let long = format!("a={}", "x".repeat(wire::BODY_BYTES_MAX));
    assert!(wire::parse_answer(long.as_bytes()).is_err());
}

#[test]
fn notifications_are_url_decoded_forms() {
    let check = |body: &[u8], expected: Option<&[(&str, &str)]>| {
        assert_eq!(
            wire::parse_form(body).ok(),
            expected.map(fields),
            "{body:?}"
        );
    };
    check(b"a=1&b=x+y", Some(&[("a", "1"), ("b", "x y")]));
    check(b"sig=ab%2B%2Fcd%3D%3D", Some(&[("sig", "ab+/cd==")]));
    check(b"c=L1%0D%0AL2", Some(&[("c", "L1\r\nL2")]));
    check(b"m=%E6%88%90%E5%8A%9F", Some(&[("m", "成功")]));
    check(b"a=1&a=2", None);
    check(b"a%26b=1", None);
    check(b"a=\xff", None);
}

#[test]
fn times_are_china_time() {
    let check = |unix_ms: i64, expected: &str| {
        let got = china_time(Timestamp::from_unix_ms(unix_ms));
        assert_eq!(got.as_deref(), Some(expected), "{unix_ms}");
    };
    check(0, "19700101080000");
    check(T0_MS, "20220903065448");
    check(T0_MS + 999, "20220903065448");
    // 16:00 UTC is midnight in China.
    check(1_662_220_800_000 - 1, "20220903235959");
    check(1_662_220_800_000, "20220904000000");
    assert_eq!(china_time(Timestamp::from_unix_s(-100_000_000_000)), None);
}

#[test]
fn txn_time_comes_from_the_payment_ids_ulid() {
    assert_eq!(txn_time_for(&payment_id()).as_deref(), Ok("20220903065448"));
    let later = PaymentId::from_parts(T0_MS as u64 + 1_000, 7);
    assert_eq!(txn_time_for(&later).as_deref(), Ok("20220903065449"));
    let id = PaymentId::parse("ORDER1").expect("id");
    assert!(txn_time_for(&id).is_err());
}

#[test]
fn amounts_are_integer_fen_exactly() {
    let check = |text: &str, expected: Option<i64>| {
        assert_eq!(parse_fen(text), expected, "{text:?}");
    };
    check("1", Some(1));
    check("10", Some(10));
    check("0", Some(0));
    check("000000000100", Some(100));
    check("999999999999", Some(999_999_999_999));
    check("1000000000000", None);
    check("0.10", None);
    check("0.101", None);
    check("1e2", None);
    check("-1", None);
    check("-0.01", None);
    check("+1", None);
    check("", None);
    check(" 1", None);
    check("1 ", None);
    check("１", None);
}

#[test]
fn requests_carry_the_acp_fields() {
    let id = payment_id();
    let expires = Timestamp::from_unix_ms(T0_MS).plus_s(900);
    let create = wire::create_fields(&merchant(), &id, 10, Currency::Cny, expires);
    let common = [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("certId", MERCHANT_SERIAL),
        ("merId", MER_ID),
        ("accessType", "0"),
        ("bizType", "000000"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut all = fields(&common);
        all.extend(fields(extra));
        all
    };
    assert_eq!(
        create,
        Ok(with(&[
            ("txnType", "01"),
            ("txnSubType", "07"),
            ("channelType", "08"),
            ("orderId", id.as_str()),
            ("txnTime", "20220903065448"),
            ("txnAmt", "10"),
            ("currencyCode", "156"),
            ("backUrl", BACK_URL),
            ("payTimeout", "20220903070948"),
        ]))
    );
    assert_eq!(
        wire::query_fields(&merchant(), &id),
        Ok(with(&[
            ("txnType", "00"),
            ("txnSubType", "00"),
            ("orderId", id.as_str()),
            ("txnTime", "20220903065448"),
        ]))
    );
    let now = Timestamp::from_unix_ms(T0_MS).plus_s(3600);
    for (kind, txn_type) in [(ReversalKind::Refund, "04"), (ReversalKind::Cancel, "31")] {
        let got = wire::reversal_fields(
            &merchant(),
            kind,
            "512209110416475616528",
            "R0001abcd",
            5,
            now,
            None,
        );
        let expected = with(&[
            ("txnType", txn_type),
            ("txnSubType", "00"),
            ("channelType", "08"),
            ("orderId", "R0001abcd"),
            ("txnTime", "20220903075448"),
            ("txnAmt", "5"),
            ("origQryId", "512209110416475616528"),
            ("backUrl", BACK_URL),
        ]);
        assert_eq!(got, Ok(expected), "{kind:?}");
    }
}

#[test]
fn invalid_requests_are_not_built() {
    let id = payment_id();
    let expires = Timestamp::from_unix_ms(T0_MS);
    let create = |id: &PaymentId, amount| {
        wire::create_fields(&merchant(), id, amount, Currency::Cny, expires)
    };
    assert!(create(&id, 0).is_err());
    assert!(create(&id, -1).is_err());
    assert!(create(&id, crate::domain::money::AMOUNT_MINOR_MAX + 1).is_err());
    assert!(create(&PaymentId::parse("ORDER123456").expect("id"), 10).is_err());
    assert!(create(&PaymentId::parse("SHORT").expect("id"), 10).is_err());
    assert!(
        wire::query_fields(&merchant(), &PaymentId::parse("ORDER123456").expect("id")).is_err()
    );
    let reverse = |orig: &str, order: &str, amount| {
        wire::reversal_fields(
            &merchant(),
            ReversalKind::Refund,
            orig,
            order,
            amount,
            expires,
            None,
        )
    };
    assert!(reverse("512209110416475616528", "R0001abcd", 1).is_ok());
    assert!(reverse("512209110416475616528", "R0001abcd", 0).is_err());
    assert!(reverse("512209110416475616528", "R-0001-abcd", 1).is_err());
    assert!(reverse("512209110416475616528", "R1", 1).is_err());
    assert!(reverse("", "R0001abcd", 1).is_err());
    assert!(reverse("5122&txnAmt=1", "R0001abcd", 1).is_err());
}

fn rejected(code: &str, message: &str) -> ProviderError {
    ProviderError::Rejected {
        code: code.into(),
        message: message.into(),
    }
}

fn is_unknown<T>(result: &Result<T, ProviderError>) -> bool {
    matches!(result, Err(ProviderError::Unknown(_)))
}

#[test]
fn create_answers_map_to_created_rejected_or_unknown() {
    let id = payment_id();
    let answer = |pairs: &[(&str, &str)]| {
        let mut all = fields(&[
            ("merId", MER_ID),
            ("orderId", id.as_str()),
            ("respMsg", "msg"),
        ]);
        all.extend(fields(pairs));
        wire::create_outcome(&all, MER_ID, &id)
    };
    assert_eq!(
        answer(&[
            ("respCode", "00"),
            ("qrCode", "https://qr.95516.com/00010000/62")
        ]),
        Ok(ProviderCreated {
            pay_url: "https://qr.95516.com/00010000/62".into(),
            provider_trade_no: None,
        })
    );
    assert!(is_unknown(&answer(&[("respCode", "00")])));
    assert!(is_unknown(&answer(&[("respCode", "00"), ("qrCode", "")])));
    for code in ["03", "04", "05"] {
        assert!(is_unknown(&answer(&[("respCode", code)])), "{code}");
    }
    for code in ["01", "12", "34", "61"] {
        assert_eq!(
            answer(&[("respCode", code)]),
            Err(rejected(code, "msg")),
            "{code}"
        );
    }
    assert!(is_unknown(&answer(&[])));
    let qr = ("qrCode", "https://qr");
    assert!(is_unknown(&answer(&[
        ("respCode", "00"),
        qr,
        ("orderId", "OTHER12345")
    ])));
    assert!(is_unknown(&answer(&[
        ("respCode", "00"),
        qr,
        ("merId", "777290058000000")
    ])));
}

#[test]
fn query_answers_map_every_status() {
    let id = payment_id();
    let answer = |pairs: &[(&str, &str)]| {
        let mut all = fields(&[
            ("merId", MER_ID),
            ("orderId", id.as_str()),
            ("respCode", "00"),
            ("respMsg", "msg"),
            ("origRespCode", "00"),
            ("queryId", "512209110416475616528"),
            ("txnAmt", "10"),
            ("currencyCode", "156"),
        ]);
        all.extend(fields(pairs));
        wire::query_outcome(&all, MER_ID, &id)
    };
    let trade = |status| {
        Ok(Some(ProviderTrade {
            status,
            provider_trade_no: Some("512209110416475616528".into()),
            amount_minor: 10,
            currency: Currency::Cny,
        }))
    };
    let statuses = [
        ("00", NotifiedStatus::Paid),
        ("A6", NotifiedStatus::Paid),
        ("03", NotifiedStatus::Pending),
        ("04", NotifiedStatus::Pending),
        ("05", NotifiedStatus::Pending),
        ("01", NotifiedStatus::Pending),
        ("61", NotifiedStatus::Pending),
    ];
    for (orig, status) in statuses {
        assert_eq!(answer(&[("origRespCode", orig)]), trade(status), "{orig}");
    }
    assert_eq!(answer(&[("respCode", "34")]), Ok(None));
    for code in ["03", "04", "05"] {
        assert!(is_unknown(&answer(&[("respCode", code)])), "{code}");
    }
    assert_eq!(answer(&[("respCode", "12")]), Err(rejected("12", "msg")));
    for bad in [
        ("txnAmt", "0.10"),
        ("txnAmt", ""),
        ("currencyCode", "840"),
        ("orderId", "X"),
    ] {
        assert!(is_unknown(&answer(&[bad])), "{bad:?}");
    }
    let mut no_orig = fields(&[
        ("respCode", "00"),
        ("txnAmt", "10"),
        ("currencyCode", "156"),
    ]);
    assert!(is_unknown(&wire::query_outcome(&no_orig, MER_ID, &id)));
    no_orig.insert("origRespCode".into(), "00".into());
    assert!(matches!(
        wire::query_outcome(&no_orig, MER_ID, &id),
        Ok(Some(_))
    ));
}

#[test]
fn reversal_answers_map_to_accepted_rejected_or_unknown() {
    let answer = |code: &str| {
        let all = fields(&[("respCode", code), ("respMsg", "msg"), ("queryId", "q1")]);
        wire::reversal_outcome(&all, MER_ID, "R0001abcd", "20220903075448")
    };
    assert_eq!(
        answer("00"),
        Ok(ReversalAccepted {
            order_id: "R0001abcd".into(),
            txn_time: "20220903075448".into(),
            provider_trade_no: Some("q1".into()),
        })
    );
    assert!(is_unknown(&answer("05")));
    assert_eq!(answer("25"), Err(rejected("25", "msg")));
}

// ---- the port ----

#[test]
fn callbacks_verify_and_map_every_status() {
    let pki = pki();
    let now = valid_now();
    let provider = provider(now);
    let verify = |changes: &[(&str, &str)]| {
        let notice = signed_notification(changes, &pki.signer_key_pem, &pki.signer_pem);
        payment(provider.verify_callback(&http::HeaderMap::new(), &form(&notice), now))
    };
    let expected = |status| Notification {
        notify_id: "512209110416475616528".into(),
        payment_id: payment_id(),
        provider_trade_no: Some("512209110416475616528".into()),
        status,
        amount_minor: 10,
        currency: Currency::Cny,
    };
    for (code, status) in [
        ("00", NotifiedStatus::Paid),
        ("A6", NotifiedStatus::Paid),
        ("03", NotifiedStatus::Pending),
        ("01", NotifiedStatus::Pending),
    ] {
        assert_eq!(
            verify(&[("respCode", code)]),
            Ok(expected(status)),
            "{code}"
        );
    }
    let malformed = |r: &Result<Notification, CallbackRejection>| {
        matches!(r, Err(CallbackRejection::Malformed(_)))
    };
    assert_eq!(
        verify(&[("merId", "777290058000000")]),
        Err(CallbackRejection::WrongMerchant("777290058000000".into()))
    );
    for change in [
        ("txnType", "04"),
        ("txnAmt", "0.10"),
        ("txnAmt", "-1"),
        ("txnAmt", ""),
        ("currencyCode", "840"),
        ("orderId", "abc-1"),
        ("queryId", ""),
        ("respCode", ""),
    ] {
        let got = verify(&[change]);
        assert!(malformed(&got), "{change:?}: {got:?}");
    }
}

#[test]
fn callbacks_with_bad_signatures_are_refused() {
    let pki = pki();
    let now = valid_now();
    let provider = provider(now);
    let headers = http::HeaderMap::new();
    let notice = signed_notification(&[], &pki.signer_key_pem, &pki.signer_pem);
    assert!(
        provider
            .verify_callback(&headers, &form(&notice), now)
            .is_ok()
    );

    let bad_signature = |body: &[u8], at: Timestamp| {
        matches!(
            provider.verify_callback(&headers, body, at),
            Err(CallbackRejection::BadSignature(_))
        )
    };
    let mut tampered = notice.clone();
    tampered.insert("txnAmt".into(), "1000".into());
    assert!(bad_signature(&form(&tampered), now));
    let mut swapped = notice.clone();
    swapped.insert("respCode".into(), "00".into());
    swapped.insert("orderId".into(), "01ARZ3NDEKTSV4RRFFQ69G5FAV".into());
    assert!(bad_signature(&form(&swapped), now));
    let (_, until) = test_pki::validity_s(&pki.signer_pem);
    assert!(bad_signature(
        &form(&notice),
        Timestamp::from_unix_s(until + 1)
    ));
    let other = signed_notification(&[], &pki.other_company_key_pem, &pki.other_company_pem);
    assert!(bad_signature(&form(&other), now));
    // UnionPay's answer encoding is not a form: its '+' would decode to ' '.
    assert!(bad_signature(&raw_answer(&notice), now));
    assert!(matches!(
        provider.verify_callback(&headers, b"a=1&a=2", now),
        Err(CallbackRejection::Malformed(_))
    ));
    assert!(bad_signature(b"", now));
}

#[test]
fn answers_are_authenticated_before_they_are_read() {
    let pki = pki();
    let now = valid_now();
    let trust = trust();
    let answer = signed_notification(
        &[("qrCode", "https://qr/1")],
        &pki.signer_key_pem,
        &pki.signer_pem,
    );
    assert_eq!(
        authenticated_answer(&trust, &raw_answer(&answer), now),
        Ok(answer.clone())
    );
    let mut tampered = answer.clone();
    tampered.insert("qrCode".into(), "https://evil/1".into());
    assert!(is_unknown(&authenticated_answer(
        &trust,
        &raw_answer(&tampered),
        now
    )));
    let mut unsigned = answer;
    unsigned.remove("signature");
    assert!(is_unknown(&authenticated_answer(
        &trust,
        &raw_answer(&unsigned),
        now
    )));
    assert!(is_unknown(&authenticated_answer(
        &trust,
        b"<html>502</html>",
        now
    )));
}

#[test]
fn replies_use_the_status_code() {
    let provider = provider(valid_now());
    let check = |answer, status, body: &str| {
        let reply = provider.reply(answer, "detail");
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (status, body),
            "{answer:?}"
        );
    };
    check(CallbackAnswer::Success, 200, "ok");
    check(CallbackAnswer::Rejected, 400, "fail");
    check(CallbackAnswer::RetryLater, 500, "fail");
}

#[tokio::test]
async fn unusable_requests_fail_without_calling_out() {
    let provider = provider(valid_now());
    let not_ulid = PaymentId::parse("ORDER123456").expect("id");
    let request = ProviderCreate {
        payment_id: not_ulid.clone(),
        order_id: OrderId::parse("order-1").expect("order"),
        money: Money {
            amount: AmountMinor::new(10).expect("amount"),
            currency: Currency::Cny,
        },
        subject: "tea".into(),
        expires_at: valid_now().plus_s(900),
    };
    assert!(matches!(
        provider.create(&request).await,
        Err(ProviderError::Rejected { code, .. }) if code == "INVALID_REQUEST"
    ));
    assert!(is_unknown(&provider.query(&not_ulid).await));
    assert!(matches!(
        provider.close(&payment_id()).await,
        Err(ProviderError::Rejected { code, .. }) if code == "CLOSE_UNSUPPORTED"
    ));
    assert!(matches!(
        provider.refund("512209110416475616528", "R-1", 10).await,
        Err(ProviderError::Rejected { code, .. }) if code == "INVALID_REQUEST"
    ));
}

#[test]
fn construction_checks_the_configuration() {
    let pki = pki();
    let clock = Arc::new(ManualClock::at(valid_now()));
    let config = |serial: &str, root: &str| UnionPayConfig {
        base_url: "http://127.0.0.1:9".into(),
        mer_id: MER_ID.into(),
        sign_key: RsaSigner::from_pem(&pki.merchant_key_pem).expect("key"),
        sign_cert_serial_decimal: serial.into(),
        root_cert_pem: root.into(),
        intermediate_cert_pem: pki.intermediate_pem.clone(),
        expected_signer_cn: COMPANY.into(),
        back_url: BACK_URL.into(),
        timeout: Duration::from_secs(1),
    };
    assert!(UnionPayProvider::new(config(MERCHANT_SERIAL, &pki.root_pem), clock.clone()).is_ok());
    assert!(UnionPayProvider::new(config("0x1046900149", &pki.root_pem), clock.clone()).is_err());
    assert!(
        UnionPayProvider::new(config(MERCHANT_SERIAL, &pki.signer_pem), clock.clone()).is_err()
    );
    let debug = format!("{:?}", provider(valid_now()));
    assert!(debug.contains("RsaSigner(<redacted>)") && !debug.contains("PRIVATE"));
}

// ---- refunds through the port ----

fn port_refund(provider_trade_no: Option<&str>, refund_no: &str, amount: i64) -> ProviderRefund {
    ProviderRefund {
        payment_id: payment_id(),
        refund_no: refund_no.into(),
        amount_minor: amount,
        total_minor: 10,
        currency: Currency::Cny,
        reason: "退货".into(),
        provider_trade_no: provider_trade_no.map(str::to_owned),
        // An hour after the consume: 2022-09-03 07:54:48 in China.
        requested_at: Timestamp::from_unix_ms(T0_MS).plus_s(3600),
    }
}

#[test]
fn refund_queries_name_the_refunds_order_id_and_txn_time() {
    let requested_at = Timestamp::from_unix_ms(T0_MS).plus_s(3600);
    assert_eq!(
        refund_txn_time(requested_at).as_deref(),
        Ok("20220903075448")
    );
    let mut expected = wire::query_fields(&merchant(), &payment_id()).expect("query");
    expected.insert("orderId".into(), "R0001abcd".into());
    expected.insert("txnTime".into(), "20220903075448".into());
    assert_eq!(
        wire::refund_query_fields(&merchant(), "R0001abcd", requested_at),
        Ok(expected)
    );
    let refund = wire::reversal_fields(
        &merchant(),
        ReversalKind::Refund,
        "512209110416475616528",
        "R0001abcd",
        5,
        requested_at,
        Some(&payment_id()),
    )
    .expect("refund");
    assert_eq!(refund["txnTime"], "20220903075448");
    assert_eq!(
        refund.get(REQ_RESERVED).map(String::as_str),
        Some(payment_id().as_str()),
        "the payment id rides in reqReserved, which the refund's notification echoes"
    );
    for bad in ["R1", "R-0001-abcd", ""] {
        assert!(wire::refund_query_fields(&merchant(), bad, requested_at).is_err());
    }
}

#[test]
fn refund_query_answers_map_every_status() {
    let answer = |pairs: &[(&str, &str)]| {
        let mut all = fields(&[
            ("merId", MER_ID),
            ("orderId", "R0001abcd"),
            ("respCode", "00"),
            ("respMsg", "msg"),
            ("origRespCode", "00"),
            ("origRespMsg", "orig msg"),
            ("queryId", "512209110416475616529"),
            ("txnAmt", "5"),
        ]);
        all.extend(fields(pairs));
        wire::refund_query_outcome(&all, MER_ID, "R0001abcd", 5)
    };
    for orig in ["00", "A6"] {
        assert_eq!(
            answer(&[("origRespCode", orig)]),
            Ok(Some(RefundState::Succeeded)),
            "{orig}"
        );
    }
    for orig in ["03", "04", "05"] {
        assert_eq!(
            answer(&[("origRespCode", orig)]),
            Ok(Some(RefundState::Processing)),
            "{orig}"
        );
    }
    for orig in ["01", "33", "61"] {
        assert_eq!(
            answer(&[("origRespCode", orig)]),
            Ok(Some(RefundState::Failed(format!(
                "UnionPay refund R0001abcd: {orig} orig msg"
            )))),
            "{orig}"
        );
    }
    assert_eq!(answer(&[("respCode", "34")]), Ok(None));
    for code in ["03", "04", "05"] {
        assert!(is_unknown(&answer(&[("respCode", code)])), "{code}");
    }
    assert_eq!(answer(&[("respCode", "11")]), Err(rejected("11", "msg")));
    for bad in [
        ("txnAmt", "6"),
        ("txnAmt", "0.05"),
        ("orderId", "R0002abcd"),
        ("merId", "777290058000000"),
    ] {
        assert!(is_unknown(&answer(&[bad])), "{bad:?}");
    }
    let mut bare = fields(&[("respCode", "00")]);
    assert!(is_unknown(&wire::refund_query_outcome(
        &bare,
        MER_ID,
        "R0001abcd",
        5
    )));
    bare.insert("origRespCode".into(), "00".into());
    assert_eq!(
        wire::refund_query_outcome(&bare, MER_ID, "R0001abcd", 5),
        Ok(Some(RefundState::Succeeded)),
        "txnAmt is checked when present"
    );
}

#[tokio::test]
async fn port_refunds_we_cannot_send_fail_without_calling_out() {
    let provider = provider(valid_now());
    let without_query_id = port_refund(None, "R0001abcd", 5);
    assert!(matches!(
        PaymentProvider::refund(&provider, &without_query_id).await,
        Err(ProviderError::Rejected { code, .. }) if code == NO_ORIG_QUERY_ID
    ));
    let too_much = port_refund(Some("512209110416475616528"), "R0001abcd", 11);
    assert!(matches!(
        PaymentProvider::refund(&provider, &too_much).await,
        Err(ProviderError::Rejected { code, .. }) if code == "INVALID_REQUEST"
    ));
    let bad_number = port_refund(Some("512209110416475616528"), "R-1", 5);
    assert!(matches!(
        PaymentProvider::refund(&provider, &bad_number).await,
        Err(ProviderError::Rejected { code, .. }) if code == "INVALID_REQUEST"
    ));
    assert!(is_unknown(&provider.query_refund(&bad_number).await));
}

#[tokio::test]
async fn port_refund_and_its_query_carry_txn_time_from_requested_at_not_the_clock() {
    let (listener, base_url) = crate::provider::test_http::listener().await;
    let pki = pki();
    let config = UnionPayConfig {
        base_url,
        mer_id: MER_ID.into(),
        sign_key: RsaSigner::from_pem(&pki.merchant_key_pem).expect("key"),
        sign_cert_serial_decimal: cert_serial_decimal(&pki.merchant_cert_pem).expect("serial"),
        root_cert_pem: pki.root_pem.clone(),
        intermediate_cert_pem: pki.intermediate_pem.clone(),
        expected_signer_cn: COMPANY.into(),
        back_url: BACK_URL.into(),
        timeout: Duration::from_secs(5),
    };
    // The clock is far from the refund's request time: only requested_at may show.
    let provider =
        UnionPayProvider::new(config, Arc::new(ManualClock::at(valid_now()))).expect("provider");
    let refund = port_refund(Some("512209110416475616528"), "R0001abcd", 5);

    // Both calls are answered 503: only what was sent matters here.
    let unavailable = || crate::provider::test_http::answer(503, &[], b"", Some(0));
    let server = crate::provider::test_http::serve(listener, vec![unavailable(), unavailable()]);
    let sent = PaymentProvider::refund(&provider, &refund).await;
    assert!(is_unknown(&sent), "503 says nothing: {sent:?}");
    let queried = provider.query_refund(&refund).await;
    assert!(is_unknown(&queried), "503 says nothing: {queried:?}");
    let requests = server.await.expect("requests");
    let form_of = |body: &[u8]| -> Fields { form_urlencoded::parse(body).into_owned().collect() };
    let (form, query) = (form_of(&requests[0].body), form_of(&requests[1].body));
    for (key, value) in [
        ("txnType", "04"),
        ("txnSubType", "00"),
        ("orderId", "R0001abcd"),
        ("txnTime", "20220903075448"),
        ("txnAmt", "5"),
        ("origQryId", "512209110416475616528"),
        ("merId", MER_ID),
        ("backUrl", BACK_URL),
        ("reqReserved", payment_id().as_str()),
    ] {
        assert_eq!(form.get(key).map(String::as_str), Some(value), "{key}");
    }
    let merchant_key = RsaVerifier::from_pem(&pki.merchant_public_pem).expect("public");
    assert!(sign::signature_verifies(&form, &merchant_key));
    let mut expected = wire::refund_query_fields(&merchant(), "R0001abcd", refund.requested_at)
        .expect("query fields");
    expected.insert("certId".into(), form["certId"].clone());
    expected.insert("signature".into(), query["signature"].clone());
    assert_eq!(
        query, expected,
        "the query names the refund's orderId and txnTime"
    );
    assert!(sign::signature_verifies(&query, &merchant_key));
}

// ---- refund notifications ----

/// A refund's `backUrl` notification as UnionPay sends it, signed with `key_pem` and carrying
/// `cert_pem`: txnType 04, `orderId` our refund number, `reqReserved` echoed.
fn signed_refund_notification(changes: &[(&str, &str)], key_pem: &str, cert_pem: &str) -> Fields {
    let id = payment_id();
    let mut notice = fields(&[
        ("accessType", "0"),
        ("bizType", "000000"),
        ("currencyCode", "156"),
        ("encoding", "UTF-8"),
        ("merId", MER_ID),
        ("orderId", "R0001abcd"),
        ("origQryId", "512209110416475616528"),
        ("queryId", "512209110416475616529"),
        ("reqReserved", id.as_str()),
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        ("settleAmt", "5"),
        ("settleCurrencyCode", "156"),
        ("signMethod", "01"),
        ("signPubKeyCert", &crlf(cert_pem)),
        ("txnAmt", "5"),
        ("txnSubType", "00"),
        ("txnTime", "20220903075448"),
        ("txnType", "04"),
        ("version", "5.1.0"),
    ]);
    notice.extend(fields(changes));
    notice.retain(|_, value| value != "<absent>");
    sign::sign(&mut notice, &RsaSigner::from_pem(key_pem).expect("key"));
    notice
}

#[test]
fn refund_callbacks_verify_and_map_every_status() {
    let pki = pki();
    let now = valid_now();
    let provider = provider(now);
    let verify = |changes: &[(&str, &str)]| {
        let notice = signed_refund_notification(changes, &pki.signer_key_pem, &pki.signer_pem);
        refund(provider.verify_callback(&http::HeaderMap::new(), &form(&notice), now))
    };
    let expected = |state| RefundNotice {
        notify_id: "512209110416475616529".into(),
        payment_id: payment_id(),
        refund_no: "R0001abcd".into(),
        state,
        amount_minor: 5,
    };
    for code in ["00", "A6"] {
        assert_eq!(
            verify(&[("respCode", code)]),
            Ok(expected(RefundState::Succeeded)),
            "{code}"
        );
    }
    for code in ["03", "05"] {
        assert_eq!(
            verify(&[("respCode", code)]),
            Ok(expected(RefundState::Processing)),
            "{code}"
        );
    }
    for code in ["01", "33", "34"] {
        assert_eq!(
            verify(&[("respCode", code), ("respMsg", "余额不足")]),
            Ok(expected(RefundState::Failed(format!(
                "UnionPay refund R0001abcd: {code} 余额不足"
            )))),
            "{code}"
        );
    }
    assert_eq!(
        verify(&[("currencyCode", "<absent>")]),
        Ok(expected(RefundState::Succeeded)),
        "currencyCode is checked when present"
    );
}

#[test]
fn refund_callbacks_that_fail_verification_are_refused_not_passed_on() {
    let pki = pki();
    let now = valid_now();
    let provider = provider(now);
    let headers = http::HeaderMap::new();
    let notice = signed_refund_notification(&[], &pki.signer_key_pem, &pki.signer_pem);
    let refused =
        |body: &[u8], at: Timestamp| match refund(provider.verify_callback(&headers, body, at)) {
            Err(rejection) => rejection,
            other => panic!("{other:?}"),
        };
    let bad_signature = |r: CallbackRejection| matches!(r, CallbackRejection::BadSignature(_));
    let mut tampered = notice.clone();
    tampered.insert("txnAmt".into(), "10".into());
    assert!(bad_signature(refused(&form(&tampered), now)));
    let mut moved = notice.clone();
    moved.insert("reqReserved".into(), "01ARZ3NDEKTSV4RRFFQ69G5FAV".into());
    assert!(
        bad_signature(refused(&form(&moved), now)),
        "reqReserved is signed"
    );
    let (from, until) = test_pki::validity_s(&pki.signer_pem);
    assert!(bad_signature(refused(
        &form(&notice),
        Timestamp::from_unix_s(until + 1)
    )));
    assert!(bad_signature(refused(
        &form(&notice),
        Timestamp::from_unix_s(from - 1)
    )));
    let other = signed_refund_notification(&[], &pki.other_company_key_pem, &pki.other_company_pem);
    assert!(bad_signature(refused(&form(&other), now)));
    let mut unsigned = notice.clone();
    unsigned.remove("signature");
    assert!(bad_signature(refused(&form(&unsigned), now)));

    let verify = |changes: &[(&str, &str)]| {
        let notice = signed_refund_notification(changes, &pki.signer_key_pem, &pki.signer_pem);
        refused(&form(&notice), now)
    };
    assert_eq!(
        verify(&[("merId", "777290058000000")]),
        CallbackRejection::WrongMerchant("777290058000000".into())
    );
    for change in [
        ("reqReserved", "<absent>"),
        ("reqReserved", "not-a-payment"),
        ("orderId", "R-1"),
        ("queryId", ""),
        ("txnAmt", "0"),
        ("txnAmt", "0.05"),
        ("currencyCode", "840"),
        ("respCode", "<absent>"),
    ] {
        assert!(
            matches!(verify(&[change]), CallbackRejection::Malformed(_)),
            "{change:?}"
        );
    }
}

#[test]
fn each_notification_comes_back_as_what_its_verified_txn_type_says() {
    let pki = pki();
    let now = valid_now();
    let provider = provider(now);
    let headers = http::HeaderMap::new();
    let paid = form(&signed_notification(
        &[],
        &pki.signer_key_pem,
        &pki.signer_pem,
    ));
    let got = provider.verify_callback(&headers, &paid, now);
    assert!(
        matches!(&got, Ok(Verified::Payment(n)) if n.status == NotifiedStatus::Paid),
        "{got:?}"
    );
    let refunded = signed_refund_notification(&[], &pki.signer_key_pem, &pki.signer_pem);
    let got = provider.verify_callback(&headers, &form(&refunded), now);
    assert!(
        matches!(&got, Ok(Verified::Refund(r)) if r.state == RefundState::Succeeded),
        "{got:?}"
    );
    // A cancel shares the backUrl but is neither; unreadable forms are refused unverified.
    let cancel =
        signed_refund_notification(&[("txnType", "31")], &pki.signer_key_pem, &pki.signer_pem);
    assert!(matches!(
        provider.verify_callback(&headers, &form(&cancel), now),
        Err(CallbackRejection::Malformed(_))
    ));
    for body in [&b"a=1&a=2"[..], b"\xff=1"] {
        assert!(matches!(
            provider.verify_callback(&headers, body, now),
            Err(CallbackRejection::Malformed(_))
        ));
    }
    assert!(matches!(
        provider.verify_callback(&headers, b"", now),
        Err(CallbackRejection::BadSignature(_))
    ));
}

#[test]
fn a_refund_notification_with_a_bad_signature_is_a_signature_failure() {
    let pki = pki();
    let now = valid_now();
    let provider = provider(now);
    let headers = http::HeaderMap::new();
    let forged =
        signed_refund_notification(&[], &pki.other_company_key_pem, &pki.other_company_pem);
    assert!(matches!(
        provider.verify_callback(&headers, &form(&forged), now),
        Err(CallbackRejection::BadSignature(_))
    ));
    // Unreadable as a refund too: the signature is checked before the content is read.
    let mut tampered = signed_refund_notification(&[], &pki.signer_key_pem, &pki.signer_pem);
    tampered.insert("reqReserved".into(), "not-a-payment".into());
    assert!(matches!(
        provider.verify_callback(&headers, &form(&tampered), now),
        Err(CallbackRejection::BadSignature(_))
    ));
}
