//! `POST /gateway.do`: public parameters, RSA2 verification, the three trade methods, refunds
//! and their query (`refund`), and the trade bill's download URL (`bill`).

mod refund;
#[cfg(test)]
mod refund_tests;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime};
use tracing::{info, warn};

use super::super::faults::{CallFault, Faults};
use super::super::server::ApiError;
use super::super::state::{Protocol, Shared, Status, Trade, unix_now};
use super::super::trades::insert_trade;
use super::amount::{format_yuan, parse_yuan};
use super::{AlipayConfig, bill, decode_form, sign};

const PRECREATE: &str = "alipay.trade.precreate";
const QUERY: &str = "alipay.trade.query";
const CLOSE: &str = "alipay.trade.close";
const REFUND: &str = "alipay.trade.refund";
const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
const BILL_URL_QUERY: &str = "alipay.data.dataservice.bill.downloadurl.query";
/// When `time_expire` is absent.
const DEFAULT_EXPIRY_SECS: i64 = 7200;
/// Largest accepted `total_amount`, in fen (100 000 000.00 yuan).
const MAX_AMOUNT_FEN: i64 = 10_000_000_000;

/// What a method answers: a business value (signed under the response key) or a raw HTTP answer.
enum Reply {
    Alipay(Value),
    Raw(Response),
}

/// A verified request.
struct Call {
    method: &'static str,
    app_id: String,
    notify_url: String,
    biz: Map<String, Value>,
}

/// `POST /gateway.do` (parameters from the query string and the form body alike).
pub(crate) async fn gateway(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(cfg) = shared.config.alipay.as_ref() else {
        return ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
            .into_response();
    };
    // Alipay's SDKs put some common parameters (charset at least) in the URL as well as the
    // form; the same parameter with the same value in both places is one parameter.
    let mut params = decode_form(query.as_deref().unwrap_or_default());
    for (key, value) in decode_form(&String::from_utf8_lossy(&body)) {
        if !params.iter().any(|(k, v)| *k == key && *v == value) {
            params.push((key, value));
        }
    }
    let response_key = response_key(&params);
    let reply = match authenticate(cfg, &params) {
        Ok(call) => dispatch(&shared, call).await,
        Err(value) => Reply::Alipay(value),
    };
    match reply {
        Reply::Alipay(value) => answer(cfg, &response_key, &value),
        Reply::Raw(response) => response,
    }
}

/// `alipay_trade_query_response` for a known method, `error_response` otherwise.
fn response_key(params: &[(String, String)]) -> String {
    match param(params, "method").and_then(known_method) {
        Some(method) => format!("{}_response", method.replace('.', "_")),
        None => "error_response".into(),
    }
}

fn known_method(method: &str) -> Option<&'static str> {
    [
        PRECREATE,
        QUERY,
        CLOSE,
        REFUND,
        REFUND_QUERY,
        BILL_URL_QUERY,
    ]
    .into_iter()
    .find(|m| *m == method)
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Public parameters, app, signature and `biz_content`, in Alipay's order of checks.
fn authenticate(cfg: &AlipayConfig, params: &[(String, String)]) -> Result<Call, Value> {
    if has_duplicates(params) {
        return Err(invalid("isv.invalid-parameter", "duplicate parameter"));
    }
    let method = param(params, "method")
        .and_then(known_method)
        .ok_or_else(|| invalid("isv.invalid-method", "unknown or missing method"))?;
    let app_id = param(params, "app_id").unwrap_or_default();
    if app_id != cfg.app_id {
        return Err(invalid("isv.invalid-app-id", "unknown app_id"));
    }
    if param(params, "sign").is_none_or(str::is_empty) {
        return Err(missing("isv.missing-signature", "sign is required"));
    }
    if param(params, "sign_type") != Some("RSA2") {
        return Err(invalid(
            "isv.invalid-signature-type",
            "sign_type must be RSA2",
        ));
    }
    if !sign::verify_request(&cfg.app_public_der, params) {
        return Err(invalid(
            "isv.invalid-signature",
            "signature does not verify",
        ));
    }
    call_fields(method, app_id, params)
}

/// `biz_content` and `notify_url` of a verified request.
fn call_fields(
    method: &'static str,
    app_id: &str,
    params: &[(String, String)],
) -> Result<Call, Value> {
    let biz = match serde_json::from_str(param(params, "biz_content").unwrap_or_default()) {
        Ok(Value::Object(biz)) => biz,
        _ => {
            return Err(invalid(
                "isv.invalid-parameter",
                "biz_content must be a JSON object",
            ));
        }
    };
    let notify_url = param(params, "notify_url").unwrap_or_default().to_owned();
    if !notify_url.is_empty() && !is_http_url(&notify_url) {
        return Err(invalid(
            "isv.invalid-parameter",
            "notify_url must be an http(s) URL",
        ));
    }
    Ok(Call {
        method,
        app_id: app_id.to_owned(),
        notify_url,
        biz,
    })
}

fn has_duplicates(params: &[(String, String)]) -> bool {
    let mut keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).any(|w| w[0] == w[1])
}

fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
}

async fn dispatch(shared: &Shared, call: Call) -> Reply {
    match call.method {
        PRECREATE => precreate(shared, call).await,
        QUERY => query(shared, &call.biz).await,
        REFUND => refund::refund(shared, &call.biz).await,
        REFUND_QUERY => refund::query(shared, &call.biz).await,
        BILL_URL_QUERY => Reply::Alipay(bill::download_url(&shared.config.base_url, &call.biz)),
        _ => close(shared, &call.biz),
    }
}

/// The signed JSON answer.
fn answer(cfg: &AlipayConfig, response_key: &str, value: &Value) -> Response {
    match sign::signed_answer(&cfg.alipay_key, response_key, value) {
        Ok(body) => ([(CONTENT_TYPE, "application/json;charset=utf-8")], body).into_response(),
        Err(e) => {
            warn!(error = %e, "sandbox: cannot sign the Alipay answer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn failure(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> Value {
    json!({ "code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg })
}

fn missing(sub_code: &str, sub_msg: &str) -> Value {
    failure("40001", "Missing Required Arguments", sub_code, sub_msg)
}

pub(super) fn invalid(sub_code: &str, sub_msg: &str) -> Value {
    failure("40002", "Invalid Arguments", sub_code, sub_msg)
}

pub(super) fn business(sub_code: &str, sub_msg: &str) -> Value {
    failure("40004", "Business Failed", sub_code, sub_msg)
}

pub(super) fn success(fields: Value) -> Value {
    let mut value = json!({ "code": "10000", "msg": "Success" });
    if let (Some(value), Value::Object(fields)) = (value.as_object_mut(), fields) {
        value.extend(fields);
    }
    value
}

fn biz_str<'a>(biz: &'a Map<String, Value>, key: &str) -> &'a str {
    biz.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The terms of a precreate, validated.
struct Terms {
    out_trade_no: String,
    amount_fen: i64,
    subject: String,
    expires_at: i64,
}

fn terms(biz: &Map<String, Value>) -> Result<Terms, Value> {
    let out_trade_no = biz_str(biz, "out_trade_no");
    if out_trade_no.is_empty() || out_trade_no.len() > 64 {
        return Err(missing(
            "isv.missing-parameter",
            "out_trade_no must be 1..=64 characters",
        ));
    }
    let amount_fen = parse_yuan(biz_str(biz, "total_amount"))
        .filter(|fen| (1..=MAX_AMOUNT_FEN).contains(fen))
        .ok_or_else(|| {
            invalid(
                "isv.invalid-parameter",
                "total_amount must be 0.01..=100000000 yuan",
            )
        })?;
    let subject = biz_str(biz, "subject");
    if subject.is_empty() {
        return Err(missing("isv.missing-parameter", "subject is required"));
    }
    let expires_at = match biz_str(biz, "time_expire") {
        "" => unix_now() + DEFAULT_EXPIRY_SECS,
        text => parse_beijing(text).ok_or_else(|| {
            invalid(
                "isv.invalid-parameter",
                "time_expire must be yyyy-MM-dd HH:mm:ss",
            )
        })?,
    };
    Ok(Terms {
        out_trade_no: out_trade_no.to_owned(),
        amount_fen,
        subject: subject.to_owned(),
        expires_at,
    })
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time (UTC+8) -> unix seconds.
fn parse_beijing(text: &str) -> Option<i64> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let local = PrimitiveDateTime::parse(text, &format).ok()?;
    Some(local.assume_offset(offset!(+8)).unix_timestamp())
}

/// Now in Beijing time, `yyyy-MM-dd HH:mm:ss`.
pub(crate) fn beijing_now() -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let now = OffsetDateTime::now_utc().to_offset(offset!(+8));
    now.format(&format).unwrap_or_default()
}

/// The `timeout` knob: the work is done, the answer waits `hang_ms`.
async fn hang_if(shared: &Shared, faults: &Faults, knob: Option<CallFault>) {
    if knob == Some(CallFault::Timeout) {
        shared.sleep(faults.hang()).await;
    }
}

fn injected_error() -> Reply {
    Reply::Raw(ApiError::system_error().into_response())
}

/// `alipay.trade.precreate`: creates the trade (idempotent on out_trade_no) and hands out the
/// sandbox pay_url as `qr_code`.
async fn precreate(shared: &Shared, call: Call) -> Reply {
    let terms = match terms(&call.biz) {
        Ok(terms) => terms,
        Err(value) => return Reply::Alipay(value),
    };
    let faults = shared.lock().faults.for_subject(&terms.subject);
    if faults.create == Some(CallFault::Error) {
        return injected_error();
    }
    let value = create_or_replay(shared, &call, terms);
    hang_if(shared, &faults, faults.create).await;
    Reply::Alipay(value)
}

fn create_or_replay(shared: &Shared, call: &Call, terms: Terms) -> Value {
    let mut inner = shared.lock();
    if let Some(existing) = inner.trades.get_mut(&terms.out_trade_no) {
        existing.create_calls += 1;
        let same = existing.protocol == Protocol::Alipay
            && existing.amount_minor == terms.amount_fen
            && existing.merchant_id == call.app_id;
        return match (same, existing.status) {
            (true, Status::WaitPay) => precreate_success(existing),
            (true, Status::Paid) => business("ACQ.TRADE_HAS_SUCCESS", "trade is paid"),
            (true, Status::Closed) => business("ACQ.TRADE_HAS_CLOSE", "trade is closed"),
            (false, _) => business(
                "ACQ.CONTEXT_INCONSISTENT",
                "out_trade_no used with other terms",
            ),
        };
    }
    let trade = new_trade(&shared.config.base_url, call, terms);
    info!(out_trade_no = %trade.out_trade_no, trade_no = %trade.trade_no, "sandbox: Alipay trade precreated");
    let value = precreate_success(&trade);
    insert_trade(&mut inner, trade);
    value
}

fn new_trade(base_url: &str, call: &Call, terms: Terms) -> Trade {
    let trade_no = format!("SBX{}", ulid::Ulid::new());
    Trade {
        pay_url: format!("{base_url}/pay/{trade_no}"),
        trade_no,
        out_trade_no: terms.out_trade_no,
        merchant_id: call.app_id.clone(),
        amount_minor: terms.amount_fen,
        currency: "CNY".into(),
        subject: terms.subject,
        notify_url: call.notify_url.clone(),
        expires_at: terms.expires_at,
        status: Status::WaitPay,
        paid_at: None,
        protocol: Protocol::Alipay,
        create_calls: 1,
        deliveries: Vec::new(),
        refunds: Vec::new(),
    }
}

fn precreate_success(trade: &Trade) -> Value {
    success(json!({ "out_trade_no": trade.out_trade_no, "qr_code": trade.pay_url }))
}

/// The out_trade_no of the trade named by `out_trade_no` (preferred) or `trade_no`.
fn lookup_key(shared: &Shared, biz: &Map<String, Value>) -> String {
    match (biz_str(biz, "out_trade_no"), biz_str(biz, "trade_no")) {
        ("", trade_no) => shared
            .lock()
            .trade_nos
            .get(trade_no)
            .cloned()
            .unwrap_or_default(),
        (out_trade_no, _) => out_trade_no.to_owned(),
    }
}

fn not_exist() -> Value {
    business("ACQ.TRADE_NOT_EXIST", "no such trade")
}

pub(crate) fn trade_status(status: Status) -> &'static str {
    match status {
        Status::WaitPay => "WAIT_BUYER_PAY",
        Status::Paid => "TRADE_SUCCESS",
        Status::Closed => "TRADE_CLOSED",
    }
}

/// `alipay.trade.query`.
async fn query(shared: &Shared, biz: &Map<String, Value>) -> Reply {
    let out_trade_no = lookup_key(shared, biz);
    let (faults, view) = {
        let inner = shared.lock();
        let view = inner.trades.get(&out_trade_no).map(query_success);
        (inner.faults_for_trade(&out_trade_no), view)
    };
    if faults.query == Some(CallFault::Error) {
        return injected_error();
    }
    hang_if(shared, &faults, faults.query).await;
    Reply::Alipay(view.unwrap_or_else(not_exist))
}

fn query_success(trade: &Trade) -> Value {
    let amount = format_yuan(trade.amount_minor);
    let paid = trade.status == Status::Paid;
    success(json!({
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "trade_status": trade_status(trade.status),
        "total_amount": amount,
        "buyer_pay_amount": if paid { amount.as_str() } else { "0.00" },
    }))
}

/// `alipay.trade.close`; closing twice is a no-op, a paid trade cannot close.
fn close(shared: &Shared, biz: &Map<String, Value>) -> Reply {
    let out_trade_no = lookup_key(shared, biz);
    let mut inner = shared.lock();
    let Some(trade) = inner.trades.get_mut(&out_trade_no) else {
        return Reply::Alipay(not_exist());
    };
    if trade.status == Status::Paid {
        return Reply::Alipay(business("ACQ.TRADE_STATUS_ERROR", "trade is paid"));
    }
    trade.status = Status::Closed;
    info!(%out_trade_no, "sandbox: Alipay trade closed");
    Reply::Alipay(success(json!({
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
    })))
}
