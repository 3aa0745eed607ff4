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
        description = "The appliance failed, refused the gateway, or sent an unknown shape",
        content_type = "application/problem+json"
    )]
    BadGateway(Problem),
    #[response(status = 503, description = "The appliance's request budget is exhausted, or its circuit breaker is open",
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
    ),
    components(schemas(
        MetricData, MetricQuery, TimeRange, Series, Device, Point, Breach,
        MetricCatalog, MetricInfo, Problem, FieldError,
        super::ops::Health, super::ops::Ready,
    )),
    tags(
        (name = "metrics", description = "Darktrace metric data"),
        (name = "darktrace-sdk", description = "A drop-in for scripts written against darktrace-sdk: \
set `host=\"http://<gateway>/darktrace\"`. The SDK's parameters, the shapes its documentation shows."),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

/// The admin surface, served on the admin listener (`admin.listen`) at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "metricgate admin",
        description = "The operator's endpoints: the cache, the limits in force and readiness with \
its reasons. Served on the admin listener (`admin.listen`, loopback by default), or on the main \
port when `admin.listen` is empty. When `admin.token` is set, every one needs \
`Authorization: Bearer <admin token>`.",
        license(name = "MIT"),
    ),
    paths(
        super::admin::get_cache,
        super::admin::delete_cache,
        super::admin::get_limits,
        super::ops::readiness_detail,
    ),
    components(schemas(
        Problem, FieldError,
        super::ops::Readiness, crate::health::ProbeResult, crate::health::ProbeStatus,
        crate::cache::CacheReport, crate::cache::segments::SegmentReport, crate::cache::Purged, super::admin::Limits,
        crate::settings::ClientQuota, crate::upstream::GuardReport, crate::upstream::BreakerState,
    )),
    tags((name = "admin", description = "For operators, off the public surface")),
)]
pub struct AdminApiDoc;

/// The document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// The admin surface's document, as pretty JSON.
pub fn admin_document() -> String {
    AdminApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}
