//! The gateway's own Prometheus series (not Darktrace's metrics, which live at `/v1/metrics`).
//!
//! One registry per gateway, so several gateways in one process (the tests) keep apart.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
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
    pub rate_limited: IntCounter,
    pub breaker_state: IntGauge,
    pub redis_up: IntGauge,
    pub access_log_lines: IntCounterVec,
    pub cache_purges: IntCounter,
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
                "Cache lookups: hit, miss, stale (served stale) and collapsed (waited for another request's fetch)",
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
                "1 when this replica shares state through Redis, 0 in embedded mode",
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
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
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
            Box::new(m.rate_limited.clone()),
            Box::new(m.breaker_state.clone()),
            Box::new(m.redis_up.clone()),
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

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
