//! The sandbox as Alipay's gateway: `POST /gateway.do` (form-encoded, RSA2), the
//! `trade_status_sync` form notifications, and the trade bill zip (`GET /alipay/bills/{token}`).
//! Written independently of the adapter in `shared`.

mod amount;
mod bill;
mod gateway;
mod notify;
mod sign;

#[cfg(test)]
mod tests;

use anyhow::Context;
use aws_lc_rs::rsa::KeyPair;

use super::keys;

pub(crate) use bill::bill_file;
pub(crate) use gateway::gateway;
pub(crate) use notify::{NotifyJob, paid_job, spawn};

/// The Alipay section of the sandbox options.
#[derive(Clone, Debug)]
pub struct AlipayOptions {
    /// The one merchant app it accepts.
    pub app_id: String,
    /// Verifies the app's requests (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY` PEM).
    pub app_public_key_pem: String,
    /// Signs answers and notifications as Alipay (PKCS#8 PEM).
    pub alipay_private_key_pem: String,
    /// `seller_id` in notifications; omitted when `None`.
    pub seller_id: Option<String>,
}

/// The parsed Alipay configuration.
pub(crate) struct AlipayConfig {
    pub app_id: String,
    pub app_public_der: Vec<u8>,
    pub alipay_key: KeyPair,
    pub seller_id: Option<String>,
}

impl AlipayConfig {
    pub fn parse(opts: AlipayOptions) -> anyhow::Result<Self> {
        let app_public_der = keys::parse_public_key(&opts.app_public_key_pem)
            .context("alipay.app_public_key_pem")?;
        let alipay_key = keys::parse_private_key(&opts.alipay_private_key_pem)
            .context("alipay.alipay_private_key_pem")?;
        Ok(Self {
            app_id: opts.app_id,
            app_public_der,
            alipay_key,
            seller_id: opts.seller_id,
        })
    }
}

/// `application/x-www-form-urlencoded` pairs, in order (`+` and `%XX` decoded).
pub(crate) fn decode_form(text: &str) -> Vec<(String, String)> {
    let Ok(mut url) = reqwest::Url::parse("http://form.invalid/") else {
        return Vec::new();
    };
    url.set_query(Some(text));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Encodes pairs as `application/x-www-form-urlencoded`.
pub(crate) fn encode_form(pairs: &[(String, String)]) -> String {
    let Ok(mut url) = reqwest::Url::parse("http://form.invalid/") else {
        return String::new();
    };
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}
