//! `POST /payments/{payment_id}/close`: the merchant closes a payment early, by the poller's
//! path — query first, close at the provider, then `closed`; a close answered "already paid" is
//! queried again and recorded `paid`.

use crate::api::ApiError;
use crate::app::Deps;
use crate::app::poll::{CheckOutcome, Verdict, close_at_provider, report, transition};
use crate::app::query::{PaymentView, parse_payment_id};
use crate::domain::{Payment, PaymentStatus};
use crate::ports::NotifiedStatus;

fn conflict(code: &'static str, message: String) -> ApiError {
    ApiError::new(409, code, message)
}

/// Closes the payment, or says why it cannot be closed. Closing a closed payment answers it
/// again (idempotent).
pub async fn close_payment(deps: &Deps, raw_id: &str) -> Result<PaymentView, ApiError> {
    let id = parse_payment_id(raw_id)?;
    let payment = read(deps, &id).await?;
    match payment.status {
        PaymentStatus::Closed => return Ok(PaymentView::from(&payment)),
        PaymentStatus::Pending => {}
        PaymentStatus::Paid => {
            return Err(conflict(
                "already_paid",
                format!("payment {id} is paid; refund it instead"),
            ));
        }
        status => {
            return Err(conflict(
                "not_closable",
                format!("payment {id} is {status}"),
            ));
        }
    }
    let adapter = deps
        .providers
        .get(payment.provider)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                422,
                "provider_not_configured",
                format!("{} is not configured here", payment.provider),
            )
        })?;
    let now = deps.clock.now();
    let verdict = match adapter.query(&payment.payment_id).await {
        Ok(Some(trade)) if trade.status != NotifiedStatus::Pending => Verdict::Report(trade),
        Ok(_) => close_at_provider(adapter.as_ref(), &payment, now).await,
        Err(e) => {
            tracing::warn!(payment_id = %id, error = %e, "close: query failed");
            return Err(ApiError::unavailable(
                "the provider did not answer; retry the close",
            ));
        }
    };
    let outcome = match verdict {
        Verdict::Report(trade) => report(deps, &payment, &trade, "close").await,
        Verdict::Close(reason) => {
            let reason = format!("closed by the merchant: {reason}");
            transition(
                deps,
                &payment,
                PaymentStatus::Closed,
                None,
                "close",
                reason,
                now,
            )
            .await
        }
        Verdict::Fail(reason) => {
            transition(
                deps,
                &payment,
                PaymentStatus::Failed,
                None,
                "close",
                reason,
                now,
            )
            .await
        }
        Verdict::Wait(wait) if wait.unknown => {
            tracing::warn!(payment_id = %id, answer = wait.answer, "close: outcome unknown");
            return Err(ApiError::unavailable(
                "the provider did not confirm the close; retry",
            ));
        }
        Verdict::Wait(wait) => {
            return Err(conflict(
                "close_unsupported",
                format!(
                    "{}: {}; it closes at {}",
                    payment.provider,
                    wait.answer,
                    payment.expires_at.to_rfc3339()
                ),
            ));
        }
    };
    if outcome == CheckOutcome::StoreError {
        return Err(ApiError::unavailable("could not record the close; retry"));
    }
    let now_record = read(deps, &id).await?;
    match now_record.status {
        PaymentStatus::Closed => Ok(PaymentView::from(&now_record)),
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

async fn read(deps: &Deps, id: &crate::domain::PaymentId) -> Result<Payment, ApiError> {
    let record = deps.store.payment(id).await.map_err(|e| {
        tracing::error!(error = %e, "reading payment failed");
        ApiError::unavailable("could not read the payment; retry")
    })?;
    record
        .map(|r| r.payment)
        .ok_or_else(|| ApiError::not_found(format!("no payment {id}")))
}
