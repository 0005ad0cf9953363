//! ACP 5.1.0 signMethod 01, built here from the specification: the content is every field but
//! `signature`, sorted by key, joined `k=v&k=v` with raw values; SHA256withRSA signs the 64
//! lower-case hex characters of that content's SHA-256. Also the form codec of requests and
//! notifications, and the raw `k=v&...` text of answers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rsa::KeyPair;

use super::super::keys;

/// Fields by key, in byte order: the order they are signed in.
pub(crate) type Fields = BTreeMap<String, String>;

pub(crate) const SIGNATURE: &str = "signature";
pub(crate) const SIGN_CERT: &str = "signPubKeyCert";
pub(crate) const VERSION: &str = "5.1.0";
pub(crate) const SIGN_METHOD: &str = "01";

/// `k=v&k=v` over every field but `signature`.
pub(crate) fn signed_content(fields: &Fields) -> String {
    fields
        .iter()
        .filter(|(key, _)| key.as_str() != SIGNATURE)
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The lower-case hex SHA-256 of the signed content: what the RSA signature is over.
pub(crate) fn digest_hex(fields: &Fields) -> String {
    let hash = digest(&SHA256, signed_content(fields).as_bytes());
    let mut hex = String::with_capacity(64);
    for b in hash.as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Sets `signature` over the other fields; `forge` breaks it.
pub(crate) fn sign(fields: &mut Fields, key: &KeyPair, forge: bool) -> anyhow::Result<()> {
    let mut signature = keys::sign(key, digest_hex(fields).as_bytes())?;
    if forge {
        signature = keys::forge(&signature);
    }
    fields.insert(SIGNATURE.into(), signature);
    Ok(())
}

/// Whether `signature` verifies over the other fields with `public_der`.
pub(crate) fn verifies(fields: &Fields, public_der: &[u8]) -> bool {
    fields
        .get(SIGNATURE)
        .is_some_and(|sig| keys::verify(public_der, digest_hex(fields).as_bytes(), sig))
}

/// A synchronous answer: raw `k=v&k=v`, not URL-encoded (as UnionPay answers).
pub(crate) fn answer_text(fields: &Fields) -> String {
    fields
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `application/x-www-form-urlencoded`.
pub(crate) fn form_encode(fields: &Fields) -> String {
    fields
        .iter()
        .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.*".contains(&b) {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Parses a URL-encoded form; `None` when malformed, not UTF-8, or a key repeats.
pub(crate) fn form_decode(body: &[u8]) -> Option<Fields> {
    let mut fields = Fields::new();
    if body.is_empty() {
        return Some(fields);
    }
    for pair in body.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let eq = pair.iter().position(|b| *b == b'=');
        let (key, value) = match eq {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let (key, value) = (percent_decode(key)?, percent_decode(value)?);
        if fields.insert(key, value).is_some() {
            return None;
        }
    }
    Some(fields)
}

fn percent_decode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
