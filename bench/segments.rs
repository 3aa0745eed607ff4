//! Segment cache against an exact-key cache, for a dashboard's rolling window: the last 24 h at
//! 5-minute points, refreshed every 60 s for one hour. Counts upstream requests and upstream
//! data points (not time), and checks that both strategies give identical answers at every
//! refresh. Per refresh after the first (warm-up), it prints the points the appliance sent
//! against the floor: the buckets still unsettled at that refresh (`now - settle` to now)
//! plus the one that became settled since the previous refresh, which a delta must re-read.
//!
//!     cargo bench --bench segments
//!
//! The clock is virtual (the hour is replayed at once), so the simulator's past is used: its
//! data is deterministic, and the minutes the window covers all exist.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use metricgate::cache::segments::{Reuse, SegmentCache};
use metricgate::catalog::Catalog;
use metricgate::clock::Clock;
use metricgate::fetch::{FetchError, Lane, MetricSource};
use metricgate::normalize::MetricData;
use metricgate::query::{AnyMetric, MetricQuery, parse};
use metricgate::settings::Settings;
use metricgate::sim::Simulator;
use metricgate::telemetry::GatewayMetrics;
use metricgate::upstream::ApplianceClient;

const PUBLIC: &str = "bench-public";
const PRIVATE: &str = "bench-private";
/// 2024-01-15T12:07:30Z: the first refresh, deliberately not on a segment boundary.
const T0: i64 = 1_705_320_450_000;
const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn source(sim: &Simulator) -> (MetricSource, Settings) {
    let mut settings = Settings::for_upstream(&sim.url(), PUBLIC, PRIVATE).expect("valid settings");
    settings.upstream.per_minute = 1_000_000;
    let clock = Clock::system();
    let client = ApplianceClient::new(
        "default",
        &settings.upstream,
        Arc::new(GatewayMetrics::new()),
        None,
        clock.clone(),
    )
    .expect("client");
    (
        MetricSource::new(client, Arc::new(Catalog::new(clock))),
        settings,
    )
}

fn window(settings: &Settings, now: i64) -> MetricQuery {
    let raw = format!(
        "metric=connections&starttime={}&endtime={now}&interval=5min",
        now - DAY
    );
    parse(&raw, &settings.query, &AnyMetric, now).expect("a valid query")
}

fn points(data: &MetricData) -> u64 {
    data.series.iter().map(|s| s.points.len() as u64).sum()
}

#[tokio::main]
async fn main() {
    let exact_sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator");
    let seg_sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator");
    let (exact_source, settings) = source(&exact_sim);
    let (seg_source, _) = source(&seg_sim);
    let segments: SegmentCache<FetchError> =
        SegmentCache::new(&settings.segments, &settings.cache, "bench");

    let mut exact_cache: HashMap<MetricQuery, MetricData> = HashMap::new();
    let mut exact_points = 0;
    let refreshes = 60;
    let settle_ms = settings.cache.settle_secs as i64 * 1000;
    let interval_ms = 5 * MINUTE;
    // After warm-up: (segment points, floor, exact-key points) per refresh.
    let mut per_refresh: Vec<(u64, u64, u64)> = Vec::new();
    for k in 0..refreshes {
        let now = T0 + k * MINUTE;
        let query = window(&settings, now);
        let exact_before = exact_points;
        let seg_before = segments.counters.upstream_points.load(Ordering::Relaxed);
        let exact = match exact_cache.get(&query) {
            Some(hit) => hit.clone(),
            None => {
                let data = exact_source
                    .fetch(&query, now, None, &Lane::gateway())
                    .await
                    .expect("exact fetch");
                exact_points += points(&data);
                exact_cache.insert(query.clone(), data.clone());
                data
            }
        };
        let by_range = {
            let source = seg_source.clone();
            move |ranged: MetricQuery| {
                let source = source.clone();
                async move { source.fetch(&ranged, now, None, &Lane::gateway()).await }
            }
        };
        let stitched = segments
            .answer(&query, now, Reuse::Cached, by_range)
            .await
            .expect("a ranged query")
            .expect("segment fetch");
        assert_eq!(stitched, exact, "refresh {k}: the answers differ");
        if k > 0 {
            let previous = now - MINUTE;
            let settled = |t: i64| (t - settle_ms).div_euclid(interval_ms) * interval_ms;
            let floor =
                ((query.boundary_at_or_after(now) - settled(previous)) / interval_ms) as u64;
            let seg = segments.counters.upstream_points.load(Ordering::Relaxed) - seg_before;
            per_refresh.push((seg, floor, exact_points - exact_before));
        }
    }
    let exact_requests = exact_sim.stats.snapshot().metricdata;
    let seg_requests = seg_sim.stats.snapshot().metricdata;
    let seg_points = segments.counters.upstream_points.load(Ordering::Relaxed);
    println!(
        "rolling 24 h window at 5 min, refreshed every 60 s for 1 h ({refreshes} refreshes, {} points per segment)",
        settings.segments.points
    );
    println!(
        "{:<16} {:>18} {:>22}",
        "strategy", "upstream requests", "upstream data points"
    );
    println!(
        "{:<16} {:>18} {:>22}",
        "exact key", exact_requests, exact_points
    );
    println!("{:<16} {:>18} {:>22}", "segments", seg_requests, seg_points);
    let n = per_refresh.len() as f64;
    let mean = |f: fn(&(u64, u64, u64)) -> u64| per_refresh.iter().map(f).sum::<u64>() as f64 / n;
    let max = |f: fn(&(u64, u64, u64)) -> u64| per_refresh.iter().map(f).max().unwrap_or(0);
    let over = per_refresh.iter().filter(|(s, f, _)| s > f).count();
    println!(
        "after warm-up ({} refreshes), appliance points per refresh: segments mean {:.2} max {}; \
         floor (unsettled + newly settled bucket) mean {:.2} max {}; exact key mean {:.1} max {}",
        per_refresh.len(),
        mean(|r| r.0),
        max(|r| r.0),
        mean(|r| r.1),
        max(|r| r.1),
        mean(|r| r.2),
        max(|r| r.2),
    );
    println!("refreshes above the floor: {over} (target 0)");
    println!(
        "ratio (exact / segments): requests {:.1}x, points {:.1}x (target >= 20x points); answers identical",
        exact_requests as f64 / seg_requests.max(1) as f64,
        exact_points as f64 / seg_points.max(1) as f64
    );
}
