//! Alipay's asynchronous notifications: a form-urlencoded POST whose `sign` covers the decoded
//! parameters, sorted and joined. There is no per-delivery timestamp (Alipay resends the same
//! notification for about 25 hours), so there is no replay window: the guarded transition makes
//! a replay harmless.

use std::collections::BTreeMap;

use crate::crypto::RsaVerifier;
use crate::domain::{Currency, PaymentId};
use crate::ports::{CallbackRejection, Notification};

use super::answer::trade_status;
use super::wire::{SIGN_TYPE, notify_sign_content};

/// A trade notification has about 30 parameters; far more is not one.
pub const MAX_PARAMS: usize = 128;

fn malformed(why: impl Into<String>) -> CallbackRejection {
    CallbackRejection::Malformed(why.into())
}

/// The url-decoded parameters. A repeated name is refused: we could not tell which value the
/// signature covers.
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, CallbackRejection> {
    let mut params = BTreeMap::new();
    for (count, (key, value)) in form_urlencoded::parse(body).enumerate() {
        if count >= MAX_PARAMS {
            return Err(malformed(format!("more than {MAX_PARAMS} parameters")));
        }
        if params.contains_key(key.as_ref()) {
            return Err(malformed(format!("parameter {key} repeated")));
        }
        params.insert(key.into_owned(), value.into_owned());
    }
    Ok(params)
}

/// Checks `sign` with Alipay's public key: first by the trade rule (without `sign_type`), then
/// by the open-platform rule that keeps `sign_type`, as Alipay's own SDK does.
pub fn verify_params(
    params: &BTreeMap<String, String>,
    alipay_key: &RsaVerifier,
) -> Result<(), CallbackRejection> {
    let sign = params
        .get("sign")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CallbackRejection::BadSignature("missing sign".into()))?;
    if let Some(sign_type) = params.get("sign_type")
        && sign_type != SIGN_TYPE
    {
        return Err(CallbackRejection::BadSignature(format!(
            "unsupported sign_type {sign_type:?}"
        )));
    }
    let verifies = [false, true].into_iter().any(|keep_sign_type| {
        let content = notify_sign_content(params, keep_sign_type);
        alipay_key.verify_base64(content.as_bytes(), sign)
    });
    if !verifies {
        return Err(CallbackRejection::BadSignature(
            "does not verify with the Alipay public key".into(),
        ));
    }
    Ok(())
}

fn field<'a>(
    params: &'a BTreeMap<String, String>,
    name: &str,
) -> Result<&'a str, CallbackRejection> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| malformed(format!("missing {name}")))
}

/// Turns verified parameters into our one notification shape, after checking that it is for
/// our app (and our seller account, when one is configured).
pub fn notification(
    params: &BTreeMap<String, String>,
    app_id: &str,
    seller_id: Option<&str>,
) -> Result<Notification, CallbackRejection> {
    let notified_app = field(params, "app_id")?;
    if notified_app != app_id {
        return Err(CallbackRejection::WrongMerchant(format!(
            "app_id {notified_app}"
        )));
    }
    if let Some(seller_id) = seller_id {
        let notified_seller = params.get("seller_id").map_or("", String::as_str);
        if notified_seller != seller_id {
            return Err(CallbackRejection::WrongMerchant(format!(
                "seller_id {notified_seller:?}"
            )));
        }
    }
    let payment_id = PaymentId::parse(field(params, "out_trade_no")?)
        .map_err(|e| malformed(format!("out_trade_no: {e}")))?;
    let status_text = field(params, "trade_status")?;
    let status = trade_status(status_text)
        .ok_or_else(|| malformed(format!("unknown trade_status {status_text:?}")))?;
    // Alipay amounts are CNY, in decimal yuan; parsed exactly or not at all.
    let amount_text = params.get("total_amount").map_or("", String::as_str);
    let amount_minor = Currency::Cny
        .parse_major(amount_text)
        .map_err(|e| malformed(format!("total_amount {amount_text:?}: {e}")))?;
    Ok(Notification {
        notify_id: field(params, "notify_id")?.to_owned(),
        payment_id,
        provider_trade_no: params.get("trade_no").filter(|t| !t.is_empty()).cloned(),
        status,
        amount_minor,
        currency: Currency::Cny,
    })
}
