//! Notification delivery: signing, fault knobs, and the resend schedule; and the native
//! protocol's payment and refund notifications.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::faults::Faults;
use super::state::{Outcome, Refund, Shared, Status, Trade};

/// Resends after the first attempt, in seconds (divided by the time scale); then give up.
const RESEND_SCHEDULE_SECS: [u64; 9] = [15, 15, 30, 180, 600, 1200, 1800, 3600, 7200];

/// The JSON body of a notification.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Notice {
    pub notify_id: String,
    pub merchant_id: String,
    pub out_trade_no: String,
    pub trade_no: String,
    pub status: Status,
    pub amount_minor: i64,
    pub currency: String,
    /// RFC 3339 UTC; `null` on the `WAIT_PAY` notice.
    pub paid_at: Option<String>,
}

/// The JSON body of a refund notification: `"event":"REFUND"` tells it from a payment's.
#[derive(Clone, Debug, Serialize)]
struct RefundNotice {
    notify_id: String,
    event: &'static str,
    merchant_id: String,
    out_trade_no: String,
    trade_no: String,
    out_refund_no: String,
    /// The sandbox's own number for the refund (`SBXR...`).
    refund_no: String,
    /// `SUCCESS` (or `FAILED`, which the sandbox never sends: it fails no refund it took).
    refund_status: &'static str,
    amount_minor: i64,
    currency: String,
    /// RFC 3339 UTC.
    succeeded_at: Option<String>,
}

/// One notification to deliver, with the knobs decided when it was issued.
pub(crate) struct Job {
    notice: Notice,
    target: Target,
    reorder: bool,
}

/// Where a notification goes and under which ids it is logged, common to every protocol.
pub(crate) struct Target {
    /// Names the trade whose knobs apply and whose delivery log records the attempts.
    pub out_trade_no: String,
    /// Names the notification in the delivery log.
    pub notify_id: String,
    pub notify_url: String,
    /// The `delay` knob as decided when the notification was issued.
    pub delay: Option<Duration>,
    /// The merchant's refund number when the notification is about a refund (the delivery log
    /// shows it); `None` for the payment's.
    pub refund_no: Option<String>,
}

impl Target {
    /// To the trade's notify URL, under the `delay` knob as decided now.
    pub(crate) fn for_trade(trade: &Trade, notify_id: String, faults: &Faults) -> Self {
        Self {
            out_trade_no: trade.out_trade_no.clone(),
            notify_id,
            notify_url: trade.notify_url.clone(),
            delay: faults.delay(),
            refund_no: None,
        }
    }

    /// About one of the trade's refunds, to the refund's notify URL, logged with the trade,
    /// under the trade's `delay` knob as decided now.
    pub(crate) fn for_refund(
        trade: &Trade,
        refund: &Refund,
        notify_id: String,
        faults: &Faults,
    ) -> Self {
        Self {
            out_trade_no: trade.out_trade_no.clone(),
            notify_id,
            notify_url: refund.notify_url.clone(),
            delay: faults.delay(),
            refund_no: Some(refund.refund_no.clone()),
        }
    }
}

/// The request of one attempt; every copy sent by the `duplicate` knob is identical.
pub(crate) struct Wire {
    /// Including the content type.
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a protocol contributes to the shared delivery machinery of [`deliver`].
pub(crate) trait Delivery: Send + 'static {
    /// The notification in log messages, such as `"Alipay notification"`.
    const NOTIFICATION: &'static str;
    /// Resends after the first attempt, in seconds (divided by the time scale); then give up.
    const RESEND_SCHEDULE_SECS: &'static [u64];

    fn target(&self) -> &Target;

    /// The request for one attempt, signed under the `forge` knob as it is set now.
    fn wire(&self, shared: &Shared, forge: bool) -> anyhow::Result<Wire>;

    /// Whether the receiver's answer acknowledges the notification.
    fn acked(http_status: u16, body: &[u8]) -> bool;

    /// Called after every attempt that put at least one request on the wire.
    fn on_sent(&mut self, _shared: &Arc<Shared>) {}
}

/// What one attempt amounted to.
enum Attempt {
    /// Lost by `drop_first` (or unsigned): nothing went on the wire.
    Lost,
    /// At least one request was sent; `acked` when any copy was acknowledged.
    Sent { acked: bool },
}

/// A fresh notify_id.
pub(crate) fn new_notify_id() -> String {
    format!("NTF{}", ulid::Ulid::new())
}

/// The `PAID` notification for a trade that has just been paid, or `None` under `never_notify`.
pub(crate) fn paid_job(trade: &Trade, faults: &Faults) -> Option<Job> {
    if faults.never_notify() {
        return None;
    }
    let amount_minor = if faults.tamper_amount() {
        trade.amount_minor.saturating_add(1)
    } else {
        trade.amount_minor
    };
    let notice = Notice {
        notify_id: new_notify_id(),
        merchant_id: trade.merchant_id.clone(),
        out_trade_no: trade.out_trade_no.clone(),
        trade_no: trade.trade_no.clone(),
        status: Status::Paid,
        amount_minor,
        currency: trade.currency.clone(),
        paid_at: trade.paid_at.clone(),
    };
    Some(Job {
        target: Target::for_trade(trade, notice.notify_id.clone(), faults),
        notice,
        reorder: faults.reorder(),
    })
}

/// A native job with its JSON body, encoded once.
struct Native {
    job: Job,
    body: Bytes,
}

impl Delivery for Native {
    const NOTIFICATION: &'static str = "notification";
    const RESEND_SCHEDULE_SECS: &'static [u64] = &RESEND_SCHEDULE_SECS;

    fn target(&self) -> &Target {
        &self.job.target
    }

    fn wire(&self, shared: &Shared, forge: bool) -> anyhow::Result<Wire> {
        let mut headers = shared.sign_headers(&self.body, forge)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Wire {
            headers,
            body: self.body.clone(),
        })
    }

    /// Acknowledged only by HTTP 200 with `{"code":"SUCCESS"}`.
    fn acked(http_status: u16, body: &[u8]) -> bool {
        http_status == 200 && is_success(body)
    }

    /// The `reorder` knob fires once, after the first attempt that went on the wire.
    fn on_sent(&mut self, shared: &Arc<Shared>) {
        if std::mem::take(&mut self.job.reorder) {
            spawn_wait_pay(shared, &self.job);
        }
    }
}

/// A native refund notification with its JSON body, encoded once.
pub(crate) struct RefundJob {
    target: Target,
    body: Bytes,
}

/// The notification of a refund that has just become SUCCESS, or `None` under `never_notify`
/// (or without a notify URL). `tamper_amount` adds 1 to `amount_minor`, still signed.
pub(crate) fn refund_job(trade: &Trade, refund: &Refund, faults: &Faults) -> Option<RefundJob> {
    if faults.never_notify() || refund.notify_url.is_empty() {
        return None;
    }
    let tamper = i64::from(faults.tamper_amount());
    let notice = RefundNotice {
        notify_id: new_notify_id(),
        event: "REFUND",
        merchant_id: trade.merchant_id.clone(),
        out_trade_no: trade.out_trade_no.clone(),
        trade_no: trade.trade_no.clone(),
        out_refund_no: refund.refund_no.clone(),
        refund_no: refund.provider_refund_no.clone(),
        refund_status: "SUCCESS",
        amount_minor: refund.amount_minor.saturating_add(tamper),
        currency: trade.currency.clone(),
        succeeded_at: refund.succeeded_at.clone(),
    };
    let body = match serde_json::to_vec(&notice) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            warn!(error = %e, "sandbox: cannot encode the refund notification");
            return None;
        }
    };
    Some(RefundJob {
        target: Target::for_refund(trade, refund, notice.notify_id, faults),
        body,
    })
}

impl Delivery for RefundJob {
    const NOTIFICATION: &'static str = "refund notification";
    const RESEND_SCHEDULE_SECS: &'static [u64] = &RESEND_SCHEDULE_SECS;

    fn target(&self) -> &Target {
        &self.target
    }

    fn wire(&self, shared: &Shared, forge: bool) -> anyhow::Result<Wire> {
        let mut headers = shared.sign_headers(&self.body, forge)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Wire {
            headers,
            body: self.body.clone(),
        })
    }

    /// Acknowledged only by HTTP 200 with `{"code":"SUCCESS"}`, as a payment notification.
    fn acked(http_status: u16, body: &[u8]) -> bool {
        http_status == 200 && is_success(body)
    }
}

/// Runs the refund notification on its own task.
pub(crate) fn spawn_refund(shared: Arc<Shared>, job: RefundJob) {
    tokio::spawn(deliver(shared, job));
}

/// Runs the job on its own task.
pub(crate) fn spawn(shared: Arc<Shared>, job: Job) {
    let body = match serde_json::to_vec(&job.notice) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            warn!(error = %e, "sandbox: cannot encode notification");
            return;
        }
    };
    tokio::spawn(deliver(shared, Native { job, body }));
}

/// The delay before resend number `resend` (1-based), scaled.
#[cfg(test)]
pub(crate) fn resend_delay(resend: usize, time_scale: u32) -> Option<Duration> {
    scaled_resend_delay(&RESEND_SCHEDULE_SECS, resend, time_scale)
}

/// The delay before resend number `resend` (1-based) of `schedule`, divided by the time scale.
pub(crate) fn scaled_resend_delay(
    schedule: &[u64],
    resend: usize,
    time_scale: u32,
) -> Option<Duration> {
    let secs = schedule.get(resend.checked_sub(1)?)?;
    Some(Duration::from_secs(*secs) / time_scale.max(1))
}

/// First attempt (after the optional delay), then the bounded resend schedule; every sleep
/// ends early when the sandbox shuts down.
pub(crate) async fn deliver<D: Delivery>(shared: Arc<Shared>, mut job: D) {
    if let Some(delay) = job.target().delay
        && !shared.sleep(delay).await
    {
        return;
    }
    for resend in 0..=D::RESEND_SCHEDULE_SECS.len() {
        if let Some(wait) =
            scaled_resend_delay(D::RESEND_SCHEDULE_SECS, resend, shared.config.time_scale)
            && !shared.sleep(wait).await
        {
            return;
        }
        if shared.is_shut_down() {
            return;
        }
        let attempt = u32::try_from(resend + 1).unwrap_or(u32::MAX);
        let outcome = attempt_delivery(&shared, &job, attempt).await;
        if let Attempt::Sent { acked } = outcome {
            job.on_sent(&shared);
            if acked {
                let notify_id = job.target().notify_id.as_str();
                info!(
                    notify_id,
                    attempt,
                    "sandbox: {} acknowledged",
                    D::NOTIFICATION
                );
                return;
            }
        }
    }
    let notify_id = job.target().notify_id.as_str();
    warn!(
        notify_id,
        "sandbox: {} given up after the resend schedule",
        D::NOTIFICATION
    );
}

/// The `reorder` knob: a `WAIT_PAY` notice (own notify_id) sent after the `PAID` one.
fn spawn_wait_pay(shared: &Arc<Shared>, paid: &Job) {
    let notice = Notice {
        notify_id: new_notify_id(),
        status: Status::WaitPay,
        paid_at: None,
        ..paid.notice.clone()
    };
    shared.lock().stats.notifications += 1;
    let job = Job {
        target: Target {
            out_trade_no: notice.out_trade_no.clone(),
            notify_id: notice.notify_id.clone(),
            notify_url: paid.target.notify_url.clone(),
            delay: None,
            refund_no: None,
        },
        notice,
        reorder: false,
    };
    spawn(Arc::clone(shared), job);
}

/// One attempt: applies `drop_first`, `forge` and `duplicate` as they are set now, and records
/// every copy in the trade's delivery log.
async fn attempt_delivery<D: Delivery>(shared: &Arc<Shared>, job: &D, attempt: u32) -> Attempt {
    let target = job.target();
    let out_trade_no = target.out_trade_no.as_str();
    let notify_id = target.notify_id.as_str();
    let refund_no = target.refund_no.as_deref();
    let faults = shared.lock().faults_for_trade(out_trade_no);
    if attempt <= faults.drop_first() {
        debug!(
            notify_id,
            attempt, "sandbox: delivery dropped by drop_first"
        );
        let lost = Outcome::NoAnswer("dropped by drop_first".into());
        shared
            .lock()
            .record(out_trade_no, notify_id, refund_no, attempt, lost);
        return Attempt::Lost;
    }
    let wire = match job.wire(shared, faults.forge()) {
        Ok(wire) => wire,
        Err(e) => {
            warn!(error = %e, "sandbox: cannot sign the {}", D::NOTIFICATION);
            return Attempt::Lost;
        }
    };
    let mut copies = JoinSet::new();
    for _ in 0..=faults.duplicate() {
        let request = shared
            .http
            .post(&target.notify_url)
            .headers(wire.headers.clone())
            .body(wire.body.clone());
        copies.spawn(send(request, D::acked));
    }
    let mut acked = false;
    while let Some(joined) = copies.join_next().await {
        let outcome =
            joined.unwrap_or_else(|e| Outcome::NoAnswer(format!("delivery task failed: {e}")));
        acked |= matches!(outcome, Outcome::Answered { acked: true, .. });
        shared
            .lock()
            .record(out_trade_no, notify_id, refund_no, attempt, outcome);
    }
    debug!(notify_id, attempt, acked, "sandbox: delivery attempt done");
    Attempt::Sent { acked }
}

/// Sends one copy and judges the answer with `acked`.
async fn send(request: reqwest::RequestBuilder, acked: fn(u16, &[u8]) -> bool) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Outcome::NoAnswer(error_chain(&e)),
    };
    let http_status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let acked = acked(http_status, &body);
    Outcome::Answered { http_status, acked }
}

fn is_success(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("code")
                .and_then(|c| c.as_str())
                .map(|c| c == "SUCCESS")
        })
        .unwrap_or(false)
}

pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
