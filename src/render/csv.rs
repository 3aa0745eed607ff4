//! `text/csv` answers, for compliance reports: one row per point.

use std::fmt::Write;

use bytes::Bytes;

use crate::normalize::{MetricData, Series};

/// `timestamp_iso,timestamp_ms,metric,did,value,in,out`; empty cells for what is absent.
/// Metric names are `[A-Za-z0-9_.:-]`, so no cell needs quoting.
pub fn render(data: &MetricData) -> Bytes {
    rows(&data.series, false)
}

/// The rows of `series`; with `appliance_column` (answers from several appliances), an
/// `appliance` column after `timestamp_ms`: device ids are only unique within one appliance.
/// Appliance names are `[a-z0-9_-]`, so those cells need no quoting either.
pub fn rows(series: &[Series], appliance_column: bool) -> Bytes {
    let mut out = if appliance_column {
        String::from("timestamp_iso,timestamp_ms,appliance,metric,did,value,in,out\n")
    } else {
        String::from("timestamp_iso,timestamp_ms,metric,did,value,in,out\n")
    };
    for series in series {
        let appliance = match (&series.appliance, appliance_column) {
            (Some(name), true) => format!("{name},"),
            (None, true) => ",".to_owned(),
            (_, false) => String::new(),
        };
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
                "{iso},{},{appliance}{},{did},{},{},{}",
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

#[cfg(test)]
mod tests {
    use super::rows;
    use crate::normalize::{Point, Series};

    #[test]
    fn answers_from_several_appliances_say_each_rows_appliance() {
        let series = Series {
            appliance: Some("emea".into()),
            metric: "connections".into(),
            unit: None,
            device: None,
            points: vec![Point {
                timestamp: 1_705_320_000_000,
                value: Some(7.into()),
                in_: None,
                out: None,
            }],
        };
        assert_eq!(
            rows(std::slice::from_ref(&series), true),
            "timestamp_iso,timestamp_ms,appliance,metric,did,value,in,out\n\
             2024-01-15T12:00:00.000Z,1705320000000,emea,connections,,7,,\n"
        );
        // One appliance's CSV keeps its columns, label or not.
        assert_eq!(
            rows(&[series], false),
            "timestamp_iso,timestamp_ms,metric,did,value,in,out\n\
             2024-01-15T12:00:00.000Z,1705320000000,connections,,7,,\n"
        );
    }
}
