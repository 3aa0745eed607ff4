//! Dashboards never wait: a rolling window's live tail is refreshed by asking only for the
//! buckets that can still change, hot windows are prefetched before their refresh, a cold
//! range reaches the appliance as bounded requests, and `Metricgate-Fetched` says what the
//! appliance was asked for each answer.

use std::time::Duration;

use crate::helpers::{
    ADMIN_TOKEN, TestApp, TestRedis, series_value, spawn_app, spawn_app_with, spawn_replicas_on,
};

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
        // The callers' own refreshes, without prefetching ahead of them.
        spawn_app_with(|s| s.segments.prefetch = false).await,
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
    // The answer lists them, oldest first.
    let listed: Vec<(i64, i64)> = a
        .header("metricgate-fetched")
        .split(", ")
        .map(|range| {
            let (start, end) = range.split_once('/').expect("start/end");
            (iso_ms(start), iso_ms(end))
        })
        .collect();
    assert_eq!(listed, spans, "{}", a.header("metricgate-fetched"));
    assert!(
        a.header("metricgate-fetched")
            .starts_with("2024-01-01T00:00:00Z/2024-01-06T00:00:00Z, ")
    );
    assert!(
        a.header("cache-status").contains("fwd=miss"),
        "{}",
        a.header("cache-status")
    );
    // Asked again: a hit, and nothing fetched.
    let again = seg.get(q).await;
    assert!(
        again.header("cache-status").contains("; hit;"),
        "{}",
        again.header("cache-status")
    );
    assert!(again.headers.get("metricgate-fetched").is_none());
}

fn iso_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_millis()
}

fn window(now: i64) -> String {
    format!(
        "/v1/metricdata?metric=connections&starttime={}&endtime={now}&interval=5min",
        now - 24 * 60 * MINUTE
    )
}

/// Moves `app`'s clock to 40 s past the next 5-minute boundary: a dashboard's refreshes a
/// minute apart then neither cross a bucket boundary nor meet a stale answer's last moment.
fn start_mid_bucket(clock: &metricgate::clock::Clock) -> i64 {
    let t0 = (clock.now_ms().div_euclid(INTERVAL) + 1) * INTERVAL + 40_000;
    clock.set(t0);
    t0
}

#[tokio::test]
async fn a_delta_refresh_lists_only_the_unsettled_tail_and_a_hit_lists_nothing() {
    let app = spawn_app_with(|s| s.segments.prefetch = false).await;
    let t0 = start_mid_bucket(&app.clock);
    let cold = app.get(&window(t0)).await;
    assert_eq!(cold.status, 200, "{}", cold.body);
    assert!(!cold.header("metricgate-fetched").is_empty());
    // The same question again: a hit, nothing fetched.
    let hit = app.get(&window(t0)).await;
    assert!(
        hit.header("cache-status").starts_with("metricgate; hit;"),
        "{}",
        hit.header("cache-status")
    );
    assert!(hit.headers.get("metricgate-fetched").is_none());

    app.advance(Duration::from_secs(60));
    let now = t0 + MINUTE;
    let refresh = app.get(&window(now)).await;
    assert_eq!(refresh.status, 200);
    let listed = refresh.header("metricgate-fetched");
    let (start, end) = listed.split_once('/').expect("one range");
    assert!(!listed.contains(','), "one range: {listed}");
    let asked = app.upstream_queries().pop().unwrap();
    assert_eq!(
        iso_ms(start),
        param(&asked, "starttime"),
        "{listed} vs {asked}"
    );
    assert_eq!(iso_ms(end), param(&asked, "endtime"), "{listed} vs {asked}");
    let settled = (t0 - SETTLE).div_euclid(INTERVAL) * INTERVAL;
    assert!(
        iso_ms(start) >= settled,
        "settled buckets asked again: {listed}"
    );
    assert!((iso_ms(end) - iso_ms(start)) / INTERVAL <= 4, "{listed}");

    // A shorter window within fresh segments: assembled without the appliance, a hit.
    let before = app.upstream_metricdata();
    let inner = app
        .get(&format!(
            "/v1/metricdata?metric=connections&starttime={}&endtime={now}&interval=5min",
            now - 6 * 60 * MINUTE
        ))
        .await;
    assert_eq!(inner.status, 200);
    assert_eq!(app.upstream_metricdata(), before, "nothing asked");
    assert!(
        inner
            .header("cache-status")
            .starts_with("metricgate; hit; ttl=")
            && inner.header("cache-status").ends_with("; detail=assembled"),
        "{}",
        inner.header("cache-status")
    );
    assert!(inner.headers.get("metricgate-fetched").is_none());
}

#[tokio::test]
async fn split_requests_are_fetched_with_bounded_concurrency() {
    let seg = spawn_app_with(|s| {
        s.segments.max_concurrent_fetches = std::num::NonZero::new(2).unwrap();
        s.segments.max_points_per_request = std::num::NonZero::new(288).unwrap();
    })
    .await;
    // Each answer takes a while: the requests overlap as much as the gateway lets them.
    seg.sim.set_faults(metricgate::sim::Faults {
        latency_ms: 40,
        ..Default::default()
    });
    let q = "/v1/metricdata?metric=connections&from=2024-01-01T00:00:00Z&to=2024-01-11T00:00:00Z&interval=5min";
    let a = seg.get(q).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("metricgate-fetched").split(", ").count(), 10);
    let stats = seg.sim.stats.snapshot();
    assert_eq!(stats.metricdata, 10);
    assert!(
        stats.peak_in_flight <= 2,
        "{} at once",
        stats.peak_in_flight
    );
}

/// `/metrics` of the gateway at `url`, as text.
async fn metrics_text(url: &str) -> String {
    reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

async fn prefetch_series(url: &str, series: &str) -> f64 {
    series_value(&metrics_text(url).await, series)
}

const FETCHED: &str = "metricgate_prefetches_total{outcome=\"fetched\"}";

/// Polls (real time, bounded) until `series` on `url` reaches `at_least`.
async fn wait_for_series(url: &str, series: &str, at_least: f64) -> f64 {
    let mut value = 0.0;
    for _ in 0..300 {
        value = prefetch_series(url, series).await;
        if value >= at_least {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series} stayed at {value}, below {at_least}");
}

#[tokio::test]
async fn a_hot_rolling_window_is_prefetched_and_its_next_refresh_is_a_hit() {
    let (app, plain) = (
        spawn_app().await,
        spawn_app_with(|s| s.segments.enabled = false).await,
    );
    let t0 = start_mid_bucket(&app.clock);
    // A dashboard refreshing every minute: twice is enough to learn its period.
    for k in 0..2 {
        let a = app.get(&window(t0 + k * MINUTE)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(
            a.header("cache-status").contains("fwd=miss"),
            "{}",
            a.header("cache-status")
        );
        if k == 0 {
            app.advance(Duration::from_secs(60));
        }
    }
    let before = app.upstream_metricdata();
    // Five seconds (the default lead) before the next refresh, the tail is fetched.
    app.advance(Duration::from_secs(55));
    wait_for_series(&app.url, FETCHED, 1.0).await;
    assert_eq!(app.upstream_metricdata(), before + 1, "one delta request");
    let asked = app.upstream_queries().pop().unwrap();
    let settled = (t0 + MINUTE - SETTLE).div_euclid(INTERVAL) * INTERVAL;
    assert!(
        param(&asked, "starttime") >= settled,
        "only unsettled buckets: {asked}"
    );

    app.advance(Duration::from_secs(5));
    let now = t0 + 2 * MINUTE;
    let refresh = app.get(&window(now)).await;
    assert_eq!(refresh.status, 200);
    assert_eq!(
        app.upstream_metricdata(),
        before + 1,
        "no request on the caller's path"
    );
    assert!(
        refresh
            .header("cache-status")
            .starts_with("metricgate; hit; ttl=")
            && refresh
                .header("cache-status")
                .ends_with("; detail=prefetched"),
        "{}",
        refresh.header("cache-status")
    );
    assert!(refresh.headers.get("metricgate-fetched").is_none());
    plain.clock.set(now);
    assert_eq!(
        refresh.body,
        plain.get(&window(now)).await.body,
        "the direct answer"
    );
    let text = metrics_text(&app.url).await;
    assert_eq!(
        series_value(&text, "metricgate_prefetch_hits_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        series_value(&text, "metricgate_prefetch_upstream_requests_total"),
        1.0
    );
    assert_eq!(series_value(&text, "metricgate_prefetch_wasted_total"), 0.0);
    // 20% of the callers' 90,000 a minute (the tests' budget).
    assert_eq!(
        series_value(&text, "metricgate_prefetch_budget_per_minute"),
        18_000.0
    );
}

#[tokio::test]
async fn prefetching_stops_when_the_window_goes_quiet() {
    let app = spawn_app().await;
    let t0 = start_mid_bucket(&app.clock);
    app.get(&window(t0)).await;
    app.advance(Duration::from_secs(60));
    app.get(&window(t0 + MINUTE)).await;
    // Nobody asks again. The next three expected refreshes are prefetched (the default
    // segments.prefetch_idle_periods), then no more.
    app.advance(Duration::from_secs(55));
    for k in 1..=3 {
        wait_for_series(&app.url, FETCHED, f64::from(k)).await;
        app.advance(Duration::from_secs(60));
    }
    // Dropped once quiet (four periods after the last ask): none of the three was used.
    app.advance(Duration::from_secs(60));
    wait_for_series(&app.url, "metricgate_prefetch_wasted_total", 3.0).await;
    let after = app.upstream_metricdata();
    for _ in 0..10 {
        app.advance_and_settle(Duration::from_secs(60)).await;
    }
    assert_eq!(prefetch_series(&app.url, FETCHED).await, 3.0);
    assert_eq!(
        app.upstream_metricdata(),
        after,
        "nothing more reached the appliance"
    );
}

#[tokio::test]
async fn prefetching_never_exceeds_its_share_of_the_budget() {
    // 600 a minute: 540 for callers, 1% of it (5 a minute) for prefetching.
    let app = spawn_app_with(|s| {
        s.upstream.per_minute = 600;
        s.segments.prefetch_budget_percent = 1;
    })
    .await;
    let t0 = start_mid_bucket(&app.clock);
    // Thirty hot windows (one device each), each refreshed every minute, 2 s apart: their
    // prefetches fall due all through the minute, six times faster than the share allows.
    let windows: Vec<i64> = (1..=30).collect();
    let ask = |now: i64, did: i64| {
        format!(
            "/v1/metricdata?metric=connections&did={did}&starttime={}&endtime={now}&interval=5min",
            now - 24 * 60 * MINUTE
        )
    };
    for k in 0..2 {
        for (i, did) in windows.iter().enumerate() {
            let now = t0 + k * MINUTE + i as i64 * 2_000;
            app.clock.set(now);
            assert_eq!(app.get(&ask(now, *did)).await.status, 200);
        }
    }
    app.settle().await;
    let callers = app.upstream_metricdata();
    let before = series_value(
        &metrics_text(&app.url).await,
        "metricgate_prefetch_upstream_requests_total",
    );
    // Through the next three minutes, five seconds at a time.
    let mut spent: Vec<(i64, f64)> = vec![(-5, before)];
    for step in 0..36 {
        app.advance_and_settle(Duration::from_secs(5)).await;
        let text = metrics_text(&app.url).await;
        let used = series_value(&text, "metricgate_prefetch_upstream_requests_total");
        spent.push((step * 5, used));
    }
    let text = metrics_text(&app.url).await;
    assert_eq!(
        series_value(&text, "metricgate_prefetch_budget_per_minute"),
        5.0
    );
    let used = series_value(&text, "metricgate_prefetch_upstream_requests_total") - before;
    assert!(
        series_value(&text, "metricgate_prefetches_total{outcome=\"deferred\"}") > 0.0,
        "it wanted more than its share"
    );
    // The share is what held it back: it spent most of it (at least 3 of the 5 a minute).
    assert!(used >= 9.0, "{used} prefetches in 3 minutes: {spent:?}");
    // Every request past the callers' was a prefetch, and no 60 s held more than 5.
    assert_eq!(app.upstream_metricdata() - callers, used as u64);
    for (at, before) in &spent {
        for (later, after) in &spent {
            if later > at && later - at <= 60 {
                assert!(
                    after - before <= 5.0,
                    "{} in 60 s: {spent:?}",
                    after - before
                );
            }
        }
    }
}

#[tokio::test]
async fn a_hot_window_is_prefetched_once_across_three_replicas() {
    let redis = TestRedis::start();
    let clock = metricgate::clock::Clock::manual_from_now();
    let (sim, urls) = spawn_replicas_on(&clock, 3, &redis.url(), |_| {}).await;
    crate::helpers::wait_for_mode(&urls, true).await;
    let t0 = start_mid_bucket(&clock);
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.expect("answer");
            let status = r
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let fetched = r.headers().get("metricgate-fetched").is_some();
            (r.status().as_u16(), status, fetched)
        }
    };
    // The same dashboard through a balancer: every replica sees the window refreshed.
    for k in 0..2 {
        for url in &urls {
            let (status, _, _) = get(format!("{url}{}", window(t0 + k * MINUTE))).await;
            assert_eq!(status, 200);
        }
        if k == 0 {
            clock.advance(Duration::from_secs(60));
        }
    }
    let before = sim.stats.snapshot().metricdata;
    clock.advance(Duration::from_secs(55));
    // Each replica's prefetcher woke: one fetched, the others found it done or left it.
    let mut done = 0.0;
    for _ in 0..300 {
        done = 0.0;
        for url in &urls {
            let text = metrics_text(url).await;
            done += ["fetched", "fresh", "skipped"]
                .iter()
                .map(|o| {
                    series_value(
                        &text,
                        &format!("metricgate_prefetches_total{{outcome=\"{o}\"}}"),
                    )
                })
                .sum::<f64>();
        }
        if done >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(done, 3.0, "every replica took its turn");
    let mut fetched = 0.0;
    for url in &urls {
        fetched += prefetch_series(url, FETCHED).await;
    }
    assert_eq!(fetched, 1.0, "one replica fetched");
    assert_eq!(
        sim.stats.snapshot().metricdata,
        before + 1,
        "once per cluster"
    );

    clock.advance(Duration::from_secs(5));
    for url in &urls {
        let (status, cache_status, listed) = get(format!("{url}{}", window(t0 + 2 * MINUTE))).await;
        assert_eq!(status, 200);
        assert!(
            cache_status.starts_with("metricgate; hit;"),
            "{cache_status}"
        );
        assert!(!listed);
    }
    assert_eq!(
        sim.stats.snapshot().metricdata,
        before + 1,
        "every refresh a hit"
    );
}
