//! Shared steps at the bottom of app/: settling a refund together with its payment, refunding a
//! payment that landed after it was over, and recording work for a human. They return their own
//! types; the entry points above map them to their outcomes.

use crate::app::Deps;
use crate::crypto::sha256_hex;
use crate::domain::decision::{Action, Asker, Context, Report, decide};
use crate::domain::payment::LATE_PAYMENT_REFUNDABLE;
use crate::domain::refund::{Refund, RefundKind, RefundReport, RefundStatus, after_settled};
use crate::domain::report::Alarm;
use crate::domain::{Payment, PaymentId, RefundId};
use crate::ports::{
    Compensation, ProviderError, ProviderRefund, RefundInsert, RefundSettlement, RefundState,
    StoreError,
};
use crate::telemetry::alarm;

/// Attempts at settling a refund when the payment moved under us (another refund settled).
const SETTLE_ATTEMPTS: u32 = 4;

/// The provider-side refund number: `R` and 31 hex digits of SHA-256 over payment and refund
/// id. Letters and digits, 32 long: within every provider's rules (UnionPay's `orderId` is 8 to
/// 40 of them), whatever the merchant's refund id looks like.
pub fn refund_no(payment_id: &PaymentId, refund_id: &RefundId) -> String {
    let digest = sha256_hex(format!("{payment_id}\n{refund_id}").as_bytes());
    format!("R{}", &digest[..31])
}

/// The refund as its provider is asked for it, or about it.
pub fn provider_refund(payment: &Payment, refund: &Refund) -> ProviderRefund {
    ProviderRefund {
        payment_id: payment.payment_id.clone(),
        refund_no: refund.refund_no.clone(),
        amount_minor: refund.amount_minor.get(),
        total_minor: payment.amount_minor.get(),
        currency: payment.currency,
        reason: refund.reason.clone(),
        provider_trade_no: refund
            .provider_trade_no
            .clone()
            .or_else(|| payment.provider_trade_no.clone()),
        requested_at: refund.created_at,
    }
}

/// The answer to a refund request in the refund table's words.
pub fn refund_report(result: Result<RefundState, ProviderError>) -> RefundReport {
    match result {
        Ok(state) => RefundReport::State(state),
        Err(ProviderError::Rejected { code, message }) => {
            RefundReport::RequestRefused(format!("{code}: {message}"))
        }
        Err(ProviderError::Unknown(why)) => RefundReport::NoAnswer(format!("refund: {why}")),
    }
}

pub fn raise_alarm(raised: &Alarm) {
    alarm(raised.name, &raised.message);
}

/// Records work for a human once, and raises the alarm when this call recorded it.
pub async fn raise(deps: &Deps, compensation: &Compensation) {
    match deps.store.put_compensation(compensation).await {
        Ok(true) => alarm(compensation.kind, &compensation.reason),
        Ok(false) => {}
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            id = compensation.id,
            "compensation not recorded"
        ),
    }
}

/// Settles a pending refund together with its payment; retried when another refund of the
/// same payment settled in between. Returns whether this call settled it.
pub async fn settle_refund(
    deps: &Deps,
    refund: &Refund,
    to: RefundStatus,
    reason: Option<String>,
) -> bool {
    for _ in 0..SETTLE_ATTEMPTS {
        let payment = match deps.store.payment(&refund.payment_id).await {
            Ok(Some(record)) => record.payment,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "reading payment to settle a refund"
                );
                return false;
            }
        };
        let settlement = settlement(deps, &payment, refund, to, reason.clone());
        match deps.store.settle_refund(&settlement).await {
            Ok(true) => {
                tracing::info!(payment_id = %refund.payment_id, refund_id = %refund.refund_id, status = %to, "refund settled");
                if let Some(c) = after_settled(refund, to, reason.as_deref(), settlement.at) {
                    raise(deps, &c).await;
                }
                return true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "settling a refund failed");
                return false;
            }
        }
        match deps
            .store
            .refund(&refund.payment_id, &refund.refund_id)
            .await
        {
            Ok(Some(current)) if current.status == RefundStatus::Pending => continue,
            _ => return false,
        }
    }
    false
}

/// What settling `refund` writes, with the payment's own move when the table says one follows.
fn settlement(
    deps: &Deps,
    payment: &Payment,
    refund: &Refund,
    to: RefundStatus,
    reason: Option<String>,
) -> RefundSettlement {
    let now = deps.clock.now();
    let amount = refund.amount_minor.get();
    let transition = (to == RefundStatus::Succeeded)
        .then(|| {
            let ctx = Context {
                asker: Asker::Refund,
                provider: payment.provider,
                now,
                max_unknown_checks: deps.poll.max_unknown_checks(),
            };
            let report = Report::RefundSucceeded {
                refund_id: refund.refund_id.clone(),
                amount_minor: amount,
            };
            match decide(payment, &report, &ctx).action {
                Action::Move(transition) => Some(transition),
                _ => None,
            }
        })
        .flatten();
    RefundSettlement {
        payment_id: refund.payment_id.clone(),
        refund_id: refund.refund_id.clone(),
        amount_minor: amount,
        to,
        reason,
        at: now,
        payment_status: payment.status,
        payment_version: payment.version,
        transition,
    }
}

/// A payment reported paid after it was over: money moved that no order wants. Records a
/// refund of it, derived from the payment so it happens once however often this is reported;
/// the poller asks the provider at once. Returns whether this report started it.
pub async fn refund_late_payment(
    deps: &Deps,
    payment: &Payment,
    provider_trade_no: Option<String>,
) -> Result<bool, StoreError> {
    let now = deps.clock.now();
    let refund_id = RefundId::late_payment(&payment.payment_id);
    let refund = Refund {
        refund_no: refund_no(&payment.payment_id, &refund_id),
        refund_id,
        payment_id: payment.payment_id.clone(),
        amount_minor: payment.amount_minor,
        currency: payment.currency,
        reason: "paid after the payment was closed".into(),
        kind: RefundKind::LatePayment,
        status: RefundStatus::Pending,
        provider_trade_no,
        created_at: now,
        updated_at: now,
        next_check_at: Some(now),
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        status_reason: None,
    };
    let inserted = deps
        .store
        .insert_refund(
            &refund,
            payment.amount_minor.get(),
            &LATE_PAYMENT_REFUNDABLE,
        )
        .await?;
    if inserted != RefundInsert::Inserted {
        return Ok(false);
    }
    // It heals itself: a warning, not an alarm (`late_payment_unrefunded` follows if the
    // refund fails).
    tracing::warn!(
        payment_id = %payment.payment_id,
        refund_id = %refund.refund_id,
        status = %payment.status,
        "late payment: paid after the payment was over; its refund was started"
    );
    Ok(true)
}
