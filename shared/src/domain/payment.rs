//! The payment, its statuses and the one table of legal transitions.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Currency, OrderId, PaymentId, ProviderName, Timestamp, money::AmountMinor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Created; awaiting the payer (or the provider's answer to our create).
    Pending,
    Paid,
    /// Closed at the provider without payment.
    Closed,
    /// The provider definitely refused the payment.
    Failed,
    /// Needs a human: the provider reported something inconsistent with our record.
    Exception,
    /// Paid, and part of the amount refunded.
    PartiallyRefunded,
    /// Paid, and all of it refunded (or paid after its close, and given back).
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Closed => "closed",
            Self::Failed => "failed",
            Self::Exception => "exception",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl PaymentStatus {
    /// Every status, for tables and tests.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Paid,
        Self::Closed,
        Self::Failed,
        Self::Exception,
        Self::PartiallyRefunded,
        Self::Refunded,
    ];

    /// Can never be paid any more: the order may try again with a new payment.
    pub fn is_over(self) -> bool {
        matches!(self, Self::Closed | Self::Failed)
    }
}

/// Statuses a merchant's refund may be asked for in.
pub const MERCHANT_REFUNDABLE: [PaymentStatus; 2] =
    [PaymentStatus::Paid, PaymentStatus::PartiallyRefunded];
/// Statuses in which money that arrived anyway is given back (a late payment's refund).
pub const LATE_PAYMENT_REFUNDABLE: [PaymentStatus; 2] =
    [PaymentStatus::Closed, PaymentStatus::Failed];

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every legal transition, in one place. Anything not listed is illegal.
///
/// | from      | to        | when                                                 |
/// |-----------|-----------|------------------------------------------------------|
/// | pending   | paid      | provider reports payment (callback, later polling)   |
/// | pending   | failed    | provider definitely refused the create               |
/// | pending   | closed    | closed at the provider (expiry, merchant close)      |
/// | pending   | exception | provider reports something inconsistent (amount)     |
/// | paid      | partially_refunded | a refund of part of it succeeded            |
/// | paid      | refunded  | refunds of all of it succeeded                       |
/// | partially_refunded | refunded | the refunds reached the amount              |
/// | closed    | refunded  | it was paid after its close, and given back          |
/// | failed    | refunded  | it was paid after all, and given back                |
pub const TRANSITIONS: &[(PaymentStatus, PaymentStatus)] = &[
    (PaymentStatus::Pending, PaymentStatus::Paid),
    (PaymentStatus::Pending, PaymentStatus::Failed),
    (PaymentStatus::Pending, PaymentStatus::Closed),
    (PaymentStatus::Pending, PaymentStatus::Exception),
    (PaymentStatus::Paid, PaymentStatus::PartiallyRefunded),
    (PaymentStatus::Paid, PaymentStatus::Refunded),
    (PaymentStatus::PartiallyRefunded, PaymentStatus::Refunded),
    (PaymentStatus::Closed, PaymentStatus::Refunded),
    (PaymentStatus::Failed, PaymentStatus::Refunded),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("illegal transition {from} -> {to}")]
    Illegal {
        from: PaymentStatus,
        to: PaymentStatus,
    },
}

pub fn check_transition(from: PaymentStatus, to: PaymentStatus) -> Result<(), TransitionError> {
    if TRANSITIONS.contains(&(from, to)) {
        Ok(())
    } else {
        Err(TransitionError::Illegal { from, to })
    }
}

/// The version a payment has when it is created. Nothing transitions into `pending`, so a pending
/// payment is always at this version; a callback can therefore guard on it without reading first.
pub const INITIAL_VERSION: u32 = 1;

fn first_attempt() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub amount_minor: AmountMinor,
    pub currency: Currency,
    pub provider: ProviderName,
    pub subject: String,
    /// 1 for an order's first payment; an order gets another only once its active one is
    /// `closed` or `failed`.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub status: PaymentStatus,
    /// Incremented by exactly one on every status transition, and by nothing else.
    pub version: u32,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_trade_no: Option<String>,
    /// When the status is next checked with the provider; set while `pending`, removed by every
    /// transition out of it (see [`super::polling`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_at: Option<Timestamp>,
    /// Checks with the provider so far: the poller's position in its schedule.
    #[serde(default)]
    pub checks_done: u32,
    /// Checks in a row that ended without knowing the provider's state (timeout, 5xx).
    #[serde(default)]
    pub unknown_checks: u32,
    /// The last few answers to checks, oldest first, for whoever has to investigate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_checks: Vec<String>,
    /// Our create's outcome at the provider is unknown (timeout, 5xx): only a query resolves it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_unknown: bool,
    /// Refunds asked for and not failed (pending or succeeded): never above the amount.
    #[serde(default)]
    pub refund_reserved_minor: i64,
    /// Refunds that succeeded.
    #[serde(default)]
    pub refunded_minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When the check-back next looks for this payment's downstream effects: set by the move to
    /// `paid`, moved on by each check-back that finds effects missing, removed once every
    /// consumer has recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects_check_at: Option<Timestamp>,
    /// How often the check-back published its paid event again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub effects_republished: u32,
}

impl Payment {
    /// Pending with no answer from the provider to our create, and none known to be lost: a
    /// create that takes this payment over calls the provider for it.
    pub fn awaits_create_answer(&self) -> bool {
        self.status == PaymentStatus::Pending && self.pay_url.is_none() && !self.create_unknown
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One entry of a payment's status history, written with the transition it records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PaymentStatus>,
    pub to: PaymentStatus,
    pub at: Timestamp,
    /// What caused it: `create`, `provider_create`, `callback`, ...
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl HistoryEntry {
    /// The first entry of every payment: created `pending` at [`INITIAL_VERSION`].
    pub fn created(at: Timestamp) -> Self {
        Self {
            version: INITIAL_VERSION,
            from: None,
            to: PaymentStatus::Pending,
            at,
            source: "create".into(),
            reason: None,
        }
    }
}

/// A guard on the payment's expiry, checked in the same write as the transition (DynamoDB TTL only
/// cleans up later, and not at all locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryGuard {
    /// The payment must have expired by this instant (closing an expired payment).
    ExpiredBy(Timestamp),
    /// The payment must still be open at this instant.
    OpenAt(Timestamp),
}

impl ExpiryGuard {
    pub fn holds(self, expires_at: Timestamp) -> bool {
        match self {
            Self::ExpiredBy(now) => expires_at <= now,
            Self::OpenAt(now) => expires_at > now,
        }
    }
}

/// A request to move a payment from one status to another, guarded by its current version and,
/// when the trigger carries them, by the amount and currency the provider reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub payment_id: PaymentId,
    pub from: PaymentStatus,
    pub to: PaymentStatus,
    pub expected_version: u32,
    pub amount_guard: Option<(i64, Currency)>,
    pub expiry_guard: Option<ExpiryGuard>,
    /// The provider the payment must belong to: a callback verified with one provider's key
    /// never moves another provider's payment.
    pub provider_guard: Option<ProviderName>,
    pub at: Timestamp,
    pub source: &'static str,
    pub reason: Option<String>,
    pub provider_trade_no: Option<String>,
}

impl Transition {
    /// The one constructor: `payment_id` from `from` (at `expected_version`) to `to`, with no
    /// guard beyond status and version; the `with_*` methods add the others.
    pub fn new(
        payment_id: PaymentId,
        (from, to): (PaymentStatus, PaymentStatus),
        expected_version: u32,
        at: Timestamp,
        source: &'static str,
    ) -> Self {
        Self {
            payment_id,
            from,
            to,
            expected_version,
            amount_guard: None,
            expiry_guard: None,
            provider_guard: None,
            at,
            source,
            reason: None,
            provider_trade_no: None,
        }
    }

    /// The move of `payment` as read (its status and version) to `to`, kept to its provider.
    pub fn of(payment: &Payment, to: PaymentStatus, at: Timestamp, source: &'static str) -> Self {
        Self::new(
            payment.payment_id.clone(),
            (payment.status, to),
            payment.version,
            at,
            source,
        )
        .with_provider(payment.provider)
    }

    pub fn with_amount(self, amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_guard: Some((amount_minor, currency)),
            ..self
        }
    }

    pub fn with_expiry(self, guard: ExpiryGuard) -> Self {
        Self {
            expiry_guard: Some(guard),
            ..self
        }
    }

    pub fn with_provider(self, provider: ProviderName) -> Self {
        Self {
            provider_guard: Some(provider),
            ..self
        }
    }

    pub fn because(self, reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..self
        }
    }

    pub fn with_trade_no(self, provider_trade_no: Option<String>) -> Self {
        Self {
            provider_trade_no,
            ..self
        }
    }

    pub fn new_version(&self) -> u32 {
        self.expected_version + 1
    }

    pub fn history_entry(&self) -> HistoryEntry {
        HistoryEntry {
            version: self.new_version(),
            from: Some(self.from),
            to: self.to,
            at: self.at,
            source: self.source.to_owned(),
            reason: self.reason.clone(),
        }
    }

    /// Whether `payment` satisfies this transition's guard (status, version, amount, currency).
    pub fn guard_holds(&self, payment: &Payment) -> bool {
        let amount_ok = self.amount_guard.is_none_or(|(amount, currency)| {
            payment.amount_minor.get() == amount && payment.currency == currency
        });
        let expiry_ok = self
            .expiry_guard
            .is_none_or(|guard| guard.holds(payment.expires_at));
        let provider_ok = self.provider_guard.is_none_or(|p| payment.provider == p);
        provider_ok
            && payment.status == self.from
            && payment.version == self.expected_version
            && amount_ok
            && expiry_ok
    }

    /// Applies the transition to an in-memory copy. The caller has checked [`Self::guard_holds`].
    pub fn apply_to(&self, payment: &mut Payment) {
        payment.status = self.to;
        payment.version = self.new_version();
        payment.updated_at = self.at;
        payment.status_reason.clone_from(&self.reason);
        if let Some(trade_no) = &self.provider_trade_no {
            payment.provider_trade_no = Some(trade_no.clone());
        }
        if self.to != PaymentStatus::Pending {
            payment.next_check_at = None;
        }
    }

    /// When the check-back first looks for the effects of this transition's event: only a move
    /// to `paid` has effects.
    pub fn effects_check_at(&self, check_back_after_s: i64) -> Option<Timestamp> {
        (self.to == PaymentStatus::Paid).then(|| self.at.plus_s(check_back_after_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus::*;

    #[test]
    fn only_listed_transitions_are_legal() {
        let all = [
            Pending,
            Paid,
            Closed,
            Failed,
            Exception,
            PartiallyRefunded,
            Refunded,
        ];
        for from in all {
            for to in all {
                let legal = TRANSITIONS.contains(&(from, to));
                assert_eq!(check_transition(from, to).is_ok(), legal, "{from} -> {to}");
            }
        }
        assert!(check_transition(Paid, Pending).is_err());
        assert!(check_transition(Closed, Paid).is_err());
    }
}
