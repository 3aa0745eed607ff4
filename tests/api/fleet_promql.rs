//! PromQL over a fleet (#30): every series carries its `appliance` label, a selector without
//! one reads every appliance (each through its own simulator, tokens and caches), matchers on
//! it pick appliances, and one appliance failing leaves the others' answer with a warning.

use std::collections::BTreeMap;

use metricgate::sim::{Faults, Simulator};
use serde_json::{Value, json};

use crate::fleet::named;
use crate::helpers::{TestApp, spawn_app_with};
use crate::prometheus::{get, samples};

/// 2024-01-15T12:00:00Z: the simulators' past, where every minute exists.
const T: i64 = 1_705_320_000;

/// The helpers' gateway (its simulator is `default`), plus `emea` behind a second simulator
/// with other tokens.
async fn two() -> (TestApp, Simulator) {
    let emea = Simulator::spawn("127.0.0.1:0", "emea-public", "emea-private").unwrap();
    let settings = named("emea", &emea, "emea-public", "emea-private");
    let app = spawn_app_with(move |s| s.appliances.push(settings)).await;
    emea.set_clock(app.clock.clone());
    (app, emea)
}

/// `/metricdata` requests each simulator served: (default, emea).
fn asked(app: &TestApp, emea: &Simulator) -> (u64, u64) {
    (app.upstream_metricdata(), emea.stats.snapshot().metricdata)
}

/// A range query over ten minutes at one-minute steps.
async fn range(app: &TestApp, query: &str) -> Value {
    let (start, end) = (T.to_string(), (T + 600).to_string());
    let a = get(
        app,
        "/query_range",
        &[
            ("query", query),
            ("start", &start),
            ("end", &end),
            ("step", "60"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{query}: {}", a.body);
    assert_eq!(a.body["status"], "success", "{}", a.body);
    a.body
}

fn result(body: &Value) -> &Vec<Value> {
    body["data"]["result"].as_array().unwrap()
}

/// The value of each bucket `appliance` holds for device 7's connections, by start (s), as
/// the gateway's own `/v1/metricdata` serves them from that appliance.
async fn served(app: &TestApp, appliance: &str) -> BTreeMap<i64, f64> {
    let a = app
        .get(&format!(
            "/v1/metricdata?metric=connections&did=7&from={}&to={}&interval=60&appliance={appliance}",
            T * 1000,
            (T + 660) * 1000
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["timestamp"].as_i64().unwrap() / 1000,
                p["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_selector_without_the_label_reads_every_appliance_and_labels_each_series() {
    let (app, emea) = two().await;
    let body = range(&app, "connections{did=\"7\"}").await;
    let series = result(&body);
    let names: Vec<&str> = series
        .iter()
        .map(|s| s["metric"]["appliance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "emea"], "{body}");
    assert_eq!(asked(&app, &emea), (1, 1), "one question to each appliance");
    for s in series {
        assert_eq!(s["metric"]["__name__"], "connections");
        assert_eq!(s["metric"]["did"], "7");
    }
    assert!(body.get("warnings").is_none(), "{body}");

    // Each series holds what its own appliance serves.
    let by_appliance: BTreeMap<&str, BTreeMap<i64, f64>> = names
        .iter()
        .copied()
        .zip(series.iter().map(samples))
        .collect();
    for name in ["default", "emea"] {
        let expected = served(&app, name).await;
        assert_eq!(expected.len(), 11, "every step from start to end");
        assert_eq!(by_appliance[name], expected, "{name}");
    }
}

#[tokio::test]
async fn the_appliance_label_picks_appliances_and_only_theirs_are_asked() {
    let (app, emea) = two().await;
    let body = range(&app, "connections{appliance=\"emea\",did=\"7\"}").await;
    let series = result(&body);
    assert_eq!(series.len(), 1, "{body}");
    assert_eq!(series[0]["metric"]["appliance"], "emea");
    assert_eq!(asked(&app, &emea), (0, 1), "only emea's simulator is asked");
    assert_eq!(samples(&series[0]), served(&app, "emea").await);

    // A regex picks too; one naming no appliance reads nothing and says why.
    let body = range(&app, "connections{appliance=~\"emea|amer\",did=\"7\"}").await;
    assert_eq!(result(&body).len(), 1, "{body}");
    let before = asked(&app, &emea);
    let body = range(&app, "connections{appliance=\"apac\",did=\"7\"}").await;
    assert!(result(&body).is_empty(), "{body}");
    assert_eq!(asked(&app, &emea), before, "nothing is asked");
    let warning = body["warnings"][0].as_str().unwrap();
    assert!(warning.contains("default, emea"), "{warning}");
}

#[tokio::test]
async fn sums_by_appliance_keep_each_appliance_apart() {
    // emea's simulator is held so it keeps serving.
    let (app, _emea) = two().await;
    let body = range(&app, "sum by (appliance) (connections{did=\"7\"})").await;
    let series = result(&body);
    let labels: Vec<&Value> = series.iter().map(|s| &s["metric"]).collect();
    assert_eq!(
        labels,
        [
            &json!({"appliance": "default"}),
            &json!({"appliance": "emea"})
        ],
        "{body}"
    );
    for (s, name) in series.iter().zip(["default", "emea"]) {
        assert_eq!(samples(s), served(&app, name).await, "{name}");
    }
    // Summed over the fleet: the two appliances' values added.
    let total = range(&app, "sum(connections{did=\"7\"})").await;
    let total = samples(&result(&total)[0]);
    let (a, b) = (served(&app, "default").await, served(&app, "emea").await);
    let added: BTreeMap<i64, f64> = a.iter().map(|(t, v)| (*t, v + b[t])).collect();
    assert_eq!(total, added);
}

#[tokio::test]
async fn listings_are_per_appliance() {
    let (app, emea) = two().await;
    let values = get(&app, "/label/appliance/values", &[]).await;
    assert_eq!(values.status, 200, "{}", values.body);
    assert_eq!(values.body["data"], json!(["default", "emea"]));
    let names = get(&app, "/labels", &[]).await;
    assert!(
        names.body["data"]
            .as_array()
            .unwrap()
            .contains(&json!("appliance")),
        "{}",
        names.body
    );

    let series = get(
        &app,
        "/series",
        &[("match[]", "connections{appliance=\"emea\",did=\"7\"}")],
    )
    .await;
    assert_eq!(series.status, 200, "{}", series.body);
    let listed = series.body["data"].as_array().unwrap();
    assert!(!listed.is_empty(), "{}", series.body);
    assert!(
        listed.iter().all(|l| l["appliance"] == "emea"),
        "{}",
        series.body
    );
    assert!(series.body.get("warnings").is_none(), "{}", series.body);
    let both = get(&app, "/series", &[("match[]", "connections{did=\"7\"}")]).await;
    let appliances: std::collections::BTreeSet<&str> = both.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["appliance"].as_str().unwrap())
        .collect();
    assert_eq!(appliances, ["default", "emea"].into());
    let by_match = get(
        &app,
        "/label/appliance/values",
        &[("match[]", "connections{appliance=~\"em.*\"}")],
    )
    .await;
    assert_eq!(by_match.body["data"], json!(["emea"]));
    assert_eq!(asked(&app, &emea), (0, 0), "listings ask no appliance");
}

#[tokio::test]
async fn one_appliance_failing_leaves_the_others_series_with_a_warning_naming_it() {
    let (app, emea) = two().await;
    emea.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(503),
        ..Faults::default()
    });
    let body = range(&app, "connections{did=\"7\"}").await;
    let series = result(&body);
    assert_eq!(series.len(), 1, "{body}");
    assert_eq!(series[0]["metric"]["appliance"], "default");
    let warnings: Vec<&str> = body["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("appliance emea: ")),
        "{warnings:?}"
    );
    assert_eq!(samples(&series[0]), served(&app, "default").await);

    // Only when every appliance a query needs fails does it fail.
    let (start, end) = (T.to_string(), (T + 600).to_string());
    let only = get(
        &app,
        "/query_range",
        &[
            ("query", "connections{appliance=\"emea\",did=\"7\"}"),
            ("start", &start),
            ("end", &end),
            ("step", "60"),
        ],
    )
    .await;
    assert!(only.status >= 500, "{}", only.body);
    assert_eq!(only.body["status"], "error", "{}", only.body);
}
