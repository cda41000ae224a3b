//! Human-friendly durations (`250ms`, `1.5s`, `2m`) and byte sizes (`64MiB`, `4096`) in
//! configuration values, with serde adapters for the fields that carry them.
//!
//! A bare number is milliseconds for a duration and bytes for a size, so that an environment
//! variable such as `RAFTKV_RAFT__ELECTION_TIMEOUT=300` means what a reader expects. Durations
//! are read by `util::duration`, the parser `kvcli` and the verification tools share, so that
//! a duration written for one reads the same in all.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};
pub use util::format_duration;
use util::{BareNumber, parse_duration};

/// The longest duration a configuration value may be written as (about 31 years): longer than
/// any setting means, and far from where adding it to an `Instant` overflows.
pub const CONFIG_DURATION_SECONDS_MAX: u64 = 1_000_000_000;

/// Reads a duration written in a configuration value: a bare number is milliseconds, and
/// nothing past [`CONFIG_DURATION_SECONDS_MAX`] is taken.
pub fn parse_config_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text, BareNumber::Milliseconds).map_err(|e| e.to_string())?;
    if d > Duration::from_secs(CONFIG_DURATION_SECONDS_MAX) {
        return Err(format!(
            "`{}` is too long a duration (at most {CONFIG_DURATION_SECONDS_MAX}s)",
            text.trim()
        ));
    }
    Ok(d)
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
            TextOrNumber::Text(t) => parse_config_duration(&t).map_err(serde::de::Error::custom),
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

    /// A duration as a configuration file or an environment variable gives it.
    fn config_duration(value: &str) -> Result<Duration, String> {
        #[derive(Deserialize)]
        struct Field {
            #[serde(with = "duration")]
            d: Duration,
        }
        serde_json::from_str::<Field>(&format!("{{\"d\": {value}}}"))
            .map(|field| field.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_read_in_every_unit_and_round_trip() {
        // Given durations as text or as bare numbers, when read from configuration, then a
        // bare number counts milliseconds, and a formatted duration reads back the same.
        assert_eq!(config_duration("\"250ms\""), Ok(Duration::from_millis(250)));
        assert_eq!(config_duration("\"300\""), Ok(Duration::from_millis(300)));
        assert_eq!(config_duration("300"), Ok(Duration::from_millis(300)));
        assert_eq!(config_duration("\"1.5s\""), Ok(Duration::from_millis(1500)));
        assert_eq!(config_duration("\"2m\""), Ok(Duration::from_secs(120)));
        assert_eq!(config_duration("\"500us\""), Ok(Duration::from_micros(500)));
        for d in [Duration::from_millis(250), Duration::from_micros(1500)] {
            assert_eq!(
                config_duration(&format!("\"{}\"", format_duration(d))),
                Ok(d)
            );
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        assert!(
            config_duration("\"fast\"")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            config_duration("\"5 parsecs\"")
                .unwrap_err()
                .contains("unknown duration unit")
        );
        assert!(config_duration("\"1e300s\"").is_err());
        // The configuration's own bound: inclusive, and what passes it is refused.
        assert_eq!(
            config_duration("\"1000000000s\""),
            Ok(Duration::from_secs(CONFIG_DURATION_SECONDS_MAX))
        );
        assert!(
            config_duration("\"1000000001s\"")
                .unwrap_err()
                .contains("too long a duration")
        );
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
