//! Maps `POST /payments/{payment_id}/close` to the close use case. The request has no body.

use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::api::{json_response, to_body};
use shared::app::Deps;
use shared::app::close::close_payment;

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, Error> {
    let id = request
        .path_parameters_ref()
        .and_then(|p| p.first("payment_id"))
        .unwrap_or_default();
    let response = match close_payment(deps, id).await {
        Ok(view) => json_response(200, to_body(&view)),
        Err(error) => error.into_response(),
    };
    Ok(response.map(Body::from))
}
