//! What the gateway answers: `{"<method>_response": {...}, "sign": "..."}`. The signature covers
//! the raw text of the `<method>_response` value exactly as received, so we cut that slice out
//! of the body with a small scanner and never re-serialise it. Everything we read afterwards is
//! parsed from that same verified slice.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::crypto::RsaVerifier;
use crate::domain::{Currency, PaymentId};
use crate::ports::{NotifiedStatus, ProviderCreated, ProviderError, ProviderTrade, RefundState};

pub const SUCCESS_CODE: &str = "10000";
pub const TRADE_NOT_EXIST: &str = "ACQ.TRADE_NOT_EXIST";

fn unknown(why: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unknown(why.to_string())
}

fn skip_ws(body: &[u8], mut at: usize) -> usize {
    while body
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// End (exclusive) of the JSON string whose opening quote is at `at`.
fn string_end(body: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while let Some(&b) = body.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// End (exclusive) of the JSON value that starts at `at`.
fn value_end(body: &[u8], at: usize) -> Option<usize> {
    match body.get(at)? {
        b'"' => string_end(body, at),
        b'{' | b'[' => {
            let mut depth = 0_usize;
            let mut i = at;
            while let Some(&b) = body.get(i) {
                match b {
                    b'"' => {
                        i = string_end(body, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        // A number or a literal runs to the next delimiter.
        _ => {
            let len = body[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(body.len() - at);
            (len > 0).then_some(at + len)
        }
    }
}

/// The raw text of the top-level member `key` of the JSON object in `body`, exactly as
/// received. `None` when absent, when present twice (we could not tell which one was signed),
/// or when `body` is not an object. Keys are compared as raw bytes: Alipay's are plain ASCII.
pub fn raw_member<'a>(body: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut at = skip_ws(body, 0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(body, at + 1);
    if body.get(at) == Some(&b'}') {
        return None;
    }
    let mut found = None;
    // Every pass consumes at least one member, so the body's length bounds the passes.
    for _ in 0..body.len() {
        if body.get(at) != Some(&b'"') {
            return None;
        }
        let name_end = string_end(body, at)?;
        let name = &body[at + 1..name_end - 1];
        at = skip_ws(body, name_end);
        if body.get(at) != Some(&b':') {
            return None;
        }
        let value_at = skip_ws(body, at + 1);
        let end = value_end(body, value_at)?;
        if name == key.as_bytes() {
            if found.is_some() {
                return None;
            }
            found = Some(&body[value_at..end]);
        }
        at = skip_ws(body, end);
        match body.get(at)? {
            b',' => at = skip_ws(body, at + 1),
            b'}' => return found,
            _ => return None,
        }
    }
    None
}

/// `alipay.trade.query` -> `alipay_trade_query_response`.
pub fn response_key(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// The verified raw content of the gateway's answer to `method`: the `<method>_response` value
/// (or `error_response`, which the gateway uses when it cannot route a call), checked against
/// the top-level `sign`. An answer we cannot authenticate says nothing about what Alipay did.
pub fn verified_content<'a>(
    body: &'a [u8],
    method: &str,
    alipay_key: &RsaVerifier,
) -> Result<&'a [u8], ProviderError> {
    // The scanner trusts the body to be well-formed JSON; check that first.
    serde_json::from_slice::<IgnoredAny>(body)
        .map_err(|e| unknown(format!("answer is not JSON: {e}")))?;
    let name = response_key(method);
    let content = raw_member(body, &name)
        .or_else(|| raw_member(body, "error_response"))
        .ok_or_else(|| unknown(format!("answer has no single {name}")))?;
    let sign_raw = raw_member(body, "sign").ok_or_else(|| unknown("unsigned answer"))?;
    let sign: String =
        serde_json::from_slice(sign_raw).map_err(|_| unknown("answer's sign is not a string"))?;
    if !alipay_key.verify_base64(content, &sign) {
        return Err(unknown(
            "answer's signature does not verify with the Alipay public key",
        ));
    }
    Ok(content)
}

/// The fields every answer carries.
#[derive(Debug, Deserialize)]
pub struct AnswerStatus {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub sub_code: String,
    #[serde(default)]
    pub sub_msg: String,
}

impl AnswerStatus {
    pub fn parse(content: &[u8]) -> Result<Self, ProviderError> {
        serde_json::from_slice(content).map_err(|e| unknown(format!("answer: {e}")))
    }

    /// A business failure with this `sub_code` (code 40004).
    pub fn is_business(&self, sub_code: &str) -> bool {
        self.code == "40004" && self.sub_code == sub_code
    }

    fn rejected(&self) -> ProviderError {
        let (code, message) = if self.sub_code.is_empty() {
            (&self.code, &self.msg)
        } else {
            (&self.sub_code, &self.sub_msg)
        };
        ProviderError::Rejected {
            code: code.clone(),
            message: message.clone(),
        }
    }

    /// `Ok` for success; otherwise whether Alipay definitely did not do it (`Rejected`) or we
    /// cannot tell (`Unknown`).
    pub fn outcome(&self) -> Result<(), ProviderError> {
        // ACQ.SYSTEM_ERROR asks the caller to retry or query: the call may have taken effect.
        let system_error = matches!(
            self.sub_code.as_str(),
            "ACQ.SYSTEM_ERROR" | "aop.ACQ.SYSTEM_ERROR"
        );
        match self.code.as_str() {
            SUCCESS_CODE => Ok(()),
            "40004" if system_error => Err(unknown(format!("{}: {}", self.sub_code, self.sub_msg))),
            // 20001 insufficient authorisation, 40001 missing parameter, 40002 invalid
            // parameter, 40004 business failure, 40006 insufficient permission.
            "20001" | "40001" | "40002" | "40004" | "40006" => Err(self.rejected()),
            // 20000 "service unavailable" and any code we do not know.
            other => Err(unknown(format!("answer code {other}: {}", self.msg))),
        }
    }
}

fn parse_answer<'de, T: Deserialize<'de>>(content: &'de [u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(content).map_err(|e| unknown(format!("answer: {e}")))
}

/// Our payment id must come back: an answer about another trade is not an answer to us.
fn check_trade(out_trade_no: &str, payment_id: &PaymentId) -> Result<(), ProviderError> {
    if out_trade_no != payment_id.as_str() {
        return Err(unknown(format!(
            "answer is for out_trade_no {out_trade_no:?}, not {payment_id}"
        )));
    }
    Ok(())
}

/// Decimal yuan, exactly; the amount is already signed, so a bad one means an answer we
/// cannot read, not a refusal.
fn yuan_minor(text: &str) -> Result<i64, ProviderError> {
    Currency::Cny
        .parse_major(text)
        .map_err(|e| unknown(format!("amount {text:?}: {e}")))
}

pub fn trade_status(status: &str) -> Option<NotifiedStatus> {
    match status {
        "TRADE_SUCCESS" | "TRADE_FINISHED" => Some(NotifiedStatus::Paid),
        "TRADE_CLOSED" => Some(NotifiedStatus::Closed),
        "WAIT_BUYER_PAY" => Some(NotifiedStatus::Pending),
        _ => None,
    }
}

#[derive(Deserialize)]
struct PrecreateAnswer {
    out_trade_no: String,
    qr_code: String,
}

/// The verified answer to `alipay.trade.precreate`.
pub fn parse_precreate(
    content: &[u8],
    payment_id: &PaymentId,
) -> Result<ProviderCreated, ProviderError> {
    let status = AnswerStatus::parse(content)?;
    // A repeated create for a trade that is already paid: the create is not "not done", money
    // moved. Unknown keeps the payment pending, and the next query finds it paid.
    if status.is_business("ACQ.TRADE_HAS_SUCCESS") {
        return Err(unknown("trade already paid; a query will settle it"));
    }
    status.outcome()?;
    let answer: PrecreateAnswer = parse_answer(content)?;
    check_trade(&answer.out_trade_no, payment_id)?;
    if answer.qr_code.is_empty() {
        return Err(unknown("precreate answered without qr_code"));
    }
    // Precreate opens no Alipay trade number yet: the trade exists once the payer scans.
    Ok(ProviderCreated {
        pay_url: answer.qr_code,
        provider_trade_no: None,
    })
}

#[derive(Deserialize)]
struct QueryAnswer {
    out_trade_no: String,
    #[serde(default)]
    trade_no: String,
    trade_status: String,
    total_amount: String,
}

/// The verified answer to `alipay.trade.query`; `None` when Alipay has no such trade (also the
/// case for a precreated trade nobody has scanned yet).
pub fn parse_query(
    content: &[u8],
    payment_id: &PaymentId,
) -> Result<Option<ProviderTrade>, ProviderError> {
    let status = AnswerStatus::parse(content)?;
    if status.is_business(TRADE_NOT_EXIST) {
        return Ok(None);
    }
    status.outcome()?;
    let answer: QueryAnswer = parse_answer(content)?;
    check_trade(&answer.out_trade_no, payment_id)?;
    let trade_status = trade_status(&answer.trade_status)
        .ok_or_else(|| unknown(format!("unknown trade_status {:?}", answer.trade_status)))?;
    Ok(Some(ProviderTrade {
        status: trade_status,
        provider_trade_no: Some(answer.trade_no).filter(|t| !t.is_empty()),
        amount_minor: yuan_minor(&answer.total_amount)?,
        currency: Currency::Cny,
    }))
}

/// The verified answer to `alipay.trade.close`. `ACQ.TRADE_NOT_EXIST` stays a rejection: the
/// close did not happen (a precreated trade exists only once scanned), and only the caller
/// knows whether that is good enough.
pub fn parse_close(content: &[u8]) -> Result<(), ProviderError> {
    AnswerStatus::parse(content)?.outcome()
}

/// What Alipay said to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlipayRefund {
    pub provider_trade_no: Option<String>,
    /// `fund_change=Y`: money moved on this request. Otherwise (for instance a repeat of an
    /// earlier refund with the same `out_request_no`) Alipay asks to confirm with the refund
    /// query, `alipay.trade.fastpay.refund.query`.
    pub fund_change: bool,
    /// Alipay's running total refunded on the trade (`refund_fee`), when it says.
    pub refunded_total_minor: Option<i64>,
}

#[derive(Deserialize)]
struct RefundAnswer {
    out_trade_no: String,
    #[serde(default)]
    trade_no: String,
    #[serde(default)]
    fund_change: String,
    #[serde(default)]
    refund_fee: String,
}

/// The verified answer to `alipay.trade.refund`.
pub fn parse_refund(content: &[u8], payment_id: &PaymentId) -> Result<AlipayRefund, ProviderError> {
    AnswerStatus::parse(content)?.outcome()?;
    let answer: RefundAnswer = parse_answer(content)?;
    check_trade(&answer.out_trade_no, payment_id)?;
    let refunded_total_minor = if answer.refund_fee.is_empty() {
        None
    } else {
        Some(yuan_minor(&answer.refund_fee)?)
    };
    Ok(AlipayRefund {
        provider_trade_no: Some(answer.trade_no).filter(|t| !t.is_empty()),
        fund_change: answer.fund_change == "Y",
        refunded_total_minor,
    })
}

#[derive(Deserialize)]
struct RefundQueryAnswer {
    #[serde(default)]
    out_trade_no: String,
    #[serde(default)]
    out_request_no: String,
    #[serde(default)]
    refund_amount: String,
    #[serde(default)]
    refund_status: String,
}

/// The verified answer to `alipay.trade.fastpay.refund.query` for our refund `refund_id` of
/// `amount_minor`. Alipay answers a refund it does not have with success and no
/// `refund_amount`: that is `None`, as is a trade it does not have. `refund_status` is
/// `REFUND_SUCCESS` once the money moved; Alipay leaves it out before that (a query soon after
/// the refund), so a refund without it is still processing.
pub fn parse_refund_query(
    content: &[u8],
    payment_id: &PaymentId,
    refund_id: &str,
    amount_minor: i64,
) -> Result<Option<RefundState>, ProviderError> {
    let status = AnswerStatus::parse(content)?;
    if status.is_business(TRADE_NOT_EXIST) {
        return Ok(None);
    }
    status.outcome()?;
    let answer: RefundQueryAnswer = parse_answer(content)?;
    if !answer.out_trade_no.is_empty() {
        check_trade(&answer.out_trade_no, payment_id)?;
    }
    if !answer.out_request_no.is_empty() && answer.out_request_no != refund_id {
        return Err(unknown(format!(
            "answer is for out_request_no {:?}, not {refund_id:?}",
            answer.out_request_no
        )));
    }
    if answer.refund_amount.is_empty() {
        return Ok(None);
    }
    let refunded = yuan_minor(&answer.refund_amount)?;
    if refunded != amount_minor {
        return Err(unknown(format!(
            "refund {refund_id} is {refunded} at Alipay, not {amount_minor}"
        )));
    }
    match answer.refund_status.as_str() {
        "REFUND_SUCCESS" => Ok(Some(RefundState::Succeeded)),
        "" => Ok(Some(RefundState::Processing)),
        other => Err(unknown(format!("unknown refund_status {other:?}"))),
    }
}
