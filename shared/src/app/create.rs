//! `POST /payments`: idempotent on the order id.
//!
//! 1. One transaction claims the idempotency key and writes the payment, the order's uniqueness
//!    item and the first history entry.
//! 2. The provider's create is called (the payment id is the provider-side order number, so a
//!    repeated create is idempotent at the provider too).
//! 3. One transaction stores the provider's answer and completes the idempotency record.
//!
//! Two DynamoDB requests on the happy path; a replay costs one.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::api::ApiError;
use crate::app::Deps;
use crate::app::refusal::{Refusal, RefusalKind};
use crate::crypto::sha256_hex;
use crate::domain::decision::{self, Action, Asker, Context, CreateAnswer, Report};
use crate::domain::idempotency::{IdempotencyRecord, NextAction, StoredResponse, decide};
use crate::domain::payment::INITIAL_VERSION;
use crate::domain::{
    HistoryEntry, Money, OrderId, Payment, PaymentId, PaymentStatus, ProviderName, Timestamp,
};
use crate::ports::{
    ClaimOutcome, CreateCompletion, InsertOutcome, NewPayment, PaymentProvider, ProviderCreate,
    ProviderError, StoreError,
};

/// How long a completed idempotency record answers replays.
pub const RECORD_TTL_S: i64 = 7 * 24 * 3600;
/// In-progress expiry when the invocation has no usable deadline.
pub const DEFAULT_IN_PROGRESS_S: i64 = 30;
pub const DEFAULT_EXPIRES_IN_S: i64 = 900;
pub const EXPIRES_IN_S_RANGE: std::ops::RangeInclusive<i64> = 60..=86_400;
pub const SUBJECT_MAX_CHARS: usize = 128;
/// Attempts at storing the provider's answer when the transaction loses a write conflict (a
/// callback for the same payment landing at the same moment).
const COMPLETE_ATTEMPTS: u32 = 4;

/// A create request that has passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePaymentRequest {
    pub order_id: OrderId,
    pub money: Money,
    pub provider: ProviderName,
    pub subject: String,
    pub expires_in_s: i64,
}

impl CreatePaymentRequest {
    /// SHA-256 over the normalized request: the same request in any key order hashes the same.
    pub fn hash(&self) -> String {
        sha256_hex(
            format!(
                "{}\n{}\n{}\n{}\n{}\n{}",
                self.order_id,
                self.money.amount.get(),
                self.money.currency,
                self.provider,
                self.subject,
                self.expires_in_s
            )
            .as_bytes(),
        )
    }

    pub fn idempotency_key(&self) -> String {
        format!("create-payment#{}", self.order_id)
    }

    /// Whether an existing payment was created by an identical request.
    fn matches(&self, p: &Payment) -> bool {
        p.order_id == self.order_id
            && p.amount_minor == self.money.amount
            && p.currency == self.money.currency
            && p.provider == self.provider
            && p.subject == self.subject
            // The payment keeps its expiry as an instant; the request's lifetime is its distance
            // from creation.
            && p.expires_at == p.created_at.plus_s(self.expires_in_s)
    }
}

/// The body of a create response.
#[derive(Debug, Serialize)]
struct CreatedView<'a> {
    payment_id: &'a str,
    order_id: &'a str,
    status: &'static str,
    amount_minor: i64,
    currency: &'static str,
    provider: &'static str,
    attempt: u32,
    expires_at: String,
    pay_url: Option<&'a str>,
}

fn created_response(status: u16, p: &Payment) -> StoredResponse {
    let view = CreatedView {
        payment_id: p.payment_id.as_str(),
        order_id: p.order_id.as_str(),
        status: p.status.as_str(),
        amount_minor: p.amount_minor.get(),
        currency: p.currency.code(),
        provider: p.provider.as_str(),
        attempt: p.attempt,
        expires_at: p.expires_at.to_rfc3339(),
        pay_url: p.pay_url.as_deref(),
    };
    StoredResponse {
        status,
        body: crate::api::to_body(&view),
    }
}

/// The response a create would have given for a payment whose provider answer is stored.
fn response_for_stored(p: &Payment) -> StoredResponse {
    match p.status {
        PaymentStatus::Failed => {
            let reason = p.status_reason.as_deref().unwrap_or("refused");
            let error = ApiError::new(
                502,
                "provider_rejected",
                format!("the provider refused the payment: {reason}"),
            );
            StoredResponse {
                status: 502,
                body: error.body(),
            }
        }
        PaymentStatus::Pending if p.pay_url.is_none() => created_response(202, p),
        _ => created_response(201, p),
    }
}

fn store_unavailable(err: &StoreError) -> Refusal {
    match err {
        StoreError::Conflict => in_progress(1),
        StoreError::Unexpected(e) | StoreError::Corrupt(e) => {
            tracing::error!(error = format!("{e:#}"), "payment store failed");
            Refusal::unavailable("could not store the payment; retry with the same request")
        }
    }
}

fn in_progress(retry_after_s: u64) -> Refusal {
    Refusal {
        retry_after_s: Some(retry_after_s),
        ..Refusal::conflict(
            "in_progress",
            "a request for this order is in progress; retry later",
        )
    }
}

fn mismatch() -> Refusal {
    Refusal::conflict(
        "idempotency_mismatch",
        "this order was already submitted with different details",
    )
}

/// Answers a key held by someone else, or a dead record we may take over.
fn settle_blocked(next: NextAction) -> Result<StoredResponse, Refusal> {
    match next {
        NextAction::Replay(response) => Ok(response),
        NextAction::InProgress { retry_after_s } => Err(in_progress(retry_after_s)),
        NextAction::Mismatch => Err(mismatch()),
        // A record that died between two of our reads: the caller retries and takes it over then.
        NextAction::TakeOver(_) => Err(in_progress(1)),
    }
}

/// Runs the create. `deadline` is the invocation's deadline, if the runtime gave a usable one.
pub async fn create_payment(
    deps: &Deps,
    request: &CreatePaymentRequest,
    deadline: Option<Timestamp>,
) -> Result<StoredResponse, Refusal> {
    let provider = deps
        .providers
        .get(request.provider)
        .cloned()
        .ok_or_else(|| {
            Refusal::new(
                RefusalKind::Unsupported,
                "provider_not_configured",
                format!("{} is not configured here", request.provider),
            )
            .on_field("provider")
        })?;
    let now = deps.clock.now();
    let in_progress_until = deadline
        .filter(|d| *d > now)
        .unwrap_or(now.plus_s(DEFAULT_IN_PROGRESS_S));
    let attempt = Attempt {
        deps,
        provider: &provider,
        request,
        hash: request.hash(),
        in_progress_until,
    };
    match attempt.insert(None).await? {
        Inserted::Done(response) => Ok(response),
        // The key is held for another request: if that request's payment is over, this one is
        // the order's next attempt.
        Inserted::KeyTaken(existing) => match decide(existing.clone(), &attempt.hash, now) {
            NextAction::Mismatch => {
                let active = attempt.read(&payment_id_of(&existing)?).await?;
                if is_over(&active) {
                    attempt.next_attempt(active).await
                } else {
                    Err(mismatch())
                }
            }
            next => settle_blocked(next),
        },
        Inserted::OrderTaken(active) if is_over(&active) => attempt.next_attempt(active).await,
        Inserted::OrderTaken(active) => {
            take_over(deps, &provider, request, active, in_progress_until).await
        }
    }
}

/// An order's active payment is over when it can never be paid: then the order may try again.
fn is_over(payment: &Payment) -> bool {
    payment.status.is_over()
}

fn payment_id_of(record: &IdempotencyRecord) -> Result<PaymentId, Refusal> {
    PaymentId::parse(&record.resource_id).map_err(|e| {
        store_unavailable(&StoreError::Unexpected(anyhow::anyhow!(
            "idempotency record names payment {:?}: {e}",
            record.resource_id
        )))
    })
}

/// The insert's outcome, with the payment an order item points at already read.
enum Inserted {
    Done(StoredResponse),
    KeyTaken(IdempotencyRecord),
    OrderTaken(Payment),
}

/// One create request on its way to a payment.
struct Attempt<'a> {
    deps: &'a Deps,
    provider: &'a Arc<dyn PaymentProvider>,
    request: &'a CreatePaymentRequest,
    hash: String,
    in_progress_until: Timestamp,
}

impl Attempt<'_> {
    async fn read(&self, id: &PaymentId) -> Result<Payment, Refusal> {
        let record = self
            .deps
            .store
            .payment(id)
            .await
            .map_err(|e| store_unavailable(&e))?;
        record.map(|r| r.payment).ok_or_else(|| {
            store_unavailable(&StoreError::Unexpected(anyhow::anyhow!(
                "order points at missing payment {id}"
            )))
        })
    }

    /// Writes a new payment (replacing `previous` as the order's active one, if given) and
    /// calls the provider.
    async fn insert(&self, previous: Option<&Payment>) -> Result<Inserted, Refusal> {
        let now = self.deps.clock.now();
        let mut payment = new_payment(self.deps, self.request, now);
        if let Some(previous) = previous {
            payment.attempt = previous.attempt.saturating_add(1);
        }
        let claim = IdempotencyRecord::claim(
            self.request.idempotency_key(),
            self.hash.clone(),
            self.in_progress_until,
            now.plus_s(RECORD_TTL_S),
            payment.payment_id.to_string(),
        );
        let new = NewPayment {
            payment,
            history: HistoryEntry::created(now),
            claim,
            replaces: previous.map(|p| p.payment_id.clone()),
        };
        match self
            .deps
            .store
            .insert_payment(&new, now)
            .await
            .map_err(|e| store_unavailable(&e))?
        {
            InsertOutcome::Inserted => {
                call_provider(self.deps, self.provider, new.payment, &new.claim.key)
                    .await
                    .map(Inserted::Done)
            }
            InsertOutcome::KeyTaken(existing) => Ok(Inserted::KeyTaken(existing)),
            InsertOutcome::OrderTaken { payment_id } => {
                Ok(Inserted::OrderTaken(self.read(&payment_id).await?))
            }
        }
    }

    /// The order's active payment is over: this request becomes its next attempt. A racing
    /// request for the same order that got there first is answered as its key says.
    async fn next_attempt(&self, active: Payment) -> Result<StoredResponse, Refusal> {
        let now = self.deps.clock.now();
        match self.insert(Some(&active)).await? {
            Inserted::Done(response) => Ok(response),
            Inserted::KeyTaken(existing) => settle_blocked(decide(existing, &self.hash, now)),
            // Another attempt won the order item: the client retries and meets it.
            Inserted::OrderTaken(_) => Err(in_progress(1)),
        }
    }
}

fn new_payment(deps: &Deps, request: &CreatePaymentRequest, now: Timestamp) -> Payment {
    let expires_at = now.plus_s(request.expires_in_s);
    Payment {
        payment_id: deps.ids.payment_id(now),
        order_id: request.order_id.clone(),
        amount_minor: request.money.amount,
        currency: request.money.currency,
        provider: request.provider,
        subject: request.subject.clone(),
        attempt: 1,
        status: PaymentStatus::Pending,
        version: INITIAL_VERSION,
        expires_at,
        created_at: now,
        updated_at: now,
        pay_url: None,
        provider_trade_no: None,
        // Every pending payment is checked with its provider from one schedule step on.
        next_check_at: Some(deps.poll.next_check_at(0, now, expires_at)),
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        create_unknown: false,
        refund_reserved_minor: 0,
        refunded_minor: 0,
        status_reason: None,
        effects_check_at: None,
        effects_republished: 0,
    }
}

/// The order already has a payment and no live record answers for it: an earlier invocation
/// died mid-way, or its record expired. Claim the key for that same payment and finish its work.
async fn take_over(
    deps: &Deps,
    provider: &Arc<dyn PaymentProvider>,
    request: &CreatePaymentRequest,
    existing: Payment,
    in_progress_until: Timestamp,
) -> Result<StoredResponse, Refusal> {
    if !request.matches(&existing) {
        return Err(mismatch());
    }
    let now = deps.clock.now();
    let key = request.idempotency_key();
    let claim = IdempotencyRecord::claim(
        key.clone(),
        request.hash(),
        in_progress_until,
        now.plus_s(RECORD_TTL_S),
        existing.payment_id.to_string(),
    );
    match deps
        .store
        .claim(&claim, now)
        .await
        .map_err(|e| store_unavailable(&e))?
    {
        ClaimOutcome::Blocked(record) => {
            return settle_blocked(decide(record, &request.hash(), now));
        }
        ClaimOutcome::Claimed => {}
    }
    if existing.awaits_create_answer() {
        return call_provider(deps, provider, existing, &key).await;
    }
    // The provider's answer is already stored: answer as the first request would have.
    let response = response_for_stored(&existing);
    deps.store
        .complete(&key, existing.payment_id.as_str(), &response)
        .await
        .map_err(|e| store_unavailable(&e))?;
    Ok(response)
}

async fn call_provider(
    deps: &Deps,
    provider: &Arc<dyn PaymentProvider>,
    mut payment: Payment,
    key: &str,
) -> Result<StoredResponse, Refusal> {
    let result = provider
        .create(&ProviderCreate::for_payment(&payment))
        .await;
    let now = deps.clock.now();
    let (completion, response) = match result {
        Ok(created) => {
            payment.pay_url = Some(created.pay_url.clone());
            let response = created_response(201, &payment);
            (
                CreateCompletion::Accepted {
                    pay_url: created.pay_url,
                    provider_trade_no: created.provider_trade_no,
                },
                response,
            )
        }
        Err(ProviderError::Rejected { code, message }) => {
            tracing::warn!(payment_id = %payment.payment_id, code, "provider rejected the create");
            let ctx = Context {
                asker: Asker::Create,
                provider: payment.provider,
                now,
                max_unknown_checks: deps.poll.max_unknown_checks(),
            };
            let report = Report::Created(CreateAnswer::Refused(format!("{code}: {message}")));
            let Action::Move(transition) = decision::decide(&payment, &report, &ctx).action else {
                return Err(store_unavailable(&StoreError::Unexpected(anyhow::anyhow!(
                    "a refused create of payment {} moved nothing",
                    payment.payment_id
                ))));
            };
            transition.apply_to(&mut payment);
            (
                CreateCompletion::Rejected(transition),
                response_for_stored(&payment),
            )
        }
        Err(ProviderError::Unknown(why)) => {
            // Never re-create blindly: the payment stays pending and a check is due.
            tracing::warn!(payment_id = %payment.payment_id, why, "provider create outcome unknown");
            (CreateCompletion::Unknown, created_response(202, &payment))
        }
    };
    complete(deps, &payment, &completion, key, &response).await?;
    Ok(response)
}

async fn complete(
    deps: &Deps,
    payment: &Payment,
    completion: &CreateCompletion,
    key: &str,
    response: &StoredResponse,
) -> Result<(), Refusal> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match deps
            .store
            .complete_create(&payment.payment_id, completion, key, response)
            .await
        {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict) if attempt < COMPLETE_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(e) => return Err(store_unavailable(&e)),
        }
    }
}
