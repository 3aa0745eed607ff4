//! Appliance JSON, in any of the shapes it has been seen or documented in, → [`MetricData`].

mod catalog;
mod schema;
mod shapes;

use std::collections::BTreeMap;

use bytes::Bytes;

pub use catalog::{MetricInfo, catalog};
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
}

impl Collected {
    pub(crate) fn series_mut(&mut self, metric: &str, device: Option<Device>) -> &mut Series {
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
/// `unit_of` supplies units from the metric catalog where the appliance sends none.
pub fn normalize(
    query: &MetricQuery,
    timerange: TimeRange,
    parts: &[Part],
    unit_of: &dyn Fn(&str) -> Option<String>,
) -> Result<MetricData, AnswerError> {
    let mut collected = Collected::default();
    for part in parts {
        shapes::decode(&part.body, part.device, &mut collected)?;
    }
    let mut series: Vec<Series> = collected.series.into_values().collect();
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
        if s.unit.is_none() {
            s.unit = unit_of(&s.metric);
        }
    }
    let mut breaches = collected.breaches;
    breaches
        .sort_by(|a, b| (a.time, a.pbid, a.did, &a.model).cmp(&(b.time, b.pbid, b.did, &b.model)));
    breaches.dedup();
    Ok(MetricData {
        query: query.clone(),
        interval_seconds: query.interval_seconds(),
        timerange,
        series,
        breaches,
    })
}

#[cfg(test)]
mod tests;
