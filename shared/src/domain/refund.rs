//! Refunds: each one a record of its own next to its payment, reserved against the payment's
//! amount when asked for, settled by what the provider says.

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// The payment's status once `refunded_minor` of its `amount` has been refunded.
pub fn status_after_refunds(amount: i64, refunded_minor: i64) -> super::PaymentStatus {
    if refunded_minor >= amount {
        super::PaymentStatus::Refunded
    } else {
        super::PaymentStatus::PartiallyRefunded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_refunded_sum() {
        use super::super::PaymentStatus::*;
        assert_eq!(status_after_refunds(100, 1), PartiallyRefunded);
        assert_eq!(status_after_refunds(100, 99), PartiallyRefunded);
        assert_eq!(status_after_refunds(100, 100), Refunded);
    }
}
