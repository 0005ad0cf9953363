//! The poller's check of one pending refund: query first; a refund the provider has never
//! heard of is asked for again (same refund number); no answer waits along the schedule, and a
//! human is told once when it runs long.

use crate::app::Deps;
use crate::app::settle::{provider_refund, raise, refund_report, settle_refund};
use crate::domain::polling::remember;
use crate::domain::refund::{
    Refund, RefundDecision, RefundReport, RefundStatus, decide_refund, refund_unresolved,
};
use crate::domain::{PaymentId, RefundId, Timestamp};
use crate::ports::{PaymentProvider, ProviderRefund, RefundCheck};

/// What one refund check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundChecked {
    /// Someone else had claimed it, or it was no longer pending or due.
    NotClaimed,
    Settled(RefundStatus),
    Waiting,
    /// It moved under us.
    Moved,
    StoreError,
}

/// Claims the refund's check (for `lease_s`) and settles it on the provider's word.
pub async fn check_refund(
    deps: &Deps,
    lease_s: i64,
    payment_id: &PaymentId,
    refund_id: &RefundId,
    now: Timestamp,
) -> RefundChecked {
    let lease_until = deps.clock.now().plus_s(lease_s);
    let claimed = deps
        .store
        .claim_refund_check(payment_id, refund_id, now, lease_until)
        .await;
    let refund = match claimed {
        Ok(Some(refund)) => refund,
        Ok(None) => return RefundChecked::NotClaimed,
        Err(e) => {
            tracing::error!(%payment_id, %refund_id, error = format!("{e:#}"), "claiming a refund check failed");
            return RefundChecked::StoreError;
        }
    };
    let payment = match deps.store.payment(payment_id).await {
        Ok(Some(record)) => record.payment,
        Ok(None) => return RefundChecked::Moved,
        Err(_) => return RefundChecked::StoreError,
    };
    let report = match deps.providers.get(payment.provider) {
        Some(adapter) => ask(adapter.as_ref(), &provider_refund(&payment, &refund)).await,
        None => RefundReport::NoAnswer("provider not configured".into()),
    };
    match decide_refund(&refund, &report, now) {
        RefundDecision::Settle { to, reason } => {
            if settle_refund(deps, &refund, to, reason).await {
                RefundChecked::Settled(to)
            } else {
                RefundChecked::Moved
            }
        }
        RefundDecision::Wait { note, unknown } => {
            wait(deps, &refund, lease_until, now, &note, unknown).await
        }
        _ => RefundChecked::Moved,
    }
}

/// Query first; ask again only for a refund the provider has never heard of.
async fn ask(adapter: &dyn PaymentProvider, request: &ProviderRefund) -> RefundReport {
    match adapter.query_refund(request).await {
        Ok(Some(state)) => RefundReport::State(state),
        Ok(None) => refund_report(adapter.refund(request).await),
        // A refused query (credentials, permissions, a parameter) says nothing about the
        // refund: only the provider's word on the refund itself settles it.
        Err(e) => RefundReport::NoAnswer(format!("query: {e}")),
    }
}

async fn wait(
    deps: &Deps,
    refund: &Refund,
    lease_until: Timestamp,
    now: Timestamp,
    note: &str,
    unknown: bool,
) -> RefundChecked {
    let checks_done = refund.checks_done.saturating_add(1);
    let unknown_checks = if unknown {
        refund.unknown_checks.saturating_add(1)
    } else {
        0
    };
    let recent_checks = remember(&refund.recent_checks, now, note);
    let counts = (checks_done, unknown_checks, deps.poll.max_unknown_checks());
    if let Some(compensation) = refund_unresolved(refund, counts, &recent_checks, now) {
        raise(deps, &compensation).await;
    }
    let check = RefundCheck {
        checks_done,
        unknown_checks,
        next_check_at: now.plus_s(deps.poll.delay_s(checks_done)),
        recent_checks,
    };
    match deps
        .store
        .record_refund_check(&refund.payment_id, &refund.refund_id, lease_until, &check)
        .await
    {
        Ok(true) => RefundChecked::Waiting,
        Ok(false) => RefundChecked::Moved,
        Err(_) => RefundChecked::StoreError,
    }
}
