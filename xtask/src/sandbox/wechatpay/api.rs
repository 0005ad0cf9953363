//! `/v3/pay/transactions/*`: the merchant's Authorization check, the platform-signed answers,
//! and Native create, query by out_trade_no, and close; refunds in `refund`.

pub(super) mod refund;
#[cfg(test)]
mod refund_tests;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use tracing::{debug, info, warn};

use super::super::faults::{CallFault, Faults};
use super::super::keys;
use super::super::server::ApiError;
use super::super::state::{Protocol, Shared, Status, Trade, unix_now};
use super::super::trades::insert_trade;
use super::{WechatPayConfig, sign};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Merchant timestamps this far (or farther) from the clock are rejected.
const CLOCK_WINDOW_SECS: u64 = 300;
/// When `time_expire` is absent.
const DEFAULT_EXPIRY_SECS: i64 = 7200;
/// Largest accepted `amount.total`, in fen.
const MAX_TOTAL_FEN: i64 = 10_000_000_000;

fn param_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

fn sign_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "SIGN_ERROR", message)
}

fn not_exist() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "no such order")
}

fn order_paid() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ORDERPAID", "order is paid")
}

fn wechatpay(shared: &Shared) -> Result<&WechatPayConfig, ApiError> {
    shared
        .config
        .wechatpay
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint"))
}

/// Verifies the merchant's Authorization, runs the handler, and signs whatever it answers.
/// Without a WeChat Pay configuration every route is an unsigned 404.
pub(crate) async fn layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    guard(&shared, req, next, true).await
}

/// [`layer`] for the bill download: the merchant's Authorization is verified the same way, but
/// the file itself goes out unsigned, as WeChat Pay sends it. Error answers are signed.
pub(crate) async fn download_layer(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    guard(&shared, req, next, false).await
}

async fn guard(shared: &Shared, req: Request, next: Next, sign_success: bool) -> Response {
    let Ok(cfg) = wechatpay(shared) else {
        return ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
            .into_response();
    };
    let response = match authenticate(cfg, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => {
            debug!(?e, "sandbox: WeChat Pay request rejected");
            e.into_response()
        }
    };
    if !sign_success && response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match sign::platform_headers(cfg, &body, false) {
        Ok(headers) => parts.headers.extend(headers),
        Err(e) => warn!(error = %e, "sandbox: cannot sign the WeChat Pay answer"),
    }
    Response::from_parts(parts, Body::from(body))
}

async fn authenticate(cfg: &WechatPayConfig, req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| param_error("unreadable or oversized body"))?;
    verify_merchant(cfg, &parts, &body)?;
    Ok(Request::from_parts(parts, Body::from(body)))
}

fn verify_merchant(cfg: &WechatPayConfig, parts: &Parts, body: &[u8]) -> Result<(), ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| sign_error("missing Authorization"))?;
    let auth = sign::parse_authorization(header).ok_or_else(|| {
        sign_error("Authorization is not WECHATPAY2-SHA256-RSA2048 with its five fields")
    })?;
    if auth.mchid != cfg.mchid {
        return Err(sign_error("unknown mchid"));
    }
    if auth.serial_no != cfg.merchant_serial_no {
        return Err(sign_error("unknown merchant certificate serial_no"));
    }
    let seconds: i64 = auth
        .timestamp
        .parse()
        .map_err(|_| sign_error("timestamp is not unix seconds"))?;
    if unix_now().abs_diff(seconds) >= CLOCK_WINDOW_SECS {
        return Err(sign_error("timestamp outside the 300 s window"));
    }
    if auth.nonce_str.is_empty() || auth.nonce_str.len() > 32 {
        return Err(sign_error("nonce_str must be 1..=32 characters"));
    }
    let url = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let message = sign::request_message(
        parts.method.as_str(),
        url,
        &auth.timestamp,
        &auth.nonce_str,
        body,
    );
    if !keys::verify(&cfg.merchant_public_der, &message, &auth.signature) {
        return Err(sign_error("signature does not verify"));
    }
    Ok(())
}

/// Body of `POST /v3/pay/transactions/native`.
#[derive(Debug, Deserialize)]
struct CreateBody {
    appid: String,
    mchid: String,
    description: String,
    out_trade_no: String,
    #[serde(default)]
    time_expire: Option<String>,
    notify_url: String,
    amount: CreateAmount,
}

#[derive(Debug, Deserialize)]
struct CreateAmount {
    total: i64,
    #[serde(default)]
    currency: Option<String>,
}

/// `out_trade_no`: 6 to 32 of `[0-9A-Za-z_-|*]`.
fn is_out_trade_no(text: &str) -> bool {
    (6..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
}

/// Validated terms of a create; the expiry as unix seconds.
fn validate(cfg: &WechatPayConfig, body: &CreateBody) -> Result<i64, ApiError> {
    if body.mchid != cfg.mchid {
        return Err(param_error("mchid does not match the Authorization"));
    }
    if body.appid != cfg.appid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid is not bound to mchid",
        ));
    }
    if body.description.is_empty() || body.description.chars().count() > 127 {
        return Err(param_error("description must be 1..=127 characters"));
    }
    if !is_out_trade_no(&body.out_trade_no) {
        return Err(param_error(
            "out_trade_no must be 6..=32 of [0-9A-Za-z_-|*]",
        ));
    }
    if !(1..=MAX_TOTAL_FEN).contains(&body.amount.total) {
        return Err(param_error("amount.total must be a positive number of fen"));
    }
    if body.amount.currency.as_deref().is_some_and(|c| c != "CNY") {
        return Err(param_error("amount.currency must be CNY"));
    }
    if !is_http_url(&body.notify_url) {
        return Err(param_error("notify_url must be an http(s) URL"));
    }
    match body.time_expire.as_deref() {
        None | Some("") => Ok(unix_now() + DEFAULT_EXPIRY_SECS),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map(OffsetDateTime::unix_timestamp)
            .map_err(|_| param_error("time_expire must be RFC 3339")),
    }
}

/// The `timeout` knob: the work is done, the answer waits `hang_ms`.
async fn hang_if(shared: &Shared, faults: &Faults, knob: Option<CallFault>) {
    if knob == Some(CallFault::Timeout) {
        shared.sleep(faults.hang()).await;
    }
}

/// `POST /v3/pay/transactions/native` -> 200 `{"code_url"}`; idempotent on out_trade_no.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let cfg = wechatpay(&shared)?;
    let body: CreateBody =
        serde_json::from_slice(&body).map_err(|e| param_error(format!("bad JSON body: {e}")))?;
    let expires_at = validate(cfg, &body)?;
    let faults = shared.lock().faults.for_subject(&body.description);
    if faults.create == Some(CallFault::Error) {
        return Err(ApiError::system_error());
    }
    let code_url = create_or_replay(&shared, body, expires_at)?;
    hang_if(&shared, &faults, faults.create).await;
    Ok(Json(json!({ "code_url": code_url })))
}

fn create_or_replay(
    shared: &Shared,
    body: CreateBody,
    expires_at: i64,
) -> Result<String, ApiError> {
    let mut inner = shared.lock();
    if let Some(existing) = inner.trades.get_mut(&body.out_trade_no) {
        existing.create_calls += 1;
        let same = existing.protocol == Protocol::WechatPay
            && existing.amount_minor == body.amount.total
            && existing.merchant_id == body.mchid;
        return match (same, existing.status) {
            (true, Status::WaitPay) => Ok(existing.pay_url.clone()),
            (true, Status::Paid) => Err(order_paid()),
            (true, Status::Closed) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ORDER_CLOSED",
                "order is closed",
            )),
            (false, _) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "out_trade_no used with other terms",
            )),
        };
    }
    let transaction_id = new_transaction_id();
    let trade = Trade {
        pay_url: format!("{}/pay/{transaction_id}", shared.config.base_url),
        trade_no: transaction_id,
        out_trade_no: body.out_trade_no,
        merchant_id: body.mchid,
        amount_minor: body.amount.total,
        currency: "CNY".into(),
        subject: body.description,
        notify_url: body.notify_url,
        expires_at,
        status: Status::WaitPay,
        paid_at: None,
        protocol: Protocol::WechatPay,
        create_calls: 1,
        deliveries: Vec::new(),
        refunds: Vec::new(),
    };
    info!(out_trade_no = %trade.out_trade_no, transaction_id = %trade.trade_no, "sandbox: WeChat Pay order created");
    let code_url = trade.pay_url.clone();
    insert_trade(&mut inner, trade);
    Ok(code_url)
}

/// 28 digits, starting `4200`, like WeChat Pay's transaction ids.
fn new_transaction_id() -> String {
    let random = ulid::Ulid::new().0 % 10u128.pow(24);
    format!("4200{random:024}")
}

fn trade_state(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::WaitPay => ("NOTPAY", "not paid"),
        Status::Paid => ("SUCCESS", "paid"),
        Status::Closed => ("CLOSED", "closed"),
    }
}

/// RFC 3339 UTC (as stored) -> RFC 3339 in Beijing time.
pub(crate) fn beijing(rfc3339_utc: &str) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+08:00");
    OffsetDateTime::parse(rfc3339_utc, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(offset!(+8)).format(&format).ok())
        .unwrap_or_else(sign::beijing_rfc3339_now)
}

/// The transaction as the query answers it and the notification carries it; `total` may differ
/// from the trade's amount (the `tamper_amount` knob).
pub(crate) fn transaction(cfg: &WechatPayConfig, trade: &Trade, total: i64) -> Value {
    let (state, desc) = trade_state(trade.status);
    let paid = trade.status == Status::Paid;
    let mut value = json!({
        "mchid": cfg.mchid,
        "appid": cfg.appid,
        "out_trade_no": trade.out_trade_no,
        "trade_type": "NATIVE",
        "trade_state": state,
        "trade_state_desc": desc,
        "amount": {
            "total": total,
            "payer_total": if paid { total } else { 0 },
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    });
    if paid && let Some(map) = value.as_object_mut() {
        map.insert("transaction_id".into(), json!(trade.trade_no));
        map.insert("bank_type".into(), json!("OTHERS"));
        map.insert(
            "success_time".into(),
            json!(beijing(trade.paid_at.as_deref().unwrap_or_default())),
        );
        map.insert(
            "payer".into(),
            json!({ "openid": "oSandboxPayer0000000000000000" }),
        );
    }
    value
}

fn out_trade_no(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| param_error(e.body_text()))
}

/// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=..`.
pub(crate) async fn query(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let cfg = wechatpay(&shared)?;
    let out_trade_no = out_trade_no(path)?;
    if params.get("mchid") != Some(&cfg.mchid) {
        return Err(param_error("mchid query parameter missing or wrong"));
    }
    let (faults, view) = {
        let inner = shared.lock();
        let view = inner
            .trades
            .get(&out_trade_no)
            .filter(|t| t.protocol == Protocol::WechatPay)
            .map(|t| transaction(cfg, t, t.amount_minor));
        (inner.faults_for_trade(&out_trade_no), view)
    };
    if faults.query == Some(CallFault::Error) {
        return Err(ApiError::system_error());
    }
    hang_if(&shared, &faults, faults.query).await;
    view.map(Json).ok_or_else(not_exist)
}

#[derive(Deserialize)]
struct CloseBody {
    mchid: String,
}

/// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close` -> 204; closing twice is a
/// no-op, a paid order is 400 ORDERPAID.
pub(crate) async fn close(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let cfg = wechatpay(&shared)?;
    let out_trade_no = out_trade_no(path)?;
    let body: CloseBody =
        serde_json::from_slice(&body).map_err(|e| param_error(format!("bad JSON body: {e}")))?;
    if body.mchid != cfg.mchid {
        return Err(param_error("mchid does not match the Authorization"));
    }
    let mut inner = shared.lock();
    let trade = inner
        .trades
        .get_mut(&out_trade_no)
        .filter(|t| t.protocol == Protocol::WechatPay)
        .ok_or_else(not_exist)?;
    if trade.status == Status::Paid {
        return Err(order_paid());
    }
    trade.status = Status::Closed;
    info!(%out_trade_no, "sandbox: WeChat Pay order closed");
    Ok(StatusCode::NO_CONTENT)
}
