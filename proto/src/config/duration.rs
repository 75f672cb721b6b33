//! Duration strings such as `"1s"`, `"100ms"`, `"1.5s"` or `"1m30s"`.
//!
//! A duration is one or more `<number><unit>` parts with units `h`, `m`, `s` and `ms`; the number
//! may have a decimal fraction. Durations are held to the millisecond: a finer value is refused,
//! never rounded, so [`format()`] followed by [`parse()`] gives back the same value.

use std::time::Duration;

/// Parses a duration string; the error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration such as \"1s\", \"100ms\", \"1.5s\" or \"1m30s\"";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty duration; {expected}"));
    }
    let mut rest = trimmed;
    let mut total_micros: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_micros: u128 = match unit {
            "h" => 3_600_000_000,
            "m" => 60_000_000,
            "s" => 1_000_000,
            "ms" => 1_000,
            "" => return Err(format!("{text:?} has a number without a unit; {expected}")),
            other => return Err(format!("unknown unit {other:?} in {text:?}; {expected}")),
        };
        let micros = scaled(number, unit_micros).ok_or_else(|| format!("{text:?}: {expected}"))?;
        total_micros = total_micros
            .checked_add(micros)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = after;
    }
    if !total_micros.is_multiple_of(1_000) {
        return Err(format!("{text:?} is finer than a millisecond"));
    }
    let millis =
        u64::try_from(total_micros / 1_000).map_err(|_| format!("{text:?} is too long"))?;
    Ok(Duration::from_millis(millis))
}

/// The canonical string for a duration: whole seconds as `"90s"`, anything else in milliseconds
/// as `"1500ms"`. Sub-millisecond parts are dropped (parsed durations never have them).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    }
}

/// `number` (digits, optionally a `.` and more digits) times `unit_micros`, when it is a whole
/// number of microseconds and fits.
fn scaled(number: &str, unit_micros: u128) -> Option<u128> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole
        .chars()
        .chain(fraction.chars())
        .all(|c| c.is_ascii_digit())
        || fraction.len() > 9
    {
        return None;
    }
    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut result = whole_value.checked_mul(unit_micros)?;
    if !fraction.is_empty() {
        let fraction_value: u128 = fraction.parse().ok()?;
        let denominator = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        let scaled_fraction = fraction_value.checked_mul(unit_micros)?;
        if scaled_fraction % denominator != 0 {
            return None;
        }
        result = result.checked_add(scaled_fraction / denominator)?;
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_fractions() {
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse(".25s"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_what_it_cannot_hold_exactly() {
        assert!(parse("").is_err());
        assert!(parse("5").expect_err("no unit").contains("without a unit"));
        assert!(parse("5 sec").is_err());
        assert!(
            parse("1.0005s")
                .expect_err("too fine")
                .contains("finer than a millisecond")
        );
        assert!(parse("1..5s").is_err());
        assert!(parse("99999999999999999999999999999999999999h").is_err());
        assert!(parse("-1s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for millis in [0, 1, 10, 999, 1000, 1500, 40950, 90_000, 3_600_000] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse(&format(duration)), Ok(duration), "{millis} ms");
        }
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(5)), "5s");
    }
}
