//! The segment cache answers exactly what the appliance answers directly, and fetches only
//! what it lacks.

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

async fn direct() -> TestApp {
    spawn_app_with(|s| s.segments.enabled = false).await
}

async fn same_answer(segmented: &TestApp, plain: &TestApp, query: &str) {
    let a = segmented.get(query).await;
    let b = plain.get(query).await;
    assert_eq!(a.status, 200, "{query}: {}", a.body);
    assert_eq!(b.status, 200);
    assert_eq!(
        a.body, b.body,
        "{query}: the stitched answer differs from the direct one"
    );
}

#[tokio::test]
async fn stitched_answers_equal_direct_ones() {
    let (seg, plain) = (spawn_app().await, direct().await);
    for query in [
        // aligned
        "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T18:00:00Z&interval=5min",
        // several metrics and devices, breaches and device details
        "/v1/metricdata?metrics=connections,bandwidth&devices=1,2&from=2024-01-14T00:00:00Z&to=2024-01-16T00:00:00Z&interval=15min&breachtimes=true&fulldevicedetails=true",
        // unaligned start and end: buckets are floored to the interval
        "/v1/metricdata?metric=connections&from=2024-01-15T12:02:30Z&to=2024-01-15T17:58:10Z&interval=5min",
        "/v1/metricdata?metric=anomaly_score&did=3&from=2024-01-10T07:13:00Z&to=2024-01-12T01:01:00Z&interval=1hour&breachtimes=1",
        // shorter than a segment
        "/v1/metricdata?metric=connections&from=2024-01-15T12:10:00Z&to=2024-01-15T12:20:00Z&interval=1min",
    ] {
        same_answer(&seg, &plain, query).await;
    }
}

#[tokio::test]
async fn only_missing_segments_are_fetched_in_one_request() {
    let (seg, plain) = (spawn_app().await, direct().await);
    let q = |from: &str, to: &str| {
        format!("/v1/metricdata?metric=connections&from={from}&to={to}&interval=5min")
    };
    same_answer(
        &seg,
        &plain,
        &q("2024-01-15T00:00:00Z", "2024-01-15T12:00:00Z"),
    )
    .await;
    assert_eq!(seg.upstream_metricdata(), 1);
    // Overlaps the first range by six hours: one request, for the six new hours only.
    same_answer(
        &seg,
        &plain,
        &q("2024-01-15T06:00:00Z", "2024-01-15T18:00:00Z"),
    )
    .await;
    assert_eq!(seg.upstream_metricdata(), 2);
    let last = seg.upstream_queries().pop().unwrap();
    assert!(
        last.contains("&starttime=1705320000000&endtime=1705341600000&"),
        "{last}"
    );
    // Inside what is cached: no request at all.
    same_answer(
        &seg,
        &plain,
        &q("2024-01-15T03:10:00Z", "2024-01-15T17:20:00Z"),
    )
    .await;
    assert_eq!(seg.upstream_metricdata(), 2);
    // A gap between two cached stretches: one request for the gap.
    same_answer(
        &seg,
        &plain,
        &q("2024-01-15T20:00:00Z", "2024-01-15T22:00:00Z"),
    )
    .await;
    same_answer(
        &seg,
        &plain,
        &q("2024-01-15T00:00:00Z", "2024-01-15T22:00:00Z"),
    )
    .await;
    let last = seg.upstream_queries().pop().unwrap();
    assert!(
        last.contains("&starttime=1705341600000&endtime=1705348800000&"),
        "{last}"
    );
    assert_eq!(seg.upstream_metricdata(), 4);
}

#[tokio::test]
async fn identical_requests_still_hit_the_exact_entry() {
    let seg = spawn_app().await;
    let q = "/v1/metricdata?metric=connections&from=2024-01-15T00:00:00Z&to=2024-01-15T12:00:00Z&interval=5min";
    assert!(seg.get(q).await.header("cache-status").contains("fwd=miss"));
    assert!(
        seg.get(q)
            .await
            .header("cache-status")
            .starts_with("metricgate; hit")
    );
    assert_eq!(seg.upstream_metricdata(), 1);
}
