//! `POST /v3/refund/domestic/refunds` and `GET /v3/refund/domestic/refunds/{out_refund_no}`,
//! behind the same Authorization check and answer signing as the rest of `/v3`. `out_refund_no`
//! is unique per merchant: a repeat with the same terms answers the same refund. A refund that
//! becomes SUCCESS sends `REFUND.SUCCESS` to the request's `notify_url` (else the order's, the
//! sandbox's stand-in for the URL configured at the merchant platform).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{MAX_TOTAL_FEN, beijing, hang_if, is_http_url, param_error, wechatpay};
use crate::sandbox::faults::CallFault;
use crate::sandbox::server::ApiError;
use crate::sandbox::state::{Protocol, RefundAsk, RefundRefusal, RefundStatus, RefundView, Shared};
use crate::sandbox::trades::notify_refund_success;

/// WeChat Pay's limit on a refund reason, in characters.
const REASON_MAX_CHARS: usize = 80;

/// Body of `POST /v3/refund/domestic/refunds` (fields the sandbox does not play are ignored).
#[derive(Debug, Deserialize)]
struct RefundBody {
    #[serde(default)]
    transaction_id: Option<String>,
    #[serde(default)]
    out_trade_no: Option<String>,
    out_refund_no: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    notify_url: Option<String>,
    amount: RefundAmount,
}

#[derive(Debug, Deserialize)]
struct RefundAmount {
    refund: i64,
    total: i64,
    currency: String,
}

/// `out_refund_no`: 1 to 64 of `[0-9A-Za-z_-|*@]`.
fn is_out_refund_no(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b))
}

fn validate(body: &RefundBody) -> Result<(), ApiError> {
    if !is_out_refund_no(&body.out_refund_no) {
        return Err(param_error(
            "out_refund_no must be 1..=64 of [0-9A-Za-z_-|*@]",
        ));
    }
    if body.out_trade_no.is_none() && body.transaction_id.is_none() {
        return Err(param_error("out_trade_no or transaction_id is required"));
    }
    let amount = &body.amount;
    if !(1..=MAX_TOTAL_FEN).contains(&amount.total) || !(1..=amount.total).contains(&amount.refund)
    {
        return Err(param_error(
            "amount.refund must be 1..=amount.total fen, and amount.total positive",
        ));
    }
    if amount.currency != "CNY" {
        return Err(param_error("amount.currency must be CNY"));
    }
    if body
        .reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > REASON_MAX_CHARS)
    {
        return Err(param_error("reason is at most 80 characters"));
    }
    if body.notify_url.as_deref().is_some_and(|u| !is_http_url(u)) {
        return Err(param_error("notify_url must be an http(s) URL"));
    }
    Ok(())
}

fn invalid_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

fn refused(refusal: RefundRefusal) -> ApiError {
    match refusal {
        RefundRefusal::NoTrade => {
            ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在")
        }
        RefundRefusal::NotPaid => invalid_request("订单未支付: the order is not paid"),
        RefundRefusal::OtherTerms => {
            invalid_request("out_refund_no used with other terms (or for another order)")
        }
        RefundRefusal::Exceeds { refundable_minor } => invalid_request(format!(
            "申请退款金额超过订单可退金额: {refundable_minor} fen left to refund"
        )),
        RefundRefusal::TooMany => invalid_request("an order takes at most 50 refunds"),
    }
}

/// 29 digits, starting `503`, like WeChat Pay's refund ids.
fn new_refund_id() -> String {
    let random = ulid::Ulid::new().0 % 10u128.pow(26);
    format!("503{random:026}")
}

/// The refund as both the refund and its query answer it.
fn refund_json(view: &RefundView) -> Value {
    let refund = &view.refund;
    let status = match refund.status {
        RefundStatus::Processing => "PROCESSING",
        RefundStatus::Success => "SUCCESS",
    };
    let mut value = json!({
        "refund_id": refund.provider_refund_no,
        "out_refund_no": refund.refund_no,
        "transaction_id": view.trade_no,
        "out_trade_no": view.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": beijing(&refund.created_at),
        "status": status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": view.total_minor,
            "refund": refund.amount_minor,
            "payer_total": view.total_minor,
            "payer_refund": refund.amount_minor,
            "settlement_total": view.total_minor,
            "settlement_refund": refund.amount_minor,
            "discount_refund": 0,
            "refund_fee": 0,
            "currency": "CNY",
        },
    });
    if let (Some(at), Some(map)) = (&refund.succeeded_at, value.as_object_mut()) {
        map.insert("success_time".into(), json!(beijing(at)));
    }
    value
}

/// `POST /v3/refund/domestic/refunds` -> 200 with the refund.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    wechatpay(&shared)?;
    let body: RefundBody =
        serde_json::from_slice(&body).map_err(|e| param_error(format!("bad JSON body: {e}")))?;
    validate(&body)?;
    let (out_trade_no, faults, order_notify_url) = {
        let inner = shared.lock();
        let out_trade_no = match (&body.out_trade_no, &body.transaction_id) {
            (Some(out_trade_no), _) => out_trade_no.clone(),
            (None, Some(id)) => inner.trade_nos.get(id).cloned().unwrap_or_default(),
            (None, None) => String::new(),
        };
        let faults = inner.faults_for_trade(&out_trade_no);
        let order_notify_url = inner
            .trades
            .get(&out_trade_no)
            .map(|t| t.notify_url.clone())
            .unwrap_or_default();
        (out_trade_no, faults, order_notify_url)
    };
    if faults.refund == Some(CallFault::Error) {
        return Err(ApiError::system_error());
    }
    let ask = RefundAsk {
        refund_no: body.out_refund_no,
        amount_minor: body.amount.refund,
        reason: body.reason.unwrap_or_default(),
        txn_time: String::new(),
        provider_refund_no: new_refund_id(),
        processing: faults.refund_processing(),
        notify_url: body
            .notify_url
            .filter(|url| !url.is_empty())
            .unwrap_or(order_notify_url),
        req_reserved: String::new(),
    };
    let view = {
        let mut inner = shared.lock();
        let total_differs = inner.trades.get(&out_trade_no).is_some_and(|t| {
            t.protocol == Protocol::WechatPay && t.amount_minor != body.amount.total
        });
        if total_differs {
            return Err(invalid_request("amount.total is not the order's total"));
        }
        inner
            .refund(Protocol::WechatPay, &out_trade_no, ask)
            .map_err(refused)?
    };
    notify_refund_success(&shared, &view);
    hang_if(&shared, &faults, faults.refund).await;
    Ok(Json(refund_json(&view)))
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}` -> 200 with the refund; 404
/// `RESOURCE_NOT_EXISTS` when the merchant has no refund by that number.
pub(crate) async fn query(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    wechatpay(&shared)?;
    let out_refund_no = path
        .map(|Path(p)| p)
        .map_err(|e| param_error(e.body_text()))?;
    let (owner, faults) = {
        let inner = shared.lock();
        let owner = inner
            .refund_owner(Protocol::WechatPay, &out_refund_no)
            .map(str::to_owned);
        let faults = inner.faults_for_trade(owner.as_deref().unwrap_or_default());
        (owner, faults)
    };
    if faults.query == Some(CallFault::Error) {
        return Err(ApiError::system_error());
    }
    let view = owner.and_then(|out_trade_no| {
        shared
            .lock()
            .query_refund(Protocol::WechatPay, &out_trade_no, &out_refund_no)
    });
    if let Some(view) = &view {
        notify_refund_success(&shared, view);
    }
    hang_if(&shared, &faults, faults.query).await;
    let view = view.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在")
    })?;
    Ok(Json(refund_json(&view)))
}
