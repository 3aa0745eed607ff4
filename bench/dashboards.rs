//! Dashboards never wait: the whole gateway's use case (response cache, segments, prefetching,
//! the appliance's guard) on a manual clock, against its own simulator, for two workloads:
//!
//! - **three dashboards**: three rolling windows (the last 24 h at 5 min, one device each),
//!   each refreshed every minute, 20 s apart, for two hours;
//! - **Grafana**: the provisioned 18-panel dashboard (`deploy/grafana/dashboards/darktrace.json`,
//!   and its breach annotations) through the Prometheus-compatible planning, the last 6 h at a
//!   1-minute step for three devices, refreshed every 30 s for an hour.
//!
//! Each runs three ways: an **exact-key** cache (segments off: every refresh is a new key), the
//! **segment** cache with prefetching off, and with it on (the default). Counted by the
//! simulator: appliance requests and points; after a 10-minute warm-up, points per refresh
//! (for the three dashboards against the unsettled-bucket floor), and the share of refreshes
//! answered without waiting: no appliance request on the caller's path (the prefetcher is let
//! finish what is due before each refresh, as it would be in real time with its 5 s lead).
//! Latency is real time, on this machine: each refresh, and the same request asked again at
//! once (a plain response-cache hit), p50 and p99, as a ratio. Prefetch budget used (its
//! requests against its share) and prefetches wasted come from the gateway's own series.
//!
//!     cargo bench --bench dashboards
//!
//! The clock starts in the simulator's past (2024), whose data is deterministic; the
//! simulator follows the same clock, so requests are signed with the gateway's time.

use std::num::NonZero;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metricgate::cache::{Directives, Route};
use metricgate::catalog::Catalog;
use metricgate::clock::Clock;
use metricgate::fetch::MetricSource;
use metricgate::promql::At;
use metricgate::query::{Dialect, Offer, Representation};
use metricgate::service::{Lane, MetricRequest, MetricService};
use metricgate::settings::Settings;
use metricgate::sim::Simulator;
use metricgate::telemetry::GatewayMetrics;
use metricgate::upstream::ApplianceClient;

const PUBLIC: &str = "bench-public";
const PRIVATE: &str = "bench-private";
/// 2024-01-15T12:07:30Z: mid-minute, off a segment boundary.
const T0: i64 = 1_705_320_450_000;
const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const WARM_UP: i64 = 10 * MINUTE;
/// The appliance budget: 1,080 a minute for callers, 216 of it (20%) for prefetching.
const PER_MINUTE: u32 = 1_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ExactKey,
    Segments,
    Prefetch,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ExactKey => "exact key",
            Kind::Segments => "segments",
            Kind::Prefetch => "segments + prefetch",
        }
    }
}

struct Gateway {
    kind: Kind,
    sim: Simulator,
    service: MetricService,
    clock: Clock,
    settings: Settings,
    metrics: Arc<GatewayMetrics>,
}

/// What one run measured.
#[derive(Default)]
struct Run {
    requests: u64,
    points: u64,
    /// After warm-up.
    refreshes: u64,
    warm_points: u64,
    floor_points: u64,
    waited: u64,
    refresh_us: Vec<f64>,
    hit_us: Vec<f64>,
    prefetch_requests: u64,
    prefetch_share: i64,
    prefetch_wasted: u64,
    prefetch_hits: u64,
    minutes: i64,
}

impl Gateway {
    async fn new(kind: Kind) -> Arc<Self> {
        let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator");
        let clock = Clock::manual(T0);
        sim.set_clock(clock.clone());
        let mut settings =
            Settings::for_upstream(&sim.url(), PUBLIC, PRIVATE).expect("valid settings");
        settings.upstream.per_minute = PER_MINUTE;
        settings.upstream.max_in_flight = NonZero::new(64).unwrap();
        settings.segments.enabled = kind != Kind::ExactKey;
        settings.segments.prefetch = kind == Kind::Prefetch;
        let metrics = Arc::new(GatewayMetrics::new());
        let client = ApplianceClient::new(
            "default",
            &settings.upstream,
            metrics.clone(),
            None,
            clock.clone(),
        )
        .expect("client");
        let catalog = Arc::new(Catalog::new(clock.clone()));
        catalog.refresh(&client).await.expect("the catalog");
        let service = MetricService::new(
            &settings,
            MetricSource::new(client, catalog.clone()),
            catalog.clone(),
            &metrics,
            None,
            clock.clone(),
        );
        let gateway = Arc::new(Self {
            kind,
            sim,
            service,
            clock,
            settings,
            metrics,
        });
        let prefetching = gateway.clone();
        tokio::spawn(async move { prefetching.service.run_prefetch().await });
        gateway
    }

    /// Sets the clock, and lets the prefetcher finish what is due by then.
    async fn at(&self, now: i64) {
        self.clock.set(now);
        if self.kind != Kind::Prefetch {
            return;
        }
        while self.service.prefetch_settled_at().is_none_or(|t| t < now) {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    fn counts(&self) -> (u64, u64) {
        let s = self.sim.stats.snapshot();
        (s.metricdata, s.points)
    }

    /// A `/v1/metricdata` question, as the HTTP layer hands it to the use case; the time it
    /// took (µs) and whether it was an exact hit.
    async fn ask(&self, raw: &str) -> f64 {
        let started = Instant::now();
        let served = self
            .service
            .answer(
                MetricRequest {
                    dialect: Dialect::Gateway,
                    raw_query: raw,
                    representation: Representation::negotiate(Offer::JsonOrCsv, raw, None, None),
                    directives: Directives::default(),
                    traceparent: None,
                },
                &Lane::new("bench"),
            )
            .await
            .unwrap_or_else(|e| panic!("{raw}: {e}"));
        let took = started.elapsed().as_secs_f64() * 1e6;
        assert!(!served.entry.body.is_empty());
        took
    }

    /// What `/prometheus/api/v1/query_range` computes (its `data`), as JSON.
    async fn query_range(&self, expr: &str, start: i64, end: i64) -> String {
        let at = At::Range {
            start,
            end,
            step: MINUTE,
        };
        let members = [("default", &self.service)];
        let data =
            metricgate::service::promql::evaluate(&members, expr, at, 0, None, &Lane::new("bench"))
                .await
                .unwrap_or_else(|e| panic!("{expr}: {e}"))
                .data;
        serde_json::to_string(&data).expect("JSON")
    }

    fn finish(&self, run: &mut Run) {
        (run.requests, run.points) = self.counts();
        run.prefetch_requests = self.metrics.prefetch_requests.get();
        run.prefetch_share = self.metrics.prefetch_budget.get();
        run.prefetch_wasted = self.metrics.prefetch_wasted.get();
        run.prefetch_hits = self.metrics.prefetch_hits.get();
    }
}

fn window(did: u32, now: i64) -> String {
    format!(
        "metric=connections&did={did}&starttime={}&endtime={now}&interval=5min",
        now - 24 * 60 * MINUTE
    )
}

/// Three dashboards, each refreshed every minute (20 s apart), for `minutes`.
async fn three_dashboards(kind: Kind, minutes: i64) -> (Run, Vec<String>) {
    let g = Gateway::new(kind).await;
    let mut run = Run {
        minutes,
        ..Run::default()
    };
    let settle = g.settings.cache.settle_secs as i64 * SECOND;
    let interval = 5 * MINUTE;
    let settled = |t: i64| (t - settle).div_euclid(interval) * interval;
    let mut bodies = Vec::new();
    let mut warm_from: Option<u64> = None;
    for k in 0..minutes {
        for (d, did) in [101, 102, 103].into_iter().enumerate() {
            let now = T0 + k * MINUTE + d as i64 * 20 * SECOND;
            g.at(now).await;
            let raw = window(did, now);
            let (requests, points) = g.counts();
            let took = g.ask(&raw).await;
            let (requests_after, _) = g.counts();
            // The same question at once: a plain hit, for scale.
            let hit = g.ask(&raw).await;
            if k * MINUTE >= WARM_UP {
                // Every point after warm-up, the prefetcher's between refreshes included.
                warm_from.get_or_insert(points);
                run.refreshes += 1;
                run.waited += u64::from(requests_after > requests);
                run.refresh_us.push(took);
                run.hit_us.push(hit);
                let boundary = (now + interval - 1).div_euclid(interval) * interval;
                run.floor_points += ((boundary - settled(now - MINUTE)) / interval) as u64;
            }
            if k == minutes - 1 {
                bodies.push(render_body(&g, &raw).await);
            }
        }
    }
    g.finish(&mut run);
    run.warm_points = run.points - warm_from.unwrap_or(0);
    (run, bodies)
}

/// The answer to `raw` now (once any background refresh of a stale one is in).
async fn render_body(g: &Gateway, raw: &str) -> String {
    loop {
        let served = g
            .service
            .answer(
                MetricRequest {
                    dialect: Dialect::Gateway,
                    raw_query: raw,
                    representation: Representation::negotiate(Offer::JsonOrCsv, raw, None, None),
                    directives: Directives::default(),
                    traceparent: None,
                },
                &Lane::new("bench"),
            )
            .await
            .expect("answer");
        if served.route != Route::StaleWhileRevalidate {
            return String::from_utf8_lossy(&served.entry.body).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The provisioned dashboard's queries (panels, then annotations), devices 101, 102, 103.
fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/darktrace.json"
    );
    let text = std::fs::read_to_string(path).expect("the provisioned dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let devices = "(101|102|103)";
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(expr.replace("$did", devices));
            }
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push(expr.replace("$did", devices));
        }
    }
    queries
}

/// Grafana's dashboard, refreshed every 30 s for `minutes`; per-request latencies.
async fn grafana(kind: Kind, minutes: i64, hit_us: &[f64]) -> (Run, Vec<String>) {
    let g = Gateway::new(kind).await;
    let queries = dashboard_queries();
    let mut run = Run {
        minutes,
        ..Run::default()
    };
    let mut last = Vec::new();
    let mut warm_from: Option<u64> = None;
    // The exact-key strategy: a cache keyed on the exact request (never expiring within the
    // run, which favours it), in front of the plain use case.
    let mut by_url: std::collections::HashMap<(String, i64, i64), String> = Default::default();
    for k in 0..minutes * 2 {
        let now = T0 + k * 30 * SECOND;
        g.at(now).await;
        let end = now.div_euclid(MINUTE) * MINUTE;
        let start = (now - 6 * 60 * MINUTE).div_euclid(MINUTE) * MINUTE;
        let (requests, points) = g.counts();
        let mut answers = Vec::new();
        let mut took = Vec::new();
        for expr in &queries {
            let started = Instant::now();
            let key = (expr.clone(), start, end);
            let answer = match by_url.get(&key) {
                Some(hit) if kind == Kind::ExactKey => hit.clone(),
                _ => g.query_range(expr, start, end).await,
            };
            if kind == Kind::ExactKey {
                by_url.insert(key, answer.clone());
            }
            answers.push(answer);
            took.push(started.elapsed().as_secs_f64() * 1e6);
        }
        if k * 30 * SECOND >= WARM_UP {
            warm_from.get_or_insert(points);
            run.refreshes += 1;
            run.waited += u64::from(g.counts().0 > requests);
            run.refresh_us.extend(took);
        }
        last = answers;
    }
    run.hit_us = hit_us.to_vec();
    g.finish(&mut run);
    run.warm_points = run.points - warm_from.unwrap_or(0);
    (run, last)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(kind: Kind, run: &Run, exact_points_per_refresh: f64) {
    let per_refresh = run.warm_points as f64 / run.refreshes.max(1) as f64;
    let answered = 1.0 - run.waited as f64 / run.refreshes.max(1) as f64;
    let (p50, p99) = (
        percentile(&run.refresh_us, 0.5),
        percentile(&run.refresh_us, 0.99),
    );
    let (h50, h99) = (percentile(&run.hit_us, 0.5), percentile(&run.hit_us, 0.99));
    println!(
        "  {:<20} {:>9} {:>10} {:>12.2} {:>10.1}x {:>9.1}% {:>8.1}x {:>8.1}x",
        kind.name(),
        run.requests,
        run.points,
        per_refresh,
        exact_points_per_refresh / per_refresh.max(f64::MIN_POSITIVE),
        answered * 100.0,
        p50 / h50.max(f64::MIN_POSITIVE),
        p99 / h99.max(f64::MIN_POSITIVE),
    );
    if kind == Kind::Prefetch {
        println!(
            "    prefetch: {} appliance requests in {} min ({:.2}/min, {:.1}% of its {}/min share), \
             {} answers served from prefetched segments, {} prefetches wasted",
            run.prefetch_requests,
            run.minutes,
            run.prefetch_requests as f64 / run.minutes as f64,
            run.prefetch_requests as f64 / run.minutes as f64 / run.prefetch_share.max(1) as f64
                * 100.0,
            run.prefetch_share,
            run.prefetch_hits,
            run.prefetch_wasted,
        );
    }
}

fn header() {
    println!(
        "  {:<20} {:>9} {:>10} {:>12} {:>11} {:>10} {:>9} {:>9}",
        "strategy",
        "requests",
        "points",
        "pts/refresh",
        "vs exact",
        "no wait",
        "p50/hit",
        "p99/hit"
    );
}

#[tokio::main]
async fn main() {
    let minutes = 120;
    println!(
        "three dashboards (last 24 h at 5 min, devices 101-103), each refreshed every 60 s, \
         20 s apart, for {minutes} min; after a {} min warm-up:",
        WARM_UP / MINUTE
    );
    header();
    let mut runs = Vec::new();
    for kind in [Kind::ExactKey, Kind::Segments, Kind::Prefetch] {
        runs.push((kind, three_dashboards(kind, minutes).await));
    }
    let exact = runs[0].1.0.warm_points as f64 / runs[0].1.0.refreshes.max(1) as f64;
    for (kind, (run, bodies)) in &runs {
        assert_eq!(bodies, &runs[0].1.1, "{}: the answers differ", kind.name());
        report(*kind, run, exact);
    }
    let prefetch = &runs[2].1.0;
    println!(
        "  floor (unsettled buckets + the newly settled one): {:.2} points per refresh",
        prefetch.floor_points as f64 / prefetch.refreshes.max(1) as f64
    );
    let hit_us = prefetch.hit_us.clone();
    println!(
        "  plain hit: p50 {:.0} µs, p99 {:.0} µs",
        percentile(&hit_us, 0.5),
        percentile(&hit_us, 0.99)
    );

    let minutes = 60;
    println!(
        "\nGrafana: the provisioned dashboard ({} query_range requests a refresh), last 6 h at \
         a 1 min step, devices 101-103, refreshed every 30 s for {minutes} min; latency per \
         request against the plain hit above:",
        dashboard_queries().len()
    );
    header();
    let mut runs = Vec::new();
    for kind in [Kind::ExactKey, Kind::Segments, Kind::Prefetch] {
        runs.push((kind, grafana(kind, minutes, &hit_us).await));
    }
    let exact = runs[0].1.0.warm_points as f64 / runs[0].1.0.refreshes.max(1) as f64;
    for (kind, (run, answers)) in &runs {
        assert_eq!(answers, &runs[0].1.1, "{}: the answers differ", kind.name());
        report(*kind, run, exact);
    }
    let (dash, graf) = (&prefetch, &runs[2].1.0);
    let share = |r: &Run| 1.0 - r.waited as f64 / r.refreshes.max(1) as f64;
    assert!(
        share(dash) >= 0.95 && share(graf) >= 0.95,
        "target missed: {:.1}% and {:.1}% of refreshes answered without waiting (target >= 95%)",
        share(dash) * 100.0,
        share(graf) * 100.0
    );
}
