//! `backUrl` notifications of a paid consume: a URL-encoded form signed as UnionPay (with
//! `signPubKeyCert`), acknowledged by HTTP 200, resent at 1, 2, 4, 8 and 16 minutes (divided
//! by the time scale), under the same fault knobs as the other protocols.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::super::faults::Faults;
use super::super::notify::error_chain;
use super::super::state::{Config, Outcome, Shared, Trade};
use super::sign::{self, Fields};

/// Resends after the first attempt, in seconds (divided by the time scale); then give up.
const RESEND_SCHEDULE_SECS: [u64; 5] = [60, 120, 240, 480, 960];

/// One notification to deliver: the fields are fixed, the signature is made per attempt.
pub(crate) struct NotifyJob {
    order_id: String,
    /// The `queryId`, which also names the notification in the delivery log.
    notify_id: String,
    back_url: String,
    fields: Fields,
    delay: Option<Duration>,
}

/// Now in China time, `yyyyMMddHHmmss`.
fn china_now() -> String {
    let format = time::macros::format_description!("[year][month][day][hour][minute][second]");
    time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .format(&format)
        .unwrap_or_default()
}

/// The notification of a consume just paid; `None` under `never_notify` or without a UnionPay
/// configuration. `tamper_amount` adds a fen to `txnAmt` (still validly signed).
pub(crate) fn paid_job(
    config: &Config,
    trade: &Trade,
    txn_time: Option<String>,
    faults: &Faults,
) -> Option<NotifyJob> {
    let cfg = config.unionpay.as_ref()?;
    if faults.never_notify() || trade.notify_url.is_empty() {
        return None;
    }
    let tamper = i64::from(faults.tamper_amount());
    let amount = trade.amount_minor.saturating_add(tamper).to_string();
    let now = china_now();
    let trace_no = trade.trade_no.chars().rev().take(6).collect::<String>();
    let mut fields = Fields::new();
    for (key, value) in [
        ("version", sign::VERSION),
        ("encoding", "UTF-8"),
        ("signMethod", sign::SIGN_METHOD),
        ("bizType", "000000"),
        ("txnType", "01"),
        ("txnSubType", "07"),
        ("accessType", "0"),
        ("merId", cfg.mer_id.as_str()),
        ("orderId", trade.out_trade_no.as_str()),
        ("txnTime", txn_time.as_deref().unwrap_or(&now)),
        ("txnAmt", amount.as_str()),
        ("currencyCode", "156"),
        ("settleAmt", amount.as_str()),
        ("settleCurrencyCode", "156"),
        ("settleDate", now.get(4..8).unwrap_or_default()),
        ("traceNo", trace_no.as_str()),
        ("traceTime", now.get(4..).unwrap_or_default()),
        ("queryId", trade.trade_no.as_str()),
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        (sign::SIGN_CERT, cfg.signer_cert_pem.as_str()),
    ] {
        fields.insert(key.into(), value.into());
    }
    Some(NotifyJob {
        order_id: trade.out_trade_no.clone(),
        notify_id: trade.trade_no.clone(),
        back_url: trade.notify_url.clone(),
        fields,
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
            info!(query_id = %job.notify_id, attempt, "sandbox: UnionPay notification acknowledged");
            return;
        }
    }
    warn!(query_id = %job.notify_id, "sandbox: UnionPay notification given up after the resend schedule");
}

/// The signed form body under the `forge` knob as set now.
fn signed_body(shared: &Shared, job: &NotifyJob, forge: bool) -> anyhow::Result<String> {
    let cfg = shared
        .config
        .unionpay
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no UnionPay configuration"))?;
    let mut fields = job.fields.clone();
    sign::sign(&mut fields, &cfg.signer_key, forge)?;
    Ok(sign::form_encode(&fields))
}

/// One attempt under the knobs as they are set now; true when any copy was acknowledged.
async fn attempt_delivery(shared: &Arc<Shared>, job: &NotifyJob, attempt: u32) -> bool {
    let order_id = job.order_id.as_str();
    let notify_id = job.notify_id.as_str();
    let faults = shared.lock().faults_for_trade(order_id);
    if attempt <= faults.drop_first() {
        debug!(
            notify_id,
            attempt, "sandbox: delivery dropped by drop_first"
        );
        let lost = Outcome::NoAnswer("dropped by drop_first".into());
        shared.lock().record(order_id, notify_id, attempt, lost);
        return false;
    }
    let body = match signed_body(shared, job, faults.forge()) {
        Ok(body) => body,
        Err(e) => {
            warn!(error = %e, "sandbox: cannot sign the UnionPay notification");
            return false;
        }
    };
    let mut copies = JoinSet::new();
    for _ in 0..=faults.duplicate() {
        let request = shared
            .http
            .post(&job.back_url)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded;charset=UTF-8"),
            )
            .body(body.clone());
        copies.spawn(send(request));
    }
    let mut acked = false;
    while let Some(joined) = copies.join_next().await {
        let outcome =
            joined.unwrap_or_else(|e| Outcome::NoAnswer(format!("delivery task failed: {e}")));
        acked |= matches!(outcome, Outcome::Answered { acked: true, .. });
        shared.lock().record(order_id, notify_id, attempt, outcome);
    }
    acked
}

/// Sends one copy; acknowledged by HTTP 200, whatever the body.
async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Outcome::NoAnswer(error_chain(&e)),
    };
    let http_status = response.status().as_u16();
    let _ = response.bytes().await;
    Outcome::Answered {
        http_status,
        acked: http_status == 200,
    }
}
