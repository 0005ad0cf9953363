//! `TRANSACTION.SUCCESS` notifications: the transaction sealed with AEAD_AES_256_GCM under the
//! APIv3 key, platform-signed headers, 200/204 acknowledgement, WeChat Pay's resend schedule,
//! and the same fault knobs as the other protocols.

use std::sync::Arc;

use axum::body::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde_json::json;
use tracing::warn;

use super::super::faults::Faults;
use super::super::notify::{self, Delivery, Target, Wire, new_notify_id};
use super::super::state::{Config, Shared, Trade};
use super::api::transaction;
use super::sign;

/// Resends after the first attempt, in seconds (divided by the time scale); then give up.
const RESEND_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10_800, 10_800, 10_800, 21_600, 21_600,
];

/// One notification to deliver: the sealed body is fixed, the headers are signed per attempt.
pub(crate) struct NotifyJob {
    target: Target,
    body: Bytes,
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
        target: Target::for_trade(trade, notify_id, faults),
        body: Bytes::from(envelope.to_string()),
    })
}

impl Delivery for NotifyJob {
    const NOTIFICATION: &'static str = "WeChat Pay notification";
    const RESEND_SCHEDULE_SECS: &'static [u64] = &RESEND_SCHEDULE_SECS;

    fn target(&self) -> &Target {
        &self.target
    }

    /// The fixed body under platform headers signed per attempt.
    fn wire(&self, shared: &Shared, forge: bool) -> anyhow::Result<Wire> {
        let cfg = shared
            .config
            .wechatpay
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no WeChat Pay configuration"))?;
        let mut headers = sign::platform_headers(cfg, &self.body, forge)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Wire {
            headers,
            body: self.body.clone(),
        })
    }

    /// Acknowledged by HTTP 200 or 204, whatever the body.
    fn acked(http_status: u16, _body: &[u8]) -> bool {
        matches!(http_status, 200 | 204)
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
