//! The domain: plain data and rules. Nothing here performs I/O or knows about AWS.

pub mod decision;
pub mod event;
pub mod idempotency;
pub mod ids;
pub mod money;
pub mod payment;
pub mod polling;
pub mod refund;
pub mod report;
pub mod time;

pub use ids::{OrderId, PaymentId, ProviderName, RefundId};
pub use money::{AmountMinor, Currency, Money, MoneyError};
pub use payment::{HistoryEntry, Payment, PaymentStatus, TransitionError};
pub use time::Timestamp;
