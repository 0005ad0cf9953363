//! `POST /callbacks/{provider}`: verify, then one guarded transition, however often it arrives.
//!
//! The first delivery costs one DynamoDB request: the transition's condition carries status,
//! version, amount and currency, and a failed condition returns the item as it was, which tells
//! a duplicate (already paid) from a mismatch (amount differs) without a read.

use crate::app::Deps;
use crate::app::refunds::{refund_late_payment, settle_notified_refund};
use crate::domain::payment::{INITIAL_VERSION, Transition};
use crate::domain::{Payment, PaymentStatus, ProviderName};
use crate::ports::{
    CallbackAnswer, CallbackReply, Notification, NotifiedStatus, RefundNotice, StoreError,
    TransitionOutcome,
};
use crate::telemetry::alarm;

/// Bound on re-tries of the transition within one delivery (a stale version, then a mismatch).
const TRANSITION_ATTEMPTS: u32 = 3;

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
    if let Some(verified) = adapter.verify_refund_callback(headers, body, now) {
        let result = match verified {
            Ok(notice) => apply_refund_notice(deps, provider, &notice).await,
            Err(rejection) => {
                tracing::warn!(%provider, reason = %rejection, "refund callback refused before any write");
                CallbackResult::Rejected
            }
        };
        return Some(CallbackOutcome {
            result,
            reply: adapter.reply(answer_for(result), detail_for(result)),
        });
    }
    let notification = match adapter.verify_callback(headers, body, now) {
        Ok(n) => n,
        Err(rejection) => {
            tracing::warn!(%provider, reason = %rejection, "callback refused before any write");
            let reply = adapter.reply(CallbackAnswer::Rejected, &rejection.to_string());
            return Some(CallbackOutcome {
                result: CallbackResult::Rejected,
                reply,
            });
        }
    };
    let result = apply_notification(deps, provider, &notification, "callback").await;
    tracing::info!(%provider, payment_id = %notification.payment_id, notify_id = notification.notify_id, ?result, "callback handled");
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

/// A refund notification settles the pending refund it names, as a poll's answer would; a
/// repeat, or one about a settled refund, changes nothing and is acknowledged.
async fn apply_refund_notice(
    deps: &Deps,
    provider: ProviderName,
    notice: &RefundNotice,
) -> CallbackResult {
    let outcome = settle_notified_refund(deps, provider, notice).await;
    tracing::info!(%provider, payment_id = %notice.payment_id, refund_no = notice.refund_no, notify_id = notice.notify_id, ?outcome, "refund callback handled");
    outcome
}

/// Applies what the provider reports (a callback, or the answer to a query: `source` says which)
/// through the one guarded transition, so a poll racing a callback produces one transition.
pub(crate) async fn apply_notification(
    deps: &Deps,
    provider: ProviderName,
    n: &Notification,
    source: &'static str,
) -> CallbackResult {
    let to = match n.status {
        NotifiedStatus::Paid => PaymentStatus::Paid,
        NotifiedStatus::Closed => PaymentStatus::Closed,
        // "Waiting for the payer" changes nothing, even when it arrives after "paid".
        NotifiedStatus::Pending => return CallbackResult::Ignored,
    };
    let now = deps.clock.now();
    let mut transition = Transition {
        payment_id: n.payment_id.clone(),
        from: PaymentStatus::Pending,
        to,
        expected_version: INITIAL_VERSION,
        amount_guard: (to == PaymentStatus::Paid).then_some((n.amount_minor, n.currency)),
        // A provider saying "paid" after our expiry is still money that moved: never refuse it.
        expiry_guard: None,
        provider_guard: Some(provider),
        at: now,
        source,
        reason: None,
        provider_trade_no: n.provider_trade_no.clone(),
    };
    for _ in 0..TRANSITION_ATTEMPTS {
        let current = match deps.store.apply_transition(&transition).await {
            Ok(TransitionOutcome::Applied) if transition.to == PaymentStatus::Exception => {
                return CallbackResult::AmountMismatch;
            }
            Ok(TransitionOutcome::Applied) => return CallbackResult::Applied,
            Ok(TransitionOutcome::NotFound) => {
                alarm(
                    "callback_unknown_payment",
                    &format!("verified notification for unknown payment {}", n.payment_id),
                );
                return CallbackResult::UnknownPayment;
            }
            Ok(TransitionOutcome::GuardFailed(current)) => current,
            Err(StoreError::Conflict) => return CallbackResult::RetryLater,
            Err(StoreError::Unexpected(e) | StoreError::Corrupt(e)) => {
                tracing::error!(error = format!("{e:#}"), payment_id = %n.payment_id, "callback could not be stored");
                return CallbackResult::RetryLater;
            }
        };
        if current.provider != provider {
            alarm(
                "callback_wrong_provider",
                &format!(
                    "{provider} notified payment {} which belongs to {}",
                    n.payment_id, current.provider
                ),
            );
            return CallbackResult::UnknownPayment;
        }
        match next_step(&current, n, to) {
            Step::Done(result) => return result,
            Step::LatePayment => {
                return match refund_late_payment(
                    deps,
                    &current,
                    n.amount_minor,
                    n.provider_trade_no.clone(),
                )
                .await
                {
                    Ok(true) => CallbackResult::LatePaymentRefunded,
                    Ok(false) => CallbackResult::Duplicate,
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), payment_id = %n.payment_id, "late payment not recorded");
                        CallbackResult::RetryLater
                    }
                };
            }
            Step::Retry(next) => {
                transition = Transition {
                    at: now,
                    ..next.into_transition(&transition, &current)
                }
            }
        }
    }
    CallbackResult::RetryLater
}

enum Step {
    Done(CallbackResult),
    Retry(Retry),
    /// Paid after it was closed: refund it.
    LatePayment,
}

enum Retry {
    /// The payment is pending at another version: try again at that version.
    AtVersion,
    /// Pending, but the amount or currency differs: move it to `exception`.
    ToException(String),
}

impl Retry {
    fn into_transition(self, previous: &Transition, current: &Payment) -> Transition {
        let base = Transition {
            expected_version: current.version,
            ..previous.clone()
        };
        match self {
            Self::AtVersion => base,
            Self::ToException(reason) => Transition {
                to: PaymentStatus::Exception,
                amount_guard: None,
                reason: Some(reason),
                ..base
            },
        }
    }
}

/// Decides, from the payment as it is, what a failed guard meant.
fn next_step(current: &Payment, n: &Notification, to: PaymentStatus) -> Step {
    let same_money = current.amount_minor.get() == n.amount_minor && current.currency == n.currency;
    match current.status {
        PaymentStatus::Pending if to == PaymentStatus::Paid && !same_money => {
            let reason = format!(
                "provider notified {} {} but the payment is {} {}",
                n.amount_minor,
                n.currency,
                current.amount_minor.get(),
                current.currency
            );
            alarm(
                "callback_amount_mismatch",
                &format!("payment {}: {reason}", current.payment_id),
            );
            Step::Retry(Retry::ToException(reason))
        }
        PaymentStatus::Pending => Step::Retry(Retry::AtVersion),
        status if status == to && (to != PaymentStatus::Paid || same_money) => {
            Step::Done(CallbackResult::Duplicate)
        }
        // Paid, then refunded in part or in full: the same payment reported again.
        PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded
            if to == PaymentStatus::Paid && same_money =>
        {
            Step::Done(CallbackResult::Duplicate)
        }
        // Money moved that no order wants any more: give it back.
        PaymentStatus::Closed | PaymentStatus::Failed if to == PaymentStatus::Paid => {
            Step::LatePayment
        }
        // Alipay closes a trade once it is refunded in full.
        PaymentStatus::Refunded if to == PaymentStatus::Closed => {
            Step::Done(CallbackResult::Duplicate)
        }
        PaymentStatus::Exception if to == PaymentStatus::Paid => {
            alarm(
                "paid_while_exception",
                &format!(
                    "payment {} is in exception ({}); the provider now reports it paid {} {}",
                    current.payment_id,
                    current
                        .status_reason
                        .as_deref()
                        .unwrap_or("no reason recorded"),
                    n.amount_minor,
                    n.currency
                ),
            );
            Step::Done(CallbackResult::Duplicate)
        }
        PaymentStatus::Exception => Step::Done(CallbackResult::Duplicate),
        status => {
            alarm(
                "callback_conflicts_with_final_state",
                &format!(
                    "payment {} is {status} but the provider reports {to}",
                    current.payment_id
                ),
            );
            Step::Done(CallbackResult::Duplicate)
        }
    }
}
