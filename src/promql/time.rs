//! Prometheus' spellings of times and durations, read as its HTTP API reads them: a time is
//! Unix seconds (with optional decimals) or RFC 3339; a duration is seconds (with optional
//! decimals) or a PromQL duration such as `1m` or `1h30m`. Milliseconds are the resolution.

use super::error::PromError;

/// A number as Go's `strconv.ParseFloat` and Rust's `f64` read it (without `inf` and `nan`,
/// which are refused).
const NUMBER: &str = "[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?";

/// The OpenAPI pattern of what [`parse_time`] reads: Unix seconds or RFC 3339. What matches
/// may still be refused (a date that does not exist, a year past 9999).
pub fn time_pattern() -> String {
    format!(
        "^({NUMBER}|[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}[Tt ][0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(\\.[0-9]+)?([Zz]|[+-][0-9]{{2}}:[0-9]{{2}}))$"
    )
}

/// The OpenAPI pattern of what [`parse_duration`] reads: seconds, or a PromQL duration.
pub fn duration_pattern() -> String {
    format!("^({NUMBER}|([0-9]+(ms|s|m|h|d|w|y))+)$")
}

/// Epoch ms of a `start`, `end` or `time` value; `name` is the parameter, for the message.
pub fn parse_time(name: &str, value: &str) -> Result<i64, PromError> {
    let bad = || {
        PromError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse \"{}\" to a valid timestamp",
            crate::query::shown(value)
        ))
    };
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() {
            return Err(bad());
        }
        let ms = (seconds * 1000.0).round();
        // Beyond ±(year 10000) a timestamp means nothing here.
        if ms.abs() > 253_402_300_799_999.0 {
            return Err(bad());
        }
        return Ok(ms as i64);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad())
}

/// Milliseconds of a `step` or `timeout` value.
pub fn parse_duration(name: &str, value: &str) -> Result<i64, PromError> {
    let bad = || {
        PromError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse \"{}\" to a valid duration",
            crate::query::shown(value)
        ))
    };
    if let Ok(seconds) = value.parse::<f64>() {
        let ms = (seconds * 1000.0).round();
        if !ms.is_finite() || ms.abs() > i64::MAX as f64 / 2.0 {
            return Err(bad());
        }
        return Ok(ms as i64);
    }
    let duration = promql_parser::util::duration::parse_duration(value).map_err(|_| bad())?;
    i64::try_from(duration.as_millis()).map_err(|_| bad())
}

/// A time as Prometheus writes it in answers: Unix seconds, with decimals only when needed.
pub fn seconds(ms: i64) -> serde_json::Number {
    if ms % 1000 == 0 {
        serde_json::Number::from(ms / 1000)
    } else {
        serde_json::Number::from_f64(ms as f64 / 1000.0).unwrap_or_else(|| 0.into())
    }
}

/// A sample value as Prometheus writes it: Go's shortest `'f'` form, `NaN`, `+Inf`, `-Inf`.
pub fn sample(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

/// Prometheus' default lookback for instant vectors.
const LOOKBACK_MS: i64 = 5 * 60_000;

/// How far back the value at a time may come from: Prometheus' lookback, or one interval.
pub(crate) fn lookback(interval_ms: i64) -> i64 {
    LOOKBACK_MS.max(interval_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything accepted matches the document's patterns; what does not match is refused.
    #[test]
    fn the_documented_patterns_hold_what_is_accepted() {
        let times = regex::Regex::new(&time_pattern()).unwrap();
        let durations = regex::Regex::new(&duration_pattern()).unwrap();
        for v in [
            "0",
            "1705320000",
            "1705320000.5",
            "-1.5",
            "+3",
            ".5",
            "5.",
            "1e9",
            "2024-01-15T12:00:00Z",
            "2024-01-15T12:00:00.123+01:00",
            "2024-01-15t12:00:00z",
        ] {
            assert!(parse_time("t", v).is_ok(), "{v}");
            assert!(times.is_match(v), "time `{v}`");
        }
        for v in [
            "",
            "null",
            "now",
            "inf",
            "NaN",
            "2024-01-15",
            "2024-01-15T12:00:00",
            "1h",
        ] {
            assert!(parse_time("t", v).is_err(), "{v}");
            assert!(!times.is_match(v), "time `{v}`");
        }
        for v in ["60", "1.5", "1m", "1h30m", "500ms", "2d", "1w", "1y", "-5"] {
            assert!(parse_duration("d", v).is_ok(), "{v}");
            assert!(durations.is_match(v), "duration `{v}`");
        }
        for v in ["", "null", "1x", "m", "inf", "1 m", "1M"] {
            assert!(parse_duration("d", v).is_err(), "{v}");
            assert!(!durations.is_match(v), "duration `{v}`");
        }
    }

    #[test]
    fn times_in_both_spellings() {
        assert_eq!(parse_time("t", "1705320000").unwrap(), 1_705_320_000_000);
        assert_eq!(
            parse_time("t", "1705320000.123").unwrap(),
            1_705_320_000_123
        );
        assert_eq!(
            parse_time("t", "2024-01-15T12:00:00Z").unwrap(),
            1_705_320_000_000
        );
        assert_eq!(
            parse_time("t", "2024-01-15T13:00:00.5+01:00").unwrap(),
            1_705_320_000_500
        );
        let e = parse_time("start", "yesterday").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid parameter \"start\": cannot parse \"yesterday\" to a valid timestamp"
        );
        assert!(parse_time("t", "NaN").is_err());
        assert!(parse_time("t", "1e300").is_err());
    }

    #[test]
    fn durations_in_both_spellings() {
        assert_eq!(parse_duration("step", "60").unwrap(), 60_000);
        assert_eq!(parse_duration("step", "15.5").unwrap(), 15_500);
        assert_eq!(parse_duration("step", "1m").unwrap(), 60_000);
        assert_eq!(parse_duration("step", "1h30m").unwrap(), 5_400_000);
        assert!(parse_duration("step", "5 minutes").is_err());
        assert!(parse_duration("step", "1e300").is_err());
    }

    #[test]
    fn answers_spell_numbers_as_prometheus_does() {
        assert_eq!(seconds(1_705_320_000_000).to_string(), "1705320000");
        assert_eq!(seconds(1_705_320_000_500).to_string(), "1705320000.5");
        assert_eq!(sample(762.0), "762");
        assert_eq!(sample(0.6043), "0.6043");
        assert_eq!(sample(1e21), "1000000000000000000000");
        assert_eq!(sample(f64::NAN), "NaN");
        assert_eq!(sample(f64::INFINITY), "+Inf");
        assert_eq!(sample(-f64::INFINITY), "-Inf");
    }
}
