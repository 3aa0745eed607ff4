//! The faults a test asks the simulator to inject.

use serde::{Deserialize, Serialize};

/// Faults the simulator injects into `/metricdata` and `/metrics` answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay before answering, in ms.
    pub latency_ms: u64,
    /// Fraction (0–1) of requests answered with `error_status`.
    pub error_rate: f64,
    /// Status used by `error_rate` (default 503).
    pub error_status: Option<u16>,
    /// Answer 200 with a body that is not valid JSON.
    pub malformed_body: bool,
    /// Answer 200 with `{"error": …}`.
    pub error_body: bool,
    /// Answer 200 with a JSON object that matches no known shape.
    pub unknown_shape: bool,
    /// Break the connection in the middle of the body.
    pub reset: bool,
    /// Send the body in small pieces, this many ms apart.
    pub slow_body_ms: u64,
    /// Answer with this many bytes of padding inside valid JSON.
    pub oversized_bytes: usize,
    /// Redirect to `/login`, as for an unknown token.
    pub redirect: bool,
    /// Answer `/metrics` (the catalog) with this status, leaving `/metricdata` alone.
    pub catalog_status: Option<u16>,
    /// Answer `/enums` with this status, leaving the other routes alone.
    pub enums_status: Option<u16>,
    /// Send this `Retry-After` (seconds) with the `error_rate` answers (e.g. with a 429).
    pub retry_after_secs: Option<u64>,
    /// Refuse `/metricdata` with a 400 `{"error": <this text>}`, as for input it rejects.
    pub refuse: Option<String>,
    /// Add an element of a shape nobody documented to `/metricdata` arrays.
    pub unknown_element: bool,
    /// Leave the last requested metric out of `/metricdata` answers.
    pub omit_metric: bool,
}
