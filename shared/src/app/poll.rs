//! The status poller, and the close that shares its rule: never act on a payment whose state at
//! the provider is unknown — query first.
//!
//! A run reads each shard of the due index (a bounded page each), claims every due payment with
//! one conditional write that moves its next check out by a lease (so an overlapping run skips
//! it and a crashed run's claim lapses), then queries the provider:
//!
//! - paid or closed there: the same guarded transition a callback makes (one transition however
//!   the two race);
//! - expired and not paid: close at the provider, then `closed`; a close answered "already paid"
//!   is queried again and recorded `paid`;
//! - the create's outcome was unknown and the provider has no trade: create it again with the
//!   same payment id (the provider's order number, so never a second charge);
//! - no answer (timeout, 5xx): wait along the backoff schedule; when the schedule's unknown
//!   checks run out, `exception` plus a compensation record and an alarm, in one transaction.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::app::Deps;
use crate::app::callback::{CallbackResult, apply_notification};
use crate::app::refunds::check_refund;
use crate::domain::payment::{ExpiryGuard, Transition};
use crate::domain::polling::{CLOSE_GRACE_S, remember};
use crate::domain::{Payment, PaymentId, PaymentStatus, Timestamp};
use crate::ports::{
    CheckRecord, CloseOutcome, Compensation, DUE_SHARDS, DueCheck, Notification, NotifiedStatus,
    PaymentProvider, ProviderCreate, ProviderCreated, ProviderError, ProviderTrade,
    TransitionOutcome,
};
use crate::telemetry::alarm;

/// One poller run's bounds.
#[derive(Debug, Clone)]
pub struct PollRun {
    /// Due payments read per shard per run.
    pub page_per_shard: usize,
    /// How long a claim holds a payment: longer than a query plus a close plus a query.
    pub lease_s: i64,
    /// Payments checked at once.
    pub concurrency: usize,
}

impl Default for PollRun {
    fn default() -> Self {
        Self {
            page_per_shard: 25,
            lease_s: 120,
            concurrency: 8,
        }
    }
}

/// What one check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// Someone else had claimed it, or it was no longer pending or due.
    NotClaimed,
    Paid,
    Closed,
    Failed,
    /// Reported paid with another amount, or unreachable until the schedule ran out.
    Exception,
    /// Still pending; the next check is scheduled.
    Waiting,
    /// Its state moved under us (a callback landed); nothing else to do.
    Moved,
    /// The store failed; the claim lapses and the check comes round again.
    StoreError,
    /// A pending refund was settled so.
    Refund(crate::domain::refund::RefundStatus),
}

/// A run's counts, logged by the function.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct PollSummary {
    pub due: usize,
    pub not_claimed: usize,
    pub paid: usize,
    pub closed: usize,
    pub failed: usize,
    pub exception: usize,
    pub waiting: usize,
    pub moved: usize,
    pub errors: usize,
    pub refunds_succeeded: usize,
    pub refunds_failed: usize,
    /// Shards of the due index this run could not read.
    pub shards_unread: usize,
}

impl PollSummary {
    fn count(&mut self, outcome: CheckOutcome) {
        let slot = match outcome {
            CheckOutcome::NotClaimed => &mut self.not_claimed,
            CheckOutcome::Paid => &mut self.paid,
            CheckOutcome::Closed => &mut self.closed,
            CheckOutcome::Failed => &mut self.failed,
            CheckOutcome::Exception => &mut self.exception,
            CheckOutcome::Waiting => &mut self.waiting,
            CheckOutcome::Moved => &mut self.moved,
            CheckOutcome::StoreError => &mut self.errors,
            CheckOutcome::Refund(crate::domain::refund::RefundStatus::Succeeded) => {
                &mut self.refunds_succeeded
            }
            CheckOutcome::Refund(_) => &mut self.refunds_failed,
        };
        *slot += 1;
    }
}

/// One run: every shard's due page, checked with bounded concurrency.
pub async fn run_poller(deps: &Deps, run: &PollRun) -> PollSummary {
    let now = deps.clock.now();
    let mut summary = PollSummary::default();
    let mut due = Vec::new();
    for shard in 0..DUE_SHARDS {
        match deps.store.due_checks(shard, now, run.page_per_shard).await {
            Ok(ids) => due.extend(ids),
            Err(e) => {
                tracing::error!(shard, error = format!("{e:#}"), "reading due checks failed");
                summary.shards_unread += 1;
            }
        }
    }
    summary.due = due.len();
    let permits = Arc::new(Semaphore::new(run.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for check in due {
        let (deps, run, permits) = (deps.clone(), run.clone(), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            match check {
                DueCheck::Payment(payment_id) => check_payment(&deps, &run, &payment_id, now).await,
                DueCheck::Refund(payment_id, refund_id) => {
                    check_refund(&deps, &run, &payment_id, &refund_id, now).await
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(outcome) => summary.count(outcome),
            Err(e) => {
                tracing::error!(error = %e, "a check panicked");
                summary.errors += 1;
            }
        }
    }
    summary
}

/// Claims one due payment and checks it with its provider.
pub async fn check_payment(
    deps: &Deps,
    run: &PollRun,
    payment_id: &PaymentId,
    now: Timestamp,
) -> CheckOutcome {
    // Due as of the run's start; the lease counts from the claim itself.
    let lease_until = deps.clock.now().plus_s(run.lease_s);
    let payment = match deps.store.claim_check(payment_id, now, lease_until).await {
        Ok(Some(payment)) => payment,
        Ok(None) => return CheckOutcome::NotClaimed,
        Err(e) => {
            tracing::error!(%payment_id, error = format!("{e:#}"), "claiming a check failed");
            return CheckOutcome::StoreError;
        }
    };
    let verdict = match deps.providers.get(payment.provider) {
        Some(adapter) => examine(adapter.as_ref(), &payment, now).await,
        None => Verdict::Wait(Wait::unknown(format!(
            "provider {} is not configured here",
            payment.provider
        ))),
    };
    let outcome = settle(deps, &payment, verdict, now, lease_until).await;
    tracing::info!(%payment_id, provider = %payment.provider, ?outcome, "checked with the provider");
    outcome
}

/// What the provider's answers mean for the payment.
pub(crate) enum Verdict {
    /// The provider reports a final state: apply it as a callback would.
    Report(ProviderTrade),
    /// The provider says it can no longer be paid.
    Close(String),
    /// The provider definitely refused the create we repeated.
    Fail(String),
    Wait(Wait),
}

pub(crate) struct Wait {
    pub(crate) answer: String,
    /// No usable answer: counts towards the unknown-checks limit.
    pub(crate) unknown: bool,
    created: Option<ProviderCreated>,
    /// Whether our create's outcome stays unknown.
    create_unknown: Option<bool>,
}

impl Wait {
    fn answered(answer: impl Into<String>) -> Self {
        Self {
            answer: answer.into(),
            unknown: false,
            created: None,
            create_unknown: None,
        }
    }

    fn unknown(answer: impl Into<String>) -> Self {
        Self {
            unknown: true,
            ..Self::answered(answer)
        }
    }
}

/// Query first; then, only on what the provider said, close or create again.
async fn examine(adapter: &dyn PaymentProvider, payment: &Payment, now: Timestamp) -> Verdict {
    let expired = payment.expires_at <= now;
    match adapter.query(&payment.payment_id).await {
        Ok(Some(trade)) => match trade.status {
            NotifiedStatus::Paid | NotifiedStatus::Closed => Verdict::Report(trade),
            NotifiedStatus::Pending if expired => close_at_provider(adapter, payment, now).await,
            // The trade exists but our create's answer (the code for the payer) was lost: ask
            // again with the same id, which is the same trade at the provider.
            NotifiedStatus::Pending if payment.create_unknown && payment.pay_url.is_none() => {
                recreate(adapter, payment, true).await
            }
            NotifiedStatus::Pending => Verdict::Wait(Wait::answered("waiting for the payer")),
        },
        Ok(None) if expired => close_at_provider(adapter, payment, now).await,
        // Our create never got an answer and the provider has no trade: create it again, with
        // the same payment id as the provider's order number.
        Ok(None) if payment.create_unknown || payment.pay_url.is_none() => {
            recreate(adapter, payment, false).await
        }
        // Alipay has no trade until the payer scans; that is not a failure.
        Ok(None) => Verdict::Wait(Wait::answered("no trade at the provider yet")),
        Err(e) => Verdict::Wait(Wait::unknown(format!("query: {e}"))),
    }
}

/// Creates the trade again with the same payment id (the provider's order number, so the same
/// trade there). `trade_exists`: the query showed it, and only its code is missing.
async fn recreate(adapter: &dyn PaymentProvider, payment: &Payment, trade_exists: bool) -> Verdict {
    let done = if trade_exists {
        "the trade exists; asked again with the same id for its code"
    } else {
        "no trade at the provider; created again with the same id"
    };
    match adapter.create(&ProviderCreate::for_payment(payment)).await {
        Ok(created) => Verdict::Wait(Wait {
            created: Some(created),
            create_unknown: Some(false),
            ..Wait::answered(done)
        }),
        // A provider that refuses to repeat a create it has (UnionPay's duplicate) has still
        // made the trade: never `failed`, and not asked again.
        Err(ProviderError::Rejected { code, message }) if trade_exists => Verdict::Wait(Wait {
            create_unknown: Some(false),
            ..Wait::answered(format!(
                "the trade exists, but the provider would not repeat its create ({code}: {message})"
            ))
        }),
        Err(ProviderError::Rejected { code, message }) => {
            Verdict::Fail(format!("{code}: {message}"))
        }
        Err(ProviderError::Unknown(why)) => Verdict::Wait(Wait {
            create_unknown: Some(true),
            ..Wait::unknown(format!("create again: {why}"))
        }),
    }
}

/// Closes an unpaid payment at its provider; a close answered "already paid" is queried again.
pub(crate) async fn close_at_provider(
    adapter: &dyn PaymentProvider,
    payment: &Payment,
    now: Timestamp,
) -> Verdict {
    // Without a close the provider confirms, only the lapse of the expiry (plus a grace for
    // clocks and payments in flight) ends the payer's chance to pay.
    let lapsed = payment.expires_at.plus_s(CLOSE_GRACE_S) <= now;
    match adapter.close(&payment.payment_id).await {
        Ok(CloseOutcome::Closed) => Verdict::Close("closed at the provider".into()),
        Ok(CloseOutcome::NoTrade) if lapsed => {
            Verdict::Close("the provider has no trade, and its expiry has passed".into())
        }
        Ok(CloseOutcome::LapsesAtExpiry) if lapsed => {
            Verdict::Close("lapsed at its expiry (the provider closes unpaid orders itself)".into())
        }
        Ok(CloseOutcome::NoTrade | CloseOutcome::LapsesAtExpiry) => Verdict::Wait(Wait::answered(
            "the provider cannot close it; it lapses at its expiry",
        )),
        Ok(CloseOutcome::AlreadyPaid) => match adapter.query(&payment.payment_id).await {
            Ok(Some(trade)) if trade.status == NotifiedStatus::Paid => Verdict::Report(trade),
            other => Verdict::Wait(Wait::unknown(format!(
                "close answered already paid, the query then answered {other:?}"
            ))),
        },
        Err(e) => Verdict::Wait(Wait::unknown(format!("close: {e}"))),
    }
}

/// Applies a verdict: a transition, or the next check.
async fn settle(
    deps: &Deps,
    payment: &Payment,
    verdict: Verdict,
    now: Timestamp,
    lease_until: Timestamp,
) -> CheckOutcome {
    match verdict {
        Verdict::Report(trade) => report(deps, payment, &trade, "poll").await,
        Verdict::Close(reason) => {
            // Only an expired payment is closed by the poller; the guard re-checks it.
            let guard = Some(ExpiryGuard::ExpiredBy(now));
            transition(
                deps,
                payment,
                PaymentStatus::Closed,
                guard,
                "poll",
                reason,
                now,
            )
            .await
        }
        Verdict::Fail(reason) => {
            transition(
                deps,
                payment,
                PaymentStatus::Failed,
                None,
                "poll",
                reason,
                now,
            )
            .await
        }
        Verdict::Wait(wait) => schedule_next(deps, payment, wait, now, lease_until).await,
    }
}

/// Records what the provider reported through the callback's own guarded transition.
pub(crate) async fn report(
    deps: &Deps,
    payment: &Payment,
    trade: &ProviderTrade,
    source: &'static str,
) -> CheckOutcome {
    let notification = Notification {
        notify_id: format!("{source}-{}", payment.checks_done + 1),
        payment_id: payment.payment_id.clone(),
        provider_trade_no: trade.provider_trade_no.clone(),
        status: trade.status,
        amount_minor: trade.amount_minor,
        currency: trade.currency,
    };
    match apply_notification(deps, payment.provider, &notification, source).await {
        CallbackResult::Applied if trade.status == NotifiedStatus::Closed => CheckOutcome::Closed,
        CallbackResult::Applied => CheckOutcome::Paid,
        CallbackResult::AmountMismatch => CheckOutcome::Exception,
        CallbackResult::RetryLater => CheckOutcome::StoreError,
        _ => CheckOutcome::Moved,
    }
}

pub(crate) async fn transition(
    deps: &Deps,
    payment: &Payment,
    to: PaymentStatus,
    expiry_guard: Option<ExpiryGuard>,
    source: &'static str,
    reason: String,
    now: Timestamp,
) -> CheckOutcome {
    let transition = Transition {
        payment_id: payment.payment_id.clone(),
        from: PaymentStatus::Pending,
        to,
        expected_version: payment.version,
        amount_guard: None,
        expiry_guard,
        provider_guard: Some(payment.provider),
        at: now,
        source,
        reason: Some(reason),
        provider_trade_no: None,
    };
    match deps.store.apply_transition(&transition).await {
        Ok(TransitionOutcome::Applied) => match to {
            PaymentStatus::Closed => CheckOutcome::Closed,
            PaymentStatus::Failed => CheckOutcome::Failed,
            PaymentStatus::Paid => CheckOutcome::Paid,
            _ => CheckOutcome::Exception,
        },
        Ok(_) => CheckOutcome::Moved,
        Err(e) => {
            tracing::error!(payment_id = %payment.payment_id, error = format!("{e:#}"), "transition failed");
            CheckOutcome::StoreError
        }
    }
}

/// Still pending: the next check along the schedule, or `exception` once the unknown checks
/// run out.
async fn schedule_next(
    deps: &Deps,
    payment: &Payment,
    wait: Wait,
    now: Timestamp,
    lease_until: Timestamp,
) -> CheckOutcome {
    let checks_done = payment.checks_done.saturating_add(1);
    let unknown_checks = if wait.unknown {
        payment.unknown_checks.saturating_add(1)
    } else {
        0
    };
    let recent_checks = remember(&payment.recent_checks, now, &wait.answer);
    if unknown_checks >= deps.poll.max_unknown_checks() {
        return escalate(deps, payment, unknown_checks, recent_checks, now).await;
    }
    let check = CheckRecord {
        checks_done,
        unknown_checks,
        next_check_at: deps
            .poll
            .next_check_at(checks_done, now, payment.expires_at),
        recent_checks,
        created: wait.created,
        create_unknown: wait.create_unknown,
    };
    match deps
        .store
        .record_check(&payment.payment_id, lease_until, &check)
        .await
    {
        Ok(true) => CheckOutcome::Waiting,
        Ok(false) => CheckOutcome::Moved,
        Err(e) => {
            tracing::error!(payment_id = %payment.payment_id, error = format!("{e:#}"), "recording a check failed");
            CheckOutcome::StoreError
        }
    }
}

/// The provider stayed unreachable through the whole schedule: `exception`, a compensation
/// record with the last answers, and an alarm. Never `closed`: only the provider can say that.
async fn escalate(
    deps: &Deps,
    payment: &Payment,
    unknown_checks: u32,
    evidence: Vec<String>,
    now: Timestamp,
) -> CheckOutcome {
    let reason = format!(
        "the provider's state stayed unknown through {unknown_checks} checks; query it and settle by hand"
    );
    let transition = Transition {
        payment_id: payment.payment_id.clone(),
        from: PaymentStatus::Pending,
        to: PaymentStatus::Exception,
        expected_version: payment.version,
        amount_guard: None,
        expiry_guard: None,
        provider_guard: Some(payment.provider),
        at: now,
        source: "poll",
        reason: Some(reason.clone()),
        provider_trade_no: None,
    };
    let compensation = Compensation {
        id: format!("poll-exhausted#{}", payment.payment_id),
        kind: "poll_exhausted",
        payment_id: payment.payment_id.clone(),
        reason,
        evidence,
        created_at: now,
    };
    match deps.store.escalate(&transition, &compensation).await {
        Ok(TransitionOutcome::Applied) => {
            alarm(
                "poll_exhausted",
                &format!(
                    "payment {} ({}) went to exception: provider unreachable",
                    payment.payment_id, payment.provider
                ),
            );
            CheckOutcome::Exception
        }
        Ok(_) => CheckOutcome::Moved,
        Err(e) => {
            tracing::error!(payment_id = %payment.payment_id, error = format!("{e:#}"), "escalating failed");
            CheckOutcome::StoreError
        }
    }
}
