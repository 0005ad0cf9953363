//! Why a use case refused, or could not finish, what it was asked: a stable code for the caller
//! and a message for a person, with no transport in it. The edge (`shared::edge`) maps the
//! kind to an HTTP status.

use crate::app::Deps;
use crate::domain::{Payment, PaymentId};
use crate::ports::{PaymentRecord, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No such payment or refund.
    NotFound,
    /// The payment's state, or an earlier request with the same key, does not allow it.
    Conflict,
    /// The request names something this deployment does not serve.
    Unsupported,
    /// Not now (the store or the provider did not answer): the same request may be retried.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub code: &'static str,
    pub message: String,
    /// The request field it is about.
    pub field: Option<&'static str>,
    /// When a retry may succeed.
    pub retry_after_s: Option<u64>,
}

impl Refusal {
    pub fn new(kind: RefusalKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Conflict, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::NotFound, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Unavailable, "unavailable", message)
    }

    pub fn on_field(self, field: &'static str) -> Self {
        Self {
            field: Some(field),
            ..self
        }
    }
}

/// The payment a merchant route names, with its history.
pub async fn payment_record(deps: &Deps, id: &PaymentId) -> Result<PaymentRecord, Refusal> {
    let record = deps.store.payment(id).await.map_err(|e| unreadable(&e))?;
    record.ok_or_else(|| Refusal::not_found(format!("no payment {id}")))
}

/// The payment a merchant route names.
pub async fn payment(deps: &Deps, id: &PaymentId) -> Result<Payment, Refusal> {
    payment_record(deps, id).await.map(|r| r.payment)
}

fn unreadable(e: &StoreError) -> Refusal {
    tracing::error!(error = format!("{e:#}"), "reading payment failed");
    Refusal::unavailable("could not read the payment; retry")
}
