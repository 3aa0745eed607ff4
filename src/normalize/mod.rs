//! Appliance JSON, in any of the shapes it has been seen or documented in, → [`MetricData`];
//! and the appliance's catalogs (`/metrics`, `/enums`) → the gateway's types.

mod catalog;
mod collected;
mod enums;
mod error;
mod schema;
mod shapes;

use std::collections::BTreeSet;

use bytes::Bytes;

pub use catalog::{MetricInfo, catalog};
pub(crate) use collected::Collected;
pub use enums::{ApplicationProtocols, application_protocols};
pub use error::AnswerError;
pub use schema::{Breach, Device, MetricData, Point, Series, TimeRange};

use crate::query::MetricQuery;

/// One appliance answer, and the device it was asked about (for fanned-out queries).
pub struct Part {
    pub device: Option<u64>,
    pub body: Bytes,
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
