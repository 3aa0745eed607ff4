//! `/darktrace/*`: scripts written against darktrace-sdk, in both of its spellings, get the
//! seed's shapes; the appliance gets its own dialect, once.

use std::num::NonZero;

use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with};

const RANGE: &str = "starttime=1705320000000&endtime=1705323600000";

#[tokio::test]
async fn both_sdk_spellings_ask_the_appliance_one_question() {
    let app = spawn_app().await;
    // darktrace-sdk 0.9: comma-joined metrics, Python's booleans.
    let old = app
        .get(&format!(
            "/darktrace/metricdata?metric=connection_count,bandwidth&did=123&{RANGE}&interval=5min&breachtimes=True&fulldevicedetails=False"
        ))
        .await;
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(
        app.upstream_queries(),
        [
            "/metricdata?metric1=bandwidth&metric2=connection_count&did=123&starttime=1705320000000&endtime=1705323600000&interval=300&breachtimes=true"
        ]
    );
    // darktrace-sdk 0.10: numbered metrics, lowercase booleans, `from`/`to` strings.
    let new = app
        .get("/darktrace/metricdata?metric1=bandwidth&metric2=connection_count&did=123&from=2024-01-15%2012:00:00&to=2024-01-15%2013:00:00&interval=300&breachtimes=true&fulldevicedetails=false")
        .await;
    assert_eq!(new.status, 200, "{}", new.body);
    assert_eq!(new.body, old.body);
    assert!(
        new.header("cache-status").contains("hit"),
        "{:?}",
        new.headers
    );
    assert_eq!(
        app.upstream_metricdata(),
        1,
        "the second spelling is a cache hit"
    );
}

#[tokio::test]
async fn one_metric_is_a_list_of_points_with_its_device() {
    let app = spawn_app().await;
    let a = app
        .get(&format!(
            "/darktrace/metricdata?metric=bandwidth&did=123&{RANGE}&interval=5min"
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), "application/json");
    let b = &a.body;
    assert_eq!(b["metric"], "bandwidth");
    assert_eq!(b["interval"], "5min");
    assert_eq!(b["unit"], "bytes/sec");
    assert_eq!(
        b["timerange"],
        json!({"start": 1705320000000_i64, "end": 1705323600000_i64})
    );
    let points = b["data"].as_array().unwrap();
    assert_eq!(points.len(), 12);
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p["timestamp"], 1705320000000_i64 + i as i64 * 300_000);
        assert!(p["value"].is_number(), "{p}");
        assert_eq!(p["device"]["did"], 123);
        assert!(p.get("breaches").is_none(), "only with breachtimes");
    }
    // The same numbers as the normalized answer.
    let v1 = app
        .get(&format!(
            "/v1/metricdata?metric=bandwidth&did=123&{RANGE}&interval=5min"
        ))
        .await;
    let v1_values: Vec<&Value> = v1.body["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["value"])
        .collect();
    let sdk_values: Vec<&Value> = points.iter().map(|p| &p["value"]).collect();
    assert_eq!(sdk_values, v1_values);
}

#[tokio::test]
async fn several_metrics_are_keyed_by_name_with_full_device_details() {
    let app = spawn_app().await;
    let a = app
        .get(&format!(
            "/darktrace/metricdata?metric=bandwidth,connection_count,cpu_usage&did=123&{RANGE}&interval=15min&fulldevicedetails=True"
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["metrics"],
        json!(["bandwidth", "connection_count", "cpu_usage"])
    );
    let data = a.body["data"].as_object().unwrap();
    assert_eq!(data.len(), 3);
    for (name, unit) in [
        ("bandwidth", "bytes/sec"),
        ("connection_count", "count"),
        ("cpu_usage", "percent"),
    ] {
        let points = data[name].as_array().unwrap();
        assert_eq!(points.len(), 4, "{name}");
        for p in points {
            assert_eq!(p["unit"], unit);
            let d = &p["device"];
            assert_eq!(d["did"], 123);
            for field in [
                "ip",
                "hostname",
                "devicelabel",
                "macaddress",
                "os",
                "devicetype",
            ] {
                assert!(d[field].is_string(), "{field} in {d}");
            }
        }
    }
}

#[tokio::test]
async fn several_devices_give_values_per_timestamp_in_either_spelling() {
    let app = spawn_app().await;
    let comma = app
        .get(&format!(
            "/darktrace/metricdata?metric=bandwidth&devices=789,123,456&{RANGE}&interval=30min"
        ))
        .await;
    assert_eq!(comma.status, 200, "{}", comma.body);
    assert_eq!(comma.body["devices"], json!(["123", "456", "789"]));
    let rows = comma.body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let ids: Vec<&str> = row["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["device_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["123", "456", "789"]);
        assert!(row["values"][0]["value"].is_number());
    }
    // The appliance has no `devices`: one request per device.
    let mut asked = app.upstream_queries();
    asked.sort();
    assert_eq!(asked.len(), 3);
    assert!(asked[0].contains("did=123&"), "{asked:?}");
    assert!(asked.iter().all(|q| !q.contains("devices")), "{asked:?}");
    let repeated = app
        .get(&format!(
            "/darktrace/metricdata?metric=bandwidth&devices=123&devices=456&devices=789&{RANGE}&interval=1800"
        ))
        .await;
    assert_eq!(repeated.body, comma.body);
    assert_eq!(app.upstream_metricdata(), 3);
}

#[tokio::test]
async fn breaches_nest_in_the_bucket_that_holds_them() {
    let app = spawn_app().await;
    let a = app
        .get("/darktrace/metricdata?metric=anomaly_score&did=123&starttime=1705276800000&endtime=1705363200000&interval=1hour&breachtimes=True")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let points = a.body["data"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    let mut nested = 0;
    for p in points {
        let t = p["timestamp"].as_i64().unwrap();
        for b in p["breaches"].as_array().expect("every point has a list") {
            let time = b["time"].as_i64().unwrap();
            assert!((t..t + 3_600_000).contains(&time), "{b} outside {t}");
            assert!(b["model_name"].is_string() && b["score"].is_number(), "{b}");
            assert!(b["breach_id"].is_string(), "{b}");
            nested += 1;
        }
    }
    let v1 = app
        .get("/v1/metricdata?metric=anomaly_score&did=123&starttime=1705276800000&endtime=1705363200000&interval=1hour&breachtimes=true")
        .await;
    let all = v1.body["breaches"].as_array().unwrap().len();
    assert!(all > 0, "the simulator breached in a day");
    assert_eq!(nested, all, "every breach of the device is in some bucket");
}

#[tokio::test]
async fn caller_signing_headers_are_ignored() {
    let app = spawn_app().await;
    let a = app
        .get_with(
            "/darktrace/metricdata?metric=bandwidth&did=5",
            &[
                ("DTAPI-Token", "someone-elses-token"),
                ("DTAPI-Date", "1999-01-01 00:00:00"),
                (
                    "DTAPI-Signature",
                    "0000000000000000000000000000000000000000",
                ),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let stats = app.sim.stats.snapshot();
    assert_eq!(
        (stats.metricdata, stats.rejected),
        (1, 0),
        "signed by the gateway"
    );
}

#[tokio::test]
async fn bad_sdk_input_is_named_and_never_forwarded() {
    let app = spawn_app().await;
    app.ready().await;
    let a = app
        .get("/darktrace/metricdata?metric=bandwidth&metric1=cpu_usage&did=abc&interval=7x&format=csv&breachtimes=maybe&starttime=1705320000000")
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.header("content-type"), "application/problem+json");
    let named = a.bad_parameters();
    for p in [
        "metric",
        "metric1",
        "did",
        "interval",
        "format",
        "breachtimes",
    ] {
        assert!(named.iter().any(|n| n == p), "{p} not in {named:?}");
    }
    let unknown = app
        .get("/darktrace/metricdata?metric1=bandwith&metric2=cpu_usage")
        .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.bad_parameters(), ["metric1"]);
    assert!(
        unknown.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`bandwidth`"),
        "{}",
        unknown.body
    );
    assert_eq!(app.upstream_metricdata(), 0);
}

#[tokio::test]
async fn sdk_callers_are_rate_limited_like_v1() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_client_per_minute = NonZero::new(60).unwrap();
        s.rate_limit.burst = NonZero::new(2).unwrap();
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            app.get("/darktrace/metricdata?metric=bandwidth")
                .await
                .status,
            200
        );
    }
    let limited = app.get("/darktrace/metrics").await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(app.upstream_metricdata(), 1, "the second was a cache hit");
}

#[tokio::test]
async fn metrics_lists_the_catalog_as_the_appliance_does() {
    let app = spawn_app().await;
    let all = app.get("/darktrace/metrics").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let list = all
        .body
        .as_array()
        .expect("an array, as the appliance sends");
    let bandwidth = list.iter().find(|m| m["name"] == "bandwidth").unwrap();
    assert_eq!(bandwidth["units"], "bytes/sec");
    let mlid = bandwidth["mlid"].as_u64().unwrap();
    let one = app.get(&format!("/darktrace/metrics/{mlid}")).await;
    assert_eq!((one.status, &one.body), (200, bandwidth));
    let picked = app.get("/darktrace/metrics?responsedata=mlid,name").await;
    assert_eq!(
        picked.body[0].as_object().unwrap().len(),
        2,
        "{}",
        picked.body
    );
    assert_eq!(app.get("/darktrace/metrics/99999").await.status, 404);
    let bad = app
        .get("/darktrace/metrics/x?responsedata=nope&limit=3")
        .await;
    assert_eq!(bad.status, 400);
    let mut named = bad.bad_parameters();
    named.sort();
    assert_eq!(named, ["limit", "mlid", "responsedata"]);
    assert_eq!(app.get("/darktrace/devices").await.status, 404);
}

#[tokio::test]
async fn sdk_answers_are_built_from_the_points_v1_fetched() {
    let app = spawn_app().await;
    let q = format!("metric=bandwidth&did=123&{RANGE}&interval=5min");
    assert_eq!(app.get(&format!("/v1/metricdata?{q}")).await.status, 200);
    let csv = app.get(&format!("/v1/metricdata?{q}&format=csv")).await;
    assert_eq!(csv.status, 200);
    let sdk = app.get(&format!("/darktrace/metricdata?{q}")).await;
    assert_eq!(sdk.status, 200);
    assert!(
        sdk.header("cache-status").contains("detail=assembled"),
        "its own representation, from the segments v1 fetched: {:?}",
        sdk.headers
    );
    assert_eq!(
        app.upstream_metricdata(),
        1,
        "three representations, one appliance request (the segment cache)"
    );
}
