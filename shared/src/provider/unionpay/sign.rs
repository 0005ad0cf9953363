//! signMethod 01 of ACP 5.1.0, and the certificate checks that decide which key may verify.
//!
//! The signed content is every field but `signature`, sorted by key and joined as `k=v&k=v` with
//! raw (not URL-encoded) values, empty values included. What is signed with SHA256withRSA is not
//! that content but the 64 lower-case hex characters of its SHA-256, so the content is hashed
//! twice. UnionPay's answers and notifications carry their signing certificate in
//! `signPubKeyCert`; it is trusted only if the configured intermediate signed it, it names the
//! expected company in its CN, and it, the intermediate and the root are all valid at our now.

use std::collections::BTreeMap;

use x509_parser::certificate::X509Certificate;

use crate::crypto::{RsaSigner, RsaVerifier, sha256_hex};
use crate::domain::Timestamp;

/// Form fields keyed in byte order: the order UnionPay signs them in (keys are ASCII).
pub type Fields = BTreeMap<String, String>;

pub const SIGNATURE: &str = "signature";
pub const SIGN_CERT: &str = "signPubKeyCert";
pub const VERSION: &str = "5.1.0";
pub const SIGN_METHOD: &str = "01";

/// A configuration problem with the trusted certificates, found at cold start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("{what} is not a PEM certificate: {reason}")]
    Unreadable { what: &'static str, reason: String },
    #[error("the intermediate certificate is not signed by the root certificate")]
    IntermediateNotFromRoot,
}

/// Why a signed answer or notification is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signMethod {sign_method:?} / version {version:?} is not 01 / 5.1.0")]
    UnsupportedMethod {
        sign_method: String,
        version: String,
    },
    #[error("no signPubKeyCert")]
    MissingCert,
    #[error("signPubKeyCert is not readable: {0}")]
    UnreadableCert(String),
    #[error("signPubKeyCert is not signed by the configured intermediate certificate")]
    NotIssuedByIntermediate,
    #[error("certificate chain is not valid at unix second {0}")]
    OutsideValidity(i64),
    #[error("signPubKeyCert does not name {0:?} in its CN")]
    WrongSigner(String),
    #[error("signPubKeyCert key is not a usable RSA key: {0}")]
    UnusableKey(String),
    #[error("signature missing or does not verify")]
    BadSignature,
}

/// `k=v&k=v` over every field but `signature`.
pub fn signed_content(fields: &Fields) -> String {
    let mut content = String::with_capacity(fields.len() * 32);
    for (key, value) in fields.iter().filter(|(key, _)| key.as_str() != SIGNATURE) {
        if !content.is_empty() {
            content.push('&');
        }
        content.push_str(key);
        content.push('=');
        content.push_str(value);
    }
    content
}

/// The text actually given to SHA256withRSA: the hex SHA-256 of the content.
pub fn signed_digest(fields: &Fields) -> String {
    sha256_hex(signed_content(fields).as_bytes())
}

/// Sets `signature` over the other fields.
pub fn sign(fields: &mut Fields, key: &RsaSigner) {
    let signature = key.sign_base64(signed_digest(fields).as_bytes());
    fields.insert(SIGNATURE.to_owned(), signature);
}

pub fn signature_verifies(fields: &Fields, key: &RsaVerifier) -> bool {
    fields
        .get(SIGNATURE)
        .is_some_and(|signature| key.verify_base64(signed_digest(fields).as_bytes(), signature))
}

/// The DER of the first `CERTIFICATE` block of a PEM text (CRLF line breaks are fine).
fn certificate_der(pem_text: &str) -> Result<Vec<u8>, String> {
    let parsed = pem::parse(pem_text).map_err(|e| e.to_string())?;
    if parsed.tag() != "CERTIFICATE" {
        return Err(format!("PEM label {:?} is not CERTIFICATE", parsed.tag()));
    }
    Ok(parsed.into_contents())
}

fn certificate(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The decimal serial number of a PEM certificate: the `certId` that names our signing key.
pub fn cert_serial_decimal(cert_pem: &str) -> Result<String, TrustError> {
    let unreadable = |reason| TrustError::Unreadable {
        what: "the merchant signing certificate",
        reason,
    };
    let der = certificate_der(cert_pem).map_err(unreadable)?;
    let cert = certificate(&der).map_err(unreadable)?;
    Ok(cert.tbs_certificate.serial.to_string())
}

/// The configured UnionPay root and intermediate, checked and parsed once at cold start.
pub struct SignerTrust {
    intermediate_der: Vec<u8>,
    /// Unix seconds in which both the root and the intermediate are valid (inclusive).
    chain_not_before_s: i64,
    chain_not_after_s: i64,
    expected_cn: String,
}

impl std::fmt::Debug for SignerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerTrust")
            .field("expected_cn", &self.expected_cn)
            .finish_non_exhaustive()
    }
}

impl SignerTrust {
    pub fn new(
        root_pem: &str,
        intermediate_pem: &str,
        expected_cn: &str,
    ) -> Result<Self, TrustError> {
        let unreadable = |what| move |reason| TrustError::Unreadable { what, reason };
        let root_der = certificate_der(root_pem).map_err(unreadable("the root certificate"))?;
        let root = certificate(&root_der).map_err(unreadable("the root certificate"))?;
        let intermediate_der = certificate_der(intermediate_pem)
            .map_err(unreadable("the intermediate certificate"))?;
        let intermediate =
            certificate(&intermediate_der).map_err(unreadable("the intermediate certificate"))?;
        intermediate
            .verify_signature(Some(root.public_key()))
            .map_err(|_| TrustError::IntermediateNotFromRoot)?;
        let (root_from, root_until) = validity_s(&root);
        let (intermediate_from, intermediate_until) = validity_s(&intermediate);
        let (chain_not_before_s, chain_not_after_s) = (
            root_from.max(intermediate_from),
            root_until.min(intermediate_until),
        );
        Ok(Self {
            intermediate_der,
            chain_not_before_s,
            chain_not_after_s,
            expected_cn: expected_cn.to_owned(),
        })
    }

    /// The public key that may verify a message that came with `cert_pem`, at `now`.
    pub fn signer_key(&self, cert_pem: &str, now: Timestamp) -> Result<RsaVerifier, VerifyError> {
        let der = certificate_der(cert_pem).map_err(VerifyError::UnreadableCert)?;
        let leaf = certificate(&der).map_err(VerifyError::UnreadableCert)?;
        // Parsed successfully in `new`; failing here would mean memory corruption, so it is
        // simply treated as "not issued by the intermediate".
        let intermediate = certificate(&self.intermediate_der)
            .map_err(|_| VerifyError::NotIssuedByIntermediate)?;
        leaf.verify_signature(Some(intermediate.public_key()))
            .map_err(|_| VerifyError::NotIssuedByIntermediate)?;
        let (leaf_from, leaf_until) = validity_s(&leaf);
        let now_s = now.unix_s();
        if now_s < leaf_from.max(self.chain_not_before_s)
            || now_s > leaf_until.min(self.chain_not_after_s)
        {
            return Err(VerifyError::OutsideValidity(now_s));
        }
        if !names_signer(&leaf, &self.expected_cn) {
            return Err(VerifyError::WrongSigner(self.expected_cn.clone()));
        }
        RsaVerifier::from_der(leaf.public_key().raw)
            .map_err(|e| VerifyError::UnusableKey(e.to_string()))
    }

    /// Checks a signed answer or notification against the certificate it carries.
    pub fn verify(&self, fields: &Fields, now: Timestamp) -> Result<(), VerifyError> {
        let field = |key: &str| fields.get(key).map_or("", String::as_str);
        if field("signMethod") != SIGN_METHOD || field("version") != VERSION {
            return Err(VerifyError::UnsupportedMethod {
                sign_method: field("signMethod").to_owned(),
                version: field("version").to_owned(),
            });
        }
        let cert_pem = fields.get(SIGN_CERT).ok_or(VerifyError::MissingCert)?;
        let key = self.signer_key(cert_pem, now)?;
        if !signature_verifies(fields, &key) {
            return Err(VerifyError::BadSignature);
        }
        Ok(())
    }
}

/// notBefore and notAfter as Unix seconds.
fn validity_s(cert: &X509Certificate<'_>) -> (i64, i64) {
    let validity = cert.validity();
    (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    )
}

/// UnionPay's own rule (its SDK's `getIdentitiesFromCertficate`): the CN reads
/// `type@code@company@serial`, and the third `@`-field must be the expected company exactly.
fn names_signer(cert: &X509Certificate<'_>, expected: &str) -> bool {
    cert.subject().iter_common_name().any(|cn| {
        cn.as_str()
            .is_ok_and(|cn| cn.split('@').nth(2) == Some(expected))
    })
}
