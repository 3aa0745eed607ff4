//! Parsers for single parameter values. Each returns the caller-facing message on failure.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Metric names, application protocols: the characters that need no percent-encoding, so the
/// signed text and the wire text are the same bytes.
pub fn name_token(value: &str, what: &str, max_len: usize) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > max_len {
        return Err(format!("{what} is longer than {max_len} characters"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!(
            "{what} `{}` contains {bad:?}; only letters, digits and _ . : - are allowed",
            shown(value)
        ));
    }
    Ok(value.to_owned())
}

/// Largest id accepted: exactly representable in JSON numbers everywhere.
const MAX_ID: u64 = (1 << 53) - 1;

/// A device id given as a number: positive, and exact in JSON.
pub fn valid_id(id: u64) -> Result<u64, String> {
    if (1..=MAX_ID).contains(&id) {
        Ok(id)
    } else {
        Err(format!("`{id}` is not a positive integer id"))
    }
}

pub fn positive_id(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (1..=MAX_ID).contains(&n) && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("`{}` is not a positive integer id", shown(value))),
    }
}

pub fn port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(n) if n >= 1 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("`{}` is not a port (1-65535)", shown(value))),
    }
}

/// IANA protocol numbers by name, for the names callers actually use.
const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("ipv6", 41),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ospf", 89),
    ("sctp", 132),
];

pub fn protocol(value: &str) -> Result<u8, String> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse::<u8>()
            .map_err(|_| format!("protocol number `{}` is not within 0-255", shown(value)));
    }
    let lower = value.to_ascii_lowercase();
    PROTOCOLS
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, n)| *n)
        .ok_or_else(|| {
            let names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
            format!(
                "`{}` is not a protocol; use a number 0-255 or one of {}",
                shown(value),
                names.join(", ")
            )
        })
}

/// `word` in any case, as a regular expression (`tcp` → `[Tt][Cc][Pp]`): JSON Schema's
/// patterns have no case-insensitive flag.
fn caseless(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The OpenAPI pattern of what [`protocol`] accepts: a number 0–255 (leading zeros allowed)
/// or a known name in any case.
pub fn protocol_pattern() -> String {
    let names: Vec<String> = PROTOCOLS.iter().map(|(n, _)| caseless(n)).collect();
    format!(
        "^(0*(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|{})$",
        names.join("|")
    )
}

/// The units [`interval_seconds`] reads, in lower case.
const INTERVAL_UNITS: &[&str] = &[
    "s", "sec", "secs", "second", "seconds", "m", "min", "mins", "minute", "minutes", "h", "hour",
    "hours", "d", "day", "days", "w", "week", "weeks",
];

/// The OpenAPI pattern of what [`interval_seconds`] reads: digits and an optional unit in
/// any case (the builder then checks the interval is whole minutes, within bounds).
pub fn interval_pattern() -> String {
    let units: Vec<String> = INTERVAL_UNITS.iter().map(|u| caseless(u)).collect();
    format!("^[0-9]{{1,19}}({})?$", units.join("|"))
}

/// The OpenAPI pattern of the times [`relative_ms`] and [`timestamp_ms`] read: `now`,
/// `now-<n><unit>`, epoch ms, or a date with an optional time and offset. What matches may
/// still be refused (a date that does not exist, a time before 1973); nothing else is read.
pub const TIME_PATTERN: &str = "^(now(-[0-9]+(s|m|min|h|d|w))?|[0-9]{1,19}|[0-9]{1,4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\\.[0-9]{1,9})?)?([Zz]|[+ -][0-9]{2}:?[0-9]{2})?)?)$";

pub fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!(
            "`{}` is not a boolean; use true, false, 1 or 0",
            shown(value)
        )),
    }
}

/// `300`, `5min`, `1hour`, `1day`, `1week` (and their plurals) to seconds.
pub fn interval_seconds(value: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{}` is not an interval; use seconds or a label such as 5min, 1hour, 1day",
            shown(value)
        )
    };
    let lower = value.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_seconds = match unit {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_seconds).ok_or_else(bad)
}

/// The friendliest label for a number of seconds (`300` → `5min`).
pub fn interval_label(seconds: u64) -> String {
    for (unit, size) in [("day", 86_400), ("hour", 3_600), ("min", 60)] {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}")
}

/// Epoch ms below this (3 March 1973) are almost certainly epoch *seconds* by mistake: no
/// appliance holds data that old.
const SMALLEST_PLAUSIBLE_MS: i64 = 100_000_000_000;
/// 9999-12-31T23:59:59.999Z
const LARGEST_MS: i64 = 253_402_300_799_999;
/// A time a caller may copy when told what to give.
const EXAMPLE_MS: i64 = 1_705_320_000_000;

/// A time given as epoch ms: within the range text times are read in (March 1973 to 9999).
pub fn valid_time(ms: i64) -> Result<i64, String> {
    if (SMALLEST_PLAUSIBLE_MS..=LARGEST_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "{ms} is not a time between March 1973 and 9999 in epoch milliseconds (e.g. {EXAMPLE_MS})"
        ))
    }
}

/// A time relative to `now_ms` (the gateway's clock): `now`, or `now-<n><unit>` with the unit
/// `s`, `min` (or `m`), `h`, `d` or `w`, e.g. `now-1h`. `None` when `value` is not relative.
pub fn relative_ms(value: &str, now_ms: i64) -> Option<Result<i64, String>> {
    let rest = value.strip_prefix("now")?;
    if rest.is_empty() {
        return Some(Ok(now_ms));
    }
    let refused = || {
        Err(format!(
            "`{}` is not a relative time; use `now`, or `now-` and an amount such as now-1h, now-30min, now-7d",
            shown(value)
        ))
    };
    let Some(ago) = rest.strip_prefix('-') else {
        return Some(refused());
    };
    let digits = ago.bytes().take_while(u8::is_ascii_digit).count();
    let (amount, unit) = ago.split_at(digits);
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Some(refused()),
    };
    Some(
        amount
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .and_then(|ago| now_ms.checked_sub(ago))
            .filter(|ms| *ms >= 0)
            .map_or_else(refused, Ok),
    )
}

/// Epoch ms, ISO-8601 (with or without offset; UTC when none), or `YYYY-MM-DD HH:MM:SS` UTC,
/// between March 1973 and the end of 9999, however it is written.
pub fn timestamp_ms(value: &str) -> Result<i64, String> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return match value.parse::<i64>() {
            Ok(ms) if ms <= LARGEST_MS => plausible(value, ms),
            _ => Err(format!(
                "`{}` is after 9999-12-31T23:59:59Z, the latest time accepted; give epoch milliseconds",
                shown(value)
            )),
        };
    }
    let ms = parse_datetime(value)
        // A `+01:00` offset arrives as ` 01:00` when the caller did not percent-encode the `+`.
        .or_else(|| plus_decoded_as_space(value).and_then(|v| parse_datetime(&v)))
        .ok_or_else(|| {
            if five_digit_year(value) {
                return format!(
                    "`{}` is after 9999-12-31T23:59:59Z, the latest time accepted",
                    shown(value)
                );
            }
            format!(
                "`{}` is not a time; use epoch ms, ISO-8601 (2024-01-15T12:00:00Z) or `2024-01-15 12:00:00` (UTC)",
                shown(value)
            )
        })?;
    if ms < 0 {
        return Err(format!(
            "`{}` is before 1970-01-01T00:00:00Z (the epoch); no appliance holds data that old",
            shown(value)
        ));
    }
    if ms > LARGEST_MS {
        return Err(format!(
            "`{}` is after 9999-12-31T23:59:59Z, the latest time accepted",
            shown(value)
        ));
    }
    plausible(value, ms)
}

/// `ms` (parsed from `value`) unless it is before March 1973, where the message says what the
/// caller probably meant: epoch seconds taken for milliseconds, whichever way it was written.
fn plausible(value: &str, ms: i64) -> Result<i64, String> {
    if ms >= SMALLEST_PLAUSIBLE_MS {
        return Ok(ms);
    }
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    let as_seconds = ms.saturating_mul(1000);
    if ms == 0 {
        return Err(format!(
            "`{}` is the epoch itself (1970-01-01T00:00:00Z), not a time any appliance has data for; give epoch milliseconds (e.g. {EXAMPLE_MS}) or ISO-8601 (2024-01-15T12:00:00Z)",
            shown(value)
        ));
    }
    let read_as = if value.bytes().all(|b| b.is_ascii_digit()) {
        String::new()
    } else {
        format!(" ({})", iso(ms))
    };
    if (SMALLEST_PLAUSIBLE_MS..=LARGEST_MS).contains(&as_seconds) {
        return Err(format!(
            "`{}`{read_as} is in {}, before any appliance data: it looks like epoch seconds read as milliseconds; the time meant is probably {} (epoch ms {as_seconds})",
            shown(value),
            iso(ms).get(..4).unwrap_or("1970"),
            iso(as_seconds)
        ));
    }
    Err(format!(
        "`{}`{read_as} is before March 1973, before any appliance data; give epoch milliseconds (e.g. {EXAMPLE_MS}) or ISO-8601 (2024-01-15T12:00:00Z)",
        shown(value)
    ))
}

/// `10000-01-01…`: a year chrono will not read without a sign, and no caller means.
fn five_digit_year(value: &str) -> bool {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    digits >= 5 && value.as_bytes().get(digits) == Some(&b'-')
}

fn parse_datetime(value: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(value) {
        return Some(dt.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(value, format) {
            return Some(naive.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc().timestamp_millis())
}

fn plus_decoded_as_space(value: &str) -> Option<String> {
    let (head, tail) = value.rsplit_once(' ')?;
    (head.contains('T') && tail.len() == 5 && tail.as_bytes()[2] == b':')
        .then(|| format!("{head}+{tail}"))
}

/// A value quoted back in an error: bounded, with control characters escaped.
pub fn shown(value: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = value
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(interval_seconds("300"), Ok(300));
        assert_eq!(interval_seconds("5min"), Ok(300));
        assert_eq!(interval_seconds("1hour"), Ok(3600));
        assert_eq!(interval_seconds("2HOURS"), Ok(7200));
        assert_eq!(interval_seconds("1day"), Ok(86400));
        assert!(interval_seconds("5 min").is_err());
        assert!(interval_seconds("min").is_err());
        assert!(interval_seconds("99999999999999999999day").is_err());
        assert_eq!(interval_label(300), "5min");
        assert_eq!(interval_label(86400), "1day");
        assert_eq!(interval_label(90), "90");
    }

    #[test]
    fn times() {
        assert_eq!(timestamp_ms("1705320000000"), Ok(1_705_320_000_000));
        assert_eq!(timestamp_ms("2024-01-15T12:00:00Z"), Ok(1_705_320_000_000));
        assert_eq!(timestamp_ms("2024-01-15 12:00:00"), Ok(1_705_320_000_000));
        assert_eq!(
            timestamp_ms("2024-01-15T13:00:00+01:00"),
            Ok(1_705_320_000_000)
        );
        assert_eq!(
            timestamp_ms("2024-01-15T13:00:00 01:00"),
            Ok(1_705_320_000_000)
        );
        assert_eq!(timestamp_ms("2024-01-15"), Ok(1_705_276_800_000));
        assert!(timestamp_ms("1705320000").unwrap_err().contains("seconds"));
        assert!(timestamp_ms("yesterday").is_err());
        assert!(timestamp_ms("-5").is_err());
    }

    #[test]
    fn times_outside_1973_to_9999_are_refused_with_a_reason() {
        let before = timestamp_ms("1969-12-31T23:59:59Z").unwrap_err();
        assert!(before.contains("before 1970"), "{before}");
        for late in [
            "10000-01-01T00:00:00Z",
            "+10000-01-01T00:00:00",
            "253402300800000",
        ] {
            let e = timestamp_ms(late).unwrap_err();
            assert!(e.contains("after 9999"), "{late}: {e}");
        }
        assert_eq!(
            timestamp_ms("9999-12-31T23:59:59Z"),
            Ok(253_402_300_799_000)
        );
        // Epoch seconds read as milliseconds, written as digits or as ISO: the same hint.
        for seconds in ["1705320000", "1970-01-20T17:42:00Z", "1970-01-20 17:42:00"] {
            let e = timestamp_ms(seconds).unwrap_err();
            assert!(e.contains("epoch seconds"), "{seconds}: {e}");
            assert!(e.contains("2024-01-15T12:00:00Z"), "{seconds}: {e}");
            assert!(e.contains("1705320000000"), "{seconds}: {e}");
        }
        let zero = timestamp_ms("0").unwrap_err();
        assert!(zero.contains("the epoch itself"), "{zero}");
        assert!(!zero.contains("0000 "), "{zero}");
        let tiny = timestamp_ms("1970-01-01T00:00:05Z").unwrap_err();
        assert!(tiny.contains("before March 1973"), "{tiny}");
    }

    #[test]
    fn protocols_and_bools() {
        assert_eq!(protocol("tcp"), Ok(6));
        assert_eq!(protocol("UDP"), Ok(17));
        assert_eq!(protocol("0"), Ok(0));
        assert!(protocol("256").is_err());
        assert!(protocol("tcpp").is_err());
        assert_eq!(boolean("True"), Ok(true));
        assert_eq!(boolean("0"), Ok(false));
        assert!(boolean("yes").is_err());
    }

    #[test]
    fn shown_is_bounded_and_escaped() {
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 65);
    }

    /// The OpenAPI document's patterns say what the parsers read: the protocol's exactly, the
    /// interval's and the times' at least everything accepted (a date that does not exist
    /// matches, and is refused).
    #[test]
    fn the_documented_patterns_hold_what_is_accepted() {
        let re = |p: &str| regex::Regex::new(p).unwrap();
        let protocols = re(&protocol_pattern());
        let mut values: Vec<String> = (0..=999).map(|n| n.to_string()).collect();
        values.extend(["007", "0255", "0256", "", "-1", "1.0", " 6", "6 "].map(String::from));
        for (name, _) in PROTOCOLS {
            values.push(name.to_string());
            values.push(name.to_ascii_uppercase());
            values.push(format!("{name}x"));
        }
        values.extend(["Tcp", "tCp", "tcp\n", "ipv", "icmpv"].map(String::from));
        for v in &values {
            assert_eq!(protocols.is_match(v), protocol(v).is_ok(), "protocol `{v}`");
        }

        let intervals = re(&interval_pattern());
        for unit in INTERVAL_UNITS.iter().chain([&""]) {
            for v in [
                format!("5{unit}"),
                format!("5{}", unit.to_ascii_uppercase()),
            ] {
                assert!(interval_seconds(&v).is_ok(), "{v}");
                assert!(intervals.is_match(&v), "interval `{v}`");
            }
        }
        for v in ["", "5x", "min", "5 min", "-5", "5.5min", "5minn"] {
            assert!(interval_seconds(v).is_err(), "{v}");
            assert!(!intervals.is_match(v), "interval `{v}`");
        }

        let times = re(TIME_PATTERN);
        for v in [
            "now",
            "now-1h",
            "now-30min",
            "now-5m",
            "now-7d",
            "now-2w",
            "now-10s",
            "1705320000000",
            "2024-01-15T12:00:00Z",
            "2024-01-15t12:00:00z",
            "2024-01-15T12:00:00.123Z",
            "2024-01-15T12:00:00+01:00",
            "2024-01-15T12:00:00 01:00",
            "2024-01-15 12:00:00",
            "2024-01-15 12:00",
            "2024-01-15T12:00",
            "2024-01-15",
            "2024-1-5",
        ] {
            let accepted = relative_ms(v, 1_705_330_000_000).unwrap_or_else(|| timestamp_ms(v));
            assert!(accepted.is_ok(), "{v}: {accepted:?}");
            assert!(times.is_match(v), "time `{v}`");
        }
        for v in [
            "",
            "null",
            "now+1h",
            "yesterday",
            "2024-01-15T12",
            "now-1y",
            "1e12",
        ] {
            let refused = relative_ms(v, 1_705_330_000_000).unwrap_or_else(|| timestamp_ms(v));
            assert!(refused.is_err(), "{v}");
            assert!(!times.is_match(v), "time `{v}`");
        }
    }
}
