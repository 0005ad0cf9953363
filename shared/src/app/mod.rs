//! Use cases, one module each, written over the ports only.
//!
//! Files form a tree: the shared steps at the bottom ([`apply`], [`ask`], [`settle`]) return
//! their own types and import no entry point; the entry points on top own their outcomes, and
//! no two of them import each other (checked by `xtask/tests/layout.rs`).

use std::future::Future;
use std::sync::Arc;

use crate::domain::polling::PollSchedule;
use crate::ports::{
    Clock, DUE_SHARDS, IdSource, IdempotencyStore, PaymentStore, Providers, StoreError,
};

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

/// What is due in every shard of a sparse index, read shard by shard with `read`, and how many
/// shards could not be read (each logged): one unreadable shard does not stop the others.
pub(crate) async fn due_in_every_shard<T, F, Fut>(what: &str, read: F) -> (Vec<T>, usize)
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<Vec<T>, StoreError>>,
{
    let (mut due, mut unread) = (Vec::new(), 0);
    for shard in 0..DUE_SHARDS {
        match read(shard).await {
            Ok(found) => due.extend(found),
            Err(e) => {
                tracing::error!(shard, error = format!("{e:#}"), "{what}: shard unread");
                unread += 1;
            }
        }
    }
    (due, unread)
}

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
