//! Maps the API Gateway request to the create use case and its result back to HTTP.

use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::api::{ApiError, json_response};
use shared::app::Deps;
use shared::app::create::create_payment;
use shared::domain::Timestamp;
use shared::edge;

/// The invocation deadline, when the runtime gives a plausible one (emulators may not).
fn deadline(request: &Request) -> Option<Timestamp> {
    let deadline_ms = request.lambda_context_ref()?.deadline;
    i64::try_from(deadline_ms).ok().map(Timestamp::from_unix_ms)
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, Error> {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let response = match edge::create_request(content_type, request.body().as_ref()) {
        Ok(parsed) => match create_payment(deps, &parsed, deadline(&request)).await {
            Ok(stored) => json_response(stored.status, stored.body),
            Err(refusal) => ApiError::from(refusal).into_response(),
        },
        Err(error) => error.into_response(),
    };
    Ok(response.map(Body::from))
}
