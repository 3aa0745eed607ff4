//! `GET /v1/metrics`: the appliance's metric catalog, normalized.

use actix_web::{HttpResponse, web};

use crate::catalog::MetricCatalog;
use crate::error::{ApiError, Problem};
use crate::startup::AppState;

/// The metrics the appliance knows, with units and supported filters.
///
/// Served from the gateway's periodically refreshed copy; fetched on demand if it has none.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics",
    responses(
        (status = 200, description = "The catalog", body = MetricCatalog),
        (status = 429, description = "The caller is over its rate limit", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait"),
            ("RateLimit" = String, description = "`limit=N, remaining=0, reset=S` (draft-ietf-httpapi-ratelimit-headers-07)"))),
        (status = 503, description = "The appliance's request budget is exhausted, or its circuit breaker is open", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 502, description = "The appliance failed or refused the gateway", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The appliance did not answer in time", body = Problem, content_type = "application/problem+json")))]
pub async fn get_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.catalog.get().is_none() {
        state.catalog.refresh(state.source.client()).await?;
    }
    match state.catalog.get() {
        Some(catalog) => Ok(HttpResponse::Ok().json(&*catalog)),
        None => Err(ApiError::NotFound),
    }
}
