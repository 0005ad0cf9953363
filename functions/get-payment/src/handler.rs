//! Maps `GET /payments/{payment_id}` to the query use case.

use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::app::Deps;
use shared::app::query::get_payment;
use shared::edge::{self, PaymentWithHistory};

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, Error> {
    let raw_id = request
        .path_parameters_ref()
        .and_then(|p| p.first("payment_id"))
        .unwrap_or_default();
    let response = match edge::payment_id(raw_id) {
        Ok(id) => edge::respond(200, get_payment(deps, &id).await, |record| {
            PaymentWithHistory::from(&record)
        }),
        Err(error) => error.into_response(),
    };
    Ok(response.map(Body::from))
}
