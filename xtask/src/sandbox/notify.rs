//! Notification delivery: signing, fault knobs, and the resend schedule.

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
use super::state::{Outcome, Shared, Status, Trade};

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

/// One notification to deliver, with the knobs decided when it was issued.
pub(crate) struct Job {
    notice: Notice,
    notify_url: String,
    delay: Option<Duration>,
    reorder: bool,
}

/// What one attempt amounted to.
enum Attempt {
    /// Lost by `drop_first`: nothing went on the wire.
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
        notice,
        notify_url: trade.notify_url.clone(),
        delay: faults.delay(),
        reorder: faults.reorder(),
    })
}

/// Runs the job on its own task.
pub(crate) fn spawn(shared: Arc<Shared>, job: Job) {
    tokio::spawn(run(shared, job));
}

/// The delay before resend number `resend` (1-based), scaled.
pub(crate) fn resend_delay(resend: usize, time_scale: u32) -> Option<Duration> {
    let secs = RESEND_SCHEDULE_SECS.get(resend.checked_sub(1)?)?;
    Some(Duration::from_secs(*secs) / time_scale.max(1))
}

/// First attempt (after the optional delay), then the bounded resend schedule.
async fn run(shared: Arc<Shared>, mut job: Job) {
    if let Some(delay) = job.delay
        && !shared.sleep(delay).await
    {
        return;
    }
    let body = match serde_json::to_vec(&job.notice) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            warn!(error = %e, "sandbox: cannot encode notification");
            return;
        }
    };
    for resend in 0..=RESEND_SCHEDULE_SECS.len() {
        if let Some(wait) = resend_delay(resend, shared.config.time_scale)
            && !shared.sleep(wait).await
        {
            return;
        }
        if shared.is_shut_down() {
            return;
        }
        let attempt = u32::try_from(resend + 1).unwrap_or(u32::MAX);
        let outcome = attempt_delivery(&shared, &job, &body, attempt).await;
        if let Attempt::Sent { acked } = outcome {
            if std::mem::take(&mut job.reorder) {
                spawn_wait_pay(&shared, &job);
            }
            if acked {
                info!(notify_id = %job.notice.notify_id, attempt, "sandbox: notification acknowledged");
                return;
            }
        }
    }
    warn!(notify_id = %job.notice.notify_id, "sandbox: notification given up after the resend schedule");
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
        notice,
        notify_url: paid.notify_url.clone(),
        delay: None,
        reorder: false,
    };
    spawn(Arc::clone(shared), job);
}

/// One attempt: applies `drop_first`, `forge` and `duplicate` as they are set now.
async fn attempt_delivery(shared: &Arc<Shared>, job: &Job, body: &Bytes, attempt: u32) -> Attempt {
    let out_trade_no = job.notice.out_trade_no.as_str();
    let notify_id = job.notice.notify_id.as_str();
    let faults = shared.lock().faults_for_trade(out_trade_no);
    if attempt <= faults.drop_first() {
        debug!(
            notify_id,
            attempt, "sandbox: delivery dropped by drop_first"
        );
        let lost = Outcome::NoAnswer("dropped by drop_first".into());
        shared.lock().record(out_trade_no, notify_id, attempt, lost);
        return Attempt::Lost;
    }
    let headers = match notification_headers(shared, body, faults.forge()) {
        Ok(headers) => headers,
        Err(e) => {
            warn!(error = %e, "sandbox: cannot sign notification");
            return Attempt::Lost;
        }
    };
    let mut copies = JoinSet::new();
    for _ in 0..=faults.duplicate() {
        let request = shared
            .http
            .post(&job.notify_url)
            .headers(headers.clone())
            .body(body.clone());
        copies.spawn(send(request));
    }
    let mut acked = false;
    while let Some(joined) = copies.join_next().await {
        let outcome =
            joined.unwrap_or_else(|e| Outcome::NoAnswer(format!("delivery task failed: {e}")));
        acked |= matches!(outcome, Outcome::Answered { acked: true, .. });
        shared
            .lock()
            .record(out_trade_no, notify_id, attempt, outcome);
    }
    debug!(notify_id, attempt, acked, "sandbox: delivery attempt done");
    Attempt::Sent { acked }
}

fn notification_headers(shared: &Shared, body: &[u8], forge: bool) -> anyhow::Result<HeaderMap> {
    let mut headers = shared.sign_headers(body, forge)?;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(headers)
}

/// Sends one copy; acknowledged only by HTTP 200 with `{"code":"SUCCESS"}`.
async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Outcome::NoAnswer(error_chain(&e)),
    };
    let http_status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let acked = http_status == 200 && is_success(&body);
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
