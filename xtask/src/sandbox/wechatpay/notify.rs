//! `TRANSACTION.SUCCESS` notifications: the transaction sealed with AEAD_AES_256_GCM under the
//! APIv3 key, platform-signed headers, 200/204 acknowledgement, WeChat Pay's resend schedule,
//! and the same fault knobs as the other protocols.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde_json::json;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::super::faults::Faults;
use super::super::notify::{error_chain, new_notify_id};
use super::super::state::{Config, Outcome, Shared, Trade};
use super::api::transaction;
use super::sign;

/// Resends after the first attempt, in seconds (divided by the time scale); then give up.
const RESEND_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10_800, 10_800, 10_800, 21_600, 21_600,
];

/// One notification to deliver: the sealed body is fixed, the headers are signed per attempt.
pub(crate) struct NotifyJob {
    out_trade_no: String,
    notify_id: String,
    notify_url: String,
    body: Bytes,
    delay: Option<Duration>,
}

/// The `TRANSACTION.SUCCESS` notification for a trade just paid; `None` under `never_notify`
/// or without a WeChat Pay configuration.
pub(crate) fn paid_job(config: &Config, trade: &Trade, faults: &Faults) -> Option<NotifyJob> {
    let cfg = config.wechatpay.as_ref()?;
    if faults.never_notify() || trade.notify_url.is_empty() {
        return None;
    }
    let tamper = if faults.tamper_amount() { 1 } else { 0 };
    let plaintext = transaction(cfg, trade, trade.amount_minor.saturating_add(tamper));
    let notify_id = new_notify_id();
    let nonce = sign::random_alnum(12);
    let ciphertext = match sign::seal(
        &cfg.api_v3_key,
        &nonce,
        "transaction",
        plaintext.to_string().as_bytes(),
    ) {
        Ok(ciphertext) => ciphertext,
        Err(e) => {
            warn!(error = %e, "sandbox: cannot seal the WeChat Pay notification");
            return None;
        }
    };
    let envelope = json!({
        "id": notify_id,
        "create_time": sign::beijing_rfc3339_now(),
        "event_type": "TRANSACTION.SUCCESS",
        "resource_type": "encrypt-resource",
        "summary": "支付成功",
        "resource": {
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "nonce": nonce,
            "associated_data": "transaction",
            "original_type": "transaction",
        },
    });
    Some(NotifyJob {
        out_trade_no: trade.out_trade_no.clone(),
        notify_id,
        notify_url: trade.notify_url.clone(),
        body: Bytes::from(envelope.to_string()),
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
            info!(notify_id = %job.notify_id, attempt, "sandbox: WeChat Pay notification acknowledged");
            return;
        }
    }
    warn!(notify_id = %job.notify_id, "sandbox: WeChat Pay notification given up after the resend schedule");
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
    let headers = match shared
        .config
        .wechatpay
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no WeChat Pay configuration"))
        .and_then(|cfg| sign::platform_headers(cfg, &job.body, faults.forge()))
    {
        Ok(headers) => headers,
        Err(e) => {
            warn!(error = %e, "sandbox: cannot sign the WeChat Pay notification");
            return false;
        }
    };
    let mut copies = JoinSet::new();
    for _ in 0..=faults.duplicate() {
        let request = shared
            .http
            .post(&job.notify_url)
            .headers(headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(job.body.clone());
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

/// Sends one copy; acknowledged by HTTP 200 or 204, whatever the body.
async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Outcome::NoAnswer(error_chain(&e)),
    };
    let http_status = response.status().as_u16();
    let _ = response.bytes().await;
    let acked = matches!(http_status, 200 | 204);
    Outcome::Answered { http_status, acked }
}
