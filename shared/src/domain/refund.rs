//! Refunds: each one a record of its own next to its payment, reserved against the payment's
//! amount when asked for, settled by what the provider says.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::decision::Nothing;
use super::report::{Alarm, Compensation, RefundState};
use super::{AmountMinor, Currency, PaymentId, RefundId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Asked for; the provider has not confirmed it (or has not been asked yet).
    Pending,
    Succeeded,
    /// The provider definitely refused it; its amount is free to refund again.
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for the refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundKind {
    /// `POST /payments/{payment_id}/refunds`.
    Merchant,
    /// The platform: the payment landed after it was closed.
    LatePayment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: RefundId,
    pub payment_id: PaymentId,
    pub amount_minor: AmountMinor,
    pub currency: Currency,
    pub reason: String,
    /// Stored as `refund_kind`: every item's `kind` names its type (`payment`, `refund`, ...).
    #[serde(rename = "refund_kind")]
    pub kind: RefundKind,
    pub status: RefundStatus,
    /// Our number for it at the provider (`out_request_no`, `out_refund_no`, UnionPay's
    /// `orderId`): derived from payment and refund id, so asking again is the same refund there.
    pub refund_no: String,
    /// The provider's number for the paid trade, when known (UnionPay refunds name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_trade_no: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When it is next checked with the provider; set while `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_at: Option<Timestamp>,
    #[serde(default)]
    pub checks_done: u32,
    #[serde(default)]
    pub unknown_checks: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_checks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

/// Every legal move of a refund: it settles once, and only from `pending`.
///
/// | from    | to        | when                                               |
/// |---------|-----------|----------------------------------------------------|
/// | pending | succeeded | the provider says the money went back              |
/// | pending | failed    | the provider definitely refused it (amount freed)  |
pub const REFUND_TRANSITIONS: &[(RefundStatus, RefundStatus)] = &[
    (RefundStatus::Pending, RefundStatus::Succeeded),
    (RefundStatus::Pending, RefundStatus::Failed),
];

pub fn refund_transition_is_legal(from: RefundStatus, to: RefundStatus) -> bool {
    REFUND_TRANSITIONS.contains(&(from, to))
}

/// Everything a provider can tell us about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundReport {
    /// The answer to our refund request or to a query.
    State(RefundState),
    /// A verified refund notification, with the amount it names.
    Notified {
        state: RefundState,
        amount_minor: i64,
    },
    /// Our refund request was definitely refused: `code: message`.
    RequestRefused(String),
    /// A query found no such refund.
    NoSuchRefund,
    /// No usable answer (a timeout, a 5xx, a refused query: it says nothing of the refund).
    NoAnswer(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundDecision {
    /// Settle it (with its payment, in one write).
    Settle {
        to: RefundStatus,
        reason: Option<String>,
    },
    /// Ask for it again (the same refund number: the same refund there).
    AskAgain,
    /// Still pending: record the check.
    Wait { note: String, unknown: bool },
    /// Nothing to write: already settled so, or "processing" notified.
    Nothing(Nothing),
    /// Settled one way here, reported the other way there: never settle twice, a human looks.
    Contradicted(Compensation),
    /// Notified with another amount than asked for.
    AmountMismatch(Alarm),
}

/// What `report` means for `refund` as it is now.
pub fn decide_refund(refund: &Refund, report: &RefundReport, now: Timestamp) -> RefundDecision {
    let (state, notified_amount) = match report {
        RefundReport::State(state) => (state, None),
        RefundReport::Notified {
            state,
            amount_minor,
        } => (state, Some(*amount_minor)),
        RefundReport::RequestRefused(why) if refund.status == RefundStatus::Pending => {
            return settle(RefundStatus::Failed, Some(why.clone()));
        }
        RefundReport::NoSuchRefund if refund.status == RefundStatus::Pending => {
            return RefundDecision::AskAgain;
        }
        RefundReport::NoAnswer(note) if refund.status == RefundStatus::Pending => {
            return RefundDecision::Wait {
                note: note.clone(),
                unknown: true,
            };
        }
        _ => return RefundDecision::Nothing(Nothing::Duplicate),
    };
    if refund.status != RefundStatus::Pending {
        return settled_already(refund, state, now);
    }
    let (to, reason) = match state {
        RefundState::Succeeded => (RefundStatus::Succeeded, None),
        RefundState::Failed(why) => (RefundStatus::Failed, Some(why.clone())),
        RefundState::Processing if notified_amount.is_some() => {
            return RefundDecision::Nothing(Nothing::Ignored);
        }
        RefundState::Processing => {
            return RefundDecision::Wait {
                note: "the provider is processing it".into(),
                unknown: false,
            };
        }
    };
    match notified_amount {
        Some(amount) if amount != refund.amount_minor.get() => {
            RefundDecision::AmountMismatch(Alarm::new(
                "refund_amount_mismatch",
                format!(
                    "refund {} of payment {}: notified {amount} but asked for {}",
                    refund.refund_id,
                    refund.payment_id,
                    refund.amount_minor.get()
                ),
            ))
        }
        _ => settle(to, reason),
    }
}

fn settle(to: RefundStatus, reason: Option<String>) -> RefundDecision {
    RefundDecision::Settle { to, reason }
}

fn settled_already(refund: &Refund, state: &RefundState, now: Timestamp) -> RefundDecision {
    let contradicts = matches!(
        (refund.status, state),
        (RefundStatus::Failed, RefundState::Succeeded)
            | (RefundStatus::Succeeded, RefundState::Failed(_))
    );
    if !contradicts {
        return RefundDecision::Nothing(Nothing::Duplicate);
    }
    RefundDecision::Contradicted(Compensation {
        id: format!(
            "refund-contradicted#{}#{}",
            refund.payment_id, refund.refund_id
        ),
        kind: "refund_contradicted",
        payment_id: refund.payment_id.clone(),
        reason: format!(
            "refund {} is {} here, the provider now notifies {state:?}",
            refund.refund_id, refund.status
        ),
        evidence: refund.recent_checks.clone(),
        created_at: now,
    })
}

/// A human is told once when a pending refund's checks run long: the provider stayed silent
/// through `max` checks, or the refund is still not done after as many (stuck "processing").
/// A refund is never given up: it stays pending and keeps being checked.
pub fn refund_unresolved(
    refund: &Refund,
    (checks_done, unknown_checks, max): (u32, u32, u32),
    evidence: &[String],
    now: Timestamp,
) -> Option<Compensation> {
    let why = if unknown_checks >= max {
        format!("the provider's state stayed unknown through {unknown_checks} checks")
    } else if checks_done >= max {
        format!("still not settled after {checks_done} checks")
    } else {
        return None;
    };
    Some(Compensation {
        id: format!(
            "refund-unresolved#{}#{}",
            refund.payment_id, refund.refund_id
        ),
        kind: "refund_unresolved",
        payment_id: refund.payment_id.clone(),
        reason: format!(
            "refund {} of {}: {why}",
            refund.refund_id,
            refund.amount_minor.get()
        ),
        evidence: evidence.to_vec(),
        created_at: now,
    })
}

/// After a refund settled: the refund of a late payment that failed is money no order wants,
/// and the provider would not give it back.
pub fn after_settled(
    refund: &Refund,
    to: RefundStatus,
    reason: Option<&str>,
    now: Timestamp,
) -> Option<Compensation> {
    (to == RefundStatus::Failed && refund.kind == RefundKind::LatePayment).then(|| Compensation {
        id: format!("late-payment-unrefunded#{}", refund.payment_id),
        kind: "late_payment_unrefunded",
        payment_id: refund.payment_id.clone(),
        reason: format!(
            "payment {} was paid after it was over and its refund failed: {}",
            refund.payment_id,
            reason.unwrap_or("no reason given")
        ),
        evidence: refund.recent_checks.clone(),
        created_at: now,
    })
}

/// The payment's status once `refunded_minor` of its `amount` has been refunded.
pub fn status_after_refunds(amount: i64, refunded_minor: i64) -> super::PaymentStatus {
    if refunded_minor >= amount {
        super::PaymentStatus::Refunded
    } else {
        super::PaymentStatus::PartiallyRefunded
    }
}

#[cfg(test)]
#[path = "refund_tests.rs"]
mod tests;
