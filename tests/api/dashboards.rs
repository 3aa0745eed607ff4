//! Dashboards never wait: a rolling window's live tail is refreshed by asking only for the
//! buckets that can still change.

use std::time::Duration;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const MINUTE: i64 = 60_000;
const INTERVAL: i64 = 5 * MINUTE;
/// The default settle window (config/default.toml: cache.settle_secs).
const SETTLE: i64 = 10 * MINUTE;

fn param(query: &str, name: &str) -> i64 {
    query
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {query}"))
}

/// Both gateways at the same instant.
fn align(seg: &TestApp, plain: &TestApp) {
    plain.clock.set(seg.clock.now_ms());
}

#[tokio::test]
async fn a_rolling_windows_refresh_asks_only_for_unsettled_buckets() {
    let (seg, plain) = (
        spawn_app().await,
        spawn_app_with(|s| s.segments.enabled = false).await,
    );
    align(&seg, &plain);
    let mut previous: Option<i64> = None;
    for k in 0..25 {
        let now = seg.clock.now_ms();
        let q = format!(
            "/v1/metricdata?metric=connections&starttime={}&endtime={now}&interval=5min",
            now - 24 * 60 * MINUTE
        );
        let before = seg.upstream_metricdata();
        let (a, b) = (seg.get(&q).await, plain.get(&q).await);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(
            a.body, b.body,
            "refresh {k}: the answer differs from the direct one"
        );
        if let Some(previous) = previous {
            // One request, from the oldest bucket unsettled at the previous refresh.
            assert_eq!(seg.upstream_metricdata(), before + 1, "refresh {k}");
            let asked = seg.upstream_queries().pop().unwrap();
            let settled = (previous - SETTLE).div_euclid(INTERVAL) * INTERVAL;
            let start = param(&asked, "starttime");
            let end = param(&asked, "endtime");
            assert!(
                start >= settled,
                "refresh {k}: settled buckets asked again: {asked}"
            );
            let buckets = (end - start) / INTERVAL;
            let floor = (now.div_euclid(INTERVAL) * INTERVAL + INTERVAL - settled) / INTERVAL;
            assert!(
                buckets <= floor && buckets <= 4,
                "refresh {k}: {buckets} buckets (floor {floor}): {asked}"
            );
        }
        previous = Some(now);
        seg.advance(Duration::from_secs(60));
        plain.advance(Duration::from_secs(60));
    }
}

#[tokio::test]
async fn a_segment_with_a_gap_in_its_settled_part_is_fetched_whole() {
    use metricgate::sim::Profile;
    let seg = spawn_app().await;
    // The appliance is 20 minutes behind: buckets the settle rule calls final are missing.
    seg.sim.set_profile(Profile {
        behind_minutes: 20,
        ..Profile::default()
    });
    let now = seg.clock.now_ms();
    let q = format!(
        "/v1/metricdata?metric=connections&starttime={}&endtime={now}&interval=5min",
        now - 2 * 60 * MINUTE
    );
    assert_eq!(seg.get(&q).await.status, 200);
    seg.sim.set_profile(Profile::default());
    seg.advance(Duration::from_secs(60));
    let q = format!(
        "/v1/metricdata?metric=connections&starttime={}&endtime={}&interval=5min",
        now + MINUTE - 2 * 60 * MINUTE,
        now + MINUTE
    );
    let a = seg.get(&q).await;
    assert_eq!(a.status, 200);
    // Nothing was settled with data: the live segments are asked for from their start.
    let asked = seg.upstream_queries().pop().unwrap();
    let start = param(&asked, "starttime");
    assert_eq!(start % (6 * INTERVAL), 0, "{asked}");
    let points = a.body["series"][0]["points"].as_array().unwrap().len();
    assert_eq!(points, 25, "filled in once the appliance caught up");
}

#[tokio::test]
async fn a_cold_month_reaches_the_appliance_as_bounded_requests() {
    let (seg, plain) = (
        spawn_app().await,
        spawn_app_with(|s| s.segments.enabled = false).await,
    );
    align(&seg, &plain);
    let q = "/v1/metricdata?metric=connections&from=2024-01-01T00:00:00Z&to=2024-01-31T00:00:00Z&interval=5min";
    let (a, b) = (seg.get(q).await, plain.get(q).await);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, b.body, "the split answer equals the direct one");
    assert_eq!(plain.upstream_metricdata(), 1);
    // 8,640 points at the default 1,440 points a request: six requests, end to end.
    let mut spans: Vec<(i64, i64)> = seg
        .upstream_queries()
        .iter()
        .map(|q| (param(q, "starttime"), param(q, "endtime")))
        .collect();
    spans.sort();
    assert_eq!(spans.len(), 6, "{spans:?}");
    assert_eq!(spans[0].0, 1_704_067_200_000);
    assert_eq!(spans[5].1, 1_706_659_200_000);
    for pair in spans.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "contiguous: {spans:?}");
    }
    for (start, end) in &spans {
        assert!((end - start) / INTERVAL <= 1440, "{spans:?}");
    }
}
