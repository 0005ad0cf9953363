//! The shared step that carries out what the decision table decided about a payment: the
//! guarded transition (re-decided on the payment as it is when the guard fails), the
//! escalation, the late payment's refund, the record for a human.
//!
//! A notification costs one DynamoDB request when it is the first: its move is written on the
//! assumption that the payment is pending as created, and a failed condition returns the item
//! as it was, which tells a duplicate from a mismatch without a read.

use crate::app::Deps;
use crate::app::settle::{raise, raise_alarm, refund_late_payment};
use crate::domain::decision::{Action, Context, Decision, Nothing, Report, decide, first_move};
use crate::domain::{Payment, PaymentId, PaymentStatus};
use crate::ports::{StoreError, TransitionOutcome};

/// Bound on re-decisions within one report (a stale assumption, then a mismatch).
const DECISION_ATTEMPTS: u32 = 3;

/// Where applying a report starts.
pub enum Start {
    /// Not read: the report's first move assumes the payment as created.
    Unread(PaymentId),
    /// Read, and already decided on.
    Decided(Box<Payment>, Box<Decision>),
}

/// What applying a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Moved(PaymentStatus),
    /// Paid after it was over: its refund was started.
    LatePaymentRefunded,
    Duplicate,
    Ignored,
    /// No such payment.
    UnknownPayment,
    /// A report of another provider's payment.
    Refused,
    /// The payment moved under us to where the report asks nothing more of it here.
    Raced,
    /// The store failed, or the payment kept moving: the report may come again.
    StoreFailed,
}

/// Applies `report` from `start`, re-deciding on the payment as it is whenever a guard fails.
pub async fn apply_report(deps: &Deps, start: Start, report: &Report, ctx: &Context) -> Applied {
    let (mut payment, mut decision) = match start {
        Start::Decided(payment, decision) => (Some(*payment), *decision),
        Start::Unread(payment_id) => {
            let first = match report {
                Report::Trade(trade) => first_move(&payment_id, trade, ctx),
                _ => None,
            };
            match first {
                Some(transition) => (
                    None,
                    Decision {
                        action: Action::Move(transition),
                        alarm: None,
                    },
                ),
                None => return Applied::Ignored,
            }
        }
    };
    // Only a report of the trade itself is worth deciding again on a payment that moved; the
    // other moves (close, fail, escalate) were decided on a payment that no longer is.
    let redecide = matches!(report, Report::Trade(_) | Report::TradeAfterClose(_));
    for _ in 0..DECISION_ATTEMPTS {
        let current = match act(deps, payment.as_ref(), decision).await {
            Acted::Done(applied) => return applied,
            Acted::GuardFailed(_) if !redecide => return Applied::Raced,
            Acted::GuardFailed(current) => current,
        };
        decision = decide(&current, report, ctx);
        payment = Some(*current);
    }
    Applied::StoreFailed
}

enum Acted {
    Done(Applied),
    GuardFailed(Box<Payment>),
}

/// Carries out one decision about `payment` (the one decided on; `None` when not read).
async fn act(deps: &Deps, payment: Option<&Payment>, decision: Decision) -> Acted {
    if let Some(raised) = &decision.alarm {
        raise_alarm(raised);
    }
    let done = Acted::Done;
    match decision.action {
        Action::Move(transition) => {
            let outcome = deps.store.apply_transition(&transition).await;
            written(outcome, transition.to, &transition.payment_id)
        }
        Action::Escalate(transition, compensation, raised) => {
            let outcome = deps.store.escalate(&transition, &compensation).await;
            let acted = written(outcome, transition.to, &transition.payment_id);
            if let Acted::Done(Applied::Moved(_)) = acted {
                raise_alarm(&raised);
            }
            acted
        }
        Action::RefundLatePayment(trade_no) => match payment {
            Some(payment) => done(late_payment(deps, payment, trade_no).await),
            None => done(Applied::Raced),
        },
        Action::Compensate(compensation) => {
            raise(deps, &compensation).await;
            done(Applied::Duplicate)
        }
        Action::Nothing(Nothing::Duplicate) => done(Applied::Duplicate),
        Action::Nothing(Nothing::Ignored) => done(Applied::Ignored),
        Action::Refuse => done(Applied::Refused),
        // Asked of a payment that moved under us: the next check starts from what it is.
        Action::Ask(_) | Action::Wait(_) => done(Applied::Raced),
    }
}

fn written(
    outcome: Result<TransitionOutcome, StoreError>,
    to: PaymentStatus,
    payment_id: &PaymentId,
) -> Acted {
    match outcome {
        Ok(TransitionOutcome::Applied) => Acted::Done(Applied::Moved(to)),
        Ok(TransitionOutcome::NotFound) => Acted::Done(Applied::UnknownPayment),
        Ok(TransitionOutcome::GuardFailed(current)) => Acted::GuardFailed(current),
        Err(StoreError::Conflict) => Acted::Done(Applied::StoreFailed),
        Err(StoreError::Unexpected(e) | StoreError::Corrupt(e)) => {
            tracing::error!(error = format!("{e:#}"), %payment_id, "transition could not be stored");
            Acted::Done(Applied::StoreFailed)
        }
    }
}

async fn late_payment(deps: &Deps, payment: &Payment, trade_no: Option<String>) -> Applied {
    match refund_late_payment(deps, payment, trade_no).await {
        Ok(true) => Applied::LatePaymentRefunded,
        Ok(false) => Applied::Duplicate,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), payment_id = %payment.payment_id, "late payment not recorded");
            Applied::StoreFailed
        }
    }
}
