//! `POST /payments/{payment_id}/close`: the merchant closes a payment early, by the poller's
//! path — query first, close at the provider, then `closed`; a close answered "already paid" is
//! queried again and recorded `paid`. The decision table decides each step.

use crate::app::Deps;
use crate::app::apply::{Applied, Start, apply_report};
use crate::app::ask::{ask, query};
use crate::app::refusal::{self, Refusal, RefusalKind};
use crate::domain::decision::{Action, Asker, CloseRequest, Context, close_request, decide};
use crate::domain::{Payment, PaymentId, PaymentStatus};
use crate::ports::PaymentProvider;

/// Bound on the questions one close asks the provider (query, close, query again).
const ASKS_PER_CLOSE: usize = 3;

fn conflict(code: &'static str, message: String) -> Refusal {
    Refusal::conflict(code, message)
}

/// Closes the payment, or says why it cannot be closed. Closing a closed payment answers it
/// again (idempotent).
pub async fn close_payment(deps: &Deps, id: &PaymentId) -> Result<Payment, Refusal> {
    let payment = refusal::payment(deps, id).await?;
    match close_request(&payment) {
        CloseRequest::AlreadyClosed => return Ok(payment),
        CloseRequest::AskProvider => {}
        CloseRequest::AlreadyPaid => {
            return Err(conflict(
                "already_paid",
                format!("payment {id} is paid; refund it instead"),
            ));
        }
        CloseRequest::NotClosable => {
            return Err(conflict(
                "not_closable",
                format!("payment {id} is {}", payment.status),
            ));
        }
    }
    let adapter = deps
        .providers
        .get(payment.provider)
        .cloned()
        .ok_or_else(|| {
            Refusal::new(
                RefusalKind::Unsupported,
                "provider_not_configured",
                format!("{} is not configured here", payment.provider),
            )
        })?;
    let applied = close_at_provider(deps, adapter.as_ref(), payment).await?;
    if applied == Applied::StoreFailed {
        return Err(Refusal::unavailable("could not record the close; retry"));
    }
    answer(refusal::payment(deps, id).await?)
}

/// Asks the provider what the table asks, and applies what it then decides.
async fn close_at_provider(
    deps: &Deps,
    adapter: &dyn PaymentProvider,
    payment: Payment,
) -> Result<Applied, Refusal> {
    let ctx = Context {
        asker: Asker::Merchant,
        provider: payment.provider,
        now: deps.clock.now(),
        max_unknown_checks: deps.poll.max_unknown_checks(),
    };
    let mut report = query(adapter, &payment).await;
    for asked in 0..=ASKS_PER_CLOSE {
        let decision = decide(&payment, &report, &ctx);
        match decision.action {
            Action::Ask(question) if asked < ASKS_PER_CLOSE => {
                report = ask(adapter, &payment, question).await.report;
            }
            Action::Wait(wait) if wait.unknown => {
                tracing::warn!(payment_id = %payment.payment_id, answer = wait.note, "close: outcome unknown");
                return Err(Refusal::unavailable(if asked == 0 {
                    "the provider did not answer; retry the close"
                } else {
                    "the provider did not confirm the close; retry"
                }));
            }
            Action::Wait(wait) => {
                return Err(conflict(
                    "close_unsupported",
                    format!(
                        "{}: {}; it closes at {}",
                        payment.provider,
                        wait.note,
                        payment.expires_at.to_rfc3339()
                    ),
                ));
            }
            _ => {
                let start = Start::Decided(Box::new(payment), Box::new(decision));
                return Ok(apply_report(deps, start, &report, &ctx).await);
            }
        }
    }
    Err(Refusal::unavailable(
        "the provider did not confirm the close; retry",
    ))
}

/// The close's answer, from the payment as it is after it.
fn answer(payment: Payment) -> Result<Payment, Refusal> {
    let id = &payment.payment_id;
    match payment.status {
        PaymentStatus::Closed => Ok(payment),
        PaymentStatus::Paid => Err(conflict(
            "already_paid",
            format!("payment {id} was paid before it could be closed"),
        )),
        status => Err(conflict(
            "not_closable",
            format!("payment {id} is {status}"),
        )),
    }
}
