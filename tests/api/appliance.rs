//! `/appliance/*`: scripts written against the vendor's API guide change only their host. The
//! guide's requests get the guide's array answers, from the gateway's cache and under its
//! limits, and the appliance gets the gateway's own signed request.

use std::num::NonZero;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with};

const GUIDE_EXAMPLE_2: &str = "/appliance/metricdata?metric=internalconnections&startTime=1584694800000&endTime=1584698400000&did=1&&ddid=18&protocol=6&interval=300";

#[tokio::test]
async fn the_guides_request_gets_the_appliances_array_signed_by_the_gateway() {
    let app = spawn_app().await;
    // A script's own signing headers, for its own tokens: ignored.
    let theirs = [
        ("DTAPI-Token", "118v8jecrbrtkucou5a34hsbzounohx6jce61dwy"),
        ("DTAPI-Date", "2024-01-15 12:00:00"),
        (
            "DTAPI-Signature",
            "f19ae16721cc0e020ad12ec372cb15fa93bf3626",
        ),
    ];
    let a = app.get_with(GUIDE_EXAMPLE_2, &theirs).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), "application/json");
    let array = a.body.as_array().expect("an array");
    assert_eq!(array.len(), 1);
    assert_eq!(array[0]["metric"], "internalconnections");
    assert!(
        array[0].get("did").is_none(),
        "one device: the guide's shape"
    );
    let data = array[0]["data"].as_array().unwrap();
    assert_eq!(data.len(), 12);
    assert_eq!(
        data[0]["time"], "2020-03-20 09:00:00",
        "the guide's readable time, UTC"
    );
    assert_eq!(data[0]["timems"], 1584694800000_i64);
    for p in data {
        let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k} in {p}"));
        assert_eq!(n("size"), n("in") + n("out"), "{p}");
    }
    // The appliance got the gateway's request, signed with the gateway's tokens.
    assert_eq!(
        app.upstream_queries(),
        [
            "/metricdata?metric=internalconnections&did=1&ddid=18&protocol=6&starttime=1584694800000&endtime=1584698400000&interval=300"
        ]
    );
    let stats = app.sim.stats.snapshot();
    assert_eq!(stats.rejected, 0, "signed right");

    // Same cache: the repeat is a hit, and /v1 asking the same question reuses the segments.
    let again = app.get(GUIDE_EXAMPLE_2).await;
    assert!(
        again.header("cache-status").contains("hit"),
        "{:?}",
        again.headers
    );
    let v1 = app
        .get("/v1/metricdata?metric=internalconnections&did=1&ddid=18&protocol=tcp&from=1584694800000&to=1584698400000&interval=5min")
        .await;
    assert_eq!(v1.status, 200, "{}", v1.body);
    assert_eq!(app.upstream_metricdata(), 1, "one appliance request in all");
    let v1_values: Vec<&Value> = v1.body["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["value"])
        .collect();
    let sizes: Vec<&Value> = data.iter().map(|p| &p["size"]).collect();
    assert_eq!(sizes, v1_values);
}

#[tokio::test]
async fn breaches_come_first_and_several_devices_name_their_did() {
    let app = spawn_app().await;
    let a = app
        .get("/appliance/metricdata?metric1=connections&metric2=bandwidth&devices=2,1&starttime=1705320000000&endtime=1705406400000&interval=3600&breachtimes=true")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let array = a.body.as_array().unwrap();
    assert_eq!(array.len(), 5, "breaches, then 2 metrics × 2 devices");
    let breaches = array[0]["breachtimes"]
        .as_array()
        .expect("breachtimes first");
    assert!(!breaches.is_empty(), "a day of two devices has breaches");
    for b in breaches {
        let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["name", "pbid", "pid", "score", "time"], "{b}");
    }
    let objects: Vec<(Value, Value)> = array[1..]
        .iter()
        .map(|o| (o["metric"].clone(), o["did"].clone()))
        .collect();
    assert_eq!(
        objects,
        [
            (json!("bandwidth"), json!(1)),
            (json!("bandwidth"), json!(2)),
            (json!("connections"), json!(1)),
            (json!("connections"), json!(2)),
        ]
    );
    assert_eq!(
        app.upstream_metricdata(),
        2,
        "one appliance request per device"
    );
}

#[tokio::test]
async fn the_same_limits_and_refusals_apply() {
    let app = spawn_app_with(|s| {
        s.rate_limit.burst = NonZero::new(2).unwrap();
        s.rate_limit.per_client_per_minute = NonZero::new(1).unwrap();
    })
    .await;
    let bad = app
        .get("/appliance/metricdata?metric=connections&did=x&format=csv")
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("content-type"), "application/problem+json");
    assert_eq!(bad.bad_parameters(), ["format", "did"]);
    assert_eq!(app.get("/appliance/metrics").await.status, 200);
    let limited = app.get("/appliance/metrics/4").await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.header("ratelimit").contains("remaining=0"));
    assert_eq!(
        app.upstream_metricdata(),
        0,
        "nothing invalid reached the appliance"
    );
}

fn python(script: &str, url: &str, pythonpath: Option<&Path>) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("tests/clients/appliance").join(script))
        .arg(url);
    if let Some(path) = pythonpath {
        cmd.env("PYTHONPATH", path);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

#[tokio::test]
async fn a_script_written_against_the_guide_runs_with_only_its_host_changed() {
    let app = spawn_app().await;
    app.ready().await;
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || python("guide_script.py", &url, None))
        .await
        .unwrap();
    assert!(
        out.contains("guide script OK: 5 metricdata requests"),
        "{out}"
    );
    let stats = app.sim.stats.snapshot();
    assert!(stats.metricdata > 0);
    assert_eq!(stats.rejected, 0);
}

#[tokio::test]
async fn darktrace_sdk_0_10_1_reads_the_list_shape() {
    let app = spawn_app().await;
    app.ready().await;
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk/0.10.1");
    assert!(
        sdk.join("darktrace").is_dir(),
        "darktrace-sdk 0.10.1 is not in {sdk:?}; run scripts/test.sh, which installs it"
    );
    let url = app.url.clone();
    let out = tokio::task::spawn_blocking(move || python("sdk_list_shape.py", &url, Some(&sdk)))
        .await
        .unwrap();
    assert!(
        out.contains("sdk list shape OK: darktrace-sdk 0.10.1"),
        "{out}"
    );
    assert_eq!(app.sim.stats.snapshot().rejected, 0);
}
