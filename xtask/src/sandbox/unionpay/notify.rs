//! `backUrl` notifications of a paid consume and of a refund that succeeded: a URL-encoded form
//! signed as UnionPay (with `signPubKeyCert`), acknowledged by HTTP 200, resent at 1, 2, 4, 8
//! and 16 minutes (divided by the time scale), under the same fault knobs as the other
//! protocols.

use std::sync::Arc;

use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};

use super::super::faults::Faults;
use super::super::notify::{self, Delivery, Target, Wire};
use super::super::state::{Config, Refund, Shared, Trade};
use super::sign::{self, Fields};

/// Resends after the first attempt, in seconds (divided by the time scale); then give up.
const RESEND_SCHEDULE_SECS: [u64; 5] = [60, 120, 240, 480, 960];

/// One notification to deliver: the fields are fixed, the signature is made per attempt.
/// The target's `out_trade_no` is the `orderId`, its `notify_id` the `queryId` (which names
/// the notification in the delivery log), its `notify_url` the `backUrl`.
pub(crate) struct NotifyJob {
    target: Target,
    fields: Fields,
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
        target: Target::for_trade(trade, trade.trade_no.clone(), faults),
        fields,
    })
}

/// The `backUrl` notification of a refund (txnType 04) that has just become SUCCESS, to the
/// refund's own `backUrl`: `orderId` and `txnTime` the refund's, `origQryId` the consume's
/// `queryId`, `queryId` the refund's (it names the notification in the delivery log), and the
/// request's `reqReserved` echoed. `None` under `never_notify` or without a UnionPay
/// configuration. `tamper_amount` adds a fen to `txnAmt` (still validly signed).
pub(crate) fn refund_job(
    config: &Config,
    trade: &Trade,
    refund: &Refund,
    faults: &Faults,
) -> Option<NotifyJob> {
    let cfg = config.unionpay.as_ref()?;
    if faults.never_notify() || refund.notify_url.is_empty() {
        return None;
    }
    let tamper = i64::from(faults.tamper_amount());
    let amount = refund.amount_minor.saturating_add(tamper).to_string();
    let now = china_now();
    let query_id = refund.provider_refund_no.as_str();
    let trace_no = query_id.chars().rev().take(6).collect::<String>();
    let mut fields = Fields::new();
    for (key, value) in [
        ("version", sign::VERSION),
        ("encoding", "UTF-8"),
        ("signMethod", sign::SIGN_METHOD),
        ("bizType", "000000"),
        ("txnType", "04"),
        ("txnSubType", "00"),
        ("accessType", "0"),
        ("merId", cfg.mer_id.as_str()),
        ("orderId", refund.refund_no.as_str()),
        ("txnTime", refund.txn_time.as_str()),
        ("txnAmt", amount.as_str()),
        ("currencyCode", "156"),
        ("settleAmt", amount.as_str()),
        ("settleCurrencyCode", "156"),
        ("settleDate", now.get(4..8).unwrap_or_default()),
        ("traceNo", trace_no.as_str()),
        ("traceTime", now.get(4..).unwrap_or_default()),
        ("queryId", query_id),
        ("origQryId", trade.trade_no.as_str()),
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        (sign::SIGN_CERT, cfg.signer_cert_pem.as_str()),
    ] {
        fields.insert(key.into(), value.into());
    }
    if !refund.req_reserved.is_empty() {
        fields.insert("reqReserved".into(), refund.req_reserved.clone());
    }
    Some(NotifyJob {
        target: Target::for_refund(trade, refund, query_id.to_owned(), faults),
        fields,
    })
}

impl Delivery for NotifyJob {
    const NOTIFICATION: &'static str = "UnionPay notification";
    const RESEND_SCHEDULE_SECS: &'static [u64] = &RESEND_SCHEDULE_SECS;

    fn target(&self) -> &Target {
        &self.target
    }

    /// The form re-signed per attempt, so the `forge` knob applies as it is set now.
    fn wire(&self, shared: &Shared, forge: bool) -> anyhow::Result<Wire> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded;charset=UTF-8"),
        );
        let body = signed_body(shared, self, forge)?;
        Ok(Wire {
            headers,
            body: body.into(),
        })
    }

    /// Acknowledged by HTTP 200, whatever the body.
    fn acked(http_status: u16, _body: &[u8]) -> bool {
        http_status == 200
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
