//! Each seed-to-appliance translation rule, checked on what the simulator received.

use crate::helpers::spawn_app;

async fn upstream_for(query: &str) -> Vec<String> {
    let app = spawn_app().await;
    let a = app.get(&format!("/v1/metricdata?{query}")).await;
    assert_eq!(a.status, 200, "{query}: {}", a.body);
    app.upstream_queries()
}

#[tokio::test]
async fn interval_labels_and_seconds_become_integer_seconds() {
    for (given, sent) in [
        ("1min", "60"),
        ("5min", "300"),
        ("1hour", "3600"),
        ("1day", "86400"),
        ("900", "900"),
    ] {
        let q = upstream_for(&format!(
            "metric=connections&interval={given}&starttime=1705320000000&endtime=1705406400000"
        ))
        .await;
        assert!(
            q[0].ends_with(&format!("&interval={sent}")),
            "{given}: {q:?}"
        );
    }
}

#[tokio::test]
async fn a_metric_list_becomes_numbered_metrics() {
    let q = upstream_for("metrics=connections,bandwidth&metrics=anomaly_score").await;
    assert_eq!(
        q,
        ["/metricdata?metric1=anomaly_score&metric2=bandwidth&metric3=connections&interval=60"]
    );
}

#[tokio::test]
async fn protocol_names_become_iana_numbers() {
    for (given, sent) in [("tcp", "6"), ("udp", "17"), ("icmp", "1"), ("47", "47")] {
        let q = upstream_for(&format!("metric=connections&protocol={given}")).await;
        assert!(
            q[0].contains(&format!("&protocol={sent}&")),
            "{given}: {q:?}"
        );
    }
}

#[tokio::test]
async fn every_time_spelling_becomes_an_epoch_ms_pair() {
    for spelling in [
        "starttime=1705320000000&endtime=1705323600000",
        "from=1705320000000&to=1705323600000",
        "from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z",
        "starttime=2024-01-15%2012:00:00&endtime=2024-01-15%2013:00:00",
        "from=2024-01-15T13:00:00%2B01:00&endtime=2024-01-15T13:00:00Z",
    ] {
        let q = upstream_for(&format!("metric=connections&{spelling}")).await;
        assert!(
            q[0].contains("&starttime=1705320000000&endtime=1705323600000&"),
            "{spelling}: {q:?}"
        );
    }
    // An open end is closed with "now", so the appliance always gets a pair.
    let start = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let q = upstream_for(&format!("metric=connections&from={start}&interval=1hour")).await;
    let end: i64 = q[0]
        .split("&endtime=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(end >= start + 86_400_000, "{q:?}");
}

#[tokio::test]
async fn booleans_become_true_or_are_left_out() {
    let q = upstream_for("metric=connections&did=5&breachtimes=1&fulldevicedetails=TRUE").await;
    assert!(
        q[0].ends_with("&breachtimes=true&fulldevicedetails=true"),
        "{q:?}"
    );
    let q = upstream_for("metric=connections&breachtimes=0&fulldevicedetails=false").await;
    assert!(
        !q[0].contains("breachtimes") && !q[0].contains("fulldevicedetails"),
        "{q:?}"
    );
}

#[tokio::test]
async fn devices_fan_out_to_one_request_each_and_merge() {
    let app = spawn_app().await;
    let a = app
        .get("/v1/metricdata?metric=bandwidth&devices=789,123&devices=456&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=1hour")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut q = app.upstream_queries();
    q.sort();
    assert_eq!(q.len(), 3);
    for (query, did) in q.iter().zip(["123", "456", "789"]) {
        assert!(query.contains(&format!("&did={did}&")), "{query}");
        assert!(!query.contains("devices"));
    }
    let dids: Vec<u64> = a.body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["device"]["did"].as_u64().unwrap())
        .collect();
    assert_eq!(dids, [123, 456, 789]);
}

#[tokio::test]
async fn filters_pass_through_as_numbers() {
    // `https` is the appliance's code 1002 in the simulator's /enums.
    let q = upstream_for("metric=connections&ddid=7&odid=8&port=53&sourceport=1024&destinationport=443&applicationprotocol=https").await;
    assert_eq!(
        q,
        [
            "/metricdata?metric=connections&ddid=7&odid=8&port=53&sourceport=1024&destinationport=443&applicationprotocol=1002&interval=60"
        ]
    );
}
