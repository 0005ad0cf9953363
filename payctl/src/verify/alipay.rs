//! `--provider alipay`: `--public-key` (Alipay's), `--app-id`, optional `--seller-id`. Alipay
//! notifications carry no delivery time, so there is no replay window and no clock.

use anyhow::Context as _;
use shared::crypto::RsaVerifier;
use shared::ports::Verified;
use shared::provider::alipay;

use super::{Args, Checked, read_text, required};
use crate::raw_request::RawRequest;

pub fn check(args: &Args, request: &RawRequest) -> anyhow::Result<Checked> {
    let key_path = required(args.public_key.as_deref(), "--public-key <pem>", "alipay")?;
    let app_id = required(args.app_id.as_deref(), "--app-id", "alipay")?;
    let key = RsaVerifier::from_pem(&read_text(key_path)?).context("--public-key")?;
    let (content, outcome) =
        alipay::examine_notification(&request.body, &key, app_id, args.seller_id.as_deref());
    // Alipay sends no refund notifications: whatever verifies is a payment notification.
    Ok((
        content.map(String::into_bytes),
        None,
        outcome.map(Verified::Payment),
    ))
}
