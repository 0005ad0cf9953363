//! Alipay RSA2 signing content: `k=v` pairs sorted by key (ASCII), empty values and the excluded
//! keys dropped, joined by `&`; SHA256withRSA, standard base64.

use aws_lc_rs::rsa::KeyPair;
use serde_json::Value;

use super::super::keys;

/// The signed text of a parameter set.
pub(crate) fn content(params: &[(String, String)], excluded: &[&str]) -> String {
    let mut kept: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !excluded.contains(&k.as_str()))
        .collect();
    kept.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    kept.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A request from the app: `sign` over every other parameter (`sign_type` included).
pub(crate) fn verify_request(app_public_der: &[u8], params: &[(String, String)]) -> bool {
    let Some((_, signature)) = params.iter().find(|(k, _)| k == "sign") else {
        return false;
    };
    keys::verify(
        app_public_der,
        content(params, &["sign"]).as_bytes(),
        signature,
    )
}

/// A notification: `sign` over every parameter but `sign` and `sign_type`.
pub(crate) fn sign_notification(
    alipay_key: &KeyPair,
    params: &[(String, String)],
) -> anyhow::Result<String> {
    keys::sign(
        alipay_key,
        content(params, &["sign", "sign_type"]).as_bytes(),
    )
}

/// `{"<response_key>":<value>,"sign":"<b64>"}`, the signature over the exact value text sent.
pub(crate) fn signed_answer(
    alipay_key: &KeyPair,
    response_key: &str,
    value: &Value,
) -> anyhow::Result<String> {
    let value_text = serde_json::to_string(value)?;
    let key_text = serde_json::to_string(response_key)?;
    let signature = keys::sign(alipay_key, value_text.as_bytes())?;
    Ok(format!(
        "{{{key_text}:{value_text},\"sign\":\"{signature}\"}}"
    ))
}
