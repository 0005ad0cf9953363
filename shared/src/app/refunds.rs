//! Refunds: `POST /payments/{payment_id}/refunds`, `GET /payments/{payment_id}/refunds`, the
//! poller's checks of pending refunds, and the refund of a payment that landed after its close.
//!
//! A refund is written `pending` in the same transaction that reserves its amount on the
//! payment, under a condition that keeps the reserved sum within the amount however many
//! refunds race. Then the provider is asked (with a refund number derived from payment and
//! refund id, so asking again is the same refund there). Its answer settles the refund in one
//! transaction with the payment: succeeded adds to the refunded sum (and moves the payment to
//! `partially_refunded` or `refunded`), failed releases the reservation. No answer leaves it
//! `pending` for the poller, which queries before it asks again.

use serde::Serialize;

use crate::api::{ApiError, JsonBody, invalid_field};
use crate::app::Deps;
use crate::app::poll::{CheckOutcome, PollRun};
use crate::app::query::parse_payment_id;
use crate::crypto::sha256_hex;
use crate::domain::payment::Transition;
use crate::domain::polling::remember;
use crate::domain::refund::{Refund, RefundKind, RefundStatus, status_after_refunds};
use crate::domain::{AmountMinor, Payment, PaymentId, PaymentStatus, RefundId, Timestamp};
use crate::ports::{
    Compensation, ProviderError, ProviderRefund, RefundCheck, RefundInsert, RefundSettlement,
    RefundState,
};
use crate::telemetry::alarm;

pub const REASON_MAX_CHARS: usize = 256;
/// Attempts at settling a refund when the payment moved under us (another refund settled).
const SETTLE_ATTEMPTS: u32 = 4;

const FIELDS: [&str; 3] = ["refund_id", "amount_minor", "reason"];

/// A refund request that has passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub refund_id: RefundId,
    pub amount: AmountMinor,
    pub reason: String,
}

impl RefundRequest {
    /// Parses and checks the raw request. Nothing is written before this succeeds.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        let body = JsonBody::parse(content_type, body, &FIELDS)?;
        let refund_id = RefundId::parse(body.required_str("refund_id")?)
            .map_err(|e| invalid_field("refund_id", format!("refund_id {e}")))?;
        let amount = body.amount_minor("amount_minor")?;
        let reason = body.printable("reason", REASON_MAX_CHARS)?;
        Ok(Self {
            refund_id,
            amount,
            reason,
        })
    }
}

/// A refund as the API shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RefundView {
    pub refund_id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: &'static str,
    pub reason: String,
    pub kind: RefundKind,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

impl From<&Refund> for RefundView {
    fn from(r: &Refund) -> Self {
        Self {
            refund_id: r.refund_id.to_string(),
            payment_id: r.payment_id.to_string(),
            amount_minor: r.amount_minor.get(),
            currency: r.currency.code(),
            reason: r.reason.clone(),
            kind: r.kind,
            status: r.status.as_str(),
            created_at: r.created_at.to_rfc3339(),
            updated_at: r.updated_at.to_rfc3339(),
            status_reason: r.status_reason.clone(),
        }
    }
}

/// The provider-side refund number: `R` and 31 hex digits of SHA-256 over payment and refund
/// id. Letters and digits, 32 long: within every provider's rules (UnionPay's `orderId` is 8 to
/// 40 of them), whatever the merchant's refund id looks like.
pub fn refund_no(payment_id: &PaymentId, refund_id: &RefundId) -> String {
    let digest = sha256_hex(format!("{payment_id}\n{refund_id}").as_bytes());
    format!("R{}", &digest[..31])
}

fn unavailable(e: &crate::ports::StoreError) -> ApiError {
    tracing::error!(error = format!("{e:#}"), "refund store failed");
    ApiError::unavailable("could not record the refund; retry with the same request")
}

fn unreadable(e: &crate::ports::StoreError) -> ApiError {
    tracing::error!(error = format!("{e:#}"), "reading refunds failed");
    ApiError::unavailable("could not read the refunds; retry")
}

async fn read_payment(deps: &Deps, id: &PaymentId) -> Result<Payment, ApiError> {
    deps.store
        .payment(id)
        .await
        .map_err(|e| unreadable(&e))?
        .map(|r| r.payment)
        .ok_or_else(|| ApiError::not_found(format!("no payment {id}")))
}

/// Creates the refund (201), or answers the one this `refund_id` already names (200); the
/// refund's status then is what the provider has said so far.
pub async fn create_refund(
    deps: &Deps,
    raw_payment_id: &str,
    request: &RefundRequest,
) -> Result<(u16, RefundView), ApiError> {
    let payment_id = parse_payment_id(raw_payment_id)?;
    let payment = read_payment(deps, &payment_id).await?;
    let now = deps.clock.now();
    let refund = Refund {
        refund_id: request.refund_id.clone(),
        payment_id: payment_id.clone(),
        amount_minor: request.amount,
        currency: payment.currency,
        reason: request.reason.clone(),
        kind: RefundKind::Merchant,
        status: RefundStatus::Pending,
        refund_no: refund_no(&payment_id, &request.refund_id),
        provider_trade_no: payment.provider_trade_no.clone(),
        created_at: now,
        updated_at: now,
        // Checked later only if the provider's answer does not settle it now.
        next_check_at: Some(now.plus_s(deps.poll.delay_s(0))),
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        status_reason: None,
    };
    let refundable = [PaymentStatus::Paid, PaymentStatus::PartiallyRefunded];
    let inserted = deps
        .store
        .insert_refund(&refund, payment.amount_minor.get(), &refundable)
        .await
        .map_err(|e| unavailable(&e))?;
    match inserted {
        RefundInsert::Inserted => {}
        RefundInsert::Exists(existing) => {
            let same = existing.amount_minor == request.amount && existing.reason == request.reason;
            if !same {
                return Err(ApiError::new(
                    409,
                    "idempotency_mismatch",
                    format!(
                        "refund {} was already asked for with different details",
                        request.refund_id
                    ),
                ));
            }
            return Ok((200, RefundView::from(existing.as_ref())));
        }
        RefundInsert::Refused(current) if !refundable.contains(&current.status) => {
            return Err(ApiError::new(
                409,
                "not_refundable",
                format!("payment {payment_id} is {}", current.status),
            ));
        }
        RefundInsert::Refused(current) => {
            let left = current.amount_minor.get() - current.refund_reserved_minor;
            return Err(ApiError::field(
                409,
                "refund_exceeds_payment",
                "amount_minor",
                format!(
                    "{} of {} is left to refund on payment {payment_id}",
                    left.max(0),
                    current.amount_minor.get()
                ),
            ));
        }
        RefundInsert::PaymentNotFound => {
            return Err(ApiError::not_found(format!("no payment {payment_id}")));
        }
    }
    send_refund(deps, &payment, &refund).await;
    let stored = deps
        .store
        .refund(&payment_id, &request.refund_id)
        .await
        .map_err(|e| unavailable(&e))?
        .unwrap_or(refund);
    Ok((201, RefundView::from(&stored)))
}

pub async fn list_refunds(deps: &Deps, raw_payment_id: &str) -> Result<Vec<RefundView>, ApiError> {
    let payment_id = parse_payment_id(raw_payment_id)?;
    read_payment(deps, &payment_id).await?;
    let refunds = deps
        .store
        .refunds(&payment_id)
        .await
        .map_err(|e| unreadable(&e))?;
    Ok(refunds.iter().map(RefundView::from).collect())
}

fn provider_refund(payment: &Payment, refund: &Refund) -> ProviderRefund {
    ProviderRefund {
        payment_id: payment.payment_id.clone(),
        refund_no: refund.refund_no.clone(),
        amount_minor: refund.amount_minor.get(),
        total_minor: payment.amount_minor.get(),
        currency: payment.currency,
        reason: refund.reason.clone(),
        provider_trade_no: refund
            .provider_trade_no
            .clone()
            .or_else(|| payment.provider_trade_no.clone()),
        requested_at: refund.created_at,
    }
}

/// What a provider's answer means for a pending refund.
enum Answer {
    Settle(RefundStatus, Option<String>),
    Wait { note: String, unknown: bool },
}

fn answer_of(result: Result<RefundState, ProviderError>, asked: &str) -> Answer {
    match result {
        Ok(RefundState::Succeeded) => Answer::Settle(RefundStatus::Succeeded, None),
        Ok(RefundState::Failed(why)) => Answer::Settle(RefundStatus::Failed, Some(why)),
        Ok(RefundState::Processing) => Answer::Wait {
            note: "the provider is processing it".into(),
            unknown: false,
        },
        Err(ProviderError::Rejected { code, message }) => {
            Answer::Settle(RefundStatus::Failed, Some(format!("{code}: {message}")))
        }
        Err(ProviderError::Unknown(why)) => Answer::Wait {
            note: format!("{asked}: {why}"),
            unknown: true,
        },
    }
}

/// Asks the provider and settles on a definite answer; anything else leaves it to the poller.
async fn send_refund(deps: &Deps, payment: &Payment, refund: &Refund) -> Option<Answer> {
    let adapter = deps.providers.get(payment.provider)?.clone();
    let answer = answer_of(
        adapter.refund(&provider_refund(payment, refund)).await,
        "refund",
    );
    match answer {
        Answer::Settle(to, reason) => {
            settle(deps, refund, to, reason).await;
            None
        }
        wait => Some(wait),
    }
}

/// Settles a pending refund together with its payment; retried when another refund of the
/// same payment settled in between. Returns whether this call settled it.
async fn settle(deps: &Deps, refund: &Refund, to: RefundStatus, reason: Option<String>) -> bool {
    for _ in 0..SETTLE_ATTEMPTS {
        let now = deps.clock.now();
        let payment = match deps.store.payment(&refund.payment_id).await {
            Ok(Some(record)) => record.payment,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "reading payment to settle a refund"
                );
                return false;
            }
        };
        let amount = refund.amount_minor.get();
        let transition = (to == RefundStatus::Succeeded)
            .then(|| refund_transition(&payment, refund, amount, now))
            .flatten();
        let settlement = RefundSettlement {
            payment_id: refund.payment_id.clone(),
            refund_id: refund.refund_id.clone(),
            amount_minor: amount,
            to,
            reason: reason.clone(),
            at: now,
            payment_status: payment.status,
            payment_version: payment.version,
            transition,
        };
        match deps.store.settle_refund(&settlement).await {
            Ok(true) => {
                tracing::info!(payment_id = %refund.payment_id, refund_id = %refund.refund_id, status = %to, "refund settled");
                if to == RefundStatus::Failed && refund.kind == RefundKind::LatePayment {
                    // Money no order wants, and the provider would not give it back.
                    raise(
                        deps,
                        Compensation {
                            id: format!("late-payment-unrefunded#{}", refund.payment_id),
                            kind: "late_payment_unrefunded",
                            payment_id: refund.payment_id.clone(),
                            reason: format!(
                                "payment {} was paid after it was over and its refund failed: {}",
                                refund.payment_id,
                                reason.as_deref().unwrap_or("no reason given")
                            ),
                            evidence: refund.recent_checks.clone(),
                            created_at: now,
                        },
                    )
                    .await;
                }
                return true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "settling a refund failed");
                return false;
            }
        }
        match deps
            .store
            .refund(&refund.payment_id, &refund.refund_id)
            .await
        {
            Ok(Some(current)) if current.status == RefundStatus::Pending => continue,
            _ => return false,
        }
    }
    false
}

/// The payment's transition when this refund's success changes its status.
fn refund_transition(
    payment: &Payment,
    refund: &Refund,
    amount: i64,
    now: Timestamp,
) -> Option<Transition> {
    let refunded = payment.refunded_minor + amount;
    let (to, reason) = match payment.status {
        PaymentStatus::Paid | PaymentStatus::PartiallyRefunded => (
            status_after_refunds(payment.amount_minor.get(), refunded),
            format!("refund {} of {amount}", refund.refund_id),
        ),
        PaymentStatus::Closed | PaymentStatus::Failed => (
            PaymentStatus::Refunded,
            format!(
                "paid after it was {}; the payment was given back",
                payment.status
            ),
        ),
        _ => return None,
    };
    (to != payment.status).then(|| Transition {
        payment_id: payment.payment_id.clone(),
        from: payment.status,
        to,
        expected_version: payment.version,
        amount_guard: None,
        expiry_guard: None,
        provider_guard: None,
        at: now,
        source: "refund",
        reason: Some(reason),
        provider_trade_no: None,
    })
}

/// The poller's check of one pending refund: query first; a refund the provider has never
/// heard of is asked for again (same refund number); no answer waits along the schedule.
pub async fn check_refund(
    deps: &Deps,
    run: &PollRun,
    payment_id: &PaymentId,
    refund_id: &RefundId,
    now: Timestamp,
) -> CheckOutcome {
    let lease_until = deps.clock.now().plus_s(run.lease_s);
    let refund = match deps
        .store
        .claim_refund_check(payment_id, refund_id, now, lease_until)
        .await
    {
        Ok(Some(refund)) => refund,
        Ok(None) => return CheckOutcome::NotClaimed,
        Err(e) => {
            tracing::error!(%payment_id, %refund_id, error = format!("{e:#}"), "claiming a refund check failed");
            return CheckOutcome::StoreError;
        }
    };
    let payment = match deps.store.payment(payment_id).await {
        Ok(Some(record)) => record.payment,
        Ok(None) => return CheckOutcome::Moved,
        Err(_) => return CheckOutcome::StoreError,
    };
    let Some(adapter) = deps.providers.get(payment.provider).cloned() else {
        return wait(
            deps,
            &refund,
            lease_until,
            now,
            "provider not configured".into(),
            true,
        )
        .await;
    };
    let request = provider_refund(&payment, &refund);
    let answer = match adapter.query_refund(&request).await {
        Ok(Some(state)) => answer_of(Ok(state), "query"),
        Ok(None) => answer_of(adapter.refund(&request).await, "refund"),
        // A refused query (credentials, permissions, a parameter) says nothing about the
        // refund: only the provider's word on the refund itself settles it.
        Err(e) => Answer::Wait {
            note: format!("query: {e}"),
            unknown: true,
        },
    };
    match answer {
        Answer::Settle(to, reason) => {
            if settle(deps, &refund, to, reason).await {
                CheckOutcome::Refund(to)
            } else {
                CheckOutcome::Moved
            }
        }
        Answer::Wait { note, unknown } => {
            wait(deps, &refund, lease_until, now, note, unknown).await
        }
    }
}

async fn wait(
    deps: &Deps,
    refund: &Refund,
    lease_until: Timestamp,
    now: Timestamp,
    note: String,
    unknown: bool,
) -> CheckOutcome {
    let checks_done = refund.checks_done.saturating_add(1);
    let unknown_checks = if unknown {
        refund.unknown_checks.saturating_add(1)
    } else {
        0
    };
    let recent_checks = remember(&refund.recent_checks, now, &note);
    // A refund is never given up: it stays pending and keeps being checked. A human is told
    // once, when the provider stayed silent too long or the refund is still not done after as
    // many checks (a refund stuck "processing").
    let max = deps.poll.max_unknown_checks();
    if unknown_checks >= max || checks_done >= max {
        let why = if unknown_checks >= max {
            format!("the provider's state stayed unknown through {unknown_checks} checks")
        } else {
            format!("still not settled after {checks_done} checks")
        };
        raise(
            deps,
            Compensation {
                id: format!(
                    "refund-unresolved#{}#{}",
                    refund.payment_id, refund.refund_id
                ),
                kind: "refund_unresolved",
                payment_id: refund.payment_id.clone(),
                reason: format!(
                    "refund {} of {}: {why}",
                    refund.refund_id,
                    refund.amount_minor.get()
                ),
                evidence: recent_checks.clone(),
                created_at: now,
            },
        )
        .await;
    }
    let check = RefundCheck {
        checks_done,
        unknown_checks,
        next_check_at: now.plus_s(deps.poll.delay_s(checks_done)),
        recent_checks,
    };
    match deps
        .store
        .record_refund_check(&refund.payment_id, &refund.refund_id, lease_until, &check)
        .await
    {
        Ok(true) => CheckOutcome::Waiting,
        Ok(false) => CheckOutcome::Moved,
        Err(_) => CheckOutcome::StoreError,
    }
}

/// A payment reported paid after it was closed: money moved that no order wants. Records a
/// refund of it, derived from the payment so it happens once however often this is reported;
/// the poller asks the provider at once. Returns whether this report started it.
pub async fn refund_late_payment(
    deps: &Deps,
    payment: &Payment,
    reported_amount_minor: i64,
    provider_trade_no: Option<String>,
) -> Result<bool, crate::ports::StoreError> {
    let now = deps.clock.now();
    if reported_amount_minor != payment.amount_minor.get() {
        raise(
            deps,
            Compensation {
                id: format!("late-payment-unrefunded#{}", payment.payment_id),
                kind: "late_payment_amount_mismatch",
                payment_id: payment.payment_id.clone(),
                reason: format!(
                    "payment {} was {}, then reported paid {} (it is {}): refund it by hand",
                    payment.payment_id,
                    payment.status,
                    reported_amount_minor,
                    payment.amount_minor.get()
                ),
                evidence: Vec::new(),
                created_at: now,
            },
        )
        .await;
        return Ok(false);
    }
    let refund_id = RefundId::late_payment(&payment.payment_id);
    let refund = Refund {
        refund_no: refund_no(&payment.payment_id, &refund_id),
        refund_id,
        payment_id: payment.payment_id.clone(),
        amount_minor: payment.amount_minor,
        currency: payment.currency,
        reason: "paid after the payment was closed".into(),
        kind: RefundKind::LatePayment,
        status: RefundStatus::Pending,
        provider_trade_no,
        created_at: now,
        updated_at: now,
        next_check_at: Some(now),
        checks_done: 0,
        unknown_checks: 0,
        recent_checks: Vec::new(),
        status_reason: None,
    };
    match deps
        .store
        .insert_refund(
            &refund,
            payment.amount_minor.get(),
            &[PaymentStatus::Closed, PaymentStatus::Failed],
        )
        .await?
    {
        RefundInsert::Inserted => {
            // It heals itself: a warning, not an alarm (`late_payment_unrefunded` follows if the
            // refund fails).
            tracing::warn!(
                payment_id = %payment.payment_id,
                refund_id = %refund.refund_id,
                status = %payment.status,
                "late payment: paid after the payment was over; its refund was started"
            );
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// What a verified refund notification does: settles the refund it names if it is still
/// pending. A refund we do not know (by payment and refund number) is refused, like an unknown
/// payment; one already settled is a duplicate.
pub async fn settle_notified_refund(
    deps: &Deps,
    provider: crate::domain::ProviderName,
    notice: &crate::ports::RefundNotice,
) -> crate::app::callback::CallbackResult {
    use crate::app::callback::CallbackResult;
    let (payment, refunds) = match (
        deps.store.payment(&notice.payment_id).await,
        deps.store.refunds(&notice.payment_id).await,
    ) {
        (Ok(Some(record)), Ok(refunds)) => (record.payment, refunds),
        (Ok(None), _) => return CallbackResult::UnknownPayment,
        _ => return CallbackResult::RetryLater,
    };
    if payment.provider != provider {
        alarm(
            "callback_wrong_provider",
            &format!(
                "{provider} notified a refund of payment {} which belongs to {}",
                payment.payment_id, payment.provider
            ),
        );
        return CallbackResult::UnknownPayment;
    }
    let Some(refund) = refunds
        .into_iter()
        .find(|r| r.refund_no == notice.refund_no)
    else {
        alarm(
            "callback_unknown_refund",
            &format!(
                "verified refund notification for unknown refund {} of payment {}",
                notice.refund_no, notice.payment_id
            ),
        );
        return CallbackResult::UnknownPayment;
    };
    if refund.status != RefundStatus::Pending {
        let contradicts = matches!(
            (refund.status, &notice.state),
            (RefundStatus::Failed, RefundState::Succeeded)
                | (RefundStatus::Succeeded, RefundState::Failed(_))
        );
        if contradicts {
            // Money may have moved against our record: never settle twice, hand it to a human.
            raise(
                deps,
                Compensation {
                    id: format!(
                        "refund-contradicted#{}#{}",
                        refund.payment_id, refund.refund_id
                    ),
                    kind: "refund_contradicted",
                    payment_id: refund.payment_id.clone(),
                    reason: format!(
                        "refund {} is {} here, the provider now notifies {:?}",
                        refund.refund_id, refund.status, notice.state
                    ),
                    evidence: refund.recent_checks.clone(),
                    created_at: deps.clock.now(),
                },
            )
            .await;
        }
        return CallbackResult::Duplicate;
    }
    let (to, reason) = match &notice.state {
        RefundState::Succeeded => (RefundStatus::Succeeded, None),
        RefundState::Failed(why) => (RefundStatus::Failed, Some(why.clone())),
        RefundState::Processing => return CallbackResult::Ignored,
    };
    if notice.amount_minor != refund.amount_minor.get() {
        alarm(
            "refund_amount_mismatch",
            &format!(
                "refund {} of payment {}: notified {} but asked for {}",
                refund.refund_id,
                refund.payment_id,
                notice.amount_minor,
                refund.amount_minor.get()
            ),
        );
        return CallbackResult::AmountMismatch;
    }
    if settle(deps, &refund, to, reason).await {
        CallbackResult::Applied
    } else {
        match deps
            .store
            .refund(&refund.payment_id, &refund.refund_id)
            .await
        {
            Ok(Some(current)) if current.status != RefundStatus::Pending => {
                CallbackResult::Duplicate
            }
            _ => CallbackResult::RetryLater,
        }
    }
}

/// Records work for a human once, and raises the alarm when this call recorded it.
async fn raise(deps: &Deps, compensation: Compensation) {
    match deps.store.put_compensation(&compensation).await {
        Ok(true) => alarm(compensation.kind, &compensation.reason),
        Ok(false) => {}
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            id = compensation.id,
            "compensation not recorded"
        ),
    }
}
