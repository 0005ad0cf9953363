//! Maps `POST /payments/{payment_id}/close` to the close use case. The request has no body.

use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::app::Deps;
use shared::app::close::close_payment;
use shared::edge::{self, PaymentView};

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, Error> {
    let raw_id = request
        .path_parameters_ref()
        .and_then(|p| p.first("payment_id"))
        .unwrap_or_default();
    let response = match edge::payment_id(raw_id) {
        Ok(id) => edge::respond(200, close_payment(deps, &id).await, |payment| {
            PaymentView::from(&payment)
        }),
        Err(error) => error.into_response(),
    };
    Ok(response.map(Body::from))
}
