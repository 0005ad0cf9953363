//! `POST /callbacks/{provider}`: verify, then one guarded transition, however often it arrives.
//!
//! The first delivery costs one DynamoDB request (see [`super::apply`]).

use crate::app::Deps;
use crate::app::apply::{Applied, Start, apply_report};
use crate::app::settle::{raise, raise_alarm, settle_refund};
use crate::domain::decision::{Asker, Context, Nothing, Report};
use crate::domain::refund::{Refund, RefundDecision, RefundReport, RefundStatus, decide_refund};
use crate::domain::report::ProviderTrade;
use crate::domain::{PaymentStatus, ProviderName};
use crate::ports::{CallbackAnswer, CallbackReply, Notification, RefundNotice, Verified};
use crate::telemetry::alarm;

/// What happened to one delivery, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackResult {
    Applied,
    /// Paid after its close: a refund of it was started.
    LatePaymentRefunded,
    Duplicate,
    Ignored,
    AmountMismatch,
    UnknownPayment,
    Rejected,
    RetryLater,
}

pub struct CallbackOutcome {
    pub result: CallbackResult,
    pub reply: CallbackReply,
}

/// Handles one delivery. `None` means no such provider is configured (the edge answers 404).
pub async fn handle_callback(
    deps: &Deps,
    provider: ProviderName,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<CallbackOutcome> {
    let adapter = deps.providers.get(provider)?.clone();
    let now = deps.clock.now();
    let result = match adapter.verify_callback(headers, body, now) {
        Ok(Verified::Payment(notification)) => {
            apply_notification(deps, provider, &notification).await
        }
        Ok(Verified::Refund(notice)) => apply_refund_notice(deps, provider, &notice).await,
        Err(rejection) => {
            tracing::warn!(%provider, reason = %rejection, "callback refused before any write");
            let reply = adapter.reply(CallbackAnswer::Rejected, &rejection.to_string());
            return Some(CallbackOutcome {
                result: CallbackResult::Rejected,
                reply,
            });
        }
    };
    Some(CallbackOutcome {
        result,
        reply: adapter.reply(answer_for(result), detail_for(result)),
    })
}

fn answer_for(result: CallbackResult) -> CallbackAnswer {
    match result {
        CallbackResult::UnknownPayment | CallbackResult::Rejected => CallbackAnswer::Rejected,
        CallbackResult::RetryLater => CallbackAnswer::RetryLater,
        _ => CallbackAnswer::Success,
    }
}

fn detail_for(result: CallbackResult) -> &'static str {
    match result {
        CallbackResult::UnknownPayment => "unknown payment",
        CallbackResult::Rejected => "refused",
        CallbackResult::RetryLater => "temporarily unable to record; retry",
        _ => "",
    }
}

/// A verified payment notification, through the decision table.
async fn apply_notification(
    deps: &Deps,
    provider: ProviderName,
    n: &Notification,
) -> CallbackResult {
    let report = Report::Trade(ProviderTrade {
        status: n.status,
        provider_trade_no: n.provider_trade_no.clone(),
        amount_minor: n.amount_minor,
        currency: n.currency,
    });
    let ctx = Context {
        asker: Asker::Callback,
        provider,
        now: deps.clock.now(),
        max_unknown_checks: deps.poll.max_unknown_checks(),
    };
    let applied = apply_report(deps, Start::Unread(n.payment_id.clone()), &report, &ctx).await;
    let result = match applied {
        Applied::Moved(PaymentStatus::Exception) => CallbackResult::AmountMismatch,
        Applied::Moved(_) => CallbackResult::Applied,
        Applied::LatePaymentRefunded => CallbackResult::LatePaymentRefunded,
        Applied::Duplicate | Applied::Raced => CallbackResult::Duplicate,
        Applied::Ignored => CallbackResult::Ignored,
        Applied::UnknownPayment => {
            alarm(
                "callback_unknown_payment",
                &format!("verified notification for unknown payment {}", n.payment_id),
            );
            CallbackResult::UnknownPayment
        }
        Applied::Refused => CallbackResult::UnknownPayment,
        Applied::StoreFailed => CallbackResult::RetryLater,
    };
    tracing::info!(%provider, payment_id = %n.payment_id, notify_id = n.notify_id, ?result, "callback handled");
    result
}

/// A verified refund notification settles the pending refund it names, as a poll's answer
/// would; a repeat, or one about a settled refund, changes nothing and is acknowledged. A
/// refund we do not know (by payment and refund number) is refused, like an unknown payment.
async fn apply_refund_notice(
    deps: &Deps,
    provider: ProviderName,
    notice: &RefundNotice,
) -> CallbackResult {
    let result = settle_notified(deps, provider, notice).await;
    tracing::info!(%provider, payment_id = %notice.payment_id, refund_no = notice.refund_no, notify_id = notice.notify_id, ?result, "refund callback handled");
    result
}

async fn settle_notified(
    deps: &Deps,
    provider: ProviderName,
    notice: &RefundNotice,
) -> CallbackResult {
    let refund = match notified_refund(deps, provider, notice).await {
        Ok(refund) => refund,
        Err(result) => return result,
    };
    let report = RefundReport::Notified {
        state: notice.state.clone(),
        amount_minor: notice.amount_minor,
    };
    match decide_refund(&refund, &report, deps.clock.now()) {
        RefundDecision::Settle { to, reason } => {
            if settle_refund(deps, &refund, to, reason).await {
                return CallbackResult::Applied;
            }
            match deps
                .store
                .refund(&refund.payment_id, &refund.refund_id)
                .await
            {
                Ok(Some(current)) if current.status != RefundStatus::Pending => {
                    CallbackResult::Duplicate
                }
                _ => CallbackResult::RetryLater,
            }
        }
        RefundDecision::Contradicted(compensation) => {
            // Money may have moved against our record: never settle twice, hand it to a human.
            raise(deps, &compensation).await;
            CallbackResult::Duplicate
        }
        RefundDecision::AmountMismatch(raised) => {
            raise_alarm(&raised);
            CallbackResult::AmountMismatch
        }
        RefundDecision::Nothing(Nothing::Ignored) => CallbackResult::Ignored,
        RefundDecision::Nothing(Nothing::Duplicate)
        | RefundDecision::AskAgain
        | RefundDecision::Wait { .. } => CallbackResult::Duplicate,
    }
}

/// The refund a verified notice names, if it is one of ours with the provider that notified.
async fn notified_refund(
    deps: &Deps,
    provider: ProviderName,
    notice: &RefundNotice,
) -> Result<Refund, CallbackResult> {
    let (payment, refunds) = match (
        deps.store.payment(&notice.payment_id).await,
        deps.store.refunds(&notice.payment_id).await,
    ) {
        (Ok(Some(record)), Ok(refunds)) => (record.payment, refunds),
        (Ok(None), _) => return Err(CallbackResult::UnknownPayment),
        _ => return Err(CallbackResult::RetryLater),
    };
    if payment.provider != provider {
        alarm(
            "callback_wrong_provider",
            &format!(
                "{provider} notified a refund of payment {} which belongs to {}",
                payment.payment_id, payment.provider
            ),
        );
        return Err(CallbackResult::UnknownPayment);
    }
    let refund = refunds
        .into_iter()
        .find(|r| r.refund_no == notice.refund_no);
    refund.ok_or_else(|| {
        alarm(
            "callback_unknown_refund",
            &format!(
                "verified refund notification for unknown refund {} of payment {}",
                notice.refund_no, notice.payment_id
            ),
        );
        CallbackResult::UnknownPayment
    })
}
