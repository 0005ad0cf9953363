//! Maps `POST /payments/{payment_id}/refunds` to the refund use case and `GET` to the list.

use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::api::{json_response, to_body};
use shared::app::Deps;
use shared::app::refunds::{RefundRequest, RefundView, create_refund, list_refunds};

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, Error> {
    let id = request
        .path_parameters_ref()
        .and_then(|p| p.first("payment_id"))
        .unwrap_or_default()
        .to_owned();
    let response = match *request.method() {
        lambda_http::http::Method::GET => match list_refunds(deps, &id).await {
            Ok(refunds) => json_response(200, to_body(&RefundList { refunds })),
            Err(error) => error.into_response(),
        },
        _ => {
            let content_type = request
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok());
            let created = match RefundRequest::parse(content_type, request.body().as_ref()) {
                Ok(parsed) => create_refund(deps, &id, &parsed).await,
                Err(error) => Err(error),
            };
            match created {
                Ok((status, view)) => json_response(status, to_body(&view)),
                Err(error) => error.into_response(),
            }
        }
    };
    Ok(response.map(Body::from))
}

/// `{"refunds": [...]}`: an object, so the list can gain fields later.
#[derive(serde::Serialize)]
struct RefundList {
    refunds: Vec<RefundView>,
}
