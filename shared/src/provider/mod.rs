//! Provider adapters behind [`crate::ports::PaymentProvider`]. Each speaks its provider's wire
//! protocol over the one RSA module, [`crate::crypto`].

pub mod alipay;
pub mod sandbox;
#[cfg(test)]
pub(crate) mod test_openssl;
pub mod unionpay;
pub mod wechatpay;

pub use sandbox::{SandboxConfig, SandboxProvider};
