//! The merchant routes as the edge answers them, for the use cases' tests: raw ids in, views
//! or HTTP errors out, so the tests check the codes and statuses callers see.

use crate::api::ApiError;
use crate::app::Deps;
use crate::app::close::close_payment;
use crate::app::refunds::{RefundCreated, RefundRequest, create_refund, list_refunds};
use crate::edge::{self, PaymentView, RefundView};

pub async fn close(deps: &Deps, raw_id: &str) -> Result<PaymentView, ApiError> {
    let id = edge::payment_id(raw_id)?;
    let payment = close_payment(deps, &id).await?;
    Ok(PaymentView::from(&payment))
}

pub async fn refund(
    deps: &Deps,
    raw_id: &str,
    request: &RefundRequest,
) -> Result<(u16, RefundView), ApiError> {
    let id = edge::payment_id(raw_id)?;
    let (created, refund) = create_refund(deps, &id, request).await?;
    let status = match created {
        RefundCreated::New => 201,
        RefundCreated::Existing => 200,
    };
    Ok((status, RefundView::from(&refund)))
}

pub async fn refunds(deps: &Deps, raw_id: &str) -> Result<Vec<RefundView>, ApiError> {
    let id = edge::payment_id(raw_id)?;
    let refunds = list_refunds(deps, &id).await?;
    Ok(refunds.iter().map(RefundView::from).collect())
}
