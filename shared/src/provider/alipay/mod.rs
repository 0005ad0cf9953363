//! The Alipay adapter (OpenAPI gateway, RSA2, public-key mode).
//!
//! Requests are form posts to the gateway, signed with our app private key over the sorted
//! parameters (`wire`). Answers are verified over the raw text of `<method>_response` with
//! Alipay's public key (`answer`). Notifications are form posts signed over their decoded
//! parameters (`notify`). We answer a notification with exactly `success`; anything else makes
//! Alipay resend it (after 4m, 10m, 10m, 1h, 2h, 6h, 15h).
//!
//! Certificate mode (`app_cert_sn` / `alipay_root_cert_sn`) is not supported: configure the app
//! for public-key mode.

mod answer;
mod notify;
mod statement;
mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::crypto::{RsaSigner, RsaVerifier};
use crate::domain::{Currency, PaymentId, ProviderName, Timestamp};
use crate::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, Clock, CloseOutcome, Notification,
    PaymentProvider, ProviderCreate, ProviderCreated, ProviderError, ProviderRefund, ProviderTrade,
    RefundState, Verified,
};

pub use answer::AlipayRefund;
pub use statement::{
    BILL_URL_QUERY, DownloadStatementError, STATEMENT_FILE_BYTES_MAX, STATEMENT_LINES_MAX,
    StatementError, StatementKind, StatementLine, parse_statement,
};

pub const DEFAULT_GATEWAY_URL: &str = "https://openapi.alipay.com/gateway.do";

const PRECREATE: &str = "alipay.trade.precreate";
const QUERY: &str = "alipay.trade.query";
const CLOSE: &str = "alipay.trade.close";
const REFUND: &str = "alipay.trade.refund";
const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";

/// Alipay's limit on `out_request_no`.
const REFUND_ID_MAX_LEN: usize = 64;

pub struct AlipayConfig {
    /// [`DEFAULT_GATEWAY_URL`] in production; the sandbox gateway or a local stand-in otherwise.
    pub gateway_url: String,
    pub app_id: String,
    /// When set, notifications must name this seller (`seller_id`, the 2088... partner id).
    pub seller_id: Option<String>,
    pub app_private_key: RsaSigner,
    pub alipay_public_key: RsaVerifier,
    /// Where Alipay sends notifications: our `/callbacks/alipay` route.
    pub notify_url: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for AlipayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayConfig")
            .field("gateway_url", &self.gateway_url)
            .field("app_id", &self.app_id)
            .field("seller_id", &self.seller_id)
            .field("app_private_key", &"<redacted>")
            .field("alipay_public_key", &"<set>")
            .field("notify_url", &self.notify_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub struct AlipayProvider {
    config: AlipayConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AlipayProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn unknown(err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unknown(err.to_string())
}

/// A request we refused to send: definitely not done.
fn refused(code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Decimal yuan for the gateway. Alipay takes CNY only; a new currency must decide here.
fn yuan(currency: Currency, amount_minor: i64) -> String {
    match currency {
        Currency::Cny => currency.format_major(amount_minor),
    }
}

fn china_time(at: Timestamp) -> Result<String, ProviderError> {
    wire::china_time(at).ok_or_else(|| refused("LOCAL_TIME", format!("{at} is out of range")))
}

impl AlipayProvider {
    pub fn new(config: AlipayConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self {
            config,
            http,
            clock,
        })
    }

    /// The signed form for one call, stamped with the clock's now.
    fn signed_form(
        &self,
        method: &str,
        biz_content: &str,
        notify_url: Option<&str>,
    ) -> Result<String, ProviderError> {
        let timestamp = china_time(self.clock.now())?;
        let call = wire::GatewayCall {
            app_id: &self.config.app_id,
            method,
            biz_content,
            notify_url,
            timestamp: &timestamp,
        };
        Ok(call.signed_form(&self.config.app_private_key))
    }

    /// One gateway call; returns the verified raw `<method>_response`. Transport failures,
    /// non-200 answers and answers we cannot authenticate are all "unknown": they say nothing
    /// about what Alipay did.
    async fn call(
        &self,
        method: &str,
        biz_content: &str,
        notify_url: Option<&str>,
    ) -> Result<Vec<u8>, ProviderError> {
        let form = self.signed_form(method, biz_content, notify_url)?;
        let response = self
            .http
            .post(wire::post_url(&self.config.gateway_url))
            .header(http::header::CONTENT_TYPE, wire::FORM_CONTENT_TYPE)
            .body(form)
            .send()
            .await
            .map_err(unknown)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unknown)?;
        if status != 200 {
            return Err(unknown(format!("gateway answered {status}")));
        }
        let content = answer::verified_content(&body, method, &self.config.alipay_public_key)?;
        Ok(content.to_vec())
    }

    /// Closes an unpaid trade (`alipay.trade.close`). `Rejected` with `ACQ.TRADE_NOT_EXIST`
    /// means nothing was closed because nobody has scanned the code yet; the trade can still
    /// open until its `time_expire`.
    pub async fn close(&self, payment_id: &PaymentId) -> Result<(), ProviderError> {
        let content = self.call(CLOSE, &wire::trade_biz(payment_id), None).await?;
        answer::parse_close(&content)
    }

    /// Refunds `amount_minor` of a paid trade (`alipay.trade.refund`). `refund_id` becomes
    /// `out_request_no`, so repeating a refund with the same id refunds once. `total_minor`
    /// (the payment's amount) only bounds the request: Alipay knows the trade's total.
    pub async fn refund(
        &self,
        payment_id: &PaymentId,
        refund_id: &str,
        amount_minor: i64,
        total_minor: i64,
        reason: &str,
    ) -> Result<AlipayRefund, ProviderError> {
        let biz_content = refund_biz(payment_id, refund_id, amount_minor, total_minor, reason)?;
        let content = self.call(REFUND, &biz_content, None).await?;
        answer::parse_refund(&content, payment_id)
    }
}

/// The refund's `biz_content`, after the checks Alipay would make anyway, so a bad request
/// never leaves.
fn refund_biz(
    payment_id: &PaymentId,
    refund_id: &str,
    amount_minor: i64,
    total_minor: i64,
    reason: &str,
) -> Result<String, ProviderError> {
    let id_ok = !refund_id.is_empty()
        && refund_id.len() <= REFUND_ID_MAX_LEN
        && refund_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !id_ok {
        return Err(refused(
            "INVALID_REFUND_ID",
            format!("refund id must be 1 to {REFUND_ID_MAX_LEN} characters of [A-Za-z0-9_-]"),
        ));
    }
    if amount_minor <= 0 || amount_minor > total_minor {
        return Err(refused(
            "INVALID_REFUND_AMOUNT",
            format!("refund of {amount_minor} is not within 1..={total_minor}"),
        ));
    }
    let amount = yuan(Currency::Cny, amount_minor);
    Ok(wire::refund_biz(payment_id, refund_id, &amount, reason))
}

/// The precreate's `biz_content`: our payment id as `out_trade_no`, yuan, China time.
fn precreate_biz(request: &ProviderCreate) -> Result<String, ProviderError> {
    let total_amount = yuan(request.money.currency, request.money.amount.get());
    let time_expire = china_time(request.expires_at)?;
    Ok(wire::precreate_biz(
        &request.payment_id,
        &total_amount,
        &request.subject,
        &time_expire,
    ))
}

/// A notification examined without a provider (which needs our private key), for operators'
/// tools: the exact content its `sign` covers (the rule that verifies, else the trade rule that
/// drops `sign_type`; `None` if the form does not parse) and what
/// [`AlipayProvider::verify_callback`] concludes with these settings.
pub fn examine_notification(
    body: &[u8],
    alipay_public_key: &RsaVerifier,
    app_id: &str,
    seller_id: Option<&str>,
) -> (Option<String>, Result<Notification, CallbackRejection>) {
    let params = match notify::parse_form(body) {
        Ok(params) => params,
        Err(why) => return (None, Err(why)),
    };
    let sign = params.get("sign").map_or("", String::as_str);
    let content = [false, true]
        .map(|keep_sign_type| wire::notify_sign_content(&params, keep_sign_type))
        .into_iter()
        .find(|content| alipay_public_key.verify_base64(content.as_bytes(), sign))
        .unwrap_or_else(|| wire::notify_sign_content(&params, false));
    let outcome = notify::verify_params(&params, alipay_public_key)
        .and_then(|()| notify::notification(&params, app_id, seller_id));
    (Some(content), outcome)
}

#[async_trait]
impl PaymentProvider for AlipayProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Alipay
    }

    /// `alipay.trade.precreate`: the QR code content is the pay URL.
    async fn create(&self, request: &ProviderCreate) -> Result<ProviderCreated, ProviderError> {
        let biz_content = precreate_biz(request)?;
        let content = self
            .call(PRECREATE, &biz_content, Some(&self.config.notify_url))
            .await?;
        answer::parse_precreate(&content, &request.payment_id)
    }

    async fn query(&self, payment_id: &PaymentId) -> Result<Option<ProviderTrade>, ProviderError> {
        let content = self.call(QUERY, &wire::trade_biz(payment_id), None).await?;
        answer::parse_query(&content, payment_id)
    }

    /// `alipay.trade.refund` with `out_request_no` = the refund number. `fund_change=Y` means
    /// this request moved the money. Otherwise (a repeat, or a refund Alipay has not finished)
    /// the refund query says where it stands, as Alipay asks; Alipay took the request, so a
    /// query that cannot tell leaves it processing.
    async fn refund(&self, refund: &ProviderRefund) -> Result<RefundState, ProviderError> {
        let answer = AlipayProvider::refund(
            self,
            &refund.payment_id,
            &refund.refund_no,
            refund.amount_minor,
            refund.total_minor,
            &refund.reason,
        )
        .await?;
        if answer.fund_change {
            return Ok(RefundState::Succeeded);
        }
        match self.query_refund(refund).await {
            Ok(Some(state)) => Ok(state),
            Ok(None) | Err(_) => Ok(RefundState::Processing),
        }
    }

    /// `alipay.trade.fastpay.refund.query` by `out_trade_no` and `out_request_no`.
    async fn query_refund(
        &self,
        refund: &ProviderRefund,
    ) -> Result<Option<RefundState>, ProviderError> {
        let biz_content = wire::refund_query_biz(&refund.payment_id, &refund.refund_no);
        let content = self.call(REFUND_QUERY, &biz_content, None).await?;
        answer::parse_refund_query(
            &content,
            &refund.payment_id,
            &refund.refund_no,
            refund.amount_minor,
        )
    }

    /// `ACQ.TRADE_STATUS_ERROR` is Alipay's answer for a paid (or finished) trade.
    async fn close(&self, payment_id: &PaymentId) -> Result<CloseOutcome, ProviderError> {
        super::close_outcome(
            AlipayProvider::close(self, payment_id).await,
            &["ACQ.TRADE_STATUS_ERROR"],
            &["ACQ.TRADE_NOT_EXIST"],
            &["ACQ.TRADE_HAS_CLOSE"],
        )
    }

    /// No replay window: Alipay's notifications carry no per-delivery timestamp, so `now` is
    /// unused and a replay meets the guarded transition.
    ///
    /// Always a payment notification: Alipay sends no notification of its own for
    /// `alipay.trade.refund`, whose answer is synchronous (`fund_change`) and whose later state
    /// comes from `alipay.trade.fastpay.refund.query`. The trade's own notification may carry
    /// refund fields (`refund_fee`, `gmt_refund`, `out_biz_no`) after a refund; it is still a
    /// trade notification and is verified as one.
    fn verify_callback(
        &self,
        _headers: &http::HeaderMap,
        body: &[u8],
        _now: Timestamp,
    ) -> Result<Verified, CallbackRejection> {
        let params = notify::parse_form(body)?;
        notify::verify_params(&params, &self.config.alipay_public_key)?;
        notify::notification(
            &params,
            &self.config.app_id,
            self.config.seller_id.as_deref(),
        )
        .map(Verified::Payment)
    }

    /// Alipay stops resending only on exactly `success`; `fail` (or anything else) is resent.
    /// The detail is for our logs, not for Alipay.
    fn reply(&self, answer: CallbackAnswer, _detail: &str) -> CallbackReply {
        let (status, body) = match answer {
            CallbackAnswer::Success => (200, "success"),
            CallbackAnswer::RetryLater => (500, "fail"),
            CallbackAnswer::Rejected => (400, "fail"),
        };
        CallbackReply {
            status,
            content_type: "text/plain",
            body: body.to_owned(),
        }
    }
}

#[cfg(test)]
mod examine_tests {
    use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;

    use super::*;

    #[test]
    fn examine_notification_shows_what_was_signed_and_the_verdict() {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let private: Pkcs8V1Der<'_> = key.as_der().expect("pkcs8");
        let public: PublicKeyX509Der<'_> = key.public_key().as_der().expect("spki");
        let signer = RsaSigner::from_pem(&pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            private.as_ref(),
        )))
        .expect("signer");
        let verifier = RsaVerifier::from_der(public.as_ref()).expect("verifier");
        let content = "app_id=A1&notify_id=N1&out_trade_no=01J0000000000000000000PAY1&total_amount=1.00&trade_no=T1&trade_status=TRADE_SUCCESS";
        let sign = signer.sign_base64(content.as_bytes());
        let body = form_urlencoded::Serializer::new(format!("{content}&sign_type=RSA2"))
            .append_pair("sign", &sign)
            .finish();

        let (shown, outcome) = examine_notification(body.as_bytes(), &verifier, "A1", None);
        assert_eq!(shown.as_deref(), Some(content));
        let notification = outcome.expect("valid");
        assert_eq!(
            (notification.amount_minor, notification.notify_id.as_str()),
            (100, "N1")
        );

        let tampered = body.replace("total_amount=1.00", "total_amount=2.00");
        let (shown, outcome) = examine_notification(tampered.as_bytes(), &verifier, "A1", None);
        assert_eq!(shown, Some(content.replace("1.00", "2.00")));
        assert!(matches!(outcome, Err(CallbackRejection::BadSignature(_))));
        assert_eq!(
            examine_notification(b"a=1&a=2", &verifier, "A1", None).0,
            None
        );
    }
}
