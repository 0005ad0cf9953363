//! `--provider sandbox`: `--public-key`, `--merchant-id`.

use anyhow::Context as _;
use shared::crypto::RsaVerifier;
use shared::domain::Timestamp;
use shared::provider::sandbox;

use super::{Args, Checked, read_text, required};
use crate::raw_request::RawRequest;

pub fn check(args: &Args, request: &RawRequest, now: Timestamp) -> anyhow::Result<Checked> {
    let key_path = required(args.public_key.as_deref(), "--public-key <pem>", "sandbox")?;
    let merchant_id = required(args.merchant_id.as_deref(), "--merchant-id", "sandbox")?;
    let key = RsaVerifier::from_pem(&read_text(key_path)?).context("--public-key")?;
    let (headers, body) = (&request.headers, &request.body);
    Ok((
        sandbox::signed_content(headers, body).ok(),
        None,
        sandbox::verify_notification(&key, merchant_id, headers, body, now),
    ))
}
