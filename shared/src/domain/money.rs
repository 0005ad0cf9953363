//! Money as integer minor units plus an ISO 4217 currency. Never floating point.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest amount we accept, in minor units (10^12 fen = 10 billion yuan).
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must be an integer between 1 and {AMOUNT_MINOR_MAX} minor units")]
    AmountOutOfRange,
    #[error("amount is not a plain decimal with at most {0} fraction digits")]
    InvalidDecimal(u32),
    #[error("currency must be an upper-case ISO 4217 code we support (CNY)")]
    UnknownCurrency,
}

/// A positive amount in minor units (fen for CNY), at most [`AMOUNT_MINOR_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct AmountMinor(i64);

impl AmountMinor {
    pub fn new(value: i64) -> Result<Self, MoneyError> {
        if (1..=AMOUNT_MINOR_MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(MoneyError::AmountOutOfRange)
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for AmountMinor {
    type Error = MoneyError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<AmountMinor> for i64 {
    fn from(value: AmountMinor) -> Self {
        value.0
    }
}

/// Supported ISO 4217 currencies. Parsing is exact: "cny" is not "CNY".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Currency {
    Cny,
}

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        match code {
            "CNY" => Ok(Self::Cny),
            _ => Err(MoneyError::UnknownCurrency),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Cny => "CNY",
        }
    }

    /// Number of fraction digits of the currency's minor unit.
    pub fn exponent(self) -> u32 {
        match self {
            Self::Cny => 2,
        }
    }

    /// Parses a decimal major-unit string exactly ("0.10" is 10 fen for CNY).
    ///
    /// Accepts only `digits[.digits]` with at most [`Self::exponent`] fraction digits: no sign,
    /// no exponent, no spaces, no empty parts. The result may be zero; positivity is the caller's
    /// rule (see [`AmountMinor`]).
    pub fn parse_major(self, text: &str) -> Result<i64, MoneyError> {
        let exponent = self.exponent();
        let invalid = || MoneyError::InvalidDecimal(exponent);
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || whole.len() > 13 {
            return Err(invalid());
        }
        let fraction = fraction.unwrap_or("");
        if text.contains('.') && !all_digits(fraction) {
            return Err(invalid());
        }
        if fraction.len() > exponent as usize {
            return Err(invalid());
        }
        let scale = 10_i64.pow(exponent);
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let padded = format!("{fraction:0<width$}", width = exponent as usize);
        let fraction: i64 = if padded.is_empty() {
            0
        } else {
            padded.parse().map_err(|_| invalid())?
        };
        whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction))
            .ok_or(MoneyError::AmountOutOfRange)
    }

    /// Formats minor units as a major-unit decimal string ("10" fen -> "0.10").
    pub fn format_major(self, amount_minor: i64) -> String {
        let scale = 10_i64.pow(self.exponent());
        let sign = if amount_minor < 0 { "-" } else { "" };
        let abs = amount_minor.unsigned_abs();
        let scale = scale.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = self.exponent() as usize
        )
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.code().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount together with its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    pub amount: AmountMinor,
    pub currency: Currency,
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.currency.format_major(self.amount.get()),
            self.currency
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(text: &str, expected: Result<i64, ()>) {
        let got = Currency::Cny.parse_major(text).map_err(|_| ());
        assert_eq!(got, expected, "parsing {text:?}");
    }

    #[test]
    fn parses_major_units_exactly() {
        check("0.10", Ok(10));
        check("0.1", Ok(10));
        check("12", Ok(1200));
        check("12.34", Ok(1234));
        check("0", Ok(0));
        check("0.101", Err(()));
        check("1e2", Err(()));
        check("-1", Err(()));
        check("-0.01", Err(()));
        check("", Err(()));
        check(".5", Err(()));
        check("1.", Err(()));
        check("+1", Err(()));
        check(" 1", Err(()));
        check("1,00", Err(()));
        check("99999999999999", Err(()));
    }

    #[test]
    fn amount_range_is_enforced() {
        assert!(AmountMinor::new(0).is_err());
        assert!(AmountMinor::new(-1).is_err());
        assert!(AmountMinor::new(1).is_ok());
        assert!(AmountMinor::new(AMOUNT_MINOR_MAX).is_ok());
        assert!(AmountMinor::new(AMOUNT_MINOR_MAX + 1).is_err());
    }

    #[test]
    fn currency_codes_are_exact() {
        assert_eq!(Currency::parse("CNY"), Ok(Currency::Cny));
        assert!(Currency::parse("cny").is_err());
        assert!(Currency::parse("USD").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(amount in 0_i64..=AMOUNT_MINOR_MAX) {
            let text = Currency::Cny.format_major(amount);
            prop_assert_eq!(Currency::Cny.parse_major(&text), Ok(amount));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,20}") {
            let _ = Currency::Cny.parse_major(&text);
        }
    }
}
