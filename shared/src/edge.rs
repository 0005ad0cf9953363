//! The HTTP edge of the merchant API, between the functions and the use cases: parses requests
//! and path ids into the use cases' types (nothing is written before this succeeds), renders
//! what they return as the API's views, and maps their refusals to HTTP statuses. Plain `http`
//! types only; the Lambda event types stay in `functions/*`.

use serde::Serialize;

use crate::api::{ApiError, JsonBody, invalid_field, json_response, to_body};
use crate::app::create::{
    CreatePaymentRequest, DEFAULT_EXPIRES_IN_S, EXPIRES_IN_S_RANGE, SUBJECT_MAX_CHARS,
};
use crate::app::refunds::{REASON_MAX_CHARS, RefundRequest};
use crate::app::refusal::{Refusal, RefusalKind};
use crate::domain::refund::{Refund, RefundKind};
use crate::domain::{
    Currency, HistoryEntry, Money, OrderId, Payment, PaymentId, ProviderName, RefundId,
};
use crate::ports::PaymentRecord;

const CREATE_FIELDS: [&str; 6] = [
    "order_id",
    "amount_minor",
    "currency",
    "provider",
    "subject",
    "expires_in_s",
];

const REFUND_FIELDS: [&str; 3] = ["refund_id", "amount_minor", "reason"];

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let status = match refusal.kind {
            RefusalKind::NotFound => 404,
            RefusalKind::Conflict => 409,
            RefusalKind::Unsupported => 422,
            RefusalKind::Unavailable => 503,
        };
        let error = ApiError::new(status, refusal.code, refusal.message);
        ApiError {
            field: refusal.field.map(str::to_owned),
            retry_after_s: refusal.retry_after_s,
            ..error
        }
    }
}

/// The `{payment_id}` path parameter, or a 400.
pub fn payment_id(raw_id: &str) -> Result<PaymentId, ApiError> {
    PaymentId::parse(raw_id).map_err(|e| {
        ApiError::field(
            400,
            "invalid_field",
            "payment_id",
            format!("payment_id {e}"),
        )
    })
}

/// Parses and checks the raw request. Nothing is written before this succeeds.
pub fn create_request(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<CreatePaymentRequest, ApiError> {
    let body = JsonBody::parse(content_type, body, &CREATE_FIELDS)?;
    let order_id = OrderId::parse(body.required_str("order_id")?)
        .map_err(|e| invalid_field("order_id", format!("order_id {e}")))?;
    let amount = body.amount_minor("amount_minor")?;
    let currency = Currency::parse(body.required_str("currency")?)
        .map_err(|e| invalid_field("currency", e.to_string()))?;
    let provider = ProviderName::parse(body.required_str("provider")?)
        .map_err(|e| invalid_field("provider", e.to_string()))?;
    let subject = body.printable("subject", SUBJECT_MAX_CHARS)?;
    let expires_in_s = match body.get("expires_in_s") {
        None => DEFAULT_EXPIRES_IN_S,
        Some(v) => v
            .as_i64()
            .filter(|s| EXPIRES_IN_S_RANGE.contains(s))
            .ok_or_else(|| {
                invalid_field(
                    "expires_in_s",
                    format!(
                        "expires_in_s must be an integer from {} to {}",
                        EXPIRES_IN_S_RANGE.start(),
                        EXPIRES_IN_S_RANGE.end()
                    ),
                )
            })?,
    };
    Ok(CreatePaymentRequest {
        order_id,
        money: Money { amount, currency },
        provider,
        subject,
        expires_in_s,
    })
}

/// Parses and checks the raw request. Nothing is written before this succeeds.
pub fn refund_request(content_type: Option<&str>, body: &[u8]) -> Result<RefundRequest, ApiError> {
    let body = JsonBody::parse(content_type, body, &REFUND_FIELDS)?;
    let refund_id = RefundId::parse(body.required_str("refund_id")?)
        .map_err(|e| invalid_field("refund_id", format!("refund_id {e}")))?;
    let amount = body.amount_minor("amount_minor")?;
    let reason = body.printable("reason", REASON_MAX_CHARS)?;
    Ok(RefundRequest {
        refund_id,
        amount,
        reason,
    })
}

/// The public view of a payment, as the API shows it.
#[derive(Debug, Serialize)]
pub struct PaymentView {
    pub payment_id: String,
    pub order_id: String,
    pub status: &'static str,
    pub amount_minor: i64,
    pub currency: &'static str,
    pub provider: &'static str,
    pub subject: String,
    pub attempt: u32,
    pub version: u32,
    pub expires_at: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub refunded_minor: i64,
}

impl From<&Payment> for PaymentView {
    fn from(p: &Payment) -> Self {
        Self {
            payment_id: p.payment_id.to_string(),
            order_id: p.order_id.to_string(),
            status: p.status.as_str(),
            amount_minor: p.amount_minor.get(),
            currency: p.currency.code(),
            provider: p.provider.as_str(),
            subject: p.subject.clone(),
            attempt: p.attempt,
            version: p.version,
            expires_at: p.expires_at.to_rfc3339(),
            created_at: p.created_at.to_rfc3339(),
            updated_at: p.updated_at.to_rfc3339(),
            pay_url: p.pay_url.clone(),
            status_reason: p.status_reason.clone(),
            refunded_minor: p.refunded_minor,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HistoryView {
    pub version: u32,
    pub from: Option<&'static str>,
    pub to: &'static str,
    pub at: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&HistoryEntry> for HistoryView {
    fn from(h: &HistoryEntry) -> Self {
        Self {
            version: h.version,
            from: h.from.map(|s| s.as_str()),
            to: h.to.as_str(),
            at: h.at.to_rfc3339(),
            source: h.source.clone(),
            reason: h.reason.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PaymentWithHistory {
    #[serde(flatten)]
    pub payment: PaymentView,
    pub history: Vec<HistoryView>,
}

/// A refund as the API shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RefundView {
    pub refund_id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: &'static str,
    pub reason: String,
    pub kind: RefundKind,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

impl From<&Refund> for RefundView {
    fn from(r: &Refund) -> Self {
        Self {
            refund_id: r.refund_id.to_string(),
            payment_id: r.payment_id.to_string(),
            amount_minor: r.amount_minor.get(),
            currency: r.currency.code(),
            reason: r.reason.clone(),
            kind: r.kind,
            status: r.status.as_str(),
            created_at: r.created_at.to_rfc3339(),
            updated_at: r.updated_at.to_rfc3339(),
            status_reason: r.status_reason.clone(),
        }
    }
}

impl From<&PaymentRecord> for PaymentWithHistory {
    fn from(record: &PaymentRecord) -> Self {
        Self {
            payment: PaymentView::from(&record.payment),
            history: record.history.iter().map(HistoryView::from).collect(),
        }
    }
}

/// `{"refunds": [...]}`: an object, so the list can gain fields later.
#[derive(Debug, Serialize)]
pub struct RefundList {
    pub refunds: Vec<RefundView>,
}

/// A use case's answer: `status` and the view of what it returned, or the refusal's status
/// and error body.
pub fn respond<T, V: Serialize>(
    status: u16,
    result: Result<T, Refusal>,
    view: impl FnOnce(T) -> V,
) -> http::Response<String> {
    match result {
        Ok(value) => json_response(status, to_body(&view(value))),
        Err(refusal) => ApiError::from(refusal).into_response(),
    }
}
