//! The one duration grammar shared by the filter's JSON configuration and the proxy's TOML file.
//!
//! A duration is written as text, a decimal number followed by an optional unit:
//!
//! | text | means |
//! | --- | --- |
//! | `"250ms"` | 250 milliseconds |
//! | `"30s"`, `"30"`, `"1.5s"` | seconds (no unit means seconds) |
//! | `"5m"`, `"0.5m"` | minutes |
//! | `"1h"` | hours |
//!
//! or as a bare number of seconds where the format has numbers (`30`, `1.5`). Arithmetic is exact
//! (no floating point): a value must come to a whole number of milliseconds, so `"1.0005s"` is
//! refused rather than rounded. Surrounding whitespace is ignored; nothing else is (no signs, no
//! exponents, no space between number and unit). Each setting applies its own range on top.
#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

/// Why a text is not a duration. The message describes the grammar and never repeats the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// Nothing but whitespace.
    Empty,
    /// The number part is not digits with at most one decimal point between digits.
    NotANumber,
    /// The text after the number is not `ms`, `s`, `m` or `h`.
    UnknownUnit,
    /// The value is not a whole number of milliseconds.
    FinerThanMillisecond,
    /// The value does not fit any setting (more than about 31,000 years).
    TooLong,
}

impl fmt::Display for DurationError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Empty => "is empty; write a duration such as \"500ms\", \"30s\", \"1.5s\", \"5m\" or \"1h\"",
            Self::NotANumber => {
                "must be a number followed by ms, s, m or h, such as \"500ms\", \"30s\", \"1.5s\", \"5m\" or \"1h\""
            }
            Self::UnknownUnit => "has an unknown unit; use ms, s, m or h, such as \"500ms\" or \"5m\"",
            Self::FinerThanMillisecond => "must be a whole number of milliseconds",
            Self::TooLong => "is far too long for any setting",
        })
    }
}

impl std::error::Error for DurationError {}

/// Most digits read before the decimal point: beyond this every value is out of range.
const MAX_DIGITS: usize = 15;
/// Most significant digits after the decimal point: beyond this no value is whole milliseconds.
const MAX_FRACTION_DIGITS: usize = 9;

/// Parses a duration written as text (`"500ms"`, `"30s"`, `"1.5s"`, `"5m"`, `"1h"`, `"30"`).
///
/// # Errors
/// A [`DurationError`] saying which part of the grammar the text breaks.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    // `find` stops on a character boundary, so this never fails; unlike `split_at` it has no panic
    // path, whose message would bring `char`'s debug formatting into the filter module.
    let (number, unit) = text
        .split_at_checked(split)
        .ok_or(DurationError::NotANumber)?;
    let unit_millis = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ if number.is_empty() => return Err(DurationError::NotANumber),
        _ => return Err(DurationError::UnknownUnit),
    };
    scaled(number, unit_millis)
}

/// Parses a bare number of seconds as written in the file (`30`, `1.5`): the grammar's number part.
///
/// # Errors
/// A [`DurationError`], as for [`parse`].
pub fn parse_seconds(number: &str) -> Result<Duration, DurationError> {
    scaled(number.trim(), 1_000)
}

/// `number` (digits, optionally `.` and more digits) times `unit_millis`, exactly, in milliseconds.
fn scaled(number: &str, unit_millis: u64) -> Result<Duration, DurationError> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return Err(DurationError::NotANumber),
        None => (number, ""),
    };
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(DurationError::NotANumber);
    }
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    if whole.len() > MAX_DIGITS {
        return Err(DurationError::TooLong);
    }
    // Past nine digits no fraction of any unit (an hour is 3.6e6 ms) is a whole millisecond, and the
    // arithmetic below stays within u64.
    if fraction.len() > MAX_FRACTION_DIGITS {
        return Err(DurationError::FinerThanMillisecond);
    }
    let value = |part: &str| -> Result<u64, DurationError> {
        if part.is_empty() {
            Ok(0)
        } else {
            part.parse().map_err(|_| DurationError::NotANumber)
        }
    };
    let whole_millis = value(whole)?
        .checked_mul(unit_millis)
        .ok_or(DurationError::TooLong)?;
    // The fraction is `fraction / 10^len`; times the unit it must come out whole.
    let denominator =
        10_u64.pow(u32::try_from(fraction.len()).map_err(|_| DurationError::TooLong)?);
    let numerator = value(fraction)?
        .checked_mul(unit_millis)
        .ok_or(DurationError::TooLong)?;
    if numerator % denominator != 0 {
        return Err(DurationError::FinerThanMillisecond);
    }
    let fraction_millis = numerator / denominator;
    let millis = whole_millis
        .checked_add(fraction_millis)
        .ok_or(DurationError::TooLong)?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_unit_and_the_bare_number_mean_what_the_table_says() {
        let cases = [
            ("250ms", 250),
            ("30s", 30_000),
            ("30", 30_000),
            ("1.5s", 1_500),
            ("1.5", 1_500),
            ("0.5m", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("0.001s", 1),
            ("0.25h", 900_000),
            ("  10s  ", 10_000),
            ("0", 0),
            ("007s", 7_000),
            ("2.50s", 2_500),
        ];
        for (text, millis) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(millis)), "{text}");
        }
    }

    #[test]
    fn texts_outside_the_grammar_are_refused_with_the_reason() {
        let cases = [
            ("", DurationError::Empty),
            ("   ", DurationError::Empty),
            ("s", DurationError::NotANumber),
            ("ms", DurationError::NotANumber),
            ("-1s", DurationError::NotANumber),
            ("+1s", DurationError::NotANumber),
            ("1e3", DurationError::UnknownUnit),
            ("1.s", DurationError::NotANumber),
            (".5s", DurationError::NotANumber),
            ("1..5s", DurationError::NotANumber),
            ("1.2.3s", DurationError::NotANumber),
            ("5 s", DurationError::UnknownUnit),
            ("5 parsecs", DurationError::UnknownUnit),
            ("5d", DurationError::UnknownUnit),
            ("5S", DurationError::UnknownUnit),
            ("1.0005s", DurationError::FinerThanMillisecond),
            ("0.5ms", DurationError::FinerThanMillisecond),
            ("9999999999999999h", DurationError::TooLong),
            ("99999999999999h", DurationError::TooLong),
            ("5µs", DurationError::UnknownUnit),
            ("é", DurationError::NotANumber),
            ("1.5€", DurationError::UnknownUnit),
        ];
        for (text, error) in cases {
            assert_eq!(parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn long_inputs_stay_cheap_and_bounded() {
        let zeros = "0".repeat(100_000);
        assert_eq!(parse(&format!("{zeros}1s")), Ok(Duration::from_secs(1)));
        assert_eq!(parse(&format!("1.{zeros}s")), Ok(Duration::from_secs(1)));
        assert_eq!(
            parse(&format!("1.{zeros}1s")),
            Err(DurationError::FinerThanMillisecond)
        );
        assert_eq!(parse(&"9".repeat(100_000)), Err(DurationError::TooLong));
    }

    #[test]
    fn bare_seconds_follow_the_number_part_of_the_grammar() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("30s"), Err(DurationError::NotANumber));
        assert_eq!(parse_seconds("1e3"), Err(DurationError::NotANumber));
    }

    #[test]
    fn messages_name_the_grammar_and_never_the_input() {
        let secret = "sk-ant-api03-secret";
        let message = parse(secret).unwrap_err().to_string();
        assert!(!message.contains(secret), "{message}");
        assert!(message.contains("ms, s, m or h"), "{message}");
    }
}
