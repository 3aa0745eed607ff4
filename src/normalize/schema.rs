//! The one response schema every `/v1/metricdata` answer has, whatever the appliance sent.

use serde::{Deserialize, Serialize};
use serde_json::Number;
use utoipa::ToSchema;

use crate::query::MetricQuery;

/// Time-series metric data, normalized.
///
/// Buckets, whatever the appliance's own alignment: with a range, the points are the buckets
/// whose start `t` is a multiple of the interval since the epoch (1970-01-01T00:00:00Z) and
/// lies in `[floor(timerange.start, interval), timerange.end)`; `timerange.end` is exclusive.
/// Each point is the maximum over its whole bucket `[t, t + interval)`, even where the range
/// starts or ends inside it. Daily buckets start at 00:00 UTC and weekly ones on Thursdays (the
/// epoch's weekday). Breaches are those with `timerange.start ≤ time < timerange.end`. Without a
/// range the appliance picks the window, and its buckets are passed on as it anchors them.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MetricData {
    /// The question answered, in canonical form (aliases merged, lists sorted, times in ms).
    pub query: MetricQuery,
    /// Width of each point's bucket, in seconds: a whole number of minutes.
    #[schema(example = 300)]
    pub interval_seconds: u64,
    /// The range asked, `start` inclusive and `end` exclusive; both null when the caller gave
    /// no range and the appliance chose it.
    pub timerange: TimeRange,
    /// One series per (metric, device), sorted by metric then device id.
    pub series: Vec<Series>,
    /// Model breaches in the range (only with `breachtimes=true`), sorted by time.
    pub breaches: Vec<Breach>,
    /// What the gateway left out of the appliance's answer because it did not understand it
    /// (described by keys, never values). Absent when everything was understood. An answer
    /// with warnings also carries a `Warning` header and is never cached.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(example = json!([]))]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimeRange {
    /// Epoch ms, inclusive.
    #[schema(example = 1705320000000_i64)]
    pub start: Option<i64>,
    /// Epoch ms, exclusive.
    #[schema(example = 1705323600000_i64)]
    pub end: Option<i64>,
}

// `Deserialize`: a fan-out (`appliances=`) reads each appliance's cached answer back to merge
// them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Series {
    /// The appliance this series came from: only in answers from several appliances
    /// (`appliances=`), where device ids alone are ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "emea")]
    pub appliance: Option<String>,
    #[schema(example = "connections")]
    pub metric: String,
    /// Unit from the appliance's metric catalog, when known.
    #[schema(example = "connections")]
    pub unit: Option<String>,
    /// The device this series is about; null when the query had no device filter.
    pub device: Option<Device>,
    /// Points sorted by time, one per bucket.
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    #[schema(example = 123)]
    pub did: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "192.168.1.100")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "workstation-01")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macaddress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl Device {
    /// Bytes its strings hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        [
            &self.ip,
            &self.hostname,
            &self.label,
            &self.macaddress,
            &self.vendor,
            &self.os,
            &self.typename,
        ]
        .iter()
        .map(|f| f.as_ref().map_or(0, String::capacity))
        .sum::<usize>()
            + self.tags.as_ref().map_or(0, |t| {
                t.capacity() * std::mem::size_of::<String>()
                    + t.iter().map(String::capacity).sum::<usize>()
            })
    }

    pub fn bare(did: u64) -> Self {
        Self {
            did,
            ip: None,
            hostname: None,
            label: None,
            macaddress: None,
            vendor: None,
            os: None,
            typename: None,
            tags: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Point {
    /// Start of the bucket, epoch ms: a multiple of the interval (for ranged questions).
    #[schema(example = 1705320000000_i64)]
    pub timestamp: i64,
    /// The bucket's value (the maximum inside it); null when the appliance has none.
    #[schema(value_type = Option<f64>, example = 14)]
    pub value: Option<Number>,
    /// Inbound part, when the appliance splits it.
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub in_: Option<Number>,
    /// Outbound part, when the appliance splits it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub out: Option<Number>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Breach {
    /// The appliance that reported it: only in answers from several appliances
    /// (`appliances=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "emea")]
    pub appliance: Option<String>,
    /// When the model breached, epoch ms.
    #[schema(example = 1705320060000_i64)]
    pub time: i64,
    /// The model's name.
    #[schema(example = "Device / Anomalous Activity")]
    pub model: Option<String>,
    #[schema(example = 0.95)]
    pub score: Option<f64>,
    /// Model breach id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pbid: Option<u64>,
    /// Model id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u64>,
    /// Device the breach is about, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub did: Option<u64>,
    /// Breach id, when the appliance gives a textual one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}
