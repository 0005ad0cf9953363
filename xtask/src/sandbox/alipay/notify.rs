//! `trade_status_sync` notifications: form body signed in place, `success` acknowledgement,
//! Alipay's resend schedule, and the same fault knobs as the native protocol.

use std::sync::Arc;

use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};

use super::super::faults::Faults;
use super::super::keys;
use super::super::notify::{self, Delivery, Target, Wire, new_notify_id};
use super::super::state::{Config, Shared, Trade};
use super::amount::format_yuan;
use super::gateway::beijing_now;
use super::{encode_form, sign};

/// Resends after the first attempt, in seconds (divided by the time scale); then give up.
const RESEND_SCHEDULE_SECS: [u64; 7] = [240, 600, 600, 3600, 7200, 21_600, 54_000];
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// One notification to deliver; `params` are everything but `sign`.
pub(crate) struct NotifyJob {
    target: Target,
    params: Vec<(String, String)>,
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
        target: Target::for_trade(trade, notify_id, faults),
        params,
    })
}

impl Delivery for NotifyJob {
    const NOTIFICATION: &'static str = "Alipay notification";
    const RESEND_SCHEDULE_SECS: &'static [u64] = &RESEND_SCHEDULE_SECS;

    fn target(&self) -> &Target {
        &self.target
    }

    /// The form re-signed per attempt, so the `forge` knob applies as it is set now.
    fn wire(&self, shared: &Shared, forge: bool) -> anyhow::Result<Wire> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(FORM_CONTENT_TYPE));
        let body = signed_form(shared, self, forge)?;
        Ok(Wire {
            headers,
            body: body.into(),
        })
    }

    /// Acknowledged only by HTTP 200 with a body of exactly `success`.
    fn acked(http_status: u16, body: &[u8]) -> bool {
        http_status == 200 && body == b"success"
    }
}

/// Runs the job on its own task.
pub(crate) fn spawn(shared: Arc<Shared>, job: NotifyJob) {
    tokio::spawn(notify::deliver(shared, job));
}

/// The delay before resend number `resend` (1-based), scaled.
#[cfg(test)]
pub(crate) fn resend_delay(resend: usize, time_scale: u32) -> Option<std::time::Duration> {
    notify::scaled_resend_delay(&RESEND_SCHEDULE_SECS, resend, time_scale)
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
