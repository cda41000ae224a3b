//! Durations as people write them: `250ms`, `1.5s`, `2m`, `500us`, or a bare number whose unit
//! the caller chooses (milliseconds in configuration files, seconds on command lines).
//!
//! One parser for the server's configuration, `kvcli`'s flags and the verification binaries,
//! so that a duration written for one reads the same in the others. It accepts every form any
//! of them accepted before they shared it: the units `us`/`µs`, `ms`, `s`, `m`/`min` and `h`,
//! spaces between the number and its unit, a fraction (`1.5s`) and a leading `+`.
//!
//! Invariants: a whole number of any unit is read exactly (no floating point on that path); a
//! fraction is rounded to the nearest nanosecond; anything a [`Duration`] holds is accepted
//! (the longest any former copy accepted), and nothing longer. A caller that needs a tighter
//! bound (the server's configuration) applies its own.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// How many characters of a rejected text an error repeats: enough to recognise it, short
/// enough that a hostile environment variable cannot flood a log line.
pub const ERROR_TEXT_CHARS_MAX: usize = 40;

/// What a number without a unit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareNumber {
    /// Configuration values: `RAFTKV_RAFT__ELECTION_TIMEOUT=300` is 300 ms.
    Milliseconds,
    /// Command-line flags: `--timeout 10` is ten seconds.
    Seconds,
}

impl BareNumber {
    fn nanos(self) -> u64 {
        match self {
            BareNumber::Milliseconds => 1_000_000,
            BareNumber::Seconds => NANOS_PER_SECOND,
        }
    }
}

impl fmt::Display for BareNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BareNumber::Milliseconds => "milliseconds",
            BareNumber::Seconds => "seconds",
        })
    }
}

/// Why a text is not a duration. Each variant repeats the text (at most
/// [`ERROR_TEXT_CHARS_MAX`] characters of it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No number where the duration should start.
    #[error("`{text}` is not a duration (examples: 250ms, 1.5s, 2m; a bare number is {bare})")]
    NotANumber {
        /// The text given.
        text: String,
        /// What a bare number would have counted.
        bare: BareNumber,
    },
    /// A number followed by something that is not a unit.
    #[error("unknown duration unit `{unit}` in `{text}` (use us, ms, s, m, min or h)")]
    UnknownUnit {
        /// The text given.
        text: String,
        /// What follows the number.
        unit: String,
    },
    /// Longer than a [`Duration`] holds (2^64 seconds).
    #[error("`{text}` is too long a duration")]
    TooLong {
        /// The text given.
        text: String,
    },
}

/// Nanoseconds per unit, for every unit written after a number.
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" | "min" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        _ => return None,
    })
}

/// The number a duration starts with.
enum Number {
    Whole(u64),
    Fraction(f64),
}

/// At most [`ERROR_TEXT_CHARS_MAX`] characters of `text`, for an error.
fn shown(text: &str) -> String {
    text.chars().take(ERROR_TEXT_CHARS_MAX).collect()
}

/// Reads `text` as a duration: a number (whole or with a fraction, optionally after `+`), then
/// optionally a unit (`us`, `µs`, `ms`, `s`, `m`, `min`, `h`); without a unit the number counts
/// `bare`. Spaces around the number and the unit are ignored.
pub fn parse_duration(text: &str, bare: BareNumber) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let split = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, unit) = unsigned.split_at(split);
    // A whole number is kept whole, so that it is read exactly; only a fraction goes through
    // floating point. Too many digits for a u64 read as a fraction and are then too long.
    let number = match (number.parse::<u64>(), number.parse::<f64>()) {
        (Ok(whole), _) => Number::Whole(whole),
        (Err(_), Ok(value)) => Number::Fraction(value),
        (Err(_), Err(_)) => {
            return Err(DurationError::NotANumber {
                text: shown(trimmed),
                bare,
            });
        }
    };
    let nanos_per_unit = match unit.trim() {
        "" => bare.nanos(),
        unit => unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            text: shown(trimmed),
            unit: shown(unit),
        })?,
    };
    let too_long = || DurationError::TooLong {
        text: shown(trimmed),
    };
    // u128: a whole u64 of hours in nanoseconds overflows u64, and must be refused, not wrapped.
    let nanos: u128 = match number {
        Number::Whole(whole) => u128::from(whole) * u128::from(nanos_per_unit),
        Number::Fraction(value) => {
            let nanos = (value * nanos_per_unit as f64).round();
            // `u64::MAX as f64` is 2^64: seconds past any Duration. Also catches an infinity
            // (too many digits).
            if nanos >= u64::MAX as f64 * NANOS_PER_SECOND as f64 {
                return Err(too_long());
            }
            nanos as u128
        }
    };
    let nanos_per_second = u128::from(NANOS_PER_SECOND);
    let seconds = u64::try_from(nanos / nanos_per_second).map_err(|_| too_long())?;
    let subsec = u32::try_from(nanos % nanos_per_second)
        .expect("invariant: a remainder of a division by 10^9 fits in u32");
    Ok(Duration::new(seconds, subsec))
}

/// [`parse_duration`] for a command-line flag, where a bare number is seconds (`--timeout 10`);
/// shaped for clap's `value_parser`.
pub fn parse_flag_duration(text: &str) -> Result<Duration, DurationError> {
    parse_duration(text, BareNumber::Seconds)
}

/// Writes a duration the way [`parse_duration`] reads it back whatever its [`BareNumber`]: in
/// whole milliseconds when it has no finer part, else in microseconds (finer parts are
/// dropped).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use BareNumber::{Milliseconds, Seconds};

    fn ms(n: u64) -> Result<Duration, DurationError> {
        Ok(Duration::from_millis(n))
    }

    #[test]
    fn every_unit_reads_as_written_whatever_a_bare_number_counts() {
        // Given each unit any of the former parsers knew, when read with either bare unit,
        // then the unit decides and the bare unit does not matter.
        for bare in [Milliseconds, Seconds] {
            assert_eq!(
                parse_duration("500us", bare),
                Ok(Duration::from_micros(500))
            );
            assert_eq!(
                parse_duration("500µs", bare),
                Ok(Duration::from_micros(500))
            );
            assert_eq!(parse_duration("250ms", bare), ms(250));
            assert_eq!(parse_duration("1500ms", bare), ms(1500));
            assert_eq!(parse_duration("90s", bare), ms(90_000));
            assert_eq!(parse_duration("1.5s", bare), ms(1500));
            assert_eq!(parse_duration("2m", bare), ms(120_000));
            assert_eq!(parse_duration("2min", bare), ms(120_000));
            assert_eq!(parse_duration("2.5m", bare), ms(150_000));
            assert_eq!(parse_duration("1h", bare), ms(3_600_000));
        }
    }

    #[test]
    fn a_bare_number_counts_what_the_caller_says() {
        // Configuration files: milliseconds (`RAFTKV_RAFT__ELECTION_TIMEOUT=300`).
        assert_eq!(parse_duration("300", Milliseconds), ms(300));
        assert_eq!(
            parse_duration("1.5", Milliseconds),
            Ok(Duration::from_micros(1500))
        );
        // Command lines: seconds (`--timeout 10`, `--duration 1.5`).
        assert_eq!(parse_duration("90", Seconds), ms(90_000));
        assert_eq!(parse_duration("1.5", Seconds), ms(1500));
        assert_eq!(parse_flag_duration("90"), ms(90_000));
    }

    #[test]
    fn spaces_a_plus_sign_and_loose_fractions_are_accepted() {
        // The verification binaries read `+60s` and `90 s`; the configuration read ` 5 ms `.
        assert_eq!(parse_duration("+60s", Seconds), ms(60_000));
        assert_eq!(parse_duration("+60", Seconds), ms(60_000));
        assert_eq!(parse_duration("90 s", Seconds), ms(90_000));
        assert_eq!(parse_duration(" 5 ms ", Milliseconds), ms(5));
        assert_eq!(parse_duration(".5s", Seconds), ms(500));
        assert_eq!(parse_duration("1.s", Seconds), ms(1000));
        assert_eq!(parse_duration("0", Seconds), ms(0));
    }

    #[test]
    fn whole_numbers_are_exact_and_fractions_round_to_the_nanosecond() {
        // Given whole numbers too large for a double to hold in nanoseconds exactly,
        assert_eq!(parse_duration("12345678901ms", Seconds), ms(12_345_678_901));
        assert_eq!(
            parse_duration("1000000000000h", Seconds),
            Ok(Duration::from_secs(3_600_000_000_000_000))
        );
        // and fractions that a double cannot hold exactly,
        assert_eq!(parse_duration("0.3s", Seconds), ms(300));
        assert_eq!(
            parse_duration("0.1ms", Seconds),
            Ok(Duration::from_micros(100))
        );
        assert_eq!(parse_duration("0.0000000004s", Seconds), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("0.0000000006s", Seconds),
            Ok(Duration::from_nanos(1))
        );
    }

    #[test]
    fn anything_a_duration_holds_is_read_and_nothing_longer() {
        // Given the longest durations a former copy accepted (lincheck's budgets take
        // `99999999999999s` to mean "no limit"), then they are read exactly,
        assert_eq!(
            parse_duration("99999999999999s", Seconds),
            Ok(Duration::from_secs(99_999_999_999_999))
        );
        assert_eq!(
            parse_duration("18446744073709551615s", Seconds),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_duration("18446744073709551615ms", Seconds),
            Ok(Duration::from_millis(u64::MAX))
        );
        // and what a Duration cannot hold is refused, not wrapped or saturated.
        for long in [
            "18446744073709551616s",
            "18446744073709551615m",
            "18446744073709551615h",
            "99999999999999999999999999s",
            "99999999999999999999999999.5s",
            &"9".repeat(400),
        ] {
            let refused = parse_duration(long, Seconds);
            assert!(
                matches!(refused, Err(DurationError::TooLong { .. })),
                "{long}: {refused:?}"
            );
        }
    }

    #[test]
    fn what_is_not_a_duration_is_refused_saying_why() {
        for (text, bare) in [
            ("fast", Seconds),
            ("", Milliseconds),
            (".", Seconds),
            ("ms", Seconds),
            ("-5s", Seconds),
            ("1.2.3s", Seconds),
            ("++5", Seconds),
        ] {
            let error = parse_duration(text, bare).unwrap_err();
            assert!(
                matches!(error, DurationError::NotANumber { .. }),
                "{text}: {error}"
            );
            assert!(error.to_string().contains("is not a duration"), "{error}");
        }
        assert!(
            parse_duration("fast", Milliseconds)
                .unwrap_err()
                .to_string()
                .contains("a bare number is milliseconds")
        );
        for text in ["5 parsecs", "3 weeks", "1e300s", "10S", "9 0"] {
            let error = parse_duration(text, Seconds).unwrap_err();
            assert!(
                matches!(error, DurationError::UnknownUnit { .. }),
                "{text}: {error}"
            );
            assert!(
                error.to_string().contains("unknown duration unit"),
                "{error}"
            );
        }
    }

    #[test]
    fn an_error_repeats_only_the_start_of_a_long_text() {
        let long = format!("{}x", "9".repeat(1000));
        let error = parse_duration(&long, Seconds).unwrap_err().to_string();
        assert!(error.len() < 200, "{error}");
    }

    #[test]
    fn a_formatted_duration_reads_back_the_same_whatever_a_bare_number_counts() {
        for d in [
            Duration::from_millis(250),
            Duration::from_micros(1500),
            Duration::ZERO,
            Duration::from_secs(3600),
        ] {
            for bare in [Milliseconds, Seconds] {
                assert_eq!(parse_duration(&format_duration(d), bare), Ok(d));
            }
        }
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1500us");
    }
}
