//! The failures every route that may ask the appliance shares, documented once for the
//! handlers' `#[utoipa::path]` responses.

use crate::error::Problem;

/// The failures every route that may ask the appliance shares, documented once.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum ApplianceFailures {
    #[response(
        status = 403,
        description = "The caller, proven by its key, may not ask this appliance (`forbidden-appliance`; the detail names the ones it may ask, never the others)",
        content_type = "application/problem+json"
    )]
    ForbiddenAppliance(Problem),
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
