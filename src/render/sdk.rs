//! The response shapes darktrace-sdk's documentation promises (the seed), rendered from the
//! normalized [`MetricData`], so scripts written against the SDK run unchanged.
//!
//! The question picks the shape: one metric gives `data: [point]`, several give
//! `data: {name: [point]}`, and several devices turn each point into
//! `{timestamp, values: [{device_id, value}]}`. Breaches nest in the point whose bucket holds
//! them. Buckets without a value are left out (the seed's "gaps"): its examples add values up
//! without checking for null.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Number;
use utoipa::ToSchema;

use crate::normalize::{Breach, Device, MetricData, Series};
use crate::query::interval_label;

/// `/darktrace/metricdata`'s answer: one of the seed's shapes, chosen by the question.
#[derive(Debug, Serialize, ToSchema)]
pub struct SdkMetricData {
    /// The metric, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "bandwidth")]
    pub metric: Option<String>,
    /// The metrics, when several were asked for (sorted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<String>>,
    /// The devices, when several were asked for (sorted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["123", "456"]))]
    pub devices: Option<Vec<String>>,
    /// The bucket width as a label.
    #[schema(example = "5min")]
    pub interval: String,
    /// The metric's unit, when one metric was asked for and its unit is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "bytes/sec")]
    pub unit: Option<String>,
    #[schema(example = "numeric")]
    pub datatype: String,
    pub timerange: SdkTimeRange,
    pub data: SdkData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdkTimeRange {
    /// Epoch ms; null when neither the question nor the answer gives one.
    pub start: Option<i64>,
    /// Epoch ms (exclusive).
    pub end: Option<i64>,
}

/// The seed's four layouts of `data`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SdkData {
    /// One metric, at most one device.
    Points(Vec<SdkPoint>),
    /// Several metrics, at most one device: points by metric name.
    PointsByMetric(BTreeMap<String, Vec<SdkPoint>>),
    /// One metric, several devices: one row per timestamp.
    Rows(Vec<SdkRow>),
    /// Several metrics and several devices: rows by metric name.
    RowsByMetric(BTreeMap<String, Vec<SdkRow>>),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdkPoint {
    /// Start of the bucket, epoch ms.
    #[schema(example = 1705320000000_i64)]
    pub timestamp: i64,
    /// The bucket's value (its maximum).
    #[schema(value_type = f64, example = 1048576)]
    pub value: Number,
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub in_: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub out: Option<Number>,
    /// The metric's unit, on each point when several metrics were asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The device asked about, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<SdkDevice>,
    /// Breaches inside this bucket; present (maybe empty) with `breachtimes=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaches: Option<Vec<SdkBreach>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdkRow {
    #[schema(example = 1705320000000_i64)]
    pub timestamp: i64,
    /// One value per device that has one in this bucket, by device id.
    pub values: Vec<SdkDeviceValue>,
    /// Breaches inside this bucket; present (maybe empty) with `breachtimes=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaches: Option<Vec<SdkBreach>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdkDeviceValue {
    #[schema(example = "123")]
    pub device_id: String,
    #[schema(value_type = f64, example = 2097152)]
    pub value: Number,
    /// The device's details, with `fulldevicedetails=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<SdkDevice>,
}

/// A device as the seed spells it (`devicelabel`, `devicetype`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SdkDevice {
    #[schema(example = 123)]
    pub did: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devicelabel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macaddress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devicetype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdkBreach {
    /// The appliance's breach id (`pbid`, or its textual id).
    pub breach_id: Option<String>,
    #[schema(example = "Device / Anomalous Activity")]
    pub model_name: Option<String>,
    #[schema(example = 0.95)]
    pub score: Option<f64>,
    /// When the model breached, epoch ms.
    #[schema(example = 1705320060000_i64)]
    pub time: i64,
    /// The device the breach is about, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub did: Option<u64>,
}

/// The seed's shape of `data`, as JSON.
pub fn render(data: &MetricData) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(&reshape(data)).map(Bytes::from)
}

fn reshape(data: &MetricData) -> SdkMetricData {
    let q = &data.query;
    let several_metrics = q.metrics().len() > 1;
    let several_devices = q.devices().len() > 1;
    let step_ms = data.interval_seconds as i64 * 1000;
    let breaches = q.breachtimes().then_some(data.breaches.as_slice());
    let in_bucket = |t: i64, device: Option<u64>| {
        breaches.map(|all| bucket_breaches(all, t, t + step_ms, device))
    };
    let points = |s: &Series| -> Vec<SdkPoint> {
        let did = s.device.as_ref().map(|d| d.did);
        s.points
            .iter()
            .filter_map(|p| {
                Some(SdkPoint {
                    timestamp: p.timestamp,
                    value: p.value.clone()?,
                    in_: p.in_.clone(),
                    out: p.out.clone(),
                    unit: several_metrics.then(|| s.unit.clone()).flatten(),
                    device: s.device.as_ref().map(device),
                    breaches: in_bucket(p.timestamp, did),
                })
            })
            .collect()
    };
    let rows = |metric: &str| -> Vec<SdkRow> {
        let mut by_time: BTreeMap<i64, Vec<SdkDeviceValue>> = BTreeMap::new();
        for s in data.series.iter().filter(|s| s.metric == metric) {
            let Some(d) = &s.device else { continue };
            for p in &s.points {
                let Some(value) = p.value.clone() else {
                    continue;
                };
                by_time
                    .entry(p.timestamp)
                    .or_default()
                    .push(SdkDeviceValue {
                        device_id: d.did.to_string(),
                        value,
                        device: q.fulldevicedetails().then(|| device(d)),
                    });
            }
        }
        by_time
            .into_iter()
            .map(|(timestamp, values)| SdkRow {
                timestamp,
                values,
                breaches: in_bucket(timestamp, None),
            })
            .collect()
    };
    let data_out = match (several_metrics, several_devices) {
        (false, false) => SdkData::Points(data.series.iter().flat_map(points).collect()),
        (true, false) => SdkData::PointsByMetric(
            q.metrics()
                .iter()
                .map(|m| {
                    let of_metric = data.series.iter().filter(|s| &s.metric == m);
                    (m.clone(), of_metric.flat_map(points).collect())
                })
                .collect(),
        ),
        (false, true) => SdkData::Rows(q.metrics().first().map(|m| rows(m)).unwrap_or_default()),
        (true, true) => {
            SdkData::RowsByMetric(q.metrics().iter().map(|m| (m.clone(), rows(m))).collect())
        }
    };
    SdkMetricData {
        metric: (!several_metrics)
            .then(|| q.metrics().first().cloned())
            .flatten(),
        metrics: several_metrics.then(|| q.metrics().to_vec()),
        devices: several_devices.then(|| q.devices().iter().map(u64::to_string).collect()),
        interval: interval_label(data.interval_seconds),
        unit: if several_metrics {
            None
        } else {
            data.series.iter().find_map(|s| s.unit.clone())
        },
        datatype: "numeric".to_owned(),
        timerange: timerange(data, step_ms),
        data: data_out,
    }
}

/// The range asked for; else the one the points cover.
fn timerange(data: &MetricData, step_ms: i64) -> SdkTimeRange {
    let stamps = data
        .series
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.timestamp);
    let first = stamps.clone().min();
    let last = stamps.max().map(|t| t + step_ms);
    SdkTimeRange {
        start: data.timerange.start.or(first),
        end: data.timerange.end.or(last),
    }
}

/// Breaches (sorted by time) in `[from, to)`, about `device` when the point is about one.
fn bucket_breaches(all: &[Breach], from: i64, to: i64, device: Option<u64>) -> Vec<SdkBreach> {
    let start = all.partition_point(|b| b.time < from);
    all[start..]
        .iter()
        .take_while(|b| b.time < to)
        .filter(|b| device.is_none() || b.did.is_none() || b.did == device)
        .map(|b| SdkBreach {
            breach_id: b.id.clone().or_else(|| b.pbid.map(|p| p.to_string())),
            model_name: b.model.clone(),
            score: b.score,
            time: b.time,
            did: b.did,
        })
        .collect()
}

fn device(d: &Device) -> SdkDevice {
    SdkDevice {
        did: d.did,
        ip: d.ip.clone(),
        hostname: d.hostname.clone(),
        devicelabel: d.label.clone(),
        macaddress: d.macaddress.clone(),
        vendor: d.vendor.clone(),
        os: d.os.clone(),
        devicetype: d.typename.clone(),
        tags: d.tags.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::normalize::{Point, TimeRange};
    use crate::query::{AnyMetric, Dialect, parse_in};
    use crate::settings::Settings;

    const T0: i64 = 1_705_320_000_000;

    fn data(raw: &str, series: Vec<Series>, breaches: Vec<Breach>) -> Value {
        let query = parse_in(
            Dialect::Sdk,
            raw,
            &Settings::defaults().query,
            &AnyMetric,
            T0 + 86_400_000,
        )
        .unwrap();
        let data = MetricData {
            interval_seconds: query.interval_seconds(),
            timerange: TimeRange {
                start: query.starttime(),
                end: query.endtime(),
            },
            query,
            series,
            breaches,
            warnings: Vec::new(),
        };
        serde_json::from_slice(&render(&data).unwrap()).unwrap()
    }

    fn series(metric: &str, did: Option<u64>, values: &[Option<i64>]) -> Series {
        Series {
            appliance: None,
            metric: metric.to_owned(),
            unit: Some("bytes/sec".to_owned()),
            device: did.map(Device::bare),
            points: values
                .iter()
                .enumerate()
                .map(|(i, v)| Point {
                    timestamp: T0 + i as i64 * 300_000,
                    value: v.map(Number::from),
                    in_: None,
                    out: None,
                })
                .collect(),
        }
    }

    #[test]
    fn one_metric_is_a_list_of_points_without_gaps() {
        let v = data(
            "metric=bandwidth&did=123&starttime=1705320000000&endtime=1705320900000&interval=5min",
            vec![series("bandwidth", Some(123), &[Some(5), None, Some(7)])],
            vec![],
        );
        assert_eq!(
            v,
            json!({"metric": "bandwidth", "interval": "5min", "unit": "bytes/sec",
                "datatype": "numeric", "timerange": {"start": T0, "end": T0 + 900_000},
                "data": [
                    {"timestamp": T0, "value": 5, "device": {"did": 123}},
                    {"timestamp": T0 + 600_000, "value": 7, "device": {"did": 123}}]})
        );
    }

    #[test]
    fn several_metrics_are_keyed_by_name_with_units_per_point() {
        let v = data(
            "metric=b,a&interval=300",
            vec![series("a", None, &[Some(1)]), series("b", None, &[Some(2)])],
            vec![],
        );
        assert_eq!(v["metrics"], json!(["a", "b"]));
        assert!(v.get("metric").is_none() && v.get("unit").is_none());
        assert_eq!(
            v["data"],
            json!({"a": [{"timestamp": T0, "value": 1, "unit": "bytes/sec"}],
                   "b": [{"timestamp": T0, "value": 2, "unit": "bytes/sec"}]})
        );
        assert_eq!(v["timerange"], json!({"start": T0, "end": T0 + 300_000}));
    }

    #[test]
    fn several_devices_become_values_per_timestamp() {
        let v = data(
            "metric=bandwidth&devices=456,123&interval=300",
            vec![
                series("bandwidth", Some(123), &[Some(1), Some(2)]),
                series("bandwidth", Some(456), &[Some(3), None]),
            ],
            vec![],
        );
        assert_eq!(v["devices"], json!(["123", "456"]));
        assert_eq!(
            v["data"],
            json!([
                {"timestamp": T0, "values": [{"device_id": "123", "value": 1}, {"device_id": "456", "value": 3}]},
                {"timestamp": T0 + 300_000, "values": [{"device_id": "123", "value": 2}]}])
        );
    }

    #[test]
    fn breaches_nest_in_their_bucket_and_device() {
        let breach = |time, did| Breach {
            appliance: None,
            time,
            model: Some("Device / Anomalous Activity".to_owned()),
            score: Some(0.9),
            pbid: Some(7),
            pid: None,
            did,
            id: None,
        };
        let v = data(
            "metric=anomaly_score&did=123&interval=300&breachtimes=True",
            vec![series("anomaly_score", Some(123), &[Some(1), Some(2)])],
            vec![
                breach(T0 + 60_000, Some(123)),
                breach(T0 + 120_000, Some(999)),
            ],
        );
        assert_eq!(
            v["data"][0]["breaches"],
            json!([{"breach_id": "7", "model_name": "Device / Anomalous Activity",
                    "score": 0.9, "time": T0 + 60_000, "did": 123}])
        );
        assert_eq!(v["data"][1]["breaches"], json!([]));
    }
}
