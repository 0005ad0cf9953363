//! `GET /payments/{payment_id}`: the payment and its status history.

use crate::app::Deps;
use crate::app::refusal::{self, Refusal};
use crate::domain::PaymentId;
use crate::ports::PaymentRecord;

/// The payment and its history.
pub async fn get_payment(deps: &Deps, id: &PaymentId) -> Result<PaymentRecord, Refusal> {
    refusal::payment_record(deps, id).await
}
