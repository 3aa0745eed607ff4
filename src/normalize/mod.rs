//! Appliance JSON, in any of the shapes it has been seen or documented in, → [`MetricData`];
//! and the appliance's catalogs (`/metrics`, `/enums`) → the gateway's types.

mod catalog;
mod enums;
mod schema;
mod shapes;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

pub use catalog::{MetricInfo, catalog};
pub use enums::{ApplicationProtocols, application_protocols};
pub use schema::{Breach, Device, MetricData, Point, Series, TimeRange};

use crate::query::MetricQuery;

/// Why an appliance answer could not be read as metric data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnswerError {
    #[error("the appliance's answer matches no known shape: {reason}")]
    UnknownShape {
        reason: String,
        #[source]
        cause: Option<std::sync::Arc<serde_json::Error>>,
    },
    /// An `{"error": …}` inside a 2xx answer.
    #[error("the appliance reported an error: {0}")]
    Reported(String),
    /// A metric that was asked for is not in the answer: an error, never an empty series.
    #[error("the appliance's answer has no `{metric}`{}", device.map(|d| format!(" for device {d}")).unwrap_or_default())]
    MissingMetric { metric: String, device: Option<u64> },
}

/// One appliance answer, and the device it was asked about (for fanned-out queries).
pub struct Part {
    pub device: Option<u64>,
    pub body: Bytes,
}

/// What was decoded from one or more answers, before it is assembled into [`MetricData`].
#[derive(Default)]
pub(crate) struct Collected {
    series: BTreeMap<(String, Option<u64>), Series>,
    breaches: Vec<Breach>,
    /// Device details given apart from the series (`fulldevicedetails=true`).
    devices: Vec<Device>,
    /// What the answer held that no known shape explains, described by its keys.
    unknown: Vec<String>,
    /// Metrics the part being decoded holds.
    seen: BTreeSet<String>,
}

impl Collected {
    pub(crate) fn series_mut(&mut self, metric: &str, device: Option<Device>) -> &mut Series {
        if !self.seen.contains(metric) {
            self.seen.insert(metric.to_owned());
        }
        let did = device.as_ref().map(|d| d.did);
        let entry = self
            .series
            .entry((metric.to_owned(), did))
            .or_insert_with(|| Series {
                metric: metric.to_owned(),
                unit: None,
                device: None,
                points: Vec::new(),
            });
        // Keep the most detailed device description seen.
        if let Some(d) = device
            && entry
                .device
                .as_ref()
                .is_none_or(|old| detail(old) < detail(&d))
        {
            entry.device = Some(d);
        }
        entry
    }

    pub(crate) fn add_breach(&mut self, breach: Breach) {
        self.breaches.push(breach);
    }

    pub(crate) fn add_device(&mut self, device: Device) {
        self.devices.push(device);
    }

    /// Records a part of the answer of no known shape (`what` names keys, never values).
    pub(crate) fn unknown(&mut self, what: String) {
        self.unknown.push(what);
    }

    /// Gives each series the most detailed description of its device given apart.
    fn attach_devices(&mut self) {
        for device in std::mem::take(&mut self.devices) {
            for ((_, did), series) in self.series.iter_mut() {
                if *did == Some(device.did)
                    && series
                        .device
                        .as_ref()
                        .is_none_or(|old| detail(old) < detail(&device))
                {
                    series.device = Some(device.clone());
                }
            }
        }
    }
}

fn detail(d: &Device) -> usize {
    [
        &d.ip,
        &d.hostname,
        &d.label,
        &d.macaddress,
        &d.vendor,
        &d.os,
        &d.typename,
    ]
    .iter()
    .filter(|f| f.is_some())
    .count()
        + usize::from(d.tags.is_some())
}

/// Decodes every part and merges them into one answer.
///
/// `unit_of` supplies units from the metric catalog where the appliance sends none. With a
/// range, only the contract's buckets are kept: epoch-aligned multiples of the interval from
/// the bucket holding `timerange.start` up to `timerange.end` (exclusive), and breaches in the
/// range. Whatever was left out that no rule explains is named in `warnings`.
pub fn normalize(
    query: &MetricQuery,
    timerange: TimeRange,
    parts: &[Part],
    unit_of: &dyn Fn(&str) -> Option<String>,
) -> Result<MetricData, AnswerError> {
    let mut collected = decode_all(query, parts)?;
    collected.attach_devices();
    let mut warnings: Vec<String> = collected
        .unknown
        .iter()
        .map(|what| {
            format!("the appliance's answer held {what}, of no known shape; it was left out")
        })
        .collect();
    let mut series: Vec<Series> = collected.series.into_values().collect();
    let unasked: BTreeSet<String> = series
        .iter()
        .filter(|s| !query.metrics().contains(&s.metric))
        .map(|s| s.metric.clone())
        .collect();
    for metric in &unasked {
        warnings.push(format!(
            "the appliance's answer held the metric `{}`, which was not asked for; it was left out",
            crate::query::shown(metric)
        ));
    }
    series.retain(|s| !unasked.contains(&s.metric));
    let range = match (timerange.start, timerange.end) {
        (Some(start), Some(end)) => Some((start, end)),
        _ => None,
    };
    let mut misaligned = 0;
    for s in &mut series {
        s.points.sort_by_key(|p| p.timestamp);
        // Later duplicates win: a bucket is reported once.
        s.points.dedup_by(|later, earlier| {
            if later.timestamp == earlier.timestamp {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        if let Some(range) = range {
            misaligned += keep_contract_buckets(query, &mut s.points, range);
        }
        if s.unit.is_none() {
            s.unit = unit_of(&s.metric);
        }
    }
    if misaligned > 0 {
        warnings.push(format!(
            "the appliance's answer held {misaligned} bucket(s) not aligned to the interval; they were left out"
        ));
    }
    let mut breaches = collected.breaches;
    if let Some((start, end)) = range {
        breaches.retain(|b| (start..end).contains(&b.time));
    }
    breaches
        .sort_by(|a, b| (a.time, a.pbid, a.did, &a.model).cmp(&(b.time, b.pbid, b.did, &b.model)));
    breaches.dedup();
    Ok(MetricData {
        query: query.clone(),
        interval_seconds: query.interval_seconds(),
        timerange,
        series,
        breaches,
        warnings,
    })
}

/// Decodes every part; each must hold every requested metric. A metric missing is an error
/// of its own, or of an unknown shape when the part held something else unexplained.
fn decode_all(query: &MetricQuery, parts: &[Part]) -> Result<Collected, AnswerError> {
    let mut collected = Collected::default();
    for part in parts {
        collected.seen.clear();
        shapes::decode(&part.body, part.device, &mut collected)?;
        let Some(metric) = query
            .metrics()
            .iter()
            .find(|m| !collected.seen.contains(*m))
        else {
            continue;
        };
        if collected.unknown.is_empty() {
            return Err(AnswerError::MissingMetric {
                metric: metric.clone(),
                device: part.device,
            });
        }
        return Err(AnswerError::UnknownShape {
            reason: format!(
                "no `{metric}` was found, and the answer held {}",
                collected.unknown.join("; ")
            ),
            cause: None,
        });
    }
    Ok(collected)
}

/// Keeps the contract's buckets of sorted `points`: epoch-aligned, from the bucket holding
/// the range's start to its (exclusive) end. Returns how many were misaligned, which no rule
/// explains; buckets beyond the range (an inclusive end's extra one) are expected.
fn keep_contract_buckets(
    query: &MetricQuery,
    points: &mut Vec<Point>,
    (start, end): (i64, i64),
) -> usize {
    let before = points.len();
    points.retain(|p| query.bucket_of(p.timestamp) == p.timestamp);
    let misaligned = before - points.len();
    let first = query.bucket_of(start);
    points.retain(|p| (first..end).contains(&p.timestamp));
    misaligned
}

#[cfg(test)]
mod tests;
