//! Maps `POST /callbacks/{provider}` to the callback use case and answers in the provider's format.

use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::api::ApiError;
use shared::app::Deps;
use shared::app::callback::handle_callback;
use shared::domain::ProviderName;

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, Error> {
    let raw = request
        .path_parameters_ref()
        .and_then(|p| p.first("provider"))
        .unwrap_or_default();
    let outcome = match ProviderName::parse(raw) {
        Ok(provider) => {
            handle_callback(deps, provider, request.headers(), request.body().as_ref()).await
        }
        Err(_) => None,
    };
    let Some(outcome) = outcome else {
        let error = ApiError::not_found(format!("no provider {raw:?} is configured for callbacks"));
        return Ok(error.into_response().map(Body::from));
    };
    let reply = outcome.reply;
    let response = Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type)
        .body(Body::from(reply.body))?;
    Ok(response)
}
