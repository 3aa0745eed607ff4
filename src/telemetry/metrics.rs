//! The gateway's own Prometheus series (not Darktrace's metrics, which live at `/v1/metrics`).
//!
//! One registry per gateway, so several gateways in one process (the tests) keep apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use super::sharded::{self, CaughtUp};

pub struct GatewayMetrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Cache lookups by event; hits are counted in shards (see [`CaughtUp`]).
    pub cache_events: Arc<CaughtUp>,
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub segment_bytes: IntGauge,
    pub segment_entries: IntGauge,
    /// The disk tier: 1 open, 0 configured but unusable (absent without `cache.dir`).
    pub disk_up: IntGauge,
    pub disk_bytes: IntGauge,
    /// 1 once the disk tier's index of entries is read (in the background at start).
    pub disk_indexed: IntGauge,
    pub disk_entries: IntGauge,
    /// Since start, by event: hit, write, corrupt, error, evicted.
    pub disk_events: prometheus::IntGaugeVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_in_flight: IntGauge,
    /// Callers' requests waiting their turn for the appliance's budget (set when scraped).
    pub upstream_queue_waiting: IntGauge,
    /// How long callers' requests that found no token waited their turn, by outcome.
    pub upstream_queue_wait: HistogramVec,
    /// Callers' requests the queue turned away, by reason.
    pub upstream_queue_refused: IntCounterVec,
    pub appliance_unknown_shapes: IntCounter,
    pub rate_limited: IntCounter,
    pub breaker_state: IntGauge,
    /// Each appliance's readiness (1 ready), by name (set when scraped).
    pub appliance_ready: prometheus::IntGaugeVec,
    /// Each appliance's circuit breaker, by name (set when scraped).
    pub appliance_breaker: prometheus::IntGaugeVec,
    /// Each appliance's requests in flight, by name (set when scraped).
    pub appliance_in_flight: prometheus::IntGaugeVec,
    /// Each appliance's callers' requests waiting for its budget, by name (set when scraped).
    pub appliance_queue_waiting: prometheus::IntGaugeVec,
    pub redis_up: IntGauge,
    /// Access lines by outcome; `sampled_out` is counted in shards.
    pub access_log_lines: Arc<CaughtUp>,
    pub cache_purges: IntCounter,
    /// Background prefetches of hot windows, by outcome.
    pub prefetches: IntCounterVec,
    /// Appliance requests prefetching sent (its share of the budget used).
    pub prefetch_requests: IntCounter,
    /// Callers' answers assembled with prefetched segments.
    pub prefetch_hits: IntCounter,
    /// Prefetches no caller's answer used.
    pub prefetch_wasted: IntCounter,
    /// Prefetching's share of the appliance budget, requests per minute.
    pub prefetch_budget: IntGauge,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn caught_up(name: &str, help: &str, labels: &[&str]) -> Arc<CaughtUp> {
    Arc::new(CaughtUp::new(counter_vec(name, help, labels)))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// Builds and registers every series. Names and labels are constants, so failures here
    /// are programming errors caught by any test.
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            http_requests: counter_vec(
                "metricgate_http_requests_total",
                "HTTP requests answered, by route and status",
                &["route", "status"],
            ),
            http_duration: histogram(
                "metricgate_http_request_duration_seconds",
                "Time to answer an HTTP request, by route",
                &["route"],
                HTTP_BUCKETS.to_vec(),
            ),
            cache_events: caught_up(
                "metricgate_cache_events_total",
                "Cache lookups: hit, shared_hit (found in Redis, fetched by another replica), miss, stale (served stale) and collapsed (waited for another request's fetch)",
                &["event"],
            ),
            cache_bytes: gauge("metricgate_cache_bytes", "Bytes held by the response cache"),
            cache_entries: gauge(
                "metricgate_cache_entries",
                "Entries held by the response cache",
            ),
            segment_bytes: gauge(
                "metricgate_segment_cache_bytes",
                "Bytes held by the segment cache",
            ),
            segment_entries: gauge(
                "metricgate_segment_cache_entries",
                "Segments held by the segment cache",
            ),
            disk_up: gauge(
                "metricgate_disk_cache_up",
                "1 when the disk tier (cache.dir) is in use; 0 when it is off or its directory or file cannot be used (the gateway then runs on memory alone; the log says why)",
            ),
            disk_indexed: gauge(
                "metricgate_disk_cache_indexed",
                "1 once every entry of the disk tier is indexed (read in the background at start; lookups go to the file meanwhile)",
            ),
            disk_bytes: gauge(
                "metricgate_disk_cache_bytes",
                "Bytes of settled segments held by the disk tier",
            ),
            disk_entries: gauge(
                "metricgate_disk_cache_entries",
                "Settled segments held by the disk tier",
            ),
            disk_events: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "metricgate_disk_cache_events",
                    "Disk tier events since start: hit (found after a memory miss), write, corrupt (a bad checksum, dropped and fetched again), error (a failed read or write) and evicted (past cache.disk_max_bytes)",
                ),
                &["event"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            upstream_requests: counter_vec(
                "metricgate_upstream_requests_total",
                "Requests sent to each appliance, by appliance and outcome",
                &["appliance", "outcome"],
            ),
            upstream_duration: histogram(
                "metricgate_upstream_request_duration_seconds",
                "Time each appliance took to answer, by appliance and outcome",
                &["appliance", "outcome"],
                vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            ),
            upstream_in_flight: gauge(
                "metricgate_upstream_in_flight",
                "Requests in flight to the appliance",
            ),
            upstream_queue_waiting: gauge(
                "metricgate_upstream_queue_waiting",
                "Callers' requests waiting their turn (round robin across callers) for the appliance's per-minute budget",
            ),
            upstream_queue_wait: histogram(
                "metricgate_upstream_queue_wait_seconds",
                "How long callers' requests that found no token waited their turn for the appliance's budget, by outcome: sent (got a token) or refused (waited upstream.queue_wait_secs in vain)",
                &["outcome"],
                vec![0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0],
            ),
            upstream_queue_refused: counter_vec(
                "metricgate_upstream_queue_refused_total",
                "Callers' requests answered 503 for want of the appliance's budget, by reason: full (refused on arrival: its turn could not come within upstream.queue_wait_secs, or 10,000 were waiting) or timeout (waited that long in vain)",
                &["reason"],
            ),
            appliance_unknown_shapes: IntCounter::new(
                "metricgate_appliance_unknown_shapes_total",
                "Parts of appliance answers of no known shape, left out of answers served with a Warning and never cached",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            rate_limited: IntCounter::new(
                "metricgate_rate_limited_total",
                "Requests refused with 429 because the caller was over its limit",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            breaker_state: gauge(
                "metricgate_upstream_breaker_state",
                "The appliance circuit breaker: 0 closed, 1 half-open, 2 open",
            ),
            appliance_ready: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "metricgate_appliance_ready",
                    "Whether each appliance is ready (1) or not (0): probed, catalog in, breaker not open",
                ),
                &["appliance"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            appliance_breaker: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "metricgate_appliance_breaker_state",
                    "Each appliance's circuit breaker: 0 closed, 1 half-open, 2 open",
                ),
                &["appliance"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            appliance_in_flight: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "metricgate_appliance_in_flight",
                    "Each appliance's requests in flight (metricgate_upstream_in_flight is their sum)",
                ),
                &["appliance"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            appliance_queue_waiting: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "metricgate_appliance_queue_waiting",
                    "Each appliance's callers' requests waiting their turn for its budget (metricgate_upstream_queue_waiting is their sum)",
                ),
                &["appliance"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            redis_up: gauge(
                "metricgate_redis_up",
                "1 when this replica shares state through Redis, 0 when Redis is configured but out of reach (absent without Redis)",
            ),
            access_log_lines: caught_up(
                "metricgate_access_log_lines_total",
                "Access lines, by what became of them: kept (handed to the log at level info), sampled_out (server.access_log) or over_cap (server.access_log_max_per_second)",
                &["outcome"],
            ),
            cache_purges: IntCounter::new(
                "metricgate_cache_purges_total",
                "Cache purges made through the admin endpoint",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            prefetches: counter_vec(
                "metricgate_prefetches_total",
                "Background refreshes of hot rolling windows' live tails, by outcome: fetched (asked the appliance), fresh (nothing to fetch, or another replica's segments found), skipped (another replica holds the run's lock), deferred (no budget, or callers waiting) and failed",
                &["outcome"],
            ),
            prefetch_requests: IntCounter::new(
                "metricgate_prefetch_upstream_requests_total",
                "Appliance requests sent by prefetching (its share of the budget used)",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            prefetch_hits: IntCounter::new(
                "metricgate_prefetch_hits_total",
                "Callers' answers assembled with prefetched segments, without waiting for the appliance",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            prefetch_wasted: IntCounter::new(
                "metricgate_prefetch_wasted_total",
                "Prefetches whose segments no caller's answer used",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            prefetch_budget: gauge(
                "metricgate_prefetch_budget_per_minute",
                "Most appliance requests prefetching may send per minute (segments.prefetch_budget_percent of the callers' budget)",
            ),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.prefetches.clone()),
            Box::new(m.prefetch_requests.clone()),
            Box::new(m.prefetch_hits.clone()),
            Box::new(m.prefetch_wasted.clone()),
            Box::new(m.prefetch_budget.clone()),
            Box::new(CaughtUpHandle(m.cache_events.clone())),
            Box::new(m.cache_bytes.clone()),
            Box::new(m.cache_entries.clone()),
            Box::new(m.segment_bytes.clone()),
            Box::new(m.segment_entries.clone()),
            Box::new(m.disk_up.clone()),
            Box::new(m.disk_bytes.clone()),
            Box::new(m.disk_indexed.clone()),
            Box::new(m.disk_entries.clone()),
            Box::new(m.disk_events.clone()),
            Box::new(m.upstream_requests.clone()),
            Box::new(m.upstream_duration.clone()),
            Box::new(m.upstream_in_flight.clone()),
            Box::new(m.upstream_queue_waiting.clone()),
            Box::new(m.upstream_queue_wait.clone()),
            Box::new(m.upstream_queue_refused.clone()),
            Box::new(m.appliance_unknown_shapes.clone()),
            Box::new(m.rate_limited.clone()),
            Box::new(m.breaker_state.clone()),
            Box::new(m.appliance_ready.clone()),
            Box::new(m.appliance_breaker.clone()),
            Box::new(m.appliance_in_flight.clone()),
            Box::new(m.appliance_queue_waiting.clone()),
            Box::new(CaughtUpHandle(m.access_log_lines.clone())),
            Box::new(m.cache_purges.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            // Registering distinct names in a fresh registry cannot collide.
            let _ = m.registry.register(c);
        }
        // Shown at 0 from the start, so a rate over them needs no first refusal.
        for reason in ["full", "timeout"] {
            m.upstream_queue_refused.with_label_values(&[reason]);
        }
        m
    }

    /// Exposes `metricgate_redis_up`: only a gateway with Redis configured has the series, so
    /// an embedded gateway does not report a Redis that is "down" when there is none.
    pub fn track_redis(&self) {
        let _ = self.registry.register(Box::new(self.redis_up.clone()));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Registers a shared [`CaughtUp`] (the registry takes its collectors by value).
struct CaughtUpHandle(Arc<CaughtUp>);

impl Collector for CaughtUpHandle {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// Statuses whose series are kept per route in shards; others take the label lookup.
const COMMON_STATUSES: [u16; 14] = [
    200, 304, 400, 404, 405, 408, 413, 414, 429, 431, 500, 502, 503, 504,
];

/// Upper bounds of `metricgate_http_request_duration_seconds`' buckets.
const HTTP_BUCKETS: [f64; 16] = [
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// The HTTP series by route and status. Known routes and common statuses are counted in
/// per-thread shards (see [`super::sharded`]): recording a request is two uncontended atomic
/// adds and a third for the duration's sum, where shared series made the workers' cores trade
/// cache lines on every request. Anything else takes the labelled series. A scrape sums the
/// shards; series never recorded stay absent.
#[derive(Clone)]
pub struct HttpSeries(Arc<Series>);

struct Series {
    routes: Vec<&'static str>,
    shards: Vec<ShardCounts>,
    requests: IntCounterVec,
    duration: HistogramVec,
}

/// One thread's counts, in one allocation padded at the end so shards do not share lines.
struct ShardCounts(Box<[AtomicU64]>);

/// Words after each shard's counts, so the next allocation starts on another cache line pair.
const SHARD_PADDING: usize = 16;

impl Series {
    fn requests_at(&self, route: usize, status: usize) -> usize {
        route * COMMON_STATUSES.len() + status
    }

    /// Bucket counts (the last one is `+Inf`), then the sum in nanoseconds.
    fn duration_at(&self, route: usize) -> usize {
        self.routes.len() * COMMON_STATUSES.len() + route * (HTTP_BUCKETS.len() + 2)
    }

    fn words(&self) -> usize {
        self.duration_at(self.routes.len())
    }

    fn total(&self, at: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[at].load(Ordering::Relaxed))
            .sum()
    }

    fn label_pairs(&self, pairs: &[(&str, &str)]) -> Vec<LabelPair> {
        pairs
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect()
    }
}

impl HttpSeries {
    /// `routes` are the route labels the caller will record (compared by address first).
    /// Registers the series in `metrics`' registry.
    pub fn new(metrics: &GatewayMetrics, routes: &[&'static str]) -> Self {
        let mut series = Series {
            routes: routes.to_vec(),
            shards: Vec::new(),
            requests: metrics.http_requests.clone(),
            duration: metrics.http_duration.clone(),
        };
        let words = series.words() + SHARD_PADDING;
        series.shards = (0..sharded::SHARDS)
            .map(|_| ShardCounts((0..words).map(|_| AtomicU64::new(0)).collect()))
            .collect();
        let series = Self(Arc::new(series));
        // The only collector under these names in a fresh registry.
        let _ = metrics.registry.register(Box::new(series.clone()));
        series
    }

    pub fn record(&self, route: &'static str, status: u16, seconds: f64) {
        let s = &self.0;
        let known = s
            .routes
            .iter()
            .position(|r| std::ptr::eq(*r, route) || *r == route);
        let common = COMMON_STATUSES.iter().position(|c| *c == status);
        let shard = &s.shards[sharded::shard()].0;
        match (known, common) {
            (Some(r), Some(c)) => {
                shard[s.requests_at(r, c)].fetch_add(1, Ordering::Relaxed);
            }
            _ => s
                .requests
                .with_label_values(&[route, &status.to_string()])
                .inc(),
        }
        let Some(r) = known else {
            s.duration.with_label_values(&[route]).observe(seconds);
            return;
        };
        let at = s.duration_at(r);
        let bucket = HTTP_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(HTTP_BUCKETS.len());
        shard[at + bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = (seconds * 1e9) as u64;
        shard[at + HTTP_BUCKETS.len() + 1].fetch_add(nanos, Ordering::Relaxed);
    }
}

impl Collector for HttpSeries {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.0.requests.desc();
        descs.extend(self.0.duration.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.0;
        let mut requests = s.requests.collect();
        let mut duration = s.duration.collect();
        if let Some(family) = requests.first_mut() {
            let mut metrics = family.take_metric();
            for (r, route) in s.routes.iter().enumerate() {
                for (c, status) in COMMON_STATUSES.iter().enumerate() {
                    let count = s.total(s.requests_at(r, c));
                    if count == 0 {
                        continue;
                    }
                    let mut counter = Counter::default();
                    counter.set_value(count as f64);
                    let mut m = Metric::default();
                    m.set_label(
                        s.label_pairs(&[("route", route), ("status", &status.to_string())]),
                    );
                    m.set_counter(counter);
                    metrics.push(m);
                }
            }
            family.set_metric(metrics);
        }
        if let Some(family) = duration.first_mut() {
            let mut metrics = family.take_metric();
            for (r, route) in s.routes.iter().enumerate() {
                let at = s.duration_at(r);
                let mut cumulative = 0;
                let mut buckets = Vec::with_capacity(HTTP_BUCKETS.len());
                for (i, bound) in HTTP_BUCKETS.iter().enumerate() {
                    cumulative += s.total(at + i);
                    let mut b = Bucket::default();
                    b.set_cumulative_count(cumulative);
                    b.set_upper_bound(*bound);
                    buckets.push(b);
                }
                let count = cumulative + s.total(at + HTTP_BUCKETS.len());
                if count == 0 {
                    continue;
                }
                let mut h = Histogram::default();
                h.set_sample_count(count);
                h.set_sample_sum(s.total(at + HTTP_BUCKETS.len() + 1) as f64 / 1e9);
                h.set_bucket(buckets);
                let mut m = Metric::default();
                m.set_label(s.label_pairs(&[("route", route)]));
                m.set_histogram(h);
                metrics.push(m);
            }
            family.set_metric(metrics);
        }
        requests.extend(duration);
        requests
    }
}
