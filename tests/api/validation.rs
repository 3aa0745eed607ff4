//! Bad input: 400 problem+json naming the parameter, and nothing reaches the appliance.

use crate::helpers::spawn_app;

const START: &str = "starttime=1705320000000";

/// (query, a parameter the problem must name)
fn cases() -> Vec<(String, &'static str)> {
    let m = "metric=connections";
    let mut c: Vec<(String, &'static str)> = vec![
        ("".into(), "metric"),
        ("did=5".into(), "metric"),
        (format!("{m}&metrics=bandwidth"), "metrics"),
        ("metric=connections,bandwidth".into(), "metric"),
        ("metric=".into(), "metric"),
        ("metric=bad%20name".into(), "metric"),
        ("metric=a;b".into(), "metric"),
        (format!("metric={}", "x".repeat(65)), "metric"),
        ("metrics=ok,b%2Fad".into(), "metrics"),
        // An empty item of a list is refused; a parameter given empty is absent.
        ("metrics=connections,".into(), "metrics"),
        (
            format!(
                "metrics={}",
                (0..17)
                    .map(|i| format!("m{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "metrics",
        ),
        ("metric=connectoins".into(), "metric"),
        (format!("{m}&did=0"), "did"),
        (format!("{m}&did=-1"), "did"),
        (format!("{m}&did=abc"), "did"),
        (format!("{m}&did=1.5"), "did"),
        (format!("{m}&did=99999999999999999999"), "did"),
        (format!("{m}&did=1&did=2"), "did"),
        (format!("{m}&ddid=x"), "ddid"),
        (format!("{m}&odid=0"), "odid"),
        (format!("{m}&port=0"), "port"),
        (format!("{m}&port=65536"), "port"),
        (format!("{m}&sourceport=http"), "sourceport"),
        (format!("{m}&destinationport=-443"), "destinationport"),
        (format!("{m}&protocol=256"), "protocol"),
        (format!("{m}&protocol=tcpx"), "protocol"),
        (
            format!("{m}&applicationprotocol=ht%26tp"),
            "applicationprotocol",
        ),
        (
            format!("{m}&applicationprotocol={}", "a".repeat(33)),
            "applicationprotocol",
        ),
        (format!("{m}&starttime=yesterday"), "starttime"),
        (format!("{m}&starttime=1705320000"), "starttime"),
        (format!("{m}&endtime=1705323600000"), "endtime"),
        (
            format!("{m}&starttime=1705323600000&endtime=1705320000000"),
            "starttime",
        ),
        (
            format!("{m}&starttime=1705320000000&endtime=1705320000000"),
            "starttime",
        ),
        (format!("{m}&{START}&from=1705320000001"), "from"),
        (
            format!("{m}&{START}&endtime=1705323600000&to=1705323600001"),
            "to",
        ),
        (format!("{m}&from=2024-13-45T00:00:00Z"), "from"),
        (format!("{m}&starttime=4102444800000"), "starttime"),
        (
            format!("{m}&starttime=1000000000000&endtime=1705320000000"),
            "starttime",
        ),
        (
            format!("{m}&{START}&endtime=1706000000000&interval=1min"),
            "interval",
        ),
        (format!("{m}&interval=0"), "interval"),
        (format!("{m}&interval=30"), "interval"),
        (format!("{m}&interval=5minutesish"), "interval"),
        (format!("{m}&interval=365day"), "interval"),
        (format!("{m}&interval=-5min"), "interval"),
        (format!("{m}&breachtimes=yes"), "breachtimes"),
        (format!("{m}&fulldevicedetails=2"), "fulldevicedetails"),
        (format!("{m}&devices=1,laptop-7"), "devices"),
        (format!("{m}&did=1&devices=2"), "devices"),
        (
            format!(
                "{m}&devices={}",
                (1..=33)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "devices",
        ),
        (format!("{m}&devices=0"), "devices"),
        (format!("{m}&start_time=1705320000000"), "start_time"),
        ("metric_name=connections".into(), "metric_name"),
        (format!("{m}&interval=5min&interval=1hour"), "interval"),
        (
            format!("{m}&breachtimes=true&breachtimes=true"),
            "breachtimes",
        ),
        (format!("{m}&%00=1"), "\\0"),
    ];
    c.push((
        format!("{m}&from=2024-01-15T12:00:00Z&to=2024-01-15T12:00:00%2B05:00"),
        "starttime",
    ));
    c
}

#[tokio::test]
async fn bad_inputs_get_a_400_problem_naming_the_parameter() {
    let app = spawn_app().await;
    app.ready().await;
    let cases = cases();
    assert!(cases.len() >= 40);
    for (query, parameter) in &cases {
        let a = app.get(&format!("/v1/metricdata?{query}")).await;
        assert_eq!(a.status, 400, "{query}: {}", a.body);
        assert_eq!(
            a.header("content-type"),
            "application/problem+json",
            "{query}"
        );
        for field in ["type", "title", "status", "detail"] {
            assert!(!a.body[field].is_null(), "{query}: no {field}");
        }
        assert_eq!(a.body["status"], 400);
        assert!(
            a.bad_parameters().iter().any(|p| p == parameter),
            "{query}: expected `{parameter}` in {:?}",
            a.body["errors"]
        );
    }
    assert_eq!(
        app.upstream_metricdata(),
        0,
        "something invalid reached the appliance"
    );
}

/// Generated clients send an unset optional parameter empty: that is the parameter left out,
/// on every metric-data route (and a missing metric is still named).
#[tokio::test]
async fn a_parameter_given_empty_is_absent() {
    let app = spawn_app().await;
    let range = "starttime=1705320000000&endtime=1705323600000";
    let empty = "metrics=&did=&devices=&protocol=&applicationprotocol=&from=&endtime=&to=&interval=&breachtimes=";
    for route in [
        "/v1/metricdata",
        "/darktrace/metricdata",
        "/appliance/metricdata",
    ] {
        let plain = app
            .get(&format!("{route}?metric=connections&{range}"))
            .await;
        assert_eq!(plain.status, 200, "{route}: {}", plain.body);
        let spelled = app
            .get(&format!("{route}?metric=connections&{range}&{empty}"))
            .await;
        assert_eq!(spelled.status, 200, "{route}: {}", spelled.body);
        assert_eq!(spelled.body, plain.body, "{route}");
        let missing = app.get(&format!("{route}?metric=&metrics=&{range}")).await;
        assert_eq!(missing.status, 400, "{route}");
        assert_eq!(
            missing.header("content-type"),
            "application/problem+json",
            "{route}"
        );
        assert_eq!(missing.body["errors"][0]["parameter"], "metric", "{route}");
        assert_eq!(missing.body["errors"].as_array().map(Vec::len), Some(1));
    }
    let typo = app
        .get(&format!(
            "/v1/metricdata?metric=connections&{START}&protocl="
        ))
        .await;
    assert_eq!(typo.status, 400);
    assert_eq!(typo.body["errors"][0]["parameter"], "protocl");
}

#[tokio::test]
async fn every_bad_parameter_is_named_at_once() {
    let app = spawn_app().await;
    let a = app
        .get("/v1/metricdata?metric=connections&did=x&port=99999&protocol=nope&interval=7x&breachtimes=maybe&foo=1")
        .await;
    assert_eq!(a.status, 400);
    let mut named = a.bad_parameters();
    named.sort();
    assert_eq!(
        named,
        ["breachtimes", "did", "foo", "interval", "port", "protocol"]
    );
    assert_eq!(app.upstream_metricdata(), 0);
}

#[tokio::test]
async fn unknown_metrics_get_suggestions_from_the_catalog() {
    let app = spawn_app().await;
    app.ready().await;
    let a = app.get("/v1/metricdata?metric=externalconnection").await;
    assert_eq!(a.status, 400);
    let message = a.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`externalconnections`"), "{message}");
    let a = app.get("/v1/metricdata?metrics=connections,bandwith").await;
    assert!(
        a.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`bandwidth`")
    );
    assert_eq!(app.upstream_metricdata(), 0);
}

#[tokio::test]
async fn too_many_points_suggests_a_coarser_interval() {
    let app = spawn_app().await;
    let a = app.get("/v1/metricdata?metric=connections&from=2024-01-01T00:00:00Z&to=2024-03-01T00:00:00Z&interval=1min").await;
    assert_eq!(a.status, 400);
    let message = a.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("interval=") && message.contains("coarser"),
        "{message}"
    );
}
