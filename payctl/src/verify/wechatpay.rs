//! `--provider wechatpay`: platform keys (`--platform-cert` and/or `--platform-public-key` with
//! `--public-key-id`), `--api-v3-key`, `--merchant-id` (mchid), `--app-id`. The replay window is
//! checked at `--at-unix-s` (or now).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
use shared::crypto::{RsaSigner, RsaVerifier};
use shared::domain::Timestamp;
use shared::ports::PaymentProvider as _;
use shared::provider::wechatpay::{
    self, WechatPayConfig, WechatPayProvider, platform_certificates, platform_public_key,
};

use super::{Args, Checked, read, read_text, required};
use crate::raw_request::RawRequest;

pub fn check(args: &Args, request: &RawRequest, now: Timestamp) -> anyhow::Result<Checked> {
    let mchid = required(
        args.merchant_id.as_deref(),
        "--merchant-id (mchid)",
        "wechatpay",
    )?;
    let appid = required(args.app_id.as_deref(), "--app-id", "wechatpay")?;
    let key_path = required(
        args.api_v3_key.as_deref(),
        "--api-v3-key <file>",
        "wechatpay",
    )?;
    let mut api_v3_key = read(key_path)?;
    for suffix in [&b"\n"[..], b"\r"] {
        if api_v3_key.ends_with(suffix) {
            api_v3_key.pop();
        }
    }
    let config = WechatPayConfig {
        base_url: "https://api.mch.weixin.qq.com".to_owned(),
        mchid: mchid.to_owned(),
        appid: appid.to_owned(),
        merchant_serial_no: "PAYCTL".to_owned(),
        merchant_key: throwaway_merchant_key()?,
        platform_keys: platform_keys(args)?,
        api_v3_key,
        notify_url: "https://localhost/callbacks/wechatpay".to_owned(),
        timeout: Duration::from_secs(1),
    };
    let provider = WechatPayProvider::new(config, Arc::new(shared::clock::SystemClock))
        .context("wechatpay settings")?;
    let (headers, body) = (&request.headers, &request.body);
    Ok((
        wechatpay::platform_signed_message(headers, body).ok(),
        None,
        provider.verify_callback(headers, body, now),
    ))
}

/// Every `--platform-cert` bundle's certificates, then each `--platform-public-key` under the
/// `--public-key-id` at the same position.
fn platform_keys(args: &Args) -> anyhow::Result<Vec<(String, RsaVerifier)>> {
    ensure!(
        args.platform_public_key.len() == args.public_key_id.len(),
        "each --platform-public-key needs its --public-key-id (got {} keys, {} ids)",
        args.platform_public_key.len(),
        args.public_key_id.len()
    );
    let mut keys = Vec::new();
    for path in &args.platform_cert {
        let bundle = platform_certificates(&read_text(path)?)
            .with_context(|| format!("--platform-cert {}", path.display()))?;
        keys.extend(bundle);
    }
    for (path, id) in args.platform_public_key.iter().zip(&args.public_key_id) {
        let key = platform_public_key(id, &read_text(path)?)
            .with_context(|| format!("--platform-public-key {}", path.display()))?;
        keys.push(key);
    }
    if keys.is_empty() {
        bail!(
            "--platform-cert <pem> or --platform-public-key <pem> --public-key-id PUB_KEY_ID_... is required for wechatpay"
        );
    }
    Ok(keys)
}

/// The adapter wants our merchant key to sign requests; verifying never uses it, and payctl
/// sends nothing, so a fresh key stands in and no secret is needed.
fn throwaway_merchant_key() -> anyhow::Result<RsaSigner> {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|e| anyhow::anyhow!("generating a stand-in merchant key: {e}"))?;
    let der: Pkcs8V1Der<'_> = key
        .as_der()
        .map_err(|e| anyhow::anyhow!("encoding the stand-in merchant key: {e}"))?;
    let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref()));
    Ok(RsaSigner::from_pem(&pem_text)?)
}
