//! Maps `GET /payments/{payment_id}` to the query use case.

use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::api::{json_response, to_body};
use shared::app::Deps;
use shared::app::query::get_payment;

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, Error> {
    let id = request
        .path_parameters_ref()
        .and_then(|p| p.first("payment_id"))
        .unwrap_or_default();
    let response = match get_payment(deps, id).await {
        Ok(view) => json_response(200, to_body(&view)),
        Err(error) => error.into_response(),
    };
    Ok(response.map(Body::from))
}
