//! Every upstream shape from the shared notes and the seed, normalized.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::query::{AnyMetric, parse};
use crate::settings::Settings;

fn query(raw: &str) -> MetricQuery {
    parse(
        raw,
        &Settings::defaults().query,
        &AnyMetric,
        1_705_330_000_000,
    )
    .unwrap()
}

fn run(
    raw_query: &str,
    parts: &[(Option<u64>, serde_json::Value)],
) -> Result<MetricData, AnswerError> {
    let parts: Vec<Part> = parts
        .iter()
        .map(|(device, body)| Part {
            device: *device,
            body: Bytes::from(body.to_string()),
        })
        .collect();
    let range = TimeRange {
        start: None,
        end: None,
    };
    normalize(&query(raw_query), range, &parts, &|m| {
        (m == "connections").then(|| "conns".to_owned())
    })
}

#[test]
fn appliance_array_with_breachtimes() {
    let body = json!([
        {"breachtimes": [{"pid": 341, "pbid": 292504, "score": 0.6043, "name": "Compromise::Beacon", "time": 1582902068000_i64}]},
        {"metric": "connections", "data": [
            {"time": "2020-02-28 14:30:00", "timems": 1582900200000_i64, "size": 18, "in": 0, "out": 18},
            {"time": "2020-02-28 14:29:00", "timems": 1582900140000_i64, "size": 14, "in": 0, "out": 14}
        ]}
    ]);
    let d = run("metric=connections&breachtimes=1", &[(None, body)]).unwrap();
    assert_eq!(d.series.len(), 1);
    let s = &d.series[0];
    assert_eq!(s.unit.as_deref(), Some("conns"));
    assert!(s.device.is_none());
    assert_eq!(s.points[0].timestamp, 1582900140000);
    assert_eq!(s.points[0].value, Some(14.into()));
    assert_eq!(s.points[1].out, Some(18.into()));
    assert_eq!(d.breaches.len(), 1);
    assert_eq!(d.breaches[0].model.as_deref(), Some("Compromise::Beacon"));
    assert_eq!(d.breaches[0].pbid, Some(292504));
}

#[test]
fn several_metrics_in_one_array() {
    let body = json!([
        {"metric": "b", "data": [{"timems": 2, "size": 1}]},
        {"metric": "a", "data": [{"timems": 1, "size": 2}]}
    ]);
    let d = run("metrics=a,b", &[(None, body)]).unwrap();
    let names: Vec<&str> = d.series.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn fanned_out_answers_get_their_device() {
    let part = |v: i64| json!([{"metric": "bandwidth", "data": [{"timems": 1, "size": v}]}]);
    let d = run(
        "metric=bandwidth&devices=2,1",
        &[(Some(2), part(20)), (Some(1), part(10))],
    )
    .unwrap();
    assert_eq!(d.series.len(), 2);
    assert_eq!(d.series[0].device.as_ref().unwrap().did, 1);
    assert_eq!(d.series[0].points[0].value, Some(10.into()));
    assert_eq!(d.series[1].device.as_ref().unwrap().did, 2);
}

#[test]
fn seed_single_object() {
    let body = json!({
        "metric": "bandwidth", "interval": "5min", "unit": "bytes/sec", "datatype": "numeric",
        "timerange": {"start": 1705320000000_i64, "end": 1705323600000_i64},
        "data": [
            {"timestamp": 1705320300000_i64, "value": 2097152, "device": {"did": 123, "ip": "192.168.1.100", "hostname": "workstation-01"}},
            {"timestamp": 1705320000000_i64, "value": null, "device": {"did": 123, "ip": "192.168.1.100", "hostname": "workstation-01"}}
        ]
    });
    let d = run("metric=bandwidth&did=123", &[(Some(123), body)]).unwrap();
    assert_eq!(d.series.len(), 1);
    let s = &d.series[0];
    assert_eq!(s.unit.as_deref(), Some("bytes/sec"));
    assert_eq!(
        s.device.as_ref().unwrap().hostname.as_deref(),
        Some("workstation-01")
    );
    assert_eq!(
        s.points[0].value, None,
        "a missing value stays null, never 0"
    );
    assert_eq!(s.points[1].value, Some(2097152.into()));
}

#[test]
fn seed_dict_of_metrics() {
    let body = json!({
        "metrics": ["bandwidth", "connection_count"], "interval": "5min",
        "data": {
            "bandwidth": [{"timestamp": 1, "value": 1048576, "unit": "bytes/sec", "device": {"did": 123, "ip": "192.168.1.100"}}],
            "connection_count": [{"timestamp": 1, "value": 25, "unit": "count", "device": {"did": 123}}]
        }
    });
    let d = run(
        "metrics=bandwidth,connection_count&did=123",
        &[(Some(123), body)],
    )
    .unwrap();
    assert_eq!(d.series.len(), 2);
    assert_eq!(d.series[0].unit.as_deref(), Some("bytes/sec"));
    assert_eq!(d.series[1].unit.as_deref(), Some("count"));
    assert_eq!(d.series[1].points[0].value, Some(25.into()));
}

#[test]
fn seed_full_device_details() {
    let body = json!({"metric": "device_activity", "data": [{"timestamp": 1, "value": 7.2, "device": {
        "did": 123, "ip": "192.168.1.100", "hostname": "workstation-01", "devicelabel": "Employee Workstation",
        "macaddress": "00:1B:44:11:3A:B7", "vendor": "Dell Inc.", "os": "Windows 10", "devicetype": "desktop",
        "tags": ["corporate", "finance-dept"]}}]});
    let d = run("metric=device_activity&did=123", &[(Some(123), body)]).unwrap();
    let device = d.series[0].device.as_ref().unwrap();
    assert_eq!(device.label.as_deref(), Some("Employee Workstation"));
    assert_eq!(device.typename.as_deref(), Some("desktop"));
    assert_eq!(
        device.tags.as_ref().unwrap(),
        &["corporate", "finance-dept"]
    );
    assert_eq!(
        d.series[0].points[0].value,
        Some(serde_json::Number::from_f64(7.2).unwrap())
    );
}

#[test]
fn seed_nested_breaches() {
    let body = json!({"metric": "anomaly_score", "data": [{"timestamp": 1705320000000_i64, "value": 0.85, "device": {"did": 123},
        "breaches": [{"breach_id": "uuid-breach-123", "model_name": "Device / Anomalous Activity", "score": 0.95, "time": 1705320060000_i64}]}]});
    let d = run(
        "metric=anomaly_score&did=123&breachtimes=true",
        &[(Some(123), body)],
    )
    .unwrap();
    assert_eq!(d.breaches.len(), 1);
    let b = &d.breaches[0];
    assert_eq!(b.model.as_deref(), Some("Device / Anomalous Activity"));
    assert_eq!(b.id.as_deref(), Some("uuid-breach-123"));
    assert_eq!(b.did, Some(123));
}

#[test]
fn seed_multi_device_values() {
    let body = json!({"metric": "bandwidth", "devices": ["123", "456"], "data": [
        {"timestamp": 2, "values": [{"device_id": "123", "value": 1}, {"device_id": "456", "value": 2}]},
        {"timestamp": 1, "values": [{"device_id": "123", "value": 3}, {"device_id": 456, "value": null}]}
    ]});
    let d = run("metric=bandwidth&devices=123,456", &[(None, body)]).unwrap();
    assert_eq!(d.series.len(), 2);
    assert_eq!(d.series[0].device.as_ref().unwrap().did, 123);
    assert_eq!(
        d.series[0]
            .points
            .iter()
            .map(|p| p.timestamp)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(d.series[1].points[0].value, None);
}

#[test]
fn an_error_body_is_an_appliance_error() {
    let e = run("metric=a", &[(None, json!({"error": "Invalid metric"}))]).unwrap_err();
    assert!(
        matches!(&e, AnswerError::Reported(m) if m == "Invalid metric"),
        "{e:?}"
    );
}

#[test]
fn unknown_shapes_are_refused() {
    for body in [
        json!({"unexpected": 1}),
        json!([1, 2]),
        json!("text"),
        json!([{"metric": "a"}]),
        json!([{"metric": "a", "data": [{"value": 1}]}]),
        json!({"metric": "a", "data": 5}),
        json!([{"breachtimes": [{"score": 1}]}]),
    ] {
        let e = run("metric=a", &[(None, body.clone())]).unwrap_err();
        assert!(
            matches!(e, AnswerError::UnknownShape { .. }),
            "{body}: {e:?}"
        );
    }
}

#[test]
fn duplicate_buckets_are_reported_once() {
    let body = json!([{"metric": "a", "data": [{"timems": 1, "size": 1}, {"timems": 1, "size": 5}, {"timems": 0, "size": 2}]}]);
    let d = run("metric=a", &[(None, body)]).unwrap();
    let values: Vec<_> = d.series[0].points.iter().map(|p| p.value.clone()).collect();
    assert_eq!(values, [Some(2.into()), Some(5.into())]);
}

fn ranged(
    raw_query: &str,
    start: i64,
    end: i64,
    parts: &[(Option<u64>, serde_json::Value)],
) -> Result<MetricData, AnswerError> {
    let parts: Vec<Part> = parts
        .iter()
        .map(|(device, body)| Part {
            device: *device,
            body: Bytes::from(body.to_string()),
        })
        .collect();
    let range = TimeRange {
        start: Some(start),
        end: Some(end),
    };
    normalize(&query(raw_query), range, &parts, &|_| None)
}

#[test]
fn device_details_given_apart_are_attached_to_their_series() {
    let devices = json!([{"did": 7, "hostname": "ws-7", "typelabel": "Desktop", "ips": [{"ip": "10.0.0.7"}]}]);
    let metric = json!({"metric": "a", "data": [{"timems": 60_000, "size": 1}]});
    let listed = json!([metric.clone(), {"devices": devices.clone()}]);
    let wrapped = json!({"metricdata": [metric], "devices": devices});
    for body in [listed, wrapped] {
        let d = run(
            "metric=a&did=7&fulldevicedetails=true",
            &[(Some(7), body.clone())],
        )
        .unwrap();
        let device = d.series[0].device.as_ref().unwrap();
        assert_eq!(device.hostname.as_deref(), Some("ws-7"), "{body}");
        assert!(d.warnings.is_empty(), "{body}: {:?}", d.warnings);
    }
}

#[test]
fn unknown_elements_are_named_by_their_keys_and_left_out() {
    let body = json!([
        {"metric": "a", "data": [{"timems": 60_000, "size": 1}]},
        {"novelty": {"secret": "do-not-show"}, "weight": 3}
    ]);
    let d = run("metric=a", &[(None, body)]).unwrap();
    assert_eq!(d.series[0].points.len(), 1);
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("[novelty, weight]"),
        "{:?}",
        d.warnings
    );
    assert!(!d.warnings[0].contains("do-not-show"));
    // A wrapper's stray field too.
    let wrapped = json!({"metricdata": [{"metric": "a", "data": []}], "devices": [], "extra": 1});
    let d = run("metric=a", &[(None, wrapped)]).unwrap();
    assert!(d.warnings[0].contains("`extra`"), "{:?}", d.warnings);
    // A metric nobody asked for.
    let more = json!([{"metric": "a", "data": []}, {"metric": "b", "data": []}]);
    let d = run("metric=a", &[(None, more)]).unwrap();
    assert_eq!(d.series.len(), 1);
    assert!(d.warnings[0].contains("`b`"), "{:?}", d.warnings);
}

#[test]
fn a_requested_metric_missing_is_an_error() {
    let e = run(
        "metrics=a,b",
        &[(None, json!([{"metric": "a", "data": []}]))],
    )
    .unwrap_err();
    assert!(
        matches!(&e, AnswerError::MissingMetric { metric, device: None } if metric == "b"),
        "{e:?}"
    );
    let e = run("metric=a", &[(None, json!([{"surprise": 1}]))]).unwrap_err();
    assert!(matches!(e, AnswerError::UnknownShape { .. }), "{e:?}");
}

#[test]
fn only_the_contracts_buckets_are_kept() {
    // Range 00:01:30 to 00:05:00 at 2 minutes: buckets 00:00, 00:02, 00:04.
    let body = json!([{"metric": "a", "data": [
        {"timems": 0, "size": 1},
        {"timems": 120_000, "size": 2},
        {"timems": 240_000, "size": 3},
        {"timems": 300_000, "size": 9},
        {"timems": 360_000, "size": 4}
    ]}, {"breachtimes": [{"time": 30_000}, {"time": 100_000}, {"time": 300_000}]}]);
    let d = ranged("metric=a&interval=2min", 90_000, 300_000, &[(None, body)]).unwrap();
    let times: Vec<i64> = d.series[0].points.iter().map(|p| p.timestamp).collect();
    assert_eq!(times, [0, 120_000, 240_000]);
    assert_eq!(d.breaches.len(), 1, "breaches keep the range itself");
    assert_eq!(d.breaches[0].time, 100_000);
    assert_eq!(
        d.warnings.len(),
        1,
        "a misaligned bucket is named: {:?}",
        d.warnings
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_normalizer_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let parts = [Part { device: None, body: Bytes::from(body) }];
        let _ = normalize(&query("metric=a"), TimeRange { start: None, end: None }, &parts, &|_| None);
    }

    #[test]
    fn the_normalizer_never_panics_on_json_like_text(body in r#"[\[\]{}",:0-9a-z .-]{0,200}"#) {
        let parts = [Part { device: Some(1), body: Bytes::from(body) }];
        let _ = normalize(&query("metric=a"), TimeRange { start: None, end: None }, &parts, &|_| None);
    }

    #[test]
    fn the_normalizer_never_panics_on_shaped_json(
        ts in proptest::collection::vec(any::<i64>(), 0..20),
        vals in proptest::collection::vec(proptest::option::of(any::<f64>()), 0..20),
    ) {
        let data: Vec<_> = ts.iter().zip(vals.iter()).map(|(t, v)| json!({"timems": t, "size": v})).collect();
        let body = json!([{"metric": "a", "data": data}]);
        let parts = [Part { device: None, body: Bytes::from(body.to_string()) }];
        let d = normalize(&query("metric=a"), TimeRange { start: None, end: None }, &parts, &|_| None).unwrap();
        prop_assert!(d.series[0].points.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    }
}
