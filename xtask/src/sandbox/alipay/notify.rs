//! `trade_status_sync` notifications: form body signed in place, `success` acknowledgement,
//! Alipay's resend schedule, and the same fault knobs as the native protocol.

use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::super::faults::Faults;
use super::super::keys;
use super::super::notify::{error_chain, new_notify_id};
use super::super::state::{Config, Outcome, Shared, Trade};
use super::amount::format_yuan;
use super::gateway::beijing_now;
use super::{encode_form, sign};

/// Resends after the first attempt, in seconds (divided by the time scale); then give up.
const RESEND_SCHEDULE_SECS: [u64; 7] = [240, 600, 600, 3600, 7200, 21_600, 54_000];
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// One notification to deliver; `params` are everything but `sign`.
pub(crate) struct NotifyJob {
    out_trade_no: String,
    notify_id: String,
    notify_url: String,
    params: Vec<(String, String)>,
    delay: Option<Duration>,
}

/// The `TRADE_SUCCESS` notification for a trade just paid; `None` under `never_notify`, without
/// a notify_url, or without an Alipay configuration.
pub(crate) fn paid_job(config: &Config, trade: &Trade, faults: &Faults) -> Option<NotifyJob> {
    let alipay = config.alipay.as_ref()?;
    if faults.never_notify() || trade.notify_url.is_empty() {
        return None;
    }
    let tamper = if faults.tamper_amount() { 1 } else { 0 };
    let amount = format_yuan(trade.amount_minor.saturating_add(tamper));
    let notify_id = new_notify_id();
    let now = beijing_now();
    let mut params: Vec<(String, String)> = [
        ("notify_time", now.as_str()),
        ("notify_type", "trade_status_sync"),
        ("notify_id", notify_id.as_str()),
        ("app_id", alipay.app_id.as_str()),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("sign_type", "RSA2"),
        ("trade_no", trade.trade_no.as_str()),
        ("out_trade_no", trade.out_trade_no.as_str()),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_amount", amount.as_str()),
        ("receipt_amount", amount.as_str()),
        ("buyer_pay_amount", amount.as_str()),
        ("gmt_payment", now.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(seller_id) = &alipay.seller_id {
        params.push(("seller_id".into(), seller_id.clone()));
    }
    Some(NotifyJob {
        out_trade_no: trade.out_trade_no.clone(),
        notify_id,
        notify_url: trade.notify_url.clone(),
        params,
        delay: faults.delay(),
    })
}

/// Runs the job on its own task.
pub(crate) fn spawn(shared: Arc<Shared>, job: NotifyJob) {
    tokio::spawn(run(shared, job));
}

/// The delay before resend number `resend` (1-based), scaled.
pub(crate) fn resend_delay(resend: usize, time_scale: u32) -> Option<Duration> {
    let secs = RESEND_SCHEDULE_SECS.get(resend.checked_sub(1)?)?;
    Some(Duration::from_secs(*secs) / time_scale.max(1))
}

/// First attempt (after the optional delay), then the bounded resend schedule.
async fn run(shared: Arc<Shared>, job: NotifyJob) {
    if let Some(delay) = job.delay
        && !shared.sleep(delay).await
    {
        return;
    }
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
        if attempt_delivery(&shared, &job, attempt).await {
            info!(notify_id = %job.notify_id, attempt, "sandbox: Alipay notification acknowledged");
            return;
        }
    }
    warn!(notify_id = %job.notify_id, "sandbox: Alipay notification given up after the resend schedule");
}

/// One attempt under the knobs as they are set now; true when any copy was acknowledged.
async fn attempt_delivery(shared: &Arc<Shared>, job: &NotifyJob, attempt: u32) -> bool {
    let out_trade_no = job.out_trade_no.as_str();
    let notify_id = job.notify_id.as_str();
    let faults = shared.lock().faults_for_trade(out_trade_no);
    if attempt <= faults.drop_first() {
        debug!(
            notify_id,
            attempt, "sandbox: delivery dropped by drop_first"
        );
        let lost = Outcome::NoAnswer("dropped by drop_first".into());
        shared.lock().record(out_trade_no, notify_id, attempt, lost);
        return false;
    }
    let body = match signed_form(shared, job, faults.forge()) {
        Ok(body) => body,
        Err(e) => {
            warn!(error = %e, "sandbox: cannot sign the Alipay notification");
            return false;
        }
    };
    let mut copies = JoinSet::new();
    for _ in 0..=faults.duplicate() {
        let request = shared
            .http
            .post(&job.notify_url)
            .header(CONTENT_TYPE, FORM_CONTENT_TYPE)
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
    acked
}

/// The form body with `sign` appended; `forge` breaks the signature.
fn signed_form(shared: &Shared, job: &NotifyJob, forge: bool) -> anyhow::Result<String> {
    let alipay = shared
        .config
        .alipay
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no Alipay configuration"))?;
    let mut signature = sign::sign_notification(&alipay.alipay_key, &job.params)?;
    if forge {
        signature = keys::forge(&signature);
    }
    let mut params = job.params.clone();
    params.push(("sign".into(), signature));
    Ok(encode_form(&params))
}

/// Sends one copy; acknowledged only by HTTP 200 with a body of exactly `success`.
async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Outcome::NoAnswer(error_chain(&e)),
    };
    let http_status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let acked = http_status == 200 && body.as_ref() == b"success";
    Outcome::Answered { http_status, acked }
}
