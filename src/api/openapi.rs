//! The OpenAPI document (the contract's source of truth) and Swagger UI.

use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::catalog::{MetricCatalog, MetricInfo};
use crate::error::Problem;
use crate::normalize::{Breach, Device, MetricData, Point, Series, TimeRange};
use crate::query::{FieldError, MetricQuery};

/// The failures every route that may ask the appliance shares, documented once.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum ApplianceFailures {
    #[response(status = 429, description = "The caller is over its rate limit",
        content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait"),
            ("RateLimit" = String, description = "`limit=N, remaining=0, reset=S` (draft-ietf-httpapi-ratelimit-headers-07)")))]
    RateLimited(Problem),
    #[response(
        status = 502,
        description = "The appliance failed, refused the gateway or the query (`appliance-refused-query`: the first line of its reason, never its address), sent an unknown shape, or left out a requested metric",
        content_type = "application/problem+json"
    )]
    BadGateway(Problem),
    #[response(status = 503, description = "The appliance's request budget is exhausted, its circuit breaker is open, or the appliance itself is rate-limiting the gateway (its 429; `Retry-After` is the appliance's own when it sends one)",
        content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(Problem),
    #[response(
        status = 504,
        description = "The appliance did not answer in time (for metric data: or `only-if-cached` found nothing)",
        content_type = "application/problem+json"
    )]
    GatewayTimeout(Problem),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "metricgate",
        description = "An internal gateway in front of a Darktrace appliance's time-series API. \
It validates `/metricdata` queries, signs and forwards them, caches the answers and returns one \
normalized schema. No authentication: callers never hold appliance tokens.",
        license(name = "MIT"),
    ),
    paths(
        super::metricdata::get_metricdata,
        super::metrics::get_metrics,
        super::darktrace::get_metricdata,
        super::darktrace::get_metrics,
        super::darktrace::get_metric,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::prometheus,
        super::admin::get_cache,
        super::admin::delete_cache,
        super::admin::get_limits,
    ),
    components(schemas(
        MetricData, MetricQuery, TimeRange, Series, Device, Point, Breach,
        MetricCatalog, MetricInfo, Problem, FieldError,
        super::ops::Health, super::ops::Readiness, crate::health::ProbeResult,
        crate::cache::CacheReport, crate::cache::segments::SegmentReport, crate::cache::Purged, super::admin::Limits,
        crate::settings::ClientQuota, crate::upstream::GuardReport, crate::upstream::BreakerState,
    )),
    tags(
        (name = "metrics", description = "Darktrace metric data"),
        (name = "darktrace-sdk", description = "A drop-in for scripts written against darktrace-sdk: \
set `host=\"http://<gateway>/darktrace\"`. The SDK's parameters, the shapes its documentation shows."),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}
