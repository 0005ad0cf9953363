//! Refunds: `POST /payments/{payment_id}/refunds` and `GET /payments/{payment_id}/refunds`.
//!
//! A refund is written `pending` in the same transaction that reserves its amount on the
//! payment, under a condition that keeps the reserved sum within the amount however many
//! refunds race. Then the provider is asked (with a refund number derived from payment and
//! refund id, so asking again is the same refund there). Its answer settles the refund in one
//! transaction with the payment: succeeded adds to the refunded sum (and moves the payment to
//! `partially_refunded` or `refunded`), failed releases the reservation. No answer leaves it
//! `pending` for the poller ([`super::refund_check`]), which queries before it asks again.

use crate::app::Deps;
use crate::app::refusal::{self, Refusal};
pub use crate::app::settle::refund_no;
use crate::app::settle::{provider_refund, refund_report, settle_refund};
use crate::domain::payment::MERCHANT_REFUNDABLE;
use crate::domain::refund::{Refund, RefundDecision, RefundKind, RefundStatus, decide_refund};
use crate::domain::{AmountMinor, Payment, PaymentId, RefundId};
use crate::ports::RefundInsert;

pub const REASON_MAX_CHARS: usize = 256;

/// A refund request that has passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub refund_id: RefundId,
    pub amount: AmountMinor,
    pub reason: String,
}

/// Whether the refund was asked for now, or already by an identical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundCreated {
    New,
    Existing,
}

fn unavailable(e: &crate::ports::StoreError) -> Refusal {
    tracing::error!(error = format!("{e:#}"), "refund store failed");
    Refusal::unavailable("could not record the refund; retry with the same request")
}

/// Asks for the refund, or answers the one this `refund_id` already names; the refund's
/// status then is what the provider has said so far.
pub async fn create_refund(
    deps: &Deps,
    payment_id: &PaymentId,
    request: &RefundRequest,
) -> Result<(RefundCreated, Refund), Refusal> {
    let payment = refusal::payment(deps, payment_id).await?;
    let refund = new_refund(deps, &payment, request);
    let inserted = deps
        .store
        .insert_refund(&refund, payment.amount_minor.get(), &MERCHANT_REFUNDABLE)
        .await
        .map_err(|e| unavailable(&e))?;
    if let Some(answer) = not_inserted(inserted, request, payment_id) {
        return answer;
    }
    send_refund(deps, &payment, &refund).await;
    let stored = deps
        .store
        .refund(payment_id, &request.refund_id)
        .await
        .map_err(|e| unavailable(&e))?
        .unwrap_or(refund);
    Ok((RefundCreated::New, stored))
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
) -> Option<Result<(RefundCreated, Refund), Refusal>> {
    let refused = match inserted {
        RefundInsert::Inserted => return None,
        RefundInsert::Exists(existing)
            if existing.amount_minor == request.amount && existing.reason == request.reason =>
        {
            return Some(Ok((RefundCreated::Existing, *existing)));
        }
        RefundInsert::Exists(_) => Refusal::conflict(
            "idempotency_mismatch",
            format!(
                "refund {} was already asked for with different details",
                request.refund_id
            ),
        ),
        RefundInsert::Refused(current) if !MERCHANT_REFUNDABLE.contains(&current.status) => {
            Refusal::conflict(
                "not_refundable",
                format!("payment {payment_id} is {}", current.status),
            )
        }
        RefundInsert::Refused(current) => {
            let left = current.amount_minor.get() - current.refund_reserved_minor;
            Refusal::conflict(
                "refund_exceeds_payment",
                format!(
                    "{} of {} is left to refund on payment {payment_id}",
                    left.max(0),
                    current.amount_minor.get()
                ),
            )
            .on_field("amount_minor")
        }
        RefundInsert::PaymentNotFound => Refusal::not_found(format!("no payment {payment_id}")),
    };
    Some(Err(refused))
}

pub async fn list_refunds(deps: &Deps, payment_id: &PaymentId) -> Result<Vec<Refund>, Refusal> {
    refusal::payment(deps, payment_id).await?;
    deps.store.refunds(payment_id).await.map_err(|e| {
        tracing::error!(error = format!("{e:#}"), "reading refunds failed");
        Refusal::unavailable("could not read the refunds; retry")
    })
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
