//! What we send: the string Alipay verifies our requests against, the signed form body, and
//! the China-time stamps the gateway expects. All pure, so tests can check them byte for byte.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::macros::{format_description, offset};

use crate::crypto::RsaSigner;
use crate::domain::{PaymentId, Timestamp};

/// The only signature type we speak: SHA256withRSA.
pub const SIGN_TYPE: &str = "RSA2";
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded;charset=utf-8";

/// Joins already-sorted pairs as `k=v&k=v`, values raw (no url-encoding).
fn join<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut content = String::new();
    for (key, value) in pairs {
        if !content.is_empty() {
            content.push('&');
        }
        content.push_str(key);
        content.push('=');
        content.push_str(value);
    }
    content
}

/// The content Alipay checks a request's `sign` against: every parameter except `sign` (so
/// `sign_type` is included), empty values dropped, keys in ASCII order, values as they are.
pub fn request_sign_content<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    // `str` orders by bytes, which is ASCII order for Alipay's ASCII keys.
    let sorted: BTreeMap<&str, &str> = params
        .into_iter()
        .filter(|(key, value)| *key != "sign" && !value.is_empty())
        .collect();
    join(sorted)
}

/// The content of a notification's `sign`: every received parameter (empty ones too, as the
/// SDKs' `getSignCheckContentV1` does) except `sign`, and except `sign_type` unless
/// `keep_sign_type`. Trade notifications drop `sign_type`; some open-platform ones keep it.
pub fn notify_sign_content(params: &BTreeMap<String, String>, keep_sign_type: bool) -> String {
    join(
        params
            .iter()
            .filter(|(key, _)| *key != "sign" && (keep_sign_type || *key != "sign_type"))
            .map(|(key, value)| (key.as_str(), value.as_str())),
    )
}

/// `yyyy-MM-dd HH:mm:ss` in China time (UTC+8, no daylight saving): the gateway's `timestamp`
/// and `time_expire` format. `None` only for instants outside the calendar's range.
pub fn china_time(at: Timestamp) -> Option<String> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    OffsetDateTime::from_unix_timestamp(at.unix_s())
        .ok()?
        .checked_to_offset(offset!(+8))?
        .format(format)
        .ok()
}

/// One gateway call before signing.
#[derive(Debug, Clone, Copy)]
pub struct GatewayCall<'a> {
    pub app_id: &'a str,
    pub method: &'a str,
    pub biz_content: &'a str,
    /// Only calls that start a trade name a notify URL.
    pub notify_url: Option<&'a str>,
    /// [`china_time`] of the clock's now.
    pub timestamp: &'a str,
}

impl GatewayCall<'_> {
    fn params(&self) -> Vec<(&str, &str)> {
        let mut params = vec![
            ("app_id", self.app_id),
            ("method", self.method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", SIGN_TYPE),
            ("timestamp", self.timestamp),
            ("version", "1.0"),
            ("biz_content", self.biz_content),
        ];
        if let Some(url) = self.notify_url {
            params.push(("notify_url", url));
        }
        // Empty values are left out of the form as they are left out of the signature, so the
        // two can never disagree.
        params.retain(|(_, value)| !value.is_empty());
        params
    }

    /// The form body to post: the common parameters, `biz_content` and `sign`.
    pub fn signed_form(&self, key: &RsaSigner) -> String {
        let params = self.params();
        let sign = key.sign_base64(request_sign_content(params.iter().copied()).as_bytes());
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.extend_pairs(params);
        form.append_pair("sign", &sign);
        form.finish()
    }
}

/// The gateway URL with `charset=utf-8` in its query, where Alipay's own SDKs put it: the
/// gateway needs the charset before it can decode the form.
pub fn post_url(gateway_url: &str) -> String {
    if gateway_url.contains("charset=") {
        return gateway_url.to_owned();
    }
    let separator = if gateway_url.contains('?') { '&' } else { '?' };
    format!("{gateway_url}{separator}charset=utf-8")
}

/// `biz_content` of `alipay.trade.precreate`. `total_amount` is decimal yuan, `time_expire`
/// China time.
pub fn precreate_biz(
    payment_id: &PaymentId,
    total_amount: &str,
    subject: &str,
    time_expire: &str,
) -> String {
    serde_json::json!({
        "out_trade_no": payment_id.as_str(),
        "total_amount": total_amount,
        "subject": subject,
        "time_expire": time_expire,
    })
    .to_string()
}

/// `biz_content` of `alipay.trade.query` and `alipay.trade.close`.
pub fn trade_biz(payment_id: &PaymentId) -> String {
    serde_json::json!({ "out_trade_no": payment_id.as_str() }).to_string()
}

/// `biz_content` of `alipay.trade.refund`. `out_request_no` makes a repeat of the same refund
/// idempotent at Alipay.
pub fn refund_biz(
    payment_id: &PaymentId,
    refund_id: &str,
    refund_amount: &str,
    reason: &str,
) -> String {
    let mut biz = serde_json::json!({
        "out_trade_no": payment_id.as_str(),
        "out_request_no": refund_id,
        "refund_amount": refund_amount,
    });
    if !reason.is_empty() {
        biz["refund_reason"] = serde_json::Value::from(reason);
    }
    biz.to_string()
}

/// `biz_content` of `alipay.trade.fastpay.refund.query`: the trade and the refund's
/// `out_request_no`.
pub fn refund_query_biz(payment_id: &PaymentId, refund_id: &str) -> String {
    serde_json::json!({
        "out_trade_no": payment_id.as_str(),
        "out_request_no": refund_id,
    })
    .to_string()
}
