//! `payctl verify-callback --provider unionpay`: a `backUrl` notification signed by a signer
//! certificate that `openssl` issues here under a root and intermediate it also makes.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{TempDir, now_s, openssl, payctl, rsa_key_from_pem, sign_base64};

const MER_ID: &str = "777290058110048";
const COMPANY: &str = "中国银联股份有限公司";

/// `ca-root.pem`, `ca-intermediate.pem` and `signer.pem` (+ `.key`) in `dir`, valid from now.
fn pki(dir: &TempDir) {
    std::fs::write(
        dir.path("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(
        dir.path("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(
        &dir.0,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-root.key",
            "-out",
            "ca-root.pem",
            "-days",
            "3650",
            "-subj",
            "/C=CN/O=Test Root CA/CN=Test Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let signer = format!("/C=cn/O=CFCA OCA1/CN=041@8310000000083040@{COMPANY}@00016495");
    for (name, subject, issuer, ext, serial) in [
        (
            "ca-intermediate",
            "/C=CN/O=Test CA/CN=Test OCA1",
            "ca-root",
            "ca.ext",
            "2",
        ),
        (
            "signer",
            signer.as_str(),
            "ca-intermediate",
            "leaf.ext",
            "69678957876",
        ),
    ] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let (ca_pem, ca_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
        openssl(
            &dir.0,
            &[
                "req", "-new", "-utf8", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-subj",
                subject, "-out", &csr,
            ],
        );
        openssl(
            &dir.0,
            &[
                "x509",
                "-req",
                "-sha256",
                "-days",
                "365",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-set_serial",
                serial,
                "-extfile",
                ext,
                "-out",
                &pem,
            ],
        );
    }
}

/// A consume notification's fields, before `signature`.
fn fields(signer_pem: &str, txn_amt: &str) -> BTreeMap<String, String> {
    [
        ("accessType", "0"),
        ("bizType", "000000"),
        ("currencyCode", "156"),
        ("encoding", "UTF-8"),
        ("merId", MER_ID),
        ("orderId", "01J0000000000000000000PAY1"),
        ("queryId", "782501011200000012345"),
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        ("settleAmt", txn_amt),
        ("signMethod", "01"),
        ("signPubKeyCert", signer_pem),
        ("traceNo", "123456"),
        ("txnAmt", txn_amt),
        ("txnSubType", "07"),
        ("txnTime", "20250101120000"),
        ("txnType", "01"),
        ("version", "5.1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `k=v&...` over the fields, raw values (BTreeMap order is UnionPay's).
fn content(fields: &BTreeMap<String, String>) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The raw request: `sent` with a `signature` made over `signed`.
fn request(signature: &str, sent: &BTreeMap<String, String>) -> String {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(sent.iter())
        .append_pair("signature", signature)
        .finish();
    format!(
        "POST /callbacks/unionpay HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded;charset=UTF-8\r\n\r\n{body}"
    )
}

#[test]
fn valid_tampered_expired_and_usage() {
    let dir = TempDir::new("unionpay");
    pki(&dir);
    let signer_pem = dir.read("signer.pem");
    let key = rsa_key_from_pem(&dir.read("signer.key"));
    let signed = fields(&signer_pem, "100");
    let digest = sha256_hex(&content(&signed));
    let signature = sign_base64(&key, digest.as_bytes());
    let good = dir.write("good.http", request(&signature, &signed));
    let tampered = dir.write(
        "tampered.http",
        request(&signature, &fields(&signer_pem, "10000")),
    );
    let (root, intermediate) = (dir.path("ca-root.pem"), dir.path("ca-intermediate.pem"));
    let (root, intermediate) = (root.to_str().unwrap(), intermediate.to_str().unwrap());
    let run = |file: &str, root: &str, at: i64| {
        let at = at.to_string();
        payctl(&[
            "verify-callback",
            "--provider",
            "unionpay",
            "--request",
            file,
            "--root-cert",
            root,
            "--intermediate-cert",
            intermediate,
            "--merchant-id",
            MER_ID,
            "--at-unix-s",
            &at,
        ])
    };
    let at = now_s() + 60;

    let (code, out, err) = run(&good, root, at);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("request         POST /callbacks/unionpay"),
        "{out}"
    );
    assert!(
        out.contains("  | accessType=0&bizType=000000&currencyCode=156&encoding=UTF-8&merId=777290058110048&orderId=01J0000000000000000000PAY1&queryId=782501011200000012345&respCode=00&respMsg=成功[0000000]&settleAmt=100&signMethod=01&signPubKeyCert=-----BEGIN CERTIFICATE-----\n"),
        "the signed content, decoded, the certificate's lines included: {out}"
    );
    assert!(
        out.contains("-----END CERTIFICATE-----\n  | &traceNo=123456&txnAmt=100&txnSubType=07&txnTime=20250101120000&txnType=01&version=5.1.0\n"),
        "{out}"
    );
    assert!(out.contains(&format!("signed sha256   {digest} ")), "{out}");
    assert!(out.contains("signature       valid"), "{out}");
    assert!(
        out.contains("payment_id=01J0000000000000000000PAY1 status=Paid amount_minor=100 currency=CNY notify_id=782501011200000012345 provider_trade_no=782501011200000012345"),
        "{out}"
    );

    let (code, out, _) = run(&tampered, root, at);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("txnAmt=10000"), "{out}");
    assert!(
        out.contains("signature missing or does not verify"),
        "{out}"
    );

    let (code, out, _) = run(&good, root, at + 400 * 86_400);
    assert_eq!(code, 1, "the signer certificate has expired by then: {out}");
    assert!(out.contains("not valid at unix second"), "{out}");

    let (code, _, err) = payctl(&[
        "verify-callback",
        "--provider",
        "unionpay",
        "--request",
        &good,
        "--intermediate-cert",
        intermediate,
        "--merchant-id",
        MER_ID,
    ]);
    assert_eq!(code, 2, "missing --root-cert: {err}");
    assert!(err.contains("--root-cert"), "{err}");
    let (code, _, err) = run(&good, &good, at);
    assert_eq!(code, 2, "a root that is not a certificate: {err}");
}
