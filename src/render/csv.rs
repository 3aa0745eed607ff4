//! `text/csv` answers, for compliance reports: one row per point.

use std::fmt::Write;

use bytes::Bytes;

use crate::normalize::MetricData;

/// `timestamp_iso,timestamp_ms,metric,did,value,in,out`; empty cells for what is absent.
/// Metric names are `[A-Za-z0-9_.:-]`, so no cell needs quoting.
pub fn render(data: &MetricData) -> Bytes {
    let mut out = String::from("timestamp_iso,timestamp_ms,metric,did,value,in,out\n");
    for series in &data.series {
        let did = series
            .device
            .as_ref()
            .map(|d| d.did.to_string())
            .unwrap_or_default();
        for p in &series.points {
            let iso = chrono::DateTime::from_timestamp_millis(p.timestamp)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .unwrap_or_default();
            let cell = |n: &Option<serde_json::Number>| {
                n.as_ref().map(|n| n.to_string()).unwrap_or_default()
            };
            let _ = writeln!(
                out,
                "{iso},{},{},{did},{},{},{}",
                p.timestamp,
                series.metric,
                cell(&p.value),
                cell(&p.in_),
                cell(&p.out)
            );
        }
    }
    Bytes::from(out)
}
