//! `backTransReq.do` (the QR consume; refunds in `refund`) and `queryTrans.do`: the merchant's
//! signature check and the answers, signed as UnionPay with `signPubKeyCert` among the signed
//! fields.

mod refund;
#[cfg(test)]
mod refund_tests;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use time::PrimitiveDateTime;
use time::macros::{format_description, offset};
use tracing::{debug, info, warn};

use super::super::faults::{CallFault, Faults};
use super::super::state::{Protocol, Shared, Status, Trade, unix_now};
use super::super::trades::insert_trade;
use super::UnionPayConfig;
use super::sign::{self, Fields};

/// When `payTimeout` is absent.
const DEFAULT_EXPIRY_SECS: i64 = 7200;
/// Largest accepted `txnAmt`: 12 digits of fen.
const MAX_AMOUNT_DIGITS: usize = 12;

/// A refusal, answered (signed) with its respCode.
pub(super) struct Refusal {
    code: &'static str,
    message: String,
}

pub(super) fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

pub(super) fn get<'a>(fields: &'a Fields, key: &str) -> &'a str {
    fields.get(key).map_or("", String::as_str)
}

pub(super) fn unionpay(shared: &Shared) -> Option<&UnionPayConfig> {
    shared.config.unionpay.as_ref()
}

pub(super) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such endpoint").into_response()
}

/// Signs `fields` as UnionPay (with `signPubKeyCert`) and answers them as raw `k=v&...`.
pub(super) fn signed_answer(cfg: &UnionPayConfig, mut fields: Fields) -> Response {
    fields.insert(sign::SIGN_CERT.into(), cfg.signer_cert_pem.clone());
    if let Err(e) = sign::sign(&mut fields, &cfg.signer_key, false) {
        warn!(error = %e, "sandbox: cannot sign the UnionPay answer");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/plain;charset=UTF-8")],
        sign::answer_text(&fields),
    )
        .into_response()
}

/// The echoed fields of every answer.
pub(super) fn answer_fields(request: &Fields, code: &str, message: &str) -> Fields {
    let mut fields = Fields::new();
    for key in [
        "bizType",
        "txnType",
        "txnSubType",
        "accessType",
        "merId",
        "orderId",
        "txnTime",
        "reqReserved",
    ] {
        if let Some(value) = request.get(key) {
            fields.insert(key.into(), value.clone());
        }
    }
    fields.insert("version".into(), sign::VERSION.into());
    fields.insert("encoding".into(), "UTF-8".into());
    fields.insert("signMethod".into(), sign::SIGN_METHOD.into());
    fields.insert("respCode".into(), code.into());
    fields.insert("respMsg".into(), message.into());
    fields
}

pub(super) fn refusal_answer(
    cfg: &UnionPayConfig,
    request: &Fields,
    refusal: &Refusal,
) -> Response {
    debug!(code = refusal.code, message = %refusal.message, "sandbox: UnionPay request refused");
    signed_answer(cfg, answer_fields(request, refusal.code, &refusal.message))
}

/// Parses the form and checks version, signMethod, merId, certId and the signature.
pub(super) fn verify_request(
    cfg: &UnionPayConfig,
    body: &[u8],
) -> Result<Fields, (Fields, Refusal)> {
    let fields = sign::form_decode(body)
        .ok_or_else(|| (Fields::new(), refuse("30", "报文格式错误: unreadable form")))?;
    let fail = |code, message: &str| Err((fields.clone(), refuse(code, message)));
    if get(&fields, "version") != sign::VERSION || get(&fields, "signMethod") != sign::SIGN_METHOD {
        return fail(
            "30",
            "报文格式错误: version must be 5.1.0 and signMethod 01",
        );
    }
    if get(&fields, "merId") != cfg.mer_id {
        return fail("30", "商户状态不正确: unknown merId");
    }
    if get(&fields, "certId") != cfg.merchant_cert_id {
        return fail("11", "验证签名失败: unknown certId");
    }
    if !sign::verifies(&fields, &cfg.merchant_public_der) {
        return fail("11", "验证签名失败");
    }
    Ok(fields)
}

/// The `timeout` knob: the work is done, the answer waits `hang_ms`.
async fn hang_if(shared: &Shared, faults: &Faults, knob: Option<CallFault>) {
    if knob == Some(CallFault::Timeout) {
        shared.sleep(faults.hang()).await;
    }
}

fn is_order_id(text: &str) -> bool {
    (8..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_digits(text: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// `yyyyMMddHHmmss` in China time -> unix seconds.
pub(super) fn china_time_s(text: &str) -> Option<i64> {
    let format = format_description!("[year][month][day][hour][minute][second]");
    PrimitiveDateTime::parse(text, &format)
        .ok()
        .map(|t| t.assume_offset(offset!(+8)).unix_timestamp())
}

/// Validated consume terms: amount in fen and expiry in unix seconds.
fn validate_consume(fields: &Fields) -> Result<(i64, i64), Refusal> {
    if get(fields, "txnType") != "01" || get(fields, "txnSubType") != "07" {
        return Err(refuse(
            "40",
            "交易类型不支持: only the QR consume (01/07) and refunds (04) are played",
        ));
    }
    if !is_order_id(get(fields, "orderId")) {
        return Err(refuse("30", "orderId must be 8..=40 letters and digits"));
    }
    if china_time_s(get(fields, "txnTime")).is_none() {
        return Err(refuse("30", "txnTime must be yyyyMMddHHmmss"));
    }
    let amount = get(fields, "txnAmt");
    let amount = is_digits(amount, 1..=MAX_AMOUNT_DIGITS)
        .then(|| amount.parse::<i64>().ok())
        .flatten()
        .filter(|fen| *fen > 0)
        .ok_or_else(|| refuse("30", "txnAmt must be a positive number of fen"))?;
    if get(fields, "currencyCode") != "156" {
        return Err(refuse("30", "currencyCode must be 156"));
    }
    let back_url = get(fields, "backUrl");
    if !reqwest::Url::parse(back_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        return Err(refuse("30", "backUrl must be an http(s) URL"));
    }
    let expires_at = match get(fields, "payTimeout") {
        "" => unix_now() + DEFAULT_EXPIRY_SECS,
        text => {
            china_time_s(text).ok_or_else(|| refuse("30", "payTimeout must be yyyyMMddHHmmss"))?
        }
    };
    Ok((amount, expires_at))
}

/// `POST /gateway/api/backTransReq.do`: the QR consume; answers `qrCode` (the pay URL).
pub(crate) async fn back_trans(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(cfg) = unionpay(&shared) else {
        return not_found();
    };
    let fields = match verify_request(cfg, &body) {
        Ok(fields) => fields,
        Err((fields, refusal)) => return refusal_answer(cfg, &fields, &refusal),
    };
    if get(&fields, "txnType") == "04" {
        return refund::refund(&shared, cfg, &fields).await;
    }
    let (amount, expires_at) = match validate_consume(&fields) {
        Ok(terms) => terms,
        Err(refusal) => return refusal_answer(cfg, &fields, &refusal),
    };
    let order_id = get(&fields, "orderId").to_owned();
    let faults = shared.lock().faults.for_subject(&order_id);
    if faults.create == Some(CallFault::Error) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let answer = match create_or_replay(&shared, &fields, amount, expires_at) {
        Ok(qr_code) => {
            let mut answer = answer_fields(&fields, "00", "成功[0000000]");
            answer.insert("qrCode".into(), qr_code);
            answer
        }
        Err(refusal) => return refusal_answer(cfg, &fields, &refusal),
    };
    hang_if(&shared, &faults, faults.create).await;
    signed_answer(cfg, answer)
}

fn create_or_replay(
    shared: &Shared,
    fields: &Fields,
    amount: i64,
    expires_at: i64,
) -> Result<String, Refusal> {
    let order_id = get(fields, "orderId");
    let mut inner = shared.lock();
    if let Some(existing) = inner.trades.get_mut(order_id) {
        existing.create_calls += 1;
        let same = existing.protocol == Protocol::UnionPay
            && existing.amount_minor == amount
            && existing.merchant_id == get(fields, "merId");
        return match (same, existing.status) {
            (true, Status::WaitPay) => Ok(existing.pay_url.clone()),
            _ => Err(refuse("12", "重复交易: orderId used already")),
        };
    }
    let query_id = new_query_id();
    let trade = Trade {
        pay_url: format!("{}/pay/{query_id}", shared.config.base_url),
        trade_no: query_id,
        out_trade_no: order_id.to_owned(),
        merchant_id: get(fields, "merId").to_owned(),
        amount_minor: amount,
        currency: "CNY".into(),
        // The consume has no subject: fault knobs are scoped by orderId.
        subject: order_id.to_owned(),
        notify_url: get(fields, "backUrl").to_owned(),
        expires_at,
        status: Status::WaitPay,
        paid_at: None,
        protocol: Protocol::UnionPay,
        create_calls: 1,
        deliveries: Vec::new(),
        refunds: Vec::new(),
    };
    info!(order_id, query_id = %trade.trade_no, "sandbox: UnionPay consume created");
    let qr_code = trade.pay_url.clone();
    inner
        .unionpay_txn_times
        .insert(order_id.to_owned(), get(fields, "txnTime").to_owned());
    insert_trade(&mut inner, trade);
    Ok(qr_code)
}

/// 21 digits, like UnionPay's `queryId`.
fn new_query_id() -> String {
    let random = ulid::Ulid::new().0 % 10u128.pow(21);
    format!("{random:021}")
}

/// `origRespCode` and `origRespMsg` of a trade's consume.
fn orig_resp(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Paid => ("00", "成功[0000000]"),
        Status::WaitPay => ("05", "交易处理中"),
        Status::Closed => ("01", "交易失败: closed"),
    }
}

/// `POST /gateway/api/queryTrans.do` (txnType 00): respCode 34 for an unknown order, else 00
/// with the consume's (or the refund's) `origRespCode`.
pub(crate) async fn query_trans(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(cfg) = unionpay(&shared) else {
        return not_found();
    };
    let fields = match verify_request(cfg, &body) {
        Ok(fields) => fields,
        Err((fields, refusal)) => return refusal_answer(cfg, &fields, &refusal),
    };
    if get(&fields, "txnType") != "00" {
        return refusal_answer(cfg, &fields, &refuse("40", "txnType must be 00"));
    }
    if china_time_s(get(&fields, "txnTime")).is_none() {
        return refusal_answer(
            cfg,
            &fields,
            &refuse("30", "txnTime must be yyyyMMddHHmmss"),
        );
    }
    if let Some(answer) = refund::query(&shared, cfg, &fields).await {
        return answer;
    }
    let order_id = get(&fields, "orderId");
    let (faults, trade) = {
        let inner = shared.lock();
        let trade = inner
            .trades
            .get(order_id)
            .filter(|t| t.protocol == Protocol::UnionPay)
            .cloned();
        (inner.faults_for_trade(order_id), trade)
    };
    if faults.query == Some(CallFault::Error) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    hang_if(&shared, &faults, faults.query).await;
    let Some(trade) = trade else {
        return refusal_answer(cfg, &fields, &refuse("34", "查无此交易"));
    };
    let mut answer = answer_fields(&fields, "00", "成功[0000000]");
    let (code, message) = orig_resp(trade.status);
    answer.insert("origRespCode".into(), code.into());
    answer.insert("origRespMsg".into(), message.into());
    answer.insert("txnAmt".into(), trade.amount_minor.to_string());
    answer.insert("currencyCode".into(), "156".into());
    answer.insert("queryId".into(), trade.trade_no.clone());
    if trade.status == Status::Paid {
        answer.insert("settleAmt".into(), trade.amount_minor.to_string());
        answer.insert("settleCurrencyCode".into(), "156".into());
    }
    signed_answer(cfg, answer)
}
