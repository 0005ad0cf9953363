//! `payctl verify-callback` as an operator runs it: exit codes and what it prints.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("payctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A key pair; the public half written as PEM to `path`.
fn key(path: &Path) -> KeyPair {
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let public: PublicKeyX509Der<'_> = key.public_key().as_der().unwrap();
    std::fs::write(
        path,
        pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref().to_vec())),
    )
    .unwrap();
    key
}

/// A raw sandbox notification signed by `key` at `timestamp` over an amount of 100; any other
/// `amount_minor` in the body is a tampered request.
fn request(key: &KeyPair, timestamp: i64, amount_minor: i64) -> Vec<u8> {
    let body = format!(
        r#"{{"notify_id":"N1","merchant_id":"M1","out_trade_no":"01J00000000000000000000000","trade_no":"T1","status":"PAID","amount_minor":{amount_minor},"currency":"CNY"}}"#
    );
    let message = format!(
        "{timestamp}\nabc\n{}\n",
        body.replace(&format!(":{amount_minor},"), ":100,")
    );
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .unwrap();
    let signature = base64::engine::general_purpose::STANDARD.encode(signature);
    format!(
        "POST /callbacks/sandbox HTTP/1.1\r\nContent-Type: application/json\r\nX-Sandbox-Timestamp: {timestamp}\r\nX-Sandbox-Nonce: abc\r\nX-Sandbox-Signature: {signature}\r\n\r\n{body}"
    )
    .into_bytes()
}

fn payctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_payctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn valid_invalid_and_usage() {
    let dir = dir();
    let public = dir.join("sandbox_public.pem");
    let key = key(&public);
    let (good, tampered, stale) = (
        dir.join("good.http"),
        dir.join("tampered.http"),
        dir.join("stale.http"),
    );
    std::fs::write(&good, request(&key, 1_800_000_000, 100)).unwrap();
    std::fs::write(&tampered, request(&key, 1_800_000_000, 101)).unwrap();
    std::fs::write(&stale, request(&key, 1_799_999_000, 100)).unwrap();
    let run = |file: &Path| {
        payctl(&[
            "verify-callback",
            "--provider",
            "sandbox",
            "--request",
            file.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
            "--merchant-id",
            "M1",
            "--at-unix-s",
            "1800000010",
        ])
    };

    let (code, out) = run(&good);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signature       valid"), "{out}");
    assert!(
        out.contains("  | 1800000000\n  | abc\n"),
        "the signed content is shown line by line: {out}"
    );
    assert!(
        out.contains("payment_id=01J00000000000000000000000 status=Paid amount_minor=100"),
        "{out}"
    );

    let (code, out) = run(&tampered);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not verify"), "{out}");

    let (code, out) = run(&stale);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("off the clock"), "{out}");

    let (code, _) = payctl(&[
        "verify-callback",
        "--provider",
        "sandbox",
        "--request",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "missing --public-key is a usage error");
    let (code, _) = payctl(&["verify-callback", "--provider", "paypal", "--request", "x"]);
    assert_eq!(code, 2);
    let _ = std::fs::remove_dir_all(dir);
}
