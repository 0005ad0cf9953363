//! Instants as integer milliseconds since the Unix epoch. Every "now" comes from the clock port.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_ms(unix_ms: i64) -> Self {
        Self(unix_ms)
    }

    pub const fn from_unix_s(unix_s: i64) -> Self {
        Self(unix_s.saturating_mul(1000))
    }

    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    pub const fn unix_s(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub const fn plus_ms(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    pub const fn plus_s(self, s: i64) -> Self {
        self.plus_ms(s.saturating_mul(1000))
    }

    /// Absolute distance to `other` in whole seconds, rounded down.
    pub const fn abs_diff_s(self, other: Self) -> u64 {
        self.0.abs_diff(other.0) / 1000
    }

    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Self)
    }

    /// RFC 3339 in UTC, always with three fraction digits: `2021-06-24T08:37:26.120Z`.
    pub fn to_rfc3339(self) -> String {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| format!("@{}ms", self.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::from_unix_ms(1_624_523_846_123);
        assert_eq!(t.to_rfc3339(), "2021-06-24T08:37:26.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        // A fixed width, whatever the milliseconds.
        for (ms, text) in [
            (1_624_523_846_120, "2021-06-24T08:37:26.120Z"),
            (1_624_523_846_000, "2021-06-24T08:37:26.000Z"),
            (1_624_523_846_001, "2021-06-24T08:37:26.001Z"),
        ] {
            let t = Timestamp::from_unix_ms(ms);
            assert_eq!(t.to_rfc3339(), text);
            assert_eq!(Timestamp::parse_rfc3339(text), Some(t));
        }
        assert_eq!(
            Timestamp::from_unix_s(10).abs_diff_s(Timestamp::from_unix_ms(10_999)),
            0
        );
        assert_eq!(
            Timestamp::from_unix_s(10).abs_diff_s(Timestamp::from_unix_s(310)),
            300
        );
    }
}
