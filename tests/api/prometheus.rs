//! The Prometheus-compatible API (`/prometheus/api/v1`): Grafana's calls, the real request
//! forms and envelopes, values against the simulator's own numbers, and `/v1`'s protection.

use std::collections::BTreeMap;
use std::num::NonZero;

use metricgate::sim::Faults;
use metricgate::upstream::sign;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Answer, PRIVATE, PUBLIC, TestApp, spawn_app, spawn_app_with};

const API: &str = "/prometheus/api/v1";
/// 2024-01-15T12:00:00Z: the simulator's past, where every minute exists.
const T: i64 = 1_705_320_000;

fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

pub async fn get(app: &TestApp, route: &str, pairs: &[(&str, &str)]) -> Answer {
    app.get(&format!("{API}{route}?{}", encode(pairs))).await
}

/// A form-encoded POST, as Grafana sends its queries.
pub async fn post(app: &TestApp, route: &str, pairs: &[(&str, &str)]) -> Answer {
    let resp = app
        .http
        .post(format!("{}{API}{route}", app.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(pairs))
        .send()
        .await
        .expect("gateway answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// The simulator's own answer to a signed `/metricdata` request: its numbers, no gateway.
pub async fn appliance(app: &TestApp, query: &str) -> Value {
    let path = format!("/metricdata?{query}");
    let date = chrono::Utc::now().format(sign::DATE_FORMAT).to_string();
    let signature = sign::signature(
        &SecretString::from(PRIVATE.to_owned()),
        PUBLIC,
        &path,
        &date,
    );
    app.http
        .get(format!("{}{path}", app.sim.url()))
        .header("DTAPI-Token", PUBLIC)
        .header("DTAPI-Date", date)
        .header("DTAPI-Signature", signature)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `field` (`size`, `in` or `out`) of each bucket the simulator gives, by bucket start (s).
pub async fn appliance_values(app: &TestApp, query: &str, field: &str) -> BTreeMap<i64, f64> {
    let answer = appliance(app, query).await;
    let metric = answer
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o.get("data").is_some())
        .unwrap();
    metric["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["timems"].as_i64().unwrap() / 1000,
                p[field].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A matrix or vector series' samples, by time (s).
pub fn samples(series: &Value) -> BTreeMap<i64, f64> {
    let values = match series.get("values") {
        Some(v) => v.as_array().unwrap().clone(),
        None => vec![series["value"].clone()],
    };
    values
        .iter()
        .map(|v| {
            (
                v[0].as_f64().unwrap() as i64,
                v[1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn result(a: &Answer) -> &Vec<Value> {
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "success", "{}", a.body);
    a.body["data"]["result"].as_array().unwrap()
}

fn range(query: &str, start: i64, end: i64, step: &str) -> Vec<(&'static str, String)> {
    vec![
        ("query", query.to_owned()),
        ("start", start.to_string()),
        ("end", end.to_string()),
        ("step", step.to_owned()),
    ]
}

fn pairs<'a>(owned: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    owned.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn grafanas_save_and_test_and_editor_calls_are_answered_without_the_appliance() {
    let app = spawn_app().await;
    // The health check: `1+1` as an instant query at t=4, form-encoded.
    let a = post(&app, "/query", &[("query", "1+1"), ("time", "4")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        json!({"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}})
    );
    assert!(a.header("content-type").starts_with("application/json"));
    // Its heuristics: build information without `features` means Prometheus.
    let b = get(&app, "/status/buildinfo", &[]).await;
    assert_eq!(b.body["status"], "success");
    assert!(
        b.body["data"]["version"]
            .as_str()
            .unwrap()
            .starts_with("2.")
    );
    assert!(b.body["data"].get("features").is_none());
    // The editor's metric browser and hints.
    let names = get(&app, "/label/__name__/values", &[]).await;
    let names = names.body["data"].as_array().unwrap();
    for expected in ["connections", "bandwidth", "darktrace_model_breach"] {
        assert!(names.contains(&json!(expected)), "{expected}");
    }
    let labels = post(&app, "/labels", &[]).await;
    for expected in [
        "__name__",
        "did",
        "direction",
        "hostname",
        "port",
        "protocol",
        "model",
    ] {
        assert!(
            labels.body["data"]
                .as_array()
                .unwrap()
                .contains(&json!(expected)),
            "{expected}"
        );
    }
    let meta = get(&app, "/metadata", &[]).await;
    assert_eq!(
        meta.body["data"]["connections"],
        json!([{"type": "gauge", "help": "Connections", "unit": "connections"}])
    );
    assert_eq!(meta.body["data"]["bandwidth"][0]["unit"], "bytes/sec");
    let one = get(&app, "/metadata", &[("metric", "bandwidth")]).await;
    assert_eq!(one.body["data"].as_object().unwrap().len(), 1);
    assert_eq!(
        get(&app, "/rules", &[]).await.body,
        json!({"status": "success", "data": {"groups": []}})
    );
    assert_eq!(
        get(&app, "/alerts", &[]).await.body["data"],
        json!({"alerts": []})
    );
    assert_eq!(
        post(
            &app,
            "/query_exemplars",
            &[("query", "connections"), ("start", "1"), ("end", "2")]
        )
        .await
        .body["data"],
        json!([])
    );
    assert_eq!(
        get(
            &app,
            "/format_query",
            &[("query", "sum   by(did)(connections)")]
        )
        .await
        .body["data"],
        "sum by (did) (connections)"
    );
    assert_eq!(
        app.upstream_metricdata(),
        0,
        "nothing of this asks for data"
    );
}

#[tokio::test]
async fn range_values_are_the_simulators_in_get_and_post_forms() {
    let app = spawn_app().await;
    // Answers cached before the catalog arrives are dropped when it does.
    app.ready().await;
    let q = range("connections{did=\"123\"}", T, T + 600, "60");
    let by_post = post(&app, "/query_range", &pairs(&q)).await;
    let by_get = get(&app, "/query_range", &pairs(&q)).await;
    assert_eq!(by_post.body, by_get.body, "one answer, whatever the form");
    let series = result(&by_post);
    assert_eq!(by_post.body["data"]["resultType"], "matrix");
    assert_eq!(series.len(), 1);
    assert_eq!(
        series[0]["metric"],
        json!({"__name__": "connections", "appliance": "default", "did": "123",
               "hostname": "host-123", "ip": "10.0.0.123", "label": "Device 123"})
    );
    let expected = appliance_values(
        &app,
        &format!(
            "metric=connections&did=123&starttime={}&endtime={}&interval=60",
            T * 1000,
            (T + 660) * 1000
        ),
        "size",
    )
    .await;
    assert_eq!(samples(&series[0]), expected);
    assert_eq!(
        expected.len(),
        11,
        "every step from start to end, inclusive"
    );

    // The parts: `direction` selects them; the total stays out unless asked for.
    let q = range(
        "connections{did=\"123\", direction=~\"in|out\"}",
        T,
        T + 600,
        "1m",
    );
    let a = get(&app, "/query_range", &pairs(&q)).await;
    let parts = result(&a);
    assert_eq!(parts.len(), 2);
    for (series, field) in parts.iter().zip(["in", "out"]) {
        assert_eq!(series["metric"]["direction"], field);
        let expected = appliance_values(
            &app,
            &format!(
                "metric=connections&did=123&starttime={}&endtime={}&interval=60",
                T * 1000,
                (T + 660) * 1000
            ),
            field,
        )
        .await;
        assert_eq!(samples(series), expected, "{field}");
    }
}

#[tokio::test]
async fn the_step_becomes_whole_minutes_and_is_echoed() {
    let app = spawn_app().await;
    let q = range("connections", T, T + 900, "90");
    let a = post(&app, "/query_range", &pairs(&q)).await;
    let series = result(&a);
    let asked = app.upstream_queries().pop().unwrap();
    assert!(
        asked.contains("&interval=120"),
        "90 s rounds to 2 min: {asked}"
    );
    assert!(
        !asked.contains("did="),
        "no did matcher: the network-wide series"
    );
    let got = samples(&series[0]);
    let times: Vec<i64> = got.keys().copied().collect();
    assert_eq!(times, (0..=10).map(|k| T + 90 * k).collect::<Vec<_>>());
    let buckets = appliance_values(
        &app,
        &format!(
            "metric=connections&starttime={}&endtime={}&interval=120",
            T * 1000,
            (T + 1020) * 1000
        ),
        "size",
    )
    .await;
    for (t, v) in got {
        assert_eq!(v, buckets[&(t - t % 120)], "at {t}: the bucket holding it");
    }
}

#[tokio::test]
async fn did_regexes_fan_out_and_aggregations_add_them_up() {
    let app = spawn_app().await;
    // Answers cached before the catalog arrives are dropped when it does.
    app.ready().await;
    let values = |did: u64| {
        let app = &app;
        async move {
            appliance_values(
                app,
                &format!(
                    "metric=connections&did={did}&starttime={}&endtime={}&interval=60",
                    T * 1000,
                    (T + 360) * 1000
                ),
                "size",
            )
            .await
        }
    };
    let (one, two) = (values(1).await, values(2).await);
    let direct = app.upstream_queries().len();
    let q = range("sum(connections{did=~\"(1|2)\"})", T, T + 300, "60");
    let a = post(&app, "/query_range", &pairs(&q)).await;
    let sum = result(&a);
    assert_eq!(sum.len(), 1);
    assert_eq!(sum[0]["metric"], json!({}));
    for (t, v) in samples(&sum[0]) {
        assert_eq!(v, one[&t] + two[&t]);
    }
    let asked = app.upstream_queries().split_off(direct);
    assert_eq!(
        asked.len(),
        2,
        "one appliance request per device: {asked:?}"
    );
    assert!(asked.iter().any(|q| q.contains("did=1&")));
    assert!(asked.iter().any(|q| q.contains("did=2&")));

    for (query, series) in [
        ("max by (did) (connections{did=~\"1|2\"})", 2),
        (
            "count without (hostname, ip, label) (connections{did=~\"1|2\"})",
            2,
        ),
        ("avg(connections{did=~\"1|2\"})", 1),
    ] {
        let a = post(
            &app,
            "/query_range",
            &pairs(&range(query, T, T + 300, "60")),
        )
        .await;
        assert_eq!(result(&a).len(), series, "{query}");
    }
    let q = range("max by (did) (connections{did=~\"1|2\"})", T, T + 300, "60");
    let a = post(&app, "/query_range", &pairs(&q)).await;
    let max = result(&a);
    assert_eq!(max[0]["metric"], json!({"did": "1"}));
    assert_eq!(
        samples(&max[1]),
        two.range(..=T + 300).map(|(t, v)| (*t, *v)).collect()
    );
    let count = post(
        &app,
        "/query",
        &[
            ("query", "count(connections{did=~\"1|2\"})"),
            ("time", &(T + 60).to_string()),
        ],
    )
    .await;
    assert_eq!(result(&count)[0]["value"], json!([T + 60, "2"]));
    assert_eq!(
        app.upstream_queries().len(),
        direct + 2,
        "the rest came from segments"
    );
}

#[tokio::test]
async fn over_time_and_arithmetic_use_the_simulators_buckets() {
    let app = spawn_app().await;
    let buckets = appliance_values(
        &app,
        &format!(
            "metric=connections&did=5&starttime={}&endtime={}&interval=60",
            T * 1000,
            (T + 660) * 1000
        ),
        "size",
    )
    .await;
    let at = T + 600;
    let window: Vec<f64> = buckets.range(at - 299..=at).map(|(_, v)| *v).collect();
    assert_eq!(window.len(), 5);
    let max = get(
        &app,
        "/query",
        &[
            ("query", "max_over_time(connections{did=\"5\"}[5m])"),
            ("time", &at.to_string()),
        ],
    )
    .await;
    let max = &result(&max)[0];
    assert!(
        max["metric"].get("__name__").is_none(),
        "functions drop the name"
    );
    assert_eq!(
        samples(max)[&at],
        window.iter().copied().fold(f64::MIN, f64::max)
    );
    let avg = get(
        &app,
        "/query",
        &[
            ("query", "avg_over_time(connections{did=\"5\"}[5m])"),
            ("time", &at.to_string()),
        ],
    )
    .await;
    assert_eq!(
        samples(&result(&avg)[0])[&at],
        window.iter().sum::<f64>() / 5.0
    );
    let bits = post(
        &app,
        "/query_range",
        &pairs(&range("connections{did=\"5\"} * 8 - 1", T, T + 600, "60")),
    )
    .await;
    for (t, v) in samples(&result(&bits)[0]) {
        assert_eq!(v, buckets[&t] * 8.0 - 1.0);
    }
    // A range vector alone: its raw buckets (prometheus-api-client's get_metric_range_data).
    let raw = get(
        &app,
        "/query",
        &[
            ("query", "connections{did='5'}[300s]"),
            ("time", &at.to_string()),
        ],
    )
    .await;
    assert_eq!(raw.body["data"]["resultType"], "matrix");
    let raw = &result(&raw)[0];
    assert_eq!(raw["metric"]["__name__"], "connections");
    assert_eq!(
        samples(raw),
        buckets
            .range(at - 299..=at)
            .map(|(t, v)| (*t, *v))
            .collect()
    );
}

#[tokio::test]
async fn model_breaches_are_series_valued_at_their_score() {
    let app = spawn_app().await;
    // Answers cached before the catalog arrives are dropped when it does.
    app.ready().await;
    let (start, end) = (1_704_067_200, 1_704_672_000); // 2024-01-01 .. 2024-01-08
    let q = range("darktrace_model_breach{did=\"123\"}", start, end, "1h");
    let a = post(&app, "/query_range", &pairs(&q)).await;
    let series = result(&a);
    let asked = app.upstream_queries().pop().unwrap();
    assert!(asked.contains("breachtimes=true"), "{asked}");
    let answer = appliance(
        &app,
        &format!(
            "metric=connections&did=123&starttime={}&endtime={}&interval=3600&breachtimes=true",
            start * 1000,
            (end + 3600) * 1000
        ),
    )
    .await;
    let breaches = answer[0]["breachtimes"].as_array().unwrap();
    assert!(!breaches.is_empty());
    assert_eq!(series.len(), breaches.len());
    for b in breaches {
        let pbid = b["pbid"].to_string();
        let s = series
            .iter()
            .find(|s| s["metric"]["pbid"] == pbid.as_str())
            .unwrap_or_else(|| panic!("breach {pbid} is a series"));
        assert_eq!(s["metric"]["__name__"], "darktrace_model_breach");
        assert_eq!(s["metric"]["model"], b["name"]);
        assert_eq!(s["metric"]["did"], "123");
        let time = b["time"].as_i64().unwrap() / 1000;
        assert_eq!(
            samples(s),
            BTreeMap::from([(time - time % 3600, b["score"].as_f64().unwrap())])
        );
    }
}

#[tokio::test]
async fn failures_have_prometheus_envelopes_and_statuses() {
    let app = spawn_app().await;
    let t = T.to_string();
    // 10,500 steps: within Prometheus' 11,000, beyond the gateway's 10,000 points per series.
    let early = (T - 10_500 * 60).to_string();
    // (parameters, route, status, errorType, part of the error)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("query", "connections"),
                ("start", "soon"),
                ("end", &t),
                ("step", "60"),
            ],
            "/query_range",
            400,
            "bad_data",
            "invalid parameter \"start\": cannot parse \"soon\" to a valid timestamp",
        ),
        (
            vec![
                ("query", "connections"),
                ("start", &t),
                ("end", "1705310000"),
                ("step", "60"),
            ],
            "/query_range",
            400,
            "bad_data",
            "end timestamp must not be before start time",
        ),
        (
            vec![
                ("query", "connections"),
                ("start", &t),
                ("end", &t),
                ("step", "0"),
            ],
            "/query_range",
            400,
            "bad_data",
            "zero or negative query resolution step widths",
        ),
        (
            vec![
                ("query", "connections"),
                ("start", "0"),
                ("end", &t),
                ("step", "1"),
            ],
            "/query_range",
            400,
            "bad_data",
            "exceeded maximum resolution of 11,000 points",
        ),
        (
            vec![
                ("query", "connections"),
                ("start", &early),
                ("end", &t),
                ("step", "60"),
            ],
            "/query_range",
            400,
            "bad_data",
            "limit of 10000",
        ),
        (
            vec![("query", "sum(")],
            "/query",
            400,
            "bad_data",
            "invalid parameter \"query\": parse error",
        ),
        (
            vec![("query", "mad_over_time(connections[5m])")],
            "/query",
            400,
            "bad_data",
            "unsupported: the function mad_over_time(), experimental in Prometheus",
        ),
        (
            vec![("query", "limitk(3, connections)")],
            "/query",
            400,
            "bad_data",
            "unsupported: the aggregation limitk",
        ),
        (
            vec![("query", "connections{port=~\"80|443\"}")],
            "/query",
            400,
            "bad_data",
            "takes only port=\"…\"",
        ),
        (
            vec![("query", "connections{port=\"0\"}")],
            "/query",
            400,
            "bad_data",
            "port: `0` is not a port",
        ),
        (
            vec![
                ("query", "connections[5m]"),
                ("start", &t),
                ("end", &t),
                ("step", "60"),
            ],
            "/query_range",
            400,
            "bad_data",
            "invalid expression type \"range vector\" for range query",
        ),
        (
            vec![("query", "1"), ("time", "x")],
            "/query",
            400,
            "bad_data",
            "invalid parameter \"time\"",
        ),
        (
            vec![("query", "1"), ("limit", "-1")],
            "/query",
            400,
            "bad_data",
            "invalid parameter \"limit\"",
        ),
        (
            vec![("match[]", "sum(x)")],
            "/series",
            400,
            "bad_data",
            "invalid parameter \"match[]\"",
        ),
        (
            vec![],
            "/series",
            400,
            "bad_data",
            "no match[] parameter provided",
        ),
        (
            vec![],
            "/label/1x/values",
            400,
            "bad_data",
            "invalid label name",
        ),
        (vec![], "/nothing", 404, "not_found", "no such endpoint"),
    ];
    for (params, route, status, kind, message) in cases {
        let a = get(&app, route, &params).await;
        assert_eq!(a.status, status, "{route} {params:?}: {}", a.body);
        assert_eq!(a.body["status"], "error", "{route} {params:?}");
        assert_eq!(a.body["errorType"], kind, "{route} {params:?}");
        let error = a.body["error"].as_str().unwrap();
        assert!(error.contains(message), "{route} {params:?}: {error}");
        assert_eq!(a.header("cache-control"), "no-store");
    }
    // A metric the appliance does not have is no series, as Prometheus answers, with a hint,
    // and nothing asked of the appliance.
    let asked = app.upstream_metricdata();
    let a = get(&app, "/query", &[("query", "sum(conections)")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["data"]["result"],
        serde_json::json!([]),
        "{}",
        a.body
    );
    let warning = a.body["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("no metric `conections`; did you mean `connections`"),
        "{}",
        a.body
    );
    assert_eq!(app.upstream_metricdata(), asked);
    // Label values answer GET only: Grafana's POST falls back to GET on a 405.
    let a = post(&app, "/label/did/values", &[]).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.body["status"], "error");
    assert_eq!(a.header("allow"), "GET, HEAD");
    let put = app
        .http
        .put(format!("{}/prometheus/api/v1/query", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(put.headers()["allow"], "GET, HEAD, POST");
    let huge = "x".repeat(300 * 1024);
    let a = post(&app, "/query", &[("query", &huge)]).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.body["errorType"], "bad_data");
    assert_eq!(
        app.upstream_metricdata(),
        0,
        "nothing invalid reached the appliance"
    );
}

#[tokio::test]
async fn appliance_failures_keep_the_gateways_statuses_in_prometheus_words() {
    let app = spawn_app().await;
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(500),
        ..Faults::default()
    });
    let a = post(
        &app,
        "/query_range",
        &pairs(&range("connections", T, T + 60, "60")),
    )
    .await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.body["status"], "error");
    assert_eq!(a.body["errorType"], "unavailable");
    assert!(
        a.body["error"].as_str().unwrap().contains("appliance"),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn callers_are_rate_limited_like_v1_in_prometheus_words() {
    let app = spawn_app_with(|s| {
        s.rate_limit.burst = NonZero::new(2).unwrap();
        s.rate_limit.per_client_per_minute = NonZero::new(1).unwrap();
    })
    .await;
    for _ in 0..2 {
        let a = post(&app, "/query", &[("query", "1+1")]).await;
        assert_eq!(a.status, 200);
        assert!(
            a.header("ratelimit").starts_with("limit=2"),
            "{:?}",
            a.headers
        );
    }
    let a = post(&app, "/query", &[("query", "1+1")]).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["status"], "error");
    assert_eq!(a.body["errorType"], "unavailable");
    assert!(a.header("retry-after").parse::<u64>().unwrap() > 0);
    assert!(a.header("ratelimit").contains("remaining=0"));
}

#[tokio::test]
async fn query_limits_are_v1s() {
    let app =
        spawn_app_with(|s| s.query.max_devices = std::num::NonZeroUsize::new(2).unwrap()).await;
    let a = get(
        &app,
        "/query",
        &[
            ("query", "connections{did=~\"1|2|3\"}"),
            ("time", &T.to_string()),
        ],
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("did: 3 devices requested; at most 2"),
        "{}",
        a.body
    );
    assert_eq!(app.upstream_metricdata(), 0);
}

#[tokio::test]
async fn grafanas_refreshes_are_served_from_segments() {
    // The callers' own refreshes (prefetching ahead of them: tests/api/dashboards.rs).
    let app = spawn_app_with(|s| s.segments.prefetch = false).await;
    // Answers cached before the catalog arrives are dropped when it does.
    app.ready().await;
    // Grafana aligns start and end to the step, and asks again every 30 s.
    let ask = |app: &TestApp| {
        let now = app.clock.now_ms() / 1000;
        let end = now - now % 60;
        range("sum(connections{did=~\"7|8\"})", end - 6 * 3600, end, "60")
    };
    let q = ask(&app);
    assert_eq!(
        result(&post(&app, "/query_range", &pairs(&q)).await).len(),
        1
    );
    assert_eq!(
        app.upstream_metricdata(),
        2,
        "the first refresh fills six hours, per device"
    );
    let mut refetched_minutes = Vec::new();
    for _ in 0..10 {
        app.advance(std::time::Duration::from_secs(30));
        let before = app.upstream_metricdata();
        let q = ask(&app);
        let a = post(&app, "/query_range", &pairs(&q)).await;
        assert_eq!(a.status, 200);
        for asked in app.upstream_queries().iter().skip(before as usize) {
            let field = |name: &str| -> i64 {
                asked
                    .split(&format!("{name}="))
                    .nth(1)
                    .unwrap()
                    .split('&')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            refetched_minutes.push((field("endtime") - field("starttime")) / 60_000);
        }
    }
    // Ten refreshes over five minutes: at most one refetch per device per minute, each of
    // only the live segments (the settle window and one segment), never the six hours.
    assert!(
        app.upstream_metricdata() <= 2 + 2 * 6,
        "{}: {:#?}",
        app.upstream_metricdata(),
        app.upstream_queries()
    );
    assert!(
        refetched_minutes.iter().all(|m| *m <= 10 + 6 + 1),
        "{refetched_minutes:?}"
    );
    let cache = app.admin_get("/internal/cache").await;
    assert!(
        cache.body["segments"]["hits"].as_u64().unwrap() > 100,
        "{}",
        cache.body
    );
}

#[tokio::test]
async fn concurrent_identical_queries_make_one_appliance_request() {
    let app = spawn_app().await;
    // Answers cached before the catalog arrives are dropped when it does.
    app.ready().await;
    let q = range("connections{did=\"42\"}", T, T + 3600, "60");
    let form = pairs(&q);
    let answers =
        futures::future::join_all((0..20).map(|_| post(&app, "/query_range", &form))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert!(answers.iter().all(|a| a.body == answers[0].body));
    assert_eq!(app.upstream_metricdata(), 1);
}

#[tokio::test]
async fn devices_are_listed_from_cached_answers_and_configuration() {
    let app = spawn_app_with(|s| s.prometheus.devices = vec![777]).await;
    app.ready().await;
    assert_eq!(
        get(&app, "/label/did/values", &[]).await.body["data"],
        json!(["777"])
    );
    let q = range("connections{did=\"123\"}", T, T + 300, "60");
    result(&post(&app, "/query_range", &pairs(&q)).await);
    assert_eq!(
        get(&app, "/label/did/values", &[]).await.body["data"],
        json!(["123", "777"])
    );
    assert_eq!(
        get(&app, "/label/hostname/values", &[]).await.body["data"],
        json!(["host-123"])
    );
    assert_eq!(
        get(&app, "/label/direction/values", &[]).await.body["data"],
        json!(["in", "out"])
    );
    let by_host = get(
        &app,
        "/label/did/values",
        &[("match[]", "connections{hostname=\"host-123\"}")],
    )
    .await;
    assert_eq!(by_host.body["data"], json!(["123"]));
    let series = post(&app, "/series", &[("match[]", "bandwidth{did=\"777\"}")]).await;
    assert_eq!(
        series.body["data"],
        json!([
            {"__name__": "bandwidth", "appliance": "default", "did": "777"},
            {"__name__": "bandwidth", "appliance": "default", "did": "777", "direction": "in"},
            {"__name__": "bandwidth", "appliance": "default", "did": "777", "direction": "out"}
        ])
    );
    // A device named by its host name, as Grafana's legends show it.
    let by_name = get(
        &app,
        "/query",
        &[
            ("query", "connections{hostname=\"host-123\"}"),
            ("time", &(T + 60).to_string()),
        ],
    )
    .await;
    assert_eq!(result(&by_name)[0]["metric"]["did"], "123");
    // Devices only configured are asked about when a regex names them all.
    let all = get(
        &app,
        "/query",
        &[
            ("query", "count(connections{did=~\".+\"})"),
            ("time", &(T + 60).to_string()),
        ],
    )
    .await;
    assert_eq!(result(&all)[0]["value"][1], "2");
    let limited = get(&app, "/label/__name__/values", &[("limit", "3")]).await;
    assert_eq!(limited.body["data"].as_array().unwrap().len(), 3);
    assert!(
        limited.body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("truncated")
    );
}

#[tokio::test]
async fn only_complete_buckets_are_read_and_now_reads_the_newest() {
    let app = spawn_app().await;
    app.ready().await;
    let now = app.clock.now_ms();
    let minute = now - now % 60_000;
    // No `time`: now, which reads the newest complete bucket (the one filling is never read,
    // so a point never changes while its minute goes by).
    let a = get(&app, "/query", &[("query", "connections{did=\"9\"}")]).await;
    let value = &result(&a)[0]["value"];
    assert_eq!(value[0].as_f64().unwrap(), now as f64 / 1000.0);
    let newest = appliance_values(
        &app,
        &format!(
            "metric=connections&did=9&starttime={}&endtime={minute}&interval=60",
            minute - 60_000
        ),
        "size",
    )
    .await;
    assert_eq!(
        value[1].as_str().unwrap().parse::<f64>().unwrap(),
        newest[&(minute / 1000 - 60)]
    );
}

/// What the document says of the Prometheus routes' parameters holds: counts are Go ints and
/// every value given is checked, an optional parameter given empty is absent, a form body is
/// pairs, `/labels` needs no body, and `/format_query` and `/query_exemplars` take POSTs.
#[tokio::test]
async fn parameters_are_read_as_documented() {
    let app = spawn_app().await;
    let refused = |a: &Answer, part: &str| {
        assert_eq!(a.status, 400, "{}", a.body);
        assert_eq!(a.header("content-type"), "application/json");
        assert_eq!(a.body["status"], "error");
        assert_eq!(a.body["errorType"], "bad_data");
        let error = a.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(part), "{error}");
    };
    let past_int64 = "9223372036854775808";
    refused(
        &get(&app, "/labels", &[("limit", past_int64)]).await,
        "\"limit\"",
    );
    refused(
        &get(&app, "/metadata", &[("limit_per_metric", "null")]).await,
        "\"limit_per_metric\"",
    );
    refused(
        &get(&app, "/metadata", &[("limit", "2"), ("limit", "x")]).await,
        "\"limit\"",
    );
    refused(
        &get(
            &app,
            "/series",
            &[("match[]", "connections"), ("start", ""), ("start", "soon")],
        )
        .await,
        "\"start\"",
    );
    let two = get(
        &app,
        "/metadata",
        &[("limit", "2"), ("limit_per_metric", "1")],
    )
    .await;
    assert_eq!(two.status, 200, "{}", two.body);
    assert_eq!(two.body["data"].as_object().map(|m| m.len()), Some(2));
    let max = get(&app, "/labels", &[("limit", "9223372036854775807")]).await;
    assert_eq!(max.status, 200, "{}", max.body);

    let empty = get(
        &app,
        "/labels",
        &[
            ("start", ""),
            ("end", ""),
            ("limit", ""),
            ("match[]", "connections"),
        ],
    )
    .await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    let instant = post(
        &app,
        "/query",
        &[("query", "1"), ("time", ""), ("timeout", ""), ("limit", "")],
    )
    .await;
    assert_eq!(instant.status, 200, "{}", instant.body);

    let not_pairs = app
        .http
        .post(format!("{}{API}/labels", app.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("match[]=connections&AAA")
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(not_pairs.status(), 400);
    let body: Value = not_pairs.json().await.unwrap_or(Value::Null);
    assert_eq!(body["errorType"], "bad_data");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("`AAA`"),
        "{body}"
    );

    let bare = app
        .http
        .post(format!("{}{API}/labels", app.url))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(bare.status(), 200);

    let formatted = post(&app, "/format_query", &[("query", "sum( connections )")]).await;
    assert_eq!(formatted.status, 200, "{}", formatted.body);
    assert_eq!(formatted.body["data"], "sum(connections)");
    let exemplars = post(&app, "/query_exemplars", &[("query", "connections")]).await;
    assert_eq!(exemplars.status, 200, "{}", exemplars.body);
    assert_eq!(exemplars.body["data"], json!([]));
}
