//! Human-friendly durations (`250ms`, `1.5s`, `2m`) and byte sizes (`64MiB`, `4096`) in
//! configuration values, with serde adapters for the fields that carry them.
//!
//! A bare number is milliseconds for a duration and bytes for a size, so that an environment
//! variable such as `RAFTKV_RAFT__ELECTION_TIMEOUT=300` means what a reader expects.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `250ms`, `1.5s`, `2m`, `500us` or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 250ms, 1.5s, 2m)"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use us, ms, s, m or h)"
            ));
        }
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("`{text}` is too long a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration the way [`parse_duration`] reads it back, in whole milliseconds when it
/// has no finer part.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// Parses `64MiB`, `1GiB`, `512KiB`, `10MB` (powers of ten) or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (examples: 4096, 512KiB, 64MiB)"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB or GiB)"
            ));
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large a size"))
}

/// Formats a size in the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// A configuration value written as a string or as a bare number.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrNumber {
    Text(String),
    Number(u64),
}

/// serde adapter for [`Duration`] fields.
pub mod duration {
    use super::*;

    /// Writes the duration as text (`250ms`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads text or a bare number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match TextOrNumber::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a duration such as 250ms or 1s"))?
        {
            TextOrNumber::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
            TextOrNumber::Number(ms) => Ok(Duration::from_millis(ms)),
        }
    }
}

/// serde adapter for byte-size fields.
pub mod size {
    use super::*;

    /// Writes the size as text (`64MiB`).
    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(*bytes))
    }

    /// Reads text or a bare number of bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match TextOrNumber::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a size such as 4096 or 64MiB"))?
        {
            TextOrNumber::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
            TextOrNumber::Number(n) => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_every_unit_and_round_trip() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("300"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        for d in [Duration::from_millis(250), Duration::from_micros(1500)] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        assert!(
            parse_duration("fast")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown duration unit")
        );
        assert!(parse_duration("1e300s").is_err());
    }

    #[test]
    fn sizes_read_in_binary_and_decimal_units_and_round_trip() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(
            parse_size("99999999999GiB"),
            Err("`99999999999GiB` is too large a size".into())
        );
        for n in [4096, 64 << 20, 1 << 30, 1000] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }
}
