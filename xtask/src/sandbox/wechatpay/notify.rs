//! `TRANSACTION.SUCCESS` and `REFUND.SUCCESS` notifications: the transaction (or the refund)
//! sealed with AEAD_AES_256_GCM under the APIv3 key, platform-signed headers, 200/204
//! acknowledgement, WeChat Pay's resend schedule, and the same fault knobs as the other
//! protocols.

use std::sync::Arc;

use axum::body::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tracing::warn;

use super::super::faults::Faults;
use super::super::notify::{self, Delivery, Target, Wire, new_notify_id};
use super::super::state::{Config, Refund, Shared, Trade};
use super::api::{beijing, transaction};
use super::{WechatPayConfig, sign};

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
    let body = sealed_envelope(cfg, &notify_id, Event::TRANSACTION, &plaintext)?;
    Some(NotifyJob {
        target: Target::for_trade(trade, notify_id, faults),
        body,
    })
}

/// What a notification's envelope says about its resource.
struct Event {
    event_type: &'static str,
    summary: &'static str,
    /// The resource's `original_type`, also its AES-GCM associated data.
    original_type: &'static str,
}

impl Event {
    const TRANSACTION: Self = Self {
        event_type: "TRANSACTION.SUCCESS",
        summary: "支付成功",
        original_type: "transaction",
    };
    const REFUND: Self = Self {
        event_type: "REFUND.SUCCESS",
        summary: "退款成功",
        original_type: "refund",
    };
}

/// The envelope around `plaintext` sealed under the APIv3 key; `None` (logged) if sealing fails.
fn sealed_envelope(
    cfg: &WechatPayConfig,
    notify_id: &str,
    event: Event,
    plaintext: &Value,
) -> Option<Bytes> {
    let nonce = sign::random_alnum(12);
    let ciphertext = match sign::seal(
        &cfg.api_v3_key,
        &nonce,
        event.original_type,
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
        "event_type": event.event_type,
        "resource_type": "encrypt-resource",
        "summary": event.summary,
        "resource": {
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "nonce": nonce,
            "associated_data": event.original_type,
            "original_type": event.original_type,
        },
    });
    Some(Bytes::from(envelope.to_string()))
}

/// The `REFUND.SUCCESS` notification of a refund that has just become SUCCESS, to the refund's
/// notify URL; `None` under `never_notify`, without a WeChat Pay configuration or without a
/// notify URL. `tamper_amount` seals `refund` and `payer_refund` + 1, signed correctly.
pub(crate) fn refund_job(
    config: &Config,
    trade: &Trade,
    refund: &Refund,
    faults: &Faults,
) -> Option<NotifyJob> {
    let cfg = config.wechatpay.as_ref()?;
    if faults.never_notify() || refund.notify_url.is_empty() {
        return None;
    }
    let amount = refund
        .amount_minor
        .saturating_add(i64::from(faults.tamper_amount()));
    let success_time = refund.succeeded_at.as_deref().map(beijing);
    let plaintext = json!({
        "mchid": cfg.mchid,
        "out_trade_no": trade.out_trade_no,
        "transaction_id": trade.trade_no,
        "out_refund_no": refund.refund_no,
        "refund_id": refund.provider_refund_no,
        "refund_status": "SUCCESS",
        "success_time": success_time,
        "user_received_account": "支付用户零钱",
        "amount": {
            "total": trade.amount_minor,
            "refund": amount,
            "payer_total": trade.amount_minor,
            "payer_refund": amount,
        },
    });
    let notify_id = new_notify_id();
    let body = sealed_envelope(cfg, &notify_id, Event::REFUND, &plaintext)?;
    Some(NotifyJob {
        target: Target::for_refund(trade, refund, notify_id, faults),
        body,
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
