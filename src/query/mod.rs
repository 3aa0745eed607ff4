//! Caller parameters → [`MetricQuery`]: parsed, validated and canonical.
//!
//! A `MetricQuery` can only be built valid, so nothing past this module re-checks it, and two
//! requests that mean the same thing produce equal values (the cache key relies on it).

mod params;
mod values;

use serde::Serialize;
use utoipa::ToSchema;

pub use params::{Dialect, KNOWN_PARAMETERS, parse, parse_in};
pub use values::{interval_label, now_ms, shown};

/// A validated `/metricdata` question in canonical form.
///
/// Aliases are merged, lists sorted and deduplicated, times in epoch ms, the interval in
/// seconds, the protocol as its IANA number. `endtime` is only ever set with `starttime`;
/// `starttime` without `endtime` means "until now".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
pub struct MetricQuery {
    /// Metric names, sorted and deduplicated.
    #[schema(example = json!(["connections"]))]
    pub metrics: Vec<String>,
    /// Device ids (`did` or `devices`), sorted and deduplicated; empty means no device filter.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ddid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sourceport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinationport: Option<u16>,
    /// IANA protocol number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applicationprotocol: Option<String>,
    /// Start, epoch ms (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starttime: Option<i64>,
    /// End, epoch ms (UTC); absent with a start means "until now".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endtime: Option<i64>,
    pub interval_seconds: u64,
    pub breachtimes: bool,
    pub fulldevicedetails: bool,
    /// How the answer is written (`format=csv`, `Accept: text/csv`, or the SDK route's shapes);
    /// part of the cache key, not of the echo.
    #[serde(skip)]
    pub format: Format,
}

/// The representation of an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    #[default]
    Json,
    Csv,
    /// The shapes the darktrace-sdk documentation promises, for `/darktrace/metricdata`.
    Sdk,
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

/// What the query parser needs to know about the appliance's metric catalog.
pub trait MetricNames {
    /// `None` when the catalog is not known yet (then names are not checked).
    fn contains(&self, name: &str) -> Option<bool>;
    /// Known names closest to `name`, best first.
    fn closest(&self, name: &str) -> Vec<String>;
}

/// Accepts every name: used when no catalog is wanted.
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
            other => errors.push(FieldError::new(
                values::shown(other),
                "unknown parameter; use `metric` and/or `did`",
            )),
        }
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(errors)
    }
}
