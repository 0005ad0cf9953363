//! `GET /payments/{payment_id}`: the payment and its status history.

use serde::Serialize;

use crate::api::ApiError;
use crate::app::Deps;
use crate::domain::{HistoryEntry, Payment, PaymentId};

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

/// The `{payment_id}` path parameter, or a 400.
pub fn parse_payment_id(raw_id: &str) -> Result<PaymentId, ApiError> {
    PaymentId::parse(raw_id).map_err(|e| {
        ApiError::field(
            400,
            "invalid_field",
            "payment_id",
            format!("payment_id {e}"),
        )
    })
}

pub async fn get_payment(deps: &Deps, raw_id: &str) -> Result<PaymentWithHistory, ApiError> {
    let id = parse_payment_id(raw_id)?;
    let record = deps.store.payment(&id).await.map_err(|e| {
        tracing::error!(error = %e, "reading payment failed");
        ApiError::unavailable("could not read the payment; retry")
    })?;
    let record = record.ok_or_else(|| ApiError::not_found(format!("no payment {id}")))?;
    Ok(PaymentWithHistory {
        payment: PaymentView::from(&record.payment),
        history: record.history.iter().map(HistoryView::from).collect(),
    })
}
