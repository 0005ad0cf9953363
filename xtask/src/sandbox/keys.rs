//! RSA-2048 / SHA256withRSA (PKCS#1 v1.5) keys and the sandbox canonical messages.
//!
//! Written independently of the adapter: aws-lc-rs is used for the RSA primitive only.

use anyhow::{Context, anyhow, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A freshly generated RSA key pair in PEM form.
#[derive(Clone)]
pub struct KeyPairPem {
    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8).
    pub private_pkcs8_pem: String,
    /// `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo).
    pub public_spki_pem: String,
}

impl std::fmt::Debug for KeyPairPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPairPem")
            .field("public_spki_pem", &self.public_spki_pem)
            .finish_non_exhaustive()
    }
}

/// Generates an RSA-2048 key pair.
pub fn generate_rsa_2048() -> anyhow::Result<KeyPairPem> {
    let pair =
        KeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow!("RSA key generation failed"))?;
    let private = pair
        .as_der()
        .map_err(|_| anyhow!("PKCS#8 encoding failed"))?;
    let public = pair
        .public_key()
        .as_der()
        .map_err(|_| anyhow!("SPKI encoding failed"))?;
    Ok(KeyPairPem {
        private_pkcs8_pem: to_pem("PRIVATE KEY", private.as_ref()),
        public_spki_pem: to_pem("PUBLIC KEY", public.as_ref()),
    })
}

/// Signs `timestamp\nnonce\nbody\n` with the provider key; returns base64.
pub fn sign_provider_message(
    private_pkcs8_pem: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> anyhow::Result<String> {
    let key = parse_private_key(private_pkcs8_pem)?;
    sign(&key, &provider_message(timestamp, nonce, body))
}

/// `timestamp\nnonce\nbody\n`: what the provider signs (responses and notifications).
pub(crate) fn provider_message(timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = format!("{timestamp}\n{nonce}\n").into_bytes();
    msg.extend_from_slice(body);
    msg.push(b'\n');
    msg
}

/// `METHOD\nPATH\ntimestamp\nnonce\nbody\n`: what the merchant signs.
/// `timestamp` is the header text exactly as the merchant sent it.
pub(crate) fn merchant_message(
    method: &str,
    path: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut msg = format!("{method}\n{path}\n{timestamp}\n{nonce}\n").into_bytes();
    msg.extend_from_slice(body);
    msg.push(b'\n');
    msg
}

/// Parses a PKCS#8 PEM private key.
pub(crate) fn parse_private_key(pem_text: &str) -> anyhow::Result<KeyPair> {
    let der = pem_der(pem_text, &["PRIVATE KEY"])?;
    KeyPair::from_pkcs8(&der).map_err(|e| anyhow!("invalid PKCS#8 RSA private key: {e}"))
}

/// Parses a public key PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`) into DER.
pub(crate) fn parse_public_key(pem_text: &str) -> anyhow::Result<Vec<u8>> {
    pem_der(pem_text, &["PUBLIC KEY", "RSA PUBLIC KEY"])
}

/// Signs `msg` and returns standard base64.
pub(crate) fn sign(key: &KeyPair, msg: &[u8]) -> anyhow::Result<String> {
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        msg,
        &mut sig,
    )
    .map_err(|_| anyhow!("RSA signing failed"))?;
    Ok(STANDARD.encode(sig))
}

/// Verifies a base64 signature over `msg` with a DER public key (SPKI or PKCS#1).
pub(crate) fn verify(public_der: &[u8], msg: &[u8], signature_b64: &str) -> bool {
    let Ok(sig) = STANDARD.decode(signature_b64.trim()) else {
        return false;
    };
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_der)
        .verify(msg, &sig)
        .is_ok()
}

/// Breaks a base64 signature while keeping it valid base64 of the same length.
pub(crate) fn forge(signature_b64: &str) -> String {
    let mut raw = STANDARD
        .decode(signature_b64)
        .unwrap_or_else(|_| vec![0u8; 256]);
    for b in raw.iter_mut().take(8) {
        *b ^= 0xFF;
    }
    STANDARD.encode(raw)
}

fn pem_der(pem_text: &str, tags: &[&str]) -> anyhow::Result<Vec<u8>> {
    let parsed = pem::parse(pem_text.trim()).context("invalid PEM")?;
    if !tags.contains(&parsed.tag()) {
        bail!(
            "unexpected PEM tag {:?}, wanted one of {tags:?}",
            parsed.tag()
        );
    }
    Ok(parsed.into_contents())
}

fn to_pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}
