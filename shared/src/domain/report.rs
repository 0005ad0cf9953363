//! What a provider can tell us, in one vocabulary for every provider: the words the decision
//! table ([`super::decision`]) reads. The adapters translate each provider's wire format into
//! these; the ports re-export them.

use super::{Currency, PaymentId, Timestamp};

/// The status a provider reports for a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifiedStatus {
    Paid,
    Pending,
    Closed,
}

/// The provider's view of a trade: a verified notification's or a query's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderTrade {
    pub status: NotifiedStatus,
    pub provider_trade_no: Option<String>,
    pub amount_minor: i64,
    pub currency: Currency,
}

/// What the provider said to a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Closed now, or closed already: it can no longer be paid.
    Closed,
    /// The provider has no such trade (never scanned or never created): nothing can be paid.
    NoTrade,
    /// The provider has no close for an unpaid order; it lapses at the expiry sent with the
    /// create. Only an expired payment may be called closed on this answer.
    LapsesAtExpiry,
    /// Too late: the trade is paid. Query and record the payment.
    AlreadyPaid,
}

/// What a provider says of a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundState {
    Succeeded,
    /// Accepted, money not moved yet: ask again later.
    Processing,
    /// It will not happen (for instance the trade's balance is too low).
    Failed(String),
}

/// Work a human (or a later job) must finish: why, and what we knew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compensation {
    /// Unique per cause, so raising it twice records it once.
    pub id: String,
    pub kind: &'static str,
    pub payment_id: PaymentId,
    pub reason: String,
    /// The last provider answers, oldest first.
    pub evidence: Vec<String>,
    pub created_at: Timestamp,
}

/// An alarm to raise: a name the metric filter counts, and what the person paged reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub name: &'static str,
    pub message: String,
}

impl Alarm {
    pub fn new(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
        }
    }
}
