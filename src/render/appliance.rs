//! The appliance's own `/metricdata` answer, as the vendor's API guide documents it, rendered
//! from the normalized [`MetricData`]: scripts that called the appliance directly read it
//! unchanged.
//!
//! A JSON array with one `{metric, data: [{time, timems, size, in, out}]}` object per metric;
//! with `breachtimes=true` the first element is `{breachtimes: [{pid, pbid, score, name,
//! time}]}`. When several devices were asked for (which the appliance itself cannot do), each
//! object also names its `did`. Buckets without a value are left out: the guide's `size` is
//! always a number.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Number;
use utoipa::ToSchema;

use crate::normalize::{Breach, MetricData, Series};

/// One element of the array: the breaches (first, with `breachtimes=true`) or a metric.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ApplianceElement {
    Breaches(ApplianceBreaches),
    Metric(ApplianceMetric),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplianceBreaches {
    /// Model breaches on the device (or subnet) in the range.
    pub breachtimes: Vec<ApplianceBreach>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplianceBreach {
    /// The breached model's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 341)]
    pub pid: Option<u64>,
    /// The model breach's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 292504)]
    pub pbid: Option<u64>,
    /// Between 0 and 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.6043)]
    pub score: Option<f64>,
    /// The breached model's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "Compromise::Sustained SSL or HTTP Increase")]
    pub name: Option<String>,
    /// When the breach was recorded, epoch ms.
    #[schema(example = 1582902068000_i64)]
    pub time: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplianceMetric {
    /// The metric's system name.
    #[schema(example = "connections")]
    pub metric: String,
    /// The device, only when several were asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub did: Option<u64>,
    pub data: Vec<AppliancePoint>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppliancePoint {
    /// Start of the bucket, `YYYY-MM-DD HH:MM:SS` (UTC).
    #[schema(example = "2020-02-28 14:29:00")]
    pub time: String,
    /// Start of the bucket, epoch ms.
    #[schema(example = 1582900140000_i64)]
    pub timems: i64,
    /// The bucket's value (the maximum inside it): in + out where the metric splits them.
    #[schema(value_type = f64, example = 14)]
    pub size: Number,
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, example = 0)]
    pub in_: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, example = 14)]
    pub out: Option<Number>,
}

pub fn render(data: &MetricData) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(&elements(data)).map(Bytes::from)
}

fn elements(data: &MetricData) -> Vec<ApplianceElement> {
    let several_devices = data.query.devices().len() > 1;
    let mut out = Vec::with_capacity(data.series.len() + 1);
    if data.query.breachtimes() {
        out.push(ApplianceElement::Breaches(ApplianceBreaches {
            breachtimes: data.breaches.iter().map(breach).collect(),
        }));
    }
    out.extend(data.series.iter().map(|s| {
        ApplianceElement::Metric(ApplianceMetric {
            metric: s.metric.clone(),
            did: several_devices
                .then(|| s.device.as_ref().map(|d| d.did))
                .flatten(),
            data: points(s),
        })
    }));
    out
}

fn breach(b: &Breach) -> ApplianceBreach {
    ApplianceBreach {
        pid: b.pid,
        pbid: b.pbid,
        score: b.score,
        name: b.model.clone(),
        time: b.time,
    }
}

fn points(s: &Series) -> Vec<AppliancePoint> {
    s.points
        .iter()
        .filter_map(|p| {
            let size = p.value.clone()?;
            Some(AppliancePoint {
                time: chrono::DateTime::from_timestamp_millis(p.timestamp)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                timems: p.timestamp,
                size,
                in_: p.in_.clone(),
                out: p.out.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::normalize::{Part, TimeRange, normalize};
    use crate::query::{AnyMetric, Dialect, parse_in};
    use crate::settings::Settings;

    fn rendered(raw: &str, parts: &[Part]) -> serde_json::Value {
        let q = parse_in(
            Dialect::Appliance,
            raw,
            &Settings::defaults().query,
            &AnyMetric,
            1_705_330_000_000,
        )
        .unwrap();
        let range = TimeRange {
            start: q.starttime(),
            end: q.endtime(),
        };
        let data = normalize(&q, range, parts, &|_| None).unwrap();
        serde_json::from_slice(&render(&data).unwrap()).unwrap()
    }

    #[test]
    fn the_guides_example_comes_back_as_the_guide_shows_it() {
        let guide = json!([
            {"breachtimes": [{"pid": 341, "pbid": 292504, "score": 0.6043,
                "name": "Compromise::Sustained SSL or HTTP Increase", "time": 1582902068000_i64}]},
            {"metric": "externalconnections", "data": [
                {"time": "2020-02-28 14:29:00", "timems": 1582900140000_i64, "size": 14, "in": 0, "out": 14},
                {"time": "2020-02-28 14:30:00", "timems": 1582900200000_i64, "size": 18, "in": 0, "out": 18}]}
        ]);
        let part = Part {
            device: Some(1),
            body: Bytes::from(guide.to_string()),
        };
        let answer = rendered(
            "metric=externalconnections&startTime=1582900140000&endTime=1582902120000&did=1&interval=60&breachtimes=true",
            &[part],
        );
        assert_eq!(answer, guide);
    }

    #[test]
    fn several_devices_name_their_did_and_gaps_are_left_out() {
        let part = |did: u64, size: serde_json::Value| Part {
            device: Some(did),
            body: Bytes::from(
                json!([{"metric": "connections", "data": [
                    {"time": "2020-02-28 14:29:00", "timems": 1582900140000_i64, "size": size}]}])
                .to_string(),
            ),
        };
        let answer = rendered(
            "metric=connections&devices=2,1&starttime=1582900140000&endtime=1582900200000",
            &[part(1, json!(3)), part(2, json!(null))],
        );
        assert_eq!(
            answer,
            json!([
                {"metric": "connections", "did": 1, "data": [
                    {"time": "2020-02-28 14:29:00", "timems": 1582900140000_i64, "size": 3}]},
                {"metric": "connections", "did": 2, "data": []}
            ])
        );
    }
}
