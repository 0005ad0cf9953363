//! Use cases, one module each, written over the ports only.
//!
//! Files form a tree: the shared steps at the bottom ([`apply`], [`ask`], [`settle`]) return
//! their own types and import no entry point; the entry points on top own their outcomes, and
//! no two of them import each other (checked by `xtask/tests/layout.rs`).

use std::sync::Arc;

use crate::domain::polling::PollSchedule;
use crate::ports::{Clock, IdSource, IdempotencyStore, PaymentStore, Providers};

pub mod apply;
pub mod ask;
pub mod callback;
pub mod check_back;
pub mod close;
pub mod consume;
pub mod create;
pub mod dead_letters;
pub mod poll;
pub mod query;
pub mod redrive;
pub mod refund_check;
pub mod refunds;
pub mod refusal;
pub mod relay;
pub mod settle;

/// Storage the use cases need: payments and idempotency records.
pub trait Store: PaymentStore + IdempotencyStore {}
impl<T: PaymentStore + IdempotencyStore> Store for T {}

/// Everything a use case may touch. Built once per cold start.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub providers: Providers,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    /// When pending payments are checked with their provider.
    pub poll: PollSchedule,
}

#[cfg(test)]
mod outbox_tests;
#[cfg(test)]
mod poll_tests;
#[cfg(test)]
mod test_edge;
#[cfg(test)]
mod tests;
