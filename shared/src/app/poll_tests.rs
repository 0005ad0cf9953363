//! The poller, the merchant close and refunds on the in-memory store, with a provider whose
//! state and faults the test sets and a manual clock: no sleeping through real minutes.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::Deps;
use super::callback::{CallbackResult, handle_callback};
use super::create::create_payment;
use super::poll::{CheckOutcome, PollRun, check_payment, run_poller};
use super::test_edge::{close, refund, refunds};
use crate::clock::{ManualClock, SequentialIds};
use crate::domain::polling::PollSchedule;
use crate::domain::{Currency, PaymentId, PaymentStatus, ProviderName, Timestamp};
use crate::ports::{
    CallbackAnswer, CallbackRejection, CallbackReply, CloseOutcome, Notification, NotifiedStatus,
    PaymentProvider, PaymentStore, ProviderCreate, ProviderCreated, ProviderError, ProviderRefund,
    ProviderTrade, Providers, RefundState, Verified,
};
use crate::store::MemoryStore;

/// Code a test runs inside a provider call, to race it.
type Hook = Box<dyn Fn(PaymentId) + Send + Sync>;

const T0: Timestamp = Timestamp::from_unix_s(1_800_000_000);

/// How the provider answers our create.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CreateMode {
    Accept,
    /// Times out after the trade was made at the provider.
    TimeoutAfterCreating,
    /// Times out before anything happened there.
    TimeoutBeforeCreating,
    /// Definitely refused.
    Reject,
}

/// How the provider answers a refund request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RefundMode {
    Succeed,
    /// Accepted; succeeds at the next query.
    Processing,
    /// Times out after recording it.
    TimeoutAfterRecording,
    /// Times out before anything happened.
    TimeoutBeforeRecording,
    Reject,
}

#[derive(Default)]
struct Remote {
    /// Refunds by refund number: amount and state.
    refunds: HashMap<String, (i64, RefundState)>,
    trades: HashMap<PaymentId, NotifiedStatus>,
    /// Every call times out.
    down: bool,
    /// The payer pays between our query and our close.
    pay_on_close: bool,
    /// The provider has no close: unpaid orders lapse at their expiry.
    lapses: bool,
    /// Refund queries are refused (a permission or key problem at the provider).
    refuse_refund_queries: bool,
}

/// A provider with a state the test sets, counting every call per payment.
struct FakeProvider {
    remote: Mutex<Remote>,
    create_mode: Mutex<CreateMode>,
    creates: Mutex<Vec<PaymentId>>,
    queries: AtomicUsize,
    closes: AtomicUsize,
    refund_mode: Mutex<RefundMode>,
    /// Refund requests, by refund number, in order.
    refund_calls: Mutex<Vec<String>>,
    /// Runs inside `query` before it answers: a callback racing the poll.
    during_query: Mutex<Option<Hook>>,
    amount_minor: i64,
}

impl FakeProvider {
    fn new(amount_minor: i64) -> Arc<Self> {
        Arc::new(Self {
            remote: Mutex::default(),
            create_mode: Mutex::new(CreateMode::Accept),
            creates: Mutex::default(),
            queries: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
            refund_mode: Mutex::new(RefundMode::Succeed),
            refund_calls: Mutex::default(),
            during_query: Mutex::new(None),
            amount_minor,
        })
    }

    fn set(&self, id: &PaymentId, status: NotifiedStatus) {
        self.remote
            .lock()
            .unwrap()
            .trades
            .insert(id.clone(), status);
    }

    fn down(&self, down: bool) {
        self.remote.lock().unwrap().down = down;
    }

    fn trade(&self, status: NotifiedStatus) -> ProviderTrade {
        ProviderTrade {
            status,
            provider_trade_no: Some("T1".into()),
            amount_minor: self.amount_minor,
            currency: Currency::Cny,
        }
    }
}

fn timeout() -> ProviderError {
    ProviderError::Unknown("timed out".into())
}

/// `<payment_id>:<refund_no>:<amount>:<SUCCESS|FAIL|PROCESSING>`.
fn refund_notice(text: &str) -> crate::ports::RefundNotice {
    let parts: Vec<&str> = text.split(':').collect();
    let state = match parts.get(3).copied() {
        Some("SUCCESS") => RefundState::Succeeded,
        Some("PROCESSING") => RefundState::Processing,
        _ => RefundState::Failed("closed".into()),
    };
    crate::ports::RefundNotice {
        notify_id: "rn1".into(),
        payment_id: PaymentId::parse(parts[0]).unwrap(),
        refund_no: parts[1].to_owned(),
        state,
        amount_minor: parts[2].parse().unwrap(),
    }
}

#[async_trait]
impl PaymentProvider for FakeProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Sandbox
    }

    async fn create(&self, request: &ProviderCreate) -> Result<ProviderCreated, ProviderError> {
        self.creates
            .lock()
            .unwrap()
            .push(request.payment_id.clone());
        let mode = *self.create_mode.lock().unwrap();
        let mut remote = self.remote.lock().unwrap();
        if remote.down || mode == CreateMode::TimeoutBeforeCreating {
            return Err(timeout());
        }
        if mode == CreateMode::Reject {
            return Err(ProviderError::Rejected {
                code: "ACQ.INVALID_PARAMETER".into(),
                message: "refused".into(),
            });
        }
        remote
            .trades
            .entry(request.payment_id.clone())
            .or_insert(NotifiedStatus::Pending);
        if mode == CreateMode::TimeoutAfterCreating {
            return Err(timeout());
        }
        Ok(ProviderCreated {
            pay_url: format!("https://pay.example/{}", request.payment_id),
            provider_trade_no: None,
        })
    }

    async fn query(&self, payment_id: &PaymentId) -> Result<Option<ProviderTrade>, ProviderError> {
        // A network call suspends: concurrent checks interleave here, as they would for real.
        tokio::task::yield_now().await;
        self.queries.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = self.during_query.lock().unwrap().as_ref() {
            hook(payment_id.clone());
        }
        let remote = self.remote.lock().unwrap();
        if remote.down {
            return Err(timeout());
        }
        Ok(remote.trades.get(payment_id).map(|s| self.trade(*s)))
    }

    async fn close(&self, payment_id: &PaymentId) -> Result<CloseOutcome, ProviderError> {
        self.closes.fetch_add(1, Ordering::SeqCst);
        let mut remote = self.remote.lock().unwrap();
        if remote.down {
            return Err(timeout());
        }
        if remote.lapses {
            return Ok(CloseOutcome::LapsesAtExpiry);
        }
        if remote.pay_on_close {
            remote
                .trades
                .insert(payment_id.clone(), NotifiedStatus::Paid);
        }
        match remote.trades.get(payment_id).copied() {
            None => Ok(CloseOutcome::NoTrade),
            Some(NotifiedStatus::Paid) => Ok(CloseOutcome::AlreadyPaid),
            Some(_) => {
                remote
                    .trades
                    .insert(payment_id.clone(), NotifiedStatus::Closed);
                Ok(CloseOutcome::Closed)
            }
        }
    }

    async fn refund(&self, refund: &ProviderRefund) -> Result<RefundState, ProviderError> {
        tokio::task::yield_now().await;
        self.refund_calls
            .lock()
            .unwrap()
            .push(refund.refund_no.clone());
        let mode = *self.refund_mode.lock().unwrap();
        let mut remote = self.remote.lock().unwrap();
        if mode == RefundMode::TimeoutBeforeRecording {
            return Err(timeout());
        }
        if mode == RefundMode::Reject {
            return Err(ProviderError::Rejected {
                code: "NOT_ENOUGH".into(),
                message: "balance too low".into(),
            });
        }
        let state = if mode == RefundMode::Processing {
            RefundState::Processing
        } else {
            RefundState::Succeeded
        };
        let entry = remote
            .refunds
            .entry(refund.refund_no.clone())
            .or_insert((refund.amount_minor, state));
        let answer = entry.1.clone();
        // Processing settles by the next look.
        entry.1 = RefundState::Succeeded;
        if mode == RefundMode::TimeoutAfterRecording {
            return Err(timeout());
        }
        Ok(answer)
    }

    async fn query_refund(
        &self,
        refund: &ProviderRefund,
    ) -> Result<Option<RefundState>, ProviderError> {
        let remote = self.remote.lock().unwrap();
        if remote.down {
            return Err(timeout());
        }
        if remote.refuse_refund_queries {
            return Err(ProviderError::Rejected {
                code: "SIGN_ERROR".into(),
                message: "signature rejected".into(),
            });
        }
        Ok(remote
            .refunds
            .get(&refund.refund_no)
            .map(|entry| entry.1.clone()))
    }

    /// `refund:<payment_id>:<refund_no>:<amount>:<SUCCESS|FAIL|PROCESSING>` is a refund
    /// notice; any other body is a paid notification of the payment id it holds.
    fn verify_callback(
        &self,
        _h: &http::HeaderMap,
        body: &[u8],
        _now: Timestamp,
    ) -> Result<Verified, CallbackRejection> {
        let text = std::str::from_utf8(body).unwrap();
        if let Some(refund) = text.strip_prefix("refund:") {
            return Ok(Verified::Refund(refund_notice(refund)));
        }
        Ok(Verified::Payment(Notification {
            notify_id: "n1".into(),
            payment_id: PaymentId::parse(text).unwrap(),
            provider_trade_no: Some("T1".into()),
            status: NotifiedStatus::Paid,
            amount_minor: self.amount_minor,
            currency: Currency::Cny,
        }))
    }

    fn reply(&self, answer: CallbackAnswer, _detail: &str) -> CallbackReply {
        CallbackReply {
            status: if answer == CallbackAnswer::Success {
                200
            } else {
                500
            },
            content_type: "text/plain",
            body: String::new(),
        }
    }
}

struct World {
    deps: Deps,
    store: Arc<MemoryStore>,
    provider: Arc<FakeProvider>,
    clock: Arc<ManualClock>,
}

const AMOUNT: i64 = 1234;

fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let provider = FakeProvider::new(AMOUNT);
    let clock = Arc::new(ManualClock::at(T0));
    let deps = Deps {
        store: store.clone(),
        providers: Providers::default().with(provider.clone()),
        clock: clock.clone(),
        ids: Arc::new(SequentialIds::default()),
        poll: PollSchedule::new(vec![60, 300, 900, 1800, 3600, 7200], 4).unwrap(),
    };
    World {
        deps,
        store,
        provider,
        clock,
    }
}

impl World {
    /// One notification through the callback use case.
    async fn deliver(&self, body: &[u8]) -> super::callback::CallbackOutcome {
        handle_callback(
            &self.deps,
            ProviderName::Sandbox,
            &http::HeaderMap::new(),
            body,
        )
        .await
        .unwrap()
    }

    async fn create(&self, order_id: &str, expires_in_s: i64) -> PaymentId {
        let body = serde_json::json!({
            "order_id": order_id, "amount_minor": AMOUNT, "currency": "CNY", "provider": "sandbox",
            "subject": "tea", "expires_in_s": expires_in_s,
        });
        let request =
            crate::edge::create_request(Some("application/json"), body.to_string().as_bytes())
                .unwrap();
        let response = create_payment(&self.deps, &request, None).await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        PaymentId::parse(body["payment_id"].as_str().unwrap()).unwrap()
    }

    async fn payment(&self, id: &PaymentId) -> crate::ports::PaymentRecord {
        self.store.payment(id).await.unwrap().unwrap()
    }

    async fn status(&self, id: &PaymentId) -> PaymentStatus {
        self.payment(id).await.payment.status
    }

    async fn run(&self) -> super::poll::PollSummary {
        run_poller(&self.deps, &PollRun::default()).await
    }

    fn advance_s(&self, s: i64) {
        self.clock.advance_ms(s * 1000);
    }
}

#[tokio::test]
async fn a_lost_callback_is_found_paid_at_the_first_due_check() {
    let w = world();
    let id = w.create("lost-callback", 900).await;
    w.provider.set(&id, NotifiedStatus::Paid);

    w.advance_s(59);
    assert_eq!(w.run().await.due, 0, "nothing is due before the first step");
    assert_eq!(w.provider.queries.load(Ordering::SeqCst), 0);

    w.advance_s(1);
    let summary = w.run().await;
    assert_eq!((summary.due, summary.paid), (1, 1), "{summary:?}");
    let record = w.payment(&id).await;
    assert_eq!(record.payment.status, PaymentStatus::Paid);
    assert_eq!(record.payment.next_check_at, None, "nothing left to check");
    let last = record.history.last().unwrap();
    assert_eq!((last.source.as_str(), last.version), ("poll", 2));
    assert_eq!(w.provider.queries.load(Ordering::SeqCst), 1);
    assert_eq!(w.run().await.due, 0);
}

#[tokio::test]
async fn a_provider_that_stays_down_is_backed_off_then_escalated() {
    let w = world();
    let id = w.create("down", 86_400).await;
    w.provider.down(true);

    let mut gaps = Vec::new();
    let mut previous = crate::ports::Clock::now(w.clock.as_ref());
    for _ in 0..3 {
        let due = w.payment(&id).await.payment.next_check_at.unwrap();
        gaps.push((due.unix_ms() - previous.unix_ms()) / 1000);
        w.clock.set(due);
        previous = due;
        assert_eq!(w.run().await.waiting, 1);
        let payment = w.payment(&id).await.payment;
        assert_eq!(payment.status, PaymentStatus::Pending);
        assert!(payment.recent_checks.last().unwrap().contains("timed out"));
    }
    let due = w.payment(&id).await.payment.next_check_at.unwrap();
    gaps.push((due.unix_ms() - previous.unix_ms()) / 1000);
    assert_eq!(gaps, [60, 300, 900, 1800], "the configured schedule");
    assert!(w.store.compensations().is_empty());

    // The fourth unknown answer is the last the schedule allows.
    w.clock.set(due);
    let summary = w.run().await;
    assert_eq!(summary.exception, 1, "{summary:?}");
    let record = w.payment(&id).await;
    assert_eq!(record.payment.status, PaymentStatus::Exception);
    assert!(
        record
            .payment
            .status_reason
            .as_deref()
            .unwrap()
            .contains("4 checks"),
        "{:?}",
        record.payment.status_reason
    );
    let compensations = w.store.compensations();
    assert_eq!(compensations.len(), 1);
    let c = &compensations[0];
    assert_eq!((c.kind, &c.payment_id), ("poll_exhausted", &id));
    assert_eq!(c.evidence.len(), 4, "the last answers: {:?}", c.evidence);
    assert!(c.evidence.iter().all(|e| e.contains("timed out")));
    assert_eq!(
        w.provider.closes.load(Ordering::SeqCst),
        0,
        "never closed blind"
    );
    assert_eq!(w.provider.creates.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_answer_between_timeouts_resets_the_unknown_count() {
    let w = world();
    let id = w.create("flaky", 86_400).await;
    for down in [true, true, false, true, true, true] {
        w.provider.down(down);
        w.clock
            .set(w.payment(&id).await.payment.next_check_at.unwrap());
        w.run().await;
    }
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        payment.status,
        PaymentStatus::Pending,
        "3 unknown in a row < 4"
    );
    assert_eq!((payment.checks_done, payment.unknown_checks), (6, 3));
}

#[tokio::test]
async fn a_create_timeout_is_resolved_by_query_without_a_second_charge() {
    let w = world();
    *w.provider.create_mode.lock().unwrap() = CreateMode::TimeoutAfterCreating;
    let id = w.create("create-timeout", 900).await;
    let payment = w.payment(&id).await.payment;
    assert!(payment.create_unknown && payment.pay_url.is_none());
    // The payer paid on the trade our lost answer described.
    w.provider.set(&id, NotifiedStatus::Paid);
    w.advance_s(60);
    assert_eq!(w.run().await.paid, 1);
    assert_eq!(w.status(&id).await, PaymentStatus::Paid);
    assert_eq!(
        *w.provider.creates.lock().unwrap(),
        vec![id.clone()],
        "created once"
    );
}

#[tokio::test]
async fn a_lost_create_answer_gets_its_code_back_from_the_same_trade() {
    let w = world();
    *w.provider.create_mode.lock().unwrap() = CreateMode::TimeoutAfterCreating;
    let id = w.create("create-answer-lost", 900).await;
    *w.provider.create_mode.lock().unwrap() = CreateMode::Accept;
    w.advance_s(60);
    assert_eq!(w.run().await.waiting, 1);
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        payment.pay_url.as_deref(),
        Some(format!("https://pay.example/{id}").as_str())
    );
    assert!(!payment.create_unknown);
    // One trade at the provider: the second create named the same order number.
    assert_eq!(
        *w.provider.creates.lock().unwrap(),
        vec![id.clone(), id.clone()]
    );
    assert_eq!(w.provider.remote.lock().unwrap().trades.len(), 1);

    // A provider that refuses to repeat it (a duplicate) leaves it pending, asked no more.
    let other = {
        *w.provider.create_mode.lock().unwrap() = CreateMode::TimeoutAfterCreating;
        let other = w.create("create-answer-lost-2", 900).await;
        *w.provider.create_mode.lock().unwrap() = CreateMode::Reject;
        other
    };
    w.advance_s(60);
    w.run().await;
    let payment = w.payment(&other).await.payment;
    assert_eq!(
        payment.status,
        PaymentStatus::Pending,
        "never failed: the trade exists"
    );
    assert!(!payment.create_unknown);
    let creates = w.provider.creates.lock().unwrap().len();
    w.advance_s(300);
    w.run().await;
    assert_eq!(
        w.provider.creates.lock().unwrap().len(),
        creates,
        "not asked again"
    );
}

#[tokio::test]
async fn a_create_that_never_reached_the_provider_is_created_again_with_the_same_id() {
    let w = world();
    *w.provider.create_mode.lock().unwrap() = CreateMode::TimeoutBeforeCreating;
    let id = w.create("create-lost", 900).await;
    *w.provider.create_mode.lock().unwrap() = CreateMode::Accept;
    w.advance_s(60);
    assert_eq!(w.run().await.waiting, 1);
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        payment.pay_url.as_deref(),
        Some(format!("https://pay.example/{id}").as_str())
    );
    assert!(!payment.create_unknown);
    assert_eq!(
        *w.provider.creates.lock().unwrap(),
        vec![id.clone(), id.clone()]
    );

    // From then on "no trade" is the payer not having scanned yet: never created a third time.
    w.provider.remote.lock().unwrap().trades.clear();
    w.clock.set(payment.next_check_at.unwrap());
    assert_eq!(w.run().await.waiting, 1);
    assert_eq!(w.provider.creates.lock().unwrap().len(), 2);
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        payment.unknown_checks, 0,
        "no trade before the scan is an answer"
    );
}

#[tokio::test]
async fn a_poll_racing_a_callback_makes_one_transition() {
    let w = world();
    let id = w.create("race", 900).await;
    w.provider.set(&id, NotifiedStatus::Paid);
    let deps = w.deps.clone();
    let fired = Arc::new(Mutex::new(None));
    let fired_in_hook = Arc::clone(&fired);
    *w.provider.during_query.lock().unwrap() = Some(Box::new(move |id: PaymentId| {
        let deps = deps.clone();
        let fired = Arc::clone(&fired_in_hook);
        // The callback lands while the poll waits for its query's answer.
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                handle_callback(
                    &deps,
                    ProviderName::Sandbox,
                    &http::HeaderMap::new(),
                    id.as_str().as_bytes(),
                )
                .await
                .unwrap()
                .result
            })
        })
        .join()
        .unwrap();
        *fired.lock().unwrap() = Some(outcome);
    }));
    w.advance_s(60);
    let summary = w.run().await;
    assert_eq!(*fired.lock().unwrap(), Some(CallbackResult::Applied));
    assert_eq!((summary.paid, summary.moved), (0, 1), "{summary:?}");
    let record = w.payment(&id).await;
    assert_eq!(record.payment.status, PaymentStatus::Paid);
    assert_eq!(record.payment.version, 2);
    assert_eq!(
        record.history.len(),
        2,
        "one transition: {:?}",
        record.history
    );
    assert_eq!(record.history[1].source, "callback");
}

#[tokio::test]
async fn overlapping_runs_query_each_due_payment_once() {
    let w = world();
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(w.create(&format!("overlap-{n}"), 900).await);
    }
    w.advance_s(60);
    let run = PollRun::default();
    let now = crate::ports::Clock::now(w.clock.as_ref());
    // Two runs that both read the index before either claimed (its reads are eventually
    // consistent): each tries every payment.
    let (a, b) = tokio::join!(
        async {
            let mut outcomes = Vec::new();
            for id in &ids {
                outcomes.push(check_payment(&w.deps, &run, id, now).await);
            }
            outcomes
        },
        async {
            let mut outcomes = Vec::new();
            for id in ids.iter().rev() {
                outcomes.push(check_payment(&w.deps, &run, id, now).await);
            }
            outcomes
        }
    );
    let claimed = a
        .iter()
        .chain(&b)
        .filter(|o| **o != CheckOutcome::NotClaimed)
        .count();
    assert_eq!(claimed, ids.len());
    assert_eq!(w.provider.queries.load(Ordering::SeqCst), ids.len());

    // And whole runs at the same instant: the second finds nothing left due.
    w.advance_s(300);
    let (x, y) = tokio::join!(w.run(), w.run());
    assert_eq!(x.due + y.due - x.not_claimed - y.not_claimed, ids.len());
    assert_eq!(w.provider.queries.load(Ordering::SeqCst), 2 * ids.len());
}

#[tokio::test]
async fn a_crashed_runs_claim_lapses_and_the_check_comes_round_again() {
    let w = world();
    let id = w.create("crash", 900).await;
    w.advance_s(60);
    let lease_until = crate::ports::Clock::now(w.clock.as_ref()).plus_s(PollRun::default().lease_s);
    // A run claims, then dies before answering.
    assert!(
        w.store
            .claim_check(&id, crate::ports::Clock::now(w.clock.as_ref()), lease_until)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(w.run().await.due, 0, "held by the lease");
    w.clock.set(lease_until);
    assert_eq!(w.run().await.waiting, 1);
}

#[tokio::test]
async fn at_expiry_the_poller_queries_then_closes() {
    let w = world();
    let id = w.create("expiry", 120).await;
    w.advance_s(60);
    assert_eq!(w.run().await.waiting, 1);
    let next = w.payment(&id).await.payment.next_check_at.unwrap();
    assert_eq!(
        next,
        T0.plus_s(120),
        "the 5 min step is capped at the expiry"
    );
    w.clock.set(next);
    let summary = w.run().await;
    assert_eq!(summary.closed, 1, "{summary:?}");
    let record = w.payment(&id).await;
    assert_eq!(record.payment.status, PaymentStatus::Closed);
    assert_eq!(record.history.last().unwrap().source, "poll");
    assert_eq!(
        w.provider.queries.load(Ordering::SeqCst),
        2,
        "queried before closing"
    );
    assert_eq!(w.provider.closes.load(Ordering::SeqCst), 1);
    assert_eq!(
        w.provider.remote.lock().unwrap().trades.get(&id),
        Some(&NotifiedStatus::Closed)
    );
}

#[tokio::test]
async fn a_close_answered_already_paid_is_recorded_paid() {
    let w = world();
    let id = w.create("paid-on-close", 120).await;
    w.provider.remote.lock().unwrap().pay_on_close = true;
    w.advance_s(120);
    assert_eq!(w.run().await.paid, 1);
    assert_eq!(w.status(&id).await, PaymentStatus::Paid);
    assert_eq!(
        w.provider.queries.load(Ordering::SeqCst),
        2,
        "query, close, query"
    );
}

#[tokio::test]
async fn a_provider_without_close_lapses_only_after_expiry() {
    let w = world();
    let id = w.create("lapses", 120).await;
    w.provider.remote.lock().unwrap().lapses = true;
    let early = close(&w.deps, id.as_str()).await.unwrap_err();
    assert_eq!((early.status, early.code), (409, "close_unsupported"));
    assert_eq!(w.status(&id).await, PaymentStatus::Pending);
    // At the expiry the payer may still be paying, and the provider's clock may lag ours: only
    // once the grace has passed too is a lapse taken as closed.
    w.advance_s(120);
    assert_eq!(w.run().await.waiting, 1);
    let next = w.payment(&id).await.payment.next_check_at.unwrap();
    assert!(next >= T0.plus_s(120 + crate::domain::polling::CLOSE_GRACE_S));
    w.clock.set(next);
    let summary = w.run().await;
    assert_eq!(summary.closed, 1, "{summary:?}");
}

#[tokio::test]
async fn a_trade_nobody_has_scanned_is_not_closed_before_its_expiry() {
    let w = world();
    let id = w.create("unscanned", 600).await;
    // Alipay's precreated code: no trade at the provider until the payer scans it.
    w.provider.remote.lock().unwrap().trades.clear();
    let early = close(&w.deps, id.as_str()).await.unwrap_err();
    assert_eq!((early.status, early.code), (409, "close_unsupported"));
    assert_eq!(w.status(&id).await, PaymentStatus::Pending);
    // The payer scans and pays before the expiry: recorded, not lost.
    w.provider.set(&id, NotifiedStatus::Paid);
    w.advance_s(60);
    assert_eq!(w.run().await.paid, 1);
}

#[tokio::test]
async fn an_expired_payment_the_provider_cannot_be_asked_about_is_never_closed() {
    let w = world();
    let id = w.create("expired-down", 60).await;
    w.provider.down(true);
    for _ in 0..3 {
        w.clock
            .set(w.payment(&id).await.payment.next_check_at.unwrap());
        w.run().await;
        assert_eq!(w.status(&id).await, PaymentStatus::Pending);
    }
    w.clock
        .set(w.payment(&id).await.payment.next_check_at.unwrap());
    w.run().await;
    assert_eq!(w.status(&id).await, PaymentStatus::Exception);
    assert_eq!(w.provider.closes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_merchant_closes_early_by_the_same_path() {
    let w = world();
    let id = w.create("merchant-close", 900).await;
    let view = close(&w.deps, id.as_str()).await.unwrap();
    assert_eq!(view.status, "closed");
    let record = w.payment(&id).await;
    assert_eq!(record.history.last().unwrap().source, "close");
    assert_eq!(
        w.provider.queries.load(Ordering::SeqCst),
        1,
        "queried first"
    );
    // Again: the same answer, nothing more at the provider.
    assert_eq!(close(&w.deps, id.as_str()).await.unwrap().status, "closed");
    assert_eq!(w.provider.closes.load(Ordering::SeqCst), 1);
    // A closed payment is no longer due.
    w.advance_s(60);
    assert_eq!(w.run().await.due, 0);
}

#[tokio::test]
async fn closing_a_paid_payment_is_refused_and_records_the_payment() {
    let w = world();
    let id = w.create("close-paid", 900).await;
    w.provider.set(&id, NotifiedStatus::Paid);
    let err = close(&w.deps, id.as_str()).await.unwrap_err();
    assert_eq!((err.status, err.code), (409, "already_paid"));
    assert_eq!(w.status(&id).await, PaymentStatus::Paid);
    assert_eq!(
        w.provider.closes.load(Ordering::SeqCst),
        0,
        "the query said paid"
    );

    let id = w.create("close-paid-late", 900).await;
    w.provider.remote.lock().unwrap().pay_on_close = true;
    let err = close(&w.deps, id.as_str()).await.unwrap_err();
    assert_eq!(err.code, "already_paid");
    assert_eq!(w.status(&id).await, PaymentStatus::Paid);
}

#[tokio::test]
async fn a_close_the_provider_does_not_answer_is_a_retryable_error_and_changes_nothing() {
    let w = world();
    let id = w.create("close-down", 900).await;
    w.provider.down(true);
    let err = close(&w.deps, id.as_str()).await.unwrap_err();
    assert_eq!(err.status, 503);
    assert_eq!(w.status(&id).await, PaymentStatus::Pending);
    for (raw, status) in [("not an id!", 400), ("01J00000000000000000000000", 404)] {
        assert_eq!(
            close(&w.deps, raw).await.unwrap_err().status,
            status,
            "{raw}"
        );
    }
}

// ---- refunds ----

use super::refunds::RefundRequest;

fn refund_request(refund_id: &str, amount_minor: i64) -> RefundRequest {
    let body = serde_json::json!({ "refund_id": refund_id, "amount_minor": amount_minor, "reason": "returned" });
    crate::edge::refund_request(Some("application/json"), body.to_string().as_bytes()).unwrap()
}

impl World {
    /// A payment paid through a callback.
    async fn paid(&self, order_id: &str) -> PaymentId {
        let id = self.create(order_id, 900).await;
        self.provider.set(&id, NotifiedStatus::Paid);
        let outcome = self.deliver(id.as_str().as_bytes()).await;
        assert_eq!(outcome.result, CallbackResult::Applied);
        id
    }

    async fn refund(
        &self,
        id: &PaymentId,
        refund_id: &str,
        amount: i64,
    ) -> Result<(u16, crate::edge::RefundView), crate::api::ApiError> {
        refund(&self.deps, id.as_str(), &refund_request(refund_id, amount)).await
    }
}

#[tokio::test]
async fn partial_then_full_refunds_move_the_payment_and_replays_answer_the_same() {
    let w = world();
    let id = w.paid("refund-partial").await;
    let (status, view) = w.refund(&id, "r1", 400).await.unwrap();
    assert_eq!(
        (status, view.status, view.amount_minor),
        (201, "succeeded", 400)
    );
    let payment = w.payment(&id).await.payment;
    assert_eq!(payment.status, PaymentStatus::PartiallyRefunded);
    assert_eq!(
        (payment.refunded_minor, payment.refund_reserved_minor),
        (400, 400)
    );

    // Replay: the same refund, no second request to the provider.
    let (status, again) = w.refund(&id, "r1", 400).await.unwrap();
    assert_eq!((status, again), (200, view));
    assert_eq!(w.provider.refund_calls.lock().unwrap().len(), 1);
    let mismatch = w.refund(&id, "r1", 401).await.unwrap_err();
    assert_eq!(
        (mismatch.status, mismatch.code),
        (409, "idempotency_mismatch")
    );

    let too_much = w.refund(&id, "r2", AMOUNT - 399).await.unwrap_err();
    assert_eq!(
        (too_much.status, too_much.code),
        (409, "refund_exceeds_payment")
    );
    let (_, rest) = w.refund(&id, "r2", AMOUNT - 400).await.unwrap();
    assert_eq!(rest.status, "succeeded");
    let record = w.payment(&id).await;
    assert_eq!(record.payment.status, PaymentStatus::Refunded);
    assert_eq!(record.payment.refunded_minor, AMOUNT);
    let statuses: Vec<&str> = record.history.iter().map(|h| h.to.as_str()).collect();
    assert_eq!(
        statuses,
        ["pending", "paid", "partially_refunded", "refunded"]
    );
    let refused = w.refund(&id, "r3", 1).await.unwrap_err();
    assert_eq!((refused.status, refused.code), (409, "not_refundable"));

    let listed = refunds(&w.deps, id.as_str()).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.refund_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);
    // A payment refunded in full still acknowledges a repeated "paid".
    let repeat = w.deliver(id.as_str().as_bytes()).await;
    assert_eq!(repeat.result, CallbackResult::Duplicate);
}

#[tokio::test]
async fn refunds_of_unpaid_or_unknown_payments_are_refused_without_writes() {
    let w = world();
    let id = w.create("refund-unpaid", 900).await;
    let err = w.refund(&id, "r1", 100).await.unwrap_err();
    assert_eq!((err.status, err.code), (409, "not_refundable"));
    let missing = PaymentId::parse("01J00000000000000000000000").unwrap();
    assert_eq!(w.refund(&missing, "r1", 100).await.unwrap_err().status, 404);
    assert!(refunds(&w.deps, id.as_str()).await.unwrap().is_empty());
    assert_eq!(w.payment(&id).await.payment.refund_reserved_minor, 0);
    for body in [
        r#"{"refund_id":"r1","amount_minor":0,"reason":"x"}"#,
        r#"{"refund_id":"r1","amount_minor":1.5,"reason":"x"}"#,
        r#"{"refund_id":"r 1","amount_minor":1,"reason":"x"}"#,
        r#"{"refund_id":"r1","amount_minor":1,"reason":""}"#,
        r#"{"refund_id":"r1","amount_minor":1}"#,
        r#"{"refund_id":"r1","amount_minor":1,"reason":"x","extra":1}"#,
        r#"[]"#,
    ] {
        let err =
            crate::edge::refund_request(Some("application/json"), body.as_bytes()).unwrap_err();
        assert_eq!(err.status, 400, "{body}");
    }
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_paid_amount() {
    let w = world();
    let id = w.paid("refund-race").await;
    let attempts = (0..10).map(|n| {
        let w = &w;
        let id = id.clone();
        async move { w.refund(&id, &format!("race-{n}"), 300).await }
    });
    let results = futures::future::join_all(attempts).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 4, "4 x 300 <= 1234 < 5 x 300");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.code == "refund_exceeds_payment")
    );
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        (payment.refunded_minor, payment.refund_reserved_minor),
        (1200, 1200)
    );
}

#[tokio::test]
async fn a_refund_without_an_answer_is_queried_before_it_is_asked_again() {
    let w = world();
    let id = w.paid("refund-timeout").await;
    *w.provider.refund_mode.lock().unwrap() = RefundMode::TimeoutAfterRecording;
    let (status, view) = w.refund(&id, "r1", 500).await.unwrap();
    assert_eq!((status, view.status), (201, "pending"));
    assert_eq!(w.payment(&id).await.payment.status, PaymentStatus::Paid);

    w.advance_s(60);
    let summary = w.run().await;
    assert_eq!(summary.refunds_succeeded, 1, "{summary:?}");
    assert_eq!(
        w.provider.refund_calls.lock().unwrap().len(),
        1,
        "queried, never asked twice"
    );
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        (payment.status, payment.refunded_minor),
        (PaymentStatus::PartiallyRefunded, 500)
    );

    // Lost before it reached the provider: the query finds nothing, so it is asked again with
    // the same refund number.
    *w.provider.refund_mode.lock().unwrap() = RefundMode::TimeoutBeforeRecording;
    let (_, view) = w.refund(&id, "r2", 100).await.unwrap();
    assert_eq!(view.status, "pending");
    *w.provider.refund_mode.lock().unwrap() = RefundMode::Succeed;
    w.advance_s(60);
    assert_eq!(w.run().await.refunds_succeeded, 1);
    let calls = w.provider.refund_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1], calls[2], "the same refund number both times");
}

#[tokio::test]
async fn a_processing_refund_settles_when_the_provider_says_so() {
    let w = world();
    let id = w.paid("refund-processing").await;
    *w.provider.refund_mode.lock().unwrap() = RefundMode::Processing;
    let (_, view) = w.refund(&id, "r1", AMOUNT).await.unwrap();
    assert_eq!(view.status, "pending");
    w.advance_s(60);
    assert_eq!(w.run().await.refunds_succeeded, 1);
    assert_eq!(w.status(&id).await, PaymentStatus::Refunded);
}

#[tokio::test]
async fn a_refused_refund_fails_and_frees_its_amount() {
    let w = world();
    let id = w.paid("refund-refused").await;
    *w.provider.refund_mode.lock().unwrap() = RefundMode::Reject;
    let (_, view) = w.refund(&id, "r1", AMOUNT).await.unwrap();
    assert_eq!(view.status, "failed");
    assert!(view.status_reason.unwrap().contains("NOT_ENOUGH"));
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        (payment.status, payment.refund_reserved_minor),
        (PaymentStatus::Paid, 0)
    );
    *w.provider.refund_mode.lock().unwrap() = RefundMode::Succeed;
    let (_, view) = w.refund(&id, "r2", AMOUNT).await.unwrap();
    assert_eq!(view.status, "succeeded");
}

#[tokio::test]
async fn a_payment_paid_after_its_close_is_refunded_exactly_once() {
    let w = world();
    let id = w.create("late", 900).await;
    assert_eq!(close(&w.deps, id.as_str()).await.unwrap().status, "closed");
    // The payer paid anyway (a provider that let it through); the provider reports it twice.
    w.provider.set(&id, NotifiedStatus::Paid);
    let mut results = Vec::new();
    for _ in 0..3 {
        let outcome = w.deliver(id.as_str().as_bytes()).await;
        assert_eq!(outcome.reply.status, 200, "acknowledged");
        results.push(outcome.result);
    }
    assert_eq!(
        results,
        [
            CallbackResult::LatePaymentRefunded,
            CallbackResult::Duplicate,
            CallbackResult::Duplicate
        ]
    );
    let refunds = refunds(&w.deps, id.as_str()).await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].refund_id, format!("late-payment-{id}"));
    assert_eq!(refunds[0].amount_minor, AMOUNT);

    // The poller asks the provider at once, and only once.
    let summary = w.run().await;
    assert_eq!(summary.refunds_succeeded, 1, "{summary:?}");
    w.advance_s(3600);
    w.run().await;
    assert_eq!(w.provider.refund_calls.lock().unwrap().len(), 1);
    let record = w.payment(&id).await;
    assert_eq!(record.payment.status, PaymentStatus::Refunded);
    let statuses: Vec<&str> = record.history.iter().map(|h| h.to.as_str()).collect();
    assert_eq!(statuses, ["pending", "closed", "refunded"]);
    assert!(
        record.history[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("paid after it was closed")
    );
}

// ---- another attempt for the same order ----

impl World {
    async fn create_with(
        &self,
        order_id: &str,
        subject: &str,
    ) -> Result<serde_json::Value, crate::api::ApiError> {
        let body = serde_json::json!({
            "order_id": order_id, "amount_minor": AMOUNT, "currency": "CNY", "provider": "sandbox",
            "subject": subject,
        });
        let request =
            crate::edge::create_request(Some("application/json"), body.to_string().as_bytes())
                .unwrap();
        let response = create_payment(&self.deps, &request, None).await?;
        let mut body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        body["http_status"] = response.status.into();
        Ok(body)
    }
}

fn id_of(body: &serde_json::Value) -> PaymentId {
    PaymentId::parse(body["payment_id"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn an_order_gets_another_attempt_only_once_its_payment_is_over() {
    let w = world();
    let first = w.create_with("retry-order", "tea").await.unwrap();
    assert_eq!(first["attempt"], 1);
    // Still open: another request for the order is a mismatch.
    let busy = w
        .create_with("retry-order", "tea, other provider")
        .await
        .unwrap_err();
    assert_eq!((busy.status, busy.code), (409, "idempotency_mismatch"));

    close(&w.deps, first["payment_id"].as_str().unwrap())
        .await
        .unwrap();
    let second = w
        .create_with("retry-order", "tea, other provider")
        .await
        .unwrap();
    assert_eq!(
        (second["http_status"].as_u64(), second["attempt"].as_u64()),
        (Some(201), Some(2))
    );
    assert_ne!(second["payment_id"], first["payment_id"]);
    // Its replay answers attempt 2; the first request replayed is now a mismatch, since the
    // order's active attempt is open again.
    let replay = w
        .create_with("retry-order", "tea, other provider")
        .await
        .unwrap();
    assert_eq!(replay["payment_id"], second["payment_id"]);
    let old = w.create_with("retry-order", "tea").await.unwrap_err();
    assert_eq!(old.code, "idempotency_mismatch");
    assert_eq!(w.provider.creates.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_attempt_is_over_too() {
    let w = world();
    *w.provider.create_mode.lock().unwrap() = CreateMode::Reject;
    let refused = w.create_with("retry-failed", "tea").await.unwrap();
    assert_eq!(refused["http_status"], 502);
    *w.provider.create_mode.lock().unwrap() = CreateMode::Accept;
    // The same request replays the refusal; a changed one is the next attempt.
    assert_eq!(
        w.create_with("retry-failed", "tea").await.unwrap()["http_status"],
        502
    );
    let second = w.create_with("retry-failed", "tea, fixed").await.unwrap();
    assert_eq!(
        (second["http_status"].as_u64(), second["attempt"].as_u64()),
        (Some(201), Some(2))
    );
    assert_eq!(w.status(&id_of(&second)).await, PaymentStatus::Pending);
}

#[tokio::test]
async fn the_first_attempt_paid_late_is_refunded_and_the_second_stays_paid() {
    let w = world();
    let first = w.create_with("late-attempt", "tea").await.unwrap();
    let id1 = id_of(&first);
    close(&w.deps, id1.as_str()).await.unwrap();
    let second = w.create_with("late-attempt", "tea again").await.unwrap();
    let id2 = id_of(&second);
    w.provider.set(&id2, NotifiedStatus::Paid);
    let paid = w.deliver(id2.as_str().as_bytes()).await;
    assert_eq!(paid.result, CallbackResult::Applied);
    // The first attempt's payer paid after all.
    w.provider.set(&id1, NotifiedStatus::Paid);
    let late = w.deliver(id1.as_str().as_bytes()).await;
    assert_eq!(late.result, CallbackResult::LatePaymentRefunded);
    w.run().await;
    assert_eq!(w.status(&id1).await, PaymentStatus::Refunded);
    assert_eq!(
        w.status(&id2).await,
        PaymentStatus::Paid,
        "the order's payment is intact"
    );
    assert_eq!(w.provider.refund_calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_refund_notification_settles_its_refund_once() {
    let w = world();
    let id = w.paid("refund-notice").await;
    *w.provider.refund_mode.lock().unwrap() = RefundMode::Processing;
    let (_, view) = w.refund(&id, "r1", 300).await.unwrap();
    assert_eq!(view.status, "pending");
    let refund_no = super::refunds::refund_no(&id, &crate::domain::RefundId::parse("r1").unwrap());
    let notify = |body: String| {
        let deps = w.deps.clone();
        async move {
            handle_callback(
                &deps,
                ProviderName::Sandbox,
                &http::HeaderMap::new(),
                body.as_bytes(),
            )
            .await
            .unwrap()
        }
    };
    let processing = notify(format!("refund:{id}:{refund_no}:300:PROCESSING")).await;
    assert_eq!(processing.result, CallbackResult::Ignored);
    let wrong = notify(format!("refund:{id}:{refund_no}:301:SUCCESS")).await;
    assert_eq!(wrong.result, CallbackResult::AmountMismatch);
    assert_eq!(w.payment(&id).await.payment.status, PaymentStatus::Paid);

    let first = notify(format!("refund:{id}:{refund_no}:300:SUCCESS")).await;
    assert_eq!(
        (first.result, first.reply.status),
        (CallbackResult::Applied, 200)
    );
    let again = notify(format!("refund:{id}:{refund_no}:300:SUCCESS")).await;
    assert_eq!(
        (again.result, again.reply.status),
        (CallbackResult::Duplicate, 200)
    );
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        (payment.status, payment.refunded_minor),
        (PaymentStatus::PartiallyRefunded, 300)
    );
    let unknown = notify(format!("refund:{id}:RUNKNOWN:300:SUCCESS")).await;
    assert_eq!(
        (unknown.result, unknown.reply.status),
        (CallbackResult::UnknownPayment, 500)
    );
    // Nothing left for the poller.
    w.advance_s(60);
    assert_eq!(w.run().await.due, 0);
}

#[tokio::test]
async fn a_refused_refund_query_leaves_the_refund_pending() {
    let w = world();
    let id = w.paid("refund-query-refused").await;
    *w.provider.refund_mode.lock().unwrap() = RefundMode::TimeoutAfterRecording;
    let (_, view) = w.refund(&id, "r1", 100).await.unwrap();
    assert_eq!(view.status, "pending");
    w.provider.remote.lock().unwrap().refuse_refund_queries = true;
    w.advance_s(60);
    let summary = w.run().await;
    assert_eq!(
        (summary.waiting, summary.refunds_failed),
        (1, 0),
        "{summary:?}"
    );
    let payment = w.payment(&id).await.payment;
    assert_eq!(
        payment.refund_reserved_minor, 100,
        "the reservation is kept"
    );
    let refund = refunds(&w.deps, id.as_str()).await.unwrap().remove(0);
    assert_eq!(refund.status, "pending");
}

#[tokio::test]
async fn a_failed_payment_reported_paid_is_refunded_once() {
    let w = world();
    *w.provider.create_mode.lock().unwrap() = CreateMode::Reject;
    let refused = w.create_with("failed-then-paid", "tea").await.unwrap();
    assert_eq!(refused["http_status"], 502);
    let id = w.provider.creates.lock().unwrap()[0].clone();
    assert_eq!(w.status(&id).await, PaymentStatus::Failed);
    w.provider.set(&id, NotifiedStatus::Paid);
    let late = w.deliver(id.as_str().as_bytes()).await;
    assert_eq!(late.result, CallbackResult::LatePaymentRefunded);
    w.run().await;
    assert_eq!(w.status(&id).await, PaymentStatus::Refunded);
    assert_eq!(w.provider.refund_calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stuck_refund_is_handed_to_a_human_once_and_still_checked() {
    let w = world();
    let id = w.paid("refund-stuck").await;
    *w.provider.refund_mode.lock().unwrap() = RefundMode::TimeoutAfterRecording;
    w.refund(&id, "r1", 100).await.unwrap();
    w.provider.remote.lock().unwrap().refuse_refund_queries = true;
    for _ in 0..6 {
        let refunds = refunds(&w.deps, id.as_str()).await.unwrap();
        assert_eq!(refunds[0].status, "pending");
        w.advance_s(7200);
        w.run().await;
    }
    let compensations = w.store.compensations();
    assert_eq!(compensations.len(), 1, "{compensations:?}");
    assert_eq!(compensations[0].kind, "refund_unresolved");
    assert_eq!(compensations[0].id, format!("refund-unresolved#{id}#r1"));
}

#[tokio::test]
async fn a_notice_contradicting_a_settled_refund_goes_to_a_human() {
    let w = world();
    let id = w.paid("refund-contradicted").await;
    *w.provider.refund_mode.lock().unwrap() = RefundMode::Reject;
    let (_, view) = w.refund(&id, "r1", 300).await.unwrap();
    assert_eq!(view.status, "failed");
    let refund_no = super::refunds::refund_no(&id, &crate::domain::RefundId::parse("r1").unwrap());
    let body = format!("refund:{id}:{refund_no}:300:SUCCESS");
    let outcome = w.deliver(body.as_bytes()).await;
    assert_eq!(outcome.result, CallbackResult::Duplicate);
    assert_eq!(
        w.payment(&id).await.payment.refunded_minor,
        0,
        "never settled twice"
    );
    let compensations = w.store.compensations();
    assert_eq!(compensations.len(), 1);
    assert_eq!(compensations[0].kind, "refund_contradicted");
}
