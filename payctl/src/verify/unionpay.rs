//! `--provider unionpay`: `--root-cert`, `--intermediate-cert`, `--merchant-id` (merId),
//! `--signer-cn`. The certificate validity is checked at `--at-unix-s` (or now).

use anyhow::Context as _;
use shared::crypto::sha256_hex;
use shared::domain::Timestamp;
use shared::provider::unionpay::{self, SignerTrust};

use super::{Args, Checked, read_text, required};
use crate::raw_request::RawRequest;

/// The company production signer certificates name in the third `@`-field of their CN.
pub const PRODUCTION_SIGNER_CN: &str = "中国银联股份有限公司";

pub fn check(args: &Args, request: &RawRequest, now: Timestamp) -> anyhow::Result<Checked> {
    let root = required(args.root_cert.as_deref(), "--root-cert <pem>", "unionpay")?;
    let intermediate = required(
        args.intermediate_cert.as_deref(),
        "--intermediate-cert <pem>",
        "unionpay",
    )?;
    let mer_id = required(
        args.merchant_id.as_deref(),
        "--merchant-id (merId)",
        "unionpay",
    )?;
    let trust = SignerTrust::new(
        &read_text(root)?,
        &read_text(intermediate)?,
        &args.signer_cn,
    )
    .context("--root-cert / --intermediate-cert")?;
    let (content, outcome) = unionpay::examine_notification(&trust, mer_id, &request.body, now);
    let digest = content.as_deref().map(|c| sha256_hex(c.as_bytes()));
    Ok((content.map(String::into_bytes), digest, outcome))
}
