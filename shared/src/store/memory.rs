//! An in-memory store with the same semantics as the DynamoDB one: every method is atomic.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::idempotency::{IdempotencyRecord, RecordStatus, StoredResponse};
use crate::domain::payment::{Transition, check_transition};
use crate::domain::{HistoryEntry, OrderId, Payment, PaymentId, Timestamp};
use crate::ports::{
    ClaimOutcome, CreateCompletion, IdempotencyStore, InsertOutcome, NewPayment, PaymentRecord,
    PaymentStore, StoreError, TransitionOutcome,
};

#[derive(Debug, Default)]
struct State {
    payments: HashMap<PaymentId, Payment>,
    history: HashMap<PaymentId, Vec<HistoryEntry>>,
    orders: HashMap<OrderId, PaymentId>,
    idempotency: HashMap<String, IdempotencyRecord>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn complete_record(
    state: &mut State,
    key: &str,
    resource_id: &str,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    match state.idempotency.get_mut(key) {
        Some(r) if r.status == RecordStatus::InProgress && r.resource_id == resource_id => {
            r.status = RecordStatus::Completed;
            r.response = Some(response.clone());
            Ok(())
        }
        _ => Err(StoreError::Unexpected(anyhow::anyhow!(
            "idempotency record {key} is not ours to complete"
        ))),
    }
}

fn apply(state: &mut State, t: &Transition) -> Result<TransitionOutcome, StoreError> {
    check_transition(t.from, t.to).map_err(anyhow::Error::new)?;
    let Some(payment) = state.payments.get_mut(&t.payment_id) else {
        return Ok(TransitionOutcome::NotFound);
    };
    if !t.guard_holds(payment) {
        return Ok(TransitionOutcome::GuardFailed(Box::new(payment.clone())));
    }
    t.apply_to(payment);
    state
        .history
        .entry(t.payment_id.clone())
        .or_default()
        .push(t.history_entry());
    Ok(TransitionOutcome::Applied)
}

#[async_trait]
impl PaymentStore for MemoryStore {
    async fn insert_payment(
        &self,
        new: &NewPayment,
        now: Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        let mut state = self.lock();
        if let Some(existing) = state.idempotency.get(&new.claim.key)
            && existing.blocks_claim(now)
        {
            return Ok(InsertOutcome::KeyTaken(existing.clone()));
        }
        if let Some(payment_id) = state.orders.get(&new.payment.order_id) {
            return Ok(InsertOutcome::OrderTaken {
                payment_id: payment_id.clone(),
            });
        }
        let id = new.payment.payment_id.clone();
        if state.payments.contains_key(&id) {
            return Err(StoreError::Unexpected(anyhow::anyhow!(
                "payment id collision {id}"
            )));
        }
        state
            .idempotency
            .insert(new.claim.key.clone(), new.claim.clone());
        state
            .orders
            .insert(new.payment.order_id.clone(), id.clone());
        state.history.insert(id.clone(), vec![new.history.clone()]);
        state.payments.insert(id, new.payment.clone());
        Ok(InsertOutcome::Inserted)
    }

    async fn complete_create(
        &self,
        payment_id: &PaymentId,
        completion: &CreateCompletion,
        idempotency_key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let state = &mut *state;
        let payment = state.payments.get(payment_id).ok_or_else(|| {
            StoreError::Unexpected(anyhow::anyhow!("payment {payment_id} vanished"))
        })?;
        let mut updated = payment.clone();
        match completion {
            CreateCompletion::Accepted {
                pay_url,
                provider_trade_no,
            } => {
                updated.pay_url = Some(pay_url.clone());
                if let Some(trade_no) = provider_trade_no {
                    updated.provider_trade_no = Some(trade_no.clone());
                }
            }
            CreateCompletion::Rejected(t) => {
                check_transition(t.from, t.to).map_err(anyhow::Error::new)?;
                if !t.guard_holds(&updated) {
                    return Err(StoreError::Unexpected(anyhow::anyhow!(
                        "payment {payment_id} moved under us"
                    )));
                }
                t.apply_to(&mut updated);
            }
            CreateCompletion::Unknown { next_check_at } => {
                updated.next_check_at = Some(*next_check_at)
            }
        }
        complete_record(state, idempotency_key, payment_id.as_str(), response)?;
        if let CreateCompletion::Rejected(t) = completion {
            state
                .history
                .entry(payment_id.clone())
                .or_default()
                .push(t.history_entry());
        }
        state.payments.insert(payment_id.clone(), updated);
        Ok(())
    }

    async fn apply_transition(
        &self,
        transition: &Transition,
    ) -> Result<TransitionOutcome, StoreError> {
        apply(&mut self.lock(), transition)
    }

    async fn payment(&self, payment_id: &PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        let state = self.lock();
        Ok(state.payments.get(payment_id).map(|payment| PaymentRecord {
            payment: payment.clone(),
            history: state.history.get(payment_id).cloned().unwrap_or_default(),
        }))
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut state = self.lock();
        if let Some(existing) = state.idempotency.get(&record.key)
            && existing.blocks_claim(now)
        {
            return Ok(ClaimOutcome::Blocked(existing.clone()));
        }
        state.idempotency.insert(record.key.clone(), record.clone());
        Ok(ClaimOutcome::Claimed)
    }

    async fn complete(
        &self,
        key: &str,
        resource_id: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        complete_record(&mut self.lock(), key, resource_id, response)
    }

    async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self.lock().idempotency.get(key).cloned())
    }
}
