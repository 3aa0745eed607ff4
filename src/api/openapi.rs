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
        super::admin::get_cache,
        super::admin::delete_cache,
        super::admin::get_limits,
        super::prometheus::query::get_query,
        super::prometheus::query::post_query,
        super::prometheus::query::get_query_range,
        super::prometheus::query::post_query_range,
        super::prometheus::query::format_query,
        super::prometheus::query::query_exemplars,
        super::prometheus::listing::get_labels,
        super::prometheus::listing::post_labels,
        super::prometheus::listing::label_values,
        super::prometheus::listing::get_series,
        super::prometheus::listing::post_series,
        super::prometheus::listing::metadata,
        super::prometheus::listing::buildinfo,
        super::prometheus::listing::rules,
        super::prometheus::listing::alerts,
    ),
    components(schemas(
        MetricData, MetricQuery, TimeRange, Series, Device, Point, Breach,
        MetricCatalog, MetricInfo, Problem, FieldError,
        super::ops::Health, super::ops::Readiness, crate::health::ProbeResult,
        crate::cache::CacheReport, crate::cache::segments::SegmentReport, crate::cache::Purged, super::admin::Limits,
        crate::settings::ClientQuota, crate::upstream::GuardReport, crate::upstream::BreakerState,
        crate::error::PrometheusFailure,
    )),
    tags(
        (name = "metrics", description = "Darktrace metric data"),
        (name = "darktrace-sdk", description = "A drop-in for scripts written against darktrace-sdk: \
set `host=\"http://<gateway>/darktrace\"`. The SDK's parameters, the shapes its documentation shows."),
        (name = "operations", description = "Health and readiness"),
        (name = "prometheus", description = "The Prometheus HTTP API over Darktrace metrics, for Grafana's built-in \
Prometheus data source (URL `http://<gateway>/prometheus`). A metric is the catalog's name; labels are \
the appliance's filters (`did`, `ddid`, `odid`, `port`, `sourceport`, `destinationport`, `protocol`, \
`applicationprotocol`), `direction` (`in`, `out`) for the parts of a value (without a `direction` matcher \
a selector reads the total), and `hostname`, `ip`, `label` where the device is known. A selector without \
a `did` matcher reads the network-wide series; `did=~\"1|2\"` asks once per device. The step becomes \
the appliance's interval, rounded to whole minutes; the value at a time is the bucket holding it. \
Model breaches are `darktrace_model_breach{model, pbid, pid, did}`, valued at their score. The PromQL \
subset: selectors with `=`, `!=`, `=~`, `!~`; sum, min, max, avg and count by/without; max_over_time, \
min_over_time, avg_over_time, sum_over_time and count_over_time over a range; arithmetic with numbers. \
Anything else is a `bad_data` naming the part. Errors use Prometheus' envelope."),
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
