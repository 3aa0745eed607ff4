//! The typed constructor of [`MetricQuery`]: values in, a valid question or every problem
//! out, each named by its [`Field`].
//!
//! The dialects' spelling (`spelling.rs`) and the PromQL selectors both build through it, so
//! the rules (limits, the catalog, whole-minute intervals, the range) live once. Text stays at
//! the edges; the one exception is [`MetricQueryBuilder::filter_text`], for filters whose text
//! form is itself the value (`protocol="tcp"`, an application protocol's name).

use super::values::{self, shown};
use super::{MetricNames, MetricQuery, ProtocolLookup};
use crate::settings::QueryLimits;

const MAX_NAME_LEN: usize = 64;
const MAX_APPLICATION_PROTOCOL_LEN: usize = 64;

/// The OpenAPI pattern of `applicationprotocol`: a code, or a name of the characters
/// [`MetricQueryBuilder`] accepts in one (whether the appliance lists it is checked then).
pub const APPLICATION_PROTOCOL_PATTERN: &str = "^[A-Za-z0-9 _.:/+-]{1,64}$";

/// The appliance's filters: one value each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Filter {
    Ddid,
    Odid,
    Port,
    SourcePort,
    DestinationPort,
    Protocol,
    ApplicationProtocol,
}

impl Filter {
    pub const ALL: [Filter; 7] = [
        Filter::Ddid,
        Filter::Odid,
        Filter::Port,
        Filter::SourcePort,
        Filter::DestinationPort,
        Filter::Protocol,
        Filter::ApplicationProtocol,
    ];

    /// The `/metricdata` parameter (and PromQL label) that carries it.
    pub const fn name(self) -> &'static str {
        match self {
            Filter::Ddid => "ddid",
            Filter::Odid => "odid",
            Filter::Port => "port",
            Filter::SourcePort => "sourceport",
            Filter::DestinationPort => "destinationport",
            Filter::Protocol => "protocol",
            Filter::ApplicationProtocol => "applicationprotocol",
        }
    }
}

/// What a [`BuildError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The metric at this position among those given (counting repeats).
    Metric(usize),
    /// The metrics as a whole: none, or too many.
    Metrics,
    Devices,
    Filter(Filter),
    Interval,
    Start,
    End,
}

impl Field {
    /// The order in which problems are reported: the order of the question's parts.
    pub(crate) fn rank(self) -> u8 {
        match self {
            Field::Metric(_) | Field::Metrics => 1,
            Field::Devices => 2,
            Field::Filter(f) => 3 + f as u8,
            Field::Interval => 20,
            Field::Start | Field::End => 21,
        }
    }
}

/// One problem with a value given to the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub field: Field,
    /// What is wrong and how to fix it, for the caller.
    pub message: String,
}

/// A value the builder was given, or was told could not be read.
#[derive(Debug, Clone, Default)]
enum Slot<T> {
    #[default]
    Absent,
    Given(T),
    /// Given, but refused at the edge (its problem is already reported there): checks that
    /// need it are skipped, and the build fails.
    Refused,
}

impl<T: Copy> Slot<T> {
    fn get(&self) -> Option<T> {
        match self {
            Slot::Given(v) => Some(*v),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum ApplicationProtocol {
    Code(u32),
    Name(String),
}

/// Builds a [`MetricQuery`] from values: `MetricQuery::builder().metric("connections")
/// .device(123).range(start, end).interval_seconds(300).build(&limits, &catalog, now)`.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MetricQueryBuilder {
    metrics: Vec<String>,
    metrics_refused: bool,
    devices: Vec<u64>,
    devices_refused: bool,
    ids: [Slot<u64>; 2],
    ports: [Slot<u16>; 3],
    protocol: Slot<u8>,
    applicationprotocol: Slot<ApplicationProtocol>,
    start: Slot<i64>,
    end: Slot<i64>,
    interval: Slot<u64>,
    breachtimes: bool,
    fulldevicedetails: bool,
    errors: Vec<BuildError>,
}

impl MetricQuery {
    pub fn builder() -> MetricQueryBuilder {
        MetricQueryBuilder::default()
    }
}

impl MetricQueryBuilder {
    pub fn metric(mut self, name: impl Into<String>) -> Self {
        self.metrics.push(name.into());
        self
    }
    pub fn metrics<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.metrics.extend(names.into_iter().map(Into::into));
        self
    }
    pub fn device(mut self, did: u64) -> Self {
        self.devices.push(did);
        self
    }
    pub fn devices(mut self, dids: impl IntoIterator<Item = u64>) -> Self {
        self.devices.extend(dids);
        self
    }
    pub fn ddid(mut self, did: u64) -> Self {
        self.ids[0] = Slot::Given(did);
        self
    }
    pub fn odid(mut self, did: u64) -> Self {
        self.ids[1] = Slot::Given(did);
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.ports[0] = Slot::Given(port);
        self
    }
    pub fn sourceport(mut self, port: u16) -> Self {
        self.ports[1] = Slot::Given(port);
        self
    }
    pub fn destinationport(mut self, port: u16) -> Self {
        self.ports[2] = Slot::Given(port);
        self
    }
    /// An IANA protocol number.
    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = Slot::Given(protocol);
        self
    }
    /// The appliance's code for an application protocol (checked against its `/enums`).
    pub fn application_protocol(mut self, code: u32) -> Self {
        self.applicationprotocol = Slot::Given(ApplicationProtocol::Code(code));
        self
    }
    /// An application protocol by the name the appliance's `/enums` lists.
    pub fn application_protocol_named(mut self, name: impl Into<String>) -> Self {
        self.applicationprotocol = Slot::Given(ApplicationProtocol::Name(name.into()));
        self
    }

    /// A filter from its text form, as a caller writes it (`port=443`, `protocol=tcp`,
    /// `applicationprotocol=http`); a bad one is reported against the filter.
    pub fn filter_text(mut self, filter: Filter, text: &str) -> Self {
        let id = |s: &mut Self, i: usize| match values::positive_id(text) {
            Ok(v) => s.ids[i] = Slot::Given(v),
            Err(m) => s.refuse(Field::Filter(filter), m),
        };
        let port = |s: &mut Self, i: usize| match values::port(text) {
            Ok(v) => s.ports[i] = Slot::Given(v),
            Err(m) => s.refuse(Field::Filter(filter), m),
        };
        match filter {
            Filter::Ddid => id(&mut self, 0),
            Filter::Odid => id(&mut self, 1),
            Filter::Port => port(&mut self, 0),
            Filter::SourcePort => port(&mut self, 1),
            Filter::DestinationPort => port(&mut self, 2),
            Filter::Protocol => match values::protocol(text) {
                Ok(v) => self.protocol = Slot::Given(v),
                Err(m) => self.refuse(Field::Filter(filter), m),
            },
            Filter::ApplicationProtocol => {
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                    match text.parse::<u32>() {
                        Ok(code) => return self.application_protocol(code),
                        Err(_) => self.refuse(
                            Field::Filter(filter),
                            format!("`{}` is not an application protocol code", shown(text)),
                        ),
                    }
                } else {
                    return self.application_protocol_named(text);
                }
            }
        }
        self
    }

    /// `[start, end)`, epoch ms.
    pub fn range(mut self, start: i64, end: i64) -> Self {
        self.start = Slot::Given(start);
        self.end = Slot::Given(end);
        self
    }
    /// From `start` (epoch ms) until now.
    pub fn since(mut self, start: i64) -> Self {
        self.start = Slot::Given(start);
        self
    }
    /// An end without a start is refused at build: kept apart so the edge can report it.
    pub fn until(mut self, end: i64) -> Self {
        self.end = Slot::Given(end);
        self
    }
    /// Bucket width; the limits' default when not given.
    pub fn interval_seconds(mut self, seconds: u64) -> Self {
        self.interval = Slot::Given(seconds);
        self
    }
    pub fn breachtimes(mut self, on: bool) -> Self {
        self.breachtimes = on;
        self
    }
    pub fn fulldevicedetails(mut self, on: bool) -> Self {
        self.fulldevicedetails = on;
        self
    }

    /// `field` was given, but the edge could not read it and has reported why: the build
    /// fails, without reporting what follows from the missing value.
    pub fn refused(mut self, field: Field) -> Self {
        match field {
            Field::Metric(_) | Field::Metrics => self.metrics_refused = true,
            Field::Devices => self.devices_refused = true,
            Field::Filter(f) => match f {
                Filter::Ddid => self.ids[0] = Slot::Refused,
                Filter::Odid => self.ids[1] = Slot::Refused,
                Filter::Port => self.ports[0] = Slot::Refused,
                Filter::SourcePort => self.ports[1] = Slot::Refused,
                Filter::DestinationPort => self.ports[2] = Slot::Refused,
                Filter::Protocol => self.protocol = Slot::Refused,
                Filter::ApplicationProtocol => self.applicationprotocol = Slot::Refused,
            },
            Field::Interval => self.interval = Slot::Refused,
            Field::Start => self.start = Slot::Refused,
            Field::End => self.end = Slot::Refused,
        }
        self
    }

    fn refuse(&mut self, field: Field, message: impl Into<String>) {
        self.errors.push(BuildError {
            field,
            message: message.into(),
        });
        *self = std::mem::take(self).refused(field);
    }

    /// The question, valid under `limits` and the appliance's `catalog`; or every problem.
    /// `now_ms` ends a range given without an end.
    pub fn build(
        mut self,
        limits: &QueryLimits,
        catalog: &dyn MetricNames,
        now_ms: i64,
    ) -> Result<MetricQuery, Vec<BuildError>> {
        let failed_before = self.refused_anything();
        let metrics = self.checked_metrics(limits, catalog);
        let devices = self.checked_devices(limits);
        let ddid = self.checked_id(0, Filter::Ddid);
        let odid = self.checked_id(1, Filter::Odid);
        let port = self.checked_port(0, Filter::Port);
        let sourceport = self.checked_port(1, Filter::SourcePort);
        let destinationport = self.checked_port(2, Filter::DestinationPort);
        let applicationprotocol = self.checked_application_protocol(catalog);
        let interval = self.checked_interval(limits);
        let (starttime, endtime) = self.checked_window(limits, interval, now_ms);
        let (Some(metrics), Some(devices), Some(interval_seconds), false, true) = (
            metrics,
            devices,
            interval,
            failed_before,
            self.errors.is_empty(),
        ) else {
            return Err(self.errors);
        };
        Ok(MetricQuery {
            metrics,
            devices,
            ddid,
            odid,
            port,
            sourceport,
            destinationport,
            protocol: self.protocol.get(),
            applicationprotocol,
            starttime,
            endtime,
            interval_seconds,
            breachtimes: self.breachtimes,
            fulldevicedetails: self.fulldevicedetails,
        })
    }

    fn refused_anything(&self) -> bool {
        self.metrics_refused
            || self.devices_refused
            || self.ids.iter().any(|s| matches!(s, Slot::Refused))
            || self.ports.iter().any(|s| matches!(s, Slot::Refused))
            || matches!(self.protocol, Slot::Refused)
            || matches!(self.applicationprotocol, Slot::Refused)
            || matches!(self.interval, Slot::Refused)
            || matches!(self.start, Slot::Refused)
            || matches!(self.end, Slot::Refused)
    }

    fn error(&mut self, field: Field, message: impl Into<String>) {
        self.errors.push(BuildError {
            field,
            message: message.into(),
        });
    }

    fn checked_metrics(
        &mut self,
        limits: &QueryLimits,
        catalog: &dyn MetricNames,
    ) -> Option<Vec<String>> {
        if self.metrics_refused {
            return None;
        }
        if self.metrics.is_empty() {
            self.error(Field::Metrics, "at least one metric is required");
            return None;
        }
        let given = std::mem::take(&mut self.metrics);
        let mut named: Vec<(String, usize)> = Vec::with_capacity(given.len());
        let mut ok = true;
        for (at, name) in given.into_iter().enumerate() {
            match values::name_token(&name, "metric name", MAX_NAME_LEN) {
                Ok(n) => named.push((n, at)),
                Err(m) => {
                    self.error(Field::Metric(at), m);
                    ok = false;
                }
            }
        }
        named.sort_unstable();
        named.dedup_by(|a, b| a.0 == b.0);
        if named.len() > limits.max_metrics.get() {
            self.error(
                Field::Metrics,
                format!(
                    "{} metrics requested; at most {} per request",
                    named.len(),
                    limits.max_metrics
                ),
            );
            return None;
        }
        for (name, at) in &named {
            if catalog.contains(name) == Some(false) {
                let closest = catalog.closest(name);
                let hint = if closest.is_empty() {
                    "; GET /v1/metrics lists the known names".to_owned()
                } else {
                    format!("; did you mean {}?", quoted_list(&closest))
                };
                self.error(Field::Metric(*at), format!("unknown metric `{name}`{hint}"));
                ok = false;
            }
        }
        ok.then(|| named.into_iter().map(|(n, _)| n).collect())
    }

    fn checked_devices(&mut self, limits: &QueryLimits) -> Option<Vec<u64>> {
        if self.devices_refused {
            return None;
        }
        let mut ids = std::mem::take(&mut self.devices);
        let mut ok = true;
        for id in &ids {
            if let Err(m) = values::valid_id(*id) {
                self.error(Field::Devices, m);
                ok = false;
            }
        }
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > limits.max_devices.get() {
            self.error(
                Field::Devices,
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

    fn checked_id(&mut self, at: usize, filter: Filter) -> Option<u64> {
        let id = self.ids[at].get()?;
        match values::valid_id(id) {
            Ok(id) => Some(id),
            Err(m) => {
                self.error(Field::Filter(filter), m);
                None
            }
        }
    }

    fn checked_port(&mut self, at: usize, filter: Filter) -> Option<u16> {
        let port = self.ports[at].get()?;
        if port == 0 {
            self.error(Field::Filter(filter), "`0` is not a port (1-65535)");
            return None;
        }
        Some(port)
    }

    /// The appliance's numeric code, or a name it lists (translated). Names are only sent as
    /// codes.
    fn checked_application_protocol(&mut self, catalog: &dyn MetricNames) -> Option<u32> {
        const FIELD: Field = Field::Filter(Filter::ApplicationProtocol);
        let given = match std::mem::take(&mut self.applicationprotocol) {
            Slot::Given(given) => given,
            other => {
                self.applicationprotocol = other;
                return None;
            }
        };
        let raw = match given {
            ApplicationProtocol::Code(code) => {
                if catalog.has_application_protocol(code) == Some(false) {
                    self.error(
                        FIELD,
                        format!("`{code}` is not an application protocol code the appliance lists in its /enums; give a code it lists, or a name such as http"),
                    );
                    return None;
                }
                return Some(code);
            }
            ApplicationProtocol::Name(name) => name,
        };
        let name_char = |c: char| c.is_ascii_alphanumeric() || " _.:/+-".contains(c);
        if raw.is_empty()
            || raw.chars().count() > MAX_APPLICATION_PROTOCOL_LEN
            || !raw.chars().all(name_char)
        {
            self.error(
                FIELD,
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
                    FIELD,
                    format!("unknown application protocol `{}`{hint}", shown(&raw)),
                );
                None
            }
            ProtocolLookup::NotKnownYet => {
                self.error(
                    FIELD,
                    format!(
                        "`{}` is a name, and the gateway has not read the appliance's application protocols (/enums) yet, so it cannot translate names; give the numeric code (e.g. 1053), or retry shortly",
                        shown(&raw)
                    ),
                );
                None
            }
        }
    }

    fn checked_interval(&mut self, limits: &QueryLimits) -> Option<u64> {
        let seconds = match self.interval {
            Slot::Absent => return Some(limits.default_interval_seconds.get()),
            Slot::Refused => return None,
            Slot::Given(seconds) => seconds,
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
                Field::Interval,
                format!(
                    "{seconds} seconds is not a whole number of minutes; appliances keep one value per minute, so use e.g. {choices}"
                ),
            );
            return None;
        }
        let (min, max) = (
            limits.min_interval_seconds.get(),
            limits.max_interval_seconds.get(),
        );
        if !(min..=max).contains(&seconds) {
            self.error(
                Field::Interval,
                format!(
                    "interval must be between {} and {}",
                    values::interval_label(min),
                    values::interval_label(max)
                ),
            );
            return None;
        }
        Some(seconds)
    }

    fn checked_window(
        &mut self,
        limits: &QueryLimits,
        interval: Option<u64>,
        now_ms: i64,
    ) -> (Option<i64>, Option<i64>) {
        let (start, end) = match (&self.start, &self.end) {
            (Slot::Refused, _) | (_, Slot::Refused) => return (None, None),
            (start, end) => (start.get(), end.get()),
        };
        let mut out_of_range = false;
        for (field, time) in [(Field::Start, start), (Field::End, end)] {
            if let Some(Err(m)) = time.map(values::valid_time) {
                self.error(field, m);
                out_of_range = true;
            }
        }
        if out_of_range {
            return (None, None);
        }
        let (start, end_for_limits) = match (start, end) {
            (None, None) => return (None, None),
            (None, Some(_)) => {
                self.error(
                    Field::End,
                    "an end time needs a start time (`starttime` or `from`)",
                );
                return (None, None);
            }
            (Some(s), Some(e)) if s >= e => {
                self.error(Field::Start, "the start time must be before the end time");
                return (None, None);
            }
            (Some(s), None) if s >= now_ms => {
                self.error(
                    Field::Start,
                    "the start time is in the future; give an end time too",
                );
                return (None, None);
            }
            (Some(s), e) => (s, e.unwrap_or(now_ms)),
        };
        let range_ms = end_for_limits.abs_diff(start);
        let max_range_ms = limits.max_range_days.get().saturating_mul(86_400_000);
        if range_ms > max_range_ms {
            self.error(
                Field::Start,
                format!(
                    "the range is longer than {} days; ask for a shorter range",
                    limits.max_range_days
                ),
            );
        } else if let Some(interval) = interval {
            let points = range_ms.div_ceil(interval.saturating_mul(1000).max(1));
            let max_points = limits.max_points.get();
            if points > max_points {
                let needed = range_ms.div_ceil(max_points.saturating_mul(1000));
                self.error(
                    Field::Interval,
                    format!(
                        "this range at {} is {points} points, more than the limit of {}; use a coarser interval, e.g. interval={}",
                        values::interval_label(interval),
                        max_points,
                        values::interval_label(coarser_interval(needed))
                    ),
                );
            }
        }
        (Some(start), end)
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

/// Names as a caller reads them in a hint: `` `a`, `b` ``.
pub fn quoted_list(names: &[String]) -> String {
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

    fn build(b: MetricQueryBuilder) -> Result<MetricQuery, Vec<BuildError>> {
        b.build(&Settings::defaults().query, &AnyMetric, NOW)
    }

    #[test]
    fn values_build_the_question_text_would() {
        let built = build(
            MetricQuery::builder()
                .metrics(["b", "a", "b"])
                .devices([2, 1])
                .protocol(6)
                .range(1_705_320_000_000, 1_705_323_600_000)
                .interval_seconds(300)
                .breachtimes(true),
        )
        .unwrap();
        let parsed = crate::query::parse(
            "metrics=a,b&devices=1,2&protocol=tcp&from=1705320000000&to=1705323600000&interval=5min&breachtimes=true",
            &Settings::defaults().query,
            &AnyMetric,
            NOW,
        )
        .unwrap();
        assert_eq!(built, parsed);
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let errors = build(
            MetricQuery::builder()
                .metric("bad name")
                .device(0)
                .port(0)
                .filter_text(Filter::Protocol, "carrier-pigeon")
                .interval_seconds(90)
                .range(5, 5),
        )
        .unwrap_err();
        let fields: Vec<Field> = errors.iter().map(|e| e.field).collect();
        for field in [
            Field::Metric(0),
            Field::Devices,
            Field::Filter(Filter::Port),
            Field::Filter(Filter::Protocol),
            Field::Interval,
            Field::Start,
        ] {
            assert!(fields.contains(&field), "{field:?} not in {errors:?}");
        }
    }

    #[test]
    fn times_are_checked_as_text_times_are() {
        let errors = build(MetricQuery::builder().metric("a").range(-5, 10)).unwrap_err();
        let fields: Vec<Field> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, [Field::Start, Field::End], "{errors:?}");
        assert!(build(MetricQuery::builder().metric("a").since(i64::MAX)).is_err());
    }

    #[test]
    fn a_question_needs_a_metric_and_a_start_for_its_end() {
        let errors = build(MetricQuery::builder().until(NOW - 1)).unwrap_err();
        let fields: Vec<Field> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, [Field::Metrics, Field::End]);
    }

    #[test]
    fn a_refused_field_fails_the_build_without_consequential_errors() {
        // The end could not be read at the edge: no "the end needs a start" follows.
        let errors = build(MetricQuery::builder().metric("a").refused(Field::End)).unwrap_err();
        assert!(errors.is_empty(), "{errors:?}");
    }
}
