//! Identifiers, parsed at the edge so invalid values cannot be constructed.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be 1 to {max} characters from {alphabet}")]
    Invalid { max: usize, alphabet: &'static str },
    #[error("unknown provider; expected one of sandbox, alipay, wechatpay, unionpay")]
    UnknownProvider,
}

fn parse_token(
    text: &str,
    max: usize,
    alphabet: &'static str,
    allowed: fn(u8) -> bool,
) -> Result<(), IdError> {
    if text.is_empty() || text.len() > max || !text.bytes().all(allowed) {
        return Err(IdError::Invalid { max, alphabet });
    }
    Ok(())
}

/// Our payment id. It doubles as the provider-side order number (out_trade_no / orderId), so it
/// is alphanumeric and at most 32 characters; we mint ULIDs (26 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PaymentId(String);

impl PaymentId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        parse_token(text, 32, "[A-Za-z0-9]", |b| b.is_ascii_alphanumeric())?;
        Ok(Self(text.to_owned()))
    }

    /// Mints a new id from a millisecond timestamp and 80 random bits (a ULID).
    pub fn from_parts(unix_ms: u64, random: u128) -> Self {
        Self(ulid::Ulid::from_parts(unix_ms, random).to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The merchant's order id: 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        parse_token(text, 64, "[A-Za-z0-9_-]", |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        })?;
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The merchant's refund id, unique per payment: 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RefundId(String);

impl RefundId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        parse_token(text, 64, "[A-Za-z0-9_-]", |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        })?;
        Ok(Self(text.to_owned()))
    }

    /// The refund the platform itself starts for a payment that landed after its close: derived
    /// from the payment, so it is started exactly once.
    pub fn late_payment(payment_id: &PaymentId) -> Self {
        Self(format!("late-payment-{payment_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_conversions {
    ($($name:ident),*) => {$(
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
string_newtype_conversions!(PaymentId, OrderId, RefundId);

/// The payment providers the platform knows by name. Whether one is configured in a given
/// deployment is a configuration question, not a domain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ProviderName {
    Sandbox,
    Alipay,
    WechatPay,
    UnionPay,
}

impl ProviderName {
    pub const ALL: [Self; 4] = [Self::Sandbox, Self::Alipay, Self::WechatPay, Self::UnionPay];

    pub fn parse(text: &str) -> Result<Self, IdError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or(IdError::UnknownProvider)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Alipay => "alipay",
            Self::WechatPay => "wechatpay",
            Self::UnionPay => "unionpay",
        }
    }
}

impl TryFrom<String> for ProviderName {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProviderName> for String {
    fn from(value: ProviderName) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids() {
        for ok in ["a", "ORDER_1-2", &"x".repeat(64)] {
            assert!(OrderId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(OrderId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payment_ids_fit_provider_order_numbers() {
        let id = PaymentId::from_parts(1_700_000_000_000, 42);
        assert_eq!(id.as_str().len(), 26);
        assert!(PaymentId::parse(id.as_str()).is_ok());
        assert!(PaymentId::parse(&"A".repeat(33)).is_err());
        assert!(PaymentId::parse("abc-1").is_err());
    }

    #[test]
    fn provider_names_are_exact() {
        assert_eq!(
            ProviderName::parse("wechatpay"),
            Ok(ProviderName::WechatPay)
        );
        assert!(ProviderName::parse("Alipay").is_err());
        assert!(ProviderName::parse("paypal").is_err());
    }
}
