//! Router, merchant authentication and provider response signing, error bodies.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, warn};

use super::state::{
    HEADER_MERCHANT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Shared, unix_now,
};
use super::{admin, alipay, keys, trades, unionpay, wechatpay};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Merchant timestamps this far (or farther) from the clock are rejected.
const CLOCK_WINDOW_SECS: u64 = 300;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/trades", post(trades::create))
        .route("/v1/trades/{out_trade_no}", get(trades::query))
        .route("/v1/trades/{out_trade_no}/close", post(trades::close))
        .route("/v1/trades/{out_trade_no}/refunds", post(trades::refund))
        .route(
            "/v1/trades/{out_trade_no}/refunds/{out_refund_no}",
            get(trades::query_refund),
        )
        .route("/pay/{trade_no}", post(trades::pay))
        .route("/gateway.do", post(alipay::gateway))
        .route("/alipay/bills/{token}", get(alipay::bill_file))
        .route(
            "/admin/faults",
            put(admin::set_faults)
                .delete(admin::clear_faults)
                .get(admin::get_faults),
        )
        .route("/admin/stats", get(admin::stats))
        .route("/admin/trades/{out_trade_no}", get(admin::trade))
        .merge(wechatpay::routes(Arc::clone(&shared)))
        .merge(unionpay::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            provider_layer,
        ))
        .with_state(shared)
}

/// An error answer: `{"code","message"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }
    pub fn sign_error(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "SIGN_ERROR", message)
    }
    pub fn not_exist() -> Self {
        Self::new(StatusCode::NOT_FOUND, "TRADE_NOT_EXIST", "no such trade")
    }
    pub fn system_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "injected fault",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.code, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Parses a JSON body; any failure is 400 `INVALID_REQUEST`.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("bad JSON body: {e}")))
}

/// A path segment, with extraction failures as 400 `INVALID_REQUEST`.
pub(crate) fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
}

/// On `/v1/*`: verifies the merchant signature, then signs whatever the answer is.
async fn provider_layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(req).await;
    }
    let response = match authenticate(&shared, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => {
            debug!(code = e.code, message = %e.message, "sandbox: merchant request rejected");
            e.into_response()
        }
    };
    sign_response(&shared, response).await
}

/// Buffers the body and checks the merchant headers; hands back an equivalent request.
async fn authenticate(shared: &Shared, req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::invalid("unreadable or oversized body"))?;
    verify_merchant(shared, &parts, &body)?;
    Ok(Request::from_parts(parts, Body::from(body)))
}

fn verify_merchant(shared: &Shared, parts: &Parts, body: &Bytes) -> Result<(), ApiError> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::sign_error(format!("missing or unreadable {name}")))
    };
    if header(HEADER_MERCHANT)? != shared.config.merchant_id {
        return Err(ApiError::sign_error("unknown merchant"));
    }
    let timestamp = header(HEADER_TIMESTAMP)?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| ApiError::sign_error("timestamp is not unix seconds"))?;
    if unix_now().abs_diff(seconds) >= CLOCK_WINDOW_SECS {
        return Err(ApiError::sign_error("timestamp outside the 300 s window"));
    }
    let nonce = header(HEADER_NONCE)?;
    if nonce.is_empty() || nonce.len() > 32 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::sign_error("nonce must be 1..=32 alphanumerics"));
    }
    let message = keys::merchant_message(
        parts.method.as_str(),
        parts.uri.path(),
        timestamp,
        nonce,
        body,
    );
    if !keys::verify(
        &shared.config.merchant_public_der,
        &message,
        header(HEADER_SIGNATURE)?,
    ) {
        return Err(ApiError::sign_error("signature does not verify"));
    }
    Ok(())
}

/// Adds the provider signature headers over the response body.
async fn sign_response(shared: &Shared, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match shared.sign_headers(&body, false) {
        Ok(headers) => parts.headers.extend(headers),
        Err(e) => warn!(error = %e, "sandbox: cannot sign response"),
    }
    Response::from_parts(parts, Body::from(body))
}
