//! The adapter for our provider sandbox (see `xtask/src/sandbox/PROTOCOL.md`): a simple signed JSON
//! protocol in the style of WeChat Pay v3, used by fast tests and local runs. Written without
//! looking at the sandbox's own code: the two share only the RSA primitive.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crypto::{RsaSigner, RsaVerifier};
use crate::domain::{AmountMinor, Currency, PaymentId, ProviderName, Timestamp};
use crate::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, Clock, CloseOutcome, Notification,
    NotifiedStatus, PaymentProvider, ProviderCreate, ProviderCreated, ProviderError,
    ProviderRefund, ProviderTrade, RefundNotice, RefundState, Verified,
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

#[derive(Serialize)]
struct RefundBody<'a> {
    out_refund_no: &'a str,
    amount_minor: i64,
    reason: &'a str,
}

#[derive(Deserialize)]
struct RefundAnswer {
    out_refund_no: String,
    status: String,
    amount_minor: i64,
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

/// A refund notification: `"event":"REFUND"` and the refund's fields.
#[derive(Deserialize)]
struct RefundNotifyBody {
    notify_id: String,
    merchant_id: String,
    out_trade_no: String,
    out_refund_no: String,
    refund_status: String,
    amount_minor: i64,
}

/// The `event` field of a verified notification: `"REFUND"` on refund notifications, absent on
/// payment notifications.
#[derive(Deserialize)]
struct EventField {
    #[serde(default)]
    event: Option<String>,
}

/// Whether a verified `body` says it is a refund notification (`"event":"REFUND"`); anything
/// else (bodies that are not JSON included) is read as a payment notification.
fn names_refund_event(body: &[u8]) -> bool {
    serde_json::from_slice::<EventField>(body).is_ok_and(|e| e.event.as_deref() == Some("REFUND"))
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

/// Verifies a notification (signature and replay window over the raw body), then reads it as
/// what its verified content says: a refund notification (`"event":"REFUND"`) or a payment
/// notification. Both check the merchant.
pub fn verify_notification(
    provider_key: &RsaVerifier,
    merchant_id: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<Verified, CallbackRejection> {
    verify_signed(provider_key, headers, body, now)?;
    if names_refund_event(body) {
        parse_refund_notification(merchant_id, body).map(Verified::Refund)
    } else {
        parse_payment_notification(merchant_id, body).map(Verified::Payment)
    }
}

/// A verified payment notification's fields.
fn parse_payment_notification(
    merchant_id: &str,
    body: &[u8],
) -> Result<Notification, CallbackRejection> {
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

/// A verified refund notification's fields. `refund_status` is `SUCCESS` or `FAILED`;
/// `amount_minor` is the refund's.
fn parse_refund_notification(
    merchant_id: &str,
    body: &[u8],
) -> Result<RefundNotice, CallbackRejection> {
    let notify: RefundNotifyBody = serde_json::from_slice(body)
        .map_err(|e| CallbackRejection::Malformed(format!("refund notification: {e}")))?;
    if notify.merchant_id != merchant_id {
        return Err(CallbackRejection::WrongMerchant(notify.merchant_id));
    }
    if notify.notify_id.is_empty() {
        return Err(CallbackRejection::Malformed("empty notify_id".into()));
    }
    let payment_id = PaymentId::parse(&notify.out_trade_no)
        .map_err(|e| CallbackRejection::Malformed(format!("out_trade_no: {e}")))?;
    if !is_refund_no(&notify.out_refund_no) {
        return Err(CallbackRejection::Malformed(
            "out_refund_no must be 1 to 64 of [0-9A-Za-z_-]".into(),
        ));
    }
    let amount_minor = AmountMinor::new(notify.amount_minor)
        .map_err(|e| CallbackRejection::Malformed(format!("amount_minor: {e}")))?
        .get();
    let state = match notify.refund_status.as_str() {
        "SUCCESS" => RefundState::Succeeded,
        "FAILED" => RefundState::Failed(format!(
            "the sandbox failed refund {}",
            notify.out_refund_no
        )),
        other => {
            return Err(CallbackRejection::Malformed(format!(
                "unknown refund_status {other:?}"
            )));
        }
    };
    Ok(RefundNotice {
        notify_id: notify.notify_id,
        payment_id,
        refund_no: notify.out_refund_no,
        state,
        amount_minor,
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

fn refused(code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// The refund's path and body. A refund the sandbox would refuse anyway is refused here, never
/// sent: `out_refund_no` 1 to 64 of `[0-9A-Za-z_-]`, an amount within the payment's.
/// `out_refund_no`: 1 to 64 of `[0-9A-Za-z_-]`.
fn is_refund_no(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn refund_request(refund: &ProviderRefund) -> Result<(String, String), ProviderError> {
    if !is_refund_no(&refund.refund_no) {
        return Err(refused(
            "INVALID_REFUND_ID",
            "refund number must be 1 to 64 of [0-9A-Za-z_-]",
        ));
    }
    if !(1..=refund.total_minor).contains(&refund.amount_minor) {
        return Err(refused(
            "INVALID_REFUND_AMOUNT",
            format!(
                "refund of {} is not within 1..={}",
                refund.amount_minor, refund.total_minor
            ),
        ));
    }
    let body = serde_json::to_string(&RefundBody {
        out_refund_no: &refund.refund_no,
        amount_minor: refund.amount_minor,
        reason: &refund.reason,
    })
    .map_err(|e| refused("ENCODE_FAILED", e.to_string()))?;
    Ok((format!("/v1/trades/{}/refunds", refund.payment_id), body))
}

/// `GET /v1/trades/{out_trade_no}/refunds/{out_refund_no}`.
fn refund_query_path(refund: &ProviderRefund) -> String {
    format!(
        "/v1/trades/{}/refunds/{}",
        refund.payment_id, refund.refund_no
    )
}

/// A verified 200 refund answer, which must be about this refund and this amount.
fn refund_state(bytes: &[u8], refund: &ProviderRefund) -> Result<RefundState, ProviderError> {
    let answer: RefundAnswer = serde_json::from_slice(bytes).map_err(unknown)?;
    if answer.out_refund_no != refund.refund_no || answer.amount_minor != refund.amount_minor {
        return Err(unknown(format!(
            "refund {} of {} answered as {} of {}",
            refund.refund_no, refund.amount_minor, answer.out_refund_no, answer.amount_minor
        )));
    }
    match answer.status.as_str() {
        "SUCCESS" => Ok(RefundState::Succeeded),
        "PROCESSING" => Ok(RefundState::Processing),
        "FAILED" => Ok(RefundState::Failed(format!(
            "the sandbox failed refund {}",
            refund.refund_no
        ))),
        other => Err(unknown(format!("unknown refund status {other:?}"))),
    }
}

/// A verified answer to the refund: 200 tells its state; a 4xx `{code, message}` is a refusal
/// (nothing was refunded by this request).
fn interpret_refund(
    status: u16,
    bytes: &[u8],
    refund: &ProviderRefund,
) -> Result<RefundState, ProviderError> {
    if status == 200 {
        return refund_state(bytes, refund);
    }
    let error: ErrorAnswer = serde_json::from_slice(bytes).map_err(unknown)?;
    if (400..500).contains(&status) {
        return Err(ProviderError::Rejected {
            code: error.code,
            message: error.message,
        });
    }
    Err(unknown(format!("refund answered {status} {}", error.code)))
}

/// A verified answer to the refund query: `None` on 404 `REFUND_NOT_EXIST` (or
/// `TRADE_NOT_EXIST`); anything else but 200 is unknown, as for the trade query.
fn interpret_refund_query(
    status: u16,
    bytes: &[u8],
    refund: &ProviderRefund,
) -> Result<Option<RefundState>, ProviderError> {
    if status == 200 {
        return refund_state(bytes, refund).map(Some);
    }
    let code =
        serde_json::from_slice::<ErrorAnswer>(bytes).map_or_else(|_| String::new(), |e| e.code);
    if status == 404 && matches!(code.as_str(), "REFUND_NOT_EXIST" | "TRADE_NOT_EXIST") {
        return Ok(None);
    }
    Err(unknown(format!("refund query answered {status} {code}")))
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

    /// `POST /v1/trades/{out_trade_no}/refunds`, idempotent on `out_refund_no`.
    async fn refund(&self, refund: &ProviderRefund) -> Result<RefundState, ProviderError> {
        let (path, body) = refund_request(refund)?;
        let (status, bytes) = self.call(reqwest::Method::POST, &path, body).await?;
        interpret_refund(status, &bytes, refund)
    }

    async fn query_refund(
        &self,
        refund: &ProviderRefund,
    ) -> Result<Option<RefundState>, ProviderError> {
        let path = refund_query_path(refund);
        let (status, bytes) = self
            .call(reqwest::Method::GET, &path, String::new())
            .await?;
        interpret_refund_query(status, &bytes, refund)
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
            _ if (400..500).contains(&status) => Err(ProviderError::Rejected {
                code: error.code,
                message: error.message,
            }),
            _ => Err(ProviderError::Unknown(format!(
                "close answered {status} {}",
                error.code
            ))),
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

    /// The sandbox sends refund notifications to the trade's `notify_url`, the same route as
    /// payment notifications; they carry `"event":"REFUND"`, read once the body is verified.
    fn verify_callback(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Verified, CallbackRejection> {
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

#[cfg(test)]
mod refund_tests {
    use std::sync::Arc;

    use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;

    use super::*;
    use crate::clock::ManualClock;

    const PAYMENT_ID: &str = "01J0000000000000000000PAY1";
    const REFUND_NO: &str = "01J00000000000000000000REFUND001";

    fn refund(amount_minor: i64) -> ProviderRefund {
        ProviderRefund {
            payment_id: PaymentId::parse(PAYMENT_ID).expect("payment id"),
            refund_no: REFUND_NO.into(),
            amount_minor,
            total_minor: 1000,
            currency: Currency::Cny,
            reason: "退货".into(),
            provider_trade_no: Some("SBX01".into()),
            requested_at: Timestamp::from_unix_s(1_700_000_000),
        }
    }

    fn answer(out_refund_no: &str, status: &str, amount_minor: i64) -> Vec<u8> {
        serde_json::json!({
            "out_refund_no": out_refund_no, "refund_no": "SBXR1", "out_trade_no": PAYMENT_ID,
            "trade_no": "SBX01", "status": status, "amount_minor": amount_minor,
            "refunded_minor": amount_minor, "created_at": "2026-01-01T00:00:00Z",
        })
        .to_string()
        .into_bytes()
    }

    fn error(code: &str) -> Vec<u8> {
        serde_json::json!({ "code": code, "message": "m" })
            .to_string()
            .into_bytes()
    }

    fn rejected_code<T: std::fmt::Debug>(result: Result<T, ProviderError>) -> String {
        match result {
            Err(ProviderError::Rejected { code, .. }) => code,
            other => panic!("not a rejection: {other:?}"),
        }
    }

    fn is_unknown<T>(result: &Result<T, ProviderError>) -> bool {
        matches!(result, Err(ProviderError::Unknown(_)))
    }

    #[test]
    fn refund_request_is_the_trades_refunds_path_with_number_amount_and_reason() {
        let (path, body) = refund_request(&refund(300)).expect("request");
        assert_eq!(path, format!("/v1/trades/{PAYMENT_ID}/refunds"));
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({ "out_refund_no": REFUND_NO, "amount_minor": 300, "reason": "退货" })
        );
        assert_eq!(
            refund_query_path(&refund(300)),
            format!("/v1/trades/{PAYMENT_ID}/refunds/{REFUND_NO}")
        );
    }

    #[test]
    fn refunds_the_sandbox_would_refuse_are_never_sent() {
        for amount in [0, -1, 1001] {
            assert_eq!(
                rejected_code(refund_request(&refund(amount))),
                "INVALID_REFUND_AMOUNT"
            );
        }
        assert!(refund_request(&refund(1000)).is_ok());
        for no in ["", "R 1", "R/1", &"R".repeat(65)] {
            let mut bad = refund(1);
            bad.refund_no = no.to_owned();
            assert_eq!(
                rejected_code(refund_request(&bad)),
                "INVALID_REFUND_ID",
                "{no:?}"
            );
        }
    }

    #[test]
    fn refund_answers_map_every_status() {
        let ours = refund(300);
        let check = |status: &str, expected: RefundState| {
            let got = interpret_refund(200, &answer(REFUND_NO, status, 300), &ours);
            assert_eq!(got.as_ref().ok(), Some(&expected), "{status}");
            let queried = interpret_refund_query(200, &answer(REFUND_NO, status, 300), &ours);
            assert_eq!(queried.ok().flatten(), Some(expected), "{status}");
        };
        check("SUCCESS", RefundState::Succeeded);
        check("PROCESSING", RefundState::Processing);
        check(
            "FAILED",
            RefundState::Failed(format!("the sandbox failed refund {REFUND_NO}")),
        );
        for bad in [
            answer(REFUND_NO, "REFUNDED", 300),
            answer("OTHER", "SUCCESS", 300),
            answer(REFUND_NO, "SUCCESS", 301),
            b"{}".to_vec(),
        ] {
            assert!(is_unknown(&interpret_refund(200, &bad, &ours)));
            assert!(is_unknown(&interpret_refund_query(200, &bad, &ours)));
        }
    }

    #[test]
    fn refund_refusals_are_rejections_and_the_rest_unknown() {
        let ours = refund(300);
        for (status, code) in [
            (409, "REFUND_AMOUNT_EXCEEDED"),
            (409, "OUT_REFUND_NO_USED"),
            (409, "TRADE_NOT_PAID"),
            (404, "TRADE_NOT_EXIST"),
            (400, "INVALID_REQUEST"),
        ] {
            let got = interpret_refund(status, &error(code), &ours);
            assert_eq!(rejected_code(got), code);
        }
        assert!(is_unknown(&interpret_refund(302, &error("MOVED"), &ours)));
        assert!(is_unknown(&interpret_refund(409, b"<html>", &ours)));
    }

    #[test]
    fn refund_query_none_only_for_no_such_refund() {
        let ours = refund(300);
        for code in ["REFUND_NOT_EXIST", "TRADE_NOT_EXIST"] {
            assert_eq!(interpret_refund_query(404, &error(code), &ours), Ok(None));
        }
        for (status, body) in [
            (404, error("NOT_FOUND")),
            (404, b"not json".to_vec()),
            (400, error("INVALID_REQUEST")),
            (401, error("SIGN_ERROR")),
        ] {
            assert!(
                is_unknown(&interpret_refund_query(status, &body, &ours)),
                "{status}"
            );
        }
    }

    #[test]
    fn refund_requests_are_signed_over_method_path_and_body() {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let private: Pkcs8V1Der<'_> = key.as_der().expect("pkcs8");
        let public: PublicKeyX509Der<'_> = key.public_key().as_der().expect("spki");
        let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref()));
        let config = SandboxConfig {
            base_url: "http://127.0.0.1:9".into(),
            merchant_id: "M1".into(),
            merchant_key: RsaSigner::from_pem(&pem_text).expect("signer"),
            provider_key: RsaVerifier::from_der(public.as_ref()).expect("verifier"),
            notify_url: "http://127.0.0.1:9/callbacks/sandbox".into(),
            timeout: Duration::from_secs(1),
        };
        let clock = Arc::new(ManualClock::at(Timestamp::from_unix_s(1_700_000_000)));
        let provider = SandboxProvider::new(config, clock).expect("provider");
        let merchant = RsaVerifier::from_der(public.as_ref()).expect("verifier");
        let (path, body) = refund_request(&refund(300)).expect("request");
        let headers: std::collections::HashMap<_, _> = provider
            .sign_request("POST", &path, &body)
            .into_iter()
            .collect();
        assert_eq!(headers["x-sandbox-merchant"], "M1");
        assert_eq!(headers["x-sandbox-timestamp"], "1700000000");
        let message = format!(
            "POST\n{path}\n1700000000\n{}\n{body}\n",
            headers["x-sandbox-nonce"]
        );
        assert!(merchant.verify_base64(message.as_bytes(), &headers["x-sandbox-signature"]));
        let query = format!(
            "GET\n{}\n1700000000\n{}\n\n",
            refund_query_path(&refund(300)),
            "n"
        );
        assert!(!merchant.verify_base64(query.as_bytes(), &headers["x-sandbox-signature"]));
    }
}

#[cfg(test)]
mod refund_notification_tests {
    use std::sync::{Arc, OnceLock};

    use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;

    use super::*;
    use crate::clock::ManualClock;
    use crate::provider::test_callback::refund;

    const PAYMENT_ID: &str = "01J0000000000000000000PAY1";
    const REFUND_NO: &str = "R0123456789abcdef0123456789abcde";
    const NOW_S: i64 = 1_700_000_000;

    /// (private PKCS#8 PEM, public SPKI DER) of the sandbox and of a stranger, made once.
    fn keys() -> &'static [(String, Vec<u8>); 2] {
        static KEYS: OnceLock<[(String, Vec<u8>); 2]> = OnceLock::new();
        KEYS.get_or_init(|| {
            let one = || {
                let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .expect("key");
                let private: Pkcs8V1Der<'_> = key.as_der().expect("pkcs8");
                let public: PublicKeyX509Der<'_> = key.public_key().as_der().expect("spki");
                (
                    pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref())),
                    public.as_ref().to_vec(),
                )
            };
            [one(), one()]
        })
    }

    fn provider() -> SandboxProvider {
        let (private, public) = &keys()[0];
        let config = SandboxConfig {
            base_url: "http://127.0.0.1:9".into(),
            merchant_id: "M1".into(),
            merchant_key: RsaSigner::from_pem(private).expect("signer"),
            provider_key: RsaVerifier::from_der(public).expect("verifier"),
            notify_url: "http://127.0.0.1:9/callbacks/sandbox".into(),
            timeout: Duration::from_secs(1),
        };
        let clock = Arc::new(ManualClock::at(Timestamp::from_unix_s(NOW_S)));
        SandboxProvider::new(config, clock).expect("provider")
    }

    /// The sandbox's headers over `body`, built here by hand: `timestamp\nnonce\nbody\n`.
    fn signed(key: usize, timestamp_s: i64, body: &str) -> http::HeaderMap {
        let signer = RsaSigner::from_pem(&keys()[key].0).expect("signer");
        let message = format!("{timestamp_s}\nN0NCE\n{body}\n");
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("x-sandbox-timestamp", timestamp_s.to_string()),
            ("x-sandbox-nonce", "N0NCE".to_owned()),
            (
                "x-sandbox-signature",
                signer.sign_base64(message.as_bytes()),
            ),
        ] {
            headers.insert(name, value.parse().expect("header"));
        }
        headers
    }

    fn refund_body(changes: &[(&str, serde_json::Value)]) -> String {
        let mut body = serde_json::json!({
            "notify_id": "NTF1", "event": "REFUND", "merchant_id": "M1",
            "out_trade_no": PAYMENT_ID, "trade_no": "SBX1", "out_refund_no": REFUND_NO,
            "refund_no": "SBXR1", "refund_status": "SUCCESS", "amount_minor": 300,
            "currency": "CNY",
        });
        for (key, value) in changes {
            body[*key] = value.clone();
        }
        body.to_string()
    }

    fn verify(body: &str, headers: &http::HeaderMap) -> Result<RefundNotice, CallbackRejection> {
        refund(provider().verify_callback(headers, body.as_bytes(), Timestamp::from_unix_s(NOW_S)))
    }

    #[test]
    fn refund_notifications_verify_and_map_each_status() {
        let notice = |state| RefundNotice {
            notify_id: "NTF1".into(),
            payment_id: PaymentId::parse(PAYMENT_ID).expect("id"),
            refund_no: REFUND_NO.into(),
            state,
            amount_minor: 300,
        };
        let body = refund_body(&[]);
        assert_eq!(
            verify(&body, &signed(0, NOW_S, &body)),
            Ok(notice(RefundState::Succeeded))
        );
        let body = refund_body(&[("refund_status", "FAILED".into())]);
        assert_eq!(
            verify(&body, &signed(0, NOW_S, &body)),
            Ok(notice(RefundState::Failed(format!(
                "the sandbox failed refund {REFUND_NO}"
            ))))
        );
    }

    #[test]
    fn refund_notifications_that_fail_verification_are_refused_not_passed_on() {
        let body = refund_body(&[]);
        let refused = |body: &str, headers: &http::HeaderMap| match verify(body, headers) {
            Err(rejection) => rejection,
            other => panic!("{body}: {other:?}"),
        };
        assert!(matches!(
            refused(&body, &signed(1, NOW_S, &body)),
            CallbackRejection::BadSignature(_)
        ));
        let tampered = body.replace("300", "301");
        assert!(matches!(
            refused(&tampered, &signed(0, NOW_S, &body)),
            CallbackRejection::BadSignature(_)
        ));
        assert!(matches!(
            refused(&body, &http::HeaderMap::new()),
            CallbackRejection::BadSignature(_)
        ));
        assert!(matches!(
            refused(&body, &signed(0, NOW_S - 300, &body)),
            CallbackRejection::StaleTimestamp { skew_s: 300, .. }
        ));
        let other = refund_body(&[("merchant_id", "M2".into())]);
        assert_eq!(
            refused(&other, &signed(0, NOW_S, &other)),
            CallbackRejection::WrongMerchant("M2".into())
        );
        for change in [
            ("refund_status", serde_json::json!("PROCESSING")),
            ("refund_status", serde_json::json!("REFUNDED")),
            ("out_trade_no", serde_json::json!("bad-id")),
            ("out_refund_no", serde_json::json!("R 1")),
            ("amount_minor", serde_json::json!(0)),
            ("amount_minor", serde_json::json!("300")),
            ("notify_id", serde_json::json!("")),
        ] {
            let body = refund_body(std::slice::from_ref(&change));
            assert!(
                matches!(
                    refused(&body, &signed(0, NOW_S, &body)),
                    CallbackRejection::Malformed(_)
                ),
                "{change:?}"
            );
        }
    }

    #[test]
    fn each_notification_comes_back_as_what_its_verified_content_says() {
        let paid = serde_json::json!({
            "notify_id": "NTF2", "merchant_id": "M1", "out_trade_no": PAYMENT_ID,
            "trade_no": "SBX1", "status": "PAID", "amount_minor": 1000, "currency": "CNY",
            "paid_at": "2026-01-01T00:00:00Z",
        })
        .to_string();
        let now = Timestamp::from_unix_s(NOW_S);
        let got = provider().verify_callback(&signed(0, NOW_S, &paid), paid.as_bytes(), now);
        assert!(
            matches!(&got, Ok(Verified::Payment(n))
                if (n.status, n.amount_minor) == (NotifiedStatus::Paid, 1000)),
            "{got:?}"
        );
        let refunded = refund_body(&[]);
        let got =
            provider().verify_callback(&signed(0, NOW_S, &refunded), refunded.as_bytes(), now);
        assert!(
            matches!(&got, Ok(Verified::Refund(r)) if r.state == RefundState::Succeeded),
            "{got:?}"
        );
        // Without `"event":"REFUND"` a signed body is read as a payment notification, which
        // these are not.
        for body in [
            refund_body(&[("event", "PAYMENT".into())]),
            refund_body(&[("event", serde_json::json!(1))]),
            "not json".to_owned(),
            String::new(),
        ] {
            let got = provider().verify_callback(&signed(0, NOW_S, &body), body.as_bytes(), now);
            assert!(
                matches!(got, Err(CallbackRejection::Malformed(_))),
                "{body}: {got:?}"
            );
        }
    }

    #[test]
    fn a_refund_notification_with_a_bad_signature_is_a_signature_failure() {
        let now = Timestamp::from_unix_s(NOW_S);
        for body in [
            refund_body(&[]),
            refund_body(&[("amount_minor", "x".into())]),
        ] {
            let got = provider().verify_callback(&signed(1, NOW_S, &body), body.as_bytes(), now);
            assert!(
                matches!(got, Err(CallbackRejection::BadSignature(_))),
                "{body}: {got:?}"
            );
        }
    }
}
