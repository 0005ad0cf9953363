//! Keys: the platform keys that sign answers and notifications (certificates or, in the newer
//! mode, bare public keys with a `PUB_KEY_ID_` id), the check of that signature, and the APIv3
//! key that opens AES-GCM notification resources.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::crypto::{KeyError, RsaVerifier};
use crate::domain::Timestamp;
use crate::ports::CallbackRejection;

/// Answers and notifications whose signed timestamp is this far off our clock (or further) are
/// refused, as the WeChat Pay SDKs do.
pub const REPLAY_WINDOW_S: u64 = 300;

/// Platform public keys (the mode that replaces platform certificates) have ids with this prefix.
pub const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";

/// More platform keys than this at once is a configuration mistake, not a rotation.
pub const PLATFORM_KEYS_MAX: usize = 16;

/// The only signature scheme WeChat Pay v3 uses with RSA keys.
const SIGNATURE_TYPE: &str = "WECHATPAY2-SHA256-RSA2048";

/// Longest key id we accept or echo into an error message.
const KEY_ID_MAX: usize = 64;

/// Loads every certificate of a PEM bundle as a platform key named by its serial (upper-case hex,
/// as `Wechatpay-Serial` carries it).
pub fn platform_certificates(pem_text: &str) -> Result<Vec<(String, RsaVerifier)>, KeyError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| KeyError::Pem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(KeyError::Pem("no PEM block found".into()));
    }
    if blocks.len() > PLATFORM_KEYS_MAX {
        return Err(KeyError::Rejected(format!(
            "more than {PLATFORM_KEYS_MAX} certificates in one bundle"
        )));
    }
    blocks
        .iter()
        .map(|block| match block.tag() {
            "CERTIFICATE" => certificate_key(block.contents()),
            other => Err(KeyError::Label(other.to_owned())),
        })
        .collect()
}

/// Loads a platform public key (PEM `PUBLIC KEY`). A bare key names nothing, so its id comes
/// from the merchant platform, where it is shown next to the key.
pub fn platform_public_key(
    public_key_id: &str,
    pem_text: &str,
) -> Result<(String, RsaVerifier), KeyError> {
    let well_formed = public_key_id.len() <= KEY_ID_MAX
        && public_key_id
            .strip_prefix(PUBLIC_KEY_ID_PREFIX)
            .is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            });
    if !well_formed {
        return Err(KeyError::Rejected(format!(
            "platform public key ids look like {PUBLIC_KEY_ID_PREFIX}<digits>"
        )));
    }
    Ok((public_key_id.to_owned(), RsaVerifier::from_pem(pem_text)?))
}

fn certificate_key(der: &[u8]) -> Result<(String, RsaVerifier), KeyError> {
    let (rest, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| KeyError::Rejected(format!("certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(KeyError::Rejected(
            "certificate: trailing bytes after the DER".into(),
        ));
    }
    let serial = serial_hex(certificate.raw_serial());
    let verifier = RsaVerifier::from_der(certificate.public_key().raw)?;
    Ok((serial, verifier))
}

/// Upper-case hex of the serial's magnitude, as WeChat Pay names certificates. DER prefixes a
/// zero byte to positive serials whose top bit is set; that byte is not part of the name.
pub(super) fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode_upper(raw.get(start..).unwrap_or_default())
}

/// Whether an answer carries a platform signature at all.
pub(super) fn is_signed(headers: &http::HeaderMap) -> bool {
    headers.contains_key("wechatpay-signature")
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Keeps attacker-chosen header text short in error messages and logs.
fn clip(text: &str) -> &str {
    text.get(..KEY_ID_MAX).unwrap_or(text)
}

/// `timestamp\nnonce\nbody\n`: what the platform signs on answers and notifications.
pub(super) fn platform_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + timestamp.len() + nonce.len() + 3);
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// Checks the platform signature over the raw body, with the key `Wechatpay-Serial` names, then
/// the replay window. WeChat Pay's periodic "signature probes" (`WECHATPAY/SIGNTEST/...`) fail
/// here on purpose: they test that we refuse what does not verify.
pub(super) fn verify_platform_signature(
    keys: &[(String, RsaVerifier)],
    headers: &http::HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<(), CallbackRejection> {
    let missing = |h: &str| CallbackRejection::BadSignature(format!("missing {h}"));
    let timestamp =
        header(headers, "wechatpay-timestamp").ok_or_else(|| missing("Wechatpay-Timestamp"))?;
    let nonce = header(headers, "wechatpay-nonce").ok_or_else(|| missing("Wechatpay-Nonce"))?;
    let serial = header(headers, "wechatpay-serial").ok_or_else(|| missing("Wechatpay-Serial"))?;
    let signature =
        header(headers, "wechatpay-signature").ok_or_else(|| missing("Wechatpay-Signature"))?;
    if let Some(kind) = header(headers, "wechatpay-signature-type")
        && kind != SIGNATURE_TYPE
    {
        return Err(CallbackRejection::BadSignature(format!(
            "unsupported Wechatpay-Signature-Type {:?}",
            clip(kind)
        )));
    }
    let key = keys
        .iter()
        .find(|(id, _)| id == serial)
        .map(|(_, key)| key)
        .ok_or_else(|| {
            CallbackRejection::BadSignature(format!("unknown Wechatpay-Serial {:?}", clip(serial)))
        })?;
    if !key.verify_base64(&platform_message(timestamp, nonce, body), signature) {
        return Err(CallbackRejection::BadSignature(format!(
            "does not verify with platform key {serial}"
        )));
    }
    check_replay_window(timestamp, now)
}

/// Compares whole seconds, as the SDKs do: |now - timestamp| >= 300 is stale.
fn check_replay_window(timestamp: &str, now: Timestamp) -> Result<(), CallbackRejection> {
    let malformed =
        || CallbackRejection::Malformed("Wechatpay-Timestamp is not unix seconds".into());
    if timestamp.is_empty()
        || timestamp.len() > 12
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(malformed());
    }
    let signed_at_s: i64 = timestamp.parse().map_err(|_| malformed())?;
    let skew_s = now.unix_s().abs_diff(signed_at_s);
    if skew_s >= REPLAY_WINDOW_S {
        return Err(CallbackRejection::StaleTimestamp {
            skew_s,
            limit_s: REPLAY_WINDOW_S,
        });
    }
    Ok(())
}

/// The APIv3 key, ready to open notification resources. Production keys are 32 bytes
/// (AES-256-GCM); 16-byte keys (AES-128-GCM) are accepted because the SDKs' test vectors use them.
pub(super) struct ApiV3Key(LessSafeKey);

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

impl ApiV3Key {
    pub(super) fn new(bytes: &[u8]) -> Result<Self, String> {
        let algorithm = match bytes.len() {
            32 => &AES_256_GCM,
            16 => &AES_128_GCM,
            n => {
                return Err(format!(
                    "the APIv3 key must be 32 bytes (16 for test vectors), not {n}"
                ));
            }
        };
        let key = UnboundKey::new(algorithm, bytes).map_err(|_| "APIv3 key rejected".to_owned())?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Opens `base64(ciphertext || tag)`. A failed tag check means the resource is not authentic:
    /// a bad signature, not a malformed message.
    pub(super) fn open(
        &self,
        nonce: &str,
        associated_data: &str,
        ciphertext_b64: &str,
    ) -> Result<Vec<u8>, CallbackRejection> {
        let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes())
            .map_err(|_| CallbackRejection::Malformed("resource nonce must be 12 bytes".into()))?;
        let mut in_out = STANDARD.decode(ciphertext_b64).map_err(|_| {
            CallbackRejection::Malformed("resource ciphertext is not base64".into())
        })?;
        let plaintext = self
            .0
            .open_in_place(nonce, Aad::from(associated_data.as_bytes()), &mut in_out)
            .map_err(|_| {
                CallbackRejection::BadSignature("resource fails AES-GCM authentication".into())
            })?;
        Ok(plaintext.to_vec())
    }
}
