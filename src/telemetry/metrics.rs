//! The gateway's own Prometheus series (not Darktrace's metrics, which live at `/v1/metrics`).
//!
//! One registry per gateway, so several gateways in one process (the tests) keep apart.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct GatewayMetrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub cache_events: IntCounterVec,
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub segment_bytes: IntGauge,
    pub segment_entries: IntGauge,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_in_flight: IntGauge,
    pub appliance_unknown_shapes: IntCounter,
    pub rate_limited: IntCounter,
    pub breaker_state: IntGauge,
    pub redis_up: IntGauge,
    pub access_log_lines: IntCounterVec,
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
                vec![
                    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0,
                ],
            ),
            cache_events: counter_vec(
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
            upstream_requests: counter_vec(
                "metricgate_upstream_requests_total",
                "Requests sent to the appliance, by outcome",
                &["outcome"],
            ),
            upstream_duration: histogram(
                "metricgate_upstream_request_duration_seconds",
                "Time the appliance took to answer, by outcome",
                &["outcome"],
                vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            ),
            upstream_in_flight: gauge(
                "metricgate_upstream_in_flight",
                "Requests in flight to the appliance",
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
            redis_up: gauge(
                "metricgate_redis_up",
                "1 when this replica shares state through Redis, 0 when Redis is configured but out of reach (absent without Redis)",
            ),
            access_log_lines: counter_vec(
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
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.cache_events.clone()),
            Box::new(m.cache_bytes.clone()),
            Box::new(m.cache_entries.clone()),
            Box::new(m.segment_bytes.clone()),
            Box::new(m.segment_entries.clone()),
            Box::new(m.upstream_requests.clone()),
            Box::new(m.upstream_duration.clone()),
            Box::new(m.upstream_in_flight.clone()),
            Box::new(m.appliance_unknown_shapes.clone()),
            Box::new(m.rate_limited.clone()),
            Box::new(m.breaker_state.clone()),
            Box::new(m.access_log_lines.clone()),
            Box::new(m.cache_purges.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            // Registering distinct names in a fresh registry cannot collide.
            let _ = m.registry.register(c);
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

/// Statuses whose series are kept resolved per route; others take the label lookup.
const COMMON_STATUSES: [u16; 14] = [
    200, 304, 400, 404, 405, 408, 413, 414, 429, 431, 500, 502, 503, 504,
];

/// One route's resolved series, each made on first use (so unused ones stay absent).
struct RouteSeries {
    route: &'static str,
    duration: OnceLock<Histogram>,
    by_status: [OnceLock<IntCounter>; COMMON_STATUSES.len()],
}

/// The HTTP series by route and status, resolved once: recording a request costs an atomic
/// add or two instead of hashing its labels under a lock (a visible part of a cache hit).
pub struct HttpSeries {
    routes: Vec<RouteSeries>,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpSeries {
    /// `routes` are the route labels the caller will record (compared by address first).
    pub fn new(metrics: &GatewayMetrics, routes: &[&'static str]) -> Self {
        Self {
            routes: routes
                .iter()
                .map(|route| RouteSeries {
                    route,
                    duration: OnceLock::new(),
                    by_status: Default::default(),
                })
                .collect(),
            requests: metrics.http_requests.clone(),
            duration: metrics.http_duration.clone(),
        }
    }

    pub fn record(&self, route: &'static str, status: u16, seconds: f64) {
        let known = self
            .routes
            .iter()
            .find(|r| std::ptr::eq(r.route, route) || r.route == route);
        let Some(r) = known else {
            self.requests
                .with_label_values(&[route, &status.to_string()])
                .inc();
            self.duration.with_label_values(&[route]).observe(seconds);
            return;
        };
        r.duration
            .get_or_init(|| self.duration.with_label_values(&[route]))
            .observe(seconds);
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => r.by_status[i]
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[route, &status.to_string()])
                })
                .inc(),
            None => self
                .requests
                .with_label_values(&[route, &status.to_string()])
                .inc(),
        }
    }
}
