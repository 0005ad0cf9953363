//! `payctl verify-callback --provider wechatpay`: a v3 notification signed by a platform key
//! made here (bare public key with a `PUB_KEY_ID_`, or a certificate made by `openssl`), its
//! resource sealed with an APIv3 key made here.

#![allow(clippy::unwrap_used)]

mod common;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rsa::KeyPair;
use base64::Engine as _;
use common::{TempDir, openssl, payctl, rsa_key, rsa_key_from_pem, sign_base64};

const MCHID: &str = "1900000001";
const APPID: &str = "wxd678efh567hg6787";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0119000000012025000000000000";
const API_V3_KEY: &[u8; 32] = b"0123456789abcdef0123456789ABCDEF";
const AT: i64 = 1_800_000_000;

/// The notification body: the paid transaction sealed under [`API_V3_KEY`].
fn body(total: i64) -> String {
    let transaction = format!(
        r#"{{"mchid":"{MCHID}","appid":"{APPID}","out_trade_no":"01J0000000000000000000PAY1","transaction_id":"4200000000202501010000000001","trade_type":"NATIVE","trade_state":"SUCCESS","amount":{{"total":{total},"payer_total":{total},"currency":"CNY","payer_currency":"CNY"}}}}"#
    );
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, API_V3_KEY).unwrap());
    let nonce = "fdasflkja484";
    let mut sealed = transaction.into_bytes();
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(nonce.as_bytes()).unwrap(),
        Aad::from("transaction"),
        &mut sealed,
    )
    .unwrap();
    let ciphertext = base64::engine::general_purpose::STANDARD.encode(sealed);
    format!(
        r#"{{"id":"EV-2018022511223320873","create_time":"2025-01-01T10:00:00+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"{ciphertext}","associated_data":"transaction","nonce":"{nonce}"}}}}"#
    )
}

/// The raw request carrying `sent`, signed over `signed` by `key` named `serial`.
fn request(key: &KeyPair, serial: &str, signed: &str, sent: &str) -> String {
    let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    let signature = sign_base64(key, format!("{AT}\n{nonce}\n{signed}\n").as_bytes());
    format!(
        "POST /callbacks/wechatpay HTTP/1.1\r\nContent-Type: application/json\r\nWechatpay-Timestamp: {AT}\r\nWechatpay-Nonce: {nonce}\r\nWechatpay-Serial: {serial}\r\nWechatpay-Signature: {signature}\r\nWechatpay-Signature-Type: WECHATPAY2-SHA256-RSA2048\r\n\r\n{sent}"
    )
}

#[test]
fn valid_tampered_stale_and_usage() {
    let dir = TempDir::new("wechatpay");
    let (key, public_pem) = rsa_key();
    let public = dir.write("platform_public.pem", public_pem);
    let api_v3_key = dir.write("apiv3.key", [&API_V3_KEY[..], b"\n"].concat());
    let paid = body(100);
    let good = dir.write("good.http", request(&key, PUB_KEY_ID, &paid, &paid));
    let tampered_body = paid.replace("EV-2018022511223320873", "EV-2018022511223320874");
    let tampered = dir.write(
        "tampered.http",
        request(&key, PUB_KEY_ID, &paid, &tampered_body),
    );
    let base = [
        "verify-callback",
        "--provider",
        "wechatpay",
        "--api-v3-key",
        &api_v3_key,
        "--merchant-id",
        MCHID,
        "--app-id",
        APPID,
    ];
    let run = |file: &str, at: i64| {
        let at = at.to_string();
        let mut args = base.to_vec();
        args.extend([
            "--request",
            file,
            "--platform-public-key",
            &public,
            "--public-key-id",
            PUB_KEY_ID,
            "--at-unix-s",
            &at,
        ]);
        payctl(&args)
    };

    let (code, out, err) = run(&good, AT + 10);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("request         POST /callbacks/wechatpay"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "each \\n-terminated):\n  | {AT}\n  | 5K8264ILTKCH16CQ2502SI8ZNMTM67VS\n  | {paid}\n"
        )),
        "the signed message, line by line: {out}"
    );
    assert!(out.contains("signature       valid"), "{out}");
    assert!(
        out.contains("payment_id=01J0000000000000000000PAY1 status=Paid amount_minor=100 currency=CNY notify_id=EV-2018022511223320873 provider_trade_no=4200000000202501010000000001"),
        "{out}"
    );

    let (code, out, _) = run(&tampered, AT + 10);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("does not verify with platform key {PUB_KEY_ID}")),
        "{out}"
    );

    let (code, out, _) = run(&good, AT + 300);
    assert_eq!(code, 1, "outside the 300 s window: {out}");
    assert!(out.contains("off the clock"), "{out}");

    let mut no_key_id = base.to_vec();
    no_key_id.extend(["--request", &good, "--platform-public-key", &public]);
    let (code, _, err) = payctl(&no_key_id);
    assert_eq!(code, 2, "a public key without its id: {err}");
    let mut no_keys = base.to_vec();
    no_keys.extend(["--request", &good]);
    let (code, _, err) = payctl(&no_keys);
    assert_eq!(code, 2, "no platform key: {err}");
    assert!(err.contains("--platform-cert"), "{err}");
}

#[test]
fn platform_certificate_mode() {
    let dir = TempDir::new("wechatpay-cert");
    let serial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    openssl(
        &dir.0,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "platform.key",
            "-out",
            "platform.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Tenpay.com Root CA",
            "-set_serial",
            &format!("0x{serial}"),
        ],
    );
    let key = rsa_key_from_pem(&dir.read("platform.key"));
    let api_v3_key = dir.write("apiv3.key", API_V3_KEY);
    let paid = body(100);
    let good = dir.write("good.http", request(&key, serial, &paid, &paid));
    let cert = dir.path("platform.pem");
    let at = (AT + 1).to_string();
    let (code, out, err) = payctl(&[
        "verify-callback",
        "--provider",
        "wechatpay",
        "--request",
        &good,
        "--platform-cert",
        cert.to_str().unwrap(),
        "--api-v3-key",
        &api_v3_key,
        "--merchant-id",
        MCHID,
        "--app-id",
        APPID,
        "--at-unix-s",
        &at,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("signature       valid"), "{out}");

    let (code, out, _) = payctl(&[
        "verify-callback",
        "--provider",
        "wechatpay",
        "--request",
        &good,
        "--platform-cert",
        cert.to_str().unwrap(),
        "--api-v3-key",
        &api_v3_key,
        "--merchant-id",
        "1900000002",
        "--app-id",
        APPID,
        "--at-unix-s",
        &at,
    ]);
    assert_eq!(code, 1, "another merchant's notification: {out}");
    assert!(out.contains("another merchant or app"), "{out}");
}
