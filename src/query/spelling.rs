//! The dialects' spelling: a raw query string → the values of a question, handed to the
//! typed [`MetricQueryBuilder`], which checks them. Every problem is collected before
//! answering, named by the parameter as the caller spelled it.

use std::collections::BTreeMap;

use super::builder::{BuildError, Field, Filter, MetricQueryBuilder};
use super::values::{self, shown};
use super::{FieldError, MetricNames, MetricQuery};
use crate::settings::QueryLimits;

/// Parameters that may repeat, or carry comma lists.
const LIST_PARAMETERS: &[&str] = &["metrics", "devices"];

/// A query string with more parameters than this is refused outright.
const MAX_PARAMETERS: usize = 256;

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
        metric_origins: Vec::new(),
    };
    p.split(raw);
    if !p.errors.is_empty() && p.errors[0].1.parameter == "(query)" {
        return Err(p.errors.into_iter().map(|(_, e)| e).collect());
    }
    let built = p.draft(now_ms).build(limits, catalog, now_ms);
    let spelled = |e: BuildError| (e.field.rank(), p.spelled(e));
    let mut errors: Vec<(u8, FieldError)> = match built {
        Ok(query) if p.errors.is_empty() => return Ok(query),
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(spelled).collect(),
    };
    errors.splice(0..0, std::mem::take(&mut p.errors));
    // In the order of the question's parts, as the caller reads them.
    errors.sort_by_key(|(rank, _)| *rank);
    Err(errors.into_iter().map(|(_, e)| e).collect())
}

struct Parser {
    dialect: Dialect,
    /// Problems with their rank (see [`Field::rank`]); 0 for the query string's own.
    errors: Vec<(u8, FieldError)>,
    scalars: BTreeMap<&'static str, String>,
    /// List items, each with the parameter that carried it (errors name it as sent).
    lists: BTreeMap<&'static str, Vec<(String, String)>>,
    /// The parameter that carried each metric handed to the builder, by position.
    metric_origins: Vec<String>,
}

/// `metric1`, `metric2`, …: the SDK's and the appliance's spelling of several metrics.
fn is_numbered_metric(key: &str) -> bool {
    key.strip_prefix("metric")
        .is_some_and(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Parser {
    fn error(&mut self, rank: u8, parameter: &str, message: impl Into<String>) {
        self.errors
            .push((rank, FieldError::new(parameter, message)));
    }

    fn split(&mut self, raw: &str) {
        let mut seen_repeat = Vec::new();
        for (count, (key, value)) in form_urlencoded::parse(raw.as_bytes()).enumerate() {
            if count >= MAX_PARAMETERS {
                self.errors = vec![(
                    0,
                    FieldError::new("(query)", format!("more than {MAX_PARAMETERS} parameters")),
                )];
                return;
            }
            let key = match (self.dialect, guide_spelling(&key)) {
                (Dialect::Appliance, Some(canonical)) => std::borrow::Cow::Borrowed(canonical),
                _ => key,
            };
            // A known parameter given empty is absent, as Prometheus reads its parameters:
            // generated clients send `protocol=` or `metrics=` for an unset one. (An unknown
            // name is still refused: it is a typo.)
            if super::parameters::ROUTING.contains(&key.as_ref()) {
                continue;
            }
            let named = super::parameters::known(&key).is_some()
                || (self.dialect.numbers_metrics() && is_numbered_metric(&key));
            if value.is_empty() && named {
                continue;
            }
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
                    0,
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
                    0,
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
                    self.error(0, name, message);
                }
            } else {
                self.scalars.insert(name, value.into_owned());
            }
        }
    }

    fn take(&mut self, name: &'static str) -> Option<String> {
        self.scalars.remove(name)
    }

    /// Reads an optional scalar with `parse`, recording its error against `field`'s rank.
    fn field<T>(
        &mut self,
        name: &'static str,
        rank: u8,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ()> {
        let Some(raw) = self.take(name) else {
            return Ok(None);
        };
        match parse(&raw) {
            Ok(v) => Ok(Some(v)),
            Err(message) => {
                self.error(rank, name, message);
                Err(())
            }
        }
    }

    /// The values the caller spelled, handed to the builder; what cannot be read is reported
    /// here and marked refused there.
    fn draft(&mut self, now_ms: i64) -> MetricQueryBuilder {
        let mut b = MetricQuery::builder();
        b = self.metrics(b);
        b = self.devices(b);
        for filter in Filter::ALL {
            if let Some(text) = self.take(filter.name()) {
                b = b.filter_text(filter, &text);
            }
        }
        const DETAILS: u8 = 19;
        if let Ok(on) = self.field("breachtimes", DETAILS, values::boolean) {
            b = b.breachtimes(on.unwrap_or(false));
        }
        if let Ok(on) = self.field("fulldevicedetails", DETAILS, values::boolean) {
            b = b.fulldevicedetails(on.unwrap_or(false));
        }
        // The representation is decided by `Representation::negotiate`; here the value is
        // only checked, so a bad one is refused with the rest.
        let _ = self.field("format", DETAILS, |v| match v {
            "json" | "csv" => Ok(()),
            _ => Err(format!("`{}` is not a format; use json or csv", shown(v))),
        });
        b = match self.field("interval", Field::Interval.rank(), values::interval_seconds) {
            Ok(Some(seconds)) => b.interval_seconds(seconds),
            Ok(None) => b,
            Err(()) => b.refused(Field::Interval),
        };
        b = match self.aliased("starttime", "from", now_ms) {
            Ok(Some(start)) => b.since(start),
            Ok(None) => b,
            Err(()) => b.refused(Field::Start),
        };
        match self.aliased("endtime", "to", now_ms) {
            Ok(Some(end)) => b.until(end),
            Ok(None) => b,
            Err(()) => b.refused(Field::End),
        }
    }

    /// A builder's problem, named by the parameter the caller used.
    fn spelled(&self, e: BuildError) -> FieldError {
        let parameter = match e.field {
            Field::Metric(at) => self
                .metric_origins
                .get(at)
                .map_or("metrics", String::as_str),
            Field::Metrics => self
                .metric_origins
                .first()
                .map_or("metrics", String::as_str),
            Field::Devices => "devices",
            Field::Filter(f) => f.name(),
            Field::Interval => "interval",
            Field::Start => "starttime",
            Field::End => "endtime",
        };
        FieldError::new(parameter, e.message)
    }

    fn metrics(&mut self, b: MetricQueryBuilder) -> MetricQueryBuilder {
        const RANK: u8 = 1;
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
                self.error(RANK, "metric", message);
                self.error(RANK, other, message);
                return b.refused(Field::Metrics);
            }
            (None, None) => {
                self.error(
                    RANK,
                    "metric",
                    "`metric` (one name) or `metrics` (a list) is required",
                );
                return b.refused(Field::Metrics);
            }
            (Some(one), None) if one.contains(',') => {
                self.error(
                    RANK,
                    "metric",
                    "`metric` takes one name; use `metrics` for a comma list",
                );
                return b.refused(Field::Metrics);
            }
            (Some(one), None) => vec![("metric".to_owned(), one)],
            (None, Some(many)) => many,
        };
        let (origins, names): (Vec<String>, Vec<String>) = raw.into_iter().unzip();
        self.metric_origins = origins;
        b.metrics(names)
    }

    fn devices(&mut self, b: MetricQueryBuilder) -> MetricQueryBuilder {
        const RANK: u8 = 2;
        let did = self.take("did");
        let list = self.lists.remove("devices");
        match (did, list) {
            (Some(_), Some(_)) => {
                self.error(RANK, "devices", "give `did` or `devices`, not both");
                b.refused(Field::Devices)
            }
            (None, None) => b,
            (Some(one), None) => match values::positive_id(&one) {
                Ok(id) => b.device(id),
                Err(m) if one.contains([',', '[']) => {
                    self.error(
                        RANK,
                        "did",
                        format!("{m}; `did` takes one device: for several, use `devices=123,456`"),
                    );
                    b.refused(Field::Devices)
                }
                Err(m) => {
                    self.error(RANK, "did", m);
                    b.refused(Field::Devices)
                }
            },
            (None, Some(many)) => {
                let mut ids = Vec::with_capacity(many.len());
                for (_, raw) in &many {
                    match values::positive_id(raw) {
                        Ok(id) => ids.push(id),
                        Err(_) => self.error(
                            RANK,
                            "devices",
                            format!(
                                "`{}` is not a device id; only numeric device ids (did) are accepted",
                                shown(raw)
                            ),
                        ),
                    }
                }
                if ids.len() == many.len() {
                    b.devices(ids)
                } else {
                    b.refused(Field::Devices)
                }
            }
        }
    }

    /// One of an alias pair, checking that both spellings agree when both are given.
    fn aliased(
        &mut self,
        name: &'static str,
        alias: &'static str,
        now_ms: i64,
    ) -> Result<Option<i64>, ()> {
        const RANK: u8 = 21;
        let time =
            |v: &str| values::relative_ms(v, now_ms).unwrap_or_else(|| values::timestamp_ms(v));
        let a = self.field(name, RANK, time);
        let b = self.field(alias, RANK, time);
        let (Ok(a), Ok(b)) = (a, b) else {
            return Err(());
        };
        match (a, b) {
            (Some(x), Some(y)) if x != y => {
                self.error(
                    RANK,
                    alias,
                    format!("`{name}` and `{alias}` are the same parameter but differ"),
                );
                Err(())
            }
            (x, y) => Ok(x.or(y)),
        }
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
    fn an_empty_value_is_no_value() {
        assert_eq!(
            ok("metric=a&metrics=&protocol=&devices=&did=&starttime=&endtime=&interval=&format="),
            ok("metric=a")
        );
        assert_eq!(ok("metric=&metrics=a,b").metrics, ["a", "b"]);
        assert_eq!(ok("metric=a&did=&devices=1,2").devices, [1, 2]);
        for dialect in [Dialect::Sdk, Dialect::Appliance] {
            let q = parse_in(
                dialect,
                "metric=a&metric1=&from=&to=&ddid=&breachtimes=",
                &Settings::defaults().query,
                &AnyMetric,
                NOW,
            );
            assert_eq!(q.unwrap(), ok("metric=a"), "{dialect:?}");
        }
        // A missing metric is still named, given empty or not at all.
        for raw in ["metric=", "metrics=", "metric=&metrics=&did=1", ""] {
            let e = errs(raw);
            assert_eq!(e.len(), 1, "{raw}: {e:?}");
            assert_eq!(e[0].parameter, "metric", "{raw}");
            assert!(e[0].message.contains("required"), "{raw}: {}", e[0].message);
        }
        // Unknown names are refused even when empty.
        assert_eq!(errs("metric=a&nosuch=")[0].parameter, "nosuch");
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
