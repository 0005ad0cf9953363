//! The refund (退货, txnType 04, txnSubType 00) on `backTransReq.do`, and its status through
//! `queryTrans.do`. Asynchronous as at UnionPay: respCode `00` means accepted; the query by the
//! refund's own `orderId` and `txnTime` tells the result in `origRespCode`; and once it
//! succeeds, a signed txnType 04 notification goes to the refund's `backUrl`, echoing its
//! `reqReserved`.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::super::UnionPayConfig;
use super::super::sign::Fields;
use super::{
    MAX_AMOUNT_DIGITS, Refusal, answer_fields, china_time_s, get, hang_if, is_digits, is_order_id,
    refusal_answer, refuse, signed_answer,
};
use crate::sandbox::faults::CallFault;
use crate::sandbox::state::{Protocol, RefundAsk, RefundRefusal, RefundStatus, Shared};
use crate::sandbox::trades::notify_refund_success;

/// The refund's terms: its `orderId`, `txnTime` and amount, the consume's `queryId`, and where
/// its notification goes.
struct Terms<'a> {
    order_id: &'a str,
    txn_time: &'a str,
    amount_minor: i64,
    orig_query_id: &'a str,
    back_url: &'a str,
}

fn validate(fields: &Fields) -> Result<Terms<'_>, Refusal> {
    if get(fields, "txnSubType") != "00" {
        return Err(refuse("30", "报文格式错误: a refund is txnSubType 00"));
    }
    let order_id = get(fields, "orderId");
    if !is_order_id(order_id) {
        return Err(refuse("30", "orderId must be 8..=40 letters and digits"));
    }
    let txn_time = get(fields, "txnTime");
    if china_time_s(txn_time).is_none() {
        return Err(refuse("30", "txnTime must be yyyyMMddHHmmss"));
    }
    let amount = get(fields, "txnAmt");
    let amount_minor = is_digits(amount, 1..=MAX_AMOUNT_DIGITS)
        .then(|| amount.parse::<i64>().ok())
        .flatten()
        .filter(|fen| *fen > 0)
        .ok_or_else(|| refuse("30", "txnAmt must be a positive number of fen"))?;
    let orig_query_id = get(fields, "origQryId");
    if orig_query_id.is_empty() {
        return Err(refuse("30", "origQryId is required"));
    }
    let back_url = get(fields, "backUrl");
    if !reqwest::Url::parse(back_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        return Err(refuse("30", "backUrl must be an http(s) URL"));
    }
    Ok(Terms {
        order_id,
        txn_time,
        amount_minor,
        orig_query_id,
        back_url,
    })
}

fn refused(refusal: RefundRefusal) -> Refusal {
    match refusal {
        RefundRefusal::NoTrade | RefundRefusal::NotPaid => refuse("35", "原交易不存在或状态不正确"),
        RefundRefusal::OtherTerms => refuse("12", "重复交易: orderId used already"),
        RefundRefusal::Exceeds { refundable_minor } => refuse(
            "33",
            format!("交易金额超限: {refundable_minor} fen left to refund"),
        ),
        RefundRefusal::TooMany => refuse("33", "交易金额超限: 50 refunds already"),
    }
}

/// 21 digits, like UnionPay's `queryId`.
fn new_query_id() -> String {
    let random = ulid::Ulid::new().0 % 10u128.pow(21);
    format!("{random:021}")
}

/// `backTransReq.do` with txnType 04: respCode `00` (accepted) with the refund's `queryId`; a
/// repeat with the same orderId, txnTime, amount and origQryId answers the same.
pub(in super::super) async fn refund(
    shared: &Arc<Shared>,
    cfg: &UnionPayConfig,
    fields: &Fields,
) -> Response {
    let terms = match validate(fields) {
        Ok(terms) => terms,
        Err(refusal) => return refusal_answer(cfg, fields, &refusal),
    };
    let (consume, taken, faults) = {
        let inner = shared.lock();
        let consume = inner
            .trade_nos
            .get(terms.orig_query_id)
            .cloned()
            .unwrap_or_default();
        let taken = inner.trades.contains_key(terms.order_id);
        let faults = inner.faults_for_trade(&consume);
        (consume, taken, faults)
    };
    if taken {
        let refusal = refuse("12", "重复交易: orderId is a consume's");
        return refusal_answer(cfg, fields, &refusal);
    }
    if faults.refund == Some(CallFault::Error) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let ask = RefundAsk {
        refund_no: terms.order_id.to_owned(),
        amount_minor: terms.amount_minor,
        reason: String::new(),
        txn_time: terms.txn_time.to_owned(),
        provider_refund_no: new_query_id(),
        processing: faults.refund_processing(),
        notify_url: terms.back_url.to_owned(),
        req_reserved: get(fields, "reqReserved").to_owned(),
    };
    let outcome = shared.lock().refund(Protocol::UnionPay, &consume, ask);
    let answer = match outcome {
        Ok(view) => {
            notify_refund_success(shared, &view);
            let mut answer = answer_fields(fields, "00", "成功[0000000]");
            answer.insert("queryId".into(), view.refund.provider_refund_no);
            answer.insert("origQryId".into(), view.trade_no);
            answer.insert("txnAmt".into(), view.refund.amount_minor.to_string());
            answer
        }
        Err(refusal) => return refusal_answer(cfg, fields, &refused(refusal)),
    };
    hang_if(shared, &faults, faults.refund).await;
    signed_answer(cfg, answer)
}

/// `queryTrans.do` for an orderId that is a refund's: `None` when it is not one. The
/// `txnTime` must be the refund's own (respCode `34` otherwise, as for any unknown
/// transaction); `origRespCode` is `00` once it succeeded, `05` while processing.
pub(in super::super) async fn query(
    shared: &Arc<Shared>,
    cfg: &UnionPayConfig,
    fields: &Fields,
) -> Option<Response> {
    let order_id = get(fields, "orderId");
    let (consume, faults, same_time) = {
        let inner = shared.lock();
        let consume = inner.refund_owner(Protocol::UnionPay, order_id)?.to_owned();
        let same_time = inner
            .trades
            .get(&consume)
            .and_then(|t| t.refunds.iter().find(|r| r.refund_no == order_id))
            .is_some_and(|r| r.txn_time == get(fields, "txnTime"));
        let faults = inner.faults_for_trade(&consume);
        (consume, faults, same_time)
    };
    if faults.query == Some(CallFault::Error) {
        return Some(StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let view = same_time
        .then(|| {
            shared
                .lock()
                .query_refund(Protocol::UnionPay, &consume, order_id)
        })
        .flatten();
    if let Some(view) = &view {
        notify_refund_success(shared, view);
    }
    hang_if(shared, &faults, faults.query).await;
    let Some(view) = view else {
        return Some(refusal_answer(cfg, fields, &refuse("34", "查无此交易")));
    };
    let (code, message) = match view.refund.status {
        RefundStatus::Success => ("00", "成功[0000000]"),
        RefundStatus::Processing => ("05", "交易处理中"),
    };
    let mut answer = answer_fields(fields, "00", "成功[0000000]");
    answer.insert("origRespCode".into(), code.into());
    answer.insert("origRespMsg".into(), message.into());
    answer.insert("txnAmt".into(), view.refund.amount_minor.to_string());
    answer.insert("currencyCode".into(), "156".into());
    answer.insert("queryId".into(), view.refund.provider_refund_no);
    answer.insert("origQryId".into(), view.trade_no);
    if !view.refund.req_reserved.is_empty() {
        answer.insert("reqReserved".into(), view.refund.req_reserved);
    }
    Some(signed_answer(cfg, answer))
}
