//! Real Prometheus clients against a running gateway: `promtool` (Debian's `prometheus`
//! package) and the PyPI `prometheus-api-client`, their numbers checked against the
//! simulator's; and every query of the provisioned Grafana dashboard through `promtool`.
//! `scripts/test.sh` installs both clients.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::deploy::dashboard_queries;
use crate::helpers::{TestApp, spawn_app_with};
use crate::prometheus::{appliance_values, samples};

/// 2024-01-15T12:00:00Z, in the simulator's past.
const T: i64 = 1_705_320_000;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (run scripts/test.sh, which installs it)")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `promtool query -o json <args…>` against the gateway's `/prometheus`.
async fn promtool(app: &TestApp, args: &[&str]) -> Value {
    let mut cmd = Command::new("promtool");
    cmd.args(["query", "-o", "json"]);
    let (subcommand, rest) = args.split_first().unwrap();
    cmd.arg(subcommand)
        .args(rest.iter().filter(|a| a.starts_with("--")));
    cmd.arg(format!("{}/prometheus", app.url));
    cmd.args(rest.iter().filter(|a| !a.starts_with("--")));
    let out = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn sim(app: &TestApp, did: u64, field: &str) -> std::collections::BTreeMap<i64, f64> {
    appliance_values(
        app,
        &format!(
            "metric=connections&did={did}&starttime={}&endtime={}&interval=60",
            T * 1000,
            (T + 660) * 1000
        ),
        field,
    )
    .await
}

#[tokio::test]
async fn promtool_range_instant_labels_and_series_read_the_simulators_numbers() {
    let app = spawn_app_with(|_| {}).await;
    app.ready().await;
    let range = promtool(
        &app,
        &[
            "range",
            "--start=2024-01-15T12:00:00Z",
            "--end=2024-01-15T12:10:00Z",
            "--step=1m",
            "connections{did=\"123\"}",
        ],
    )
    .await;
    let range = range.as_array().unwrap();
    assert_eq!(range.len(), 1);
    assert_eq!(range[0]["metric"]["hostname"], "host-123");
    assert_eq!(samples(&range[0]), sim(&app, 123, "size").await);

    let instant = promtool(
        &app,
        &[
            "instant",
            "--time=2024-01-15T12:05:00Z",
            "sum(connections{did=~\"1|2\"})",
        ],
    )
    .await;
    let (one, two) = (sim(&app, 1, "size").await, sim(&app, 2, "size").await);
    let at = T + 300;
    assert_eq!(instant[0]["value"][0], at);
    assert_eq!(
        instant[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap(),
        one[&at] + two[&at]
    );

    let labels = promtool(&app, &["labels", "did"]).await;
    assert_eq!(labels, serde_json::json!(["1", "123", "2"]));
    let series = promtool(&app, &["series", "--match=bandwidth{did=\"123\"}"]).await;
    let series = series.as_array().unwrap();
    assert_eq!(series.len(), 3, "the total and its in and out parts");
    assert!(series.iter().all(|s| s["ip"] == "10.0.0.123"));
    let stats = app.sim.stats.snapshot();
    assert_eq!(
        stats.rejected, 0,
        "every appliance request was signed right"
    );
}

#[tokio::test]
async fn prometheus_api_client_reads_ranges_and_raw_buckets() {
    let app = spawn_app_with(|_| {}).await;
    app.ready().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/prometheus_check.py");
    let url = format!("{}/prometheus", app.url);
    let out =
        tokio::task::spawn_blocking(move || run(Command::new("python3").arg(script).arg(url)))
            .await
            .unwrap();
    let got: Value = serde_json::from_str(&out).unwrap();
    let expected = sim(&app, 123, "size").await;
    let range = &got["custom_query_range"][0];
    assert_eq!(range["metric"]["did"], "123");
    assert_eq!(samples(range), expected);
    // `connections{did='123'}[600s]` at 12:10: the buckets that start in (12:00, 12:10].
    let raw = &got["get_metric_range_data"][0];
    assert_eq!(raw["metric"]["__name__"], "connections");
    assert_eq!(
        samples(raw),
        expected.range(T + 1..).map(|(t, v)| (*t, *v)).collect()
    );
    let names = got["all_metrics"].as_array().unwrap();
    assert!(names.contains(&Value::from("bandwidth")));
    let parts = got["custom_query"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["metric"]["direction"], "in");
}

#[tokio::test]
async fn every_query_of_the_provisioned_dashboard_returns_data_through_promtool() {
    let app = spawn_app_with(|s| s.prometheus.devices = vec![101, 102, 103]).await;
    app.ready().await;
    // The dashboard's variable: label_values(did).
    let devices = promtool(&app, &["labels", "did"]).await;
    assert_eq!(devices, serde_json::json!(["101", "102", "103"]));
    // Grafana's "All" for a multi-value variable.
    for (name, expr) in dashboard_queries("(101|102|103)") {
        let result = promtool(
            &app,
            &[
                "range",
                "--start=2024-01-15T06:00:00Z",
                "--end=2024-01-15T12:00:00Z",
                "--step=1m",
                &expr,
            ],
        )
        .await;
        let series = result.as_array().unwrap();
        assert!(!series.is_empty(), "{name}: {expr} returned no series");
        assert!(
            series
                .iter()
                .all(|s| !s["values"].as_array().unwrap().is_empty()),
            "{name}: {expr}"
        );
    }
    assert_eq!(app.sim.stats.snapshot().rejected, 0);
}
