//! Maps `POST /payments/{payment_id}/refunds` to the refund use case and `GET` to the list.

use lambda_http::{Body, Error, Request, RequestExt, Response};
use shared::api::ApiError;
use shared::app::Deps;
use shared::app::refunds::{RefundCreated, create_refund, list_refunds};
use shared::edge::{self, RefundList, RefundView};

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, Error> {
    let response = match answer(deps, &request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    Ok(response.map(Body::from))
}

async fn answer(
    deps: &Deps,
    request: &Request,
) -> Result<lambda_http::http::Response<String>, ApiError> {
    let raw_id = request
        .path_parameters_ref()
        .and_then(|p| p.first("payment_id"))
        .unwrap_or_default();
    let id = edge::payment_id(raw_id)?;
    if *request.method() == lambda_http::http::Method::GET {
        return Ok(edge::respond(
            200,
            list_refunds(deps, &id).await,
            |refunds| RefundList {
                refunds: refunds.iter().map(RefundView::from).collect(),
            },
        ));
    }
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let parsed = edge::refund_request(content_type, request.body().as_ref())?;
    Ok(match create_refund(deps, &id, &parsed).await {
        Ok((RefundCreated::New, refund)) => {
            edge::respond(201, Ok(refund), |r| RefundView::from(&r))
        }
        Ok((RefundCreated::Existing, refund)) => {
            edge::respond(200, Ok(refund), |r| RefundView::from(&r))
        }
        Err(refusal) => ApiError::from(refusal).into_response(),
    })
}
