//! The use cases on the in-memory store with a scripted provider and a manual clock: every
//! branch driven deterministically, faults injected through the ports.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::Deps;
use super::callback::{CallbackResult, handle_callback};
use super::create::{CreatePaymentRequest, create_payment};
use super::refusal::RefusalKind;
use crate::clock::{ManualClock, SequentialIds};
use crate::crypto::RsaSigner;
use crate::domain::idempotency::IdempotencyRecord;
use crate::domain::payment::Transition;
use crate::domain::{PaymentId, PaymentStatus, ProviderName, Timestamp};
use crate::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, ClaimOutcome, CreateCompletion,
    IdempotencyStore, InsertOutcome, NewPayment, Notification, NotifiedStatus, PaymentProvider,
    PaymentRecord, PaymentStore, ProviderCreate, ProviderCreated, ProviderError, ProviderTrade,
    Providers, StoreError, TransitionOutcome, Verified,
};
use crate::store::MemoryStore;

/// Code a test runs inside a provider call, to race it.
type Hook = Box<dyn Fn(PaymentId) + Send + Sync>;

const T0: Timestamp = Timestamp::from_unix_s(1_800_000_000);

/// A provider whose create answers are scripted, and whose notifications are plain JSON
/// (`{"payment_id","amount_minor","status"}`); signature checks are the adapters' tests' business.
struct ScriptedProvider {
    name: ProviderName,
    answer: Mutex<Result<(), ProviderError>>,
    creates: AtomicUsize,
    /// Runs inside `create`, after the provider "accepted": simulates a callback racing the create.
    during_create: Mutex<Option<Hook>>,
}

impl ScriptedProvider {
    fn new(answer: Result<(), ProviderError>) -> Arc<Self> {
        Arc::new(Self {
            name: ProviderName::Sandbox,
            answer: Mutex::new(answer),
            creates: AtomicUsize::new(0),
            during_create: Mutex::new(None),
        })
    }
}

#[async_trait]
impl PaymentProvider for ScriptedProvider {
    fn name(&self) -> ProviderName {
        self.name
    }

    async fn create(&self, request: &ProviderCreate) -> Result<ProviderCreated, ProviderError> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = self.during_create.lock().unwrap().as_ref() {
            hook(request.payment_id.clone());
        }
        self.answer.lock().unwrap().clone()?;
        Ok(ProviderCreated {
            pay_url: format!("https://pay.example/{}", request.payment_id),
            provider_trade_no: Some(format!("T{}", request.payment_id)),
        })
    }

    async fn query(&self, _payment_id: &PaymentId) -> Result<Option<ProviderTrade>, ProviderError> {
        Ok(None)
    }

    async fn close(
        &self,
        _payment_id: &PaymentId,
    ) -> Result<crate::ports::CloseOutcome, ProviderError> {
        Ok(crate::ports::CloseOutcome::NoTrade)
    }

    async fn refund(
        &self,
        _refund: &crate::ports::ProviderRefund,
    ) -> Result<crate::ports::RefundState, ProviderError> {
        Ok(crate::ports::RefundState::Succeeded)
    }

    async fn query_refund(
        &self,
        _refund: &crate::ports::ProviderRefund,
    ) -> Result<Option<crate::ports::RefundState>, ProviderError> {
        Ok(None)
    }

    fn verify_callback(
        &self,
        _h: &http::HeaderMap,
        body: &[u8],
        _now: Timestamp,
    ) -> Result<Verified, CallbackRejection> {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| CallbackRejection::Malformed(e.to_string()))?;
        let status = match v["status"].as_str() {
            Some("PAID") => NotifiedStatus::Paid,
            Some("WAIT_PAY") => NotifiedStatus::Pending,
            _ => return Err(CallbackRejection::Malformed("status".into())),
        };
        Ok(Verified::Payment(Notification {
            notify_id: "n1".into(),
            payment_id: PaymentId::parse(v["payment_id"].as_str().unwrap_or(""))
                .map_err(|e| CallbackRejection::Malformed(e.to_string()))?,
            provider_trade_no: None,
            status,
            amount_minor: v["amount_minor"].as_i64().unwrap_or(0),
            currency: crate::domain::Currency::Cny,
        }))
    }

    fn reply(&self, answer: CallbackAnswer, _detail: &str) -> CallbackReply {
        let status = match answer {
            CallbackAnswer::Success => 200,
            CallbackAnswer::RetryLater => 500,
            CallbackAnswer::Rejected => 400,
        };
        CallbackReply {
            status,
            content_type: "text/plain",
            body: String::new(),
        }
    }
}

/// The memory store, with write conflicts injected into transitions.
struct ConflictingStore {
    inner: MemoryStore,
    conflicts_left: AtomicUsize,
}

#[async_trait]
impl PaymentStore for ConflictingStore {
    async fn insert_payment(
        &self,
        new: &NewPayment,
        now: Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.inner.insert_payment(new, now).await
    }
    async fn complete_create(
        &self,
        id: &PaymentId,
        c: &CreateCompletion,
        key: &str,
        r: &crate::domain::idempotency::StoredResponse,
    ) -> Result<(), StoreError> {
        self.inner.complete_create(id, c, key, r).await
    }
    async fn apply_transition(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
        if self.conflicts_left.load(Ordering::SeqCst) > 0 {
            self.conflicts_left.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Conflict);
        }
        self.inner.apply_transition(t).await
    }
    async fn payment(&self, id: &PaymentId) -> Result<Option<PaymentRecord>, StoreError> {
        self.inner.payment(id).await
    }
    async fn due_checks(
        &self,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<crate::ports::DueCheck>, StoreError> {
        self.inner.due_checks(shard, now, limit).await
    }
    async fn insert_refund(
        &self,
        r: &crate::domain::refund::Refund,
        total: i64,
        statuses: &[PaymentStatus],
    ) -> Result<crate::ports::RefundInsert, StoreError> {
        self.inner.insert_refund(r, total, statuses).await
    }
    async fn refund(
        &self,
        id: &PaymentId,
        refund_id: &crate::domain::RefundId,
    ) -> Result<Option<crate::domain::refund::Refund>, StoreError> {
        self.inner.refund(id, refund_id).await
    }
    async fn refunds(
        &self,
        id: &PaymentId,
    ) -> Result<Vec<crate::domain::refund::Refund>, StoreError> {
        self.inner.refunds(id).await
    }
    async fn settle_refund(&self, s: &crate::ports::RefundSettlement) -> Result<bool, StoreError> {
        self.inner.settle_refund(s).await
    }
    async fn claim_refund_check(
        &self,
        id: &PaymentId,
        refund_id: &crate::domain::RefundId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<crate::domain::refund::Refund>, StoreError> {
        self.inner
            .claim_refund_check(id, refund_id, now, lease_until)
            .await
    }
    async fn put_compensation(&self, c: &crate::ports::Compensation) -> Result<bool, StoreError> {
        self.inner.put_compensation(c).await
    }
    async fn record_refund_check(
        &self,
        id: &PaymentId,
        refund_id: &crate::domain::RefundId,
        lease_until: Timestamp,
        check: &crate::ports::RefundCheck,
    ) -> Result<bool, StoreError> {
        self.inner
            .record_refund_check(id, refund_id, lease_until, check)
            .await
    }
    async fn effect_checks_due(
        &self,
        shard: u32,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<PaymentId>, StoreError> {
        self.inner.effect_checks_due(shard, now, limit).await
    }
    async fn move_effect_check(
        &self,
        id: &PaymentId,
        at: Timestamp,
        next: Option<Timestamp>,
        republished: u32,
    ) -> Result<bool, StoreError> {
        self.inner
            .move_effect_check(id, at, next, republished)
            .await
    }
    async fn claim_check(
        &self,
        id: &PaymentId,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<crate::domain::Payment>, StoreError> {
        self.inner.claim_check(id, now, lease_until).await
    }
    async fn record_check(
        &self,
        id: &PaymentId,
        lease_until: Timestamp,
        check: &crate::ports::CheckRecord,
    ) -> Result<bool, StoreError> {
        self.inner.record_check(id, lease_until, check).await
    }
    async fn escalate(
        &self,
        t: &Transition,
        c: &crate::ports::Compensation,
    ) -> Result<TransitionOutcome, StoreError> {
        self.inner.escalate(t, c).await
    }
}

#[async_trait]
impl IdempotencyStore for ConflictingStore {
    async fn claim(
        &self,
        r: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        self.inner.claim(r, now).await
    }
    async fn complete(
        &self,
        key: &str,
        id: &str,
        r: &crate::domain::idempotency::StoredResponse,
    ) -> Result<(), StoreError> {
        self.inner.complete(key, id, r).await
    }
    async fn record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.record(key).await
    }
}

struct World {
    deps: Deps,
    store: Arc<ConflictingStore>,
    provider: Arc<ScriptedProvider>,
    clock: Arc<ManualClock>,
}

fn world(answer: Result<(), ProviderError>) -> World {
    let store = Arc::new(ConflictingStore {
        inner: MemoryStore::new(),
        conflicts_left: AtomicUsize::new(0),
    });
    let provider = ScriptedProvider::new(answer);
    let clock = Arc::new(ManualClock::at(T0));
    let deps = Deps {
        store: store.clone(),
        providers: Providers::default().with(provider.clone()),
        clock: clock.clone(),
        ids: Arc::new(SequentialIds::default()),
        poll: Default::default(),
    };
    World {
        deps,
        store,
        provider,
        clock,
    }
}

fn request(order_id: &str, amount_minor: i64) -> CreatePaymentRequest {
    let body = serde_json::json!({
        "order_id": order_id, "amount_minor": amount_minor, "currency": "CNY", "provider": "sandbox", "subject": "tea",
    });
    crate::edge::create_request(Some("application/json"), body.to_string().as_bytes()).unwrap()
}

fn body(response: &crate::domain::idempotency::StoredResponse) -> serde_json::Value {
    serde_json::from_str(&response.body).unwrap()
}

async fn notify(w: &World, payment_id: &str, amount_minor: i64) -> (CallbackResult, u16) {
    let n = serde_json::json!({ "payment_id": payment_id, "amount_minor": amount_minor, "status": "PAID" });
    let outcome = handle_callback(
        &w.deps,
        ProviderName::Sandbox,
        &http::HeaderMap::new(),
        n.to_string().as_bytes(),
    )
    .await
    .unwrap();
    (outcome.result, outcome.reply.status)
}

async fn payment(w: &World, id: &str) -> PaymentRecord {
    w.store
        .payment(&PaymentId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn create_then_replay_calls_the_provider_once() {
    let w = world(Ok(()));
    let first = create_payment(&w.deps, &request("o1", 100), None)
        .await
        .unwrap();
    assert_eq!(first.status, 201);
    assert!(
        body(&first)["pay_url"]
            .as_str()
            .unwrap()
            .starts_with("https://pay.example/")
    );
    let replay = create_payment(&w.deps, &request("o1", 100), None)
        .await
        .unwrap();
    assert_eq!(replay, first);
    assert_eq!(w.provider.creates.load(Ordering::SeqCst), 1);
    let mismatch = create_payment(&w.deps, &request("o1", 101), None)
        .await
        .unwrap_err();
    assert_eq!(
        (mismatch.kind, mismatch.code),
        (RefusalKind::Conflict, "idempotency_mismatch")
    );
}

#[tokio::test]
async fn provider_rejection_fails_the_payment_and_replays_the_502() {
    let w = world(Err(ProviderError::Rejected {
        code: "INVALID".into(),
        message: "no".into(),
    }));
    let first = create_payment(&w.deps, &request("o2", 100), None)
        .await
        .unwrap();
    assert_eq!(first.status, 502);
    assert_eq!(body(&first)["error"]["code"], "provider_rejected");
    let replay = create_payment(&w.deps, &request("o2", 100), None)
        .await
        .unwrap();
    assert_eq!(replay, first);
    let stored = w
        .store
        .inner
        .record("create-payment#o2")
        .await
        .unwrap()
        .unwrap();
    let record = payment(&w, &stored.resource_id).await;
    assert_eq!(record.payment.status, PaymentStatus::Failed);
    assert_eq!(record.payment.version, 2);
}

#[tokio::test]
async fn unknown_outcome_stays_pending_with_a_check_due_and_never_recreates() {
    let w = world(Err(ProviderError::Unknown("timeout".into())));
    let first = create_payment(&w.deps, &request("o3", 100), None)
        .await
        .unwrap();
    assert_eq!(first.status, 202);
    assert_eq!(body(&first)["status"], "pending");
    let replay = create_payment(&w.deps, &request("o3", 100), None)
        .await
        .unwrap();
    assert_eq!(replay, first);
    assert_eq!(w.provider.creates.load(Ordering::SeqCst), 1);
    let record = payment(&w, body(&first)["payment_id"].as_str().unwrap()).await;
    assert_eq!(record.payment.status, PaymentStatus::Pending);
    assert_eq!(record.payment.next_check_at, Some(T0.plus_s(60)));
}

#[tokio::test]
async fn a_live_claim_answers_in_progress_and_a_dead_one_is_taken_over() {
    let w = world(Ok(()));
    // An invocation wrote the payment and its in-progress claim, then died before the provider
    // call: its claim blocks until its deadline.
    let deadline = T0.plus_s(10);
    let req = request("o4", 100);
    let pid = w.deps.ids.payment_id(T0);
    let new = NewPayment {
        payment: crate::domain::Payment {
            payment_id: pid.clone(),
            order_id: req.order_id.clone(),
            amount_minor: req.money.amount,
            currency: req.money.currency,
            provider: ProviderName::Sandbox,
            subject: req.subject.clone(),
            attempt: 1,
            status: PaymentStatus::Pending,
            version: 1,
            expires_at: T0.plus_s(900),
            created_at: T0,
            updated_at: T0,
            pay_url: None,
            provider_trade_no: None,
            next_check_at: None,
            checks_done: 0,
            unknown_checks: 0,
            recent_checks: Vec::new(),
            create_unknown: false,
            refund_reserved_minor: 0,
            refunded_minor: 0,
            status_reason: None,
            effects_check_at: None,
            effects_republished: 0,
        },
        history: crate::domain::HistoryEntry::created(T0),
        claim: IdempotencyRecord::claim(
            req.idempotency_key(),
            req.hash(),
            deadline,
            T0.plus_s(3600),
            pid.to_string(),
        ),
        replaces: None,
    };
    assert_eq!(
        w.store.insert_payment(&new, T0).await.unwrap(),
        InsertOutcome::Inserted
    );

    let busy = create_payment(&w.deps, &req, None).await.unwrap_err();
    assert_eq!(
        (busy.kind, busy.code),
        (RefusalKind::Conflict, "in_progress")
    );
    assert_eq!(busy.retry_after_s, Some(11));

    w.clock.set(deadline.plus_s(1));
    // Taking over is only for the same request: another lifetime is another request.
    let mut longer = req.clone();
    longer.expires_in_s = 1800;
    let refused = create_payment(&w.deps, &longer, None).await.unwrap_err();
    assert_eq!(
        (refused.kind, refused.code),
        (RefusalKind::Conflict, "idempotency_mismatch")
    );
    let taken_over = create_payment(&w.deps, &req, None).await.unwrap();
    assert_eq!(taken_over.status, 201);
    assert_eq!(
        body(&taken_over)["payment_id"],
        pid.as_str(),
        "the same payment, not a second one"
    );
    assert_eq!(w.provider.creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn callback_applies_once_and_duplicates_change_nothing() {
    let w = world(Ok(()));
    let created = create_payment(&w.deps, &request("o5", 250), None)
        .await
        .unwrap();
    let id = body(&created)["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(notify(&w, &id, 250).await, (CallbackResult::Applied, 200));
    assert_eq!(notify(&w, &id, 250).await, (CallbackResult::Duplicate, 200));
    let record = payment(&w, &id).await;
    assert_eq!(
        (
            record.payment.status,
            record.payment.version,
            record.history.len()
        ),
        (PaymentStatus::Paid, 2, 2)
    );
}

#[tokio::test]
async fn amount_mismatch_moves_to_exception_and_answers_success() {
    let w = world(Ok(()));
    let created = create_payment(&w.deps, &request("o6", 250), None)
        .await
        .unwrap();
    let id = body(&created)["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(
        notify(&w, &id, 251).await,
        (CallbackResult::AmountMismatch, 200)
    );
    assert_eq!(notify(&w, &id, 251).await, (CallbackResult::Duplicate, 200));
    assert_eq!(notify(&w, &id, 250).await, (CallbackResult::Duplicate, 200));
    let record = payment(&w, &id).await;
    assert_eq!(
        (record.payment.status, record.payment.version),
        (PaymentStatus::Exception, 2)
    );
}

#[tokio::test]
async fn a_lost_write_conflict_answers_retry_later_and_the_resend_applies() {
    let w = world(Ok(()));
    let created = create_payment(&w.deps, &request("o7", 100), None)
        .await
        .unwrap();
    let id = body(&created)["payment_id"].as_str().unwrap().to_owned();
    w.store.conflicts_left.store(1, Ordering::SeqCst);
    assert_eq!(
        notify(&w, &id, 100).await,
        (CallbackResult::RetryLater, 500)
    );
    assert_eq!(payment(&w, &id).await.payment.version, 1);
    assert_eq!(notify(&w, &id, 100).await, (CallbackResult::Applied, 200));
}

#[tokio::test]
async fn unknown_payment_and_garbage_are_refused_without_writes() {
    let w = world(Ok(()));
    assert_eq!(
        notify(&w, "01ZZZZZZZZZZZZZZZZZZZZZZZZ", 100).await,
        (CallbackResult::UnknownPayment, 400)
    );
    let outcome = handle_callback(
        &w.deps,
        ProviderName::Sandbox,
        &http::HeaderMap::new(),
        b"garbage",
    )
    .await
    .unwrap();
    assert_eq!(
        (outcome.result, outcome.reply.status),
        (CallbackResult::Rejected, 400)
    );
    assert!(
        handle_callback(
            &w.deps,
            ProviderName::Alipay,
            &http::HeaderMap::new(),
            b"{}"
        )
        .await
        .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_racing_the_create_ends_paid_with_the_pay_url_stored() {
    let w = Arc::new(world(Ok(())));
    let handle = tokio::runtime::Handle::current();
    let racer = w.clone();
    // While our create waits for the provider, the payer pays and the callback lands first.
    *w.provider.during_create.lock().unwrap() = Some(Box::new(move |id: PaymentId| {
        let racer = racer.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let result = notify(&racer, id.as_str(), 300).await;
            let _ = tx.send(result);
        });
        assert_eq!(rx.recv().unwrap(), (CallbackResult::Applied, 200));
    }));
    let created = create_payment(&w.deps, &request("o8", 300), None)
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    let record = payment(&w, body(&created)["payment_id"].as_str().unwrap()).await;
    assert_eq!(record.payment.status, PaymentStatus::Paid);
    assert!(record.payment.pay_url.is_some());
    assert_eq!(record.payment.version, 2);
}

#[test]
fn signer_is_redacted_in_debug() {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    use aws_lc_rs::encoding::AsDer;
    let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = key.as_der().unwrap();
    let signer = RsaSigner::from_pem(&pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        der.as_ref().to_vec(),
    )))
    .unwrap();
    assert_eq!(format!("{signer:?}"), "RsaSigner(<redacted>)");
}

#[tokio::test]
async fn a_callback_never_moves_another_providers_payment() {
    let mut w = world(Ok(()));
    let other = Arc::new(ScriptedProvider {
        name: ProviderName::Alipay,
        answer: Mutex::new(Ok(())),
        creates: AtomicUsize::new(0),
        during_create: Mutex::new(None),
    });
    w.deps.providers = w.deps.providers.clone().with(other);
    let created = create_payment(&w.deps, &request("o9", 100), None)
        .await
        .unwrap();
    let id = body(&created)["payment_id"].as_str().unwrap().to_owned();
    let n = serde_json::json!({ "payment_id": id, "amount_minor": 100, "status": "PAID" });
    let outcome = handle_callback(
        &w.deps,
        ProviderName::Alipay,
        &http::HeaderMap::new(),
        n.to_string().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        (outcome.result, outcome.reply.status),
        (CallbackResult::UnknownPayment, 400)
    );
    assert_eq!(
        payment(&w, &id).await.payment.status,
        PaymentStatus::Pending
    );
    assert_eq!(notify(&w, &id, 100).await, (CallbackResult::Applied, 200));
}
