//! The adapter for our provider sandbox (see `xtask/src/sandbox/PROTOCOL.md`): a simple signed JSON
//! protocol in the style of WeChat Pay v3, used by fast tests and local runs. Written without
//! looking at the sandbox's own code: the two share only the RSA primitive.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crypto::{RsaSigner, RsaVerifier};
use crate::domain::{Currency, PaymentId, ProviderName, Timestamp};
use crate::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, Clock, CloseOutcome, Notification, NotifiedStatus,
    PaymentProvider, ProviderCreate, ProviderCreated, ProviderError, ProviderTrade,
};

/// Notifications whose signed timestamp is this far off our clock (or further) are refused.
pub const REPLAY_WINDOW_S: u64 = 300;

pub struct SandboxConfig {
    pub base_url: String,
    pub merchant_id: String,
    pub merchant_key: RsaSigner,
    pub provider_key: RsaVerifier,
    /// Where the sandbox sends notifications: our `/callbacks/sandbox` route.
    pub notify_url: String,
    pub timeout: Duration,
}

pub struct SandboxProvider {
    config: SandboxConfig,
    http: reqwest::Client,
    clock: std::sync::Arc<dyn Clock>,
}

#[derive(Serialize)]
struct CreateBody<'a> {
    merchant_id: &'a str,
    out_trade_no: &'a str,
    amount_minor: i64,
    currency: &'a str,
    subject: &'a str,
    notify_url: &'a str,
    expires_at: i64,
}

#[derive(Deserialize)]
struct CreateAnswer {
    trade_no: String,
    pay_url: String,
}

#[derive(Deserialize)]
struct QueryAnswer {
    trade_no: String,
    status: String,
    amount_minor: i64,
    currency: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct NotifyBody {
    notify_id: String,
    merchant_id: String,
    out_trade_no: String,
    trade_no: Option<String>,
    status: String,
    amount_minor: i64,
    currency: String,
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `timestamp\nnonce\nbody\n`: what the sandbox signs on responses and notifications.
fn provider_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + 48);
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// What the sandbox's signature covers for this response or notification: `timestamp\nnonce\nbody\n`.
pub fn signed_content(
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Vec<u8>, CallbackRejection> {
    let missing = |h: &str| CallbackRejection::BadSignature(format!("missing {h}"));
    let timestamp =
        header(headers, "x-sandbox-timestamp").ok_or_else(|| missing("X-Sandbox-Timestamp"))?;
    let nonce = header(headers, "x-sandbox-nonce").ok_or_else(|| missing("X-Sandbox-Nonce"))?;
    Ok(provider_message(timestamp, nonce, body))
}

/// Checks the provider signature and the replay window on a response or notification.
pub fn verify_signed(
    provider_key: &RsaVerifier,
    headers: &http::HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<(), CallbackRejection> {
    let message = signed_content(headers, body)?;
    let signature = header(headers, "x-sandbox-signature")
        .ok_or_else(|| CallbackRejection::BadSignature("missing X-Sandbox-Signature".into()))?;
    if !provider_key.verify_base64(&message, signature) {
        return Err(CallbackRejection::BadSignature(
            "does not verify with the sandbox public key".into(),
        ));
    }
    let timestamp = header(headers, "x-sandbox-timestamp").unwrap_or_default();
    let signed_at = timestamp
        .parse::<i64>()
        .map(Timestamp::from_unix_s)
        .map_err(|_| {
            CallbackRejection::Malformed("X-Sandbox-Timestamp is not unix seconds".into())
        })?;
    let skew_s = signed_at.abs_diff_s(now);
    if skew_s >= REPLAY_WINDOW_S {
        return Err(CallbackRejection::StaleTimestamp {
            skew_s,
            limit_s: REPLAY_WINDOW_S,
        });
    }
    Ok(())
}

/// Verifies a notification and parses it: signature, replay window, merchant, fields.
pub fn verify_notification(
    provider_key: &RsaVerifier,
    merchant_id: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<Notification, CallbackRejection> {
    verify_signed(provider_key, headers, body, now)?;
    let notify: NotifyBody = serde_json::from_slice(body)
        .map_err(|e| CallbackRejection::Malformed(format!("body: {e}")))?;
    if notify.merchant_id != merchant_id {
        return Err(CallbackRejection::WrongMerchant(notify.merchant_id));
    }
    let payment_id = PaymentId::parse(&notify.out_trade_no)
        .map_err(|e| CallbackRejection::Malformed(format!("out_trade_no: {e}")))?;
    let currency = Currency::parse(&notify.currency)
        .map_err(|e| CallbackRejection::Malformed(format!("currency: {e}")))?;
    let status = parse_status(&notify.status).ok_or_else(|| {
        CallbackRejection::Malformed(format!("unknown status {:?}", notify.status))
    })?;
    Ok(Notification {
        notify_id: notify.notify_id,
        payment_id,
        provider_trade_no: notify.trade_no,
        status,
        amount_minor: notify.amount_minor,
        currency,
    })
}

impl SandboxProvider {
    pub fn new(config: SandboxConfig, clock: std::sync::Arc<dyn Clock>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self {
            config,
            http,
            clock,
        })
    }

    fn verify_signed(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<(), CallbackRejection> {
        verify_signed(&self.config.provider_key, headers, body, now)
    }

    fn sign_request(&self, method: &str, path: &str, body: &str) -> Vec<(&'static str, String)> {
        let timestamp = self.clock.now().unix_s().to_string();
        let mut nonce_bytes = [0_u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut nonce_bytes);
        let nonce = hex::encode(nonce_bytes);
        let message = format!("{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n");
        let signature = self.config.merchant_key.sign_base64(message.as_bytes());
        vec![
            ("x-sandbox-merchant", self.config.merchant_id.clone()),
            ("x-sandbox-timestamp", timestamp),
            ("x-sandbox-nonce", nonce),
            ("x-sandbox-signature", signature),
        ]
    }
}

fn unknown(err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unknown(err.to_string())
}

fn parse_status(status: &str) -> Option<NotifiedStatus> {
    match status {
        "PAID" => Some(NotifiedStatus::Paid),
        "WAIT_PAY" => Some(NotifiedStatus::Pending),
        "CLOSED" => Some(NotifiedStatus::Closed),
        _ => None,
    }
}

impl SandboxProvider {
    /// One signed call. Transport failures, 5xx and answers we cannot authenticate are all
    /// "unknown": they say nothing about what the provider did.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: String,
    ) -> Result<(u16, Vec<u8>), ProviderError> {
        let mut call = self
            .http
            .request(method.clone(), format!("{}{path}", self.config.base_url));
        for (name, value) in self.sign_request(method.as_str(), path, &body) {
            call = call.header(name, value);
        }
        if !body.is_empty() {
            call = call.header("content-type", "application/json").body(body);
        }
        let response = call.send().await.map_err(unknown)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(unknown)?;
        if status >= 500 {
            return Err(ProviderError::Unknown(format!("sandbox answered {status}")));
        }
        self.verify_signed(&headers, &bytes, self.clock.now())
            .map_err(|e| ProviderError::Unknown(format!("unverifiable answer ({status}): {e}")))?;
        Ok((status, bytes.to_vec()))
    }
}

#[async_trait]
impl PaymentProvider for SandboxProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Sandbox
    }

    async fn create(&self, request: &ProviderCreate) -> Result<ProviderCreated, ProviderError> {
        let path = "/v1/trades";
        let body = serde_json::to_string(&CreateBody {
            merchant_id: &self.config.merchant_id,
            out_trade_no: request.payment_id.as_str(),
            amount_minor: request.money.amount.get(),
            currency: request.money.currency.code(),
            subject: &request.subject,
            notify_url: &self.config.notify_url,
            expires_at: request.expires_at.unix_s(),
        })
        .map_err(unknown)?;
        let (status, bytes) = self.call(reqwest::Method::POST, path, body).await?;
        if status == 200 {
            let answer: CreateAnswer = serde_json::from_slice(&bytes).map_err(unknown)?;
            return Ok(ProviderCreated {
                pay_url: answer.pay_url,
                provider_trade_no: Some(answer.trade_no),
            });
        }
        let error: ErrorAnswer = serde_json::from_slice(&bytes).map_err(unknown)?;
        Err(ProviderError::Rejected {
            code: error.code,
            message: error.message,
        })
    }

    async fn close(&self, payment_id: &PaymentId) -> Result<CloseOutcome, ProviderError> {
        let path = format!("/v1/trades/{payment_id}/close");
        let (status, bytes) = self
            .call(reqwest::Method::POST, &path, String::new())
            .await?;
        if status == 200 {
            return Ok(CloseOutcome::Closed);
        }
        let error: ErrorAnswer = serde_json::from_slice(&bytes).map_err(unknown)?;
        match error.code.as_str() {
            "TRADE_NOT_EXIST" => Ok(CloseOutcome::NoTrade),
            "TRADE_ALREADY_PAID" => Ok(CloseOutcome::AlreadyPaid),
            _ if status >= 400 && status < 500 => Err(ProviderError::Rejected {
                code: error.code,
                message: error.message,
            }),
            _ => Err(ProviderError::Unknown(format!("close answered {status} {}", error.code))),
        }
    }

    async fn query(&self, payment_id: &PaymentId) -> Result<Option<ProviderTrade>, ProviderError> {
        let path = format!("/v1/trades/{payment_id}");
        let (status, bytes) = self
            .call(reqwest::Method::GET, &path, String::new())
            .await?;
        if status == 404 {
            let error: ErrorAnswer = serde_json::from_slice(&bytes).map_err(unknown)?;
            if error.code == "TRADE_NOT_EXIST" {
                return Ok(None);
            }
            return Err(ProviderError::Unknown(format!(
                "query answered 404 {}",
                error.code
            )));
        }
        if status != 200 {
            return Err(ProviderError::Unknown(format!("query answered {status}")));
        }
        let answer: QueryAnswer = serde_json::from_slice(&bytes).map_err(unknown)?;
        let status = parse_status(&answer.status)
            .ok_or_else(|| unknown(format!("unknown status {}", answer.status)))?;
        let currency = Currency::parse(&answer.currency).map_err(unknown)?;
        Ok(Some(ProviderTrade {
            status,
            provider_trade_no: Some(answer.trade_no),
            amount_minor: answer.amount_minor,
            currency,
        }))
    }

    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Notification, CallbackRejection> {
        verify_notification(
            &self.config.provider_key,
            &self.config.merchant_id,
            headers,
            body,
            now,
        )
    }

    fn reply(&self, answer: CallbackAnswer, detail: &str) -> CallbackReply {
        let (status, body) = match answer {
            CallbackAnswer::Success => (200, serde_json::json!({ "code": "SUCCESS" })),
            CallbackAnswer::RetryLater => (
                500,
                serde_json::json!({ "code": "FAIL", "message": detail }),
            ),
            CallbackAnswer::Rejected => (
                400,
                serde_json::json!({ "code": "FAIL", "message": detail }),
            ),
        };
        CallbackReply {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }
}
