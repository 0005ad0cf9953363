//! The WeChat Pay API v3 adapter, Native pay (the payer scans `code_url`).
//!
//! Requests carry a `WECHATPAY2-SHA256-RSA2048` Authorization header signed with the merchant
//! key. Answers and notifications are signed by the platform over `timestamp\nnonce\nbody\n` and
//! checked with the platform key that `Wechatpay-Serial` names: a certificate serial or a
//! `PUB_KEY_ID_...`, several at once so keys can rotate. Notifications carry the transaction
//! AES-GCM-encrypted under the APIv3 key; refund notifications (`REFUND.*`) come to the same
//! URL, which every refund request names, and carry the refund the same way.
//!
//! Layout: `keys` (platform keys, the signature check, AES-GCM), `wire` (pure request building
//! and answer/notification parsing), `bill` (the trade bill's address and its signed, SHA-1
//! checked download), `statement` (parsing the trade bill), this file (configuration, HTTP, the
//! port).

mod bill;
mod keys;
mod statement;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_trait::async_trait;

use crate::crypto::{RsaSigner, RsaVerifier};
use crate::domain::{AmountMinor, PaymentId, ProviderName, Timestamp};
use crate::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, Clock, CloseOutcome, PaymentProvider,
    ProviderCreate, ProviderCreated, ProviderError, ProviderRefund, ProviderTrade, RefundNotice,
    RefundState, Verified,
};

pub use bill::{DownloadTradeBillError, TRADE_BILL_BYTES_MAX};
pub use keys::{
    PLATFORM_KEYS_MAX, PUBLIC_KEY_ID_PREFIX, REPLAY_WINDOW_S, platform_certificates,
    platform_public_key,
};
pub use statement::{
    STATEMENT_LINES_MAX, StatementError, StatementKind, StatementLine, parse_statement,
};
pub use wire::{RefundResult, RefundStatus};

/// Answers larger than this are not WeChat Pay's; reading stops there.
const ANSWER_BYTES_MAX: usize = 1 << 20;

/// WeChat Pay refuses requests without a User-Agent.
const USER_AGENT: &str = concat!(
    "payments-shared/",
    env!("CARGO_PKG_VERSION"),
    " (wechatpay)"
);

pub struct WechatPayConfig {
    /// `https://api.mch.weixin.qq.com` in production.
    pub base_url: String,
    pub mchid: String,
    pub appid: String,
    /// Serial of the merchant API certificate that matches `merchant_key`.
    pub merchant_serial_no: String,
    pub merchant_key: RsaSigner,
    /// Platform keys by id: certificate serials (upper-case hex) and/or `PUB_KEY_ID_...` ids.
    /// See [`platform_certificates`] and [`platform_public_key`].
    pub platform_keys: Vec<(String, RsaVerifier)>,
    /// 32 bytes in production; 16 accepted for the SDKs' test vectors.
    pub api_v3_key: Vec<u8>,
    /// Where WeChat Pay sends notifications: our `/callbacks/wechatpay` route.
    pub notify_url: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for WechatPayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key_ids: Vec<&str> = self
            .platform_keys
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        f.debug_struct("WechatPayConfig")
            .field("base_url", &self.base_url)
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial_no", &self.merchant_serial_no)
            .field("merchant_key", &self.merchant_key)
            .field("platform_keys", &key_ids)
            .field("api_v3_key", &"<redacted>")
            .field("notify_url", &self.notify_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// 1 to `max` ASCII letters and digits: safe in a URL and inside a quoted header field.
fn is_token(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Refuses, at cold start, a configuration that could only fail later.
fn check_config(config: &WechatPayConfig) -> anyhow::Result<()> {
    if !is_token(&config.mchid, 32) || !is_token(&config.appid, 32) {
        bail!("wechatpay mchid and appid must be 1 to 32 letters or digits");
    }
    if !is_token(&config.merchant_serial_no, 64) {
        bail!("wechatpay merchant_serial_no must be 1 to 64 letters or digits");
    }
    if config.platform_keys.is_empty() || config.platform_keys.len() > PLATFORM_KEYS_MAX {
        bail!("wechatpay needs 1 to {PLATFORM_KEYS_MAX} platform keys");
    }
    let mut seen = HashSet::new();
    for (id, _) in &config.platform_keys {
        let is_public_key = id.starts_with(PUBLIC_KEY_ID_PREFIX) && id.len() <= 64;
        if !(is_token(id, 64) || is_public_key) || !seen.insert(id.as_str()) {
            bail!("wechatpay platform key id {id:?} is malformed or repeated");
        }
    }
    if !config.base_url.starts_with("https://") && !config.base_url.starts_with("http://") {
        bail!("wechatpay base_url must be an http(s) URL");
    }
    Ok(())
}

pub struct WechatPayProvider {
    config: WechatPayConfig,
    api_v3_key: keys::ApiV3Key,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WechatPayProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn unknown(err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unknown(err.to_string())
}

/// 16 random bytes as upper-case hex: the 32 characters `nonce_str` allows.
fn fresh_nonce() -> String {
    let mut bytes = [0_u8; 16];
    // A failing OS RNG leaves zeros: the nonce then repeats, which WeChat Pay tolerates within
    // distinct timestamps; it is not a secret.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode_upper(bytes)
}

/// Reads the body up to [`ANSWER_BYTES_MAX`]. The client timeout bounds the time; the cap
/// bounds the memory.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unknown)? {
        body.extend_from_slice(&chunk);
        if body.len() > ANSWER_BYTES_MAX {
            return Err(unknown("answer larger than 1 MiB"));
        }
    }
    Ok(body)
}

impl WechatPayProvider {
    pub fn new(config: WechatPayConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        check_config(&config)?;
        let api_v3_key = keys::ApiV3Key::new(&config.api_v3_key)
            .map_err(anyhow::Error::msg)
            .context("wechatpay api_v3_key")?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self {
            config,
            api_v3_key,
            http,
            clock,
        })
    }

    /// Closes the order so it can no longer be paid. Closing a closed order succeeds; closing a
    /// paid one is rejected with ORDERPAID.
    pub async fn close(&self, payment_id: &PaymentId) -> Result<(), ProviderError> {
        let answer = self
            .call(&wire::close_request(&self.config, payment_id))
            .await?;
        wire::interpret_close(&answer)
    }

    /// Refunds `refund` of the order's `total` fen. `refund_id` is our out_refund_no: asking again
    /// with the same one is idempotent at WeChat Pay. Its `REFUND.*` notifications come to our
    /// `notify_url`, the payment notifications' route.
    pub async fn refund(
        &self,
        payment_id: &PaymentId,
        refund_id: &str,
        refund: AmountMinor,
        total: AmountMinor,
        reason: Option<&str>,
    ) -> Result<RefundResult, ProviderError> {
        let request = wire::refund_request(&wire::RefundOrder {
            payment_id,
            refund_id,
            refund,
            total,
            reason,
            notify_url: &self.config.notify_url,
        })?;
        let answer = self.call(&request).await?;
        wire::interpret_refund(refund_id, &answer)
    }

    /// One signed call. Transport failures, 5xx and answers we cannot authenticate are all
    /// "unknown": they say nothing about what WeChat Pay did.
    async fn call(&self, request: &wire::ApiRequest) -> Result<wire::Answer, ProviderError> {
        let timestamp_s = self.clock.now().unix_s();
        let authorization = wire::authorization(&self.config, request, timestamp_s, &fresh_nonce());
        let url = format!(
            "{}{}",
            self.config.base_url.trim_end_matches('/'),
            request.url
        );
        let mut call = self
            .http
            .request(request.method.clone(), url)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::ACCEPT, "application/json");
        if !request.body.is_empty() {
            call = call
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(request.body.clone());
        }
        let response = call.send().await.map_err(unknown)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_capped(response).await?;
        wire::authenticate(
            &self.config.platform_keys,
            status,
            &headers,
            &body,
            self.clock.now(),
        )
    }
}

/// What the platform signed on a notification or answer, `timestamp\nnonce\nbody\n`, from its
/// `Wechatpay-Timestamp` and `Wechatpay-Nonce` headers: for operators' tools that show it.
pub fn platform_signed_message(
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Vec<u8>, CallbackRejection> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| CallbackRejection::BadSignature(format!("missing {name}")))
    };
    Ok(keys::platform_message(
        header("Wechatpay-Timestamp")?,
        header("Wechatpay-Nonce")?,
        body,
    ))
}

/// WeChat Pay's refund status for the port. CLOSED (closed by the merchant platform) means it
/// will not happen. ABNORMAL (the money could not reach the payer's account) is not final: it
/// can still be completed from the merchant platform under the same refund number, so the refund
/// stays pending; the poller's escalation hands it to a human if it stays so.
fn refund_state(refund_id: &str, status: RefundStatus) -> RefundState {
    match status {
        RefundStatus::Success => RefundState::Succeeded,
        RefundStatus::Processing | RefundStatus::Abnormal => RefundState::Processing,
        RefundStatus::Closed => {
            RefundState::Failed(format!("WeChat Pay closed refund {refund_id}"))
        }
    }
}

#[async_trait]
impl PaymentProvider for WechatPayProvider {
    fn name(&self) -> ProviderName {
        ProviderName::WechatPay
    }

    async fn create(&self, request: &ProviderCreate) -> Result<ProviderCreated, ProviderError> {
        let answer = self
            .call(&wire::create_request(&self.config, request)?)
            .await?;
        wire::interpret_create(&answer)
    }

    /// `POST /v3/refund/domestic/refunds` with `out_refund_no` = the refund number.
    async fn refund(&self, refund: &ProviderRefund) -> Result<RefundState, ProviderError> {
        let amount = |minor: i64| {
            AmountMinor::new(minor).map_err(|_| ProviderError::Rejected {
                code: "INVALID_REFUND_AMOUNT".into(),
                message: format!("{minor} is not an amount"),
            })
        };
        let reason = Some(refund.reason.as_str()).filter(|r| !r.is_empty());
        let result = WechatPayProvider::refund(
            self,
            &refund.payment_id,
            &refund.refund_no,
            amount(refund.amount_minor)?,
            amount(refund.total_minor)?,
            reason,
        )
        .await?;
        Ok(refund_state(&refund.refund_no, result.status))
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
    async fn query_refund(
        &self,
        refund: &ProviderRefund,
    ) -> Result<Option<RefundState>, ProviderError> {
        let answer = self
            .call(&wire::refund_query_request(&refund.refund_no)?)
            .await?;
        let result = wire::interpret_refund_query(&refund.refund_no, &answer)?;
        Ok(result.map(|r| refund_state(&refund.refund_no, r.status)))
    }

    async fn close(&self, payment_id: &PaymentId) -> Result<CloseOutcome, ProviderError> {
        super::close_outcome(
            WechatPayProvider::close(self, payment_id).await,
            &["ORDERPAID"],
            &["ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS"],
            &["ORDER_CLOSED"],
        )
    }

    async fn query(&self, payment_id: &PaymentId) -> Result<Option<ProviderTrade>, ProviderError> {
        let answer = self
            .call(&wire::query_request(&self.config, payment_id))
            .await?;
        wire::interpret_query(&self.config, payment_id, &answer)
    }

    /// The platform signature over `timestamp\nnonce\nbody\n` and the replay window first; only
    /// then is the envelope read and its resource opened. `REFUND.SUCCESS`, `REFUND.ABNORMAL`
    /// and `REFUND.CLOSED` come to the same notify URL as `TRANSACTION.*` (the refund request
    /// names it), in the same envelope around the refund; their `amount_minor` is
    /// `amount.refund`.
    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Verified, CallbackRejection> {
        keys::verify_platform_signature(&self.config.platform_keys, headers, body, now)?;
        let verified = match wire::parse_notification(&self.config, &self.api_v3_key, body)? {
            wire::Event::Transaction(notification) => Verified::Payment(notification),
            wire::Event::Refund(event) => Verified::Refund(RefundNotice {
                state: refund_state(&event.refund_id, event.status),
                notify_id: event.notify_id,
                payment_id: event.payment_id,
                refund_no: event.refund_id,
                amount_minor: event.amount_minor,
            }),
        };
        Ok(verified)
    }

    fn reply(&self, answer: CallbackAnswer, detail: &str) -> CallbackReply {
        wire::reply(answer, detail)
    }
}

#[cfg(test)]
mod signed_message_tests {
    use super::*;

    #[test]
    fn platform_signed_message_is_timestamp_nonce_body_each_newline_terminated() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "wechatpay-timestamp",
            http::HeaderValue::from_static("1700000000"),
        );
        assert!(platform_signed_message(&headers, b"{}").is_err());
        headers.insert("wechatpay-nonce", http::HeaderValue::from_static("n0nce"));
        assert_eq!(
            platform_signed_message(&headers, b"{\"a\":1}").expect("message"),
            b"1700000000\nn0nce\n{\"a\":1}\n"
        );
    }
}
