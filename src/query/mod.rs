//! Caller parameters → [`MetricQuery`]: parsed, validated and canonical.
//!
//! A `MetricQuery` can only be built valid, so nothing past this module re-checks it, and two
//! requests that mean the same thing produce equal values (the cache key relies on it).

mod builder;
mod parameters;
mod representation;
mod spelling;
mod values;

use serde::Serialize;
use utoipa::ToSchema;

pub use builder::{
    APPLICATION_PROTOCOL_PATTERN, BuildError, Field, Filter, MetricQueryBuilder, quoted_list,
};
pub use parameters::{Example, PARAMETERS, Parameter, ROUTING, Shape};
pub use representation::{Encoding, Format, Offer, Representation};
pub use spelling::{Dialect, parse, parse_in};
pub use values::{
    TIME_PATTERN, interval_label, interval_pattern, positive_id, protocol_pattern, shown,
};

/// A validated `/metricdata` question in canonical form.
///
/// Aliases are merged, lists sorted and deduplicated, times in epoch ms, the interval in
/// seconds, the protocol as its IANA number. `endtime` is only ever set with `starttime`;
/// `starttime` without `endtime` means "until now".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
pub struct MetricQuery {
    /// Metric names, sorted and deduplicated.
    #[schema(example = json!(["connections"]))]
    metrics: Vec<String>,
    /// Device ids (`did` or `devices`), sorted and deduplicated; empty means no device filter.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    devices: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ddid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    odid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sourceport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destinationport: Option<u16>,
    /// IANA protocol number.
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<u8>,
    /// The appliance's application protocol code (from its `/enums`), however it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    applicationprotocol: Option<u32>,
    /// Start, epoch ms (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    starttime: Option<i64>,
    /// End, epoch ms (UTC); absent with a start means "until now".
    #[serde(skip_serializing_if = "Option::is_none")]
    endtime: Option<i64>,
    interval_seconds: u64,
    breachtimes: bool,
    fulldevicedetails: bool,
}

impl MetricQuery {
    pub fn metrics(&self) -> &[String] {
        &self.metrics
    }
    /// Empty means no device filter.
    pub fn devices(&self) -> &[u64] {
        &self.devices
    }
    pub fn ddid(&self) -> Option<u64> {
        self.ddid
    }
    pub fn odid(&self) -> Option<u64> {
        self.odid
    }
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    pub fn sourceport(&self) -> Option<u16> {
        self.sourceport
    }
    pub fn destinationport(&self) -> Option<u16> {
        self.destinationport
    }
    pub fn protocol(&self) -> Option<u8> {
        self.protocol
    }
    pub fn applicationprotocol(&self) -> Option<u32> {
        self.applicationprotocol
    }
    pub fn starttime(&self) -> Option<i64> {
        self.starttime
    }
    /// With a start and no end, the range runs until now.
    pub fn endtime(&self) -> Option<i64> {
        self.endtime
    }
    pub fn interval_seconds(&self) -> u64 {
        self.interval_seconds
    }
    /// The interval in milliseconds, at least 1.
    pub fn interval_ms(&self) -> i64 {
        (self.interval_seconds as i64).saturating_mul(1000).max(1)
    }

    /// The start of the bucket holding `t`. The gateway's contract: buckets start at
    /// epoch-aligned multiples of the interval, whatever the appliance's own rule.
    pub fn bucket_of(&self, t: i64) -> i64 {
        t.div_euclid(self.interval_ms()) * self.interval_ms()
    }

    /// The first bucket boundary at or after `t`.
    pub fn boundary_at_or_after(&self, t: i64) -> i64 {
        let floor = self.bucket_of(t);
        if floor == t {
            t
        } else {
            floor.saturating_add(self.interval_ms())
        }
    }
    pub fn breachtimes(&self) -> bool {
        self.breachtimes
    }
    pub fn fulldevicedetails(&self) -> bool {
        self.fulldevicedetails
    }

    /// The same question over `[start, end)`: how the segment cache asks for one run. A
    /// valid query stays valid, since `start < end` is kept.
    pub fn with_range(&self, start: i64, end: i64) -> Self {
        Self {
            starttime: Some(start),
            endtime: Some(end.max(start.saturating_add(1))),
            ..self.clone()
        }
    }

    /// The same question without its times: what all segments of one series share.
    pub fn without_range(&self) -> Self {
        Self {
            starttime: None,
            endtime: None,
            ..self.clone()
        }
    }
}

/// One bad parameter, as reported in a problem's `errors` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The parameter's name as the caller sent it.
    #[schema(example = "interval")]
    pub parameter: String,
    /// What is wrong and how to fix it.
    #[schema(
        example = "`7minutes` is not an interval; use seconds or a label such as 5min, 1hour, 1day"
    )]
    pub message: String,
}

impl FieldError {
    pub fn new(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            parameter: parameter.into(),
            message: message.into(),
        }
    }
}

/// What the query parser needs to know about the appliance's catalogs: its metric names
/// (`/metrics`) and its application protocols (`/enums`).
pub trait MetricNames {
    /// `None` when the catalog is not known yet (then names are not checked).
    fn contains(&self, name: &str) -> Option<bool>;
    /// Known names closest to `name`, best first.
    fn closest(&self, name: &str) -> Vec<String>;
    /// The appliance's code for the application protocol named `name`. By default (no
    /// `/enums` known) names cannot be translated, and only codes are accepted.
    fn application_protocol(&self, name: &str) -> ProtocolLookup {
        let _ = name;
        ProtocolLookup::NotKnownYet
    }
    /// Whether the appliance lists application protocol `code`; `None` when not known yet.
    fn has_application_protocol(&self, code: u32) -> Option<bool> {
        let _ = code;
        None
    }
}

/// An application protocol's name, looked up in the appliance's `/enums`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolLookup {
    Code(u32),
    /// Not a name the appliance lists; the closest ones it does, best first.
    Unknown {
        closest: Vec<String>,
    },
    /// The gateway has not read the appliance's `/enums` (yet).
    NotKnownYet,
}

/// Accepts every metric name, and application protocols as codes only: used when no catalog
/// is wanted.
pub struct AnyMetric;

impl MetricNames for AnyMetric {
    fn contains(&self, _: &str) -> Option<bool> {
        None
    }
    fn closest(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Which cache entries `DELETE /internal/cache` removes: all, or those naming a metric and/or
/// a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeFilter {
    pub metric: Option<String>,
    pub did: Option<u64>,
}

impl PurgeFilter {
    pub fn is_everything(&self) -> bool {
        self.metric.is_none() && self.did.is_none()
    }

    /// Whether an answer to `q` is among what this filter removes.
    pub fn matches(&self, q: &MetricQuery) -> bool {
        self.metric
            .as_ref()
            .is_none_or(|m| q.metrics.iter().any(|x| x == m))
            && self.did.is_none_or(|d| q.devices.contains(&d))
    }
}

/// Parses `metric=` and `did=` for a purge; anything else is refused.
pub fn parse_purge(raw: &str) -> Result<PurgeFilter, Vec<FieldError>> {
    let mut filter = PurgeFilter::default();
    let mut errors = Vec::new();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        match key.as_ref() {
            "metric" if filter.metric.is_none() => {
                match values::name_token(&value, "metric name", 64) {
                    Ok(m) => filter.metric = Some(m),
                    Err(m) => errors.push(FieldError::new("metric", m)),
                }
            }
            "did" if filter.did.is_none() => match values::positive_id(&value) {
                Ok(d) => filter.did = Some(d),
                Err(m) => errors.push(FieldError::new("did", m)),
            },
            "metric" | "did" => errors.push(FieldError::new(key.as_ref(), "given more than once")),
            // Which appliances' caches: read by the HTTP layer.
            "appliance" => {}
            other => errors.push(FieldError::new(
                values::shown(other),
                "unknown parameter; use `metric`, `did` and/or `appliance`",
            )),
        }
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(errors)
    }
}
