//! `/v1/trades*` (merchant API: create, query, close, refunds) and `/pay/{trade_no}` (the payer).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::info;

use super::faults::{CallFault, Faults};
use super::notify::{self, Job};
use super::server::{ApiError, parse_json, path_param};
use super::state::{
    Inner, Protocol, RefundAsk, RefundRefusal, RefundStatus, RefundView, Shared, Status, Trade,
    rfc3339_now,
};
use super::{alipay, unionpay, wechatpay};

/// A notification issued by a payment, in the format of the protocol that created the trade.
pub(crate) enum PaidJob {
    Native(Job),
    Alipay(alipay::NotifyJob),
    WechatPay(wechatpay::NotifyJob),
    UnionPay(unionpay::NotifyJob),
}

/// A notification issued by a refund that succeeded, in the format of the trade's protocol.
/// Alipay has none: its refunds are answered synchronously and queried.
enum RefundJob {
    Native(notify::RefundJob),
    WechatPay(wechatpay::NotifyJob),
    UnionPay(unionpay::NotifyJob),
}

/// Sends the refund notification when `view` shows its refund has just become SUCCESS (created
/// so, or resolved by this query), in the trade's protocol, through the same delivery loop,
/// knobs and delivery log as payment notifications. Nothing under `never_notify`, for Alipay,
/// or for a refund without a notify URL.
pub(crate) fn notify_refund_success(shared: &Arc<Shared>, view: &RefundView) {
    if !view.succeeded_now {
        return;
    }
    let job = {
        let mut inner = shared.lock();
        let faults = inner.faults_for_trade(&view.out_trade_no);
        let Some(trade) = inner.trades.get(&view.out_trade_no) else {
            return;
        };
        let Some(refund) = trade
            .refunds
            .iter()
            .find(|r| r.refund_no == view.refund.refund_no)
        else {
            return;
        };
        let config = &shared.config;
        let job = match trade.protocol {
            Protocol::Native => notify::refund_job(trade, refund, &faults).map(RefundJob::Native),
            Protocol::WechatPay => {
                wechatpay::refund_job(config, trade, refund, &faults).map(RefundJob::WechatPay)
            }
            Protocol::UnionPay => {
                unionpay::refund_job(config, trade, refund, &faults).map(RefundJob::UnionPay)
            }
            Protocol::Alipay => None,
        };
        if job.is_some() {
            inner.stats.notifications += 1;
        }
        job
    };
    match job {
        Some(RefundJob::Native(job)) => notify::spawn_refund(Arc::clone(shared), job),
        Some(RefundJob::WechatPay(job)) => wechatpay::spawn(Arc::clone(shared), job),
        Some(RefundJob::UnionPay(job)) => unionpay::spawn(Arc::clone(shared), job),
        None => {}
    }
}

/// Body of `POST /v1/trades`.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateRequest {
    merchant_id: String,
    out_trade_no: String,
    amount_minor: i64,
    currency: String,
    subject: String,
    notify_url: String,
    expires_at: i64,
}

impl CreateRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if self.out_trade_no.is_empty() || self.out_trade_no.len() > 64 {
            return Err(ApiError::invalid("out_trade_no must be 1..=64 characters"));
        }
        if self.amount_minor <= 0 {
            return Err(ApiError::invalid("amount_minor must be positive"));
        }
        if self.currency.is_empty() {
            return Err(ApiError::invalid("currency is required"));
        }
        match reqwest::Url::parse(&self.notify_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
            _ => Err(ApiError::invalid("notify_url must be an http(s) URL")),
        }
    }
}

/// Answer of `POST /v1/trades` (replayed as is for an idempotent repeat).
#[derive(Debug, Serialize)]
pub(crate) struct CreateAnswer {
    trade_no: String,
    out_trade_no: String,
    status: Status,
    pay_url: String,
}

/// Answer of query and close.
#[derive(Debug, Serialize)]
pub(crate) struct TradeView {
    trade_no: String,
    out_trade_no: String,
    status: Status,
    amount_minor: i64,
    currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    paid_at: Option<String>,
}

impl From<&Trade> for TradeView {
    fn from(t: &Trade) -> Self {
        Self {
            trade_no: t.trade_no.clone(),
            out_trade_no: t.out_trade_no.clone(),
            status: t.status,
            amount_minor: t.amount_minor,
            currency: t.currency.clone(),
            paid_at: t.paid_at.clone(),
        }
    }
}

/// `POST /v1/trades`.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<CreateAnswer>, ApiError> {
    let req: CreateRequest = parse_json(&body)?;
    req.validate()?;
    let faults = shared.lock().faults.for_subject(&req.subject);
    if faults.create == Some(CallFault::Error) {
        return Err(ApiError::system_error());
    }
    let answer = create_or_replay(&shared, req)?;
    hang_if(&shared, &faults, faults.create).await;
    Ok(Json(answer))
}

/// Creates the trade, or replays the answer for the same out_trade_no; 409 when it differs.
fn create_or_replay(shared: &Shared, req: CreateRequest) -> Result<CreateAnswer, ApiError> {
    let mut inner = shared.lock();
    if let Some(existing) = inner.trades.get_mut(&req.out_trade_no) {
        existing.create_calls += 1;
        let same = existing.amount_minor == req.amount_minor
            && existing.currency == req.currency
            && existing.merchant_id == req.merchant_id;
        return if same {
            Ok(create_answer(existing))
        } else {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "OUT_TRADE_NO_USED",
                "out_trade_no used with other terms",
            ))
        };
    }
    if req.merchant_id != shared.config.merchant_id {
        return Err(ApiError::invalid(
            "merchant_id does not match X-Sandbox-Merchant",
        ));
    }
    let trade = new_trade(&shared.config.base_url, req);
    info!(out_trade_no = %trade.out_trade_no, trade_no = %trade.trade_no, "sandbox: trade created");
    let answer = create_answer(&trade);
    insert_trade(&mut inner, trade);
    Ok(answer)
}

fn new_trade(base_url: &str, req: CreateRequest) -> Trade {
    let trade_no = format!("SBX{}", ulid::Ulid::new());
    Trade {
        pay_url: format!("{base_url}/pay/{trade_no}"),
        trade_no,
        out_trade_no: req.out_trade_no,
        merchant_id: req.merchant_id,
        amount_minor: req.amount_minor,
        currency: req.currency,
        subject: req.subject,
        notify_url: req.notify_url,
        expires_at: req.expires_at,
        status: Status::WaitPay,
        paid_at: None,
        protocol: Protocol::Native,
        create_calls: 1,
        deliveries: Vec::new(),
        refunds: Vec::new(),
    }
}

pub(crate) fn insert_trade(inner: &mut Inner, trade: Trade) {
    inner
        .trade_nos
        .insert(trade.trade_no.clone(), trade.out_trade_no.clone());
    inner.trades.insert(trade.out_trade_no.clone(), trade);
    inner.stats.trades += 1;
}

fn create_answer(trade: &Trade) -> CreateAnswer {
    CreateAnswer {
        trade_no: trade.trade_no.clone(),
        out_trade_no: trade.out_trade_no.clone(),
        status: Status::WaitPay,
        pay_url: trade.pay_url.clone(),
    }
}

/// The `timeout` knob: the work is done, the answer waits `hang_ms`.
async fn hang_if(shared: &Shared, faults: &Faults, knob: Option<CallFault>) {
    if knob == Some(CallFault::Timeout) {
        shared.sleep(faults.hang()).await;
    }
}

/// `GET /v1/trades/{out_trade_no}`.
pub(crate) async fn query(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TradeView>, ApiError> {
    let out_trade_no = path_param(path)?;
    let (faults, view) = {
        let inner = shared.lock();
        let view = inner.trades.get(&out_trade_no).map(TradeView::from);
        (inner.faults_for_trade(&out_trade_no), view)
    };
    if faults.query == Some(CallFault::Error) {
        return Err(ApiError::system_error());
    }
    hang_if(&shared, &faults, faults.query).await;
    view.map(Json).ok_or_else(ApiError::not_exist)
}

/// `POST /v1/trades/{out_trade_no}/close`; closing twice is a no-op.
pub(crate) async fn close(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TradeView>, ApiError> {
    let out_trade_no = path_param(path)?;
    let mut inner = shared.lock();
    let trade = inner
        .trades
        .get_mut(&out_trade_no)
        .ok_or_else(ApiError::not_exist)?;
    if trade.status == Status::Paid {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "TRADE_ALREADY_PAID",
            "trade is paid",
        ));
    }
    trade.status = Status::Closed;
    info!(%out_trade_no, "sandbox: trade closed");
    Ok(Json(TradeView::from(&*trade)))
}

/// `POST /pay/{trade_no}`: the payer pays; schedules the notifications.
pub(crate) async fn pay(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let trade_no = path_param(path)?;
    let job = mark_paid(&shared, &trade_no)?;
    match job {
        Some(PaidJob::Native(job)) => notify::spawn(shared, job),
        Some(PaidJob::Alipay(job)) => alipay::spawn(shared, job),
        Some(PaidJob::WechatPay(job)) => wechatpay::spawn(shared, job),
        Some(PaidJob::UnionPay(job)) => unionpay::spawn(shared, job),
        None => {}
    }
    Ok(Json(json!({ "status": Status::Paid })))
}

/// Marks the trade paid (once) and issues its `PAID` notification unless `never_notify`.
fn mark_paid(shared: &Shared, trade_no: &str) -> Result<Option<PaidJob>, ApiError> {
    let mut inner = shared.lock();
    let faults = {
        let subject = inner
            .trade_by_no(trade_no)
            .ok_or_else(ApiError::not_exist)?
            .subject
            .clone();
        inner.faults.for_subject(&subject)
    };
    let txn_time = inner
        .trade_nos
        .get(trade_no)
        .and_then(|out_trade_no| inner.unionpay_txn_times.get(out_trade_no))
        .cloned();
    let trade = inner
        .trade_by_no(trade_no)
        .ok_or_else(ApiError::not_exist)?;
    match trade.status {
        Status::Closed => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "TRADE_CLOSED",
                "trade is closed",
            ));
        }
        Status::Paid => return Ok(None),
        Status::WaitPay => {}
    }
    trade.status = Status::Paid;
    trade.paid_at = Some(rfc3339_now());
    info!(%trade_no, out_trade_no = %trade.out_trade_no, "sandbox: trade paid");
    let job = match trade.protocol {
        Protocol::Native => notify::paid_job(trade, &faults).map(PaidJob::Native),
        Protocol::Alipay => alipay::paid_job(&shared.config, trade, &faults).map(PaidJob::Alipay),
        Protocol::WechatPay => {
            wechatpay::paid_job(&shared.config, trade, &faults).map(PaidJob::WechatPay)
        }
        Protocol::UnionPay => {
            unionpay::paid_job(&shared.config, trade, txn_time, &faults).map(PaidJob::UnionPay)
        }
    };
    if job.is_some() {
        inner.stats.notifications += 1;
    }
    Ok(job)
}

/// Body of `POST /v1/trades/{out_trade_no}/refunds`.
#[derive(Debug, Deserialize)]
pub(crate) struct RefundRequest {
    out_refund_no: String,
    amount_minor: i64,
    #[serde(default)]
    reason: String,
}

/// `out_refund_no`: 1 to 64 of `[0-9A-Za-z_-]`.
fn is_refund_no(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl RefundRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if !is_refund_no(&self.out_refund_no) {
            return Err(ApiError::invalid(
                "out_refund_no must be 1..=64 of [0-9A-Za-z_-]",
            ));
        }
        if self.amount_minor <= 0 {
            return Err(ApiError::invalid("amount_minor must be positive"));
        }
        if self.reason.chars().count() > 256 {
            return Err(ApiError::invalid("reason is at most 256 characters"));
        }
        Ok(())
    }
}

/// Answer of the refund and of its query.
#[derive(Debug, Serialize)]
pub(crate) struct RefundAnswer {
    out_refund_no: String,
    refund_no: String,
    out_trade_no: String,
    trade_no: String,
    status: RefundStatus,
    amount_minor: i64,
    /// What the trade's SUCCESS refunds add up to.
    refunded_minor: i64,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    succeeded_at: Option<String>,
}

impl From<RefundView> for RefundAnswer {
    fn from(view: RefundView) -> Self {
        Self {
            out_refund_no: view.refund.refund_no,
            refund_no: view.refund.provider_refund_no,
            out_trade_no: view.out_trade_no,
            trade_no: view.trade_no,
            status: view.refund.status,
            amount_minor: view.refund.amount_minor,
            refunded_minor: view.refunded_minor,
            created_at: view.refund.created_at,
            succeeded_at: view.refund.succeeded_at,
        }
    }
}

fn refund_refused(refusal: RefundRefusal) -> ApiError {
    let conflict = |code, message: String| ApiError::new(StatusCode::CONFLICT, code, message);
    match refusal {
        RefundRefusal::NoTrade => ApiError::not_exist(),
        RefundRefusal::NotPaid => conflict("TRADE_NOT_PAID", "trade is not paid".into()),
        RefundRefusal::OtherTerms => conflict(
            "OUT_REFUND_NO_USED",
            "out_refund_no used with other terms".into(),
        ),
        RefundRefusal::Exceeds { refundable_minor } => conflict(
            "REFUND_AMOUNT_EXCEEDED",
            format!("at most {refundable_minor} is left to refund"),
        ),
        RefundRefusal::TooMany => conflict("TOO_MANY_REFUNDS", "the trade has 50 refunds".into()),
    }
}

/// `POST /v1/trades/{out_trade_no}/refunds`: idempotent on `out_refund_no`.
pub(crate) async fn refund(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<RefundAnswer>, ApiError> {
    let out_trade_no = path_param(path)?;
    let req: RefundRequest = parse_json(&body)?;
    req.validate()?;
    let (faults, notify_url) = {
        let inner = shared.lock();
        let notify_url = inner
            .trades
            .get(&out_trade_no)
            .map(|t| t.notify_url.clone())
            .unwrap_or_default();
        (inner.faults_for_trade(&out_trade_no), notify_url)
    };
    if faults.refund == Some(CallFault::Error) {
        return Err(ApiError::system_error());
    }
    let ask = RefundAsk {
        refund_no: req.out_refund_no,
        amount_minor: req.amount_minor,
        reason: req.reason,
        txn_time: String::new(),
        provider_refund_no: format!("SBXR{}", ulid::Ulid::new()),
        processing: faults.refund_processing(),
        // Refund notifications go where the trade's payment notifications go.
        notify_url,
        req_reserved: String::new(),
    };
    let view = shared
        .lock()
        .refund(Protocol::Native, &out_trade_no, ask)
        .map_err(refund_refused)?;
    notify_refund_success(&shared, &view);
    hang_if(&shared, &faults, faults.refund).await;
    Ok(Json(RefundAnswer::from(view)))
}

/// `GET /v1/trades/{out_trade_no}/refunds/{out_refund_no}`; 404 `REFUND_NOT_EXIST` when the
/// trade or the refund is unknown.
pub(crate) async fn query_refund(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<RefundAnswer>, ApiError> {
    let Path((out_trade_no, out_refund_no)) = path.map_err(|e| ApiError::invalid(e.body_text()))?;
    let faults = shared.lock().faults_for_trade(&out_trade_no);
    if faults.query == Some(CallFault::Error) {
        return Err(ApiError::system_error());
    }
    let view = shared
        .lock()
        .query_refund(Protocol::Native, &out_trade_no, &out_refund_no);
    if let Some(view) = &view {
        notify_refund_success(&shared, view);
    }
    hang_if(&shared, &faults, faults.query).await;
    view.map(|v| Json(RefundAnswer::from(v)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "REFUND_NOT_EXIST", "no such refund"))
}
