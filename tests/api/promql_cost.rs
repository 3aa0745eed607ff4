//! What a PromQL query costs the appliance (#28), read from what reached the simulator: each
//! series once over the union of the windows the expression needs, and the appliance's own
//! hourly maxima where they give `max_over_time`'s answer.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};
use crate::prometheus::{get, samples};

/// 2024-01-15 12:00:00 UTC.
const T: i64 = 1_705_320_000;

/// `key=value` of an appliance request's query string.
fn param(request: &str, key: &str) -> Option<i64> {
    let query = request.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

async fn answer(app: &TestApp, route: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let a = get(app, route, params).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "success", "{}", a.body);
    a.body["data"]["result"].as_array().unwrap().clone()
}

/// One selector used three times (as it is, an hour back, over half an hour): the appliance is
/// asked for `connections` of device 123 over the union of the three windows, at the step's
/// interval, and nothing else; asking again for any of its parts costs nothing.
#[tokio::test]
async fn each_series_is_asked_for_once_over_the_windows_it_needs() {
    let app = spawn_app().await;
    let (start, end) = (T - 3_600, T);
    let query = "connections{did=\"123\"} / connections{did=\"123\"} offset 1h \
                 + max_over_time(connections{did=\"123\"}[30m])";
    let (start_text, end_text) = (start.to_string(), end.to_string());
    let params = [
        ("query", query),
        ("start", start_text.as_str()),
        ("end", end_text.as_str()),
        ("step", "60"),
    ];
    let before = app.upstream_queries().len();
    let series = answer(&app, "/query_range", &params).await;
    assert_eq!(series.len(), 1);
    let asked = app.upstream_queries().split_off(before);
    assert!(!asked.is_empty());
    let mut covered: Vec<(i64, i64)> = Vec::new();
    for request in &asked {
        assert!(request.contains("metric=connections"), "{request}");
        assert!(request.contains("did=123"), "{request}");
        assert_eq!(param(request, "interval"), Some(60), "{request}");
        let (from, to) = (
            param(request, "starttime").unwrap() / 1000,
            param(request, "endtime").unwrap() / 1000,
        );
        covered.push((from, to));
    }
    covered.sort_unstable();
    // The offset's lookback reaches furthest back, the last minute of the range ends it; the
    // segment cache rounds a run out to whole segments, never by more than a few minutes.
    let (from, to) = (covered.first().unwrap().0, covered.last().unwrap().1);
    let (need_from, need_to) = (start - 3_600 - 300, end + 60);
    assert!(from <= need_from && from >= need_from - 600, "{asked:?}");
    assert!(to >= need_to && to <= need_to + 600, "{asked:?}");
    for pair in covered.windows(2) {
        assert!(
            pair[1].0 <= pair[0].1,
            "one span, no gap or repeat: {asked:?}"
        );
    }
    let after = app.upstream_queries().len();
    for part in [
        "connections{did=\"123\"} offset 1h",
        "max_over_time(connections{did=\"123\"}[30m])",
    ] {
        let params = [
            ("query", part),
            ("start", start_text.as_str()),
            ("end", end_text.as_str()),
            ("step", "60"),
        ];
        answer(&app, "/query_range", &params).await;
    }
    assert_eq!(
        app.upstream_queries().len(),
        after,
        "its parts are answered from what the whole fetched"
    );
}

/// `max_over_time(x[1h])` at a time whose window is a whole hourly bucket (the minute buckets
/// starting in `(t - 1h, t]` are those of `[t - 59m, t + 1m)`) asks the appliance for that
/// hour's maximum, and answers what the same windows of minutes answer.
#[tokio::test]
async fn a_window_of_whole_buckets_is_asked_for_as_one_bucket() {
    let app = spawn_app().await;
    let t = (T - 60).to_string();
    let before = app.upstream_queries().len();
    let hourly = answer(
        &app,
        "/query",
        &[
            ("query", "max_over_time(connections{did=\"123\"}[1h])"),
            ("time", t.as_str()),
        ],
    )
    .await;
    let asked = app.upstream_queries().split_off(before);
    assert!(
        asked.iter().all(|q| param(q, "interval") == Some(3_600)),
        "{asked:?}"
    );
    // The same maximum over the hour's minutes (a subquery reads every minute's sample).
    let before = app.upstream_queries().len();
    let minutes = answer(
        &app,
        "/query",
        &[
            ("query", "max_over_time(connections{did=\"123\"}[1h:1m])"),
            ("time", t.as_str()),
        ],
    )
    .await;
    let asked = app.upstream_queries().split_off(before);
    assert!(
        asked.iter().all(|q| param(q, "interval") == Some(60)),
        "{asked:?}"
    );
    let value = |series: &[Value]| -> BTreeMap<i64, f64> { samples(&series[0]) };
    assert_eq!(hourly.len(), 1);
    assert_eq!(value(&hourly), value(&minutes));
    // A window that is not whole hours reads minutes.
    let before = app.upstream_queries().len();
    let off = (T - 30).to_string();
    answer(
        &app,
        "/query",
        &[
            ("query", "max_over_time(connections{did=\"123\"}[1h])"),
            ("time", off.as_str()),
        ],
    )
    .await;
    let asked = app.upstream_queries().split_off(before);
    assert!(
        asked.iter().all(|q| param(q, "interval") == Some(60)),
        "{asked:?}"
    );
}

/// Prometheus 3 keeps its `PromQL info` notes apart from warnings: `rate()` of a gauge says so
/// in `infos`, an unknown metric's hint stays a warning.
#[tokio::test]
async fn notes_are_infos_and_hints_are_warnings() {
    let app = spawn_app().await;
    let t = T.to_string();
    let a = get(
        &app,
        "/query",
        &[
            ("query", "rate(connections{did=\"123\"}[5m])"),
            ("time", &t),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body["infos"][0]
            .as_str()
            .is_some_and(|i| i.starts_with("PromQL info: metric might not be a counter")),
        "{}",
        a.body
    );
    assert!(a.body.get("warnings").is_none(), "{}", a.body);
    let a = get(&app, "/query", &[("query", "conections"), ("time", &t)]).await;
    assert!(
        a.body["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("did you mean")),
        "{}",
        a.body
    );
    assert!(a.body.get("infos").is_none(), "{}", a.body);
}

/// A selector without a metric name (`{did="123"}`, as Grafana's label browser writes it)
/// reads every metric of the catalog for that device, in questions of at most
/// `query.max_metrics` metrics.
#[tokio::test]
async fn a_selector_without_a_name_reads_every_metric() {
    let app = spawn_app().await;
    let t = T.to_string();
    let names = get(&app, "/label/__name__/values", &[]).await;
    let catalog: Vec<String> = names.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|n| *n != "darktrace_model_breach")
        .map(str::to_owned)
        .collect();
    assert!(catalog.len() > 2, "{catalog:?}");
    let before = app.upstream_queries().len();
    let series = answer(
        &app,
        "/query",
        &[
            ("query", "count by (__name__) ({did=\"123\"})"),
            ("time", &t),
        ],
    )
    .await;
    let mut found: Vec<String> = series
        .iter()
        .map(|s| s["metric"]["__name__"].as_str().unwrap().to_owned())
        .filter(|n| n != "darktrace_model_breach")
        .collect();
    found.sort();
    let mut expected = catalog.clone();
    expected.sort();
    assert_eq!(found, expected);
    let asked = app.upstream_queries().split_off(before);
    let max_metrics = metricgate::settings::Settings::defaults()
        .query
        .max_metrics
        .get();
    for request in &asked {
        let metrics = request
            .split('&')
            .find_map(|kv| kv.strip_prefix("metric="))
            .map_or(0, |m| m.split(',').count());
        assert!(metrics <= max_metrics, "{request}");
    }
}
