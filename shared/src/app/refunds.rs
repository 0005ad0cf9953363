//! Refunds: `POST /payments/{payment_id}/refunds` and `GET /payments/{payment_id}/refunds`.
//!
//! A refund is written `pending` in the same transaction that reserves its amount on the
//! payment, under a condition that keeps the reserved sum within the amount however many
//! refunds race. Then the provider is asked (with a refund number derived from payment and
//! refund id, so asking again is the same refund there). Its answer settles the refund in one
//! transaction with the payment: succeeded adds to the refunded sum (and moves the payment to
//! `partially_refunded` or `refunded`), failed releases the reservation. No answer leaves it
//! `pending` for the poller ([`super::refund_check`]), which queries before it asks again.

use serde::Serialize;

use crate::api::{ApiError, JsonBody, invalid_field};
use crate::app::Deps;
use crate::app::query::parse_payment_id;
use crate::app::refund_check::refund_report;
pub use crate::app::settle::refund_no;
use crate::app::settle::{provider_refund, settle_refund};
use crate::domain::payment::MERCHANT_REFUNDABLE;
use crate::domain::refund::{Refund, RefundDecision, RefundKind, RefundStatus, decide_refund};
use crate::domain::{AmountMinor, Payment, PaymentId, RefundId};
use crate::ports::RefundInsert;

pub const REASON_MAX_CHARS: usize = 256;

const FIELDS: [&str; 3] = ["refund_id", "amount_minor", "reason"];

/// A refund request that has passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub refund_id: RefundId,
    pub amount: AmountMinor,
    pub reason: String,
}

impl RefundRequest {
    /// Parses and checks the raw request. Nothing is written before this succeeds.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        let body = JsonBody::parse(content_type, body, &FIELDS)?;
        let refund_id = RefundId::parse(body.required_str("refund_id")?)
            .map_err(|e| invalid_field("refund_id", format!("refund_id {e}")))?;
        let amount = body.amount_minor("amount_minor")?;
        let reason = body.printable("reason", REASON_MAX_CHARS)?;
        Ok(Self {
            refund_id,
            amount,
            reason,
        })
    }
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

fn unavailable(e: &crate::ports::StoreError) -> ApiError {
    tracing::error!(error = format!("{e:#}"), "refund store failed");
    ApiError::unavailable("could not record the refund; retry with the same request")
}

fn unreadable(e: &crate::ports::StoreError) -> ApiError {
    tracing::error!(error = format!("{e:#}"), "reading refunds failed");
    ApiError::unavailable("could not read the refunds; retry")
}

async fn read_payment(deps: &Deps, id: &PaymentId) -> Result<Payment, ApiError> {
    deps.store
        .payment(id)
        .await
        .map_err(|e| unreadable(&e))?
        .map(|r| r.payment)
        .ok_or_else(|| ApiError::not_found(format!("no payment {id}")))
}

/// Creates the refund (201), or answers the one this `refund_id` already names (200); the
/// refund's status then is what the provider has said so far.
pub async fn create_refund(
    deps: &Deps,
    raw_payment_id: &str,
    request: &RefundRequest,
) -> Result<(u16, RefundView), ApiError> {
    let payment_id = parse_payment_id(raw_payment_id)?;
    let payment = read_payment(deps, &payment_id).await?;
    let refund = new_refund(deps, &payment, request);
    let inserted = deps
        .store
        .insert_refund(&refund, payment.amount_minor.get(), &MERCHANT_REFUNDABLE)
        .await
        .map_err(|e| unavailable(&e))?;
    if let Some(answer) = not_inserted(inserted, request, &payment_id) {
        return answer;
    }
    send_refund(deps, &payment, &refund).await;
    let stored = deps
        .store
        .refund(&payment_id, &request.refund_id)
        .await
        .map_err(|e| unavailable(&e))?
        .unwrap_or(refund);
    Ok((201, RefundView::from(&stored)))
}

fn new_refund(deps: &Deps, payment: &Payment, request: &RefundRequest) -> Refund {
    let now = deps.clock.now();
    Refund {
        refund_id: request.refund_id.clone(),
        payment_id: payment.payment_id.clone(),
        amount_minor: request.amount,
        currency: payment.currency,
        reason: request.reason.clone(),
        kind: RefundKind::Merchant,
        status: RefundStatus::Pending,
        refund_no: refund_no(&payment.payment_id, &request.refund_id),
        provider_trade_no: payment.provider_trade_no.clone(),
        created_at: now,
        updated_at: now,
        // Checked later only if the provider's answer does not settle it now.
        next_check_at: Some(now.plus_s(deps.poll.delay_s(0))),
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        status_reason: None,
    }
}

/// The answer when the refund was not inserted: the one this id names, or why not.
fn not_inserted(
    inserted: RefundInsert,
    request: &RefundRequest,
    payment_id: &PaymentId,
) -> Option<Result<(u16, RefundView), ApiError>> {
    let refused = match inserted {
        RefundInsert::Inserted => return None,
        RefundInsert::Exists(existing)
            if existing.amount_minor == request.amount && existing.reason == request.reason =>
        {
            return Some(Ok((200, RefundView::from(existing.as_ref()))));
        }
        RefundInsert::Exists(_) => ApiError::new(
            409,
            "idempotency_mismatch",
            format!(
                "refund {} was already asked for with different details",
                request.refund_id
            ),
        ),
        RefundInsert::Refused(current) if !MERCHANT_REFUNDABLE.contains(&current.status) => {
            ApiError::new(
                409,
                "not_refundable",
                format!("payment {payment_id} is {}", current.status),
            )
        }
        RefundInsert::Refused(current) => {
            let left = current.amount_minor.get() - current.refund_reserved_minor;
            ApiError::field(
                409,
                "refund_exceeds_payment",
                "amount_minor",
                format!(
                    "{} of {} is left to refund on payment {payment_id}",
                    left.max(0),
                    current.amount_minor.get()
                ),
            )
        }
        RefundInsert::PaymentNotFound => ApiError::not_found(format!("no payment {payment_id}")),
    };
    Some(Err(refused))
}

pub async fn list_refunds(deps: &Deps, raw_payment_id: &str) -> Result<Vec<RefundView>, ApiError> {
    let payment_id = parse_payment_id(raw_payment_id)?;
    read_payment(deps, &payment_id).await?;
    let refunds = deps
        .store
        .refunds(&payment_id)
        .await
        .map_err(|e| unreadable(&e))?;
    Ok(refunds.iter().map(RefundView::from).collect())
}

/// Asks the provider and settles on a definite answer; anything else leaves it to the poller.
async fn send_refund(deps: &Deps, payment: &Payment, refund: &Refund) {
    let Some(adapter) = deps.providers.get(payment.provider).cloned() else {
        return;
    };
    let answer = adapter.refund(&provider_refund(payment, refund)).await;
    let report = refund_report(answer);
    if let RefundDecision::Settle { to, reason } = decide_refund(refund, &report, deps.clock.now())
    {
        settle_refund(deps, refund, to, reason).await;
    }
}
