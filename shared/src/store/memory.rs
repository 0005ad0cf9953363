//! An in-memory store with the same semantics as the DynamoDB one: every method is atomic.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::event::{Consumer, PaymentEvent};
use crate::domain::idempotency::{IdempotencyRecord, RecordStatus, StoredResponse};
use crate::domain::payment::{Transition, check_transition};
use crate::domain::refund::{Refund, RefundStatus};
use crate::domain::{HistoryEntry, OrderId, Payment, PaymentId, Timestamp};
use crate::domain::{PaymentStatus, RefundId};
use crate::ports::{
    Applied, CheckRecord, ClaimOutcome, Compensation, CreateCompletion, DeadLetter,
    DeadLetterStatus, DeadLetterStore, DueCheck, Effects, IdempotencyStore, InsertOutcome,
    NewPayment, PaymentRecord, PaymentStore, RefundCheck, RefundInsert, RefundSettlement,
    StoreError, TransitionOutcome, due_shard,
};

#[derive(Debug, Default)]
struct State {
    payments: HashMap<PaymentId, Payment>,
    history: HashMap<PaymentId, Vec<HistoryEntry>>,
    orders: HashMap<OrderId, PaymentId>,
    idempotency: HashMap<String, IdempotencyRecord>,
    compensations: HashMap<String, Compensation>,
    refunds: HashMap<(PaymentId, RefundId), Refund>,
}

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    check_back_after_s: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            check_back_after_s: crate::domain::event::DEFAULT_CHECK_BACK_AFTER_S,
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long after a payment is paid the check-back first looks for its effects.
    pub fn with_check_back_after(mut self, seconds: i64) -> Self {
        self.check_back_after_s = seconds;
        self
    }

    /// The compensation records, by id.
    pub fn compensations(&self) -> Vec<Compensation> {
        let mut all: Vec<Compensation> = self.lock().compensations.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
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

fn apply(
    state: &mut State,
    t: &Transition,
    check_back_after_s: i64,
) -> Result<TransitionOutcome, StoreError> {
    check_transition(t.from, t.to).map_err(anyhow::Error::new)?;
    let Some(payment) = state.payments.get_mut(&t.payment_id) else {
        return Ok(TransitionOutcome::NotFound);
    };
    if !t.guard_holds(payment) {
        return Ok(TransitionOutcome::GuardFailed(Box::new(payment.clone())));
    }
    t.apply_to(payment);
    if let Some(at) = t.effects_check_at(check_back_after_s) {
        payment.effects_check_at = Some(at);
    }
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
        let replaces = new.replaces.as_ref();
        if let Some(existing) = state.idempotency.get(&new.claim.key)
            && existing.blocks_claim(now)
            && replaces.is_none_or(|p| existing.resource_id != p.as_str())
        {
            return Ok(InsertOutcome::KeyTaken(existing.clone()));
        }
        let active = state.orders.get(&new.payment.order_id);
        if let Some(payment_id) = active
            && replaces != Some(payment_id)
        {
            return Ok(InsertOutcome::OrderTaken {
                payment_id: payment_id.clone(),
            });
        }
        if active.is_none() && replaces.is_some() {
            return Err(StoreError::Unexpected(anyhow::anyhow!(
                "order {} has no payment to replace",
                new.payment.order_id
            )));
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
            CreateCompletion::Unknown => updated.create_unknown = true,
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
        apply(&mut self.lock(), transition, self.check_back_after_s)
    }

    async fn payment(&self, payment_id: &PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        let state = self.lock();
        Ok(state.payments.get(payment_id).map(|payment| PaymentRecord {
            payment: payment.clone(),
            history: state.history.get(payment_id).cloned().unwrap_or_default(),
        }))
    }

    async fn due_checks(
        &self,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueCheck>, StoreError> {
        let state = self.lock();
        let payments = state
            .payments
            .values()
            .filter(|p| p.status == PaymentStatus::Pending)
            .filter(|p| due_shard(&p.payment_id) == shard)
            .filter_map(|p| {
                let at = p.next_check_at.filter(|at| *at <= now)?;
                Some((at, DueCheck::Payment(p.payment_id.clone())))
            });
        let refunds = state
            .refunds
            .values()
            .filter(|r| r.status == RefundStatus::Pending)
            .filter(|r| due_shard(&r.payment_id) == shard)
            .filter_map(|r| {
                let at = r.next_check_at.filter(|at| *at <= now)?;
                Some((
                    at,
                    DueCheck::Refund(r.payment_id.clone(), r.refund_id.clone()),
                ))
            });
        let mut due: Vec<(Timestamp, DueCheck)> = payments.chain(refunds).collect();
        due.sort_by_key(|(at, _)| *at);
        Ok(due.into_iter().take(limit).map(|(_, d)| d).collect())
    }

    async fn claim_check(
        &self,
        payment_id: &PaymentId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Payment>, StoreError> {
        let mut state = self.lock();
        let Some(payment) = state.payments.get_mut(payment_id) else {
            return Ok(None);
        };
        let due = payment.status == PaymentStatus::Pending
            && payment.next_check_at.is_some_and(|at| at <= now);
        if !due {
            return Ok(None);
        }
        payment.next_check_at = Some(lease_until);
        Ok(Some(payment.clone()))
    }

    async fn record_check(
        &self,
        payment_id: &PaymentId,
        lease_until: Timestamp,
        check: &CheckRecord,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let Some(payment) = state.payments.get_mut(payment_id) else {
            return Ok(false);
        };
        if payment.status != PaymentStatus::Pending || payment.next_check_at != Some(lease_until) {
            return Ok(false);
        }
        payment.next_check_at = Some(check.next_check_at);
        payment.checks_done = check.checks_done;
        payment.unknown_checks = check.unknown_checks;
        payment.recent_checks.clone_from(&check.recent_checks);
        if let Some(create_unknown) = check.create_unknown {
            payment.create_unknown = create_unknown;
        }
        if let Some(created) = &check.created {
            payment.pay_url = Some(created.pay_url.clone());
            if let Some(trade_no) = &created.provider_trade_no {
                payment.provider_trade_no = Some(trade_no.clone());
            }
        }
        Ok(true)
    }

    async fn insert_refund(
        &self,
        refund: &Refund,
        payment_amount_minor: i64,
        payment_statuses: &[PaymentStatus],
    ) -> Result<RefundInsert, StoreError> {
        let mut state = self.lock();
        let key = (refund.payment_id.clone(), refund.refund_id.clone());
        if let Some(existing) = state.refunds.get(&key) {
            return Ok(RefundInsert::Exists(Box::new(existing.clone())));
        }
        let Some(payment) = state.payments.get_mut(&refund.payment_id) else {
            return Ok(RefundInsert::PaymentNotFound);
        };
        let amount = refund.amount_minor.get();
        let fits = payment.amount_minor.get() == payment_amount_minor
            && payment.refund_reserved_minor <= payment_amount_minor - amount;
        if !payment_statuses.contains(&payment.status) || !fits {
            return Ok(RefundInsert::Refused(Box::new(payment.clone())));
        }
        payment.refund_reserved_minor += amount;
        state.refunds.insert(key, refund.clone());
        Ok(RefundInsert::Inserted)
    }

    async fn refund(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
    ) -> Result<Option<Refund>, StoreError> {
        let key = (payment_id.clone(), refund_id.clone());
        Ok(self.lock().refunds.get(&key).cloned())
    }

    async fn refunds(&self, payment_id: &PaymentId) -> Result<Vec<Refund>, StoreError> {
        let mut refunds: Vec<Refund> = self
            .lock()
            .refunds
            .values()
            .filter(|r| &r.payment_id == payment_id)
            .cloned()
            .collect();
        refunds.sort_by(|a, b| (a.created_at, &a.refund_id).cmp(&(b.created_at, &b.refund_id)));
        Ok(refunds)
    }

    async fn settle_refund(&self, s: &RefundSettlement) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let state = &mut *state;
        let key = (s.payment_id.clone(), s.refund_id.clone());
        let pending = state
            .refunds
            .get(&key)
            .is_some_and(|r| r.status == RefundStatus::Pending);
        let Some(payment) = state.payments.get_mut(&s.payment_id) else {
            return Ok(false);
        };
        if !pending || payment.status != s.payment_status || payment.version != s.payment_version {
            return Ok(false);
        }
        if let Some(t) = &s.transition {
            check_transition(t.from, t.to).map_err(anyhow::Error::new)?;
            if !t.guard_holds(payment) {
                return Ok(false);
            }
        }
        match s.to {
            RefundStatus::Succeeded => payment.refunded_minor += s.amount_minor,
            RefundStatus::Failed => payment.refund_reserved_minor -= s.amount_minor,
            RefundStatus::Pending => {
                return Err(StoreError::Unexpected(anyhow::anyhow!(
                    "a refund is settled to succeeded or failed"
                )));
            }
        }
        if let Some(t) = &s.transition {
            t.apply_to(payment);
            state
                .history
                .entry(s.payment_id.clone())
                .or_default()
                .push(t.history_entry());
        }
        if let Some(refund) = state.refunds.get_mut(&key) {
            refund.status = s.to;
            refund.updated_at = s.at;
            refund.next_check_at = None;
            refund.status_reason.clone_from(&s.reason);
        }
        Ok(true)
    }

    async fn claim_refund_check(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Refund>, StoreError> {
        let mut state = self.lock();
        let key = (payment_id.clone(), refund_id.clone());
        let Some(refund) = state.refunds.get_mut(&key) else {
            return Ok(None);
        };
        let due = refund.status == RefundStatus::Pending
            && refund.next_check_at.is_some_and(|at| at <= now);
        if !due {
            return Ok(None);
        }
        refund.next_check_at = Some(lease_until);
        Ok(Some(refund.clone()))
    }

    async fn effect_checks_due(
        &self,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<PaymentId>, StoreError> {
        let state = self.lock();
        let mut due: Vec<(Timestamp, PaymentId)> = state
            .payments
            .values()
            .filter(|p| due_shard(&p.payment_id) == shard)
            .filter_map(|p| {
                let at = p.effects_check_at.filter(|at| *at <= now)?;
                Some((at, p.payment_id.clone()))
            })
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn move_effect_check(
        &self,
        payment_id: &PaymentId,
        at: Timestamp,
        next: Option<Timestamp>,
        republished: u32,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        match state.payments.get_mut(payment_id) {
            Some(p) if p.effects_check_at == Some(at) => {
                p.effects_check_at = next;
                p.effects_republished = republished;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn put_compensation(&self, compensation: &Compensation) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if state.compensations.contains_key(&compensation.id) {
            return Ok(false);
        }
        state
            .compensations
            .insert(compensation.id.clone(), compensation.clone());
        Ok(true)
    }

    async fn record_refund_check(
        &self,
        payment_id: &PaymentId,
        refund_id: &RefundId,
        lease_until: Timestamp,
        check: &RefundCheck,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let key = (payment_id.clone(), refund_id.clone());
        let Some(refund) = state.refunds.get_mut(&key) else {
            return Ok(false);
        };
        if refund.status != RefundStatus::Pending || refund.next_check_at != Some(lease_until) {
            return Ok(false);
        }
        refund.next_check_at = Some(check.next_check_at);
        refund.checks_done = check.checks_done;
        refund.unknown_checks = check.unknown_checks;
        refund.recent_checks.clone_from(&check.recent_checks);
        Ok(true)
    }

    async fn escalate(
        &self,
        transition: &Transition,
        compensation: &Compensation,
    ) -> Result<TransitionOutcome, StoreError> {
        let mut state = self.lock();
        let outcome = apply(&mut state, transition, self.check_back_after_s)?;
        if outcome == TransitionOutcome::Applied {
            state
                .compensations
                .entry(compensation.id.clone())
                .or_insert_with(|| compensation.clone());
        }
        Ok(outcome)
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

/// One consumer's effects in memory: effects by order, dedupe records by event id.
#[derive(Debug)]
pub struct MemoryEffects {
    consumer: Consumer,
    state: Mutex<EffectsState>,
}

#[derive(Debug, Default)]
struct EffectsState {
    /// Order -> the event whose effect it got.
    effects: HashMap<OrderId, PaymentEvent>,
    dedupe: HashMap<String, Applied>,
}

impl MemoryEffects {
    pub fn new(consumer: Consumer) -> Self {
        Self {
            consumer,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, EffectsState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The orders with this consumer's effect, and the payment that caused each.
    pub fn effects(&self) -> HashMap<OrderId, PaymentId> {
        self.lock()
            .effects
            .iter()
            .map(|(order, event)| (order.clone(), event.payment_id.clone()))
            .collect()
    }

    /// How many events this consumer has recorded.
    pub fn recorded_count(&self) -> usize {
        self.lock().dedupe.len()
    }
}

#[async_trait]
impl Effects for MemoryEffects {
    fn consumer(&self) -> Consumer {
        self.consumer
    }

    async fn apply(&self, event: &PaymentEvent, _now: Timestamp) -> Result<Applied, StoreError> {
        let mut state = self.lock();
        if state.dedupe.contains_key(&event.event_id) {
            return Ok(Applied::Duplicate);
        }
        let outcome = match state.effects.get(&event.order_id) {
            Some(earlier) => Applied::OrderAlreadyDone {
                by_payment: earlier.payment_id.clone(),
            },
            None => {
                state.effects.insert(event.order_id.clone(), event.clone());
                Applied::Applied
            }
        };
        state.dedupe.insert(event.event_id.clone(), outcome.clone());
        Ok(outcome)
    }

    async fn recorded(&self, event_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().dedupe.contains_key(event_id))
    }
}

/// Dead messages in memory.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    state: Mutex<HashMap<String, DeadLetter>>,
}

impl MemoryDeadLetters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, DeadLetter>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetters {
    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if let Some(stored) = state.get_mut(&dead.id) {
            stored.last_seen = stored.last_seen.max(dead.last_seen);
            if stored.status == DeadLetterStatus::Open {
                return Ok(false);
            }
            // Redriven or compensated, and dead again: open once more.
            stored.status = DeadLetterStatus::Open;
            stored.status_changed_at = None;
            stored.error.clone_from(&dead.error);
            stored.receive_count = dead.receive_count;
            return Ok(true);
        }
        state.insert(dead.id.clone(), dead.clone());
        Ok(true)
    }

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self.lock().get(id).cloned())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut all: Vec<DeadLetter> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
        Ok(all)
    }

    async fn mark_dead_letter(
        &self,
        id: &str,
        from: DeadLetterStatus,
        to: DeadLetterStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        match self.lock().get_mut(id) {
            Some(dead) if dead.status == from => {
                dead.status = to;
                dead.status_changed_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
