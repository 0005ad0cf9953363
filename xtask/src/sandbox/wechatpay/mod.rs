//! The sandbox as WeChat Pay API v3 (Native pay): `WECHATPAY2-SHA256-RSA2048` request
//! authentication, platform-signed answers, AES-256-GCM sealed `TRANSACTION.SUCCESS` and
//! `REFUND.SUCCESS` notifications, and the trade bill (`bill`). Written independently of the
//! adapter in `shared`.

mod api;
mod bill;
mod notify;
mod sign;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::{Context, ensure};
use aws_lc_rs::rsa::KeyPair;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Extension, Router};

use super::keys;
use super::state::Shared;

pub(crate) use notify::{NotifyJob, paid_job, refund_job, spawn};

/// The WeChat Pay section of the sandbox options.
#[derive(Clone)]
pub struct WechatPayOptions {
    /// The one merchant it accepts.
    pub mchid: String,
    /// The app bound to that merchant.
    pub appid: String,
    /// Serial of the merchant API certificate (`serial_no` in the Authorization header).
    pub merchant_serial_no: String,
    /// Verifies the merchant's requests (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY` PEM).
    pub merchant_public_key_pem: String,
    /// Signs answers and notifications as the platform (PKCS#8 PEM).
    pub platform_private_key_pem: String,
    /// `Wechatpay-Serial` of every signature: `PUB_KEY_ID_...` (public-key mode).
    pub platform_public_key_id: String,
    /// The APIv3 key that seals notification resources: exactly 32 bytes.
    pub api_v3_key: Vec<u8>,
}

impl std::fmt::Debug for WechatPayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayOptions")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial_no", &self.merchant_serial_no)
            .field("platform_public_key_id", &self.platform_public_key_id)
            .finish_non_exhaustive()
    }
}

/// The parsed WeChat Pay configuration.
pub(crate) struct WechatPayConfig {
    pub mchid: String,
    pub appid: String,
    pub merchant_serial_no: String,
    pub merchant_public_der: Vec<u8>,
    pub platform_key: KeyPair,
    pub platform_public_key_id: String,
    pub api_v3_key: Vec<u8>,
}

impl WechatPayConfig {
    pub fn parse(opts: WechatPayOptions) -> anyhow::Result<Self> {
        let merchant_public_der = keys::parse_public_key(&opts.merchant_public_key_pem)
            .context("wechatpay.merchant_public_key_pem")?;
        let platform_key = keys::parse_private_key(&opts.platform_private_key_pem)
            .context("wechatpay.platform_private_key_pem")?;
        ensure!(
            opts.api_v3_key.len() == 32,
            "wechatpay.api_v3_key must be 32 bytes"
        );
        ensure!(
            !opts.platform_public_key_id.is_empty(),
            "wechatpay.platform_public_key_id is required"
        );
        Ok(Self {
            mchid: opts.mchid,
            appid: opts.appid,
            merchant_serial_no: opts.merchant_serial_no,
            merchant_public_der,
            platform_key,
            platform_public_key_id: opts.platform_public_key_id,
            api_v3_key: opts.api_v3_key,
        })
    }
}

/// The `/v3/pay/transactions/*` and `/v3/bill/tradebill` routes, behind WeChat Pay's
/// authentication and answer signing, and the bill download, authenticated but answered unsigned.
pub(crate) fn routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let download = Router::new()
        .route("/v3/billdownload/file", get(bill::download))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            api::download_layer,
        ));
    Router::new()
        .route("/v3/pay/transactions/native", post(api::create))
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            get(api::query),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            post(api::close),
        )
        .route("/v3/bill/tradebill", get(bill::trade_bill))
        .route("/v3/refund/domestic/refunds", post(api::refund::create))
        .route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            get(api::refund::query),
        )
        .layer(middleware::from_fn_with_state(shared, api::layer))
        .merge(download)
        .layer(Extension(Arc::new(bill::Bills::default())))
}
