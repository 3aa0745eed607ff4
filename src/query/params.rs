//! The raw query string → [`MetricQuery`], collecting every problem before answering.

use std::collections::BTreeMap;

use super::values::{self, shown};
use super::{FieldError, MetricNames, MetricQuery, ProtocolLookup};
use crate::settings::QueryLimits;

/// Parameters that may repeat, or carry comma lists.
const LIST_PARAMETERS: &[&str] = &["metrics", "devices"];

/// A query string with more parameters than this is refused outright.
const MAX_PARAMETERS: usize = 256;
const MAX_NAME_LEN: usize = 64;
const MAX_APPLICATION_PROTOCOL_LEN: usize = 64;

/// How a caller spells its question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/v1`: `metric` is one name, `metrics` a list, `format` picks JSON or CSV.
    Gateway,
    /// Scripts written against darktrace-sdk (`/darktrace`): `metric=a,b` (SDK 0.9) and
    /// `metric1=a&metric2=b` (SDK 0.10, the appliance's own spelling) name several metrics too.
    /// There is no `format`: the answer has the seed's shapes.
    Sdk,
    /// Scripts written against the vendor's API guide (`/appliance`): the appliance's own
    /// spelling, `metric1=`, `metric2=`, … and the guide's `startTime`/`endTime`; everything
    /// `/darktrace` accepts. No `format`: the answer is the appliance's array.
    Appliance,
}

impl Dialect {
    /// Several metrics as `metric=a,b` and `metric1=a&metric2=b`.
    fn numbers_metrics(self) -> bool {
        matches!(self, Dialect::Sdk | Dialect::Appliance)
    }
}

/// The vendor's guide writes `startTime`/`endTime` in its examples; appliances accept them.
fn guide_spelling(key: &str) -> Option<&'static str> {
    match key {
        "startTime" | "StartTime" | "STARTTIME" => Some("starttime"),
        "endTime" | "EndTime" | "ENDTIME" => Some("endtime"),
        _ => None,
    }
}

/// Parses and validates a `/v1` query string. `now_ms` anchors open-ended ranges.
pub fn parse(
    raw: &str,
    limits: &QueryLimits,
    catalog: &dyn MetricNames,
    now_ms: i64,
) -> Result<MetricQuery, Vec<FieldError>> {
    parse_in(Dialect::Gateway, raw, limits, catalog, now_ms)
}

/// Parses and validates a query string spelled in `dialect`.
pub fn parse_in(
    dialect: Dialect,
    raw: &str,
    limits: &QueryLimits,
    catalog: &dyn MetricNames,
    now_ms: i64,
) -> Result<MetricQuery, Vec<FieldError>> {
    let mut p = Parser {
        dialect,
        errors: Vec::new(),
        scalars: BTreeMap::new(),
        lists: BTreeMap::new(),
    };
    p.split(raw);
    if !p.errors.is_empty() && p.errors[0].parameter == "(query)" {
        return Err(p.errors);
    }
    let query = p.build(limits, catalog, now_ms);
    match query {
        Some(q) if p.errors.is_empty() => Ok(q),
        _ => Err(p.errors),
    }
}

struct Parser {
    dialect: Dialect,
    errors: Vec<FieldError>,
    scalars: BTreeMap<&'static str, String>,
    /// List items, each with the parameter that carried it (errors name it as sent).
    lists: BTreeMap<&'static str, Vec<(String, String)>>,
}

/// `metric1`, `metric2`, …: the SDK's and the appliance's spelling of several metrics.
fn is_numbered_metric(key: &str) -> bool {
    key.strip_prefix("metric")
        .is_some_and(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Parser {
    fn error(&mut self, parameter: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(parameter, message));
    }

    fn split(&mut self, raw: &str) {
        let mut seen_repeat = Vec::new();
        for (count, (key, value)) in form_urlencoded::parse(raw.as_bytes()).enumerate() {
            if count >= MAX_PARAMETERS {
                self.errors = vec![FieldError::new(
                    "(query)",
                    format!("more than {MAX_PARAMETERS} parameters"),
                )];
                return;
            }
            let key = match (self.dialect, guide_spelling(&key)) {
                (Dialect::Appliance, Some(canonical)) => std::borrow::Cow::Borrowed(canonical),
                _ => key,
            };
            if self.dialect.numbers_metrics()
                && (is_numbered_metric(&key) || (key == "metric" && value.contains(',')))
            {
                let items = value.split(',').map(|v| (key.to_string(), v.to_owned()));
                self.lists.entry("metrics").or_default().extend(items);
                continue;
            }
            if self.dialect != Dialect::Gateway && key == "format" {
                let route = if self.dialect == Dialect::Sdk {
                    "/darktrace answers in the SDK's JSON shapes"
                } else {
                    "/appliance answers in the appliance's JSON array"
                };
                self.error(
                    "format",
                    format!("not accepted here: {route}; /v1/metricdata?format=csv gives CSV"),
                );
                continue;
            }
            let Some(name) = super::parameters::known(&key).map(|p| p.name) else {
                let hint = closest_parameter(&key)
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                self.error(
                    &shown(&key),
                    format!("unknown parameter `{}`{hint}", shown(&key)),
                );
                continue;
            };
            if LIST_PARAMETERS.contains(&name) {
                self.lists
                    .entry(name)
                    .or_default()
                    .extend(list_items(&value).map(|v| (name.to_owned(), v.to_owned())));
            } else if self.scalars.contains_key(name) {
                if !seen_repeat.contains(&name) {
                    seen_repeat.push(name);
                    let message = repeated(self.dialect, name);
                    self.error(name, message);
                }
            } else {
                self.scalars.insert(name, value.into_owned());
            }
        }
    }

    fn take(&mut self, name: &'static str) -> Option<String> {
        self.scalars.remove(name)
    }

    /// Parses an optional scalar with `parse`, recording its error.
    fn field<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.take(name)?;
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(name, message);
                None
            }
        }
    }

    fn build(
        &mut self,
        limits: &QueryLimits,
        catalog: &dyn MetricNames,
        now_ms: i64,
    ) -> Option<MetricQuery> {
        let metrics = self.metrics(limits, catalog);
        let devices = self.devices(limits);
        let ddid = self.field("ddid", values::positive_id);
        let odid = self.field("odid", values::positive_id);
        let port = self.field("port", values::port);
        let sourceport = self.field("sourceport", values::port);
        let destinationport = self.field("destinationport", values::port);
        let protocol = self.field("protocol", values::protocol);
        let applicationprotocol = self.application_protocol(catalog);
        let breachtimes = self.field("breachtimes", values::boolean).unwrap_or(false);
        let fulldevicedetails = self
            .field("fulldevicedetails", values::boolean)
            .unwrap_or(false);
        // The representation is decided by `Representation::negotiate`; here the value is
        // only checked, so a bad one is refused with the rest.
        let _ = self.field("format", |v| match v {
            "json" | "csv" => Ok(()),
            _ => Err(format!("`{}` is not a format; use json or csv", shown(v))),
        });
        let interval = self.interval(limits);
        let (starttime, endtime) = self.window(limits, interval, now_ms);
        Some(MetricQuery {
            metrics: metrics?,
            devices: devices?,
            ddid,
            odid,
            port,
            sourceport,
            destinationport,
            protocol,
            applicationprotocol,
            starttime,
            endtime,
            interval_seconds: interval?,
            breachtimes,
            fulldevicedetails,
        })
    }

    fn metrics(&mut self, limits: &QueryLimits, catalog: &dyn MetricNames) -> Option<Vec<String>> {
        let single = self.take("metric");
        let list = self.lists.remove("metrics");
        let raw: Vec<(String, String)> = match (single, list) {
            (Some(_), Some(list)) => {
                let other = list.first().map_or("metrics", |(p, _)| p.as_str());
                let message = if other == "metrics" {
                    "give `metric` or `metrics`, not both"
                } else {
                    "give one `metric`, or several as `metric=a,b` or `metric1`, `metric2`, …"
                };
                self.error("metric", message);
                self.error(other, message);
                return None;
            }
            (None, None) => {
                self.error(
                    "metric",
                    "`metric` (one name) or `metrics` (a list) is required",
                );
                return None;
            }
            (Some(one), None) if one.contains(',') => {
                self.error(
                    "metric",
                    "`metric` takes one name; use `metrics` for a comma list",
                );
                return None;
            }
            (Some(one), None) => vec![("metric".to_owned(), one)],
            (None, Some(many)) => many,
        };
        // Problems about the whole list are reported against the first spelling used.
        let param = raw
            .first()
            .map_or("metrics", |(p, _)| p.as_str())
            .to_owned();
        let mut named: Vec<(String, &str)> = Vec::with_capacity(raw.len());
        let mut ok = true;
        for (origin, name) in &raw {
            match values::name_token(name, "metric name", MAX_NAME_LEN) {
                Ok(n) => named.push((n, origin.as_str())),
                Err(m) => {
                    self.error(origin, m);
                    ok = false;
                }
            }
        }
        named.sort_unstable();
        named.dedup_by(|a, b| a.0 == b.0);
        if named.len() > limits.max_metrics {
            self.error(
                &param,
                format!(
                    "{} metrics requested; at most {} per request",
                    named.len(),
                    limits.max_metrics
                ),
            );
            return None;
        }
        for (name, origin) in &named {
            if catalog.contains(name) == Some(false) {
                let closest = catalog.closest(name);
                let hint = if closest.is_empty() {
                    "; GET /v1/metrics lists the known names".to_owned()
                } else {
                    format!("; did you mean {}?", quoted_list(&closest))
                };
                self.error(origin, format!("unknown metric `{name}`{hint}"));
                ok = false;
            }
        }
        let names: Vec<String> = named.into_iter().map(|(n, _)| n).collect();
        ok.then_some(names)
    }

    /// `applicationprotocol`: the appliance's numeric code (from its `/enums`), or a name it
    /// lists there, translated to the code. Names are only sent as codes.
    fn application_protocol(&mut self, catalog: &dyn MetricNames) -> Option<u32> {
        const NAME: &str = "applicationprotocol";
        let raw = self.take(NAME)?;
        if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            let Ok(code) = raw.parse::<u32>() else {
                self.error(
                    NAME,
                    format!("`{}` is not an application protocol code", shown(&raw)),
                );
                return None;
            };
            if catalog.has_application_protocol(code) == Some(false) {
                self.error(
                    NAME,
                    format!("`{code}` is not an application protocol code the appliance lists in its /enums; give a code it lists, or a name such as http"),
                );
                return None;
            }
            return Some(code);
        }
        let name_char = |c: char| c.is_ascii_alphanumeric() || " _.:/+-".contains(c);
        if raw.is_empty()
            || raw.chars().count() > MAX_APPLICATION_PROTOCOL_LEN
            || !raw.chars().all(name_char)
        {
            self.error(
                NAME,
                format!("`{}` is not an application protocol; give its code, or its name (letters, digits, spaces and _ . : / + -; at most {MAX_APPLICATION_PROTOCOL_LEN} characters)", shown(&raw)),
            );
            return None;
        }
        match catalog.application_protocol(&raw) {
            ProtocolLookup::Code(code) => Some(code),
            ProtocolLookup::Unknown { closest } => {
                let hint = if closest.is_empty() {
                    "; the appliance's /enums lists the known names".to_owned()
                } else {
                    format!("; did you mean {}?", quoted_list(&closest))
                };
                self.error(
                    NAME,
                    format!("unknown application protocol `{}`{hint}", shown(&raw)),
                );
                None
            }
            ProtocolLookup::NotKnownYet => {
                self.error(
                    NAME,
                    format!(
                        "`{}` is a name, and the gateway has not read the appliance's application protocols (/enums) yet, so it cannot translate names; give the numeric code (e.g. 1053), or retry shortly",
                        shown(&raw)
                    ),
                );
                None
            }
        }
    }

    fn devices(&mut self, limits: &QueryLimits) -> Option<Vec<u64>> {
        let did = self.take("did");
        let list = self.lists.remove("devices");
        match (did, list) {
            (Some(_), Some(_)) => {
                self.error("devices", "give `did` or `devices`, not both");
                None
            }
            (None, None) => Some(Vec::new()),
            (Some(one), None) => match values::positive_id(&one) {
                Ok(id) => Some(vec![id]),
                Err(m) if one.contains([',', '[']) => {
                    self.error(
                        "did",
                        format!("{m}; `did` takes one device: for several, use `devices=123,456`"),
                    );
                    None
                }
                Err(m) => {
                    self.error("did", m);
                    None
                }
            },
            (None, Some(many)) => {
                let mut ids = Vec::with_capacity(many.len());
                let mut ok = true;
                for (_, raw) in &many {
                    match values::positive_id(raw) {
                        Ok(id) => ids.push(id),
                        Err(_) => {
                            ok = false;
                            self.error(
                                "devices",
                                format!(
                                    "`{}` is not a device id; only numeric device ids (did) are accepted",
                                    shown(raw)
                                ),
                            );
                        }
                    }
                }
                ids.sort_unstable();
                ids.dedup();
                if ids.len() > limits.max_devices {
                    self.error(
                        "devices",
                        format!(
                            "{} devices requested; at most {} per request",
                            ids.len(),
                            limits.max_devices
                        ),
                    );
                    return None;
                }
                ok.then_some(ids)
            }
        }
    }

    fn interval(&mut self, limits: &QueryLimits) -> Option<u64> {
        let Some(raw) = self.take("interval") else {
            return Some(limits.default_interval_seconds);
        };
        let seconds = match values::interval_seconds(&raw) {
            Ok(s) => s,
            Err(m) => {
                self.error("interval", m);
                return None;
            }
        };
        if !seconds.is_multiple_of(60) && seconds > 0 {
            let below = (seconds / 60 * 60).max(60);
            let above = seconds.div_ceil(60) * 60;
            let choices = if below == above {
                values::interval_label(above)
            } else {
                format!(
                    "{} or {}",
                    values::interval_label(below),
                    values::interval_label(above)
                )
            };
            self.error(
                "interval",
                format!(
                    "`{}` is not a whole number of minutes; appliances keep one value per minute, so use e.g. {choices}",
                    shown(&raw)
                ),
            );
            return None;
        }
        if !(limits.min_interval_seconds..=limits.max_interval_seconds).contains(&seconds) {
            self.error(
                "interval",
                format!(
                    "interval must be between {} and {}",
                    values::interval_label(limits.min_interval_seconds),
                    values::interval_label(limits.max_interval_seconds)
                ),
            );
            return None;
        }
        Some(seconds)
    }

    /// One of an alias pair, checking that both spellings agree when both are given.
    fn aliased(
        &mut self,
        name: &'static str,
        alias: &'static str,
        now_ms: i64,
    ) -> Result<Option<i64>, ()> {
        let time =
            |v: &str| values::relative_ms(v, now_ms).unwrap_or_else(|| values::timestamp_ms(v));
        let a = self.field(name, time);
        let a_failed = self.errors.iter().any(|e| e.parameter == name);
        let b = self.field(alias, time);
        let b_failed = self.errors.iter().any(|e| e.parameter == alias);
        if a_failed || b_failed {
            return Err(());
        }
        match (a, b) {
            (Some(x), Some(y)) if x != y => {
                self.error(
                    alias,
                    format!("`{name}` and `{alias}` are the same parameter but differ"),
                );
                Err(())
            }
            (x, y) => Ok(x.or(y)),
        }
    }

    fn window(
        &mut self,
        limits: &QueryLimits,
        interval: Option<u64>,
        now_ms: i64,
    ) -> (Option<i64>, Option<i64>) {
        let start = self.aliased("starttime", "from", now_ms);
        let end = self.aliased("endtime", "to", now_ms);
        let (Ok(start), Ok(end)) = (start, end) else {
            return (None, None);
        };
        let (start, end_for_limits) = match (start, end) {
            (None, None) => return (None, None),
            (None, Some(_)) => {
                self.error(
                    "endtime",
                    "an end time needs a start time (`starttime` or `from`)",
                );
                return (None, None);
            }
            (Some(s), Some(e)) if s >= e => {
                self.error("starttime", "the start time must be before the end time");
                return (None, None);
            }
            (Some(s), None) if s >= now_ms => {
                self.error(
                    "starttime",
                    "the start time is in the future; give an end time too",
                );
                return (None, None);
            }
            (Some(s), e) => (s, e.unwrap_or(now_ms)),
        };
        let range_ms = (end_for_limits - start) as u64;
        let max_range_ms = limits.max_range_days.saturating_mul(86_400_000);
        if range_ms > max_range_ms {
            self.error(
                "starttime",
                format!(
                    "the range is longer than {} days; ask for a shorter range",
                    limits.max_range_days
                ),
            );
        } else if let Some(interval) = interval {
            let points = range_ms.div_ceil(interval * 1000);
            if points > limits.max_points {
                let needed = range_ms.div_ceil(limits.max_points * 1000);
                self.error(
                    "interval",
                    format!(
                        "this range at {} is {points} points, more than the limit of {}; use a coarser interval, e.g. interval={}",
                        values::interval_label(interval),
                        limits.max_points,
                        values::interval_label(coarser_interval(needed))
                    ),
                );
            }
        }
        (Some(start), end)
    }
}

/// A list parameter's items: `a,b`, also written `[a,b]` (as JSON or Python print a list).
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    inner.split(',').map(str::trim)
}

/// What to say about a parameter given twice: for `did` and `metric`, where the list goes
/// (HTTP libraries repeat a parameter to send a list, e.g. Python `requests`).
fn repeated(dialect: Dialect, name: &str) -> String {
    match (dialect, name) {
        (_, "did") => "`did` is given more than once; it takes one device: for several, use \
             `devices=123,456` (or repeat `devices=`)"
            .to_owned(),
        (Dialect::Gateway, "metric") => "`metric` is given more than once; it takes one name: \
             for several, use `metrics=a,b` (or repeat `metrics=`)"
            .to_owned(),
        (_, "metric") => "`metric` is given more than once; for several metrics, use \
             `metric=a,b` or `metric1=a&metric2=b`"
            .to_owned(),
        _ => format!("`{name}` is given more than once"),
    }
}

/// The smallest common interval of at least `seconds`.
fn coarser_interval(seconds: u64) -> u64 {
    const COMMON: &[u64] = &[
        60, 300, 600, 900, 1_800, 3_600, 7_200, 21_600, 43_200, 86_400, 604_800,
    ];
    COMMON
        .iter()
        .copied()
        .find(|c| *c >= seconds)
        .unwrap_or_else(|| seconds.div_ceil(86_400) * 86_400)
}

fn closest_parameter(key: &str) -> Option<&'static str> {
    let squashed: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    super::parameters::PARAMETERS
        .iter()
        .map(|p| p.name)
        .map(|k| (strsim::jaro_winkler(&squashed, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::AnyMetric;
    use crate::settings::Settings;

    const NOW: i64 = 1_705_330_000_000;

    fn ok(raw: &str) -> MetricQuery {
        parse(raw, &Settings::defaults().query, &AnyMetric, NOW).unwrap()
    }

    fn errs(raw: &str) -> Vec<FieldError> {
        parse(raw, &Settings::defaults().query, &AnyMetric, NOW).unwrap_err()
    }

    #[test]
    fn spellings_of_one_question_are_equal() {
        let a = ok(
            "metrics=b,a&from=1705320000000&to=1705323600000&interval=5min&protocol=tcp&breachtimes=1",
        );
        let b = ok(
            "metrics=a&metrics=b&metrics=a&starttime=2024-01-15T12:00:00Z&endtime=2024-01-15 13:00:00&interval=300&protocol=6&breachtimes=true",
        );
        assert_eq!(a, b);
        assert_eq!(a.metrics, ["a", "b"]);
        assert_eq!(a.protocol, Some(6));
        assert_eq!(
            ok("metric=x&did=5").devices,
            ok("metric=x&devices=5").devices
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let e = errs("metric=a,b&did=x&port=0&interval=7x&start_time=1");
        let named: Vec<&str> = e.iter().map(|e| e.parameter.as_str()).collect();
        for p in ["metric", "did", "port", "interval", "start_time"] {
            assert!(named.contains(&p), "{p} not in {named:?}");
        }
        assert!(e.iter().any(|e| e.message.contains("`starttime`")));
    }

    #[test]
    fn every_sdk_spelling_is_the_gateways_question() {
        let sdk = |raw: &str| {
            parse_in(
                Dialect::Sdk,
                raw,
                &Settings::defaults().query,
                &AnyMetric,
                NOW,
            )
            .unwrap()
        };
        let v1 = ok(
            "metrics=a,b&devices=1,2&from=1705320000000&to=1705323600000&interval=300&breachtimes=true",
        );
        for spelling in [
            "metric=b,a&devices=2,1&from=1705320000000&to=1705323600000&interval=5min&breachtimes=True",
            "metric1=a&metric2=b&devices=1&devices=2&from=2024-01-15%2012:00:00&to=2024-01-15%2013:00:00&interval=300&breachtimes=true",
        ] {
            assert_eq!(sdk(spelling), v1, "{spelling}");
        }
        // `/v1` keeps `metric` to one name and has no numbered metrics.
        assert_eq!(errs("metric=a,b")[0].parameter, "metric");
        assert_eq!(errs("metric=a&metric1=b")[0].parameter, "metric1");
    }

    #[test]
    fn the_guides_spellings_are_the_gateways_question() {
        let guide = |raw: &str| {
            parse_in(
                Dialect::Appliance,
                raw,
                &Settings::defaults().query,
                &AnyMetric,
                NOW,
            )
            .unwrap()
        };
        assert_eq!(
            guide(
                "metric=internalconnections&startTime=1584694800000&endTime=1584698400000&did=1&&ddid=18&protocol=6&interval=300"
            ),
            ok(
                "metric=internalconnections&starttime=1584694800000&endtime=1584698400000&did=1&ddid=18&protocol=tcp&interval=5min"
            )
        );
        assert_eq!(
            guide("metric1=b&metric2=a&from=2020-03-20T00:00:00&to=2020-03-20T23:59:59"),
            ok("metrics=a,b&from=2020-03-20T00:00:00Z&to=2020-03-20T23:59:59Z")
        );
        let e = parse_in(
            Dialect::Appliance,
            "metric=a&format=csv",
            &Settings::defaults().query,
            &AnyMetric,
            NOW,
        )
        .unwrap_err();
        assert!(e[0].message.contains("/appliance"), "{}", e[0].message);
    }

    #[test]
    fn times_may_be_relative_to_now() {
        let q = ok("metric=a&from=now-1h&interval=5min");
        assert_eq!(q.starttime, Some(NOW - 3_600_000));
        assert_eq!(q.endtime, None, "until now");
        assert_eq!(
            ok("metric=a&from=now-7d&to=now-1d").endtime,
            Some(NOW - 86_400_000)
        );
        assert_eq!(
            ok("metric=a&from=now-30min").starttime,
            Some(NOW - 1_800_000)
        );
        for bad in ["now+1h", "now-1y", "now-h", "now-99999999999999w"] {
            let e = errs(&format!("metric=a&from={bad}"));
            assert_eq!(e[0].parameter, "from", "{bad}");
            assert!(
                e[0].message.contains("relative time"),
                "{bad}: {}",
                e[0].message
            );
        }
    }

    #[test]
    fn lists_may_be_bracketed_and_repeats_point_at_the_list_parameter() {
        assert_eq!(ok("metric=x&devices=[456,%20123]").devices, [123, 456]);
        assert_eq!(ok("metrics=[b,a]").metrics, ["a", "b"]);
        assert_eq!(
            ok("metric=x&devices=[456,123]"),
            ok("metric=x&devices=123&devices=456")
        );
        let e = errs("metric=x&did=1&did=2");
        assert_eq!(e[0].parameter, "did");
        assert!(
            e[0].message.contains("`devices=123,456`"),
            "{}",
            e[0].message
        );
        let e = errs("metric=x&metric=y");
        assert!(e[0].message.contains("`metrics=a,b`"), "{}", e[0].message);
        let e = errs("metric=x&did=[1,2]");
        assert!(e[0].message.contains("`devices="), "{}", e[0].message);
    }

    #[test]
    fn points_limit_suggests_coarser_interval() {
        let e = errs("metric=a&starttime=1600000000000&endtime=1630000000000&interval=1min");
        assert_eq!(e[0].parameter, "interval");
        assert!(e[0].message.contains("interval="), "{}", e[0].message);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::query::AnyMetric;
    use crate::settings::Settings;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn the_parser_never_panics(raw in ".{0,300}") {
            for dialect in [Dialect::Gateway, Dialect::Sdk, Dialect::Appliance] {
                let _ = parse_in(dialect, &raw, &Settings::defaults().query, &AnyMetric, 1_705_330_000_000);
            }
        }

        #[test]
        fn the_parser_never_panics_on_plausible_queries(
            pairs in proptest::collection::vec((
                proptest::sample::select(
                    crate::query::PARAMETERS.iter().map(|p| p.name).collect::<Vec<_>>()
                ),
                r"[0-9a-zA-Z:,. %+-]{0,24}",
            ), 0..12)
        ) {
            let raw: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let result = parse(&raw.join("&"), &Settings::defaults().query, &AnyMetric, 1_705_330_000_000);
            if let Err(errors) = result {
                prop_assert!(!errors.is_empty());
            }
        }
    }
}
