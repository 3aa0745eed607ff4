//! The normalized schema, the catalog route, problems for unknown routes, and the OpenAPI file.

use std::num::NonZero;

use metricgate::sim::Faults;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn metricdata_is_normalized() {
    let app = spawn_app().await;
    app.ready().await;
    let a = app
        .get("/v1/metricdata?metrics=connections,bandwidth&did=123&from=2024-01-15T12:00:00Z&to=2024-01-15T14:00:00Z&interval=1hour&breachtimes=true&fulldevicedetails=true")
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), "application/json");
    let b = &a.body;
    assert_eq!(b["interval_seconds"], 3600);
    assert_eq!(b["timerange"]["start"], 1705320000000_i64);
    assert_eq!(b["timerange"]["end"], 1705327200000_i64);
    assert_eq!(
        b["query"]["metrics"],
        serde_json::json!(["bandwidth", "connections"])
    );
    let series = b["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0]["metric"], "bandwidth");
    assert_eq!(series[0]["unit"], "bytes/sec");
    assert_eq!(series[1]["metric"], "connections");
    assert_eq!(series[1]["device"]["did"], 123);
    assert_eq!(series[1]["device"]["hostname"], "host-123");
    let points = series[1]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["timestamp"], 1705320000000_i64);
    assert_eq!(points[1]["timestamp"], 1705323600000_i64);
    let p = &points[0];
    assert_eq!(
        p["value"].as_u64().unwrap(),
        p["in"].as_u64().unwrap() + p["out"].as_u64().unwrap()
    );
    assert!(b["breaches"].is_array());
}

#[tokio::test]
async fn breaches_are_listed_when_asked() {
    let app = spawn_app().await;
    let a = app
        .get("/v1/metricdata?metric=anomaly_score&did=123&from=2024-01-01T00:00:00Z&to=2024-01-08T00:00:00Z&interval=1hour&breachtimes=true")
        .await;
    assert_eq!(a.status, 200);
    let breaches = a.body["breaches"].as_array().unwrap();
    assert!(!breaches.is_empty());
    let times: Vec<i64> = breaches
        .iter()
        .map(|b| b["time"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(breaches[0]["model"].is_string());
}

#[tokio::test]
async fn the_catalog_is_normalized() {
    let app = spawn_app().await;
    let a = app.get("/v1/metrics").await;
    assert_eq!(a.status, 200);
    let metrics = a.body["metrics"].as_array().unwrap();
    let names: Vec<&str> = metrics
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for name in [
        "connections",
        "externalconnections",
        "internaldatatransfervolume",
        "bandwidth",
        "anomaly_score",
    ] {
        assert!(names.contains(&name), "{name}");
    }
    assert!(metrics[0]["units"].is_string());
    assert!(metrics[0]["filtertypes"].is_array());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let a = app.get("/v2/nothing").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.header("content-type"), "application/problem+json");
    let resp = app
        .http
        .post(format!("{}/v1/metricdata", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    // RFC 9110: a 405 says which methods the route answers.
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn upstream_failures_become_clear_caller_errors() {
    let app = spawn_app_with(|s| {
        s.upstream.timeout_ms = NonZero::new(300).unwrap();
        s.upstream.max_response_bytes = NonZero::new(1 << 20).unwrap();
        s.upstream.retries = 0;
        s.upstream.breaker_failures = NonZero::new(1000).unwrap();
    })
    .await;
    app.ready().await;
    let q = "/v1/metricdata?metric=connections";
    let cases: Vec<(Faults, u16, &str)> = vec![
        (
            Faults {
                error_body: true,
                ..Faults::default()
            },
            502,
            "appliance-error",
        ),
        (
            Faults {
                malformed_body: true,
                ..Faults::default()
            },
            502,
            "appliance-unknown-shape",
        ),
        (
            Faults {
                unknown_shape: true,
                ..Faults::default()
            },
            502,
            "appliance-unknown-shape",
        ),
        (
            Faults {
                redirect: true,
                ..Faults::default()
            },
            502,
            "appliance-refused",
        ),
        (
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            502,
            "appliance-error",
        ),
        (
            Faults {
                latency_ms: 1000,
                ..Faults::default()
            },
            504,
            "appliance-timeout",
        ),
        (
            Faults {
                reset: true,
                ..Faults::default()
            },
            502,
            "appliance-broken-answer",
        ),
        // A body that trickles in is cut off by the timeout, not waited for.
        (
            Faults {
                slow_body_ms: 200,
                ..Faults::default()
            },
            504,
            "appliance-timeout",
        ),
        (
            Faults {
                oversized_bytes: 2 << 20,
                ..Faults::default()
            },
            502,
            "appliance-answer-too-large",
        ),
    ];
    for (faults, status, kind) in cases {
        app.sim.set_faults(faults.clone());
        let a = app.get(q).await;
        assert_eq!(a.status, status, "{faults:?}: {}", a.body);
        assert_eq!(a.header("content-type"), "application/problem+json");
        assert_eq!(
            a.body["type"],
            format!("urn:metricgate:problem:{kind}"),
            "{faults:?}"
        );
    }
    app.sim.set_faults(Faults::default());
    assert_eq!(app.get(q).await.status, 200);
}

#[tokio::test]
async fn an_unreachable_appliance_is_a_502_and_does_not_block_validation() {
    let app = spawn_app_with(|s| s.upstream.url = "http://127.0.0.1:9".parse().unwrap()).await;
    let a = app.get("/v1/metricdata?metric=anything_goes").await;
    assert_eq!(a.status, 502);
    assert_eq!(
        a.body["type"],
        "urn:metricgate:problem:appliance-unreachable"
    );
    assert_eq!(app.get("/readyz").await.status, 503);
    let r = app.admin_get("/readyz").await;
    assert_eq!(r.status, 503);
    let reasons = r.body["reasons"].to_string();
    assert!(
        reasons.contains("catalog") && reasons.contains("appliance"),
        "{reasons}"
    );
}

#[test]
fn the_committed_openapi_documents_are_current() {
    for (path, generated, command) in [
        (
            "openapi/openapi.json",
            metricgate::api::openapi::document(),
            "cargo run -- openapi > openapi/openapi.json",
        ),
        (
            "openapi/admin.json",
            metricgate::api::openapi::admin_document(),
            "cargo run -- openapi --admin > openapi/admin.json",
        ),
    ] {
        let committed = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(committed == generated, "{path} is stale: run `{command}`");
    }
}

#[test]
fn every_operation_has_its_own_id() {
    // Generated clients name their functions after these; a repeat silently shadows one route.
    for (document, least) in [
        (metricgate::api::openapi::document(), 8),
        (metricgate::api::openapi::admin_document(), 4),
    ] {
        let doc: serde_json::Value = serde_json::from_str(&document).unwrap();
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "repeated operationId in {ids:?}");
        assert!(count >= least, "{ids:?}");
    }
}

#[tokio::test]
async fn the_spec_and_swagger_ui_are_served() {
    let app = spawn_app().await;
    let a = app.get("/openapi.json").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["openapi"], "3.1.0");
    assert!(
        a.body["paths"]["/v1/metricdata"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .len()
            >= 18
    );
    let ui = app
        .http
        .get(format!("{}/docs/", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status().as_u16(), 200);
    assert!(ui.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn csv_gives_one_row_per_point() {
    let app = spawn_app().await;
    let q = "/v1/metricdata?metrics=connections,bandwidth&devices=1,2&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=15min";
    let json = app.get(q).await;
    let by_param = app
        .http
        .get(format!("{}{q}&format=csv", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(by_param.status().as_u16(), 200);
    assert_eq!(
        by_param.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let text = by_param.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "timestamp_iso,timestamp_ms,metric,did,value,in,out"
    );
    assert_eq!(
        lines.len(),
        1 + 2 * 2 * 4,
        "2 metrics x 2 devices x 4 points"
    );
    let first = &json.body["series"][0];
    let p = &first["points"][0];
    assert_eq!(
        lines[1],
        format!(
            "2024-01-15T12:00:00.000Z,1705320000000,bandwidth,1,{},{},{}",
            p["value"], p["in"], p["out"]
        )
    );
    // Accept: text/csv gives the same bytes, and JSON stays JSON for everyone else.
    let by_accept = app
        .http
        .get(format!("{}{q}", app.url))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_accept.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert_eq!(by_accept.text().await.unwrap(), text);
    let again = app.get(q).await;
    assert_eq!(again.header("content-type"), "application/json");
    assert_eq!(again.body, json.body);
    assert_eq!(
        app.upstream_metricdata(),
        2,
        "one fetch per device; csv reuses the segments"
    );
    let bad = app.get(&format!("{q}&format=xml")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.bad_parameters(), ["format"]);
}
