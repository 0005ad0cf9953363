//! `alipay.trade.refund` and `alipay.trade.fastpay.refund.query`. Refunds are synchronous at
//! Alipay: `fund_change` says whether this request moved money (`Y` for a new refund that
//! succeeded, `N` for a repeat of the same `out_request_no`, or for one still processing under
//! the `refund_processing` knob); the query says `refund_status: REFUND_SUCCESS` once it has.

use serde_json::{Map, Value, json};

use super::super::amount::{format_yuan, parse_yuan};
use super::{
    MAX_AMOUNT_FEN, Reply, biz_str, business, hang_if, injected_error, invalid, lookup_key,
    missing, not_exist, success,
};
use crate::sandbox::faults::CallFault;
use crate::sandbox::state::{Protocol, RefundAsk, RefundRefusal, RefundStatus, RefundView, Shared};

/// Alipay's limits on `out_request_no` and `refund_reason`.
const REQUEST_NO_MAX: usize = 64;
const REASON_MAX_CHARS: usize = 256;

/// The terms of a refund request, validated. `out_request_no` defaults to the `out_trade_no`
/// (a whole refund needs none, as at Alipay).
fn refund_ask(out_trade_no: &str, biz: &Map<String, Value>) -> Result<RefundAsk, Value> {
    let amount_minor = parse_yuan(biz_str(biz, "refund_amount"))
        .filter(|fen| (1..=MAX_AMOUNT_FEN).contains(fen))
        .ok_or_else(|| {
            invalid(
                "isv.invalid-parameter",
                "refund_amount must be 0.01..=100000000 yuan, at most 2 decimals",
            )
        })?;
    let refund_no = match biz_str(biz, "out_request_no") {
        "" => out_trade_no,
        given => given,
    };
    if refund_no.is_empty() || refund_no.chars().count() > REQUEST_NO_MAX {
        return Err(invalid(
            "isv.invalid-parameter",
            "out_request_no must be 1..=64 characters",
        ));
    }
    let reason = biz_str(biz, "refund_reason");
    if reason.chars().count() > REASON_MAX_CHARS {
        return Err(invalid(
            "isv.invalid-parameter",
            "refund_reason is at most 256 characters",
        ));
    }
    Ok(RefundAsk {
        refund_no: refund_no.to_owned(),
        amount_minor,
        reason: reason.to_owned(),
        txn_time: String::new(),
        provider_refund_no: format!("SBXR{}", ulid::Ulid::new()),
        processing: false,
        // Alipay sends no refund notification.
        notify_url: String::new(),
        req_reserved: String::new(),
    })
}

fn refused(refusal: RefundRefusal) -> Value {
    match refusal {
        RefundRefusal::NoTrade => not_exist(),
        RefundRefusal::NotPaid => business("ACQ.TRADE_STATUS_ERROR", "trade is not paid"),
        RefundRefusal::TooMany => business(
            "ACQ.TRADE_STATUS_ERROR",
            "the trade has had 50 refunds already",
        ),
        RefundRefusal::OtherTerms => business(
            "ACQ.REFUND_FEE_ERROR",
            "out_request_no used with another refund_amount",
        ),
        RefundRefusal::Exceeds { refundable_minor } => business(
            "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
            &format!(
                "refund_amount exceeds the {} yuan left to refund",
                format_yuan(refundable_minor)
            ),
        ),
    }
}

fn refund_success(view: &RefundView) -> Value {
    let moved = view.created && view.refund.status == RefundStatus::Success;
    success(json!({
        "trade_no": view.trade_no,
        "out_trade_no": view.out_trade_no,
        "buyer_logon_id": "sbx***@sandbox.invalid",
        "fund_change": if moved { "Y" } else { "N" },
        "refund_fee": format_yuan(view.refunded_minor),
        "send_back_fee": format_yuan(if moved { view.refund.amount_minor } else { 0 }),
    }))
}

/// `alipay.trade.refund`, idempotent on (`out_trade_no`, `out_request_no`).
pub(super) async fn refund(shared: &Shared, biz: &Map<String, Value>) -> Reply {
    let out_trade_no = lookup_key(shared, biz);
    let mut ask = match refund_ask(&out_trade_no, biz) {
        Ok(ask) => ask,
        Err(value) => return Reply::Alipay(value),
    };
    let faults = shared.lock().faults_for_trade(&out_trade_no);
    if faults.refund == Some(CallFault::Error) {
        return injected_error();
    }
    ask.processing = faults.refund_processing();
    let value = match shared.lock().refund(Protocol::Alipay, &out_trade_no, ask) {
        Ok(view) => refund_success(&view),
        Err(refusal) => refused(refusal),
    };
    hang_if(shared, &faults, faults.refund).await;
    Reply::Alipay(value)
}

/// `alipay.trade.fastpay.refund.query`: a refund that is not there is a success without
/// `refund_amount` (as Alipay answers it); a refund still processing has no `refund_status`.
pub(super) async fn query(shared: &Shared, biz: &Map<String, Value>) -> Reply {
    let out_trade_no = lookup_key(shared, biz);
    let request_no = biz_str(biz, "out_request_no");
    if request_no.is_empty() {
        return Reply::Alipay(missing(
            "isv.missing-parameter",
            "out_request_no is required",
        ));
    }
    let (faults, trade) = {
        let inner = shared.lock();
        let trade = inner
            .trades
            .get(&out_trade_no)
            .filter(|t| t.protocol == Protocol::Alipay)
            .map(|t| t.trade_no.clone());
        (inner.faults_for_trade(&out_trade_no), trade)
    };
    if faults.query == Some(CallFault::Error) {
        return injected_error();
    }
    let view = trade.as_ref().and_then(|_| {
        shared
            .lock()
            .query_refund(Protocol::Alipay, &out_trade_no, request_no)
    });
    hang_if(shared, &faults, faults.query).await;
    let Some(trade_no) = trade else {
        return Reply::Alipay(not_exist());
    };
    let Some(view) = view else {
        return Reply::Alipay(success(json!({
            "trade_no": trade_no,
            "out_trade_no": out_trade_no,
            "out_request_no": request_no,
        })));
    };
    let mut value = success(json!({
        "trade_no": view.trade_no,
        "out_trade_no": view.out_trade_no,
        "out_request_no": view.refund.refund_no,
        "total_amount": format_yuan(view.total_minor),
        "refund_amount": format_yuan(view.refund.amount_minor),
    }));
    if let Some(map) = value.as_object_mut() {
        if view.refund.status == RefundStatus::Success {
            map.insert("refund_status".into(), json!("REFUND_SUCCESS"));
        }
        if !view.refund.reason.is_empty() {
            map.insert("refund_reason".into(), json!(view.refund.reason));
        }
    }
    Reply::Alipay(value)
}
