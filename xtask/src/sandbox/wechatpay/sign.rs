//! WeChat Pay API v3 signatures (SHA256withRSA, standard base64) and the AEAD_AES_256_GCM
//! resource sealing, built here from the specification.

use anyhow::anyhow;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;
use time::macros::{format_description, offset};

use super::super::keys;
use super::super::state::unix_now;
use super::WechatPayConfig;

/// The Authorization scheme (and `Wechatpay-Signature-Type`).
pub(crate) const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

pub(crate) const HEADER_TIMESTAMP: &str = "wechatpay-timestamp";
pub(crate) const HEADER_NONCE: &str = "wechatpay-nonce";
pub(crate) const HEADER_SIGNATURE: &str = "wechatpay-signature";
pub(crate) const HEADER_SERIAL: &str = "wechatpay-serial";
pub(crate) const HEADER_SIGNATURE_TYPE: &str = "wechatpay-signature-type";

/// The fields of an `Authorization: WECHATPAY2-SHA256-RSA2048 k="v",...` header.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: String,
    pub serial_no: String,
}

/// Parses the header; `None` when the scheme is not ours or a field is missing or repeated.
pub(crate) fn parse_authorization(header: &str) -> Option<Authorization> {
    let rest = header.strip_prefix(SCHEME)?.strip_prefix(' ')?;
    let mut auth = Authorization::default();
    let mut seen = Vec::new();
    for field in rest.split(',') {
        let (key, value) = field.trim().split_once('=')?;
        let value = value.strip_prefix('"')?.strip_suffix('"')?.to_owned();
        let slot = match key {
            "mchid" => &mut auth.mchid,
            "nonce_str" => &mut auth.nonce_str,
            "signature" => &mut auth.signature,
            "timestamp" => &mut auth.timestamp,
            "serial_no" => &mut auth.serial_no,
            _ => continue,
        };
        if seen.contains(&key) {
            return None;
        }
        seen.push(key);
        *slot = value;
    }
    (seen.len() == 5).then_some(auth)
}

/// `METHOD\nURL\ntimestamp\nnonce\nbody\n`: what the merchant signs (URL is path plus query).
pub(crate) fn request_message(
    method: &str,
    url: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut msg = format!("{method}\n{url}\n{timestamp}\n{nonce}\n").into_bytes();
    msg.extend_from_slice(body);
    msg.push(b'\n');
    msg
}

/// `ts\nnonce\nbody\n`: what the platform signs (answers and notifications).
pub(crate) fn platform_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = format!("{timestamp}\n{nonce}\n").into_bytes();
    msg.extend_from_slice(body);
    msg.push(b'\n');
    msg
}

/// `n` random characters from `[0-9A-Z]`.
pub(crate) fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = vec![0u8; n];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Never expected; ULID randomness is the fallback.
        let fallback = ulid::Ulid::new().0.to_le_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = fallback[i % fallback.len()];
        }
    }
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The platform's signature headers over `body`; `forge` breaks the signature.
pub(crate) fn platform_headers(
    cfg: &WechatPayConfig,
    body: &[u8],
    forge: bool,
) -> anyhow::Result<HeaderMap> {
    let timestamp = unix_now().to_string();
    let nonce = random_alnum(32);
    let mut signature = keys::sign(
        &cfg.platform_key,
        &platform_message(&timestamp, &nonce, body),
    )?;
    if forge {
        signature = keys::forge(&signature);
    }
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_TIMESTAMP, HeaderValue::try_from(timestamp)?);
    headers.insert(HEADER_NONCE, HeaderValue::try_from(nonce)?);
    headers.insert(HEADER_SIGNATURE, HeaderValue::try_from(signature)?);
    headers.insert(
        HEADER_SERIAL,
        HeaderValue::try_from(cfg.platform_public_key_id.as_str())?,
    );
    headers.insert(HEADER_SIGNATURE_TYPE, HeaderValue::from_static(SCHEME));
    Ok(headers)
}

/// AEAD_AES_256_GCM: base64(ciphertext || tag) of `plaintext` under the APIv3 key.
pub(crate) fn seal(
    api_v3_key: &[u8],
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> anyhow::Result<String> {
    let key = UnboundKey::new(&AES_256_GCM, api_v3_key)
        .map_err(|_| anyhow!("APIv3 key must be 32 bytes"))?;
    let key = LessSafeKey::new(key);
    let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes())
        .map_err(|_| anyhow!("AES-GCM nonce must be 12 bytes"))?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut in_out)
        .map_err(|_| anyhow!("AES-GCM sealing failed"))?;
    Ok(STANDARD.encode(in_out))
}

/// Now in Beijing time as RFC 3339, e.g. `2026-01-02T03:04:05+08:00`.
pub(crate) fn beijing_rfc3339_now() -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+08:00");
    OffsetDateTime::now_utc()
        .to_offset(offset!(+8))
        .format(&format)
        .unwrap_or_default()
}
