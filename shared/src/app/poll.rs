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
use crate::app::apply::{Applied, Start, apply_report};
use crate::app::ask::{Answer, ask, query};
use crate::app::refund_check::{RefundChecked, check_refund};
use crate::domain::decision::{Action, Asker, Context, Decision, Report, Wait, decide};
use crate::domain::polling::remember;
use crate::domain::refund::RefundStatus;
use crate::domain::{Payment, PaymentId, PaymentStatus, Timestamp};
use crate::ports::{CheckRecord, DueCheck, ProviderCreated};

/// Bound on the questions one check asks the provider (query, close, query again).
const ASKS_PER_CHECK: usize = 4;

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
    Refund(RefundStatus),
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
            CheckOutcome::Refund(RefundStatus::Succeeded) => &mut self.refunds_succeeded,
            CheckOutcome::Refund(_) => &mut self.refunds_failed,
        };
        *slot += 1;
    }
}

/// One run: every shard's due page, checked with bounded concurrency.
pub async fn run_poller(deps: &Deps, run: &PollRun) -> PollSummary {
    let now = deps.clock.now();
    let mut summary = PollSummary::default();
    let (due, unread) = super::due_in_every_shard("poller", |shard| {
        deps.store.due_checks(shard, now, run.page_per_shard)
    })
    .await;
    summary.shards_unread = unread;
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
                    let checked = check_refund(&deps, run.lease_s, &payment_id, &refund_id, now);
                    refund_outcome(checked.await)
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

fn refund_outcome(checked: RefundChecked) -> CheckOutcome {
    match checked {
        RefundChecked::NotClaimed => CheckOutcome::NotClaimed,
        RefundChecked::Settled(to) => CheckOutcome::Refund(to),
        RefundChecked::Waiting => CheckOutcome::Waiting,
        RefundChecked::Moved => CheckOutcome::Moved,
        RefundChecked::StoreError => CheckOutcome::StoreError,
    }
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
    let outcome = examine(deps, payment, now, lease_until).await;
    tracing::info!(%payment_id, ?outcome, "checked with the provider");
    outcome
}

/// Query first; then only what the decision table asks on the provider's answers.
async fn examine(
    deps: &Deps,
    payment: Payment,
    now: Timestamp,
    lease_until: Timestamp,
) -> CheckOutcome {
    let ctx = Context {
        asker: Asker::Poller,
        provider: payment.provider,
        now,
        max_unknown_checks: deps.poll.max_unknown_checks(),
    };
    let adapter = deps.providers.get(payment.provider).cloned();
    let mut answer = match &adapter {
        Some(adapter) => Answer::from(query(adapter.as_ref(), &payment).await),
        None => Answer::from(Report::NoAnswer(format!(
            "provider {} is not configured here",
            payment.provider
        ))),
    };
    let mut decision = decide(&payment, &answer.report, &ctx);
    for _ in 0..ASKS_PER_CHECK {
        let (Action::Ask(question), Some(adapter)) = (&decision.action, &adapter) else {
            break;
        };
        answer = ask(adapter.as_ref(), &payment, *question).await;
        decision = decide(&payment, &answer.report, &ctx);
    }
    if matches!(decision.action, Action::Ask(_)) {
        let note = "the provider's answers went round in circles".to_owned();
        answer = Answer::from(Report::NoAnswer(note));
        decision = decide(&payment, &answer.report, &ctx);
    }
    conclude(deps, payment, answer, decision, &ctx, lease_until).await
}

/// Acts on what the table decided on the last answer: the next check, or the decision.
async fn conclude(
    deps: &Deps,
    payment: Payment,
    answer: Answer,
    decision: Decision,
    ctx: &Context,
    lease_until: Timestamp,
) -> CheckOutcome {
    if let Action::Wait(wait) = decision.action {
        return schedule_next(deps, &payment, wait, answer.created, ctx.now, lease_until).await;
    }
    let start = Start::Decided(Box::new(payment), Box::new(decision));
    match apply_report(deps, start, &answer.report, ctx).await {
        Applied::Moved(PaymentStatus::Paid) => CheckOutcome::Paid,
        Applied::Moved(PaymentStatus::Closed) => CheckOutcome::Closed,
        Applied::Moved(PaymentStatus::Failed) => CheckOutcome::Failed,
        Applied::Moved(PaymentStatus::Exception) => CheckOutcome::Exception,
        Applied::StoreFailed => CheckOutcome::StoreError,
        _ => CheckOutcome::Moved,
    }
}

/// Still pending: the next check along the schedule.
async fn schedule_next(
    deps: &Deps,
    payment: &Payment,
    wait: Wait,
    created: Option<ProviderCreated>,
    now: Timestamp,
    lease_until: Timestamp,
) -> CheckOutcome {
    let checks_done = payment.checks_done.saturating_add(1);
    let unknown_checks = if wait.unknown {
        payment.unknown_checks.saturating_add(1)
    } else {
        0
    };
    let check = CheckRecord {
        checks_done,
        unknown_checks,
        next_check_at: deps
            .poll
            .next_check_at(checks_done, now, payment.expires_at),
        recent_checks: remember(&payment.recent_checks, now, &wait.note),
        created: created.filter(|_| wait.created),
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
