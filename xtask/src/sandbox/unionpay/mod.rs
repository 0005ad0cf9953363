//! The sandbox as UnionPay's online payment gateway (ACP 5.1.0, QR consume): signMethod 01
//! request verification, signed answers carrying the signer certificate in `signPubKeyCert`,
//! and signed `backUrl` notifications of consumes and refunds; and its file transfer host
//! (settlement files).
//! Written independently of the adapter in `shared`.

mod file;
mod gateway;
mod notify;
mod sign;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::{Context, ensure};
use aws_lc_rs::rsa::KeyPair;
use axum::Router;
use axum::routing::post;

use super::keys;
use super::state::Shared;

pub(crate) use notify::{NotifyJob, paid_job, refund_job, spawn};

/// The UnionPay section of the sandbox options.
#[derive(Clone)]
pub struct UnionPayOptions {
    /// The one merchant it accepts (`merId`, 15 digits).
    pub mer_id: String,
    /// `certId` of the merchant's signing certificate: its serial number in decimal.
    pub merchant_cert_id: String,
    /// Verifies the merchant's requests (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY` PEM).
    pub merchant_public_key_pem: String,
    /// Signs answers and notifications as UnionPay (PKCS#8 PEM).
    pub signer_private_key_pem: String,
    /// The signer certificate (PEM) sent in `signPubKeyCert`; its key is the one above.
    pub signer_cert_pem: String,
}

impl std::fmt::Debug for UnionPayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionPayOptions")
            .field("mer_id", &self.mer_id)
            .field("merchant_cert_id", &self.merchant_cert_id)
            .finish_non_exhaustive()
    }
}

/// The parsed UnionPay configuration.
pub(crate) struct UnionPayConfig {
    pub mer_id: String,
    pub merchant_cert_id: String,
    pub merchant_public_der: Vec<u8>,
    pub signer_key: KeyPair,
    pub signer_cert_pem: String,
}

impl UnionPayConfig {
    pub fn parse(opts: UnionPayOptions) -> anyhow::Result<Self> {
        let merchant_public_der = keys::parse_public_key(&opts.merchant_public_key_pem)
            .context("unionpay.merchant_public_key_pem")?;
        let signer_key = keys::parse_private_key(&opts.signer_private_key_pem)
            .context("unionpay.signer_private_key_pem")?;
        let cert = pem::parse(opts.signer_cert_pem.trim()).context("unionpay.signer_cert_pem")?;
        ensure!(
            cert.tag() == "CERTIFICATE",
            "unionpay.signer_cert_pem must be a CERTIFICATE PEM"
        );
        ensure!(
            opts.mer_id.len() == 15 && opts.mer_id.bytes().all(|b| b.is_ascii_digit()),
            "unionpay.mer_id must be 15 digits"
        );
        ensure!(
            !opts.merchant_cert_id.is_empty()
                && opts.merchant_cert_id.bytes().all(|b| b.is_ascii_digit()),
            "unionpay.merchant_cert_id must be a decimal serial number"
        );
        Ok(Self {
            mer_id: opts.mer_id,
            merchant_cert_id: opts.merchant_cert_id,
            merchant_public_der,
            signer_key,
            signer_cert_pem: opts.signer_cert_pem,
        })
    }
}

/// `POST /gateway/api/backTransReq.do`, `POST /gateway/api/queryTrans.do`, and the file
/// transfer `POST /unionpay/file/` (UnionPay's separate file host, played on a path here).
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/gateway/api/backTransReq.do", post(gateway::back_trans))
        .route("/gateway/api/queryTrans.do", post(gateway::query_trans))
        .route(file::FILE_PATH, post(file::file_transfer))
}
