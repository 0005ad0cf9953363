//! Provider adapters behind [`crate::ports::PaymentProvider`]. Each speaks its provider's wire
//! protocol over the one RSA module, [`crate::crypto`].

pub mod alipay;
pub mod sandbox;
#[cfg(test)]
pub(crate) mod test_callback;
#[cfg(test)]
pub(crate) mod test_http;
#[cfg(test)]
pub(crate) mod test_openssl;
pub mod unionpay;
pub mod wechatpay;

pub use sandbox::{SandboxConfig, SandboxProvider};

use crate::ports::{CloseOutcome, ProviderError};

/// Maps a provider's answer to a close: success is [`CloseOutcome::Closed`]; the refusals that
/// name a paid trade or a missing one become those outcomes; any other refusal stays an error.
pub(crate) fn close_outcome(
    answer: Result<(), ProviderError>,
    paid_codes: &[&str],
    missing_codes: &[&str],
    closed_codes: &[&str],
) -> Result<CloseOutcome, ProviderError> {
    match answer {
        Ok(()) => Ok(CloseOutcome::Closed),
        Err(ProviderError::Rejected { code, .. }) if paid_codes.contains(&code.as_str()) => {
            Ok(CloseOutcome::AlreadyPaid)
        }
        Err(ProviderError::Rejected { code, .. }) if missing_codes.contains(&code.as_str()) => {
            Ok(CloseOutcome::NoTrade)
        }
        Err(ProviderError::Rejected { code, .. }) if closed_codes.contains(&code.as_str()) => {
            Ok(CloseOutcome::Closed)
        }
        Err(other) => Err(other),
    }
}
