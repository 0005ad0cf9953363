//! Yuan decimal strings <-> fen, exactly (no floats).

/// Parses `"12"`, `"12.3"` or `"12.34"` into fen; `None` for anything else (sign, exponent,
/// more than two decimals, empty parts, overflow).
pub(crate) fn parse_yuan(text: &str) -> Option<i64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, "00"));
    if whole.is_empty() || frac.is_empty() || frac.len() > 2 {
        return None;
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let scale = if frac.len() == 1 { 10 } else { 1 };
    let frac: i64 = frac.parse::<i64>().ok()? * scale;
    whole.checked_mul(100)?.checked_add(frac)
}

/// Fen as a yuan string with exactly two decimals (`1234` -> `"12.34"`).
pub(crate) fn format_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::{format_yuan, parse_yuan};

    #[test]
    fn parses_exact_yuan() {
        assert_eq!(parse_yuan("12.34"), Some(1234));
        assert_eq!(parse_yuan("12.3"), Some(1230));
        assert_eq!(parse_yuan("12"), Some(1200));
        assert_eq!(parse_yuan("0.01"), Some(1));
        assert_eq!(parse_yuan("0.10"), Some(10));
        assert_eq!(parse_yuan("92233720368547758.07"), Some(i64::MAX));
        for bad in [
            "",
            ".5",
            "5.",
            "1.234",
            "-1.00",
            "+1",
            "1e2",
            "1,00",
            " 1",
            "1.2.3",
            "92233720368547758.08",
        ] {
            assert_eq!(parse_yuan(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_two_decimals() {
        assert_eq!(format_yuan(1234), "12.34");
        assert_eq!(format_yuan(1), "0.01");
        assert_eq!(format_yuan(100), "1.00");
        assert_eq!(format_yuan(0), "0.00");
    }
}
