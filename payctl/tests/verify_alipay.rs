//! `payctl verify-callback --provider alipay`: a form notification signed (RSA2) by a key made
//! here standing in for Alipay's.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TempDir, payctl, rsa_key, sign_base64};

const APP_ID: &str = "2021000000000001";
const SELLER_ID: &str = "2088000000000001";

/// The decoded parameters of a paid trade notification, without `sign` and `sign_type`.
fn params(total_amount: &str) -> Vec<(&'static str, String)> {
    [
        ("app_id", APP_ID),
        ("auth_app_id", APP_ID),
        ("buyer_id", "2088102177846880"),
        ("charset", "utf-8"),
        ("gmt_create", "2019-08-15 15:56:22"),
        ("notify_id", "2019081500222155624046591412345678"),
        ("notify_time", "2019-08-15 15:56:24"),
        ("notify_type", "trade_status_sync"),
        ("out_trade_no", "01J0000000000000000000PAY1"),
        ("seller_id", SELLER_ID),
        ("subject", "测试 order"),
        ("total_amount", total_amount),
        ("trade_no", "2019081522001446881000012345"),
        ("trade_status", "TRADE_SUCCESS"),
        ("version", "1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

/// What Alipay signs: sorted `k=v` joined by `&`, raw values (`params` is already sorted).
fn content(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The raw request: the form body url-encoded, `sign` over `signed`, carrying `sent`.
fn request(sign: &str, sent: &[(&str, String)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in sent {
        form.append_pair(k, v);
    }
    let body = form
        .append_pair("sign_type", "RSA2")
        .append_pair("sign", sign)
        .finish();
    format!(
        "POST /callbacks/alipay HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded;charset=utf-8\r\n\r\n{body}"
    )
}

#[test]
fn valid_tampered_and_usage() {
    let dir = TempDir::new("alipay");
    let (key, public_pem) = rsa_key();
    let public = dir.write("alipay_public.pem", public_pem);
    let signed = params("1.00");
    let sign = sign_base64(&key, content(&signed).as_bytes());
    let good = dir.write("good.http", request(&sign, &signed));
    let tampered = dir.write("tampered.http", request(&sign, &params("100.00")));
    let run = |file: &str, app_id: &str| {
        payctl(&[
            "verify-callback",
            "--provider",
            "alipay",
            "--request",
            file,
            "--public-key",
            &public,
            "--app-id",
            app_id,
            "--seller-id",
            SELLER_ID,
        ])
    };

    let (code, out, err) = run(&good, APP_ID);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("request         POST /callbacks/alipay"),
        "{out}"
    );
    assert!(
        out.contains(&format!("  | {}\n", content(&signed))),
        "the exact signed content, decoded and without sign/sign_type: {out}"
    );
    assert!(out.contains("signature       valid"), "{out}");
    assert!(
        out.contains("payment_id=01J0000000000000000000PAY1 status=Paid amount_minor=100 currency=CNY notify_id=2019081500222155624046591412345678 provider_trade_no=2019081522001446881000012345"),
        "{out}"
    );

    let (code, out, _) = run(&tampered, APP_ID);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("total_amount=100.00"), "{out}");
    assert!(
        out.contains("does not verify with the Alipay public key"),
        "{out}"
    );

    let (code, out, _) = run(&good, "2021000000000002");
    assert_eq!(code, 1, "another app's notification: {out}");
    assert!(out.contains("another merchant or app"), "{out}");

    let (code, out, err) = payctl(&[
        "verify-callback",
        "--provider",
        "alipay",
        "--request",
        &good,
        "--public-key",
        &public,
    ]);
    assert_eq!(code, 2, "missing --app-id: {out}");
    assert!(err.contains("--app-id"), "{err}");
}
